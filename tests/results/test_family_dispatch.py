"""Family dispatch in the results layer goes through the families registry (issue 28 item 1): a
zero-inflated NB fit's predictive counts (``predict``, the posterior predictive check) have the zinb's
mean and zeros, NB counts keep their random-number stream, the count-scale VPC reads ``zi``, and
cross-validation, ``check`` and the prior pages take the family's refusal, parameters and prior groups.

The fits are built by hand (no NUTS): prior draws of the model's sites for the structure, with the LA
effects, dispersion and ``zi`` set to known values, sealed by the fit writer's own ``build_idata``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.errors import HierarchyError
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood import families

ROOT = Path(__file__).resolve().parents[2]
ZI, PHI, INTERCEPT, GRADIENT = 0.4, 5.0, -3.0, 0.3
CHAINS, DRAWS = 2, 100


def _spec(family: str) -> ModelSpec:
    d = load_spec(ROOT / "models/gradient_nb.toml").to_dict()
    return ModelSpec.from_dict({**d, "name": f"gradient_{family}", "family": family})


def _fit(family: str, table: pd.DataFrame, seed: int = 0):
    """A sealed fit of ``gradient_nb`` with ``family``, its LA effects near (INTERCEPT, GRADIENT), PHI, ZI."""
    from hierarchy.data import table as data_mod
    from hierarchy.inference.sampling import Draws
    from hierarchy.results.fitfile import build_idata
    from hierarchy.results.prior_predictive import prior_draws

    spec = _spec(family)
    design = build_design(table, spec)
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    n = CHAINS * DRAWS
    d = prior_draws(spec, pset, design, draws=n, seed=seed)
    rng = np.random.default_rng(seed)
    d["la_coef"] = np.stack([INTERCEPT + rng.normal(0, 0.05, (n, design.n_la)),
                             np.full((n, design.n_la), GRADIENT)], -1)
    for k, v in {"dispersion": PHI, "zi": ZI}.items():
        if k in d:
            d[k] = np.full(n, v)
    draws = Draws(posterior={k: v.reshape(CHAINS, DRAWS, *v.shape[1:]) for k, v in d.items()},
                  settings={"sampler": "numpyro", "method": "nuts", "chains": CHAINS, "draws": DRAWS})
    return build_idata(draws, spec, pset, design, data_hash=data_mod.data_hash(table, **spec.hashed_columns),
                       data_source="by hand", diagnostics={})


@pytest.fixture(scope="module")
def table(small_geography) -> pd.DataFrame:
    from tests.helpers import geography_table

    out = geography_table(small_geography)
    out["referral"] = np.random.default_rng(0).poisson(out["exposure"] * 0.05)
    return out


@pytest.fixture(scope="module")
def zinb_fit(table):
    return _fit("zinb", table)


@pytest.fixture(scope="module")
def nb_fit(table):
    return _fit("negative_binomial", table)


def _mu(fit, table) -> tuple[np.ndarray, np.ndarray]:
    """NB means ``(draws, rows)`` of every fitted row (by ``predict``'s rates) and the row codes."""
    from hierarchy.results.predict import predict

    codes = fit.constant_data["neighbourhood"].to_numpy().astype(str)
    _, rate = predict(fit, pd.DataFrame({"neighbourhood": codes}), return_draws=True)
    expo = table.set_index("neighbourhood").loc[codes, "exposure"].to_numpy()
    return rate / 1e4 * expo[None, :], codes


def test_zinb_posterior_predictive_has_the_zinb_zeros_and_mean(zinb_fit, table):
    """Replicated counts at zi 0.4, phi 5 (mu ~ 15: NB zeros ~0.1%): zero share
    ``zi + (1 - zi) E[(phi / (phi + mu))^phi]`` (~0.40; NB/Poisson draws would give ~0.001) within
    0.01 (~5 SE over 200 x 360 counts) and mean ``(1 - zi) E[mu]`` within 3% (~5 SE)."""
    from hierarchy.results.ppc import posterior_predictive

    y = posterior_predictive(zinb_fit, n_draws=CHAINS * DRAWS, seed=1).to_numpy()
    mu, _ = _mu(zinb_fit, table)
    assert y.shape == mu.shape
    zeros = ZI + (1 - ZI) * np.mean((PHI / (PHI + mu)) ** PHI)
    assert np.mean(y == 0) == pytest.approx(zeros, abs=0.01)
    assert y.mean() == pytest.approx((1 - ZI) * mu.mean(), rel=0.03)


def test_zinb_predicted_counts_have_the_zinb_mean_and_zeros(zinb_fit, table):
    """``predict(counts=True)``: count means ``(1 - zi) E[mu]`` pooled over rows within 3% (~3 SE);
    with 40% structural zeros every row's lower quartile is 0 (NB's at mu ~ 15 would be ~10)."""
    from hierarchy.results.predict import predict

    mu, codes = _mu(zinb_fit, table)
    out = predict(zinb_fit, pd.DataFrame({"neighbourhood": codes}), counts=True, prob=0.5, seed=2)
    assert out["count_mean"].sum() == pytest.approx((1 - ZI) * mu.mean(0).sum(), rel=0.03)
    assert (out["count_lower"] == 0).all()
    assert (out["count_upper"] > 0).all()
    assert "zi" not in out.columns


def test_nb_counts_keep_their_random_number_stream(nb_fit, table):
    """NB predictive counts are ``Poisson(Gamma(phi, mu / phi))`` drawn from the seed's generator in that
    order, exactly as before the registry (predict: all draws at once; ppc: 50 draws at a time)."""
    from hierarchy.results.ppc import posterior_predictive
    from hierarchy.results.predict import predict

    mu, codes = _mu(nb_fit, table)
    rng = np.random.default_rng(3)
    by_hand = rng.poisson(rng.gamma(PHI, mu / PHI))
    out = predict(nb_fit, pd.DataFrame({"neighbourhood": codes}), counts=True, seed=3)
    np.testing.assert_allclose(out["count_mean"], by_hand.mean(0))
    rng = np.random.default_rng(4)
    by_hand = np.concatenate([rng.poisson(rng.gamma(PHI, m / PHI)) for m in np.split(mu, 4)])
    np.testing.assert_array_equal(posterior_predictive(nb_fit, n_draws=CHAINS * DRAWS, seed=4), by_hand)


def test_poisson_lognormal_row_effects_are_drawn_afresh_as_before(nb_fit, table):
    """``predict`` of a Poisson-lognormal fit: each draw's row effect ``obs_sd * eps`` is added to the
    same LA effects' log rate, ``eps`` the seed generator's first standard normals ``(draws, rows)``."""
    from hierarchy.results.predict import predict

    pln = _fit("poisson_lognormal", table)
    new = pd.DataFrame({"neighbourhood": pln.constant_data["neighbourhood"].to_numpy().astype(str)})
    out, rate = predict(pln, new, return_draws=True, seed=5)
    _, base = predict(nb_fit, new, return_draws=True)
    eps = np.random.default_rng(5).standard_normal(rate.shape)
    obs_sd = pln.posterior["obs_sd"].stack(sample=("chain", "draw")).to_numpy()
    np.testing.assert_allclose(np.log(rate), np.log(base) + obs_sd[:, None] * eps, atol=1e-10)
    assert out["note"].str.contains("row effect drawn").all()


@pytest.mark.parametrize(("var_la", "var_within", "phi", "zi", "mu"),
                         [(0.5, 0.2, 5.0, 0.3, 20.0), (0.25, 0.0, 10.0, 0.6, 40.0)])
def test_zinb_vpc_matches_a_simulated_variance_decomposition(var_la, var_within, phi, zi, mu):
    """zinb counts with known LA and within-LA variances, marginal expected count ``mu`` (structural
    zeros included): the one-way ANOVA share between LAs (20,000 LAs x 20 units) matches
    ``vpc_from_components(..., zero_inflation=zi)`` to 0.02, and the NB formula at the same mean, which
    ignores zi, misses it by more."""
    from hierarchy.results import heterogeneity as het

    rng = np.random.default_rng(12)
    n_la, n = 20_000, 20
    eta = np.log(mu / (1 - zi)) - (var_la + var_within) / 2
    m = np.exp(eta + rng.normal(0, np.sqrt(var_la), (n_la, 1)) + rng.normal(0, np.sqrt(var_within), (n_la, n)))
    y = families.get("zinb").draw(rng, m, {"dispersion": phi, "zi": zi})
    within = y.var(axis=1, ddof=1).mean()
    between = y.mean(axis=1).var(ddof=1) - within / n
    empirical = between / (between + within)
    formula = het.vpc_from_components(var_la, mu, dispersion=phi, var_within=var_within, zero_inflation=zi)
    assert empirical == pytest.approx(formula, abs=0.02), (empirical, formula)
    ignored = het.vpc_from_components(var_la, mu, dispersion=phi, var_within=var_within)
    assert abs(empirical - ignored) > 0.05, (empirical, ignored)
    assert het.vpc_from_components(var_la, mu, dispersion=phi, zero_inflation=0.0) == \
        het.vpc_from_components(var_la, mu, dispersion=phi)


def test_zinb_vpc_of_a_fit_reads_zi(zinb_fit):
    """The fit's VPC at a stated rate is the formula with the fit's zi (below the NB formula's)."""
    from hierarchy.results import heterogeneity as het

    v = het.vpc(zinb_fit, rates={"stated": 500.0}, exposure=300.0).isel(reference=0).to_numpy()
    var_la = het.la_variance(zinb_fit, w=0.0).to_numpy()
    np.testing.assert_allclose(v, het.vpc_from_components(var_la, 15.0, dispersion=PHI, zero_inflation=ZI),
                               rtol=1e-12)
    assert (v < het.vpc_from_components(var_la, 15.0, dispersion=PHI)).all()


def test_between_la_share_reads_zi(zinb_fit, nb_fit):
    """The observation-level variance of the zinb is its count's ``log(1 + variance / mean^2)``: at zi 0 the
    share is the NB fit's (same LA effects and phi), at zi 0.4 it is lower in every draw."""
    from hierarchy.results.estimands import between_la_share

    no_zi = zinb_fit.copy()
    no_zi.posterior["zi"] = no_zi.posterior["zi"] * 0.0
    nb = between_la_share(nb_fit).to_numpy()
    np.testing.assert_allclose(between_la_share(no_zi).to_numpy(), nb, rtol=1e-10)
    assert (between_la_share(zinb_fit).to_numpy() < nb).all()


def test_cv_refuses_families_outside_the_laplace_regime_with_their_reason(table):
    from hierarchy.results import cv

    for name in families.names():
        fam = families.get(name)
        assert cv.integration_unsupported(_spec(name)) == fam.laplace_refusal
    spec = _spec("zinb")
    with pytest.raises(HierarchyError, match="held-out LAs: .*zinb.*not log-concave"):
        cv.heldout_rows(table, spec, build_design(table, spec))


def test_check_and_prior_pages_list_the_familys_parameters_and_prior_groups():
    from hierarchy.check import parameters
    from hierarchy.results.prior_pages import _used_groups

    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    for name in families.names():
        spec, fam = _spec(name), families.get(name)
        rows = parameters(spec, pset).set_index("parameter")
        hyper = [r for r in fam.parameters if r["role"] == "hyper"]
        for r in hyper:
            assert rows.loc[r["name"], "class"] == r["prior_group"]
            assert rows.loc[r["name"], "meaning"] == r["meaning"]
        others = {r["name"] for f in families.all_families() for r in f.parameters} - {r["name"] for r in hyper}
        assert not others & set(rows.index), (name, others & set(rows.index))
        used = _used_groups(spec)
        assert set(fam.prior_groups) <= set(used)
        other_groups = {g for f in families.all_families() for g in f.prior_groups} - set(fam.prior_groups)
        assert not other_groups & set(used), (name, other_groups & set(used))
    stacked = load_spec(ROOT / "models/stages_nb.toml").to_dict()
    rows = parameters(ModelSpec.from_dict({**stacked, "family": "zinb"}), pset)
    assert {"dispersion[each stage]", "zi[each stage]"} <= set(rows["parameter"])

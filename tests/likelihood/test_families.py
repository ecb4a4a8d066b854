"""The count families (hierarchy.likelihood.families): each module's density, derivatives and draws against
theory and automatic differentiation, the registry against the lists other layers keep, and the
zero-inflated NB (one new module) through the NumPyro and PyMC models and a recovery fit."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from hierarchy.language.design import build_design
from hierarchy.language.priors import GROUPS, Prior, load_priors
from hierarchy.language.spec import FAMILIES, ModelSpec, load_spec
from hierarchy.likelihood import families, parameters

ROOT = Path(__file__).resolve().parents[2]
ZI_PRIOR = Prior("Beta", {"alpha": 1.0, "beta": 9.0})
LKJ_CONSTANT = 2 * np.log(4 / 3)  # PyMC's LKJCorr(n=2) normalising constant differs by this
CASES = [("poisson", {}), ("negative_binomial", {"dispersion": 0.7}), ("negative_binomial", {"dispersion": 8.0}),
         ("zinb", {"dispersion": 0.7, "zi": 0.4}), ("zinb", {"dispersion": 8.0, "zi": 0.05})]
"""(family, likelihood parameters); Poisson-lognormal's likelihood given its row effects is Poisson's."""


def with_zi(pset):
    """``pset`` with the zero-inflation prior (Beta(1, 9), the shipped sets' once the group is in them)."""
    return pset if "zero_inflation" in pset.priors else replace(pset, priors={**pset.priors,
                                                                              "zero_inflation": ZI_PRIOR})


def zinb_spec(model: str, parameterisation: str = "centred") -> ModelSpec:
    """Shipped model file ``model`` with ``family = "zinb"``."""
    d = load_spec(ROOT / f"models/{model}.toml").to_dict()
    return ModelSpec.from_dict({**d, "name": f"{model}_zinb", "family": "zinb",
                                "la": {**d["la"], "parameterisation": parameterisation}})


def test_registry_is_the_list_the_other_layers_read():
    """Every family module is registered; the spec's names, the prior groups and the parameter table agree."""
    assert families.names() == FAMILIES == ("poisson", "negative_binomial", "poisson_lognormal", "zinb")
    for f in families.all_families():
        assert families.get(f.name) is f
        for group, support in f.prior_groups.items():
            assert GROUPS.get(group) == support, (f.name, group)
        for row in f.parameters:
            assert parameters.BY_NAME[row["name"]].prior_group == row.get("prior_group"), row
        assert set(f.likelihood_params) <= {r["name"] for r in f.parameters}
    assert parameters.BY_NAME["zi"].per_stage and "zi" in parameters.prior_groups()
    with pytest.raises(Exception, match="not one of poisson, negative_binomial"):
        families.get("negbin")


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("eta", [-1.0, 1.5, 3.0])
def test_row_density_sums_to_one_and_is_the_same_in_numpy_and_jax(name, params, eta):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    f = families.get(name)
    y = np.arange(4000.0)
    lp = f.logpmf(y, eta, params, np)
    assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(np.asarray(f.logpmf(jnp.asarray(y[:200]), eta, params, jnp)), lp[:200],
                               rtol=1e-10, atol=1e-12)
    mean = np.sum(y * np.exp(lp))
    assert mean == pytest.approx((1 - params.get("zi", 0.0)) * np.exp(eta), rel=1e-8)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_score_and_hessian_in_eta_match_autodiff(name, params):
    """``row_derivatives``: its value is the row log density up to terms free of eta, and its first and
    second derivatives are JAX's of that value."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    f = families.get(name)
    rng = np.random.default_rng(1)
    y = jnp.asarray(np.r_[np.zeros(10), rng.poisson(4.0, 30)])
    eta = jnp.asarray(rng.normal(1.0, 1.5, 40))
    p = {k: jnp.asarray(v) for k, v in params.items()}
    value, d1, d2 = f.row_derivatives(y, eta, p)

    def one(yi, ei):
        return f.row_derivatives(yi, ei, p)[0]

    np.testing.assert_allclose(d1, jax.vmap(jax.grad(one, 1))(y, eta), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d2, jax.vmap(jax.hessian(one, 1))(y, eta), rtol=1e-9, atol=1e-12)
    shifted = f.row_derivatives(y, eta + 0.3, p)[0]
    np.testing.assert_allclose(shifted - value, f.logpmf(y, eta + 0.3, p, jnp) - f.logpmf(y, eta, p, jnp),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_draws_have_the_mean_variance_and_zeros_of_the_density(name, params):
    f = families.get(name)
    mu, n = 3.0, 200_000
    y = f.draw(np.random.default_rng(7), np.full(n, mu), {k: np.full(n, v) for k, v in params.items()})
    zi, phi = params.get("zi", 0.0), params.get("dispersion", np.inf)
    mean = (1 - zi) * mu
    var = (1 - zi) * mu * (1 + zi * mu + mu / phi)  # Poisson: phi infinite; NB: zi = 0
    assert abs(y.mean() - mean) < 5 * np.sqrt(var / n)
    assert y.var() == pytest.approx(var, rel=0.05)
    p0 = np.exp(f.logpmf(0.0, np.log(mu), params, np))
    assert abs(np.mean(y == 0) - p0) < 5 * np.sqrt(p0 * (1 - p0) / n)


def test_zinb_is_not_log_concave_so_laplace_refuses_it(small_geography):
    """At a zero count the zinb row log density is convex in eta somewhere (the reason in the refusal)."""
    import jax
    import jax.numpy as jnp

    from hierarchy.errors import HierarchyError
    from hierarchy.inference import laplace
    from tests import helpers

    jax.config.update("jax_enable_x64", True)
    eta = jnp.linspace(-3.0, 5.0, 81)
    d2 = families.get("zinb").row_derivatives(jnp.zeros_like(eta), eta, {"dispersion": 5.0, "zi": 0.3})[2]
    assert float(jnp.max(d2)) > 0.01
    nb_d2 = families.get("negative_binomial").row_derivatives(jnp.zeros_like(eta), eta, {"dispersion": 5.0})[2]
    assert float(jnp.max(nb_d2)) < 0
    spec = zinb_spec("gradient_nb")
    design = build_design(helpers.geography_table(small_geography).assign(referral=3), spec)
    with pytest.raises(HierarchyError, match="zinb.*not log-concave"):
        laplace.check_supported(spec, design)


@pytest.fixture(scope="module")
def table(small_geography):
    from hierarchy.data.simulate import simulate
    from tests.helpers import with_formula_columns

    return with_formula_columns(simulate(small_geography, seed=3, strata=("age",))[0])


@pytest.mark.parametrize("model", ["gradient_nb", pytest.param("stages_nb", marks=pytest.mark.slow),
                                   "three_level_nb"])
def test_zinb_numpyro_model_has_the_pymc_log_density(model, table):
    """The chunked zinb likelihood (chunk path, per-row path with MSOA effects, one zi per stage when
    stacked) against PyMC's ZeroInflatedNegativeBinomial: same joint density up to a constant; and the
    pointwise log-likelihood sums to the likelihood's factor."""
    import jax
    from numpyro.handlers import substitute, trace
    from numpyro.infer import Predictive

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn, pointwise_loglik
    from hierarchy.likelihood.model import build_model, observed_name

    jax.config.update("jax_enable_x64", True)
    spec = zinb_spec(model)
    pset = with_zi(load_priors(ROOT / "priors/weakly_informative.toml"))
    design = build_design(table, spec)
    if model == "gradient_nb":  # hist_len 0: lgamma(y + phi) row by row
        layout = make_layout(design, chunk=16, hist_len=0)
    else:
        layout = make_layout(design, chunk=16)
    model_ = partial(model_fn(spec, pset, design, layout), model_data(layout))
    pm_model = build_model(spec, pset, design)
    logp = pm_model.compile_logp(jacobian=False, mode="FAST_COMPILE")
    draws = Predictive(model_, num_samples=3)(jax.random.PRNGKey(3))
    assert draws["zi"].shape == ((3, len(spec.stages)) if spec.stacked else (3,))
    n_corr = len(spec.coefs) if spec.anchored else len(spec.coefs) * len(spec.stages)
    from tests.helpers import pymc_minus_numpyro

    offsets, lp = pymc_minus_numpyro(model_, pm_model, logp, draws, n_corr)
    assert np.ptp(offsets) < 1e-6 * abs(lp), offsets
    if n_corr == 2:
        assert offsets[0] == pytest.approx(LKJ_CONSTANT, abs=1e-6)
    one = {k: v[0] for k, v in draws.items()}
    lik = trace(substitute(model_, one)).get_trace()[observed_name(spec)]
    ll = pointwise_loglik(spec, design, {k: np.asarray(v[:1]) for k, v in draws.items()})
    assert float(ll.astype(float).sum()) == pytest.approx(float(lik["fn"].log_factor), rel=1e-5)


def test_zinb_draw_counts_and_pointwise_loglik_read_zi(small_geography):
    """jaxmodel's draws and pointwise log-likelihood go through the family: zi adds structural zeros."""
    from hierarchy.likelihood.jaxmodel import draw_counts, pointwise_loglik
    from tests import helpers

    spec = zinb_spec("gradient_nb")
    design = build_design(helpers.geography_table(small_geography), spec)
    point = {"la_coef": np.tile([-2.0, 0.3], (design.n_la, 1)), "dispersion": 5.0}
    rng = np.random.default_rng(1)
    zeros = [np.mean([draw_counts(spec, design, {**point, "zi": zi}, rng) == 0 for _ in range(30)])
             for zi in (0.01, 0.5)]  # each share +- 0.005 (SD)
    assert zeros[1] - zeros[0] == pytest.approx(0.49 * (1 - zeros[0]) / 0.99, abs=0.03)
    ll = [pointwise_loglik(spec, design, {k: np.atleast_1d(v)[None] for k, v in {**point, "zi": zi}.items()})
          for zi in (0.01, 0.5)]
    assert ll[0].shape == (1, len(design.y)) and not np.allclose(ll[0], ll[1])


@pytest.mark.slow  # ~1-2 min on 2 cores
@pytest.mark.parametrize("seed", [3])
def test_zinb_fit_recovers_zero_inflation_and_dispersion(seed):
    """NUTS on counts drawn from the zinb model at a known truth (zi 0.25, phi 6) covers zi and phi."""
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.inference.sampling import fit
    from tests import helpers

    spec = zinb_spec("inverse_intervention_nb_log", "auto")
    truth = {"intercept": -2.9, "gradient": 0.48, "la_deprivation": 0.25, "cross_level": -0.3,
             "la_sd": np.array([0.25, 0.10]), "rho": 0.3, "dispersion": 6.0}
    table = helpers.geography_table(synthetic_geography(10, seed=seed, lsoa_per_la=40))
    table, truth = helpers.known_truth_table(spec, table, truth, seed, extra=lambda design, rng: {"zi": 0.25})
    design = build_design(table, spec)
    pset = with_zi(load_priors(ROOT / "priors/weakly_informative.toml"))
    post = fit(spec, pset, design, chains=2, tune=300, draws=300, seed=1, chain_method="sequential").posterior
    for name in ("zi", "dispersion", "intercept", "gradient"):
        lo, hi = np.quantile(post[name], [0.005, 0.995])
        assert lo < truth[name] < hi, f"{name}: truth {truth[name]} outside ({lo:.3f}, {hi:.3f})"
    assert np.quantile(post["zi"], 0.975) - np.quantile(post["zi"], 0.025) < 0.15


@pytest.mark.parametrize("model", ["years_gradient_nb", "gradient_poisson"])
def test_the_chunk_gradient_keeps_each_inputs_precision_with_float32_rows(model):
    """A folded group term ((1 | la:year)) makes the chunk intercept float64 beside a float32 gradient; the
    hand-written chunk gradient gives each input's cotangent in its own dtype (it raised a dtype error
    under one-hot chunks, the accelerator default), and agrees with float64 rows to float32 rounding."""
    import jax
    import numpyro.infer.util as nu

    from hierarchy.inference.sampling import initial_point
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn
    from tests.helpers import every_column_table, table_for

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(ROOT / f"models/{model}.toml")
    design = build_design(table_for(spec, every_column_table()), spec)
    layout = make_layout(design)
    m = model_fn(spec, load_priors(ROOT / "priors/weakly_informative.toml"), design, layout, gather=False)
    z = initial_point(m, model_data(layout, "float64"), 0)
    data = {dt: model_data(layout, dt) for dt in ("float32", "float64")}
    # compiled, as the samplers run it (op by op took 4x longer; a dtype error is raised while tracing either way)
    grads = {dt: jax.jit(jax.grad(lambda z, d=d: nu.potential_energy(m, (d,), {}, z)))(z)
             for dt, d in data.items()}
    for k, g in grads["float64"].items():
        np.testing.assert_allclose(grads["float32"][k], g, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(g))))

"""The many-chain sampler ``--sampler chees`` (issue 30 item 1) and nested R-hat, its convergence gate.

Fast: nested R-hat against hand-computed cases and its stationary value ``sqrt(1 + 1/M)`` (the bar),
the verdict of :func:`diagnose` on a fit run in superchains, the core :func:`chees.run` on Gaussians
(jitted and vmapped over data), and the one-line refusals. Slow: chees agrees with NumPyro NUTS on the
default model (hyperparameter means within 0.1 NUTS posterior SD) and its fit file round-trips with the
nested verdict. SBC: the ranks of chees refits of the default model under the prior are uniform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.errors import HierarchyError
from hierarchy.inference import chees
from hierarchy.inference.diagnostics import diagnose, format_diagnostics, nested_rhat, nested_rhat_threshold

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------- nested R-hat


def test_nested_rhat_by_hand():
    """Superchain 0: chains [1, 3], [2, 4]; superchain 1: [5, 7], [6, 8]. Chain variances 2, chain
    means 2, 3 | 6, 7 (within-superchain variance of the means 0.5), superchain means 2.5 | 6.5
    (variance 8): W_nu = 2 + 0.5, nR-hat = sqrt(1 + 8 / 2.5)."""
    x = np.array([[1, 3], [2, 4], [5, 7], [6, 8]], dtype=float)
    assert nested_rhat(x, np.array([0, 0, 1, 1])) == pytest.approx(np.sqrt(4.2), rel=1e-12)
    # the ids need not be sorted or contiguous
    assert nested_rhat(x[[0, 2, 1, 3]], np.array([7, 3, 7, 3])) == pytest.approx(np.sqrt(4.2), rel=1e-12)


def test_nested_rhat_with_one_chain_a_superchain_and_one_draw_a_chain():
    # one chain a superchain: no between-chain term; W = mean chain variance (2), B = var([2, 6]) = 8
    x = np.array([[1, 3], [5, 7]], dtype=float)
    assert nested_rhat(x, np.array([0, 1])) == pytest.approx(np.sqrt(1 + 8 / 2))
    # one draw a chain: no within-chain term; W = mean of var([1, 2]), var([5, 7]) = (0.5 + 2) / 2
    x = np.array([[1], [2], [5], [7]], dtype=float)
    assert nested_rhat(x, np.array([0, 0, 1, 1])) == pytest.approx(np.sqrt(1 + np.var([1.5, 6], ddof=1) / 1.25))
    # identical superchains: exactly 1
    x = np.array([[1, 3], [2, 5], [1, 3], [2, 5]], dtype=float)
    assert nested_rhat(x, np.array([0, 0, 1, 1])) == 1.0


def test_nested_rhat_refuses_bad_groups_and_gives_nan_for_bad_draws():
    x = np.zeros((6, 4)) + np.arange(4)
    with pytest.raises(ValueError, match="superchains of equal size"):
        nested_rhat(x, np.array([0, 0, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match="2 or more superchains"):
        nested_rhat(x, np.zeros(6))
    y = x.copy()
    y[2, 1] = np.nan
    assert np.isnan(nested_rhat(y, np.repeat([0, 1, 2], 2)))
    assert np.isnan(nested_rhat(np.ones((4, 3)), np.array([0, 0, 1, 1])))  # constant: no variance


def test_the_bar_is_the_stationary_value_with_one_draw_a_chain():
    """For independent draws (chains that forgot their start), one draw a chain, E[nR^2 - 1] is about
    1/M; more draws a chain bring it well below the bar, and a start not forgotten (superchain means
    apart by half a posterior SD) puts it above."""
    rng = np.random.default_rng(0)
    k, m = 8, 16
    ids = np.repeat(np.arange(k), m)
    one = [nested_rhat(rng.normal(size=(k * m, 1)), ids) ** 2 - 1 for _ in range(2000)]
    assert np.mean(one) == pytest.approx(1 / m, rel=0.1)
    bar = nested_rhat_threshold(m)
    assert bar == pytest.approx(np.sqrt(1 + 1 / 16))
    stationary = [nested_rhat(rng.normal(size=(k * m, 50)), ids) for _ in range(200)]
    assert max(stationary) < bar
    offsets = [0.5 * rng.normal(size=k).repeat(m)[:, None] for _ in range(200)]
    stuck = [nested_rhat(rng.normal(size=(k * m, 50)) + shift, ids) for shift in offsets]
    assert np.mean(np.array(stuck) > bar) > 0.9


def _idata(x: np.ndarray, superchain: np.ndarray | None):
    import arviz as az

    stats = {"diverging": np.zeros(x.shape, bool)}
    if superchain is not None:
        stats["superchain"] = np.repeat(superchain[:, None], x.shape[1], 1)
    return az.from_dict(posterior={"gradient": x}, sample_stats=stats)


def test_diagnose_gates_a_superchain_fit_on_nested_rhat():
    """Short autocorrelated chains (AR(1), rho 0.7, 128 x 60): R-hat misses 1.01, but nested R-hat
    passes and ESS is enough, so the verdict is ok; with the superchains' starts not forgotten it warns
    and names nested R-hat. Without the statistic the old R-hat gate applies."""
    rng = np.random.default_rng(1)
    chains, draws, ids = 128, 60, np.repeat(np.arange(8), 16)
    x = np.empty((chains, draws))
    x[:, 0] = rng.normal(size=chains)
    for t in range(1, draws):
        x[:, t] = 0.7 * x[:, t - 1] + np.sqrt(1 - 0.49) * rng.normal(size=chains)
    d = diagnose(_idata(x, ids))
    assert d["rhat_max"] > 1.01 and d["ess_bulk_min"] >= 400, d
    assert d["status"] == "ok" and d["superchains"] == 8
    assert d["nested_rhat_threshold"] == pytest.approx(1.0308, abs=1e-4)
    assert d["nested_rhat_max"] < d["nested_rhat_threshold"] and d["nested_rhat_worst"] == "gradient"
    assert "nested R-hat" in format_diagnostics(d)
    shifted = x + 0.7 * rng.normal(size=8).repeat(16)[:, None]
    bad = diagnose(_idata(shifted, ids))
    assert bad["status"] == "warn" and any(r.startswith("nested R-hat") for r in bad["reasons"]), bad
    plain = diagnose(_idata(x, None))
    assert "nested_rhat_max" not in plain and any(r.startswith("R-hat") for r in plain["reasons"])


# ------------------------------------------------------------------------------------- the core


def _gauss(p, data):
    return -0.5 * ((p["a"] - data["mu"]) ** 2 / data["sd"] ** 2).sum() - 0.5 * p["b"] ** 2


def test_run_samples_gaussians_and_vmaps_over_data():
    """A 3-d Gaussian (scales 0.1, 1, 10) and a standard normal: means within 5 Monte Carlo SEs
    (from the draws' own ESS), SDs within 10%, for two data sets in one vmapped program."""
    import arviz as az
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    data = {"mu": jnp.array([[1.0, -2.0, 5.0], [0.0, 3.0, -5.0]]), "sd": jnp.array([[0.1, 1.0, 10.0]] * 2)}
    template = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    pos = chees.initial_positions(template, 4, 32, jax.random.PRNGKey(0))
    assert pos["a"].shape == (32, 3) and np.all(np.asarray(pos["a"][:8]) == np.asarray(pos["a"][0]))
    program = jax.jit(jax.vmap(lambda d, k: chees.run(_gauss, d, pos, k, num_warmup=300, num_draws=100,
                                                      thin=2)))
    kept, stats, adapted = program(data, jax.random.split(jax.random.PRNGKey(1), 2))
    assert kept["a"].shape == (2, 32, 50, 3) and stats["diverging"].shape == (2, 32, 50)
    assert np.asarray(adapted["inverse_mass_matrix"]).shape == (2, 4)
    for i in range(2):
        a = np.asarray(kept["a"][i])
        ess = az.ess(az.from_dict(posterior={"a": a}))["a"].values
        mc_se = np.asarray(data["sd"][i]) / np.sqrt(ess)
        assert np.all(np.abs(a.mean((0, 1)) - np.asarray(data["mu"][i])) < 5 * mc_se), (a.mean((0, 1)), mc_se)
        assert np.allclose(a.std((0, 1)), np.asarray(data["sd"][i]), rtol=0.1)
        assert abs(np.asarray(kept["b"][i]).std() - 1) < 0.1
    assert not np.asarray(stats["diverging"]).any()


def test_kept_draws_keeps_every_chain_and_thins_draws():
    assert chees.kept_draws(128, 100) == (1, 100)
    assert chees.kept_draws(1024, 100) == (7, 15)  # 1,024 x 15 = 15,360 <= 16,384
    assert chees.kept_draws(1024, 100, max_kept=1024 * 100) == (1, 100)


# ------------------------------------------------------------------------------------- wiring


def _small():
    import pandas as pd

    from hierarchy import shipped
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    spec = load_spec(shipped.resolve(shipped.DEFAULT_MODEL, "models"))
    geo = synthetic_geography(4, seed=0, lsoa_per_la=5)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"], "exposure": 100.0,
                          "deprivation": geo.lsoa["income_rate"], "referral": 5})
    return spec, load_priors(shipped.resolve(shipped.DEFAULT_PRIORS, "priors")), build_design(table, spec)


def test_chees_is_offered_and_refuses_what_it_does_not_do():
    from hierarchy.inference.sampling import SAMPLERS, check_sampler, fit

    assert "chees" in SAMPLERS and check_sampler("chees") == "chees"
    spec, priors, design = _small()
    with pytest.raises(HierarchyError, match="^method 'laplace' samples the hyperparameters with NumPyro NUTS, "
                                             "not 'chees'; use --sampler numpyro"):
        fit(spec, priors, design, sampler="chees", method="laplace")
    with pytest.raises(HierarchyError, match="^max_draws .* needs the numpyro sampler, not 'chees'"):
        fit(spec, priors, design, sampler="chees", draws=100, max_draws=300)
    with pytest.raises(HierarchyError, match="^--chains 8 is too few for --sampler chees: .*at least 16"):
        fit(spec, priors, design, sampler="chees", chains=8)
    with pytest.raises(HierarchyError, match="^--chains 100 with --sampler chees: give a multiple of 8 .*104"):
        fit(spec, priors, design, sampler="chees", chains=100)
    assert chees.superchains_for(128) == 8 and chees.superchains_for(32) == 4 and chees.superchains_for(1024) == 8


def test_check_float32_rows_refuses_a_density_or_gradient_that_departs_in_float32():
    """The check compares every chain's vmapped log density and gradient in the two row precisions: equal
    data pass; a shift of 0.01 in one of three means (a gradient gap of 1 at gradients of ~5, the value
    within its bar) and a shift of the value alone by 50 are refused with the fix."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    pos = chees.initial_positions({"a": jnp.zeros(3), "b": jnp.zeros(())}, 4, 16, jax.random.PRNGKey(0), 2.0)
    mu = jnp.array([1.0, -2.0, 5.0])
    d64 = {"mu": mu, "sd": jnp.array([0.1, 1.0, 10.0]), "c": jnp.zeros(())}
    f = lambda p, d: _gauss(p, d) + d["c"]  # noqa: E731
    chees.check_float32_rows(f, {k: v.astype(jnp.float32) for k, v in d64.items()}, d64, pos)
    fix = r"^--float32 with --sampler chees: .* in 16 of 16 chains .*Fit with --sampler chees without --float32$"
    with pytest.raises(HierarchyError, match=fix):
        chees.check_float32_rows(f, {**d64, "mu": mu.at[0].add(0.01)}, d64, pos)
    with pytest.raises(HierarchyError, match=fix):
        chees.check_float32_rows(f, {**d64, "c": jnp.asarray(50.0)}, d64, pos)


@pytest.mark.slow  # ~30 s on 2 loaded cores (two vmapped compilations of a 300-LA model)
def test_float32_rows_vmapped_over_64_chains_agree_with_float64_on_the_default_model():
    """Issue 30: on CPU (jaxlib 0.10.2) float32 chunk sums cast to float64 went wrong when vmapped past 2**14
    chunk sums (64 chains of 300 chunks: gradients off by thousands; on stages_age_nb the shared step size
    collapsed to 6e-6). The families now sum into the wider dtype (tests/likelihood/test_float32_batch.py);
    through the whole model, the check ``fit_chees`` runs before sampling with --float32 passes."""
    import jax
    import pandas as pd
    from numpyro.infer.util import potential_energy

    from hierarchy import shipped
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.inference.sampling import initial_point
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    spec = load_spec(shipped.resolve(shipped.DEFAULT_MODEL, "models"))
    priors = load_priors(shipped.resolve(shipped.DEFAULT_PRIORS, "priors"))
    geo = synthetic_geography(300, seed=0, lsoa_per_la=5)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"], "exposure": 100.0,
                          "deprivation": geo.lsoa["income_rate"],
                          "referral": np.random.default_rng(0).poisson(5, len(geo.lsoa))})
    design = build_design(table, spec)
    jax.config.update("jax_enable_x64", True)
    layout = make_layout(design)
    d32, d64 = model_data(layout, "float32"), model_data(layout, "float64")
    model = model_fn(spec, priors, design, layout)
    template = initial_point(model, d64, 0)

    def logdensity(z, d):
        return -potential_energy(model, (d,), {}, z)

    many = chees.initial_positions(template, 8, 64, jax.random.PRNGKey(0))
    chees.check_float32_rows(logdensity, d32, d64, many)


# ------------------------------------------------------------------------------------- against NUTS

TRUTH = {"intercept": -2.9, "gradient": 0.48, "la_deprivation": 0.25, "cross_level": -0.3,
         "la_sd": np.array([0.25, 0.10]), "rho": 0.3, "dispersion": 6.0}
HYPER = ["intercept", "gradient", "la_deprivation", "cross_level", "la_sd[0]", "la_sd[1]", "la_corr[0,1]",
         "dispersion"]


def _pick(draws, name: str) -> np.ndarray:
    base, _, k = name.partition("[")
    values = np.asarray(draws.posterior[base])
    index = tuple(int(i) for i in k[:-1].split(",")) if k else ()
    return values[(slice(None), slice(None), *index)].ravel()


@pytest.mark.slow  # a NUTS reference (4 x 2,000) and a chees fit (128 x 600) of 400 rows: 5 minutes on 2 cores
def test_chees_matches_numpyro_nuts_on_the_default_model(tmp_path):
    """20 LAs x 20 neighbourhoods drawn from the default model (NB, LA deprivation in the LA means):
    chees posterior means of the hyperparameters within 0.1 NUTS posterior SD, SDs within 15%; the chees
    fit meets its bar (nested R-hat, ESS) and its fit file loads with the nested verdict re-checked."""
    from hierarchy import shipped
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.results import fitfile
    from tests import helpers

    spec = load_spec(shipped.resolve(shipped.DEFAULT_MODEL, "models"))
    priors = load_priors(shipped.resolve(shipped.DEFAULT_PRIORS, "priors"))
    geo = synthetic_geography(20, seed=5, lsoa_per_la=20)
    table, _ = helpers.known_truth_table(spec, helpers.geography_table(geo), TRUTH, 5)
    design = build_design(table, spec)
    ref = fit(spec, priors, design, seed=1, chains=4, tune=500, draws=1500, chain_method="sequential")
    got = fit(spec, priors, design, sampler="chees", seed=2, float32=True)
    assert got.settings["chains"] == 128 and got.settings["superchains"] == 8
    assert got.posterior["gradient"].shape == (128, 100) and got.stats["superchain"].shape == (128, 100)
    misses = []
    for name in HYPER:
        r, g = _pick(ref, name), _pick(got, name)
        gap, ratio = abs(g.mean() - r.mean()) / r.std(), g.std() / r.std()
        if not (gap <= 0.1 and 0.85 <= ratio <= 1.15):
            misses.append(f"{name}: mean {g.mean():.4f} vs NUTS {r.mean():.4f} ({gap:.3f} NUTS SDs), SD ratio "
                          f"{ratio:.3f}")
    assert not misses, "\n".join(misses)
    idata = fitfile.build_idata(got, spec, priors, design, data_hash="test", data_source="test", column_map={})
    d = fitfile.provenance(idata)["diagnostics"]
    assert d["status"] == "ok" and d["nested_rhat_max"] <= d["nested_rhat_threshold"], d
    path = fitfile.save_fit(idata, tmp_path / "chees.nc")
    loaded = fitfile.load_fit(path)
    assert fitfile.checked_diagnostics(loaded)["nested_rhat_max"] == pytest.approx(d["nested_rhat_max"])


# ------------------------------------------------------------------------------------- SBC

SBC_PRIORS = {"intercept": {"dist": "Normal", "mu": -3.0, "sigma": 0.5},
              "gradient": {"dist": "Normal", "mu": 0.4, "sigma": 0.2},
              "cross_level": {"dist": "Normal", "mu": -0.3, "sigma": 0.2},
              "la_deprivation": {"dist": "Normal", "mu": 0.0, "sigma": 0.3},
              "la_sd": {"dist": "HalfNormal", "sigma": 0.3},
              "dispersion": {"dist": "Gamma", "alpha": 10.0, "beta": 1.0}}


def _chees_sbc(replicates: int, chains: int, warmup: int, draws: int, n_post: int = 100, seed: int = 4):
    """SBC of chees on the default model (8 LAs x 15 neighbourhoods): every replicate's refit in one
    program vmapped over the replicates. Returns ``[(label, chi-square p, bin counts)]`` and the
    divergences per replicate."""
    import jax
    import jax.numpy as jnp
    import pandas as pd
    from numpyro.infer import Predictive
    from numpyro.infer.util import initialize_model
    from scipy import stats

    from hierarchy import shipped
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.inference.sbc import _scalars
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import PriorSet, load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.likelihood import jaxmodel as jm

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(shipped.resolve(shipped.DEFAULT_MODEL, "models"))
    base = load_priors(shipped.resolve(shipped.DEFAULT_PRIORS, "priors")).to_dict()
    priors = PriorSet.from_dict({**base, **SBC_PRIORS})
    geo = synthetic_geography(8, seed=0, lsoa_per_la=15)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"], "exposure": 100.0,
                          "deprivation": geo.lsoa["income_rate"], "referral": 0})
    design = build_design(table, spec)
    key_prior, key_init, key_fit = jax.random.split(jax.random.PRNGKey(seed), 3)
    layout0 = jm.make_layout(design)
    prior = Predictive(jm.model_fn(spec, priors, design, layout0), num_samples=replicates)(
        key_prior, jm.model_data(layout0))
    prior = {k: np.asarray(v) for k, v in prior.items()}
    rng = np.random.default_rng([seed, 2018])
    ys = [jm.draw_counts(spec, design, {k: v[r] for k, v in prior.items()}, rng) for r in range(replicates)]
    layout = jm.make_layout(design, chunk=int(np.bincount(design.la_index).max()),
                            hist_len=jm.hist_len_for(max(int(y.max()) for y in ys), len(design.y)))
    data = jax.tree.map(lambda *a: jnp.stack(a),
                        *[jm.model_data(jm.with_counts(layout, y, design.stage_index)) for y in ys])
    info, potential_gen, postprocess_gen, _ = initialize_model(
        key_init, jm.model_fn(spec, priors, design, layout), model_args=(jax.tree.map(lambda a: a[0], data),),
        dynamic_args=True)
    names = [k for k in ("intercept", "gradient", "la_deprivation", "cross_level", "la_sd", "la_corr",
                         "dispersion") if k in prior]

    def one(d, key):
        k_init, k_run = jax.random.split(key)
        pos = chees.initial_positions(info.z, chees.superchains_for(chains), chains, k_init)
        keep = lambda z, dd: {k: postprocess_gen(dd)(z)[k] for k in names}  # noqa: E731
        kept, st, _ = chees.run(lambda z, dd: -potential_gen(dd)(z), d, pos, k_run, num_warmup=warmup,
                                num_draws=draws, transform=keep)
        return kept, st["diverging"].sum()

    keys = jax.random.split(key_fit, replicates)  # replicates in turn: on CPU faster than side by side
    post, divergences = jax.jit(lambda dd, kk: jax.lax.map(lambda a: one(*a), (dd, kk)))(data, keys)
    out = []
    for name in names:
        flat = np.asarray(post[name]).reshape(replicates, chains * draws, *prior[name].shape[1:])
        sample = flat[:, np.linspace(0, chains * draws - 1, n_post).round().astype(int)]  # over every chain
        for label, idx in _scalars(name, prior[name][0]).items():
            ranks = np.sum(sample[(slice(None), slice(None), *idx)] < prior[name][(slice(None), *idx)][:, None], 1)
            counts = np.bincount(ranks * 8 // (n_post + 1), minlength=8)
            out.append((label, stats.chisquare(counts).pvalue, counts.tolist()))
    return out, np.asarray(divergences)


@pytest.mark.slow  # 106 s on 2 cores beside a test run (replicates in turn; side by side it took 22 min)
@pytest.mark.sbc
def test_sbc_of_chees_on_the_default_model():
    """100 prior draws of the default model on 8 LAs x 15 neighbourhoods, each refitted by chees (16
    chains in 4 superchains, 200 + 25 steps) in one program vmapped over the replicates; the ranks of
    the truth among 100 thinned draws are uniform (chi-square, p >= 0.001 per parameter)."""
    table, divergences = _chees_sbc(replicates=100, chains=16, warmup=200, draws=25)
    bad = [t for t in table if t[1] < 0.001]
    assert len(table) >= 8 and not bad, f"chees SBC ranks not uniform: {bad}"
    assert divergences.mean() < 1.0

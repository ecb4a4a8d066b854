"""The embedded Laplace mode (hierarchy.inference.laplace): its pieces against the model's own
density, the approximation against quadrature, refusals, and the fit beside NUTS on known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import HierarchyError
from hierarchy.inference import laplace, laplace_fit
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
PRIORS = load_priors(ROOT / "priors/weakly_informative.toml")
TRUTH = {"intercept": -2.9, "gradient": 0.48, "la_deprivation": 0.25, "cross_level": -0.3,
         "la_sd": np.array([0.25, 0.10]), "rho": 0.3, "dispersion": 6.0}
HYPER = ("intercept", "gradient", "la_deprivation", "cross_level", "la_sd", "dispersion")


def known_truth(model: str, n_la: int, lsoa_per_la: int, seed: int):
    spec = load_spec(ROOT / f"models/{model}.toml")
    geo = synthetic_geography(n_la, seed=seed, lsoa_per_la=lsoa_per_la)
    table, truth = helpers.known_truth_table(spec, helpers.geography_table(geo), TRUTH, seed)
    return spec, build_design(table, spec), truth, table


def simulated(model: str, n_la: int, lsoa_per_la: int, seed: int):
    """A small simulated table (``hierarchy simulate``; years 2017-2019 for a multi-year model) and its design."""
    from hierarchy.data import simulate

    spec = load_spec(ROOT / f"models/{model}.toml")
    geo = synthetic_geography(n_la, seed=seed, lsoa_per_la=lsoa_per_la)
    if spec.strata == ("year",):
        table, _ = simulate.simulate_years(geo, (2017, 2018, 2019), seed=seed)
    else:
        table, _ = simulate.simulate(geo, seed=seed)
    return spec, build_design(table, spec)


@pytest.fixture(scope="module")
def small_problem():
    spec, design, truth, _ = known_truth("inverse_intervention_nb_log", 8, 20, seed=4)
    return laplace.build_problem(spec, PRIORS, design), truth


@pytest.fixture(scope="module", params=["inverse_intervention_nb_log",
                                        pytest.param("stages_nb", marks=pytest.mark.slow),
                                        pytest.param("years_gradient_nb", marks=pytest.mark.slow)])
def any_problem(request):
    """The default model, an anchored stacked model (la_anchor, la_stage_centred) and a multi-year model
    (la_level with year strata, (1 | la:year) as a nested group) on 6 LAs."""
    spec, design = simulated(request.param, 6, 12, seed=5)
    return laplace.build_problem(spec, PRIORS, design)


def test_local_derivatives_are_the_models(any_problem):
    """Per-LA values (up to a constant), gradient and Hessian blocks equal automatic differentiation
    of the NUTS path's own potential energy in the latent effects (off-diagonal LA blocks are zero)."""
    import jax
    import jax.numpy as jnp

    pb = any_problem
    zh = laplace.hyper_init(pb)
    real = jnp.asarray(pb.real, float)
    x = pb.x0 + 0.1 * real
    pc = pb.pieces(zh)

    def U(v):
        return pb.potential({**zh, **pb.sites_of(v)}) + 0.5 * jnp.sum((1 - real) * v**2)  # padding: N(0, 1)

    f, g, H = pb.local(pc, x)
    zero = jnp.zeros_like(x)
    np.testing.assert_allclose(f.sum() - pb.local(pc, zero, derivatives=False)[0].sum(), U(x) - U(zero), rtol=1e-8)
    np.testing.assert_allclose(g, jax.grad(U)(x), rtol=1e-8, atol=1e-7)
    full = jax.jit(jax.hessian(U))(x)  # (J, E, J, E)
    blocks = jnp.stack([full[j, :, j, :] for j in range(pb.n_la)])
    np.testing.assert_allclose(H, blocks, rtol=1e-8, atol=1e-7)
    off = full.at[jnp.arange(pb.n_la), :, jnp.arange(pb.n_la), :].set(0.0)
    assert float(jnp.max(jnp.abs(off))) < 1e-9


def test_newton_mode_and_ift_gradient(any_problem):
    """Newton's mode zeroes the joint's gradient in the latent effects, and the Laplace potential's
    gradient (implicit function theorem) matches central finite differences."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    pb = any_problem
    zh = laplace.hyper_init(pb)
    x0 = pb.x0
    x_hat, _, dec, joint = jax.jit(lambda z: laplace.mode_and_hessian(pb, z, x0))(zh)
    np.testing.assert_allclose(joint, pb.potential({**zh, **pb.sites_of(x_hat)}), rtol=1e-10)
    assert float(dec) < laplace.NEWTON_TOL
    grad_x = jax.grad(lambda v: pb.potential({**zh, **pb.sites_of(v)}))(x_hat)
    assert float(jnp.max(jnp.abs(grad_x))) < 1e-6
    flat, unravel = ravel_pytree(zh)
    U = jax.jit(lambda q: laplace.laplace_potential(pb, x0)(unravel(q)))
    g = jax.jit(jax.grad(lambda q: laplace.laplace_potential(pb, x0)(unravel(q))))(flat)
    h = 1e-5
    for i in np.unique(np.linspace(0, len(flat) - 1, 10).astype(int)):  # 10 coordinates at most (35 stacked)
        e = jnp.zeros_like(flat).at[i].set(h)
        fd = (U(flat + e) - U(flat - e)) / (2 * h)
        assert abs(float(g[i]) - float(fd)) < 1e-4 * max(1.0, abs(float(fd))), (i, float(g[i]), float(fd))


def test_laplace_marginal_matches_quadrature(small_problem):
    """Each LA's Laplace log marginal (the integral of the joint over its two effects) agrees with
    adaptive Gauss-Hermite quadrature (24 x 24 nodes) to 0.01 log units at the model's initial
    hyperparameters and at the Laplace posterior mode."""
    import jax
    import jax.numpy as jnp

    pb, _ = small_problem
    x0 = pb.x0
    zh_mode, _, _ = laplace_fit.find_mode(pb, laplace.hyper_init(pb), x0)
    nodes, weights = np.polynomial.hermite.hermgauss(24)
    u = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2) * np.sqrt(2.0)
    log_w = np.log(np.outer(weights, weights).reshape(-1))
    for zh in (laplace.hyper_init(pb), zh_mode):
        pc = pb.pieces(zh)
        x_hat, H, _, _ = laplace.mode_and_hessian(pb, zh, x0)
        f_hat = np.asarray(pb.local(pc, x_hat, derivatives=False)[0])
        L = np.linalg.cholesky(np.asarray(H))
        lap = -f_hat + np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(np.asarray(H))[1]
        # x = x_hat + L'^-1 u: integral = 2 / |det L| sum_n w_n exp(-f(x_n) + |u_n|^2 / 2)
        xs = np.asarray(x_hat)[None] + np.einsum("jfe,nf->nje", np.linalg.inv(L), u)
        f = np.asarray(jax.vmap(lambda v, pc=pc: pb.local(pc, v, derivatives=False)[0])(jnp.asarray(xs)))
        log_terms = log_w[:, None] - f + 0.5 * np.sum(u**2, 1)[:, None]
        quad = np.logaddexp.reduce(log_terms, axis=0) + np.log(2.0) - np.log(np.abs(np.linalg.det(L)))
        np.testing.assert_allclose(lap, quad, atol=0.01)


def test_marginal_is_exact_as_an_la_sd_goes_to_zero(small_problem):
    """As an LA SD goes to zero the Laplace marginal tends to the likelihood at the prior mean, so the
    potential rises by the log-SD Jacobian alone (1 per unit of log SD under a half-normal prior), from
    any Newton start. Formed about 0, the prior's quadratic (terms of 1 / sd^2) cancelled to noise of
    hundreds of log units below log SD -12, a false well that trapped SBC chains at log SD -20."""
    import jax
    import jax.numpy as jnp

    pb, _ = small_problem
    zh = laplace.hyper_init(pb)
    U = jax.jit(lambda z, x0: laplace.laplace_potential(pb, x0)(z))
    for j in (0, 1):
        for x0 in (pb.x0, pb.x0 + 0.5 * jnp.asarray(pb.real, float)):
            values = [float(U({**zh, "la_sd": jnp.asarray(zh["la_sd"]).at[j].set(v)}, x0))
                      for v in (-12.0, -16.0, -20.0, -24.0, -28.0)]
            np.testing.assert_allclose(np.diff(values), 4.0, atol=0.01)


def test_refuses_terms_outside_the_regime(small_geography):
    """MSOA effects, Poisson-lognormal rows, a large group not nested in an LA and a gradient varying over
    a group that is not (``(1 + w | ethnicity)``) are refused with a reason that names the term; strata,
    stacked stages and (1 | la:year) are not; so are unknown
    methods and samplers other than NumPyro's."""
    import re

    table = helpers.with_formula_columns(helpers.geography_table(small_geography).assign(
        referral=5, cp_plan=1))
    for formula in ("referral ~ w * z + (1 + w | la) + (1 | la:year) + offset(log(exposure))",
                    "referral ~ w * z + C(year) + (1 + w | la) + offset(log(exposure))"):
        spec = ModelSpec.from_dict({"name": "t", "family": "negative_binomial", "formula": formula})
        assert laplace.refusal(spec, build_design(table, spec)) is None, formula
    spec = ModelSpec.from_dict({"name": "t", "family": "negative_binomial",
                                "formula": "referral ~ w * z + (1 + w | la) + (1 | neighbourhood) "
                                           "+ offset(log(exposure))"})
    why = laplace.refusal(spec, build_design(table, spec))
    assert why and "(1 | neighbourhood)" in why and "one LA" in why
    spec = load_spec(ROOT / "models/ethnicity_gradient_nb.toml")  # measured: NUTS over the marginal froze
    why = laplace.refusal(spec, build_design(helpers.table_for(spec, helpers.every_column_table()), spec))
    assert why and "(1 + w | ethnicity)" in why and "R-hat 2.7" in why
    plain = build_design(table, load_spec(ROOT / "models/gradient_nb.toml"))
    spec = ModelSpec.from_dict({"name": "t", "family": "negative_binomial",
                                "formula": "referral ~ w * z + (1 + w | la) + (1 | msoa) + offset(log(exposure))"})
    with pytest.raises(HierarchyError, match=re.escape("(1 | msoa)")):
        laplace.check_supported(spec, plain)
    spec = ModelSpec.from_dict({"name": "t", "family": "poisson_lognormal"})
    design = build_design(table, spec)
    with pytest.raises(HierarchyError, match="Poisson-lognormal"):
        fit(spec, PRIORS, design, method="laplace")
    spec = load_spec(ROOT / "models/gradient_nb.toml")
    design = build_design(table, spec)
    with pytest.raises(HierarchyError, match="unknown method 'lapalce'"):
        fit(spec, PRIORS, design, method="lapalce")
    with pytest.raises(HierarchyError, match="NumPyro NUTS"):
        fit(spec, PRIORS, design, method="laplace", sampler="pymc")


@pytest.mark.slow  # ~60 s on 2 loaded cores (compiling the sampler dominates)
def test_fit_laplace_draws_like_nuts():
    """A short Laplace fit gives the NUTS path's posterior names and shapes, sample statistics and
    provenance, a fit file, and recovers the truth of a small known-truth data set."""
    from hierarchy.results.fitfile import build_idata

    spec, design, truth, _ = known_truth("gradient_poisson", 12, 30, seed=2)
    draws = fit(spec, PRIORS, design, chains=2, tune=150, draws=150, seed=1, chain_method="sequential",
                method="laplace")
    post = draws.posterior
    assert set(post) == {"intercept", "gradient", "la_sd", "la_corr", "la_coef"}
    assert post["la_coef"].shape == (2, 150, design.n_la, 2)
    assert post["la_corr"].shape == (2, 150, 2, 2)
    assert draws.settings["method"] == "laplace" and "laplace" in draws.settings
    assert {"diverging", "energy", "n_steps", "tree_depth"} <= set(draws.stats)
    assert draws.stats["diverging"].sum() <= 3
    for name in ("intercept", "gradient"):
        lo, hi = np.quantile(post[name], [0.005, 0.995])
        assert lo < truth[name] < hi, f"{name}: truth {truth[name]} outside ({lo:.3f}, {hi:.3f})"
    lo, hi = np.quantile(post["la_coef"], [0.025, 0.975], axis=(0, 1))
    covered = np.mean((lo < truth["la_coef"]) & (truth["la_coef"] < hi))
    assert covered >= 0.8, f"LA effects: 95% intervals cover {covered:.0%}"
    idata = build_idata(draws, spec, PRIORS, design, data_hash="x")
    assert "la_coef" in idata.posterior and idata.posterior["la_coef"].dims[-2:] == ("la", "coef")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["inverse_intervention_nb_log",  # the Poisson twin: long (CI's time)
                                   pytest.param("gradient_poisson", marks=pytest.mark.long)])
def test_laplace_beside_nuts(model):
    """On 30 LAs x 50 neighbourhoods of known truth, the Laplace fit beside a NUTS fit of the same
    data: hyperparameter means within 0.2 NUTS posterior SD, SDs within 20%, LA effects' means
    within 0.3 SD, and the truth inside both fits' 99% intervals."""
    spec, design, truth, _ = known_truth(model, 30, 50, seed=6)
    kw = dict(chains=2, tune=600, draws=1000, seed=3, chain_method="sequential")
    lap = fit(spec, PRIORS, design, method="laplace", **kw).posterior
    nuts = fit(spec, PRIORS, design, method="nuts", **kw).posterior
    for name in (*HYPER, "la_coef"):
        if name not in nuts:
            continue
        a, b = lap[name].reshape(-1, *lap[name].shape[2:]), nuts[name].reshape(-1, *nuts[name].shape[2:])
        dmean = np.abs(a.mean(0) - b.mean(0)) / b.std(0)
        ratio = a.std(0) / b.std(0)
        limit = 0.3 if name == "la_coef" else 0.2
        assert np.max(dmean) < limit, f"{model} {name}: means differ by {np.max(dmean):.2f} NUTS SD"
        assert np.all(np.abs(ratio - 1) < 0.2), f"{model} {name}: SD ratios {np.round(ratio, 2)}"
        if name in HYPER and name != "la_sd":
            lo, hi = np.quantile(a, [0.005, 0.995], axis=0)
            assert np.all((lo < truth[name]) & (truth[name] < hi)), f"{model} {name}: truth outside"


@pytest.mark.slow  # years ~140 s on 2 loaded cores; stacked ~210 s (long: CI's time)
@pytest.mark.parametrize("model", [pytest.param("stages_nb", marks=pytest.mark.long), "years_gradient_nb"])
def test_laplace_beside_nuts_stacked_and_years(model):
    """The stacked (anchored) and multi-year models on 10 simulated LAs: the Laplace fit beside a NUTS fit
    of the same data, headline hyperparameters' means within 0.25 NUTS SD and SDs within 25% (short
    chains: the Monte Carlo error of both is part of the difference), and the Laplace fit's gradients
    within their 99% intervals of the NUTS means."""
    spec, design = simulated(model, 10, 40, seed=7)
    kw = dict(chains=2, tune=400, draws=600, seed=3, chain_method="sequential")
    lap = fit(spec, PRIORS, design, method="laplace", **kw)
    nuts = fit(spec, PRIORS, design, method="nuts", **kw).posterior
    assert lap.settings["method"] == "laplace"
    if model == "years_gradient_nb":
        assert "without the sum to zero" in lap.settings["laplace"]["marginalised"]
    names = ("intercept", "gradient", "la_deprivation", "cross_level", "dispersion", "la_sd", "la_stage_sd",
             "stratum_gradient_offset")
    for name in names:
        if name not in nuts:
            continue
        a = lap.posterior[name].reshape(-1, *lap.posterior[name].shape[2:])
        b = nuts[name].reshape(-1, *nuts[name].shape[2:])
        dmean = np.abs(a.mean(0) - b.mean(0)) / b.std(0)
        ratio = a.std(0) / b.std(0)
        assert np.max(dmean) < 0.25, f"{model} {name}: means differ by {np.max(dmean):.2f} NUTS SD"
        assert np.all(np.abs(ratio - 1) < 0.25), f"{model} {name}: SD ratios {np.round(ratio, 2)}"

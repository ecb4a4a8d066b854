"""Laplace maximum likelihood (hierarchy.inference.ml): exact where Laplace is exact, brute force where it
is not, recovery of a simulated NB panel, and clear errors for badly named sites."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from hierarchy.errors import HierarchyError
from hierarchy.inference.ml import laplace_ml

jax = pytest.importorskip("jax")
numpyro = pytest.importorskip("numpyro")
dist = numpyro.distributions


def lmm(g, y, n_groups):
    """Gaussian random intercepts, centred: the Laplace marginal is exact."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sd_u = numpyro.sample("sd_u", dist.HalfNormal(1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    u = numpyro.sample("u", dist.Normal(mu, sd_u).expand([n_groups]).to_event(1))
    numpyro.sample("y", dist.Normal(u[g], sigma).to_event(1), obs=y)


def test_gaussian_random_intercepts_match_statsmodels_ml_exactly():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(1)
    n_groups, per = 12, 6
    g = np.repeat(np.arange(n_groups), per)
    y = 1.5 + rng.normal(0, 0.7, n_groups)[g] + rng.normal(0, 0.5, len(g))
    res = laplace_ml(lmm, g, y, n_groups, latent=["u"], hyper=["mu", "sd_u", "sigma"])
    ref = sm.MixedLM(y, np.ones((len(y), 1)), groups=g).fit(reml=False)
    assert res.converged, res.message
    np.testing.assert_allclose(res.estimates["mu"], ref.fe_params[0], rtol=1e-5)
    np.testing.assert_allclose(res.estimates["sd_u"], np.sqrt(np.asarray(ref.cov_re)[0, 0]), rtol=1e-4)
    np.testing.assert_allclose(res.estimates["sigma"], np.sqrt(ref.scale), rtol=1e-4)
    np.testing.assert_allclose(res.se["mu"], ref.bse_fe[0], rtol=1e-3)
    np.testing.assert_allclose(res.log_marginal, ref.llf, rtol=1e-7)
    # the conditional modes are the BLUPs
    np.testing.assert_allclose(res.latent["u"] - res.estimates["mu"],
                               np.array([np.asarray(v)[0] for v in ref.random_effects.values()]), atol=1e-4)


def poisson_ri(g, log_e, y, mask, ci, lo, hi, n_groups):
    """Poisson random intercepts with interval-censored cells (the panel model's censoring)."""
    from hierarchy.likelihood.panel_model import censored_log_prob

    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    sd = numpyro.sample("sd", dist.HalfNormal(1.0))
    u = numpyro.sample("u", dist.Normal(alpha, sd).expand([n_groups]).to_event(1))
    mu = jax.numpy.exp(log_e + u[g])
    numpyro.sample("y", dist.Poisson(mu).mask(mask).to_event(1), obs=y)
    numpyro.factor("y_censored", censored_log_prob(dist.Poisson(mu[ci]), lo, hi, 5).sum())


def _poisson_data(seed=3, n_groups=10, per=4):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    log_e = np.log(rng.uniform(5, 40, len(g)))
    y = rng.poisson(np.exp(log_e + rng.normal(-1.0, 0.5, n_groups)[g])).astype(float)
    ci = np.flatnonzero((y >= 1) & (y <= 5))   # DfE's 'c': the count is known to lie in 1-5
    mask = np.ones(len(y), bool)
    mask[ci] = False
    return g, log_e, y, mask, ci


def _aghq_neg_loglik(theta, g, log_e, y, mask, ci, n_groups, nodes=40):
    """Adaptive Gauss-Hermite quadrature of each group's marginal: the brute-force reference."""
    alpha, sd = theta[0], np.exp(theta[1])
    x, w = np.polynomial.hermite_e.hermegauss(nodes)   # probabilists': weight exp(-x^2/2)
    cens = np.zeros(len(y), bool)
    cens[ci] = True

    def cell_lp(u, rows):
        mu = np.exp(log_e[rows][None] + u[:, None])
        lp = np.where(mask[rows][None], stats.poisson.logpmf(y[rows][None], mu), 0.0)
        lp_c = np.log(np.maximum(stats.poisson.cdf(5, mu) - stats.poisson.cdf(0, mu), 1e-300))
        return (lp + np.where(cens[rows][None], lp_c, 0.0)).sum(1)

    total = 0.0
    for j in range(n_groups):
        rows = g == j
        def neg(u, rows=rows):
            return -(cell_lp(np.atleast_1d(u), rows)[0] + stats.norm.logpdf(u, alpha, sd))
        m = optimize.minimize_scalar(neg, bounds=(alpha - 10 * sd - 5, alpha + 10 * sd + 5), method="bounded").x
        e = 1e-4
        curv = (neg(m + e) - 2 * neg(m) + neg(m - e)) / e**2
        s = 1 / np.sqrt(curv)
        u = m + s * x
        log_int = cell_lp(u, rows) + stats.norm.logpdf(u, alpha, sd) + x**2 / 2
        total += np.log(s) + np.log(np.sum(w * np.exp(log_int - log_int.max()))) + log_int.max()
    return -total


def test_poisson_random_intercepts_with_censored_cells_agree_with_quadrature():
    g, log_e, y, mask, ci = _poisson_data()
    n_groups = int(g.max()) + 1
    assert len(ci) >= 3  # censored cells take part
    lo, hi = np.ones(len(ci)), np.full(len(ci), 5.0)
    res = laplace_ml(poisson_ri, g, log_e, np.where(mask, y, 0.0), mask, ci, lo, hi, n_groups,
                     latent=["u"], hyper=["alpha", "sd"])
    assert res.converged, res.message
    ref = optimize.minimize(_aghq_neg_loglik, [-1.0, np.log(0.5)], args=(g, log_e, y, mask, ci, n_groups),
                            method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-10})
    # the Laplace marginal is close to the exact one for groups of 4 cells of ~10 counts (not equal):
    # its estimates lie well within a tenth of a standard error of the exact maximum likelihood
    assert abs(res.estimates["alpha"] - ref.x[0]) < 0.1 * res.se["alpha"]
    assert abs(res.estimates["sd"] - np.exp(ref.x[1])) < 0.1 * res.se["sd"]
    assert abs(res.log_marginal + ref.fun) < 0.05
    # the censored cells are in that likelihood: without them the exact one moves by far more than 0.05
    uncensored = _aghq_neg_loglik(ref.x, g, log_e, y, mask, ci[:0], n_groups)
    assert abs(uncensored - ref.fun) > 1.0


def nb_panel(ui, t, z, log_e, y, n_units):
    """NB2 counts with correlated LA intercepts and trends centred on a deprivation regression."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.0))
    b_dep = numpyro.sample("b_dep", dist.Normal(0.0, 1.0))
    b_t = numpyro.sample("b_t", dist.Normal(0.0, 0.2))
    sd_u = numpyro.sample("sd_u", dist.HalfNormal(1.0))
    sd_v = numpyro.sample("sd_v", dist.HalfNormal(0.1))
    corr = numpyro.sample("L_corr", dist.LKJCholesky(2, 2.0))
    inv_sqrt_phi = numpyro.sample("inv_sqrt_phi", dist.HalfNormal(1.0))
    mean = jax.numpy.stack([alpha + b_dep * z, b_t + 0 * z], axis=1)
    tril = jax.numpy.stack([sd_u, sd_v])[:, None] * corr
    uv = numpyro.sample("uv", dist.MultivariateNormal(mean, scale_tril=tril).to_event(1))
    mu = jax.numpy.exp(log_e + uv[ui, 0] + uv[ui, 1] * t)
    numpyro.sample("y", dist.NegativeBinomial2(mu, 1 / inv_sqrt_phi**2).to_event(1), obs=y)


NB_REPORTED = {"phi": lambda v: 1 / v["inv_sqrt_phi"] ** 2, "corr": lambda v: v["L_corr"][1, 0]}


def test_recovers_a_simulated_nb_panel_within_three_standard_errors():
    rng = np.random.default_rng(11)
    n_units, n_years = 40, 8
    truth = dict(alpha=-3.0, b_dep=0.3, b_t=0.02, sd_u=0.25, sd_v=0.04, corr=-0.3, phi=30.0)
    z = rng.normal(0, 1, n_units)
    cov = np.array([[truth["sd_u"] ** 2, truth["corr"] * truth["sd_u"] * truth["sd_v"]],
                    [truth["corr"] * truth["sd_u"] * truth["sd_v"], truth["sd_v"] ** 2]])
    uv = rng.multivariate_normal([0, 0], cov, n_units) + np.column_stack(
        [truth["alpha"] + truth["b_dep"] * z, np.full(n_units, truth["b_t"])])
    ui = np.repeat(np.arange(n_units), n_years)
    t = np.tile(np.arange(n_years) - 4.0, n_units)
    log_e = np.log(rng.uniform(2e3, 2e4, len(ui)))
    mu = np.exp(log_e + uv[ui, 0] + uv[ui, 1] * t)
    y = rng.negative_binomial(truth["phi"], truth["phi"] / (truth["phi"] + mu)).astype(float)
    res = laplace_ml(nb_panel, ui, t, z, log_e, y, n_units, latent=["uv"],
                     hyper=["alpha", "b_dep", "b_t", "sd_u", "sd_v", "L_corr", "inv_sqrt_phi"],
                     reported=NB_REPORTED)
    assert res.converged, res.message
    for name, value in truth.items():
        est, se = float(res.estimates[name]), float(res.se[name])
        assert 0 < se < 0.5 * max(abs(value), 0.05) + 0.5, (name, se)
        assert abs(est - value) < 3 * se, (name, est, se, value)
    tab = res.table()
    assert {"alpha", "phi", "corr", "L_corr[3]"} <= set(tab["parameter"])


def test_sites_must_be_named_once_and_latent_sites_real():
    g = np.repeat(np.arange(3), 2)
    y = np.arange(6.0)
    with pytest.raises(HierarchyError, match=r"\['sigma'\] are neither latent, hyper nor unused"):
        laplace_ml(lmm, g, y, 3, latent=["u"], hyper=["mu", "sd_u"])
    with pytest.raises(HierarchyError, match="not free sample sites"):
        laplace_ml(lmm, g, y, 3, latent=["u"], hyper=["mu", "sd_u", "sigma", "y"])
    with pytest.raises(HierarchyError, match="named twice"):
        laplace_ml(lmm, g, y, 3, latent=["u"], hyper=["mu", "sd_u", "sigma", "u"])
    with pytest.raises(HierarchyError, match="latent site 'sd_u' has support"):
        laplace_ml(lmm, g, y, 3, latent=["u", "sd_u"], hyper=["mu", "sigma"])


def test_an_sd_run_to_zero_is_reported_as_a_singular_fit():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 5)
    y = 1.0 + rng.normal(0, 0.5, 50)
    y = y - np.bincount(g, y)[g] / 5 + y.mean()  # no variation between the groups at all
    res = laplace_ml(lmm, g, y, 10, latent=["u"], hyper=["mu", "sd_u", "sigma"])
    assert res.estimates["sd_u"] < 1e-3
    assert not res.converged and "singular fit" in res.message and "'sd_u'" in res.message


def test_the_coloured_hessian_is_the_dense_one():
    """Two Hessian-vector products (one per colour of the LA blocks) give what jax.hessian gives."""
    from hierarchy.inference import ml

    jax.config.update("jax_enable_x64", True)  # as laplace_ml does
    rng = np.random.default_rng(2)
    n_units, n_years = 6, 4
    ui = np.repeat(np.arange(n_units), n_years)
    t = np.tile(np.arange(n_years) - 1.5, n_units)
    args = (ui, t, rng.normal(0, 1, n_units), np.full(len(ui), 5.0), rng.poisson(20, len(ui)).astype(float),
            n_units)
    data, rebuild = ml._data(args, {})
    hyper = ["alpha", "b_dep", "b_t", "sd_u", "sd_v", "L_corr", "inv_sqrt_phi"]
    sites = ml._initial(nb_panel, data, rebuild, None, 0)
    lat, x0 = ml._packing(sites, ["uv"], constrained=False)
    hyp, u0 = ml._packing(sites, hyper, constrained=True)
    f = ml._log_joint_fn(nb_panel, rebuild, ["uv"], lat, hyp, {})
    hess, colours = ml._sparse_hessian(f, x0, u0, data)
    assert colours == 2
    x = x0 + 0.3 * rng.standard_normal(len(x0))
    dense = jax.jit(jax.hessian(f))(x, u0, data)
    np.testing.assert_allclose(jax.jit(hess)(x, u0, data), dense, rtol=1e-10, atol=1e-10)

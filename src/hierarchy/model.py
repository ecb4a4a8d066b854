"""The one model builder: spec + prior set + design -> ``pm.Model``.

For neighbourhood i in LA j (and MSOA m)::

    log mu_i   = log exposure_i + a_j + b_j * w_i (+ msoa_m) (+ eps_i, Poisson-lognormal)
    (a_j, b_j) ~ MVN((intercept + la_deprivation * z_j + c_j . la_cov_intercept,
                      gradient  + cross_level    * z_j + c_j . la_cov_gradient), Sigma)
    Sigma      = diag(la_sd) la_corr diag(la_sd),  la_corr ~ LKJ(eta)
    y_i        ~ Poisson(mu_i) | NegativeBinomial(mu_i, dispersion)

``la_coef`` holds (a_j, b_j) with dims (la, coef). The LA level is centred on its mean
(hierarchical centring) or non-centred (``la_raw`` standard normal) per the spec; see
:func:`hierarchy.spec.resolve_parameterisation`. The NumPyro twin in :mod:`hierarchy.jaxmodel`
has the same variables and density (tested).
"""

from __future__ import annotations

from hierarchy.design import Design
from hierarchy.priors import PriorSet
from hierarchy.spec import ModelSpec, resolve_parameterisation

HYPERPARAMETERS = ("intercept", "gradient", "la_deprivation", "cross_level", "la_cov_intercept",
                   "la_cov_gradient", "la_sd", "la_corr", "msoa_sd", "dispersion", "obs_sd")
"""Population-level parameters in the order they are reported."""


def coords(spec: ModelSpec, design: Design) -> dict[str, list]:
    """Named coordinates shared by the PyMC and NumPyro models."""
    c = {"la": list(design.la_codes), "coef": list(spec.coefs),
         "la_covariate": list(design.la_cov_names), "neighbourhood": list(design.row_ids)}
    if design.msoa_codes is not None:
        c["msoa"] = list(design.msoa_codes)
    return c


def build_model(spec: ModelSpec, priors: PriorSet, design: Design):
    """Build the PyMC model; the observed variable is named after the outcome stage."""
    import pymc as pm
    import pytensor.tensor as pt

    param = resolve_parameterisation(spec, design.rows_per_la)
    ncoef = len(spec.coefs)
    with pm.Model(coords=coords(spec, design)) as model:
        z = pt.as_tensor(design.z)
        mean_a = priors["intercept"].pymc("intercept")
        mean_b = priors["gradient"].pymc("gradient") if ncoef == 2 else None
        if spec.la.between_effect:
            mean_a = mean_a + priors["la_deprivation"].pymc("la_deprivation") * z
        else:
            mean_a = mean_a + pt.zeros(design.n_la)
        if ncoef == 2:
            if spec.la.cross_level:
                mean_b = mean_b + priors["cross_level"].pymc("cross_level") * z
            else:
                mean_b = mean_b + pt.zeros(design.n_la)
        if design.la_cov_names:
            cov = pt.as_tensor(design.la_cov)
            mean_a = mean_a + cov @ priors["la_covariates"].pymc("la_cov_intercept",
                                                                  dims="la_covariate")
            if ncoef == 2:
                mean_b = mean_b + cov @ priors["la_covariates"].pymc("la_cov_gradient",
                                                                      dims="la_covariate")
        mean = pt.stack([mean_a, mean_b], axis=1) if ncoef == 2 else mean_a[:, None]
        la_sd = priors["la_sd"].pymc("la_sd", dims="coef")
        if ncoef == 2:
            corr = pm.LKJCorr("la_corr", n=2, eta=priors["la_corr"].params["eta"],
                              return_matrix=True)
            chol = la_sd[:, None] * pt.linalg.cholesky(corr)
        else:
            chol = pt.diag(la_sd)
        if param == "centred":
            la_coef = pm.MvNormal("la_coef", mu=mean, chol=chol, dims=("la", "coef"))
        else:
            raw = pm.Normal("la_raw", 0.0, 1.0, dims=("la", "coef"))
            la_coef = pm.Deterministic("la_coef", mean + raw @ chol.T, dims=("la", "coef"))
        idx = design.la_index
        eta = design.log_exposure + la_coef[idx, 0]
        if ncoef == 2:
            eta = eta + la_coef[idx, 1] * design.w
        if spec.msoa.random_intercept:
            msoa_sd = priors["msoa_sd"].pymc("msoa_sd")
            msoa_raw = pm.Normal("msoa_raw", 0.0, 1.0, dims="msoa")
            eta = eta + (msoa_raw * msoa_sd)[design.msoa_index]
        if spec.family == "poisson_lognormal":
            obs_sd = priors["obs_sd"].pymc("obs_sd")
            eps_raw = pm.Normal("eps_raw", 0.0, 1.0, dims="neighbourhood")
            eta = eta + eps_raw * obs_sd
        if spec.family == "negative_binomial":
            phi = priors["dispersion"].pymc("dispersion")
            pm.NegativeBinomial(spec.outcome, mu=pt.exp(eta), alpha=phi, observed=design.y,
                                dims="neighbourhood")
        else:
            pm.Poisson(spec.outcome, mu=pt.exp(eta), observed=design.y, dims="neighbourhood")
    return model


def log_rate(posterior, spec: ModelSpec, *, w, z, la_cov=None):
    """Log rate per child for a typical LA (LA effects at their mean) at ``w`` and ``z``.

    ``posterior`` is an xarray Dataset with the model's variables; ``w`` and ``z`` are numbers
    or DataArrays (broadcast against ``chain, draw``). Returns a DataArray.
    """
    out = posterior["intercept"] + posterior["gradient"] * w if "gradient" in posterior else \
        posterior["intercept"] + 0 * w
    if "la_deprivation" in posterior:
        out = out + posterior["la_deprivation"] * z
    if "cross_level" in posterior:
        out = out + posterior["cross_level"] * z * w
    if la_cov is not None and "la_cov_intercept" in posterior:
        out = out + (posterior["la_cov_intercept"] * la_cov).sum("la_covariate")
        if "la_cov_gradient" in posterior:
            out = out + (posterior["la_cov_gradient"] * la_cov).sum("la_covariate") * w
    return out


def typical_gradient(posterior, spec: ModelSpec, *, z):
    """Log gradient (log rate ratio per deprivation ``scale``) of a typical LA at ``z``.

    This is d log rate / d w of :func:`log_rate`, computed as the difference of predictions
    one unit of ``w`` apart (exact, since the predictor is linear in ``w``).
    """
    return log_rate(posterior, spec, w=1.0, z=z) - log_rate(posterior, spec, w=0.0, z=z)


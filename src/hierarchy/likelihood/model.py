"""The one model builder: spec + prior set + design -> ``pm.Model``.

For neighbourhood i in LA j (and MSOA m)::

    log mu_i   = log exposure_i + a_j + b_j * w_i (+ msoa_m) (+ eps_i, Poisson-lognormal)
    (a_j, b_j) ~ MVN((intercept + la_deprivation * z_j + c_j . la_cov_intercept,
                      gradient  + cross_level    * z_j + c_j . la_cov_gradient), Sigma)
    Sigma      = diag(la_sd) la_corr diag(la_sd),  la_corr ~ LKJ(eta)
    y_i        ~ the family's distribution (:mod:`hierarchy.likelihood.families`): Poisson(mu_i),
                 NegativeBinomial(mu_i, dispersion), zero-inflated NB (zi, mu_i, dispersion)

``la_coef`` holds (a_j, b_j) with dims (la, coef). The LA level is centred on its mean
(hierarchical centring) or non-centred (``la_raw`` standard normal), effect by effect; see
:func:`hierarchy.language.design.centring`. With both kinds, the non-centred effects come first in the
Cholesky factor and the centred ones are drawn given them (``la_centred``).

Stacked stages (s = 0, 1, ...) have LA effects e_js = (a_js, b_js) around stage-specific means m_js.
``stage_structure = "correlated"``: all of them in one MVN (one LKJ over 2 x stages effects).
``"anchored"``: the first stage's effects are the MVN above (``la_anchor``, u_j = e_j0 - m_j0), and
each later stage follows them::

    e_js = m_js + la_loading_s * u_j + d_js,   d_jsc ~ Normal(0, la_stage_sd_sc)

which is how an LA's practice moves all its thresholds together (a shared deviation, small stage
deviations) without a near-singular 8 x 8 correlation matrix. The NumPyro twin in
:mod:`hierarchy.likelihood.jaxmodel` has the same variables and density (tested).
"""

from __future__ import annotations

import numpy as np

from hierarchy.language.design import Design, centring, group_centring, group_zero_sum, stratum_level_weights
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families, parameters, spatial
from hierarchy.likelihood.predictor import design_rows, linear_predictor

HYPERPARAMETERS = parameters.names(role="hyper")
"""Population-level parameters in the order they are reported (a view of :mod:`.parameters`)."""

STAGE_VARS = parameters.names(role="hyper", per_stage=True)
"""Parameters with one value per stage when stages are stacked (a view of :mod:`.parameters`)."""


def coords(spec: ModelSpec, design: Design) -> dict[str, list]:
    """Named coordinates shared by the PyMC and NumPyro models."""
    c = {"la": list(design.la_codes), "coef": list(spec.coefs),
         "la_covariate": list(design.la_cov_names), "neighbourhood": list(design.row_ids)}
    if spec.stacked:
        c["stage"] = list(spec.stages)
        c["la_effect"] = la_effect_labels(spec)
    if spec.strata:
        c["stratum"] = list(design.stratum_names[1:])
    if design.msoa_codes is not None:
        c["msoa"] = list(design.msoa_codes)
    if design.row_names:
        c["row_term"] = list(design.row_names)
    for g, levels, slope, grid in zip(design.group_names, design.group_levels, design.group_slope, design.grids,
                                      strict=True):
        c[g] = list(levels)
        if slope:
            c[f"{g}_coef"] = ["intercept", "gradient"]
        if grid is not None:  # each component's values, in the order of the grid's axes
            first = {k: np.unique(i, return_index=True)[1] for k, i in enumerate(grid)}
            for k, part in enumerate(g.split(":")):
                values = [str(levels[j]).split("/") for j in first[k]]
                c[f"{g}_{part}"] = [v[k] if len(v) == len(grid) else str(i) for i, v in enumerate(values)]
    labels, mask = la_effect_labels(spec), centring(spec, design)
    blocks = [("la", labels, mask)]
    if spec.anchored:
        n = len(spec.coefs)
        c["later_stage"] = list(spec.stages[1:])
        blocks = [("la", labels[:n], mask[:n]), ("la_stage", labels[n:], mask[n:])]
    for prefix, names, m in blocks:
        if not m.all():
            c[f"{prefix}_raw_effect"] = [k for k, on in zip(names, m, strict=True) if not on]
        if m.any() and (prefix == "la_stage" or not m.all()):
            c[f"{prefix}_centred_effect"] = [k for k, on in zip(names, m, strict=True) if on]
    return c


def la_effect_labels(spec: ModelSpec) -> list[str]:
    """Names of the LA effects in model order: the coefficients, or ``stage:coef`` when stacked."""
    return [f"{s}:{k}" for s in spec.stages for k in spec.coefs] if spec.stacked else list(spec.coefs)


def la_effect_order(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Permutation putting non-centred LA effects first, its inverse, and their number."""
    perm = np.argsort(mask, kind="stable")
    return perm, np.argsort(perm), int((~mask).sum())


def dims(spec: ModelSpec) -> dict[str, list[str]]:
    """Dimensions of each model variable (beyond chain and draw)."""
    effect = "la_effect" if spec.stacked and not spec.anchored else "coef"
    d = {"la_sd": [effect], "la_corr": [effect, f"{effect}_"], "la_raw": ["la", "la_raw_effect"],
         "la_centred": ["la", "la_centred_effect"], "la_anchor": ["la", "coef"],
         "la_loading": ["later_stage", "coef"], "la_stage_sd": ["later_stage", "coef"],
         "la_stage_raw": ["la", "la_stage_raw_effect"], "la_stage_centred": ["la", "la_stage_centred_effect"],
         "la_coef": ["la", "stage", "coef"] if spec.stacked else ["la", "coef"], "la_level": ["la", "coef"],
         "la_cov_intercept": ["la_covariate"], "la_cov_gradient": ["la_covariate"], "msoa_raw": ["msoa"],
         "stratum_intercept_offset": ["stratum"], "stratum_gradient_offset": ["stratum"]}
    if spec.stacked:
        d.update({v: ["stage"] for v in STAGE_VARS}, la_coef_flat=["la", "la_effect"])
    d["row_coef"] = ["row_term"]
    for g, slope in spec.groups:
        d[f"{g}_raw"] = [g, f"{g}_coef"] if slope else [g]
        if slope:
            d[f"{g}_sd"] = [f"{g}_coef"]
    return d


def build_model(spec: ModelSpec, priors: PriorSet, design: Design):
    """Build the PyMC model; the observed variable is named after the outcome (or ``count``)."""
    import pymc as pm
    import pytensor.tensor as pt

    ncoef, n_stage = len(spec.coefs), len(spec.stages)
    n_eff = ncoef * n_stage
    sdims = "stage" if spec.stacked else None
    with pm.Model(coords=coords(spec, design)) as model:
        z = pt.as_tensor(design.z)[:, None]
        cov = pt.as_tensor(design.la_cov)

        def stage_param(var: str, group: str):
            return pt.atleast_1d(priors[group].pymc(var, dims=sdims))[None, :]  # (1, S)

        mean_a = stage_param("intercept", "intercept") + pt.zeros((design.n_la, n_stage))
        if spec.la.between_effect:
            mean_a = mean_a + stage_param("la_deprivation", "la_deprivation") * z

        def cov_term(var: str):
            return (cov @ priors["la_covariates"].pymc(var, dims="la_covariate"))[:, None]

        if design.la_cov_names:
            mean_a = mean_a + cov_term("la_cov_intercept")
        parts = [mean_a]
        if ncoef == 2:
            mean_b = stage_param("gradient", "gradient") + pt.zeros((design.n_la, n_stage))
            if spec.la.cross_level:
                mean_b = mean_b + stage_param("cross_level", "cross_level") * z
            if design.la_cov_names:
                mean_b = mean_b + cov_term("la_cov_gradient")
            parts.append(mean_b)
        mean = pt.stack(parts, axis=2).reshape((design.n_la, n_eff))  # stage-major: s0:a, s0:b, s1:a ...
        mask = centring(spec, design)
        weights = stratum_level_weights(spec, design)
        if spec.anchored:
            first = _correlated(mean[:, :ncoef], mask[:ncoef], priors, "coef", "la_anchor")
            u = (first - mean[:, :ncoef])[:, None, :]  # (la, 1, coef): the first stage's deviations
            loading = priors["la_loading"].pymc("la_loading", dims=("later_stage", "coef"))
            stage_sd = priors["la_stage_sd"].pymc("la_stage_sd", dims=("later_stage", "coef"))
            later_mean = (mean[:, ncoef:].reshape((design.n_la, n_stage - 1, ncoef)) + loading[None] * u)
            later = _independent(later_mean.reshape((design.n_la, n_eff - ncoef)), stage_sd.reshape((-1,)),
                                 mask[ncoef:])
            flat = pm.Deterministic("la_coef_flat", pt.concatenate([first, later], axis=1),
                                    dims=("la", "la_effect"))
        elif weights is not None:  # LA effects drawn at the count-weighted mean stratum level
            offsets = {k: priors["stratum_effects"].pymc(k, dims="stratum") for k in stratum_offsets(spec)}
            shift = pt.stack([pt.as_tensor(weights[1:]) @ offsets[k] if k in offsets else pt.zeros(())
                              for k in STRATUM_OFFSETS[:ncoef]])
            level = _correlated(mean + shift[None, :], mask, priors, "coef", "la_level")
            flat = pm.Deterministic("la_coef", level - shift[None, :], dims=("la", "coef"))
        else:
            effect = "la_effect" if spec.stacked else "coef"
            flat = _correlated(mean, mask, priors, effect, "la_coef_flat" if spec.stacked else "la_coef")
        coef = flat.reshape((design.n_la, n_stage, ncoef))
        if spec.stacked:
            pm.Deterministic("la_coef", coef, dims=("la", "stage", "coef"))
        st = design.stage_index
        p = {"la_coef": pt.specify_shape(coef, (design.n_la, n_stage, ncoef))}
        if spec.strata:
            p |= offsets if weights is not None else {
                k: priors["stratum_effects"].pymc(k, dims="stratum") for k in stratum_offsets(spec)}
        p |= _row_params(spec, priors, design)
        eta = linear_predictor(design_rows(design), p, pt)
        families.get(spec.family).pymc_likelihood(observed_name(spec), eta, priors, sdims, st, design.y,
                                                  "neighbourhood")
    return model


def _row_params(spec: ModelSpec, priors: PriorSet, design: Design) -> dict:
    """Twin of :func:`hierarchy.likelihood.jaxmodel.row_params`: neighbourhood-level coefficients, MSOA and
    other group effects, Poisson-lognormal row effects, the BYM2 term (inside a model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    p = {}
    if design.row_names:
        priors.check_terms(design.row_names)
        p["row_coef"] = pm.Deterministic("row_coef", pt.stack(
            [priors.for_term(t).pymc(f"b_{t}") for t in design.row_names]), dims="row_term")
    if spec.msoa.random_intercept:
        p["msoa_sd"] = priors["msoa_sd"].pymc("msoa_sd")
        p["msoa_raw"] = pm.Normal("msoa_raw", 0.0, 1.0, dims="msoa")
    for g, slope, centred, axes, grid in zip(design.group_names, design.group_slope, group_centring(spec, design),
                                             group_zero_sum(spec, design), design.grids, strict=True):
        p[f"{g}_sd"] = priors.group_sd(g).pymc(f"{g}_sd", dims=f"{g}_coef" if slope else None)
        dims = (g, f"{g}_coef") if slope else g
        if axes:  # summing to zero along ``axes`` of its components' grid (the others lead)
            parts = g.split(":")
            order = [k for k in range(len(parts)) if k not in axes] + list(axes)
            u = pm.ZeroSumNormal(f"{g}_grid", sigma=p[f"{g}_sd"] if centred else 1.0, n_zerosum_axes=len(axes),
                                 dims=tuple(f"{g}_{parts[k]}" for k in order))
            u = u.transpose(*np.argsort(order))[tuple(grid)]
            p[f"{g}_raw"] = pm.Deterministic(f"{g}_raw", u / p[f"{g}_sd"] if centred else u, dims=dims)
        elif centred:
            u = pm.Normal(f"{g}_centred", 0.0, p[f"{g}_sd"], dims=dims)
            p[f"{g}_raw"] = pm.Deterministic(f"{g}_raw", u / p[f"{g}_sd"], dims=dims)
        else:
            p[f"{g}_raw"] = pm.Normal(f"{g}_raw", 0.0, 1.0, dims=dims)
    p |= families.get(spec.family).pymc_row_sites(priors)
    if design.graph is not None:
        p |= spatial.pymc_sites(priors, design.graph)
    return p


STRATUM_OFFSETS = ("stratum_intercept_offset", "stratum_gradient_offset")


def stratum_offsets(spec: ModelSpec) -> tuple[str, ...]:
    """The stratum offsets a stratified model has: intercepts, and gradients unless ``w:C(g)`` is absent."""
    return STRATUM_OFFSETS[:2 if len(spec.coefs) == 2 and spec.stratum_gradient else 1]


def _correlated(mean, mask: np.ndarray, priors: PriorSet, effect: str, name: str):
    """Correlated LA effects around ``mean`` (la, E): SDs ``la_sd``, LKJ ``la_corr``, centred or not
    effect by effect (``mask``); the non-centred come first in a permuted Cholesky factor and the
    centred ones are drawn given them (``la_centred``). Registers and returns ``name`` (la, E)."""
    import pymc as pm
    import pytensor.tensor as pt

    perm, inv, n_nc = la_effect_order(mask)
    n_eff = len(mask)
    la_sd = priors["la_sd"].pymc("la_sd", dims=effect)
    if n_eff > 1:
        corr = pm.LKJCorr("la_corr", n=n_eff, eta=priors["la_corr"].params["eta"], return_matrix=True)
        chol = la_sd[perm][:, None] * pt.linalg.cholesky(corr[perm][:, perm])
    else:
        chol = pt.diag(la_sd)
    mean = mean[:, perm]
    if n_nc == 0:
        return pm.MvNormal(name, mu=mean, chol=chol, dims=("la", effect))
    raw = pm.Normal("la_raw", 0.0, 1.0, dims=("la", "la_raw_effect"))
    x = mean[:, :n_nc] + raw @ chol[:n_nc, :n_nc].T
    if n_nc < n_eff:
        x_c = pm.MvNormal("la_centred", mu=mean[:, n_nc:] + raw @ chol[n_nc:, :n_nc].T,
                          chol=chol[n_nc:, n_nc:], dims=("la", "la_centred_effect"))
        x = pt.concatenate([x, x_c], axis=1)[:, inv]
    return pm.Deterministic(name, x, dims=("la", effect))


def _independent(mean, sd, mask: np.ndarray):
    """Independent normal LA effects (la, E) with SDs ``sd`` (E,): the later stages of an anchored
    model, centred (``la_stage_centred``) or not (``la_stage_raw``) effect by effect (``mask``)."""
    import pymc as pm
    import pytensor.tensor as pt

    perm, inv, n_nc = la_effect_order(mask)
    mean, sd = mean[:, perm], sd[perm]
    parts = []
    if n_nc:
        raw = pm.Normal("la_stage_raw", 0.0, 1.0, dims=("la", "la_stage_raw_effect"))
        parts.append(mean[:, :n_nc] + raw * sd[:n_nc])
    if n_nc < len(mask):
        parts.append(pm.Normal("la_stage_centred", mean[:, n_nc:], sd[n_nc:],
                               dims=("la", "la_stage_centred_effect")))
    return pt.concatenate(parts, axis=1)[:, inv]


def observed_name(spec: ModelSpec) -> str:
    """Name of the observed variable (and of the log-likelihood): the stage, or ``count``."""
    return "count" if spec.stacked else spec.outcome


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


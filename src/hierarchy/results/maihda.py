"""Intersectional strata (MAIHDA; issue 32, item 2; Evans, Leckie, Subramanian, Bell & Merlo 2024, SSM Popul
Health 26:101664): strata = combinations of ethnicity x sex x age band, a partially pooled group
``(1 + w | ethnicity:sex:age_band)`` (models/maihda_null_nb.toml), fitted again with the additive main
effects as fixed terms (models/maihda_main_nb.toml). A stratum's effect ``u_k = {g}_raw * {g}_sd``
(intercept: log rate; gradient: log gradient per unit of w) is, in the main-effects fit, its
intersectional interaction beyond the main effects. The LA-level measures and the definitions
(:data:`hierarchy.results.heterogeneity.MAIHDA_DEFINITIONS`) are in :mod:`hierarchy.results.heterogeneity`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import z_of
from hierarchy.likelihood import model, parameters
from hierarchy.results import estimands
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import provenance
from hierarchy.results.heterogeneity import (
    COLUMNS,
    MAIHDA_DEFINITIONS,
    _bare,
    _check_pair,
    _check_rates,
    _fit,
    _flat,
    _has_public_exposure,
    _label,
    _paired,
    _table,
    la_variance,
    pcv_from_variances,
    vpc_from_components,
)

STRATUM_COEFS = {"intercept": "rate ratio", "gradient": "gradient ratio per 10 points"}


def stratum_group(fit: Any, group: str | None = None) -> str:
    """The intersectional group term of a fit: ``group``, or its only group of several columns.

    Raises
    ------
    HierarchyError
        When the fit has no such group (or several and ``group`` is not given).
    """
    groups = [g for g, _ in as_fit(_fit(fit)).spec.groups]
    if group is not None:
        if group not in groups:
            raise HierarchyError(f"the fit has no group term {group!r}; its groups: {', '.join(groups) or 'none'}")
        return group
    joint = [g for g in groups if ":" in g and "la" not in g.split(":")]
    if len(joint) != 1:
        raise HierarchyError(f"name the intersectional group, e.g. group='ethnicity:sex:age_band'; the fit's "
                             f"groups: {', '.join(groups) or 'none'} (write (1 + w | ethnicity:sex:age_band))")
    return joint[0]


def _coef_dim(da: xr.DataArray, group: str) -> xr.DataArray:
    """``da`` with its ``{group}_coef`` dim as ``coef`` (an intercept-only group gets ``coef=["intercept"]``)."""
    if f"{group}_coef" in da.dims:
        return da.rename({f"{group}_coef": "coef"})
    return da.expand_dims(coef=["intercept"])


def stratum_effects(fit: Any, group: str | None = None) -> xr.DataArray:
    """Each stratum's random effect ``u_k`` per draw, on the log scale.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, stratum, coef`` (``intercept``: log rate; ``gradient``: log gradient per
        unit of w).
    """
    idata = _fit(fit)
    g = stratum_group(idata, group)
    post = idata.posterior
    u = _coef_dim(post[f"{g}_raw"], g) * _coef_dim(post[f"{g}_sd"], g)
    u = u.rename({g: "stratum"})
    return _bare(u.transpose("chain", "draw", "stratum", "coef")).rename("stratum_effect")


def stratum_variance(fit: Any, group: str | None = None) -> xr.DataArray:
    """Between-strata variance ``{g}_sd^2`` per draw, dims ``chain, draw, coef`` (log scale)."""
    idata = _fit(fit)
    g = stratum_group(idata, group)
    return _bare(_coef_dim(idata.posterior[f"{g}_sd"], g) ** 2).rename("stratum_variance")


def _other_variance(post: xr.Dataset, view: Any) -> Any:
    """Log-scale variance of the LA intercepts and the within-LA (MSOA, observation) effects."""
    var: Any = 0.0
    la = la_variance(view, w=0.0)
    if la is not None:
        var = var + la
    for k in parameters.names(within_la_sd=True):
        if k in post:
            var = var + post[k] ** 2
    return var


def stratum_vpc_log(fit: Any, group: str | None = None) -> xr.DataArray:
    """Log-scale stratum VPC ``var_strata / (var_strata + var_LA + var_MSOA)`` per draw (intercepts, w = 0).

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw``; a proportion.
    """
    idata = _fit(fit)
    var_s = stratum_variance(idata, group).sel(coef="intercept", drop=True)
    out = var_s / (var_s + _other_variance(idata.posterior, idata))
    return _label(_bare(out), "stratum_vpc_log", "proportion of log-rate variance between strata",
                  "stratum_vpc_log")


def stratum_vpc(fit: Any, group: str | None = None, *, rate: float | None = None,
                exposure: float | None = None) -> xr.DataArray:
    """Count-scale stratum VPC per draw (:func:`vpc_from_components` with the strata as the upper level).

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
    group : str, optional
        The intersectional group (default: :func:`stratum_group`).
    rate : float, optional
        Reference rate per 10,000 children; default the model's typical rate at ``w = 0`` (reference
        stratum of the main-effects model), marginal over the random effects.
    exposure : float, optional
        Children in the reference row; default the fitted rows' mean exposure (when public).

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw``; coordinates ``reference_rate`` and ``exposure``.
    """
    idata = _fit(fit)
    post = idata.posterior
    var_s = stratum_variance(idata, group).sel(coef="intercept", drop=True)
    other = _other_variance(post, idata)
    if exposure is None:
        if not _has_public_exposure(idata):
            raise HierarchyError("this fit does not carry a public exposure: give the VPC's row size, "
                                 "exposure=... (children in a neighbourhood-stratum row)")
        exposure = float(np.round(idata.constant_data["exposure"].to_numpy().astype(float).mean()))
    size = float(exposure)
    if not (np.isfinite(size) and size > 0):
        raise HierarchyError(f"exposure must be a number of children above 0, got {exposure!r}")
    zi = post["zi"] if "zi" in post else 0.0  # zero-inflated NB: its structural zeros
    if rate is None:
        spec, des = as_fit(idata).spec, provenance(idata)["design"]
        z0 = float(z_of(des["X_mean"], des["X_mean"], spec))
        per = 1e4 * (1 - zi) * np.exp(model.log_rate(post, spec, w=0.0, z=z0) + (var_s + other) / 2)
    else:
        per = _check_rates({"stated": rate}).isel(reference=0, drop=True)
    phi = post["dispersion"] if "dispersion" in post else np.inf
    out = vpc_from_components(var_s, per * size / 1e4, dispersion=phi, var_within=other, zero_inflation=zi)
    shown = float(np.mean(per))
    out = _bare(out).assign_coords(reference_rate=shown, exposure=size)
    return _label(out, "stratum_vpc", "proportion of count variance between strata", "stratum_vpc")


def stratum_pcv(null: Any, main: Any, *, group: str | None = None, n_draws: int | None = None) -> xr.DataArray:
    """PCV of the between-strata variance from the null to the main-effects fit, per paired draw.

    Returns
    -------
    xarray.DataArray
        Dims ``sample, reference`` (``intercept``, and ``gradient`` when both fits vary it).
    """
    a, b = _fit(null), _fit(main)
    _check_pair(a, b)
    va, vb = stratum_variance(a, group), stratum_variance(b, group)
    coefs = [c for c in va["coef"].to_numpy() if c in vb["coef"].to_numpy()]
    va, vb = (_flat(v.sel(coef=coefs).rename(coef="reference")) for v in (va, vb))
    va, vb = _paired(va, vb, n_draws)
    return _label(pcv_from_variances(va, vb), "stratum_pcv", "proportion of between-strata variance",
                  "stratum_pcv")


def _stratum_fixed(fit: Any, strata: list[str], group: str) -> tuple[Any, Any]:
    """The main-effect parts (log rate, log gradient per unit of w) of each stratum, per draw: the sum of
    the row coefficients of its 0/1 main-effect columns (:func:`hierarchy.data.simulate.indicator_name`);
    0 without them (the null model)."""
    from hierarchy.data.simulate import indicator_name

    post = fit.posterior
    terms = [str(t) for t in post["row_term"].to_numpy()] if "row_coef" in post else []
    if not terms:
        return 0.0, 0.0
    parts = group.split(":")
    rate = np.zeros((len(strata), len(terms)))
    grad = np.zeros((len(strata), len(terms)))
    for i, label in enumerate(strata):
        for col, lev in zip(parts, label.split("/"), strict=False):
            name = indicator_name(col, lev)
            if name in terms:
                rate[i, terms.index(name)] = 1.0
            if f"w:{name}" in terms:
                grad[i, terms.index(f"w:{name}")] = 1.0
    dims = ("stratum", "row_term")
    coef = _bare(post["row_coef"])
    return (xr.dot(coef, xr.DataArray(rate, dims=dims), dim="row_term"),
            xr.dot(coef, xr.DataArray(grad, dims=dims), dim="row_term"))


def stratum_scores(fit: Any, group: str | None = None) -> xr.DataArray:
    """Each stratum's rate ratio and gradient score, per draw (typical LA at mean LA deprivation).

    ``rate ratio``: the stratum's rate over the reference rate (the typical stratum in the null model;
    White, female, 0-4 with main effects), main effects plus the stratum effect. ``gradient score``:
    rate multiplier per 10 points of neighbourhood deprivation in the stratum.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, stratum, reference`` (``rate ratio``, ``gradient score``).
    """
    idata = _fit(fit)
    spec, post = as_fit(idata).spec, idata.posterior
    g = stratum_group(idata, group)
    u = stratum_effects(idata, g)
    strata = [str(s) for s in u["stratum"].to_numpy()]
    fixed_rate, fixed_grad = _stratum_fixed(idata, strata, g)
    step = estimands.TEN_POINTS / spec.deprivation.scale
    des = provenance(idata)["design"]
    z0 = float(z_of(des["X_mean"], des["X_mean"], spec))
    log_rr = fixed_rate + u.sel(coef="intercept", drop=True)
    log_g = _bare(model.typical_gradient(post, spec, z=z0)) + fixed_grad
    if "gradient" in u["coef"]:
        log_g = log_g + u.sel(coef="gradient", drop=True)
    out = xr.concat([np.exp(log_rr), np.exp(log_g * step)], "reference").assign_coords(
        reference=["rate ratio", "gradient score"], stratum=strata)
    out = out.transpose("chain", "draw", "stratum", "reference").rename("stratum_score")
    out.attrs = {"scale": "rate ratio; gradient score per 10 points",
                 "description": "stratum rate ratio and gradient score, typical LA at mean LA deprivation"}
    return out


def interaction_table(main: Any, group: str | None = None, *, prob: float = 0.9,
                      threshold: float = 0.95) -> pd.DataFrame:
    """Strata whose effect in the main-effects fit is away from 0: interaction beyond main effects.

    Parameters
    ----------
    main : str, os.PathLike or arviz.InferenceData
        The MAIHDA main-effects fit (in the null fit the effects also carry the main effects).
    group : str, optional
    prob : float
        Probability of the equal-tailed intervals.
    threshold : float
        ``flagged`` when P(direction) exceeds it.

    Returns
    -------
    pandas.DataFrame
        One row per stratum x coefficient: ``stratum``, ``coef``, ``mean``, ``sd``, ``lower``, ``upper``
        (log scale), ``ratio``, ``ratio_lower``, ``ratio_upper`` (rate ratio, or gradient ratio per 10
        points), ``p_direction``, ``direction`` (``+``/``-``), ``flagged``; most certain first.
    """
    idata = _fit(main)
    u = stratum_effects(idata, group)
    step = estimands.TEN_POINTS / as_fit(idata).spec.deprivation.scale
    ds = estimands.interval(u, prob=prob)
    frame = ds.to_dataframe().reset_index()[["stratum", "coef", "mean", "sd", "lower", "upper"]]
    scale = frame["coef"].map({"intercept": 1.0, "gradient": step}).to_numpy()
    for k, col in (("ratio", "mean"), ("ratio_lower", "lower"), ("ratio_upper", "upper")):
        frame[k] = np.exp(frame[col].to_numpy() * scale)
    p_pos = (u > 0).mean(("chain", "draw")).to_dataframe("p").reset_index()["p"].to_numpy()
    frame["p_direction"] = np.maximum(p_pos, 1.0 - p_pos)
    frame["direction"] = np.where(p_pos >= 0.5, "+", "-")
    frame["flagged"] = frame["p_direction"] > threshold
    frame["definition"] = MAIHDA_DEFINITIONS["stratum_interaction"]
    return frame.sort_values(["p_direction", "stratum"], ascending=[False, True], ignore_index=True)


def maihda_rows(null: Any, main: Any, *, group: str | None = None, prob: float = 0.9,
                exposure: float | None = None, n_draws: int | None = None) -> pd.DataFrame:
    """The MAIHDA summary, tidy: stratum VPCs (log and count scale) of both fits and the PCV.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``stage`` says which fit (``null``, ``main effects``, ``null -> main``).
    """
    frames = []
    for which, f in (("null", null), ("main effects", main)):
        idata = _fit(f)
        frames.append(_table(stratum_vpc_log(idata, group), prob=prob).assign(stage=which))
        if exposure is not None or _has_public_exposure(idata):
            frames.append(_table(stratum_vpc(idata, group, exposure=exposure), prob=prob).assign(stage=which))
    frames.append(_table(stratum_pcv(null, main, group=group, n_draws=n_draws), prob=prob).assign(
        stage="null -> main"))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))

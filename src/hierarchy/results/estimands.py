"""Social-gradient estimands from a saved fit (DESIGN section 3).

Every estimand is computed from posterior *predictions* (:func:`hierarchy.likelihood.model.log_rate`
differences, or draws of counts), never from coefficient algebra, so the same code serves any
centring and LA-deprivation transform. Functions return xarray DataArrays of draws (dims
``chain, draw`` or ``sample``) whose ``attrs`` carry ``scale`` and ``description``;
:func:`summarise` turns one into a tidy table with mean, sd and an equal-tailed interval.

Scales: a *gradient score* is the rate multiplier for a 10-percentage-point rise in neighbourhood
income deprivation ("per 10 points"); :func:`per_sd` converts it to a rise of one standard
deviation of neighbourhood deprivation ("per SD"). Rates are per 10,000 children.

The typical LA has its LA effects at their mean given LA deprivation (and LA covariates at
their mean). "10 points less / more" means LA deprivation X_mean -/+ 0.1, with X_mean the
unweighted mean over LAs of LA deprivation stored in the fit.

Curves say where they extrapolate: :func:`gradient_curve` (against LA deprivation),
:func:`typical_rates` and :func:`inverse_intervention` (against neighbourhood deprivation) carry a
boolean coordinate ``extrapolated`` (a column of their :func:`summarise` table), True where the
curve lies beyond the data: outside the fitted LAs' deprivation range, or outside the
neighbourhood deprivation seen in LAs near that LA level (:func:`x_range_near`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.disclosure import ROUNDING, THRESHOLD, disclose_frame
from hierarchy.errors import HierarchyError
from hierarchy.language.design import w_of, z_of
from hierarchy.likelihood import model
from hierarchy.likelihood.predictor import ROW_PARAMS, group_params, predictor_draws
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import (  # noqa: F401  (exposure_is_public: re-exported)
    design_of,
    exposure_is_public,
    fitted_positions,
    missing_row_data,
    provenance,
    require_row_data,
)

TEN_POINTS = 0.1
PER_10 = "per 10 points"
PER_10K = "per 10,000 children"
LA_LEVELS = {"10 points less": -TEN_POINTS, "mean": 0.0, "10 points more": TEN_POINTS}
"""LA deprivation levels of the headline estimands: offsets from X_mean."""
TRUTH_KEYS = {"10 points less": "gradient_10_less", "mean": "gradient_at_mean",
              "10 points more": "gradient_10_more"}
"""Simulator truth keys (``truth["stages"][outcome][key]``) of the headline gradients."""
SAMPLE_DIMS = ("chain", "draw", "sample")
COUNT_EDGES = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, np.inf)
SHARE_DEFINITION = (
    "Share of latent (log-scale) variance between LAs: the variance over LAs of each LA's mean "
    "log rate (the linear predictor without the exposure: LA intercepts with LA deprivation and "
    "covariates, gradient, neighbourhood terms and groups, averaged over the LA's neighbourhoods), "
    "divided by that plus the within-LA variance of the same predictor (for the default model the "
    "gradient term b_j * w_i; plus the MSOA variance and the BYM2 variance spatial_sd^2, each if "
    "modelled, counted as within-LA) plus the observation-level variance "
    "log(1 + 1/mu + 1/phi) (Nakagawa et al. 2017; mu = mean expected count per neighbourhood, "
    "phi = NB dispersion; Poisson drops 1/phi; Poisson-lognormal adds obs_sd^2). "
    "Neighbourhoods are weighted equally.")


# ---------------------------------------------------------------------------- inputs


def as_idata(fit: Any) -> Any:
    """InferenceData from a fit file path, or ``fit`` itself if it already is one.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData

    Returns
    -------
    arviz.InferenceData
    """
    f = as_fit(fit)
    return stage_view(f.idata) if f.spec.stacked else f.idata


def stage_view(idata, stage: str | None = None) -> Any:
    """One stage of a stacked-stages fit, as an ordinary single-stage fit (default: the first).

    The posterior is taken at that stage, the rows are that stage's, and the stored spec names it
    as the outcome, so every single-stage estimand applies. Stratum offsets are kept.
    """
    import json

    import arviz as az

    fit = as_fit(idata)
    spec, idata = fit.spec, fit.idata
    if not spec.stacked:
        return idata
    stage = stage or spec.stages[0]
    rows = idata.constant_data["stage"].to_numpy().astype(str) == stage
    ids = [i.rsplit("|", 1)[0] for i in idata.constant_data["neighbourhood"].to_numpy()[rows]]
    groups = {"posterior": idata.posterior.sel(stage=stage).drop_vars(["la_coef_flat"], errors="ignore")}
    for g in ("constant_data", "observed_data", "log_likelihood"):
        if g in idata.groups():
            ds = idata[g].isel(neighbourhood=rows).assign_coords(neighbourhood=ids)
            groups[g] = ds.rename({"count": stage}) if "count" in ds else ds
    prov = provenance(idata)
    one = replace(spec, outcome=stage)
    prov.update(model_spec=one.to_dict(), model_hash=one.hash(), view_of_stage=stage)
    groups["posterior"].attrs["hierarchy"] = json.dumps(prov)
    return az.InferenceData(**groups)


def _parts(idata) -> tuple[xr.Dataset, Any, dict[str, Any]]:
    fit = as_fit(idata)
    return fit.posterior, fit.spec, fit.design


def _step(spec) -> float:
    """Units of ``w`` in 10 points of deprivation."""
    return TEN_POINTS / spec.deprivation.scale


def _label(da: xr.DataArray, name: str, scale: str, description: str) -> xr.DataArray:
    da = da.rename(name)
    da.attrs = {"scale": scale, "description": description}
    return da


def la_levels(idata) -> xr.DataArray:
    """Transformed LA deprivation ``z`` of the typical LA at X_mean and X_mean -/+ 10 points.

    Levels with LA deprivation <= 0 (possible only with a log transform and a low X_mean) are
    left out. Returns a DataArray on dim ``la_level`` with coordinate ``la_deprivation`` (X).
    """
    _, spec, des = _parts(idata)
    names = [k for k, d in LA_LEVELS.items() if des["X_mean"] + d > 0]
    X = np.array([des["X_mean"] + LA_LEVELS[k] for k in names])
    return xr.DataArray(z_of(X, des["X_mean"], spec), dims="la_level",
                        coords={"la_level": names, "la_deprivation": ("la_level", X)})


LEVEL_HALF_WIDTH = TEN_POINTS / 2
"""LAs within this distance of an LA level (half the spacing of the headline levels) are "of that level"."""
RANGE_QUANTILES = (0.01, 0.99)
"""Neighbourhood deprivation range of a set of LAs: these quantiles of their neighbourhoods' deprivation."""


def la_deprivation_range(idata) -> tuple[float, float] | None:
    """Least and most deprived fitted LA (LA deprivation X); None when the fit has no ``constant_data``."""
    if "constant_data" not in idata.groups() or "la_deprivation" not in idata.constant_data:
        return None
    X = idata.constant_data["la_deprivation"].to_numpy().astype(float)
    return float(X.min()), float(X.max())


def x_range_near(idata, X: np.ndarray, *, half_width: float = LEVEL_HALF_WIDTH) -> np.ndarray | None:
    """Neighbourhood deprivation range seen in the fitted LAs near each LA deprivation ``X``.

    For each ``X``, the :data:`RANGE_QUANTILES` of the deprivation of the neighbourhoods in the
    LAs whose deprivation lies within ``half_width`` of it; NaN where no LA does.

    Returns
    -------
    numpy.ndarray or None
        Shape ``(len(X), 2)`` (low, high); None when the fit has no ``constant_data``.
    """
    if la_deprivation_range(idata) is None or "la_of" not in idata.constant_data:
        return None
    cd = idata.constant_data
    X_la = pd.Series(cd["la_deprivation"].to_numpy().astype(float), index=cd["la"].to_numpy().astype(str))
    row_X = X_la.reindex(cd["la_of"].to_numpy().astype(str)).to_numpy()
    x = cd["deprivation"].to_numpy().astype(float)
    out = np.full((len(np.atleast_1d(X)), 2), np.nan)
    for i, level in enumerate(np.atleast_1d(np.asarray(X, dtype=float))):
        near = np.abs(row_X - level) <= half_width + 1e-12
        if near.any():
            out[i] = np.quantile(x[near], RANGE_QUANTILES)
    return out


def _outside(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """True where ``values`` lie outside [lo, hi] (everywhere when the range is unknown, NaN)."""
    values = np.asarray(values, dtype=float)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.ones(values.shape, dtype=bool)
    return (values < lo - 1e-12) | (values > hi + 1e-12)


def x_grid(idata, n: int = 41) -> np.ndarray:
    """Grid of neighbourhood deprivation from the 1st to the 99th percentile of the data."""
    x = idata.constant_data["deprivation"].to_numpy()
    lo, hi = np.quantile(x, [0.01, 0.99])
    return np.linspace(max(lo, 1e-4), hi, n)


# ---------------------------------------------------------------------------- estimands


def headline_gradients(idata) -> xr.DataArray:
    """Gradient score of a typical LA at mean LA deprivation and 10 points less / more.

    The rate multiplier per 10 points of neighbourhood deprivation: the ratio of predicted rates
    10 points apart within the typical LA at each LA deprivation level.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, la_level``; coordinate ``la_deprivation``; scale "per 10 points".
    """
    post, spec, _ = _parts(idata)
    z = la_levels(idata)
    d = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    return _label(np.exp(d), "gradient_score", PER_10,
                  "rate multiplier per 10 points of neighbourhood income deprivation, typical LA")


def la_gradients(idata) -> xr.DataArray | None:
    """LA-specific gradient scores exp(b_j) (per 10 points); None without random gradients.

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, la``; coordinate ``la_deprivation``.
    """
    post, spec, _ = _parts(idata)
    if "gradient" not in spec.coefs:
        return None
    b = post["la_coef"].sel(coef="gradient", drop=True)
    da = np.exp(b * _step(spec)).assign_coords(
        la_deprivation=("la", idata.constant_data["la_deprivation"].sel(la=b["la"]).to_numpy()))
    return _label(da, "la_gradient_score", PER_10,
                  "rate multiplier per 10 points of neighbourhood income deprivation, each LA")


def gradient_curve(idata, X: np.ndarray | None = None, *, n: int = 41) -> xr.DataArray | None:
    """Typical-LA gradient score (per 10 points) against LA deprivation.

    The headline gradient (:func:`headline_gradients`) at every LA deprivation ``X``.

    Parameters
    ----------
    idata : arviz.InferenceData
    X : numpy.ndarray, optional
        LA deprivation grid (proportions). Default: ``n`` points from the least to the most deprived
        fitted LA, widened to the headline levels X_mean -/+ 10 points when those lie beyond them
        (the least and most deprived LAs' own values among them).
    n : int
        Points of the default grid.

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, la_deprivation``; coordinate ``extrapolated``: True outside the fitted
        LAs' deprivation range. None for models without an LA deprivation term (one typical LA).
    """
    post, spec, des = _parts(idata)
    if "la_deprivation" not in post:
        return None
    seen = la_deprivation_range(idata)
    if X is None:
        if seen is None:
            raise HierarchyError("the fit has no constant_data: give the LA deprivation grid X")
        levels = des["X_mean"] + np.array(list(LA_LEVELS.values()))
        X = np.linspace(max(min(seen[0], levels.min()), 1e-3), max(seen[1], levels.max()), n)
        X = np.unique(np.r_[X, seen[0], seen[1]])  # the curve's solid part ends exactly at the data's range
    X = np.asarray(X, dtype=float)
    if spec.la_deprivation.transform == "log" and (X <= 0).any():
        raise HierarchyError("LA deprivation must be above 0 on a log scale; the grid X has values <= 0")
    z = xr.DataArray(z_of(X, des["X_mean"], spec), dims="la_deprivation", coords={"la_deprivation": X})
    d = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    out = np.exp(d)
    if seen is not None:
        out = out.assign_coords(extrapolated=("la_deprivation", _outside(X, *seen)))
    return _label(out, "gradient_curve", PER_10, "typical-LA gradient score by LA deprivation")


def _w_grid(x: np.ndarray, X: np.ndarray, x_mean: float, spec) -> xr.DataArray:
    return xr.DataArray(w_of(x[None, :], X[:, None], x_mean, spec), dims=("la_level", "x"))


def typical_rates(idata, x: np.ndarray | None = None) -> xr.DataArray:
    """Predicted rate per 10,000 children in a typical LA at each LA level, over a grid of x.

    Parameters
    ----------
    idata : arviz.InferenceData
    x : numpy.ndarray, optional
        Neighbourhood deprivation (proportion); default :func:`x_grid`.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, la_level, x``; coordinate ``extrapolated`` (la_level, x): True where x is
        outside the neighbourhood deprivation seen in LAs near that level (:func:`x_range_near`).
    """
    post, spec, des = _parts(idata)
    x = x_grid(idata) if x is None else np.asarray(x, dtype=float)
    z = la_levels(idata)
    w = _w_grid(x, z["la_deprivation"].to_numpy(), des["x_mean"], spec).assign_coords(
        la_level=z["la_level"], x=x)
    rate = 1e4 * np.exp(model.log_rate(post, spec, w=w, z=z))
    ranges = x_range_near(idata, z["la_deprivation"].to_numpy())
    if ranges is not None:
        flags = np.stack([_outside(x, lo, hi) for lo, hi in ranges])
        rate = rate.assign_coords(extrapolated=(("la_level", "x"), flags))
    return _label(rate, "rate", PER_10K, "predicted rate, typical LA, by neighbourhood deprivation x")


def inverse_intervention(idata, x: np.ndarray | None = None) -> xr.DataArray:
    """Rate ratio between a typical LA 10 points less deprived and one 10 points more deprived.

    Both LAs are compared for a neighbourhood of the same absolute deprivation ``x``; under
    within/between centring the neighbourhood's ``w`` differs between them (:func:`w_of`).
    Values above 1 mean the less deprived LA intervenes more (the inverse intervention law).

    Parameters
    ----------
    idata : arviz.InferenceData
    x : numpy.ndarray, optional
        Neighbourhood deprivation grid; default :func:`x_grid`.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, x``; coordinate ``extrapolated`` (x): True where x is outside the
        neighbourhood deprivation seen in LAs near either of the two levels (:func:`x_range_near`).
    """
    post, spec, des = _parts(idata)
    x = x_grid(idata) if x is None else np.asarray(x, dtype=float)
    X = des["X_mean"] + np.array([-TEN_POINTS, TEN_POINTS])
    if spec.la_deprivation.transform == "log" and X[0] <= 0:
        raise HierarchyError(f"mean LA deprivation {des['X_mean']:.3f} is too low to compare LAs "
                             "10 points either side on a log scale")
    z = z_of(X, des["X_mean"], spec)
    w = w_of(x[None, :], X[:, None], des["x_mean"], spec)
    less, more = (model.log_rate(post, spec, w=xr.DataArray(w[k], dims="x", coords={"x": x}),
                                 z=float(z[k])) for k in (0, 1))
    ratio = np.exp(less - more)
    ranges = x_range_near(idata, X)
    if ranges is not None:  # the contrast needs both LAs: beyond either one's range it extrapolates
        ratio = ratio.assign_coords(extrapolated=("x", _outside(x, *ranges[0]) | _outside(x, *ranges[1])))
    return _label(ratio, "inverse_intervention_ratio",
                  "rate ratio (LA 10 points less / 10 points more deprived)",
                  "predicted rate ratio for a neighbourhood of the same deprivation x")


def deprivation_sd(idata) -> float:
    """Standard deviation of neighbourhood deprivation over neighbourhoods (proportion)."""
    x = pd.Series(idata.constant_data["deprivation"].to_numpy(), index=_codes(idata))
    return float(x[~x.index.duplicated()].std(ddof=1))


def per_sd(gradient: xr.DataArray, sd: float) -> xr.DataArray:
    """Convert gradient scores per 10 points to per ``sd`` of neighbourhood deprivation.

    Parameters
    ----------
    gradient : xarray.DataArray
        Gradient scores per 10 points.
    sd : float
        Standard deviation of neighbourhood deprivation (proportion), e.g. :func:`deprivation_sd`.

    Returns
    -------
    xarray.DataArray
        ``gradient ** (sd / 0.1)``, labelled "per SD (s = ... points)".
    """
    if gradient.attrs.get("scale") != PER_10:
        raise HierarchyError(f"per_sd converts gradients per 10 points, got {gradient.attrs}")
    out = gradient ** (sd / TEN_POINTS)
    return _label(out, str(gradient.name), f"per SD (1 SD = {100 * sd:.1f} points)",
                  str(gradient.attrs.get("description", "")).replace("per 10 points", "per SD"))


def subgroup_gradients(fit: Any) -> xr.DataArray | None:
    """Gradient scores of a typical LA at mean LA deprivation by stage and by stratum.

    Computed on the full fit (all stages): the stage's gradient plus each stratum's gradient
    offset (0 for the reference stratum). Dims ``chain, draw`` plus ``stage`` (stacked fits) and
    ``stratum`` (stratified fits, every level); None for fits with neither.
    """
    idata = as_fit(fit)
    spec = idata.spec
    if not (spec.stacked or spec.strata):
        return None
    post, des = idata.posterior, provenance(idata)["design"]
    z = float(z_of(des["X_mean"], des["X_mean"], spec))
    log_g = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    if "stratum_gradient_offset" in post:
        names = [str(n) for n in idata.constant_data["stratum"].to_numpy()]
        ref = [n for n in dict.fromkeys(names) if n not in post["stratum"].to_numpy()][0]
        off = post["stratum_gradient_offset"] * _step(spec)
        zero = xr.zeros_like(off.isel(stratum=0)).expand_dims(stratum=[ref])
        log_g = log_g + xr.concat([zero, off], "stratum")
    return _label(np.exp(log_g), "subgroup_gradient_score", PER_10,
                  "rate multiplier per 10 points, typical LA at mean LA deprivation, by stage/stratum")


def moderated_gradients(fit: Any) -> xr.DataArray | None:
    """Gradient scores of a typical LA at mean LA deprivation by a formula's gradient moderators.

    For each neighbourhood-level term ``w:col`` (one numeric column, e.g. ``w:rural``): the gradient
    with ``col`` at 0 and at 1 (the other neighbourhood terms held at 0); for each group with varying
    gradients (``(1 + w | ethnicity)``): the gradient of each level. Dim ``subgroup`` (``rural=1``,
    ``ethnicity=White``); None when the formula has neither. Contrasts: :func:`moderator_contrasts`.
    """
    idata = as_fit(fit)
    spec = idata.spec
    post, des = idata.posterior, provenance(idata)["design"]
    z = float(z_of(des["X_mean"], des["X_mean"], spec))
    base = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    parts = []
    for term in spec.row_terms:
        cols = [c for c in term.split(":") if c != "w"]
        if "w" in term.split(":") and len(cols) == 1 and cols[0] != "z":
            slope = post["row_coef"].sel(row_term=term, drop=True) * _step(spec)
            parts += [base.expand_dims(subgroup=[f"{cols[0]}=0"]),
                      (base + slope).expand_dims(subgroup=[f"{cols[0]}=1"])]
    for g, with_slope in spec.groups:
        if with_slope:
            dev = (post[f"{g}_raw"].sel({f"{g}_coef": "gradient"}) *
                   post[f"{g}_sd"].sel({f"{g}_coef": "gradient"})) * _step(spec)
            dev = dev.drop_vars(f"{g}_coef", errors="ignore")
            parts.append((base + dev).rename({g: "subgroup"}).assign_coords(
                subgroup=[f"{g}={v}" for v in post[g].to_numpy()]))
    if not parts:
        return None
    return _label(np.exp(xr.concat(parts, "subgroup")), "moderated_gradient_score", PER_10,
                  "rate multiplier per 10 points, typical LA at mean LA deprivation, by moderator "
                  "(other neighbourhood terms held at 0)")


def contrast_label(column: str, *, binary: bool | None = None) -> str:
    """How the contrast of a ``w:column`` term is worded.

    A 0/1 column compares its two values (``rural=1 vs rural=0``); a numeric column is a linear
    trend, worded per unit: ``per year`` for ``year``, ``per 1 unit of age`` otherwise.
    ``binary=None`` (the values are unknown): ``year`` is a trend, any other column 0/1.
    """
    if binary is None:
        binary = column.lower() != "year"
    if binary:
        return f"{column}=1 vs {column}=0"
    return "per year" if column.lower() == "year" else f"per 1 unit of {column}"


def _binary_columns(idata) -> dict[str, bool]:
    """Whether each row term's values are all 0 or 1, where the fit holds them (``row_X``)."""
    cd = idata.constant_data if "constant_data" in idata.groups() else None
    if cd is None or "row_X" not in cd:
        return {}
    return {str(t): bool(np.isin(cd["row_X"].sel(row_term=t).to_numpy(), (0, 1)).all())
            for t in cd["row_term"].to_numpy()}


def moderator_contrasts(fit: Any, *, prob: float = 0.9) -> pd.DataFrame | None:
    """Ratio of gradient scores for one unit more of each ``w:col`` term, with P(ratio > 1).

    One row per term: ``contrast`` worded by :func:`contrast_label` (``rural=1 vs rural=0``, or
    ``per year`` for a numeric year), the posterior mean, the equal-tailed ``prob`` interval
    (``lower``, ``upper``, ``prob``) and ``p_greater_than_1``.
    """
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be between 0 and 1, got {prob}")
    g = moderated_gradients(fit)
    if g is None:
        return None
    binary = _binary_columns(as_fit(fit))
    tail = (1 - prob) / 2
    rows = []
    for label in [str(s) for s in g["subgroup"].to_numpy() if str(s).endswith("=1")]:
        col = label[:-2]
        r = (g.sel(subgroup=label) / g.sel(subgroup=f"{col}=0")).to_numpy().ravel()
        rows.append({"contrast": contrast_label(col, binary=binary.get(f"w:{col}")), "mean": r.mean(),
                     "lower": np.quantile(r, tail), "upper": np.quantile(r, 1 - tail), "prob": prob,
                     "p_greater_than_1": (r > 1).mean()})
    return pd.DataFrame(rows)


def escalation(fit: Any) -> xr.DataArray | None:
    """Gradient escalation: ratio of each stage's gradient score to the previous stage's.

    Dims ``chain, draw, step`` (e.g. ``s47 / referral``); values above 1 mean the gradient is
    steeper at the higher threshold. None unless stages are stacked.
    """
    g = subgroup_gradients(fit)
    if g is None or "stage" not in g.dims:
        return None
    if "stratum" in g.dims:
        g = g.isel(stratum=0, drop=True)
    stages = [str(v) for v in g["stage"].to_numpy()]
    parts = [(g.sel(stage=b, drop=True) / g.sel(stage=a, drop=True)).expand_dims(step=[f"{b} / {a}"])
             for a, b in zip(stages, stages[1:], strict=False)]
    return _label(xr.concat(parts, "step"), "gradient_escalation", "ratio of gradient scores",
                  "gradient score at the higher stage divided by the stage below, typical LA")


def between_la_share(idata, *, chunk: int = 100) -> xr.DataArray:
    """Share of latent (log-scale) variance between LAs (see :data:`SHARE_DEFINITION`).

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw``; a proportion.
    """
    post, spec, _ = _parts(idata)
    rows = fit_rows(idata)
    la_idx, expo = rows["la_index"], np.exp(rows["log_exposure"])
    rows = rows | {"log_exposure": np.zeros(len(la_idx))}
    n_la = post.sizes["la"]
    shape = (post.sizes["chain"], post.sizes["draw"])
    draws = _draw_arrays(post.stack(sample=("chain", "draw")), spec)
    n_j = np.bincount(la_idx, minlength=n_la).astype(float)
    share = n_j / n_j.sum()
    v_between, v_within, mu = [], [], []
    for s in range(0, int(np.prod(shape)), chunk):  # the one predictor, chunk draws at a time
        eta = predictor_draws(rows, {k: v[s:s + chunk] for k, v in draws.items()}, batch=chunk)
        m_j = np.stack([np.bincount(la_idx, e, n_la) for e in eta]) / np.maximum(n_j, 1)
        s2_j = np.stack([np.bincount(la_idx, e**2, n_la) for e in eta]) / np.maximum(n_j, 1) - m_j**2
        v_between.append((share * m_j**2).sum(-1) - (share * m_j).sum(-1) ** 2)
        v_within.append((share * s2_j).sum(-1))
        mu.append((expo * np.exp(eta)).mean(-1))
    v_between, mu = np.concatenate(v_between), np.concatenate(mu)
    v_within = (np.concatenate(v_within) + _flat(post, "msoa_sd", shape) ** 2
                + _flat(post, "spatial_sd", shape) ** 2)  # per-node effects are not stored
    v_obs = np.log1p(1 / mu + (1 / _flat(post, "dispersion", shape, np.inf)))
    v_obs = v_obs + _flat(post, "obs_sd", shape) ** 2
    out = v_between / (v_between + v_within + v_obs)
    da = xr.DataArray(out.reshape(shape), dims=("chain", "draw"),
                      coords={"chain": post["chain"], "draw": post["draw"]})
    return _label(da, "between_la_share", "proportion of latent log-scale variance",
                  SHARE_DEFINITION)


SPATIAL_MEASURES = {
    "structured_share": ("proportion of the BYM2 effects' variance",
                         "structured (ICAR) share of the neighbourhood effects' variance: spatial_mix"),
    "sd": ("SD on the log-rate scale", "SD of the BYM2 neighbourhood effects: spatial_sd"),
    "neighbourhood_share": ("proportion of neighbourhood-level log-rate variance",
                            "share of the neighbourhood-level log-rate variance that is neighbourhood (BYM2) "
                            "rather than LA: spatial_sd^2 / (spatial_sd^2 + variance of the LA intercepts)"),
}
"""The measures of :func:`spatial_share`: name -> (scale, one-line definition)."""


def spatial_share(fit: Any) -> xr.DataArray | None:
    """The BYM2 term's summaries per draw (:data:`SPATIAL_MEASURES`); None for a non-spatial fit.

    ``structured_share`` is ``spatial_mix``; ``sd`` is ``spatial_sd``; ``neighbourhood_share`` is
    ``spatial_sd^2 / (spatial_sd^2 + sigma_a^2)``, ``sigma_a^2`` the variance of the LA intercepts (at a
    neighbourhood of its LA's mean deprivation, :func:`hierarchy.results.heterogeneity.la_variance`;
    0 without an LA level, so the share is 1).

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, measure`` (in the order of :data:`SPATIAL_MEASURES`).
    """
    from hierarchy.results.heterogeneity import la_variance  # it imports this module

    idata = as_idata(fit)
    post = idata.posterior
    if "spatial_sd" not in post or "spatial_mix" not in post:
        return None
    sd, mix = post["spatial_sd"], post["spatial_mix"]
    la_var = la_variance(idata, w=0.0)
    la_var = xr.zeros_like(sd) if la_var is None else la_var
    share = sd**2 / (sd**2 + la_var)
    keep = ("chain", "draw")
    parts = [v.drop_vars([c for c in v.coords if c not in keep]) for v in (mix, sd, share)]
    out = xr.concat(parts, "measure").assign_coords(measure=list(SPATIAL_MEASURES))
    return _label(out.transpose("chain", "draw", "measure"), "spatial_share", "by measure",
                  "; ".join(d for _, d in SPATIAL_MEASURES.values()))


def spatial_estimands(fit: Any) -> list[xr.DataArray]:
    """:func:`spatial_share` as one labelled scalar estimand per measure (``spatial_<measure>``);
    empty for a non-spatial fit."""
    share = spatial_share(fit)
    if share is None:
        return []
    return [_label(share.sel(measure=m, drop=True), f"spatial_{m}", scale, text)
            for m, (scale, text) in SPATIAL_MEASURES.items()]


def _flat(post: xr.Dataset, name: str, shape: tuple[int, int], default: float = 0.0) -> np.ndarray:
    if name not in post:
        return np.full(int(np.prod(shape)), default)
    return post[name].to_numpy().reshape(-1)


# ---------------------------------------------------------------------------- summaries


def interval(da: xr.DataArray, *, prob: float = 0.9) -> xr.Dataset:
    """Mean, sd and equal-tailed ``prob`` interval of draws, over the sample dims.

    Parameters
    ----------
    da : xarray.DataArray
        Draws with dims ``chain, draw`` or ``sample`` (and any others).
    prob : float
        Interval probability in (0, 1).

    Returns
    -------
    xarray.Dataset
        Variables ``mean``, ``sd``, ``lower``, ``upper``; attrs ``prob`` and ``da.attrs``.
    """
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be in (0, 1), got {prob}")
    dims = [d for d in SAMPLE_DIMS if d in da.dims]
    q = da.quantile([(1 - prob) / 2, (1 + prob) / 2], dim=dims)
    ds = xr.Dataset({"mean": da.mean(dims), "sd": da.std(dims, ddof=1),
                     "lower": q.isel(quantile=0, drop=True), "upper": q.isel(quantile=1, drop=True)})
    ds.attrs = {**da.attrs, "prob": prob}
    return ds


def summarise(da: xr.DataArray, *, prob: float = 0.9) -> pd.DataFrame:
    """Tidy table of :func:`interval`: one row per non-sample coordinate combination.

    Columns: ``estimand``, the remaining dims and coordinates, ``scale``, ``mean``, ``sd``,
    ``lower``, ``upper``, ``prob``.
    """
    ds = interval(da, prob=prob)
    if ds["mean"].ndim == 0:
        frame = pd.DataFrame({k: [float(ds[k])] for k in ("mean", "sd", "lower", "upper")})
        for c, v in ds.coords.items():
            frame[c] = [v.item()]
    else:
        frame = ds.to_dataframe().reset_index()
    frame = frame.drop(columns=[c for c in ("quantile",) if c in frame])
    frame.insert(0, "estimand", str(da.name))
    frame["scale"] = da.attrs.get("scale", "")
    frame["prob"] = prob
    stats = ["mean", "sd", "lower", "upper"]
    return frame[[c for c in frame if c not in [*stats, "prob"]] + [*stats, "prob"]]


def headline_table(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """The three headline gradient scores (per 10 points) as a tidy table."""
    return summarise(headline_gradients(idata), prob=prob)


def estimands_table(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """Scalar estimands, tidy: headline gradients per 10 points and per SD, subgroup gradients
    (when the posterior has them), the between-LA variance share and, for a spatial fit, the
    BYM2 term's measures (:func:`spatial_estimands`).

    Columns: ``estimand``, ``la_level``, ``la_deprivation``, ``subgroup``, ``scale``, ``mean``,
    ``sd``, ``lower``, ``upper``, ``prob``, ``description``.
    """
    head = headline_gradients(idata)
    parts = [head, per_sd(head, deprivation_sd(idata))]
    for sub in (subgroup_gradients(idata), moderated_gradients(idata)):
        if sub is not None:
            parts.append(sub)
    if has_row_data(idata):  # a conversion-rate fit read without its data has no exposures
        parts.append(between_la_share(idata))
    parts += spatial_estimands(idata)
    frames = [summarise(p, prob=prob).assign(description=p.attrs["description"]) for p in parts]
    out = pd.concat(frames, ignore_index=True)
    cols = ["estimand", "la_level", "la_deprivation", "subgroup", "scale", "mean", "sd", "lower",
            "upper", "prob", "description"]
    return out.reindex(columns=[c for c in cols if c in out])


# ---------------------------------------------------------------------------- predictive checks


def _codes(idata) -> np.ndarray:
    """Neighbourhood code of each fitted row (row ids are ``code|stratum...``)."""
    ids = idata.constant_data["neighbourhood"].to_numpy().astype(str)
    return np.array([s.split("|", 1)[0] for s in ids])


def has_row_data(idata) -> bool:
    """Whether the fit (as given: a saved fit, or one with :func:`~hierarchy.results.fitfile.with_row_data`)
    holds every row input the predictor reads."""
    return not missing_row_data(idata)


def _rows(idata, spec, des: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LA index (into the posterior's ``la``), centred deprivation w and exposure of each row."""
    require_row_data(idata, "this estimand")
    cd = idata.constant_data
    la_idx = pd.Index(idata.posterior["la"].to_numpy().astype(str)).get_indexer(
        cd["la_of"].to_numpy().astype(str))
    X = cd["la_deprivation"].sel(la=idata.posterior["la"]).to_numpy()
    w = w_of(cd["deprivation"].to_numpy(), X[la_idx], des["x_mean"], spec)
    return la_idx, np.asarray(w), cd["exposure"].to_numpy()


def deciles_of(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """National decile (1 = least deprived) of each row's neighbourhood.

    Deciles are over neighbourhoods (equal numbers of neighbourhoods, not children), ranked by
    deprivation with ties broken by code, as in :mod:`hierarchy.data.simulate`; rows of the same
    neighbourhood (strata) share its decile.

    Parameters
    ----------
    x : numpy.ndarray
        Neighbourhood deprivation of each row.
    codes : numpy.ndarray
        Neighbourhood code of each row.

    Returns
    -------
    numpy.ndarray
        Integer deciles 1..10.
    """
    s = pd.Series(np.asarray(x, dtype=float), index=np.asarray(codes).astype(str))
    first = s[~s.index.duplicated()]
    order = np.lexsort((first.index.to_numpy(), first.to_numpy()))
    dec = np.empty(len(first), dtype=np.int64)
    dec[order] = np.arange(len(first)) * 10 // len(first) + 1
    return dec[first.index.get_indexer(s.index)]


def neighbourhood_deciles(idata) -> np.ndarray:
    """:func:`deciles_of` for the rows of a fit (from its ``constant_data``)."""
    return deciles_of(idata.constant_data["deprivation"].to_numpy(), _codes(idata))


def fit_rows(idata) -> dict[str, Any]:
    """The one predictor's row arrays (:mod:`hierarchy.likelihood.predictor`) for the fitted rows of a fit file:
    indices into the posterior's coordinates, ``w`` and exposures rebuilt from ``constant_data``."""
    post, spec, des = _parts(idata)
    cd = idata.constant_data
    la_idx, w, expo = _rows(idata, spec, des)
    stages = list(spec.stages)
    stage = cd["stage"].to_numpy().astype(str) if "stage" in cd else np.full(len(w), stages[0])
    levels = ["__reference__", *(post["stratum"].to_numpy().astype(str) if "stratum" in post.coords else [])]
    k = pd.Index(levels).get_indexer(cd["stratum"].to_numpy().astype(str))
    groups = tuple((g, pd.Index(post[g].to_numpy().astype(str)).get_indexer(cd[f"{g}_of"].to_numpy().astype(str)))
                   for g, _ in spec.groups)
    return {"la_index": la_idx, "stage_index": pd.Index(stages).get_indexer(stage),
            "stratum_index": np.where(k < 0, 0, k),  # the reference level is not a coordinate: offset 0
            "log_exposure": np.log(expo), "w": np.asarray(w),
            "row_X": cd["row_X"].to_numpy() if "row_X" in cd else None, "groups": groups}


def _draw_arrays(flat: xr.Dataset, spec) -> dict[str, np.ndarray]:
    """Posterior draws (dim ``sample`` first) of the parameters the predictor reads."""
    keys = [k for k in (*ROW_PARAMS, *group_params(g for g, _ in spec.groups)) if k in flat
            and k not in ("msoa_raw", "eps_raw", "dispersion")]
    return {k: flat[k].transpose("sample", ...).to_numpy() for k in keys}


def posterior_predictive(idata, *, n_draws: int = 200, seed: int = 0,
                         chunk: int = 50) -> xr.DataArray:
    """Replicated counts for every fitted row from the one linear predictor (NB/Poisson draws).

    ``n_draws`` posterior draws, evenly spaced over all chains, bound the memory
    (``n_draws x rows``). MSOA effects (when modelled) and Poisson-lognormal row effects are
    drawn afresh from their fitted SDs (the fit file does not store the MSOA of each row).

    Returns
    -------
    xarray.DataArray
        Integer counts, dims ``sample, neighbourhood``.
    """
    post, spec, _ = _parts(idata)
    rows = fit_rows(idata)
    flat = post.stack(sample=("chain", "draw"))
    n_total = flat.sizes["sample"]
    pick = np.unique(np.linspace(0, n_total - 1, min(n_draws, n_total)).round().astype(int))
    flat = flat.isel(sample=pick)
    eta_all = predictor_draws(rows, _draw_arrays(flat, spec), batch=chunk)
    rng = np.random.default_rng(seed)
    out = np.empty(eta_all.shape, dtype=np.int64)
    stage = rows["stage_index"]
    for s in range(0, len(pick), chunk):
        eta = eta_all[s:s + chunk]
        for sd_name in ("msoa_sd", "obs_sd"):
            if sd_name in flat:
                sd = flat[sd_name].to_numpy()[s:s + chunk, None]
                eta = eta + rng.normal(0.0, 1.0, eta.shape) * sd
        mu = np.exp(eta)
        if spec.family == "negative_binomial":
            phi = np.atleast_2d(flat["dispersion"].transpose("sample", ...).to_numpy()[s:s + chunk])
            phi = phi.reshape(len(eta), -1)[:, stage]
            mu = rng.gamma(phi, mu / phi)
        out[s:s + chunk] = rng.poisson(mu)
    return xr.DataArray(out, dims=("sample", "neighbourhood"),
                        coords={"neighbourhood": idata.constant_data["neighbourhood"].to_numpy()},
                        name=model.observed_name(spec))


def observed_counts(idata, data: Any = None) -> np.ndarray | None:
    """Observed outcome counts aligned with the fitted rows, or None when not available.

    Parameters
    ----------
    idata : arviz.InferenceData
    data : str, os.PathLike or pandas.DataFrame, optional
        The table the fit was made from (its data hash must match the fit's). Without it the
        fit's ``observed_data`` group is used, if it was saved with the data.

    Returns
    -------
    numpy.ndarray or None
        Raw counts: for disclosure-controlled tables only, never publish as they are.
    """
    idata = as_fit(idata)
    spec = idata.spec
    if data is None:
        if "observed_data" in idata.groups():
            return idata.observed_data[spec.outcome].to_numpy()
        return None
    design = design_of(idata, data, None, spec)
    return design.y[fitted_positions(idata, design)]


def decile_table(idata, yrep: xr.DataArray, observed: np.ndarray | None = None, *,
                 prob: float = 0.9, threshold: int = THRESHOLD,
                 rounding: int = ROUNDING) -> pd.DataFrame:
    """Rates per 10,000 children by national decile: posterior predictive vs observed.

    Observed counts are disclosure-controlled (:mod:`hierarchy.disclosure`); the observed rate
    is computed from the published count.

    Returns
    -------
    pandas.DataFrame
        ``decile``, ``deprivation_min``, ``deprivation_max``, ``neighbourhoods``, ``children``,
        ``predicted_mean``, ``predicted_sd``, ``predicted_lower``, ``predicted_upper``, ``prob``,
        ``scale`` and, with observed data, ``observed_count``, ``observed_rate``.
    """
    require_row_data(idata, "the decile table")
    dec = neighbourhood_deciles(idata)
    x = idata.constant_data["deprivation"].to_numpy()
    expo = np.rint(idata.constant_data["exposure"].to_numpy())  # stored as exp(log exposure)
    codes = _codes(idata)
    onehot = (dec[:, None] == np.arange(1, 11)[None, :]).astype(float)
    children = expo @ onehot
    pred = xr.DataArray(1e4 * (yrep.to_numpy() @ onehot) / children, dims=("sample", "decile"),
                        coords={"decile": np.arange(1, 11)}, name="rate", attrs={"scale": PER_10K})
    s = interval(pred, prob=prob)
    frame = pd.DataFrame({
        "decile": np.arange(1, 11),
        "deprivation_min": [x[dec == k].min() for k in range(1, 11)],
        "deprivation_max": [x[dec == k].max() for k in range(1, 11)],
        "neighbourhoods": [len(set(codes[dec == k])) for k in range(1, 11)],
        "children": children,
        **{f"predicted_{k}": s[k].to_numpy() for k in ("mean", "sd", "lower", "upper")},
        "prob": prob, "scale": PER_10K})
    if observed is not None:
        frame["observed_count"] = np.asarray(observed, dtype=float) @ onehot
        frame = disclose_frame(frame, counts=["observed_count"],
                               rates={"observed_rate": ("observed_count", "children")},
                               threshold=threshold, rounding=rounding)
    return with_private_denominator(idata, frame, threshold=threshold, rounding=rounding)


def with_private_denominator(idata, frame: pd.DataFrame, *, threshold: int, rounding: int) -> pd.DataFrame:
    """When the exposure is a count (referrals for re-referrals), its column is an observed count too:
    suppressed and rounded like one, and the observed rate recomputed from both published counts."""
    if exposure_is_public(idata):
        return frame
    from hierarchy.disclosure import disclose_counts

    out = frame.copy()
    out["children"] = disclose_counts(frame["children"].to_numpy(dtype=float), threshold=threshold,
                                      rounding=rounding)
    if "observed_rate" in out:
        denom = out["children"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["observed_rate"] = np.where(denom > 0, 1e4 * out["observed_count"].to_numpy(dtype=float) / denom,
                                            np.nan)
    return out  # the column keeps the name "children" that the report and checking folder read


def la_decile_table(idata, observed: np.ndarray, *, threshold: int = THRESHOLD,
                    rounding: int = ROUNDING) -> pd.DataFrame:
    """Observed counts and rates per 10,000 by LA and national decile, disclosure-controlled.

    Returns
    -------
    pandas.DataFrame
        Long: ``la``, ``la_deprivation``, ``decile`` (``"1"``..``"10"`` and ``"all"``),
        ``neighbourhoods``, ``children``, ``observed_count``, ``observed_rate`` (NaN where
        suppressed); only cells with neighbourhoods.
    """
    require_row_data(idata, "the LA x decile table")
    cd = idata.constant_data
    rows = pd.DataFrame({"la": cd["la_of"].to_numpy().astype(str),
                         "decile": neighbourhood_deciles(idata).astype(str), "code": _codes(idata),
                         "children": np.rint(cd["exposure"].to_numpy()),
                         "observed_count": np.asarray(observed, dtype=float)})
    agg = {"neighbourhoods": ("code", "nunique"), "children": ("children", "sum"),
           "observed_count": ("observed_count", "sum")}
    by_cell = rows.groupby(["la", "decile"], as_index=False).agg(**agg)
    by_la = rows.groupby("la", as_index=False).agg(**agg).assign(decile="all")
    frame = pd.concat([by_cell, by_la], ignore_index=True)
    order = {str(k): k for k in range(1, 11)} | {"all": 11}
    frame = frame.sort_values(["la", "decile"], key=lambda c: c.map(order) if c.name == "decile"
                              else c).reset_index(drop=True)
    X = cd["la_deprivation"].to_series()
    X.index = X.index.astype(str)
    frame.insert(1, "la_deprivation", X.reindex(frame["la"]).to_numpy())
    frame["decile"] = frame["decile"].astype(str)
    frame = disclose_frame(frame, counts=["observed_count"],
                           rates={"observed_rate": ("observed_count", "children")},
                           threshold=threshold, rounding=rounding)
    return with_private_denominator(idata, frame, threshold=threshold, rounding=rounding)


def count_distribution(yrep: xr.DataArray, observed: np.ndarray | None = None, *,
                       edges: tuple[float, ...] = COUNT_EDGES, prob: float = 0.9,
                       threshold: int = THRESHOLD, rounding: int = ROUNDING) -> pd.DataFrame:
    """Posterior predictive check of the count distribution: neighbourhoods per count bin.

    Observed numbers of neighbourhoods per bin are observed counts and are disclosure-controlled.

    Returns
    -------
    pandas.DataFrame
        ``bin`` (label), ``low``, ``high`` (bin is low <= count < high), ``predicted_mean``,
        ``predicted_lower``, ``predicted_upper``, ``prob`` and, with observed data,
        ``observed_neighbourhoods``.
    """
    edges_arr = np.asarray(edges, dtype=float)
    y = yrep.to_numpy()
    per_bin = np.stack([((y >= lo) & (y < hi)).sum(-1) for lo, hi in zip(edges_arr[:-1],
                                                                            edges_arr[1:],
                                                                            strict=True)], -1)
    s = interval(xr.DataArray(per_bin, dims=("sample", "bin")), prob=prob)
    frame = pd.DataFrame({"bin": [_bin_label(lo, hi) for lo, hi in zip(edges_arr[:-1], edges_arr[1:],
                                                                        strict=True)],
                          "low": edges_arr[:-1], "high": edges_arr[1:],
                          "predicted_mean": s["mean"].to_numpy(),
                          "predicted_lower": s["lower"].to_numpy(),
                          "predicted_upper": s["upper"].to_numpy(), "prob": prob})
    if observed is not None:
        obs = np.asarray(observed)
        frame["observed_neighbourhoods"] = [((obs >= lo) & (obs < hi)).sum() for lo, hi in
                                            zip(edges_arr[:-1], edges_arr[1:], strict=True)]
        frame = disclose_frame(frame, counts=["observed_neighbourhoods"], threshold=threshold,
                               rounding=rounding)
    return frame


def _bin_label(lo: float, hi: float) -> str:
    if not np.isfinite(hi):
        return f"{lo:,.0f}+"
    return f"{lo:,.0f}" if hi - lo == 1 else f"{lo:,.0f}-{hi - 1:,.0f}"

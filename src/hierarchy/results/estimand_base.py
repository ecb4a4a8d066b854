"""What every estimand of :mod:`hierarchy.results.estimands` shares: a fit as InferenceData and one stage's
view of it, the scales, the LA deprivation levels and ranges estimands are evaluated at, and posterior
intervals and summaries of their draws."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import z_of
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

"""Per-year estimands of a neighbourhood x year fit: is the social gradient steepening?

A model with a per-year gradient, ``C(year) + w:C(year)`` (a gradient offset for each year against the
first, ``models/years_gradient_nb.toml``) or ``(1 + w | year)`` (partially pooled year gradients), gives
each year's gradient score of a typical LA (LA effects at their mean given LA deprivation, LA x year and
other group effects at 0, neighbourhood terms at 0), at mean LA deprivation and 10 points less / more.
Each is the ratio of the one linear predictor (:mod:`hierarchy.likelihood.predictor`) at two rows 10
points of neighbourhood deprivation apart in that year, draw by draw. Scale: per 10 points.

:func:`year_gradient_table` adds each year's ratio to the first year's gradient and P(steeper than the
first year); :func:`gradient_trend` the least-squares change of the log gradient per year (over the
fitted years), as a ratio per year, with P(steepening).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.likelihood import model
from hierarchy.likelihood.predictor import predictor_draws
from hierarchy.results.estimands import PER_10, TEN_POINTS, interval, la_levels
from hierarchy.results.fit import as_fit

__all__ = ["has_year_gradient", "year_gradients", "year_gradient_table", "gradient_trend", "trend_table"]


def _idata(fit: Any, stage: str | None):
    return as_fit(fit).stage(stage)


def _year_term(idata, column: str) -> tuple[str, list[str]]:
    """How the fit carries per-year gradients (``stratum`` or ``group``) and the years in order."""
    spec = as_fit(idata).spec
    post = idata.posterior
    if spec.strata == (column,) and spec.stratum_gradient:
        others = [str(s) for s in post["stratum"].to_numpy()]
        ref = [s for s in dict.fromkeys(idata.constant_data["stratum"].to_numpy().astype(str)) if s not in others]
        return "stratum", ref[:1] + others
    if (column, True) in tuple(spec.groups):
        return "group", [str(s) for s in post[column].to_numpy()]
    raise HierarchyError(
        f"the fit of '{spec.name}' ({spec.formula_text}) has no gradient per {column}: fit a model with "
        f"C({column}) + w:C({column}) (models/years_gradient_nb.toml) or (1 + w | {column}) on a table with a "
        f"'{column}' column")


def has_year_gradient(idata, column: str = "year") -> bool:
    """Whether a fit carries a gradient per ``column`` (``w:C(year)`` or ``(1 + w | year)``)."""
    try:
        _year_term(as_fit(idata).stage(), column)
    except HierarchyError:
        return False
    return True


def year_gradients(fit: Any, *, stage: str | None = None, column: str = "year") -> xr.DataArray:
    """Gradient score of a typical LA in each year, at mean LA deprivation and 10 points less / more.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit whose formula has a per-year gradient (module docstring).
    stage : str, optional
        The stage of a stacked-stages fit (default: the first).
    column : str
        The year column.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, year, la_level`` (years in order; coordinate ``la_deprivation``);
        scale per 10 points.
    """
    idata = _idata(fit, stage)
    spec = as_fit(idata).spec
    kind, years = _year_term(idata, column)
    post = idata.posterior
    z = la_levels(idata)
    # the typical LA at each LA deprivation level: LA effects at their mean (hierarchy.likelihood.model)
    a = model.log_rate(post, spec, w=0.0, z=z)
    b = model.log_rate(post, spec, w=1.0, z=z) - a
    flat = xr.Dataset({"a": a, "b": b}).stack(sample=("chain", "draw")).transpose("sample", "la_level")
    draws = {"la_coef": np.stack([flat["a"].to_numpy(), flat["b"].to_numpy()], axis=-1)}
    samples = post.stack(sample=("chain", "draw"))
    if kind == "stratum":
        draws |= {k: samples[k].transpose("sample", ...).to_numpy()
                  for k in ("stratum_intercept_offset", "stratum_gradient_offset")}
    else:
        draws |= {f"{column}_{k}": samples[f"{column}_{k}"].transpose("sample", ...).to_numpy()
                  for k in ("raw", "sd")}
    n_level, n_year = z.sizes["la_level"], len(years)
    level, year, at = (g.ravel() for g in np.meshgrid(np.arange(n_level), np.arange(n_year), [0.0, 1.0],
                                                       indexing="ij"))
    step = TEN_POINTS / spec.deprivation.scale
    rows = {"la_index": level, "stage_index": np.zeros_like(level), "log_exposure": np.zeros(len(level)),
            "w": at * step, "stratum_index": year if kind == "stratum" else np.zeros_like(year),
            "groups": ((column, year),) if kind == "group" else ()}
    eta = predictor_draws(rows, draws).reshape(-1, n_level, n_year, 2)
    log_g = eta[..., 1] - eta[..., 0]
    shape = (post.sizes["chain"], post.sizes["draw"])
    da = xr.DataArray(np.exp(log_g).reshape(*shape, n_level, n_year).transpose(0, 1, 3, 2),
                      dims=("chain", "draw", column, "la_level"),
                      coords={"chain": post["chain"], "draw": post["draw"], column: years,
                              "la_level": z["la_level"], "la_deprivation": ("la_level", z["la_deprivation"].data)})
    da.name = "year_gradient_score"
    da.attrs = {"scale": PER_10, "description": f"rate multiplier per 10 points of neighbourhood income "
                                                f"deprivation, typical LA, each {column}"}
    return da


def year_gradient_table(fit: Any, *, prob: float = 0.9, stage: str | None = None,
                        column: str = "year") -> pd.DataFrame:
    """Each year's gradient score with its ``prob`` interval, its ratio to the first year's and
    P(steeper than the first year), at mean LA deprivation and 10 points less / more.

    Returns
    -------
    pandas.DataFrame
        Columns ``year``, ``la_level``, ``la_deprivation``, ``scale``, ``mean``, ``sd``, ``lower``,
        ``upper``, ``ratio_to_first``, ``ratio_lower``, ``ratio_upper``, ``p_steeper_than_first``,
        ``prob``. The ratio and the probability are the same at every LA level when the year
        offsets are additive on the log gradient (both shipped forms).
    """
    g = year_gradients(fit, stage=stage, column=column)
    ratio = g / g.isel({column: 0})
    out = interval(g, prob=prob).to_dataframe().reset_index()
    r = interval(ratio, prob=prob).to_dataframe().reset_index()
    out["ratio_to_first"], out["ratio_lower"], out["ratio_upper"] = r["mean"], r["lower"], r["upper"]
    p = (ratio > 1).mean(("chain", "draw")).to_dataframe(name="p").reset_index()
    out["p_steeper_than_first"] = p["p"]
    first = out[column] == g[column].to_numpy()[0]
    out.loc[first, "p_steeper_than_first"] = np.nan  # the first year is not steeper than itself
    out["scale"], out["prob"] = PER_10, prob
    cols = [column, "la_level", "la_deprivation", "scale", "mean", "sd", "lower", "upper", "ratio_to_first",
            "ratio_lower", "ratio_upper", "p_steeper_than_first", "prob"]
    return out[cols]


def gradient_trend(fit: Any, *, stage: str | None = None, column: str = "year") -> xr.DataArray:
    """Least-squares change of the log gradient score per year over the fitted years, as a ratio per
    year (1.03: 3% steeper each year), draw by draw; at mean LA deprivation (the per-year offsets
    move every LA level alike). Years must be numbers.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw``; scale "ratio of gradient scores per year".
    """
    g = year_gradients(fit, stage=stage, column=column).sel(la_level="mean", drop=True)
    try:
        t = np.array([float(y) for y in g[column].to_numpy()])
    except ValueError:
        raise HierarchyError(f"a trend over {column} needs numeric {column} values, got "
                             f"{list(g[column].to_numpy())[:5]}") from None
    if len(t) < 2:
        raise HierarchyError(f"a trend needs at least two {column}s; the fit has {len(t)}")
    t = t - t.mean()
    slope = (np.log(g) * xr.DataArray(t, dims=column)).sum(column) / float((t**2).sum())
    da = np.exp(slope).rename("gradient_trend")
    span = f"{g[column].to_numpy()[0]}-{g[column].to_numpy()[-1]}"
    da.attrs = {"scale": "ratio of gradient scores per year",
                "description": f"least-squares change per {column} of the log gradient score of a typical LA "
                               f"at mean LA deprivation, over {span}"}
    return da


def trend_table(fit: Any, *, prob: float = 0.9, stage: str | None = None, column: str = "year") -> pd.DataFrame:
    """:func:`gradient_trend` with its ``prob`` interval and P(steepening), one row."""
    tr = gradient_trend(fit, stage=stage, column=column)
    ds = interval(tr, prob=prob)
    return pd.DataFrame([{"estimand": "gradient_trend", "scale": tr.attrs["scale"],
                          **{k: float(ds[k]) for k in ("mean", "sd", "lower", "upper")},
                          "p_steepening": float((tr > 1).mean()), "prob": prob,
                          "description": tr.attrs["description"]}])

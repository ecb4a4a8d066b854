"""Headline estimands of several fits side by side, from their posteriors only (``headlines.csv``).

:func:`headline_side_by_side` puts the three gradient scores, the inverse-intervention ratio and, for a
spatial fit (``car(neighbourhood)``), the BYM2 measures of each fit in one table;
:func:`side_by_side_sentence` says in a plain sentence per headline what changed between the fits
(with the spatial twin: "With the spatial term ... against ... without"), and :func:`shown_headlines`
writes each estimate as text for the terminal and pages of ``hierarchy compare-models``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

__all__ = ["HEADLINE_WORDS", "SPATIAL_CONFOUNDING", "headline_side_by_side", "shown_headlines",
           "side_by_side_sentence"]


HEADLINE_WORDS = {"10 points less": "the gradient in an LA 10 points less deprived than the mean",
                  "mean": "the gradient at mean LA deprivation",
                  "10 points more": "the gradient in an LA 10 points more deprived than the mean",
                  "inverse intervention": "the rate ratio between LAs 10 points less and more deprived "
                                          "(a neighbourhood of mean deprivation)"}
"""How each headline row of :func:`headline_side_by_side` is worded in :func:`side_by_side_sentence`."""
SPATIAL_CONFOUNDING = (
    "Neighbourhood deprivation is itself spatially smooth, so a spatial term can take over part of the "
    "gradient (spatial confounding, Hodges & Reich 2010): both fits are shown and neither is 'the' "
    "answer; no automatic 'restricted' fix is applied.")


def _headline_draws(idata) -> list[tuple[str, str, Any]]:
    """(estimand, at, draws) of one fit's headlines: the three gradient scores and, where the model has
    an LA deprivation term, the inverse-intervention ratio at mean neighbourhood deprivation."""
    from hierarchy.results import estimands

    view = estimands.as_idata(idata)
    g = estimands.headline_gradients(view)
    if "la_level" in g.dims:
        out = [("gradient_score", str(lv), g.sel(la_level=lv, drop=True)) for lv in g["la_level"].to_numpy()]
    else:  # no LA deprivation term: one gradient for every LA level
        out = [("gradient_score", "mean", g)]
    if "la_deprivation" in view.posterior:
        x = float(estimands.provenance(view)["design"]["x_mean"])
        try:
            ratio = estimands.inverse_intervention(view, x=np.array([x])).isel(x=0, drop=True)
        except HierarchyError:  # a log LA deprivation with X_mean under 10 points: no such contrast
            ratio = None
        if ratio is not None:
            out.append(("inverse_intervention_ratio", "inverse intervention", ratio))
    out += [(str(d.name), "", d) for d in estimands.spatial_estimands(view)]
    return out


def headline_side_by_side(fits: Sequence[Any], names: Sequence[str], prob: float = 0.9) -> pd.DataFrame:
    """The headline estimands of several fits, side by side, from their posteriors only.

    Rows: the three headline gradient scores (:func:`hierarchy.results.estimands.headline_gradients`),
    the inverse-intervention rate ratio at mean neighbourhood deprivation (models with LA deprivation)
    and, for spatial fits, the BYM2 measures (:func:`hierarchy.results.estimands.spatial_share`).
    One column block per model: ``<name> mean``, ``<name> lower``, ``<name> upper`` (NaN where the
    model has no such estimand).

    Parameters
    ----------
    fits : sequence of path or arviz.InferenceData
    names : sequence of str
        One label per fit.
    prob : float
        Probability of the equal-tailed intervals.

    Returns
    -------
    pandas.DataFrame
        ``estimand``, ``at``, ``prob`` and the blocks; ``attrs["spatial"]`` maps each name to whether
        its fit has the BYM2 term.
    """
    from hierarchy.results import estimands
    from hierarchy.results.fitfile import load_fit

    if len(fits) != len(names):
        raise HierarchyError(f"need one name per fit: {len(fits)} fits, {len(names)} names")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    spatial = {}
    for name, f in zip(names, fits, strict=True):
        idata = load_fit(f) if isinstance(f, (str, os.PathLike)) else f
        spatial[name] = estimands.spatial_share(idata) is not None
        for est, at, draws in _headline_draws(idata):
            s = estimands.interval(draws, prob=prob)
            rows.setdefault((est, at), {}).update(
                {f"{name} {k}": float(s[k]) for k in ("mean", "lower", "upper")})
    frame = pd.DataFrame([{"estimand": e, "at": a, "prob": prob, **v} for (e, a), v in rows.items()])
    cols = ["estimand", "at", "prob", *(f"{n} {k}" for n in names for k in ("mean", "lower", "upper"))]
    frame = frame.reindex(columns=cols)
    frame.attrs["spatial"] = spatial
    return frame


def shown_headlines(table: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side table with each model's estimate as text: ``1.48 (1.38-1.59)``."""
    names = [c[:-5] for c in table.columns if c.endswith(" mean")]
    out = table[["estimand", "at"]].copy()
    for n in names:
        out[n] = [_estimate(r, n) for _, r in table.iterrows()]
    return out


def _estimate(row: pd.Series, name: str) -> str:
    if pd.isna(row[f"{name} mean"]):
        return "-"
    return f"{row[f'{name} mean']:.2f} ({row[f'{name} lower']:.2f}-{row[f'{name} upper']:.2f})"


def side_by_side_sentence(table: pd.DataFrame, spatial: dict[str, bool] | None = None) -> list[str]:
    """Plain sentences on what changed between the fits of :func:`headline_side_by_side`.

    With one spatial and one non-spatial fit, per headline: "With the spatial term the gradient at
    mean LA deprivation is 1.48 (1.38-1.59) against 1.62 (1.55-1.70) without; its interval is 40%
    wider.", then a sentence on spatial confounding. Otherwise each headline is listed for every
    model (and the confounding sentence follows when any fit is spatial).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`headline_side_by_side`.
    spatial : dict, optional
        Model name -> whether the fit is spatial (default ``table.attrs["spatial"]``).

    Returns
    -------
    list of str
    """
    spatial = dict(table.attrs.get("spatial", {}) if spatial is None else spatial)
    names = [c[:-5] for c in table.columns if c.endswith(" mean")]
    with_, without = [n for n in names if spatial.get(n)], [n for n in names if not spatial.get(n)]
    pair = (with_[0], without[0]) if len(with_) == 1 and len(without) == 1 else None
    out = []
    for _, r in table[table["at"].isin(list(HEADLINE_WORDS))].iterrows():
        what = HEADLINE_WORDS[r["at"]]
        if pair is None:
            out.append(f"{what[0].upper()}{what[1:]} is " +
                       "; ".join(f"{_estimate(r, n)} under {n}" for n in names) + ".")
            continue
        s, p = pair
        if pd.isna(r[f"{s} mean"]) or pd.isna(r[f"{p} mean"]):
            continue
        wide = (r[f"{s} upper"] - r[f"{s} lower"]) / (r[f"{p} upper"] - r[f"{p} lower"]) - 1
        change = (f"{abs(wide):.0%} {'wider' if wide > 0 else 'narrower'}" if abs(wide) >= 0.005
                  else "about as wide")
        out.append(f"With the spatial term ({s}) {what} is {_estimate(r, s)} against {_estimate(r, p)} "
                   f"without ({p}); its interval is {change}.")
    if with_:
        out.append(SPATIAL_CONFOUNDING)
    return out

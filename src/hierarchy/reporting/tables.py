"""The tables of a report: hyperparameter summary, estimands, LA, subgroup, moderator and year tables.

Every interval is at the report's probability (``prob``). Observed counts go through the one
suppression of :mod:`hierarchy.reporting.suppression` before any table holding them is returned.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.likelihood.model import HYPERPARAMETERS
from hierarchy.reporting import suppression
from hierarchy.results import estimands
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import load_fit

ALL_LAS = "any LA (no LA deprivation term)"
"""``la_level`` of the headline gradient of a model without LA deprivation (one level only)."""

def hyperparameters(idata) -> xr.Dataset:
    """Scalar hyperparameters of a fit, one variable per component.

    Vector hyperparameters are split (``la_sd[intercept]``, ``la_sd[gradient]``); of the LA
    correlation matrix only the off-diagonal ``la_corr[intercept,gradient]`` is kept. Per-LA
    arrays (``la_coef``, ``la_raw``) and latent draws are left out.

    Returns
    -------
    xarray.Dataset
        Variables with dims ``chain, draw`` in :data:`hierarchy.likelihood.model.HYPERPARAMETERS` order.
    """
    post = idata.posterior
    out: dict[str, xr.DataArray] = {}
    for name in (v for v in HYPERPARAMETERS if v in post):
        da = post[name]
        if name == "la_corr":
            row, col = da.dims[-2:]
            labels = [str(c) for c in da[row].values]
            for i, j in zip(*np.triu_indices(len(labels), 1), strict=True):
                out[f"la_corr[{labels[i]},{labels[j]}]"] = da.isel({row: i, col: j}, drop=True)
            continue
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            out[name] = da
            continue
        for label in da[extra[0]].values:
            out[f"{name}[{label}]"] = da.sel({extra[0]: label}, drop=True)
    return xr.Dataset(out)


def arviz_summary(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """``arviz.summary`` of :func:`hyperparameters` (HDI at ``prob``), parameter as a column."""
    import arviz as az

    table = az.summary(hyperparameters(idata), hdi_prob=prob, round_to="none")
    return table.rename_axis("parameter").reset_index()


def with_la_level(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimand table with an ``la_level`` column (:data:`ALL_LAS` for models without one).

    Models without an LA deprivation term (``gradient_poisson``, ``gradient_nb``) have one
    typical LA, so their estimand tables have no ``la_level``.
    """
    if "la_level" in frame:
        return frame
    out = frame.copy()
    out.insert(1, "la_level", np.where(out["estimand"] == "gradient_score", ALL_LAS, ""))
    return out


def at_mean(frame: pd.DataFrame) -> pd.Series:
    """Rows of the headline gradient per 10 points of the typical LA at mean LA deprivation."""
    return ((frame["estimand"] == "gradient_score") & frame["la_level"].isin(["mean", ALL_LAS])
            & (frame["scale"] == estimands.PER_10))


def _truth_stage(truth: dict[str, Any] | None, outcome: str) -> dict[str, Any] | None:
    if not truth:
        return None
    return (truth.get("stages") or {}).get(outcome)


def _with_truth(table: pd.DataFrame, values: pd.Series | np.ndarray) -> pd.DataFrame:
    out = table.assign(truth=np.asarray(values, dtype=float))
    out["covered"] = [None if not np.isfinite(t) else bool(lo <= t <= hi)
                      for t, lo, hi in zip(out["truth"], out["lower"], out["upper"], strict=True)]
    return out


def estimand_tables(idata, *, data: Any = None, prob: float = 0.9, threshold: int = 10,
                    rounding: int = 5, truth: dict[str, Any] | None = None, n_draws: int = 200,
                    rules: dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, disclosure-controlled, keyed by CSV name (without ``.csv``).

    Parameters
    ----------
    idata : arviz.InferenceData
    data : str, os.PathLike or pandas.DataFrame, optional
        The fitted table, for observed columns when the fit carries no observed data.
    prob : float
        Interval probability.
    threshold, rounding : int
        Disclosure rules, combined with the environment's output-checking rules
        (:func:`hierarchy.reporting.suppression.rules`) unless ``rules`` is given.
    truth : dict, optional
        Simulator truth (:func:`hierarchy.simulate.simulate`), shown beside the estimates.
    n_draws : int
        Posterior draws used for posterior predictive tables.
    rules : dict, optional
        The one set of suppression rules (:func:`hierarchy.reporting.suppression.rules`).

    Returns
    -------
    dict of pandas.DataFrame
        ``summary``, ``estimands``, ``la_gradients``, ``inverse_intervention``, ``rate_curves``,
        ``deciles``, ``count_distribution`` and, with observed data, ``la_deciles``.
    """
    tables, _records = tables_and_checks(idata, data=data, prob=prob, truth=truth, n_draws=n_draws,
                                         rules=rules or suppression.rules(threshold, rounding))
    return tables


def tables_and_checks(idata, *, data: Any, prob: float, truth: dict[str, Any] | None, n_draws: int,
                      rules: dict[str, Any]) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """:func:`estimand_tables` and the output-checking records of its observed tables.

    The observed columns are computed raw in memory only and replaced by the one suppression
    (:func:`hierarchy.reporting.suppression.suppress_observed`) before the tables are returned.
    """
    spec = as_fit(idata).spec
    # the headline of a stratified fit is its reference stratum's: the pooled truth does not apply
    stage = None if spec.strata else _truth_stage(truth, spec.outcome)
    tables = {"summary": arviz_summary(idata, prob=prob), "estimands": _estimands(idata, prob, stage)}
    la = estimands.la_gradients(idata)
    if la is not None:
        la_tab = estimands.summarise(la, prob=prob)
        if truth and stage is not None and truth.get("las"):
            by_la = {str(r["la"]): (r.get(spec.outcome) or {}).get("gradient") for r in truth["las"]}
            la_tab = _with_truth(la_tab, [by_la.get(str(c), np.nan) for c in la_tab["la"]])
        tables["la_gradients"] = la_tab
    tables["inverse_intervention"] = estimands.summarise(estimands.inverse_intervention(idata), prob=prob)
    tables["rate_curves"] = estimands.summarise(estimands.typical_rates(idata), prob=prob)
    if not estimands.has_row_data(idata):  # a count used as exposure, not in the fit file, and no data given
        return tables, []
    yrep = estimands.posterior_predictive(idata, n_draws=n_draws)
    observed = estimands.observed_counts(idata, data)
    raw = {"prob": prob, "threshold": 0, "rounding": 1}  # replaced by the one suppression below
    deciles = estimands.decile_table(idata, yrep, observed, **raw)
    expected = ((truth or {}).get("deciles") or {}).get(spec.outcome, {}).get("expected")
    if expected is not None and len(expected) == len(deciles):
        deciles["truth_expected_rate"] = expected
    tables["deciles"] = deciles
    tables["count_distribution"] = estimands.count_distribution(yrep, observed, **raw)
    if observed is None:
        return tables, []
    tables["la_deciles"] = estimands.la_decile_table(idata, observed, threshold=0, rounding=1)
    return tables, suppression.suppress_observed(idata, tables, observed, rules)


def _estimands(idata, prob: float, stage: dict[str, Any] | None) -> pd.DataFrame:
    est = with_la_level(estimands.estimands_table(idata, prob=prob))
    if stage is None:
        return est
    sd = estimands.deprivation_sd(idata)
    power = np.where(est["scale"] == estimands.PER_10, 1.0, sd / estimands.TEN_POINTS)
    base = [stage.get(estimands.TRUTH_KEYS.get(str(k), ""), np.nan) if e == "gradient_score" else np.nan
            for e, k in zip(est["estimand"], est["la_level"], strict=True)]
    return _with_truth(est, np.asarray(base, dtype=float) ** power)


def subgroup_tables(fit: Any, *, prob: float = 0.9, truth: dict[str, Any] | None = None
                    ) -> dict[str, pd.DataFrame]:
    """Gradient scores by stage and stratum, and the stage escalation ratios (empty for fits
    with neither stages nor strata). With ``truth``, the simulator's values sit beside them."""
    full = load_fit(fit) if isinstance(fit, str | os.PathLike) else fit
    sub = estimands.subgroup_gradients(full)
    if sub is None:
        return {}
    spec = as_fit(full).spec
    table = estimands.summarise(sub, prob=prob)
    if truth:
        def true(row: pd.Series) -> float:
            stage = truth["stages"].get(str(row.get("stage", spec.stages[0])), {})
            if "stratum" in row and spec.strata:
                levels = str(row["stratum"]).split("/")
                key = "/".join(f"{c}={v}" for c, v in zip(spec.strata, levels, strict=True))
                return (stage.get("stratum_gradient_at_mean") or {}).get(key, np.nan)
            return stage.get("gradient_at_mean", np.nan)

        table = _with_truth(table, table.apply(true, axis=1).to_numpy(dtype=float))
    out = {"subgroup_gradients": table}
    esc = estimands.escalation(full)
    if esc is not None:
        steeper = (esc > 1).mean(("chain", "draw")).to_pandas().rename("p_steeper")
        out["escalation"] = estimands.summarise(esc, prob=prob).merge(steeper.reset_index(), on="step")
    return out


def year_tables(idata, *, prob: float) -> dict[str, pd.DataFrame]:
    """``year_gradients`` (each year's gradient score, its ratio to the first year's and P(steeper))
    and, with numeric years, ``year_trend`` (change per year), for fits with a gradient per year."""
    from hierarchy.results import years

    if not years.has_year_gradient(idata):
        return {}
    out = {"year_gradients": years.year_gradient_table(idata, prob=prob)}
    try:
        out["year_trend"] = years.trend_table(idata, prob=prob)
    except HierarchyError:  # years that are not numbers, or one year: no trend
        pass
    return out


def moderator_table(fit: Any, *, prob: float) -> dict[str, pd.DataFrame]:
    """``moderator_contrasts`` (:func:`hierarchy.results.estimands.moderator_contrasts`): the ratio of
    gradient scores for one unit more of each ``w:col`` moderator (0/1 columns: at 1 against 0; numeric
    ones per unit, "per year"), with its ``prob`` interval and P(ratio > 1); empty without such a term."""
    table = estimands.moderator_contrasts(fit, prob=prob)
    return {"moderator_contrasts": table} if table is not None and len(table) else {}

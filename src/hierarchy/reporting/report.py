"""Summaries and reports of a saved fit: ArviZ summary, estimands, diagnostics, figures.

:func:`summary_text` prints the hyperparameter summary, the headline estimands and the
diagnostics verdict in one of four formats; :func:`write_report` writes a folder with
``index.html`` (self-contained: figures embedded as base64 PNG), ``report.md`` (figures beside
it in ``figures/``) and CSV tables. Every observed count, and every rate computed from one, goes
through :mod:`hierarchy.disclosure` before it reaches a table or a figure.

:func:`write_pages` writes the simpler pages of ``hierarchy compare-priors`` and
``compare-models``: sections of paragraphs, tables and figures as ``index.html`` and ``index.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy import disclosure, published
from hierarchy.errors import HierarchyError
from hierarchy.inference.diagnostics import ESS_MIN, RHAT_MAX
from hierarchy.likelihood.model import HYPERPARAMETERS
from hierarchy.reporting import figures, page
from hierarchy.results import estimands
from hierarchy.results.fitfile import checked_diagnostics, fit_spec, load_fit, provenance

FORMATS = ("table", "csv", "markdown", "json")
ALL_LAS = "any LA (no LA deprivation term)"
"""``la_level`` of the headline gradient of a model without LA deprivation (one level only)."""
DISCLOSED = {"observed_count": "{:,.0f}", "observed_neighbourhoods": "{:,.0f}",
             "observed_rate": "{:,.1f}"}
"""Disclosure-controlled columns and their text format in Markdown/HTML."""
DISCLOSED_CSV = {"observed_count": "{:.0f}", "observed_neighbourhoods": "{:.0f}",
                 "observed_rate": "{:.4f}"}


# ---------------------------------------------------------------------------- summaries


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


def _at_mean(frame: pd.DataFrame) -> pd.Series:
    """Rows of the headline gradient per 10 points of the typical LA at mean LA deprivation."""
    return ((frame["estimand"] == "gradient_score") & frame["la_level"].isin(["mean", ALL_LAS])
            & (frame["scale"] == estimands.PER_10))


def verdict(diag: dict[str, Any]) -> str:
    """One-line plain verdict of the stored diagnostics."""
    if diag.get("status") == "ok":
        return (f"OK: convergence checks passed (R-hat <= {RHAT_MAX}, bulk and tail ESS >= "
                f"{ESS_MIN}, no divergences, no saturated trees, E-BFMI fine).")
    reasons = "; ".join(diag.get("reasons", [])) or "unknown"
    return f"WARN: do not report these estimates until this is fixed: {reasons}."


DIAGNOSTIC_ROWS = {"rhat_max": ("max R-hat", "rhat_worst"), "ess_bulk_min": ("min bulk ESS", "ess_bulk_worst"),
                   "ess_tail_min": ("min tail ESS", "ess_tail_worst"), "divergences": ("divergences", None),
                   "tree_depth_saturation": ("share of draws at max tree depth", None),
                   "bfmi_min": ("min E-BFMI", None)}


def _diagnostic_rows(diag: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("verdict", verdict(diag))]
    for key, (label, worst) in DIAGNOSTIC_ROWS.items():
        if diag.get(key) is None:
            continue
        value = diag[key]
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        rows.append((label, f"{text} ({diag[worst]})" if worst and diag.get(worst) else text))
    return rows


def _load_checked(fit: Any) -> tuple[Any, dict[str, Any], Any]:
    """The fit (a stage view of a stacked fit), its diagnostics rechecked against the draws, and
    the whole fit.

    A fit file is loaded with :func:`hierarchy.results.fitfile.load_fit` (seal checked) and its stored
    diagnostics recomputed from the draws (:func:`hierarchy.results.fitfile.checked_diagnostics`), so an
    edited verdict is refused even if the file was resealed.
    """
    full = load_fit(fit) if isinstance(fit, str | os.PathLike) else fit
    prov = provenance(full)
    diag = prov["diagnostics"] if "view_of_stage" in prov else checked_diagnostics(full)
    return estimands.as_idata(full), diag, full


def summary_text(fit: Any, *, fmt: str = "table", prob: float = 0.9) -> str:
    """Hyperparameter summary, headline estimands and diagnostics verdict of a fit, as text.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit file or a loaded fit.
    fmt : {"table", "csv", "markdown", "json"}
        Plain text, one tidy CSV (``kind`` column: parameter / estimand / diagnostics),
        Markdown, or JSON.
    prob : float
        Interval probability (HDI in the ArviZ summary, equal-tailed for estimands).

    Returns
    -------
    str
    """
    if fmt not in FORMATS:
        raise HierarchyError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 0 < prob < 1:
        raise HierarchyError(f"--prob must be between 0 and 1 (e.g. 0.9), got {prob}")
    idata, diag, _ = _load_checked(fit)
    prov = provenance(idata)
    summ = arviz_summary(idata, prob=prob)
    head = with_la_level(estimands.headline_table(idata, prob=prob))
    title = f"{prov['model_spec']['name']} / {prov['priors']['name']} ({prov['created']})"
    if fmt == "json":
        return json.dumps({"fit": title, "model": prov["model_spec"]["name"],
                           "priors": prov["priors"]["name"], "prob": prob,
                           "diagnostics": {"verdict": verdict(diag), **diag},
                           "parameters": _records(summ), "headline": _records(head)},
                          indent=1, default=str)
    if fmt == "csv":
        return _summary_csv(summ, head, diag)
    if fmt == "markdown":
        return "\n\n".join([f"# {title}", "## Diagnostics", verdict(diag),
                            f"## Hyperparameters (ArviZ summary, {prob:.0%} HDI)",
                            markdown_table(_display(summ)),
                            f"## Headline estimands ({prob:.0%} equal-tailed intervals)",
                            markdown_table(_display(head))]) + "\n"
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        return "\n\n".join([title, f"diagnostics: {verdict(diag)}",
                            f"hyperparameters (ArviZ summary, {prob:.0%} HDI):",
                            _display(summ).to_string(index=False),
                            f"headline estimands ({prob:.0%} equal-tailed intervals):",
                            _display(head).to_string(index=False)])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _summary_csv(summ: pd.DataFrame, head: pd.DataFrame, diag: dict[str, Any]) -> str:
    params = summ.rename(columns={"parameter": "name"}).assign(kind="parameter")
    est = head.assign(kind="estimand", name=head["estimand"] + "[" + head["la_level"] + "]")
    est = est.drop(columns=["estimand", "la_level"])
    diag_row = pd.DataFrame({"kind": ["diagnostics"], "name": ["verdict"], "note": [verdict(diag)]})
    frame = pd.concat([params, est, diag_row], ignore_index=True)
    first = ["kind", "name"]
    return frame[first + [c for c in frame if c not in first]].to_csv(index=False)


# ---------------------------------------------------------------------------- text tables


def _num(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if not isinstance(v, (float, np.floating)):
        return "" if v is None else str(v)
    if not np.isfinite(v):
        return ""
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}" if a >= 1 else f"{v:.3g}"


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Text version of a table: disclosed columns marked, other numbers rounded for reading."""
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED.items() if c in frame})
    return marked.astype(object).map(_num)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame of strings."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in frame.itertuples(index=False)]
    head = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def _csv(frame: pd.DataFrame, path: Path) -> None:
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED_CSV.items() if c in frame})
    marked.to_csv(path, index=False)


# ---------------------------------------------------------------------------- tables


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
                    rounding: int = 5, truth: dict[str, Any] | None = None,
                    n_draws: int = 200) -> dict[str, pd.DataFrame]:
    """Every table of the report, disclosure-controlled, keyed by CSV name (without ``.csv``).

    Parameters
    ----------
    idata : arviz.InferenceData
    data : str, os.PathLike or pandas.DataFrame, optional
        The fitted table, for observed columns when the fit carries no observed data.
    prob : float
        Interval probability.
    threshold, rounding : int
        Disclosure rules.
    truth : dict, optional
        Simulator truth (:func:`hierarchy.simulate.simulate`), shown beside the estimates.
    n_draws : int
        Posterior draws used for posterior predictive tables.

    Returns
    -------
    dict of pandas.DataFrame
        ``summary``, ``estimands``, ``la_gradients``, ``inverse_intervention``, ``rate_curves``,
        ``deciles``, ``count_distribution`` and, with observed data, ``la_deciles``.
    """
    disclosure.check_rules(threshold, rounding)
    spec, _ = fit_spec(idata)
    # the headline of a stratified fit is its reference stratum's: the pooled truth does not apply
    stage = None if spec.strata else _truth_stage(truth, spec.outcome)
    est = with_la_level(estimands.estimands_table(idata, prob=prob))
    if stage is not None:
        sd = estimands.deprivation_sd(idata)
        power = np.where(est["scale"] == estimands.PER_10, 1.0, sd / estimands.TEN_POINTS)
        base = [stage.get(estimands.TRUTH_KEYS.get(str(k), ""), np.nan) if e == "gradient_score" else np.nan
                for e, k in zip(est["estimand"], est["la_level"], strict=True)]
        est = _with_truth(est, np.asarray(base, dtype=float) ** power)
    tables = {"summary": arviz_summary(idata, prob=prob), "estimands": est}
    la = estimands.la_gradients(idata)
    if la is not None:
        la_tab = estimands.summarise(la, prob=prob)
        if truth and stage is not None and truth.get("las"):
            by_la = {str(r["la"]): (r.get(spec.outcome) or {}).get("gradient") for r in truth["las"]}
            la_tab = _with_truth(la_tab, [by_la.get(str(c), np.nan) for c in la_tab["la"]])
        tables["la_gradients"] = la_tab
    tables["inverse_intervention"] = estimands.summarise(estimands.inverse_intervention(idata), prob=prob)
    tables["rate_curves"] = estimands.summarise(estimands.typical_rates(idata), prob=prob)
    yrep = estimands.posterior_predictive(idata, n_draws=n_draws)
    observed = estimands.observed_counts(idata, data)
    kw = {"prob": prob, "threshold": threshold, "rounding": rounding}
    deciles = estimands.decile_table(idata, yrep, observed, **kw)
    expected = ((truth or {}).get("deciles") or {}).get(spec.outcome, {}).get("expected")
    if expected is not None and len(expected) == len(deciles):
        deciles["truth_expected_rate"] = expected
    tables["deciles"] = deciles
    tables["count_distribution"] = estimands.count_distribution(yrep, observed, **kw)
    if observed is not None:
        tables["la_deciles"] = estimands.la_decile_table(idata, observed, threshold=threshold,
                                                         rounding=rounding)
        protect_margins(tables, rounding=rounding, n_rows=len(observed))
    return tables


def protect_margins(tables: dict[str, pd.DataFrame], *, rounding: int, n_rows: int) -> None:
    """Secondary suppression (in place) of the observed tables whose totals are published.

    LA x decile cells sum to the LA's ``all`` row and to the national decile's count in
    ``deciles``; the count bins of ``count_distribution`` sum to the number of rows (public).
    Cells are added to the suppressed ones (:func:`hierarchy.disclosure.secondary_suppression`)
    until none can be derived from the others and the totals.
    """
    la, dec = tables.get("la_deciles"), tables.get("deciles")
    if la is not None and dec is not None and "observed_count" in dec:
        n = len(la)
        values = np.concatenate([la["observed_count"].to_numpy(float), dec["observed_count"].to_numpy(float)])
        lines = []
        for _, part in la.groupby("la", sort=False):
            total = part.index[part["decile"] == "all"]
            lines.append((int(total[0]), [int(i) for i in part.index[part["decile"] != "all"]]))
        for j, d in enumerate(dec["decile"].astype(str)):
            lines.append((n + j, [int(i) for i in la.index[la["decile"] == d]]))
        totals = [t for t, _ in lines]
        mask = disclosure.secondary_suppression(values, lines, rounding=rounding, totals=totals)
        for frame, m in ((la, mask[:n]), (dec, mask[n:])):
            frame.loc[m, ["observed_count", "observed_rate"]] = np.nan
    dist = tables.get("count_distribution")
    if dist is not None and "observed_neighbourhoods" in dist:
        values = np.append(dist["observed_neighbourhoods"].to_numpy(float), float(n_rows))
        k = len(dist)
        mask = disclosure.secondary_suppression(values, [(k, list(range(k)))], rounding=rounding,
                                                totals=[k], public=[k])
        dist.loc[mask[:k], "observed_neighbourhoods"] = np.nan


def subgroup_tables(fit: Any, *, prob: float = 0.9, truth: dict[str, Any] | None = None
                    ) -> dict[str, pd.DataFrame]:
    """Gradient scores by stage and stratum, and the stage escalation ratios (empty for fits
    with neither stages nor strata). With ``truth``, the simulator's values sit beside them."""
    full = load_fit(fit) if isinstance(fit, str | os.PathLike) else fit
    sub = estimands.subgroup_gradients(full)
    if sub is None:
        return {}
    spec, _ = fit_spec(full)
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


def report_figures(idata, tables: dict[str, pd.DataFrame], *, year: int | None = None
                   ) -> dict[str, tuple[str, Any, Any]]:
    """Figures of the report, in reading order: ``{name: (caption, Figure, plotted data)}``.

    Each caption is one line saying what to read from the figure. The findings figures come
    first (gradient against LA deprivation, LA gradients, deciles, inverse-intervention
    contrast), then subgroups and the checks. Published gradient scores are drawn only where
    they describe the fit's estimand in the data's census ``year`` (:func:`published_for`).
    """
    spec, _ = fit_spec(idata)
    prov = provenance(idata)
    head = tables["estimands"]
    at_mean = head[_at_mean(head)]["mean"]
    prob = float(head["prob"].iloc[0])
    out: dict[str, tuple[str, Any, Any]] = {}
    curve = estimands.gradient_curve(idata)
    if curve is not None:
        pub = published_for(prov["model_spec"]["outcome"], year=year, stratified=bool(spec.strata),
                            la_levels=head.loc[head["estimand"] == "gradient_score", "la_level"])
        curve_table = estimands.summarise(curve, prob=prob)
        beyond = (" Dashed: beyond the fitted LAs' deprivation range (extrapolated)."
                  if curve_table.get("extrapolated", pd.Series(False)).any() else "")
        points = (f"; diamonds: {pub.label}" if pub.gradients else "")
        out["gradient_curve"] = (
            "Read the slope: how the neighbourhood gradient changes with LA deprivation (line: typical LA, "
            f"band: {prob:.0%} interval; dots: each LA{points}; log scale)." + beyond
            + ("" if pub.gradients else f" {pub.note}"),
            *figures.plot_gradient_curve(curve_table, tables.get("la_gradients"),
                                         x_mean=prov["design"]["X_mean"], published=pub.gradients,
                                         published_label=pub.label))
    if "la_gradients" in tables:
        out["la_gradients"] = (f"Read the spread: each LA's gradient score with its {prob:.0%} interval, sorted, "
                               "coloured by LA deprivation (log scale); dashed: typical LA at mean deprivation.",
                               *figures.plot_la_gradients(tables["la_gradients"],
                                                          typical=float(at_mean.iloc[0])))
    out["deciles"] = ("Read the fit: observed rates (diamonds, small cells suppressed) should sit within the "
                      "predicted intervals in every national deprivation decile.",
                      *figures.plot_deciles(tables["deciles"], outcome=spec.outcome))
    out["inverse_intervention"] = ("Read above 1: for the same neighbourhood deprivation, how much higher the "
                                   "rate is in an LA 10 points less deprived than in one 10 points more (log "
                                   "scale; dashed: neighbourhood deprivation not seen in LAs of both levels).",
                                   *figures.plot_contrast(tables["inverse_intervention"]))
    if "subgroup_gradients" in tables:
        out["subgroups"] = ("Read across rows: gradient scores of a typical LA at mean LA deprivation by "
                            "stage and stratum; crosses mark the truth where known.",
                            *figures.plot_subgroups(tables["subgroup_gradients"]))
    if "year_gradients" in tables:
        out["year_gradients"] = ("Read the slope across years: the gradient score of a typical LA in each year, "
                                 "with intervals, at three levels of LA deprivation (log scale).",
                                 *figures.plot_year_gradients(tables["year_gradients"]))
    out["rate_curves"] = ("Read the gap between lines: predicted rates by neighbourhood deprivation in "
                          "typical LAs at mean LA deprivation and 10 points less / more (dashed: beyond the "
                          "neighbourhood deprivation seen in LAs of that level).",
                          *figures.plot_rate_curves(tables["rate_curves"], outcome=spec.outcome))
    if "la_deciles" in tables:
        out["la_deciles"] = ("Read the fan: observed rates by decile in each LA (suppressed cells left out).",
                             *figures.plot_la_deciles(tables["la_deciles"], outcome=spec.outcome))
    out["count_distribution"] = ("Check: observed counts per neighbourhood (bars, bins below the threshold "
                                 "not shown) against the posterior predictive distribution.",
                                 *figures.plot_count_ppc(tables["count_distribution"]))
    out["rank"] = ("Check: rank plots of the hyperparameters; flat histograms mean the chains agree.",
                   *figures.plot_rank(hyperparameters(idata)))
    return out


# ---------------------------------------------------------------------------- provenance


def provenance_rows(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows describing where a fit came from."""
    s = prov.get("sampler", {})
    settings = ", ".join(f"{k}={v}" for k, v in s.items() if k != "sampler")
    design = prov.get("design", {})
    return [
        ("model", f"{prov['model_spec']['name']} (hash {prov['model_hash']}): "
                  f"{prov['model_spec'].get('description', '')}"),
        ("family / outcome", f"{prov['model_spec']['family']} / {prov['model_spec']['outcome']}"),
        ("priors", f"{prov['priors']['name']} (hash {prov['priors_hash']})"),
        ("data", f"hash {prov['data_hash']}, {design.get('n_rows', '?')} rows in "
                 f"{design.get('n_la', '?')} LAs, source {prov.get('data_source') or '?'}"),
        ("mean LA deprivation (X_mean)", f"{design.get('X_mean', float('nan')):.4f}"),
        ("sampler", f"{s.get('sampler', '?')}: {settings}"),
        ("seed", str(prov.get("seed"))),
        ("timings (s)", ", ".join(f"{k} {v:.1f}" for k, v in prov.get("timings", {}).items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())),
        ("created", str(prov.get("created"))),
        ("config hash", str(prov.get("config_hash"))),
        ("observed data stored in fit", str(prov.get("include_data"))),
    ]


def _prior_rows(priors: dict[str, Any]) -> pd.DataFrame:
    rows = [(k, v["dist"], ", ".join(f"{p}={x}" for p, x in v.items() if p != "dist"))
            for k, v in priors.items() if isinstance(v, dict) and "dist" in v]
    return pd.DataFrame(rows, columns=["parameter group", "distribution", "parameters"])


# ---------------------------------------------------------------------------- writers


def read_data(fit: Any, data: str | os.PathLike, *, columns: Any = None) -> tuple[pd.DataFrame, str]:
    """The table a fit was made from, in canonical column names, and a note of the column map used.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        The fit (for its model's columns and the column map it recorded).
    data : str or os.PathLike
        The table file (CSV or Parquet).
    columns : str, os.PathLike or ColumnMap, optional
        Column map of the file (``hierarchy fit --columns``). Default: the map the fit recorded,
        when the file does not already have every mapped column under its canonical name.

    Returns
    -------
    (pandas.DataFrame, str)
        The validated table (``attrs``: ``source``, the file; ``column_note``, the note) and which
        map was used.

    Raises
    ------
    DataValidationError
        A mapped or required column is not in the file (the message names it and the map).
    """
    from hierarchy.data import table as data_mod

    idata = load_fit(fit) if isinstance(fit, str | os.PathLike) else fit
    spec, _ = fit_spec(idata)
    recorded = provenance(idata).get("column_map") or {}
    if columns is not None:
        cmap = columns if isinstance(columns, data_mod.ColumnMap) else data_mod.load_column_map(columns)
        note = f"column map {cmap.path}"
    elif recorded and not set(recorded) <= set(map(str, data_mod.read_table(data).columns)):
        where = f"the column map recorded in {fit}" if isinstance(fit, str | os.PathLike) else \
            "the column map recorded in the fit"
        cmap = data_mod.ColumnMap(columns=dict(recorded), path=Path(where))
        note = f"{where} ({', '.join(f'{u} -> {c}' for c, u in recorded.items())})"
    else:
        cmap, note = None, "canonical column names (no column map)"
    table = data_mod.load(data, columns=cmap, **spec.data_columns)
    table.attrs["column_note"] = note
    return table, note


def write_report(fit: Any, out: str | os.PathLike, *, data: Any = None, columns: Any = None,
                 year: int | None = None, threshold: int = 10, rounding: int = 5, prob: float = 0.9,
                 truth: dict[str, Any] | None = None, n_draws: int = 200,
                 allow_below_default_rules: bool = False) -> Path:
    """Write an HTML, Markdown and CSV report of a fit into folder ``out``.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit file or a loaded fit.
    out : str or os.PathLike
        Folder (created) for ``index.html``, ``report.md``, ``figures/*.png`` and the CSV tables.
    data : str, os.PathLike or pandas.DataFrame, optional
        The fitted table, for observed-vs-predicted panels when the fit has no observed data, and
        for the census year of the published figures shown (:func:`hierarchy.published.data_year`).
    columns : str, os.PathLike or ColumnMap, optional
        Column map of ``data``; default: the one the fit recorded (:func:`read_data`).
    year : int, optional
        Census year of the data (2019 for 2018-19); default: the data's, else the one the fit
        recorded. Published figures are
        shown only for the fit's outcome in this year; with no year known, none is.
    threshold, rounding : int
        Disclosure rules (:mod:`hierarchy.disclosure`), written into the report.
    prob : float
        Interval probability.
    truth : dict, optional
        Simulator truth; shown beside the estimates.
    n_draws : int
        Posterior draws for posterior predictive tables.
    allow_below_default_rules : bool
        Explicit choice needed for ``threshold`` < 10 or ``rounding`` < 5; the report then says
        at its top that it is not for publication.

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.

    Raises
    ------
    HierarchyError
        Rules below the defaults without ``allow_below_default_rules``; an edited fit file.
    """
    disclosure.require_default_rules(threshold, rounding, allow=allow_below_default_rules)
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be between 0 and 1 (e.g. 0.9), got {prob}")
    idata, diag, full = _load_checked(fit)
    data_note = None
    if data is not None and not isinstance(data, pd.DataFrame):
        source = data
        data, used = read_data(full, data, columns=columns)
        data_note = f"{source}, columns read with {used}"
    elif data is not None:
        data_note = f"{data.attrs.get('source', 'a table')}" + (
            f", columns read with {data.attrs['column_note']}" if "column_note" in data.attrs else "")
    if year is None and data is not None:
        year = published.data_year(data.attrs.get("source"), data)
    if year is None:  # the census year the fit recorded from its data
        year = json.loads(idata.posterior.attrs["hierarchy"]).get("data_year")
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tables = estimand_tables(idata, data=data, prob=prob, threshold=threshold, rounding=rounding,
                             truth=truth, n_draws=n_draws)
    tables.update(subgroup_tables(full, prob=prob, truth=truth))
    contrasts = estimands.moderator_contrasts(full)
    if contrasts is not None:
        tables["moderator_contrasts"] = contrasts
    tables.update(year_tables(full, prob=prob))
    warning = disclosure.below_default_warning(threshold, rounding)
    if warning:
        (out / "NOT_FOR_PUBLICATION.txt").write_text(warning + "\n", encoding="utf-8")
    for name, frame in tables.items():
        _csv(frame, out / f"{name}.csv")
    figs = report_figures(idata, tables, year=year)
    pngs = {name: (caption, figures.to_png(fig)) for name, (caption, fig, _data) in figs.items()}
    rendered = report_page(idata, tables, pngs, threshold=threshold, rounding=rounding, prob=prob, diag=diag,
                           year=year, data_note=data_note)
    index = page.write_page(rendered, out, md_name="report.md")
    return index


# ---------------------------------------------------------------------------- rounding


INTERVALS = (("mean", "lower", "upper"), ("predicted_mean", "predicted_lower", "predicted_upper"),
             ("mean", "hdi_5%", "hdi_95%"))
"""(centre, lower, upper) columns rounded to the precision their interval justifies."""


def decimals_for(width: float, *, most: int = 4) -> int:
    """Decimal places that show two significant digits of an interval's width (0 to ``most``).

    An interval 0.1 wide justifies two decimals (1.64, 1.59 to 1.69; not 1.6412); one 300 wide
    none (412).
    """
    if not np.isfinite(width) or width <= 0:
        return 2
    return int(np.clip(1 - np.floor(np.log10(width)), 0, most))


def _pct_decimals(width: float) -> int:
    """Decimals of a percentage in a sentence: whole numbers unless the interval is under 2 points."""
    return 0 if not np.isfinite(width) or width >= 2 else 1


def _fmt(v: Any, dec: int) -> str:
    if not isinstance(v, (float, np.floating, int, np.integer)) or isinstance(v, (bool, np.bool_)):
        return _num(v)
    return f"{v:,.{dec}f}" if np.isfinite(v) else ""


def rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """Text version of a table rounded for reading.

    Centre and interval columns (:data:`INTERVALS`; ``truth`` and ``published`` with them) get
    the decimals their row's interval width justifies (:func:`decimals_for`); SDs and MCSEs two
    significant digits; ESS whole numbers; R-hat three decimals; other numbers :func:`_num`.
    Disclosure-controlled columns are marked (:data:`DISCLOSED`) as before.
    """
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED.items() if c in frame})
    out = marked.astype(object).map(_num)
    for centre, lo, hi in INTERVALS:
        if not {centre, lo, hi} <= set(frame.columns):
            continue
        width = (frame[hi] - frame[lo]).to_numpy(float)
        dec = [decimals_for(w) for w in width]
        for col in (centre, lo, hi, "truth", "published", "truth_expected_rate"):
            if col in frame and col not in DISCLOSED:
                out[col] = [_fmt(v, d) for v, d in zip(frame[col], dec, strict=True)]
    for col in frame.columns:
        if col in ("sd", "mcse_mean", "mcse_sd", "predicted_sd") and pd.api.types.is_float_dtype(frame[col]):
            out[col] = [f"{v:.2g}" if np.isfinite(v) else "" for v in frame[col]]
        elif col.startswith("ess_") and pd.api.types.is_numeric_dtype(frame[col]):
            out[col] = [f"{v:,.0f}" if np.isfinite(v) else "" for v in frame[col]]
        elif col == "r_hat":
            out[col] = [f"{v:.3f}" if np.isfinite(v) else "" for v in frame[col]]
        elif col in ("prob", "p_steeper", "p_greater_than_1"):
            out[col] = [f"{v:.2f}" for v in frame[col]]
        elif col in ("la_deprivation", "x", "deprivation_min", "deprivation_max"):
            out[col] = [f"{100 * v:.1f}%" if np.isfinite(v) else "" for v in frame[col]]
    return out


def _short(frame: pd.DataFrame, *, keep: int = 12, order: str | None = None,
           always: int | None = None) -> pd.DataFrame:
    """At most ``keep`` rows of a long table: the extremes of ``order``, or evenly spaced rows
    (row ``always`` among them)."""
    if len(frame) <= keep:
        return frame
    if order is not None:
        s = frame.sort_values(order)
        return pd.concat([s.head(keep // 2), s.tail(keep - keep // 2)])
    idx = set(np.linspace(0, len(frame) - 1, keep - (always is not None)).round().astype(int))
    if always is not None:
        idx.add(always)
    return frame.iloc[sorted(idx)]


# ---------------------------------------------------------------------------- findings

STAGE_WORDS = {"referral": "referral", "assessment": "assessment", "s47": "section 47 enquiry",
               "cp_plan": "child protection plan", "looked_after": "looked-after"}
RISE = "a 10-point rise in the share of income-deprived people in the neighbourhood"


@dataclass(frozen=True)
class Published:
    """The published figures a report shows beside its estimates, and the sentence saying which (or why none).

    ``gradients``: typical-LA gradient scores (per 10 points) by LA level; ``la_range``: (low, high)
    of the LA gradient scores; ``label``: what and when, for legends; ``when``: the census year as
    the field writes it (``2018-19``); ``note``: the sentence the page prints.
    """

    gradients: dict[str, float]
    la_range: tuple[float, float] | None
    label: str
    note: str
    when: str = ""


def published_for(outcome: str | list, *, year: int | None, stratified: bool = False,
                  la_levels: Any = None) -> Published:
    """The published figures that describe a fit's headline estimands (:mod:`hierarchy.published`).

    A figure is shown only when its outcome (the fit's first stage), estimand, LA level, scale (per
    10 points) and census year all match; the year is the data's (:func:`hierarchy.published.data_year`).
    Nothing is shown for a stratified fit (its headline is the reference stratum's, the published
    figures describe all children) or when the year is unknown.

    Parameters
    ----------
    outcome : str or list
        The model's outcome (stages: the first is the headline).
    year : int or None
        Census year of the data (2019 for 2018-19).
    stratified : bool
        The fit has strata.
    la_levels : iterable of str, optional
        LA levels of the fit's headline gradient scores; published scores at other levels are left out.
    """
    stage = str(outcome[0] if isinstance(outcome, list) else outcome)
    if stratified:
        return Published({}, None, "", "No published figures are shown: the headline estimates are the reference "
                                       "stratum's, and the published figures describe all children.")
    grads = published.gradient_scores(outcome=stage, year=year)
    if la_levels is not None:
        keep = {str(v) for v in la_levels}
        grads = {k: v for k, v in grads.items() if k in keep}
    la_range = published.gradient_range(outcome=stage, year=year)
    if year is None or (not grads and la_range is None):
        note = published.note(outcome=stage, year=year)
        if year is not None and note.startswith("Published"):  # figures for that year, none for these estimands
            note = (f"No published figures are shown: those for {stage} in {published.season(year)} describe "
                    "estimands this fit does not have.")
        return Published({}, None, "", note)
    label = f"published {outcome_words(stage)} gradient scores, {published.season(year)}"
    return Published(grads, la_range, label, published.note(outcome=stage, year=year), published.season(year))


def _change(g: float, dec: int) -> str:
    c = 100 * (g - 1)
    return f"{abs(c):.{dec}f}% {'higher' if c >= 0 else 'lower'}"


def _pct_interval(mean: float, lo: float, hi: float, prob: float) -> str:
    """``62% higher (90% interval 60% to 65%)``, the words repeated when the interval spans 1."""
    dec = _pct_decimals(100 * (hi - lo))
    if (lo - 1) * (hi - 1) > 0 and (lo - 1) * (mean - 1) > 0:
        near, far = sorted((abs(100 * (lo - 1)), abs(100 * (hi - 1))))
        return f"{_change(mean, dec)} ({prob:.0%} interval {near:.{dec}f}% to {far:.{dec}f}%)"
    return f"{_change(mean, dec)} ({prob:.0%} interval {_change(lo, dec)} to {_change(hi, dec)})"


def _ratio_interval(mean: float, lo: float, hi: float, prob: float) -> str:
    dec = max(decimals_for(hi - lo), 2)
    return f"{mean:.{dec}f} ({prob:.0%} interval {lo:.{dec}f} to {hi:.{dec}f})"


def outcome_words(outcome: str | list) -> str:
    """The field's name of a stage's rate (``referral``, ``section 47 enquiry``...)."""
    stage = outcome[0] if isinstance(outcome, list) else outcome
    return STAGE_WORDS.get(str(stage), str(stage).replace("_", " "))


def findings(tables: dict[str, pd.DataFrame], *, outcome: str | list, prob: float,
             x_mean: float | None = None, stratified: bool = False, year: int | None = None
             ) -> list[page.Finding]:
    """The findings as short sentences in the field's words, each with its interval.

    Every number is the estimand table's, rounded (:func:`decimals_for`); the wording is
    associational ("is associated with"). Published figures appear only beside the estimate they
    describe, in the data's census year (:func:`published_for`).

    Parameters
    ----------
    tables : dict of pandas.DataFrame
        :func:`estimand_tables` (and :func:`subgroup_tables`) output.
    outcome : str or list
        The model's outcome (the first stage of stacked fits is the headline).
    prob : float
        Interval probability.
    x_mean : float, optional
        National mean neighbourhood deprivation, where the inverse-intervention contrast is read.
    stratified : bool
        The headline is a reference stratum's (no published comparison).
    year : int, optional
        Census year of the data, for the published figures (None: unknown, none shown).
    """
    rate = f"{outcome_words(outcome)} rate"
    est = tables["estimands"]
    head = est[(est["estimand"] == "gradient_score") & (est["scale"] == estimands.PER_10)]
    pub = published_for(outcome, year=year, stratified=stratified,
                        la_levels=head["la_level"] if "la_level" in head else None)
    out: list[page.Finding] = []
    where = {"mean": "a local authority of average deprivation", ALL_LAS: "a typical local authority",
             "10 points less": "a local authority 10 points less deprived",
             "10 points more": "a local authority 10 points more deprived"}
    for _, r in head.set_index("la_level").reindex(["mean", ALL_LAS, "10 points less", "10 points more"]
                                                   ).dropna(subset=["mean"]).iterrows():
        level = str(r.name)
        X = f" ({100 * r['la_deprivation']:.0f}% income-deprived)" if "la_deprivation" in r and \
            np.isfinite(r.get("la_deprivation", np.nan)) else ""
        shown = f"; published for {pub.when}: {_change(pub.gradients[level], 0)}" if level in pub.gradients else ""
        rise = RISE if not out else "the same rise"
        out.append(page.Finding(f"In {where[level]}{X}, {rise} is associated with a {rate} "
                                f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)}{shown}.",
                                "estimands"))
    inv = tables.get("inverse_intervention")
    if inv is not None and len(head) == 3 and len(inv):
        i = int(np.argmin(np.abs(inv["x"].to_numpy() - (x_mean if x_mean is not None else inv["x"].median()))))
        r = inv.iloc[i]
        above = inv[inv["lower"] > 1]
        span = (f"; the {prob:.0%} interval lies above no difference for {len(above)} of the "
                f"{len(inv)} neighbourhood deprivation levels shown ({100 * inv['x'].min():.0f}% to "
                f"{100 * inv['x'].max():.0f}%)")
        if "extrapolated" in inv:
            seen = inv.loc[~inv["extrapolated"].astype(bool), "x"]
            span += (f", of which the data have neighbourhoods in local authorities of both levels only from "
                     f"{100 * seen.min():.0f}% to {100 * seen.max():.0f}%" if len(seen) else
                     ", none of them seen in local authorities of both levels (the contrast is an extrapolation)")
        out.append(page.Finding(
            f"For neighbourhoods of the same deprivation ({100 * r['x']:.0f}% income-deprived), being in a "
            f"local authority 10 points less deprived rather than 10 points more deprived is associated "
            f"with a {rate} {_pct_interval(r['mean'], r['lower'], r['upper'], prob)}{span}.",
            "inverse-intervention"))
    la = tables.get("la_gradients")
    if la is not None and len(la):
        lo, hi = la["mean"].min(), la["mean"].max()
        n_above = int((la["lower"] > 1).sum())
        shown = (f" (published for {pub.when}: {pub.la_range[0]:.1f} to {pub.la_range[1]:.1f})"
                 if pub.la_range else "")
        out.append(page.Finding(
            f"Gradient scores (the {rate} multiplier for a 10-point rise) differ between local "
            f"authorities: their posterior means range from {lo:.2f} to {hi:.2f} over the {len(la)} "
            f"local authorities{shown}; {n_above} of them have a {prob:.0%} interval above 1.",
            "la-gradients"))
    share = est[est["estimand"] == "between_la_share"]
    if len(share):
        r = share.iloc[0]
        dec = _pct_decimals(100 * (r["upper"] - r["lower"]))
        out.append(page.Finding(
            f"{100 * r['mean']:.{dec}f}% ({prob:.0%} interval {100 * r['lower']:.{dec}f}% to "
            f"{100 * r['upper']:.{dec}f}%) of the variation in {rate}s (log scale) lies between local "
            "authorities.", "estimands"))
    out += _subgroup_findings(tables, prob=prob)
    out += _year_findings(tables, prob=prob)
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


def _year_findings(tables: dict[str, pd.DataFrame], *, prob: float) -> list[page.Finding]:
    """Sentences on the gradient over the years: first and last year, and the trend."""
    yg = tables.get("year_gradients")
    if yg is None:
        return []
    mean = yg[yg["la_level"] == "mean"]
    first, last = mean.iloc[0], mean.iloc[-1]
    now = _pct_interval(last["mean"], last["lower"], last["upper"], prob)
    then = _pct_interval(first["mean"], first["lower"], first["upper"], prob)
    ratio = _ratio_interval(last["ratio_to_first"], last["ratio_lower"], last["ratio_upper"], prob)
    out = [page.Finding(
        f"In {last['year']}, {RISE} is associated with a rate {now} (local authority of average "
        f"deprivation), against {then} in {first['year']}: {ratio} times the {first['year']} gradient "
        f"(probability that it is steeper: {last['p_steeper_than_first']:.2f}).", "years")]
    tr = tables.get("year_trend")
    if tr is not None:
        r = tr.iloc[0]
        out.append(page.Finding(
            f"Over the years fitted, the gradient score changed by a factor of "
            f"{_ratio_interval(r['mean'], r['lower'], r['upper'], prob)} a year (probability that it is "
            f"steepening: {r['p_steepening']:.2f}).", "years"))
    return out


def _subgroup_findings(tables: dict[str, pd.DataFrame], *, prob: float) -> list[page.Finding]:
    """Sentences for stages, strata, stage escalation and the formula's gradient moderators."""
    out: list[page.Finding] = []
    sub = tables.get("subgroup_gradients")
    if sub is not None:
        if "stage" in sub:
            first = sub.groupby("stage", sort=False).head(1)
            for _, r in first.iloc[1:].iterrows():
                out.append(page.Finding(
                    f"At the {outcome_words(str(r['stage']))} stage, {RISE} is associated with a rate "
                    f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)} (local authority of "
                    "average deprivation).", "subgroups"))
        if "stratum" in sub:
            part = sub if "stage" not in sub else sub[sub["stage"] == sub["stage"].iloc[0]]
            lo, hi = part.loc[part["mean"].idxmin()], part.loc[part["mean"].idxmax()]
            out.append(page.Finding(
                f"By stratum, the gradient is shallowest for {lo['stratum']}: "
                f"{_pct_interval(lo['mean'], lo['lower'], lo['upper'], prob)}; and steepest for "
                f"{hi['stratum']}: {_pct_interval(hi['mean'], hi['lower'], hi['upper'], prob)}.", "subgroups"))
    esc = tables.get("escalation")
    if esc is not None:
        for _, r in esc.iterrows():
            b, a = (outcome_words(s.strip()) for s in str(r["step"]).split("/"))
            out.append(page.Finding(
                f"The gradient at the {b} stage is {_ratio_interval(r['mean'], r['lower'], r['upper'], prob)} "
                f"times the gradient at the {a} stage (probability that it is steeper: "
                f"{r['p_steeper']:.2f}).", "escalation"))
    est = tables["estimands"]
    mod = est[est["estimand"] == "moderated_gradient_score"]
    for _, r in mod.iterrows():
        out.append(page.Finding(
            f"Where {r['subgroup']}, {RISE} is associated with a rate "
            f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)} (local authority of average "
            "deprivation, other neighbourhood terms at 0).", "estimands"))
    con = tables.get("moderator_contrasts")
    if con is not None:
        for _, r in con.iterrows():
            a, b = str(r["contrast"]).split(" vs ")
            out.append(page.Finding(
                f"The gradient score where {a} is {_ratio_interval(r['mean'], r['lower'], r['upper'], 0.9)} "
                f"times the score where {b} (probability above 1: {r['p_greater_than_1']:.2f}).",
                "moderators"))
    return out


# ---------------------------------------------------------------------------- the page


def _status(diag: dict[str, Any]) -> tuple[str, bool]:
    """The page's status line: fit checked, or not fit for reporting with the reasons."""
    if diag.get("status") == "ok":
        return "Fit checked: " + verdict(diag)[4:], True
    reasons = "; ".join(diag.get("reasons", [])) or "unknown"
    return f"Not fit for reporting: {reasons}. Do not quote these estimates until this is fixed.", False


def _lean(frame: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` without the columns that repeat one value on every row (said in the caption)."""
    drop = [c for c in ("estimand", "scale", "prob") if c in frame and c not in keep
            and frame[c].astype(str).nunique() <= 1]
    return frame.drop(columns=drop)


def _published_column(frame: pd.DataFrame, pub: Published) -> pd.DataFrame:
    """The published gradient scores beside the headline rows they describe (nothing else)."""
    values = [pub.gradients.get(str(lv), np.nan) if e == "gradient_score" and sc == estimands.PER_10 else np.nan
              for e, lv, sc in zip(frame["estimand"], frame["la_level"], frame["scale"], strict=True)]
    return frame.assign(published=values) if np.isfinite(values).any() else frame


def report_page(idata, tables: dict[str, pd.DataFrame], pngs: dict[str, tuple[str, bytes]], *,
                threshold: int, rounding: int, prob: float, diag: dict[str, Any], year: int | None = None,
                data_note: str | None = None) -> page.Page:
    """The report as a :class:`hierarchy.reporting.page.Page`: status, findings, figures, then appendices.

    ``year`` is the data's census year (published figures that describe the estimands in that year
    are shown, and the page says which or why none); ``data_note`` says which table and column map
    the observed panels came from.
    """
    prov = provenance(idata)
    spec, _ = fit_spec(idata)
    design = prov.get("design", {})
    status, ok = _status(diag)
    stratified = bool(spec.strata)
    pub = published_for(prov["model_spec"]["outcome"], year=year, stratified=stratified,
                        la_levels=tables["estimands"]["la_level"])
    est = _published_column(tables["estimands"], pub)
    head = est[est["scale"] == estimands.PER_10].drop(columns=["description"])
    other = est[est["scale"] != estimands.PER_10].drop(columns=["description"])
    other = other.drop(columns=[c for c in ("published",) if c in other])
    S = page.Section
    sections = [S("Headline estimands", "estimands", (
        f"Gradient scores (rate multiplier per 10 points of neighbourhood income deprivation) of a "
        f"typical LA at mean LA deprivation and 10 points less / more; posterior mean, sd and "
        f"{prob:.0%} equal-tailed interval, rounded to the precision the interval justifies.", pub.note),
        table=rounded(head), csv="estimands.csv")]
    sections.append(S("Other estimands", "other-estimands", (
        "The same on a per-SD scale, subgroup and moderator gradients, and the share of variance between "
        "LAs. " + estimands.SHARE_DEFINITION,), table=rounded(other), csv="estimands.csv"))
    if "subgroup_gradients" in tables:
        stages = prov["model_spec"]["outcome"]
        note = (f" The other sections show the first stage ({stages[0]}) and the reference stratum."
                if isinstance(stages, list) else " The other sections show the reference stratum.")
        sections.append(S("Gradients by stage and stratum", "subgroups", (
            "Gradient score per 10 points of a typical LA at mean LA deprivation, for each stage and "
            "stratum." + note,), table=rounded(_lean(tables["subgroup_gradients"])), csv="subgroup_gradients.csv"))
    if "escalation" in tables:
        sections.append(S("Gradient escalation", "escalation", (
            "Ratio of each stage's gradient score to the stage below; p_steeper = posterior probability "
            "that the ratio exceeds 1.",), table=rounded(_lean(tables["escalation"])), csv="escalation.csv"))
    if "year_gradients" in tables:
        sections.append(S("Gradients by year", "years", (
            "Gradient score per 10 points of a typical LA in each year, at mean LA deprivation and 10 points "
            "less / more; ratio_to_first = the year's score over the first year's; p_steeper_than_first = "
            "posterior probability that it is steeper." + (
                " year_trend.csv: the least-squares change of the log gradient score per year, as a ratio."
                if "year_trend" in tables else ""),),
            table=rounded(_lean(tables["year_gradients"])), csv="year_gradients.csv"))
    if "moderator_contrasts" in tables:
        sections.append(S("Gradient moderators", "moderators", (
            "Ratio of gradient scores with the moderator at 1 and at 0 (equal-tailed 90% interval); "
            "p_greater_than_1 = posterior probability that the ratio exceeds 1.",),
            table=rounded(tables["moderator_contrasts"]), csv="moderator_contrasts.csv"))
    if "la_gradients" in tables:
        la = tables["la_gradients"]
        sections.append(S("LA gradient scores (per 10 points)", "la-gradients", (
            "exp of each LA's gradient coefficient: the lowest and highest by posterior mean.",),
            table=rounded(_lean(_short(la, order="mean"))), csv="la_gradients.csv", total_rows=len(la)))
    inv = tables["inverse_intervention"]
    x_mean = design.get("x_mean")
    near = int(np.argmin(np.abs(inv["x"].to_numpy() - x_mean))) if x_mean is not None and len(inv) else None
    sections += [
        S("Inverse-intervention contrast", "inverse-intervention", (
            "Predicted rate ratio between a typical LA 10 points less deprived and one 10 points more "
            "deprived, for a neighbourhood of the same deprivation x.",),
          table=rounded(_lean(_short(inv, always=near))), csv="inverse_intervention.csv", total_rows=len(inv)),
        S("Rates by national decile of neighbourhood deprivation", "deciles", (
            "Rates per 10,000 children; predicted = posterior predictive draws from the LA coefficients; "
            "observed counts and rates are disclosure-controlled.",), table=rounded(_lean(tables["deciles"])),
          csv="deciles.csv"),
        S("Posterior predictive check: counts per neighbourhood", "count-check",
          ("Number of neighbourhood rows per count bin.",), table=rounded(_lean(tables["count_distribution"])),
          csv="count_distribution.csv")]
    if "la_deciles" in tables:
        sections.append(S("Observed rates by LA and decile", "la-deciles", (
            f"Observed rate per 10,000 children (disclosure-controlled; {disclosure.SUPPRESSED} = "
            "suppressed, – = no neighbourhoods); counts in la_deciles.csv.",),
            table=_la_decile_wide(tables["la_deciles"]), csv="la_deciles.csv"))
    else:
        sections.append(S("Observed data", "observed", (
            "Not available: the fit was saved without observed data; pass the data table to compare "
            "with observed rates.",)))
    diag_rows = pd.DataFrame(_diagnostic_rows(diag), columns=["check", "value"])
    sections += [
        S("Hyperparameters (ArviZ summary)", "summary", (f"arviz.summary with {prob:.0%} HDI.",),
          table=rounded(tables["summary"]), csv="summary.csv"),
        S("Diagnostics", "diagnostics", (verdict(diag),), table=diag_rows, text_table=True),
        S("Provenance", "provenance", (f"Observed data: {data_note}.",) if data_note else (),
          table=pd.DataFrame(provenance_rows(prov), columns=["item", "value"]), text_table=True),
        S("Priors", "priors", (), table=_prior_rows(prov["priors"]), text_table=True),
        S("Disclosure control", "disclosure", (disclosure.rules_text(threshold=threshold, rounding=rounding),)),
        S("Tables", "tables", ("CSV files beside this page (full precision, every row): "
                               + ", ".join(f"{k}.csv" for k in tables) + ".",)),
    ]
    intro = (f"Model: {prov.get('formula') or spec.formula_text} ({spec.family.replace('_', ' ')}); priors "
             f"{prov['priors']['name']}; {design.get('n_rows', '?'):,} neighbourhood rows in "
             f"{design.get('n_la', '?')} local authorities. Intervals are {prob:.0%} equal-tailed "
             "posterior intervals. The estimates describe associations between deprivation and "
             "recorded rates; they do not show that deprivation causes intervention.",)
    return page.Page(
        title=f"Social-gradient report: {prov['model_spec']['name']} / {prov['priors']['name']}",
        status=status, status_ok=ok, banner=disclosure.below_default_warning(threshold, rounding) or None,
        intro=intro,
        findings=tuple(findings(tables, outcome=prov["model_spec"]["outcome"], prob=prob, x_mean=x_mean,
                                stratified=stratified, year=year)),
        figures=tuple(page.PageFigure(name, caption, png) for name, (caption, png) in pngs.items()),
        sections=tuple(sections))


def _la_decile_wide(la_deciles: pd.DataFrame) -> pd.DataFrame:
    text = disclosure.mark_suppressed(la_deciles, {"observed_rate": DISCLOSED["observed_rate"]})
    wide = text.pivot(index="la", columns="decile", values="observed_rate")
    cols = [c for c in [*map(str, range(1, 11)), "all"] if c in wide.columns]
    wide = wide.reindex(columns=cols).astype(object).where(lambda d: d.notna(), "–")
    wide.columns = [f"decile {c}" if c != "all" else "all" for c in cols]
    X = la_deciles.groupby("la")["la_deprivation"].first()
    wide.insert(0, "LA deprivation", X.reindex(wide.index).map(_num))
    return wide.reset_index()


# ---------------------------------------------------------------------------- comparison pages

WARN_WORDS = ("visible mass", "prior-data conflict", "warn", "unreliable")
"""List items of a :func:`write_pages` page containing any of these are shown as warnings."""


def format_columns(frame: pd.DataFrame, formats: dict[str, str]) -> pd.DataFrame:
    """Text version of ``frame`` with per-column formats (other floats ``{:.4g}``, NaN blank)."""
    out = pd.DataFrame(index=frame.index)
    for c in frame.columns:
        fmt = formats.get(c)
        out[c] = [("" if (isinstance(v, float) and not np.isfinite(v)) else
                   fmt.format(v) if fmt else (f"{v:.4g}" if isinstance(v, float) else str(v)))
                  for v in frame[c]]
    return out.reset_index(drop=True)


def bullets(items: list[str]) -> list[tuple[str, str]]:
    """Paragraphs of a :func:`write_pages` section shown as a bulleted list."""
    return [("li", t) for t in items]


def write_pages(out: Path, title: str, sections: list[tuple], pngs: dict[str, bytes],
                intro: list[str] | None = None) -> None:
    """Write ``index.html`` (figures embedded) and ``index.md`` (figures as PNG files) in ``out``.

    The page follows the report's template (:mod:`hierarchy.reporting.page`): the items of a section
    headed "Findings" open the page, then the figures (captioned by their section's heading and
    first paragraph), then the other sections as appendices.

    Parameters
    ----------
    out : pathlib.Path
        Existing folder.
    title : str
        Page title.
    sections : list of tuple
        ``(heading, paragraphs, table)`` or ``(heading, paragraphs, table, figure)``:
        paragraphs are ``("p", text)`` or ``("li", text)`` (:func:`bullets`), the table a
        frame of text or None, the figure a key of ``pngs`` or None.
    pngs : dict of str to bytes
        Figure name -> PNG image.
    intro : list of str, optional
        Paragraphs under the title.
    """
    found: list[page.Finding] = []
    figs: list[page.PageFigure] = []
    body: list[page.Section] = []
    for heading, paras, table, *fig in sections:
        texts = tuple(t for k, t in paras if k == "p")
        items = tuple(t for k, t in paras if k == "li")
        anchor = page.slug(heading)
        if heading == "Findings":
            found += [page.Finding(t) for t in items]
            continue
        if fig and fig[0] in pngs:
            first = texts[0].split(". ")[0].rstrip(".") + "." if texts else ""
            figs.append(page.PageFigure(fig[0], f"{heading}." + (f" {first}" if first else ""),
                                        pngs[fig[0]]))
        body.append(page.Section(heading, anchor, texts, items, table, warn_words=WARN_WORDS))
    used = {f.name for f in figs}
    figs += [page.PageFigure(n, n.replace("_", " ") + ".", png) for n, png in pngs.items() if n not in used]
    page.write_page(page.Page(title=title, intro=tuple(intro or ()), findings=tuple(found),
                              figures=tuple(figs), sections=tuple(body), figure_dir=""), out)


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

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy import disclosure
from hierarchy.errors import HierarchyError
from hierarchy.inference.diagnostics import ESS_MIN, RHAT_MAX
from hierarchy.likelihood.model import HYPERPARAMETERS
from hierarchy.reporting import figures
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


def report_figures(idata, tables: dict[str, pd.DataFrame]) -> dict[str, tuple[str, Any, Any]]:
    """Figures of the report: ``{name: (caption, Figure, plotted data)}``."""
    spec, _ = fit_spec(idata)
    head = tables["estimands"]
    at_mean = head[_at_mean(head)]["mean"]
    out = {"rate_curves": ("Predicted rate per 10,000 children against neighbourhood deprivation for "
                           "typical LAs at mean LA deprivation and 10 points less / more.",
                           *figures.plot_rate_curves(tables["rate_curves"], outcome=spec.outcome))}
    if "la_gradients" in tables:
        out["la_gradients"] = ("LA-specific gradient scores (per 10 points) with intervals.",
                               *figures.plot_la_gradients(tables["la_gradients"],
                                                          typical=float(at_mean.iloc[0])))
    out["inverse_intervention"] = ("Inverse-intervention contrast over neighbourhood deprivation.",
                                   *figures.plot_contrast(tables["inverse_intervention"]))
    out["deciles"] = ("Observed (disclosure-controlled) and posterior predictive rates by national "
                      "decile.", *figures.plot_deciles(tables["deciles"], outcome=spec.outcome))
    out["count_distribution"] = ("Posterior predictive check of the distribution of counts per "
                                 "neighbourhood (observed bins below the threshold not shown).",
                                 *figures.plot_count_ppc(tables["count_distribution"]))
    if "la_deciles" in tables:
        out["la_deciles"] = ("Observed rates by decile in each LA (suppressed cells left out).",
                             *figures.plot_la_deciles(tables["la_deciles"], outcome=spec.outcome))
    if "subgroup_gradients" in tables:
        out["subgroups"] = ("Gradient scores (per 10 points) of a typical LA at mean LA deprivation by "
                            "stage and stratum; truth marked where known.",
                            *figures.plot_subgroups(tables["subgroup_gradients"]))
    out["rank"] = ("Rank plots of the hyperparameters.", *figures.plot_rank(hyperparameters(idata)))
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


def write_report(fit: Any, out: str | os.PathLike, *, data: Any = None, threshold: int = 10,
                 rounding: int = 5, prob: float = 0.9, truth: dict[str, Any] | None = None,
                 n_draws: int = 200, allow_below_default_rules: bool = False) -> Path:
    """Write an HTML, Markdown and CSV report of a fit into folder ``out``.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit file or a loaded fit.
    out : str or os.PathLike
        Folder (created) for ``index.html``, ``report.md``, ``figures/*.png`` and the CSV tables.
    data : str, os.PathLike or pandas.DataFrame, optional
        The fitted table, for observed-vs-predicted panels when the fit has no observed data.
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
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    tables = estimand_tables(idata, data=data, prob=prob, threshold=threshold, rounding=rounding,
                             truth=truth, n_draws=n_draws)
    tables.update(subgroup_tables(full, prob=prob, truth=truth))
    warning = disclosure.below_default_warning(threshold, rounding)
    if warning:
        (out / "NOT_FOR_PUBLICATION.txt").write_text(warning + "\n", encoding="utf-8")
    for name, frame in tables.items():
        _csv(frame, out / f"{name}.csv")
    figs = report_figures(idata, tables)
    pngs = {}
    for name, (_caption, fig, _data) in figs.items():
        pngs[name] = figures.to_png(fig)
        (out / "figures" / f"{name}.png").write_bytes(pngs[name])
    context = _context(idata, tables, threshold=threshold, rounding=rounding, prob=prob, diag=diag)
    captions = {k: v[0] for k, v in figs.items()}
    (out / "report.md").write_text(_markdown(context, captions), encoding="utf-8")
    index = out / "index.html"
    index.write_text(_html(context, captions, pngs), encoding="utf-8")
    return index


def _context(idata, tables: dict[str, pd.DataFrame], *, threshold: int, rounding: int,
             prob: float, diag: dict[str, Any]) -> dict[str, Any]:
    """Everything the Markdown and HTML writers show, as text tables and paragraphs."""
    prov = provenance(idata)
    est = tables["estimands"]
    head = est[est["scale"] == estimands.PER_10].drop(columns=["description"])
    other = est[est["scale"] != estimands.PER_10].drop(columns=["description"])
    sections: list[tuple[str, str, pd.DataFrame | None]] = [
        ("Headline estimands", f"Gradient scores (rate multiplier per 10 points of neighbourhood "
         f"income deprivation) of a typical LA at mean LA deprivation and 10 points less / more; "
         f"posterior mean, sd and {prob:.0%} equal-tailed interval.", _display(head)),
        ("Other estimands", "The same on a per-SD scale, and the share of variance between LAs. "
         + estimands.SHARE_DEFINITION, _display(other)),
        ("Hyperparameters (ArviZ summary)", f"arviz.summary with {prob:.0%} HDI.",
         _display(tables["summary"])),
        ("Inverse-intervention contrast", "Predicted rate ratio between a typical LA 10 points "
         "less deprived and one 10 points more deprived, for a neighbourhood of the same "
         "deprivation x (proportion).", _display(tables["inverse_intervention"])),
        ("Rates by national decile of neighbourhood deprivation", "Rates per 10,000 children; "
         "predicted = posterior predictive draws from the LA coefficients; observed counts and "
         "rates are disclosure-controlled.", _display(tables["deciles"])),
        ("Posterior predictive check: counts per neighbourhood", "Number of neighbourhood rows "
         "per count bin.", _display(tables["count_distribution"])),
    ]
    if "subgroup_gradients" in tables:
        stages = prov["model_spec"]["outcome"]
        note = (f" The other sections show the first stage ({stages[0]}) and the reference stratum."
                if isinstance(stages, list) else " The other sections show the reference stratum.")
        sections.insert(1, ("Gradients by stage and stratum", "Gradient score per 10 points of a typical "
                            "LA at mean LA deprivation, for each stage and stratum." + note,
                            _display(tables["subgroup_gradients"])))
    if "escalation" in tables:
        sections.insert(2, ("Gradient escalation", "Ratio of each stage's gradient score to the stage "
                            "below; p_steeper = posterior probability that the ratio exceeds 1.",
                            _display(tables["escalation"])))
    if "la_gradients" in tables:
        sections.append(("LA gradient scores (per 10 points)", "exp of each LA's gradient "
                         "coefficient.", _display(tables["la_gradients"])))
    if "la_deciles" in tables:
        sections.append(("Observed rates by LA and decile", "Observed rate per 10,000 children "
                         f"(disclosure-controlled; {disclosure.SUPPRESSED} = suppressed, – = no "
                         "neighbourhoods); counts in la_deciles.csv.", _la_decile_wide(tables["la_deciles"])))
    else:
        sections.append(("Observed data", "Not available: the fit was saved without observed "
                         "data; pass the data table to compare with observed rates.", None))
    return {"title": f"Social-gradient report: {prov['model_spec']['name']} / {prov['priors']['name']}",
            "provenance": provenance_rows(prov), "priors": _prior_rows(prov["priors"]),
            "diagnostics": _diagnostic_rows(diag), "status": diag.get("status", "warn"),
            "rules": disclosure.rules_text(threshold=threshold, rounding=rounding),
            "rules_warning": disclosure.below_default_warning(threshold, rounding),
            "sections": sections, "csvs": [f"{k}.csv" for k in tables]}


def _la_decile_wide(la_deciles: pd.DataFrame) -> pd.DataFrame:
    text = disclosure.mark_suppressed(la_deciles, {"observed_rate": DISCLOSED["observed_rate"]})
    wide = text.pivot(index="la", columns="decile", values="observed_rate")
    cols = [c for c in [*map(str, range(1, 11)), "all"] if c in wide.columns]
    wide = wide.reindex(columns=cols).astype(object).where(lambda d: d.notna(), "–")
    wide.columns = [f"decile {c}" if c != "all" else "all" for c in cols]
    X = la_deciles.groupby("la")["la_deprivation"].first()
    wide.insert(0, "LA deprivation", X.reindex(wide.index).map(_num))
    return wide.reset_index()


def _markdown(ctx: dict[str, Any], captions: dict[str, str]) -> str:
    kv = pd.DataFrame(ctx["provenance"], columns=["item", "value"])
    diag = pd.DataFrame(ctx["diagnostics"], columns=["check", "value"])
    parts = [f"# {ctx['title']}"]
    if ctx["rules_warning"]:
        parts.append(f"> **{ctx['rules_warning']}**")
    parts += ["## Diagnostics", f"**{ctx['diagnostics'][0][1]}**",
             markdown_table(diag), "## Provenance", markdown_table(kv), "### Priors",
             markdown_table(ctx["priors"]), "## Disclosure control", ctx["rules"]]
    for title, text, table in ctx["sections"]:
        parts += [f"## {title}", text]
        if table is not None:
            parts.append(markdown_table(table))
    parts.append("## Figures")
    parts += [f"![{html.escape(c)}](figures/{name}.png)\n\n*{c}*" for name, c in captions.items()]
    parts += ["## Tables", ", ".join(f"[{c}]({c})" for c in ctx["csvs"])]
    return "\n\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child,.text td,.text th{text-align:left}.ok{background:#e6f4ea;padding:.6em}
.warn{background:#fdecea;padding:.6em}figure{margin:1em 0}img{max-width:100%}
.scroll{max-height:30em;overflow:auto}"""


def _html_table(frame: pd.DataFrame, *, text: bool = False) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="", classes="text" if text else None)


def _html(ctx: dict[str, Any], captions: dict[str, str], pngs: dict[str, bytes]) -> str:
    e = html.escape
    kv = pd.DataFrame(ctx["provenance"], columns=["item", "value"])
    diag = pd.DataFrame(ctx["diagnostics"], columns=["check", "value"])
    body = [f"<h1>{e(ctx['title'])}</h1>"]
    if ctx["rules_warning"]:
        body.append(f"<p class='warn'><strong>{e(ctx['rules_warning'])}</strong></p>")
    body += ["<h2>Diagnostics</h2>",
            f"<p class='{e(ctx['status'])}'><strong>{e(ctx['diagnostics'][0][1])}</strong></p>",
            _html_table(diag, text=True), "<h2>Provenance</h2>", _html_table(kv, text=True),
            "<h3>Priors</h3>", _html_table(ctx["priors"], text=True), "<h2>Disclosure control</h2>",
            f"<p>{e(ctx['rules'])}</p>"]
    for title, text, table in ctx["sections"]:
        body += [f"<h2>{e(title)}</h2>", f"<p>{e(text)}</p>"]
        if table is not None:
            body.append(f"<div class='scroll'>{_html_table(table)}</div>")
    body.append("<h2>Figures</h2>")
    for name, caption in captions.items():
        b64 = base64.b64encode(pngs[name]).decode("ascii")
        body.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{b64}'>"
                    f"<figcaption>{e(caption)}</figcaption></figure>")
    body.append(f"<h2>Tables</h2><p>CSV files beside this page: {e(', '.join(ctx['csvs']))}</p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(ctx['title'])}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------- comparison pages

WARN_WORDS = ("visible mass", "prior-data conflict", "warn", "unreliable")
"""List items of a :func:`write_pages` page containing any of these are shown as warnings."""
PAGE_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
            "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
            "th{background:#f2f2f2}td:first-child{text-align:left}"
            ".warn{color:#a50026;font-weight:bold}img{max-width:100%}")


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
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)
    h = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
         f"<title>{html.escape(title)}</title>", f"<style>{PAGE_CSS}</style></head><body>",
         f"<h1>{html.escape(title)}</h1>"]
    md = [f"# {title}", ""]
    for line in intro or []:
        h.append(f"<p>{html.escape(line)}</p>")
        md += [line, ""]
    for heading, paras, table, *fig in sections:
        fig = fig[0] if fig else None
        h.append(f"<h2>{html.escape(heading)}</h2>")
        md += [f"## {heading}", ""]
        for kind, text in paras:
            if kind == "p":
                h.append(f"<p>{html.escape(text)}</p>")
                md += [text, ""]
        items = [t for k, t in paras if k == "li"]
        if items:
            h.append("<ul>" + "".join(
                f"<li{_warn_class(t)}>{html.escape(t)}</li>" for t in items) + "</ul>")
            md += [f"- {t}" for t in items] + [""]
        if fig is not None and fig in pngs:
            b64 = base64.b64encode(pngs[fig]).decode()
            h.append(f"<p><img alt='{html.escape(fig)}' src='data:image/png;base64,{b64}'></p>")
            md += [f"![{fig}]({fig}.png)", ""]
        if table is not None:
            h.append(table.to_html(index=False, escape=True, border=0))
            md += [markdown_table(table), ""]
    h.append("</body></html>")
    (out / "index.html").write_text("\n".join(h), encoding="utf-8")
    (out / "index.md").write_text("\n".join(md), encoding="utf-8")


def _warn_class(text: str) -> str:
    return " class='warn'" if any(k in text for k in WARN_WORDS) else ""

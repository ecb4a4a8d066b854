"""Summaries and reports of a saved fit: ArviZ summary, estimands, diagnostics, figures.

:func:`summary_text` prints the hyperparameter summary, the headline estimands and the
diagnostics verdict in one of four formats; :func:`write_report` writes a folder with
``index.html`` (self-contained: figures embedded as base64 PNG), ``report.md`` (figures beside
it in ``figures/``) and CSV tables, and with ``for_checking`` the output checkers' folder of the
same outputs. :func:`build_outputs` computes them all once, before anything is written: the
tables (:mod:`~hierarchy.reporting.tables`, observed counts through the one suppression of
:mod:`~hierarchy.reporting.suppression`), the figures (:mod:`~hierarchy.reporting.figure_list`),
the findings (:mod:`~hierarchy.reporting.findings`) and the page; each table and figure must be
registered (:mod:`~hierarchy.reporting.registry`).

:func:`write_pages` writes the simpler pages of ``hierarchy compare-priors`` and
``compare-models``: sections of paragraphs, tables and figures as ``index.html`` and ``index.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import disclosure, published
from hierarchy.errors import HierarchyError
from hierarchy.inference.diagnostics import ESS_MIN, RHAT_MAX
from hierarchy.paths import atomic_path
from hierarchy.reporting import checking, checklist, figures, maps, page, registry, suppression
from hierarchy.reporting.figure_list import report_figures, report_map_figures
from hierarchy.reporting.findings import (  # noqa: F401  (re-exported: the report's public names)
    Published,
    findings,
    outcome_words,
    published_for,
    year_findings,
)
from hierarchy.reporting.tables import (  # noqa: F401  (re-exported: the report's public names)
    ALL_LAS,
    arviz_summary,
    estimand_tables,
    hyperparameters,
    moderator_table,
    subgroup_tables,
    tables_and_checks,
    with_la_level,
    year_tables,
)
from hierarchy.reporting.text import (  # noqa: F401  (re-exported: the report's public names)
    DISCLOSED,
    csv_bytes,
    decimals_for,
    display,
    in_percent,
    lean,
    markdown_table,
    num,
    pct,
    rounded,
    short,
)
from hierarchy.results import estimands, heterogeneity
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import checked_diagnostics, load_fit, provenance, with_row_data

_year_findings = year_findings  # the name tests/results/test_years.py reads

FORMATS = ("table", "csv", "markdown", "json")
# ---------------------------------------------------------------------------- summaries


def verdict(diag: dict[str, Any]) -> str:
    """One-line plain verdict of the stored diagnostics."""
    if diag.get("status") == "ok":
        rhat = (f"nested R-hat <= {diag['nested_rhat_threshold']:.3f} over {diag.get('superchains')} superchains"
                if "nested_rhat_threshold" in diag else f"R-hat <= {RHAT_MAX}")
        return (f"OK: convergence checks passed ({rhat}, bulk and tail ESS >= "
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


def summary_text(fit: Any, *, fmt: str = "table", prob: float = 0.9, rope: tuple[float, float] | None = None,
                 null: Any = None) -> str:
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
    rope : (float, float), optional
        Region of practical equivalence for gradient ratios and contrasts (P inside it).
    null : str, os.PathLike or arviz.InferenceData, optional
        A simpler nested fit of the same data: adds the PCV (share of LA variance explained).

    Returns
    -------
    str
    """
    if fmt not in FORMATS:
        raise HierarchyError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 0 < prob < 1:
        raise HierarchyError(f"--prob must be between 0 and 1 (e.g. 0.9), got {prob}")
    idata, diag, full = _load_checked(fit)
    prov = provenance(idata)
    summ = arviz_summary(idata, prob=prob)
    head = with_la_level(estimands.headline_table(idata, prob=prob))
    het = heterogeneity.summary_rows(full, prob=prob, rope=rope, null=null)
    het_text = display(het.drop(columns="definition")) if len(het) else pd.DataFrame()
    defs = [f"{k}: {v}" for k, v in dict(zip(het.get("estimand", []), het.get("definition", []),
                                             strict=True)).items()] + list(het.attrs.get("notes", []))
    title = f"{prov['model_spec']['name']} / {prov['priors']['name']} ({prov['created']})"
    if fmt == "json":
        return json.dumps({"fit": title, "model": prov["model_spec"]["name"],
                           "priors": prov["priors"]["name"], "prob": prob,
                           "diagnostics": {"verdict": verdict(diag), **diag},
                           "parameters": _records(summ), "headline": _records(in_percent(head)),
                           "heterogeneity": _records(het), "heterogeneity_notes": defs},
                          indent=1, default=str)
    if fmt == "csv":
        return _summary_csv(summ, head, diag, het)
    if fmt == "markdown":
        return "\n\n".join([f"# {title}", "## Diagnostics", verdict(diag),
                            f"## Hyperparameters (ArviZ summary, {prob:.0%} HDI)",
                            markdown_table(display(summ)),
                            f"## Headline estimands ({prob:.0%} equal-tailed intervals)",
                            markdown_table(display(head)),
                            f"## Between-LA heterogeneity and equivalence ({prob:.0%} equal-tailed intervals)",
                            markdown_table(het_text) if len(het) else "(no LA level)",
                            "\n".join(f"- {d}" for d in defs)]) + "\n"
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        return "\n\n".join([title, f"diagnostics: {verdict(diag)}",
                            f"hyperparameters (ArviZ summary, {prob:.0%} HDI):",
                            display(summ).to_string(index=False),
                            f"headline estimands ({prob:.0%} equal-tailed intervals):",
                            display(head).to_string(index=False),
                            f"between-LA heterogeneity and equivalence ({prob:.0%} equal-tailed intervals):",
                            het_text.to_string(index=False) if len(het) else "(no LA level)",
                            "\n".join(defs)])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _summary_csv(summ: pd.DataFrame, head: pd.DataFrame, diag: dict[str, Any], het: pd.DataFrame) -> str:
    params = summ.rename(columns={"parameter": "name"}).assign(kind="parameter")
    est = in_percent(head).assign(kind="estimand", name=head["estimand"] + "[" + head["la_level"] + "]")
    est = est.drop(columns=["estimand", "la_level"])
    diag_row = pd.DataFrame({"kind": ["diagnostics"], "name": ["verdict"], "note": [verdict(diag)]})
    het = het.rename(columns={"estimand": "name"}).assign(kind="heterogeneity") if len(het) else None
    frame = pd.concat([params, est, *([het] if het is not None else []), diag_row], ignore_index=True)
    first = ["kind", "name"]
    return frame[first + [c for c in frame if c not in first]].to_csv(index=False)


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
        ("mean LA deprivation (X_mean)", pct(design.get("X_mean", float("nan")))),
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
    spec = as_fit(idata).spec
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


@dataclass(frozen=True)
class ReportOutputs:
    """Everything a report publishes, computed once before anything is written.

    ``page``: the rendered page; ``tables``: the published tables by name; ``csv``: their CSV bytes
    as written; ``figures``: ``{name: (caption, PNG bytes, plotted data)}``; ``entries``: their
    registry entries (:mod:`hierarchy.reporting.registry`); ``records``: the checking records of
    the observed tables (the one suppression); ``rules``: the suppression rules applied;
    ``warning``: the not-for-publication warning of rules below the defaults, if any; ``inside``: maps
    derived from neighbourhood counts ``{name: PNG bytes}``, written only to the report's
    :data:`hierarchy.reporting.maps.INSIDE_ONLY` folder (never registered, never on the page); ``map_notes``:
    what the page says of its maps (none drawn and why, LAs or neighbourhoods left out).
    """

    idata: Any
    page: page.Page
    tables: dict[str, pd.DataFrame]
    csv: dict[str, bytes]
    figures: dict[str, tuple[str, bytes, Any]]
    entries: tuple[registry.Output, ...]
    records: tuple[dict[str, Any], ...]
    rules: dict[str, Any]
    warning: str | None = None
    inside: dict[str, bytes] = field(default_factory=dict)
    map_notes: tuple[str, ...] = ()


def _data_and_year(full: Any, data: Any, columns: Any, year: int | None) -> tuple[Any, int | None, str | None]:
    """The fitted table (read with its column map), the census year and the note of where they came from."""
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
        year = json.loads(estimands.as_idata(full).posterior.attrs["hierarchy"]).get("data_year")
    return data, year, data_note


def build_outputs(fit: Any, *, data: Any = None, columns: Any = None, year: int | None = None,
                  threshold: int = 10, rounding: int = 5, prob: float = 0.9,
                  truth: dict[str, Any] | None = None, n_draws: int = 200,
                  allow_below_default_rules: bool = False,
                  acro_config: str | os.PathLike | None = None, geography: Any = None,
                  inside_maps: bool = False) -> ReportOutputs:
    """Compute every output of a report once: tables (one suppression), figures, maps and the page.

    Parameters are those of :func:`write_report`; nothing is written.

    Raises
    ------
    HierarchyError
        Rules below the defaults without ``allow_below_default_rules``; ``prob`` outside (0, 1); an
        edited fit file; an output that is not registered (:func:`hierarchy.reporting.registry.entry`).
    """
    disclosure.require_default_rules(threshold, rounding, allow=allow_below_default_rules)
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be between 0 and 1 (e.g. 0.9), got {prob}")
    idata, diag, full = _load_checked(fit)
    data, year, data_note = _data_and_year(full, data, columns, year)
    if data is not None and not estimands.has_row_data(full):  # a count used as exposure: from the data
        full = with_row_data(full, data)
        idata = estimands.as_idata(full)
    rules = suppression.rules(threshold, rounding, config=acro_config,
                              allow_below_default_rules=allow_below_default_rules)
    tables, records = tables_and_checks(idata, data=data, prob=prob, truth=truth, n_draws=n_draws, rules=rules)
    tables.update(subgroup_tables(full, prob=prob, truth=truth))
    tables.update(moderator_table(full, prob=prob))
    tables.update(year_tables(full, prob=prob))
    het = heterogeneity.summary_rows(full, prob=prob)
    if len(het):
        tables["heterogeneity"] = het
    figs = report_figures(idata, tables, year=year)
    try:
        pngs = {name: (caption, figures.to_png(fig), plotted) for name, (caption, fig, plotted) in figs.items()}
    finally:
        import matplotlib.pyplot as plt

        for _caption, fig, _data in figs.values():
            plt.close(fig)
    drawn = report_map_figures(idata, tables, geography=geography, year=year, inside=inside_maps,
                               n_draws=n_draws)
    pngs = _with_maps(pngs, drawn.public)
    entries = registry.registered(tables, pngs)
    rendered = report_page(idata, tables, {k: v[:2] for k, v in pngs.items()}, rules=rules, prob=prob,
                           diag=diag, year=year, data_note=data_note,
                           map_notes=drawn.notes + ((_INSIDE_NOTE,) if drawn.inside else ()))
    return ReportOutputs(idata=idata, page=rendered, tables=tables,
                         csv={name: csv_bytes(frame) for name, frame in tables.items()}, figures=pngs,
                         entries=tuple(entries), records=tuple(records), rules=rules,
                         warning=disclosure.below_default_warning(threshold, rounding), inside=drawn.inside,
                         map_notes=drawn.notes)


_INSIDE_NOTE = (f"Maps derived from neighbourhood counts are in {maps.INSIDE_ONLY}/ beside this page: they stay "
                "inside the secure environment and are not part of this report.")


def _with_maps(pngs: dict[str, Any], public: dict[str, Any]) -> dict[str, Any]:
    """The figures with the maps after the LA gradients (the findings' figures first, the checks last)."""
    names = list(pngs)
    after = next((i + 1 for i, n in enumerate(names) if n == "la_gradients"), 1 if names else 0)
    order = names[:after] + list(public) + names[after:]
    return {n: pngs[n] if n in pngs else public[n] for n in order}


def write_report(fit: Any, out: str | os.PathLike, *, data: Any = None, columns: Any = None,
                 year: int | None = None, threshold: int = 10, rounding: int = 5, prob: float = 0.9,
                 truth: dict[str, Any] | None = None, n_draws: int = 200,
                 allow_below_default_rules: bool = False, for_checking: str | os.PathLike | None = None,
                 acro_config: str | os.PathLike | None = None, geography: Any = None,
                 inside_maps: bool = False) -> Path:
    """Write an HTML, Markdown and CSV report of a fit into folder ``out`` (and its checking folder).

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
        recorded. Published figures are shown only for the fit's outcome in this year; with no
        year known, none is.
    threshold, rounding : int
        Disclosure rules (:mod:`hierarchy.disclosure`), combined with the environment's output-checking
        rules (:func:`hierarchy.reporting.suppression.rules`) and written into the report.
    prob : float
        Interval probability of every interval on the page and in the tables.
    truth : dict, optional
        Simulator truth; shown beside the estimates.
    n_draws : int
        Posterior draws for posterior predictive tables.
    allow_below_default_rules : bool
        Explicit choice needed for ``threshold`` < 10 or ``rounding`` < 5; the report then says
        at its top that it is not for publication.
    for_checking : str or os.PathLike, optional
        New folder for the output checkers (:func:`hierarchy.reporting.checking.write_outputs`):
        the same outputs, the same suppression.
    acro_config : str or os.PathLike, optional
        The environment's ACRO YAML; default :func:`hierarchy.reporting.checking.environment_config_path`.
    geography : str, os.PathLike or geopandas.GeoDataFrame, optional
        Neighbourhood boundaries for the maps (default: the reference folder's LSOA boundaries, or a
        lattice for a generated geography; without any the page says so and how to get them).
    inside_maps : bool
        Also write maps derived from neighbourhood counts (fitted neighbourhood rates) into
        ``out/inside_only/`` (with a README: they stay inside the secure environment); never on the page
        or in ``for_checking``.

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.

    Raises
    ------
    HierarchyError
        Rules below the defaults without ``allow_below_default_rules``, or with ``for_checking``; a
        ``for_checking`` folder that exists and is not empty; an edited fit file.
    """
    if for_checking is not None:
        checking.check_folder(for_checking)
        if allow_below_default_rules and disclosure.below_default_warning(threshold, rounding):
            raise HierarchyError("a folder for output checking follows the output checkers' rules; rules below "
                                 "the defaults (--allow-below-default-rules) make a report not for "
                                 "publication: drop --for-checking or the weaker rules")
    outputs = build_outputs(fit, data=data, columns=columns, year=year, threshold=threshold, rounding=rounding,
                            prob=prob, truth=truth, n_draws=n_draws, acro_config=acro_config,
                            allow_below_default_rules=allow_below_default_rules, geography=geography,
                            inside_maps=inside_maps)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if outputs.warning:
        with atomic_path(out / "NOT_FOR_PUBLICATION.txt") as tmp:
            tmp.write_text(outputs.warning + "\n", encoding="utf-8")
    for name, content in outputs.csv.items():
        with atomic_path(out / f"{name}.csv") as tmp:
            tmp.write_bytes(content)
    index = page.write_page(outputs.page, out, md_name="report.md")
    maps.write_inside_only(outputs.inside, out)
    if for_checking is not None:
        checking.write_outputs(outputs, for_checking)
    return index


# ---------------------------------------------------------------------------- the page


def _status(diag: dict[str, Any]) -> tuple[str, bool]:
    """The page's status line: fit checked, or not fit for reporting with the reasons."""
    if diag.get("status") == "ok":
        return "Fit checked: " + verdict(diag)[4:], True
    reasons = "; ".join(diag.get("reasons", [])) or "unknown"
    return f"Not fit for reporting: {reasons}. Do not quote these estimates until this is fixed.", False


def _published_column(frame: pd.DataFrame, pub: Published) -> pd.DataFrame:
    """The published gradient scores beside the headline rows they describe (nothing else)."""
    values = [pub.gradients.get(str(lv), np.nan) if e == "gradient_score" and sc == estimands.PER_10 else np.nan
              for e, lv, sc in zip(frame["estimand"], frame["la_level"], frame["scale"], strict=True)]
    return frame.assign(published=values) if np.isfinite(values).any() else frame


def _subgroup_sections(tables: dict[str, pd.DataFrame], prov: dict[str, Any], prob: float) -> list[page.Section]:
    """The page's sections on stages and strata, escalation, years and moderators (those the fit has)."""
    S = page.Section
    sections: list[page.Section] = []
    if "subgroup_gradients" in tables:
        stages = prov["model_spec"]["outcome"]
        note = (f" The other sections show the first stage ({stages[0]}) and the reference stratum."
                if isinstance(stages, list) else " The other sections show the reference stratum.")
        sections.append(S("Gradients by stage and stratum", "subgroups", (
            "Gradient score per 10 points of a typical LA at mean LA deprivation, for each stage and "
            "stratum." + note,), table=rounded(lean(tables["subgroup_gradients"])), csv="subgroup_gradients.csv"))
    if "escalation" in tables:
        sections.append(S("Gradient escalation", "escalation", (
            "Ratio of each stage's gradient score to the stage below; p_steeper = posterior probability "
            "that the ratio exceeds 1.",), table=rounded(lean(tables["escalation"])), csv="escalation.csv"))
    if "year_gradients" in tables:
        sections.append(S("Gradients by year", "years", (
            "Gradient score per 10 points of a typical LA in each year, at mean LA deprivation and 10 points "
            "less / more; ratio_to_first = the year's score over the first year's; p_steeper_than_first = "
            "posterior probability that it is steeper." + (
                " year_trend.csv: the least-squares change of the log gradient score per year, as a ratio."
                if "year_trend" in tables else ""),),
            table=rounded(lean(tables["year_gradients"])), csv="year_gradients.csv"))
    if "moderator_contrasts" in tables:
        sections.append(S("Gradient moderators", "moderators", (
            f"Ratio of gradient scores with the moderator at 1 and at 0 (equal-tailed {prob:.0%} interval); "
            "p_greater_than_1 = posterior probability that the ratio exceeds 1.",),
            table=rounded(tables["moderator_contrasts"]), csv="moderator_contrasts.csv"))
    if "heterogeneity" in tables:
        het = tables["heterogeneity"]
        defs = tuple(f"{name}: {text}" for name, text in dict(zip(het["estimand"], het["definition"],
                                                                    strict=True)).items())
        sections.append(S("Between-LA heterogeneity", "heterogeneity", (
            f"How much LAs differ, in the field's measures (equal-tailed {prob:.0%} intervals).", *defs),
            table=rounded(lean(het.drop(columns="definition"))), csv="heterogeneity.csv"))
    return sections


def report_page(idata, tables: dict[str, pd.DataFrame], pngs: dict[str, tuple[str, bytes]], *,
                rules: dict[str, Any], prob: float, diag: dict[str, Any], year: int | None = None,
                data_note: str | None = None, map_notes: tuple[str, ...] = ()) -> page.Page:
    """The report as a :class:`hierarchy.reporting.page.Page`: status, findings, figures, then appendices.

    ``year`` is the data's census year (published figures that describe the estimands in that year
    are shown, and the page says which or why none); ``data_note`` says which table and column map
    the observed panels came from; ``map_notes`` what the page says of its maps.
    """
    prov = provenance(idata)
    spec = as_fit(idata).spec
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
    sections += _subgroup_sections(tables, prov, prob)
    if "la_gradients" in tables:
        la = tables["la_gradients"]
        sections.append(S("LA gradient scores (per 10 points)", "la-gradients", (
            "exp of each LA's gradient coefficient: the lowest and highest by posterior mean.",),
            table=rounded(lean(short(la, order="mean"))), csv="la_gradients.csv", total_rows=len(la)))
    inv = tables["inverse_intervention"]
    x_mean = design.get("x_mean")
    near = int(np.argmin(np.abs(inv["x"].to_numpy() - x_mean))) if x_mean is not None and len(inv) else None
    sections += [
        S("Inverse-intervention contrast", "inverse-intervention", (
            "Predicted rate ratio between a typical LA 10 points less deprived and one 10 points more "
            "deprived, for a neighbourhood of the same deprivation x.",),
          table=rounded(lean(short(inv, always=near))), csv="inverse_intervention.csv", total_rows=len(inv))]
    if "deciles" in tables:  # the predictive checks need every row's exposure (a count: re-read from --data)
        sections += [
            S("Rates by national decile of neighbourhood deprivation", "deciles", (
                "Rates per 10,000 children; predicted = posterior predictive draws from the LA coefficients; "
                "observed counts and rates are disclosure-controlled.",), table=rounded(lean(tables["deciles"])),
              csv="deciles.csv"),
            S("Posterior predictive check: counts per neighbourhood", "count-check",
              ("Number of neighbourhood rows per count bin.",), table=rounded(lean(tables["count_distribution"])),
              csv="count_distribution.csv")]
    else:
        sections.append(S("Posterior predictive checks", "deciles", (
            f"Not run: the model's exposure ('{as_fit(idata).spec.exposure}') is a count, which the fit file does "
            "not store; give the fitted table (hierarchy report FIT --data TABLE) for these checks.",)))
    if "la_deciles" in tables:
        sections.append(S("Observed rates by LA and decile", "la-deciles", (
            f"Observed rate per 10,000 children (disclosure-controlled; {disclosure.SUPPRESSED} = "
            "suppressed, – = no neighbourhoods); counts in la_deciles.csv.",),
            table=_la_decile_wide(tables["la_deciles"]), csv="la_deciles.csv"))
    else:
        sections.append(S("Observed data", "observed", (
            "Not available: the fit was saved without observed data; pass the data table to compare "
            "with observed rates.",)))
    if map_notes:
        sections.append(S("Maps", "maps", map_notes))
    diag_rows = pd.DataFrame(_diagnostic_rows(diag), columns=["check", "value"])
    sections += [
        S("Hyperparameters (ArviZ summary)", "summary", (f"arviz.summary with {prob:.0%} HDI.",),
          table=rounded(tables["summary"]), csv="summary.csv"),
        S("Diagnostics", "diagnostics", (verdict(diag),), table=diag_rows, text_table=True),
        S("Provenance", "provenance", (f"Observed data: {data_note}.",) if data_note else (),
          table=pd.DataFrame(provenance_rows(prov), columns=["item", "value"]), text_table=True),
        S("Priors", "priors", (), table=_prior_rows(prov["priors"]), text_table=True),
        S("Disclosure control", "disclosure", (suppression.rules_text(rules),)),
        S("Tables", "tables", ("CSV files beside this page (full precision, every row): "
                               + ", ".join(f"{k}.csv" for k in tables) + ".",)),
    ]
    done = checklist.items(prov, diag, sections, formula=prov.get("formula") or spec.formula_text,
                           parameters=idata.posterior.data_vars)
    sections.append(checklist.section(done, sections))
    intro = (f"Model: {prov.get('formula') or spec.formula_text} ({spec.family.replace('_', ' ')}); priors "
             f"{prov['priors']['name']}; {design.get('n_rows', '?'):,} neighbourhood rows in "
             f"{design.get('n_la', '?')} local authorities. Intervals are {prob:.0%} equal-tailed "
             "posterior intervals. The estimates describe associations between deprivation and "
             "recorded rates; they do not show that deprivation causes intervention.",)
    return page.Page(
        title=f"Social-gradient report: {prov['model_spec']['name']} / {prov['priors']['name']}",
        status=status, status_ok=ok,
        banner=disclosure.below_default_warning(rules["safe_threshold"], rules["safe_round_base"]) or None,
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
    wide.insert(0, "LA deprivation", X.reindex(wide.index).map(pct))
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


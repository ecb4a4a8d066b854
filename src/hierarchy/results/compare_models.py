"""Comparing saved fits by cross-validation: ``hierarchy compare-models``.

:func:`compare_models` compares saved fits of the same data and outcome by cross-validation: ELPD,
differences and their standard errors, stacking weights and Pareto-k diagnostics, with a plain
warning when any k is above the sample-size-dependent threshold
(:func:`hierarchy.results.cv.pareto_k_threshold`, min(1 - 1/log10(draws), 0.7)). Three kinds
(``cv``): ``rows``, PSIS-LOO over neighbourhood rows (a left-out neighbourhood of a seen LA);
``la``, leave-one-LA-out (a new LA) by PSIS on each LA's summed log-likelihood, with exact refits
for the LAs whose k is above the threshold, or K-fold by LA when there are more of them than
``max_refits``; ``la-kfold``, K-fold by LA (:mod:`hierarchy.results.cv`). Fits whose log-likelihood was thinned
(``provenance["log_likelihood_thinned_by"] > 1``) get a relative efficiency computed from the
posterior draws the log-likelihood was evaluated at (:func:`relative_eff`).
:func:`write_model_comparison` writes the tables and pages. Fit files hold no pointwise
log-likelihood unless fitted with ``--include-log-likelihood`` (it discloses the counts); with
``data`` (``--data``) it is recomputed from the table in memory
(:func:`hierarchy.results.fitfile.add_log_likelihood`).

Every comparison also puts the fits' headline estimands side by side, from the posteriors only
(:func:`headline_side_by_side`, ``headlines.csv``): the three gradient scores, the inverse-intervention
ratio and, for a spatial fit (``car(neighbourhood)``), the BYM2 measures, with a plain sentence per
headline (:func:`side_by_side_sentence`). A spatial fit's pointwise log-likelihood cannot be recomputed
(its per-neighbourhood effects are not stored), so with one among the fits no LOO is done: the
comparison says so in one line and shows the headlines only (``hierarchy compare-models
fits/nb_log.nc fits/bym2.nc --out out/space``).

Worked example (national simulated data; linear vs log LA deprivation in the cross-level
interaction)::

    hierarchy simulate --year 2019 --out out/national_2019.parquet
    hierarchy fit --data out/national_2019.parquet --model models/inverse_intervention_nb.toml \
        --chains 2 --tune 500 --draws 500 --out fits/national_nb.nc
    hierarchy fit --data out/national_2019.parquet --model models/inverse_intervention_nb_log.toml \
        --chains 2 --tune 500 --draws 500 --out fits/national_nb_log.nc
    hierarchy compare-models fits/national_nb.nc fits/national_nb_log.nc \
        --data out/national_2019.parquet --out out/loo

Measured (32,844 neighbourhoods, 151 LAs; 2 chains x 500 draws, log-likelihood thinned by 2;
no Pareto k above 0.7, the fixed threshold then used; the sample-size threshold for these 1,000
draws is 0.67, not rechecked)::

    model                        rank  elpd_loo   se     elpd_diff  dse  p_loo  weight
    inverse_intervention_nb      0     -110533.6  173.8  0.0        0.0  264.2  0.583
    inverse_intervention_nb_log  1     -110533.9  173.8  0.3        1.7  264.2  0.417

LOO cannot tell the two forms apart here (0.3 +- 1.7): with ~200 neighbourhoods per LA every LA's
slope is pinned by its own data, and the form of the cross-level interaction only changes the
shrinkage target. The estimands do differ: the linear form gives a gradient score of 2.03
(90% interval 1.96-2.10) for an LA 10 points less deprived, the log form 2.29 (2.18-2.40), and the
simulator's truth is 2.33. LOO answers "which predicts left-out neighbourhoods better", not "which
LA-level curve is right"; it separates the forms when LAs are small (the tests: 50 LAs of ~12
neighbourhoods, elpd difference ~9-13, 2-3 SE, in favour of the data-generating log form).

A new LA (``--cv la`` / ``--cv la-kfold``). Measured on 30 simulated LAs of ~10 neighbourhoods (321
rows) whose intercepts rise with log LA deprivation (1.0 per unit; LA noise 0.15), the log model
against ``gradient_nb`` (no LA deprivation: it predicts every new LA at the mean), 2 chains x
(200 + 200) each (``tests/test_cv.py`` builds such data with ``la_deprivation_table``)::

    hierarchy compare-models fits/gradient_nb.nc fits/log.nc --data la30.parquet --cv la --out cv_la
    hierarchy compare-models fits/gradient_nb.nc fits/log.nc --data la30.parquet --cv la-kfold \
        --folds 5 --out cv_kfold

    cv                                elpd_la (log model)  elpd_la (gradient_nb)  difference (SE)
    la, PSIS on the summed rows       -1004.5               -1011.8                 7.4 (3.9)  37 of 60 k bad
    la, PSIS, LA effects integrated   -1006.5               -1034.1                27.6 (4.9)   2 of 60 k bad
    la, + 2 exact refits (default)    -1006.5               -1034.0                27.5 (4.9)
    la-kfold, 5 folds (10 refits)     -1006.5               -1032.9                26.4 (4.7)
    rows (PSIS over neighbourhoods)   -1003.8               -1011.9                 8.1 (3.7)

Summing each LA's rows given its fitted effects gives Pareto k above the threshold (0.62 for 400
draws) for most LAs and understates the difference; integrating the LA's effects out brings PSIS
within about one ELPD unit of K-fold, and the two LAs left with k above the threshold are refitted.

The work is split by job, and every name is importable from here: whether the fits can be compared
(:mod:`hierarchy.results.compare_checks`), the ELPD tables (:mod:`hierarchy.results.compare_elpd`)
and the headline estimands side by side (:mod:`hierarchy.results.compare_headlines`); this module
runs the comparison and writes its tables and pages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.reporting.report import bullets, format_columns, write_pages
from hierarchy.results.compare_checks import ROWS_PARTS as ROWS_PARTS
from hierarchy.results.compare_checks import (
    check_comparable,
    check_same_data,
    load_table,
    loo_impossible,
    model_names,
    with_log_likelihood,
)
from hierarchy.results.compare_elpd import elpd_by_la, elpd_by_rows, loglik_draws, loo, relative_eff
from hierarchy.results.compare_headlines import HEADLINE_WORDS as HEADLINE_WORDS
from hierarchy.results.compare_headlines import SPATIAL_CONFOUNDING as SPATIAL_CONFOUNDING
from hierarchy.results.compare_headlines import headline_side_by_side, shown_headlines, side_by_side_sentence
from hierarchy.results.cv import pareto_k_threshold
from hierarchy.results.fitfile import load_fit, provenance

CV_MODES = ("rows", "la", "la-kfold")
"""Cross-validation of ``compare-models``: neighbourhood rows, leave-one-LA-out, K-fold by LA."""
_FORMATS = {"elpd_loo": "{:.1f}", "elpd_la": "{:.1f}", "se": "{:.1f}", "elpd_diff": "{:.1f}",
            "dse": "{:.1f}", "p_loo": "{:.1f}", "p_la": "{:.1f}", "weight": "{:.3f}",
            "k_threshold": "{:.2f}"}

__all__ = ["CV_MODES", "ModelComparison", "compare_models", "headline_side_by_side", "loglik_draws", "loo",
           "pareto_k_threshold", "relative_eff", "side_by_side_sentence", "write_model_comparison"]


@dataclass
class ModelComparison:
    """Cross-validated comparison of saved fits (see :func:`compare_models`).

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`arviz.compare` (stacking weights) plus the count of Pareto k above the threshold
        (``k_bad``), the CV used (``cv``) and file names, best first. The ELPD column is
        ``elpd_loo`` for ``cv="rows"`` and ``elpd_la`` (left-out LAs) otherwise.
    pareto : pandas.DataFrame
        Per model: units (neighbourhood rows or LAs) with k <= the sample-size threshold (good),
        threshold-1 (bad), > 1 (very bad), the largest k, the threshold and how the bad ones were
        handled.
    worst : pandas.DataFrame
        Units with k above the threshold (model, unit, la, k, method), worst first.
    loo : dict
        Model name -> :class:`arviz.ELPDData` (pointwise over the units; for ``la-kfold`` and
        refitted LAs the pointwise values are the exact held-out ones).
    warnings : list of str
        Plain-language warnings.
    findings : list of str
        Plain-language summary of the comparison.
    cv : str
        ``"rows"``, ``"la"`` or ``"la-kfold"``: the cross-validation actually used.
    cv_note : str
        Which cross-validation was used and why (the k's that decided it).
    la_cv : pandas.DataFrame or None
        LA modes: per model and LA, its Pareto k, how it was left out (``PSIS``, ``exact refit``,
        ``K-fold``), its fold and ``elpd`` (its pointwise ELPD: kept in memory, never written, as
        it is a function of the LA's counts).
    refits : pandas.DataFrame or None
        One row per refit: model, fold, LAs and rows held out, training rows and data hash, and
        whether it was fitted or reused.
    headlines : pandas.DataFrame or None
        :func:`headline_side_by_side` of the fits (from the posteriors only).
    headline_sentences : list of str
        :func:`side_by_side_sentence` of :attr:`headlines`.
    """

    table: pd.DataFrame
    pareto: pd.DataFrame
    worst: pd.DataFrame
    loo: dict[str, Any]
    warnings: list[str]
    findings: list[str]
    cv: str = "rows"
    cv_note: str = ""
    la_cv: pd.DataFrame | None = None
    refits: pd.DataFrame | None = None
    headlines: pd.DataFrame | None = None
    headline_sentences: list[str] = field(default_factory=list)

    @property
    def has_loo(self) -> bool:
        """Whether cross-validation was done (not when a fit's log-likelihood cannot be had)."""
        return len(self.table) > 0

    @property
    def elpd_column(self) -> str:
        return "elpd_loo" if self.cv == "rows" else "elpd_la"

    def columns(self) -> list[str]:
        """The columns of :attr:`table` shown on the terminal and pages."""
        p = "p_loo" if self.cv == "rows" else "p_la"
        return ["model", "rank", self.elpd_column, "se", "elpd_diff", "dse", p, "weight", "k_bad"]

    def format(self) -> str:
        """Plain-text summary for the terminal."""
        lines = [f"cross-validation: {self.cv_note}", ""]
        if self.has_loo:
            lines += [_text_table(self.table[self.columns()], _FORMATS), ""]
        lines += self.findings or []
        if self.headlines is not None:
            lines += [""] * bool(self.findings) + ["headline estimands side by side:",
                                                   _text_table(shown_headlines(self.headlines), {}),
                                                   "", *self.headline_sentences]
        if self.warnings:
            lines += ["", *(f"warning: {w}" for w in self.warnings)]
        return "\n".join(lines)


def compare_models(fits: Sequence[str | os.PathLike], *, names: Sequence[str] | None = None,
                   data: Any = None, columns: str | os.PathLike | None = None, cv: str = "rows",
                   folds: int = 10, max_refits: int = 10, seed: int = 0,
                   fits_dir: str | os.PathLike | None = None, batched: bool | None = None,
                   log: Callable[[str], None] | None = None) -> ModelComparison:
    """Compare saved fits of the same data and outcome by cross-validation.

    Fit files hold no pointwise log-likelihood by default (it would give back the observed
    counts); with ``data`` it is recomputed from the table, in memory, for each fit without one.

    Parameters
    ----------
    fits : sequence of path
        Two or more fit files.
    names : sequence of str, optional
        Labels (default: the model names, made unique with the prior set or file name).
    data : str, os.PathLike or pandas.DataFrame, optional
        The table the fits were made from (its data hash must match theirs); needed for refits.
    columns : str or os.PathLike, optional
        Column map of ``data``.
    cv : {"rows", "la", "la-kfold"}
        ``rows``: PSIS-LOO over neighbourhood rows (how well a left-out neighbourhood of a seen LA
        is predicted). ``la``: leave-one-LA-out (how well a new LA is predicted) by PSIS on the
        log-likelihood summed over each LA's rows; LAs whose Pareto k is above the threshold
        (:func:`hierarchy.results.cv.pareto_k_threshold`) are left out exactly by refits, one
        per LA, when there are at most ``max_refits`` of them in every model, and otherwise
        K-fold by LA (``folds``) replaces PSIS. ``la-kfold``: K-fold by LA, ``folds`` refits per
        model.
    folds : int
        Folds of K-fold by LA (LAs assigned at random with ``seed``; the same folds for every model).
    max_refits : int
        Most exact refits per model for ``cv="la"`` before K-fold is used instead; 0: PSIS only.
    seed : int
        Seed of the fold assignment.
    fits_dir : path, optional
        Where refits are saved and found again (:func:`hierarchy.results.cv.fit_without`).
    batched : bool, optional
        Run each model's refits in one compiled program (:func:`hierarchy.results.cv.heldout_lpd_batched`:
        the full table's layout with each fold's rows masked) instead of one fit per fold. Models that
        cannot batch (:func:`hierarchy.results.cv.batch_unsupported`: nutpie/PyMC, Laplace, BYM2) are
        refitted fold by fold either way. Default: batched unless ``fits_dir`` asks for the refits to
        be saved as fit files (batched refits are not saved).
    log : callable, optional
        Gets progress lines (refits).

    Returns
    -------
    ModelComparison

    Raises
    ------
    HierarchyError
        When the fits are of different data or outcomes, or their rows differ, or refits are
        needed without the data.
    """
    if cv not in CV_MODES:
        from hierarchy.config import did_you_mean

        raise HierarchyError(f"unknown cross-validation '{cv}'{did_you_mean(cv, CV_MODES)}; choose from "
                             f"{', '.join(CV_MODES)}")
    if cv != "rows" and (int(folds) < 2 or int(max_refits) < 0):
        raise HierarchyError(f"--folds must be at least 2 (got {folds}) and --max-refits at least 0 "
                             f"(got {max_refits})")
    paths = [Path(f) for f in fits]
    if len(paths) < 2:
        raise HierarchyError("compare-models needs at least two fit files")
    idatas = [load_fit(p) for p in paths]
    provs = [provenance(i) for i in idatas]
    check_same_data(paths, provs)
    names = list(names) if names is not None else model_names(provs, paths)
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise HierarchyError(f"need {len(paths)} distinct names, got {names}")
    stored = {n: i.groups() for n, i in zip(names, idatas, strict=True)}
    heads = headline_side_by_side(idatas, names)
    sentences = side_by_side_sentence(heads)
    no_loo = loo_impossible(names, idatas)
    if no_loo:
        return ModelComparison(table=pd.DataFrame(), pareto=pd.DataFrame(), worst=pd.DataFrame(), loo={},
                               warnings=[], findings=[], cv="none", cv_note=no_loo, headlines=heads,
                               headline_sentences=sentences)
    table_data = load_table(data, columns, provs, paths) if data is not None else None
    idatas = with_log_likelihood(paths, idatas, table_data)
    check_comparable(paths, idatas, provs)
    if cv == "rows":
        result = ModelComparison(**elpd_by_rows(names, paths, idatas, stored))
    else:
        result = ModelComparison(**elpd_by_la(names, paths, idatas, stored, table_data, cv=cv, folds=folds,
                                              max_refits=max_refits, seed=seed, fits_dir=fits_dir,
                                              batched=fits_dir is None if batched is None else bool(batched),
                                              log=log))
    result.headlines, result.headline_sentences = heads, sentences
    return result


def _text_table(frame: pd.DataFrame, formats: dict[str, str]) -> str:
    f = format_columns(frame, formats)
    widths = [max(len(str(c)), *(len(v) for v in f[c])) for c in f.columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(f.columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
              for row in f.itertuples(index=False)]
    return "\n".join(lines)


def write_model_comparison(result: ModelComparison, out: str | os.PathLike) -> Path:
    """Write the comparison as CSV tables, Markdown and HTML pages in ``out``.

    ``loo_compare.csv`` (with the ``cv`` used and the k threshold per model), ``pareto_k.csv``,
    ``pareto_k_worst.csv`` and, for the LA modes, ``la_cv.csv`` (per model and LA: k, how it was
    left out, fold; not its ELPD, a function of its counts) and ``refits.csv``; ``headlines.csv``
    (:func:`headline_side_by_side`) when the result has it. Without cross-validation (a spatial fit:
    :attr:`ModelComparison.has_loo` False) only ``headlines.csv`` and the pages, which say why.

    Returns
    -------
    pathlib.Path
        The HTML page.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if result.headlines is not None:
        _write_csv(result.headlines, out / "headlines.csv")
    if not result.has_loo:
        write_pages(out, "Model comparison (headline estimands)",
                    [("Cross-validation", [("p", f"Used: {result.cv_note}.")], None),
                     *_headline_sections(result)], pngs={})
        return out / "index.html"
    _write_csv(result.table, out / "loo_compare.csv")
    _write_csv(result.pareto, out / "pareto_k.csv")
    _write_csv(result.worst, out / "pareto_k_worst.csv")
    if result.la_cv is not None:
        _write_csv(result.la_cv.drop(columns=["elpd"]), out / "la_cv.csv")
    if result.refits is not None:
        _write_csv(result.refits, out / "refits.csv")
    cols = [*result.columns(), "k_threshold", "cv", "fit"]
    unit = "neighbourhood" if result.cv == "rows" else "LA"
    what = {"rows": "PSIS-LOO over neighbourhood rows: expected log predictive density for a left-out "
                    "neighbourhood of an LA the model has seen",
            "la": "leave-one-LA-out: expected log predictive density for a new LA (all its neighbourhoods), "
                  "its LA effects integrated over the fitted LA-level distribution",
            "la-kfold": "K-fold by LA: expected log predictive density of the LAs of each fold, from a "
                        "refit that never saw them, their LA effects integrated over the refit's LA-level "
                        "distribution"}[result.cv]
    sections = [
        ("Cross-validation", [("p", f"Used: {result.cv_note}.")], None),
        ("Findings", bullets(result.findings), None),
        ("Warnings", bullets(result.warnings) if result.warnings else
         [("p", "Every Pareto k above the sample-size threshold was handled (or there were none): the "
                "estimates are reliable.")], None),
        ("Comparison", [("p", f"{what}, summed over {unit}s (higher is better); elpd_diff and dse: "
                              "difference from the best model and its standard error; weight: stacking "
                              "weight; k_bad: Pareto k above k_threshold = min(1 - 1/log10(draws), 0.7).")],
         format_columns(result.table[cols], _FORMATS)),
        ("Pareto k diagnostics", [], format_columns(result.pareto, {"max_k": "{:.2f}", "k_threshold": "{:.2f}"})),
    ]
    if len(result.worst):
        sections.append((f"{unit}s with Pareto k above the threshold", [],
                         format_columns(result.worst.head(50), {"k": "{:.2f}"})))
    if result.refits is not None and len(result.refits):
        sections.append(("Refits", [("p", "Each refit is the model refitted to the table without the "
                                          "held-out LAs' rows (train_rows, train_data_hash).")],
                         result.refits))
    sections += _headline_sections(result)
    title = {"rows": "Model comparison (PSIS-LOO)", "la": "Model comparison (leave-one-LA-out)",
             "la-kfold": "Model comparison (K-fold by LA)"}[result.cv]
    write_pages(out, title, sections, pngs={})
    return out / "index.html"


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` (no index) to ``path`` through the atomic writer: a failed write leaves no half file."""
    from hierarchy.paths import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _headline_sections(result: ModelComparison) -> list[tuple]:
    """The page section of the headline estimands side by side (none without them)."""
    if result.headlines is None:
        return []
    prob = float(result.headlines["prob"].iloc[0]) if len(result.headlines) else 0.9
    text = (f"Posterior mean and {prob:.0%} interval of each model's headline estimands, from the posteriors "
            "only (headlines.csv). Gradient scores are rate multipliers per 10 points of neighbourhood "
            "income deprivation in a typical LA; spatial_* rows are the BYM2 term's measures "
            "(structured share = spatial_mix; sd = spatial_sd; neighbourhood share = spatial_sd^2 / "
            "(spatial_sd^2 + variance of the LA intercepts)).")
    return [("Headline estimands side by side", [("p", text), *bullets(result.headline_sentences)],
             shown_headlines(result.headlines))]

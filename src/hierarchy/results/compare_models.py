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
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import FitFileError, HierarchyError
from hierarchy.inference.diagnostics import LATENT
from hierarchy.reporting.report import bullets, format_columns, write_pages
from hierarchy.results.cv import (
    batch_unsupported,
    fit_seconds,
    heldout_lpd,
    heldout_lpd_batched,
    integration_unsupported,
    la_integrated_log_likelihood,
    la_log_likelihood,
    pareto_k_threshold,
    refit_budget_line,
    refit_plan,
    refit_progress_line,
    stacking_weights,
)
from hierarchy.results.fitfile import load_fit, provenance

CV_MODES = ("rows", "la", "la-kfold")
"""Cross-validation of ``compare-models``: neighbourhood rows, leave-one-LA-out, K-fold by LA."""
_FORMATS = {"elpd_loo": "{:.1f}", "elpd_la": "{:.1f}", "se": "{:.1f}", "elpd_diff": "{:.1f}",
            "dse": "{:.1f}", "p_loo": "{:.1f}", "p_la": "{:.1f}", "weight": "{:.3f}",
            "k_threshold": "{:.2f}"}

__all__ = ["CV_MODES", "ModelComparison", "compare_models", "headline_side_by_side", "loglik_draws", "loo",
           "pareto_k_threshold", "relative_eff", "side_by_side_sentence", "write_model_comparison"]


def loglik_draws(idata) -> np.ndarray:
    """Positions (in the posterior) of the draws the stored log-likelihood was evaluated at."""
    ll_draw = idata.log_likelihood["draw"].to_numpy()
    pos = pd.Index(idata.posterior["draw"].to_numpy()).get_indexer(ll_draw)
    if (pos < 0).any():
        raise FitFileError("the log_likelihood group has draws that are not in the posterior")
    return pos


def relative_eff(idata) -> float:
    """Relative efficiency of the draws the log-likelihood was evaluated at, for PSIS.

    The mean effective sample size of the posterior (hyperparameters and LA coefficients),
    restricted to the log-likelihood draws (a thinned subset when the fit was thinned), over the
    number of those draws. Thinned draws are less autocorrelated, so this is closer to 1 than
    the efficiency of the full chains. (ArviZ's default divides the ESS of *all* posterior
    draws by the number of log-likelihood draws, which overstates it after thinning.)

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit with ``posterior`` and ``log_likelihood`` groups.

    Returns
    -------
    float
        ``r_eff`` for :func:`arviz.loo`; 1.0 with a single chain.
    """
    import arviz as az

    post = idata.posterior.isel(draw=loglik_draws(idata))
    keep = [v for v in post.data_vars if v not in (*LATENT, "la_corr")]
    n = post.sizes["chain"] * post.sizes["draw"]
    if post.sizes["chain"] < 2 or not keep:
        return 1.0
    ess = az.ess(post[keep], method="mean")
    vals = np.concatenate([np.ravel(ess[v].values) for v in ess.data_vars])
    reff = float(np.nanmean(vals)) / n
    return reff if np.isfinite(reff) and reff > 0 else 1.0


def loo(idata, *, var_name: str | None = None):
    """PSIS-LOO of a fit (pointwise), with the relative efficiency of :func:`relative_eff`.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit with a ``log_likelihood`` group (possibly thinned).
    var_name : str, optional
        Log-likelihood variable (default: the only one, the outcome).

    Returns
    -------
    arviz.ELPDData
        With ``pareto_k`` and ``loo_i`` per neighbourhood.
    """
    import arviz as az

    if "log_likelihood" not in idata.groups():
        raise FitFileError("this fit has no log_likelihood group (fit files leave it out: it discloses "
                           "the counts); add it from the data with "
                           "hierarchy.results.fitfile.add_log_likelihood(idata, data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata, pointwise=True, reff=relative_eff(idata), var_name=var_name)


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
                                                   _text_table(_shown_headlines(self.headlines), {}),
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
    _check_same_data(paths, provs)
    names = list(names) if names is not None else _model_names(provs, paths)
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise HierarchyError(f"need {len(paths)} distinct names, got {names}")
    stored = {n: i.groups() for n, i in zip(names, idatas, strict=True)}
    heads = headline_side_by_side(idatas, names)
    sentences = side_by_side_sentence(heads)
    no_loo = _loo_impossible(names, idatas)
    if no_loo:
        return ModelComparison(table=pd.DataFrame(), pareto=pd.DataFrame(), worst=pd.DataFrame(), loo={},
                               warnings=[], findings=[], cv="none", cv_note=no_loo, headlines=heads,
                               headline_sentences=sentences)
    table_data = _load_table(data, columns, provs, paths) if data is not None else None
    idatas = _with_log_likelihood(paths, idatas, table_data)
    _check_comparable(paths, idatas, provs)
    if cv == "rows":
        result = _compare_rows(names, paths, idatas, stored)
    else:
        result = _compare_las(names, paths, idatas, stored, table_data, cv=cv, folds=folds,
                              max_refits=max_refits, seed=seed, fits_dir=fits_dir,
                              batched=fits_dir is None if batched is None else bool(batched), log=log)
    result.headlines, result.headline_sentences = heads, sentences
    return result


def _loo_impossible(names: Sequence[str], idatas: list) -> str:
    """Why no cross-validation can be done (one line), or "" when it can: a spatial fit (BYM2) holds no
    per-neighbourhood effects, so its pointwise log-likelihood cannot be recomputed from the file."""
    from hierarchy.results.fit import as_fit

    spatial = [n for n, i in zip(names, idatas, strict=True)
               if as_fit(i).spec.spatial and "log_likelihood" not in i.groups()]
    if not spatial:
        return ""
    return (f"none: LOO not computed, as {', '.join(spatial)} has a BYM2 term (car(neighbourhood)) whose "
            "per-neighbourhood effects a fit file does not keep, so its pointwise log-likelihood cannot be "
            "recomputed; the models are compared on their headline estimands only")


def _compare_rows(names, paths, idatas, stored) -> ModelComparison:
    """PSIS-LOO over neighbourhood rows."""
    rows = idatas[0].log_likelihood["neighbourhood"].to_numpy()
    loos = {n: loo(i) for n, i in zip(names, idatas, strict=True)}
    table = _az_compare(loos)
    pareto_rows, worst_rows = [], []
    for n, path, i in zip(names, paths, idatas, strict=True):
        k = np.asarray(loos[n].pareto_k)
        thr = pareto_k_threshold(int(loos[n]["n_samples"]))
        pareto_rows.append({"model": n, "fit": str(path), "units": "neighbourhood rows", "n": k.size,
                            **_k_classes(k, thr), "draws": int(loos[n]["n_samples"]),
                            "thinned_by": _thinned_by(i), "log_likelihood": _ll_source(stored[n]),
                            "bad k handled by": "not handled: flagged"})
        bad = np.flatnonzero(k > thr)
        la_of = i.constant_data["la_of"].to_numpy() if "constant_data" in i.groups() else None
        for j in bad[np.argsort(-k[bad])]:
            worst_rows.append({"model": n, "unit": str(rows[j]), "la": str(la_of[j]) if la_of is not None else "",
                               "k": float(k[j]), "method": "PSIS"})
    pareto = pd.DataFrame(pareto_rows)
    worst = pd.DataFrame(worst_rows, columns=["model", "unit", "la", "k", "method"])
    table = _finish_table(table, pareto, names, paths, "rows")
    warns = []
    for _, r in pareto.iterrows():
        n_bad = r["bad"] + r["very bad (k>1)"]
        if n_bad:
            warns.append(f"{r['model']}: {n_bad} of {r['n']} neighbourhoods have Pareto k > "
                         f"{r['k_threshold']:.2f} (the threshold for {r['draws']} draws; largest "
                         f"{r['max_k']:.2f}). For them the importance-sampling estimate of leaving the "
                         "neighbourhood out is unreliable (the fit changes too much without it), so this "
                         "model's ELPD and its difference from the others are uncertain. Consider more "
                         "draws, K-fold cross-validation (--cv la-kfold refits without each fold of LAs) "
                         "or moment matching; they are listed in the 'worst' table.")
    thresholds = sorted({f"{t:.2f}" for t in pareto["k_threshold"]})
    note = ("rows: PSIS-LOO over neighbourhood rows (how well each model predicts a left-out "
            "neighbourhood of an LA it has seen); " +
            ("every Pareto k is at most the threshold (" + "/".join(thresholds) + " for the draws): reliable"
             if not warns else "some Pareto k are above the threshold (" + "/".join(thresholds) +
             "): see the warnings"))
    return ModelComparison(table=table, pareto=pareto, worst=worst, loo=loos, warnings=warns,
                           findings=_model_findings(table, "elpd_loo"), cv="rows", cv_note=note)


def _compare_las(names, paths, idatas, stored, table_data, *, cv, folds, max_refits, seed, fits_dir, log,
                 batched=False) -> ModelComparison:
    """Leave-one-LA-out by PSIS with exact refits, or K-fold by LA."""
    import arviz as az

    from hierarchy.results.fit import as_fit

    psis, basis, summed_k = {}, {}, {}
    for n, i in zip(names, idatas, strict=True):
        summed = loo(az.InferenceData(posterior=i.posterior, log_likelihood=la_log_likelihood(i)))
        why_not = integration_unsupported(as_fit(i).spec)
        if table_data is None or why_not:
            psis[n], basis[n] = summed, ("LA's rows summed given its fitted effects (" +
                                         ("no --data to integrate them" if why_not is None else why_not) + ")")
            continue
        integrated = la_integrated_log_likelihood(i, table_data, draws=loglik_draws(i))
        psis[n] = loo(az.InferenceData(posterior=i.posterior, log_likelihood=integrated))
        basis[n] = "LA's effects integrated over the LA-level distribution"
        thr_n = pareto_k_threshold(int(summed["n_samples"]))
        summed_k[n] = int((np.asarray(summed.pareto_k) > thr_n).sum())
    las = np.asarray(psis[names[0]].loo_i["la"].to_numpy()).astype(str)
    draws = {n: int(psis[n]["n_samples"]) for n in names}
    thr = {n: pareto_k_threshold(draws[n]) for n in names}
    k = {n: np.asarray(psis[n].pareto_k) for n in names}
    bad = {n: las[k[n] > thr[n]] for n in names}
    n_bad = max(len(b) for b in bad.values())
    k_text = "; ".join(f"{n}: {len(bad[n])} of {len(las)} LAs with k > {thr[n]:.2f} (largest {k[n].max():.2f}), "
                       f"PSIS with the {basis[n]}" +
                       (f" ({summed_k[n]} of {len(las)} above it with the LA's rows summed given its fitted "
                        "effects)" if n in summed_k else "") for n in names)
    warns: list[str] = []
    exact = False  # exact refits of the LAs with k above the threshold
    method = {n: np.array(["PSIS"] * len(las), dtype=object) for n in names}
    fold_of = pd.Series(-1, index=pd.Index(las, name="la"))
    can_refit = table_data is not None and not any(integration_unsupported(as_fit(i).spec) for i in idatas)
    how, plan, fold_of, why = refit_plan(las, bad, cv=cv, folds=folds, max_refits=max_refits, seed=seed) \
        if cv == "la-kfold" or can_refit else ("psis", {}, fold_of, "")
    if cv == "la-kfold":
        mode, note = "la-kfold", (f"la-kfold: K-fold by LA, {folds} folds, each a refit without its LAs "
                                  f"(asked for; leave-one-LA-out PSIS for reference: {k_text})")
    elif n_bad == 0:
        mode, note = "la", (f"la: leave-one-LA-out by PSIS (how well each model predicts a new LA); every "
                            f"LA-level Pareto k is at most the threshold for the draws: {k_text}")
    elif not can_refit or how == "psis":
        mode = "la"
        unsupported = [f"{n} ({w})" for n, i in zip(names, idatas, strict=True)
                       if (w := integration_unsupported(as_fit(i).spec))]
        why = ("no --data to refit from" if table_data is None else
               "refits by LA are not available for " + "; ".join(unsupported) if unsupported else why)
        fix = ("pass --data to refit them exactly, or use --cv la-kfold" if table_data is None else
               "compare by --cv rows" if unsupported else
               f"raise --max-refits to {n_bad} for exact refits, or to 2 or more for K-fold by LA")
        note = f"la: leave-one-LA-out by PSIS only ({why}); {k_text}"
        warns.append(f"LA-level Pareto k above the threshold ({k_text}) and no refits ({why}): the "
                     f"leave-one-LA-out ELPD of those LAs is unreliable; {fix}.")
    elif how == "exact":
        exact = True
        mode, note = "la", (f"la: leave-one-LA-out by PSIS, with exact refits for the LAs whose Pareto k is "
                            f"above the threshold ({k_text}; at most --max-refits {max_refits})")
    else:
        mode, note = "la-kfold", (f"la-kfold: {why}, instead of leave-one-LA-out PSIS ({k_text})")
    pointwise = {n: np.asarray(psis[n].loo_i).astype(float).copy() for n in names}
    refit_rows = []
    if mode == "la-kfold" or exact:
        if table_data is None:
            raise HierarchyError("K-fold by LA refits each model: pass the table the fits were made from "
                                 "(--data TABLE [--columns MAP.toml])")
        total, done, t0 = sum(len(g) for g in plan.values()), 0, time.perf_counter()
        if log:
            log(refit_budget_line(plan, {n: fit_seconds(i) for n, i in zip(names, idatas, strict=True)}, why))
        for n, i in zip(names, idatas, strict=True):
            for f, held, (lpd, facts) in _refits(n, i, plan[n], table_data, batched=batched, fits_dir=fits_dir,
                                                 log=log):
                done += 1
                if log:
                    log(refit_progress_line(done, total, time.perf_counter() - t0))
                pos = pd.Index(las).get_indexer(lpd.index)
                pointwise[n][pos] = lpd.to_numpy()
                method[n][pos] = "K-fold" if mode == "la-kfold" else "exact refit"
                refit_rows.append({"model": n, "fold": f if mode == "la-kfold" else -1,
                                   "las_held_out": len(held), **facts})
    loos = {n: _replace_pointwise(psis[n], pointwise[n], exact=(method[n] != "PSIS"), thr=thr[n])
            for n in names}
    table = _az_compare(loos).rename(columns={"elpd_loo": "elpd_la", "p_loo": "p_la"})
    pareto_rows, worst_rows, la_rows = [], [], []
    for n, path, i in zip(names, paths, idatas, strict=True):
        handled = {"PSIS": 0, "exact refit": 0, "K-fold": 0} | dict(zip(*np.unique(method[n], return_counts=True),
                                                                        strict=True))
        how = ("K-fold by LA" if mode == "la-kfold" else
               f"{handled['exact refit']} exact refit(s)" if handled["exact refit"] else
               "none above the threshold" if not len(bad[n]) else "not handled: flagged")
        pareto_rows.append({"model": n, "fit": str(path), "units": "LAs", "n": len(las),
                            **_k_classes(k[n], thr[n]), "draws": draws[n], "thinned_by": _thinned_by(i),
                            "log_likelihood": _ll_source(stored[n]), "bad k handled by": how})
        order = np.argsort(-k[n])
        for j in order[k[n][order] > thr[n]]:
            worst_rows.append({"model": n, "unit": las[j], "la": las[j], "k": float(k[n][j]),
                               "method": method[n][j]})
        la_rows += [{"model": n, "la": c, "k": float(k[n][j]), "method": method[n][j],
                     "fold": int(fold_of.get(c, -1)), "elpd": float(pointwise[n][j])}
                    for j, c in enumerate(las)]
    pareto = pd.DataFrame(pareto_rows)
    worst = pd.DataFrame(worst_rows, columns=["model", "unit", "la", "k", "method"])
    table = _finish_table(table, pareto, names, paths, mode)
    refits = pd.DataFrame(refit_rows, columns=["model", "fold", "las_held_out", "status", "train_rows",
                                               "train_data_hash", "heldout_rows", "heldout_data_hash",
                                               "diagnostics"])
    warns += _refits_off_bar(refits, dict(zip(names, idatas, strict=True)))
    return ModelComparison(table=table, pareto=pareto, worst=worst, loo=loos, warnings=warns,
                           findings=_model_findings(table, "elpd_la"), cv=mode, cv_note=note,
                           la_cv=pd.DataFrame(la_rows), refits=refits)


def _refits(name: str, idata, groups: list[list[str]], table_data: pd.DataFrame, *, batched: bool, fits_dir,
            log) -> Iterator[tuple[int, list[str], tuple[pd.Series, dict]]]:
    """``(fold, held-out LAs, (lpd, facts))`` of each refit of one model: all in one program when
    ``batched`` and the model can batch (:func:`hierarchy.results.cv.batch_unsupported`), else one fit per
    fold (saved in ``fits_dir``)."""
    why = batch_unsupported(idata) if batched and groups else "not asked for"
    if why is None:
        yield from ((f, g, r) for f, (g, r) in enumerate(zip(groups, heldout_lpd_batched(
            idata, table_data, groups, log=log, label=name), strict=True)))
        return
    if batched and groups and log:
        log(f"{name}: refits fold by fold, not batched: {why}")
    for f, held in enumerate(groups):
        yield f, held, heldout_lpd(idata, table_data, held, fits_dir=fits_dir, label=name, log=log)


def _refits_off_bar(refits: pd.DataFrame, idatas: dict) -> list[str]:
    """A warning per model whose fit met the convergence bar and some of whose refits did not (a fit
    that missed it is flagged on its own, and its refits, with its settings, are expected to miss it too)."""
    out = []
    missed = refits[refits["diagnostics"].fillna("ok").str.startswith("warn")]
    for n, part in missed.groupby("model", sort=False):
        if provenance(idatas[n]).get("diagnostics", {}).get("status") != "ok":
            continue
        out.append(f"{n}: {len(part)} of {int((refits['model'] == n).sum())} refits missed the convergence bar "
                   f"that its fit met (first: fold {part['fold'].iloc[0]}, {part['diagnostics'].iloc[0]}); their "
                   "held-out ELPD is less certain than its SE says: refit the model with more draws (--draws)")
    return out


def _replace_pointwise(elpd, values: np.ndarray, *, exact: np.ndarray, thr: float):
    """An ELPDData with its pointwise values replaced (exact held-out ones where ``exact``)."""
    out = elpd.copy()
    lppd = float(elpd["elpd_loo"] + elpd["p_loo"])
    total = float(np.sum(values))
    out["loo_i"] = elpd["loo_i"].copy(data=values)
    out["elpd_loo"] = total
    out["se"] = float(np.sqrt(len(values) * np.var(values)))
    out["p_loo"] = lppd - total
    out["warning"] = bool(np.any((np.asarray(elpd.pareto_k) > thr) & ~exact))
    return out


def _k_classes(k: np.ndarray, thr: float) -> dict[str, Any]:
    """Counts of Pareto k by class against the sample-size-dependent threshold."""
    return {"good": int((k <= thr).sum()), "bad": int(((k > thr) & (k <= 1)).sum()),
            "very bad (k>1)": int((k > 1).sum()), "max_k": float(np.nanmax(k)), "k_threshold": thr}


def _ll_source(groups) -> str:
    return "stored in the fit" if "log_likelihood" in groups else "recomputed from the data"


def _az_compare(loos: dict) -> pd.DataFrame:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(loos, ic="loo", method="stacking", scale="log")
    table = table.reset_index().rename(columns={"index": "model"})
    # ArviZ's stacking underflows on LA-level values (sums of rows): weights from the log scale instead
    table["weight"] = table["model"].map(stacking_weights({n: np.asarray(e.loo_i) for n, e in loos.items()}))
    return table


def _finish_table(table: pd.DataFrame, pareto: pd.DataFrame, names, paths, mode: str) -> pd.DataFrame:
    table["k_bad"] = table["model"].map(dict(zip(pareto["model"], pareto["bad"] + pareto["very bad (k>1)"],
                                                 strict=True)))
    table["k_threshold"] = table["model"].map(dict(zip(pareto["model"], pareto["k_threshold"], strict=True)))
    table["cv"] = mode
    table["fit"] = table["model"].map(dict(zip(names, map(str, paths), strict=True)))
    return table


def _thinned_by(idata) -> int:
    """Step between the posterior draws the log-likelihood was evaluated at."""
    pos = loglik_draws(idata)
    return int(pos[1] - pos[0]) if len(pos) > 1 else 1


def _load_table(data: Any, columns: Any, provs: list[dict], paths: list[Path]) -> pd.DataFrame:
    """The data table in canonical columns, validated with every column the models name; without
    ``columns``, with the column map recorded in the fits (as ``report`` and ``predict`` do) when the
    file has the user's names."""
    if isinstance(data, pd.DataFrame):
        return data
    from hierarchy.data import table as data_mod
    from hierarchy.language.spec import ModelSpec

    specs = [ModelSpec.from_dict(p["model_spec"]) for p in provs]
    named = {k: tuple(dict.fromkeys(c for s in specs for c in s.data_columns[k]))
             for k in ("counts", "strata", "keys")}
    cmap = data_mod.load_column_map(columns) if columns else _recorded_map(data, provs, paths)
    return data_mod.load(data, columns=cmap, **named)


def _recorded_map(data: Any, provs: list[dict], paths: list[Path]):
    """The column map the fits recorded, if they agree and the file has the user's names, else None."""
    from hierarchy.data import table as data_mod

    maps = [p.get("column_map") or {} for p in provs]
    merged: dict[str, str] = {}
    for path, m in zip(paths, maps, strict=True):
        clash = [c for c, u in m.items() if merged.get(c, u) != u]
        if clash:
            raise HierarchyError(f"{path} recorded another column map than the other fits (for "
                                 f"{', '.join(clash)}): pass the table's map with --columns MAP.toml")
        merged.update(m)
    header = set(map(str, data_mod.read_table(data).columns))
    if not merged or set(merged) <= header:
        return None
    return data_mod.ColumnMap(columns=merged, path=Path(f"the column map recorded in {paths[0]}"))


def _with_log_likelihood(paths: list[Path], idatas: list, table: pd.DataFrame | None) -> list:
    """Each fit with its pointwise log-likelihood: stored, or recomputed from ``table``."""
    from hierarchy.results.fitfile import add_log_likelihood

    lacking = [p for p, i in zip(paths, idatas, strict=True) if "log_likelihood" not in i.groups()]
    if not lacking:
        return idatas
    if table is None:
        raise HierarchyError(
            f"{', '.join(map(str, lacking))} hold(s) no pointwise log-likelihood: fit files leave it "
            "out by default because with the posterior it gives back every observed count. LOO "
            "needs it: pass the table the fits were made from, where the data are "
            "(hierarchy compare-models FIT FIT ... --data TABLE [--columns MAP.toml]); it is "
            "recomputed in memory and not saved. (Or refit with --include-log-likelihood, which "
            "makes the fit files disclosive.)")
    return [add_log_likelihood(i, table) for i in idatas]


ROWS_PARTS = {"rows": "rows (neighbourhoods, strata, LAs)", "outcome": "outcome counts", "exposure": "exposure"}
"""The parts of ``provenance["rows_hash"]`` (:func:`hierarchy.data.table.rows_hash`) and what each is."""


def _check_same_data(paths: list[Path], provs: list[dict]) -> None:
    """Refuse fits of different rows, outcomes or exposures (naming which); a model that reads more
    columns of the same table (``+ rural + w:rural``) is comparable. Fits without ``rows_hash``
    (made before it was recorded) must have the same data hash."""
    if len({p["data_hash"] for p in provs}) > 1:
        hashes = [p.get("rows_hash") for p in provs]
        if all(isinstance(h, dict) for h in hashes):
            differ = [part for part in ROWS_PARTS if len({h.get(part) for h in hashes}) > 1]
            if not differ:
                return
            what = " and ".join(ROWS_PARTS[d] for d in differ)
            listing = "; ".join(f"{path} ({', '.join(f'{d} {h.get(d)}' for d in differ)}, from "
                                f"{p.get('data_source') or '?'})"
                                for path, p, h in zip(paths, provs, hashes, strict=True))
            raise HierarchyError(f"cannot compare these fits: their {what} differ. LOO compares how well each "
                                 "model predicts the same counts of the same neighbourhoods. Got "
                                 f"{listing}. Refit the models on one table with one outcome and exposure.")
        listing = "; ".join(f"{path} (data hash {p['data_hash']}, from {p.get('data_source') or '?'})"
                            for path, p in zip(paths, provs, strict=True))
        old = [str(path) for path, h in zip(paths, hashes, strict=True) if not isinstance(h, dict)]
        raise HierarchyError("cannot compare fits of different data: LOO compares how well each "
                             "model predicts the same neighbourhoods, so all fits must come from "
                             f"the same table. Got {listing}. {', '.join(old)} record(s) no hash of the rows, "
                             "outcome and exposure alone (fitted before it was recorded), so a model that reads "
                             "more columns of the same table looks like other data: refit them on one table.")
    if len({p["model_spec"]["outcome"] for p in provs}) > 1:
        listing = "; ".join(f"{path} models '{p['model_spec']['outcome']}'"
                            for path, p in zip(paths, provs, strict=True))
        raise HierarchyError("cannot compare fits of different outcomes: their log likelihoods "
                             f"are of different counts and are not comparable ({listing}).")


def _check_comparable(paths: list[Path], idatas: list, provs: list[dict]) -> None:
    """Refuse fits without a log-likelihood or of other rows."""
    rows0 = None
    for path, i in zip(paths, idatas, strict=True):
        if "log_likelihood" not in i.groups():
            raise FitFileError(f"{path} has no log_likelihood group; pass the data to recompute it")
        rows = i.log_likelihood["neighbourhood"].to_numpy()
        if rows0 is None:
            rows0 = rows
        elif not np.array_equal(rows, rows0):
            raise HierarchyError(f"{path} has different neighbourhood rows from {paths[0]}; "
                                 "fits must cover the same rows in the same order")


def _model_names(provs: list[dict], paths: list[Path]) -> list[str]:
    names = [p["model_spec"]["name"] for p in provs]
    if len(set(names)) < len(names):
        names = [f"{p['model_spec']['name']} / {p['priors']['name']}" for p in provs]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def _model_findings(table: pd.DataFrame, col: str) -> list[str]:
    best = table.iloc[0]
    out = [f"{best['model']} has the highest expected log predictive density "
           f"({col} {best[col]:.1f}, SE {best['se']:.1f}; stacking weight {best['weight']:.2f})."]
    for _, r in table.iloc[1:].iterrows():
        diff, dse = r["elpd_diff"], r["dse"]
        ratio = diff / dse if dse > 0 else np.inf
        verdict = ("a clear preference" if ratio > 4 else
                   "a modest preference (2-4 standard errors)" if ratio > 2 else
                   "within 2 standard errors: the data do not clearly prefer either")
        out.append(f"{r['model']}: {col} {diff:.1f} lower (SE of the difference {dse:.1f}, "
                   f"{ratio:.1f} SE): {verdict}; stacking weight {r['weight']:.2f}.")
    return out


def _text_table(frame: pd.DataFrame, formats: dict[str, str]) -> str:
    f = format_columns(frame, formats)
    widths = [max(len(str(c)), *(len(v) for v in f[c])) for c in f.columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(f.columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
              for row in f.itertuples(index=False)]
    return "\n".join(lines)


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


def _shown_headlines(table: pd.DataFrame) -> pd.DataFrame:
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
    result.table.to_csv(out / "loo_compare.csv", index=False)
    result.pareto.to_csv(out / "pareto_k.csv", index=False)
    result.worst.to_csv(out / "pareto_k_worst.csv", index=False)
    if result.la_cv is not None:
        result.la_cv.drop(columns=["elpd"]).to_csv(out / "la_cv.csv", index=False)
    if result.refits is not None:
        result.refits.to_csv(out / "refits.csv", index=False)
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
             _shown_headlines(result.headlines))]

"""Comparing saved fits by PSIS-LOO: ``hierarchy compare-models``.

:func:`compare_models` compares saved fits of the same data and outcome by PSIS-LOO: ELPD,
differences and their standard errors, stacking weights and Pareto-k diagnostics, with a plain
warning when any k > 0.7. Fits whose log-likelihood was thinned
(``provenance["log_likelihood_thinned_by"] > 1``) get a relative efficiency computed from the
posterior draws the log-likelihood was evaluated at (:func:`relative_eff`).
:func:`write_model_comparison` writes the tables and pages. Fit files hold no pointwise
log-likelihood unless fitted with ``--include-log-likelihood`` (it discloses the counts); with
``data`` (``--data``) it is recomputed from the table in memory
(:func:`hierarchy.results.fitfile.add_log_likelihood`).

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
every Pareto k <= 0.7)::

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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import FitFileError, HierarchyError
from hierarchy.inference.diagnostics import LATENT
from hierarchy.reporting.report import bullets, format_columns, write_pages
from hierarchy.results.fitfile import load_fit, provenance

PARETO_K_THRESHOLD = 0.7
"""Pareto k above which a PSIS-LOO term is unreliable."""
_FORMATS = {"elpd_loo": "{:.1f}", "se": "{:.1f}", "elpd_diff": "{:.1f}", "dse": "{:.1f}",
            "p_loo": "{:.1f}", "weight": "{:.3f}"}

__all__ = ["PARETO_K_THRESHOLD", "ModelComparison", "compare_models", "loglik_draws", "loo",
           "relative_eff", "write_model_comparison"]


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
    """PSIS-LOO comparison of saved fits (see :func:`compare_models`).

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`arviz.compare` (stacking weights) plus Pareto-k counts and file names, best first.
    pareto : pandas.DataFrame
        Per model: neighbourhoods with k <= 0.5 (good), 0.5-0.7 (ok), 0.7-1 (bad), > 1 (very
        bad), the largest k and the sample-size-dependent threshold.
    worst : pandas.DataFrame
        Neighbourhoods with k > 0.7 (model, neighbourhood, la, k), worst first.
    loo : dict
        Model name -> :class:`arviz.ELPDData`.
    warnings : list of str
        Plain-language warnings.
    findings : list of str
        Plain-language summary of the comparison.
    """

    table: pd.DataFrame
    pareto: pd.DataFrame
    worst: pd.DataFrame
    loo: dict[str, Any]
    warnings: list[str]
    findings: list[str]

    def format(self) -> str:
        """Plain-text summary for the terminal."""
        cols = ["model", "rank", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "weight",
                "k_gt_0.7"]
        lines = [_text_table(self.table[cols], _FORMATS), ""]
        lines += self.findings
        if self.warnings:
            lines += ["", *(f"warning: {w}" for w in self.warnings)]
        return "\n".join(lines)


def compare_models(fits: Sequence[str | os.PathLike], *, names: Sequence[str] | None = None,
                   data: Any = None, columns: str | os.PathLike | None = None) -> ModelComparison:
    """Compare saved fits of the same data and outcome by PSIS-LOO.

    Fit files hold no pointwise log-likelihood by default (it would give back the observed
    counts); with ``data`` it is recomputed from the table, in memory, for each fit without one.

    Parameters
    ----------
    fits : sequence of path
        Two or more fit files.
    names : sequence of str, optional
        Labels (default: the model names, made unique with the prior set or file name).
    data : str, os.PathLike or pandas.DataFrame, optional
        The table the fits were made from (its data hash must match theirs).
    columns : str or os.PathLike, optional
        Column map of ``data``.

    Returns
    -------
    ModelComparison

    Raises
    ------
    HierarchyError
        When the fits are of different data or outcomes, or their rows differ.
    """
    import arviz as az

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
    idatas = _with_log_likelihood(paths, idatas, data, columns)
    _check_comparable(paths, idatas, provs)
    rows = idatas[0].log_likelihood["neighbourhood"].to_numpy()
    loos = {n: loo(i) for n, i in zip(names, idatas, strict=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(loos, ic="loo", method="stacking", scale="log")
    table = table.reset_index().rename(columns={"index": "model"})
    pareto_rows, worst_rows = [], []
    for n, path, i in zip(names, paths, idatas, strict=True):
        k = np.asarray(loos[n].pareto_k)
        pareto_rows.append({"model": n, "fit": str(path), "neighbourhoods": k.size,
                            "good (k<=0.5)": int((k <= 0.5).sum()),
                            "ok (0.5<k<=0.7)": int(((k > 0.5) & (k <= 0.7)).sum()),
                            "bad (0.7<k<=1)": int(((k > 0.7) & (k <= 1)).sum()),
                            "very bad (k>1)": int((k > 1).sum()), "max_k": float(np.nanmax(k)),
                            "k_threshold_for_draws": float(loos[n]["good_k"]),
                            "draws": int(loos[n]["n_samples"]),
                            "thinned_by": _thinned_by(i),
                            "log_likelihood": "stored in the fit" if "log_likelihood" in stored[n]
                            else "recomputed from the data"})
        bad = np.flatnonzero(k > PARETO_K_THRESHOLD)
        la_of = i.constant_data["la_of"].to_numpy() if "constant_data" in i.groups() else None
        for j in bad[np.argsort(-k[bad])]:
            worst_rows.append({"model": n, "neighbourhood": str(rows[j]),
                               "la": str(la_of[j]) if la_of is not None else "", "k": float(k[j])})
    pareto = pd.DataFrame(pareto_rows)
    worst = pd.DataFrame(worst_rows, columns=["model", "neighbourhood", "la", "k"])
    table["k_gt_0.7"] = table["model"].map(
        dict(zip(pareto["model"], pareto["bad (0.7<k<=1)"] + pareto["very bad (k>1)"], strict=True)))
    table["fit"] = table["model"].map(dict(zip(names, map(str, paths), strict=True)))
    warns = []
    for _, r in pareto.iterrows():
        n_bad = r["bad (0.7<k<=1)"] + r["very bad (k>1)"]
        if n_bad:
            warns.append(f"{r['model']}: {n_bad} of {r['neighbourhoods']} neighbourhoods have Pareto "
                         f"k > {PARETO_K_THRESHOLD} (largest {r['max_k']:.2f}). For them the "
                         "importance-sampling estimate of leaving the neighbourhood out is "
                         "unreliable (the fit changes too much without it), so this model's ELPD "
                         "and its difference from the others are uncertain. Consider K-fold "
                         "cross-validation (refit without each fold of LAs or neighbourhoods) or "
                         "moment matching; neighbourhoods with k > 0.7 are listed in the "
                         "'worst' table.")
    return ModelComparison(table=table, pareto=pareto, worst=worst, loo=loos, warnings=warns,
                           findings=_model_findings(table))


def _thinned_by(idata) -> int:
    """Step between the posterior draws the log-likelihood was evaluated at."""
    pos = loglik_draws(idata)
    return int(pos[1] - pos[0]) if len(pos) > 1 else 1


def _with_log_likelihood(paths: list[Path], idatas: list, data: Any, columns: Any) -> list:
    """Each fit with its pointwise log-likelihood: stored, or recomputed from ``data``."""
    from hierarchy.results.fitfile import add_log_likelihood

    lacking = [p for p, i in zip(paths, idatas, strict=True) if "log_likelihood" not in i.groups()]
    if not lacking:
        return idatas
    if data is None:
        raise HierarchyError(
            f"{', '.join(map(str, lacking))} hold(s) no pointwise log-likelihood: fit files leave it "
            "out by default because with the posterior it gives back every observed count. LOO "
            "needs it: pass the table the fits were made from, where the data are "
            "(hierarchy compare-models FIT FIT ... --data TABLE [--columns MAP.toml]); it is "
            "recomputed in memory and not saved. (Or refit with --include-log-likelihood, which "
            "makes the fit files disclosive.)")
    if not isinstance(data, pd.DataFrame):
        from hierarchy.data import table as data_mod

        cmap = data_mod.load_column_map(columns) if columns else None
        data = data_mod.load(data, columns=cmap)
    return [add_log_likelihood(i, data) for i in idatas]


def _check_same_data(paths: list[Path], provs: list[dict]) -> None:
    """Refuse fits of different data or outcomes."""
    if len({p["data_hash"] for p in provs}) > 1:
        listing = "; ".join(f"{path} (data hash {p['data_hash']}, from {p.get('data_source') or '?'})"
                            for path, p in zip(paths, provs, strict=True))
        raise HierarchyError("cannot compare fits of different data: LOO compares how well each "
                             "model predicts the same neighbourhoods, so all fits must come from "
                             f"the same table. Got {listing}. Refit the models on one table.")
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


def _model_findings(table: pd.DataFrame) -> list[str]:
    best = table.iloc[0]
    out = [f"{best['model']} has the highest expected log predictive density "
           f"(elpd_loo {best['elpd_loo']:.1f}, SE {best['se']:.1f}; stacking weight "
           f"{best['weight']:.2f})."]
    for _, r in table.iloc[1:].iterrows():
        diff, dse = r["elpd_diff"], r["dse"]
        ratio = diff / dse if dse > 0 else np.inf
        verdict = ("a clear preference" if ratio > 4 else
                   "a modest preference (2-4 standard errors)" if ratio > 2 else
                   "within 2 standard errors: the data do not clearly prefer either")
        out.append(f"{r['model']}: elpd_loo {diff:.1f} lower (SE of the difference {dse:.1f}, "
                   f"{ratio:.1f} SE): {verdict}; stacking weight {r['weight']:.2f}.")
    return out


def _text_table(frame: pd.DataFrame, formats: dict[str, str]) -> str:
    f = format_columns(frame, formats)
    widths = [max(len(str(c)), *(len(v) for v in f[c])) for c in f.columns]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(f.columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
              for row in f.itertuples(index=False)]
    return "\n".join(lines)


def write_model_comparison(result: ModelComparison, out: str | os.PathLike) -> Path:
    """Write the comparison as CSV tables, Markdown and HTML pages in ``out``.

    Returns
    -------
    pathlib.Path
        The HTML page.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "loo_compare.csv", index=False)
    result.pareto.to_csv(out / "pareto_k.csv", index=False)
    result.worst.to_csv(out / "pareto_k_worst.csv", index=False)
    cols = ["model", "rank", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "weight", "k_gt_0.7", "fit"]
    sections = [
        ("Findings", bullets(result.findings), None),
        ("Warnings", bullets(result.warnings) if result.warnings else
         [("p", "All Pareto k <= 0.7: the PSIS-LOO estimates are reliable.")], None),
        ("PSIS-LOO comparison", [("p", "elpd_loo: expected log predictive density for a left-out "
                                       "neighbourhood, summed over neighbourhoods (higher is better); "
                                       "elpd_diff and dse: difference from the best model and its "
                                       "standard error; weight: stacking weight.")],
         format_columns(result.table[cols], _FORMATS)),
        ("Pareto k diagnostics", [], format_columns(result.pareto, {"max_k": "{:.2f}",
                                                                    "k_threshold_for_draws": "{:.2f}"})),
    ]
    if len(result.worst):
        sections.append(("Neighbourhoods with k > 0.7", [],
                         format_columns(result.worst.head(50), {"k": "{:.2f}"})))
    write_pages(out, "Model comparison (PSIS-LOO)", sections, pngs={})
    return out / "index.html"

"""The ELPD tables of ``hierarchy compare-models``: PSIS-LOO over rows, by LA with refits, K-fold by LA.

:func:`loo` is PSIS-LOO of one fit (with the relative efficiency of its possibly thinned log-likelihood
draws, :func:`relative_eff`). :func:`elpd_by_rows` compares fits over neighbourhood rows;
:func:`elpd_by_la` leaves LAs out: PSIS on each LA's log-likelihood (its effects integrated out where the
data allow), exact refits of the LAs whose Pareto k is above the threshold, or K-fold by LA
(:mod:`hierarchy.results.cv`). Both return the fields of a
:class:`~hierarchy.results.compare_models.ModelComparison`: the comparison table, the Pareto-k
diagnostics, the worst units, warnings and findings.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import FitFileError, HierarchyError
from hierarchy.inference.diagnostics import LATENT
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
from hierarchy.results.fitfile import provenance

__all__ = ["elpd_by_la", "elpd_by_rows", "loglik_draws", "loo", "relative_eff"]


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


def elpd_by_rows(names, paths, idatas, stored) -> dict[str, Any]:
    """PSIS-LOO over neighbourhood rows: the fields of a
    :class:`~hierarchy.results.compare_models.ModelComparison`."""
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
    return dict(table=table, pareto=pareto, worst=worst, loo=loos, warnings=warns,
                findings=_model_findings(table, "elpd_loo"), cv="rows", cv_note=note)


def elpd_by_la(names, paths, idatas, stored, table_data, *, cv, folds, max_refits, seed, fits_dir, log,
               batched=False) -> dict[str, Any]:
    """Leave-one-LA-out by PSIS with exact refits, or K-fold by LA: the fields of a
    :class:`~hierarchy.results.compare_models.ModelComparison`."""
    from hierarchy.results.fit import as_fit

    psis, basis, summed_k = _la_psis(names, idatas, table_data)
    las = np.asarray(psis[names[0]].loo_i["la"].to_numpy()).astype(str)
    draws = {n: int(psis[n]["n_samples"]) for n in names}
    thr = {n: pareto_k_threshold(draws[n]) for n in names}
    k = {n: np.asarray(psis[n].pareto_k) for n in names}
    bad = {n: las[k[n] > thr[n]] for n in names}
    k_text = "; ".join(f"{n}: {len(bad[n])} of {len(las)} LAs with k > {thr[n]:.2f} (largest {k[n].max():.2f}), "
                       f"PSIS with the {basis[n]}" +
                       (f" ({summed_k[n]} of {len(las)} above it with the LA's rows summed given its fitted "
                        "effects)" if n in summed_k else "") for n in names)
    method = {n: np.array(["PSIS"] * len(las), dtype=object) for n in names}
    fold_of = pd.Series(-1, index=pd.Index(las, name="la"))
    can_refit = table_data is not None and not any(integration_unsupported(as_fit(i).spec) for i in idatas)
    how, plan, fold_of, why = refit_plan(las, bad, cv=cv, folds=folds, max_refits=max_refits, seed=seed) \
        if cv == "la-kfold" or can_refit else ("psis", {}, fold_of, "")
    mode, note, exact, warns = _la_mode(cv, how, why, names=names, idatas=idatas, table_data=table_data,
                                        n_bad=max(len(b) for b in bad.values()), can_refit=can_refit,
                                        k_text=k_text, folds=folds, max_refits=max_refits)
    pointwise = {n: np.asarray(psis[n].loo_i).astype(float).copy() for n in names}
    refit_rows = []
    if mode == "la-kfold" or exact:
        refit_rows = _run_refits(names, idatas, plan, why, table_data, las, pointwise, method,
                                 kfold=mode == "la-kfold", batched=batched, fits_dir=fits_dir, log=log)
    loos = {n: _replace_pointwise(psis[n], pointwise[n], exact=(method[n] != "PSIS"), thr=thr[n])
            for n in names}
    table = _az_compare(loos).rename(columns={"elpd_loo": "elpd_la", "p_loo": "p_la"})
    pareto, worst, la_cv = _la_tables(names, paths, idatas, stored, las, k=k, thr=thr, bad=bad, draws=draws,
                                      method=method, pointwise=pointwise, fold_of=fold_of,
                                      kfold=mode == "la-kfold")
    table = _finish_table(table, pareto, names, paths, mode)
    refits = pd.DataFrame(refit_rows, columns=["model", "fold", "las_held_out", "status", "train_rows",
                                               "train_data_hash", "heldout_rows", "heldout_data_hash",
                                               "diagnostics"])
    warns += _refits_off_bar(refits, dict(zip(names, idatas, strict=True)))
    return dict(table=table, pareto=pareto, worst=worst, loo=loos, warnings=warns,
                findings=_model_findings(table, "elpd_la"), cv=mode, cv_note=note, la_cv=la_cv, refits=refits)


def _la_psis(names, idatas, table_data) -> tuple[dict, dict, dict]:
    """Per model: PSIS-LOO over LAs (each LA's effects integrated out where the data allow, else its rows
    summed given its fitted effects), what that rests on in words and, when integrated, how many LAs' k
    were above the threshold with the rows summed."""
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
    return psis, basis, summed_k


def _la_mode(cv: str, how: str, why: str, *, names, idatas, table_data, n_bad: int, can_refit: bool,
             k_text: str, folds: int, max_refits: int) -> tuple[str, str, bool, list[str]]:
    """The cross-validation used (``la`` or ``la-kfold``), why in words, whether the LAs with k above the
    threshold are refitted exactly, and the warning when they are left unreliable."""
    from hierarchy.results.fit import as_fit

    warns: list[str] = []
    exact = False  # exact refits of the LAs with k above the threshold
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
    return mode, note, exact, warns


def _run_refits(names, idatas, plan: dict[str, list[list[str]]], why: str, table_data, las: np.ndarray,
                pointwise: dict[str, np.ndarray], method: dict[str, np.ndarray], *, kfold: bool, batched: bool,
                fits_dir, log) -> list[dict]:
    """Run the refits of ``plan``, putting each held-out LA's exact ELPD into ``pointwise`` and how it was
    left out into ``method`` (both changed in place); one row of facts per refit."""
    if table_data is None:
        raise HierarchyError("K-fold by LA refits each model: pass the table the fits were made from "
                             "(--data TABLE [--columns MAP.toml])")
    refit_rows = []
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
            method[n][pos] = "K-fold" if kfold else "exact refit"
            refit_rows.append({"model": n, "fold": f if kfold else -1, "las_held_out": len(held), **facts})
    return refit_rows


def _la_tables(names, paths, idatas, stored, las: np.ndarray, *, k, thr, bad, draws, method, pointwise, fold_of,
               kfold: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The Pareto-k diagnostics per model, the LAs with k above the threshold (worst first) and, per model
    and LA, its k, how it was left out, its fold and its ELPD."""
    pareto_rows, worst_rows, la_rows = [], [], []
    for n, path, i in zip(names, paths, idatas, strict=True):
        handled = {"PSIS": 0, "exact refit": 0, "K-fold": 0} | dict(zip(*np.unique(method[n], return_counts=True),
                                                                        strict=True))
        how = ("K-fold by LA" if kfold else
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
    return (pd.DataFrame(pareto_rows), pd.DataFrame(worst_rows, columns=["model", "unit", "la", "k", "method"]),
            pd.DataFrame(la_rows))

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

"""Refits for cross-validation by LA (:mod:`hierarchy.results.cv`): one by one, or all in one program.

:func:`fit_without` refits a fit's model, prior set and sampler settings to the table without some
LAs' rows (saved and reused in a folder when asked), and :func:`heldout_lpd` gives the held-out LAs'
log predictive densities from it. :func:`heldout_lpd_batched` runs every fold in one compiled program
(:func:`hierarchy.inference.batch.fit_batch`), each fold the whole table's layout with its held-out
rows masked (:func:`fold_data`); :func:`batch_unsupported` says which fits cannot.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, build_design
from hierarchy.results.cv_heldout import heldout_rows, heldout_within, refuse_unsupported
from hierarchy.results.cv_predictive import flat_posterior, la_log_predictive, la_lpd

REFIT_SETTINGS = ("sampler", "chains", "tune", "draws", "seed", "chain_method", "target_accept",
                  "float32", "warmup_tree_depth")
"""Sampler settings a refit takes from the fit it stands for."""

__all__ = ["REFIT_SETTINGS", "batch_unsupported", "fit_without", "fold_data", "heldout_lpd",
           "heldout_lpd_batched"]


def fit_without(idata, table: pd.DataFrame, las: Sequence[str], *, fits_dir: str | os.PathLike | None = None,
                label: str = "fit", log: Callable[[str], None] | None = None,
                method: str | None = None) -> tuple[Any, Design, str]:
    """Refit a fit's model, prior set and sampler settings to ``table`` without the rows of ``las``.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit the refit stands for (its provenance gives model, priors and sampler settings).
    table : pandas.DataFrame
        The table it was made from (canonical columns; its data hash must be the fit's).
    las : sequence of str
        LA codes whose rows are removed.
    fits_dir : path, optional
        Folder where refits are saved (shareable fit files, like any ``hierarchy fit``) and found
        again: a file there with the same training data hash, model, prior set and sampler settings
        is reused instead of refitting.
    label : str
        Model label for file names and messages.
    log : callable, optional
        Gets one line per refit.
    method : {"nuts", "laplace"}, optional
        How the refit is made (:func:`hierarchy.inference.sampling.fit`); default the fit's own method
        (``"nuts"`` for fits that record none). A model outside the Laplace regime is refitted with NUTS,
        told to ``log``. A saved refit is reused only when made with the same method.

    Returns
    -------
    (arviz.InferenceData, Design, str)
        The refit, its design (the training rows) and ``"fitted"`` or ``"reused"``.
    """
    from hierarchy.data.table import data_hash
    from hierarchy.inference.sampling import fit
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import build_idata, load_fit, provenance, save_fit

    held = as_fit(idata)
    spec, priors = held.spec, held.priors
    prov = provenance(idata)
    codes = table["la"].astype(str)
    left_out = sorted({str(c) for c in las})
    unknown = sorted(set(left_out) - set(codes))
    if unknown:
        raise HierarchyError(f"LA(s) {', '.join(unknown[:5])} are not in the data")
    train = table[~codes.isin(left_out).to_numpy()].reset_index(drop=True)
    if train["la"].nunique() < 2:
        raise HierarchyError("a refit needs at least two LAs left in the training data; use more folds")
    design = build_design(train, spec)
    dhash = data_hash(train, **spec.hashed_columns)
    settings = {k: prov["sampler"][k] for k in REFIT_SETTINGS if k in prov["sampler"]}
    method = _refit_method(spec, design, method or prov["sampler"].get("method") or "nuts", label, log)
    # the method enters the key only where it is not NUTS: refits saved before it existed are found again
    keyed = settings if method == "nuts" else {**settings, "method": method}
    key = hashlib.sha256(json.dumps([dhash, prov["model_hash"], prov["priors_hash"], keyed],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = None
    if fits_dir is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
        path = Path(fits_dir) / f"{safe}__without_{len(left_out)}_la_{key}.nc"
        if path.exists():
            old = load_fit(path)
            p = provenance(old)
            same = (p["data_hash"], p["model_hash"], p["priors_hash"]) == (dhash, prov["model_hash"],
                                                                           prov["priors_hash"])
            same_method = (p["sampler"].get("method") or "nuts") == method
            if same and same_method and {k: p["sampler"].get(k) for k in settings} == settings:
                return old, design, "reused"
    if log:
        log(f"refitting {label} without {len(left_out)} LA(s) ({len(train):,} of {len(table):,} rows)")
    draws = fit(spec, priors, design, **settings, method=method)
    out = build_idata(draws, spec, priors, design, data_hash=dhash,
                      data_source=f"{prov.get('data_source') or 'data'} without LA(s) {', '.join(left_out[:5])}"
                                  f"{' ...' if len(left_out) > 5 else ''}",
                      column_map=prov.get("column_map"))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_fit(out, path)
    return out, design, "fitted"


def _refit_method(spec, design: Design, method: str, label: str, log: Callable[[str], None] | None) -> str:
    """``method``, or ``"nuts"`` (told to ``log``) where the Laplace mode refuses the model."""
    if method not in ("nuts", "laplace"):
        raise HierarchyError(f"refit method {method!r} is not known; choose nuts or laplace")
    if method == "laplace":
        from hierarchy.inference.laplace import refusal

        why = refusal(spec, design)
        if why:
            if log:
                log(f"{label}: method laplace refused for the refits ({why}); refitting with NUTS")
            return "nuts"
    return method


def heldout_lpd(idata, table: pd.DataFrame, las: Sequence[str], **kw) -> tuple[pd.Series, dict]:
    """Refit without ``las`` (:func:`fit_without`) and return their log predictive densities.

    Returns
    -------
    (pandas.Series, dict)
        lpd per held-out LA (indexed by code) and facts about the refit (``status``,
        ``train_rows``, ``train_data_hash``, ``heldout_rows``, ``heldout_data_hash``, ``diagnostics``:
        ``ok`` or ``warn: reasons``).
    """
    from hierarchy.data.table import data_hash
    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    spec = as_fit(idata).spec
    refuse_unsupported(spec, "compare-models")
    refit, train, status = fit_without(idata, table, las, **kw)
    test = table[table["la"].astype(str).isin({str(c) for c in las}).to_numpy()].reset_index(drop=True)
    held = heldout_rows(test, spec, train)
    lpd = la_lpd(la_log_predictive(spec, held, flat_posterior(refit)))
    d = diagnose(refit)
    facts = {"status": status, "train_rows": int(provenance(refit)["design"]["n_rows"]),
             "train_data_hash": provenance(refit)["data_hash"], "heldout_rows": held.n_rows,
             "heldout_data_hash": data_hash(test, **spec.hashed_columns),
             "diagnostics": d["status"] + (": " + "; ".join(d["reasons"]) if d["reasons"] else "")}
    return pd.Series(lpd, index=pd.Index(held.las, name="la")), facts


# ---------------------------------------------------------------------------- batched refits


def batch_unsupported(idata) -> str | None:
    """Why a fit's refits cannot run batched in one program (None: they can).

    Batched refits (:func:`heldout_lpd_batched`) fit the full table's layout with the held-out rows
    masked, with NumPyro NUTS and a fixed number of draws. Not batched: other samplers (nutpie,
    PyMC) and the Laplace mode, and BYM2 models (masking keeps the held-out neighbourhoods in the
    graph, which a refit without their rows does not have).
    """
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    sampler = provenance(idata).get("sampler", {})
    if sampler.get("sampler", "numpyro") != "numpyro":
        return f"its sampler is {sampler['sampler']} (batched refits run NumPyro NUTS)"
    if sampler.get("method", "nuts") != "nuts":
        return f"its method is {sampler['method']} (batched refits run NUTS on every parameter)"
    if as_fit(idata).spec.spatial:
        return "it has a BYM2 term: masking a fold's rows would keep its neighbourhoods in the graph"
    return None


def fold_data(layout, design: Design, train: np.ndarray, dtype=None) -> dict:
    """The model data of ``layout`` with only the rows ``train`` (bool, design row order) observed.

    The other rows are masked (``mask`` 0, count 0) and the whole-data summaries (count histogram,
    rows per stage, ``sum lgamma(y + 1)``) are of the training rows only, so the log density is that
    of the training rows while every array keeps the full layout's shape; the held-out LAs' own
    effects then follow their prior.
    """
    from dataclasses import replace

    from scipy.special import gammaln

    from hierarchy.likelihood.jaxmodel import model_data

    train = np.asarray(train, dtype=bool)
    real = layout.rows >= 0
    keep = real & train[np.where(real, layout.rows, 0)]
    n_stage, hist_len = layout.y_hist.shape
    y, stage = design.y[train].astype(np.int64), design.stage_index[train]
    hist = (np.stack([np.bincount(y[stage == s], minlength=hist_len) for s in range(n_stage)]).astype(float)
            if hist_len else np.zeros((n_stage, 0)))
    fold = replace(layout, mask=keep.astype(float), y=np.where(keep, layout.y, 0.0), y_hist=hist,
                   n_stage_rows=np.bincount(stage, minlength=n_stage).astype(float),
                   lgamma_y1=float(gammaln(y + 1.0).sum()))
    return model_data(fold, dtype)


def heldout_lpd_batched(idata, table: pd.DataFrame, groups: Sequence[Sequence[str]], *,
                        log: Callable[[str], None] | None = None, vectorize: bool | None = None,
                        label: str = "fit") -> list[tuple[pd.Series, dict]]:
    """:func:`heldout_lpd` of every LA group at once: all refits in one compiled program.

    Each refit is the fit's model and prior set on the whole table's layout with the group's rows
    masked (:func:`fold_data`; the held-out LAs' effects follow their prior, which the log predictive
    integrates over anyway), sampled with the fit's NUTS settings by
    :func:`hierarchy.inference.batch.fit_batch`. Unlike :func:`fit_without` the training design's
    constants are the whole table's: LA deprivation centred over every LA (the held-out LAs'
    covariates, never their counts, enter it) and one parameterisation for every fold (chosen from
    the whole table; it does not change the posterior). Refits are not saved as fit files.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit the refits stand for.
    table : pandas.DataFrame
        The table it was made from (its data hash must be the fit's).
    groups : sequence of sequence of str
        The LAs held out by each refit.
    log : callable, optional
        Gets one line before the refits and one after.
    vectorize : bool, optional
        :func:`~hierarchy.inference.batch.fit_batch`'s (default: side by side on an accelerator only).
    label : str
        Model label for messages.

    Returns
    -------
    list of (pandas.Series, dict)
        Per group, as :func:`heldout_lpd`: lpd per held-out LA and facts (``status`` ``"batched"``,
        rows and data hashes of the training and held-out rows, ``diagnostics``: ``ok`` or ``warn:
        reasons`` of the refit by the single-fit bar).
    """
    import jax

    from hierarchy.data.table import data_hash
    from hierarchy.inference.batch import fit_batch
    from hierarchy.likelihood.jaxmodel import make_layout, model_fn
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    fit_ = as_fit(idata)
    spec, priors, prov = fit_.spec, fit_.priors, provenance(idata)
    refuse_unsupported(spec, "compare-models")
    why = batch_unsupported(idata)
    if why:
        raise HierarchyError(f"{label}: refits cannot run batched: {why}; refit fold by fold (batched=False)")
    have = data_hash(table, **spec.hashed_columns)
    if have != prov["data_hash"]:
        raise HierarchyError(f"the data given (hash {have}) are not the data {label} was made from "
                             f"(hash {prov['data_hash']})")
    jax.config.update("jax_enable_x64", True)
    design = build_design(table, spec)
    codes = table["la"].astype(str).to_numpy()
    held_sets = [sorted({str(c) for c in g}) for g in groups]
    unknown = sorted(set().union(*held_sets) - set(codes))
    if unknown:
        raise HierarchyError(f"LA(s) {', '.join(unknown[:5])} are not in the data")
    row_la = design.la_codes[design.la_index]
    trains = [~np.isin(row_la, h) for h in held_sets]
    if any(len(np.unique(row_la[t])) < 2 for t in trains):
        raise HierarchyError("a refit needs at least two LAs left in the training data; use more folds")
    helds = [heldout_within(design, spec, h, t) for h, t in zip(held_sets, trains, strict=True)]
    settings = prov["sampler"]
    layout = make_layout(design)
    data = [fold_data(layout, design, t, "float32" if settings.get("float32") else "float64") for t in trains]
    if log:
        log(f"refitting {label} without each of {len(groups)} LA group(s) in one program "
            f"({len(table):,} rows, the held-out rows masked)")
    res = fit_batch(model_fn(spec, priors, design, layout), data, chains=int(settings.get("chains", 4)),
                    tune=int(settings.get("tune", 1000)), draws=int(settings.get("draws", 1000)),
                    seed=int(settings.get("seed", 0)), target_accept=float(settings.get("target_accept", 0.8)),
                    warmup_tree_depth=int(settings.get("warmup_tree_depth", 6)), vectorize=vectorize)
    if log:
        log(f"{len(groups)} refits of {label} done in {res.timings['compile'] + res.timings['run']:.0f} s "
            f"({res.timings['compile']:.0f} s compiling)")
    out = []
    for b, (held, train) in enumerate(zip(helds, trains, strict=True)):
        post = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.fit(b)[0].items()}
        lpd = la_lpd(la_log_predictive(spec, held, post))
        d = res.diagnostics[b]
        test = table[np.isin(codes, held_sets[b])].reset_index(drop=True)
        facts = {"status": "batched", "train_rows": int(train.sum()),
                 "train_data_hash": data_hash(table[~np.isin(codes, held_sets[b])].reset_index(drop=True),
                                              **spec.hashed_columns),
                 "heldout_rows": held.n_rows, "heldout_data_hash": data_hash(test, **spec.hashed_columns),
                 "diagnostics": d["status"] + (": " + "; ".join(d["reasons"]) if d["reasons"] else "")}
        out.append((pd.Series(lpd, index=pd.Index(held.las, name="la")), facts))
    return out

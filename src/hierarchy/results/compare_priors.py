"""Comparing prior sets: ``hierarchy compare-priors``.

:func:`compare_priors` fits one model under several prior sets and puts side by side

* prior predictive checks in the units of the field (:func:`prior_predictive`): the referral
  rate per 10,000 children that each prior implies for the data's neighbourhoods, by national
  deprivation decile (median and 90% interval over prior draws; rates ``exp(eta)`` without the
  count noise), the share of neighbourhoods whose implied rate exceeds 10,000 per 10,000 (more
  referrals than children: impossible) and the implied gradient scores of a typical LA at mean
  LA deprivation and 10 points less / more;
* the headline estimands under each prior (gradient scores at mean LA deprivation and 10 points
  less / more), with how far their posterior means move between prior sets, as a table and a
  forest plot;
* power-scaling prior sensitivity (:func:`power_scaling`, Kallioinen et al. 2024 via
  :func:`arviz.psens`) of every hyperparameter and headline estimand, with prior-sensitive
  parameters and prior-data conflict flagged in plain words.

Published figures (:mod:`hierarchy.published`, one table with sources) appear only beside the
estimand they describe: the same outcome, LA level, scale and census year. The year is the data's
(:func:`data_year`: a single ``year`` column value, or the simulator's truth file beside the data);
when it is not known, or the table has nothing for that outcome and year, none is shown and the
page says why.

Fits are saved in ``--fits-dir`` and reused when a saved fit has the same model, prior set and
data hashes (:func:`find_fit`); missing fits run on Dask (:mod:`hierarchy.inference.sweep`), those
whose prior sets differ only in numbers in one compiled program (``batched``). With
``method="laplace"`` each fit marginalises the LA effects by an embedded Laplace approximation
(:mod:`hierarchy.inference.laplace`), one fit at a time; only fits of the same method are reused, and
the page's fit table says which method each fit used (its provenance's ``sampler["method"]``).
The output folder gets ``index.html`` (self-contained, figures embedded), ``index.md`` (with the
figures as PNG files beside it) and CSV tables.

Worked example (national simulated data, as in :mod:`hierarchy.results.compare_models`)::

    hierarchy compare-priors --data out/national_2019.parquet \
        --model models/inverse_intervention_nb_log.toml \
        --priors weakly_informative vague informative_cwip regularising \
        --chains 2 --tune 500 --draws 500 --out out/priors

Measured on the same data: posterior means of the three headline gradient scores move by 0.020
(10 points less, 2.27-2.29), 0.001 (mean, 1.628-1.629) and 0.004 (10 points more, 1.396-1.400)
between the four shipped sets, at most 0.3 posterior SD; in the prior, 49% of neighbourhoods have
an impossible rate under ``vague``, 0.98% under ``weakly_informative``, 0.29% under
``regularising`` and 0.08% under ``informative_cwip``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy import shipped
from hierarchy.config import config_hash, did_you_mean
from hierarchy.data import table as data_mod
from hierarchy.errors import HierarchyError
from hierarchy.inference.sweep import FitJob, run_jobs
from hierarchy.language.design import build_design
from hierarchy.language.priors import PriorSet, load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results.estimands import summarise
from hierarchy.results.fitfile import add_log_likelihood, load_fit, provenance
from hierarchy.results.prior_pages import _write_prior_pages, plot_forest, plot_prior_predictive
from hierarchy.results.prior_predictive import (  # noqa: F401  (moved there; importable from here as before)
    PriorPredictive,
    _log_rates,
    prior_draws,
    prior_predictive,
)
from hierarchy.results.prior_sensitivity import headline_by_level, power_scaling, sensitivity_findings
from hierarchy.results.prior_settings import (
    CONFLICT,
    ESTIMAND_LABELS,
    IMPOSSIBLE_RATE,
    NEGLIGIBLE_IMPOSSIBLE,
    PRIOR_DOMINATES,
    PRIORS_DIR,
    PUBLISHED,
    SENSITIVITY_THRESHOLD,
    VISIBLE_IMPOSSIBLE,
    data_year,
    published_gradient,
)

__all__ = ["CONFLICT", "ESTIMAND_LABELS", "IMPOSSIBLE_RATE", "NEGLIGIBLE_IMPOSSIBLE", "PRIORS_DIR",
           "PRIOR_DOMINATES", "PUBLISHED", "SENSITIVITY_THRESHOLD", "VISIBLE_IMPOSSIBLE",
           "PriorComparison", "PriorPredictive", "compare_priors", "data_year", "find_fit", "fit_method",
           "plot_forest",
           "plot_prior_predictive", "power_scaling", "prior_draws", "prior_predictive", "published_gradient",
           "read_provenance", "resolve_prior_path", "sensitivity_findings"]


# ------------------------------------------------------------------------------ published figures


# ------------------------------------------------------------------------------ prior predictive


# ------------------------------------------------------------------------------ sensitivity


# ------------------------------------------------------------------------------ fit reuse


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """Provenance of a saved fit, read cheaply (posterior attributes only).

    Parameters
    ----------
    path : path
        A fit file.

    Returns
    -------
    dict or None
        The provenance, or None when the file is not a readable fit.
    """
    try:
        with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
            return json.loads(ds.attrs["hierarchy"])
    except Exception:  # not a fit, damaged, or another format: simply not reusable
        return None


def find_fit(fits_dir: str | os.PathLike, *, model_hash: str, priors_hash: str, data_hash: str,
             settings: dict[str, Any] | None = None, method: str = "nuts") -> Path | None:
    """A saved fit in ``fits_dir`` of this model, prior set and data, or None.

    Parameters
    ----------
    fits_dir : path
        Folder of ``*.nc`` fit files.
    model_hash, priors_hash, data_hash : str
        Hashes the fit's provenance must match (``ModelSpec.hash()``, ``PriorSet.hash()``,
        :func:`hierarchy.data.table.data_hash`).
    settings : dict, optional
        Preferred sampler settings (e.g. ``{"chains": 2, "draws": 500}``): among matching fits,
        one with these settings wins, then the newest.
    method : str
        The fit must have been asked for with this method (:func:`fit_method`): a NUTS fit is not reused
        for a Laplace comparison, nor the other way round.

    Returns
    -------
    pathlib.Path or None
    """
    folder = Path(fits_dir)
    if not folder.is_dir():
        return None
    found = []
    for p in folder.glob("*.nc"):
        prov = read_provenance(p)
        if prov is None:
            continue
        if (prov.get("model_hash"), prov.get("priors_hash"), prov.get("data_hash")) != (
                model_hash, priors_hash, data_hash):
            continue
        if fit_method(prov)[0] != method:
            continue
        same = all(prov.get("sampler", {}).get(k) == v for k, v in (settings or {}).items())
        found.append((same, p.stat().st_mtime, p))
    return max(found)[2] if found else None


def fit_method(prov: dict[str, Any]) -> tuple[str, str]:
    """The method a fit was asked for and the one it used, from its provenance (``"nuts"`` where a fit made
    before the method existed records none); they differ where a Laplace fit fell back to NUTS."""
    smp = prov.get("sampler", {})
    used = str(smp.get("method") or "nuts")
    return str(smp.get("method_requested") or used), used


def resolve_prior_path(prior: str | os.PathLike, priors_dir: str | os.PathLike = PRIORS_DIR) -> Path:
    """A prior set file from a path or the name of a shipped set (``vague`` -> priors/vague.toml).

    Parameters
    ----------
    prior : str or path
        An existing file, or a set name looked up in ``priors_dir`` (and, for the default
        ``priors``, in the checkout's ``priors/``).
    priors_dir : path
        Folder of named sets.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    HierarchyError
        When neither exists; the message suggests the closest known name.
    """
    path = Path(prior)
    if path.exists() or Path(priors_dir) == PRIORS_DIR:  # a file, or a shipped set (package data)
        return shipped.resolve(prior, "priors")
    named = Path(priors_dir) / f"{prior}.toml"
    if named.exists() and path.suffix != ".toml":
        return named
    known = sorted(p.stem for p in Path(priors_dir).glob("*.toml"))
    raise HierarchyError(f"prior set {str(prior)!r}: no such file, and not the name of a set in "
                         f"{priors_dir}{did_you_mean(str(prior), known)} (known: {', '.join(known) or 'none'})")


# ------------------------------------------------------------------------------ compare priors


@dataclass
class PriorComparison:
    """Everything :func:`compare_priors` computed and where it wrote it.

    Attributes
    ----------
    out : pathlib.Path
        Output folder.
    html, markdown : pathlib.Path
        The pages.
    fits : dict of str to pathlib.Path
        Prior set name -> fit file used.
    reused, fitted : list of pathlib.Path
        Fits found in the fits folder, and fits made by this run.
    prior_predictive : dict of str to PriorPredictive
    estimands : pandas.DataFrame
        Headline gradient scores under each prior set.
    movement : pandas.DataFrame
        Per estimand: range of posterior means over prior sets.
    sensitivity : pandas.DataFrame
        :func:`power_scaling` of each fit, with a ``prior_set`` column.
    findings : list of str
        Plain-language findings, as on the page.
    tables : dict of str to pathlib.Path
        CSV files written.
    jobs : list of hierarchy.inference.sweep.JobResult
        The fits run by this call (worker pid, timings), in prior-set order.
    """

    out: Path
    html: Path
    markdown: Path
    fits: dict[str, Path]
    reused: list[Path]
    fitted: list[Path]
    prior_predictive: dict[str, PriorPredictive]
    estimands: pd.DataFrame
    movement: pd.DataFrame
    sensitivity: pd.DataFrame
    findings: list[str]
    tables: dict[str, Path] = field(default_factory=dict)
    jobs: list = field(default_factory=list)


def compare_priors(data: str | os.PathLike, model: str | os.PathLike,
                   priors: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   fits_dir: str | os.PathLike = "fits", chains: int = 4, tune: int = 1000,
                   draws: int = 1000, seed: int = 0, workers: int | None = None, executor=None,
                   prior_draws_n: int = 1000, prob: float = 0.9, refit: bool = False,
                   columns: str | os.PathLike | None = None, prior_only: bool = False,
                   year: int | None = None, batched: bool = True, method: str = "nuts",
                   log: Callable[[str], None] | None = None) -> PriorComparison:
    """Fit ``model`` under each prior set and compare priors, posteriors and sensitivity.

    Parameters
    ----------
    data : path
        Neighbourhood table (CSV or Parquet).
    model : path
        Model spec file.
    priors : sequence of path or str
        Prior set files, or names of sets in ``priors/`` (at least one; names must differ).
    out : path
        Output folder for the pages and tables.
    fits_dir : path
        Where fits are looked up and saved.
    chains, tune, draws, seed : int
        Sampler settings of new fits.
    workers : int, optional
        Parallel fitting processes (default: :func:`hierarchy.inference.sweep.default_workers`).
    executor : concurrent.futures.Executor, optional
        Run the fits there instead (see :func:`hierarchy.inference.sweep.run_sweep`).
    prior_draws_n : int
        Prior predictive draws per prior set.
    prob : float
        Interval probability of every interval shown.
    refit : bool
        Fit even when a matching fit exists.
    columns : path, optional
        Column map of the data (TOML).
    prior_only : bool
        Prior predictive checks only: no fits, no posterior sections.
    year : int, optional
        Census year of the data (2019 for 2018-19), for the published figures shown beside the
        estimands; default :func:`data_year`. With no year known, none is shown.
    batched : bool
        Fit prior sets that differ only in numbers in one program (:func:`hierarchy.workflow.fit_prior_files`).
    method : {"nuts", "laplace"}
        How new fits are made: NUTS on every parameter, or the LA effects marginalised by an embedded Laplace
        approximation (:mod:`hierarchy.inference.laplace`; never batched; a model outside its regime is
        fitted with NUTS, the reason in the fit table's notes). Only saved fits of this method are reused.
    log : callable, optional
        Progress messages go here (e.g. ``print``).

    Returns
    -------
    PriorComparison
    """
    say = log or (lambda _msg: None)
    out = Path(out)
    if not priors:
        raise HierarchyError("compare-priors needs at least one prior set")
    spec = load_spec(model)
    paths = [resolve_prior_path(p) for p in priors]
    sets = [load_priors(p) for p in paths]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise HierarchyError(f"prior sets must have distinct names, got {', '.join(names)}")
    cmap = data_mod.load_column_map(columns) if columns else None
    table = data_mod.load(data, columns=cmap, **spec.data_columns)
    dhash = data_mod.data_hash(table, **spec.hashed_columns)
    design = build_design(table, spec)
    year = data_year(data, table) if year is None else int(year)

    say(f"prior predictive checks ({prior_draws_n} draws per prior set)")
    checks = {s.name: prior_predictive(spec, s, design, draws=prior_draws_n, seed=seed, prob=prob, year=year)
              for s in sets}
    if prior_only:
        result = PriorComparison(out=out, html=out / "index.html", markdown=out / "index.md",
                                 fits={}, reused=[], fitted=[], prior_predictive=checks,
                                 estimands=pd.DataFrame(), movement=pd.DataFrame(),
                                 sensitivity=pd.DataFrame(),
                                 findings=[c.verdict() for c in checks.values()])
        fit_table = pd.DataFrame()
    else:
        settings = {"chains": chains, "tune": tune, "draws": draws, "seed": seed}
        fits, reused, results = _find_or_fit(spec, sets, paths, data=data, model=model,
                                             columns=columns, dhash=dhash, fits_dir=Path(fits_dir),
                                             settings=settings, refit=refit, workers=workers,
                                             executor=executor, batched=batched, say=say, method=method)
        result, fit_table = _posterior_comparison(spec, sets, fits, reused, results, design=design, dhash=dhash,
                                                  checks=checks, out=out, prob=prob, year=year, say=say)
    _write_prior_pages(result, spec=spec, sets=sets, data=Path(data), dhash=dhash,
                       fit_table=fit_table, prob=prob, year=year)
    say(f"wrote {result.html} and {result.markdown}")
    return result


def _posterior_comparison(spec: ModelSpec, sets: list[PriorSet], fits: dict[str, Path], reused: list[Path],
                          results: list, *, design, dhash: str, checks: dict[str, PriorPredictive], out: Path,
                          prob: float, year: int | None,
                          say: Callable[[str], None]) -> tuple[PriorComparison, pd.DataFrame]:
    """The posterior half of :func:`compare_priors` from its fits: the comparison and the fit table."""
    # fit files hold no log-likelihood (it discloses the counts): recompute it here, in memory
    idatas = {s.name: add_log_likelihood(load_fit(fits[s.name], model=spec, priors=s, data_hash=dhash), design)
              for s in sets}
    estimands, sensitivity = _posterior_summaries(idatas, prob=prob, say=say)
    outcome = spec.stages[0]
    estimands["published"] = [published_gradient(outcome, year, str(lv)) for lv in estimands["la_level"]]
    movement = _movement(estimands)
    fit_table = _fit_table(fits, reused, idatas, sets)
    result = PriorComparison(out=out, html=out / "index.html", markdown=out / "index.md", fits=fits,
                             reused=reused, fitted=[r.path for r in results], prior_predictive=checks,
                             estimands=estimands, movement=movement, sensitivity=sensitivity, jobs=list(results),
                             findings=_prior_findings(checks, movement, sensitivity, fit_table))
    return result, fit_table


def _posterior_summaries(idatas: dict, *, prob: float,
                         say: Callable[[str], None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline estimands and the power-scaling sensitivity of each prior set's fit, stacked with a
    ``prior_set`` column."""
    frames, sens = [], []
    for name, idata in idatas.items():
        say(f"{name}: estimands and power-scaling sensitivity")
        head = summarise(headline_by_level(idata), prob=prob)
        head.insert(0, "prior_set", name)
        frames.append(head)
        s = power_scaling(idata)
        s.insert(0, "prior_set", name)
        sens.append(s)
    return pd.concat(frames, ignore_index=True), pd.concat(sens, ignore_index=True)


def _find_or_fit(spec: ModelSpec, sets: list[PriorSet], paths: list[Path], *,
                 data: str | os.PathLike, model: str | os.PathLike,
                 columns: str | os.PathLike | None, dhash: str, fits_dir: Path,
                 settings: dict[str, int], refit: bool, workers: int | None, executor,
                 say: Callable[[str], None], batched: bool = True,
                 method: str = "nuts") -> tuple[dict[str, Path], list[Path], list]:
    """Fit files of ``spec`` under each prior set: matching saved fits of ``method``, else new parallel fits.

    Returns prior set name -> fit file, the reused files and the sweep's job results.
    """
    fits: dict[str, Path] = {}
    reused: list[Path] = []
    missing = []
    for path, pset in zip(paths, sets, strict=True):
        found = None if refit else find_fit(fits_dir, model_hash=spec.hash(),
                                            priors_hash=pset.hash(), data_hash=dhash,
                                            settings=settings, method=method)
        if found is not None:
            say(f"{pset.name}: reusing {found}")
            fits[pset.name] = found
            reused.append(found)
        else:
            missing.append((path, pset))
    if not missing:
        return fits, reused, []
    # one fit alone may spread its chains over the cores; several share them, a chain at a time
    alone = len(missing) == 1 or (workers == 1 and executor is None)
    tag = "" if method == "nuts" else f"__{method}"
    jobs = [FitJob(data=Path(data), model=Path(model), priors=path,
                   out=fits_dir / f"{spec.name}__{pset.name}__"
                                  f"{config_hash([spec.hash(), pset.hash(), dhash])[:10]}{tag}.nc",
                   columns=Path(columns) if columns else None, **settings, method=method,
                   chain_method="parallel" if alone else "sequential") for path, pset in missing]
    say(f"fitting {len(jobs)} prior set(s){' by the Laplace method' if method == 'laplace' else ''}: "
        f"{', '.join(pset.name for _, pset in missing)}")
    def done(r) -> None:
        how = f" (in one program with {r.batch - 1} other set(s))" if r.batch > 1 else ""
        say(f"  done in {r.seconds:.0f} s{how}: {r.path}" + (f"; note: {r.note}" if r.note else ""))

    results = run_jobs(jobs, executor=executor, workers=workers, refit=refit, on_done=done, batched=batched,
                       log=say)
    for (_, pset), res in zip(missing, results, strict=True):
        fits[pset.name] = res.path
    return fits, reused, results


def _movement(estimands: pd.DataFrame) -> pd.DataFrame:
    """Range of posterior means over prior sets, per headline estimand."""
    rows = []
    for level, part in estimands.groupby("la_level", sort=False):
        lo, hi = part.loc[part["mean"].idxmin()], part.loc[part["mean"].idxmax()]
        move = float(hi["mean"] - lo["mean"])
        sd = float(part["sd"].mean())
        rows.append({"estimand": ESTIMAND_LABELS.get(str(level), str(level)), "la_level": level,
                     "la_deprivation": float(part["la_deprivation"].iloc[0]),
                     "published": float(part["published"].iloc[0]) if "published" in part else np.nan,
                     "min_mean": float(lo["mean"]), "min_prior_set": lo["prior_set"],
                     "max_mean": float(hi["mean"]), "max_prior_set": hi["prior_set"],
                     "movement": move, "movement_in_sd": move / sd if sd > 0 else np.nan})
    return pd.DataFrame(rows)


def _fit_table(fits: dict[str, Path], reused: list[Path], idatas: dict, sets: list[PriorSet]
               ) -> pd.DataFrame:
    rows = []
    for s in sets:
        prov = provenance(idatas[s.name])
        smp = prov.get("sampler", {})
        diag = prov.get("diagnostics", {})
        asked, used = fit_method(prov)
        notes = list(diag.get("reasons", []))
        if asked != used:
            why = smp.get("method_refused")
            notes.insert(0, f"method {asked} asked, fitted with {used}" + (f" ({why})" if why else ""))
        rows.append({"prior_set": s.name, "fit": str(fits[s.name]),
                     "source": "reused" if fits[s.name] in reused else "fitted now", "method": used,
                     "chains": smp.get("chains"), "tune": smp.get("tune"), "draws": smp.get("draws"),
                     "seed": smp.get("seed"), "diagnostics": diag.get("status", "?"),
                     "notes": "; ".join(notes)})
    return pd.DataFrame(rows)


def _prior_findings(checks: dict[str, PriorPredictive], movement: pd.DataFrame,
                    sensitivity: pd.DataFrame, fit_table: pd.DataFrame) -> list[str]:
    out = [c.verdict() for c in checks.values()]
    for _, r in movement.iterrows():
        pub = f" (published {r['published']:.2f})" if np.isfinite(r["published"]) else ""
        out.append(f"{r['estimand']}{pub}: posterior means range from "
                   f"{r['min_mean']:.2f} ({r['min_prior_set']}) to {r['max_mean']:.2f} "
                   f"({r['max_prior_set']}), a movement of {r['movement']:.3f} "
                   f"({r['movement_in_sd']:.1f} posterior SD).")
    out.extend(sensitivity_findings(sensitivity))
    for _, r in fit_table.iterrows():
        if r["diagnostics"] != "ok":
            out.append(f"{r['prior_set']}: the fit's convergence diagnostics warn ({r['notes']}); "
                       "treat its numbers with care.")
    return out


# ------------------------------------------------------------------------------ figures


# ------------------------------------------------------------------------------ pages

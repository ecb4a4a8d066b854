"""A user's grid of fits, data x models x prior sets x settings: ``hierarchy sweep GRID.toml``.

A grid file (TOML) lists data files, models and prior sets, each a value or a list; every
combination is one fit. ``[settings]`` holds sampler settings: a value applies to every fit, a
list multiplies the grid (e.g. ``seed = [0, 1, 2]`` fits each combination under three seeds)::

    # every combination of data x model x priors x settings is one fit
    data = ["national_2019.parquet", "national_2020.parquet"]  # relative to this file
    model = ["inverse_intervention_nb", "inverse_intervention_nb_log"]  # shipped names or paths
    priors = ["weakly_informative", "vague"]                   # shipped names or paths
    # columns = "columns.toml"                                 # optional column map of the data

    [settings]
    chains = 4
    tune = 1000
    draws = 1000
    seed = [0, 1]
    # float32 = true, sampler = "numpyro", chain_method = "sequential", include_data = false
    # method = ["nuts", "laplace"]                           # laplace: LA effects marginalised

Paths are relative to the grid file; a model or prior set may also be named by the stem of a
file in ``models/`` or ``priors/`` (of the working directory, else of the checkout). Each fit is
saved in the output folder as ``MODEL__PRIORS__DATA__CHAINSxTUNE+DRAWS_seedSEED[...].nc`` (``_laplace``
at the end for ``method = "laplace"``), and
:func:`run_grid` writes ``sweep.csv`` there: one row per fit (status, content key, timings,
diagnostics, method, error). A rerun skips the fits already there (:mod:`hierarchy.inference.sweep`).
Fits with ``method = "laplace"`` (:mod:`hierarchy.inference.laplace`) run one by one, never batched; a
model outside the Laplace regime is fitted with NUTS, the reason in the table's ``note``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hierarchy.config import did_you_mean, read_toml
from hierarchy.errors import HierarchyError, SpecError
from hierarchy.inference.sweep import FitJob, JobResult, SweepResult, execute
from hierarchy.paths import atomic_path

CHECKOUT = Path(__file__).resolve().parents[3]
TOP_KEYS = ("data", "model", "priors", "columns", "settings")
SETTINGS = {"chains": int, "tune": int, "draws": int, "seed": int, "sampler": str, "float32": bool,
            "chain_method": str, "include_data": bool, "method": str}
"""Settings a grid may give, with their types (each a value or a list of values)."""
TABLE = "sweep.csv"

__all__ = ["SETTINGS", "TABLE", "load_grid", "run_grid"]


def _values(value: Any, key: str, source: Path, kind: type) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{source}: '{key}' is an empty list; give at least one value")
    for v in values:
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if not ok:
            raise SpecError(f"{source}: '{key}' must be {kind.__name__} or a list of them, got {v!r}")
    return values


def _resolve(value: str, kind: str, base: Path, source: Path) -> Path:
    """A file named by ``value``: a path relative to ``base``, or a shipped model / prior set."""
    path = base / value
    if path.is_file():
        return path
    folders = [Path(kind).resolve(), CHECKOUT / kind]
    for folder in folders:
        named = folder / f"{value}.toml"
        if named.is_file():
            return named
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.toml")})
    raise SpecError(f"{source}: {kind} '{value}' is neither a file (relative to {base}) nor a shipped "
                    f"name{did_you_mean(value, known)}; shipped: {', '.join(known) or 'none'}")


def load_grid(path: str | os.PathLike, out: str | os.PathLike) -> list[FitJob]:
    """The jobs of a grid file, with their fit files in ``out``.

    Parameters
    ----------
    path : path
        Grid file (TOML; format in the module docstring).
    out : path
        Folder the fits are saved in.

    Returns
    -------
    list of FitJob
        One per combination, in the order data, model, priors, then settings as listed.

    Raises
    ------
    SpecError
        Unknown keys or settings, wrong types, files that do not exist, or two combinations that
        would write the same fit file; the message names the grid file and the key.
    """
    path, out = Path(path), Path(out)
    raw = read_toml(path)
    base = path.parent
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}"
                        f"{did_you_mean(unknown[0], TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("data", "model", "priors"):
        if key not in raw:
            raise SpecError(f"{path}: missing '{key}' (a file or a list of files)")
    data = [base / v for v in _values(raw["data"], "data", path, str)]
    for d in data:
        if not d.is_file():
            raise SpecError(f"{path}: data file {d} does not exist")
    models = [_resolve(v, "models", base, path) for v in _values(raw["model"], "model", path, str)]
    priors = [_resolve(v, "priors", base, path) for v in _values(raw["priors"], "priors", path, str)]
    columns = None
    if "columns" in raw:
        columns = base / _values(raw["columns"], "columns", path, str)[0]
        if isinstance(raw["columns"], list) or not columns.is_file():
            raise SpecError(f"{path}: 'columns' must name one existing column map file, got {raw['columns']!r}")
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise SpecError(f"{path}: 'settings' must be a table ([settings])")
    bad = [k for k in settings if k not in SETTINGS]
    if bad:
        raise SpecError(f"{path}: unknown setting(s) {', '.join(bad)}{did_you_mean(bad[0], SETTINGS)}; "
                        f"allowed: {', '.join(SETTINGS)}")
    axes = {k: _values(v, f"settings.{k}", path, SETTINGS[k]) for k, v in settings.items()}
    jobs, names = [], {}
    for d, m, p in itertools.product(data, models, priors):
        for combo in itertools.product(*axes.values()):
            kw = dict(zip(axes, combo, strict=True))
            try:
                job = FitJob(data=d, model=m, priors=p, out=out / "pending.nc", columns=columns, **kw)
            except HierarchyError as err:
                raise SpecError(f"{path}: [settings] {err}") from None
            name = _fit_name(job)
            if name in names:
                raise SpecError(f"{path}: two fits would be saved as {name} ({names[name]} and {d}); "
                                "give data files different names, or vary a setting that is part of "
                                "a fit's identity (chain_method is not)")
            names[name] = d
            jobs.append(dataclasses.replace(job, out=out / name))
    return jobs


def _fit_name(job: FitJob) -> str:
    extra = "".join([f"_{job.sampler}" if job.sampler != "numpyro" else "",
                     "_f32" if job.float32 else "", "_data" if job.include_data else "",
                     f"_{job.method}" if job.method != "nuts" else ""])
    return (f"{job.model.stem}__{job.priors.stem}__{job.data.stem}__"
            f"{job.chains}x{job.tune}+{job.draws}_seed{job.seed}{extra}.nc")


def run_grid(path: str | os.PathLike, out: str | os.PathLike, *, scheduler: str | None = None,
             workers: int | None = None, refit: bool = False, batched: bool = True,
             log: Callable[[str], None] | None = None) -> SweepResult:
    """Fit every combination of a grid file into ``out`` and write ``out/sweep.csv``.

    Parameters
    ----------
    path : path
        Grid file.
    out : path
        Folder for the fits and the table.
    scheduler, workers, refit, batched
        As for :func:`hierarchy.inference.sweep.execute`.
    log : callable, optional
        Progress messages (e.g. ``print``).

    Returns
    -------
    SweepResult
        Failed fits are in it (and in the table), not raised.
    """
    say = log or (lambda _m: None)
    out = Path(out)
    jobs = load_grid(path, out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"{len(jobs)} fit(s) in the grid {path}")

    def done(r: JobResult) -> None:
        say(f"  {r.status}: {r.path.name}" + (f" ({r.seconds:.0f} s)" if r.status == "fitted" else "")
            + (f" (one program for {r.batch} fits)" if r.batch > 1 else "") + (f"; {r.note}" if r.note else ""))

    result = execute(jobs, scheduler=scheduler, workers=workers, refit=refit, on_done=done, batched=batched,
                     log=say, on_error=lambda j, e: say(f"  FAILED: {j.out.name}: {e.__class__.__name__}: {e}"))
    table = out / TABLE
    with atomic_path(table) as tmp:
        result.table().to_csv(tmp, index=False)
    say(f"table: {table}")
    return result

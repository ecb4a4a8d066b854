"""Run many fits: a sweep of (data, model, priors, settings) jobs on a Dask cluster.

A :class:`FitJob` is plain data (file paths and sampler settings), so it can be pickled and sent
anywhere; :func:`run_job` fits one job with :func:`hierarchy.workflow.fit_files` and saves the
fit. :func:`execute` runs a list of jobs and gathers what happened to each into a
:class:`SweepResult` (:meth:`SweepResult.table`: one row per job); :func:`run_jobs` and
:func:`run_sweep` do the same and raise :class:`SweepError` if a job failed.

Where the jobs run (:mod:`hierarchy.inference.cluster`): on the Dask scheduler given as ``scheduler`` or
in ``$HIERARCHY_DASK_SCHEDULER``, else on a new local cluster of ``workers`` worker processes
(default ``min(jobs, cores)``); ``scheduler="synchronous"`` runs them one after another in this
process (for debugging), and ``executor`` takes any ``dask.distributed.Client`` or
``concurrent.futures.Executor``. Inside a worker the chains of a job run as the job says
(``chain_method="sequential"`` by default, so that ``workers`` processes use about ``workers``
cores).

Each job is content-addressed: its key (:func:`job_key`) is a hash of the data hash, the model
hash, the prior set hash and the sampler settings (sampler, chains, tune, draws, seed, float32,
whether observed data are stored, and the method where it is not ``"nuts"``: keys of NUTS fits made
before the method existed are unchanged), the hashes that fit files already carry. A job whose
``out`` file is a fit with the same key (:func:`fit_key` of its provenance) is skipped unless
``refit``: a rerun of a sweep refits nothing that finished. A failed job (bad input, a worker
that died) is reported with its error while the others finish. The key does not cover package
versions: refit after upgrading the numerical stack.

Jobs that differ only in their prior set, where the sets differ only in numbers (same distribution per
group and term: :func:`hierarchy.language.priors.group_by_structure`), run as one task
(:func:`run_prior_batch`, ``execute(batched=True)``, the default): one table read and one compiled
program fits them all (:func:`hierarchy.workflow.fit_prior_files`; in turn on CPU, side by side on an
accelerator), each saved as an ordinary fit with the key it would have alone. Other samplers than NumPyro
NUTS, ``method="laplace"`` and prior sets of another structure run one by one, with the reason in the
table's ``note``. A Laplace job whose model is outside the Laplace regime is fitted with NUTS by
:func:`hierarchy.workflow.fit_files`, the reason in the table's ``note``.

Example::

    from hierarchy.inference.sweep import FitJob, execute

    jobs = [FitJob(data="out/national_2019.parquet", model="models/inverse_intervention_nb.toml",
                   priors=f"priors/{p}.toml", out=f"fits/{p}.nc", chains=2, tune=500, draws=500)
            for p in ("weakly_informative", "vague")]
    print(execute(jobs, workers=2).table())
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierarchy.errors import HierarchyError

if TYPE_CHECKING:
    import pandas as pd

KEY_SETTINGS = ("sampler", "chains", "tune", "draws", "seed", "float32", "include_data", "method")
"""Job settings covered by the content key (besides the data, model and prior set hashes); ``method``
only where it is not ``"nuts"`` (:func:`content_key`)."""
METHODS = ("nuts", "laplace")
"""A job's ``method`` (:func:`hierarchy.inference.sampling.fit`)."""
REFUSED = "method laplace refused"
"""How :func:`hierarchy.workflow.fit_files` begins the line saying it fitted a Laplace job with NUTS."""

__all__ = ["BATCH_SETTINGS", "KEY_SETTINGS", "FitJob", "JobResult", "SweepError", "SweepResult", "content_key",
           "default_workers", "execute", "fit_key", "job_key", "prior_batches", "read_provenance", "run_job",
           "run_jobs", "run_prior_batch", "run_sweep", "run_task"]


class SweepError(HierarchyError):
    """One or more jobs of a sweep failed; ``failures`` maps each failed job to its error."""

    def __init__(self, failures: dict[FitJob, BaseException], done: list[JobResult]):
        self.failures = failures
        self.done = done
        lines = [f"{len(failures)} of {len(failures) + len(done)} fit(s) failed:"]
        lines += [f"  {job.out}: {err.__class__.__name__}: {err}" for job, err in failures.items()]
        if done:
            lines.append(f"the other {len(done)} fit(s) were saved")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class FitJob:
    """One fit of a sweep: which files, where to save, and the sampler settings.

    ``method`` is ``"nuts"`` (every parameter sampled) or ``"laplace"`` (the LA effects marginalised by
    an embedded Laplace approximation, NumPyro NUTS on the rest: :mod:`hierarchy.inference.laplace`).
    Relative paths resolve in the caller's working directory (they are made absolute before a
    job is sent to the workers of an existing Dask cluster, which may run elsewhere). Equal jobs
    are equal and hash alike.
    """

    data: Path
    model: Path
    priors: Path
    out: Path
    chains: int = 4
    tune: int = 1000
    draws: int = 1000
    seed: int = 0
    sampler: str = "numpyro"
    columns: Path | None = None
    include_data: bool = False
    chain_method: str = "sequential"
    float32: bool = False
    method: str = "nuts"

    def __post_init__(self) -> None:
        for name in ("data", "model", "priors", "out", "columns"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("chains", "tune", "draws"):
            if int(getattr(self, name)) < (1 if name != "tune" else 0):
                raise HierarchyError(f"FitJob.{name} must be positive, got {getattr(self, name)}")
        if self.method not in METHODS:
            from hierarchy.config import did_you_mean

            raise HierarchyError(f"FitJob.method must be one of {', '.join(METHODS)}, got {self.method!r}"
                                 f"{did_you_mean(str(self.method), METHODS)}")
        if self.method == "laplace" and self.sampler != "numpyro":
            raise HierarchyError(f"FitJob.method 'laplace' samples the hyperparameters with NumPyro NUTS, not "
                                 f"sampler {self.sampler!r}: use sampler 'numpyro' or method 'nuts'")

    def absolute(self) -> FitJob:
        """The same job with absolute paths (for workers with another working directory)."""
        paths = {n: getattr(self, n).absolute() for n in ("data", "model", "priors", "out", "columns")
                 if getattr(self, n) is not None}
        return dataclasses.replace(self, **paths)


@dataclass(frozen=True)
class JobResult:
    """What a finished job reports: the fit path, where and when it ran, and its summary.

    ``status`` is ``"fitted"``, or ``"skipped"`` when ``out`` already held a fit with the job's
    content ``key`` (then ``pid`` is None and ``started == finished`` is the file's time). ``batch``
    is how many jobs shared the fit's compiled program (:func:`run_prior_batch`; their times are the
    whole batch's), ``note`` why a job that could have been batched was fitted alone.
    """

    job: FitJob
    path: Path
    pid: int | None
    started: float  # time.time() in the worker
    finished: float
    summary: str
    key: str = ""
    status: str = "fitted"
    host: str = ""
    batch: int = 1
    note: str = ""

    @property
    def seconds(self) -> float:
        """Wall time of the job in its worker."""
        return self.finished - self.started


def default_workers(n_jobs: int) -> int:
    """``min(n_jobs, cores available)``, at least 1."""
    from hierarchy.inference.cluster import available_cores

    return max(1, min(n_jobs, available_cores()))


# ------------------------------------------------------------------------------ content keys


def content_key(*, data_hash: str, model_hash: str, priors_hash: str, settings: dict[str, Any]) -> str:
    """16-hex key of a fit: data, model and prior set hashes and the :data:`KEY_SETTINGS`.

    ``settings["method"]`` enters the key only where it is not ``"nuts"`` (absent counts as ``"nuts"``), so
    the keys of NUTS fits, and of fits saved before the method existed, are what they were.
    """
    from hierarchy.config import config_hash

    norm = {"sampler": str(settings.get("sampler")), "float32": bool(settings.get("float32", False)),
            "include_data": bool(settings.get("include_data", False))}
    for name in ("chains", "tune", "draws", "seed"):
        value = settings.get(name)
        norm[name] = None if value is None else int(value)
    method = str(settings.get("method") or "nuts")
    if method != "nuts":
        norm["method"] = method
    return config_hash({"data": data_hash, "model": model_hash, "priors": priors_hash, "settings": norm})


def fit_key(provenance: dict[str, Any] | None) -> str | None:
    """The content key of a saved fit, from its provenance (None when that lacks a hash).

    The method is the one asked for: ``sampler["method_requested"]`` where the fit records one (a Laplace
    fit that fell back to NUTS), else ``sampler["method"]``; so a rerun does not refit a refused Laplace job.
    """
    if not provenance:
        return None
    hashes = [provenance.get(k) for k in ("data_hash", "model_hash", "priors_hash")]
    if not all(hashes):
        return None
    sampler = provenance.get("sampler", {})
    settings = {**sampler, "include_data": provenance.get("include_data", False),
                "method": sampler.get("method_requested") or sampler.get("method")}
    return content_key(data_hash=hashes[0], model_hash=hashes[1], priors_hash=hashes[2],
                       settings=settings)


def job_key(job: FitJob, *, data_hashes: dict | None = None) -> str:
    """The content key of ``job``: reads and hashes its data, model and prior files.

    Parameters
    ----------
    job : FitJob
    data_hashes : dict, optional
        Cache of data hashes by file (path, size, modification time, column map), filled here:
        pass one dict to hash each data file of a sweep once.

    Raises
    ------
    HierarchyError
        When a file is missing or invalid (the message names it).
    """
    from hierarchy.data import table as data_mod
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    cache = {} if data_hashes is None else data_hashes
    if not job.data.exists():
        raise HierarchyError(f"{job.data}: no such data file")
    st = job.data.stat()
    spec = load_spec(job.model)
    named, hashed = spec.data_columns, spec.hashed_columns  # the hash covers every column the model reads
    ident = (str(job.data.resolve()), st.st_size, st.st_mtime_ns,
             None if job.columns is None else str(job.columns.resolve()), tuple(hashed.items()))
    if ident not in cache:
        cmap = data_mod.load_column_map(job.columns) if job.columns else None
        cache[ident] = data_mod.data_hash(data_mod.load(job.data, columns=cmap, **named), **hashed)
    settings = {n: getattr(job, n) for n in KEY_SETTINGS}
    return content_key(data_hash=cache[ident], model_hash=spec.hash(),
                       priors_hash=load_priors(job.priors).hash(), settings=settings)


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """Provenance of a saved fit (posterior attributes only), or None if it is not a readable fit."""
    import json

    import xarray as xr

    try:
        with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
            return json.loads(ds.attrs["hierarchy"])
    except Exception:  # missing, not a fit, damaged: not a finished fit
        return None


# ------------------------------------------------------------------------------ one job


def run_job(job: FitJob) -> JobResult:
    """Fit one job and save the fit to ``job.out`` (runs in a worker process).

    Parameters
    ----------
    job : FitJob
        Files and settings.

    Returns
    -------
    JobResult
        Fit path, worker host and pid, start and end times and the fit's text summary.
    """
    from hierarchy.workflow import fit_files

    started = time.time()
    summary = fit_files(data=job.data, model=job.model, priors=job.priors, out=job.out,
                        columns=job.columns, sampler=job.sampler, chains=job.chains, tune=job.tune,
                        draws=job.draws, seed=job.seed, include_data=job.include_data,
                        progress=False, chain_method=job.chain_method, float32=job.float32,
                        method=job.method, log=lambda line: None)
    return JobResult(job=job, path=Path(job.out), pid=os.getpid(), started=started,
                     finished=time.time(), summary=summary, host=socket.gethostname(), note=refusal_note(job.out))


def refusal_note(path: str | os.PathLike) -> str:
    """The fallback a saved fit records (``method_refused``: a Laplace job fitted with NUTS, and why), or ''."""
    why = ((read_provenance(path) or {}).get("sampler") or {}).get("method_refused")
    return f"{REFUSED} ({why}); fitted with NUTS" if why else ""


BATCH_SETTINGS = ("data", "model", "columns", "sampler", "chains", "tune", "draws", "seed", "include_data",
                  "float32", "method")
"""What the jobs of one prior-set batch share: everything but ``priors``, ``out`` and ``chain_method``."""


def run_prior_batch(jobs: Sequence[FitJob]) -> list[JobResult]:
    """Fit jobs that differ only in their prior set with :func:`hierarchy.workflow.fit_prior_files`: sets of one
    structure in one compiled program, the others one by one (runs in a worker process).

    Parameters
    ----------
    jobs : sequence of FitJob
        Equal in :data:`BATCH_SETTINGS`.

    Returns
    -------
    list of JobResult
        One per job, in order, each with its ``batch`` size and ``note``.
    """
    from hierarchy.workflow import fit_prior_files

    first = jobs[0]
    for job in jobs[1:]:
        differ = [n for n, a, b in zip(BATCH_SETTINGS, _batch_ident(job), _batch_ident(first), strict=True)
                  if a != b]
        if differ:
            raise HierarchyError(f"{job.out} differs from {first.out} in {', '.join(differ)}: only jobs that "
                                 "differ in their prior set alone can share one program")
    started = time.time()
    fits = fit_prior_files(data=first.data, model=first.model, priors=[j.priors for j in jobs],
                           outs=[j.out for j in jobs], columns=first.columns, sampler=first.sampler,
                           chains=first.chains, tune=first.tune, draws=first.draws, seed=first.seed,
                           include_data=first.include_data, float32=first.float32, chain_method=first.chain_method,
                           method=first.method)
    finished, host = time.time(), socket.gethostname()
    return [JobResult(job=job, path=Path(job.out), pid=os.getpid(), started=started, finished=finished,
                      summary=f.summary, host=host, batch=f.batch, note=f.note)
            for job, f in zip(jobs, fits, strict=True)]


def _batch_ident(job: FitJob) -> tuple:
    """``job``'s :data:`BATCH_SETTINGS`, paths resolved."""
    values = (getattr(job, n) for n in BATCH_SETTINGS)
    return tuple(str(v.resolve()) if isinstance(v, Path) else v for v in values)


def run_task(jobs: Sequence[FitJob]) -> list[JobResult]:
    """One task of a sweep: one job (:func:`run_job`), or a prior-set batch of them (:func:`run_prior_batch`)."""
    return [run_job(jobs[0])] if len(jobs) == 1 else run_prior_batch(jobs)


def prior_batches(jobs: Sequence[FitJob], todo: Sequence[int]) -> tuple[list[list[int]], dict[int, str]]:
    """Group ``jobs[i]``, ``i`` in ``todo``, into tasks: jobs equal in :data:`BATCH_SETTINGS` whose prior sets
    have one structure share a task (:func:`run_prior_batch`), the rest run alone.

    Returns
    -------
    (list of list of int, dict of int to str)
        The tasks (job indices, in order of their first job), and why a job that had partners was not
        batched with them (another sampler, a prior set of another structure).
    """
    from hierarchy.language.priors import group_by_structure, load_priors, structure_difference
    from hierarchy.workflow import batch_refusal

    same: dict[tuple, list[int]] = {}
    for i in todo:
        same.setdefault(_batch_ident(jobs[i]), []).append(i)
    tasks, notes = [], {}
    for members in same.values():
        refused = batch_refusal(jobs[members[0]].sampler, jobs[members[0]].method) if len(members) > 1 else None
        if len(members) == 1 or refused:
            tasks += [[i] for i in members]
            notes |= {i: refused for i in members if refused}
            continue
        sets = [load_priors(jobs[i].priors) for i in members]
        groups = group_by_structure(sets)
        big = next((g for g in groups if len(g) > 1), None)
        for g in groups:
            tasks.append([members[k] for k in g])
            if len(g) == 1:
                other = big[0] if big else (1 if g[0] == 0 else 0)
                notes[members[g[0]]] = structure_difference(sets[g[0]], sets[other]) or ""
    return sorted(tasks), notes


# ------------------------------------------------------------------------------ many jobs


@dataclass
class SweepResult:
    """What happened to each job of a sweep, in job order.

    Attributes
    ----------
    jobs : list of FitJob
    keys : list of str or None
        Content key of each job (None where its files could not be read).
    results : list of JobResult or None
        Fitted or skipped jobs; None for failed ones.
    failures : dict of int to BaseException
        Job index -> its error.
    """

    jobs: list[FitJob]
    keys: list[str | None]
    results: list[JobResult | None]
    failures: dict[int, BaseException] = field(default_factory=dict)

    @property
    def done(self) -> list[JobResult]:
        """Results of the jobs that did not fail, in job order."""
        return [r for r in self.results if r is not None]

    def raise_failures(self) -> None:
        """Raise :class:`SweepError` if any job failed."""
        if self.failures:
            raise SweepError({self.jobs[i]: err for i, err in sorted(self.failures.items())}, self.done)

    def table(self) -> pd.DataFrame:
        """One row per job: its files and settings (``method`` as asked), status, key, timings, diagnostics
        and error.

        ``status`` is ``fitted``, ``skipped`` (a finished fit with the same key was found) or
        ``failed`` (``error`` says why); ``diagnostics``, ``rhat_max``, ``ess_bulk_min``,
        ``ess_tail_min`` and ``divergences`` come from the saved fit; ``batch`` is how many fits shared
        its compiled program, ``note`` why it was fitted alone when it could have been batched, or why a
        Laplace job was fitted with NUTS (the model is outside the Laplace regime).
        """
        import pandas as pd

        rows = []
        for i, job in enumerate(self.jobs):
            res, err = self.results[i], self.failures.get(i)
            row = {"data": str(job.data), "model": str(job.model), "priors": str(job.priors),
                   **{n: getattr(job, n) for n in ("sampler", "method", "chains", "tune", "draws", "seed",
                                                    "float32")},
                   "out": str(job.out), "key": self.keys[i],
                   "status": "failed" if err is not None else res.status,
                   "seconds": None if res is None or res.status == "skipped" else round(res.seconds, 2),
                   "host": None if res is None else res.host, "pid": None if res is None else res.pid}
            diag = (read_provenance(res.path) or {}).get("diagnostics", {}) if res is not None else {}
            row.update(diagnostics=diag.get("status"),
                       **{k: diag.get(k) for k in ("rhat_max", "ess_bulk_min", "ess_tail_min",
                                                   "divergences")})
            row["batch"] = None if res is None else res.batch
            row["note"] = (res.note if res is not None else "") or None
            row["error"] = None if err is None else f"{err.__class__.__name__}: {err}"
            rows.append(row)
        return pd.DataFrame(rows)


def execute(jobs: Sequence[FitJob], *, scheduler: str | None = None, workers: int | None = None,
            executor: Any = None, refit: bool = False,
            on_done: Callable[[JobResult], None] | None = None,
            on_error: Callable[[FitJob, BaseException], None] | None = None, batched: bool = True,
            log: Callable[[str], None] | None = None) -> SweepResult:
    """Run ``jobs`` (skipping finished ones) and gather what happened to each.

    Jobs to run that differ only in a prior set of one structure are one task (``batched``:
    :func:`prior_batches`, :func:`run_prior_batch`): one compiled program fits them all, in turn on CPU
    and side by side on an accelerator, and each is saved as its own fit with its own content key.

    Parameters
    ----------
    jobs : sequence of FitJob
        The fits to run; their ``out`` paths must be distinct.
    scheduler : str, optional
        Dask scheduler address or scheduler file; default ``$HIERARCHY_DASK_SCHEDULER``, else a
        new local cluster of worker processes. ``"synchronous"``: one job after another in this
        process.
    workers : int, optional
        Worker processes of a new local cluster; default :func:`default_workers` of the jobs to
        run. Ignored with an existing scheduler or ``executor``.
    executor : dask.distributed.Client or concurrent.futures.Executor, optional
        Run the jobs there instead (it is left open).
    refit : bool
        Fit even when ``out`` holds a finished fit with the job's key.
    on_done : callable, optional
        Called with each :class:`JobResult` (fitted or skipped) as it finishes.
    on_error : callable, optional
        Called with each failed job and its error as it fails.
    batched : bool
        Fit jobs that differ only in a same-structure prior set in one program (default); False: one
        task per job.
    log : callable, optional
        Told how the jobs were batched and why a job was fitted alone.

    Returns
    -------
    SweepResult
        Job failures are in ``failures``, not raised.

    Raises
    ------
    HierarchyError
        When two jobs write the same file, or no cluster could be reached.
    """
    jobs = list(jobs)
    outs = [j.out.resolve() for j in jobs]
    if len(set(outs)) != len(outs):
        dup = sorted({str(o) for o in outs if outs.count(o) > 1})
        raise HierarchyError(f"two jobs of the sweep write the same fit file: {', '.join(dup)}")
    done = on_done or (lambda _r: None)
    failed = on_error or (lambda _j, _e: None)
    result = SweepResult(jobs=jobs, keys=[None] * len(jobs), results=[None] * len(jobs))

    def fail(i: int, err: BaseException) -> None:
        result.failures[i] = err
        failed(jobs[i], err)

    todo, hashes = [], {}
    for i, job in enumerate(jobs):
        try:
            result.keys[i] = job_key(job, data_hashes=hashes)
        except Exception as err:  # a bad input file fails its jobs only
            fail(i, err)
            continue
        if not refit and job.out.exists() and fit_key(read_provenance(job.out)) == result.keys[i]:
            stamp = job.out.stat().st_mtime
            result.results[i] = JobResult(job=job, path=job.out, pid=None, started=stamp, finished=stamp,
                                          summary=f"{job.out}: already fitted (key {result.keys[i]})",
                                          key=result.keys[i], status="skipped")
            done(result.results[i])
        else:
            todo.append(i)
    if not todo:
        return result
    tasks, notes = _plan(jobs, todo, batched, log or (lambda _m: None))

    def finish(i: int, res: JobResult) -> None:
        note = res.note or notes.get(i, "")
        result.results[i] = dataclasses.replace(res, job=jobs[i], path=jobs[i].out, key=result.keys[i], note=note)
        done(result.results[i])

    from hierarchy.inference.cluster import SYNCHRONOUS, connect, resolve_scheduler

    address = resolve_scheduler(scheduler)
    if executor is None and address == SYNCHRONOUS:
        _run_here(jobs, tasks, finish, fail)
        return result
    if executor is None:
        n = workers if workers is not None else default_workers(len(tasks))
        with connect(scheduler, workers=n) as client:  # a local cluster shares our working directory
            _gather(client, jobs, tasks, result.keys, finish, fail, absolute=address is not None,
                    setup=False)  # connect() has set the workers up
    else:
        _gather(executor, jobs, tasks, result.keys, finish, fail)
    return result


def _run_here(jobs: list[FitJob], tasks: list[list[int]], finish: Callable[[int, JobResult], None],
              fail: Callable[[int, BaseException], None]) -> None:
    """Run the tasks one after another in this process; a failed task fails each of its jobs."""
    for task in tasks:
        try:
            results = run_task([jobs[i] for i in task])
        except Exception as err:
            for i in task:
                fail(i, err)
            continue
        for i, res in zip(task, results, strict=True):
            finish(i, res)


def _plan(jobs: list[FitJob], todo: list[int], batched: bool,
          say: Callable[[str], None]) -> tuple[list[list[int]], dict[int, str]]:
    """The tasks of ``todo`` (:func:`prior_batches`, or one per job) and the notes of jobs fitted alone."""
    if not batched:
        return [[i] for i in todo], {}
    try:
        tasks, notes = prior_batches(jobs, todo)
    except Exception as err:  # an unreadable prior file: its job fails on its own, as unbatched
        say(f"fits not batched: {err}")
        return [[i] for i in todo], {}
    for task in tasks:
        if len(task) > 1:
            say(f"{len(task)} fits in one program: {', '.join(jobs[i].out.name for i in task)}")
    for i, why in notes.items():
        say(f"{jobs[i].out.name}: fitted alone ({why})")
    return tasks, notes


def _gather(executor: Any, jobs: list[FitJob], tasks: list[list[int]], keys: list[str | None],
            finish: Callable[[int, JobResult], None], fail: Callable[[int, BaseException], None], *,
            absolute: bool = True, setup: bool = True) -> None:
    """Submit each task (``jobs[i]`` for ``i`` in it, :func:`run_task`) and report its jobs as it completes.

    Paths are sent absolute to Dask workers (they may run elsewhere) unless ``absolute`` is
    false, and as given to a ``concurrent.futures`` executor (processes of this machine).
    ``setup`` registers :class:`hierarchy.inference.cluster.JaxWorkerSetup` on a Dask client's workers.
    """
    import concurrent.futures as cf

    if isinstance(executor, cf.Executor):
        futures = {executor.submit(run_task, [jobs[i] for i in task]): task for task in tasks}
        completed = cf.as_completed(futures)
    else:
        from distributed import Client, as_completed

        if not isinstance(executor, Client):
            raise HierarchyError("executor must be a dask.distributed.Client or a "
                                 f"concurrent.futures.Executor, got {type(executor).__name__}")
        if setup:
            from hierarchy.inference.cluster import JaxWorkerSetup

            executor.register_plugin(JaxWorkerSetup())  # acts only in workers that have not started JAX
        futures = {executor.submit(run_task, [jobs[i].absolute() if absolute else jobs[i] for i in task],
                                   pure=False, key=f"fit-{jobs[task[0]].out.stem}-{keys[task[0]]}-{task[0]}"
                                                   + (f"-batch{len(task)}" if len(task) > 1 else "")): task
                   for task in tasks}
        completed = as_completed(futures)
    for fut in completed:
        task = futures[fut]
        try:
            results = fut.result()
        except Exception as err:  # reported with the task's jobs; the others go on
            for i in task:
                fail(i, err)
            continue
        for i, res in zip(task, results, strict=True):
            finish(i, res)


def run_jobs(jobs: Sequence[FitJob], *, executor: Any = None, workers: int | None = None,
             scheduler: str | None = None, refit: bool = False,
             on_done: Callable[[JobResult], None] | None = None, batched: bool = True,
             log: Callable[[str], None] | None = None) -> list[JobResult]:
    """Run ``jobs`` (skipping finished ones) and return their results in job order.

    Parameters are those of :func:`execute`.

    Returns
    -------
    list of JobResult
        One per job, ``status`` ``"fitted"`` or ``"skipped"``.

    Raises
    ------
    SweepError
        If any job failed (after all the others have finished; their fits are saved).
    """
    result = execute(jobs, scheduler=scheduler, workers=workers, executor=executor, refit=refit,
                     on_done=on_done, batched=batched, log=log)
    result.raise_failures()
    return result.done


def run_sweep(jobs: Sequence[FitJob], *, executor: Any = None, workers: int | None = None,
              scheduler: str | None = None, refit: bool = False,
              on_done: Callable[[JobResult], None] | None = None) -> list[Path]:
    """Run ``jobs`` and return the fit paths in job order (see :func:`run_jobs`)."""
    return [r.path for r in run_jobs(jobs, executor=executor, workers=workers, scheduler=scheduler,
                                     refit=refit, on_done=on_done)]

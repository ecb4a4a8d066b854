"""Run many fits at once: a sweep of (data, model, priors, settings) jobs in parallel processes.

A :class:`FitJob` is plain data (file paths and sampler settings), so it can be pickled and sent
anywhere; :func:`run_job` fits one job with :func:`hierarchy.workflow.fit_files` and saves the
fit; :func:`run_sweep` runs a list of jobs on an executor and returns the fit paths in job order.

By default the executor is a local :class:`concurrent.futures.ProcessPoolExecutor` with the
``"spawn"`` start method (a fresh interpreter per worker: JAX is not fork-safe, and XLA flags
such as the host device count only take effect before JAX starts). Inside a worker, chains run
one after another (``chain_method="sequential"``) so that ``workers`` processes use about
``workers`` cores. The default number of workers is ``min(len(jobs), cores available)``: 2 on
the 2-core machine this was measured on (DESIGN section 4).

A later change can hand the same jobs to a distributed engine: pass any object with the
:class:`concurrent.futures.Executor` ``submit(fn, *args)`` method whose futures have
``result()`` (for example a ``dask.distributed.Client``)::

    from hierarchy.sweep import FitJob, run_sweep

    jobs = [FitJob(data="out/national_2019.parquet", model="models/inverse_intervention_nb.toml",
                   priors=f"priors/{p}.toml", out=f"fits/{p}.nc", chains=2, tune=500, draws=500)
            for p in ("weakly_informative", "vague")]
    paths = run_sweep(jobs, workers=2)
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hierarchy.errors import HierarchyError

__all__ = ["FitJob", "JobResult", "SweepError", "available_cores", "default_workers", "run_job",
           "run_jobs", "run_sweep"]


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

    Paths are kept as given (relative paths resolve in the worker's working directory, which is
    the caller's for local processes). Equal jobs are equal and hash alike.
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

    def __post_init__(self) -> None:
        for name in ("data", "model", "priors", "out", "columns"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("chains", "tune", "draws"):
            if int(getattr(self, name)) < (1 if name != "tune" else 0):
                raise HierarchyError(f"FitJob.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class JobResult:
    """What a finished job reports: the fit path, the worker's process id and its timings."""

    job: FitJob
    path: Path
    pid: int
    started: float  # time.time() in the worker
    finished: float
    summary: str

    @property
    def seconds(self) -> float:
        """Wall time of the job in its worker."""
        return self.finished - self.started


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the platform has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers(n_jobs: int) -> int:
    """``min(n_jobs, cores available)``, at least 1."""
    return max(1, min(n_jobs, available_cores()))


def run_job(job: FitJob) -> JobResult:
    """Fit one job and save the fit to ``job.out`` (runs in a worker process).

    Parameters
    ----------
    job : FitJob
        Files and settings.

    Returns
    -------
    JobResult
        Fit path, worker pid, start and end times and the fit's text summary.
    """
    from hierarchy.workflow import fit_files

    started = time.time()
    summary = fit_files(data=job.data, model=job.model, priors=job.priors, out=job.out,
                        columns=job.columns, sampler=job.sampler, chains=job.chains, tune=job.tune,
                        draws=job.draws, seed=job.seed, include_data=job.include_data,
                        progress=False, chain_method=job.chain_method, float32=job.float32)
    return JobResult(job=job, path=Path(job.out), pid=os.getpid(), started=started,
                     finished=time.time(), summary=summary)


def run_jobs(jobs: Sequence[FitJob], *, executor: Executor | None = None, workers: int | None = None,
             on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """Run ``jobs`` in parallel and return their results in job order.

    Parameters
    ----------
    jobs : sequence of FitJob
        The fits to run; their ``out`` paths must be distinct.
    executor : concurrent.futures.Executor, optional
        Where to run them (anything with ``submit(fn, job)`` returning a future with
        ``result()``). Default: a local spawn-context process pool of ``workers`` processes,
        shut down on return.
    workers : int, optional
        Processes of the default pool; default :func:`default_workers`. Ignored with
        ``executor``.
    on_done : callable, optional
        Called with each :class:`JobResult` as it finishes (in completion order), e.g. to print
        progress.

    Returns
    -------
    list of JobResult

    Raises
    ------
    SweepError
        If any job failed (after all the others have finished; their fits are saved).
    """
    jobs = list(jobs)
    outs = [j.out.resolve() for j in jobs]
    if len(set(outs)) != len(outs):
        dup = sorted({str(o) for o in outs if outs.count(o) > 1})
        raise HierarchyError(f"two jobs of the sweep write the same fit file: {', '.join(dup)}")
    if not jobs:
        return []
    own = executor is None
    if own:
        n = workers if workers is not None else default_workers(len(jobs))
        if n < 1:
            raise HierarchyError(f"workers must be at least 1, got {n}")
        executor = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures: list[Future] = [executor.submit(run_job, job) for job in jobs]
        results: dict[int, JobResult] = {}
        failures: dict[FitJob, BaseException] = {}
        pending = dict(enumerate(futures))
        while pending:  # poll so that any Future-like object works, in completion order
            for i, fut in list(pending.items()):
                if hasattr(fut, "done") and not fut.done():
                    continue
                del pending[i]
                try:
                    results[i] = fut.result()
                except Exception as err:  # reported together below
                    failures[jobs[i]] = err
                    continue
                if on_done is not None:
                    on_done(results[i])
            if pending:
                time.sleep(0.05)
    finally:
        if own:
            executor.shutdown(wait=True)
    done = [results[i] for i in sorted(results)]
    if failures:
        raise SweepError(failures, done)
    return done


def run_sweep(jobs: Sequence[FitJob], *, executor: Executor | None = None, workers: int | None = None,
              on_done: Callable[[JobResult], None] | None = None) -> list[Path]:
    """Run ``jobs`` in parallel processes and return the saved fit paths in job order.

    See :func:`run_jobs` for the parameters; this is the interface a distributed engine needs to
    honour (jobs in, fit paths out).
    """
    return [r.path for r in run_jobs(jobs, executor=executor, workers=workers, on_done=on_done)]


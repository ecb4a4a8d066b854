"""Where a sweep's fits run: a Dask cluster, and what JAX needs in its worker processes.

:func:`connect` yields a :class:`dask.distributed.Client`: to the scheduler at ``scheduler``, else
at ``$HIERARCHY_DASK_SCHEDULER``, else to a new local cluster of worker *processes* (one thread
each, Dask's ``spawn`` start method: a fresh interpreter per worker, as JAX is not fork-safe),
closed on exit. A scheduler is an address (``tcp://host:8786``) or a scheduler file written by
``dask scheduler --scheduler-file``.

JAX reads two things once, when it is first imported in a process, so they are set in each worker
before any fit imports it (:class:`JaxWorkerSetup`, registered on every worker of the client,
present and future):

* the number of XLA host devices (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``),
  which bounds how many chains of one fit run in parallel: ``cores // workers`` on a local
  cluster, the worker's thread count on an existing one;
* the persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``, default
  ``~/.cache/hierarchy/jax`` as for ``hierarchy fit``): most of a small fit is compilation, and
  every worker compiles the same programs. Variables already set in a worker's environment win.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, LocalCluster, WorkerPlugin

from hierarchy.errors import HierarchyError

SCHEDULER_ENV = "HIERARCHY_DASK_SCHEDULER"
"""Environment variable naming the Dask scheduler that sweeps use when none is given."""
SYNCHRONOUS = "synchronous"
"""Scheduler value meaning: no cluster, run the jobs one after another in this process."""
DEFAULT_CACHE = Path("~/.cache/hierarchy/jax")

__all__ = ["DEFAULT_CACHE", "SCHEDULER_ENV", "SYNCHRONOUS", "JaxWorkerSetup", "available_cores",
           "connect", "resolve_scheduler", "worker_environment"]


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the platform has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_scheduler(scheduler: str | None = None) -> str | None:
    """The scheduler to use: ``scheduler``, else ``$HIERARCHY_DASK_SCHEDULER``, else None (local).

    Returns an address, a scheduler file path, :data:`SYNCHRONOUS`, or None for a new local
    cluster. Blank values count as unset.
    """
    for value in (scheduler, os.environ.get(SCHEDULER_ENV)):
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def worker_environment(devices: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables a fitting worker needs before JAX starts.

    Parameters
    ----------
    devices : int
        XLA host devices (parallel chains) per worker.
    environ : dict, optional
        The worker's current environment (default ``os.environ``); a device count or cache folder
        already set there is kept.

    Returns
    -------
    dict of str to str
        ``XLA_FLAGS`` and ``JAX_COMPILATION_CACHE_DIR`` (and the cache's minimum compile time).
    """
    env = dict(os.environ if environ is None else environ)
    if devices < 1:
        raise HierarchyError(f"a worker needs at least 1 XLA device, got {devices}")
    flags = env.get("XLA_FLAGS", "")
    if not re.search(r"xla_force_host_platform_device_count", flags):
        flags = f"{flags} --xla_force_host_platform_device_count={int(devices)}".strip()
    out = {"XLA_FLAGS": flags,
           "JAX_COMPILATION_CACHE_DIR": env.get("JAX_COMPILATION_CACHE_DIR")
           or str(DEFAULT_CACHE.expanduser())}
    out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = env.get(
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return out


class JaxWorkerSetup(WorkerPlugin):
    """Dask worker plugin: set JAX's device count and compilation cache before JAX starts.

    Parameters
    ----------
    devices : int, optional
        XLA host devices per worker; default the worker's thread count.
    """

    name = "hierarchy-jax-setup"
    idempotent = True

    def __init__(self, devices: int | None = None):
        self.devices = devices

    def setup(self, worker) -> None:  # runs in the worker process
        if "jax" in sys.modules:  # too late for XLA flags: the worker has fitted before
            return
        devices = self.devices or getattr(getattr(worker, "state", None), "nthreads", None) or 1
        os.environ.update(worker_environment(int(devices)))


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int = 1) -> Iterator:
    """A Dask client for a sweep: an existing scheduler, or a local cluster closed on exit.

    Parameters
    ----------
    scheduler : str, optional
        Scheduler address or scheduler file; default ``$HIERARCHY_DASK_SCHEDULER``, else a new
        local cluster.
    workers : int
        Worker processes of a new local cluster (one thread each; the cores are shared out as
        XLA devices, at least one per worker). Ignored for an existing scheduler.

    Yields
    ------
    dask.distributed.Client
    """
    address = resolve_scheduler(scheduler)
    if address == SYNCHRONOUS:
        raise HierarchyError(f"'{SYNCHRONOUS}' runs fits in this process, without a Dask client: "
                             "give a scheduler address (tcp://host:8786) or a scheduler file")
    if address is not None:
        file = Path(address).expanduser()
        where = {"scheduler_file": str(file)} if file.is_file() else {"address": address}
        try:
            client = Client(**where, timeout="30s")
        except (OSError, TimeoutError) as err:
            src = "--scheduler" if scheduler else f"${SCHEDULER_ENV}"
            raise HierarchyError(f"cannot reach the Dask scheduler {address} (from {src}): {err}; "
                                 "start one with `dask scheduler` or leave it unset for a local "
                                 "cluster") from None
        with client:
            client.register_plugin(JaxWorkerSetup())
            yield client
        return
    if workers < 1:
        raise HierarchyError(f"workers must be at least 1, got {workers}")
    devices = max(1, available_cores() // workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                      dashboard_address=None, silence_logs=logging.CRITICAL,
                      env=worker_environment(devices)) as cluster, Client(cluster) as client:
        client.register_plugin(JaxWorkerSetup(devices))
        yield client

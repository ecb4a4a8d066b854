"""Shared fixtures. The real England data are read at run time from ../shared/data/england (or
$HIERARCHY_REFERENCE_DIR); tests that need them skip when the folder is absent, except in CI
(``CI`` set to a true value), where the folder is provisioned and its absence is a failure.

Plain helpers that test modules import are in ``tests/helpers.py`` (``from tests.helpers import ...``):
a conftest is not importable by name under ``--import-mode=importlib``. This module imports them
inside the fixtures, so that its collection hook also loads on its own (test_xdist_groups.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from hierarchy.data import reference

# One JAX persistent compilation cache for every process of a test session: the xdist workers,
# the sweep's spawned fitting processes, the notebook kernels and CLI subprocesses all inherit
# these variables (set here, before any of them starts or imports JAX). Most of a small fit is
# compilation (a new process compiles hundreds of small programs), and many processes compile
# the same ones: the notebook fits share one data set, the model tests one small geography. The
# folder is new for each session, so a run starts as cold as on CI, and is removed at the end.
# An existing $JAX_COMPILATION_CACHE_DIR is used as it is (and kept).
_OWN_JAX_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _OWN_JAX_CACHE = tempfile.mkdtemp(prefix="hierarchy-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_JAX_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


# The same for hierarchy's own cache (neighbourhood graphs, dissolved map boundaries): one per session,
# cold as on CI, never the user's ~/.cache/hierarchy.
_OWN_CACHE = None
if not os.environ.get("HIERARCHY_CACHE"):
    _OWN_CACHE = tempfile.mkdtemp(prefix="hierarchy-test-cache-")
    os.environ["HIERARCHY_CACHE"] = _OWN_CACHE


def pytest_unconfigure(config):
    for own in (_OWN_JAX_CACHE, _OWN_CACHE):  # only the process that made them (xdist workers inherit)
        if own:
            shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_compilation_cache():
    """Keep in-process CLI commands on the session's JAX cache.

    ``hierarchy fit`` switches JAX's persistent cache on, process-wide, at ~/.cache/hierarchy/jax;
    run in-process by a test, it would make the rest of that worker read and write the user's
    cache, whose entries from earlier runs hide compilation time that a fresh CI machine pays.
    """
    from hierarchy.inference import sampling

    original = getattr(sampling, "enable_compilation_cache", None)
    if original is None:
        yield
        return

    def enable(path=None):
        import jax

        original(path or os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sampling, "enable_compilation_cache", enable)
        yield


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` honour ``xdist_group`` marks with pytest 9.2.

    pytest-xdist (3.8) groups tests by a suffix on the node id (``...::test@group``) that each worker
    adds by assigning ``item._nodeid``. pytest 9.2 keeps node ids in ``item._id`` and ignores that
    attribute, so every test was scheduled on its own: module fixtures were built on both workers
    (the compare fits twice, the small fit twice) and notebook 05 ran apart from the fit of 02.
    The suffix is added here where xdist's is missing (with older pytest xdist's works and this
    does nothing). This reaches into pytest's node-id internals (``item._id``): pyproject.toml pins
    the versions it was written for (pytest < 9.3, pytest-xdist < 3.9) and test_xdist_groups.py
    checks, in a two-worker session, that a group is not split.
    """
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        if not names:
            continue
        suffix = "@" + "_".join(sorted(names))
        if item.nodeid.endswith(suffix):
            continue
        node_id = getattr(item, "_id", None)
        if hasattr(type(node_id), "parse"):
            item._id = type(node_id).parse(item.nodeid + suffix)
        else:
            item._nodeid = item.nodeid + suffix
        if not item.nodeid.endswith(suffix):
            warnings.warn(pytest.PytestWarning(f"cannot put {item.nodeid} in xdist group {suffix[1:]}: "
                                               "it may run on another worker than its group"), stacklevel=1)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference folder, or skip when it is absent (fail on CI)."""
    from tests.helpers import need_reference

    return need_reference(reference.find_reference_dir())


@pytest.fixture(scope="session")
def reference_geography(reference_dir: Path) -> reference.Geography:
    """The real England geography (parsed once per session)."""
    return reference.load_reference(reference_dir)


@pytest.fixture(scope="session")
def small_geography() -> reference.Geography:
    """A small generated geography (12 LAs of ~30 neighbourhoods) for fast tests."""
    return reference.synthetic_geography(12, seed=7, lsoa_per_la=30)


@pytest.fixture(scope="session")
def shared_fit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Paths of the session's shared fit (fit, data, truth, planted small cell), built on first use
    and shared by the xdist workers (``tests.helpers.shared_fit_paths``). Tests that use it carry the
    ``tests.helpers.SHARED_FIT`` mark, so that one worker builds it and the others never wait."""
    from tests.helpers import shared_fit_paths

    return shared_fit_paths(tmp_path_factory)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The project built as a wheel, as ``pip install .`` builds it (test_packaging.py, test_checking.py)."""
    import re
    import subprocess
    import sys

    from tests.helpers import ROOT

    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode and re.search(r"No matching distribution|Could not find a version|connection",
                                     proc.stderr, re.I):
        pytest.skip(f"the build backend cannot be fetched here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    return next(out.glob("*.whl"))

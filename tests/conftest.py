"""Shared fixtures. The real England data are read at run time from ../shared/data/england (or
$HIERARCHY_REFERENCE_DIR); tests that need them skip when the folder is absent, except in CI
(``CI`` set to a true value), where the folder is provisioned and its absence is a failure."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

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


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE:  # only the process that made the folder (xdist workers inherit the variable)
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


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


NO_REFERENCE = ("England reference data not found (../shared/data/england beside the checkout or "
                "$HIERARCHY_REFERENCE_DIR); real-geography checks need it")


ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True on CI (``CI`` set to anything but empty, 0, false or no), where the reference folder
    is provisioned: a test that needs it fails there instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_reference(folder: Path | None) -> Path:
    """``folder``, or skip (fail on CI) when the reference data were not found."""
    if folder is None:
        if in_ci():
            pytest.fail(f"{NO_REFERENCE}; CI provisions it, so its absence is a failure here", pytrace=False)
        pytest.skip(NO_REFERENCE)
    return folder


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference folder, or skip when it is absent (fail on CI)."""
    return need_reference(reference.find_reference_dir())


@pytest.fixture(scope="session")
def reference_geography(reference_dir: Path) -> reference.Geography:
    """The real England geography (parsed once per session)."""
    return reference.load_reference(reference_dir)


@pytest.fixture(scope="session")
def small_geography() -> reference.Geography:
    """A small generated geography (12 LAs of ~30 neighbourhoods) for fast tests."""
    return reference.synthetic_geography(12, seed=7, lsoa_per_la=30)


def with_formula_columns(table, seed: int = 0):
    """``table`` with the columns the formula example models read (test data, not a simulation of
    them): a rural flag per neighbourhood, LA income inequality, a year and an ethnic group per row,
    re-referrals (of at least one referral per row), and a duration band and events for the duration
    and re-entry models."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = table.copy()
    codes = t["neighbourhood"].astype(str)
    rural = {c: int(rng.random() < 0.3) for c in sorted(set(codes))}
    t["rural"] = codes.map(rural).astype(float)
    t["la_inequality"] = t.groupby("la")["deprivation"].transform("std").fillna(0.0)
    t["year"] = rng.choice([2018, 2019, 2020], len(t))
    t["ethnicity"] = rng.choice(["Asian", "Black", "Mixed", "Other", "White"], len(t))
    t["referral"] = np.maximum(t["referral"], 1)
    t["re_referral"] = rng.binomial(t["referral"], 0.2)
    t["band"] = rng.choice(["0000-0091", "0091-0182", "0182+"], len(t))  # duration models (events per band)
    t["events"] = rng.binomial(t["referral"], 0.5)
    # the replication models (issue 15, hierarchy.data.findings): sex x age, factors, plan categories, sparsity,
    # simulated LA covariates, repeat plans (of at least one plan per row), child-weighted LA deprivation
    t["sex"] = rng.choice(["female", "male"], len(t))
    t["age_c"] = rng.integers(0, 18, len(t)) - 8.5
    t["factor"] = rng.choice(["neglect", "mental_health", "physical_disability"], len(t))
    t["assessment"] = rng.binomial(t["referral"], 0.5)
    t["category"] = rng.choice(["neglect", "emotional_abuse", "sexual_abuse"], len(t))
    t["sparsity"] = codes.map({c: rng.normal() for c in sorted(set(codes))}).astype(float)
    las = sorted(set(t["la"].astype(str)))
    for col, mean, sd in (("la_expenditure", 900.0, 150.0), ("la_workforce_stability", 0.85, 0.05)):
        t[col] = t["la"].astype(str).map({la: mean + sd * rng.normal() for la in las}).astype(float)
    t["cp_plan"] = np.maximum(t["cp_plan"], 1)
    t["repeat_cp_plan"] = rng.binomial(t["cp_plan"], 0.2)
    wx = (t["deprivation"] * t["exposure"]).groupby(t["la"]).transform("sum")
    t["la_deprivation"] = wx / t["exposure"].groupby(t["la"]).transform("sum")
    return t


# ------------------------------------------------------------------------------------------
# The session's shared fit (test_estimands.py, test_report.py, test_disclosure.py)

PLANTED = 3
# Every test of the session's shared fit runs on one xdist worker: the fit is made once, and no
# worker sits idle waiting on its file lock.
SHARED_FIT = pytest.mark.xdist_group("shared_fit")


def _plant_small_cell(table, value: int = PLANTED) -> dict[str, Any]:
    """Give one LA exactly ``value`` referrals in one decile (changing as little as possible)."""
    import numpy as np

    from hierarchy.results import estimands

    dec = estimands.deciles_of(table["deprivation"].to_numpy(), table["neighbourhood"].to_numpy())
    cells = table.assign(decile=dec).groupby(["la", "decile"])["referral"].agg(["sum", "size"])
    cells["gap"] = (cells["sum"] - value).abs()
    la, d = cells.sort_values(["size", "gap"]).index[0]
    rows = np.flatnonzero((table["la"] == la).to_numpy() & (dec == d))
    counts = table["referral"].to_numpy().copy()
    counts[rows] = 0
    counts[rows[0]] = value
    table["referral"] = counts
    return {"la": str(la), "decile": int(d), "children": float(table["exposure"].to_numpy()[rows].sum())}


def _build_shared_fit(folder: Path) -> None:
    from hierarchy import workflow
    from hierarchy.data import simulate

    geo = reference.synthetic_geography(60, seed=1, lsoa_per_la=30)
    # a seed different from the geography's: equal seeds make the LA slope noise v_j a copy of
    # the geography's first draws (LA deprivation), which bends the LA gradient curve
    table, truth = simulate.simulate(geo, year=2019, seed=2)
    planted = _plant_small_cell(table)
    data = folder / "data.parquet"
    simulate.write(table, truth, data)
    workflow.fit_files(data=data, model=ROOT / "models/inverse_intervention_nb_log.toml",
                       priors=ROOT / "priors/weakly_informative.toml", out=folder / "fit.tmp.nc",
                       chains=2, tune=400, draws=400, include_data=True, progress=False)
    (folder / "planted.json").write_text(json.dumps(planted))
    os.replace(folder / "fit.tmp.nc", folder / "fit.nc")


def shared_fit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Paths of the session's shared fit (built on first use): fit, data, truth, planted cell.

    One small fit (60 synthetic LAs of ~30 neighbourhoods, 2 chains x 400 + 400), cached on disk
    for the session. Its table has one planted small cell: an LA with exactly :data:`PLANTED`
    referrals in one national decile (for the disclosure tests).
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist workers share the parent; the lock serialises
        root = root.parent
    folder = root / "hierarchy_report_fit"
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder / "lock")):
        if not (folder / "fit.nc").exists():
            _build_shared_fit(folder)
    return {"fit": folder / "fit.nc", "data": folder / "data.parquet",
            "truth": json.loads((folder / "data.truth.json").read_text()),
            "planted": json.loads((folder / "planted.json").read_text())}

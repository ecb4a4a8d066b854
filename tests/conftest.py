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


# The longest work units of the test runs (an xdist group by its name, else a test or module by its node id,
# matched as a prefix), with their wall time in seconds on 2 busy cores. Under ``--dist loadgroup
# --no-loadscope-reorder`` the workers take the units in collection order, so these go first, longest first,
# and the short tests fill in around them at the end: started last, a 10-minute SBC test kept one worker
# busy for minutes after the other had finished. Rough figures do: only the order matters.
LONGEST_FIRST = {
    "tests/inference/test_sbc.py::test_sbc_of_the_anchored_stacked_level": 610,
    "tests/inference/test_sbc.py::test_sbc_ranks_are_uniform[poisson_lognormal]": 540,
    "tests/inference/test_sbc.py::test_sbc_ranks_are_uniform[poisson]": 240,
    "tests/inference/test_sbc.py::test_sbc_ranks_are_uniform[negative_binomial]": 200,
    "tests/inference/test_chees.py::test_sbc_of_chees": 130,
    "tests/inference/test_sbc_laplace.py::test_laplace_sbc_ranks_are_uniform": 160,
    "tests/inference/test_sbc.py::test_sbc_flags_a_fit_under_the_wrong_prior": 110,
    "cv": 950,
    "compare": 350,
    "tests/inference/test_batch.py::test_batched_kfold_refits_agree": 230,
    "tests/results/test_maihda.py": 225,
    "tests/likelihood/test_spatial.py::test_recovers_a_known_spatial_field": 70,
    "tests/inference/test_laplace.py::test_laplace_beside_nuts[inverse_intervention_nb_log]": 190,
    "sampler_options": 190,
    "tests/inference/test_laplace.py::test_laplace_beside_nuts_stacked_and_years": 150,
    "tests/inference/test_sweep.py::test_two_worker_sweep": 140,
    "tests/inference/test_sweep.py::test_a_laplace_sweep": 110,
    "notebooks": 130,
    "tests/results/test_stages.py": 120,
    "approximations": 110,
    "tests/inference/test_batch.py::test_compare_models_batches": 110,
    "tests/inference/test_prior_batch.py::test_a_batch_of_prior_sets_matches": 260,
    "tests/reporting/test_replicate_batch.py::test_batched_stage_fits_agree": 280,
    "tests/results/test_spatial_compare.py": 100,
    "tests/likelihood/test_panel_censoring.py": 100,
    "tests/inference/test_laplace.py::test_fit_laplace_draws_like_nuts": 90,
    "shared_fit": 150,
    "small_fit": 120,
    "predict": 100,
    "tests/reporting/test_registry.py": 30,
    "tests/reporting/test_every_model_reports.py": 15,
    "tests/test_cli_paths.py::test_sbc_takes_las": 15,
    "conversion_report": 20,
    "shareable_fit": 60,
    "tests/inference/test_fit.py::test_parameter_recovery": 60,
    "tests/test_cli_paths.py::test_demo_fast": 55,
}


def _xdist_groups(item) -> str | None:
    """The item's xdist group name (its marks' names joined, as xdist joins them), or None."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
             for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) if names else None


def _expected_seconds(item, group: str | None) -> float:
    """The unit's entry in ``LONGEST_FIRST`` (its group's, or the longest matching node-id prefix), else 0."""
    if group is not None:
        return LONGEST_FIRST.get(group, 0)
    node_id = item.nodeid.split("@")[0]
    matches = [key for key in LONGEST_FIRST if "::" in key or key.endswith(".py") if node_id.startswith(key)]
    return LONGEST_FIRST[max(matches, key=len)] if matches else 0


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
    groups = {item: _xdist_groups(item) for item in items}
    items.sort(key=lambda item: -_expected_seconds(item, groups[item]))  # stable: the rest keep their order
    for item in items:
        if groups[item] is None:
            continue
        suffix = "@" + groups[item]
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


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test session, shared by the xdist workers.

    The folder lies beside the workers' own temporary folders; a file lock makes a second worker wait
    for the first one's build instead of building again, and a ``done`` marker is written last, so a
    build that failed half-way is redone, not read.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist workers share the parent
        root = root.parent
    folder = root / name
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder / "lock")):
        if not (folder / "done").exists():
            build(folder)
            (folder / "done").touch()
    return folder


CONVERSION_FORMULA = "cp_plan ~ w * z + (1 + w | la) + offset(log(s47))"


@pytest.fixture(scope="session")
def conversion_fit(tmp_path_factory: pytest.TempPathFactory):
    """A fit file of a conversion model (plans per s47 enquiry: a count as the exposure), read-only.

    5 synthetic LAs of 30 neighbourhoods (every LA holds >= 10 plans), neighbourhoods with no enquiry
    dropped; negative binomial, 2 chains x 40 draws from the prior in the shapes NUTS gives
    (``tests.helpers.prior_draws``; NUTS's compilation was most of this fixture): for tests of what a fit
    file and a report of such a model may show (test_conversion_report.py, test_fit_disclosure.py), not of
    its estimates.
    Fitted once per session for both modules. Returns ``table``, ``spec`` and ``path`` (the fit file).
    """
    from types import SimpleNamespace

    from hierarchy.data import simulate
    from hierarchy.data.table import data_hash
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import ModelSpec
    from hierarchy.results import fitfile
    from tests.helpers import ROOT, prior_draws

    geo = reference.synthetic_geography(5, seed=5, lsoa_per_la=30)
    table = simulate.simulate(geo, seed=5)[0]
    table = table[table["s47"] > 0].reset_index(drop=True)
    spec = ModelSpec.from_dict({"name": "conversion", "family": "negative_binomial",
                                "formula": CONVERSION_FORMULA})

    def build(folder: Path) -> None:
        priors = load_priors(ROOT / "priors/weakly_informative.toml")
        design = build_design(table, spec)
        draws = prior_draws(spec, priors, design, chains=2, draws=40, seed=1)
        idata = fitfile.build_idata(draws, spec, priors, design,
                                    data_hash=data_hash(table, **spec.hashed_columns))
        fitfile.save_fit(idata, folder / "conversion.nc")

    folder = built_once(tmp_path_factory, "conversion_fit", build)
    return SimpleNamespace(table=table, spec=spec, path=folder / "conversion.nc")


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

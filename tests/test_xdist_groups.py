"""The conftest hook that keeps ``xdist_group`` tests on one worker under ``--dist loadgroup``.

pytest-xdist marks a group by a suffix on the node id (``...::test@group``); with pytest 9.2 its own
assignment no longer takes, and ``conftest.pytest_collection_modifyitems`` adds the suffix through
pytest's node-id internals. The versions it was written for are pinned in pyproject.toml
(``pytest<9.3``, ``pytest-xdist<3.9``); this test runs a small session with two workers and fails
if a grouped pair is split (so an upgrade inside the pins that breaks the hook is caught).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")
CONFTEST = Path(__file__).resolve().parent / "conftest.py"

INNER_CONFTEST = f'''
import importlib.util
spec = importlib.util.spec_from_file_location("hierarchy_test_conftest", {str(CONFTEST)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pytest_collection_modifyitems = module.pytest_collection_modifyitems
'''

TEST_FILE = '''
import os, pathlib, pytest

def _record(name):
    pathlib.Path(os.environ["WHERE"], name).write_text(os.environ.get("PYTEST_XDIST_WORKER", "none"))

@pytest.mark.xdist_group("g")
def test_{0}_grouped():
    _record("{0}_grouped")

def test_{0}_free_a():
    _record("{0}_free_a")

def test_{0}_free_b():
    _record("{0}_free_b")
'''


def _run(folder: Path, hook: bool) -> dict[str, str]:
    (folder / "conftest.py").write_text(INNER_CONFTEST if hook else "")
    for name in ("a", "b"):
        (folder / f"test_{name}.py").write_text(TEST_FILE.format(name))
    where = folder / "where"
    where.mkdir()
    env = {**os.environ, "WHERE": str(where)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
                           "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {p.name: p.read_text() for p in where.iterdir()}


def test_grouped_tests_share_a_worker(tmp_path):
    workers = _run(tmp_path, hook=True)
    assert len(workers) == 6 and set(workers.values()) <= {"gw0", "gw1"}
    assert workers["a_grouped"] == workers["b_grouped"], workers


ORDER_CONFTEST = INNER_CONFTEST + '''
module.LONGEST_FIRST.clear()
module.LONGEST_FIRST.update({"g": 100, "test_b.py::test_b_free_b": 50})
'''

ORDER_FILE = '''
import os, pathlib, pytest

def _record(name):
    where = pathlib.Path(os.environ["WHERE"], os.environ.get("PYTEST_XDIST_WORKER", "none"))
    with where.open("a") as f:
        f.write(name + "\\n")

@pytest.mark.xdist_group("g")
def test_{0}_grouped():
    _record("{0}_grouped")

def test_{0}_free_a():
    _record("{0}_free_a")

def test_{0}_free_b():
    _record("{0}_free_b")
'''


def test_the_longest_units_start_first(tmp_path):
    """With ``--no-loadscope-reorder`` (as in the Makefile) the workers take the units in the order the
    hook sorts them by ``LONGEST_FIRST``: the group first, then the one long free test, then the rest
    in collection order (without the table the second unit would be ``test_a_free_a``)."""
    (tmp_path / "conftest.py").write_text(ORDER_CONFTEST)
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(ORDER_FILE.format(name))
    where = tmp_path / "where"
    where.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup",
                           "--no-loadscope-reorder", "-q", "-p", "no:cacheprovider",
                           "-W", "error::pytest.PytestWarning", str(tmp_path)],
                          cwd=tmp_path, env={**os.environ, "WHERE": str(where)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = {p.name: p.read_text().split() for p in where.iterdir()}
    assert sorted(runs) == ["gw0", "gw1"] and sum(map(len, runs.values())) == 6, runs
    grouped = next(order for order in runs.values() if "a_grouped" in order)
    other = next(order for order in runs.values() if order is not grouped)
    assert grouped[:2] == ["a_grouped", "b_grouped"], runs
    assert other[0] == "b_free_b", runs

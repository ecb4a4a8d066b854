"""simulate.write goes through the project's one atomic writer (hierarchy.paths.atomic_path, issue 28): a failed
write leaves the earlier files as they were and nothing beside them, and a killed write's leftover is cleaned."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pyarrow.parquet
import pytest

from hierarchy.data import simulate as sim
from hierarchy.paths import stale_temps_in

TABLE = pd.DataFrame({"neighbourhood": ["E01000001", "E01000002"], "la": ["E09000001"] * 2,
                      "referrals": [12, 30], "children": [400.0, 510.0]})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_failed_write_leaves_the_earlier_files_and_no_leftover(tmp_path, monkeypatch):
    out = tmp_path / "sim.parquet"
    truth = sim.write(TABLE, {"seed": 1}, out)
    before = out.read_bytes(), truth.read_bytes()

    def broken(table, where, **kw):
        where.write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(pyarrow.parquet, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        sim.write(TABLE.assign(referrals=[13, 31]), {"seed": 2}, out)
    assert (out.read_bytes(), truth.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.parquet", "sim.truth.json"]


def test_a_killed_writes_leftover_is_recognised_and_cleaned(tmp_path):
    out = tmp_path / "sim.parquet"
    leftover = tmp_path / f".sim.parquet.tmp-{_dead_pid()}"
    leftover.write_bytes(b"from a killed run")
    assert stale_temps_in(tmp_path) == [leftover]
    sim.write(TABLE, {"seed": 1}, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.parquet", "sim.truth.json"]
    assert pd.read_parquet(out)["referrals"].tolist() == [12, 30]

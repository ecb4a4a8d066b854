"""Output paths: never an input or a foreign file, checked before work, written whole or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hierarchy import paths
from hierarchy.errors import HierarchyError


def _fake_fit(path):
    """A netCDF file with hierarchy provenance, as save_fit writes it (without sampling)."""
    import h5py

    with h5py.File(path, "w") as h5:
        h5.create_group("posterior").attrs["hierarchy"] = "{}"
    return path


def test_output_may_not_be_an_input(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with pytest.raises(HierarchyError, match="is the input file"):
        paths.check_output(data, kind="csv", inputs=[data], replace=True)
    # another spelling and a link to it are the same file
    with pytest.raises(HierarchyError, match="is the input file"):
        paths.check_output(tmp_path / "sub" / ".." / "data.csv", kind="csv", inputs=[data], replace=True)
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    with pytest.raises(HierarchyError, match="is the input file"):
        paths.check_output(link, kind="csv", inputs=[data], replace=True)


def test_format_follows_the_name(tmp_path):
    for kind, bad in (("fit", "notes.txt"), ("parquet", "x.csv"), ("csv", "x.parquet"), ("table", "x.xlsx")):
        with pytest.raises(HierarchyError, match="name it with that ending"):
            paths.check_output(tmp_path / bad, kind=kind)
    assert paths.check_output(tmp_path / "x.parquet", kind="table") == tmp_path / "x.parquet"


def test_foreign_files_are_never_replaced_own_fits_only_with_force(tmp_path):
    notes = tmp_path / "notes.nc"
    notes.write_text("my notes\n")
    with pytest.raises(HierarchyError, match="not a hierarchy fit file; it is never replaced"):
        paths.check_output(notes, kind="fit", replace=True)
    fit = _fake_fit(tmp_path / "fit.nc")
    with pytest.raises(HierarchyError, match="pass --force"):
        paths.check_output(fit, kind="fit")
    assert paths.check_output(fit, kind="fit", replace=True) == fit
    text = tmp_path / "t.parquet"
    text.write_text("not parquet")
    with pytest.raises(HierarchyError, match="never replaced"):
        paths.check_output(text, kind="parquet", replace=True)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(HierarchyError, match="never replaced"):
        paths.check_output(binary, kind="csv", replace=True)


def test_bad_places_are_named_before_any_work(tmp_path):
    (tmp_path / "dir.nc").mkdir()
    with pytest.raises(HierarchyError, match="is a folder"):
        paths.check_output(tmp_path / "dir.nc", kind="fit")
    (tmp_path / "file").write_text("x")
    with pytest.raises(HierarchyError, match="is a file, not a folder"):
        paths.check_output(tmp_path / "file" / "deeper" / "x.nc", kind="fit")
    with pytest.raises(HierarchyError, match="is a file, not a folder"):
        paths.check_output_folder(tmp_path / "file")
    # a folder that does not exist yet is fine: it is created when writing
    assert paths.check_output(tmp_path / "new" / "deeper" / "x.nc", kind="fit")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(HierarchyError, match="permission denied"):
        paths.check_output(locked / "x.nc", kind="fit")


def test_unwritable_folder_as_seen_by_os_access(tmp_path, monkeypatch):
    """The same rule where the tests run as root: os.access is what the check asks."""
    monkeypatch.setattr(paths.os, "access", lambda p, mode: False)
    with pytest.raises(HierarchyError, match="permission denied"):
        paths.check_output(tmp_path / "x.nc", kind="fit")


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), paths.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with paths.atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_kill_9_leftovers_are_cleaned_only_when_ours_and_dead(tmp_path):
    target = tmp_path / "fit.nc"
    code = textwrap.dedent(f"""
        import sys, time
        from hierarchy.paths import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half written")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    leftover = tmp_path / f".fit.nc.tmp-{proc.pid}"
    assert leftover.exists()
    assert paths.stale_temps(target) == []  # its writer is alive: not stale
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert leftover.exists()  # what kill -9 leaves
    alive = tmp_path / f".fit.nc.tmp-{os.getpid()}"  # a live writer (this process)
    other = tmp_path / ".other.nc.tmp-999999"  # another target's
    simulate_style = tmp_path / f".fit.nc.{proc.pid}.tmp"
    user = tmp_path / ".fit.nc.tmp-notes"  # not a pid: not ours
    for p in (alive, other, simulate_style, user):
        p.write_text("x")
    assert paths.check_output(target, kind="fit") == target
    assert not leftover.exists() and not simulate_style.exists()
    assert alive.exists() and other.exists() and user.exists()


def test_pid_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.05)
    assert paths.pid_alive(os.getpid()) and not paths.pid_alive(proc.pid) and not paths.pid_alive(0)


def test_fits_command_tidies_dead_leftovers(tmp_path, capsys):
    from hierarchy import cli

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = tmp_path / f".a.nc.tmp-{proc.pid}"
    live = tmp_path / f".b.nc.tmp-{os.getpid()}"
    dead.write_text("x")
    live.write_text("x")
    assert cli.main(["fits", str(tmp_path)]) == 0
    assert f"removed 1 temporary file(s) left by interrupted writes: {dead.name}" in capsys.readouterr().out
    assert not dead.exists() and live.exists()

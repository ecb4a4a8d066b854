"""Every sub-command guards what it writes, before any work (issue 33, item 8).

The sub-commands and their output options are read from the argparse parser itself, so a new
command or option cannot be left out: each path option must be declared an input or an output
(``cli.declare_io``), and each declared output goes through the same hostile cases (an existing file, a
file that is not ours, a wrong ending, a read-only folder, the output named as an input, a folder
holding the user's own ``summary.csv``). The handlers are replaced by a recorder, so a refusal
that came after the work started would show as the handler being reached: every case runs
in-process in milliseconds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import pytest

from hierarchy import cli, paths


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every leaf sub-command (``panel build`` included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sp._actions)
                yield from _commands(sp, (*prefix, name)) if nested else [((*prefix, name), sp)]


COMMANDS = dict(_commands(cli.build_parser()))
OUTPUTS = [(cmd, entry) for cmd, sp in COMMANDS.items() for entry in sp.get_default("outputs") or ()]


def _ids(item) -> str:
    cmd, (dest, kind, *beside) = item
    return " ".join(cmd) + f" {dest}{''.join(beside)}"


@pytest.fixture
def reached(monkeypatch):
    """Every handler replaced by a recorder: a command that gets past the output checks is listed."""
    calls = []
    real = cli.build_parser

    def build():
        parser = real()
        for cmd, sp in _commands(parser):
            sp.set_defaults(func=lambda _args, cmd=cmd: calls.append(cmd) or 0)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return calls


def _flag(sp: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in sp._actions if a.dest == dest)


def _has_force(sp) -> bool:
    return any(a.dest == "force" for a in sp._actions)


def _argv(cmd, sp, tmp: Path, given: dict, force: bool = False) -> list[str]:
    """A command line with every required argument (tiny existing files for inputs) and ``given``."""
    argv = list(cmd)
    for action in sp._actions:
        if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
            continue
        value = given.get(action.dest)
        if value is None:
            if action.option_strings and not action.required:
                continue
            if action.dest in ("model", "priors"):
                value = "gradient_poisson" if action.dest == "model" else "weakly_informative"
            elif action.dest in {o[0] for o in sp.get_default("outputs")}:  # another output: a new path
                (tmp / f"other_{action.dest}").mkdir(exist_ok=True)
                value = _main_path(cmd, action.dest, tmp / f"other_{action.dest}")
            else:
                value = tmp / f"in_{action.dest}.csv"
                value.write_text("a\n1\n")
            if action.nargs == "+":
                value = [value, value] if action.dest == "fits" else [value]
        values = [str(v) for v in (value if isinstance(value, list) else [value])]
        argv += [action.option_strings[0], *values] if action.option_strings else values
    return [*argv, "--force"] if force else argv


def _ours(path: Path, kind: str) -> Path:
    """A file of ``kind`` as this program writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fit":
        import h5py

        with h5py.File(path, "w") as h5:
            h5.create_group("posterior").attrs["hierarchy"] = "{}"
    elif path.suffix == ".parquet":
        pd.DataFrame({"a": [1]}).to_parquet(path)
    elif path.suffix in (".key", ".pub"):
        path.write_text(f"-----BEGIN {'PRIVATE' if path.suffix == '.key' else 'PUBLIC'} KEY-----\nx\n")
    elif path.suffix == ".sig":
        path.write_text("ab" * 64 + "\n")
    else:
        path.write_text("{}\n" if path.suffix == ".json" else "a\n1\n")
    return path


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _main_path(cmd, dest: str, case: Path) -> Path:
    """The path given to ``--dest`` in a case folder (with the main output's ending)."""
    kind = next(k for d, k, *b in COMMANDS[cmd].get_default("outputs") if d == dest and not b)
    return case / ("out" if kind in cli.FOLDER_KINDS else "out" + paths.SUFFIXES[kind][0])


# ------------------------------------------------------------------------ the declarations


def test_every_path_option_of_every_command_is_declared_an_input_or_an_output():
    """A new command, or a new option naming a file, must be declared, so the checks reach it."""
    assert {"report", "aggregate", "simulate-extract", "export-sufficient"} <= {c[0] for c in COMMANDS}
    assert ("panel", "build") in COMMANDS
    for cmd, sp in COMMANDS.items():
        inputs, outputs = sp.get_default("inputs"), sp.get_default("outputs")
        assert inputs is not None and outputs is not None, \
            f"{' '.join(cmd)}: declare its paths with cli.declare_io"
        declared = set(inputs) | {o[0] for o in outputs}
        dests = {a.dest for a in sp._actions}
        assert declared <= dests, (cmd, declared - dests)
        for action in sp._actions:
            if action.type is Path:
                assert action.dest in declared, f"{' '.join(cmd)} {action.dest}: an input or an output?"
        kinds = {o[1] for o in outputs}
        assert kinds <= {*paths.SUFFIXES, *cli.FOLDER_KINDS}, (cmd, kinds)
        if kinds - {"folder", "empty"} and not sp.get_default("replaces_own"):
            assert _has_force(sp), f"{' '.join(cmd)} writes files: it needs --force to replace them"
    assert len(OUTPUTS) >= 25


# ------------------------------------------------------------------------ the hostile cases


@pytest.mark.parametrize("item", OUTPUTS, ids=_ids)
def test_each_output_refuses_hostile_paths_before_any_work(item, tmp_path, monkeypatch, reached, capsys):
    cmd, (dest, kind, *beside) = item
    sp = COMMANDS[cmd]
    monkeypatch.chdir(tmp_path)  # relative defaults (fits/, out/) land here
    force = _has_force(sp)
    replaces_own = bool(sp.get_default("replaces_own"))

    def case(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        return folder

    # a new path in a writable folder: the checks pass and the command starts
    fresh = _main_path(cmd, dest, case("fresh"))
    assert _run(_argv(cmd, sp, tmp_path, {dest: fresh}), capsys)[0] == 0 and reached == [cmd]
    reached.clear()

    if kind in cli.FOLDER_KINDS:
        _folder_cases(cmd, sp, dest, kind, case, force, reached, capsys)
    else:
        _file_cases(cmd, sp, dest, kind, beside, case, force, replaces_own, reached, capsys)
    if beside:
        return
    # the output named as one of the command's inputs
    for source in sp.get_default("inputs"):
        same = _main_path(cmd, dest, case(f"input_{source}"))
        same = _ours(same, "csv") if kind in cli.FOLDER_KINDS else _ours(same, kind)
        before = same.read_bytes()
        given = {dest: same, source: [same, same] if _flag(sp, source).nargs == "+" else same}
        code, err = _run(_argv(cmd, sp, tmp_path, given, force), capsys)
        assert code == 2 and "is the input file" in err, (cmd, source, err)
        assert same.read_bytes() == before
    # a folder the process cannot write in
    ro = case("readonly")
    target = _main_path(cmd, dest, ro)
    real_access = os.access
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: deny as the file system would deny a user
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).resolve() == ro.resolve()
                            and mode & os.W_OK else real_access(p, mode, **kw))
    try:
        code, err = _run(_argv(cmd, sp, tmp_path, {dest: target}, force), capsys)
    finally:
        ro.chmod(0o755)
        monkeypatch.setattr(os, "access", real_access)
    assert code == 2 and ("cannot write in" in err or "not writable" in err), (cmd, err)
    assert reached == [] and not target.exists()


def _file_cases(cmd, sp, dest, kind, beside, case, force, replaces_own, reached, capsys):
    def target_of(folder: Path) -> tuple[Path, Path]:
        main = _main_path(cmd, dest, folder)
        return main, main.with_suffix(beside[0]) if beside else main

    # an existing file of the kind written: refused without --force (the demo replaces its own)
    main, target = target_of(case("exists"))
    before = _ours(target, kind).read_bytes()
    code, err = _run(_argv(cmd, sp, Path.cwd(), {dest: main}), capsys)
    if replaces_own:
        assert code == 0 and reached == [cmd]
        reached.clear()
    else:
        assert code == 2 and "--force" in err and "already exists" in err, (cmd, err)
    assert target.read_bytes() == before
    # a file that is not ours under the name: never replaced, even with --force
    main, target = target_of(case("foreign"))
    target.write_bytes(b"my own notes\n" if kind in ("fit", "parquet") else b"\x00\x01PAR1 binary")
    code, err = _run(_argv(cmd, sp, Path.cwd(), {dest: main}, force), capsys)
    assert code == 2 and "never replaced" in err, (cmd, err)
    assert target.read_bytes() in (b"my own notes\n", b"\x00\x01PAR1 binary")
    if not beside:  # a name whose ending is not the format written
        wrong = case("suffix") / "out.txt"
        code, err = _run(_argv(cmd, sp, Path.cwd(), {dest: wrong}, force), capsys)
        assert code == 2 and "name it with that ending" in err, (cmd, err)
        assert not wrong.exists()
    assert reached == []


def _folder_cases(cmd, sp, dest, kind, case, force, reached, capsys):
    # the user's own summary.csv in the folder
    folder = case("users") / "out"
    folder.mkdir()
    (folder / "summary.csv").write_text("mine\n")
    for with_force in sorted({False, force}):
        code, err = _run(_argv(cmd, sp, Path.cwd(), {dest: folder}, with_force), capsys)
        if kind == "folder":  # a working folder: each file in it is checked by name (fits, tables)
            assert code == 0 and reached == [cmd], (cmd, err)
            reached.clear()
        else:
            expect = "not empty" if kind == "empty" else ("never replaced" if with_force else "did not write")
            assert code == 2 and expect in err, (cmd, with_force, err)
    assert (folder / "summary.csv").read_text() == "mine\n"
    # a file where the folder should be
    file = case("file") / "out"
    file.write_text("x\n")
    code, err = _run(_argv(cmd, sp, Path.cwd(), {dest: file}, force), capsys)
    assert code == 2 and "is a file, not a folder" in err and file.read_text() == "x\n"
    assert reached == []


# ------------------------------------------------------------------------ folders that are ours


def test_a_report_folder_is_ours_after_a_run_and_force_writes_only_beside_foreign_files(
        tmp_path, reached, capsys):
    """The first run marks the folder; a second run into it needs no --force; a user's file added
    later is foreign again; --force writes beside a file we could not overwrite, never over one."""
    sp = COMMANDS[("report",)]
    out = tmp_path / "rep"
    out.mkdir()

    def run(force=False):
        return _run(_argv(("report",), sp, tmp_path, {"out": out}, force), capsys)

    assert run()[0] == 0  # empty
    (out / "index.html").write_text("ours")  # as if the report had written it
    paths.mark_folder(out, set(), command="report")
    assert paths.foreign_files(out) == set() and run()[0] == 0  # an earlier report: ours
    (out / "notes.docx").write_bytes(b"user")
    code, err = run()
    assert code == 2 and "notes.docx" in err and "--force" in err
    assert run(force=True)[0] == 0  # nothing of ours could overwrite a .docx
    (out / "figures").mkdir()
    (out / "figures" / "mine.png").write_bytes(b"user")
    code, err = run(force=True)
    assert code == 2 and "figures/mine.png" in err and "never replaced" in err
    assert reached == [("report",)] * 3


def test_the_marker_lists_what_the_command_wrote_not_what_was_there(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "theirs.csv").write_text("x")
    foreign = paths.foreign_files(folder)
    assert foreign == {"theirs.csv"}
    (folder / "figures").mkdir()
    (folder / "figures" / "a.png").write_bytes(b"png")
    (folder / "index.html").write_text("page")
    paths.mark_folder(folder, foreign, command="report")
    assert paths.foreign_files(folder) == {"theirs.csv"}
    (folder / paths.FOLDER_MARKER).write_text("not json")  # an edited marker: nothing is ours
    assert paths.foreign_files(folder) == {"theirs.csv", "index.html", "figures/a.png"}
    # a fit with hierarchy provenance is ours without the marker (a cache of refits); a text .nc is not
    _ours(folder / "cv_fits" / "refit.nc", "fit")
    (folder / "cv_fits" / "notes.nc").write_text("mine")
    assert paths.foreign_files(folder) == {"theirs.csv", "index.html", "figures/a.png", "cv_fits/notes.nc"}


def test_two_outputs_of_one_command_may_not_be_the_same_file(tmp_path, reached, capsys):
    same = tmp_path / "x.csv"
    code, err = _run(["validate", str(_ours(tmp_path / "d.csv", "csv")), "--drop-invalid", str(same),
                      "--kept", str(same)], capsys)
    assert code == 2 and "name the same path" in err and reached == [] and not same.exists()


def test_export_sufficient_below_the_default_threshold_needs_the_same_opt_in_as_report(
        tmp_path, capsys):
    table = tmp_path / "t.csv"
    rows = [{"neighbourhood": f"E0100{k:04d}", "la": f"E0600000{k // 6}", "exposure": 200 + k,
             "deprivation": round(0.05 + 0.01 * k, 3), "referral": 10 + k} for k in range(18)]
    pd.DataFrame(rows).to_csv(table, index=False)
    out = tmp_path / "sums.csv"
    code, err = _run(["export-sufficient", str(table), "--threshold", "5", "--out", str(out)], capsys)
    assert code == 2 and "--allow-below-default-rules" in err and not out.exists()
    code, err = _run(["export-sufficient", str(table), "--threshold", "5", "--allow-below-default-rules",
                      "--out", str(out)], capsys)
    assert "--allow-below-default-rules" not in err, err
    assert code == 0 and out.exists(), err


def test_the_newer_commands_write_whole_files_and_replace_them_only_with_force(tmp_path, capsys):
    """simulate-extract and aggregate end to end on a tiny generated geography: the files named, a
    rerun refused without --force (nothing changed), replaced with it."""
    geo = ["--synthetic", "--n-la", "3", "--lsoa-per-la", "8", "--geo-seed", "2"]
    ext = tmp_path / "extract.csv"
    assert cli.main(["simulate-extract", *geo, "--out", str(ext)]) == 0
    written = [ext, tmp_path / "extract.truth.json", tmp_path / "extract.counts.parquet"]
    assert all(p.is_file() for p in written) and pd.read_csv(ext)["LAchildID"].notna().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporary files
    table = tmp_path / "table.parquet"
    assert cli.main(["aggregate", str(ext), *geo, "--out", str(table)]) == 0
    counts = pd.read_parquet(tmp_path / "extract.counts.parquet")
    assert int(pd.read_parquet(table)["referral"].sum()) == int(counts["referral"].sum()) > 0
    capsys.readouterr()
    for argv in (["simulate-extract", *geo, "--seed", "1", "--out", str(ext)],
                 ["aggregate", str(ext), *geo, "--out", str(table)]):
        before = {p: p.read_bytes() for p in [*written, table]}
        code, err = _run(argv, capsys)
        assert code == 2 and "already exists; pass --force" in err
        assert {p: p.read_bytes() for p in before} == before
    assert cli.main(["simulate-extract", *geo, "--seed", "1", "--out", str(ext), "--force"]) == 0
    assert ext.read_bytes() != before[ext]

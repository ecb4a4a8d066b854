"""The command line: the user's files are never lost, bad options are messages, not tracebacks.

No test here samples: where a command would fit, ``workflow.fit_files`` (or the comparison) is
replaced by a stand-in that records its arguments, so each test checks what happens before the
work starts (or that the work is reached at all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from hierarchy import cli, shipped, workflow
from tests.helpers import SHARED_FIT

ROOT = Path(__file__).resolve().parents[1]


def table(n_la: int = 3, per_la: int = 6) -> pd.DataFrame:
    rows = []
    for j in range(n_la):
        for i in range(per_la):
            k = j * per_la + i
            rows.append({"neighbourhood": f"E0100{k:04d}", "la": f"E0600000{j}", "exposure": 200 + k,
                         "deprivation": round(0.05 + 0.01 * k, 3), "referral": 10 + k})
    return pd.DataFrame(rows)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.csv"
    table().to_csv(path, index=False)
    return path


@pytest.fixture
def no_fit(monkeypatch):
    """workflow.fit_files replaced: records its keyword arguments instead of fitting."""
    calls = []
    monkeypatch.setattr(workflow, "fit_files", lambda **kw: calls.append(kw) or "fitted (stand-in)")
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    return calls


@pytest.fixture
def no_reference(monkeypatch):
    from hierarchy.data import reference

    monkeypatch.setattr(reference, "maybe_reference", lambda _dir: None)


def _fake_fit(path):
    import h5py

    with h5py.File(path, "w") as h5:
        h5.create_group("posterior").attrs["hierarchy"] = "{}"
    return path


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------ the user's files


def test_fit_refuses_to_write_over_its_data(data, no_fit, capsys):
    before = data.read_bytes()
    for out in (data, data.with_suffix(".nc")):
        if out.suffix == ".nc":  # the data file itself renamed .nc: still the input
            out.write_bytes(before)
            code, _, err = run(["fit", "--data", out, "--out", out, "--force"], capsys)
            assert code == 2 and "is the input file" in err
        else:
            code, _, err = run(["fit", "--data", data, "--out", data], capsys)
            assert code == 2 and "error:" in err
    assert data.read_bytes() == before and no_fit == []


def test_fit_refuses_foreign_files_and_needs_force_for_its_own(data, tmp_path, no_fit, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, _, err = run(["fit", "--data", data, "--out", notes], capsys)
    assert code == 2 and "a fit file is written as .nc" in err and notes.read_text() == "my notes"
    notes_nc = tmp_path / "notes.nc"
    notes_nc.write_text("my notes")
    code, _, err = run(["fit", "--data", data, "--out", notes_nc, "--force"], capsys)
    assert code == 2 and "never replaced" in err and notes_nc.read_text() == "my notes"
    fit = _fake_fit(tmp_path / "fit.nc")
    code, _, err = run(["fit", "--data", data, "--out", fit], capsys)
    assert code == 2 and "pass --force" in err and no_fit == []
    code, out, _ = run(["fit", "--data", data, "--out", fit, "--force"], capsys)
    assert code == 0 and f"replacing the fit {fit}" in out and len(no_fit) == 1


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_fit_bad_out_is_found_before_any_work(data, tmp_path, no_fit, capsys, where):
    if where == "folder":
        out = tmp_path / "fits.nc"
        out.mkdir()
        expect = "is a folder"
    else:
        out = tmp_path / "notes.txt" / "fit.nc"
        (tmp_path / "notes.txt").write_text("x")
        expect = "is a file, not a folder"
    code, _, err = run(["fit", "--data", data, "--out", out], capsys)
    assert code == 2 and expect in err and no_fit == []


def test_fit_files_refuses_its_inputs_before_loading(data, tmp_path):
    """The library function too: sweep and compare-priors call it with their own paths."""
    from hierarchy.errors import HierarchyError

    model = tmp_path / "m.nc"
    model.write_bytes((ROOT / "models/gradient_nb.toml").read_bytes())
    with pytest.raises(HierarchyError, match="is the input file"):
        workflow.fit_files(data=data, model=model, priors="vague", out=model)


def test_validate_drop_invalid_never_replaces_the_input(data, no_reference, capsys):
    before = data.read_bytes()
    code, _, err = run(["validate", data, "--drop-invalid", data], capsys)
    assert code == 2 and "is the input file" in err and data.read_bytes() == before
    code, _, err = run(["validate", data, "--drop-invalid", data.parent], capsys)
    assert code == 2 and "is a folder" in err


def test_validate_drop_invalid_writes_the_kept_rows_fit_can_use(tmp_path, no_reference, capsys):
    from hierarchy.data import table as data_mod

    frame = table()
    frame.loc[2, "referral"] = -1
    frame.loc[7, "exposure"] = 0  # no children, no counts: fit would refuse it, so validate does
    frame.loc[7, "referral"] = 0
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    kept = tmp_path / "kept.parquet"
    code, out, _ = run(["validate", src, "--drop-invalid", tmp_path / "rej.csv", "--kept", kept], capsys)
    assert code == 0, out
    assert pd.read_csv(tmp_path / "rej.csv")["reason"].tolist() == ["referral: negative count",
                                                                    "exposure: 0 (no children)"]
    loaded = data_mod.load(kept)  # what fit reads: valid, 16 rows
    assert len(loaded) == 16 and (loaded["exposure"] > 0).all()
    # the same command again needs --force for its own outputs, and never takes the input
    code, _, err = run(["validate", src, "--drop-invalid", tmp_path / "rej.csv", "--kept", kept], capsys)
    assert code == 2 and "--force" in err
    code, _, err = run(["validate", src, "--drop-invalid", tmp_path / "rej.csv", "--kept", src, "--force"],
                       capsys)
    assert code == 2 and "is the input file" in err


def test_validate_drop_invalid_exits_1_when_no_row_passes(tmp_path, no_reference, capsys):
    frame = table()
    frame["referral"] = -1
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    code, _, err = run(["validate", src, "--drop-invalid", tmp_path / "rej.csv", "--kept",
                        tmp_path / "kept.csv"], capsys)
    assert code == 1 and "no row passes" in err and not (tmp_path / "kept.csv").exists()


def test_validate_rechecks_the_rows_that_pass(tmp_path, no_reference, capsys):
    frame = table(n_la=2, per_la=6)
    frame.loc[1:5, "deprivation"] = 2.0  # five of LA 0's six rows fail: one neighbourhood left
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    code, out, _ = run(["validate", src, "--drop-invalid", tmp_path / "rej.csv"], capsys)
    assert code == 0
    assert "new problems once the rejected rows are dropped" in out
    assert "an LA with fewer than 5 neighbourhoods" in out and "E06000000: 1" in out


def test_simulate_output_rules(tmp_path, capsys):
    for out, expect in ((tmp_path / "x.csv", "written as .parquet"), (tmp_path, "is a folder")):
        code, _, err = run(["simulate", "--synthetic", "--n-la", "3", "--out", out], capsys)
        assert code == 2 and expect in err
    out = tmp_path / "sim.parquet"
    assert run(["simulate", "--synthetic", "--n-la", "3", "--out", out], capsys)[0] == 0
    first = out.read_bytes()
    code, _, err = run(["simulate", "--synthetic", "--n-la", "3", "--seed", "1", "--out", out], capsys)
    assert code == 2 and "--force" in err and out.read_bytes() == first
    assert run(["simulate", "--synthetic", "--n-la", "3", "--seed", "1", "--out", out, "--force"],
               capsys)[0] == 0
    assert out.read_bytes() != first


def test_folder_outputs_that_are_files(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    fit = _fake_fit(tmp_path / "f.nc")
    code, _, err = run(["report", fit, "--out", notes], capsys)
    assert code == 2 and "is a file, not a folder" in err and notes.read_text() == "x"
    code, _, err = run(["compare-models", fit, fit, "--out", notes], capsys)
    assert code == 2 and "is a file, not a folder" in err


# ------------------------------------------------------------------------------ messages


@pytest.mark.parametrize("bad", ["folder", "binary", "missing"])
def test_bad_model_file_is_a_message(data, tmp_path, no_fit, capsys, bad):
    model = {"folder": tmp_path, "binary": tmp_path / "b.toml", "missing": "inverse_intervention"}[bad]
    if bad == "binary":
        model.write_bytes(bytes(range(256)))
    code, _, err = run(["fit", "--data", data, "--out", tmp_path / "x.nc", "--model", model], capsys)
    assert code == 2 and err.startswith("error: model") and "Traceback" not in err
    assert {"folder": "is a folder", "binary": "not a text file",
            "missing": "did you mean 'inverse_intervention_nb'"}[bad] in err


@pytest.mark.parametrize("args", [["summary", "f.nc", "--prob", "1.5"], ["report", "f.nc", "--out", "r",
                                                                          "--prob", "0"],
                                  ["fit", "--data", "d.csv", "--out", "f.nc", "--chains", "0"],
                                  ["report", "f.nc", "--out", "r", "--threshold", "-1"],
                                  ["summary", "f.nc", "--prob", "nan"]])
def test_out_of_range_options_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: argument" in err and "Traceback" not in err


def test_ctrl_c_says_nothing_written_and_exits_130(data, tmp_path, monkeypatch, capsys):
    def interrupted(**_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "fit_files", interrupted)
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    code, _, err = run(["fit", "--data", data, "--out", tmp_path / "x.nc"], capsys)
    assert code == 130 and err.strip() == "interrupted, nothing written"
    assert list(tmp_path.glob("*x.nc*")) == []


def test_os_errors_are_messages(data, tmp_path, monkeypatch, capsys):
    def full(**_kw):
        raise OSError(28, "No space left on device", str(tmp_path / "x.nc"))

    monkeypatch.setattr(workflow, "fit_files", full)
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    code, _, err = run(["fit", "--data", data, "--out", tmp_path / "x.nc"], capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'x.nc'}: No space left on device"


# ------------------------------------------------------------------------------ shipped files


def test_shipped_names_resolve_for_every_command_outside_the_checkout(data, tmp_path, monkeypatch,
                                                                      no_fit, capsys):
    monkeypatch.chdir(tmp_path)  # no models/ or priors/ here
    assert run(["fit", "--data", data, "--out", "a.nc"], capsys)[0] == 0
    assert run(["fit", "--data", data, "--out", "b.nc", "--priors", "vague", "--model",
                "inverse_intervention_nb_log"], capsys)[0] == 0
    assert [(Path(c["model"]).name, Path(c["priors"]).name) for c in no_fit] == [
        ("inverse_intervention_nb_log.toml", "weakly_informative.toml"),
        ("inverse_intervention_nb_log.toml", "vague.toml")]
    assert all(Path(c["model"]).is_file() and Path(c["priors"]).is_file() for c in no_fit)

    from hierarchy.results import compare

    seen = {}

    def record(data, model, priors, out, **_kw):
        seen.update(model=model, priors=priors)
        raise KeyboardInterrupt  # stop here: the names were resolved

    monkeypatch.setattr(compare, "compare_priors", record)
    assert run(["compare-priors", "--data", data, "--priors", "vague", "weakly_informative", "--out",
                "cmp"], capsys)[0] == 130
    assert seen["model"].name == "inverse_intervention_nb_log.toml"
    assert [p.name for p in seen["priors"]] == ["vague.toml", "weakly_informative.toml"]

    import hierarchy.language.spec

    monkeypatch.setattr(hierarchy.language.spec, "load_spec", lambda path: seen.update(sbc=path) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["sbc", "--priors", "vague", "--replicates", "1"])
    assert seen["sbc"].name == "inverse_intervention_nb_log.toml"
    assert workflow.DEFAULT_MODEL == shipped.DEFAULT_MODEL  # demo uses the same names


def test_every_option_has_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, sp in sub.choices.items() for action in sp._actions
               if not isinstance(action, argparse._HelpAction)
               and (not action.help or action.help == argparse.SUPPRESS)]
    assert missing == []


def test_no_progress_bars_off_a_terminal_but_a_few_plain_lines(data, tmp_path, no_fit, capsys):
    assert run(["fit", "--data", data, "--out", tmp_path / "x.nc"], capsys)[0] == 0
    assert no_fit[0]["progress"] is False and no_fit[0]["log"] is print
    assert run(["fit", "--data", data, "--out", tmp_path / "y.nc", "--quiet"], capsys)[0] == 0
    assert no_fit[1]["progress"] is False and no_fit[1]["log"] is None


def test_fit_of_bad_rows_points_to_drop_and_kept(tmp_path, monkeypatch, capsys):
    """fit, validate and --drop-invalid agree: the rows fit refuses are the rows validate drops."""
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    monkeypatch.setattr("hierarchy.inference.sampling.use_host_devices", lambda n: None)
    frame = table()
    frame.loc[4, ["exposure", "referral"]] = 0
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    code, _, err = run(["fit", "--data", src, "--out", tmp_path / "x.nc"], capsys)
    assert code == 2 and "exposure 0 (no children)" in err and "--drop-invalid rejects.csv --kept" in err


def test_demo_never_replaces_a_foreign_file_and_checks_before_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    notes = tmp_path / "notes.nc"
    notes.write_text("my notes")
    code, out, err = run(["demo", "--fast", "--out", tmp_path / "out", "--fit", notes], capsys)
    assert code == 2 and "never replaced" in err and notes.read_text() == "my notes"
    assert not (tmp_path / "out").exists() and "replacing" not in out


@pytest.mark.parametrize("args, expect", [
    (["validate", "."], "is a folder"),
    (["validate", "data.csv", "--columns", "."], "column map . is a folder"),
    (["validate", "data.csv", "--columns", "binary.toml"], "not a text file"),
    (["fit", "--data", "data.csv", "--out", "x.nc", "--priors", "."], "is a folder"),
    (["fits", "data.csv"], "is a file"),
])
def test_inputs_of_the_wrong_kind_are_messages(data, tmp_path, monkeypatch, no_fit, no_reference, capsys,
                                               args, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    code, _, err = run(args, capsys)
    assert code == 2 and expect in err and "Traceback" not in err and no_fit == []


@SHARED_FIT
def test_report_finds_the_truth_beside_a_renamed_table(shared_fit, tmp_path, capsys):
    """Issue 34 item 9: a user's copy of a simulated table with its TABLE.truth.json beside it."""
    import shutil

    data = tmp_path / "my_table.parquet"
    shutil.copy(shared_fit["data"], data)
    shutil.copy(shared_fit["data"].with_suffix(".truth.json"), tmp_path / "my_table.truth.json")
    assert cli.main(["report", str(shared_fit["fit"]), "--data", str(data), "--out", str(tmp_path / "rep")]) == 0
    assert "using the simulator's truth beside the table" in capsys.readouterr().out
    assert "truth" in pd.read_csv(tmp_path / "rep" / "estimands.csv").columns.str.cat(sep=" ")


def test_sbc_method_laplace_refuses_vectorised_nuts_settings_and_models_outside_its_regime(capsys):
    """Issue 29 item 1: ``sbc --method laplace``; what it cannot do is one error line, before any fitting."""
    code = cli.main(["sbc", "--model", "inverse_intervention_pln", "--method", "laplace", "--las", "3",
                     "--lsoa-per-la", "4", "--replicates", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "method 'laplace' refused" in err and "Traceback" not in err
    code = cli.main(["sbc", "--chains", "2", "--las", "3", "--lsoa-per-la", "4", "--replicates", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "NUTS refits each replicate with one chain" in err and "--method laplace" in err

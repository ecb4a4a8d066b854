"""``hierarchy validate --model``: a table checked for the model that will fit it (issue 34 item 4).

A conversion model (``re_referral ~ ... + offset(log(referral))``) cannot fit a row with no referrals:
``validate --model`` names and counts those rows, ``--drop-invalid --kept`` sets exactly them aside, and
``check`` / ``fit`` of the kept table go through. Nothing here samples: ``fit`` stops at the sampler.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hierarchy import cli, shipped
from hierarchy.data import table as data_mod
from hierarchy.errors import DataValidationError, HierarchyError
from hierarchy.language.design import build_design
from hierarchy.language.spec import load_spec

NO_REFERRAL = [3, 8, 12]
"""Positions of the rows with no referral (CSV lines 5, 10 and 14)."""


def table() -> pd.DataFrame:
    rows = []
    for j in range(3):
        for i in range(6):
            k = j * 6 + i
            rows.append({"neighbourhood": f"E0100{k:04d}", "la": f"E0600000{j}", "exposure": 200 + k,
                         "deprivation": round(0.05 + 0.01 * k, 3), "referral": 10 + k, "re_referral": 2 + k % 3})
    frame = pd.DataFrame(rows)
    frame.loc[NO_REFERRAL, ["referral", "re_referral"]] = 0
    return frame


@pytest.fixture
def src(tmp_path, monkeypatch) -> Path:
    from hierarchy.data import reference

    monkeypatch.setattr(reference, "maybe_reference", lambda _dir: None)
    path = tmp_path / "t.csv"
    table().to_csv(path, index=False)
    return path


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def spec_of(name: str):
    return load_spec(shipped.resolve(name, "models"))


def test_validate_with_the_model_names_and_counts_the_rows_without_exposure(src, capsys):
    code, out, _ = run(["validate", src], capsys)
    assert code == 0 and "0 errors" in out  # without the model, a row with no referral is fine
    code, out, _ = run(["validate", src, "--model", "re_referrals_nb"], capsys)
    assert code == 1 and "1 error" in out
    line = next(x for x in out.splitlines() if x.startswith("ERROR"))
    assert "column 'referral': 3 rows have referral 0" in line and "(rows 5, 10, 14)" in line
    assert "offset(log(referral))" in line
    assert (f"hierarchy validate {src} --model re_referrals_nb --drop-invalid rejects.csv --kept kept.csv"
            in line)


def test_drop_invalid_sets_exactly_those_rows_aside_and_fit_and_check_take_the_rest(src, tmp_path, capsys):
    rejects, kept = tmp_path / "rejects.csv", tmp_path / "kept.csv"
    code, out, _ = run(["validate", src, "--model", "re_referrals_nb", "--drop-invalid", rejects,
                        "--kept", kept], capsys)
    assert code == 0, out
    assert "wrote 3 rejected rows" in out and "15 rows pass" in out
    rej = pd.read_csv(rejects)
    assert rej["line"].tolist() == [5, 10, 14]
    assert rej["reason"].tolist() == ["referral: 0 (the model's exposure)"] * 3
    written = pd.read_csv(kept)
    expected = table().drop(index=NO_REFERRAL)
    assert written["neighbourhood"].tolist() == expected["neighbourhood"].tolist()
    assert written["referral"].tolist() == expected["referral"].tolist()
    # the kept table is what the model fits: validation and the design both take it
    spec = spec_of("re_referrals_nb")
    design = build_design(data_mod.load(kept, **data_mod.model_columns(spec)), spec)
    assert design.n_la == 3 and len(design.y) == 15
    code, out, _ = run(["validate", kept, "--model", "re_referrals_nb"], capsys)
    assert code == 0 and "0 errors" in out


class _Reached(Exception):
    """Raised by the stand-in of the sampler / prior predictive: the command got past the data."""


def test_fit_and_check_refuse_the_table_with_the_command_and_take_the_kept_rows(src, tmp_path, monkeypatch,
                                                                                 capsys):
    from hierarchy.check import check_model

    def reached(*_a, **_k):
        raise _Reached

    monkeypatch.setattr("hierarchy.inference.sampling.fit", reached)
    monkeypatch.setattr("hierarchy.inference.sampling.enable_compilation_cache", lambda: None)
    monkeypatch.setattr("hierarchy.inference.sampling.use_host_devices", lambda n: None)
    monkeypatch.setattr("hierarchy.results.compare_priors.prior_predictive", reached)
    command = f"hierarchy validate {src} --model re_referrals_nb --drop-invalid rejects.csv --kept kept.csv"
    with pytest.raises(DataValidationError) as err:
        check_model("re_referrals_nb", data=src)
    assert err.value.report.errors[0].n_rows == 3 and command in str(err.value)
    code, _, err_text = run(["fit", "--model", "re_referrals_nb", "--data", src, "--out", tmp_path / "f.nc"],
                            capsys)
    assert code == 2 and "3 rows have referral 0" in err_text and command in err_text
    kept = tmp_path / "kept.csv"
    assert run(["validate", src, "--model", "re_referrals_nb", "--drop-invalid", tmp_path / "r.csv",
                "--kept", kept], capsys)[0] == 0
    with pytest.raises(_Reached):
        check_model("re_referrals_nb", data=kept)
    with pytest.raises(_Reached):
        run(["fit", "--model", "re_referrals_nb", "--data", kept, "--out", tmp_path / "g.nc"], capsys)


def test_the_default_model_on_the_same_table_is_unaffected(src, tmp_path, capsys):
    code, out, _ = run(["validate", src, "--model", shipped.DEFAULT_MODEL, "--drop-invalid",
                        tmp_path / "r.csv", "--kept", tmp_path / "k.csv"], capsys)
    assert code == 0 and "0 errors" in out and "wrote 0 rejected rows" in out and "18 rows pass" in out
    spec = spec_of(shipped.DEFAULT_MODEL)
    assert len(build_design(data_mod.load(src, **data_mod.model_columns(spec)), spec).y) == 18


@pytest.mark.filterwarnings("ignore:.*fewer than 5 neighbourhoods")  # 4 rows left in one LA
def test_an_exposure_that_is_not_a_count_is_checked_as_a_number(tmp_path, capsys, monkeypatch):
    """Any exposure, not only a count: 0, negative and missing person-years are named, each row once."""
    from hierarchy.data import reference

    monkeypatch.setattr(reference, "maybe_reference", lambda _dir: None)
    model = tmp_path / "per_year.toml"
    model.write_text('name = "per_year"\n'
                     'formula = "referral ~ w * z + (1 + w | la) + offset(log(person_years))"\n')
    frame = table()
    frame["person_years"] = [str(150.5 + k) for k in range(len(frame))]
    frame.loc[1, "person_years"], frame.loc[7, "person_years"] = "0", "-3"
    frame.loc[13, "person_years"], frame.loc[16, "person_years"] = None, "n/a"
    src = tmp_path / "py.csv"
    frame.to_csv(src, index=False)
    code, out, _ = run(["validate", src, "--model", model, "--drop-invalid", tmp_path / "r.csv",
                        "--kept", tmp_path / "k.csv"], capsys)
    assert code == 0, out
    assert "1 row has person_years 0" in out and "1 row has a negative person_years" in out
    assert "2 rows have a missing or non-numeric person_years" in out and f"--model {model}" in out
    rej = pd.read_csv(tmp_path / "r.csv")
    assert rej["line"].tolist() == [3, 9, 15, 18] and rej["reason"].str.startswith("person_years: ").all()
    kept = data_mod.load(tmp_path / "k.csv", **data_mod.model_columns(load_spec(model)))
    assert kept["person_years"].dtype == "float64" and (kept["person_years"] > 0).all() and len(kept) == 14


def test_a_missing_exposure_column_is_a_table_error_no_row_can_fix(src, tmp_path, capsys):
    frame = table().drop(columns="referral")
    frame.to_csv(src, index=False)
    code, out, _ = run(["validate", src, "--model", "re_referrals_nb"], capsys)
    assert code == 1
    assert "the model's exposure column 'referral' (offset(log(referral))) is not in the table" in out
    code, _, err = run(["validate", src, "--model", "re_referrals_nb", "--drop-invalid", tmp_path / "r.csv"],
                       capsys)
    assert code == 2 and "not in particular rows" in err and not (tmp_path / "r.csv").exists()


def test_a_mapped_exposure_is_named_as_the_user_names_it_and_the_command_keeps_the_map(tmp_path, capsys,
                                                                                   monkeypatch):
    from hierarchy.data import reference

    monkeypatch.setattr(reference, "maybe_reference", lambda _dir: None)
    src = tmp_path / "my table.csv"
    table().rename(columns={"referral": "Referrals"}).to_csv(src, index=False)
    cmap = tmp_path / "map.toml"
    cmap.write_text('[counts]\nreferral = "Referrals"\n')
    code, out, _ = run(["validate", src, "--columns", cmap, "--model", "re_referrals_nb"], capsys)
    assert code == 1 and "column 'Referrals': 3 rows have Referrals 0" in out
    assert f"hierarchy validate '{src}' --columns {cmap} --model re_referrals_nb --drop-invalid" in out


def test_an_unknown_model_is_one_error_line(src, capsys):
    code, _, err = run(["validate", src, "--model", "re_referals_nb"], capsys)
    assert code == 2 and err.startswith("error:") and "re_referrals_nb" in err


def test_build_design_names_the_rows_and_the_command_when_given_no_exposure(src):
    spec = spec_of("re_referrals_nb")
    loaded = data_mod.load(src, **spec.data_columns)  # validated without the model: the rows get through
    with pytest.raises(HierarchyError, match="3 rows have referral 0 .*E01000003, E01000008, E01000012") as err:
        build_design(loaded, spec)
    assert "--model re_referrals_nb --drop-invalid rejects.csv --kept kept.csv" in str(err.value)

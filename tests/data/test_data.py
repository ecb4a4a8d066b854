"""Tests for hierarchy.data.table: reading, column maps, validation, splitting and hashing."""

from __future__ import annotations

import sys
import types
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import table as data
from hierarchy.errors import DataValidationError, HierarchyError
from tests.helpers import ROOT

LAS = ("E06000001", "E06000002")


def clean_frame(n_per_la: int = 5) -> pd.DataFrame:
    """A valid table: two LAs with ``n_per_la`` neighbourhoods each."""
    rows = []
    for j, la in enumerate(LAS):
        for i in range(n_per_la):
            k = j * n_per_la + i
            rows.append({"neighbourhood": f"E0100{k:04d}", "la": la, "exposure": 200 + k,
                         "deprivation": round(0.05 + 0.03 * k, 2), "referral": 10 + k,
                         "s47": k % 3, "la_spend": 100.0 + j, "note": "x"})
    return pd.DataFrame(rows)


def write_csv(tmp_path, frame: pd.DataFrame, name: str = "table.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def check(tmp_path, frame: pd.DataFrame, **kw) -> data.ValidationReport:
    path = write_csv(tmp_path, frame)
    return data.validate(data.read_table(path), source=str(path), **kw)


def only(report: data.ValidationReport, column: str, level: str = "error") -> data.Problem:
    found = [p for p in report.problems if p.column == column and p.level == level]
    assert len(found) == 1, report.format()
    return found[0]


# CSV line of the i-th data row (0-based): the header is line 1.
def line(i: int) -> int:
    return i + 2


# --------------------------------------------------------------------------- clean tables


def test_clean_table_passes(tmp_path):
    report = check(tmp_path, clean_frame())
    assert report.ok and report.problems == []
    assert report.format() == f"{tmp_path / 'table.csv'}: 0 errors, 0 warnings"


def test_read_table_keeps_line_numbers_codes_and_source(tmp_path):
    frame = clean_frame()
    frame["sex"] = "01"  # numeric-looking code with a leading zero
    path = tmp_path / "t.csv"
    text = frame.to_csv(index=False).splitlines()
    path.write_text("\n".join([text[0], text[1], "", *text[2:]]) + "\n")  # blank line 3
    table = data.read_table(path)
    assert table.index[:3].tolist() == [2, 4, 5]
    assert table.attrs["source"] == str(path) and table.attrs["row_label"] == "line"
    assert table["sex"].tolist()[0] == "01"
    assert table["neighbourhood"].iloc[0] == "E01000000"


def test_parquet_rows_are_zero_based_positions(tmp_path):
    frame = clean_frame()
    frame.loc[3, "referral"] = -2
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    table = data.read_table(path)
    assert table.attrs["row_label"] == "row"
    report = data.validate(table, source=str(path))
    problem = only(report, "referral")
    assert problem.rows == (3,)
    assert "(rows are 0-based row positions)" in report.format().splitlines()[0]


def test_read_table_errors(tmp_path):
    with pytest.raises(HierarchyError, match="does not exist"):
        data.read_table(tmp_path / "nope.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(HierarchyError, match=r"unknown file type '\.xlsx'.*\.csv or \.parquet"):
        data.read_table(tmp_path / "t.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(HierarchyError, match="cannot read .*bad.parquet"):
        data.read_table(tmp_path / "bad.parquet")


# --------------------------------------------------------------------------- column checks


def test_missing_required_column_did_you_mean(tmp_path):
    report = check(tmp_path, clean_frame().rename(columns={"exposure": "exposre"}))
    problem = only(report, "exposure")
    assert "required column 'exposure' is missing; did you mean 'exposre'?" in problem.message
    assert "--columns" in problem.fix
    assert ("ERROR column 'exposure': required column 'exposure' is missing; did you mean "
            "'exposre'? Fix: rename the column") in report.format()


def test_misspelt_count_column_did_you_mean(tmp_path):
    report = check(tmp_path, clean_frame().drop(columns="s47").rename(
        columns={"referral": "referals"}))
    (problem,) = report.errors
    assert problem.column is None
    assert "no count column" in problem.message
    assert "did you mean 'referals' -> 'referral'?" in problem.message
    assert "[counts]" in problem.fix


def test_near_miss_optional_column_warns(tmp_path):
    report = check(tmp_path, clean_frame().assign(asessment=1))
    assert report.ok
    problem = only(report, "asessment", "warning")
    assert "ignored; did you mean 'assessment'?" in problem.message


# --------------------------------------------------------------------------- count checks


def test_non_integer_counts_mention_suppression(tmp_path):
    frame = clean_frame().astype({"referral": object})
    frame.loc[[1, 4, 6], "referral"] = ["3.5", "c", "*"]
    problem = only(check(tmp_path, frame), "referral")
    assert problem.n_rows == 3 and problem.rows == (line(1), line(4), line(6))
    assert "3 rows have non-integer counts (e.g. '3.5', 'c', '*')" == problem.message
    assert "DfE" in problem.fix and "suppressed" in problem.fix


def test_negative_counts(tmp_path):
    frame = clean_frame()
    frame.loc[[2, 7], "s47"] = -1
    report = check(tmp_path, frame)
    problem = only(report, "s47")
    assert problem.message == "2 rows have negative counts" and problem.rows == (4, 9)
    assert "ERROR column 's47': 2 rows have negative counts (rows 4, 9). Fix: " in report.format()


def test_missing_counts(tmp_path):
    frame = clean_frame()
    frame["s47"] = frame["s47"].astype("float64")
    frame.loc[5, "s47"] = float("nan")
    problem = only(check(tmp_path, frame), "s47")
    assert problem.message == "1 row has missing counts" and problem.rows == (line(5),)
    assert "(row 7)" in problem.format()


def test_only_five_row_labels_listed(tmp_path):
    frame = clean_frame()
    frame.loc[:, "referral"] = -1
    problem = only(check(tmp_path, frame), "referral")
    assert problem.n_rows == 10 and problem.rows == (2, 3, 4, 5, 6)
    assert "10 rows have negative counts (rows 2, 3, 4, 5, 6, ...)" in problem.format()


# --------------------------------------------------------------------------- exposure


def test_exposure_missing(tmp_path):
    frame = clean_frame().astype({"exposure": object})
    frame.loc[3, "exposure"] = None
    frame.loc[8, "exposure"] = "n/k"
    problem = only(check(tmp_path, frame), "exposure")
    assert problem.message == "2 rows have a missing or non-numeric exposure (e.g. 'n/k')"
    assert problem.rows == (line(3), line(8))


def test_exposure_zero_is_an_error_with_or_without_counts(tmp_path):
    """validate, --drop-invalid and fit agree: fit needs exposure > 0 in every row, so validate refuses 0."""
    frame = clean_frame()
    frame.loc[2, "exposure"] = 0  # referral > 0
    frame.loc[6, ["exposure", "referral", "s47"]] = 0  # no children and no counts: no information
    report = check(tmp_path, frame)
    messages = {p.message: p.rows for p in report.errors if p.column == "exposure"}
    assert messages == {"1 row has exposure 0 but positive counts": (line(2),),
                        "1 row has exposure 0 (no children): the model needs exposure > 0 in every row":
                            (line(6),)}
    kept, rejected = data.split_invalid(data.read_table(tmp_path / "table.csv"), report)
    assert rejected.index.tolist() == [line(2), line(6)] and len(kept) == 8


def test_negative_exposure(tmp_path):
    frame = clean_frame()
    frame.loc[0, ["exposure", "referral", "s47"]] = [-3, 0, 0]
    problem = only(check(tmp_path, frame), "exposure")
    assert problem.message == "1 row has a negative exposure" and problem.rows == (2,)


# --------------------------------------------------------------------------- deprivation


def test_deprivation_missing_and_out_of_range(tmp_path):
    frame = clean_frame()
    frame.loc[1, "deprivation"] = float("nan")
    frame.loc[[4, 9], "deprivation"] = [-0.1, 150.0]
    report = check(tmp_path, frame)
    missing, outside = [p for p in report.errors if p.column == "deprivation"]
    assert missing.message == "1 row has a missing or non-numeric deprivation"
    assert missing.rows == (line(1),)
    assert outside.message == "2 rows have deprivation outside [0, 1]"
    assert outside.rows == (line(4), line(9)) and "percent" not in outside.message


def test_deprivation_percentages_hint(tmp_path):
    frame = clean_frame()
    frame["deprivation"] = frame["deprivation"] * 100
    frame.loc[0, "deprivation"] = 0.5  # a percentage below 1 is in range but still suspect
    problem = only(check(tmp_path, frame), "deprivation")
    assert problem.n_rows == 9
    assert "look like percentages (max 32)" in problem.message
    assert "divide the column by 100" in problem.fix


# --------------------------------------------------------------------------- structure


def test_duplicate_neighbourhood(tmp_path):
    frame = clean_frame()
    frame.loc[3, "neighbourhood"] = frame.loc[1, "neighbourhood"]
    problem = only(check(tmp_path, frame), "neighbourhood")
    assert problem.message == "2 rows have a duplicated neighbourhood (e.g. E01000001)"
    assert problem.rows == (line(1), line(3))


def test_duplicates_allow_distinct_strata(tmp_path):
    frame = pd.concat([clean_frame().assign(sex="F"), clean_frame().assign(sex="M")],
                      ignore_index=True)
    assert check(tmp_path, frame).ok
    frame.loc[10, "sex"] = "F"  # now neighbourhood 0 has two F rows
    problem = only(check(tmp_path, frame), "neighbourhood")
    assert "duplicated neighbourhood x sex (e.g. E01000000, F)" in problem.message
    assert problem.rows == (line(0), line(10))


def test_neighbourhood_under_two_las(tmp_path):
    frame = pd.concat([clean_frame().assign(sex="F"), clean_frame().assign(sex="M")],
                      ignore_index=True)
    frame.loc[12, "la"] = "E06000002"  # neighbourhood 2 (in LA 1) also listed in LA 2
    report = check(tmp_path, frame)
    problem = only(report, "neighbourhood")
    assert "neighbourhood listed under more than one LA" in problem.message
    assert "e.g. E01000002: E06000001, E06000002" in problem.message
    assert problem.rows == (line(2), line(12))


def test_la_covariate_varies_within_la(tmp_path):
    frame = clean_frame()
    frame.loc[7, "la_spend"] = 250.0
    problem = only(check(tmp_path, frame), "la_spend")
    assert "LA covariate that varies within its LA (1 LA, e.g. E06000002: 101" in problem.message
    assert problem.n_rows == 5 and problem.rows == tuple(line(i) for i in range(5, 10))


def test_six_faults_all_reported(tmp_path):
    frame = clean_frame(6).astype({"referral": object})
    frame.loc[0, "referral"] = "c"  # suppressed count
    frame.loc[1, "s47"] = -4  # negative count
    frame.loc[2, "exposure"] = 0  # zero exposure, positive counts
    frame.loc[3, "deprivation"] = 1.7  # out of range
    frame.loc[4, "neighbourhood"] = frame.loc[7, "neighbourhood"]  # duplicate + two LAs
    frame.loc[9, "la_spend"] = 7.0  # varies within LA
    report = check(tmp_path, frame)
    text = report.format()
    assert text.startswith(f"{tmp_path / 'table.csv'}: 7 errors, 0 warnings")
    expected = [
        "ERROR column 'referral': 1 row has non-integer counts (e.g. 'c') (row 2)",
        "ERROR column 's47': 1 row has negative counts (row 3)",
        "ERROR column 'exposure': 1 row has exposure 0 but positive counts (row 4)",
        "ERROR column 'deprivation': 1 row has deprivation outside [0, 1] (row 5)",
        "ERROR column 'neighbourhood': 2 rows have a duplicated neighbourhood (e.g. E01000007)"
        " (rows 6, 9)",
        "ERROR column 'neighbourhood': 2 rows have a neighbourhood listed under more than one "
        "LA (1 neighbourhood, e.g. E01000007: E06000001, E06000002) (rows 6, 9)",
        "ERROR column 'la_spend': 6 rows have an LA covariate that varies within its LA",
    ]
    for snippet in expected:
        assert snippet in text
    assert len(text.splitlines()) == 1 + len(expected)


# --------------------------------------------------------------------------- warnings


def test_small_la_warning(tmp_path):
    frame = pd.concat([clean_frame(), clean_frame(3).query("la == 'E06000002'").assign(
        la="E06000009", neighbourhood=lambda d: d["neighbourhood"] + "X")], ignore_index=True)
    report = check(tmp_path, frame)
    assert report.ok
    problem = only(report, "la", "warning")
    assert problem.message == ("3 rows have an LA with fewer than 5 neighbourhoods "
                               "(1 LA, e.g. E06000009: 3)")
    assert problem.rows == (12, 13, 14)
    assert "WARNING column 'la': 3 rows" in report.format()


def test_unknown_codes_warn_with_reference(tmp_path):
    frame = clean_frame()
    reference = SimpleNamespace(
        lsoa=pd.DataFrame({"lsoa": frame["neighbourhood"].iloc[:8]}),
        la=pd.DataFrame({"la": ["E06000001"]}))
    report = check(tmp_path, frame, reference=reference)
    assert report.ok
    lsoa = only(report, "neighbourhood", "warning")
    assert lsoa.message == ("2 rows have LSOA codes not in the reference geography "
                            "(e.g. E01000008, E01000009)")
    assert lsoa.rows == (10, 11)
    la = only(report, "la", "warning")
    assert "5 rows have LA codes not in the reference geography (e.g. E06000002)" == la.message


def test_counts_above_exposure_warn(tmp_path):
    frame = clean_frame()
    frame.loc[4, "referral"] = 900
    report = check(tmp_path, frame)
    assert report.ok
    problem = only(report, "referral", "warning")
    assert problem.message.startswith("1 row has a referral count above exposure")
    assert problem.rows == (line(4),)


# --------------------------------------------------------------------------- column maps


MAP = """
[columns]
neighbourhood = "LSOA11CD"
la = "UTLA19CD"
exposure = "children_0_17"
deprivation = "income_rate"
[counts]
referral = "referrals"
[la_covariates]
spend_per_child = "spend"
"""


def user_frame() -> pd.DataFrame:
    return clean_frame().drop(columns=["s47", "la_spend"]).rename(columns={
        "neighbourhood": "LSOA11CD", "la": "UTLA19CD", "exposure": "children_0_17",
        "deprivation": "income_rate", "referral": "referrals"}).assign(spend=3.0)


def test_column_map_renames(tmp_path):
    (tmp_path / "cols.toml").write_text(MAP)
    cmap = data.load_column_map(tmp_path / "cols.toml")
    assert cmap.counts == {"referral": "referrals"}
    table = data.read_table(write_csv(tmp_path, user_frame()), columns=cmap)
    assert {"neighbourhood", "la", "exposure", "deprivation", "referral",
            "la_spend_per_child"} <= set(table.columns)
    assert data.validate(table, source="t").ok
    assert data.table_roles(table) == {"counts": ["referral"], "strata": [],
                                       "la_covariates": ["la_spend_per_child"]}


def test_example_column_map_loads():
    cmap = data.load_column_map(ROOT / "examples/columns_example.toml")
    assert cmap.columns["neighbourhood"] == "LSOA11CD"
    assert cmap.canonical_to_user()["la_spend_per_child"] == "spend"


def test_column_map_bad_key(tmp_path):
    path = tmp_path / "cols.toml"
    path.write_text(MAP.replace("neighbourhood =", "neighborhood ="))
    with pytest.raises(HierarchyError) as err:
        data.load_column_map(path)
    msg = str(err.value)
    assert str(path) in msg and "unknown key 'neighborhood' in [columns]" in msg
    assert "did you mean 'neighbourhood'?" in msg
    assert "Allowed keys: neighbourhood, la, exposure, deprivation, msoa" in msg


def test_column_map_bad_section(tmp_path):
    path = tmp_path / "cols.toml"
    path.write_text(MAP.replace("[counts]", "[count]"))
    with pytest.raises(HierarchyError, match=r"unknown section \[count\]; did you mean "
                                             r"\[counts\]\?.*Allowed sections"):
        data.load_column_map(path)


def test_mapped_column_absent_from_file(tmp_path):
    (tmp_path / "cols.toml").write_text(MAP)
    cmap = data.load_column_map(tmp_path / "cols.toml")
    frame = user_frame().rename(columns={"children_0_17": "children_0_18"})
    table = data.read_table(write_csv(tmp_path, frame), columns=cmap)
    problem = only(data.validate(table, source="t"), "exposure")
    assert (f"required column 'children_0_17' (mapped to 'exposure' in {tmp_path / 'cols.toml'})"
            " is not in the file; did you mean 'children_0_18'?") == problem.message


# --------------------------------------------------------------------------- splitting


def test_split_invalid(tmp_path):
    frame = clean_frame()
    frame.loc[1, "referral"] = -1
    frame.loc[1, "deprivation"] = 2.0
    frame.loc[6, "exposure"] = 0
    path = write_csv(tmp_path, frame)
    table = data.read_table(path)
    report = data.validate(table, source=str(path))
    kept, rejected = data.split_invalid(table, report)
    assert len(kept) + len(rejected) == len(table)
    assert rejected.index.tolist() == [line(1), line(6)]
    assert rejected.loc[line(1), "reason"] == ("referral: negative count; "
                                               "deprivation: outside [0, 1]")
    assert rejected.loc[line(6), "reason"] == "exposure: 0 with positive counts"
    assert data.validate(kept, source="kept").ok

    out = data.write_rejected(rejected, tmp_path / "rej" / "rejects.csv")
    back = pd.read_csv(out, dtype=str)
    assert back["line"].tolist() == ["3", "8"]
    assert back["reason"].iloc[1] == "exposure: 0 with positive counts"
    assert [p.name for p in out.parent.iterdir()] == ["rejects.csv"]  # no temp file left


def test_split_invalid_refuses_table_level_errors(tmp_path):
    path = write_csv(tmp_path, clean_frame().drop(columns="la"))
    table = data.read_table(path)
    with pytest.raises(HierarchyError, match="required column 'la' is missing"):
        data.split_invalid(table, data.validate(table, source=str(path)))


# --------------------------------------------------------------------------- load and hash


def test_load_raises_with_report(tmp_path):
    frame = clean_frame()
    frame.loc[2, "referral"] = -1
    with pytest.raises(DataValidationError) as err:
        data.load(write_csv(tmp_path, frame))
    report = err.value.report
    assert isinstance(report, data.ValidationReport) and not report.ok
    assert only(report, "referral").rows == (line(2),)
    assert "ERROR column 'referral': 1 row has negative counts (row 4)" in str(err.value)


def test_load_clean_dtypes_and_warnings(tmp_path):
    frame = clean_frame()
    frame.loc[0, "referral"] = 5000
    path = write_csv(tmp_path, frame)
    with pytest.warns(UserWarning, match="referral count above exposure") as caught:
        table = data.load(path)
    assert len(caught) == 1
    assert table.index.equals(pd.RangeIndex(10))
    assert table.attrs["source"] == str(path)
    assert table["referral"].dtype == "int64" and table["s47"].dtype == "int64"
    assert table["exposure"].dtype == "float64" and table["deprivation"].dtype == "float64"
    assert table["la_spend"].dtype == "float64"
    assert pd.api.types.is_string_dtype(table["neighbourhood"])
    assert table["neighbourhood"].iloc[0] == "E01000000"


def test_load_clean_table_is_silent(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = data.load(write_csv(tmp_path, clean_frame()))
    assert len(table) == 10


def test_data_hash_csv_parquet_order_and_content(tmp_path):
    frame = clean_frame()
    csv = data.read_table(write_csv(tmp_path, frame))
    frame.iloc[::-1][frame.columns[::-1]].to_parquet(tmp_path / "t.parquet", index=False)
    parquet = data.read_table(tmp_path / "t.parquet")
    h = data.data_hash(csv)
    assert len(h) == 16 and int(h, 16) >= 0
    assert data.data_hash(parquet) == h
    assert data.data_hash(data.load(tmp_path / "t.parquet")) == h
    assert data.data_hash(csv.assign(note="ignored column")) == h
    changed = frame.copy()
    changed.loc[4, "referral"] += 1
    assert data.data_hash(data.read_table(write_csv(tmp_path, changed, "c.csv"))) != h


def test_data_hash_covers_every_column_a_model_reads(tmp_path):
    """A row-term column (``rural``) and a group-term column (``year``) are in the fit's data hash, so
    a changed covariate is not taken for the data an earlier fit (or a sweep's finished job) used."""
    from hierarchy.language.spec import load_spec

    rural, years = (load_spec(ROOT / f"models/{m}.toml") for m in ("rural_gradient_nb", "years_gradient_nb"))
    assert rural.hashed_columns["numbers"] == ("rural", "exposure")
    assert years.hashed_columns["codes"] == ("la", "year")
    frame = clean_frame().assign(rural=[0, 1] * 5, year=[2019] * 5 + [2020] * 5)
    base = {m: data.data_hash(frame, **m.hashed_columns) for m in (rural, years)}
    assert base[rural] != data.data_hash(frame)  # the default's hash does not see rural
    flipped = frame.assign(rural=1 - frame["rural"])
    assert data.data_hash(flipped, **rural.hashed_columns) != base[rural]
    assert data.data_hash(flipped) == data.data_hash(frame)  # ... which is why models name their columns
    moved = frame.assign(year=[2019, 2020] * 5)
    assert data.data_hash(moved, **years.hashed_columns) != base[years]
    assert data.data_hash(frame.assign(rural=frame["rural"].astype(float)), **rural.hashed_columns) == base[rural]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch):
    """hierarchy.cli.main with the reference geography stubbed out (no real data read)."""
    import hierarchy
    from hierarchy import cli as cli_module

    try:
        from hierarchy.data import reference
    except ImportError:  # written in parallel; stand in for it
        reference = types.ModuleType("hierarchy.data.reference")
        monkeypatch.setitem(sys.modules, "hierarchy.data.reference", reference)
        monkeypatch.setattr(hierarchy, "reference", reference, raising=False)
    monkeypatch.setattr(reference, "maybe_reference", lambda _dir: None, raising=False)
    return cli_module.main


def test_cli_validate_bad_file(tmp_path, cli, capsys):
    frame = clean_frame()
    frame.loc[3, "s47"] = -2
    path = write_csv(tmp_path, frame)
    assert cli(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: 1 error, 0 warnings" in out
    assert "ERROR column 's47': 1 row has negative counts (row 5)" in out


def test_cli_validate_clean_file(tmp_path, cli, capsys):
    path = write_csv(tmp_path, clean_frame())
    assert cli(["validate", str(path)]) == 0
    assert f"{path}: 0 errors, 0 warnings" in capsys.readouterr().out


def test_cli_validate_drop_invalid(tmp_path, cli, capsys):
    frame = clean_frame()
    frame.loc[3, "s47"] = -2
    path = write_csv(tmp_path, frame)
    rejects = tmp_path / "rejects.csv"
    assert cli(["validate", str(path), "--drop-invalid", str(rejects)]) == 0
    assert "wrote 1 rejected rows" in capsys.readouterr().out
    assert pd.read_csv(rejects)["reason"].tolist() == ["s47: negative count"]


# --------------------------------------------------------------------------- inputs named, not guessed


def test_codes_with_spaces_are_stripped_and_said_and_then_checked_for_duplicates(tmp_path):
    frame = clean_frame()
    frame.loc[3, "la"] = LAS[0] + "  "  # Parquet keeps spaces that CSV reading strips
    frame.loc[1, "neighbourhood"] = frame.loc[2, "neighbourhood"] + " "  # a duplicate in disguise
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    report = data.validate(data.read_table(path), source=str(path))
    spaces = [p for p in report.warnings if "spaces around" in p.message]
    assert {(p.column, p.rows) for p in spaces} == {("la", (3,)), ("neighbourhood", (1,))}
    assert only(report, "neighbourhood").rows == (1, 2)  # the duplicate is found once stripped
    frame.loc[1, "neighbourhood"] = "E01009999 "
    frame.to_parquet(path, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = data.load(path)
    assert sorted(str(w.message).split("spaces around the ")[1][:16] for w in caught) == [
        "la code (e.g. 'E", "neighbourhood co"]
    assert loaded["la"].nunique() == 2 and loaded.loc[1, "neighbourhood"] == "E01009999"


def test_codes_differing_only_by_case_are_refused_naming_rows(tmp_path):
    frame = clean_frame()
    frame.loc[[1, 2], "la"] = LAS[0].lower()
    problem = only(check(tmp_path, frame), "la")
    assert "differs from another only by upper/lower case" in problem.message
    assert problem.rows == (line(1), line(2)) and "'e06000001'" in problem.message


def test_duplicate_column_names_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    text = clean_frame().to_csv(index=False).splitlines()
    path.write_text("\n".join([text[0] + ",referral", *(t + ",1" for t in text[1:])]) + "\n")
    with pytest.raises(HierarchyError, match="'referral' is columns 5, 9"):
        data.read_table(path)
    path.write_text("\n".join([text[0].replace("s47", "referral "), *text[1:]]) + "\n")  # equal once stripped
    with pytest.raises(HierarchyError, match="'referral' is columns 5, 6"):
        data.read_table(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([[1, 2], [3, 4]], names=["referral", "referral"]), tmp_path / "t.parquet")
    with pytest.raises(HierarchyError, match="more than once"):
        data.read_table(tmp_path / "t.parquet")


def test_boolean_counts_are_not_numbers(tmp_path):
    frame = clean_frame()
    frame["referral"] = frame["referral"] > 12
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    problem = only(data.validate(data.read_table(path), source="t"), "referral")
    assert problem.n_rows == len(frame) and "true/false" in problem.fix
    problem = only(check(tmp_path, frame.assign(referral=frame["referral"].map({True: "TRUE",
                                                                                  False: "FALSE"}))),
                   "referral")
    assert "true/false" in problem.fix


def test_absurd_exposure_is_an_error_and_outliers_a_warning(tmp_path):
    frame = clean_frame()
    frame.loc[1, "exposure"] = 1e9
    frame.loc[2, "exposure"] = 25 * 205
    report = check(tmp_path, frame)
    assert only(report, "exposure").rows == (line(1),)
    assert "more than in any LA in England" in only(report, "exposure").message
    assert only(report, "exposure", "warning").rows == (line(2),)


def test_all_zero_counts(tmp_path):
    frame = clean_frame()
    frame[["referral", "s47"]] = 0
    report = check(tmp_path, frame)
    assert [p.message for p in report.errors] == ["every count is 0 (referral, s47): there is nothing to fit"]
    frame["referral"] = 5
    assert only(check(tmp_path, frame), "s47", "warning").message.startswith("every s47 count is 0")


def test_spreadsheet_mangled_codes(tmp_path):
    frame = clean_frame()
    frame.loc[0, "neighbourhood"] = "1.00E+05"
    frame.loc[1, "neighbourhood"] = "2E+05"
    frame["age_band"] = "1-4"
    frame.loc[9, "age_band"] = "01-Apr"
    report = check(tmp_path, frame)
    assert only(report, "neighbourhood").rows == (line(0), line(1))
    assert "rewrote as a number or a date" in only(report, "age_band").message


def test_thousands_separators_are_explained(tmp_path):
    frame = clean_frame().astype({"exposure": str})
    frame.loc[0, "exposure"] = "1,234"
    problem = only(check(tmp_path, frame), "exposure")
    assert "thousands separators" in problem.fix and "'1,234'" in problem.fix


def test_boolean_la_covariate_is_a_0_1_number(tmp_path):
    frame = clean_frame()
    frame["la_rural"] = frame["la"] == LAS[0]
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, index=False)
    loaded = data.load(path)
    assert loaded["la_rural"].dtype == "float64" and sorted(loaded["la_rural"].unique()) == [0.0, 1.0]


def test_write_table_round_trips_through_load(tmp_path):
    frame = clean_frame()
    for name in ("kept.csv", "kept.parquet"):
        out = data.write_table(data.clean(frame), tmp_path / name)
        pd.testing.assert_frame_equal(data.load(out).drop(columns="note"),
                                      data.clean(frame).drop(columns="note"), check_dtype=False)


def test_formatted_numbers_are_explained(tmp_path):
    frame = clean_frame().astype({"exposure": str, "deprivation": str})
    frame.loc[0, "exposure"] = "1\u00a0234"
    frame.loc[1, "deprivation"] = "12%"
    report = check(tmp_path, frame)
    assert "thousands separators" in only(report, "exposure").fix
    assert "percentages" in only(report, "deprivation").fix


# --------------------------------------------------------------------------- issue 34: model columns in a map

MODEL_MAP = """
[columns]
neighbourhood = "LSOA code"
la = "LA"
exposure = "Children"
deprivation = "IDACI"
rural = "Rural flag"
year = "Year"
[counts]
referral = "Referrals"
re_referral = "Re-referrals"
"""


def _model_user_table(tmp_path, geo, years=(2019, 2020)):
    """A methodologist's own table: their column names, a rural flag, re-referrals and years."""
    from hierarchy.data.simulate import simulate_years

    t, _ = simulate_years(geo, years=list(years), seed=2)
    rng = np.random.default_rng(0)
    t["rural"] = t["neighbourhood"].map({c: float(rng.random() < 0.3) for c in t["neighbourhood"].unique()})
    t["referral"] = np.maximum(t["referral"], 1)  # the exposure of re-referrals per referral
    t["re_referral"] = rng.binomial(t["referral"], 0.2)
    user = t.rename(columns={"neighbourhood": "LSOA code", "la": "LA", "exposure": "Children",
                             "deprivation": "IDACI", "referral": "Referrals", "re_referral": "Re-referrals",
                             "rural": "Rural flag", "year": "Year"})
    (tmp_path / "cols.toml").write_text(MODEL_MAP)
    return write_csv(tmp_path, user), tmp_path / "cols.toml"


def test_a_column_map_names_the_columns_shipped_models_read(tmp_path, small_geography):
    """Issue 34/2: rural, year and re_referral (columns of shipped models) map like the canonical
    ones, so the shipped rural, re-referral and years models read a renamed table."""
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    path, cols = _model_user_table(tmp_path, small_geography, years=(2019,))
    cmap = data.load_column_map(cols)
    assert cmap.canonical_to_user()["rural"] == "Rural flag"
    assert cmap.canonical_to_user()["re_referral"] == "Re-referrals"
    for name in ("rural_gradient_nb", "re_referrals_nb"):
        spec = load_spec(ROOT / f"models/{name}.toml")
        table = data.load(path, columns=cmap, **spec.data_columns)
        design = build_design(table, spec)
        assert design.y.sum() == table[spec.stages[0]].sum() > 0
    spec = load_spec(ROOT / "models/rural_gradient_nb.toml")
    table = data.load(path, columns=cmap, **spec.data_columns)
    assert np.array_equal(build_design(table, spec).row_X[:, 0], table["rural"].astype(float).to_numpy())


def test_a_typo_of_a_canonical_key_is_still_refused(tmp_path):
    for typo, meant in (("neighbourhod", "neighbourhood"), ("referal", "referral"), ("exposre", "exposure")):
        path = tmp_path / "cols.toml"
        path.write_text(f'[columns]\n{typo} = "x"\n')
        with pytest.raises(HierarchyError, match=f"unknown key '{typo}'.*did you mean '{meant}'"):
            data.load_column_map(path)
    path.write_text('[columns]\n"LSOA code" = "x"\n')
    with pytest.raises(HierarchyError, match="not a name a formula can use"):
        data.load_column_map(path)


def test_validation_messages_use_the_users_column_names(tmp_path, small_geography):
    """Issue 34/2: a problem in a mapped column is reported under the user's name, and so is a
    non-numeric row-term column in the design."""
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    path, cols = _model_user_table(tmp_path, small_geography, years=(2019,))
    frame = pd.read_csv(path)
    frame.loc[3, "Children"] = -5
    bad = write_csv(tmp_path, frame, "bad.csv")
    report = data.validate(data.read_table(bad, columns=data.load_column_map(cols)), source="t")
    text = report.format()
    assert "column 'Children'" in text and "column 'exposure'" not in text, text
    frame = pd.read_csv(path)
    frame["Rural flag"] = frame["Rural flag"].astype(object)
    frame.loc[4, "Rural flag"] = "yes"
    spec = load_spec(ROOT / "models/rural_gradient_nb.toml")
    table = data.load(write_csv(tmp_path, frame, "rural.csv"), columns=cols, **spec.data_columns)
    with pytest.raises(HierarchyError, match="column 'Rural flag' must hold finite numbers"):
        build_design(table, spec)


def test_a_deeply_nested_column_map_is_one_clear_error(tmp_path):
    """Issue 33/9: nested TOML gives one line, no RecursionError."""
    path = tmp_path / "cols.toml"
    path.write_text("[columns]\nneighbourhood = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(HierarchyError, match="nested too deeply"):
        data.load_column_map(path)
    path.write_text("[columns." + ".".join(["a"] * 2000) + "]\nb = 1\n")
    with pytest.raises(HierarchyError, match=r"must be a column name in quotes, got a table") as err:
        data.load_column_map(path)
    assert len(str(err.value)) < 300


def test_a_numeric_year_in_a_formula_is_a_trend_and_keys_the_rows(tmp_path, small_geography):
    """Issue 34/5: ``Year + w:Year`` on a neighbourhood x year table reads Year as a number (one
    coefficient, the values themselves), and the year tells the rows apart: no duplicate error."""
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import ModelSpec

    path, cols = _model_user_table(tmp_path, small_geography, years=(2019, 2020, 2021))
    spec = ModelSpec.from_dict({"name": "trend", "formula": "referral ~ w * z + Year + w:Year + (1 + w | la) + "
                                "offset(log(exposure))"})
    assert spec.row_terms == ("Year", "w:Year") and spec.strata == () and spec.groups == ()
    cmap = data.ColumnMap(columns={c: u for c, u in data.load_column_map(cols).canonical_to_user().items()
                                   if c != "year"})  # the user's own name, Year, in the formula
    with pytest.raises(data.DataValidationError, match="duplicated neighbourhood"):
        data.load(path, columns=cmap)  # without the model, the years repeat the neighbourhoods
    table = data.load(path, columns=cmap, **spec.data_columns)
    design = build_design(table, spec)
    assert design.row_X.shape[1] == 2 and set(design.row_X[:, 0]) == {2019.0, 2020.0, 2021.0}
    assert len(set(design.row_ids)) == len(design.row_ids) == len(table)
    cat = ModelSpec.from_dict({"name": "per_year", "formula": "referral ~ w * z + C(Year) + w:C(Year) + "
                               "(1 + w | la) + offset(log(exposure))"})
    assert cat.strata == ("Year",) and cat.row_terms == ()

"""The DfE LA panel: built from the real reference folder (skipped when absent) and the stand-in."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hierarchy.cli import main
from hierarchy.data import panel
from hierarchy.data.reference import find_reference_dir
from hierarchy.errors import HierarchyError

REAL = find_reference_dir() is not None
real = pytest.mark.skipif(not REAL, reason="England reference folder absent")


@pytest.fixture(scope="module")
def real_panel():
    return panel.build_panel()


def test_stand_in_panel_has_the_columns_and_marks_suppression_as_missing(tmp_path):
    p = panel.synthetic_panel(n_la=12, seed=3, suppress=0.05)
    t = p.table
    assert list(t.columns) == panel.COLUMNS
    la = t[t["level"] == "LA"]
    hidden = la["marker"] != ""
    assert (la["marker"] == "x").sum() > 0 and la.loc[hidden, "count"].isna().all()
    assert (la.loc[~hidden, "count"] >= 0).all() and la.loc[~hidden, "count"].notna().all()
    assert p.n_suppressed == int(la.loc[la["measure"].isin(["referrals", "s47"]), "count"].isna().sum())
    # DfE's England figure counts the suppressed cells: the stand-in's does too
    eng = t[t["level"] == "England"].set_index(["measure", "year"])["count"]
    visible = la.groupby(["measure", "year"])["count"].sum()
    assert (eng.reindex(visible.index) >= visible).all() and (eng.reindex(visible.index) > visible).any()
    path = panel.write_panel(p, tmp_path / "p.parquet")
    back = panel.read_panel(path)
    pd.testing.assert_frame_equal(back.table, t)
    assert back.n_suppressed == p.n_suppressed and back.truth.keys() == p.truth.keys()


def test_parse_refuses_unreadable_values_and_keeps_markers():
    num, marker = panel._parse(pd.Series(["12", "c", "x", "1,204"]), "f.csv: column c")
    assert np.isnan(num[1]) and marker.tolist() == ["", "c", "x", ""] and num[3] == 1204
    with pytest.raises(HierarchyError, match="f.csv: column c.*'twelve'"):
        panel._parse(pd.Series(["12", "twelve"]), "f.csv: column c")


def test_read_panel_names_a_missing_file(tmp_path):
    with pytest.raises(HierarchyError, match="panel build"):
        panel.read_panel(tmp_path / "none.parquet")


def test_cli_panel_build_stand_in(tmp_path, capsys):
    out = tmp_path / "panel.parquet"
    assert main(["panel", "build", "--synthetic", "--out", str(out)]) == 0
    assert "suppressed" in capsys.readouterr().out
    assert len(panel.read_panel(out).table) > 0


@real
def test_real_panel_rows_las_and_years(real_panel):
    t = real_panel.table
    la = t[t["level"] == "LA"]
    per_year = la[la["measure"] == "referrals"].groupby("year")["la_code"].nunique()
    assert per_year.index.tolist() == list(range(2013, 2026))
    assert per_year.between(151, 153).all() and per_year[2013] == 152 and per_year[2025] == 153
    # 150 stable areas, each in every year
    ref = la[la["measure"] == "referrals"]
    assert ref.groupby("series")["year"].nunique().eq(13).all() and ref["series"].nunique() == 150
    assert not la.duplicated(["measure", "year", "la_code"]).any()
    assert t[t["level"] == "England"].groupby("measure")["year"].nunique().min() >= 5


@real
def test_real_panel_suppressed_cells_are_missing_and_counted(real_panel):
    t = real_panel.table
    la = t[t["level"] == "LA"]
    hidden = la["count"].isna()
    assert (la.loc[hidden, "marker"] != "").all() and (la.loc[~hidden, "marker"] == "").all()
    assert real_panel.n_suppressed > 0
    # Hackney 2021 (DfE "x") is missing, not 0
    hk = la[(la["la_name"] == "Hackney") & (la["year"] == 2021) & (la["measure"] == "referrals")]
    assert hk["marker"].iloc[0] == "x" and np.isnan(hk["count"].iloc[0])


@real
def test_real_panel_code_changes_are_mapped(real_panel):
    la = real_panel.table[(real_panel.table["level"] == "LA") & (real_panel.table["measure"] == "referrals")]
    flag = la.set_index(["la_code", "year"])["code_change"]
    series = la.set_index(["la_code", "year"])["series"]
    assert series[("E06000028", 2019)] == series[("E06000058", 2020)] == series[("E10000009", 2013)]
    assert flag[("E06000028", 2019)].startswith("Dorset 2019")
    assert series[("E10000021", 2021)] == series[("E06000061", 2022)] == series[("E06000062", 2025)]
    assert series[("E10000006", 2023)] == series[("E06000063", 2024)]
    assert series[("E10000023", 2023)] == series[("E06000065", 2024)] == "E06000065"
    assert flag[("E06000063", 2025)].startswith("Cumbria 2023")
    assert flag[("E08000025", 2019)] == ""          # Birmingham: no change
    # the s47 file's superseded 2013-2017 codes are read as today's
    s47 = real_panel.table[(real_panel.table["measure"] == "s47") & (real_panel.table["level"] == "LA")]
    assert "E06000048" not in set(s47["la_code"]) and (s47["la_code"] == "E06000057").sum() == 13


@real
def test_real_panel_exposures_and_covariates(real_panel):
    t = real_panel.table
    la = t[t["level"] == "LA"]
    rates = la[la["exposure_measure"] == "children_0_17"]
    assert rates["exposure"].notna().all() and (rates["exposure"] > 0).all()
    conv = la[la["exposure_measure"] != "children_0_17"]
    assert (conv["exposure"].dropna() >= 0).all()
    assert (conv["exposure"].isna() == (conv["exposure_marker"] != "")).all()
    assert la["deprivation"].between(0.02, 0.3).all() and la["idaci"].between(0.02, 0.4).all()
    assert la["rural_share"].between(0, 1).all()
    eng = t[(t["level"] == "England") & (t["measure"] == "referrals")].set_index("year")
    assert eng.loc[2019, "exposure"] == pytest.approx(11.8e6, rel=0.03)
    # LA counts add up to DfE's England figure where nothing is suppressed
    ref = la[la["measure"] == "referrals"].groupby("year")["count"].agg(["sum", lambda s: s.isna().sum()])
    full = ref[ref.iloc[:, 1] == 0]
    assert np.allclose(full["sum"], eng.loc[full.index, "count"], rtol=1e-3)


# ------------------------------------------------------------ damaged and edited reference files (issue 33)

HEADER = "time_period,time_identifier,geographic_level,old_la_code,new_la_code,la_name,referral_count\n"
ROWS = ["2019,Reporting year,National,,,,700\n", "2019,Reporting year,Local authority,201,E09000001,City,300\n",
        "2019,Reporting year,Local authority,202,E09000002,Town,400\n"]


def _dfe_folder(tmp_path, text: str | bytes, name: str = "c1.csv"):
    (tmp_path / "dfe_csc").mkdir(exist_ok=True)
    path = tmp_path / "dfe_csc" / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(("content", "message"), [
    (np.random.default_rng(0).bytes(4000), "is not a CSV text file"),
    ((HEADER + "".join(ROWS))[:-25], "ends part-way through line 4 .*truncated"),
    (HEADER + "".join(ROWS) + "2019,Reporting\n", "ends part-way through line 5 \\(2 of 7 fields"),
    (b"time_period,geographic_level\x00\n", "NUL bytes"),
    ("", "is empty"),
    ("just,some\ntext,here\n", "lacks columns"),
    (HEADER + ROWS[0].replace("2019", "twenty", 1), "column time_period, line 2"),
])
def test_a_damaged_dfe_file_gives_one_line_naming_it_and_the_fix(tmp_path, content, message):
    """Random bytes, a file cut part-way, an empty or foreign file: one line naming the file and telling the
    user to re-download it or point to a good copy (never to edit the package)."""
    path = _dfe_folder(tmp_path, content)
    with pytest.raises(HierarchyError, match=message) as err:
        panel._counts(tmp_path, "referrals", "c1.csv", "referral_count")
    text = str(err.value)
    assert str(path) in text and "re-download it from the publisher" in text and "--reference-dir" in text
    assert "\n" not in text and "hierarchy.data.panel" not in text


@pytest.mark.parametrize(("value", "what"), [("-40", "'-40' is not a count"), ("12.5", "'12.5' is not a count")])
def test_an_edited_count_is_refused_with_file_column_and_line(tmp_path, value, what):
    _dfe_folder(tmp_path, HEADER + ROWS[0] + ROWS[1] + ROWS[2].replace("400", value))
    with pytest.raises(HierarchyError, match=f"c1.csv, column referral_count, line 4 \\(Town 2019\\): {what}"):
        panel._counts(tmp_path, "referrals", "c1.csv", "referral_count")
    _dfe_folder(tmp_path, HEADER + "".join(ROWS))
    assert panel._counts(tmp_path, "referrals", "c1.csv", "referral_count")["count"].tolist() == [700, 300, 400]


def _kids(la: float, england: float) -> pd.DataFrame:
    return pd.DataFrame({"level": ["LA", "LA", "England"], "year": 2019,
                         "la_code": ["E09000001", "E09000002", "E92000001"], "exposure": [la, la, england]})


def test_counts_above_the_children_or_far_from_the_england_total_are_refused(tmp_path):
    _dfe_folder(tmp_path, HEADER + "".join(ROWS))
    counts = {"referrals": panel._counts(tmp_path, "referrals", "c1.csv", "referral_count")}
    panel._check_plausible(counts, _kids(5_000, 10_000))  # as published
    with pytest.raises(HierarchyError, match="line 4 \\(Town 2019\\): 400 is more than the 350 children"):
        panel._check_plausible(counts, _kids(350, 10_000))
    for count, share in (("4000", "614%"), ("100", "57%")):  # the LAs' sum against DfE's England 700
        _dfe_folder(tmp_path, HEADER + ROWS[0] + ROWS[1] + ROWS[2].replace("400", count))
        counts = {"referrals": panel._counts(tmp_path, "referrals", "c1.csv", "referral_count")}
        text = f"the LA counts of 2019 add up to .*{share} of DfE's England figure 700 \\(line 2; must be 80%-105%"
        with pytest.raises(HierarchyError, match=f"column referral_count: {text}"):
            panel._check_plausible(counts, _kids(50_000, 100_000))


def _copy_with(tmp_path, name: str, content: bytes):
    """The real reference folder, linked file by file, with dfe_csc/NAME replaced by ``content``."""
    src = find_reference_dir()
    ref = tmp_path / "ref"
    for item in src.iterdir():
        if item.name != "dfe_csc":
            (ref / item.name).parent.mkdir(parents=True, exist_ok=True)
            (ref / item.name).symlink_to(item)
    (ref / "dfe_csc").mkdir()
    for f in (src / "dfe_csc").iterdir():
        (ref / "dfe_csc" / f.name).symlink_to(f)
    (ref / "dfe_csc" / name).unlink()
    (ref / "dfe_csc" / name).write_bytes(content)
    return ref


@real
def test_cli_panel_build_refuses_damaged_and_absurd_real_files(tmp_path, capsys):
    name = panel.RATE_MEASURES["referrals"][0]
    good = (find_reference_dir() / "dfe_csc" / name).read_bytes()
    lines = good.decode("utf-8-sig").splitlines(keepends=True)
    i = next(k for k, t in enumerate(lines) if ",Birmingham," in t and t.startswith("2019,"))
    fields = lines[i].split(",")
    col = lines[0].split(",").index("referral_count")
    fields[col] = str(int(fields[col]) * 40)  # more referrals than Birmingham has children
    cases = [(np.random.default_rng(1).bytes(20_000), "is not a CSV text file"),
             (good[: len(good) // 2], "looks truncated"),
             ("".join([*lines[:i], ",".join(fields), *lines[i + 1:]]).encode(),
              f"column referral_count, line {i + 1} \\(Birmingham 2019\\): .* is more than the .* children")]
    for k, (content, message) in enumerate(cases):
        ref = _copy_with(tmp_path / str(k), name, content)
        out = tmp_path / f"p{k}.parquet"
        assert main(["panel", "build", "--reference-dir", str(ref), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and name in err and "re-download" in err, err
        assert re.search(message, err), err
        assert not out.exists()

"""The DfE LA panel: built from the real reference folder (skipped when absent) and the stand-in."""

from __future__ import annotations

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
    hidden = la["marker"] == "c"
    assert hidden.sum() > 0 and la.loc[hidden, "count"].isna().all()
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

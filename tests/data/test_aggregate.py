"""Child-level extract -> neighbourhood table: rules on hand-made records, validation, recovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.cli import main
from hierarchy.data import aggregate as ag
from hierarchy.data import childsim
from hierarchy.data import extract as ex
from hierarchy.data import table as data
from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import HierarchyError


@pytest.fixture(scope="module")
def geo():
    return synthetic_geography(3, seed=4, lsoa_per_la=6)


def _records(geo, rows):
    """Hand-made records: dicts of DfE fields; defaults fill the rest."""
    lsoa = geo.lsoa["lsoa"].iloc[0]
    la = geo.lsoa["la"].iloc[0]
    base = {"LAchildID": "A", "LA": la, "LSOA": lsoa, "PersonBirthDate": "2010-06-15", "GenderCurrent": "1",
            "CINreferralDate": "2018-05-01"}
    frame = pd.DataFrame([{**base, **r} for r in rows]).astype(object)
    frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")
    frame.attrs["row_label"] = "line"
    return frame


def _count(geo, rows, stage="referral", year=2019, strata=(), **kw):
    res = ag.aggregate(ex.parse_extract(_records(geo, rows)), geo, year=year, strata=strata, **kw)
    return res, int(res.table[stage].sum())


def test_census_year_boundaries():
    d = pd.Series(pd.to_datetime(["2018-03-31", "2018-04-01", "2019-03-31", "2019-04-01"]))
    assert ex.census_year(d).tolist() == [2018, 2019, 2019, 2020]


def test_referral_counted_in_its_census_year_only(geo):
    rows = [{"LAchildID": k, "CINreferralDate": d} for k, d in (
        ("A", "2018-03-31"), ("B", "2018-04-01"), ("C", "2019-03-31"), ("D", "2019-04-01"))]
    assert _count(geo, rows, year=2019)[1] == 2
    assert _count(geo, rows, year=2018)[1] == 1
    assert _count(geo, rows, year=2020)[1] == 1


def test_child_referred_twice_in_a_year_counted_once(geo):
    rows = [{"CINreferralDate": "2018-05-01"}, {"CINreferralDate": "2018-09-01"},
            {"LAchildID": "B", "CINreferralDate": "2018-09-01"}]
    assert _count(geo, rows)[1] == 2


def test_same_id_in_two_las_is_two_children(geo):
    other = geo.lsoa[geo.lsoa["la"] != geo.lsoa["la"].iloc[0]].iloc[0]
    rows = [{}, {"LA": other["la"], "LSOA": other["lsoa"]}]
    assert _count(geo, rows)[1] == 2


def test_re_referral_at_11_months_counts_at_13_does_not(geo):
    rows = [{"LAchildID": k, "CINreferralDate": d} for k, d in (
        ("A", "2017-12-01"), ("A", "2018-11-01"), ("B", "2017-09-01"), ("B", "2018-10-01"),
        ("C", "2017-06-01"), ("C", "2018-06-01"))]
    res, n = _count(geo, rows, stage="re_referral")
    assert n == 1  # A at 11 months; B at 13 months no; C on the anniversary no
    assert int(res.table["referral"].sum()) == 3


def test_re_referral_needs_same_la_and_repeated_record_is_not_one(geo):
    other = geo.lsoa[geo.lsoa["la"] != geo.lsoa["la"].iloc[0]].iloc[0]
    rows = [{"CINreferralDate": "2018-05-01"},
            {"CINreferralDate": "2018-05-01", "S47ActualStartDate": "2018-05-03"},
            {"LA": other["la"], "LSOA": other["lsoa"], "CINreferralDate": "2018-07-01"}]
    assert _count(geo, rows, stage="re_referral")[1] == 0


def test_age_at_the_event_and_birthday(geo):
    assert ex.age_at(pd.Series(pd.to_datetime(["2013-06-15"] * 3)),
                     pd.Series(pd.to_datetime(["2018-06-14", "2018-06-15", "2019-01-01"]))).tolist() == [4, 5, 5]
    rows = [{"LAchildID": "A", "PersonBirthDate": "2013-06-15", "CINreferralDate": "2018-06-14",
             "S47ActualStartDate": "2018-06-20"}]
    res, _ = _count(geo, rows, strata=("age_band",))
    t = res.table.groupby("age_band")[["referral", "s47"]].sum()
    assert t.loc["0-4", "referral"] == 1 and t.loc["5-9", "referral"] == 0
    assert t.loc["5-9", "s47"] == 1 and t.loc["0-4", "s47"] == 0


def test_single_year_of_age_and_exposures_sum_to_children(geo):
    rows = [{"PersonBirthDate": "2010-06-15", "CINreferralDate": "2018-05-01"}]
    res, _ = _count(geo, rows, strata=("age_band", "sex"), age="single")
    t = res.table
    assert t.loc[(t["age_band"] == "7") & (t["sex"] == "male"), "referral"].sum() == t["referral"].sum() == 1
    las = set(geo.lsoa["la"].iloc[:1])
    kids = geo.lsoa.loc[geo.lsoa["la"].isin(las), "children"].sum()
    assert t["exposure"].sum() == kids


def test_over_18_and_unknown_sex_are_reported_not_silently_dropped(geo):
    rows = [{"LAchildID": "A", "PersonBirthDate": "1999-01-01"}, {"LAchildID": "B", "GenderCurrent": "9"},
            {"LAchildID": "C"}]
    res, n = _count(geo, rows, strata=("sex",))
    assert n == 1
    reasons = dict(zip(res.excluded["reason"], res.excluded["events"], strict=True))
    assert reasons == {"aged 18 or over at the event": 1, "sex not known or not specified": 1}


def test_plan_categories_need_and_zero_rows(geo):
    rows = [{"LAchildID": k, "CPPstartDate": d, "InitialCategoryOfAbuse": c, "PrimaryNeedCode": n}
            for k, d, c, n in (("A", "2018-06-01", "NEG", "N1"), ("B", "2018-07-01", "EMO", "N2"))]
    res, n = _count(geo, rows, stage="cp_plan", strata=("need",))
    t = res.table
    assert n == 2 and t["cp_plan_neglect"].sum() == 1 and t["cp_plan_emotional"].sum() == 1
    assert sorted(t["need"].unique()) == ["N1", "N2"]
    n_lsoa = (geo.lsoa["la"] == geo.lsoa["la"].iloc[0]).sum()
    assert len(t) == 2 * n_lsoa  # every neighbourhood of the LA, zero counts included


def test_ethnicity_needs_a_population_file(geo, tmp_path):
    rows = [{"Ethnicity": "BAFR"}, {"LAchildID": "B", "Ethnicity": "WBRI"}]
    with pytest.raises(HierarchyError, match="population"):
        _count(geo, rows, strata=("ethnicity",))
    pop = pd.DataFrame({"neighbourhood": np.repeat(geo.lsoa["lsoa"].to_numpy(), 2),
                        "ethnicity": ["White", "Black"] * len(geo.lsoa), "exposure": 50})
    pop.to_csv(tmp_path / "pop.csv", index=False)
    res, n = _count(geo, rows, strata=("ethnicity",), pop_file=tmp_path / "pop.csv")
    assert n == 2 and set(res.table.loc[res.table["referral"] > 0, "ethnicity"]) == {"White", "Black"}


# --------------------------------------------------------------------------- validation


def _problems(geo, rows, **kw):
    frame = _records(geo, rows)
    rep = ex.validate_extract(frame, source="x.csv", lsoa_codes=geo.lsoa["lsoa"],
                              lsoa_la=dict(zip(geo.lsoa["lsoa"], geo.lsoa["la"], strict=True)), **kw)
    return rep


@pytest.mark.parametrize(("rows", "column", "text", "line"), [
    ([{"CINreferralDate": "31/13/2018"}], "CINreferralDate", "cannot be read", 2),
    ([{}, {"CINreferralDate": "2018-05-01", "CINclosureDate": "2018-04-01"}], "CINclosureDate",
     "CINclosureDate before CINreferralDate", 3),
    ([{"CPPstartDate": "2018-06-01", "CPPendDate": "2018-05-01"}], "CPPendDate", "before CPPstartDate", 2),
    ([{"PersonBirthDate": "2018-06-01"}], "CINreferralDate", "before PersonBirthDate", 2),
    ([{"CINreferralDate": "2019-05-01"}], "CINreferralDate", "after the extract's end", 2),
    ([{"LSOA": "E01999999"}], "LSOA", "not in the reference geography", 2),
    ([{}, {}], None, "duplicated records", 3),
    ([{"GenderCurrent": "M"}], "GenderCurrent", "unknown GenderCurrent code", 2),
    ([{"Ethnicity": "XXXX"}], "Ethnicity", "unknown Ethnicity code", 2),
    ([{"PrimaryNeedCode": "N12"}], "PrimaryNeedCode", "unknown PrimaryNeedCode", 2),
    ([{"LAchildID": None}], "LAchildID", "no LAchildID", 2),
    ([{}, {"PersonBirthDate": "2011-01-01", "CINreferralDate": "2018-06-01"}], "PersonBirthDate",
     "more than one PersonBirthDate", 2),
])
def test_every_problem_is_named_with_column_row_and_fix(geo, rows, column, text, line):
    rep = _problems(geo, rows, extract_end=pd.Timestamp("2019-03-31"))
    found = [p for p in rep.errors if text in p.message]
    assert found, rep.format()
    assert found[0].column == column and line in found[0].rows and found[0].fix


def test_episode_in_two_las_is_an_error(geo):
    other = geo.lsoa[geo.lsoa["la"] != geo.lsoa["la"].iloc[0]].iloc[0]
    rep = _problems(geo, [{}, {"LA": other["la"], "LSOA": other["lsoa"]}])
    assert any("more than one LA" in p.message for p in rep.errors), rep.format()


def test_out_of_area_child_is_a_warning(geo):
    other = geo.lsoa[geo.lsoa["la"] != geo.lsoa["la"].iloc[0]].iloc[0]
    rep = _problems(geo, [{}, {"LAchildID": "B", "LSOA": other["lsoa"]}])
    assert rep.ok and any("out of area" in p.message for p in rep.warnings)


def test_all_problems_at_once_and_missing_field_hint(geo, tmp_path):
    frame = _records(geo, [{"CINreferralDate": "bad", "GenderCurrent": "7"}]).rename(
        columns={"PersonBirthDate": "personbirthdate"})
    rep = ex.validate_extract(frame, source="x.csv")
    text = rep.format()
    assert "required field 'PersonBirthDate' is missing; did you mean 'personbirthdate'?" in text
    assert len(rep.errors) == 3


def test_field_map(geo, tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples/cin_fields_example.toml"
    assert ex.load_field_map(example).fields["LAchildID"] == "child_id"
    frame = _records(geo, [{}]).rename(columns={"LAchildID": "child_id"})
    frame.to_csv(tmp_path / "e.csv", index=False)
    (tmp_path / "m.toml").write_text('[fields]\nLAchildID = "child_id"\n')
    raw = ex.read_extract(tmp_path / "e.csv", tmp_path / "m.toml")
    assert ex.validate_extract(raw, source="e.csv").ok
    (tmp_path / "bad.toml").write_text('[fields]\nLAchildId = "child_id"\n')
    with pytest.raises(HierarchyError, match="did you mean 'LAchildID'"):
        ex.load_field_map(tmp_path / "bad.toml")
    (tmp_path / "miss.toml").write_text('[fields]\nLAchildID = "kid"\n')
    rep = ex.validate_extract(ex.read_extract(tmp_path / "e.csv", tmp_path / "miss.toml"), source="e.csv")
    assert any("'kid' (mapped to 'LAchildID'" in p.message for p in rep.errors)


# --------------------------------------------------------------------------- recovery end to end


def test_extract_aggregates_back_to_the_simulated_counts(tmp_path, capsys):
    geo = synthetic_geography(5, seed=2, lsoa_per_la=15)
    extract, truth_table, truth = childsim.simulate_extract(geo, year=2019, seed=5)
    assert truth["child_level"]["re_referrals"] > 0
    path = tmp_path / "ext.csv"
    extract.to_csv(path, index=False)
    raw = ex.read_extract(path)
    assert ex.validate_extract(raw, source=str(path), lsoa_codes=geo.lsoa["lsoa"]).ok
    out = ag.aggregate(ex.parse_extract(raw), geo, year=2019).table
    m = out.merge(truth_table, on=["neighbourhood", "age_band", "sex"], suffixes=("", "_true"), how="outer")
    assert len(m) == len(out) == len(truth_table)
    for col in ("referral", "s47", "cp_plan", "re_referral", "exposure"):
        np.testing.assert_array_equal(m[col].to_numpy(), m[f"{col}_true"].to_numpy())
    # the table passes the neighbourhood validator as it is
    ag.write_table(out, tmp_path / "t.parquet")
    assert data.validate(data.read_table(tmp_path / "t.parquet"), source="t").ok


def test_cli_aggregate_refuses_bad_extract_and_writes_nothing(tmp_path, capsys):
    geo_args = ["--synthetic", "--n-la", "3", "--lsoa-per-la", "6", "--geo-seed", "4"]
    geo = synthetic_geography(3, seed=4, lsoa_per_la=6)
    _records(geo, [{}, {"LAchildID": "B", "CINclosureDate": "2018-01-01"}]).to_csv(tmp_path / "e.csv", index=False)
    assert main(["aggregate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "t.parquet"), *geo_args]) == 2
    assert not (tmp_path / "t.parquet").exists()
    assert "CINclosureDate before CINreferralDate (row 3)" in capsys.readouterr().out
    assert main(["aggregate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "e.csv"), *geo_args]) == 2


def test_simulated_ids_are_not_shared_between_las():
    """Regression (issue 17, national run): IDs numbered 1, 2, ... in every LA gave ~10 pairs of different
    children in two LAs with the same ID, birth date and referral date, and the national extract failed its
    own check (one episode in more than one LA)."""
    geo = synthetic_geography(4, seed=2, lsoa_per_la=10)
    extract, _, _ = childsim.simulate_extract(geo, year=2019, seed=5)
    care, _ = childsim.simulate_care_extract(geo, year=2019, seed=5)
    for frame in (extract, care):
        assert frame.groupby("LAchildID")["LA"].nunique().max() == 1


# ------------------------------------------------------------------- the default census year (issue 33)


def _bulk(n=20, year=2019):
    return [{"LAchildID": f"K{i}", "CINreferralDate": f"{year - 1}-{5 + i % 7:02d}-{1 + i:02d}"} for i in range(n)]


@pytest.mark.parametrize("late", ["2019-05-02", "2030-06-01"])
def test_one_late_referral_decides_no_default_year(geo, late):
    """One record dated a year after the rest (or in 2030) moved the default census year, giving a table
    of that one referral (or of zeros). The bulk decides; the record is named, in the report and by
    default_extract_end."""
    frame = _records(geo, [*_bulk(), {"LAchildID": "Z", "CINreferralDate": late}])
    year, later, note = ex.default_census_year(frame)
    assert year == 2019 and later.sum() == 1 and "20 of 21 CINreferralDate" in note
    with pytest.raises(HierarchyError, match=f"1 record\\(s\\) have CINreferralDate after census year 2019.*"
                                             f"row\\(s\\) 22 \\({late}\\).*--extract-end"):
        ex.default_extract_end(frame)
    rep = ex.validate_extract(frame, source="e.csv", lsoa_codes=geo.lsoa["lsoa"])
    text = "after the extract's end (2019-03-31, the default: census year 2019 holds 20 of 21"
    found = [p for p in rep.errors if text in p.message]
    assert found and tuple(found[0].rows) == (22,), rep.format()


def test_default_year_keeps_earlier_years_and_a_partly_filled_last_year(geo):
    """A census extract holds earlier referrals of open episodes; a last year with a tenth of the busiest
    year's records is still supported."""
    frame = _records(geo, [*_bulk(20, 2018), *_bulk(2, 2019)])
    frame["LAchildID"] = [f"C{i}" for i in range(len(frame))]
    assert ex.default_extract_end(frame) == pd.Timestamp("2019-03-31")
    extract, _, _ = childsim.simulate_extract(synthetic_geography(3, seed=2, lsoa_per_la=10), year=2019, seed=1)
    assert ex.default_census_year(extract)[0] == 2019 and ex.default_census_year(extract)[1].sum() == 0


def test_aggregate_refuses_an_all_zero_year(geo):
    rows = _bulk()
    with pytest.raises(HierarchyError, match="no events counted in census year 2030 .*CINreferralDate: 2019 .20"):
        _count(geo, rows, year=2030)
    assert _count(geo, rows, year=2019)[1] == 20


def test_cli_aggregate_names_the_late_referral_and_writes_nothing(geo, tmp_path, capsys):
    geo_args = ["--synthetic", "--n-la", "3", "--lsoa-per-la", "6", "--geo-seed", "4"]
    late = {"LAchildID": "Z", "CINreferralDate": "2030-01-05", "PersonBirthDate": "2020-01-01"}
    _records(geo, [*_bulk(), late]).to_csv(tmp_path / "e.csv", index=False)
    assert main(["aggregate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "t.parquet"), *geo_args]) == 2
    out = capsys.readouterr().out
    assert "CINreferralDate after the extract's end (2019-03-31, the default" in out and "row 22" in out
    assert not (tmp_path / "t.parquet").exists()
    assert main(["aggregate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "t.parquet"), "--year", "2030",
                 "--extract-end", "2030-03-31", *geo_args]) == 0  # asked for: the one referral of 2030
    assert int(pd.read_parquet(tmp_path / "t.parquet")["referral"].sum()) == 1
    _records(geo, [*_bulk(), {**late, "PersonBirthDate": "2010-01-01"}]).to_csv(tmp_path / "e.csv", index=False)
    assert main(["aggregate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "t2.parquet"), "--year", "2030",
                 "--extract-end", "2030-03-31", *geo_args]) == 2  # aged 20 then: nothing left to count
    assert "all zeros" in capsys.readouterr().err and not (tmp_path / "t2.parquet").exists()

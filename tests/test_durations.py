"""Durations and re-entry: censoring and person-time by hand, hazard recovery, disclosure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import childsim
from hierarchy.data import extract as ex
from hierarchy.data.reference import synthetic_geography
from hierarchy.results import durations as du

END = pd.Timestamp("2019-03-31")


@pytest.fixture(scope="module")
def geo():
    return synthetic_geography(3, seed=4, lsoa_per_la=6)


def _records(geo, rows):
    base = {"LA": geo.lsoa["la"].iloc[0], "LSOA": geo.lsoa["lsoa"].iloc[0], "PersonBirthDate": "2010-01-01",
            "GenderCurrent": "2"}
    return ex.parse_extract(pd.DataFrame([{**base, **r} for r in rows]).astype(object))


def test_censoring_and_person_time_by_hand(geo):
    rec = _records(geo, [
        {"LAchildID": "A", "CINreferralDate": "2018-04-01", "CINclosureDate": "2018-05-01"},   # 30 days, closed
        {"LAchildID": "B", "CINreferralDate": "2018-10-01", "CINclosureDate": None},           # open: censored
        {"LAchildID": "C", "CINreferralDate": "2018-01-01", "CINclosureDate": "2018-06-01"},   # before since
        {"LAchildID": "A", "CINreferralDate": "2018-04-01", "CINclosureDate": "2018-05-01",
         "S47ActualStartDate": "2018-04-03"},                                                  # same spell again
    ])
    sp = du.spells(rec, "CINreferralDate", "CINclosureDate", since=pd.Timestamp("2018-04-01"), extract_end=END)
    assert sorted(zip(sp["child"].str[-1], sp["days"], sp["event"], strict=True)) == [("A", 30, 1), ("B", 182, 0)]
    pt = du.person_time(sp, geo).set_index("duration_band")
    assert pt.loc["0-91", "exposure"] == 30 + 91 and pt.loc["0-91", "events"] == 1
    assert pt.loc["91-182", "exposure"] == 91 and pt.loc["91-182", "events"] == 0
    assert "182-365" not in pt.index  # B censored exactly at 182 days


def test_kaplan_meier_by_hand():
    km = du.kaplan_meier(np.array([1, 2, 2, 3, 4]), np.array([1, 1, 0, 1, 0]))
    np.testing.assert_allclose(km["survival"], [0.8, 0.6, 0.3])


def test_piecewise_draws_have_the_hazard():
    rng = np.random.default_rng(0)
    t = childsim.draw_piecewise(np.zeros(200_000), np.ones(200_000), rng, (0.01, 0.002), (0, 50))
    assert abs(np.mean(t < 50) - (1 - np.exp(-0.5))) < 0.004
    late = t[t >= 50] - 50
    assert abs(late.mean() - 500) < 10
    cond = childsim.draw_piecewise(np.full(1000, 60.0), np.ones(1000), rng, (0.01, 0.002), (0, 50))
    assert (cond >= 60).all()


def test_extract_to_hazards_and_gradient_recovered():
    geo = synthetic_geography(12, seed=3, lsoa_per_la=30)
    extract, _, truth = childsim.simulate_extract(geo, year=2019, seed=8)
    rec = ex.parse_extract(extract)
    for kind, key in (("cin", "cin_closure"), ("cpp", "cpp_end")):
        sp = du.spells(rec, *du.SPELLS[kind], since=pd.Timestamp("2018-04-01"), extract_end=END)
        assert 0 < sp["event"].mean() < 1  # some censored
        f = du.fit_piecewise(du.person_time(sp, geo))
        true = truth["durations"][key]
        k = len(f["hazard"])
        z = (np.log(f["hazard"]) - np.log(true["hazards"][:k])) / f["se"][:k]
        assert np.all(np.abs(z) < 4), (kind, z)
        assert abs(f["log_gradient"] - true["log_gradient"]) < 4 * f["se"][-1], (kind, f["log_gradient"])


def test_estimands_suppress_small_groups(geo):
    rows = [{"LAchildID": f"K{i}", "CINreferralDate": "2018-04-01", "CINclosureDate": "2018-05-01"}
            for i in range(9)]
    rec = _records(geo, rows)
    sp = du.spells(rec, "CINreferralDate", "CINclosureDate", since=pd.Timestamp("2018-04-01"), extract_end=END)
    est = du.estimands(sp, geo)
    assert est["suppressed"].all() and est["spells"].isna().all() and est["median_days"].isna().all()
    extra = {"LAchildID": "Z", "CINreferralDate": "2018-04-01", "CINclosureDate": "2018-06-01"}
    rec = _records(geo, [*rows, extra])
    sp = du.spells(rec, "CINreferralDate", "CINclosureDate", since=pd.Timestamp("2018-04-01"), extract_end=END)
    shown = du.estimands(sp, geo).query("not suppressed")
    assert len(shown) == 1 and shown["median_days"].item() == 30 and shown["share_within_91"].item() == 1.0

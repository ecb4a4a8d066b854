"""Durations and re-entry: censoring and person-time by hand, hazard recovery, disclosure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import childsim
from hierarchy.data import extract as ex
from hierarchy.data.reference import synthetic_geography
from hierarchy.results import durations as du
from tests.helpers import ROOT

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
        # LA effects (mean 0) multiply every band: the pooled ML fit recovers the band ratios
        h = np.asarray(true["hazards"])
        ratio = np.log(f["hazard"][1:k] / f["hazard"][0]) - np.log(h[1:k] / h[0])
        z = ratio / np.hypot(f["se"][1:k], f["se"][0])
        assert np.all(np.abs(z) < 4), (kind, z)
        se = np.hypot(f["se"][-1], 0.05 / np.sqrt(12))  # the LAs' own gradient deviations (SD 0.05)
        assert abs(f["log_gradient"] - true["log_gradient"]) < 4 * se, (kind, f["log_gradient"])


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


# --------------------------------------------------------------------------- the Bayesian route


def test_band_labels_sort_in_time_order_and_give_back_the_cuts():
    labels = du.band_labels((0, 91, 182, 365, 1461))
    assert labels == ["0000-0091", "0091-0182", "0182-0365", "0365-1461", "1461+"]
    assert sorted(labels) == labels
    np.testing.assert_array_equal(du.cuts_of(labels[::-1]), [0, 91, 182, 365, 1461])
    with pytest.raises(Exception, match="start at 0 and increase"):
        du.band_labels((0, 91, 91))


def test_survival_and_median_from_piecewise_hazards_by_hand():
    cuts = np.array([0.0, 100.0])
    lh = np.log(np.array([[0.5, 2.0]]) * du.YEAR_DAYS / 100)  # per child-year: 0.005 and 0.02 per day
    s = du.survival_from_hazards(lh, cuts, np.array([50.0, 100.0, 150.0]))
    np.testing.assert_allclose(s[0], np.exp(-np.array([0.25, 0.5, 0.5 + 1.0])))
    # median: 0.5 spent by day 100, log 2 - 0.5 = 0.193 more at 0.02 per day
    np.testing.assert_allclose(du.median_days(lh, cuts), [100 + (np.log(2) - 0.5) / 0.02])
    early = np.log(np.array([[1.0, 1.0]]) * du.YEAR_DAYS / 10)  # 0.1 per day: median in the first band
    np.testing.assert_allclose(du.median_days(early, cuts), [10 * np.log(2)])


def test_model_table_validates_only_with_the_named_columns(tmp_path):
    from hierarchy.data import table as data
    from hierarchy.errors import DataValidationError
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    geo = synthetic_geography(6, seed=3, lsoa_per_la=12)
    extract, _, _ = childsim.simulate_extract(geo, year=2019, seed=2)
    sp = du.spells(ex.parse_extract(extract), *du.SPELLS["cin"], since=pd.Timestamp("2018-04-01"), extract_end=END)
    table = du.model_table(sp, geo)
    assert table["events"].sum() == sp["event"].sum()
    np.testing.assert_allclose(table["exposure"].sum() * du.YEAR_DAYS, sp["days"].sum())
    path = data.write_table(table, tmp_path / "cin.parquet")
    with pytest.raises(DataValidationError) as err:
        data.load(path)  # no stage column, and neighbourhoods repeat over the bands
    text = str(err.value.report)
    assert "no count column" in text and "duplicated neighbourhood" in text
    report = data.validate(data.read_table(path), source="t", counts=("events",), strata=("band",))
    assert report.ok, report.format()
    spec = load_spec(ROOT / "models/cin_duration_poisson.toml")
    loaded = data.load(path, counts=spec.stages, strata=spec.strata)
    assert loaded["events"].dtype == np.int64
    design = build_design(loaded, spec)
    assert design.stratum_names == tuple(du.band_labels()[:3])  # the first band is the reference
    # the named columns enter the data hash; without them the hash is the old one
    assert data.data_hash(loaded, counts=("events",), strata=("band",)) != data.data_hash(loaded)
    bad = table.copy()
    bad.loc[0, "events"] = -1
    bad = bad.astype({"events": object})
    bad.loc[1, "events"] = 1.5
    r = data.validate(bad, source="t", counts=("events",), strata=("band",))
    messages = " ".join(f"{p.column}: {p.message}" for p in r.errors)
    assert "events: 1 row has negative counts" in messages and "events: 1 row has non-integer" in messages
    r = data.validate(table, source="t", counts=("event",), strata=("band",))
    assert any("count column 'event'" in p.message and "'events'" in p.message for p in r.errors)


def test_reentry_spells_by_hand(geo):
    base = {"LA": geo.lsoa["la"].iloc[0], "LSOA": geo.lsoa["lsoa"].iloc[0], "PersonBirthDate": "2005-01-01",
            "GenderCurrent": "1"}
    rows = [
        {"LAchildID": "A", "CLAstartDate": "2014-01-01", "CLAendDate": "2014-06-01", "ReasonEpisodeCeased": "E4A"},
        {"LAchildID": "A", "CLAstartDate": "2015-06-01", "CLAendDate": None, "ReasonEpisodeCeased": None},
        {"LAchildID": "B", "CLAstartDate": "2014-01-01", "CLAendDate": "2015-01-01", "ReasonEpisodeCeased": "E4B"},
        {"LAchildID": "C", "CLAstartDate": "2014-01-01", "CLAendDate": "2015-01-01", "ReasonEpisodeCeased": "E11"},
        {"LAchildID": "D", "CLAstartDate": "2010-01-01", "CLAendDate": "2011-01-01", "ReasonEpisodeCeased": "E4A"},
        {"LAchildID": "E", "CLAstartDate": "2014-01-01", "CLAendDate": "2014-06-01", "ReasonEpisodeCeased": "E4A"},
        {"LAchildID": "E", "CLAstartDate": "2014-06-01", "CLAendDate": None, "ReasonEpisodeCeased": None},
    ]
    raw = pd.DataFrame([{**base, **r} for r in rows]).astype(object)
    report = ex.validate_extract(raw, source="care", required=ex.CARE_REQUIRED_FIELDS,
                                 extract_end=pd.Timestamp("2019-03-31"))
    assert report.ok, report.format()
    sp = du.reentry_spells(ex.parse_extract(raw), since=pd.Timestamp("2013-04-01"),
                           extract_end=pd.Timestamp("2019-03-31"))
    got = {c[-1]: (d, e) for c, d, e in zip(sp["child"], sp["days"], sp["event"], strict=True)}
    # A back after 365 days; B home and never back (censored the day after the end); C adopted, D
    # home before since: not at risk; E back the same day (a same-day transfer, not a re-entry)
    assert got["A"] == (365, 1)
    assert got["B"] == ((pd.Timestamp("2019-04-01") - pd.Timestamp("2015-01-01")).days, 0)
    assert set(got) == {"A", "B", "E"} and got["E"][1] == 0
    raw.loc[0, "ReasonEpisodeCeased"] = "E99"
    bad = ex.validate_extract(raw, source="care", required=ex.CARE_REQUIRED_FIELDS)
    assert any("ReasonEpisodeCeased" in (p.column or "") for p in bad.errors)
    cin = ex.validate_extract(raw, source="care")  # as a CIN extract: the referral date is missing
    assert any("CINreferralDate" in p.message for p in cin.errors)


def test_simulated_reentry_has_its_hazards():
    geo = synthetic_geography(12, seed=3, lsoa_per_la=30)
    care, truth = childsim.simulate_care_extract(geo, year=2019, seed=1)
    t = truth["reentry"]
    assert 0.3 < t["share_within_six_years_typical"] < 0.42  # the published 35%
    rec = ex.parse_extract(care)
    sp = du.reentry_spells(rec, since=pd.Timestamp("2012-04-01"), extract_end=END)
    assert len(sp) == t["returns_home"] and sp["event"].sum() == t["reentries_observed"]
    f = du.fit_piecewise(du.person_time(sp, geo, du.REENTRY_CUTS_DAYS))
    ratio = np.log(f["hazard"][1:] / f["hazard"][0]) - np.log(np.asarray(t["hazards"][1:]) / t["hazards"][0])
    assert np.all(np.abs(ratio / np.hypot(f["se"][1:4], f["se"][0])) < 4), ratio
    assert abs(f["log_gradient"] - t["log_gradient"]) < 4 * np.hypot(f["se"][-1], 0.05 / np.sqrt(12))


def _true_share(hazards_per_day, cuts, log_gradient, w, days):
    lh = np.log(np.asarray(hazards_per_day) * du.YEAR_DAYS * np.exp(log_gradient * w))
    return 1 - du.survival_from_hazards(lh[None, :], np.asarray(cuts, dtype=float), np.array([days]))[0, 0]


@pytest.mark.slow  # two fits: ~4-5 min on the shared 2-core machine
@pytest.mark.long
@pytest.mark.parametrize("kind", ["cin", "reentry"])
def test_extract_to_durations_table_to_fit_recovers_the_hazards(kind, tmp_path, capsys):
    """simulate-extract -> durations (CLI) -> hierarchy fit (CLI) -> posterior estimands vs the truth."""
    import json

    from hierarchy.cli import main
    from hierarchy.results.fitfile import load_fit

    geo_args = ["--synthetic", "--n-la", "12", "--lsoa-per-la", "30", "--geo-seed", "3"]
    geo = synthetic_geography(12, seed=3, lsoa_per_la=30)
    if kind == "cin":
        extract, _, truth = childsim.simulate_extract(geo, year=2019, seed=8)
        t = {**truth["durations"]["cin_closure"], "cuts_days": truth["durations"]["cuts_days"]}
        spell, model, horizon = ["--spell", "cin"], "cin_duration_poisson", None
    else:
        extract, truth = childsim.simulate_care_extract(geo, year=2019, seed=8)
        t = truth["reentry"]
        spell, model, horizon = ["--spell", "reentry"], "care_reentry_poisson", 6 * 365
    ext, table, fit = tmp_path / "ext.csv", tmp_path / "table.parquet", tmp_path / "fit.nc"
    extract.to_csv(ext, index=False)
    assert main(["durations", str(ext), *geo_args, *spell, "--out", str(table)]) == 0
    assert main(["fit", "--data", str(table), "--model", model, "--priors", "time_to_event", "--chains", "2",
                 "--tune", "400", "--draws", "400", "--quiet", "--out", str(fit)]) == 0
    capsys.readouterr()
    idata = load_fit(fit)
    post = idata.posterior
    u = np.mean(list(t["la_effects"]["intercept"].values()))  # the simulated LAs' mean effect
    log_h = np.log(np.asarray(t["hazards"]) * du.YEAR_DAYS)
    k = len(post["stratum"]) + 1  # bands the extract reaches
    checks = {"intercept": log_h[0] + u, "gradient": t["log_gradient"]}
    for name, truth_value in checks.items():
        d = post[name].to_numpy().ravel()
        assert abs(d.mean() - truth_value) < 3.5 * d.std(), (kind, name, d.mean(), truth_value)
    off = post["stratum_intercept_offset"].to_numpy().reshape(-1, k - 1)
    z = (off.mean(0) - (log_h[1:k] - log_h[0])) / off.std(0)
    assert np.all(np.abs(z) < 3.5), (kind, z)
    est = du.posterior_estimands(idata, horizon_days=horizon).query("la_level == 'mean'")
    des = json.loads(post.attrs["hierarchy"])["design"]
    for r in est.itertuples():
        w = (r.deprivation - r.la_deprivation) / 0.1
        if abs(w) > 2:
            continue  # far outside most LAs' neighbourhoods: a long extrapolation
        for days in [91] + ([horizon] if horizon else []):
            true = _true_share(t["hazards"], t["cuts_days"], t["log_gradient"], w, days)
            lo, hi = getattr(r, f"share_within_{days}_lo"), getattr(r, f"share_within_{days}_hi")
            assert lo - 0.03 < true < hi + 0.03, (kind, r.group, days, lo, true, hi, des["X_mean"])
    if horizon:
        share = est[f"share_within_{horizon}"].to_numpy()
        assert 0.25 < share.mean() < 0.5  # about the published 35% within six years


@pytest.mark.parametrize("name", ["cin_duration_poisson", "cpp_duration_poisson", "care_reentry_poisson"])
def test_duration_models_centre_on_the_child_weighted_la_deprivation(name):
    """Regression (issue 17, national run): the duration models took LA deprivation as the mean weighted by
    time at risk (the table's exposure), which leans to the LA's deprived neighbourhoods; the simulator's
    (and the referral model's) X is child-weighted, so a typical LA's closure hazard came out ~4% low."""
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    geo = synthetic_geography(6, seed=3, lsoa_per_la=12)
    extract, _, _ = childsim.simulate_extract(geo, year=2019, seed=2)
    sp = du.spells(ex.parse_extract(extract), *du.SPELLS["cin"], since=pd.Timestamp("2018-04-01"), extract_end=END)
    table = du.model_table(sp, geo)
    design = build_design(table, load_spec(ROOT / f"models/{name}.toml"))
    lsoa = geo.lsoa
    kids = lsoa["children"].groupby(lsoa["la"]).sum()
    X = (lsoa["income_rate"] * lsoa["children"]).groupby(lsoa["la"]).sum() / kids
    np.testing.assert_allclose(design.la_X, X.loc[list(design.la_codes)].to_numpy())
    np.testing.assert_allclose(design.w, du.person_time(sp, geo)["w"].to_numpy())

"""Tests of hierarchy.data.simulate: calibration to DfE totals and the published gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import simulate as sim
from hierarchy.errors import HierarchyError

COUNTS = ["referral", "s47", "cp_plan", "looked_after"]


@pytest.fixture(scope="module")
def real_run(reference_geography):
    return sim.simulate(reference_geography, year=2019, seed=0)


def _check_truth_gradients(truth):
    ref = truth["stages"]["referral"]
    assert round(ref["gradient_at_mean"], 2) == 1.62
    assert round(ref["gradient_10_less"], 2) == 2.33
    assert round(ref["gradient_10_more"], 2) == 1.39
    for stage, g in (("s47", 1.72), ("cp_plan", 1.80), ("looked_after", 1.95)):
        assert round(truth["stages"][stage]["gradient_at_mean"], 2) == g
    assert truth["family"] == "negative_binomial"
    assert truth["la_deprivation"]["transform"] == "log"
    json.dumps(truth, allow_nan=False)


def _check_calibration(geo, table, truth):
    """Expected LA totals equal DfE's; simulated ones agree within their NB spread."""
    for stage in COUNTS:
        las = truth["las"]
        exp = np.array([r[stage]["expected"] for r in las])
        dfe = np.array([r[stage]["dfe"] for r in las])
        np.testing.assert_allclose(exp, dfe, rtol=1e-6, atol=1e-9)
        simulated = table.groupby("la")[stage].sum().reindex([r["la"] for r in las]).to_numpy()
        assert (simulated == np.array([r[stage]["simulated"] for r in las])).all()
        z = (simulated - exp) / np.sqrt(np.maximum([r[stage]["variance"] for r in las], 1e-12))
        assert np.abs(z).max() < 4.5, stage
        var_total = sum(r[stage]["variance"] for r in las)
        assert abs(simulated.sum() - dfe.sum()) < 4.5 * math.sqrt(var_total), stage
        imputed = {r["la"] for r in las if r[stage]["imputed"]}
        assert imputed == set(truth["stages"][stage]["imputed_las"])


def test_curve_passes_through_published_points():
    for xbar in (0.12, 0.147, 0.2):
        d = sim.curve_coefficients(xbar)
        for dx, g in sim.REFERRAL_CURVE.items():
            assert math.exp(sim.log_gradient(xbar + dx, xbar, d, clip=None)) == pytest.approx(g)
    with pytest.raises(HierarchyError):
        sim.curve_coefficients(0.09)


def test_real_gradients_and_truth(real_run, reference_geography):
    table, truth = real_run
    _check_truth_gradients(truth)
    assert truth["geography"] == reference_geography.source
    assert truth["la_deprivation"]["mean"] == pytest.approx(0.147, abs=0.002)
    lo, hi = truth["stages"]["referral"]["la_gradient_range"]
    # tau = 0.10: about 1.2-2.4, a few LAs beyond
    assert 1.0 < lo < 1.4 and 2.2 < hi < 3.2
    q05, q95 = truth["stages"]["referral"]["la_gradient_q05_q95"]
    assert 1.2 < q05 and q95 < 2.4
    assert truth["stages"]["looked_after"]["target_year"] == 2021  # CLA published from 2021
    assert truth["stages"]["referral"]["imputed_las"] == []


def test_real_calibration(real_run, reference_geography):
    table, truth = real_run
    assert len(table) == 32_844 and table["la"].nunique() == 151
    _check_calibration(reference_geography, table, truth)
    ref = truth["stages"]["referral"]
    assert ref["expected_total"] == pytest.approx(ref["dfe_total"], rel=1e-9)
    for stage in COUNTS:  # national totals within 5% (referrals: within 1%)
        st = truth["stages"][stage]
        assert st["simulated_total"] == pytest.approx(st["dfe_total"], rel=0.05)
    assert ref["simulated_total"] == pytest.approx(ref["dfe_total"], rel=0.01)
    # LAs with > 1000 referrals: within 5% together, and typically (median) each
    big = [r["referral"] for r in truth["las"] if r["referral"]["dfe"] > 1000]
    total_sim = sum(r["simulated"] for r in big)
    assert total_sim == pytest.approx(sum(r["dfe"] for r in big), rel=0.05)
    assert np.median([abs(r["simulated"] / r["dfe"] - 1) for r in big]) < 0.05


def test_real_decile_rates(real_run):
    _, truth = real_run
    dec = truth["deciles"]
    expected = np.array(dec["referral"]["expected"])
    simulated = np.array(dec["referral"]["simulated"])
    assert (np.diff(expected) > 0).all()
    # target: ~100-250 in the least deprived decile; the calibrated model gives ~280
    # (within-LA log-linear gradients + DfE LA totals), see test below
    assert 100 < expected[0] < 300
    assert expected[-1] > 1_000
    np.testing.assert_allclose(simulated, expected, rtol=0.05)
    for stage in COUNTS:
        assert (np.diff(dec[stage]["expected"]) > 0).all()


def test_real_published_extremes(real_run):
    """What was published: about 100 per 10,000 under 1% income deprived, more than 1,340 in the most
    deprived. The most deprived holds; the least deprived is ~230 (calibration to DfE LA totals with the
    published within-LA gradients; see the strict xfail below)."""
    ext = real_run[1]["extremes"]
    assert ext["least"]["definition"] == "x < 0.01" and ext["least"]["neighbourhoods"] >= 10
    assert ext["most"]["definition"] == "x >= 0.55"
    assert ext["most"]["expected_rate"] > 1340
    assert ext["least"]["expected_rate"] < 300
    assert ext["most"]["expected_rate"] / ext["least"]["expected_rate"] > 5


@pytest.mark.xfail(strict=True, reason="the calibrated model gives ~230 per 10,000 under 1% income deprived, "
                   "not the published ~100 (within-LA log-linear gradients + DfE LA totals)")
def test_real_least_deprived_about_100(real_run):
    assert real_run[1]["extremes"]["least"]["expected_rate"] < 150


def test_real_strata(reference_geography):
    table, truth = sim.simulate(reference_geography, strata=("sex", "age"), seed=3)
    assert truth["strata"] == ["age", "sex"]
    _check_truth_gradients(truth)
    _check_calibration(reference_geography, table, truth)
    exp = table.groupby("neighbourhood")["exposure"].sum()
    lsoa = reference_geography.lsoa.set_index("lsoa")["children"]
    assert (exp.reindex(lsoa.index) == lsoa).all()
    grads = truth["stages"]["referral"]["stratum_gradient_at_mean"]
    order = [grads[f"age_band={b}"] for b in ("0-4", "5-9", "10-15", "16-17")]
    assert order == sorted(order, reverse=True)
    assert grads["age_band=0-4"] / grads["age_band=16-17"] == pytest.approx(1.10 / 0.90)


def test_small_synthetic_run(small_geography, tmp_path):
    table, truth = sim.simulate(small_geography, year=2019, seed=5)
    _check_truth_gradients(truth)
    _check_calibration(small_geography, table, truth)
    assert list(table.columns) == ["neighbourhood", "la", "msoa", "deprivation", "exposure",
                                   *COUNTS, "la_rural_share", "la_log_density"]
    for col in COUNTS + ["exposure"]:
        assert table[col].dtype == np.int64 and (table[col] >= 0).all()
    assert (table.groupby("la")["la_rural_share"].nunique() == 1).all()
    assert (table["exposure"] > 0).all()
    np.testing.assert_array_equal(table["exposure"], small_geography.lsoa["children"])


@pytest.mark.parametrize("strata", [("age",), ("sex",), ("age", "sex")])
def test_small_strata_rows_sum_to_exposure(small_geography, strata):
    table, truth = sim.simulate(small_geography, strata=strata, seed=1)
    keys = ["neighbourhood"] + [{"age": "age_band", "sex": "sex"}[s] for s in strata]
    assert not table.duplicated(keys).any()
    total = table.groupby("neighbourhood")["exposure"].sum()
    children = small_geography.lsoa.set_index("lsoa")["children"]
    assert (total.reindex(children.index) == children).all()
    if "sex" in strata:
        assert set(table["sex"]) == {"female", "male"}
        share = table.loc[table["sex"] == "female", "exposure"].sum() / table["exposure"].sum()
        assert share == pytest.approx(0.488, abs=0.005)
    if "age" in strata:
        assert set(table["age_band"]) == {"0-4", "5-9", "10-15", "16-17"}
    _check_calibration(small_geography, table, truth)


def test_write_is_deterministic_and_atomic(small_geography, tmp_path):
    paths = []
    for i, seed in enumerate((11, 11, 12)):
        table, truth = sim.simulate(small_geography, strata=("age",), seed=seed)
        out = tmp_path / f"run{i}" / "sim.parquet"
        truth_path = sim.write(table, truth, out)
        assert truth_path == out.with_suffix(".truth.json")
        assert sorted(p.name for p in out.parent.iterdir()) == ["sim.parquet", "sim.truth.json"]
        paths.append((out, truth_path))
    (a, ta), (b, tb), (c, _) = paths
    assert a.read_bytes() == b.read_bytes() and ta.read_bytes() == tb.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    back = pd.read_parquet(a)
    assert list(back.columns)[:5] == ["neighbourhood", "la", "msoa", "age_band", "deprivation"]
    counts_c = pd.read_parquet(c)[COUNTS]
    assert not back[COUNTS].equals(counts_c)
    assert json.loads(ta.read_text())["seed"] == 11


def test_bad_strata_and_year(small_geography):
    with pytest.raises(HierarchyError, match="strata"):
        sim.simulate(small_geography, strata=("need",))
    with pytest.raises(HierarchyError, match="2030"):
        sim.simulate(small_geography, year=2030)
    _, truth = sim.simulate(small_geography, year=2013, seed=0)  # CLA from 2021 on
    assert truth["stages"]["looked_after"]["target_year"] == 2021
    assert truth["stages"]["referral"]["target_year"] == 2013


def test_simulation_noise_is_independent_of_the_geography_seed():
    """Same seed for geography and simulation must not correlate LA slope noise with deprivation."""
    import numpy as np

    from hierarchy.data.reference import synthetic_geography
    from hierarchy.data.simulate import log_gradient, simulate

    geo = synthetic_geography(60, seed=1, lsoa_per_la=20)
    _, truth = simulate(geo, seed=1)
    X = np.array([r["X"] for r in truth["las"]])
    beta = np.array([r["referral"]["beta"] for r in truth["las"]])
    ref = truth["stages"]["referral"]
    noise = beta - log_gradient(X, truth["la_deprivation"]["mean"], (ref["d0"], ref["d1"], ref["d2"]))
    assert abs(np.corrcoef(noise, X)[0, 1]) < 0.4


def test_realised_la_slopes_reproduce_the_published_curve(reference_geography):
    """The simulated population itself has the calibration targets: the true LA slopes regress
    exactly onto the typical-LA curve (their random deviations are orthogonal to it)."""
    import numpy as np

    from hierarchy.data.simulate import simulate

    _, truth = simulate(reference_geography, seed=3)
    xbar = truth["la_deprivation"]["mean"]
    X = np.clip([r["X"] for r in truth["las"]], *truth["la_deprivation"]["curve_clip"])
    ell = np.log(X / xbar)
    beta = np.array([r["referral"]["beta"] for r in truth["las"]])
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(ell), ell, ell**2]), beta, rcond=None)[0]
    stage = truth["stages"]["referral"]
    np.testing.assert_allclose(coef, [stage["d0"], stage["d1"], stage["d2"]], atol=1e-9)
    assert 0.08 < np.std(beta - coef[0] - coef[1] * ell - coef[2] * ell**2) < 0.12  # tau = 0.10 kept


# ------------------------------------------------------------------ published findings (issue 15)


@pytest.fixture(scope="module")
def findings_run(small_geography):
    from hierarchy.data import findings

    return findings.simulate_findings(small_geography, seed=4)


def test_findings_truths_equal_published_targets(findings_run):
    tables, truth = findings_run
    sc = truth["scenarios"]
    stages = sc["base"]["simulate_truth"]["stages"]
    assert [round(stages["referral"][k], 2) for k in ("gradient_at_mean", "gradient_10_less",
                                                      "gradient_10_more")] == [1.62, 2.33, 1.39]
    assert round(stages["cp_plan"]["gradient_at_mean"], 2) == 1.80
    eth = sc["ethnicity"]["gradient"]
    assert (round(eth["White"], 2), round(eth["Black"], 2)) == (1.91, 1.27)
    assert max(eth, key=eth.get) == "White" and min(eth, key=eth.get) == "Black"
    fac = sc["assessment"]["gradient"]
    assert (round(fac["neglect"], 2), round(fac["physical_disability"], 2)) == (1.84, 1.47)
    assert max(fac, key=fac.get) == "neglect" and min(fac, key=fac.get) == "physical_disability"
    cat = sc["plan_category"]["gradient"]
    assert (round(cat["neglect"], 2), round(cat["sexual_abuse"], 2)) == (1.98, 1.62)
    assert max(cat, key=cat.get) == "neglect" and min(cat, key=cat.get) == "sexual_abuse"
    assert round(sc["la_conditions"]["webb_ratio"], 2) == 5.00
    lo, hi = sc["la_conditions"]["gradient_low_dep_high_ineq"], sc["la_conditions"]["gradient_high_dep_low_ineq"]
    assert math.log(lo) / math.log(hi) == pytest.approx(5.0)
    assert sc["age_sex"]["sex_gradient_ratio"] == 1.0
    by_age = [sc["age_sex"]["gradient_by_age"][str(a)] for a in range(18)]
    assert all(np.diff(by_age) < 0)  # falling with each year of age
    assert round(sc["age_sex"]["gradient_at_mean_age"], 2) == 1.62
    assert sc["rural"]["rural_gradient_ratio"] > 1 and sc["rural"]["sparsity_gradient_per_sd"] > 1
    for col in ("re_referral", "repeat_cp_plan"):
        p = sc["base"]["provision"][col]
        assert p["la_ratio_at_mean_x"] > 1 and p["interaction_ratio"] > 1
        assert math.exp(p["g0"] + p["g1"] * math.log((truth["la_deprivation"]["mean"] - 0.1)
                                                     / truth["la_deprivation"]["mean"])) == pytest.approx(
            p["gradient_10_less"])
    json.dumps(truth, allow_nan=False)


def test_findings_tables_are_calibrated_and_consistent(findings_run, small_geography):
    from hierarchy.data import findings

    tables, truth = findings_run
    geo = small_geography
    kids = geo.lsoa.set_index("lsoa")["children"]
    for name in ("age_sex", "ethnicity"):  # rows split each neighbourhood's children exactly
        t = tables[name]
        assert (t.groupby("neighbourhood")["exposure"].sum().reindex(kids.index) == kids).all(), name
    for name in ("assessment", "plan_category"):  # every level's row carries the children
        t = tables[name]
        assert (t.groupby("neighbourhood")["exposure"].first().reindex(kids.index) == kids).all()
    assert set(tables["age_sex"]["age"]) == set(range(18))
    assert tables["age_sex"]["age_c"].min() == -8.5
    shares = truth["scenarios"]["ethnicity"]["national_share"]
    for g, s in findings.ETHNIC_SHARE.items():
        assert shares[g] == pytest.approx(s, abs=0.003)
    # LA totals: expected totals equal DfE's, so simulated totals agree within NB noise
    dfe = geo.dfe[geo.dfe["year"] == 2019].set_index("la")["referrals"]
    for name in ("age_sex", "ethnicity", "rural", "la_conditions"):
        sim_total = tables[name].groupby("la")["referral"].sum().reindex(dfe.index)
        assert sim_total.sum() == pytest.approx(dfe.sum(), rel=0.05), name
        assert np.corrcoef(sim_total, dfe)[0, 1] > 0.95, name
    base = tables["base"]
    assert (base["re_referral"] <= base["referral"]).all() and (base["repeat_cp_plan"] <= base["cp_plan"]).all()
    assert base["re_referral"].sum() / base["referral"].sum() == pytest.approx(0.226, abs=0.03)
    t = tables["la_conditions"]
    covs = ["la_inequality", "la_expenditure", "la_workforce_stability"]
    assert (t.groupby("la")[covs].nunique() == 1).all().all()
    assert set(tables["rural"]["rural"]) <= {0, 1}
    assert tables["rural"]["sparsity"].std(ddof=0) == pytest.approx(1.0)
    again, truth2 = findings.simulate_findings(geo, seed=4)
    assert all(again[k].equals(tables[k]) for k in tables) and truth2 == truth


def test_la_income_inequality_by_hand():
    from hierarchy.data.findings import la_income_inequality

    lsoa = pd.DataFrame({"la": ["A"] * 10 + ["B"],
                         "income_rate": [0.01, 0.02, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.30, 0.40, 0.2],
                         "children": [100, 300, 1, 1, 1, 1, 1, 1, 300, 100, 50]})
    got = la_income_inequality(lsoa)
    # A: fifths of 10 neighbourhoods = 2 each: (0.30*300 + 0.40*100)/400 over (0.01*100 + 0.02*300)/400
    assert got["A"] == pytest.approx((0.3 * 300 + 0.4 * 100) / (0.01 * 100 + 0.02 * 300))
    assert got["B"] == 1.0
    with pytest.raises(HierarchyError, match="income_rate"):
        la_income_inequality(lsoa.drop(columns="income_rate"))


def test_findings_unknown_scenario(small_geography):
    from hierarchy.data import findings

    with pytest.raises(HierarchyError, match="unknown scenario"):
        findings.simulate_findings(small_geography, scenarios=("ethnic",))


def test_real_years_each_la_year_calibrated(reference_geography):
    """13 years on the real geography: every LA-year's expected count is DfE's for that year (the nearest
    year for children looked after before 2021), LAs without a DfE figure are the imputed ones."""
    geo = reference_geography
    table, truth = sim.simulate_years(geo, sim.parse_years("2013-2025"), seed=4)
    assert len(table) == 32_844 * 13 and (table.groupby("year")["la"].nunique() == 151).all()
    dfe = geo.dfe.set_index(["la", "year"])
    for stage, col in sim.TARGET_COLUMN.items():
        for year, by in truth["stages"][stage]["by_year"].items():
            recs = [r for r in truth["la_years"] if r["year"] == int(year)]
            exp = np.array([r[stage]["expected"] for r in recs])
            np.testing.assert_allclose(exp, [r[stage]["dfe"] for r in recs], rtol=1e-9)
            published = dfe.loc[[(r["la"], by["target_year"]) for r in recs], col].to_numpy()
            imputed = np.array([r[stage]["imputed"] for r in recs])
            assert (imputed == np.isnan(published)).all(), (stage, year)
            np.testing.assert_allclose(exp[~imputed], published[~imputed], rtol=1e-9)
            assert by["target_year"] == (max(int(year), 2021) if stage == "looked_after" else int(year))
            var = sum(r[stage]["variance"] for r in recs)
            assert abs(by["simulated_total"] - by["expected_total"]) < 4.5 * math.sqrt(var), (stage, year)
    kids = table.groupby(["la", "year"])["exposure"].sum()
    pop = dfe.loc[kids.index, "pop_0_17"].to_numpy()
    assert (np.abs(kids.to_numpy() - pop) <= table.groupby(["la", "year"]).size().to_numpy() / 2).all()


def test_spatial_field_is_in_the_counts_and_the_truth(small_geography):
    """simulate(spatial=(sd, mix)): a BYM2 field on the generated geography's lattice (the graph a design
    of the table gets), Poisson counts given it, its values in the truth."""
    from hierarchy.data import geography

    table, truth = sim.simulate(small_geography, seed=4, spatial=(0.8, 0.7))
    plain, _ = sim.simulate(small_geography, seed=4)
    sp = truth["spatial"]
    field = pd.Series(sp["field"], index=sp["neighbourhood"])
    assert truth["family"] == "poisson" and sp["sd"] == 0.8 and sp["mix"] == 0.7
    assert len(field) == small_geography.lsoa.shape[0] and 0.5 < sp["realised_sd"] < 1.1
    graph = geography.graph_for(table["neighbourhood"].to_numpy(), groups=table["la"].to_numpy())
    assert "lattice" in graph.source and sp["graph"] == geography.describe(sim.spatial_graph(small_geography))
    # the model's law: the structured part sums to 0 in each LA, so each LA's field mean is the unstructured
    # part's alone (sd 0.8 * sqrt(0.3) / sqrt(m)); no MSOA effects beside the field
    la = small_geography.lsoa.set_index("lsoa")["la"].astype(str).reindex(field.index)
    la_means = field.groupby(la.to_numpy()).mean()
    sizes = la.value_counts().reindex(la_means.index)
    z = la_means / (0.8 * np.sqrt(0.3) / np.sqrt(sizes))
    assert np.sqrt(np.mean(z**2)) < 2.0, z.round(2).tolist()  # ~1 (unconstrained: several times that)
    assert truth["msoa"]["realised_sd"] == 0.0
    # the field moves each neighbourhood's count against the same seed without it (LA totals are recalibrated)
    ratio = np.log((table["referral"] + 0.5) / (plain["referral"] + 0.5))
    assert np.corrcoef(ratio, field[table["neighbourhood"]].to_numpy())[0, 1] > 0.3  # 0 without a field
    with pytest.raises(HierarchyError, match="spatial"):
        sim.simulate(small_geography, spatial=(0.3, 1.5))

"""Years in neighbourhood models (issue 16 part 4): the multi-year simulator, calibrated to each year's
DfE LA totals, and the per-year gradient estimands (hierarchy.results.years) with their recovery."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.cli import main
from hierarchy.data import reference
from hierarchy.data import simulate as sim
from hierarchy.errors import HierarchyError
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results import years

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/years_gradient_nb.toml"
PRIORS = ROOT / "priors/weakly_informative.toml"
YEARS = (2016, 2017, 2018, 2019)
LEVELS = {"10 points less": "gradient_10_less", "mean": "gradient_at_mean", "10 points more": "gradient_10_more"}


@pytest.fixture(scope="module")
def geo():
    """12 LAs of ~20 neighbourhoods (the generated geography and its stand-in DfE table, 2013-2025)."""
    return reference.synthetic_geography(12, seed=7, lsoa_per_la=20)


@pytest.fixture(scope="module")
def steep(geo):
    return sim.simulate_years(geo, YEARS, seed=11, gradient_trend=1.10)


# ---------------------------------------------------------------------------- the simulator


def test_parse_years():
    assert sim.parse_years("2013-2025") == tuple(range(2013, 2026))
    assert sim.parse_years("2019,2020") == (2019, 2020)
    assert sim.parse_years(" 2020, 2013-2015 ") == (2013, 2014, 2015, 2020)
    for bad, says in (("2015-2013", "write 2013-2015"), ("2019,2019", "more than once"),
                      ("2013-2015,2014", "2014 more than once"), ("19", "not a year"), ("", "not a year"),
                      ("2019;2020", "not a year")):
        with pytest.raises(HierarchyError, match=says):
            sim.parse_years(bad)


def test_each_la_year_is_calibrated_to_that_years_dfe_total(geo, steep):
    table, truth = steep
    assert truth["years"] == list(YEARS) and table["year"].dtype == np.int64
    assert sorted(table["year"].unique()) == list(YEARS)
    # every neighbourhood in every year, year-major
    assert (table.groupby("year")["neighbourhood"].nunique() == len(geo.lsoa)).all()
    assert not table.duplicated(["neighbourhood", "year"]).any()
    assert list(table.columns[:5]) == ["neighbourhood", "la", "msoa", "year", "deprivation"]
    dfe = geo.dfe.set_index(["la", "year"])
    recs = pd.DataFrame([{"la": r["la"], "year": r["year"], **{f"{s}_{k}": r[s][k] for s in sim.SIM_STAGES
                          for k in ("expected", "dfe", "simulated", "imputed")}} for r in truth["la_years"]])
    assert len(recs) == len(geo.la) * len(YEARS)
    sums = table.groupby(["la", "year"])[list(sim.SIM_STAGES)].sum()
    for s, col in sim.TARGET_COLUMN.items():
        if s == "looked_after":  # the stand-in table has children looked after from 2021 only
            assert {v["target_year"] for v in truth["stages"][s]["by_year"].values()} == {2021}
            continue
        target = dfe.loc[list(zip(recs["la"], recs["year"], strict=True)), col].to_numpy()
        assert not recs[f"{s}_imputed"].any()
        np.testing.assert_allclose(recs[f"{s}_expected"], target, rtol=1e-12)  # each LA-year hits DfE's count
        assert (recs[f"{s}_simulated"].to_numpy() ==
                sums.loc[list(zip(recs["la"], recs["year"], strict=True)), s].to_numpy()).all()
        for y in YEARS:
            by = truth["stages"][s]["by_year"][str(y)]
            assert by["target_year"] == y and by["expected_total"] == pytest.approx(by["dfe_total"], rel=1e-12)
            assert by["simulated_total"] == int(table.loc[table["year"] == y, s].sum())
    # simulated LA-year totals scatter around the DfE counts as the NB model says
    z = [(r["referral"]["simulated"] - r["referral"]["expected"]) / math.sqrt(r["referral"]["variance"])
         for r in truth["la_years"]]
    assert np.abs(z).max() < 4.5 and abs(np.mean(z)) < 0.5
    # exposures: the geography's children scaled to DfE's child population of each LA-year (rounded per row)
    kids = table.groupby(["la", "year"])["exposure"].sum()
    pop = dfe.loc[kids.index, "pop_0_17"].to_numpy()
    n_rows = table.groupby(["la", "year"]).size().to_numpy()
    assert (np.abs(kids.to_numpy() - pop) <= n_rows / 2).all()


def test_la_effects_persist_and_the_gradient_trend_is_known(geo, steep):
    table, truth = steep
    single = sim.simulate(geo, year=2019, seed=11)[1]  # the same LA draws for the same seed
    for s in sim.SIM_STAGES:
        beta = np.array([r[s]["beta"] for r in truth["las"]])
        np.testing.assert_allclose(beta, [r[s]["beta"] for r in single["las"]], rtol=1e-12)
        for y in YEARS:
            by = truth["stages"][s]["by_year"][str(y)]
            for key in LEVELS.values():
                assert by[key] == pytest.approx(single["stages"][s][key] * 1.10 ** (y - 2019), rel=1e-12)
    assert truth["gradient_trend"]["ratio_per_year"] == 1.10 and truth["gradient_trend"]["anchor_year"] == 2019
    assert truth["stages"]["referral"]["by_year"]["2019"]["gradient_at_mean"] == pytest.approx(1.62, abs=0.005)
    json.dumps(truth, allow_nan=False)


def test_year_and_la_year_effects_decompose_the_calibrated_intercepts(steep):
    _, truth = steep
    for s in ("referral", "s47"):
        st = truth["stages"][s]
        alpha = np.array([[r[s]["alpha"] for r in truth["la_years"] if r["year"] == y] for y in YEARS]).T
        u = np.array([[r[s]["la_year_effect"] for r in truth["la_years"] if r["year"] == y] for y in YEARS]).T
        a = np.array([r[s]["intercept"] for r in truth["las"]])
        y_eff = np.array([st["year_effect"][str(y)] for y in YEARS])
        rebuilt = alpha.mean() + a[:, None] + (y_eff - y_eff.mean())[None, :] + u
        np.testing.assert_allclose(rebuilt, alpha, atol=1e-12)
        np.testing.assert_allclose(u.sum(axis=0), 0, atol=1e-10)
        np.testing.assert_allclose(u.sum(axis=1), 0, atol=1e-10)
        assert st["year_effect"]["2016"] == 0.0
        assert st["year_sd"] == pytest.approx(np.std(y_eff, ddof=1))
        assert st["la_year_sd"] == pytest.approx(math.sqrt((u**2).sum() / (11 * 3)))
        assert 0.01 < st["la_year_sd"] < 0.2  # the stand-in DfE table's LA x year noise (log-sd 0.05)


def test_bad_years_name_the_fix(geo):
    with pytest.raises(HierarchyError, match=r"no DfE LA figures for 2011, 2012 .*choose years within 2013-2025"):
        sim.simulate_years(geo, [2011, 2012, 2013])
    assert sim.simulate_years(geo, "2019-2020", seed=3)[1]["years"] == [2019, 2020]
    with pytest.raises(HierarchyError, match="whole years"):
        sim.simulate_years(geo, 2019)
    with pytest.raises(HierarchyError, match="at least one"):
        sim.simulate_years(geo, [])
    with pytest.raises(HierarchyError, match="more than once"):
        sim.simulate_years(geo, [2019, 2019])
    with pytest.raises(HierarchyError, match="ratio per year"):
        sim.simulate_years(geo, [2019], gradient_trend=0.0)
    with pytest.raises(HierarchyError, match="strata"):
        sim.simulate_years(geo, [2019], strata=("year",))


def test_strata_rows_by_year(geo):
    table, truth = sim.simulate_years(geo, (2019, 2020), seed=1, strata=("age",))
    assert not table.duplicated(["neighbourhood", "age_band", "year"]).any()
    assert truth["strata"] == ["age"] and (table["exposure"] > 0).all()


def test_cli_writes_several_years(tmp_path):
    out = tmp_path / "years.parquet"
    assert main(["simulate", "--years", "2019,2020", "--synthetic", "--n-la", "4", "--seed", "2",
                 "--gradient-trend", "1.05", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert sorted(table["year"].unique()) == [2019, 2020] and truth["years"] == [2019, 2020]
    assert truth["gradient_trend"]["ratio_per_year"] == 1.05
    assert main(["simulate", "--years", "2013-2015", "--synthetic", "--n-la", "4", "--out",
                 str(tmp_path / "r.parquet")]) == 0
    assert sorted(pd.read_parquet(tmp_path / "r.parquet")["year"].unique()) == [2013, 2014, 2015]


@pytest.mark.parametrize(("args", "says"), [
    (["--years", "2030-2031"], "no DfE LA figures for 2030, 2031"),
    (["--years", "2015-2013"], "write 2013-2015"),
    (["--gradient-trend", "1.1"], "give the years with --years"),
])
def test_cli_bad_years(args, says, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    assert main(["simulate", "--synthetic", "--n-la", "4", "--out", str(out), *args]) == 2
    assert says in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------- the estimands


def _fake_fit(spec: ModelSpec, table: pd.DataFrame, seed: int = 0):
    """A fit's InferenceData holding random values (2 chains x 50 draws) of the parameters the per-year
    estimands read, not a posterior: the arithmetic is what is checked."""
    from hierarchy.inference.sampling import Draws
    from hierarchy.results.fitfile import build_idata

    design = build_design(table, spec)
    rng = np.random.default_rng(seed)
    post = {k: rng.normal(0.3, 0.2, (2, 50)) for k in ("intercept", "gradient", "la_deprivation", "cross_level")}
    post["la_coef"] = rng.normal(0.0, 0.3, (2, 50, design.n_la, 2))
    if spec.strata:
        k = len(design.stratum_names) - 1
        post |= {v: rng.normal(0.0, 0.2, (2, 50, k))
                 for v in ("stratum_intercept_offset", "stratum_gradient_offset")}
    for g, levels, slope in zip(design.group_names, design.group_levels, design.group_slope, strict=True):
        post[f"{g}_raw"] = rng.normal(0.0, 1.0, (2, 50, len(levels), 2) if slope else (2, 50, len(levels)))
        post[f"{g}_sd"] = rng.gamma(5.0, 0.02, (2, 50, 2) if slope else (2, 50))
    return build_idata(Draws(posterior=post, settings={"sampler": "numpyro"}), spec, load_priors(PRIORS), design,
                       data_hash="random values", diagnostics={"status": "random values"})


@pytest.fixture(scope="module")
def fake(steep):
    return _fake_fit(load_spec(MODEL), steep[0])


def test_year_gradients_are_the_predictors_ratio(fake):
    """At any parameter values: each year's gradient is exp(gradient + cross_level z + that year's offset)
    per 10 points, by hand; the ratio to the first year and P(steeper) follow."""
    idata = fake
    g = years.year_gradients(idata)
    assert list(g["year"].to_numpy()) == [str(y) for y in YEARS]
    assert g.dims == ("chain", "draw", "year", "la_level")
    post = idata.posterior
    off = np.concatenate([np.zeros((2, 50, 1)), post["stratum_gradient_offset"].to_numpy()], axis=-1)
    for level in LEVELS:
        z = float(np.log(g["la_deprivation"].sel(la_level=level) / idata.constant_data["la_deprivation"].mean()))
        log_g = post["gradient"].to_numpy()[..., None] + post["cross_level"].to_numpy()[..., None] * z + off
        np.testing.assert_allclose(g.sel(la_level=level).to_numpy(), np.exp(log_g), rtol=1e-5)
    t = years.year_gradient_table(idata)
    assert len(t) == len(YEARS) * 3 and t.loc[t["year"] == "2016", "p_steeper_than_first"].isna().all()
    last = t[(t["year"] == "2019") & (t["la_level"] == "mean")].iloc[0]
    assert last["p_steeper_than_first"] == pytest.approx((off[..., 3] > 0).mean())
    assert last["ratio_to_first"] == pytest.approx(np.exp(off[..., 3]).mean())
    assert last["lower"] < last["mean"] < last["upper"]
    # the trend: least squares of the log gradient on the year, draw by draw
    tr = years.gradient_trend(idata).to_numpy()
    tc = np.array(YEARS) - np.mean(YEARS)
    np.testing.assert_allclose(np.log(tr), (off * tc).sum(-1) / (tc**2).sum(), rtol=1e-5, atol=1e-7)
    row = years.trend_table(idata).iloc[0]
    assert row["p_steepening"] == pytest.approx((tr > 1).mean())


def test_year_gradients_of_pooled_year_gradients(steep):
    """The other form, (1 + w | year): each year's gradient is the mean gradient plus the year's deviation."""
    spec = ModelSpec.from_dict({"name": "pooled_years", "family": "negative_binomial",
                                "formula": "referral ~ w * z + (1 + w | la) + (1 + w | year) "
                                           "+ offset(log(exposure))",
                                "la_deprivation": {"measure": "mean", "transform": "log"}})
    idata = _fake_fit(spec, steep[0], seed=1)
    g = years.year_gradients(idata).sel(la_level="mean")
    post = idata.posterior
    dev = (post["year_raw"].sel(year_coef="gradient") * post["year_sd"].sel(year_coef="gradient")).to_numpy()
    np.testing.assert_allclose(g.to_numpy(), np.exp(post["gradient"].to_numpy()[..., None] + dev), rtol=1e-5)


def test_a_fit_without_years_is_refused(fake):
    """The fit of another model (its provenance says gradient_nb) has no per-year gradient."""
    idata = fake.copy()
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    prov["model_spec"] = load_spec(ROOT / "models/gradient_nb.toml").to_dict()
    idata.posterior.attrs["hierarchy"] = json.dumps(prov)
    with pytest.raises(HierarchyError, match=r"no gradient per year: fit a model with C\(year\) \+ w:C\(year\)"):
        years.year_gradients(idata)


# ---------------------------------------------------------------------------- recovery


def _fit(table: pd.DataFrame, seed: int):
    from hierarchy.inference.sampling import fit
    from hierarchy.results.fitfile import build_idata

    spec, pset = load_spec(MODEL), load_priors(PRIORS)
    design = build_design(table, spec)
    draws = fit(spec, pset, design, chains=2, tune=400, draws=400, seed=seed)
    return build_idata(draws, spec, pset, design, data_hash="test")


def _within_band(draws: np.ndarray, truth: np.ndarray, prob: float = 0.95) -> np.ndarray:
    """Whether each truth lies in the simultaneous ``prob`` band of ``draws`` (sample, k): mean +- c sd
    with c the ``prob`` quantile over draws of the largest standardised deviation."""
    m, s = draws.mean(0), draws.std(0)
    c = np.quantile(np.abs((draws - m) / s).max(axis=1), prob)
    return np.abs(truth - m) <= c * s


@pytest.mark.slow
def test_recovers_a_steepening_gradient_and_the_year_variation(steep):
    table, truth = steep
    idata = _fit(table, seed=1)
    ref = truth["stages"]["referral"]
    g = years.year_gradients(idata)
    est = np.log(g.stack(sample=("chain", "draw")).transpose("sample", "year", "la_level").to_numpy())
    true = np.log([[ref["by_year"][str(y)][LEVELS[lv]] for lv in g["la_level"].to_numpy()] for y in YEARS])
    post = idata.posterior.stack(sample=("chain", "draw"))
    offsets = post["stratum_intercept_offset"].transpose("sample", ...).to_numpy()
    year_eff = np.array([ref["year_effect"][str(y)] for y in YEARS[1:]])
    covered = _within_band(np.concatenate([est.reshape(len(offsets), -1), offsets], axis=1),
                           np.concatenate([true.ravel(), year_eff]))
    assert covered.all(), covered
    # the SDs: of the year effects (realised, over the fitted years) and of the LA x year effects
    year_sd = np.concatenate([np.zeros((len(offsets), 1)), offsets], axis=1).std(axis=1, ddof=1)
    for draws_, value in ((year_sd, ref["year_sd"]), (post["la:year_sd"].to_numpy(), ref["la_year_sd"])):
        lo, hi = np.quantile(draws_, [0.005, 0.995])
        assert lo < value < hi
    assert np.quantile(post["la:year_sd"].to_numpy(), 0.95) < 0.2  # the data bound the LA x year variation
    # steeper: every later year against the first, and the trend
    table_ = years.year_gradient_table(idata)
    assert (table_.loc[table_["year"] == "2019", "p_steeper_than_first"] > 0.99).all()
    trend = years.trend_table(idata).iloc[0]
    assert trend["p_steepening"] > 0.99 and trend["lower"] < 1.10 < trend["upper"]


@pytest.mark.slow
def test_a_flat_gradient_is_not_called_steeper(geo):
    table, truth = sim.simulate_years(geo, YEARS, seed=12)
    assert truth["gradient_trend"]["ratio_per_year"] == 1.0
    trend = years.trend_table(_fit(table, seed=2)).iloc[0]
    assert trend["p_steepening"] < 0.95 and trend["lower"] < 1.0 < trend["upper"]


def test_validate_names_the_year_column_a_multi_year_table_needs(steep):
    """A neighbourhood x year table validated without ``--strata year`` is refused with the fix that
    fits it (name year as a stratum), and passes with it."""
    from hierarchy.data.table import validate

    table = steep[0]
    text = validate(table, source="years.csv").format()
    assert "duplicated neighbourhood" in text and "hierarchy validate --strata year" in text
    assert validate(table, source="years.csv", strata=("year",)).ok
    once = table.drop_duplicates("neighbourhood")
    dup = pd.concat([once, once.iloc[:3]])  # true duplicates: no column tells them apart
    assert "aggregate or remove the duplicates" in validate(dup, source="d.csv").format()


def test_the_report_carries_the_years_table_sentences_and_figure(fake):
    """A fit with a gradient per year gets ``year_gradients`` / ``year_trend`` tables, two sentences
    whose numbers are the tables', and a figure; a fit without one gets none of them."""
    import re

    from hierarchy.reporting import figures, report

    tables = report.year_tables(fake, prob=0.9)
    assert set(tables) == {"year_gradients", "year_trend"}
    yg, tr = tables["year_gradients"], tables["year_trend"].iloc[0]
    sentences = [f.text for f in report._year_findings(tables, prob=0.9)]
    assert len(sentences) == 2 and sentences[0].startswith("In 2019,")
    last = yg[(yg["year"] == "2019") & (yg["la_level"] == "mean")].iloc[0]
    assert f"{last['p_steeper_than_first']:.2f}" in sentences[0]
    assert f"{tr['p_steepening']:.2f}" in sentences[1]
    m = re.search(r"factor of ([\d.]+) \(90% interval ([\d.]+) to ([\d.]+)\)", sentences[1])
    assert m and [float(v) for v in m.groups()] == pytest.approx([tr["mean"], tr["lower"], tr["upper"]], abs=0.01)
    fig, data = figures.plot_year_gradients(yg)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_xticklabels()) == len(YEARS)
    idata = fake.copy()
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    prov["model_spec"] = load_spec(ROOT / "models/gradient_nb.toml").to_dict()
    idata.posterior.attrs["hierarchy"] = json.dumps(prov)
    assert report.year_tables(idata, prob=0.9) == {}

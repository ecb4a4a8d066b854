"""Estimands on a fit to simulated data recover the simulator's truth.

One small fit (60 synthetic LAs of ~30 neighbourhoods, 2 chains x 400 + 400) is made once per
session by the ``shared_fit`` fixture (conftest.py) and cached on disk; ``test_report.py``,
``test_disclosure.py`` and ``test_checking.py`` reuse it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import z_of
from hierarchy.results import estimands
from hierarchy.results.fitfile import fit_spec, provenance
from tests.helpers import SHARED_FIT

ROOT = Path(__file__).resolve().parents[2]
pytestmark = SHARED_FIT


@pytest.fixture(scope="module")
def shared(shared_fit):
    return shared_fit


@pytest.fixture(scope="module")
def idata(shared):
    return estimands.as_idata(shared["fit"])


def test_headline_gradients_contain_the_truth(idata, shared):
    """95% interval at mean LA deprivation; 99% at -/+10 points, which extrapolate a cross-level
    slope estimated from only 60 LAs' noisy slopes (the national fit covers all three at 90%)."""
    table = estimands.headline_table(idata, prob=0.95)
    wide = estimands.headline_table(idata, prob=0.99)
    stage = shared["truth"]["stages"]["referral"]
    assert list(table["la_level"]) == ["10 points less", "mean", "10 points more"]
    assert (table["scale"] == "per 10 points").all()
    for (_, row), (_, row99) in zip(table.iterrows(), wide.iterrows(), strict=True):
        true = stage[estimands.TRUTH_KEYS[row["la_level"]]]
        lo, hi = (row["lower"], row["upper"]) if row["la_level"] == "mean" else (row99["lower"], row99["upper"])
        assert lo <= true <= hi, (row.to_dict(), true)
        assert row["upper"] - row["lower"] < 0.8 * true  # informative, not just wide
    # published scores: 2.33 > 1.62 > 1.39, and the fit orders them the same way
    assert table["mean"].is_monotonic_decreasing


def test_la_gradients_cover_the_truth_for_most_las(idata, shared):
    table = estimands.summarise(estimands.la_gradients(idata), prob=0.9)
    true = {r["la"]: r["referral"]["gradient"] for r in shared["truth"]["las"]}
    t = table["la"].map(true).to_numpy()
    covered = (table["lower"] <= t) & (t <= table["upper"])
    assert len(table) == 60 and covered.mean() >= 0.8, covered.mean()
    assert np.corrcoef(table["mean"], t)[0, 1] > 0.5


def test_gradients_are_prediction_differences(idata):
    """exp(d log rate / d w) equals the coefficient algebra for this (linear-in-w) model."""
    post = idata.posterior
    spec, _ = fit_spec(idata)
    head = estimands.headline_gradients(idata)
    z = estimands.la_levels(idata)
    algebra = np.exp(post["gradient"] + post["cross_level"] * z)
    xr.testing.assert_allclose(head.drop_vars("la_deprivation"), algebra.drop_vars("la_deprivation"))
    assert np.allclose(z.values, z_of(z["la_deprivation"].values, provenance(idata)["design"]["X_mean"],
                                      spec))


def _fixed_coefficient_fit(model: str, coefficients: dict[str, float], design: dict[str, float]):
    """An InferenceData whose every draw holds ``coefficients``, with the provenance of ``model``."""
    import arviz as az

    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / f"models/{model}.toml")
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    idata = az.from_dict(posterior={k: np.full((2, 3), v) for k, v in coefficients.items()})
    idata.posterior.attrs["hierarchy"] = json.dumps({"model_spec": spec.to_dict(), "priors": priors.to_dict(),
                                                     "design": design})
    return idata


def test_inverse_intervention_compares_the_same_neighbourhood():
    """Worked by hand: log LA deprivation, within/between centring, mean LA deprivation 0.15, so the
    two LAs are at X = 0.05 and 0.25 (z = log(1/3) and log(5/3)) and a neighbourhood at x sits at
    w = (x - 0.05)/0.1 in the first and (x - 0.25)/0.1 in the second (always 2 apart). With
    gradient 0.5, la_deprivation 0.2, cross_level -0.3, the log ratio is
    0.5 * 2 + 0.2 * log(1/5) - 0.3 * (log(1/3) * w_less - log(5/3) * w_more):
    x = 0.05: w = 0, -2   -> 1 - 0.32189 - 0.30650 = 0.37162, ratio 1.45008
    x = 0.20: w = 1.5, -0.5 -> 1 - 0.32189 + 0.41775 = 1.09586, ratio 2.99177
    x = 0.40: w = 3.5, 1.5  -> 1 - 0.32189 + 1.38341 = 2.06153, ratio 7.85796
    (the intercept cancels; an implementation that held w fixed between the LAs would give
    exp(0.2 log(1/5) - 0.3 w log(1/5)) instead)."""
    idata = _fixed_coefficient_fit("inverse_intervention_nb_log",
                                   {"intercept": -3.0, "gradient": 0.5, "la_deprivation": 0.2,
                                    "cross_level": -0.3},
                                   {"X_mean": 0.15, "x_mean": 0.14})
    ratio = estimands.inverse_intervention(idata, np.array([0.05, 0.2, 0.4]))
    assert ratio.dims == ("chain", "draw", "x")
    np.testing.assert_allclose(ratio.isel(chain=1, draw=2).to_numpy(), [1.45008, 2.99177, 7.85796], rtol=1e-5)
    assert "10 points less / 10 points more" in ratio.attrs["scale"]


def test_truth_coverage_flags_a_wrong_truth(idata, shared):
    """The report's ``covered`` column is True for the simulator's truth and False for a truth
    moved far outside the intervals (so a column that were always True would fail here)."""
    import copy

    from hierarchy.reporting import report

    def headline(truth):
        est = report.estimand_tables(idata, truth=truth, n_draws=10)["estimands"]
        return est[(est["estimand"] == "gradient_score") & (est["scale"] == "per 10 points")]

    right = headline(shared["truth"])
    assert len(right) == 3 and right.loc[right["la_level"] == "mean", "covered"].all(), right
    wrong = copy.deepcopy(shared["truth"])
    stage = wrong["stages"]["referral"]
    for key in estimands.TRUTH_KEYS.values():
        stage[key] = stage[key] * 1.5
    moved = headline(wrong)
    assert np.allclose(moved["truth"], 1.5 * right["truth"].to_numpy())
    assert not moved["covered"].any(), moved[["la_level", "lower", "upper", "truth", "covered"]]


def test_every_estimand_is_labelled_with_its_scale(idata):
    table = estimands.estimands_table(idata)
    assert table["scale"].str.len().gt(0).all()
    scales = set(table["scale"])
    assert "per 10 points" in scales
    assert any(s.startswith("per SD (1 SD = ") for s in scales)
    sd = estimands.deprivation_sd(idata)
    per10 = table[table["scale"] == "per 10 points"]["mean"].to_numpy()
    persd = table[table["scale"].str.startswith("per SD")]["mean"].to_numpy()
    assert np.allclose(np.log(persd), np.log(per10) * sd / 0.1, rtol=0.05)
    share = table[table["estimand"] == "between_la_share"].iloc[0]
    assert 0 < share["lower"] < share["upper"] < 1
    assert "between LAs" in share["description"]
    with pytest.raises(HierarchyError):
        estimands.per_sd(estimands.per_sd(estimands.headline_gradients(idata), sd), sd)
    for da in (estimands.la_gradients(idata), estimands.typical_rates(idata),
               estimands.inverse_intervention(idata)):
        assert da.attrs["scale"] and estimands.summarise(da)["scale"].iloc[0] == da.attrs["scale"]


def test_interval_is_equal_tailed_with_configurable_prob():
    rng = np.random.default_rng(0)
    da = xr.DataArray(rng.normal(2.0, 1.0, (4, 5000)), dims=("chain", "draw"), name="t",
                      attrs={"scale": "unit"})
    s = estimands.summarise(da, prob=0.8)
    assert s.loc[0, "mean"] == pytest.approx(2.0, abs=0.03)
    assert s.loc[0, "lower"] == pytest.approx(2.0 - 1.2816, abs=0.05)
    assert s.loc[0, "upper"] == pytest.approx(2.0 + 1.2816, abs=0.05)
    assert list(s.columns) == ["estimand", "scale", "mean", "sd", "lower", "upper", "prob"]
    with pytest.raises(HierarchyError):
        estimands.interval(da, prob=1.0)


def test_deciles_match_the_simulator_and_the_data(idata, shared):
    truth = shared["truth"]["deciles"]
    yrep = estimands.posterior_predictive(idata, n_draws=50)
    assert yrep.dims == ("sample", "neighbourhood") and yrep.sizes["sample"] == 50
    obs_fit = estimands.observed_counts(idata)
    obs_data = estimands.observed_counts(idata, shared["data"])
    assert np.array_equal(obs_fit, obs_data)
    table = estimands.decile_table(idata, yrep, obs_fit, prob=0.9)
    assert list(table["decile"]) == list(range(1, 11))
    assert np.allclose(table["deprivation_min"], truth["x_min"])
    assert np.allclose(table["deprivation_max"], truth["x_max"])
    assert table["neighbourhoods"].max() - table["neighbourhoods"].min() <= 1
    assert np.allclose(table["children"], truth["children"])
    assert (table["scale"] == "per 10,000 children").all()
    # predictions track the expected rates; observed rates come from rounded counts
    assert np.allclose(table["predicted_mean"], truth["referral"]["expected"], rtol=0.15)
    assert (table["observed_count"] % 5 == 0).all()
    assert np.allclose(table["observed_rate"], 1e4 * table["observed_count"] / table["children"])


def test_subgroup_gradients_only_for_fits_with_stages_or_strata(idata):
    """A single-stage, unstratified fit has no subgroup section (stacked and stratified fits are
    checked against the truth in test_stages.py)."""
    assert estimands.subgroup_gradients(idata) is None and estimands.escalation(idata) is None
    assert "subgroup_gradient_score" not in set(estimands.estimands_table(idata)["estimand"])

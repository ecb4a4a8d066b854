"""Between-LA heterogeneity measures and ROPE statements (issue 32 items 1 and 4).

Each measure is checked against a hand computation on synthetic draws laid out as a saved fit
(the variables and coordinates :func:`hierarchy.results.fitfile.build_idata` writes), and the
count-scale VPC formula against a Monte Carlo variance decomposition of simulated counts with
known LA and within-LA variances. One test reads the session's shared fit.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results import estimands
from hierarchy.results import heterogeneity as het
from tests.helpers import SHARED_FIT

ROOT = Path(__file__).resolve().parents[2]
C, D = 2, 60
PHI_75 = 0.6744897501960817  # qnorm(0.75)


def _spec(model: str, **la) -> ModelSpec:
    spec = load_spec(ROOT / f"models/{model}.toml")
    return replace(spec, la=replace(spec.la, **la)) if la else spec


def _draws(rng, lo: float, hi: float, *shape: int) -> np.ndarray:
    return rng.uniform(lo, hi, (C, D, *shape))


def fake_fit(spec: ModelSpec, posterior: dict, *, n_la: int = 20, n_per: int = 15, seed: int = 0,
             data_hash: str = "d0", strata: tuple[str, ...] = ("all",)):
    """An InferenceData laid out as a saved fit of ``spec``: ``posterior`` (name -> (dims, values)
    after ``chain, draw``), neighbourhood rows ``n_la x n_per`` (x strata, x stages) with public
    children as exposure."""
    rng = np.random.default_rng(seed)
    las = [f"E{j:02d}" for j in range(n_la)]
    codes = [f"N{j:02d}{i:02d}" for j in range(n_la) for i in range(n_per)]
    x = rng.beta(2, 12, len(codes))
    X = np.array([x[j * n_per:(j + 1) * n_per].mean() for j in range(n_la)])
    rows = [(c, s, st) for st in spec.stages for c in codes for s in strata]
    ids = [f"{c}|{s}" if len(strata) > 1 else c for c, s, _ in rows]
    ids = [f"{i}|{st}" if spec.stacked else i for i, (_, _, st) in zip(ids, rows, strict=True)]
    pos = {c: k for k, c in enumerate(codes)}
    cd = xr.Dataset({"deprivation": ("neighbourhood", [x[pos[c]] for c, _, _ in rows]),
                     "exposure": ("neighbourhood", rng.integers(200, 500, len(rows)).astype(float)),
                     "la_of": ("neighbourhood", [las[pos[c] // n_per] for c, _, _ in rows]),
                     "stage": ("neighbourhood", [st for _, _, st in rows]),
                     "stratum": ("neighbourhood", [s for _, s, _ in rows]),
                     "la_deprivation": ("la", X)}, coords={"neighbourhood": ids, "la": las})
    coords = {"la": las, "coef": list(spec.coefs), "coef_": list(spec.coefs)}
    if spec.stacked:
        coords |= {"stage": list(spec.stages), "later_stage": list(spec.stages[1:]),
                   "la_effect": [f"{s}:{k}" for s in spec.stages for k in spec.coefs]}
        coords["la_effect_"] = coords["la_effect"]
    post = xr.Dataset({k: (("chain", "draw", *dims), v) for k, (dims, v) in posterior.items()},
                      coords={"chain": range(C), "draw": range(D)})
    post = post.assign_coords({k: v for k, v in coords.items() if k in post.dims})
    post.attrs["hierarchy"] = json.dumps({
        "model_spec": spec.to_dict(), "priors": load_priors(ROOT / "priors/weakly_informative.toml").to_dict(),
        "design": {"X_mean": float(X.mean()), "x_mean": float(x.mean())}, "data_hash": data_hash})
    return az.InferenceData(posterior=post, constant_data=cd)


def _corr(rho: np.ndarray) -> np.ndarray:
    out = np.ones((C, D, 2, 2))
    out[..., 0, 1] = out[..., 1, 0] = rho
    return out


def gradient_fit(*, seed: int = 0, la_sd=(0.2, 0.4, 0.05, 0.15), rho=(-0.5, 0.5), model: str = "gradient_nb",
                 n_la: int = 20, extra: dict | None = None, **kwargs):
    """A random intercept and slope fit with varying LA SDs and correlation, and its draws."""
    rng = np.random.default_rng(seed)
    sd = np.stack([_draws(rng, *la_sd[:2]), _draws(rng, *la_sd[2:])], -1)
    r = _draws(rng, *rho)
    p = {"intercept": ((), -3.0 + 0.05 * rng.standard_normal((C, D))),
         "gradient": ((), 0.45 + 0.02 * rng.standard_normal((C, D))),
         "la_sd": (("coef",), sd), "la_corr": (("coef", "coef_"), _corr(r)),
         "la_coef": (("la", "coef"), rng.normal([-3.0, 0.45], [0.3, 0.1], (C, D, n_la, 2))),
         "dispersion": ((), _draws(rng, 20.0, 40.0))}
    p |= extra or {}
    spec = _spec(model)
    if spec.family != "negative_binomial":
        p.pop("dispersion")
    return fake_fit(spec, p, n_la=n_la, seed=seed, **kwargs), {k: v for k, (_, v) in p.items()}


# ---------------------------------------------------------------------------- arrays


def test_mrr_is_the_median_ratio_of_two_random_las():
    """exp(sqrt(2 s^2) 0.6745): s = 0.3 gives exp(0.28616) = 1.33131, and the median over pairs of
    LAs of the higher rate over the lower is that number (Monte Carlo, 400k pairs)."""
    assert het.mrr_from_variance(0.09) == pytest.approx(1.33131, abs=1e-5)
    assert het.mrr_from_variance(0.0) == 1.0
    u = np.random.default_rng(3).normal(0, 0.3, (2, 400_000))
    assert np.median(np.exp(np.abs(u[0] - u[1]))) == pytest.approx(1.33131, rel=0.005)


@pytest.mark.parametrize(("var_la", "var_within", "phi", "mu"),
                         [(0.5, 0.2, 5.0, 30.0), (0.25, 0.0, np.inf, 5.0), (0.1, 0.0, 10.0, 80.0)])
def test_vpc_formula_matches_a_simulated_variance_decomposition(var_la, var_within, phi, mu):
    """Counts with known LA variance, within-LA lognormal variance and NB dispersion (marginal mean
    ``mu``): the one-way ANOVA share between LAs (20,000 LAs x 20 units) matches the formula to
    0.03 (about 4 Monte Carlo SEs), and the two usual slips (the NB term without e^(total
    variance); the within-LA lognormal variance left out) miss it where they differ."""
    rng = np.random.default_rng(11)
    n_la, n = 20_000, 20
    eta = np.log(mu) - (var_la + var_within) / 2
    m = np.exp(eta + rng.normal(0, np.sqrt(var_la), (n_la, 1)) + rng.normal(0, np.sqrt(var_within), (n_la, n)))
    y = rng.poisson(rng.gamma(phi, m / phi) if np.isfinite(phi) else m)
    within = y.var(axis=1, ddof=1).mean()
    between = y.mean(axis=1).var(ddof=1) - within / n
    empirical = between / (between + within)
    formula = het.vpc_from_components(var_la, mu, dispersion=phi, var_within=var_within)
    assert empirical == pytest.approx(formula, abs=0.03), (empirical, formula)
    slips = [mu * np.expm1(var_la) / (mu * np.expm1(var_la + var_within) + 1 + mu / phi),
             het.vpc_from_components(var_la, mu, dispersion=phi)]
    for slip in slips:
        if abs(slip - formula) > 0.07:
            assert abs(empirical - slip) > 0.04, (empirical, slip)


def test_pcv_and_rope_probabilities_by_hand():
    assert het.pcv_from_variances(np.array([0.1, 0.2]), np.array([0.05, 0.3])) == pytest.approx([0.5, -0.5])
    p = het.rope_probabilities([0.9, 0.95, 1.0, 1.05, 1.2], (0.95, 1.05))
    assert (p["p_below"], p["p_inside"], p["p_above"]) == (0.2, 0.6, 0.2)  # the region is closed


@pytest.mark.parametrize("bad", ["1.05", "1.05,0.95", "a,b", "0.9,1,1.1", "nan,1"])
def test_a_bad_rope_says_how_to_write_one(bad):
    with pytest.raises(HierarchyError, match="0.95,1.05"):
        het.parse_rope(bad)


def test_parse_rope():
    assert het.parse_rope(" 0.95, 1.05") == (0.95, 1.05)


# ---------------------------------------------------------------------------- a fit's LA level


def test_la_variance_at_w_and_mrr_from_the_la_sd():
    """sigma^2(w) = s_a^2 + 2 w rho s_a s_b + w^2 s_b^2, per draw; the MRR uses it at w = 0."""
    idata, d = gradient_fit()
    sa, sb, rho = d["la_sd"][..., 0], d["la_sd"][..., 1], d["la_corr"][..., 0, 1]
    for w in (0.0, 2.0, -1.5):
        got = het.la_variance(idata, w=w)
        assert got.dims == ("chain", "draw")
        np.testing.assert_allclose(got, sa**2 + 2 * w * rho * sa * sb + w**2 * sb**2, rtol=1e-12)
    mrr = het.median_rate_ratio(idata)
    np.testing.assert_allclose(mrr, np.exp(np.sqrt(2 * sa**2) * PHI_75), rtol=1e-12)
    assert mrr.attrs["definition"].startswith("Median rate ratio")


def test_la_variance_of_an_intercept_only_fit():
    rng = np.random.default_rng(4)
    sd = _draws(rng, 0.1, 0.3, 1)
    spec = _spec("gradient_nb", random_gradient=False)
    idata = fake_fit(spec, {"intercept": ((), np.full((C, D), -3.0)), "la_sd": (("coef",), sd),
                            "dispersion": ((), np.full((C, D), 30.0))})
    np.testing.assert_allclose(het.la_variance(idata, w=3.0), sd[..., 0] ** 2)
    assert het.la_gradient_spread(idata) is None


def test_vpc_at_stated_rates_by_hand():
    """NB: mu = rate x children / 10,000 at w = 0; three levels add msoa_sd^2 within LAs."""
    rng = np.random.default_rng(5)
    msoa = _draws(rng, 0.1, 0.2)
    for model, extra in (("gradient_nb", {}), ("three_level_nb", {"msoa_sd": ((), msoa)}),
                         ("gradient_poisson", {})):
        idata, d = gradient_fit(model=model, extra=extra)
        got = het.vpc(idata, rates={"England 2019": 553.7, "low": 100.0}, exposure=366)
        assert got.dims == ("chain", "draw", "reference")
        assert list(got["reference"].values) == ["England 2019", "low"]
        np.testing.assert_allclose(got["reference_rate"], [553.7, 100.0])
        sa2, tau2 = d["la_sd"][..., 0] ** 2, d.get("msoa_sd", 0.0) ** 2
        phi = d.get("dispersion", np.inf)
        mu = 553.7 * 366 / 1e4
        hand = mu * np.expm1(sa2) / (mu * np.expm1(sa2 + tau2) + 1 + mu * np.exp(sa2 + tau2) / phi)
        np.testing.assert_allclose(got.sel(reference="England 2019"), hand, rtol=1e-10)
    assert float(got.sel(reference="England 2019").mean()) > float(got.sel(reference="low").mean())


def test_vpc_at_the_models_own_decile_rates():
    """Default references: w = 0 and each national decile's median deprivation in a typical LA at mean
    LA deprivation, with the LA variance at that decile's w and the model's marginal rate."""
    idata, d = gradient_fit()
    got = het.vpc(idata)
    assert list(got["reference"].values) == ["w = 0", *[f"decile {k}" for k in range(1, 11)]]
    assert np.all(np.diff(got["deprivation"].values[1:]) > 0)
    codes = idata.constant_data["neighbourhood"].values
    per = {c: e for c, e in zip(codes, idata.constant_data["exposure"].values, strict=True)}
    assert float(got["exposure"]) == round(np.mean(list(per.values())))
    des = json.loads(idata.posterior.attrs["hierarchy"])["design"]
    x10 = float(got["deprivation"].sel(reference="decile 10"))
    w = (x10 - des["X_mean"]) / 0.1
    sa, sb, rho = d["la_sd"][..., 0], d["la_sd"][..., 1], d["la_corr"][..., 0, 1]
    s2 = sa**2 + 2 * w * rho * sa * sb + w**2 * sb**2
    rate = 1e4 * np.exp(d["intercept"] + d["gradient"] * w + s2 / 2)
    mu = rate * float(got["exposure"]) / 1e4
    hand = mu * np.expm1(s2) / (mu * np.expm1(s2) + 1 + mu * np.exp(s2) / d["dispersion"])
    np.testing.assert_allclose(got.sel(reference="decile 10"), hand, rtol=1e-10)
    assert float(got["reference_rate"].sel(reference="decile 10")) == pytest.approx(rate.mean())


def test_vpc_refuses_bad_references():
    idata, _ = gradient_fit()
    with pytest.raises(HierarchyError, match="'England' is -5"):
        het.vpc(idata, rates={"England": -5})
    with pytest.raises(HierarchyError, match="exposure must be"):
        het.vpc(idata, exposure=0)


def test_la_gradient_spread_is_the_5th_to_95th_percentile_per_draw():
    idata, d = gradient_fit(n_la=40)
    got = het.la_gradient_spread(idata)
    assert got.dims == ("chain", "draw", "reference")
    hand = np.quantile(np.exp(d["la_coef"][..., 1]), [0.05, 0.95], axis=-1)  # scale 0.1: b_j per 10 points
    np.testing.assert_allclose(got.sel(reference="5th percentile"), hand[0])
    np.testing.assert_allclose(got.sel(reference="95th percentile"), hand[1])


def test_pcv_pairs_draws_of_two_fits_of_the_same_data():
    null, dn = gradient_fit(seed=1, la_sd=(0.3, 0.5, 0.1, 0.2))
    full, df = gradient_fit(seed=2, la_sd=(0.1, 0.3, 0.05, 0.1))
    got = het.pcv(null, full)
    assert got.dims == ("sample", "reference") and list(got["reference"].values) == ["intercept", "gradient"]
    for k in (0, 1):
        va, vb = dn["la_sd"][..., k].ravel() ** 2, df["la_sd"][..., k].ravel() ** 2
        np.testing.assert_allclose(got.isel(reference=k), (va - vb) / va)
    thin = het.pcv(null, full, n_draws=30)
    pick = np.linspace(0, C * D - 1, 30).round().astype(int)
    va = dn["la_sd"][..., 0].ravel()[pick] ** 2
    np.testing.assert_allclose(thin.sel(reference="intercept"), (va - df["la_sd"][..., 0].ravel()[pick] ** 2) / va)


def test_pcv_refuses_fits_it_cannot_pair():
    null, _ = gradient_fit(seed=1)
    other, _ = gradient_fit(seed=2, data_hash="d1")
    with pytest.raises(HierarchyError, match="same data"):
        het.pcv(null, other)
    full, _ = gradient_fit(seed=2)
    full = full.isel(draw=slice(0, 40))
    with pytest.raises(HierarchyError, match="pass n_draws"):
        het.pcv(null, full)
    with pytest.raises(HierarchyError, match="n_draws must be between 2 and 80"):
        het.pcv(null, full, n_draws=100)


def _stacked_fit(structure: str):
    spec = _spec("stages_nb", stage_structure=structure)
    rng = np.random.default_rng(6)
    S, E = len(spec.stages), 2 * len(spec.stages)
    p = {"intercept": (("stage",), _draws(rng, -4, -3, S)), "gradient": (("stage",), _draws(rng, 0.3, 0.7, S)),
         "dispersion": (("stage",), _draws(rng, 10, 40, S)),
         "la_coef": (("la", "stage", "coef"), rng.normal(0, 0.2, (C, D, 20, S, 2)))}
    if structure == "anchored":
        p |= {"la_sd": (("coef",), _draws(rng, 0.1, 0.4, 2)),
              "la_corr": (("coef", "coef_"), _corr(_draws(rng, -.5, .5))),
              "la_loading": (("later_stage", "coef"), _draws(rng, 0.5, 1.5, S - 1, 2)),
              "la_stage_sd": (("later_stage", "coef"), _draws(rng, 0.05, 0.2, S - 1, 2))}
    else:
        a = rng.normal(size=(C, D, E, E + 2))
        cov = a @ np.swapaxes(a, -1, -2) / (E + 2)
        sd = np.sqrt(np.einsum("...ii->...i", cov))
        p |= {"la_sd": (("la_effect",), sd),
              "la_corr": (("la_effect", "la_effect_"), cov / sd[..., :, None] / sd[..., None, :])}
    return fake_fit(spec, p), {k: v for k, (_, v) in p.items()}, spec


def test_la_covariance_of_each_stage_of_a_stacked_fit():
    """Correlated stages: the stage's block of the LKJ covariance. Anchored: the first stage's
    Sigma, and loading_a loading_b Sigma_ab + stage_sd^2 (diagonal) at later stages."""
    idata, d, spec = _stacked_fit("correlated")
    cov = d["la_sd"][..., :, None] * d["la_corr"] * d["la_sd"][..., None, :]
    for s, stage in enumerate(spec.stages):
        block = cov[..., 2 * s:2 * s + 2, 2 * s:2 * s + 2]
        np.testing.assert_allclose(het.la_covariance(idata, stage=stage), block)
    idata, d, spec = _stacked_fit("anchored")
    first = d["la_sd"][..., :, None] * d["la_corr"] * d["la_sd"][..., None, :]
    np.testing.assert_allclose(het.la_covariance(idata), first)
    load, own = d["la_loading"][..., 1, :], d["la_stage_sd"][..., 1, :]  # the third stage
    hand = load[..., :, None] * load[..., None, :] * first + own[..., :, None] ** 2 * np.eye(2)
    np.testing.assert_allclose(het.la_covariance(idata, stage=spec.stages[2]), hand)
    with pytest.raises(HierarchyError, match="not stage 'x'"):
        het.la_covariance(idata, stage="x")


def test_summary_rows_of_a_stacked_fit_give_each_stage_and_the_escalation_rope():
    idata, d, spec = _stacked_fit("anchored")
    rows = het.summary_rows(idata, rope=(0.95, 1.05))
    mrr = rows[rows["estimand"] == "median_rate_ratio"]
    assert list(mrr["stage"]) == list(spec.stages)
    esc = rows[rows["reference"] == "s47 / referral gradient"].iloc[0]
    ratio = np.exp(d["gradient"][..., 1] - d["gradient"][..., 0])  # scale 0.1: 10 points = 1 unit of w
    assert esc["mean"] == pytest.approx(ratio.mean())
    assert esc["p_inside"] == pytest.approx(((ratio >= 0.95) & (ratio <= 1.05)).mean())


# ---------------------------------------------------------------------------- contrasts and ROPE


def test_rope_table_counts_the_draws_inside():
    rng = np.random.default_rng(7)
    draws = xr.DataArray(rng.lognormal(0.02, 0.05, (C, D, 2)), dims=("chain", "draw", "reference"),
                         coords={"reference": ["male / female", "other"]}, name="gradient_ratio")
    table = het.rope_table(draws, (0.95, 1.05), prob=0.8)
    for k, ref in enumerate(["male / female", "other"]):
        x = draws.values[..., k].ravel()
        row = table[table["reference"] == ref].iloc[0]
        assert row["p_inside"] == pytest.approx(((x >= 0.95) & (x <= 1.05)).mean())
        assert row["p_below"] == pytest.approx((x < 0.95).mean())
        assert row["p_inside"] + row["p_below"] + row["p_above"] == pytest.approx(1.0)
        assert row["lower"] == pytest.approx(np.quantile(x, 0.1))
        assert (row["rope_low"], row["rope_high"], row["prob"]) == (0.95, 1.05, 0.8)
    assert table["definition"].str.contains(r"Region: \[0.95, 1.05\]").all()
    plain = het.rope_table(np.array([1.0, 1.1, 1.2, 0.99]), (0.95, 1.05), name="ratio")
    assert plain["p_inside"].item() == 0.5 and plain["estimand"].item() == "ratio"


def test_gradient_contrasts_of_strata_moderators_and_groups():
    """age_sex_gradient_nb: male / female = exp(stratum gradient offset), age_c=1 / age_c=0 =
    exp(row_coef[w:age_c]); ethnicity_gradient_nb: each group level over the typical gradient."""
    rng = np.random.default_rng(8)
    off, slope = _draws(rng, -0.05, 0.05, 1), _draws(rng, -0.03, 0.0)
    idata, _ = gradient_fit(model="age_sex_gradient_nb", strata=("female", "male"), extra={
        "stratum_gradient_offset": (("stratum",), off), "stratum_intercept_offset": (("stratum",), off),
        "row_coef": (("row_term",), np.stack([np.zeros((C, D)), slope], -1))})
    idata.posterior = idata.posterior.assign_coords(stratum=["male"], row_term=["age_c", "w:age_c"])
    got = het.gradient_contrasts(idata)
    assert list(got["reference"].values) == ["male / female gradient", "age_c=1 / age_c=0 gradient"]
    np.testing.assert_allclose(got.sel(reference="male / female gradient"), np.exp(off[..., 0]), rtol=1e-10)
    np.testing.assert_allclose(got.sel(reference="age_c=1 / age_c=0 gradient"), np.exp(slope), rtol=1e-10)

    raw, sd = rng.normal(size=(C, D, 3, 2)), _draws(rng, 0.05, 0.1, 2)
    eth, _ = gradient_fit(model="ethnicity_gradient_nb", extra={
        "ethnicity_raw": (("ethnicity", "ethnicity_coef"), raw), "ethnicity_sd": (("ethnicity_coef",), sd)})
    eth.posterior = eth.posterior.assign_coords(ethnicity=["Asian", "Black", "White"],
                                                ethnicity_coef=["intercept", "gradient"])
    got = het.gradient_contrasts(eth)
    np.testing.assert_allclose(got.sel(reference="ethnicity=Black / typical gradient"),
                               np.exp(raw[..., 1, 1] * sd[..., 1]), rtol=1e-10)


def test_summary_rows_is_tidy_with_definitions():
    idata, _ = gradient_fit(model="age_sex_gradient_nb", strata=("female", "male"), extra={
        "stratum_gradient_offset": (("stratum",), np.full((C, D, 1), 0.01)),
        "row_coef": (("row_term",), np.zeros((C, D, 2)))})
    idata.posterior = idata.posterior.assign_coords(stratum=["male"], row_term=["age_c", "w:age_c"])
    null, _ = gradient_fit(seed=3)
    rows = het.summary_rows(idata, prob=0.8, rope=(0.95, 1.05), null=null)
    assert list(rows.columns) == list(het.COLUMNS)
    counts = rows["estimand"].value_counts().to_dict()
    assert counts == {"median_rate_ratio": 1, "vpc": 11, "la_gradient_spread": 2, "pcv": 2, "gradient_ratio": 2}
    assert rows["definition"].str.len().gt(40).all() and (rows["prob"] == 0.8).all()
    eps = 1e-12  # constant draws: the quantiles and the mean differ by rounding
    assert (rows["lower"] <= rows["mean"] + eps).all() and (rows["mean"] <= rows["upper"] + eps).all()
    male = rows[rows["reference"] == "male / female gradient"].iloc[0]
    assert male["mean"] == pytest.approx(np.exp(0.01)) and male["p_inside"] == 1.0
    vpc = rows[rows["estimand"] == "vpc"]
    assert vpc["reference_rate"].notna().all() and vpc["exposure"].notna().all()
    assert rows.attrs["notes"] == []


def test_a_fit_without_an_la_level_gives_an_empty_table_and_says_why():
    spec = _spec("gradient_nb")
    idata = fake_fit(spec, {"intercept": ((), np.full((C, D), -3.0)), "gradient": ((), np.full((C, D), 0.4))})
    assert het.median_rate_ratio(idata) is None and het.vpc(idata) is None and het.la_covariance(idata) is None
    rows = het.summary_rows(idata, rope=(0.95, 1.05))
    assert rows.empty and list(rows.columns) == list(het.COLUMNS)
    assert het.NO_LA_LEVEL in rows.attrs["notes"]
    assert any("no gradient ratios" in n for n in rows.attrs["notes"])


def test_vpc_is_left_out_when_the_exposure_is_private():
    idata, _ = gradient_fit()
    prov = json.loads(idata.posterior.attrs["hierarchy"]) | {"private_row_data": ["exposure"]}
    idata.posterior.attrs["hierarchy"] = json.dumps(prov)
    rows = het.summary_rows(idata)
    assert "vpc" not in set(rows["estimand"]) and any("VPC left out" in n for n in rows.attrs["notes"])
    assert len(het.summary_rows(idata, exposure=366).query("estimand == 'vpc'")) == 11


# ---------------------------------------------------------------------------- a real fit


@SHARED_FIT
def test_summary_rows_of_the_shared_fit(shared_fit):
    """On a sampled fit (simulated data): the MRR row is the hand computation from la_sd, and its
    95% interval holds the MRR of the simulator's LA intercept SD; the LA gradient spread's 95%
    intervals hold the 5th and 95th percentiles of the 60 LAs' true gradients; the decile VPC
    references rise with deprivation."""
    idata = estimands.as_idata(shared_fit["fit"])
    rows = het.summary_rows(shared_fit["fit"], prob=0.95, rope=(0.95, 1.05))
    sa = idata.posterior["la_sd"].sel(coef="intercept").values.ravel()
    mrr = np.exp(np.sqrt(2) * sa * PHI_75)
    row = rows[rows["estimand"] == "median_rate_ratio"].iloc[0]
    assert row["mean"] == pytest.approx(mrr.mean()) and row["upper"] == pytest.approx(np.quantile(mrr, 0.975))
    truth = shared_fit["truth"]
    true_mrr = het.mrr_from_variance(truth["stages"]["referral"]["intercept_residual_sd"] ** 2)
    assert row["lower"] <= true_mrr <= row["upper"]
    spread = rows[rows["estimand"] == "la_gradient_spread"].set_index("reference")
    true = np.quantile([la["referral"]["gradient"] for la in truth["las"]], [0.05, 0.95])
    for name, value in zip(["5th percentile", "95th percentile"], true, strict=True):
        assert spread.loc[name, "lower"] <= value <= spread.loc[name, "upper"], (name, value)
    vpc = rows[(rows["estimand"] == "vpc") & rows["reference"].str.startswith("decile")]
    assert len(vpc) == 10 and vpc["reference_rate"].is_monotonic_increasing
    assert vpc["mean"].between(0, 1).all()
    assert any("no gradient ratios" in n for n in rows.attrs["notes"])


@SHARED_FIT
def test_summary_command_shows_heterogeneity_and_rope(shared_fit, capsys):
    """``hierarchy summary FIT --rope 0.95,1.05`` (issue 32 items 1 and 4): MRR, VPC and the spread with
    definitions; a malformed region is one line."""
    import json

    from hierarchy import cli

    assert cli.main(["summary", str(shared_fit["fit"]), "--format", "json", "--rope", "0.95,1.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {r["estimand"] for r in out["heterogeneity"]}
    assert {"median_rate_ratio", "la_gradient_spread"} <= names and any(n.startswith("vpc") for n in names)
    mrr = next(r for r in out["heterogeneity"] if r["estimand"] == "median_rate_ratio")
    assert 1.0 < mrr["lower"] < mrr["mean"] < mrr["upper"]
    assert any("median_rate_ratio:" in d for d in out["heterogeneity_notes"])
    with pytest.raises(SystemExit) as stop:  # argparse's one-line usage error
        cli.main(["summary", str(shared_fit["fit"]), "--rope", "1.05"])
    assert stop.value.code == 2 and "0.95,1.05" in capsys.readouterr().err

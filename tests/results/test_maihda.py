"""Intersectional strata (MAIHDA, issue 32 item 2): the simulator's planted interaction, the
main-effect columns, the measures in :mod:`hierarchy.results.maihda` against hand
computations on laid-out fits, and (slow) recovery of a planted interaction by the two shipped
models."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from hierarchy.data import reference, simulate
from hierarchy.errors import HierarchyError
from hierarchy.results import maihda
from tests.results.test_heterogeneity import C, D, _draws, _spec, fake_fit

G = "ethnicity:sex:age_band"
ETHNIC = ("White", "Mixed", "Asian", "Black", "Other")
STRATA = [f"{e}/{s}/{a}" for e in ETHNIC for s in ("female", "male") for a in ("0-4", "5-9", "10-15", "16-17")]


@pytest.fixture(scope="module")
def small_geo():
    return reference.synthetic_geography(6, seed=2, lsoa_per_la=10)


# ---------------------------------------------------------------------------- simulator


def test_interaction_is_off_by_default_and_ethnicity_rows_sum_to_the_children(small_geo):
    base, truth = simulate.simulate(small_geo, seed=1, strata=("age", "sex"))
    assert "interaction" not in truth and "ethnicity" not in base
    table, truth = simulate.simulate(small_geo, seed=1, strata=("ethnicity", "age", "sex"))
    assert "interaction" not in truth
    assert set(table["ethnicity"]) == set(ETHNIC)
    per = table.groupby(["neighbourhood", "age_band"])["exposure"].sum()  # sex is split after ethnicity
    want = base.groupby(["neighbourhood", "age_band"])["exposure"].sum()
    np.testing.assert_array_equal(per.to_numpy(), want.loc[per.index].to_numpy())
    female = table.loc[table["sex"] == "female", "exposure"].sum() / table["exposure"].sum()
    assert female == pytest.approx(0.488, abs=0.01)
    assert truth["strata_terms"]["ethnicity"]["rate_ratio"]["Mixed"] == 1.5


def test_planted_interaction_moves_the_expected_rate_and_the_truth_says_how_much(small_geo):
    plant = {"Black/male/10-15": (2.0, 1.0)}
    kw = dict(seed=1, strata=("ethnicity", "age", "sex"))
    plain, _ = simulate.simulate(small_geo, **kw)
    table, truth = simulate.simulate(small_geo, interaction=plant, **kw)
    assert plain[["neighbourhood", "exposure"]].equals(table[["neighbourhood", "exposure"]])
    inter = truth["interaction"]
    assert inter["group"] == G and inter["planted"]["Black/male/10-15"]["log_rate"] == pytest.approx(np.log(2))
    beyond = inter["beyond_main_effects"]
    assert set(beyond) == set(STRATA)
    # a single cell of a full 5 x 2 x 4 grid: main effects carry 1/8 + 1/20 + 1/10 - 2/40 of it
    assert beyond["Black/male/10-15"]["log_rate"] == pytest.approx(0.775 * np.log(2))
    assert all(v["log_gradient"] == pytest.approx(0.0, abs=1e-12) for v in beyond.values())
    for k in range(3):  # the residual has no main effect left: it sums to zero over every level
        for lev in {s.split("/")[k] for s in STRATA}:
            assert sum(v["log_rate"] for s, v in beyond.items() if s.split("/")[k] == lev) == pytest.approx(0.0)


def test_interaction_sd_draws_an_interaction_for_every_stratum(small_geo):
    kw = dict(seed=1, strata=("ethnicity", "age", "sex"))
    _, truth = simulate.simulate(small_geo, interaction_sd=(0.2, 0.1), **kw)
    offsets = truth["interaction"]["offsets"]
    assert len(offsets) == 40 and truth["interaction"]["planted"] == {}
    rate = np.array([v["log_rate"] for v in offsets.values()])
    assert 0.1 < rate.std() < 0.3  # 40 draws of N(0, 0.2)
    _, again = simulate.simulate(small_geo, interaction_sd=(0.2, 0.1), **kw)
    assert again["interaction"] == truth["interaction"]  # same seed, same draws
    with pytest.raises(HierarchyError, match="interaction_sd must be two finite SDs"):
        simulate.simulate(small_geo, interaction_sd=(-0.1, 0.0), **kw)
    with pytest.raises(HierarchyError, match="strata=\\('ethnicity'"):
        simulate.simulate(small_geo, seed=1, strata=("age",), interaction_sd=(0.1, 0.1))


def test_beyond_main_effects_keeps_a_pure_interaction_whole():
    levels = [f"{a}/{b}" for a in "xy" for b in "pq"]
    pure = {"x/p": 0.3, "x/q": -0.3, "y/p": -0.3, "y/q": 0.3}
    assert simulate.beyond_main_effects(pure, levels) == pytest.approx(pure)
    additive = {"x/p": 0.0, "x/q": 0.2, "y/p": 0.5, "y/q": 0.7}
    assert all(abs(v) < 1e-12 for v in simulate.beyond_main_effects(additive, levels).values())


@pytest.mark.parametrize(("kw", "match"), [
    (dict(strata=("age", "sex"), interaction={"Black/male/10-15": (2.0, 1.0)}), "strata=\\('ethnicity'"),
    (dict(strata=("ethnicity", "age", "sex"), interaction={"Black/boy/10-15": (2.0, 1.0)}), "no stratum"),
    (dict(strata=("ethnicity", "age", "sex"), interaction={"Black/male/10-15": (0.0, 1.0)}), "above 0"),
    (dict(strata=("ethnicity", "age", "sex"), interaction={"Black/male/10-15": 2.0}), "rate ratio, gradient"),
])
def test_a_bad_interaction_says_what_to_write(small_geo, kw, match):
    with pytest.raises(HierarchyError, match=match):
        simulate.simulate(small_geo, **kw)


def test_main_effect_indicators_are_treatment_coded_and_never_overwrite(small_geo):
    table, _ = simulate.simulate(small_geo, seed=1, strata=("ethnicity", "age", "sex"))
    out = simulate.main_effect_indicators(table)
    spec = _spec("maihda_main_nb")
    assert {t for t in spec.row_terms if ":" not in t} <= set(out.columns)  # the shipped model reads them
    assert "ethnicity_White" not in out and "sex_female" not in out and "age_band_0_4" not in out
    np.testing.assert_array_equal(out["age_band_10_15"], (table["age_band"] == "10-15").astype(float))
    assert len(table.columns) + 8 == len(out.columns)
    with pytest.raises(HierarchyError, match="already in the table"):
        simulate.main_effect_indicators(out)
    with pytest.raises(HierarchyError, match="reference level 'White'"):
        simulate.main_effect_indicators(table[table["ethnicity"] != "White"])
    with pytest.raises(HierarchyError, match="column 'ethnicity'"):
        simulate.main_effect_indicators(table.drop(columns="ethnicity"))


# ---------------------------------------------------------------------------- measures by hand


def maihda_fit(model: str, *, seed: int = 0, strata_sd=(0.2, 0.5, 0.05, 0.2), data_hash: str = "d0"):
    """A laid-out MAIHDA fit (:func:`tests.results.test_heterogeneity.fake_fit`) and its draws."""
    rng = np.random.default_rng(seed)
    spec = _spec(model)
    k = len(STRATA)
    sd = np.stack([_draws(rng, *strata_sd[:2]), _draws(rng, *strata_sd[2:])], -1)
    p = {"intercept": ((), -3.0 + 0.05 * rng.standard_normal((C, D))),
         "gradient": ((), 0.45 + 0.02 * rng.standard_normal((C, D))),
         "la_sd": (("coef",), np.stack([_draws(rng, 0.1, 0.3), _draws(rng, 0.05, 0.1)], -1)),
         "la_corr": (("coef", "coef_"), np.broadcast_to(np.eye(2), (C, D, 2, 2)).copy()),
         "la_coef": (("la", "coef"), rng.normal([-3.0, 0.45], [0.3, 0.1], (C, D, 20, 2))),
         "dispersion": ((), _draws(rng, 20.0, 40.0)),
         f"{G}_sd": ((f"{G}_coef",), sd),
         f"{G}_raw": ((G, f"{G}_coef"), rng.standard_normal((C, D, k, 2)))}
    if spec.row_terms:
        p["row_coef"] = (("row_term",), rng.normal(0.0, 0.3, (C, D, len(spec.row_terms))))
    idata = fake_fit(spec, p, data_hash=data_hash, strata=tuple(STRATA[:3]))
    coords = {G: STRATA, f"{G}_coef": ["intercept", "gradient"]}
    if spec.row_terms:
        coords["row_term"] = list(spec.row_terms)
    idata.posterior = idata.posterior.assign_coords(coords)
    return idata, {key: v for key, (_, v) in p.items()}


def test_stratum_effects_variance_and_log_scale_vpc_by_hand():
    fit, d = maihda_fit("maihda_null_nb")
    u = maihda.stratum_effects(fit)
    assert u.dims == ("chain", "draw", "stratum", "coef") and list(u["stratum"].values) == STRATA
    np.testing.assert_allclose(u.values, d[f"{G}_raw"] * d[f"{G}_sd"][:, :, None, :])
    var_s, var_la = d[f"{G}_sd"][..., 0] ** 2, d["la_sd"][..., 0] ** 2
    np.testing.assert_allclose(maihda.stratum_vpc_log(fit).values, var_s / (var_s + var_la))
    got = maihda.stratum_vpc(fit, rate=500.0, exposure=40.0)
    mu = 500.0 * 40.0 / 1e4
    tot = var_s + var_la
    want = mu * np.expm1(var_s) / (mu * np.expm1(tot) + 1 + mu * np.exp(tot) / d["dispersion"])
    np.testing.assert_allclose(got.values, want)
    assert float(got["reference_rate"]) == 500.0 and got.attrs["definition"].startswith("Stratum VPC")


def test_stratum_pcv_by_hand_and_refusals():
    null, dn = maihda_fit("maihda_null_nb", seed=1, strata_sd=(0.4, 0.6, 0.1, 0.2))
    main, dm = maihda_fit("maihda_main_nb", seed=2, strata_sd=(0.05, 0.2, 0.02, 0.1))
    got = maihda.stratum_pcv(null, main)
    assert list(got["reference"].values) == ["intercept", "gradient"]
    for k in (0, 1):
        va, vb = dn[f"{G}_sd"][..., k].ravel() ** 2, dm[f"{G}_sd"][..., k].ravel() ** 2
        np.testing.assert_allclose(got.isel(reference=k), (va - vb) / va)
    assert ((got > 0) & (got < 1)).all()
    other, _ = maihda_fit("maihda_main_nb", seed=2, data_hash="d1")
    with pytest.raises(HierarchyError, match="same data"):
        maihda.stratum_pcv(null, other)
    rows = maihda.maihda_rows(null, main, exposure=40.0)
    assert list(rows["estimand"]) == ["stratum_vpc_log", "stratum_vpc"] * 2 + ["stratum_pcv"] * 2
    assert list(rows["stage"]) == ["null"] * 2 + ["main effects"] * 2 + ["null -> main"] * 2
    assert rows["definition"].str.len().min() > 40 and (rows["lower"] <= rows["upper"]).all()


def test_stratum_scores_add_main_effects_and_the_stratum_effect():
    fit, d = maihda_fit("maihda_main_nb", seed=3)
    terms = list(_spec("maihda_main_nb").row_terms)
    b = {t: d["row_coef"][..., i] for i, t in enumerate(terms)}
    u = d[f"{G}_raw"] * d[f"{G}_sd"][:, :, None, :]
    got = maihda.stratum_scores(fit)
    assert got.dims == ("chain", "draw", "stratum", "reference")
    k = STRATA.index("Black/male/10-15")
    np.testing.assert_allclose(got.sel(stratum="Black/male/10-15", reference="rate ratio"),
                               np.exp(b["ethnicity_Black"] + b["sex_male"] + b["age_band_10_15"] + u[:, :, k, 0]))
    grad = d["gradient"] + b["w:ethnicity_Black"] + b["w:sex_male"] + b["w:age_band_10_15"] + u[:, :, k, 1]
    np.testing.assert_allclose(got.sel(stratum="Black/male/10-15", reference="gradient score"), np.exp(grad))
    null, dn = maihda_fit("maihda_null_nb", seed=5)  # no main effects: the stratum effect alone
    un = dn[f"{G}_raw"] * dn[f"{G}_sd"][:, :, None, :]
    np.testing.assert_allclose(maihda.stratum_scores(null).sel(reference="gradient score").values,
                               np.exp(dn["gradient"][:, :, None] + un[..., 1]))
    ref = STRATA.index("White/female/0-4")  # the reference stratum: its own effect only
    np.testing.assert_allclose(got.sel(stratum="White/female/0-4", reference="rate ratio"),
                               np.exp(u[:, :, ref, 0]))


def test_interaction_table_flags_strata_by_the_probability_of_direction():
    fit, _ = maihda_fit("maihda_main_nb", seed=4)
    raw = fit.posterior[f"{G}_raw"].values.copy()
    raw[:, :, 0, 0] = np.abs(raw[:, :, 0, 0]) + 1.0  # White/female/0-4: surely up
    raw[:, :, 1, 1] = -np.abs(raw[:, :, 1, 1]) - 1.0  # White/female/5-9 gradient: surely down
    fit.posterior[f"{G}_raw"] = (fit.posterior[f"{G}_raw"].dims, raw)
    tab = maihda.interaction_table(fit, prob=0.9)
    assert len(tab) == 2 * len(STRATA)
    top = tab[tab["flagged"]].set_index(["stratum", "coef"])
    assert ("White/female/0-4", "intercept") in top.index and ("White/female/5-9", "gradient") in top.index
    assert top.loc[("White/female/0-4", "intercept"), "direction"] == "+"
    assert top.loc[("White/female/5-9", "gradient"), "direction"] == "-"
    u = maihda.stratum_effects(fit)
    p = float((u.sel(stratum="White/male/0-4", coef="intercept") > 0).mean())
    row = tab.set_index(["stratum", "coef"]).loc[("White/male/0-4", "intercept")]
    assert row["p_direction"] == pytest.approx(max(p, 1 - p))
    assert row["ratio"] == pytest.approx(np.exp(row["mean"]))
    assert tab["p_direction"].is_monotonic_decreasing


def test_a_fit_without_strata_says_how_to_write_them():
    fit, _ = maihda_fit("maihda_null_nb")
    with pytest.raises(HierarchyError, match="no group term 'age_band'"):
        maihda.stratum_effects(fit, group="age_band")
    plain = fake_fit(_spec("gradient_nb"), {"intercept": ((), np.zeros((C, D)))})
    with pytest.raises(HierarchyError, match="ethnicity:sex:age_band"):
        maihda.stratum_effects(plain)
    assert isinstance(maihda.stratum_variance(fit), xr.DataArray)


# ---------------------------------------------------------------------------- recovery


@pytest.mark.slow  # two fits of 30 LAs x 20 neighbourhoods x 40 strata (~30,000 rows), ~3 min on 1 core
def test_maihda_recovers_a_planted_interaction(tmp_path):
    from pathlib import Path

    from hierarchy.workflow import fit_files

    root = Path(__file__).resolve().parents[2]
    geo = reference.synthetic_geography(30, seed=0, lsoa_per_la=20)
    table, truth = simulate.simulate(geo, seed=0, strata=("ethnicity", "age", "sex"),
                                     interaction=simulate.MAIHDA_INTERACTION,
                                     interaction_sd=simulate.MAIHDA_INTERACTION_SD)
    path = tmp_path / "strata.parquet"
    simulate.write(simulate.main_effect_indicators(table), truth, path)
    fits = {}
    for m in ("null", "main"):
        fits[m] = tmp_path / f"{m}.nc"
        fit_files(data=path, model=root / f"models/maihda_{m}_nb.toml",
                  priors=root / "priors/weakly_informative.toml", out=fits[m], progress=False, chains=2, tune=250,
                  draws=250, seed=0)
    tab = maihda.interaction_table(fits["main"], prob=0.9)
    beyond = truth["interaction"]["beyond_main_effects"]
    tab["truth"] = [beyond[s]["log_rate" if c == "intercept" else "log_gradient"]
                    for s, c in zip(tab["stratum"], tab["coef"], strict=True)]
    tab["covers"] = (tab["lower"] <= tab["truth"]) & (tab["truth"] <= tab["upper"])
    by = tab.set_index(["stratum", "coef"])
    planted = [(lab, coef) for lab, (r, g) in simulate.MAIHDA_INTERACTION.items()
               for coef, v in (("intercept", r), ("gradient", g)) if v != 1.0]
    for key in planted:
        row = by.loc[key]
        assert row["flagged"] and row["p_direction"] > 0.95, (key, row)
        assert row["direction"] == ("+" if row["truth"] > 0 else "-"), (key, row)
        assert row["covers"], (key, row)
    others = tab[~tab.set_index(["stratum", "coef"]).index.isin(planted)]
    wrong = others[others["flagged"] & (np.sign(others["mean"]) != np.sign(others["truth"]))]
    assert len(wrong) <= 1, wrong  # flags point the true way
    small = others[others["truth"].abs() < 0.05]
    assert small["flagged"].mean() <= 0.15, small  # strata with little interaction mostly not flagged
    assert tab["covers"].mean() >= 0.75, tab["covers"].mean()  # 90% intervals, 80 effects
    rows = maihda.maihda_rows(fits["null"], fits["main"])
    pcv = rows[rows["estimand"] == "stratum_pcv"]
    assert ((pcv["mean"] > 0) & (pcv["mean"] < 1)).all(), pcv
    vpc = rows[rows["estimand"] == "stratum_vpc_log"].set_index("stage")["mean"]
    assert 0 < vpc["main effects"] < vpc["null"] < 1, vpc

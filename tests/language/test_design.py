"""Design decisions read from the counts and the formula: which group terms are centred, which sum to zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierarchy.data.simulate import simulate_years
from hierarchy.language.design import GROUP_CENTRING_SE, build_design, group_centring, group_zero_sum
from hierarchy.language.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_group_terms_are_centred_where_the_counts_pin_their_levels_down(small_geography):
    """``auto``: an intercept-only group is centred when the median level's 1/sqrt(total count) is
    under GROUP_CENTRING_SE and its levels vary beyond their noise (planted LA x year effects, SD
    0.5); few counts leave it non-centred; an explicit parameterisation wins."""
    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    table, _ = simulate_years(small_geography, years=[2019, 2020], seed=2)
    assert spec.groups == (("la:year", False),)

    def expected(t):
        totals = t.groupby(["la", "year"])["referral"].sum().to_numpy()
        return bool(np.median(1 / np.sqrt(totals)) < GROUP_CENTRING_SE)

    cells = table.groupby(["la", "year"]).ngroup().to_numpy()
    planted = np.random.default_rng(0).normal(0.0, 0.5, cells.max() + 1)
    many = table.assign(referral=np.random.default_rng(1).poisson(50 * table["referral"] * np.exp(planted[cells])))
    few = table.assign(referral=(table["referral"] > 0).astype(int))
    assert expected(many) and not expected(few)  # the two cases fall either side of the limit
    assert group_centring(spec, build_design(many, spec)) == (True,)
    assert group_centring(spec, build_design(few, spec)) == (False,)
    for p, want in (("centred", True), ("non_centred", False)):
        fixed = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"], "parameterisation": p}})
        assert group_centring(fixed, build_design(few if want else many, fixed)) == (want,)


def _formula_spec(formula: str) -> ModelSpec:
    spec = load_spec(ROOT / "models/years_gradient_nb.toml").to_dict()
    keep = {k: spec[k] for k in ("name", "family", "deprivation", "la_deprivation")}
    return ModelSpec.from_dict({**keep, "formula": formula})


def test_interaction_groups_sum_to_zero_along_the_components_with_effects_of_their_own(small_geography):
    """``(1 | la:year)`` on a full LA x year grid sums to zero over the LA (its LA intercept carries
    the mean) and over the year where the year has an effect (``C(year)``, ``(1 | year)``); a grid
    with a hole, a group with its own gradients, or a one-column group is left unconstrained."""
    table, _ = simulate_years(small_geography, years=[2019, 2020, 2021], seed=2)
    base = "referral ~ w * z + (1 + w | la) + offset(log(exposure))"
    cases = {"C(year) + (1 | la:year)": ((0, 1),), "(1 | year) + (1 | la:year)": ((), (0, 1)),
             "(1 | la:year)": ((0,),), "(1 + w | la:year)": ((),)}
    for terms, want in cases.items():
        spec = _formula_spec(base.replace(" + offset", f" + {terms} + offset"))
        design = build_design(table, spec)
        assert group_zero_sum(spec, design) == want, terms
    g = design.group_grid[0]  # the grid: 12 LAs x 3 years, each level once
    assert [int(i.max()) + 1 for i in g] == [12, 3] and len(set(zip(*g, strict=True))) == 36
    holed = table[~((table["la"] == table["la"].iloc[0]) & (table["year"] == 2020))]
    spec = _formula_spec(base.replace(" + offset", " + C(year) + (1 | la:year) + offset"))
    assert group_zero_sum(spec, build_design(holed, spec)) == ((),)


def test_zero_sum_effects_sum_to_zero_in_every_la_and_year(small_geography):
    """Prior draws of the NumPyro model: the LA-year effects ({g}_raw * {g}_sd) sum to zero over the
    years of each LA and over the LAs of each year, and are not all zero."""
    import jax
    from numpyro.infer import Predictive

    from hierarchy.language.priors import load_priors
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    table, _ = simulate_years(small_geography, years=[2019, 2020, 2021], seed=2)
    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    design = build_design(table, spec)
    layout = make_layout(design)
    model = model_fn(spec, load_priors(ROOT / "priors/weakly_informative.toml"), design, layout)
    draws = Predictive(model, num_samples=4)(jax.random.PRNGKey(0), model_data(layout))
    u = np.asarray(draws["la:year_raw"]) * np.asarray(draws["la:year_sd"])[:, None]
    la, year = design.group_grid[0]
    grid = np.zeros((4, 12, 3))
    grid[:, la, year] = u
    assert np.abs(grid.sum(axis=1)).max() < 1e-5 and np.abs(grid.sum(axis=2)).max() < 1e-5  # float32
    assert np.abs(grid).min() > 0 and np.abs(grid).max() > 1e-3


def test_stratified_la_effects_are_drawn_at_the_mean_stratum_level(small_geography):
    """With ``C(year)`` strata and centred LA effects, ``la_level`` is drawn at the count-weighted mean
    year and ``la_coef`` is it less that mean offset; without strata, or non-centred, nothing moves."""
    import jax
    from numpyro.infer import Predictive

    from hierarchy.language.design import stratum_level_weights
    from hierarchy.language.priors import load_priors
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    table, _ = simulate_years(small_geography, years=[2019, 2020, 2021], seed=2)
    table = table.assign(referral=table["referral"] * 50)  # counts that pin the LA effects: centred
    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    design = build_design(table, spec)
    weights = stratum_level_weights(spec, design)
    shares = table.groupby("year")["referral"].sum().to_numpy()
    np.testing.assert_allclose(weights, shares / shares.sum())
    model = model_fn(spec, load_priors(ROOT / "priors/weakly_informative.toml"), design, make_layout(design))
    d = Predictive(model, num_samples=3)(jax.random.PRNGKey(1), model_data(make_layout(design)))
    offsets = ("stratum_intercept_offset", "stratum_gradient_offset")
    shift = np.stack([np.asarray(d[k]) @ weights[1:] for k in offsets], axis=-1)
    np.testing.assert_allclose(np.asarray(d["la_level"]) - shift[:, None, :], np.asarray(d["la_coef"]), atol=1e-5)
    assert np.abs(shift).min() > 1e-4
    la = {**spec.to_dict()["la"], "parameterisation": "non_centred"}
    flat = ModelSpec.from_dict({**spec.to_dict(), "la": la})
    assert stratum_level_weights(flat, build_design(table, flat)) is None
    plain = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    assert stratum_level_weights(plain, build_design(table, plain)) is None

"""The model language: formulas compile to the roles the samplers know, one linear predictor serves
every path, and each new kind of term recovers a known truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hierarchy.data.simulate import simulate
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn, pointwise_loglik
from hierarchy.likelihood.predictor import design_rows, predictor_draws
from hierarchy.results.compare_priors import _log_rates, prior_draws, prior_predictive
from tests.helpers import known_truth_table, with_formula_columns

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (ROOT / "models").glob("*.toml")
                if not p.stem.startswith("panel_"))  # LA-panel model files: tests/likelihood/test_panel_model.py
PRIORS = ROOT / "priors/weakly_informative.toml"


@pytest.fixture(scope="module")
def table(small_geography):
    return with_formula_columns(simulate(small_geography, seed=5, strata=("age",))[0])


def test_the_default_written_as_a_plain_formula_is_the_same_model():
    """A user's lme4 formula for the default gets today's model (so today's program and speed):
    equal specs, equal hash, centring and layout included."""
    default = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    plain = ModelSpec.from_dict({"name": "inverse_intervention_nb_log", "family": "negative_binomial",
                                 "formula": "referral ~ 1 + w + z + w:z + (1 + w | la) + offset(log(exposure))"})
    assert replace(plain, description=default.description) == default
    assert plain.hash() == default.hash() == "1f49e732f8efa062"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_spec_renders_a_formula_that_compiles_back_to_it(path):
    spec = load_spec(path)
    d = {k: v for k, v in spec.to_dict().items()
         if k not in ("outcome", "exposure", "strata", "msoa", "row_terms", "groups", "stratum_gradient",
                      "spatial")}
    d["la"] = {k: d["la"][k] for k in ("parameterisation", "stage_structure")}
    again = ModelSpec.from_dict({**d, "formula": spec.formula_text})
    assert again == spec and again.hash() == spec.hash()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_one_predictor_serves_every_path(path, table):
    """At prior draws: the NumPyro chunked density's likelihood equals the row predictor's pointwise
    log-likelihood summed, and the prior predictive's log rates are the row predictor less the
    exposure (both layouts of the chunk terms)."""
    import jax
    from numpyro import handlers

    jax.config.update("jax_enable_x64", True)
    spec, pset = load_spec(path), load_priors(PRIORS)
    design = build_design(table, spec)
    draws = prior_draws(spec, pset, design, draws=3, seed=1)
    eta = predictor_draws(design_rows(design), draws)
    assert eta.shape == (3, len(design.y)) and np.isfinite(eta).all()
    np.testing.assert_allclose(_log_rates(spec, design, draws, slice(None)) + design.log_exposure, eta,
                               rtol=1e-10, atol=1e-10)
    ll = pointwise_loglik(spec, design, draws).astype(float).sum(axis=1)
    layout = make_layout(design, chunk=16)
    data = model_data(layout)
    for gather in (True, False):
        model = model_fn(spec, pset, design, layout, gather=gather)
        for s in range(3):
            point = {k: v[s] for k, v in draws.items()}
            tr = handlers.trace(handlers.substitute(model, data=point)).get_trace(data)
            factor = float(tr[spec.outcome if not spec.stacked else "count"]["fn"].log_factor)
            assert factor == pytest.approx(ll[s], rel=1e-5), (gather, s)


@pytest.mark.parametrize("name", ["age_strata_nb", "stages_nb"])
def test_prior_predictive_runs_on_stratified_and_stacked_models(name, table):
    """The bug this language fixed: offsets of 5 in a stratum used to give a predictor of 0."""
    spec, pset = load_spec(ROOT / f"models/{name}.toml"), load_priors(PRIORS)
    design = build_design(table, spec)
    draws = prior_draws(spec, pset, design, draws=4, seed=2)
    if spec.strata:
        draws["stratum_intercept_offset"] = np.full_like(draws["stratum_intercept_offset"], 5.0)
        base = {**draws, "stratum_intercept_offset": np.zeros_like(draws["stratum_intercept_offset"])}
        shift = _log_rates(spec, design, draws, slice(None)) - _log_rates(spec, design, base, slice(None))
        assert np.allclose(shift[:, design.stratum_index > 0], 5.0)
        assert np.allclose(shift[:, design.stratum_index == 0], 0.0)
    pp = prior_predictive(spec, pset, design, draws=20, seed=0)
    assert set(pp.gradients["la_level"]) >= {"mean"}
    if spec.stacked:
        assert list(pp.gradients["stage"].unique()) == list(spec.stages)


@pytest.mark.parametrize("name", ["age_strata_nb", "stages_nb"])
def test_compare_priors_pages_for_stratified_and_stacked_models(name, table, tmp_path):
    from hierarchy.results.compare_priors import compare_priors

    data = tmp_path / "t.parquet"
    table.to_parquet(data)
    result = compare_priors(data, ROOT / f"models/{name}.toml",
                            [PRIORS, ROOT / "priors/vague.toml"], tmp_path / "out", prior_only=True,
                            prior_draws_n=100, fits_dir=tmp_path / "fits")
    assert result.html.exists() and "vague" in result.html.read_text()


def _recover(spec: ModelSpec, table, truth, seed: int):
    """Counts drawn from ``spec`` at a known truth (LA effects from :data:`RECOVERY_TRUTH`, the rest
    from ``truth(design, rng)``), refitted by NUTS."""
    from hierarchy.inference.sampling import fit

    t, p = known_truth_table(spec, table, RECOVERY_TRUTH, seed, extra=truth)
    design = build_design(t, spec)
    draws = fit(spec, load_priors(PRIORS), design, chains=2, tune=400, draws=400, seed=seed,
                progress=False)
    return draws.posterior, p


# LA intercepts -3.0 + 0.2 z + N(0, 0.2), gradients 0.45 - 0.3 z + N(0, 0.08), independent
RECOVERY_TRUTH = {"intercept": -3.0, "la_deprivation": 0.2, "gradient": 0.45, "cross_level": -0.3,
                  "la_sd": (0.2, 0.08), "dispersion": 30.0}


@pytest.mark.slow
def test_recovers_a_steeper_gradient_in_rural_neighbourhoods(table):
    spec = load_spec(ROOT / "models/rural_gradient_nb.toml")
    post, p = _recover(spec, table, lambda d, rng: {"row_coef": np.array([-0.2, 0.25])}, seed=1)
    for k, term in enumerate(spec.row_terms):
        lo, hi = np.quantile(post["row_coef"][..., k], [0.005, 0.995])
        assert lo < p["row_coef"][k] < hi, term
    assert np.mean(post["row_coef"][..., 1] > 0) > 0.95  # the rural gradient is found steeper


@pytest.mark.slow
def test_recovers_partially_pooled_ethnic_group_gradients(table):
    spec = load_spec(ROOT / "models/ethnicity_gradient_nb.toml")
    dev = np.array([[0.1, 0.15], [-0.2, -0.15], [0.0, 0.0], [0.05, -0.05], [0.15, 0.2]])

    def truth(d, rng):
        return {"ethnicity_raw": dev / 0.15, "ethnicity_sd": np.array([0.15, 0.15])}

    post, p = _recover(spec, table, truth, seed=2)
    g = post["ethnicity_raw"][..., 1] * post["ethnicity_sd"][..., None, 1]  # (chain, draw, level)
    lo, hi = np.quantile(g.reshape(-1, 5), [0.005, 0.995], axis=0)
    assert np.all((lo < dev[:, 1]) & (dev[:, 1] < hi))
    white_minus_black = (g[..., 4] - g[..., 1]).ravel()
    assert np.mean(white_minus_black > 0) > 0.95


@pytest.mark.slow
def test_recovers_a_crossed_year_effect_in_three_levels(table):
    spec = load_spec(ROOT / "models/three_level_year_nb.toml")
    year = np.array([-0.3, 0.0, 0.3])

    def truth(d, rng):
        return {"year_raw": year / 0.3, "year_sd": 0.3, "msoa_sd": 0.1,
                "msoa_raw": rng.standard_normal(len(d.msoa_codes)),
                "la:year_raw": rng.standard_normal(len(d.group_levels[1])), "la:year_sd": 0.05}

    post, _ = _recover(spec, table, truth, seed=3)
    u = post["year_raw"] * post["year_sd"][..., None]
    diff = (u[..., 2] - u[..., 0]).ravel()  # differences between years are identified
    lo, hi = np.quantile(diff, [0.005, 0.995])
    assert lo < 0.6 < hi


@pytest.mark.slow
def test_recovers_re_referrals_per_referral_and_la_inequality(table):
    for name, key in (("re_referrals_nb", None), ("la_inequality_nb", "la_cov_gradient")):
        spec = load_spec(ROOT / f"models/{name}.toml")
        post, p = _recover(spec, table, lambda d, rng: {}, seed=4)
        b = post["la_coef"][..., 1]
        lo, hi = np.quantile(b.reshape(-1, b.shape[-1]), [0.005, 0.995], axis=0)
        assert np.mean((lo < p["la_coef"][:, 1]) & (p["la_coef"][:, 1] < hi)) > 0.8, name
        if key:
            assert key in post

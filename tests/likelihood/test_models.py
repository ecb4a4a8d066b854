"""Model specs and prior sets as files; the PyMC builder and its NumPyro twin agree."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from hierarchy.data.simulate import simulate
from hierarchy.errors import SpecError
from hierarchy.language.design import build_design, centring, la_effect_se
from hierarchy.language.priors import GROUPS, Prior, PriorSet, load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood import jaxmodel as jax_module
from hierarchy.likelihood import model as pymc_module
from hierarchy.likelihood.model import build_model
from tests.helpers import pymc_minus_numpyro, with_formula_columns

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (ROOT / "models").glob("*.toml")
                if not p.stem.startswith("panel_"))  # LA-panel model files: tests/likelihood/test_panel_model.py
PRIORS = sorted((ROOT / "priors").glob("*.toml"))
FAST = "FAST_COMPILE"  # tiny data: skip PyTensor's C compilation
MIXED = ("inverse_intervention_nb_log", "three_level_nb", "stages_age_nb")
LKJ_CONSTANT = 2 * np.log(4 / 3)  # PyMC's LKJCorr(n=2) normalising constant differs by this


@pytest.fixture(scope="module")
def table(small_geography):
    return with_formula_columns(simulate(small_geography, seed=3, strata=("age",))[0])


def test_shipped_files_are_the_advertised_set():
    names = {p.stem for p in MODELS}
    assert {"gradient_poisson", "gradient_nb", "inverse_intervention_nb", "inverse_intervention_nb_log",
            "inverse_intervention_pln", "three_level_nb", "stages_nb", "age_strata_nb", "stages_age_nb",
            "la_conditions_nb"} <= names
    assert {p.stem for p in PRIORS} >= {"weakly_informative", "vague", "informative_cwip", "regularising"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_file_validates_and_round_trips(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec and again.hash() == spec.hash() and len(spec.hash()) == 16


@pytest.mark.parametrize("path", PRIORS, ids=lambda p: p.stem)
def test_prior_file_validates_round_trips_and_covers_every_group(path):
    pset = load_priors(path)
    assert pset.name == path.stem
    again = PriorSet.from_dict(pset.to_dict())
    assert again == pset and again.hash() == pset.hash()
    assert set(pset.priors) == set(GROUPS)


def test_prior_dict_round_trip_and_numpyro_density_matches_pymc():
    import pymc as pm

    p = Prior.from_dict({"dist": "HalfStudentT", "nu": 3, "sigma": 0.5})
    assert Prior.from_dict(p.to_dict()) == p
    assert str(p) == "HalfStudentT(nu=3, sigma=0.5)"
    for prior, x in ((p, 0.7), (Prior("Gamma", {"alpha": 2, "beta": 0.1}), 6.0),
                     (Prior("InverseGamma", {"alpha": 3, "beta": 2}), 1.3),
                     (Prior("Normal", {"mu": -3, "sigma": 1}), -2.5)):
        with pm.Model():
            rv = prior.pymc("v")
        assert float(prior.numpyro().log_prob(x)) == pytest.approx(float(pm.logp(rv, x).eval()), rel=1e-5)


@pytest.mark.parametrize("bad, message", [
    ({"name": "p", "intercept": {"dist": "Normall", "mu": 0, "sigma": 1}}, "did you mean 'Normal'"),
    ({"name": "p", "gradiant": {"dist": "Normal", "mu": 0, "sigma": 1}}, "did you mean 'gradient'"),
    ({"name": "p", "intercept": {"dist": "Normal", "mu": 0, "sigm": 1}}, "did you mean 'sigma'"),
    ({"name": "p", "intercept": {"dist": "Normal", "mu": 0}}, "needs parameter(s) sigma"),
    ({"name": "p", "la_sd": {"dist": "Normal", "mu": 0, "sigma": 1}}, "needs a positive distribution"),
    ({"name": "p", "la_sd": {"dist": "HalfNormal", "sigma": -1}}, "must be > 0"),
    ({"intercept": {"dist": "Normal", "mu": 0, "sigma": 1}}, "needs a top-level name"),
])
def test_prior_set_errors_name_the_problem(bad, message):
    with pytest.raises(SpecError, match=None) as err:
        PriorSet.from_dict(bad, source="priors/x.toml")
    assert message in str(err.value) and "priors/x.toml" in str(err.value)


@pytest.mark.parametrize("bad, message", [
    ({"name": "m", "family": "negbin"}, "not one of poisson, negative_binomial"),
    ({"name": "m", "la": {"random_slope": True}}, "did you mean 'random_gradient'"),
    ({"name": "m", "outcome": "referal s"}, "not a column name"),
    ({"name": "m", "la": {"cross_level": "false"}}, "must be true or false"),
    ({"name": "m", "msoa": {"random_intercept": "false"}}, "must be true or false"),
    ({"name": "m", "deprivation": {"scale": "0.1"}}, "must be a number"),
    ({"name": "m", "deprivation": {"scale": float("inf")}}, "finite number > 0"),
    ({"name": "m", "la": {"covariates": "la_x"}}, "must be a list of column names"),
    ({"name": "m", "formula": "referral ~ w + (1 + w | la)"}, "no exposure"),
    ({"name": "m", "formula": "referral ~ w * z + offset(log(exposure))"}, "no LA level"),
    ({"name": "m", "formula": "referral ~ 0 + w + (1 + w | la) + offset(log(exposure))"}, "drops the intercept"),
    ({"name": "m", "formula": "referral ~ w + (1 | la) + offset(log(exposure))"}, "must vary by LA"),
    ({"name": "m", "formula": "referral ~ (1 + w | la) + offset(log(exposure))"}, "without a fixed w"),
    ({"name": "m", "formula": "referral ~ w + (1 + w + rural | la) + offset(log(exposure))"},
     "may hold an intercept and the gradient w only"),
    ({"name": "m", "formula": "referral ~ w + log(rural) + (1 + w | la) + offset(log(exposure))"},
     "transform columns in the data"),
    ({"name": "m", "formula": "referral ~ w + la_x + (1 + w | la) + offset(log(exposure))"}, "w * la_x"),
    ({"name": "m", "formula": "referral ~ w + w:C(ethnicity) + (1 + w | la) + offset(log(exposure))"},
     "needs the main effect"),
    ({"name": "m", "formula": "referral ~ w + C(year) + (1 + w | la) + (1 | year) + offset(log(exposure))"},
     "both a fixed term and a group"),
    ({"name": "m", "formula": "referral ~ w +"}, "cannot parse"),
    ({"name": "m", "formula": "referral ~ w + (1 + w | la) + offset(exposure)"}, "offset(log(column))"),
    ({"name": "m", "formula": "referral ~ w + (1 + w | la) + offset(log(exposure))", "outcome": "s47"},
     "formula both say"),
    ({"name": "m", "formula": "referral ~ w + (1 + w | la) + offset(log(referral))"}, "both the outcome and"),
    ({"name": "m", "la_deprivation": {"transform": "logit"}}, "identity, log"),
    ({"name": "m", "famly": "poisson"}, "did you mean 'family'"),
])
def test_spec_errors_name_the_problem(bad, message):
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(bad, source="models/x.toml")
    assert message in str(err.value) and "models/x.toml" in str(err.value)


def test_auto_centring_decides_per_effect_from_the_counts(table):
    spec = load_spec(ROOT / "models/stages_nb.toml")
    design = build_design(table, spec)
    se = la_effect_se(spec, design).reshape(len(spec.stages), 2)
    assert se[0, 0] < se[1:, 0].min()  # referrals outnumber every later stage: smallest errors
    # a generous rule centres everything, a strict one nothing, one in between splits by stage
    rich, sparse = replace(design, y=design.y * 1000), replace(design, y=design.y * 0)
    assert (la_effect_se(spec, rich) < 0.03).all() and not centring(spec, sparse).any()
    mask = centring(spec, design).reshape(len(spec.stages), 2)
    limit = np.array([[0.2, 0.1]] + [[0.2, 0.03]] * (len(spec.stages) - 1))  # anchored: stage deviations
    # the spread condition (issue 34 item 3) only ever takes centring away from the counts' rule
    assert spec.la.stage_structure == "anchored" and not (mask & ~(se < limit)).any() and mask[0].all()
    correlated = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"],
                                                                "stage_structure": "correlated"}})
    assert not (centring(correlated, design).reshape(len(spec.stages), 2) & ~(se < np.array([0.2, 0.1]))).any()
    fixed = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"], "parameterisation": "centred"}})
    assert centring(fixed, sparse).all()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_shipped_model_has_finite_log_density_and_gradient(path, table):
    spec = load_spec(path)
    model = build_model(spec, load_priors(PRIORS[0]), build_design(table, spec))
    point = model.initial_point()
    assert np.isfinite(model.compile_logp(mode=FAST)(point))
    grad = model.compile_dlogp(mode=FAST)(point)
    assert grad.size == sum(np.size(v) for v in point.values()) and np.all(np.isfinite(grad))
    assert "la_coef" in model.named_vars
    assert ("count" if spec.stacked else spec.outcome) in model.named_vars


BOTH_FORMS = ("gradient_poisson", "gradient_nb", "inverse_intervention_nb", "inverse_intervention_nb_log",
              "inverse_intervention_pln", "three_level_nb", "stages_nb", "age_strata_nb", "stages_age_nb",
              "la_conditions_nb", "ethnicity_gradient_nb", "three_level_year_nb")
"""Models whose twin density is checked centred and non-centred (each term kind once); the other
formula models, built of the same terms, centred only (the suite's time)."""
TWIN_CASES = [(m, p) for m in MODELS for p in ("centred", "non_centred")
              if p == "centred" or m.stem in BOTH_FORMS] + \
    [(m, "mixed") for m in MODELS if m.stem in MIXED] + \
    [(ROOT / "models/stages_nb.toml", f"correlated-{p}") for p in ("centred", "mixed")]


@pytest.mark.parametrize(("path", "parameterisation"), TWIN_CASES, ids=lambda v: getattr(v, "stem", v))
def test_numpyro_twin_has_the_pymc_log_density(path, parameterisation, table, monkeypatch):
    """At random points the two joint log densities differ only by a constant: PyMC's LKJCorr
    normalising constant (2 log(4/3) for a 2 x 2 correlation matrix, exact in NumPyro)."""
    import jax
    from numpyro.infer import Predictive

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(path)
    if parameterisation.startswith("correlated-"):  # the shipped stacked models are anchored
        parameterisation = parameterisation.removeprefix("correlated-")
        spec = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"],
                                                             "stage_structure": "correlated"}})
    n_eff = len(spec.coefs) * len(spec.stages)
    if parameterisation == "mixed":  # centre every other LA effect, the first one not
        for module in (pymc_module, jax_module):
            monkeypatch.setattr(module, "centring", lambda spec, design: np.arange(n_eff) % 2 == 1)
    else:
        spec = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"],
                                                             "parameterisation": parameterisation}})
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    layout = make_layout(design, chunk=16)
    model = partial(model_fn(spec, pset, design, layout), model_data(layout))
    pm_model = build_model(spec, pset, design)
    logp = pm_model.compile_logp(jacobian=False, mode=FAST)
    draws = Predictive(model, num_samples=3)(jax.random.PRNGKey(11))
    anchored = spec.anchored
    assert ("la_centred" in draws) == (parameterisation == "mixed")
    assert ("la_stage_raw" in draws) == (anchored and parameterisation != "centred")
    n_corr = len(spec.coefs) if anchored else n_eff
    offsets, lp_numpyro = pymc_minus_numpyro(model, pm_model, logp, draws, n_corr)
    assert np.ptp(offsets) < 1e-6 * abs(lp_numpyro), offsets  # same density up to a constant
    if n_corr <= 2:
        assert offsets[0] == pytest.approx(LKJ_CONSTANT if n_corr == 2 else 0.0, abs=1e-6)


def test_histogram_layout_preserves_every_row(table):
    from hierarchy.likelihood.jaxmodel import make_layout, with_counts

    spec = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    design = build_design(table, spec)
    layout = make_layout(design, chunk=8)
    assert layout.mask.sum() == len(design.y)
    assert sorted(layout.rows[layout.rows >= 0]) == list(range(len(design.y)))
    assert np.all(layout.chunk_la == design.la_index[layout.rows[:, 0]])  # one LA per chunk
    assert layout.y_hist.sum() == len(design.y) and layout.y.sum() == design.y.sum()
    y2 = design.y[::-1].copy()
    moved = with_counts(layout, y2)
    assert moved.y.sum() == y2.sum() and moved.y_hist.shape == layout.y_hist.shape


def test_lgamma_by_histogram_and_by_row_give_the_same_density(table):
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive
    from numpyro.infer.util import log_density

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(ROOT / "models/stages_nb.toml")
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    by_hist, by_row = make_layout(design, chunk=8), make_layout(design, chunk=8, hist_len=0)
    assert by_hist.y_hist.shape[1] > 0 and by_row.y_hist.shape[1] == 0
    models = [partial(model_fn(spec, pset, design, lay), model_data(lay)) for lay in (by_hist, by_row)]
    draws = Predictive(models[0], num_samples=2)(jax.random.PRNGKey(5))
    for s in range(2):
        point = {k: jnp.asarray(v[s]) for k, v in draws.items() if k != "la_coef"}
        lp = [float(log_density(m, (), {}, point)[0]) for m in models]
        assert lp[0] == pytest.approx(lp[1], rel=1e-10)


def _values_and_gradients(name: str, table, variants, chunk: int = 64) -> list:
    """NumPyro potential and its gradient for model file ``name`` at one point, for each
    ``(row dtype, gather)`` variant of the likelihood (the point: the first variant's initial one)."""
    import jax
    from numpyro.infer.util import initialize_model

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(ROOT / f"models/{name}.toml")
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    layout = make_layout(design, chunk=chunk)
    infos = [initialize_model(jax.random.PRNGKey(2), model_fn(spec, pset, design, layout, gather=gather),
                              model_args=(model_data(layout, dtype),)) for dtype, gather in variants]
    z = infos[0].param_info.z
    return [jax.value_and_grad(i.potential_fn)(z) for i in infos]


@pytest.mark.parametrize("name", ["stages_age_nb", "inverse_intervention_nb_log", "gradient_poisson"])
def test_gather_and_one_hot_layouts_give_the_same_density_and_gradient(name, table):
    """CPU indexes chunks' LA/stage/stratum terms, GPU multiplies by one-hot matrices: same model."""
    (v1, g1), (v2, g2) = _values_and_gradients(name, table, [("float64", True), ("float64", False)], chunk=8)
    assert float(v1) == pytest.approx(float(v2), rel=1e-12)
    assert set(g1) == set(g2) and any(np.abs(np.asarray(g)).max() > 0 for g in g1.values())
    for k in g1:
        np.testing.assert_allclose(np.asarray(g1[k]), np.asarray(g2[k]), rtol=1e-9, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("family", ["negative_binomial", "poisson"])
def test_hand_written_chunk_gradients_match_autodiff(family):
    import jax
    import jax.numpy as jnp

    from hierarchy.likelihood import jaxmodel

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(4)
    K, C = 6, 5
    a, b = (jnp.asarray(rng.normal(-1, 0.5, (K, 1))) for _ in range(2))
    phi = jnp.asarray(rng.gamma(5.0, 1.0, (K, 1)))
    rows = (jnp.asarray(rng.normal(2, 1, (K, C))), jnp.asarray(rng.normal(0, 1, (K, C))),
            jnp.asarray(rng.poisson(3.0, (K, C)), dtype=float), jnp.asarray(rng.random((K, C)) < 0.8, dtype=float))
    if family == "negative_binomial":
        params, fast = (a, b, phi), jaxmodel._nb_chunks()

        def slow(a, b, phi, *r):
            return jaxmodel._nb_rows(a, b, phi, 0.0, *r)
    else:
        params, fast = (a, b), jaxmodel._poisson_chunks()

        def slow(a, b, *r):
            return jaxmodel._poisson_rows(a, b, 0.0, *r)
    argnums = tuple(range(len(params)))
    v_fast, g_fast = jax.value_and_grad(fast, argnums)(*params, *rows)
    v_slow, g_slow = jax.value_and_grad(slow, argnums)(*params, *rows)
    assert float(v_fast) == pytest.approx(float(v_slow), rel=1e-12)
    for gf, gs in zip(g_fast, g_slow, strict=True):
        np.testing.assert_allclose(np.asarray(gf), np.asarray(gs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["stages_age_nb", "gradient_poisson", "three_level_nb"])
def test_float32_rows_keep_a_float64_log_density(name, table):
    """``fit(float32=True)``: rows in float32, parameters and the density in float64, close to float64."""
    (v64, g64), *rest = _values_and_gradients(name, table, [("float64", True), ("float32", True),
                                                            ("float32", False)])
    for v32, g32 in rest:  # indexing (CPU) and one-hot products (GPU) on float32 rows
        assert v32.dtype == np.float64 and all(g.dtype == np.float64 for g in g32.values())
        assert float(v32) == pytest.approx(float(v64), rel=1e-6)  # float32 alone: ~1e-7 per row, summed
        for k in g64:
            scale = np.abs(np.asarray(g64[k])).max() + 1.0
            np.testing.assert_allclose(np.asarray(g32[k]), np.asarray(g64[k]), atol=1e-4 * scale, err_msg=k)


def test_chunk_totals_are_accumulated_in_float64():
    """A float32 sum of 640k row terms of ~1e3 is off by tens (measured 22); the per-chunk float32
    sums added in float64 by a fraction of one (measured 0.2)."""
    import jax
    import jax.numpy as jnp

    from hierarchy.likelihood.jaxmodel import _total

    jax.config.update("jax_enable_x64", True)
    x = np.random.default_rng(0).normal(1e3, 10.0, (10_000, 64)).astype(np.float32)
    exact = x.astype(np.float64).sum()
    naive = float(jnp.sum(jnp.asarray(x)))
    ours = float(_total(jnp.asarray(x), jnp.float64))
    assert abs(naive - exact) > 1.0  # what the earlier float32 mode did (a total of 6.4e8)
    assert abs(ours - exact) < 0.05 * abs(naive - exact) and abs(ours - exact) < 1.0


def _shipped_scalar_priors() -> list[tuple[str, Prior]]:
    """Every distinct scalar prior of the shipped prior sets (LKJ is compared in the model twins)."""
    seen: dict[str, tuple[str, Prior]] = {}
    for path in PRIORS:
        pset = load_priors(path)
        for group, prior in [*pset.priors.items(), *pset.terms.items()]:
            if prior.dist != "LKJ":
                seen.setdefault(str(prior), (f"{path.stem}.{group}", prior))
    return sorted(seen.values(), key=lambda t: t[0])


@pytest.mark.parametrize("where, prior", _shipped_scalar_priors(), ids=[w for w, _ in _shipped_scalar_priors()])
def test_every_shipped_prior_has_the_same_density_in_pymc_and_numpyro(where, prior):
    """Each distribution a shipped prior set uses (Exponential and HalfCauchy included), at points
    across its body and tails: the NumPyro twin's log density equals PyMC's (no constant offset)."""
    import jax
    import pymc as pm

    jax.config.update("jax_enable_x64", True)
    with pm.Model():
        rv = prior.pymc("v")
    points = [0.01, 0.3, 1.0, 4.0, 25.0]
    if prior.support == "unit":  # Beta (the spatial mixing parameter)
        points = [0.01, 0.3, 0.5, 0.9, 0.99]
    if prior.support == "real":
        points += [-25.0, -4.0, -1.0]
    dist = prior.numpyro()
    for x in points:
        expected = float(pm.logp(rv, np.float64(x)).eval())
        got = float(dist.log_prob(x))
        assert np.isfinite(expected), (where, prior, x)
        # rel 1e-6: PyMC keeps an exact-in-float32 parameter such as lam=5 as a float32 constant, so
        # its 1 / lam is off in the 8th digit; a wrong parameterisation is off by far more
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), (where, str(prior), x)
    assert {"Exponential", "HalfCauchy"} <= {p.dist for _, p in _shipped_scalar_priors()}


@pytest.fixture(scope="module")
def years_table(small_geography):
    from hierarchy.data.simulate import simulate_years

    return simulate_years(small_geography, range(2017, 2021), seed=5)[0]


def _potentials(spec, design, layout, dtype: str, variants: list[dict]) -> list:
    """NumPyro potential and gradient at one point (the first variant's start) for ``model_fn`` options."""
    import jax
    from numpyro.infer.util import initialize_model

    from hierarchy.likelihood.jaxmodel import model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    infos = [initialize_model(jax.random.PRNGKey(3), model_fn(spec, pset, design, layout, **v),
                              model_args=(model_data(layout, dtype),)) for v in variants]
    z = infos[0].param_info.z
    return [jax.value_and_grad(i.potential_fn)(z) for i in infos]


def test_group_constant_within_chunks_joins_the_chunk_intercept(years_table):
    """``(1 | la:year)`` with year the stratum: one gather per chunk, the same density and gradient."""
    from hierarchy.likelihood.jaxmodel import chunk_groups, make_layout

    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    design = build_design(years_table, spec)
    layout = make_layout(design, chunk=8)
    folded = chunk_groups(design, layout)
    assert set(folded) == {"la:year"} and len(folded["la:year"]) == layout.rows.shape[0]
    (v1, g1), (v2, g2) = _potentials(spec, design, layout, "float64", [{"fold_groups": True},
                                                                         {"fold_groups": False}])
    assert float(v1) == pytest.approx(float(v2), rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(np.asarray(g1[k]), np.asarray(g2[k]), rtol=1e-9, atol=1e-9, err_msg=k)
    # a group whose level changes within a chunk stays a row term: year is not a stratum here
    formula = "referral ~ w * z + (1 + w | la) + (1 | year) + offset(log(exposure))"
    plain = ModelSpec.from_dict({"name": "year_groups", "family": "negative_binomial", "formula": formula})
    plain_design = build_design(years_table, plain)
    assert plain.strata == () and plain_design.group_names == ("year",)
    assert chunk_groups(plain_design, make_layout(plain_design, chunk=8)) == {}


def test_float32_rows_are_smooth_in_the_dispersion():
    """Float32 rows: the NB log density between neighbouring float32 values of phi moves by what the
    float64 density moves, not by rounding: off by at most 0.059 here (5 seeds), where the plain form
    ``y eta - (y + phi) log(phi + mu)`` was off by 0.35 and stalled NUTS at 427k rows."""
    import jax
    import jax.numpy as jnp

    from hierarchy.likelihood.jaxmodel import _log_in_two, _nb_rows

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(1)
    K, C = 2000, 64
    log_exposure = np.log(rng.integers(100, 400, (K, C)).astype(float))
    w = rng.normal(0, 1, (K, C))
    mu = np.exp(log_exposure - 3.0 + 0.4 * w)
    y = rng.negative_binomial(5.6, 5.6 / (5.6 + mu)).astype(float)
    phi0 = np.float32(5.6)
    phis = phi0 + np.arange(12) * np.spacing(phi0)
    steps = {}
    for dt in ("float32", "float64"):
        rows = tuple(jnp.asarray(v, dtype=dt) for v in (log_exposure, w, y, np.ones((K, C))))
        f = jax.jit(lambda phi, rows=rows: _nb_rows(jnp.full((K, 1), -3.0), jnp.full((K, 1), 0.4),
                                                    jnp.full((K, 1), phi), 0.0, *rows))
        steps[dt] = np.diff([float(f(np.float64(p))) for p in phis])
    assert np.ptp(steps["float64"]) < 1e-6  # smooth: the same step each time
    assert np.abs(steps["float32"] - steps["float64"]).max() < 0.15
    # log(phi), which every row subtracts, carried as two float32 numbers: exact to float64, where one
    # float32 is off by ~1e-8 in every row alike (jumps of ~4 at 1.2M rows, bench/RESULTS.md)
    hi, lo = _log_in_two(jnp.float64(5.6), jnp.float32)
    assert hi.dtype == lo.dtype == jnp.float32
    assert abs(float(hi) + float(lo) - np.log(5.6)) < 1e-14 < 1e-9 < abs(float(hi) - np.log(5.6))

"""The export that leaves the children behind: exact likelihood, disclosure refusal, same posterior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy import simulate
from hierarchy import sufficient as su
from hierarchy.design import build_design
from hierarchy.errors import HierarchyError
from hierarchy.priors import load_priors
from hierarchy.reference import synthetic_geography
from hierarchy.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    geo = synthetic_geography(6, seed=1, lsoa_per_la=20)
    table, _ = simulate.simulate(geo, seed=2, strata=("sex",))
    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    spec = ModelSpec.from_dict({**spec.to_dict(), "strata": ["sex"]})
    return table, spec, load_priors(ROOT / "priors/weakly_informative.toml")


def test_sums_give_the_same_log_density_up_to_a_constant(setup):
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_density

    from hierarchy.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    design = build_design(table, spec)
    layout = make_layout(design)
    full, data = model_fn(spec, priors, design, layout), model_data(layout)
    suff = su.sufficient_model(spec, priors, *su.public_design(table.drop(columns=["referral"]), sums, spec))
    diffs = []
    for seed in range(3):
        tr = handlers.trace(handlers.seed(full, seed)).get_trace(data)
        params = {k: v["value"] for k, v in tr.items() if v["type"] == "sample"}
        assert "stratum_gradient_offset" in params
        diffs.append(float(log_density(full, (data,), {}, params)[0] - log_density(suff, (), {}, params)[0]))
    assert np.ptp(diffs) < 1e-6 * max(1.0, abs(diffs[0]))


def test_export_refuses_small_sums_and_non_poisson(setup):
    table, spec, _ = setup
    small = table.copy()
    la0 = small["la"].iloc[0]
    small.loc[small["la"] == la0, "referral"] = 0
    small.loc[small.index[small["la"] == la0][0], "referral"] = 9
    with pytest.raises(HierarchyError, match="fewer than 10 children"):
        su.sufficient_sums(small, spec)
    small.loc[small.index[small["la"] == la0][0], "referral"] = 0
    with pytest.raises(HierarchyError, match="fewer than 10"):  # zeros are disclosive too
        su.sufficient_sums(small, spec)
    nb = ModelSpec.from_dict({**spec.to_dict(), "family": "negative_binomial"})
    with pytest.raises(HierarchyError, match="only for a Poisson"):
        su.sufficient_sums(table, nb)


def test_sums_file_round_trip(setup, tmp_path):
    table, spec, _ = setup
    sums = su.sufficient_sums(table, spec)
    su.write_sums(sums, tmp_path / "s.csv", spec=spec, threshold=10)
    back = su.read_sums(tmp_path / "s.csv")
    assert (back["n"] >= 10).all()
    np.testing.assert_allclose(back["sum_yw"], sums["sum_yw"], rtol=1e-9)


@pytest.mark.slow
def test_sufficient_fit_matches_neighbourhood_fit(setup):
    from hierarchy.sampling import fit

    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    outside = su.fit_sufficient(sums, table.drop(columns=["referral"]), spec, priors, chains=2, tune=400,
                                draws=600, seed=1)
    inside = fit(spec, priors, build_design(table, spec), chains=2, tune=400, draws=600, seed=2,
                 progress=False).posterior
    for name in ("gradient", "intercept"):
        a, b = np.ravel(outside[name]), np.ravel(inside[name])
        se = np.sqrt(a.var() / 200 + b.var() / 200)  # conservative ESS of 200 per fit
        assert abs(a.mean() - b.mean()) < 4 * se, (name, a.mean(), b.mean(), se)

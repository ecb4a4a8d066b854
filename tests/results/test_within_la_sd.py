"""The within-LA variance components and the Poisson-lognormal log-likelihood come from the declarations
(issue 28: family dispatch): ``parameters.names(within_la_sd=True)`` (MSOA and Poisson-lognormal row SDs,
each declared once: the MSOA term in the table, ``obs_sd`` in its family module) is what the VPC, the MAIHDA
variance and the posterior predictive draws read, and the fit file's pointwise log-likelihood asks the
family for its marginal log-likelihood instead of naming Poisson-lognormal. Values are those of the
hand-written lists they replace (measured identical, bit for bit, on hand-made fits of every family)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood import families, parameters
from hierarchy.likelihood.families import poisson_lognormal

ROOT = Path(__file__).resolve().parents[2]


def test_the_within_la_sds_are_declared_once():
    assert parameters.names(within_la_sd=True) == ("msoa_sd", "obs_sd")  # the order the sums always had
    declared = {r["name"] for f in families.all_families() for r in f.parameters if r.get("within_la_sd")}
    assert declared == {"obs_sd"} and any(r["name"] == "obs_sd" for r in poisson_lognormal.PARAMETERS)
    assert [f.name for f in families.all_families() if f.marginal_loglik is not None] == ["poisson_lognormal"]


@pytest.fixture(scope="module")
def pln(small_geography):
    """A sealed hand-made fit (prior draws, no NUTS) of the three-level model as Poisson-lognormal."""
    from hierarchy.data import table as data_mod
    from hierarchy.inference.sampling import Draws
    from hierarchy.results.fitfile import build_idata
    from hierarchy.results.prior_predictive import prior_draws
    from tests.helpers import geography_table

    table = geography_table(small_geography)
    table["msoa"] = small_geography.lsoa["msoa"].to_numpy()
    table["referral"] = np.random.default_rng(0).poisson(table["exposure"] * 0.05)
    spec = ModelSpec.from_dict({**load_spec(ROOT / "models/three_level_nb.toml").to_dict(),
                                "name": "three_level_pln", "family": "poisson_lognormal"})
    design = build_design(table, spec)
    pset = load_priors(ROOT / "priors/weakly_informative.toml")
    d = prior_draws(spec, pset, design, draws=100, seed=1)
    draws = Draws(posterior={k: v.reshape(2, 50, *v.shape[1:]) for k, v in d.items()},
                  settings={"sampler": "numpyro", "method": "nuts", "chains": 2, "draws": 50})
    idata = build_idata(draws, spec, pset, design, data_hash=data_mod.data_hash(table, **spec.hashed_columns),
                        data_source="by hand", diagnostics={})
    return {"idata": idata, "spec": spec, "design": design, "draws": d}


def test_vpc_and_maihda_add_both_within_la_variances(pln):
    from hierarchy.results import heterogeneity, maihda

    idata = pln["idata"]
    post = idata.posterior
    assert {"msoa_sd", "obs_sd"} <= set(post)
    la = heterogeneity.la_variance(idata, w=0.0)
    np.testing.assert_array_equal(maihda._other_variance(post, idata),
                                  ((0.0 + la) + post["msoa_sd"] ** 2) + post["obs_sd"] ** 2)
    # the VPC's within-LA variance: zero both SDs and the LA share rises (it reads both)
    without = idata.copy()
    without.posterior["msoa_sd"] = post["msoa_sd"] * 0.0
    without.posterior["obs_sd"] = post["obs_sd"] * 0.0
    assert bool((heterogeneity.vpc(without) >= heterogeneity.vpc(idata)).all())
    assert float((heterogeneity.vpc(without) - heterogeneity.vpc(idata)).mean()) > 0.01


def test_posterior_predictive_draws_the_row_effects_from_their_sds(pln):
    from hierarchy.results.ppc import posterior_predictive

    idata = pln["idata"]
    wide, flat = idata.copy(), idata.copy()
    for k in ("msoa_sd", "obs_sd"):
        wide.posterior[k] = idata.posterior[k] * 0.0 + 1.5
        flat.posterior[k] = idata.posterior[k] * 0.0
    var = {n: float(np.log1p(posterior_predictive(f, n_draws=50, seed=2).to_numpy()).var(0).mean())
           for n, f in (("wide", wide), ("flat", flat))}
    assert var["wide"] > 2 * var["flat"], var


def test_the_fit_file_asks_the_family_for_its_marginal_log_likelihood(pln):
    from hierarchy.inference.sampling import PER_ROW
    from hierarchy.results import fitfile

    spec, design, d = pln["spec"], pln["design"], pln["draws"]
    post = {k: v[:5] for k, v in d.items()}
    got = fitfile.pointwise_log_likelihood(spec, design, post)
    want = poisson_lognormal.marginal_loglik(design, {k: v for k, v in post.items() if k not in PER_ROW},
                                             nodes=fitfile.GAUSS_HERMITE_NODES)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (5, len(design.y)) and np.isfinite(got).all()

"""Simulation-based calibration (Talts et al. 2018) of the NB random-slope model.

Draw parameters from the prior, counts from the model, fit, and record the rank of each true
value among thinned posterior draws: for a correct sampler and model the ranks are uniform.
The data enter the model as an argument with fixed shapes, meant to let one compiled sampler serve
every replicate; in practice NumPyro 0.22 recompiles on each ``MCMC.run`` here (~10 s a replicate),
and in a long pytest-xdist worker the piled-up executables crashed XLA (abort, then segfault) after
dozens of replicates. Caches are now cleared per replicate, but a full 120-replicate run has not been
verified, so this test is marked ``sbc`` and left out of CI's slow run: ``make test-sbc``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hierarchy.design import build_design
from hierarchy.jaxmodel import draw_counts, make_layout, model_data, model_fn, with_counts
from hierarchy.priors import PriorSet, load_priors
from hierarchy.reference import synthetic_geography
from hierarchy.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
# SBC holds for any proper prior; a field-plausible one keeps each replicate's posterior easy.
SBC_PRIORS = {"intercept": {"dist": "Normal", "mu": -3.0, "sigma": 0.5},
              "gradient": {"dist": "Normal", "mu": 0.4, "sigma": 0.2},
              "cross_level": {"dist": "Normal", "mu": -0.3, "sigma": 0.2},
              "la_sd": {"dist": "HalfNormal", "sigma": 0.3},
              "dispersion": {"dist": "Gamma", "alpha": 10.0, "beta": 1.0}}
PARAMS = {"intercept": (), "gradient": (), "cross_level": (), "dispersion": (), "la_sd": (0,), "la_sd1": (1,)}


def sbc_ranks(family: str, replicates: int, *, seed: int = 0, thin: int = 3, draws: int = 297):
    import jax
    from numpyro.infer import MCMC, NUTS, Predictive

    jax.config.update("jax_enable_x64", True)
    spec = ModelSpec.from_dict({"name": "sbc", "family": family,
                                "la": {"between_effect": False, "parameterisation": "non_centred"}})
    base = load_priors(ROOT / "priors/weakly_informative.toml").to_dict()
    priors = PriorSet.from_dict({**base, **SBC_PRIORS})
    geo = synthetic_geography(8, seed=seed, lsoa_per_la=15)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"],
                          "exposure": 100.0, "deprivation": geo.lsoa["income_rate"], "referral": 0})
    design = build_design(table, spec)
    rng = np.random.default_rng(seed)
    prior = Predictive(model_fn(spec, priors, design, make_layout(design)), num_samples=replicates)(
        jax.random.PRNGKey(seed), model_data(make_layout(design)))
    ys = [draw_counts(spec, design, {k: np.asarray(v[r]) for k, v in prior.items()}, rng)
          for r in range(replicates)]
    hist_len = int(2 ** np.ceil(np.log2(max(y.max() for y in ys) + 2)))
    layout = make_layout(design, chunk=16, hist_len=hist_len)
    mcmc = MCMC(NUTS(model_fn(spec, priors, design, layout)), num_warmup=300, num_samples=draws,
                progress_bar=False, jit_model_args=True)
    ranks = {k: [] for k in PARAMS}
    for r, y in enumerate(ys):
        mcmc.run(jax.random.PRNGKey(1000 + r), model_data(with_counts(layout, y)))
        post = mcmc.get_samples()
        jax.clear_caches()  # NumPyro recompiles each run here; unfreed executables crashed XLA
        for name, idx in PARAMS.items():
            key = "la_sd" if name.startswith("la_sd") else name
            if key not in post:
                continue
            truth = np.asarray(prior[key][r])[idx]
            sample = np.asarray(post[key])[(slice(None), *idx)][::thin]
            ranks[name].append(int(np.sum(sample < truth)))
    return {k: np.array(v) for k, v in ranks.items() if v}, draws // thin


@pytest.mark.slow
@pytest.mark.sbc  # `make test-sbc`; not in CI: see the module docstring
def test_sbc_negative_binomial_random_slope_ranks_are_uniform():
    ranks, n_post = sbc_ranks("negative_binomial", replicates=120)
    bins = 8
    for name, r in ranks.items():
        counts = np.bincount(r * bins // (n_post + 1), minlength=bins)
        p = stats.chisquare(counts).pvalue
        assert p > 0.001, f"{name}: SBC ranks not uniform (chi-square p = {p:.2g}; bin counts {counts})"

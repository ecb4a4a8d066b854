"""Simulation-based calibration of the embedded Laplace mode (issue 29 item 1): ``sbc(method="laplace")``
refits each replicate by :func:`hierarchy.inference.sampling.fit` with ``method="laplace"``; the ranks of
the true values among the draws are uniform for a correct approximation. The refusals are fast."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import HierarchyError
from hierarchy.inference.sbc import sbc
from hierarchy.language.design import build_design
from hierarchy.language.priors import PriorSet, load_priors
from hierarchy.language.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
SBC_PRIORS = {"intercept": {"dist": "Normal", "mu": -3.0, "sigma": 0.5},  # as tests/inference/test_sbc.py
              "gradient": {"dist": "Normal", "mu": 0.4, "sigma": 0.2},
              "cross_level": {"dist": "Normal", "mu": -0.3, "sigma": 0.2},
              "la_sd": {"dist": "HalfNormal", "sigma": 0.3},
              "dispersion": {"dist": "Gamma", "alpha": 10.0, "beta": 1.0},
              "obs_sd": {"dist": "HalfNormal", "sigma": 0.3}}
ALPHA = 0.001  # per parameter, as the NUTS SBC tests


def _setup(family: str, n_la: int = 8, lsoa_per_la: float = 15):
    import jax

    jax.config.update("jax_enable_x64", True)
    spec = ModelSpec.from_dict({"name": "sbc", "family": family,
                                "la": {"between_effect": False, "parameterisation": "non_centred"}})
    base = load_priors(ROOT / "priors/weakly_informative.toml").to_dict()
    priors = PriorSet.from_dict({**base, **SBC_PRIORS})
    geo = synthetic_geography(n_la, seed=0, lsoa_per_la=lsoa_per_la)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"],
                          "exposure": 100.0, "deprivation": geo.lsoa["income_rate"], "referral": 0})
    return spec, priors, build_design(table, spec)


def test_sbc_refuses_what_the_laplace_mode_cannot_do():
    spec, priors, design = _setup("negative_binomial", n_la=3, lsoa_per_la=4)
    with pytest.raises(HierarchyError, match="vectorize=True runs the replicates side by side.*leave vectorize"):
        sbc(spec, priors, design, replicates=2, method="laplace", vectorize=True)
    with pytest.raises(HierarchyError, match="NUTS refits each replicate with one chain.*method 'laplace'"):
        sbc(spec, priors, design, replicates=2, chains=2)
    with pytest.raises(HierarchyError, match="unknown method 'inla'"):
        sbc(spec, priors, design, replicates=2, method="inla")
    spec, priors, design = _setup("poisson_lognormal", n_la=3, lsoa_per_la=4)
    with pytest.raises(HierarchyError, match="method 'laplace' refused"):
        sbc(spec, priors, design, replicates=2, method="laplace")


NB_RANKED = {"intercept", "gradient", "cross_level", "la_sd[0]", "la_sd[1]", "la_corr[1,0]", "dispersion",
             "la_coef[0,0]", "la_coef[0,1]"}
"""What the NUTS SBC of the same model ranks (tests/inference/test_sbc.py)."""


@pytest.mark.slow
@pytest.mark.long  # one replicate, two short Laplace chains: the path, not calibration; not in CI
def test_laplace_sbc_ranks_the_same_parameters_over_every_chain_s_thinned_draws():
    """Not a calibration (that is minutes per replicate: the report of issue 29 item 1 has the figures):
    the Laplace path ranks what the NUTS path ranks, over both chains' thinned draws."""
    spec, priors, design = _setup("negative_binomial", n_la=4, lsoa_per_la=6)
    result = sbc(spec, priors, design, replicates=1, warmup=30, draws=20, thin=2, seed=3, method="laplace",
                 chains=2)
    assert set(result.ranks) == NB_RANKED
    assert result.n_post == 20  # 2 chains x 10 thinned draws
    assert all(r.shape == (1,) and 0 <= r[0] <= 20 for r in result.ranks.values())
    assert result.divergences.shape == (1,)

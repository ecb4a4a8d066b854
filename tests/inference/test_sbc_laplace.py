"""Simulation-based calibration of the embedded Laplace mode (issue 29 items 1 and 2): ``sbc(method="laplace")``
refits each replicate as ``fit --method laplace`` does, with the counts an argument of programs compiled
once for all replicates (:func:`hierarchy.inference.laplace_fit.fit_replicates`); the ranks of the true
values among the draws are uniform for a calibrated approximation. The refusals are fast."""

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


def _setup(family: str, n_la: int = 8, lsoa_per_la: float = 15, model: str | None = None):
    """A model (``model``: a shipped one by name) under the field-plausible SBC priors on a generated
    geography of ``n_la`` LAs (exposure 100 per neighbourhood, as tests/inference/test_sbc.py)."""
    import jax

    from hierarchy.language.spec import load_spec

    jax.config.update("jax_enable_x64", True)
    spec = (load_spec(ROOT / f"models/{model}.toml") if model else
            ModelSpec.from_dict({"name": "sbc", "family": family,
                                 "la": {"between_effect": False, "parameterisation": "non_centred"}}))
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
    with pytest.raises(HierarchyError, match=r"method 'laplace' refused.*\(hierarchy sbc --method nuts\)"):
        sbc(spec, priors, design, replicates=2, method="laplace")


def test_sbc_command_refuses_before_it_says_what_it_fits(capsys):
    """``hierarchy sbc --method laplace`` on a model outside the regime: one error line naming the sbc
    command's own ``--method nuts``, and no "fitting N replicates" line before it."""
    from hierarchy import cli

    code = cli.main(["sbc", "--model", "inverse_intervention_pln", "--method", "laplace", "--las", "3",
                     "--lsoa-per-la", "4", "--replicates", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and "method 'laplace' refused" in err and "hierarchy sbc --method nuts" in err
    assert "hierarchy fit" not in err and "fitting" not in out, out


NB_RANKED = {"intercept", "gradient", "cross_level", "la_sd[0]", "la_sd[1]", "la_corr[1,0]", "dispersion",
             "la_coef[0,0]", "la_coef[0,1]"}
"""What the NUTS SBC of the same model ranks (tests/inference/test_sbc.py)."""


@pytest.mark.slow
@pytest.mark.long  # ~60 s on 2 loaded cores; the calibration test below runs the same path in CI
def test_laplace_sbc_ranks_the_same_parameters_over_every_chain_s_thinned_draws():
    """The path, not calibration: the Laplace path ranks what the NUTS path ranks, over both chains'
    thinned draws, and replicates after the first reuse its compiled programs (seconds, not a minute)."""
    spec, priors, design = _setup("negative_binomial", n_la=4, lsoa_per_la=6)
    result = sbc(spec, priors, design, replicates=3, warmup=30, draws=20, thin=2, seed=3, method="laplace",
                 chains=2)
    assert set(result.ranks) == NB_RANKED
    assert result.n_post == 20  # 2 chains x 10 thinned draws
    assert all(r.shape == (3,) and r.min() >= 0 and r.max() <= 20 for r in result.ranks.values())
    assert result.divergences.shape == (3,) and result.seconds.shape == (3,)
    assert result.seconds[1:].max() < 0.2 * result.seconds[0], result.seconds  # measured: 0.2 s against 59 s


@pytest.mark.slow
@pytest.mark.sbc
def test_laplace_sbc_ranks_are_uniform():
    """Calibration of the Laplace mode on the default model (NB, LA intercepts and gradients, the LA
    deprivation and cross-level terms) under the field-plausible SBC priors: 100 replicates, ranks uniform
    by the NUTS SBC tests' chi-square (alpha 0.001 per parameter)."""
    spec, priors, design = _setup("negative_binomial", model="inverse_intervention_nb_log")
    result = sbc(spec, priors, design, replicates=100, warmup=250, draws=200, thin=2, seed=1, method="laplace")
    assert {"intercept", "gradient", "la_deprivation", "cross_level", "la_sd[0]", "la_sd[1]",
            "la_corr[1,0]", "dispersion", "la_coef[0,0]", "la_coef[0,1]"} <= set(result.ranks)
    assert result.n_post == 100 and all(len(r) == 100 for r in result.ranks.values())
    table = result.uniformity()
    bad = table[table["p_value"] < ALPHA]
    assert bad.empty, f"Laplace SBC ranks not uniform:\n{bad}"
    assert result.divergences.mean() < 1.0  # divergent transitions per 200-draw chain

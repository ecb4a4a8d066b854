"""Simulation-based calibration (Talts et al. 2018) of each likelihood family.

For a correct model and sampler the rank of each true value among its posterior draws is uniform.
:func:`hierarchy.sbc.sbc` refits every replicate in one compiled, vmapped NUTS program (about
2-3 minutes for 100 replicates on 2 quiet cores, 4-10 minutes on busy ones), so these run in CI: in
``make test-slow``, beside the other slow tests in a long-lived xdist worker, started first
(``LONGEST_FIRST`` in tests/conftest.py); ``make test-sbc`` runs them alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data.reference import synthetic_geography
from hierarchy.inference.sbc import sbc
from hierarchy.language.design import build_design
from hierarchy.language.priors import PriorSet, load_priors
from hierarchy.language.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
# SBC holds for any proper prior; a field-plausible one keeps each replicate's posterior easy.
SBC_PRIORS = {"intercept": {"dist": "Normal", "mu": -3.0, "sigma": 0.5},
              "gradient": {"dist": "Normal", "mu": 0.4, "sigma": 0.2},
              "cross_level": {"dist": "Normal", "mu": -0.3, "sigma": 0.2},
              "la_sd": {"dist": "HalfNormal", "sigma": 0.3},
              "dispersion": {"dist": "Gamma", "alpha": 10.0, "beta": 1.0},
              "obs_sd": {"dist": "HalfNormal", "sigma": 0.3}}
ALPHA = 0.001  # per parameter; about 10 parameters a family


@pytest.fixture(autouse=True)
def _room_for_the_sbc_program():
    """Drop the compiled programs of earlier tests if this process nears its memory-map limit.

    Under ``make test-slow`` an SBC test runs in a long-lived xdist worker, after other fits; its one
    large program is compiled on top of theirs (an SBC run crashed XLA in such a worker before the fits
    released their programs, commit dfc8843). ``sampling.fit`` does this before every fit; ``sbc`` does not.
    """
    from hierarchy.compiled import release_compiled_programs

    release_compiled_programs()


def _setup(family: str, **prior_changes):
    import jax

    jax.config.update("jax_enable_x64", True)
    spec = ModelSpec.from_dict({"name": "sbc", "family": family,
                                "la": {"between_effect": False, "parameterisation": "non_centred"}})
    base = load_priors(ROOT / "priors/weakly_informative.toml").to_dict()
    priors = PriorSet.from_dict({**base, **SBC_PRIORS, **prior_changes})
    geo = synthetic_geography(8, seed=0, lsoa_per_la=15)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"],
                          "exposure": 100.0, "deprivation": geo.lsoa["income_rate"], "referral": 0})
    return spec, priors, build_design(table, spec)


@pytest.mark.slow
@pytest.mark.sbc
@pytest.mark.parametrize("family", ["negative_binomial", "poisson", "poisson_lognormal"])
def test_sbc_ranks_are_uniform(family):
    spec, priors, design = _setup(family)
    result = sbc(spec, priors, design, replicates=100, warmup=250, draws=200, thin=2, seed=1)
    expected = {"intercept", "gradient", "cross_level", "la_sd[0]", "la_sd[1]", "la_corr[1,0]",
                "la_coef[0,0]", "la_coef[0,1]"}
    expected |= {"negative_binomial": {"dispersion"}, "poisson_lognormal": {"obs_sd"}}.get(family, set())
    assert set(result.ranks) == expected
    assert result.n_post == 100
    assert all(len(r) == 100 and r.min() >= 0 and r.max() <= 100 for r in result.ranks.values())
    table = result.uniformity()
    bad = table[table["p_value"] < ALPHA]
    assert bad.empty, f"{family}: SBC ranks not uniform:\n{bad}"
    assert result.divergences.mean() < 1.0  # divergent transitions per 200-draw chain


@pytest.mark.slow
@pytest.mark.sbc
def test_sbc_of_the_anchored_stacked_level():
    """Two stacked stages, the second's LA effects anchored on the first's (loadings + deviations)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    spec = ModelSpec.from_dict({"name": "sbc_stages", "family": "negative_binomial",
                                "outcome": ["referral", "cp_plan"],
                                "la": {"between_effect": False, "parameterisation": "non_centred",
                                       "stage_structure": "anchored"}})
    base = load_priors(ROOT / "priors/weakly_informative.toml").to_dict()
    priors = PriorSet.from_dict({**base, **SBC_PRIORS})
    geo = synthetic_geography(8, seed=0, lsoa_per_la=15)
    table = pd.DataFrame({"neighbourhood": geo.lsoa["lsoa"], "la": geo.lsoa["la"], "exposure": 100.0,
                          "deprivation": geo.lsoa["income_rate"], "referral": 0, "cp_plan": 0})
    result = sbc(spec, priors, build_design(table, spec), replicates=100, warmup=250, draws=200, thin=2,
                 seed=3)
    assert {"la_loading[0,0]", "la_loading[0,1]", "la_stage_sd[0,0]", "la_stage_sd[0,1]",
            "la_coef[0,1,0]", "la_coef[0,1,1]", "dispersion[1]"} <= set(result.ranks)
    table = result.uniformity()
    bad = table[table["p_value"] < ALPHA]
    assert bad.empty, f"anchored stacked: SBC ranks not uniform:\n{bad}"
    assert result.divergences.mean() < 1.0


@pytest.mark.slow
@pytest.mark.sbc
def test_sbc_flags_a_fit_under_the_wrong_prior():
    spec, priors, design = _setup("negative_binomial")
    _, wrong, _ = _setup("negative_binomial", gradient={"dist": "Normal", "mu": 0.9, "sigma": 0.05})
    result = sbc(spec, priors, design, replicates=40, warmup=200, draws=100, thin=1, seed=2,
                 fit_priors=wrong)
    table = result.uniformity()
    assert table.loc["gradient", "p_value"] < 1e-6
    assert np.mean(result.ranks["gradient"] < 50) > 0.8  # posteriors pulled above the truth


@pytest.mark.slow
@pytest.mark.sbc
def test_sbc_command_prints_the_uniformity_table_and_writes_the_ranks(tmp_path, capsys):
    """The exit status follows the verdict, both ways: with --alpha just below 1 the parameters
    fail the uniformity test (exit 1, named); with --alpha 1e-300 none can (exit 0)."""
    from hierarchy.cli import main

    out = tmp_path / "ranks.csv"
    args = ["sbc", "--model", str(ROOT / "models/gradient_nb.toml"), "--priors",
            str(ROOT / "priors/informative_cwip.toml"), "--replicates", "12", "--warmup", "80",
            "--draws", "60", "--thin", "1", "--las", "5", "--lsoa-per-la", "8"]
    code = main([*args, "--alpha", "0.999999", "--out", str(out)])
    text = capsys.readouterr().out
    ranks = pd.read_csv(out, index_col="replicate")
    params = ["intercept", "gradient", "la_sd[0]", "la_sd[1]", "la_corr[1,0]", "dispersion",
              "la_coef[0,0]", "la_coef[0,1]"]
    assert list(ranks.columns) == params and len(ranks) == 12
    assert ranks.to_numpy().min() >= 0 and ranks.to_numpy().max() <= 60
    assert "12 replicates, ranks out of 60 draws" in text and all(p in text for p in params)
    (verdict,) = [line for line in text.splitlines() if line.startswith("not uniform at p < 0.999999: ")]
    named = set(verdict.split(": ", 1)[1].split(", "))
    assert code == 1 and named and named <= set(params), text  # (a p-value of exactly 1 can pass)
    code = main([*args, "--alpha", "1e-300"])  # the same replicates (same seed): no p-value that small
    text = capsys.readouterr().out
    assert code == 0 and "not uniform" not in text and "12 replicates" in text, text

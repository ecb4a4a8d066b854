"""The advice after a failed fit follows the parameterisation the fit used (issue 34 item 3): a centred
LA effect piled at 0 is told to be non-centred (and why ``auto`` centred it), one already non-centred
is told what else to try, and the divergence tip does not repeat ``non_centred`` to a non-centred fit."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from hierarchy.inference.diagnostics import advice

FAILED = {"status": "warn", "rhat_max": 1.72, "rhat_worst": "la_sd", "ess_bulk_worst": "la_sd",
          "divergences": 1216, "bfmi_min": 0.21}
MODEL = "models/re_referrals_nb.toml"


def _posterior(used: str | None, asked: str = "auto") -> xr.Dataset:
    """la_sd draws with the gradient's piled at 0, carrying a fit's record of its parameterisation."""
    rng = np.random.default_rng(0)
    sd = np.stack([np.abs(rng.normal(0.3, 0.02, (2, 200))), np.abs(rng.normal(0, 0.01, (2, 200)))], -1)
    post = xr.Dataset({"la_sd": (("chain", "draw", "coef"), sd)}, coords={"coef": ["intercept", "gradient"]})
    if used is not None:
        post.attrs["hierarchy"] = json.dumps({"sampler": {"parameterisation": used},
                                              "model_spec": {"la": {"parameterisation": asked}}})
    return post


def test_a_centred_effect_piled_at_zero_is_told_to_be_non_centred():
    tips = advice(FAILED, _posterior("centred"), model=MODEL)
    assert "la_sd is piled near 0 (gradient: median" in tips[0]
    assert 'parameterisation = "non_centred" under [la] in ' + MODEL in tips[0]
    assert "this fit centred it under auto" in tips[0]
    assert any("--target-accept 0.95" in t and "non_centred" in t for t in tips)


def test_an_effect_already_non_centred_is_not_told_to_be_non_centred_again():
    for used in ("mixed (centred: intercept)", "non_centred"):
        tips = advice(FAILED, _posterior(used), model=MODEL)
        assert "already non-centred" in tips[0] and "(1 | la)" in tips[0], used
        assert not any('"non_centred"' in t for t in tips), (used, tips)
        assert any("--target-accept 0.95" in t for t in tips)
    # the gradient centred in a mixed fit: non_centred again
    tips = advice(FAILED, _posterior("mixed (centred: gradient)"), model=MODEL)
    assert '"non_centred"' in tips[0]


def test_a_fit_without_a_record_gets_the_general_advice():
    tips = advice(FAILED, _posterior(None), model=MODEL)
    assert '"non_centred"' in tips[0] and "this fit centred it" not in tips[0]
    assert advice({"status": "ok"}, _posterior(None)) == []

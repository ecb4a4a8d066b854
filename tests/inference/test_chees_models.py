"""The many-chain sampler (``--sampler chees``) agrees with NumPyro NUTS on every shipped model (issue 30).

Long: for each shipped model, ``bench/chees_agreement.py``'s comparison on its small simulated data set
(20 LAs x 10 neighbourhoods; NUTS 4 x (1000 + 1000) at 0.95, chees 128 x (500 + 100)): both fits meet
their convergence gates, and the headline gradient scores, every hyperparameter and the LA effects agree
(chees means within 0.1 NUTS posterior SD, or the Monte Carlo bar where 3.5 Monte Carlo errors exceed
0.1; SD ratios within 1.2 or the Monte Carlo bar). LA-panel models are not fitted by ``hierarchy fit``
and models chees refuses are listed with the reason. Fast: the bench's bars on draws of known
distributions, its table, and the refusal of the spatial model.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.toml"))


def _bench():
    spec = importlib.util.spec_from_file_location("chees_agreement", ROOT / "bench" / "chees_agreement.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


def _draws(rng, mean: float, sd: float, chains: int, draws: int) -> np.ndarray:
    return mean + sd * rng.normal(size=(chains, draws))


def test_the_bars_pass_the_same_posterior_and_fail_a_shifted_one():
    """Independent draws of one normal pass at the 0.1 bar (ESS in the thousands); a mean 0.3 SD off or
    an SD 40% wider fails; with few effective draws the Monte Carlo bar replaces 0.1 and says so."""
    rng = np.random.default_rng(0)
    ref = {"a": ("hyper", _draws(rng, 1.0, 2.0, 4, 2000)), "b": ("hyper", _draws(rng, 0.0, 1.0, 4, 2000))}
    same = {"a": ("hyper", _draws(rng, 1.0, 2.0, 128, 100)), "b": ("hyper", _draws(rng, 0.0, 1.0, 128, 100))}
    rows = bench.compare(ref, same)
    assert [r.name for r in rows] == ["a", "b"] and all(r.ok for r in rows), rows
    assert all(r.bar_kind == "0.10" and r.mean_bar == 0.1 for r in rows)
    shifted = {"a": ("hyper", _draws(rng, 1.6, 2.0, 128, 100)), "b": ("hyper", _draws(rng, 0.0, 1.4, 128, 100))}
    bad = bench.compare(ref, shifted)
    assert not bad[0].ok and bad[0].gap == pytest.approx(0.3, abs=0.06)
    assert not bad[1].ok and bad[1].ratio == pytest.approx(1.4, abs=0.05)
    few = bench.compare({"a": ("hyper", _draws(rng, 0.0, 1.0, 2, 50))},
                        {"a": ("hyper", _draws(rng, 0.0, 1.0, 16, 10))})
    assert few[0].bar_kind == "MC" and few[0].mean_bar > 0.1


def test_the_table_lists_every_verdict():
    row = bench.Row("gradient", "hyper", 0.5, 0.1, 0.05, 1.02, 0.1, "0.10", 1.2)
    miss = bench.Row("la_sd[0]", "hyper", 0.3, 0.1, 0.25, 0.9, 0.1, "0.10", 1.2)
    results = [bench.Result("m1", [row], nuts_status="ok", chees_status="ok", times={"nuts": 10, "chees": 20}),
               bench.Result("m2", [row, miss], nuts_status="ok", chees_status="ok", times={"nuts": 1, "chees": 2}),
               bench.Result("m3", [row], nuts_status="3 divergent transitions", chees_status="ok",
                            times={"nuts": 1, "chees": 2}),
               bench.Result("panel_x", reason=bench.PANEL)]
    text = bench.markdown(results)
    assert "| m1 | pass | ok | ok | 1 |" in text and "| m2 | FAIL | ok | ok | 2 | 0.250 (la_sd[0])" in text
    assert "| m3 | agree; gate warns | 3 div | ok | 1 |" in text and "- m3: NUTS gate: 3 divergent" in text
    assert "- m2: la_sd[0]: 0.250 NUTS SD" in text and f"- panel_x: {bench.PANEL}" in text
    assert [r.ok for r in results] == [True, False, False, False]
    assert bench.shipped_models() == MODELS and bench.refusal("panel_stages_nb") == bench.PANEL


@pytest.mark.slow
@pytest.mark.long  # 2-5 minutes a model on 2 busy cores (NUTS 4 x 2,000 and chees 128 x 600, mostly compiling)
@pytest.mark.parametrize("model", MODELS)
def test_chees_agrees_with_nuts(model):
    res = bench.run_model(model)
    if res.reason:  # not fitted: a panel model, or one chees refuses (test_chees_refuses_...)
        from hierarchy.inference import chees

        expected = bench.PANEL if model.startswith("panel_") else chees.refusal(*bench.data_for(model)[::3])
        assert res.reason == expected
        return
    assert res.rows and any(r.kind == "headline" for r in res.rows), res.rows
    assert res.ok, f"{model}:\n" + "\n".join(res.misses())


def test_chees_refuses_the_models_it_failed_on_with_the_reason():
    """What the bench measured: care_reentry_poisson (a Poisson model with a stratum term; the duration
    models alike) did not converge under chees (nested R-hat 14.9) and the BYM2 model diverged, so
    ``--sampler chees`` refuses them in one line naming the term; gradient_poisson, which chees fits
    since its superchains start about the prior medians, and the default model are not refused."""
    from hierarchy.errors import HierarchyError
    from hierarchy.inference import chees
    from hierarchy.inference.sampling import fit
    from hierarchy.language.spec import load_spec

    spec, priors, _, design = bench.data_for("care_reentry_poisson", n_la=4, lsoa_per_la=5)
    why = chees.refusal(spec, design)
    assert why and "stratum term" in why and "\n" not in why
    with pytest.raises(HierarchyError, match=r"^care_reentry_poisson: Poisson models with a stratum term .*"
                                             r"not supported by --sampler chees.*; fit it with --sampler numpyro"):
        fit(spec, priors, design, sampler="chees", chains=16, tune=10, draws=10)
    assert bench.refusal("care_reentry_poisson", spec, design) == why
    assert "spatial term" in chees.refusal(load_spec(ROOT / "models/gradient_bym2_poisson.toml"))
    for model in ("inverse_intervention_nb_log", "gradient_poisson"):
        s, _, _, d = bench.data_for(model, n_la=4, lsoa_per_la=5)
        assert chees.refusal(s, d) is None, model

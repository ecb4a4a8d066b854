"""The panel report's classical check: Laplace maximum likelihood of the panel model (ml_check)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import panel
from hierarchy.likelihood import panel_model as pm
from hierarchy.reporting import panel_report

MODELS = Path(__file__).resolve().parents[2] / "models"


def _fake_fit(design, spec, truth, n=200, seed=0):
    """A PanelFit whose 'posterior' is centred on the truth (the check compares, it does not fit NUTS)."""
    rng = np.random.default_rng(seed)
    draws = {k: truth[k] + rng.normal(0, 0.02, n) for k in ("alpha", "b_dep", "b_t", "b_dep_t", "sd_u", "sd_v")}
    draws["phi"] = truth["phi"] + rng.normal(0, 2.0, n)
    corr = rng.uniform(-0.1, 0.1, n)
    draws["L_corr"] = np.stack([np.stack([np.ones(n), np.zeros(n)], 1),
                                np.stack([corr, np.sqrt(1 - corr**2)], 1)], 1)
    draws["g"] = np.asarray(truth["g"])[None] + rng.normal(0, 0.01, (n, len(design.years)))
    u = truth["alpha"] + truth["b_dep"] * design.z + np.asarray(truth["u"])
    v = truth["b_t"] + truth["b_dep_t"] * design.z + np.asarray(truth["v"])
    draws["uv"] = np.stack([u, v], -1)[None] + rng.normal(0, 0.01, (n, len(design.units), 2))
    return pm.PanelFit(spec=spec, design=design, draws=draws, centred=True, seconds=0.0, diagnostics={})


@pytest.mark.slow  # ~50 s on 2 loaded cores, most of it compiling; tests/inference/test_ml.py recovers faster
def test_ml_check_recovers_a_simulated_panel_with_censored_cells():
    p = panel.synthetic_panel(n_la=30, seed=5, small_las=3)
    spec = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    design = pm.panel_design(p.table, "s47", spec)
    assert design.censored.sum() >= 5  # the small LAs' 'c' cells are in the likelihood
    truth = p.truth["s47"]
    out = panel_report.ml_check(_fake_fit(design, spec, truth))
    assert (out["note"] == "").all(), out["note"].iloc[0]
    got = out.set_index("parameter")
    for name in ("b_dep", "b_t", "b_dep_t", "sd_u", "sd_v", "phi"):
        est, se = got.loc[name, "ml"], got.loc[name, "ml_se"]
        assert 0 < se and abs(est - truth[name]) < 3 * se, (name, est, se, truth[name])
    g = got.loc[[f"g[{y}]" for y in design.years]]
    assert np.median(np.abs(g["ml"] - truth["g"]) / g["ml_se"]) < 2
    assert {"posterior_mean", "posterior_sd", "z", "within_2sd"} <= set(out.columns)
    assert "corr_uv" in set(out["parameter"])
    assert "Laplace maximum likelihood" in out.attrs["method"]


@pytest.mark.slow  # one maximum likelihood fit: ~30 s on 2 loaded cores, most of it compiling
def test_panel_report_shows_the_ml_check_beside_the_posterior(tmp_path):
    p = panel.synthetic_panel(n_la=20, seed=2)
    spec = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    design = pm.panel_design(p.table, "s47", spec)
    fit = _fake_fit(design, spec, p.truth["s47"])
    index = panel_report.write_panel_report(p, {spec.name: {"s47": fit}}, tmp_path)
    page = index.read_text()
    assert "Classical check, the same model by maximum likelihood" in page and "Laplace" in page
    table = pd.read_csv(tmp_path / "ml_check.csv")
    assert {"b_dep", "sd_u", "phi", "corr_uv"} <= set(table["parameter"])
    assert np.isfinite(table[["ml", "ml_se"]].to_numpy()).all()
    assert not (tmp_path / "classical_check.csv").exists()
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]  # every write renamed into place


def test_report_goes_on_with_a_note_when_the_ml_fit_is_impossible():
    p = panel.synthetic_panel(n_la=8, years=(2017, 2018, 2019, 2020, 2021), seed=3)
    spec = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    d = pm.panel_design(p.table, "referrals", spec)
    broken = replace(d, exposure=d.exposure * np.nan)  # nothing observed
    fit = pm.PanelFit(spec=spec, design=broken, draws={}, centred=True, seconds=0.0, diagnostics={})
    none = panel_report._ml_rows(fit)
    assert len(none) == 1 and none["note"].iloc[0].startswith("maximum likelihood fit not possible")
    assert "nothing to fit" in none["note"].iloc[0]


@pytest.mark.parametrize("name", ["classical_check", "_classical_check"])
def test_the_two_stage_check_is_gone(name):
    assert not hasattr(pm, name)

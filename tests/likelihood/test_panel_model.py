"""LA-panel models: spec checks, a quick smoke fit, and (slow) recovery and the England-total check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hierarchy.data import panel
from hierarchy.data.reference import find_reference_dir
from hierarchy.errors import SpecError
from hierarchy.inference.sampling import fit_panel, fit_panels
from hierarchy.likelihood import panel_model as pm

MODELS = Path(__file__).resolve().parents[2] / "models"


def _spec(**kw):
    base = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    return replace(base, **kw)


def test_shipped_panel_models_load():
    names = {pm.load_panel_spec(p).name for p in MODELS.glob("panel_*.toml")}
    assert {"panel_stages_nb", "panel_screening_nb", "panel_late_intervention_nb", "panel_repeat_nb"} <= names


def test_spec_errors_name_the_file_and_fix(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('name = "x"\nfamily = "nb"\nmeasures = ["referrals"]\nterms = ["dep", "wiggle", "(1 | la)"]\n')
    with pytest.raises(SpecError, match=r"m.toml: terms \['wiggle'\]"):
        pm.load_panel_spec(bad)
    bad.write_text('name = "x"\nfamily = "nb"\nmeasures = ["nope"]\nterms = ["(1 | la)"]\n')
    with pytest.raises(SpecError, match="measures"):
        pm.load_panel_spec(bad)


def test_year_basis_has_no_level_and_no_trend():
    t = np.arange(13.0) - 6
    b = pm.year_basis(t)
    assert b.shape == (13, 11)
    assert np.allclose(b.T @ np.ones(13), 0) and np.allclose(b.T @ t, 0) and np.allclose(b.T @ b, np.eye(11))


@pytest.mark.slow  # compiling the sampler takes a minute on 2 cores
def test_smoke_fit_and_estimands_on_a_tiny_stand_in():
    p = panel.synthetic_panel(n_la=8, years=(2019, 2020, 2021, 2022), seed=1)
    spec = _spec()
    kw = dict(chains=1, tune=60, draws=40, max_draws=40)
    d = pm.panel_design(p.table, "referrals", spec)
    f = fit_panel(d, spec, **kw)
    tot = pm.england_totals(f)
    assert len(tot) == 4 and (tot["predicted"] > 0).all()
    est = pm.estimands(f)
    assert {"England rate", "ratio per 10 points of LA deprivation"} <= set(est["estimand"])
    la = pm.la_estimands(f, "LA003")
    assert len(la) == 1 and la["rate_first"].iloc[0] > 0
    with pytest.raises(SpecError, match="no LA"):
        pm.la_estimands(f, "Atlantis")
    # measures share one sampler (their data are its arguments): a measure fitted after another gets
    # the posterior it gets alone, and not the first measure's
    s47 = pm.panel_design(p.table, "s47", spec)
    first, second = fit_panels([d, s47], spec, **kw)
    np.testing.assert_allclose(first.draws["alpha"], f.draws["alpha"], rtol=1e-6)
    np.testing.assert_allclose(second.draws["alpha"], fit_panel(s47, spec, **kw).draws["alpha"], rtol=1e-6)
    assert abs(second.draws["alpha"].mean() - first.draws["alpha"].mean()) > 0.5  # s47 rates are lower


@pytest.mark.slow
@pytest.mark.long
def test_recovery_england_totals_and_ml_check_on_a_simulated_panel():
    from hierarchy.reporting.panel_report import ml_check

    p = panel.synthetic_panel(n_la=60, seed=7, suppress=0.02)
    spec = _spec()
    for measure in ("s47", "s47_per_referral"):
        truth = p.truth[measure]
        f = fit_panel(pm.panel_design(p.table, measure, spec), spec, seed=1, chains=2, tune=300, draws=300)
        assert f.diagnostics["max_rhat"] < 1.05 and f.diagnostics["divergences"] < 10
        for name in ("b_dep", "b_t", "b_dep_t", "sd_u", "sd_v"):
            draws = f.draws[name]
            z = abs(draws.mean() - truth[name]) / draws.std()
            assert z < 3.5, (measure, name, draws.mean(), truth[name])
        # alpha: the stand-in's z is centred on the simulated LAs, as the model's is
        g_err = np.abs(f.g().mean(0) - np.array(truth["g"])) / f.g().std(0)
        assert np.median(g_err) < 2
        tot = pm.england_totals(f)
        # a year where an exposure (the earlier stage) is suppressed cannot be predicted in full
        full = tot[tot["exposure_complete"]]
        clean = full[full["suppressed_cells"] == 0]
        assert len(clean) >= 3 and clean["diff_pct"].abs().max() < 1.0, tot
        # a suppressed cell is predicted without its own LA-year effect (NB sd ~14% here, and one of
        # the 60 stand-in LAs can be 5% of England): looser than the 150 real LAs' 1%
        assert full["diff_pct"].abs().max() < 3.0, tot
        assert (tot.loc[~tot["exposure_complete"], "diff_pct"] < 0).all()
        chk = ml_check(f)  # Laplace maximum likelihood of the same model agrees with the posterior
        assert (chk["note"] == "").all() and chk["within_2sd"].all(), chk


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.skipif(find_reference_dir() is None, reason="England reference folder absent")
def test_real_england_totals_within_one_percent():
    p = panel.build_panel()
    spec = _spec()
    f = fit_panel(pm.panel_design(p.table, "referrals", spec), spec, chains=2, tune=200, draws=200)
    tot = pm.england_totals(f)
    assert tot["exposure_complete"].all()
    assert tot["diff_pct"].abs().max() < 1.0, tot

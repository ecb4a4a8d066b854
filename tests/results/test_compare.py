"""Comparing prior sets and models: statistical checks on tiny fits (2 chains x (200 + 200) draws).

One data set serves every fitted test: a small synthetic geography (50 LAs of ~12 neighbourhoods)
whose referral counts are drawn (:func:`hierarchy.likelihood.jaxmodel.draw_counts`) from the log-LA-deprivation
model with strong LA-level effects and little LA noise, so that the log form of the cross-level
interaction is clearly right and the linear form is clearly wrong where LAs are small. Three fits in
all, on one pool of two spawned processes: the log model under the default and under a conflicting
prior (``compare_priors``' own parallel sweep), then the linear model under the default prior.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hierarchy.cli import main
from hierarchy.data import reference, simulate
from hierarchy.data import table as data_mod
from hierarchy.errors import HierarchyError
from hierarchy.inference.sweep import FitJob, run_sweep
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.results import compare
from hierarchy.results.estimands import deciles_of
from tests.helpers import known_truth_table

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.xdist_group("compare"),  # one worker builds the module's fits once
              pytest.mark.slow]  # the fits take ~95 s of one worker: run by make test-slow (CI runs it)

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "models/inverse_intervention_nb.toml"
LOG = ROOT / "models/inverse_intervention_nb_log.toml"
DEFAULT = ROOT / "priors/weakly_informative.toml"
VAGUE = ROOT / "priors/vague.toml"
CONFLICTING = ROOT / "tests/fixtures/conflicting_priors.toml"
# 2 x (200 + 200) draws (was 2 x (300 + 300)): each fitted check compares a posterior summary with a
# threshold far beyond its Monte Carlo error, which grows by ~sqrt(3/2) = 1.22 with 2/3 of the draws.
# Measured at 2 x 200: the default prior's power-scaling sensitivity of every asserted quantity is
# <= 0.021 (threshold 0.05), the conflicting prior's of the gradient 0.40 (> 0.15); the gradient at
# mean LA deprivation is 1.62, 90% interval +-0.05, bulk ESS >= 36, so MCSE < 0.01 against a
# tolerance of exp(0.48) +- 10% = 1.62 +- 0.16; LOO prefers the log model by ~8 ELPD (dse 3.4).
SETTINGS = dict(chains=2, tune=200, draws=200, seed=1)
TRUTH = {"intercept": -3.0, "la_deprivation": 0.6, "gradient": 0.48, "cross_level": -0.35,
         "la_sd": (0.05, 0.03), "dispersion": 10.0}


@pytest.fixture(scope="module")
def log_truth_data(tmp_path_factory) -> Path:
    """Counts from the log model: intercepts and gradients linear in log(X / mean X)."""
    geo = reference.synthetic_geography(50, seed=3, lsoa_per_la=12)
    table, _ = known_truth_table(load_spec(LOG), simulate.simulate(geo, seed=1)[0], TRUTH, seed=3)
    path = tmp_path_factory.mktemp("data") / "log_truth.parquet"
    table.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def fitted(log_truth_data, tmp_path_factory) -> SimpleNamespace:
    """All three fits on one pool of two spawned processes, then a second compare-priors.

    ``compare_priors`` fits the log model under the default and the conflicting prior as two
    parallel jobs on the pool (one per process); the linear model under the default prior then
    runs as a one-job sweep on the same pool, in a process that has just compiled the same model
    code for the same data (the two models differ only in the LA deprivation transform), instead of
    in a third process competing for the two cores. A second ``compare_priors`` with the same
    inputs must fit nothing.
    """
    fits = tmp_path_factory.mktemp("fits")
    out = tmp_path_factory.mktemp("priors")
    linear_job = FitJob(data=log_truth_data, model=LINEAR, priors=DEFAULT, out=fits / "linear.nc",
                        **SETTINGS)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        kw = dict(fits_dir=fits, executor=pool, prior_draws_n=400, **SETTINGS)
        first = compare.compare_priors(log_truth_data, LOG, [DEFAULT, CONFLICTING], out / "one", **kw)
        linear_paths = run_sweep([linear_job], executor=pool)
        stamps = {p: p.stat().st_mtime_ns for p in fits.glob("*.nc")}
        second = compare.compare_priors(log_truth_data, LOG, [DEFAULT, CONFLICTING], out / "two", **kw)
    return SimpleNamespace(first=first, second=second, stamps=stamps, fits=fits,
                           linear=linear_paths, log=first.fits["weakly_informative"])


def test_sweep_runs_jobs_in_parallel_processes_and_returns_every_fit(fitted):
    assert fitted.linear == [fitted.fits / "linear.nc"] and fitted.linear[0].exists()
    results = fitted.first.jobs  # compare-priors' own sweep: default and conflicting prior
    assert [r.path for r in results] == [fitted.first.fits[n] for n in ("weakly_informative",
                                                                        "conflicting")]
    assert all(r.path.exists() for r in results)
    pids = {r.pid for r in results}
    assert len(pids) == 2 and os.getpid() not in pids  # two separate worker processes
    first, second = results
    assert max(first.started, second.started) < min(first.finished, second.finished)  # overlapped
    prov = compare.read_provenance(results[0].path)
    assert prov["sampler"]["chain_method"] == "sequential"
    assert prov["sampler"]["draws"] == SETTINGS["draws"]


def test_loo_prefers_the_data_generating_log_interaction(fitted, log_truth_data):
    lin, log = fitted.linear[0], fitted.log
    result = compare.compare_models([lin, log], data=log_truth_data)  # log-likelihood from the data
    table = result.table.set_index("model")
    elpd_log = table.loc["inverse_intervention_nb_log", "elpd_loo"]
    elpd_lin = table.loc["inverse_intervention_nb", "elpd_loo"]
    assert elpd_log > elpd_lin
    assert result.table["model"].iloc[0] == "inverse_intervention_nb_log"
    assert table.loc["inverse_intervention_nb", "elpd_diff"] == pytest.approx(elpd_log - elpd_lin)
    assert table.loc["inverse_intervention_nb", "dse"] > 0
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table.loc["inverse_intervention_nb_log", "weight"] > 0.5
    # Pareto k diagnostics against the sample-size threshold (400 draws: 0.62, not 0.7): every
    # neighbourhood counted once; warnings exactly when some k is above it
    assert np.allclose(result.pareto["k_threshold"], compare.pareto_k_threshold(400))
    assert (result.pareto[["good", "bad", "very bad (k>1)"]].sum(axis=1) == result.pareto["n"]).all()
    assert len(result.worst) == int(table["k_bad"].sum())
    assert (result.worst["k"] > compare.pareto_k_threshold(400)).all()
    assert bool(result.warnings) == bool(len(result.worst))
    assert all("unreliable" in w and "K-fold" in w and "0.62" in w for w in result.warnings)
    assert result.cv == "rows" and (table["cv"] == "rows").all()
    assert "inverse_intervention_nb_log has the highest" in result.format()


def test_compare_models_cli_writes_tables_and_pages(fitted, log_truth_data, tmp_path, capsys):
    out = tmp_path / "loo"
    assert main(["compare-models", str(fitted.linear[0]), str(fitted.log), "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err  # the fits hold no log-likelihood: it says what it needs
    assert main(["compare-models", str(fitted.linear[0]), str(fitted.log), "--out", str(out),
                 "--data", str(log_truth_data)]) == 0
    printed = capsys.readouterr().out
    assert "elpd_loo" in printed and "stacking weight" in printed
    for name in ("index.html", "index.md", "loo_compare.csv", "pareto_k.csv", "pareto_k_worst.csv"):
        assert (out / name).exists()
    page = (out / "index.md").read_text()
    assert "PSIS-LOO over neighbourhood rows" in page and "k <= 0.7" not in page


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of a fit whose provenance is changed by ``edit(prov)`` (and resealed)."""
    from hierarchy.results.fitfile import load_fit, save_fit, seal

    idata = load_fit(src)
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    edit(prov)
    idata.posterior.attrs["hierarchy"] = json.dumps(prov)
    return save_fit(seal(idata), dst)


def test_compare_models_refuses_different_data_and_outcomes(fitted, tmp_path):
    from hierarchy.language.spec import ModelSpec

    lin, log = fitted.linear[0], fitted.log

    def other_data(prov):
        prov["data_hash"] = "0123456789abcdef"
        if "rows_hash" in prov:  # fits that record it are compared by their rows, outcome and exposure
            prov["rows_hash"]["rows"] = "0123456789abcdef"

    def other_outcome(prov):
        prov["model_spec"]["outcome"] = "s47"
        prov["model_hash"] = ModelSpec.from_dict(prov["model_spec"]).hash()

    moved = _edited_copy(log, tmp_path / "other_data.nc", other_data)
    with pytest.raises(HierarchyError, match="different data|their rows"):
        compare.compare_models([lin, moved])
    s47 = _edited_copy(log, tmp_path / "s47.nc", other_outcome)
    with pytest.raises(HierarchyError, match="different outcomes"):
        compare.compare_models([lin, s47])
    assert main(["compare-models", str(lin), str(moved)]) == 2  # CLI: clear error, no traceback


def test_thinned_log_likelihood_uses_matching_draws(fitted, log_truth_data):
    import arviz as az

    from hierarchy.results.fitfile import add_log_likelihood, load_fit

    idata = add_log_likelihood(load_fit(fitted.log), log_truth_data)
    full = compare.loo(idata)
    groups = {g: getattr(idata, g) for g in idata.groups()}
    groups["log_likelihood"] = idata.log_likelihood.isel(draw=slice(None, None, 3))
    thin = az.InferenceData(**groups)
    reff = compare.relative_eff(thin)
    assert 0 < reff <= 1.5
    est = compare.loo(thin)
    assert est["n_samples"] == thin.log_likelihood.sizes["chain"] * thin.log_likelihood.sizes["draw"]
    assert est["elpd_loo"] == pytest.approx(full["elpd_loo"], abs=3 * full["se"] / 10 + 2)
    sens = compare.power_scaling(thin)
    assert (sens["draws"] == est["n_samples"]).all()
    assert np.isfinite(sens[["prior", "likelihood"]].to_numpy()).all()


def test_compare_priors_reuses_matching_fits(fitted, log_truth_data):
    first, second = fitted.first, fitted.second
    assert first.reused == [] and len(first.fitted) == 2
    # second run with the same inputs: both fits found by their hashes, nothing fitted or touched
    assert second.fitted == [] and second.jobs == []
    assert sorted(second.reused) == sorted(first.fitted)
    assert second.fits == first.fits
    assert {p: p.stat().st_mtime_ns for p in fitted.fits.glob("*.nc")} == fitted.stamps
    assert (pd.read_csv(second.tables["fits"])["source"] == "reused").all()
    # a different prior set (same model and data) is not mistaken for a match
    dhash = data_mod.data_hash(data_mod.load(log_truth_data))
    spec = load_spec(LOG)
    assert compare.find_fit(fitted.fits, model_hash=spec.hash(), priors_hash=load_priors(VAGUE).hash(),
                            data_hash=dhash) is None
    assert compare.find_fit(fitted.fits, model_hash=spec.hash(), priors_hash=load_priors(DEFAULT).hash(),
                            data_hash=dhash) == first.fits["weakly_informative"]


def test_conflicting_prior_is_flagged_by_power_scaling_and_the_default_is_not(fitted):
    first = fitted.first
    sens = first.sensitivity.set_index(["prior_set", "parameter"])
    headline = ["gradient", "gradient score (mean)", "gradient score (10 points less)",
                "gradient score (10 points more)"]
    for p in headline:  # the default prior does not move the gradient estimands
        assert sens.loc[("weakly_informative", p), "prior"] < compare.SENSITIVITY_THRESHOLD
        assert sens.loc[("weakly_informative", p), "diagnosis"] == ""
    for p in ("intercept", "la_deprivation", "cross_level", "dispersion"):
        assert sens.loc[("weakly_informative", p), "diagnosis"] == ""
    # Normal(-1, 0.05) on the gradient where the data say +0.48: strongly prior-sensitive, flagged
    assert sens.loc[("conflicting", "gradient"), "prior"] > 0.15
    assert sens.loc[("conflicting", "gradient"), "diagnosis"] != ""
    assert sens.loc[("conflicting", "gradient score (mean)"), "diagnosis"] != ""
    flagged = first.sensitivity.groupby("prior_set")["diagnosis"].apply(lambda d: (d != "").sum())
    assert flagged["conflicting"] > flagged["weakly_informative"]
    lines = [f for f in first.findings if f.startswith("conflicting: prior-")]
    assert any("gradient (" in f for f in lines)  # said in plain words, with the numbers
    assert not any(f.startswith("weakly_informative: prior-") and "gradient (" in f
                   for f in first.findings)
    page = first.html.read_text()
    assert "conflicting: prior-" in page and "gradient (" in page
    # and it drags the estimate: the gradient at mean LA deprivation moves far between the sets
    est = first.estimands.set_index(["prior_set", "la_level"])
    assert est.loc[("weakly_informative", "mean"), "mean"] == pytest.approx(np.exp(0.48), rel=0.1)
    assert est.loc[("conflicting", "mean"), "mean"] < 1.0


def test_compare_priors_tables_state_the_movement_and_the_page_is_self_contained(fitted):
    first = fitted.first
    mov = first.movement.set_index("la_level")
    # the data (a parquet file without a year column or truth file) have no known year: no published
    # figure is put beside the estimands (hierarchy.published)
    assert mov["published"].isna().all()
    est = first.estimands
    for level, row in mov.iterrows():
        means = est.loc[est["la_level"] == level, "mean"]
        assert row["movement"] == pytest.approx(means.max() - means.min())
        assert row["max_mean"] == pytest.approx(means.max())
    html = first.html.read_text()
    assert html.count("data:image/png;base64,") == 2  # prior predictive + forest plot, embedded
    assert "src='http" not in html and "<link" not in html
    md = first.markdown.read_text()
    assert "![forest](forest.png)" in md and (first.out / "forest.png").exists()
    for name in ("prior_predictive_deciles", "prior_predictive_impossible", "prior_gradients",
                 "posterior_estimands", "movement", "sensitivity", "fits", "prior_sets"):
        assert first.tables[name].exists()
    assert "movement" in md and "No published figures are shown" in md


def test_vague_prior_predictive_puts_visible_mass_on_impossible_rates(log_truth_data, tmp_path, capsys):
    out = tmp_path / "pp"
    code = main(["compare-priors", "--data", str(log_truth_data), "--model", str(LOG), "--priors",
                 str(DEFAULT), str(VAGUE), "--out", str(out), "--prior-only", "--prior-draws", "1000"])
    assert code == 0
    printed = capsys.readouterr().out
    imp = pd.read_csv(out / "prior_predictive_impossible.csv").set_index("prior_set")
    assert imp.loc["vague", "impossible_share"] > 0.25  # about half the neighbourhoods
    assert imp.loc["vague", "visible_mass_on_impossible"]
    # the default puts a little mass there (most deprived neighbourhoods, wide LA gradients), not visible
    assert imp.loc["weakly_informative", "impossible_share"] < 0.02
    assert not imp.loc["weakly_informative", "visible_mass_on_impossible"]
    page = (out / "index.html").read_text()
    assert "vague: in the prior" in page and "visible mass on impossible rates" in page
    assert "weakly_informative: in the prior" in page
    verdicts = [line for line in printed.splitlines() if "visible mass" in line]
    assert len(verdicts) == 1 and "vague" in verdicts[0]
    dec = pd.read_csv(out / "prior_predictive_deciles.csv")
    default = dec[dec["prior_set"] == "weakly_informative"]
    assert default["rate_median"].iloc[-1] > default["rate_median"].iloc[0]  # positive prior gradient
    assert default["rate_median"].between(100, 3000).all()  # in the range of the field
    assert (dec[dec["prior_set"] == "vague"]["rate_upper"] > 1e4).all()


def test_prior_predictive_share_is_the_mean_of_the_decile_shares(log_truth_data):
    table = data_mod.load(log_truth_data)
    spec = load_spec(LOG)
    design = build_design(table, spec)
    pp = compare.prior_predictive(spec, load_priors(VAGUE), design, draws=300, seed=2, year=2019)
    rows = np.bincount(deciles_of(design.x, design.row_ids), minlength=11)[1:]
    assert pp.impossible_share == pytest.approx(np.sum(pp.deciles["impossible_share"] * rows) / rows.sum())
    assert list(pp.gradients["la_level"]) == ["10 points less", "mean", "10 points more"]
    assert pp.gradients["published"].tolist() == [2.33, 1.62, 1.39]


def test_prior_set_names_resolve_and_unknown_names_are_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert compare.resolve_prior_path("vague").resolve() == (ROOT / "priors/vague.toml").resolve()
    with pytest.raises(HierarchyError, match="did you mean 'vague'"):
        compare.resolve_prior_path("vauge")
    copy = tmp_path / "p.toml"
    shutil.copy(VAGUE, copy)
    assert compare.resolve_prior_path(copy) == copy

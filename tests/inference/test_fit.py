"""Fitting: parameter recovery, fit files with provenance, diagnostics, the fit CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy import cli
from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import FitFileError
from hierarchy.inference.diagnostics import diagnose
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results.fitfile import add_log_likelihood, load_fit, provenance, save_fit
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
PRIORS = load_priors(ROOT / "priors/weakly_informative.toml")
TRUTH = {"intercept": -2.9, "gradient": 0.48, "la_deprivation": 0.25, "cross_level": -0.3,
         "la_sd": np.array([0.25, 0.10]), "rho": 0.3, "dispersion": 6.0}


def known_truth_table(spec: ModelSpec, seed: int, n_la: int = 30, lsoa_per_la: int = 50
                      ) -> tuple[pd.DataFrame, dict]:
    """Counts drawn from ``spec`` itself at :data:`TRUTH`, on a generated geography."""
    geo = synthetic_geography(n_la, seed=seed, lsoa_per_la=lsoa_per_la)
    return helpers.known_truth_table(spec, helpers.geography_table(geo), TRUTH, seed)


@pytest.mark.parametrize("family", ["poisson", "negative_binomial"])
def test_parameter_recovery(family):
    """Truth inside simultaneous 95% intervals (Bonferroni over the checks) of every
    population-level parameter; LA gradients mostly inside their own 95% intervals."""
    spec = ModelSpec.from_dict({"name": "t", "family": family,
                                "la_deprivation": {"transform": "log"}})
    table, truth = known_truth_table(spec, seed=5 if family == "poisson" else 6)
    design = build_design(table, spec)
    draws = fit(spec, PRIORS, design, chains=2, tune=500, draws=500, seed=1, chain_method="sequential")
    post = draws.posterior
    checks = ["intercept", "gradient", "la_deprivation", "cross_level"]
    if family == "negative_binomial":
        checks.append("dispersion")
    tail = 0.05 / (2 * (len(checks) + 2))
    for name in checks:
        lo, hi = np.quantile(post[name], [tail, 1 - tail])
        assert lo < truth[name] < hi, f"{family} {name}: truth {truth[name]} outside ({lo:.3f}, {hi:.3f})"
    for k in range(2):
        lo, hi = np.quantile(post["la_sd"][..., k], [tail, 1 - tail])
        assert lo < truth["la_sd"][k] < hi, f"la_sd[{k}] {truth['la_sd'][k]} outside ({lo:.3f}, {hi:.3f})"
    lo, hi = np.quantile(post["la_coef"][..., 1], [0.025, 0.975], axis=(0, 1))
    covered = np.mean((lo < truth["la_coef"][:, 1]) & (truth["la_coef"][:, 1] < hi))
    assert covered >= 0.8, f"LA gradients: 95% intervals cover {covered:.0%} of 30 (expect ~95%)"
    assert draws.stats["diverging"].sum() <= 5


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    """A short NB fit saved to disk, with its inputs.

    Its tests check the fit file (groups, provenance, log-likelihood, refusals), not estimates: 15 LAs
    of ~20 neighbourhoods and 2 x (100 + 100) draws (were 30 x ~50 and 2 x (200 + 200)) are enough, and
    ``--max-draws 100`` keeps it from sampling on to 300 draws while it misses the bar (sampling on is
    tested in test_sampling.py and by the demo in test_cli_paths.py).
    """
    folder = tmp_path_factory.mktemp("fit")
    spec = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    table, _ = known_truth_table(spec, seed=9, n_la=15, lsoa_per_la=20)
    data = folder / "data.csv"
    table.to_csv(data, index=False)
    out = folder / "small.nc"
    assert cli.main(["fit", "--data", str(data), "--out", str(out), "--chains", "2", "--tune", "100",
                     "--draws", "100", "--max-draws", "100", "--quiet", "--chain-method", "sequential"]) == 0
    return out, data, table


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_fit_file_carries_provenance_and_groups(small_fit):
    from hierarchy.data.table import data_hash

    out, data, table = small_fit
    idata = load_fit(out, model=ROOT / "models/inverse_intervention_nb_log.toml",
                     priors=ROOT / "priors/weakly_informative.toml", data_hash=data_hash(table))
    prov = provenance(idata)
    assert prov["model_spec"]["name"] == "inverse_intervention_nb_log"
    assert prov["priors"]["name"] == "weakly_informative"
    assert prov["sampler"]["sampler"] == "numpyro" and prov["sampler"]["chains"] == 2
    assert prov["seed"] == 0 and prov["data_source"] == str(data)
    assert {"pymc", "numpyro", "jax", "arviz"} <= set(prov["versions"])
    assert prov["diagnostics"]["status"] in ("ok", "warn") and "rhat_max" in prov["diagnostics"]
    assert set(idata.groups()) >= {"posterior", "sample_stats", "log_prior", "constant_data"}
    assert "observed_data" not in idata.groups()  # only with --include-data
    assert "log_likelihood" not in idata.groups()  # only with --include-log-likelihood (disclosive)
    ll = add_log_likelihood(idata, table).log_likelihood["referral"]
    assert ll.sizes["neighbourhood"] == len(table) and np.all(np.isfinite(ll.values))
    assert set(idata.log_prior.data_vars) >= {"intercept", "gradient", "la_sd", "la_corr", "dispersion"}
    assert idata.posterior["la_coef"].dims == ("chain", "draw", "la", "coef")


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_pointwise_log_likelihood_matches_scipy(small_fit):
    from scipy import stats

    out, _, table = small_fit
    idata = load_fit(out)
    post = idata.posterior.isel(chain=0, draw=0)
    spec = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    design = build_design(table, spec)
    coef = post["la_coef"].values
    mu = np.exp(design.log_exposure + coef[design.la_index, 0] + coef[design.la_index, 1] * design.w)
    phi = float(post["dispersion"])
    expected = stats.nbinom.logpmf(design.y, phi, phi / (phi + mu))
    got = add_log_likelihood(idata, table).log_likelihood["referral"].isel(chain=0, draw=0).values
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_load_refuses_a_fit_of_another_model_or_prior(small_fit):
    out, _, _ = small_fit
    with pytest.raises(FitFileError, match="fitted with model 'inverse_intervention_nb_log'.*'gradient_poisson'"):
        load_fit(out, model=ROOT / "models/gradient_poisson.toml")
    with pytest.raises(FitFileError, match="prior set 'weakly_informative'.*'vague'"):
        load_fit(out, priors=ROOT / "priors/vague.toml")
    with pytest.raises(FitFileError, match="fitted with data"):
        load_fit(out, data_hash="0" * 16)


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_corrupt_and_truncated_fits_give_clear_errors(small_fit, tmp_path):
    out, _, _ = small_fit
    broken = tmp_path / "broken.nc"
    broken.write_bytes(out.read_bytes()[: out.stat().st_size // 3])
    with pytest.raises(FitFileError, match="cannot be read as a fit file"):
        load_fit(broken)
    with pytest.raises(FitFileError, match="no such fit file"):
        load_fit(tmp_path / "missing.nc")
    idata = load_fit(out)
    idata.posterior.attrs["hierarchy"] = idata.posterior.attrs["hierarchy"].replace(
        '"family": "negative_binomial"', '"family": "poisson"')
    save_fit(idata, tmp_path / "edited.nc")
    with pytest.raises(FitFileError, match="does not match its seal"):
        load_fit(tmp_path / "edited.nc")


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_interrupted_write_leaves_no_partial_file(small_fit, tmp_path, monkeypatch):
    out, _, _ = small_fit
    idata = load_fit(out)
    target = tmp_path / "fit.nc"
    target.write_bytes(b"previous fit")

    def crash(path, **kwargs):
        Path(path).write_bytes(b"half a netCDF")
        raise KeyboardInterrupt

    monkeypatch.setattr(type(idata), "to_netcdf", lambda self, path, **kw: crash(path))
    with pytest.raises(KeyboardInterrupt):
        save_fit(idata, target)
    assert target.read_bytes() == b"previous fit"  # untouched, not half-written
    assert [p.name for p in tmp_path.iterdir()] == ["fit.nc"]  # no temporary left behind


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_fits_command_lists_model_priors_sampler_and_status(small_fit, capsys):
    out, _, _ = small_fit
    assert cli.main(["fits", str(out.parent)]) == 0
    text = capsys.readouterr().out
    assert "small.nc" in text and "inverse_intervention_nb_log" in text and "weakly_informative" in text
    assert "numpyro" in text and ("ok" in text or "warn" in text)


@pytest.mark.xdist_group("small_fit")  # one worker fits once
def test_prior_draws_stand_in_for_a_fit_in_names_shapes_and_groups(small_fit):
    """``tests.helpers.prior_draws`` (the sampler's stand-in in plumbing tests of reports and fit files)
    gives a fit file with the variables, dims and groups of a NUTS fit of the same model and data."""
    from hierarchy.data.table import data_hash
    from hierarchy.results import fitfile

    out, _, table = small_fit
    real = load_fit(out)
    spec = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    design = build_design(table, spec)
    draws = helpers.prior_draws(spec, PRIORS, design, chains=2, draws=30, seed=3)
    fake = fitfile.build_idata(draws, spec, PRIORS, design, data_hash=data_hash(table))
    assert set(fake.groups()) == set(real.groups())
    for group in ("posterior", "sample_stats", "log_prior", "constant_data"):
        assert set(fake[group].data_vars) == set(real[group].data_vars), group
        for name, da in real[group].data_vars.items():
            assert fake[group][name].dims == da.dims, (group, name)
            assert fake[group][name].shape[2 if group != "constant_data" else 0:] == \
                da.shape[2 if group != "constant_data" else 0:], (group, name)
    assert fake.posterior.sizes["draw"] == 30 and np.isfinite(fake.posterior["gradient"]).all()
    assert float(fake.posterior["gradient"].std()) > 0  # draws, not one point


def _idata(chain_means, n=500, seed=0):
    import arviz as az

    rng = np.random.default_rng(seed)
    post = {"intercept": np.stack([rng.normal(m, 1, n) for m in chain_means])}
    stats = {"diverging": np.zeros((len(chain_means), n), bool),
             "energy": rng.normal(size=(len(chain_means), n)),
             "tree_depth": np.full((len(chain_means), n), 3)}
    return az.from_dict(posterior=post, sample_stats=stats)


def test_diagnostics_verdicts():
    good = diagnose(_idata([0, 0, 0, 0]))
    assert good["status"] == "ok" and good["reasons"] == [] and good["rhat_max"] < 1.01
    bad = diagnose(_idata([0, 0, 0, 3]))
    assert bad["status"] == "warn" and any("R-hat" in r for r in bad["reasons"])
    stuck = _idata([0, 0])
    stuck.sample_stats["diverging"][0, :7] = True
    stuck.sample_stats["tree_depth"][1, :50] = 10
    d = diagnose(stuck)
    assert "7 divergent transitions" in d["reasons"] and d["tree_depth_saturation"] == pytest.approx(0.05)
    approx = diagnose(_idata([0]), approximate=True)
    assert approx["status"] == "warn" and "approximation" in approx["reasons"][0]


def test_a_failed_fit_says_what_to_try():
    """Issue 34 item 3: the parameter that failed, what its posterior looks like, and the change to make."""
    import numpy as np
    import xarray as xr

    from hierarchy.inference.diagnostics import advice

    rng = np.random.default_rng(0)
    sd = np.stack([np.abs(rng.normal(0.3, 0.02, (2, 200))), np.abs(rng.normal(0, 0.01, (2, 200)))], -1)
    post = xr.Dataset({"la_sd": (("chain", "draw", "coef"), sd)})
    diag = {"status": "warn", "rhat_max": 1.72, "rhat_worst": "la_sd", "ess_bulk_worst": "la_sd",
            "divergences": 1216, "bfmi_min": 0.21}
    tips = advice(diag, post, model="models/re_referrals_nb.toml")
    assert "la_sd is piled near 0" in tips[0] and "non_centred" in tips[0] and "re_referrals_nb" in tips[0]
    assert any("--target-accept 0.95" in t for t in tips)
    healthy = xr.Dataset({"la_sd": (("chain", "draw", "coef"), np.abs(rng.normal(0.3, 0.02, (2, 200, 2))))})
    slow = {"status": "warn", "rhat_max": 1.02, "rhat_worst": "la_sd", "ess_bulk_worst": "la_sd"}
    assert advice(slow, healthy) == [advice(slow, healthy)[0]] and "--draws 2000" in advice(slow, healthy)[0]
    assert advice({"status": "ok"}, healthy) == []

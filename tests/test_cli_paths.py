"""User paths through the CLI that no other test takes: the demo, simulate, fit with every
sampler and option, sbc on the user's data, validate against the reference geography.

Fast tests use a tiny generated geography and short chains; the end-to-end runs of the demo and
of the PyMC-based samplers are marked slow (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy import cli
from hierarchy.data import reference, simulate
from hierarchy.data.table import data_hash
from hierarchy.errors import HierarchyError
from hierarchy.results.fitfile import load_fit, provenance

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--chains", "2", "--tune", "100", "--draws", "100", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    """A simulated table of 8 generated LAs of ~15 neighbourhoods, saved as CSV."""
    geo = reference.synthetic_geography(8, seed=4, lsoa_per_la=15)
    table, truth = simulate.simulate(geo, seed=6)
    path = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    table.to_csv(path, index=False)
    return path, table, truth


# ------------------------------------------------------------------------------------------ simulate


def test_simulate_command_writes_strata_la_conditions_and_the_year(tmp_path, capsys):
    out = tmp_path / "sim.parquet"
    assert cli.main(["simulate", "--synthetic", "--n-la", "4", "--strata", "age,sex", "--la-conditions",
                     "--year", "2018", "--seed", "3", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert f"in 4 LAs to {out}" in capsys.readouterr().out
    assert table["la"].nunique() == 4 and truth["n_la"] == 4
    assert truth["year"] == 2018 and truth["seed"] == 3 and truth["strata"] == ["age", "sex"]
    # one row per neighbourhood x age band x sex
    assert set(table["age_band"]) == {"0-4", "5-9", "10-15", "16-17"} and set(table["sex"]) == {"female", "male"}
    assert (table.groupby("neighbourhood").size() == 8).all()
    assert not table.duplicated(["neighbourhood", "age_band", "sex"]).any()
    assert truth["la_conditions"]["gradient_per_sd"]["la_rural_share"] > 0  # only with --la-conditions
    assert {"la_rural_share", "la_log_density"} <= set(table.columns)
    # the same seed without the options: no strata, no LA conditions, another year's targets
    plain = tmp_path / "plain.parquet"
    assert cli.main(["simulate", "--synthetic", "--n-la", "4", "--seed", "3", "--out", str(plain)]) == 0
    plain_truth = json.loads(plain.with_suffix(".truth.json").read_text())
    assert plain_truth["year"] == 2019 and plain_truth["strata"] == []
    assert plain_truth["la_conditions"]["gradient_per_sd"]["la_rural_share"] == 0
    assert len(pd.read_parquet(plain)) * 8 == len(table)
    # an existing output is refused without --force, replaced with it
    before = out.read_bytes()
    assert cli.main(["simulate", "--synthetic", "--n-la", "4", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert cli.main(["simulate", "--synthetic", "--n-la", "4", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != before


# ------------------------------------------------------------------------------------------ fit


def test_unknown_sampler_is_refused_by_the_cli_and_the_library(tiny, tmp_path, capsys):
    path, table, _ = tiny
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit", "--data", str(path), "--sampler", "numpyr", "--out", str(tmp_path / "f.nc")])
    assert exc.value.code == 2 and "invalid choice: 'numpyr'" in capsys.readouterr().err
    assert not (tmp_path / "f.nc").exists()
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    with pytest.raises(HierarchyError, match="unknown sampler 'numpyr' \\(did you mean 'numpyro'\\?\\)"):
        fit(spec, load_priors(ROOT / "priors/weakly_informative.toml"), build_design(table, spec),
            sampler="numpyr")


def test_fit_with_columns_float32_include_data_and_vectorized_chains(tiny, tmp_path, capsys):
    """A user's column names (--columns), float32 rows, the counts stored (--include-data) and
    vectorised chains, end to end through `hierarchy fit`."""
    path, table, _ = tiny
    mapped = table.rename(columns={"neighbourhood": "LSOA11CD", "la": "UTLA19CD", "exposure": "kids",
                                   "deprivation": "income", "referral": "refs"})
    data = tmp_path / "mine.csv"
    mapped[["LSOA11CD", "UTLA19CD", "kids", "income", "refs"]].to_csv(data, index=False)
    columns = tmp_path / "map.toml"
    columns.write_text('[columns]\nneighbourhood = "LSOA11CD"\nla = "UTLA19CD"\nexposure = "kids"\n'
                       'deprivation = "income"\n[counts]\nreferral = "refs"\n')
    out = tmp_path / "fit.nc"
    assert cli.main(["fit", "--data", str(data), "--columns", str(columns), "--model", "gradient_poisson",
                     "--float32", "--include-data", "--chain-method", "vectorized", "--out", str(out),
                     "--max-draws", "100", *SHORT]) == 0
    assert f"fit saved to {out}" in capsys.readouterr().out
    canonical = table[["neighbourhood", "la", "exposure", "deprivation", "referral"]]
    idata = load_fit(out, model=ROOT / "models/gradient_poisson.toml", data_hash=data_hash(canonical))
    prov = provenance(idata)
    assert prov["sampler"]["float32"] is True and prov["sampler"]["chain_method_used"] == "vectorized"
    assert prov["column_map"]["neighbourhood"] == "LSOA11CD" and prov["column_map"]["referral"] == "refs"
    assert "observed_data" in idata.groups() and prov["include_data"]
    stored = idata.observed_data["referral"].to_numpy()
    assert len(stored) == len(table) and stored.sum() == table["referral"].sum()
    # --max-draws equal to --draws: no sampling on (the default would go on to 3 x --draws)
    assert prov["sampler"]["max_draws"] == 100 and prov["sampler"]["draws"] == 100
    assert idata.posterior["gradient"].shape == (2, 100)
    assert np.isfinite(idata.posterior["gradient"]).all()
    # (without --include-data the counts stay out: test_fit.py's small fit checks that)


@pytest.mark.slow  # a fresh process for parallel chains, and PyMC / nutpie / BlackJAX compile the model
@pytest.mark.parametrize("sampler", ["numpyro", "pymc", "nutpie"])
def test_every_nuts_sampler_fits_end_to_end(sampler, tiny, tmp_path):
    """`hierarchy fit --sampler S` in a fresh process (parallel chains on separate host devices),
    on the correlated (intercept, gradient) model: the fit file holds a full correlation matrix and
    the gradient's posterior contains the simulated truth."""
    path, _, truth = tiny
    out = tmp_path / f"{sampler}.nc"
    # a fresh process's own device count: an in-process CLI test of this worker may have set XLA_FLAGS
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "XLA_FLAGS": " ".join(flags)}
    proc = subprocess.run([sys.executable, "-m", "hierarchy.cli", "fit", "--data", str(path), "--model",
                           "gradient_nb", "--sampler", sampler, "--chain-method", "parallel", "--out", str(out),
                           "--chains", "2", "--tune", "300", "--draws", "300", "--quiet"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    idata = load_fit(out)
    prov = provenance(idata)
    kept = prov["sampler"]["draws"]  # NumPyro samples on past 300 while the bar is missed (--max-draws 900)
    assert prov["sampler"]["sampler"] == sampler and idata.posterior["gradient"].shape == (2, kept)
    assert 300 <= kept <= 900 if sampler == "numpyro" else kept == 300
    if sampler == "numpyro":
        assert prov["sampler"]["chain_method_used"] == "parallel"
    corr = idata.posterior["la_corr"].to_numpy()
    assert corr.shape[-2:] == (2, 2)
    np.testing.assert_allclose(corr[..., 0, 0], 1) and np.testing.assert_allclose(corr[..., 1, 1], 1)
    np.testing.assert_allclose(corr[..., 0, 1], corr[..., 1, 0])
    assert np.abs(corr[..., 0, 1]).max() < 1 and corr[..., 0, 1].std() > 0
    true = np.log(truth["stages"]["referral"]["gradient_at_mean"])
    lo, hi = np.quantile(idata.posterior["gradient"], [0.005, 0.995])
    assert lo < true < hi, (sampler, true, lo, hi)


# ------------------------------------------------------------------------------------------ sbc, validate


def _prior_draws_as_refits(seen: dict):
    """A stand-in for ``hierarchy.inference.sbc._fit_nuts`` (the NUTS refits, ~60 s of compilation on 2
    busy cores): it records what it was given and returns draws from the prior as each replicate's
    "posterior" (shapes and names as the refits give). The real refits through this command are run by
    tests/inference/test_sbc.py::test_sbc_command_prints_the_uniformity_table_and_writes_the_ranks
    (``make test-slow``, in CI); this test checks the path from the user's data to them."""
    from tests.helpers import prior_draws

    def refits(spec, priors, design, ys, names, *, warmup, draws, thin, keys, vectorize):
        seen.update(design=design, ys=ys, warmup=warmup, draws=draws, thin=thin)
        prior = prior_draws(spec, priors, design, chains=len(ys), draws=-(-draws // thin), seed=1).posterior
        return {k: prior[k] for k in names}, np.zeros(len(ys), dtype=int)

    return refits


def test_sbc_takes_las_and_exposures_from_the_users_data(tiny, tmp_path, capsys, monkeypatch):
    """`sbc --data` (with --columns): the replicates are simulated on the user's LAs and
    neighbourhoods, with the user's exposures and new counts; the output names the data's size, not the
    generated geography's. The refits are stubbed (:func:`_prior_draws_as_refits`)."""
    from hierarchy.inference import sbc

    path, table, _ = tiny
    small = table[table["la"].isin(sorted(table["la"].unique())[:4])]
    data = tmp_path / "mine.csv"
    small.rename(columns={"neighbourhood": "code"}).to_csv(data, index=False)
    columns = tmp_path / "map.toml"
    columns.write_text('[columns]\nneighbourhood = "code"\n')
    out = tmp_path / "ranks.csv"
    seen: dict = {}
    monkeypatch.setattr(sbc, "_fit_nuts", _prior_draws_as_refits(seen))
    code = cli.main(["sbc", "--model", "gradient_poisson", "--priors", "informative_cwip", "--data", str(data),
                     "--columns", str(columns), "--replicates", "4", "--warmup", "30", "--draws", "20",
                     "--thin", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code in (0, 1) and "4 replicates, ranks out of 20 draws" in text
    ranks = pd.read_csv(out, index_col="replicate")
    assert len(ranks) == 4 and {"intercept", "gradient", "la_coef[0,1]"} <= set(ranks.columns)
    assert ranks.to_numpy().min() >= 0 and ranks.to_numpy().max() <= 20
    # the refits got the user's 4 LAs, neighbourhoods and exposures, and counts simulated on them
    design = seen["design"]
    assert sorted(design.la_codes) == sorted(small["la"].unique()) and len(design.la_codes) == 4
    assert sorted(design.row_ids) == sorted(small["neighbourhood"])
    np.testing.assert_allclose(np.sort(design.log_exposure), np.sort(np.log(small["exposure"].to_numpy())))
    assert len(seen["ys"]) == 4 and all(len(y) == len(small) for y in seen["ys"])
    assert not any(np.array_equal(y, design.y) for y in seen["ys"])  # new counts, not the user's
    assert (seen["warmup"], seen["draws"], seen["thin"]) == (30, 20, 1)


def test_validate_with_columns_against_the_reference_geography(reference_dir, tmp_path, capsys):
    """`validate --columns --reference-dir`: real codes pass; a code the reference does not know
    is named as a warning (so the reference is really read, not stubbed)."""
    geo = reference.load_reference(reference_dir)
    lsoa = geo.lsoa.head(40)
    table = pd.DataFrame({"LSOA11CD": lsoa["lsoa"], "UTLA19CD": lsoa["la"], "kids": lsoa["children"],
                          "income": lsoa["income_rate"], "refs": 20})
    columns = tmp_path / "map.toml"
    columns.write_text('[columns]\nneighbourhood = "LSOA11CD"\nla = "UTLA19CD"\nexposure = "kids"\n'
                       'deprivation = "income"\n[counts]\nreferral = "refs"\n')
    good = tmp_path / "good.csv"
    table.to_csv(good, index=False)
    args = ["--columns", str(columns), "--reference-dir", str(reference_dir)]
    assert cli.main(["validate", str(good), *args]) == 0
    assert "reference geography" not in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    table.assign(LSOA11CD=table["LSOA11CD"].where(table.index != table.index[0], "E01999999")).to_csv(
        bad, index=False)
    cli.main(["validate", str(bad), *args])
    text = capsys.readouterr().out
    assert "E01999999" in text and "reference geography" in text, text
    # a reference folder named explicitly but missing is an error, not a silent fallback
    assert cli.main(["validate", str(good), "--columns", str(columns), "--reference-dir",
                     str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ demo


def test_demo_fast_runs_the_main_job_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's main job, small: simulate 20 generated LAs, validate, fit the default model
    (2 x (300 + 300), sampled on to the convergence bar), write the report. About 40-60 s of CPU,
    so not slow."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--fast", "--out", "out", "--fit", "fits/demo.nc"]) == 0
    text = capsys.readouterr().out
    data = tmp_path / "out" / "national_2019.parquet"
    truth = json.loads((tmp_path / "out" / "national_2019.truth.json").read_text())
    assert "geography: synthetic(n_la=20" in text and pd.read_parquet(data)["la"].nunique() == 20
    idata = load_fit(tmp_path / "fits" / "demo.nc", data_hash=data_hash(pd.read_parquet(data)))
    prov = provenance(idata)
    assert prov["model_spec"]["name"] == "inverse_intervention_nb_log" and prov["include_data"]
    # sampled on from 300 draws per chain until the bar (or 1,500): the fast demo's report is fit for use
    sampler = prov["sampler"]
    assert sampler["draws_requested"] == 300 and 300 <= sampler["draws"] <= sampler["max_draws"] == 1500
    assert idata.posterior.sizes["draw"] == sampler["draws"]
    assert prov["diagnostics"]["status"] == "ok" or sampler["draws"] == 1500, prov["diagnostics"]
    index = tmp_path / "out" / "report" / "index.html"
    assert index.is_file() and "below 10 are suppressed" in index.read_text(encoding="utf-8")
    # the fit recovers the simulated referral gradient at mean LA deprivation
    est = pd.read_csv(tmp_path / "out" / "report" / "estimands.csv")
    row = est[(est["estimand"] == "gradient_score") & (est["la_level"] == "mean")
              & (est["scale"] == "per 10 points")].iloc[0]
    assert abs(row["mean"] - truth["stages"]["referral"]["gradient_at_mean"]) < 4 * row["sd"], row.to_dict()
    assert (tmp_path / "out" / "report" / "figures").is_dir() and not (tmp_path / "fits" / "demo.nc.tmp").exists()

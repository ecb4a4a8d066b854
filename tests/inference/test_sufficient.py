"""The export that leaves the children behind: exact likelihood, disclosure refusal, same posterior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import simulate
from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import HierarchyError
from hierarchy.inference import sufficient as su
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup():
    geo = synthetic_geography(6, seed=1, lsoa_per_la=20)
    table, _ = simulate.simulate(geo, seed=2, strata=("sex",))
    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    spec = ModelSpec.from_dict({**spec.to_dict(), "strata": ["sex"]})
    return table, spec, load_priors(ROOT / "priors/weakly_informative.toml")


def test_sums_give_the_same_log_density_up_to_a_constant(setup):
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_density

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    design = build_design(table, spec)
    layout = make_layout(design)
    full, data = model_fn(spec, priors, design, layout), model_data(layout)
    suff = su.sufficient_model(spec, priors, *su.public_design(table.drop(columns=["referral"]), sums, spec))
    diffs = []
    for seed in range(3):
        tr = handlers.trace(handlers.seed(full, seed)).get_trace(data)
        params = {k: v["value"] for k, v in tr.items() if v["type"] == "sample"}
        assert "stratum_gradient_offset" in params
        diffs.append(float(log_density(full, (data,), {}, params)[0] - log_density(suff, (), {}, params)[0]))
    assert np.ptp(diffs) < 1e-6 * max(1.0, abs(diffs[0]))


def test_export_refuses_small_sums_and_non_poisson(setup):
    table, spec, _ = setup
    small = table.copy()
    la0 = small["la"].iloc[0]
    small.loc[small["la"] == la0, "referral"] = 0
    small.loc[small.index[small["la"] == la0][0], "referral"] = 9
    with pytest.raises(HierarchyError, match="fewer than 10 children"):
        su.sufficient_sums(small, spec)
    small.loc[small.index[small["la"] == la0][0], "referral"] = 0
    with pytest.raises(HierarchyError, match="fewer than 10"):  # zeros are disclosive too
        su.sufficient_sums(small, spec)
    nb = ModelSpec.from_dict({**spec.to_dict(), "family": "negative_binomial"})
    with pytest.raises(HierarchyError, match="only for a Poisson"):
        su.sufficient_sums(table, nb)


def test_sums_file_round_trip(setup, tmp_path):
    table, spec, _ = setup
    sums = su.sufficient_sums(table, spec)
    su.write_sums(sums, tmp_path / "s.csv", spec=spec, threshold=10)
    back = su.read_sums(tmp_path / "s.csv")
    assert (back["n"] >= 10).all()
    np.testing.assert_allclose(back["sum_yw"], sums["sum_yw"], rtol=1e-9)


@pytest.mark.slow
@pytest.mark.long
def test_sufficient_fit_matches_neighbourhood_fit(setup):
    from hierarchy.inference.sampling import fit

    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    outside = su.fit_sufficient(sums, table.drop(columns=["referral"]), spec, priors, chains=2, tune=400,
                                draws=600, seed=1)
    inside = fit(spec, priors, build_design(table, spec), chains=2, tune=400, draws=600, seed=2,
                 progress=False).posterior
    for name in ("gradient", "intercept"):
        a, b = np.ravel(outside[name]), np.ravel(inside[name])
        se = np.sqrt(a.var() / 200 + b.var() / 200)  # conservative ESS of 200 per fit
        assert abs(a.mean() - b.mean()) < 4 * se, (name, a.mean(), b.mean(), se)


@pytest.mark.slow  # ~110 s on the shared 2-core machine (compiles, samples, summary)
@pytest.mark.long
def test_fit_sufficient_cli_writes_a_normal_fit_file(tmp_path, capsys):
    """extract -> durations table (stays inside) -> sums -> hierarchy fit --sufficient -> summary."""
    import pandas as pd

    from hierarchy.cli import main
    from hierarchy.data import childsim
    from hierarchy.data import extract as ex
    from hierarchy.data import table as data
    from hierarchy.results import durations as du
    from hierarchy.results.fitfile import load_fit, provenance

    geo = synthetic_geography(6, seed=3, lsoa_per_la=30)
    extract, _, _ = childsim.simulate_extract(geo, year=2019, seed=2)
    sp = du.spells(ex.parse_extract(extract), *du.SPELLS["cin"], since=pd.Timestamp("2018-04-01"),
                   extract_end=pd.Timestamp("2019-03-31"))
    with pytest.raises(HierarchyError, match="fewer than 10 children"):  # the 182-365 band of small LAs
        su.sufficient_sums(du.model_table(sp, geo), load_spec(ROOT / "models/cin_duration_poisson.toml"))
    table = du.model_table(sp, geo, (0, 91))  # coarser bands: every sum behind >= 10 closures
    inside = data.write_table(table, tmp_path / "cin.parquet")
    public = data.write_table(table.drop(columns=["events"]), tmp_path / "public.parquet")
    sums, fit = tmp_path / "sums.csv", tmp_path / "sums.nc"
    assert main(["export-sufficient", str(inside), "--model", "cin_duration_poisson", "--out", str(sums)]) == 0
    assert main(["fit", "--sufficient", str(inside), "--data", str(public), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "30", "--draws", "30", "--quiet",
                 "--out", str(fit)]) == 2  # the table with counts is not a sums file
    assert main(["fit", "--sufficient", str(sums), "--data", str(inside), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "30", "--draws", "30", "--quiet",
                 "--out", str(fit)]) == 2  # the public table may not carry the counts
    assert "holds no counts" in capsys.readouterr().err
    assert main(["fit", "--sufficient", str(sums), "--data", str(public), "--model", "gradient_poisson",
                 "--chains", "1", "--tune", "30", "--draws", "30", "--quiet", "--out", str(fit)]) == 2
    assert "exported for a model" in capsys.readouterr().err
    assert main(["fit", "--sufficient", str(sums), "--data", str(public), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "100", "--draws", "100", "--quiet",
                 "--out", str(fit)]) == 0
    idata = load_fit(fit, model=ROOT / "models/cin_duration_poisson.toml",
                     priors=ROOT / "priors/time_to_event.toml")
    prov = provenance(idata)
    assert prov["sampler"]["likelihood"] == "sufficient_sums" and "sums.csv" in prov["data_source"]
    assert "log_likelihood" not in idata.groups() and "observed_data" not in idata.groups()
    assert set(idata.posterior.stratum.values) == {"0091+"}
    capsys.readouterr()
    assert main(["summary", str(fit)]) == 0
    assert "gradient" in capsys.readouterr().out
    est = du.posterior_estimands(idata)
    assert len(est) == 15 and (est["median_days"] > 0).all()


def test_public_table_must_match_the_sums(setup):
    table, spec, _ = setup
    sums = su.sufficient_sums(table, spec)
    public = table.drop(columns=["referral"])
    with pytest.raises(HierarchyError, match="have no sum"):  # an LA the sums do not cover
        su.public_design(public, sums[sums["la"] != sums["la"].iloc[0]], spec)
    extra = public[public["la"] == public["la"].iloc[0]].assign(la="LA999",
                                                                neighbourhood=lambda t: t["neighbourhood"] + "x")
    with pytest.raises(HierarchyError, match="have no sum"):
        su.public_design(pd.concat([public, extra]), sums, spec)


# ---------------------------------------------------------------------------- the commands' files, from any folder


def test_export_sufficient_never_writes_over_a_file_and_works_from_any_folder(tmp_path, monkeypatch, capsys):
    """Run from a folder with no models/ (the model is found by its shipped name); an existing sums
    file, the input table or a file of another kind is refused, untouched; --force replaces a sums file."""
    from hierarchy.cli import main
    from hierarchy.data import table as data

    table, _ = simulate.simulate(synthetic_geography(6, seed=1, lsoa_per_la=20), seed=2)
    inside = data.write_table(table, tmp_path / "inside.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sums = tmp_path / "sums.csv"
    assert main(["export-sufficient", str(inside), "--out", str(sums)]) == 0
    first = sums.read_bytes()
    assert su.read_sums(sums)["n"].min() >= 10 and "gradient_poisson" in first.decode().splitlines()[0]
    sums.write_text(first.decode().replace("gradient_poisson", "edited by hand"))
    capsys.readouterr()
    assert main(["export-sufficient", str(inside), "--out", str(sums)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert "edited by hand" in sums.read_text()  # untouched
    assert main(["export-sufficient", str(inside), "--out", str(inside)]) == 2  # its own input
    assert inside.stat().st_size > 0 and len(pd.read_parquet(inside)) == len(table)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main(["export-sufficient", str(inside), "--out", str(other)]) == 2  # not a CSV name
    assert other.read_text() == "mine"
    assert main(["export-sufficient", str(inside), "--out", str(sums), "--force"]) == 0
    assert sums.read_bytes() == first
    assert list(elsewhere.iterdir()) == []  # nothing written where the command ran


def test_fit_sufficient_defaults_are_shipped_files_found_from_any_folder(tmp_path, monkeypatch):
    """fit-sufficient's default model and priors are the shipped gradient_poisson and
    weakly_informative wherever it runs (they were paths relative to the working folder)."""
    from hierarchy import cli, shipped, workflow

    seen = {}
    monkeypatch.setattr(workflow, "fit_sums_files", lambda **kw: seen.update(kw) or "fitted")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sums.csv").write_text("la\n")
    (tmp_path / "public.csv").write_text("la\n")
    assert cli.main(["fit-sufficient", "sums.csv", "--public", "public.csv", "--out", "fit.nc"]) == 0
    assert seen["model"] == shipped.resolve("gradient_poisson", "models") == ROOT / "models/gradient_poisson.toml"
    assert seen["priors"] == ROOT / "priors/weakly_informative.toml"
    assert seen["model"].is_file() and seen["priors"].is_file()
    (tmp_path / "fit.nc").write_text("not a fit")
    assert cli.main(["fit-sufficient", "sums.csv", "--public", "public.csv", "--out", "fit.nc"]) == 2
    assert (tmp_path / "fit.nc").read_text() == "not a fit"


def test_pseudo_counts_add_up_to_each_cells_sum():
    """Largest remainders: whole numbers in proportion to the shares, summing exactly to each cell's n."""
    n = np.array([7.0, 0.0, 10.0])
    cell = np.array([0, 0, 0, 1, 2, 2])
    share = np.array([0.5, 0.3, 0.2, 1.0, 0.55, 0.45])
    out = su._apportion(n, cell, share)
    assert out.tolist() == [4, 2, 1, 0, 6, 4]  # 3.5, 2.1, 1.4 -> 3 + 2 + 1 = 6, the one left to 3.5
    assert np.bincount(cell, out).tolist() == n.tolist()

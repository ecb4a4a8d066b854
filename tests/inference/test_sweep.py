"""Sweeps on Dask: a grid of fits on a two-worker local cluster equals the sequential run, a rerun
refits nothing, and a failing fit is reported while the others finish.

One tiny data set (6 LAs of ~8 neighbourhoods), the Poisson gradient model, 2 chains x (50 + 50)
draws: the checks are about where and whether fits run, not about what they estimate. The grid's
second model is of assessments, a column the data lack, so its fits fail inside the workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from hierarchy.cli import main
from hierarchy.data import reference, simulate
from hierarchy.errors import HierarchyError, SpecError
from hierarchy.inference import cluster, sweep
from hierarchy.inference.grid import TABLE, load_grid
from hierarchy.inference.sweep import FitJob, SweepError, execute, run_jobs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
GRID = """
data = "tiny.parquet"
model = ["gradient_poisson", "assessment_poisson.toml"]
priors = "weakly_informative"

[settings]
chains = 2
tune = 50
draws = 50
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grid")
    table, _ = simulate.simulate(reference.synthetic_geography(6, seed=1, lsoa_per_la=8), seed=1)
    table.to_parquet(folder / "tiny.parquet")
    spec = (ROOT / "models/gradient_poisson.toml").read_text()
    (folder / "assessment_poisson.toml").write_text(
        spec.replace('name = "gradient_poisson"', 'name = "assessment_poisson"')
        .replace('formula = "referral ~', 'formula = "assessment ~'))
    (folder / "grid.toml").write_text(GRID)
    return folder / "grid.toml"


def _posterior(path: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
        return {k: ds[k].values for k in ds.data_vars}


@pytest.mark.slow  # a two-worker Dask cluster and its fits, ~90 s: run by make test-slow (CI runs it)
def test_two_worker_sweep_equals_the_sequential_run_and_a_rerun_refits_nothing(grid, tmp_path):
    out = tmp_path / "dask"
    assert main(["sweep", str(grid), "--out", str(out), "--workers", "2", "--quiet"]) == 1  # a fit failed
    table = pd.read_csv(out / TABLE)
    assert table["status"].tolist() == ["fitted", "fitted", "failed", "failed"]
    assert table["seed"].tolist() == [0, 1, 0, 1]
    fitted, failed = table[table["status"] == "fitted"], table[table["status"] == "failed"]
    assert failed["error"].str.contains("assessment").all()  # the column the model names and the data lack
    assert failed["pid"].isna().all() and not any(out.glob("assessment_poisson*.nc"))
    assert os.getpid() not in set(fitted["pid"])  # fitted in worker processes
    assert fitted["key"].nunique() == 2 and fitted["diagnostics"].notna().all()

    sequential = execute(load_grid(grid, tmp_path / "seq"), scheduler="synchronous")
    assert sequential.table()["status"].tolist() == table["status"].tolist()
    assert sequential.table()["key"].tolist()[:2] == fitted["key"].tolist()
    for name in fitted["out"]:
        dask_draws, seq_draws = _posterior(Path(name)), _posterior(tmp_path / "seq" / Path(name).name)
        assert dask_draws.keys() == seq_draws.keys()
        for var, values in dask_draws.items():
            np.testing.assert_array_equal(values, seq_draws[var], err_msg=var)
    assert not np.array_equal(*(_posterior(Path(n))["gradient"] for n in fitted["out"]))  # seeds differ

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    assert main(["sweep", str(grid), "--out", str(out), "--workers", "1", "--quiet"]) == 1
    again = pd.read_csv(out / TABLE)
    assert again["status"].tolist() == ["skipped", "skipped", "failed", "failed"]  # failed ones retried
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nc")} == stamps


def test_run_jobs_raises_every_failure_after_the_others_and_refuses_one_file_twice(grid, tmp_path):
    bad = FitJob(data=grid.parent / "tiny.parquet", model=grid.parent / "missing.toml",
                 priors=ROOT / "priors/weakly_informative.toml", out=tmp_path / "a.nc")
    with pytest.raises(SweepError, match="(?s)1 of 1 fit.*missing.toml"):  # the files are read first
        run_jobs([bad], scheduler="synchronous")
    with pytest.raises(HierarchyError, match="same fit file"):
        run_jobs([bad, bad])


def test_grid_errors_name_the_file_and_the_key(grid, tmp_path):
    jobs = load_grid(grid, tmp_path)
    assert [j.out.name for j in jobs][:2] == ["gradient_poisson__weakly_informative__tiny__2x50+50_seed0.nc",
                                               "gradient_poisson__weakly_informative__tiny__2x50+50_seed1.nc"]
    assert all(j.chains == 2 and j.draws == 50 for j in jobs)
    for text, message in [
        (GRID.replace("seed =", "sead ="), "unknown setting.*sead.*did you mean 'seed'"),
        (GRID.replace("chains = 2", "chains = 2.5"), "settings.chains' must be int"),
        (GRID.replace('"tiny.parquet"', '"nope.parquet"'), "nope.parquet does not exist"),
        (GRID.replace('"weakly_informative"', '"weakly_informativ"'), "did you mean 'weakly_informative'"),
        (GRID.replace('"weakly_informative"', '["weakly_informative", "weakly_informative"]'),
         "two fits would be saved as"),
    ]:
        path = grid.parent / "bad_grid.toml"
        path.write_text(text)
        with pytest.raises(SpecError, match=message) as err:
            load_grid(path, tmp_path)
        assert str(path) in str(err.value)


def test_scheduler_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv(cluster.SCHEDULER_ENV, "tcp://10.0.0.1:8786")
    assert cluster.resolve_scheduler("tcp://other:1") == "tcp://other:1"
    assert cluster.resolve_scheduler(None) == "tcp://10.0.0.1:8786"
    monkeypatch.setenv(cluster.SCHEDULER_ENV, " ")
    assert cluster.resolve_scheduler(None) is None
    env = cluster.worker_environment(3, {"JAX_COMPILATION_CACHE_DIR": "/c", "XLA_FLAGS": "--xla_foo=1"})
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=3"
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/c"


def test_a_changed_covariate_changes_the_job_key(tmp_path):
    """A sweep skips a job whose key it has finished: the key must see every column the model reads,
    here the ``rural`` of ``w:rural``, not only the canonical ones (it did not)."""
    from hierarchy.inference.sweep import job_key

    table, _ = simulate.simulate(reference.synthetic_geography(4, seed=1, lsoa_per_la=6), seed=1)
    table["rural"] = (np.arange(len(table)) % 2).astype(float)
    job = FitJob(data=tmp_path / "d.parquet", model=ROOT / "models/rural_gradient_nb.toml",
                 priors=ROOT / "priors/weakly_informative.toml", out=tmp_path / "f.nc")
    table.to_parquet(job.data)
    before = job_key(job)
    table.assign(rural=1.0 - table["rural"]).to_parquet(job.data)
    assert job_key(job) != before
    table.to_parquet(job.data)
    assert job_key(job) == before


def test_jobs_differing_only_in_a_same_structure_prior_set_run_as_one_task(grid, tmp_path, monkeypatch):
    """Batched (the default): weakly_informative and informative_cwip share a task, vague runs alone with
    the reason in the table; unbatched: one task per job. The fitting itself is stubbed (a thread pool
    runs the tasks in this process): what is checked is which jobs go together and what the table says."""
    from concurrent.futures import ThreadPoolExecutor

    from hierarchy import workflow

    tasks = []

    def fake_batch(*, priors, outs, **_kw):
        tasks.append([Path(p).stem for p in priors])
        return [workflow.PriorFit(out=Path(o), summary="stub", batch=len(priors)) for o in outs]

    def fake_single(*, priors, **_kw):
        tasks.append([Path(priors).stem])
        return "stub"

    monkeypatch.setattr(workflow, "fit_prior_files", fake_batch)
    monkeypatch.setattr(workflow, "fit_files", fake_single)
    jobs = [FitJob(data=grid.parent / "tiny.parquet", model=ROOT / "models/gradient_poisson.toml",
                   priors=ROOT / f"priors/{p}.toml", out=tmp_path / f"{p}.nc", chains=2, tune=10, draws=10)
            for p in ("weakly_informative", "vague", "informative_cwip")]
    said = []
    with ThreadPoolExecutor(1) as pool:
        table = execute(jobs, executor=pool, log=said.append).table()
    assert sorted(tasks) == [["vague"], ["weakly_informative", "informative_cwip"]]
    assert table["status"].tolist() == ["fitted"] * 3 and table["batch"].tolist() == [2, 1, 2]
    assert table["note"].iloc[1].startswith("vague uses Exponential for dispersion, weakly_informative Gamma")
    assert table["note"].iloc[[0, 2]].isna().all()
    assert "2 fits in one program: weakly_informative.nc, informative_cwip.nc" in said
    tasks.clear()
    table = execute(jobs, scheduler="synchronous", batched=False).table()
    assert tasks == [["weakly_informative"], ["vague"], ["informative_cwip"]]
    assert table["batch"].tolist() == [1, 1, 1] and table["note"].isna().all()


# ------------------------------------------------------------------------------ method (issue 29 item 1)


def test_the_method_enters_the_key_only_when_it_is_not_nuts():
    """A rerun of a sweep made before the method existed refits nothing: NUTS keys are what they were
    (the literal is the key computed by the content_key of before the method was added)."""
    from hierarchy.inference.sweep import content_key, fit_key

    hashes = {"data_hash": "d" * 16, "model_hash": "m" * 16, "priors_hash": "p" * 16}
    settings = {"sampler": "numpyro", "chains": 2, "tune": 50, "draws": 50, "seed": 1, "float32": False,
                "include_data": False}
    old = "23bcbd7becd0a570"
    assert content_key(**hashes, settings=settings) == old
    assert content_key(**hashes, settings={**settings, "method": "nuts"}) == old
    laplace = content_key(**hashes, settings={**settings, "method": "laplace"})
    assert laplace != old
    prov = {**hashes, "include_data": False}
    assert fit_key({**prov, "sampler": {**settings, "method": "nuts"}}) == old
    assert fit_key({**prov, "sampler": {**settings, "method": "laplace"}}) == laplace
    # a Laplace job fitted with NUTS because the model is outside the regime keeps the key it was asked with
    assert fit_key({**prov, "sampler": {**settings, "method": "nuts", "method_requested": "laplace"}}) == laplace


def test_grid_method_setting_names_the_fits_and_bad_values_name_the_file(grid, tmp_path):
    path = grid.parent / "method_grid.toml"
    path.write_text(GRID.replace("seed = [0, 1]", 'seed = 0\nmethod = ["nuts", "laplace"]'))
    jobs = load_grid(path, tmp_path)
    assert [(j.method, j.out.name) for j in jobs[:2]] == [
        ("nuts", "gradient_poisson__weakly_informative__tiny__2x50+50_seed0.nc"),
        ("laplace", "gradient_poisson__weakly_informative__tiny__2x50+50_seed0_laplace.nc")]
    for text, message in [('method = "lapalce"', "method must be one of nuts, laplace.*did you mean 'laplace'"),
                          ('method = "laplace"\nsampler = "nutpie"', "'laplace' samples the hyperparameters "
                                                                      "with NumPyro NUTS"),
                          ("method = 1", "settings.method' must be str")]:
        path.write_text(GRID.replace("seed = [0, 1]", f"seed = 0\n{text}"))
        with pytest.raises(SpecError, match=message) as err:
            load_grid(path, tmp_path)
        assert str(path) in str(err.value)


def test_laplace_jobs_are_fitted_one_by_one_with_their_method_and_the_table_shows_it(grid, tmp_path, monkeypatch):
    """Jobs differing only in a same-structure prior set are batched under NUTS, not under Laplace: each
    Laplace job goes to fit_files with method="laplace", the reason in the table's note; a NUTS and a
    Laplace job of the same prior set are never one task. The fitting is stubbed."""
    from hierarchy import workflow

    calls = []

    def fake_batch(*, priors, outs, method, **_kw):
        calls.append(("batch", method, sorted(Path(p).stem for p in priors)))
        return [workflow.PriorFit(out=Path(o), summary="stub", batch=len(priors)) for o in outs]

    def fake_single(*, priors, method, **_kw):
        calls.append(("alone", method, [Path(priors).stem]))
        return "stub"

    def fake_provenance(path):  # what fit_files records of a refused Laplace fit (method_refused)
        refused = Path(path).stem == "informative_cwip_laplace"
        return {"sampler": {"method_refused": "a reason"}} if refused else None

    monkeypatch.setattr(workflow, "fit_prior_files", fake_batch)
    monkeypatch.setattr(workflow, "fit_files", fake_single)
    monkeypatch.setattr(sweep, "read_provenance", fake_provenance)
    jobs = [FitJob(data=grid.parent / "tiny.parquet", model=ROOT / "models/gradient_poisson.toml",
                   priors=ROOT / f"priors/{p}.toml", out=tmp_path / f"{p}_{m}.nc", chains=2, tune=10, draws=10,
                   method=m)
            for m in ("nuts", "laplace") for p in ("weakly_informative", "informative_cwip")]
    table = execute(jobs, scheduler="synchronous").table()
    assert sorted(calls) == [("alone", "laplace", ["informative_cwip"]),
                             ("alone", "laplace", ["weakly_informative"]),
                             ("batch", "nuts", ["informative_cwip", "weakly_informative"])]
    assert table["method"].tolist() == ["nuts", "nuts", "laplace", "laplace"]
    assert table["batch"].tolist() == [2, 2, 1, 1] and table["key"].nunique() == 4
    assert table["note"].iloc[:2].isna().all()
    assert table["note"].iloc[2] == "method laplace: fits batched in one program run NUTS on every parameter"
    assert table["note"].iloc[3] == "method laplace refused (a reason); fitted with NUTS"


@pytest.mark.slow  # one Laplace fit (2 chains x (50 + 50)), in this process: ~2-4 min on two shared cores
def test_a_laplace_sweep_records_its_method_and_a_rerun_skips_it(grid, tmp_path):
    path = grid.parent / "laplace_grid.toml"
    path.write_text(GRID.replace('["gradient_poisson", "assessment_poisson.toml"]', '"gradient_poisson"')
                    .replace("seed = [0, 1]", 'seed = 0\nmethod = "laplace"'))
    out = tmp_path / "laplace"
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", "synchronous", "--quiet"]) == 0
    table = pd.read_csv(out / TABLE)
    assert table["method"].tolist() == ["laplace"] and table["status"].tolist() == ["fitted"]
    fit = Path(table["out"].iloc[0])
    assert fit.name.endswith("_seed0_laplace.nc")
    with xr.open_dataset(fit, group="posterior", engine="h5netcdf") as ds:
        sampler = json.loads(ds.attrs["hierarchy"])["sampler"]
    assert sampler["method"] == "laplace" and "laplace" in sampler
    stamp = fit.stat().st_mtime_ns
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", "synchronous", "--quiet"]) == 0
    assert pd.read_csv(out / TABLE)["status"].tolist() == ["skipped"] and fit.stat().st_mtime_ns == stamp

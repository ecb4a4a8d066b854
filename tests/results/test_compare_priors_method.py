"""compare-priors ``method`` (issue 29 item 1): only fits of the asked method are reused, and the fit
table says which method each fit used (and when a Laplace fit fell back to NUTS)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import xarray as xr

from hierarchy.cli import build_parser
from hierarchy.results.compare_priors import _fit_table, find_fit, fit_method

HASHES = {"model_hash": "m" * 16, "priors_hash": "p" * 16, "data_hash": "d" * 16}


def _fake_fit(path: Path, sampler: dict, mtime: int) -> Path:
    """A file that reads as a fit: a posterior group whose attributes carry the provenance."""
    prov = {**HASHES, "sampler": {"chains": 2, "draws": 100, **sampler}, "diagnostics": {"status": "ok"}}
    xr.Dataset(attrs={"hierarchy": json.dumps(prov)}).to_netcdf(path, group="posterior", engine="h5netcdf")
    os.utime(path, (mtime, mtime))
    return path


def test_find_fit_reuses_only_fits_asked_for_with_the_same_method(tmp_path):
    old = _fake_fit(tmp_path / "old.nc", {}, 1_000)  # made before the method existed: NUTS
    nuts = _fake_fit(tmp_path / "nuts.nc", {"method": "nuts"}, 2_000)
    laplace = _fake_fit(tmp_path / "laplace.nc", {"method": "laplace"}, 3_000)
    assert find_fit(tmp_path, **HASHES) == nuts  # the newest NUTS fit, never the newer Laplace one
    assert find_fit(tmp_path, **HASHES, method="laplace") == laplace
    nuts.unlink()
    assert find_fit(tmp_path, **HASHES) == old
    laplace.unlink()
    assert find_fit(tmp_path, **HASHES, method="laplace") is None
    # a Laplace fit that fell back to NUTS is what a Laplace comparison asked for
    fell = _fake_fit(tmp_path / "fell.nc", {"method": "nuts", "method_requested": "laplace"}, 4_000)
    assert find_fit(tmp_path, **HASHES, method="laplace") == fell
    assert find_fit(tmp_path, **HASHES) == old


def test_the_fit_table_says_which_method_each_fit_used():
    provs = {"a": {"sampler": {"method": "laplace", "chains": 2}, "diagnostics": {"status": "ok"}},
             "b": {"sampler": {"chains": 2}, "diagnostics": {"status": "warn", "reasons": ["R-hat 1.02"]}},
             "c": {"sampler": {"method": "nuts", "method_requested": "laplace", "method_refused": "MSOA term"},
                   "diagnostics": {"status": "ok"}}}
    # provenance() reads idata.posterior.attrs; _fit_table reads a prior set's name only
    idatas = {n: SimpleNamespace(posterior=xr.Dataset(attrs={"hierarchy": json.dumps(p)}))
              for n, p in provs.items()}
    fits = {n: Path(f"{n}.nc") for n in provs}
    table = _fit_table(fits, [fits["b"]], idatas, [SimpleNamespace(name=n) for n in provs])
    assert table["method"].tolist() == ["laplace", "nuts", "nuts"]
    assert table["source"].tolist() == ["fitted now", "reused", "fitted now"]
    assert table["notes"].tolist() == ["", "R-hat 1.02", "method laplace asked, fitted with nuts (MSOA term)"]
    assert fit_method(provs["c"]) == ("laplace", "nuts") and fit_method(provs["b"]) == ("nuts", "nuts")


def test_compare_priors_cli_takes_the_method():
    parser = build_parser()
    base = ["compare-priors", "--data", "d.csv", "--priors", "vague", "--out", "o"]
    assert parser.parse_args(base).method == "nuts"
    assert parser.parse_args([*base, "--method", "laplace"]).method == "laplace"


@pytest.mark.slow
@pytest.mark.long  # two short Laplace fits (~5-8 min on two shared cores); the sweep test covers the path in CI
def test_compare_priors_by_laplace_fits_each_set_alone_and_the_pages_say_so(tmp_path, capsys):
    from hierarchy import cli
    from hierarchy.data import reference, simulate

    table, _ = simulate.simulate(reference.synthetic_geography(6, seed=4, lsoa_per_la=12), seed=6)
    data = tmp_path / "tiny.csv"
    table.to_csv(data, index=False)
    out, fits = tmp_path / "cp", tmp_path / "fits"
    args = ["compare-priors", "--data", str(data), "--model", "gradient_poisson", "--priors", "weakly_informative",
            "informative_cwip", "--out", str(out), "--fits-dir", str(fits), "--chains", "2", "--tune", "60",
            "--draws", "60", "--workers", "1", "--prior-draws", "50"]
    assert cli.main([*args, "--method", "laplace"]) == 0, capsys.readouterr().err[-2000:]
    said = capsys.readouterr().out
    # the two sets differ only in numbers: under NUTS one program would fit both
    assert said.count("fitted alone (method laplace: fits batched in one program run NUTS") == 2
    table = pd.read_csv(out / "fits.csv")
    assert table["method"].tolist() == ["laplace", "laplace"] and set(table["source"]) == {"fitted now"}
    assert all(p.name.endswith("__laplace.nc") for p in fits.glob("*.nc")) and len(list(fits.glob("*.nc"))) == 2
    assert "laplace" in (out / "index.md").read_text()
    assert cli.main([*args, "--method", "laplace"]) == 0  # found again: nothing refitted
    assert "fits reused: 2, fitted now: 0" in capsys.readouterr().out

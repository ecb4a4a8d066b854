"""A conversion-rate model (a count as exposure) reported with and without its data (issue 33 item 1).

The fit file holds no s47 count; the report says what it cannot check without the table, and with
it publishes the s47 denominators only under the same rule as any observed count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import reference, simulate
from hierarchy.data.table import data_hash
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec
from hierarchy.reporting import report
from hierarchy.results import fitfile

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.xdist_group("conversion_report")]


@pytest.fixture(scope="module")
def conversion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conversion_report")
    geo = reference.synthetic_geography(5, seed=5, lsoa_per_la=30)
    table = simulate.simulate(geo, seed=5)[0]
    table = table[table["s47"] > 0].reset_index(drop=True)
    data = folder / "data.parquet"
    table.to_parquet(data)
    spec = ModelSpec.from_dict({"name": "conversion",
                                "formula": "cp_plan ~ w * z + (1 + w | la) + offset(log(s47))"})
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    draws = fit(spec, priors, design, chains=2, tune=60, draws=40, seed=1, progress=False,
                chain_method="sequential")
    idata = fitfile.build_idata(draws, spec, priors, design, data_hash=data_hash(table, **spec.hashed_columns))
    return folder, table, data, fitfile.save_fit(idata, folder / "conversion.nc")


def test_without_its_data_the_report_says_what_it_could_not_check(conversion):
    folder, _, _, path = conversion
    out = report.write_report(path, folder / "bare").parent
    assert not (out / "deciles.csv").exists() and (out / "estimands.csv").exists()
    assert "Not run: the model's exposure ('s47') is a count" in (out / "report.md").read_text()


def test_with_its_data_the_denominators_are_published_as_counts(conversion):
    folder, table, data, path = conversion
    out = report.write_report(path, folder / "full", data=data, for_checking=folder / "checking").parent
    la = pd.read_csv(out / "la_deciles.csv")
    shown = pd.to_numeric(la["children"], errors="coerce").to_numpy(dtype=float)
    assert np.isnan(shown).any()  # small s47 totals suppressed
    kept = shown[np.isfinite(shown)]
    assert (kept >= 10).all() and (kept % 5 == 0).all()
    small = set(table.loc[(table["s47"] > 0) & (table["s47"] < 10), "s47"])
    raw_cells = table.groupby("la")["s47"].sum()
    for csv in [*out.glob("*.csv"), *(folder / "checking").rglob("*.csv")]:
        frame = pd.read_csv(csv)
        if "children" in frame:
            values = set(pd.to_numeric(frame["children"], errors="coerce").dropna())
            assert not (values & small - {0.0}) or csv.name == "deciles.csv", csv
            assert not (values & {float(v) for v in raw_cells if v % 5}), csv

"""A conversion-rate model (a count as exposure) reported with and without its data (issue 33 item 1).

The fit file holds no s47 count; the report says what it cannot check without the table, and with
it publishes the s47 denominators only under the same rule as any observed count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy.reporting import report

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.xdist_group("conversion_report")]


@pytest.fixture(scope="module")
def conversion(conversion_fit, tmp_path_factory):
    """The session's conversion fit (tests/conftest.py, shared with test_fit_disclosure.py), and its data
    saved in a folder of this module's own, where the reports are written."""
    folder = tmp_path_factory.mktemp("conversion_report")
    data = folder / "data.parquet"
    conversion_fit.table.to_parquet(data)
    return folder, conversion_fit.table, data, conversion_fit.path


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

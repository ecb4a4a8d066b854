"""Moderator contrasts: worded per year for a numeric year, interval at the asked prob (issue 34 item 5)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.results import estimands


def _fake(monkeypatch, *, row_x: bool):
    rng = np.random.default_rng(0)
    base = np.exp(rng.normal(0.2, 0.02, (2, 500)))
    rural, year = np.exp(rng.normal(0.1, 0.05, (2, 500))), np.exp(rng.normal(-0.03, 0.01, (2, 500)))
    g = xr.DataArray(np.stack([base, base * rural, base, base * year], -1), dims=("chain", "draw", "subgroup"),
                     coords={"subgroup": ["rural=0", "rural=1", "year=0", "year=1"]})
    cd = xr.Dataset({"row_X": (("neighbourhood", "row_term"),
                               np.column_stack([[0, 1, 1, 0], [0, 1, 2, 3]]).astype(float))},
                    coords={"row_term": ["w:rural", "w:year"]})
    fit = SimpleNamespace(groups=lambda: ["posterior", "constant_data"] if row_x else ["posterior"],
                          constant_data=cd)
    monkeypatch.setattr(estimands, "moderated_gradients", lambda f: g)
    monkeypatch.setattr(estimands, "as_fit", lambda f: f)
    return fit, rural.ravel(), year.ravel()


@pytest.mark.parametrize("row_x", [True, False])
def test_a_numeric_year_is_a_trend_per_year_and_the_interval_follows_prob(monkeypatch, row_x):
    fit, rural, year = _fake(monkeypatch, row_x=row_x)
    table = estimands.moderator_contrasts(fit, prob=0.8).set_index("contrast")
    assert list(table.index) == ["rural=1 vs rural=0", "per year"]  # not "year=1 vs year=0"
    assert table.loc["per year", "lower"] == pytest.approx(np.quantile(year, 0.1))
    assert table.loc["rural=1 vs rural=0", "upper"] == pytest.approx(np.quantile(rural, 0.9))
    assert (table["prob"] == 0.8).all()
    assert table.loc["per year", "p_greater_than_1"] == pytest.approx((year > 1).mean())
    with pytest.raises(HierarchyError, match="prob"):
        estimands.moderator_contrasts(fit, prob=90)


def test_contrast_wording_reads_the_values_where_known():
    assert estimands.contrast_label("rural") == "rural=1 vs rural=0"
    assert estimands.contrast_label("year") == "per year"
    assert estimands.contrast_label("age", binary=False) == "per 1 unit of age"
    assert estimands.contrast_label("year", binary=True) == "year=1 vs year=0"

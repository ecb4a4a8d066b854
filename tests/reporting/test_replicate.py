"""Tests of hierarchy.reporting.replicate: every analysis builds from its simulated table, the page is written and
guarded, and (slow) a real short run has a row for every published finding with the truths recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import findings
from hierarchy.errors import HierarchyError
from hierarchy.language.design import build_design
from hierarchy.reporting import replicate


@pytest.fixture(scope="module")
def sim(small_geography):
    return findings.simulate_findings(small_geography, seed=2)


def test_every_analysis_builds_its_design(sim):
    """Each analysis' model file compiles and its design builds from its table (no fit)."""
    tables, truth = sim
    assert {a.scenario for a in replicate.ANALYSES} == set(findings.SCENARIOS)
    for a in replicate.ANALYSES:
        spec = replicate.analysis_spec(a)
        table = replicate.analysis_table(a, tables)
        design = build_design(table, spec)
        assert len(design.y) == len(table) > 0, a.name
        assert np.isfinite(design.log_exposure).all(), a.name
        # LA deprivation means what the simulator's truth means (child-weighted), whatever the exposure
        assert design.X_mean == pytest.approx(truth["la_deprivation"]["mean"], rel=1e-9), a.name
        if a.outcome:
            assert spec.outcome == a.outcome
    re = next(a for a in replicate.ANALYSES if a.name == "re_referral")
    kept = replicate.analysis_table(re, tables)
    assert (kept["referral"] > 0).all() and len(kept) == int((tables["base"]["referral"] > 0).sum())


def test_unknown_analysis(tmp_path, small_geography):
    with pytest.raises(HierarchyError, match="unknown analysis"):
        replicate.replicate(tmp_path / "x", geo=small_geography, analyses=("ethnic",))


def _table() -> pd.DataFrame:
    rows = [replicate._row("headline", "referral", "referral gradient, LA deprivation mean", "1.62",
                           "per 10 points", 1.62, np.linspace(1.5, 1.7, 101)),
            replicate._row("ethnicity", "ethnicity", "gradient, ethnicity=White", "1.91", "per 10 points", 1.91,
                           np.linspace(1.2, 1.5, 101), direction="White steepest", p=0.4, note="a | pipe")]
    return pd.DataFrame(rows, columns=replicate.COLUMNS)


def test_row_interval_and_coverage():
    t = _table()
    assert t.loc[0, "covered"] and not t.loc[1, "covered"]
    assert t.loc[0, "lower"] == pytest.approx(1.51) and t.loc[0, "upper"] == pytest.approx(1.69)
    assert t.loc[0, "mean"] == pytest.approx(1.6)


def test_write_page_and_refuse_foreign_folder(tmp_path):
    from hierarchy.reporting.figures import new_figure

    t = _table()
    fig, ax = new_figure()
    out = tmp_path / "page"
    meta = {"geography": "synthetic", "settings": "1 chain", "wall_s": 1.0}
    paths = replicate.write_page(t, out, meta=meta, figures={"forest": replicate.plot_forest(t)})
    assert sorted(p.name for p in out.iterdir()) == ["forest.csv", "forest.png", "index.html", "replication.csv",
                                                     "replication.md"]
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == replicate.COLUMNS and len(back) == 2
    md = paths["md"].read_text()
    assert "1 of 2 truths inside" in md and "not covered: ethnicity / gradient, ethnicity=White" in md
    assert md.count("\n| ") == 3  # header + two rows; the note's pipe does not split a cell
    html = paths["html"].read_text()
    assert 'class="miss"' in html and "forest.png" in html
    replicate.write_page(t, out, meta=meta, figures={})  # an earlier page may be replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(HierarchyError, match="not a replication page"):
        replicate.write_page(t, tmp_path / "other", meta=meta, figures={})
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"
    with pytest.raises(HierarchyError, match="not a replication page"):  # refused before any fitting
        replicate.replicate(tmp_path / "other", fast=True, fit_fn=lambda *a, **k: pytest.fail("fitted"))


def test_findings_cover_the_issue():
    """Every published finding of issue 15 is named (the slow run checks each has a row)."""
    assert set(replicate.FINDINGS) == {"extremes", "headline", "la_range", "falls", "stages", "sex", "age",
                                       "ethnicity", "assessment", "plan_category", "rural", "la_provision",
                                       "inequality", "provision"}


@pytest.mark.slow  # 12 short fits on a small generated geography: ~5 min on 2 cores (more when loaded)
@pytest.mark.long
def test_replicate_fast_run_has_every_finding_and_recovers(tmp_path):
    from hierarchy.inference.sampling import use_host_devices

    use_host_devices(2)
    out = tmp_path / "rep"
    table = replicate.replicate(out, fast=True, seed=0)
    assert set(table["finding"]) == set(replicate.FINDINGS)
    assert {"index.html", "replication.md", "replication.csv", "forest.png", "curve.png",
            "truth.json"} <= {p.name for p in out.iterdir()}
    # 90% intervals: with ~60 rows, coverage well below 90% means bias, not noise
    assert table["covered"].mean() >= 0.8, table.loc[~table["covered"], ["estimand", "truth", "lower", "upper"]]
    # the headline gradients and the published subgroup ends are recovered
    head = table[table["finding"] == "headline"]
    assert head["covered"].all()
    # published directions: White steeper than Black; neglect steeper than physical disability
    for est in ("gradient ratio White / Black", "gradient ratio neglect / physical_disability"):
        assert table.loc[table["estimand"] == est, "p_direction"].item() > 0.9, est

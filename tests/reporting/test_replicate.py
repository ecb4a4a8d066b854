"""Tests of hierarchy.reporting.replicate: every analysis builds from its simulated table, the page is written and
guarded, and (slow) a real short run has a row for every published finding with the truths recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

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
    assert "<li class=warn>not covered: ethnicity" in html and "id='fig-forest'" in html
    # the shared page template: status line, findings, figures with captions, the table as an appendix
    from hierarchy.reporting import page

    assert page.CSS in html and "class='status warn'" in html  # 1 of 2 covered: not recovered
    assert html.index("id='status'") < html.index("id='findings'") < html.index("<figure") < html.index("<table")
    assert md.index("1 of 2 truths") < md.index("## Findings") < md.index("![forest](forest.png)") \
        < md.index("| finding |")
    assert "*Figure 1. Read across rows" in md
    found = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "Referral gradient 1.62 at mean LA deprivation" in found and "1 of 1 simulated truths" in found
    assert "0 of 1 simulated truths" in found and "published direction (White steepest): 0.40" in found
    replicate.write_page(t, out, meta=meta, figures={})  # an earlier page may be replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(HierarchyError, match="not a replication page"):
        replicate.write_page(t, tmp_path / "other", meta=meta, figures={})
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"
    with pytest.raises(HierarchyError, match="not a replication page"):  # refused before any fitting
        replicate.replicate(tmp_path / "other", fast=True, fit_fn=lambda *a, **k: pytest.fail("fitted"))


def test_curve_is_the_estimands_gradient_curve_on_a_log_axis_marked_beyond_the_data():
    """plot_curve draws hierarchy.results.estimands.gradient_curve: a hand-made fit whose every draw is
    known (gradient 0.5 per 0.1, cross-level -0.3 on log LA deprivation) gives exp(0.5 - 0.3 log(X / 0.15))
    at X; the fitted LAs span 10% to 20%, so the grid's 4% to 28% is flagged beyond them; published
    points are the study's 2018-19 ones; the ratio axis is logarithmic."""
    import json

    import arviz as az

    from hierarchy.data.simulate import curve_coefficients
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.shipped import resolve

    spec = load_spec(resolve("inverse_intervention_nb_log", "models"))
    priors = load_priors(resolve("weakly_informative", "priors"))
    coefs = {"intercept": -3.0, "gradient": 0.5, "la_deprivation": 0.2, "cross_level": -0.3}
    X_la = np.array([0.10, 0.15, 0.20])
    idata = az.from_dict(posterior={k: np.full((2, 3), v) for k, v in coefs.items()})
    idata.add_groups(constant_data=xr.Dataset({"la_deprivation": ("la", X_la)}, coords={"la": ["A", "B", "C"]}))
    idata.posterior.attrs["hierarchy"] = json.dumps({"model_spec": spec.to_dict(), "priors": priors.to_dict(),
                                                     "design": {"X_mean": 0.15, "x_mean": 0.14}})
    truth = {"la_deprivation": {"mean": 0.15, "curve": list(curve_coefficients(0.15))}}
    fig, data = replicate.plot_curve(idata, truth)
    X = data["la_deprivation"].to_numpy()
    np.testing.assert_allclose(data["mean"], np.exp(0.5 - 0.3 * np.log(X / 0.15)), rtol=1e-9)
    assert list(data["extrapolated"]) == list((X < 0.10 - 1e-12) | (X > 0.20 + 1e-12))
    assert data["extrapolated"].any() and not data["extrapolated"].all()
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    [pub] = [ln for ln in ax.lines if ln.get_label().startswith("published")]
    assert sorted(pub.get_ydata()) == [1.39, 1.62, 2.33] and "2018-19" in pub.get_label()
    assert any(ln.get_linestyle() == "--" for ln in ax.lines)  # the part beyond the fitted LAs


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


def test_the_split_modules_are_reexported_under_their_old_paths():
    """The fitting (replicate_fits) and the table's rows (replicate_rows) left replicate.py (issue 28, module
    size); ``hierarchy.reporting.replicate.X`` is still the same object, and replicate.py is under the bar."""
    from pathlib import Path

    from hierarchy.reporting import replicate_fits, replicate_rows

    for mod, names in ((replicate_fits, ("DEFAULT_PRIORS", "Analysis", "analysis_spec", "analysis_table",
                                         "fit_analysis", "_same", "batch_refusal", "batch_groups",
                                         "fit_analyses_batched", "fit_all")),
                       (replicate_rows, ("PROB", "COLUMNS", "findings_rows", "moderator_ratio", "_row", "_levels",
                                         "_flat", "_stratum_rows"))):
        for name in names:
            assert getattr(replicate, name) is getattr(mod, name), name
            assert not hasattr(mod, "replicate"), mod  # the fits and rows do not import the page back
    for mod in (replicate, replicate_fits, replicate_rows):
        assert len(Path(mod.__file__).read_text().splitlines()) <= 800, mod.__name__

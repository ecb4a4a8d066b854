"""One registry of report outputs, one suppression, one interval probability (issue 33 item 3, issue 28
Build 4, issue 34 item 8).

A report written with its checking folder (``write_report(..., for_checking=DIR)``) of a model with a
gradient moderator (``w:rural``) and a gradient per year, on small simulated data with one planted
dominance cell (3 neighbourhoods, two holding 91% of the cell): the registry, the report folder and the
checking folder list the same outputs, byte for byte; both folders suppress the same cells; and every
interval on the page and in the tables is at ``prob`` (0.8). No fit: 2 chains x 30 draws from the prior
(``tests.helpers.prior_draws``; NUTS's compilation was ~55 s of a busy 2-core machine): this checks the
plumbing, not the estimates. The shipped ``years_gradient_nb`` and ``la_inequality_nb``
are checked alike (slow).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import reference
from hierarchy.data import simulate as sim
from hierarchy.data.table import data_hash
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.reporting import checking, registry, report
from hierarchy.results import estimands, fitfile
from tests.helpers import prior_draws, with_formula_columns

ROOT = Path(__file__).resolve().parents[2]
PROB = 0.8
MODEL = """name = "moderated_years_poisson"
description = "A gradient moderator and a gradient per year (test model)."
family = "poisson"
formula = "referral ~ w * z + rural + w:rural + C(year) + w:C(year) + (1 + w | la) + offset(log(exposure))"
"""
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def plant_dominance(table: pd.DataFrame) -> tuple[str, str]:
    """Make one LA x national decile cell of 3 neighbourhoods hold 50, 40 and 9 referrals (the first two
    91% of the cell, above every threshold): ACRO's n-k rule fails it, nothing else does."""
    dec = estimands.deciles_of(table["deprivation"].to_numpy(), table["neighbourhood"].to_numpy())
    hoods = table.assign(decile=dec).groupby(["la", "decile"])["neighbourhood"].unique()
    (la, d), codes = next((k, v) for k, v in hoods.items() if len(v) == 3)
    counts = table["referral"].to_numpy().copy()
    for code, total in zip(codes, (50, 40, 9), strict=True):
        rows = np.flatnonzero((table["neighbourhood"] == code).to_numpy())
        counts[rows] = 0
        counts[rows[0]] = total
    table["referral"] = counts
    return str(la), str(d)


def _fit(table: pd.DataFrame, spec_path: Path, folder: Path, sampled: bool = True) -> Path:
    """A fit file of ``spec_path`` on ``table``: 2 chains x (30 + 30) NUTS draws, or (``sampled=False``)
    2 x 30 draws from the prior in the same shapes (:func:`tests.helpers.prior_draws`, no compilation)."""
    spec, priors = load_spec(spec_path), load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    draws = (fit(spec, priors, design, chains=2, tune=30, draws=30, seed=0, progress=False) if sampled
             else prior_draws(spec, priors, design, chains=2, draws=30, seed=0))
    idata = fitfile.build_idata(draws, spec, priors, design, data_hash=data_hash(table, **spec.hashed_columns))
    return fitfile.save_fit(idata, folder / f"{spec.name}.nc")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("registry")
    geo = reference.synthetic_geography(8, seed=7, lsoa_per_la=20)
    table = sim.simulate_years(geo, (2018, 2019), seed=11)[0]
    rng = np.random.default_rng(0)
    codes = table["neighbourhood"].astype(str)
    table["rural"] = codes.map({c: float(rng.random() < 0.3) for c in sorted(set(codes))})
    cell = plant_dominance(table)
    (root / "model.toml").write_text(MODEL)
    saved = _fit(table, root / "model.toml", root, sampled=False)  # the plumbing, not the estimates
    outputs = report.build_outputs(saved, data=table, n_draws=20, prob=PROB)
    report.write_report(saved, root / "report", data=table, n_draws=20, prob=PROB,
                        for_checking=root / "checking")
    return {"out": root / "report", "checking": root / "checking", "outputs": outputs, "cell": cell}


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["results"]


def _same_outputs(outputs: report.ReportOutputs, out: Path, checking_dir: Path) -> None:
    """The registry, the report folder and the checking folder list the same outputs, with equal files."""
    tables = {o.name for o in outputs.entries if o.kind == "table"}
    figs = {o.name for o in outputs.entries if o.kind == "figure"}
    assert tables == {p.stem for p in out.glob("*.csv")}
    assert figs == {p.stem for p in (out / "figures").glob("*.png")}
    results = _results(checking_dir)
    assert set(results) == tables | {f"figure_{n}" for n in figs} | {"report_page"}
    for name in tables:  # the file the report publishes is the file the checkers see
        assert (checking_dir / f"{name}.csv").read_bytes() == (out / f"{name}.csv").read_bytes(), name
        assert f"{name}.csv" in [f["name"] for f in results[name]["files"]], name
    for name in figs:
        assert (checking_dir / f"figure_{name}.png").read_bytes() == (out / "figures" / f"{name}.png").read_bytes()
    for page in ("report.md", "index.html"):
        assert (checking_dir / page).read_bytes() == (out / page).read_bytes(), page


def test_registry_report_and_checking_folder_list_the_same_outputs(written):
    outputs = written["outputs"]
    names = {o.name for o in outputs.entries if o.kind == "table"}
    assert {"moderator_contrasts", "year_gradients", "year_trend", "la_deciles"} <= names
    _same_outputs(outputs, written["out"], written["checking"])
    for uid, rec in _results(written["checking"]).items():  # each says what it rests on
        if rec["type"] == "custom" and uid != "report_page":
            assert "Basis: " in rec["comments"][0], uid


def test_both_folders_suppress_the_same_cells_dominance_included(written):
    la, decile = written["cell"]
    res = _results(written["checking"])["la_deciles"]
    assert "NKCheck" in res["outcome"][decile][la]
    assert "MinimumThresholdCheck" not in res["outcome"][decile][la]  # 99 referrals: dominance alone
    wide = pd.read_csv(written["checking"] / "la_deciles_0.csv", index_col=0, dtype={"la": str})
    wide.index = wide.index.astype(str)
    outcome = pd.DataFrame(res["outcome"]).reindex(index=wide.index, columns=wide.columns)
    in_checking = {(r, c) for r in wide.index for c in wide.columns
                   if np.isnan(wide.loc[r, c]) and outcome.loc[r, c] != checking.EMPTY}
    long = pd.read_csv(written["out"] / "la_deciles.csv", dtype=str, keep_default_na=False)
    in_report = {(a, "All" if d == "all" else d) for a, d, c in zip(long["la"], long["decile"],
                                                                    long["observed_count"], strict=True)
                 if c == "[c]"}
    dec = pd.read_csv(written["out"] / "deciles.csv", dtype=str, keep_default_na=False)
    in_report |= {("All", d) for d, c in zip(dec["decile"], dec["observed_count"], strict=True) if c == "[c]"}
    assert (la, decile) in in_report and len(in_report) > 1  # the cell and its secondary cells
    assert in_report == in_checking
    # what the report shows of the other cells is what the checkers approve
    shown = long[long["observed_count"] != "[c]"]
    for a, d, c in zip(shown["la"], shown["decile"], shown["observed_count"], strict=True):
        assert float(c) == wide.loc[a, "All" if d == "all" else d]


def test_every_interval_on_the_page_and_in_the_tables_follows_prob(written):
    out = written["out"]
    for path in out.glob("*.csv"):
        frame = pd.read_csv(path)
        if {"lower", "upper"} & set(frame.columns) or "predicted_lower" in frame:
            assert "prob" in frame and np.allclose(frame["prob"], PROB), path.name
        hdi = [c for c in frame.columns if c.startswith("hdi_")]
        assert hdi in ([], ["hdi_10%", "hdi_90%"]), path.name
    md = (out / "report.md").read_text()
    said = re.findall(r"(\d+)% (?:equal-tailed |posterior )*(?:intervals?|HDI)", md)
    assert said and set(said) == {"80"}, set(said)
    con = pd.read_csv(out / "moderator_contrasts.csv")  # the interval that stayed at 90% (issue 34 item 8)
    assert np.allclose(con["prob"], PROB)
    assert "rural=1" in md and "80% interval" in md.split("rural=1", 1)[1][:200]


def test_checking_alongside_weaker_rules_is_refused_before_any_work(tmp_path):
    with pytest.raises(HierarchyError, match="--for-checking"):
        report.write_report(tmp_path / "no_fit.nc", tmp_path / "out", rounding=1, allow_below_default_rules=True,
                            for_checking=tmp_path / "checking")
    assert not (tmp_path / "out").exists() and not (tmp_path / "checking").exists()


def test_an_unregistered_output_is_refused():
    with pytest.raises(HierarchyError, match="not in the registry.*register it"):
        registry.registered(["estimands", "my_new_table"], [])
    sizes = {"n_hoods": 30, "n_la": 3, "fewest": 9, "median": 10}
    for out in registry.REGISTRY.values():
        assert out.basis in registry.BASES and registry.rests_on_text(out, sizes).startswith("Basis: ")
        assert out.observed is None or ("table", out.observed) in registry.REGISTRY


@pytest.mark.slow
@pytest.mark.parametrize("model", ["years_gradient_nb", "la_inequality_nb"])
def test_shipped_models_register_every_output_of_their_report(model, tmp_path):
    geo = reference.synthetic_geography(8, seed=7, lsoa_per_la=20)
    if model.startswith("years"):
        table = sim.simulate_years(geo, (2018, 2019), seed=11)[0]
    else:
        table = with_formula_columns(sim.simulate(geo, seed=3)[0])
    saved = _fit(table, ROOT / "models" / f"{model}.toml", tmp_path)
    outputs = report.build_outputs(saved, data=table, n_draws=20)
    report.write_report(saved, tmp_path / "report", data=table, n_draws=20, for_checking=tmp_path / "checking")
    if model.startswith("years"):
        assert {"year_gradients", "year_trend"} <= {o.name for o in outputs.entries}
    _same_outputs(outputs, tmp_path / "report", tmp_path / "checking")

"""Published figures appear only beside the estimand they describe (hierarchy.published, compare-priors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy import published
from hierarchy.data import reference, simulate
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results import compare_priors as cp
from hierarchy.shipped import resolve


def test_every_figure_has_outcome_scale_year_and_source():
    table = published.figures()
    assert len(table) >= 5
    assert table[["outcome", "estimand", "scale", "year", "source"]].notna().all().all()
    assert (table["value"].notna() | (table["low"].notna() & table["high"].notna())).all()


@pytest.mark.parametrize("match", [dict(outcome="cp_plan", la_level="10 points less", year=2019),
                                   dict(outcome="referral", la_level="mean", year=2021),
                                   dict(outcome="referral", la_level="mean", year=None),
                                   dict(outcome="looked_after", la_level="mean", year=2019)])
def test_no_figure_for_another_outcome_year_or_scale(match):
    assert published.value(estimand="gradient_score", scale="per 10 points", **match) is None
    assert published.value(outcome="referral", estimand="gradient_score", scale="per SD (1 SD = 9.0 points)",
                           la_level="mean", year=2019) is None
    assert published.value(outcome="referral", estimand="gradient_score", scale="per 10 points",
                           la_level="mean", year=2019) == 1.62


def test_data_year_from_a_year_column_or_the_truth_file(tmp_path):
    geo = reference.synthetic_geography(4, seed=1, lsoa_per_la=8)
    table, truth = simulate.simulate(geo, year=2019, seed=1)
    path = tmp_path / "sim.parquet"
    simulate.write(table, truth, path)
    assert cp.data_year(path, table) == 2019
    plain = tmp_path / "plain.parquet"
    table.to_parquet(plain)
    assert cp.data_year(plain, table) is None
    assert cp.data_year(plain, table.assign(year=2021)) == 2021
    assert cp.data_year(plain, table.assign(year=np.arange(len(table)) % 2 + 2020)) is None


def test_prior_predictive_shows_published_gradients_only_for_their_outcome_and_year(tmp_path):
    geo = reference.synthetic_geography(6, seed=2, lsoa_per_la=10)
    table, _ = simulate.simulate(geo, seed=2)
    ref = load_spec(resolve("gradient_nb", "models"))
    cp_spec = ModelSpec.from_dict({**ref.to_dict(), "name": "cp", "outcome": "cp_plan"})
    priors = load_priors(resolve("weakly_informative", "priors"))
    design = build_design(table, ref)
    g = cp.prior_predictive(ref, priors, design, draws=20, year=2019).gradients.set_index("la_level")
    assert g["published"].to_dict() == {"10 points less": 2.33, "mean": 1.62, "10 points more": 1.39}
    g = cp.prior_predictive(ref, priors, design, draws=20, year=None).gradients
    assert g["published"].isna().all()
    g = cp.prior_predictive(cp_spec, priors, build_design(table, cp_spec), draws=20, year=2019)
    g = g.gradients.set_index("la_level")["published"]
    assert g["mean"] == 1.80 and g.drop("mean").isna().all()  # only the mean is published for plans


def test_compare_priors_page_for_plans_carries_no_referral_figures(tmp_path):
    geo = reference.synthetic_geography(6, seed=2, lsoa_per_la=10)
    table, truth = simulate.simulate(geo, year=2019, seed=2)
    data = tmp_path / "sim.parquet"
    simulate.write(table, truth, data)
    model = tmp_path / "cp.toml"
    model.write_text('name = "cp"\nformula = "cp_plan ~ w * z + (1 + w | la) + offset(log(exposure))"\n')
    res = cp.compare_priors(data, model, ["weakly_informative"], tmp_path / "out", prior_only=True,
                            prior_draws_n=30)
    md = res.markdown.read_text()
    assert "Published figures shown are for cp_plan in 2018-19" in md
    for referral_only in ("1,289", "215 to", "referral rates in England", "DfE"):
        assert referral_only not in md
    shown = pd.read_csv(res.tables["prior_gradients"]).set_index("la_level")["published"]
    assert shown["mean"] == 1.80 and shown.drop("mean").isna().all()
    ref = cp.compare_priors(data, resolve("gradient_nb", "models"), ["weakly_informative"], tmp_path / "ref",
                            prior_only=True, prior_draws_n=30, year=2018)
    md = ref.markdown.read_text()
    assert "has none for referral in 2017-18" in md and "1,289" not in md
    assert pd.read_csv(ref.tables["prior_gradients"])["published"].isna().all()


def test_published_data_year_and_notes(tmp_path):
    """hierarchy.published reads the census year (a single-valued year column, else the truth file) for every
    page, and says which figures apply or why none."""
    geo = reference.synthetic_geography(4, seed=1, lsoa_per_la=8)
    table, truth = simulate.simulate(geo, year=2019, seed=1)
    path = tmp_path / "sim.parquet"
    simulate.write(table, truth, path)
    plain = tmp_path / "plain.parquet"
    table.to_parquet(plain)
    mixed = table.assign(year=np.arange(len(table)) % 2 + 2020)
    for data, frame, year in ((path, table, 2019), (plain, table, None), (plain, table.assign(year=2021), 2021),
                              (plain, mixed, None), (path, None, 2019), (None, None, None)):
        assert published.data_year(data, frame) == year, (data, year)
    assert cp.data_year is published.data_year  # compare-priors reads the year the same way
    assert published.data_year(path) == 2019 and published.data_year(None) is None
    (tmp_path / "bad.truth.json").write_text("[1, 2]")  # not a truth file: unknown, not a crash
    assert published.data_year(tmp_path / "bad.parquet") is None
    assert published.gradient_scores(outcome="referral", year=2019) == {"10 points less": 2.33, "mean": 1.62,
                                                                        "10 points more": 1.39}
    assert published.gradient_scores(outcome="cp_plan", year=2019) == {"mean": 1.80}
    assert published.gradient_scores(outcome="referral", year=2020) == {}
    assert published.gradient_range(outcome="referral", year=2019) == (1.2, 2.4)
    assert published.gradient_range(outcome="s47", year=2019) is None
    assert published.season(2019) == "2018-19" and published.season(2000) == "1999-00"
    assert published.note(outcome="referral", year=2019).startswith("Published figures shown are for referral in "
                                                                     "2018-19")
    assert "has none for referral in 2020-21" in published.note(outcome="referral", year=2021)
    assert "census year is not known" in published.note(outcome="referral", year=None)

"""``hierarchy report --data`` on the user's own column names, and published figures by the data's year.

One tiny fit (8 generated LAs, 1 chain x 100 + 100) of a table whose columns carry the user's names,
made with ``fit --columns``: the report reuses the column map the fit recorded, takes ``--columns``
when given, and names the missing column of a wrong map. The same fit's report shows the published
referral gradients when the data's census year is theirs (2019) and none, saying so, otherwise.
"""

from __future__ import annotations

import pytest

from hierarchy import cli, published, workflow
from hierarchy.data import reference, simulate

USER = {"neighbourhood": "LSOA11CD", "la": "UTLA19CD", "exposure": "children_0_17", "deprivation": "income_rate",
        "referral": "referrals"}
MAP = ('[columns]\nneighbourhood = "LSOA11CD"\nla = "UTLA19CD"\nexposure = "children_0_17"\n'
       'deprivation = "income_rate"\n[counts]\nreferral = "referrals"\n')


@pytest.fixture(scope="module")
def renamed_fit(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("report_columns")
    geo = reference.synthetic_geography(8, seed=4, lsoa_per_la=15)
    table, truth = simulate.simulate(geo, year=2019, seed=5)
    table = table[list(USER)].rename(columns=USER)
    data = folder / "mine.csv"
    table.to_csv(data, index=False)
    cmap = folder / "mine.toml"
    cmap.write_text(MAP)
    workflow.fit_files(data=data, columns=cmap, model="inverse_intervention_nb_log", priors="weakly_informative",
                       out=folder / "fit.nc", chains=1, tune=100, draws=100, progress=False)
    return {"fit": folder / "fit.nc", "data": data, "map": cmap, "table": table, "folder": folder}


def test_report_reuses_the_column_map_the_fit_recorded(renamed_fit, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(renamed_fit["fit"]), "--data", str(renamed_fit["data"]),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the column map recorded in" in printed and "UTLA19CD -> la" in printed
    assert (out / "la_deciles.csv").exists()  # the observed panels were made from the renamed table
    assert "columns read with the column map recorded in" in (out / "report.md").read_text()
    # --columns given: that map is used and named
    out2 = tmp_path / "report2"
    assert cli.main(["report", str(renamed_fit["fit"]), "--data", str(renamed_fit["data"]),
                     "--columns", str(renamed_fit["map"]), "--out", str(out2)]) == 0
    assert f"column map {renamed_fit['map']}" in capsys.readouterr().out


def test_report_with_a_wrong_column_map_names_the_column(renamed_fit, tmp_path, capsys):
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(MAP.replace('la = "UTLA19CD"', 'la = "LA_CODE"'))
    out = tmp_path / "report"
    assert cli.main(["report", str(renamed_fit["fit"]), "--data", str(renamed_fit["data"]),
                     "--columns", str(wrong), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'LA_CODE'" in err and "mapped to 'la'" in err and str(wrong) in err
    assert not (out / "index.html").exists()
    # a table whose columns match neither the recorded map nor the canonical names
    other = tmp_path / "other.csv"
    renamed_fit["table"].rename(columns={"UTLA19CD": "la_code"}).to_csv(other, index=False)
    assert cli.main(["report", str(renamed_fit["fit"]), "--data", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'UTLA19CD'" in err and "the column map recorded in" in err
    assert cli.main(["report", str(renamed_fit["fit"]), "--columns", str(wrong), "--out", str(out)]) == 2
    assert "--columns is the column map of --data" in capsys.readouterr().err


def _published_points(out) -> tuple[str, str]:
    md = (out / "report.md").read_text()
    return md, md.split("## Headline estimands", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("year", [2019, 2021])
def test_published_points_only_in_their_year(renamed_fit, tmp_path, year):
    """The data's year column decides: 2019 shows the published referral gradients (table column,
    findings, figure points); 2021 shows none and the page says why."""
    from hierarchy.reporting import report
    from hierarchy.results import estimands

    data = tmp_path / f"mine_{year}.csv"
    renamed_fit["table"].assign(year=year).to_csv(data, index=False)  # a year column: the same data hash
    out = report.write_report(renamed_fit["fit"], tmp_path / f"report_{year}", data=data, n_draws=20).parent
    md, headline = _published_points(out)
    idata = estimands.as_idata(renamed_fit["fit"])
    tables = report.estimand_tables(idata, n_draws=20)
    fig_data = report.report_figures(idata, tables, year=year)["gradient_curve"][2]
    shown = fig_data[fig_data["source"] == "published"]
    expected = published.gradient_scores(outcome="referral", year=year)
    if year == 2019:
        assert expected == {"10 points less": 2.33, "mean": 1.62, "10 points more": 1.39}
        assert "| published |" in headline and "| 1.62 |" in headline
        assert "Published figures shown are for referral in 2018-19" in headline
        assert "published for 2018-19: 62% higher" in md
        assert sorted(shown["mean"]) == [1.39, 1.62, 2.33]
        assert "diamonds: published referral gradient scores, 2018-19" in md
    else:
        assert expected == {}
        assert "| published |" not in md and "published for" not in md and shown.empty
        assert "No published figures are shown: the table of published results has none for referral in " \
               "2020-21" in headline
        assert "No published figures are shown" in md.split("*Figure 1.", 1)[1].split("*", 1)[0]


def test_no_year_no_published_points(renamed_fit, tmp_path):
    """Without data, and a fit whose table had no year, the report shows no published figure and says so."""
    from hierarchy.reporting import report
    from hierarchy.results.fitfile import load_fit, provenance

    assert provenance(load_fit(renamed_fit["fit"]))["data_year"] is None

    out = report.write_report(renamed_fit["fit"], tmp_path / "r", n_draws=20).parent
    md, headline = _published_points(out)
    assert "| published |" not in md and "published for" not in md
    assert "the data's census year is not known" in headline

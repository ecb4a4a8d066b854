"""Predictions from a fit (hierarchy.results.predict): observed neighbourhoods give back their fitted rate,
hypothetical ones follow the model's centring, new LAs carry the between-LA spread.

One small fit per module (16 generated LAs of ~25 neighbourhoods, 2 chains x 200 + 200) of the
default model plus a neighbourhood term and a crossed group, ``rural + (1 | year)``, so that every
part of the one linear predictor is exercised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy import workflow
from hierarchy.cli import main
from hierarchy.data import reference, simulate
from hierarchy.errors import HierarchyError
from hierarchy.results import estimands
from hierarchy.results.predict import KINDS, predict
from tests.helpers import with_formula_columns

# one worker builds the module's fit once: without the group, --dist loadgroup spread the tests over both
# workers and each built it (measured with -n 2: two 183 s set-ups of ``fitted`` on the loaded 2-core machine)
pytestmark = pytest.mark.xdist_group("predict")

MODEL = """name = "predict_test_nb"
family = "negative_binomial"
formula = "referral ~ w * z + rural + (1 + w | la) + (1 | year) + offset(log(exposure))"
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("predict")
    geo = reference.synthetic_geography(16, seed=3, lsoa_per_la=25)
    table, _ = simulate.simulate(geo, year=2019, seed=4)
    table = with_formula_columns(table, seed=5)
    data = folder / "data.parquet"
    table.to_parquet(data)
    (folder / "model.toml").write_text(MODEL)
    workflow.fit_files(data=data, model=folder / "model.toml", priors="weakly_informative",
                       out=folder / "fit.nc", chains=2, tune=200, draws=200, progress=False)
    return {"fit": folder / "fit.nc", "table": table, "folder": folder,
            "idata": estimands.as_idata(folder / "fit.nc")}


def _direct_rates(idata, ids: list[str]) -> np.ndarray:
    """Fitted rate draws of observed rows (by row id), by hand from the posterior (not the predictor)."""
    post, cd = idata.posterior, idata.constant_data
    out = []
    for code in ids:
        la = str(cd["la_of"].sel(neighbourhood=code).item())
        x = float(cd["deprivation"].sel(neighbourhood=code))
        X = float(cd["la_deprivation"].sel(la=la))
        a = post["la_coef"].sel(la=la, coef="intercept")
        b = post["la_coef"].sel(la=la, coef="gradient")
        rural = float(cd["row_X"].sel(neighbourhood=code, row_term="rural"))
        year = str(cd["year_of"].sel(neighbourhood=code).item())
        u = post["year_raw"].sel(year=year) * post["year_sd"]
        eta = a + b * (x - X) / 0.1 + post["row_coef"].sel(row_term="rural") * rural + u
        out.append(1e4 * np.exp(eta.to_numpy().ravel()))
    return np.stack(out, axis=1)


def test_observed_neighbourhood_prediction_is_its_fitted_rate(fitted):
    idata = fitted["idata"]
    ids = [str(c) for c in idata.constant_data["neighbourhood"].to_numpy()[[0, 57, 200, 399]]]
    codes = [c.split("|", 1)[0] for c in ids]  # row ids are code|ethnicity|year
    pred, draws = predict(fitted["fit"], pd.DataFrame({"neighbourhood": codes}), return_draws=True)
    assert (pred["prediction"] == KINDS[0]).all()
    direct = _direct_rates(idata, ids)
    np.testing.assert_allclose(draws, direct, rtol=2e-4)  # same draws, float32 predictor
    np.testing.assert_allclose(pred["rate_mean"], direct.mean(0), rtol=2e-4)
    np.testing.assert_allclose(pred["rate_lower"], np.quantile(direct, 0.05, axis=0), rtol=2e-4)
    np.testing.assert_allclose(pred["rate_upper"], np.quantile(direct, 0.95, axis=0), rtol=2e-4)
    # the same neighbourhood described instead of named: a hypothetical one with its values
    t = fitted["table"].set_index("neighbourhood").loc[codes]
    cols = ("la", "deprivation", "rural", "year")
    hyp = predict(fitted["fit"], pd.DataFrame({c: t[c].to_numpy() for c in cols}))
    assert (hyp["prediction"] == KINDS[1]).all()
    np.testing.assert_allclose(hyp["rate_mean"], pred["rate_mean"], rtol=2e-4)


def _la_table(idata) -> pd.DataFrame:
    cd = idata.constant_data
    return pd.DataFrame({"la": idata.posterior["la"].to_numpy().astype(str),
                         "X": cd["la_deprivation"].sel(la=idata.posterior["la"]).to_numpy()})


def test_new_la_interval_carries_the_between_la_spread(fitted):
    """A new LA at each fitted LA's deprivation: its 90% interval should contain that LA's rate for
    about 90% of LAs (the LA-level distribution is the spread of LAs), and be wider than the
    interval of a neighbourhood of the known LA."""
    idata = fitted["idata"]
    las = _la_table(idata)
    year = str(idata.posterior["year"].to_numpy()[0])
    base = {"deprivation": las["X"], "rural": 0.0, "year": year}
    known = predict(fitted["fit"], pd.DataFrame({"la": las["la"], **base}))
    new = predict(fitted["fit"], pd.DataFrame({"la": "NEW_" + las["la"], "la_deprivation": las["X"], **base}),
                  seed=1)
    assert (new["prediction"] == KINDS[2]).all() and (known["prediction"] == KINDS[1]).all()
    inside = (new["rate_lower"] <= known["rate_mean"]) & (known["rate_mean"] <= new["rate_upper"])
    assert inside.mean() >= 0.75, inside.mean()
    width_new = np.log(new["rate_upper"] / new["rate_lower"])
    width_known = np.log(known["rate_upper"] / known["rate_lower"])
    assert (width_new > width_known).mean() >= 0.9
    # on the log scale, the new LA's spread is at least the fitted SD of LA intercepts
    sd_a = float(idata.posterior["la_sd"].sel(coef="intercept").mean())
    assert np.median(width_new) / (2 * 1.645) >= 0.8 * sd_a


def test_typical_la_is_inside_and_narrower_than_a_new_la(fitted):
    """The typical LA (LA effects at their mean, estimands.typical_rates) knows only the
    hyperparameters' uncertainty; a new LA at the same deprivation adds the between-LA spread."""
    idata = fitted["idata"]
    X_mean = float(estimands.la_levels(idata).sel(la_level="mean")["la_deprivation"])
    typical = estimands.typical_rates(idata, x=np.array([X_mean])).sel(la_level="mean").isel(x=0)
    t = estimands.interval(typical)
    year = str(idata.posterior["year"].to_numpy()[0])
    new = predict(fitted["fit"], pd.DataFrame({"la": ["NEW"], "la_deprivation": [X_mean], "deprivation": [X_mean],
                                               "rural": [0.0], "year": [year]}), draws=None).iloc[0]
    # typical_rates has no year effect and no rural: compare without the year's effect
    u = float((idata.posterior["year_raw"].sel(year=year) * idata.posterior["year_sd"]).mean())
    lo, hi = new["rate_lower"] / np.exp(u), new["rate_upper"] / np.exp(u)
    assert lo < float(t["mean"]) < hi
    assert np.log(hi / lo) > 1.5 * np.log(float(t["upper"]) / float(t["lower"]))


def test_extrapolated_neighbourhood_is_less_certain_than_a_typical_one(fitted):
    idata = fitted["idata"]
    las = _la_table(idata)
    la, X = las["la"].iloc[0], float(las["X"].iloc[0])
    year = str(idata.posterior["year"].to_numpy()[0])
    pred = predict(fitted["fit"], pd.DataFrame({"la": [la, la], "deprivation": [X, min(X + 0.4, 0.95)],
                                                "rural": [0.0, 0.0], "year": [year, year]}))
    width = np.log(pred["rate_upper"] / pred["rate_lower"])
    assert width[1] > 1.5 * width[0]


def test_new_group_level_and_counts(fitted):
    idata = fitted["idata"]
    las = _la_table(idata)
    la, X = las["la"].iloc[0], float(las["X"].iloc[0])
    year = str(idata.posterior["year"].to_numpy()[0])
    frame = pd.DataFrame({"la": [la, la], "deprivation": [X, X], "rural": [0.0, 0.0], "year": [year, "2031"],
                          "exposure": [400.0, 400.0]})
    pred = predict(fitted["fit"], frame, counts=True, seed=3)
    assert "year level '2031' not in the fit" in pred["note"].iloc[1]
    width = np.log(pred["rate_upper"] / pred["rate_lower"])
    assert width[1] >= width[0]  # the unseen year adds its effect's spread
    expected = pred["rate_mean"] * 400 / 1e4
    assert ((pred["count_lower"] <= expected) & (expected <= pred["count_upper"])).all()
    assert (pred["count_upper"] > pred["count_lower"]).all()
    with pytest.raises(HierarchyError, match="exposure"):
        predict(fitted["fit"], frame.drop(columns="exposure"), counts=True)


def test_bad_newdata_is_refused_with_file_column_rows_and_fix(fitted, tmp_path):
    idata = fitted["idata"]
    las = _la_table(idata)
    year = str(idata.posterior["year"].to_numpy()[0])
    path = tmp_path / "new.csv"
    pd.DataFrame({"la": [las["la"].iloc[0], "E99"], "deprivation": [0.1, 0.2], "rural": [0, 0],
                  "year": [year, year]}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match=r"new\.csv: column 'la_deprivation' is needed for LAs the fit "
                                             r"lacks \(E99"):
        predict(fitted["fit"], path)
    pd.DataFrame({"la": [las["la"].iloc[0]] * 3, "deprivation": [0.1, 1.5, "high"], "rural": 0,
                  "year": year}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match=r"column 'deprivation' must hold a number of at least 0 and at "
                                             r"most 1 .*lines 3, 4 do not"):
        predict(fitted["fit"], path)
    code = str(idata.constant_data["neighbourhood"].to_numpy()[0]).split("|")[0]
    pd.DataFrame({"neighbourhood": [code], "deprivation": [0.99]}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match="different from the fitted value; .*leave its neighbourhood code"):
        predict(fitted["fit"], path)
    pd.DataFrame({"neighbourhood": ["NOPE1"]}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match="line 2: no 'la' and no neighbourhood code the fit has"):
        predict(fitted["fit"], path)
    pd.DataFrame({"la": [las["la"].iloc[0]], "deprivation": [0.1], "rural": [0], "year": [year],
                  "la_deprivation": [float(las["X"].iloc[0]) + 0.05]}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match="'la_deprivation' given for a fitted LA .*give a new LA code"):
        predict(fitted["fit"], path)
    pd.DataFrame({"la": [las["la"].iloc[0]], "deprivation": [0.1], "year": [year]}).to_csv(path, index=False)
    with pytest.raises(HierarchyError, match="column 'rural' is needed"):
        predict(fitted["fit"], path)


def test_cli_predict_with_a_column_map_writes_predictions_only(fitted, tmp_path, capsys):
    idata = fitted["idata"]
    code = str(idata.constant_data["neighbourhood"].to_numpy()[5]).split("|")[0]
    la = str(idata.posterior["la"].to_numpy()[1])
    year = str(idata.posterior["year"].to_numpy()[0])
    new = tmp_path / "mine.csv"
    # the user's own names, and an observed count column that must not reach the output
    pd.DataFrame({"LSOA": [code, ""], "LA_code": ["", la], "IMD_income": ["", 0.3], "rural": ["", 1],
                  "year": ["", year], "referrals_2019": [37, 12]}).to_csv(new, index=False)
    cmap = tmp_path / "map.toml"
    cmap.write_text('[columns]\nneighbourhood = "LSOA"\nla = "LA_code"\ndeprivation = "IMD_income"\n'
                    '[counts]\nreferral = "referrals_2019"\n')
    out = tmp_path / "pred.csv"
    assert main(["predict", str(fitted["fit"]), "--newdata", str(new), "--columns", str(cmap),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"column map {cmap}" in printed and "1 observed neighbourhood, 1 hypothetical neighbourhood" in printed
    pred = pd.read_csv(out)
    assert list(pred["prediction"]) == [KINDS[0], KINDS[1]]
    assert "LSOA" in pred.columns and "IMD_income" in pred.columns  # the user's names back
    assert not any("referral" in c for c in pred.columns)
    assert not pred.isin([37, 12]).any().any()
    # an input is never overwritten
    assert main(["predict", str(fitted["fit"]), "--newdata", str(new), "--columns", str(cmap),
                 "--out", str(new)]) == 2
    assert "LSOA" in new.read_text()


def test_observed_exposure_is_given_back_as_it_was_given(fitted):
    """exp(log 524) printed as 523.9999999999999 by predict --counts (issue 34 item 10)."""
    codes = fitted["table"]["neighbourhood"].drop_duplicates().head(20)
    pred = predict(fitted["fit"], pd.DataFrame({"neighbourhood": codes}), counts=True, seed=1)
    assert (pred["prediction"] == KINDS[0]).all()
    assert set(pred["exposure"]) <= set(fitted["table"]["exposure"].astype(float))  # exactly, not 1e-13 off

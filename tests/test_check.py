"""``hierarchy check``: a model described and validated without fitting (hierarchy.check)."""

from __future__ import annotations

import pytest

from hierarchy.check import check_model, exposure_unit, parameters
from hierarchy.cli import main
from hierarchy.data import reference, simulate
from hierarchy.errors import HierarchyError, SpecError
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.shipped import resolve


def test_check_prints_the_formula_and_each_parameter_with_its_prior(capsys):
    assert main(["check", "rural_gradient_nb", "--priors", "vague"]) == 0
    out = capsys.readouterr().out
    spec = load_spec(resolve("rural_gradient_nb", "models"))
    assert f"formula: {spec.formula_text}" in out and "w:rural" in spec.formula_text
    vague = load_priors(resolve("vague", "priors"))
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "(" in line}
    assert str(vague["gradient"]) in lines["gradient"]
    term = lines["row_coef[w:rural]"]
    assert "interactions" in term and str(vague["interactions"]) in term
    assert "neighbourhood_covariates" in lines["row_coef[rural]"]
    assert "la_corr" in lines and "dispersion" in lines and "obs_sd" not in lines


def test_per_term_and_group_priors_are_shown_by_term(tmp_path):
    pset = load_priors(resolve("weakly_informative", "priors")).to_dict()
    pset["terms"] = {"w:rural": {"dist": "Normal", "mu": 0.0, "sigma": 0.05}}
    pset["year_sd"] = {"dist": "HalfNormal", "sigma": 0.07}
    path = tmp_path / "own.toml"
    import tomli_w

    path.write_bytes(tomli_w.dumps(pset).encode())
    model = tmp_path / "m.toml"
    model.write_text('name = "m"\nformula = "referral ~ w * z + rural + w:rural + (1 + w | la) + (1 | year) '
                     '+ offset(log(exposure))"\n')
    table = parameters(load_spec(model), load_priors(path)).set_index("parameter")
    assert table.loc["row_coef[w:rural]", "class"] == 'terms."w:rural"'
    assert table.loc["row_coef[w:rural]", "prior"] == "Normal(mu=0, sigma=0.05)"
    assert table.loc["year_sd", "class"] == "year_sd" and "0.07" in table.loc["year_sd", "prior"]


def test_check_refuses_a_bad_model_and_a_prior_set_that_lacks_a_class(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nformula = "referral ~ w * z + (1 + w | la) + offset(log(exposure))"\n'
                   'famly = "poisson"\n')
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'famly'" in err and "did you mean 'family'" in err
    with pytest.raises(HierarchyError, match="not a shipped model"):
        check_model("no_such_model")
    lacking = load_priors(resolve("weakly_informative", "priors")).to_dict()
    lacking.pop("dispersion")
    import tomli_w

    p = tmp_path / "lacking.toml"
    p.write_bytes(tomli_w.dumps(lacking).encode())
    with pytest.raises(SpecError, match="has no prior for 'dispersion'"):
        check_model("gradient_nb", p)
    own = load_priors(resolve("weakly_informative", "priors")).to_dict()
    own["terms"] = {"w:urban": {"dist": "Normal", "mu": 0.0, "sigma": 0.1}}
    p.write_bytes(tomli_w.dumps(own).encode())
    with pytest.raises(SpecError, match="prior for the term 'w:urban', which the model does not have"):
        check_model("rural_gradient_nb", p)


def test_check_with_data_gives_one_prior_predictive_line_and_checks_columns(tmp_path, capsys):
    geo = reference.synthetic_geography(6, seed=2, lsoa_per_la=12)
    table, _ = simulate.simulate(geo, seed=2)
    data = tmp_path / "t.parquet"
    table.to_parquet(data)
    assert main(["check", "gradient_nb", "--data", str(data), "--prior-draws", "50"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("prior predictive")]
    assert len(line) == 1 and "decile 1" in line[0] and "decile 10" in line[0] and "impossible" in line[0]
    assert main(["check", "rural_gradient_nb", "--data", str(data)]) == 2  # the data have no 'rural'
    assert "needs column(s) rural" in capsys.readouterr().err


def test_api_reference_builds_offline_from_the_docstrings(tmp_path):
    """``make docs`` runs pdoc; here on the newest modules only (seconds), into a temporary folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("pdoc")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "pdoc", "--docformat", "numpy", "--no-show-source", "-o",
                           str(tmp_path), "hierarchy.results.predict", "hierarchy.check", "hierarchy.published"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "hierarchy" / "results" / "predict.html").read_text()
    assert "Expected rates per 10,000 children" in page and "new LA" in page


def test_check_answers_a_bad_formula_with_one_line(tmp_path, capsys):
    """Issue 33/9 and 34/11, as the user met them: ``hierarchy check`` on a model file whose formula
    is empty, a 16-way product, non-ASCII or uncorrelated (``||``) gives exit 2 and one short line."""
    products = " * ".join(f"x{i}" for i in range(16))
    formulas = {"empty": "", "product": f"referral ~ w + {products} + (1 + w | la) + offset(log(exposure))",
                "accent": "referral ~ w + Région + (1 + w | la) + offset(log(exposure))",
                "uncorrelated": "referral ~ w + (1 + w || la) + offset(log(exposure))"}
    for name, formula in formulas.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\nformula = "{formula}"\n', encoding="utf-8")
        assert main(["check", str(path)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and len(err) < 600 and "Traceback" not in err, err
        assert str(path) in err


def test_check_reads_a_numeric_year_as_a_trend_on_a_neighbourhood_by_year_table(tmp_path, capsys):
    """Issue 34/5, the user's session: their own names mapped, ``Year + w:Year`` on one row per
    neighbourhood and year. It passed no check before (duplicated neighbourhoods, a hint naming
    --strata, which check lacks); now the year tells the rows apart and stays a number."""
    geo = reference.synthetic_geography(6, seed=7, lsoa_per_la=10)
    table, _ = simulate.simulate_years(geo, years=[2019, 2020, 2021], seed=2)
    table.rename(columns={"neighbourhood": "LSOA code", "referral": "Referrals", "year": "Year"}).to_csv(
        tmp_path / "years.csv", index=False)
    (tmp_path / "cols.toml").write_text('[columns]\nneighbourhood = "LSOA code"\n'
                                        '[counts]\nreferral = "Referrals"\n')
    (tmp_path / "trend.toml").write_text('name = "trend"\nformula = "referral ~ w * z + Year + w:Year + '
                                         '(1 + w | la) + offset(log(exposure))"\n')
    args = ["check", str(tmp_path / "trend.toml"), "--data", str(tmp_path / "years.csv"),
            "--columns", str(tmp_path / "cols.toml"), "--prior-draws", "20"]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "row_coef[Year]" in out and "row_coef[w:Year]" in out and "C(Year)" not in out
    assert f"{len(table):,} rows" in out


def test_a_per_referral_model_is_described_per_referral_not_per_child(tmp_path):
    """Issue 34 item 10: check described a re-referrals-per-referral model in per-child units."""
    spec = load_spec(resolve("re_referrals_nb", "models"))
    table = parameters(spec, load_priors(resolve("weakly_informative", "priors")))
    rows = dict(zip(table["parameter"], table["meaning"], strict=True))
    assert "log rate per referral" in rows["intercept"] and "child" not in rows["intercept"]
    geo = reference.synthetic_geography(6, seed=1, lsoa_per_la=10)
    table, _ = simulate.simulate(geo, seed=1)
    table = table[table["referral"] > 0].assign(re_referral=lambda t: t["referral"] // 4)
    data = tmp_path / "t.csv"
    table.to_csv(data, index=False)
    line = check_model("re_referrals_nb", data=data, draws=50).prior_predictive
    assert "re referral rate per 10,000 referrals in decile 1" in line and "children" not in line
    assert exposure_unit(load_spec(resolve("inverse_intervention_nb_log", "models"))) == ("child", "children")


def test_check_ml_needs_data_and_fit_needs_ml_and_a_model_in_the_laplace_regime(tmp_path):
    with pytest.raises(HierarchyError, match="give it with --data"):
        check_model("inverse_intervention_nb_log", ml=True)
    with pytest.raises(HierarchyError, match="add --ml"):
        check_model("inverse_intervention_nb_log", data=tmp_path / "t.parquet", fit=tmp_path / "f.nc")
    geo = reference.synthetic_geography(6, seed=2, lsoa_per_la=12)
    path = tmp_path / "t.parquet"
    simulate.simulate(geo, seed=2)[0].to_parquet(path)
    with pytest.raises(HierarchyError, match="method 'laplace' refused"):
        check_model("inverse_intervention_pln", data=path, ml=True)


@pytest.mark.slow  # one Laplace ML fit (~10-30 s)
def test_check_ml_recovers_known_hyperparameters_within_their_standard_errors(tmp_path, capsys):
    """Counts drawn from the default model at known values: each hyperparameter's ML estimate within 3.5
    standard errors of its truth, and the CLI prints every one of them."""
    import numpy as np

    from tests import helpers

    spec = load_spec(resolve("inverse_intervention_nb_log", "models"))
    truth = dict(intercept=-3.0, la_deprivation=0.3, gradient=0.45, cross_level=-0.25, la_sd=[0.25, 0.08],
                 rho=0.3, dispersion=6.0)
    geo = reference.synthetic_geography(n_la=40, seed=4)
    table, _ = helpers.known_truth_table(spec, helpers.geography_table(geo), truth, 4)
    path = tmp_path / "truth.parquet"
    table.to_parquet(path)
    res = check_model("inverse_intervention_nb_log", data=path, ml=True)
    t = res.ml.set_index("parameter")
    want = {"intercept": -3.0, "la_deprivation": 0.3, "gradient": 0.45, "cross_level": -0.25, "la_sd[0]": 0.25,
            "la_sd[1]": 0.08, "la_corr[1,0]": 0.3, "dispersion": 6.0}
    assert set(t.index) == set(want)
    z = {k: (t.loc[k, "ml"] - v) / t.loc[k, "ml_se"] for k, v in want.items()}
    assert all(np.isfinite(list(z.values()))) and max(abs(v) for v in z.values()) < 3.5, z
    assert "converged" in res.ml_note and "NOT" not in res.ml_note
    assert main(["check", "inverse_intervention_nb_log", "--data", str(path), "--ml"]) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in want) and "maximum likelihood" in out

"""One prior changed without a whole prior file (issue 34/6): ``extends`` and brms-style overrides."""

from __future__ import annotations

import pytest

from hierarchy.check import parameters
from hierarchy.errors import SpecError
from hierarchy.language.priors import Prior, load_priors, parse_prior_override, with_prior_overrides
from hierarchy.language.spec import load_spec
from tests.helpers import ROOT

BASE = ROOT / "priors/weakly_informative.toml"
RURAL = ROOT / "models/rural_gradient_nb.toml"


def test_a_prior_file_of_one_term_extends_a_named_set(tmp_path):
    """The methodologist's file: only [terms."w:rural"], plus extends; every other prior is the base's."""
    path = tmp_path / "tight_rural.toml"
    path.write_text('extends = "weakly_informative"\n[terms."w:rural"]\ndist = "Normal"\nmu = 0.0\nsigma = 0.05\n')
    base, pset = load_priors(BASE), load_priors(path)
    assert pset.name == "tight_rural" and pset.priors == base.priors
    assert pset.terms == {"w:rural": Prior("Normal", {"mu": 0.0, "sigma": 0.05})}
    assert pset.hash() != base.hash()
    table = parameters(load_spec(RURAL), pset).set_index("parameter")
    assert table.loc["row_coef[w:rural]", "prior"] == "Normal(mu=0, sigma=0.05)"
    assert table.loc["row_coef[rural]", "prior"] == str(base["neighbourhood_covariates"])
    path.write_text('extends = "weakly_informative"\nname = "mine"\n[la_sd]\ndist = "HalfNormal"\nsigma = 0.1\n')
    pset = load_priors(path)
    assert pset.name == "mine" and pset["la_sd"].params == {"sigma": 0.1} and pset["gradient"] == base["gradient"]


def test_extends_names_a_missing_set_or_a_circle_clearly(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('extends = "weakly_informativ"\n')
    with pytest.raises(Exception, match="weakly_informative"):
        load_priors(path)
    path.write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(SpecError, match="circle"):
        load_priors(path)


def test_a_brms_style_override_changes_one_prior():
    want = ("w:rural", Prior("Normal", {"mu": 0, "sigma": 0.05}))
    assert parse_prior_override("w:rural=normal(0, 0.05)") == want
    assert parse_prior_override(" gradient = student_t(3, 0.3, 0.2) ")[1] == Prior(
        "StudentT", {"nu": 3, "mu": 0.3, "sigma": 0.2})
    assert parse_prior_override("la_corr=lkj(20)")[1] == Prior("LKJ", {"eta": 20})
    assert parse_prior_override("w:rural=normal(sigma=0.05, mu=0)")[1].params == {"mu": 0, "sigma": 0.05}
    base = load_priors(BASE)
    pset = with_prior_overrides(base, ["w:rural=normal(0, 0.05)", "la_sd=normal(0, 0.2)"])
    assert pset.terms["w:rural"].params["sigma"] == 0.05
    assert pset["la_sd"] == Prior("HalfNormal", {"sigma": 0.2})  # an SD's normal(0, s) is brms's half-normal
    assert pset["gradient"] == base["gradient"] and "w:rural" in pset.name and pset.hash() != base.hash()
    assert with_prior_overrides(base, []).hash() == base.hash()


@pytest.mark.parametrize("text, match", [
    ("w:rural normal(0, 1)", "NAME=dist"),
    ("w:rural=norml(0, 1)", "unknown distribution 'norml'.*normal"),
    ("w:rural=normal(0)", "needs parameter"),
    ("w:rural=normal(0, 1, 2)", "takes 2 number"),
    ("w:rural=normal(0, -1)", "must be > 0"),
    ("w:rural=normal(0, a)", "not a number"),
    ("b_w:rural=normal(0, 1)", "'w:rural=normal"),
    ("row_coef[w:rural]=normal(0, 1)", "'w:rural=normal"),
])
def test_a_malformed_override_says_what_to_write(text, match):
    with pytest.raises(SpecError, match=match):
        with_prior_overrides(load_priors(BASE), [text])


def test_an_override_of_the_wrong_support_or_twice_is_refused():
    base = load_priors(BASE)
    with pytest.raises(SpecError, match="positive"):
        with_prior_overrides(base, ["la_sd=normal(1, 1)"])
    with pytest.raises(SpecError, match="twice"):
        with_prior_overrides(base, ["w:rural=normal(0, 1)", "w:rural=normal(0, 2)"])
    with pytest.raises(SpecError, match="did you mean 'gradient'"):
        with_prior_overrides(base, ["gradent=normal(0, 1)"])

"""Panel models as formulas (issue 28 item 6): the formula and the old term list give the same spec and the
same design arrays for every shipped panel model, and every term that is not a panel term is refused with
the file, the term and what is allowed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from hierarchy.data import panel
from hierarchy.errors import SpecError
from hierarchy.likelihood import panel_model as pm
from hierarchy.likelihood.panel_formula import compile_panel_formula, panel_measure

MODELS = Path(__file__).resolve().parents[2] / "models"
OLD_TERMS = '["t", "year", "dep", "dep:t", "(1 + t | la)"]'
OLD_MEASURES = {  # the shipped files' term-list form before they became formulas
    "panel_stages_nb": ["referrals", "s47", "icpc", "cpp_start", "cla_at31"],
    "panel_screening_nb": ["s47_per_referral", "icpc_per_s47", "cpp_per_icpc"],
    "panel_late_intervention_nb": ["s47_per_referral", "cpp_per_referral"],
    "panel_repeat_nb": ["rereferral_per_referral", "subsequent_per_cpp"],
}
RHS = "t + C(year) + dep + dep:t + (1 + t | la)"


def _old_form(path: Path, tmp_path: Path) -> Path:
    """The shipped file with its formula replaced by the old measures and terms."""
    lines, skip = [], False
    for line in path.read_text().splitlines():
        if line.startswith("formula = ["):
            skip = True
            measures = ", ".join(f'"{m}"' for m in OLD_MEASURES[path.stem])
            lines += [f"measures = [{measures}]", f"terms = {OLD_TERMS}"]
        elif skip:
            skip = not line.startswith("]")
        else:
            lines.append(line)
    old = tmp_path / path.name
    old.write_text("\n".join(lines) + "\n")
    return old


@pytest.fixture(scope="module")
def synthetic():
    return panel.synthetic_panel(n_la=12, years=(2016, 2017, 2018, 2019, 2020, 2021), seed=3, small_las=1).table


@pytest.mark.parametrize("name", sorted(OLD_MEASURES))
def test_formula_and_term_list_give_the_same_spec_and_design(name, tmp_path, synthetic):
    path = MODELS / f"{name}.toml"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped formula files load without a warning
        new = pm.load_panel_spec(path)
    with pytest.warns(FutureWarning, match=rf"(?s){name}.toml: measures and terms are the old form.*formula = \["):
        old = pm.load_panel_spec(_old_form(path, tmp_path))
    assert new == old and new.key(new.measures[0]) == old.key(old.measures[0])
    assert new.measures == tuple(OLD_MEASURES[name])
    present = set(synthetic["measure"])
    for m in [m for m in new.measures if m in present] or ["referrals"]:  # the design depends on the spec only
        a, b = pm.panel_design(synthetic, m, new), pm.panel_design(synthetic, m, old)
        for field in ("units", "years", "unit_idx", "year_idx", "t", "count", "lower", "upper", "exposure", "z",
                      "x"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{name} {m} {field}")
        args_a, args_b = pm.model_args(a), pm.model_args(b)
        for x, y in zip(args_a, args_b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert pm.panel_shape(a, new) == pm.panel_shape(b, old)


def test_the_warning_gives_formulas_that_load_to_the_same_spec(tmp_path):
    old = _old_form(MODELS / "panel_screening_nb.toml", tmp_path)
    with pytest.warns(FutureWarning) as record:
        spec = pm.load_panel_spec(old)
    suggested = str(record[0].message).split("in place of both:\n", 1)[1]
    text = old.read_text().replace(f"terms = {OLD_TERMS}\n", "").replace(
        "measures = [" + ", ".join(f'"{m}"' for m in OLD_MEASURES["panel_screening_nb"]) + "]", suggested)
    new = tmp_path / "new.toml"
    new.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pm.load_panel_spec(new) == spec


def test_measures_come_from_outcome_and_offset():
    assert panel_measure("s47", "children", "f") == "s47"
    assert panel_measure("s47", "referrals", "f") == "s47_per_referral"
    assert panel_measure("cpp_subsequent", "cpp_start", "f") == "subsequent_per_cpp"
    assert compile_panel_formula(f"icpc ~ {RHS} + offset(log(s47))") == (
        "icpc_per_s47", ("t", "year", "dep", "dep:t", "(1 + t | la)"))
    # products expand as lme4's do; term order does not matter; (t | la) has its intercept
    assert compile_panel_formula("referrals ~ density + dep * t + rural + C(year) + (t | la) + "
                                 "offset(log(children))")[1] == \
        ("t", "year", "dep", "dep:t", "rural", "density", "(1 + t | la)")
    assert compile_panel_formula("referrals ~ 1 + dep + (1 | la) + offset(log(children))")[1] == \
        ("dep", "(1 | la)")


@pytest.mark.parametrize("rhs, match", [
    (f"{RHS} + wiggle", r"the term wiggle is not a panel term; panel formulas take t, C\(year\)"),
    ("t + year + (1 | la)", r"the term year is not a panel term; year as a number is the trend t: write "
                            r"C\(year\)"),
    ("C(year) + (1 | la)", r"C\(year\) has no level and no trend, so it needs the trend t: add t"),
    ("t + dep:t + (1 | la)", r"dep:t needs dep"),
    ("log(dep) + (1 | la)", r"the term log\(dep\) is not a panel term"),
    ("dep:rural + (1 | la)", r"the term dep:rural is not a panel term"),
    (f"{RHS} + (1 | msoa)", r"the group \(1 \| msoa\) is not a panel term: the panel's groups are LAs"),
    ("t + dep + (1 + dep | la)", r"\(1 \+ dep \| la\) is not a panel term: write \(1 \| la\) or \(1 \+ t \| la\)"),
    ("t + dep", r"no LA level: add \(1 \+ t \| la\)"),
    ("0 + t + dep + (1 | la)", r"drops the intercept"),
])
def test_terms_that_are_not_panel_terms_are_refused_naming_file_and_term(rhs, match, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(f'name = "x"\nfamily = "nb"\nunit = "series"\nformula = "referrals ~ {rhs} + '
                    'offset(log(children))"\n')
    with pytest.raises(SpecError, match=rf"mine.toml: .*{match}"):
        pm.load_panel_spec(path)


@pytest.mark.parametrize("formula, match", [
    (f"s47 ~ {RHS} + offset(log(icpc))", r"s47 per icpc is not a panel measure \(the offset contradicts the "
                                         r"outcome\): s47 is fitted with offset\(log\(children\)\) or "
                                         r"offset\(log\(referrals\)\)"),
    (f"rereferrals ~ {RHS} + offset(log(children))", r"rereferrals per child is not a panel measure.*"
                                                     r"offset\(log\(referrals\)\)"),
    (f"s47_per_referral ~ {RHS} + offset(log(referrals))",
     r"is not a stage count: write the stage as the outcome"),
    (f"wellbeing ~ {RHS} + offset(log(children))", r"'wellbeing' is not a panel stage count; choose from"),
    (f"referrals ~ {RHS}", r"no offset: add \+ offset\(log\(children\)\)"),
    (f"referrals ~ {RHS} + offset(children)", r"write the exposure as offset\(log\(children\)\)"),
    (f"c(referrals, s47) ~ {RHS} + offset(log(children))", r"a panel formula fits one measure; give one formula "
                                                           "per measure"),
    ("referrals ~ ", r"cannot parse the formula"),
])
def test_outcomes_and_offsets_that_make_no_measure_are_refused(formula, match, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(f'name = "x"\nfamily = "nb"\nunit = "series"\nformula = "{formula}"\n')
    with pytest.raises(SpecError, match=rf"mine.toml: .*{match}"):
        pm.load_panel_spec(path)


@pytest.mark.parametrize("body, match", [
    (f'formula = ["referrals ~ {RHS} + offset(log(children))",\n'
     '"s47 ~ t + dep + (1 | la) + offset(log(children))"]',
     r"mine.toml: formula 2: its terms \['t', 'dep', '\(1 \| la\)'\] differ from formula 1's"),
    (f'formula = ["referrals ~ {RHS} + offset(log(children))", "referrals ~ {RHS} + offset(log(children))"]',
     r"mine.toml: formula 2: referrals has two formulas"),
    (f'formula = "referrals ~ {RHS} + offset(log(children))"\nmeasures = ["referrals"]',
     r"mine.toml: measures come from the formula: delete measures"),
    ("formula = 3", r"mine.toml: formula must be a string or a list of strings"),
    ('measures = ["referrals"]', r"mine.toml: missing key 'formula'"),
])
def test_file_level_formula_errors(body, match, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(f'name = "x"\nfamily = "nb"\nunit = "series"\n{body}\n')
    with pytest.raises(SpecError, match=match):
        pm.load_panel_spec(path)


def test_every_shipped_formula_renders_back_to_itself():
    for path in sorted(MODELS.glob("panel_*.toml")):
        spec = pm.load_panel_spec(path)
        for m in spec.measures:
            assert compile_panel_formula(spec.formula(m)) == (m, spec.terms)
            assert spec.formula(m) in path.read_text()


def test_panel_files_are_told_from_neighbourhood_files():
    assert all(pm.is_panel_model(p) for p in MODELS.glob("panel_*.toml"))
    assert not any(pm.is_panel_model(p) for p in MODELS.glob("*.toml") if not p.stem.startswith("panel_"))

"""Formulas a user got wrong, each answered by one clear line (issue 33/9, issue 34/11): no traceback,
no hang, no 40 KB echo."""

from __future__ import annotations

import time

import pytest

from hierarchy.errors import SpecError
from hierarchy.language.formula import MAX_TERMS, compile_formula
from hierarchy.language.spec import ModelSpec, load_spec

TAIL = " + (1 + w | la) + offset(log(exposure))"


def _error(formula, **kw) -> str:
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as err:
        compile_formula(formula, **kw)
    assert time.perf_counter() - t0 < 5, "refused, but slowly"
    text = str(err.value)
    assert "\n" not in text and len(text) < 600, text
    return text


def test_an_empty_formula_says_so_without_a_placeholder():
    for empty in ("", "   "):
        text = _error(empty)
        assert "empty formula" in text and "{text" not in text
    assert "{text" not in _error("referral w + z")


def test_a_product_that_expands_to_thousands_of_terms_is_refused_before_expanding():
    """A 16-way product (65,535 terms) was expanded for over 100 s by ``check``."""
    cols = " * ".join(f"x{i}" for i in range(16))
    text = _error(f"referral ~ w + {cols}{TAIL}")
    assert "65,536" in text and str(MAX_TERMS) in text  # w and the 65,535
    small = " * ".join(f"x{i}" for i in range(3))
    assert len(compile_formula(f"referral ~ w + {small}{TAIL}").row_terms) == 7  # 2^3 - 1: still allowed


def test_a_5000_term_formula_is_refused_without_recursion_or_echo():
    terms = " + ".join(f"x{i}" for i in range(5000))
    text = _error(f"referral ~ w + {terms}{TAIL}")
    assert "5,00" in text and "x4999" not in text


def test_deep_brackets_are_refused():
    text = _error("referral ~ w + " + "(" * 3000 + "x" + ")" * 3000 + TAIL)
    assert "nests brackets" in text


def test_a_non_ascii_column_name_says_how_to_map_it():
    text = _error(f"referral ~ w + Région{TAIL}")
    assert "'Région'" in text and "'é'" in text and 'region = "Région"' in text


def test_uncorrelated_la_effects_say_what_works_instead():
    """Issue 34/11: ``||`` has no model behind it (the LA effects share one LKJ correlation); the
    message gives the forms that work, and the one it suggests compiles."""
    text = _error("referral ~ w + (1 + w || la) + offset(log(exposure))")
    assert "(1 + w | la)" in text and "la_corr" in text and "eta" in text and "(1 | la)" in text
    assert compile_formula("referral ~ w + (1 + w | la) + offset(log(exposure))").random_gradient


def test_a_deeply_nested_model_file_is_one_clear_error(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\nformula = ' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict({"name": "m", "categorical": [[[[[["x"] * 5000]]]]]})
    assert len(str(err.value)) < 300

"""The split of cv, compare_models and checking by job (issue 28): every name moved out of them is still
importable from the old module, as the very object of its new home, and each module is under the size bar
(800 lines, functions under 100 lines)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

R, P = "hierarchy.results.", "hierarchy.reporting."
MOVED = {  # old module -> {new module: names that moved there}
    R + "cv": {
        R + "cv_heldout": ("HeldOut", "heldout_rows", "heldout_within", "integration_unsupported", "own_rows"),
        R + "cv_predictive": ("GAUSS_HERMITE_NODES", "NEWTON_STEPS", "flat_posterior",
                              "la_integrated_log_likelihood", "la_log_predictive", "la_lpd"),
        R + "cv_refits": ("REFIT_SETTINGS", "batch_unsupported", "fit_without", "fold_data", "heldout_lpd",
                          "heldout_lpd_batched"),
        R + "cv_plan": ("fit_seconds", "la_folds", "refit_budget_line", "refit_plan", "refit_progress_line"),
    },
    R + "compare_models": {
        R + "compare_checks": ("ROWS_PARTS",),
        R + "compare_elpd": ("loglik_draws", "loo", "relative_eff"),
        R + "compare_headlines": ("HEADLINE_WORDS", "SPATIAL_CONFOUNDING", "headline_side_by_side",
                                  "side_by_side_sentence"),
        R + "cv": ("pareto_k_threshold",),
    },
    P + "checking": {P + "acro_folder": ("ACRO_VERSION", "TOOL", "check_folder", "describe_folder",
                                         "write_records")},
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_names_are_importable_from_the_old_module(old):
    before = importlib.import_module(old)
    for new, names in MOVED[old].items():
        after = importlib.import_module(new)
        for name in names:
            assert getattr(before, name) is getattr(after, name), (old, new, name)
    missing = [n for n in getattr(before, "__all__", ()) if not hasattr(before, n)]
    assert not missing, (old, missing)


@pytest.mark.parametrize("module", sorted(set(MOVED) | {m for new in MOVED.values() for m in new}))
def test_split_modules_are_under_the_size_bar(module):
    text = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in ast.walk(ast.parse(text))
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 >= 100]
    assert len(text.splitlines()) < 800 and not long, (module, len(text.splitlines()), long)

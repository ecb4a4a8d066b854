"""Grouped cross-validation's refit budget and stacking weights (issue 34 item 7); no fitting."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hierarchy.cli import build_parser
from hierarchy.errors import HierarchyError
from hierarchy.results import cv

LAS = [f"E{i:08d}" for i in range(30)]


def _az_weights(pointwise: dict[str, np.ndarray]) -> dict[str, float]:
    import arviz as az
    import xarray as xr

    loos = {}
    for name, values in pointwise.items():  # draws that all give the unit the same value: loo_i = value
        ll = xr.Dataset({"y": (("chain", "draw", "la"), np.broadcast_to(values, (1, 100, len(values))).copy())})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loos[name] = az.loo(az.InferenceData(log_likelihood=ll), reff=1.0, pointwise=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(loos, method="stacking")
    return table["weight"].to_dict()


def test_stacking_weights_match_arviz_on_row_scale_values():
    rng = np.random.default_rng(3)
    base = rng.normal(-3, 1, 200)
    # a is better on the first 120 units and b on the rest: the optimum is inside the simplex
    a = base + np.where(np.arange(200) < 120, 0.4, -0.6) + rng.normal(0, 0.05, 200)
    pointwise = {"a": a, "b": base}
    ours, theirs = cv.stacking_weights(pointwise), _az_weights(pointwise)
    assert 0.2 < ours["a"] < 0.9
    assert ours["a"] == pytest.approx(theirs["a"], abs=0.01) and sum(ours.values()) == pytest.approx(1)


def test_stacking_weights_of_la_sums_are_not_stuck_at_equal_weights():
    """Each LA's ELPD sums its rows (~ -800): ArviZ's exp() underflows and leaves the optimiser at its
    start, 0.50 / 0.50, next to a clear ELPD preference. The log-scale weights give the preferred model 1."""
    rng = np.random.default_rng(1)
    base = rng.normal(-800, 40, 30)
    better = base + rng.normal(1.0, 0.5, 30)  # better on (nearly) every LA: difference ~30, SE ~3
    pointwise = {"better": better, "worse": base}
    assert _az_weights(pointwise)["better"] == pytest.approx(0.5)  # the cause, as ArviZ 0.23 has it
    ours = cv.stacking_weights(pointwise)
    assert ours["better"] > 0.99 and ours["worse"] < 0.01
    shifted = {n: v - 800 for n, v in pointwise.items()}  # a constant per unit changes nothing
    assert cv.stacking_weights(shifted)["better"] == pytest.approx(ours["better"], abs=1e-6)
    with pytest.raises(HierarchyError, match="finite"):
        cv.stacking_weights({"a": np.array([-1.0, -np.inf]), "b": np.array([-1.0, -2.0])})


def test_max_refits_is_a_budget_never_exceeded():
    bad = {"m1": LAS[:12], "m2": LAS[:3]}
    for budget in (2, 5, 10, 12, 40):
        how, plan, fold_of, why = cv.refit_plan(LAS, bad, cv="la", folds=10, max_refits=budget)
        n = max(len(groups) for groups in plan.values())
        assert n <= budget, (budget, how, n)
        if budget >= 12:  # every LA above the threshold refitted on its own
            assert how == "exact" and plan["m1"] == [[c] for c in LAS[:12]] and (fold_of == -1).all()
        else:  # K-fold with min(--folds, budget) folds: every LA left out once
            assert how == "kfold" and n == min(10, budget) and f"{n} folds" in why
            assert sorted(c for g in plan["m1"] for c in g) == sorted(LAS) and fold_of.nunique() == n
    how, plan, _, why = cv.refit_plan(LAS, bad, cv="la", folds=10, max_refits=1)
    assert how == "psis" and plan == {"m1": [], "m2": []} and "flagged" in why
    how, plan, _, _ = cv.refit_plan(LAS, {"m1": [], "m2": []}, cv="la", folds=10, max_refits=0)
    assert how == "psis"
    with pytest.raises(HierarchyError, match="--folds 10 needs 10 refits per model, more than --max-refits 4"):
        cv.refit_plan(LAS, bad, cv="la-kfold", folds=10, max_refits=4)
    how, plan, _, _ = cv.refit_plan(LAS, bad, cv="la-kfold", folds=4, max_refits=4)
    assert how == "kfold" and len(plan["m2"]) == 4


def test_the_refit_count_and_likely_time_are_said_before_starting():
    plan = {"m1": [["a"], ["b"]], "m2": [["a"]]}
    line = cv.refit_budget_line(plan, {"m1": 27.0, "m2": 40.0}, "2 LA(s) above the threshold")
    assert "3 refits (m1 2, m2 1)" in line and "about 2 min at most" in line and "--max-refits" in line
    assert "time unknown" in cv.refit_budget_line(plan, {"m1": 27.0, "m2": None}, "why")
    assert "no refits" in cv.refit_budget_line({"m1": [], "m2": []}, {}, "every k fine")
    assert cv.refit_progress_line(2, 20, 60.0) == "refit 2 of 20 done after 60 s; about 9 min left"
    assert cv.refit_progress_line(20, 20, 600.0) == "refit 20 of 20 done after 10 min"


def test_max_refits_help_explains_the_budget():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["compare-models"]
    text = " ".join(sub.format_help().split())
    assert "budget" in text and "min(--folds, N)" in text and "below 2" in text

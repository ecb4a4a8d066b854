"""Which refits grouped cross-validation runs, and how long they are likely to take (:mod:`hierarchy.results.cv`).

:func:`la_folds` assigns LAs to folds, :func:`refit_plan` chooses between PSIS, exact refits of the
LAs whose Pareto k is above the threshold and K-fold by LA within ``--max-refits``, and
:func:`refit_budget_line` / :func:`refit_progress_line` say what the refits will cost and have cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

__all__ = ["fit_seconds", "la_folds", "refit_budget_line", "refit_plan", "refit_progress_line"]


def la_folds(las: Sequence[str], k: int, *, seed: int = 0) -> pd.Series:
    """Assign LAs to ``k`` folds at random, as evenly as possible (sizes differ by at most one).

    Parameters
    ----------
    las : sequence of str
        LA codes (duplicates are ignored).
    k : int
        Number of folds, 2 to the number of LAs.
    seed : int
        Seed of the random assignment; the same LAs, ``k`` and seed give the same folds.

    Returns
    -------
    pandas.Series
        Fold number (0 to k-1) indexed by LA code, in code order.
    """
    codes = np.unique(np.asarray(las).astype(str))
    if not 2 <= int(k) <= len(codes):
        raise HierarchyError(f"--folds must be between 2 and the number of LAs ({len(codes)}), got {k}")
    fold = np.empty(len(codes), dtype=int)
    fold[np.random.default_rng(seed).permutation(len(codes))] = np.arange(len(codes)) % int(k)
    return pd.Series(fold, index=pd.Index(codes, name="la"), name="fold")


def refit_plan(las: Sequence[str], bad: dict[str, Sequence[str]], *, cv: str, folds: int, max_refits: int,
               seed: int = 0) -> tuple[str, dict[str, list[list[str]]], pd.Series, str]:
    """Which refits grouped cross-validation runs, within a budget of ``max_refits`` per model.

    * ``cv="la-kfold"``: ``folds`` refits per model, each without one fold of LAs; refused when
      ``folds`` is above ``max_refits``;
    * ``cv="la"``: the LAs whose Pareto k is above the threshold (``bad``) are refitted one by one
      when there are at most ``max_refits`` of them in every model; when there are more, K-fold by
      LA with ``min(folds, max_refits)`` folds replaces PSIS for every LA (each LA is still left out
      once, by a coarser split); with a budget below 2 no K-fold is possible and PSIS is kept, the
      unreliable LAs flagged.

    Parameters
    ----------
    las : sequence of str
        LA codes, in the order of the pointwise values.
    bad : dict of str to sequence of str
        Model name -> LA codes whose Pareto k is above the threshold.
    cv : {"la", "la-kfold"}
    folds, max_refits, seed : int
        ``--folds``, ``--max-refits`` and the seed of the fold assignment.

    Returns
    -------
    (str, dict, pandas.Series, str)
        The method (``"psis"``, ``"exact"`` or ``"kfold"``), model name -> the LA groups of its
        refits, each LA's fold (-1: none) and why, in words.
    """
    las = [str(c) for c in las]
    no_fold = pd.Series(-1, index=pd.Index(las, name="la"))
    n_bad = max((len(b) for b in bad.values()), default=0)
    if cv == "la-kfold":
        if folds > max_refits:
            raise HierarchyError(f"--cv la-kfold --folds {folds} needs {folds} refits per model, more than "
                                 f"--max-refits {max_refits}: lower --folds or raise --max-refits")
        k, why = folds, f"K-fold by LA, {folds} folds (asked for)"
    elif n_bad == 0:
        return "psis", {n: [] for n in bad}, no_fold, "every LA-level Pareto k is at most the threshold"
    elif n_bad <= max_refits:
        return ("exact", {n: [[str(c)] for c in b] for n, b in bad.items()}, no_fold,
                f"{n_bad} LA(s) with Pareto k above the threshold, each refitted exactly "
                f"(within --max-refits {max_refits})")
    elif max_refits < 2:
        return ("psis", {n: [] for n in bad}, no_fold,
                f"--max-refits {max_refits}: {n_bad} LA(s) with Pareto k above the threshold, more than "
                "that to refit one by one and too few refits for K-fold by LA (2 at least), so PSIS is kept "
                "and those LAs are flagged")
    else:
        k = min(folds, max_refits, len(las))
        why = (f"{n_bad} LA(s) with Pareto k above the threshold, more than --max-refits {max_refits}: "
               f"K-fold by LA with {k} folds instead (min(--folds {folds}, --max-refits {max_refits}))")
    fold_of = la_folds(las, k, seed=seed)
    groups = [list(fold_of.index[fold_of == f]) for f in range(k)]
    return "kfold", {n: groups for n in bad}, fold_of, why


def fit_seconds(idata) -> float | None:
    """Seconds a fit took (its provenance ``timings``: ``total``, or warm-up plus sampling), or None."""
    from hierarchy.results.fitfile import provenance

    t = provenance(idata).get("timings") or {}
    total = t.get("total", (t.get("warmup") or 0.0) + (t.get("sampling") or 0.0))
    return float(total) if total else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def refit_budget_line(plan: dict[str, list[list[str]]], seconds: dict[str, float | None], why: str) -> str:
    """One line said before any refit: how many refits will run and how long they are likely to take.

    The estimate is each model's own fit time (its provenance) per refit: a refit has fewer rows
    and the same sampler settings, so this is an upper estimate; refits saved by an earlier run are
    reused and take seconds.

    Parameters
    ----------
    plan : dict
        Model name -> LA groups of its refits (:func:`refit_plan`).
    seconds : dict
        Model name -> its fit's seconds (:func:`fit_seconds`; None: unknown).
    why : str
        The reason of the plan.
    """
    n = sum(len(g) for g in plan.values())
    if n == 0:
        return f"grouped cross-validation: no refits ({why})"
    per = ", ".join(f"{m} {len(g)}" for m, g in plan.items())
    known = {m: s for m, s in seconds.items() if s}
    total = sum(len(plan[m]) * s for m, s in known.items())
    eta = (f"about {_duration(total)} at most (each model's own fit time per refit: "
           + ", ".join(f"{m} {s:.0f} s" for m, s in known.items()) + "; saved refits are reused)"
           if len(known) == len(plan) else "time unknown until the first refit (no fit time recorded)")
    return f"grouped cross-validation: {n} refits ({per}), {eta}; {why}. Cap them with --max-refits N."


def refit_progress_line(done: int, total: int, elapsed: float) -> str:
    """Progress after ``done`` of ``total`` refits, ``elapsed`` seconds in: the time left as measured so far."""
    left = elapsed / done * (total - done) if done else float("nan")
    return (f"refit {done} of {total} done after {_duration(elapsed)}"
            + (f"; about {_duration(left)} left" if done < total else ""))

"""Intersectional strata of the simulator (MAIHDA): stratum labels, main-effect indicators, and planted
interactions beyond the additive main effects with their truth."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hierarchy.data.calibration import (
    AGE_COLUMNS,
    INTERSECTION,
    KNOWN_STRATA,
    SEX_SHARE,
)
from hierarchy.errors import HierarchyError

if TYPE_CHECKING:  # population.py builds on this module
    from hierarchy.data.population import _Population


def stratum_labels(rows: dict[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
    """Intersectional stratum label of each row, ``"ethnicity/sex/age_band"`` (e.g. ``"Black/male/10-15"``),
    as the design joins the columns of ``(1 | ethnicity:sex:age_band)``."""
    parts = [np.asarray(rows[c]).astype(str) for c in INTERSECTION]
    out = parts[0].astype(object)
    for p in parts[1:]:
        out = out + "/" + p
    return out


MAIN_EFFECT_REFERENCE = {"ethnicity": "White", "sex": "female", "age_band": "0-4"}
"""Reference level of each intersection column for :func:`main_effect_indicators` (the largest group,
female, the youngest band)."""


def indicator_name(column: str, level: str) -> str:
    """Formula-safe name of the 0/1 column of ``level`` of ``column``: ``age_band_10_15``, ``sex_male``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{column}_{level}")


def main_effect_indicators(table: pd.DataFrame, reference: dict[str, str] | None = None) -> pd.DataFrame:
    """The table with a 0/1 column per non-reference level of each intersection column.

    The MAIHDA main-effects model (``models/maihda_main_nb.toml``) writes the main effects of
    ethnicity, sex and age band as these columns (``ethnicity_Black + w:ethnicity_Black + ...``)
    because a formula takes one categorical stratum term; with treatment coding against
    :data:`MAIN_EFFECT_REFERENCE` it is the same model as ``C(ethnicity) + C(sex) + C(age_band)``.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows with columns ``ethnicity``, ``sex``, ``age_band``.
    reference : dict, optional
        Column -> reference level (default :data:`MAIN_EFFECT_REFERENCE`).

    Returns
    -------
    pandas.DataFrame
        A copy with float columns :func:`indicator_name` of each other level present.
    """
    reference = dict(MAIN_EFFECT_REFERENCE if reference is None else reference)
    out = table.copy()
    for col in INTERSECTION:
        if col not in table:
            raise HierarchyError(f"main effects need the column {col!r} (intersection {', '.join(INTERSECTION)}); "
                                 f"the table has {', '.join(map(str, table.columns))}")
        values = table[col].astype(str)
        levels = sorted(set(values))
        if reference[col] not in levels:
            raise HierarchyError(f"column {col!r} has no row of its reference level {reference[col]!r} (levels "
                                 f"{', '.join(levels)}): give reference={{{col!r}: one of them}}")
        for lev in levels:
            if lev == reference[col]:
                continue
            name = indicator_name(col, lev)
            if name in table:
                raise HierarchyError(f"column {name!r} is already in the table: main_effect_indicators would "
                                     "overwrite it; rename or drop it first")
            out[name] = (values == lev).to_numpy(dtype=float)
    return out


def _check_interaction(interaction: Any, strata: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``{label: (rate ratio, gradient multiplier)}`` checked ({} for none); a one-line error otherwise."""
    if not interaction:
        return {}
    if set(strata) != set(KNOWN_STRATA):
        raise HierarchyError(f"interaction= plants effects on ethnicity x sex x age strata: pass "
                             f"strata=('ethnicity', 'age', 'sex'), got strata={strata}")
    from hierarchy.data import findings  # findings imports simulate, which imports this module: import at use

    known = {f"{e}/{s}/{a}" for e in findings.ETHNIC_GROUPS for s in SEX_SHARE for a in AGE_COLUMNS}
    out = {}
    for lab, value in dict(interaction).items():
        if lab not in known:
            raise HierarchyError(f"interaction: no stratum {lab!r}; labels are ethnicity/sex/age_band, e.g. "
                                 f"'Black/male/10-15' (groups {', '.join(findings.ETHNIC_GROUPS)})")
        try:
            ratio, grad = (float(v) for v in value)
        except (TypeError, ValueError):
            raise HierarchyError(f"interaction[{lab!r}] must be (rate ratio, gradient multiplier), e.g. "
                                 f"(1.5, 1.0); got {value!r}") from None
        if not (math.isfinite(ratio) and math.isfinite(grad) and ratio > 0 and grad > 0):
            raise HierarchyError(f"interaction[{lab!r}]: both multipliers must be finite and above 0, got "
                                 f"({ratio}, {grad})")
        out[lab] = (ratio, grad)
    return out


def beyond_main_effects(offsets: dict[str, float], levels: list[str]) -> dict[str, float]:
    """The part of planted stratum offsets that additive main effects cannot carry.

    The residual of ``offsets`` (0 for strata not named) after an unweighted least-squares fit of an
    intercept and the main effects of each component of the labels in ``levels``: what the MAIHDA
    main-effects model's stratum effects estimate when the strata are well measured (its fixed main
    effects are free and its N(0, sd^2) stratum effects take the smallest sum of squares left).

    Parameters
    ----------
    offsets : dict
        Stratum label -> planted offset (log scale).
    levels : list of str
        Every stratum label of the data (``"a/b/c"``).

    Returns
    -------
    dict
        Label -> residual, for every label of ``levels``.
    """
    comps = np.array([lab.split("/") for lab in levels], dtype=object)
    cols = [np.ones(len(levels))]
    for k in range(comps.shape[1]):
        for lev in sorted(set(comps[:, k]))[1:]:
            cols.append((comps[:, k] == lev).astype(float))
    x = np.column_stack(cols)
    y = np.array([offsets.get(lab, 0.0) for lab in levels])
    res = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return {lab: float(r) for lab, r in zip(levels, res, strict=True)}


def _interaction_offsets(planted: dict[str, tuple[float, float]], sd: Any, strata: tuple[str, ...],
                         seed: int) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Log offsets (rate, gradient) per stratum label: the planted ones plus N(0, sd) draws for every
    stratum (from a stream of their own); also the draws alone."""
    try:
        sd_rate, sd_grad = (float(v) for v in sd)
    except (TypeError, ValueError):
        raise HierarchyError(f"interaction_sd is two SDs (log rate, log gradient), e.g. (0.15, 0.08); got "
                             f"{sd!r}") from None
    if not (sd_rate >= 0 and sd_grad >= 0 and math.isfinite(sd_rate + sd_grad)):
        raise HierarchyError(f"interaction_sd must be two finite SDs >= 0, got ({sd_rate}, {sd_grad})")
    drawn: dict[str, tuple[float, float]] = {}
    if sd_rate > 0 or sd_grad > 0:
        _check_interaction({"White/female/0-4": (1.0, 1.0)}, strata)  # the strata it needs
        from hierarchy.data import findings  # findings imports simulate, which imports this module: import at use

        labels = [f"{e}/{s}/{a}" for e in findings.ETHNIC_GROUPS for s in SEX_SHARE for a in AGE_COLUMNS]
        z = np.random.default_rng([seed, 2024]).standard_normal((len(labels), 2))
        drawn = {lab: (sd_rate * float(a), sd_grad * float(b)) for lab, (a, b) in zip(labels, z, strict=True)}
    total = {lab: (math.log(r), math.log(g)) for lab, (r, g) in planted.items()}
    for lab, (a, b) in drawn.items():
        r0, g0 = total.get(lab, (0.0, 0.0))
        total[lab] = (r0 + a, g0 + b)
    return total, drawn


def _interaction_truth(pop: _Population, planted: dict[str, tuple[float, float]],
                       total: dict[str, tuple[float, float]], sd: Any) -> dict[str, Any]:
    levels = sorted(set(stratum_labels(pop.rows).tolist()))
    rate = beyond_main_effects({k: v[0] for k, v in total.items()}, levels)
    grad = beyond_main_effects({k: v[1] for k, v in total.items()}, levels)
    return {
        "group": ":".join(INTERSECTION),
        "planted": {k: {"rate_ratio": v[0], "gradient_multiplier": v[1], "log_rate": math.log(v[0]),
                        "log_gradient": math.log(v[1])} for k, v in planted.items()},
        "sd": {"log_rate": float(sd[0]), "log_gradient": float(sd[1])},
        "offsets": {k: {"log_rate": v[0], "log_gradient": v[1]} for k, v in sorted(total.items())},
        "beyond_main_effects": {k: {"log_rate": rate[k], "log_gradient": grad[k]} for k in levels},
        "note": "planted (and, with sd, drawn for every stratum) on top of the additive ethnicity, sex and age "
                "main effects: offsets on the log rate and the log gradient per 10 points; beyond_main_effects "
                "is what the main effects cannot carry (unweighted least-squares residual over the strata), "
                "the MAIHDA main-effects model's estimand",
    }

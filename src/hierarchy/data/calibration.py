"""The simulator's calibration: published gradient scores, dispersions and stratum multipliers, the LA
gradient curve through them, and the DfE LA totals each simulated stage is calibrated to."""

from __future__ import annotations

import math

import numpy as np

from hierarchy.data.reference import Geography
from hierarchy.errors import HierarchyError

SIM_STAGES: tuple[str, ...] = ("referral", "s47", "cp_plan", "looked_after")

TARGET_COLUMN = {"referral": "referrals", "s47": "s47", "cp_plan": "cpp_start",
                 "looked_after": "cla_at31"}

GRADIENT_AT_MEAN = {"referral": 1.62, "s47": 1.72, "cp_plan": 1.80, "looked_after": 1.95}

REFERRAL_CURVE = {-0.1: 2.33, 0.0: 1.62, 0.1: 1.39}
"""Published referral gradient scores at Xbar - 0.1, Xbar and Xbar + 0.1."""

DISPERSION = {"referral": 6.0, "s47": 5.0, "cp_plan": 4.0, "looked_after": 4.0}

TAU = 0.10
"""SD of the LA slope deviations v_j (log gradient scale)."""

STAGE_NOISE_SD = 0.03

MSOA_SD = 0.10
"""SD of the MSOA (middle-level) effects on the log rate, shared by every stage."""

LA_CONDITION_MODERATION = {"la_rural_share": 0.05, "la_log_density": 0.0}
"""With ``la_conditions=True``: change in every stage's LA log gradient per SD (over LAs) of each
LA condition: steeper in more rural LAs (DESIGN section 3), not by density once rurality is known.
Off by default: rural LAs are less deprived, so a model without rurality would read the
moderation as part of the inverse intervention effect and miss the published headline truth."""

CURVE_CLIP = (0.04, 0.28)

AGE_GRADIENT = {"0-4": 1.10, "5-9": 1.03, "10-15": 0.96, "16-17": 0.90}

AGE_RATE = {"0-4": 1.15, "5-9": 0.95, "10-15": 1.00, "16-17": 0.85}

AGE_COLUMNS = {"0-4": "age_0_4", "5-9": "age_5_9", "10-15": "age_10_15", "16-17": "age_16_17"}

SEX_SHARE = {"female": 0.488, "male": 0.512}

SEX_RATE = {"female": 1.0, "male": 1.05}

KNOWN_STRATA = ("ethnicity", "age", "sex")

INTERSECTION = ("ethnicity", "sex", "age_band")
"""Columns of the intersectional strata, in the order of their labels (``"Black/male/10-15"``) and of
the group term ``(1 + w | ethnicity:sex:age_band)``."""

MAIHDA_INTERACTION = {"Black/male/10-15": (1.6, 1.0), "Asian/female/0-4": (0.6, 1.5)}
"""A planted intersectional interaction for the MAIHDA recovery test and notebook 09: stratum label ->
(rate ratio, gradient multiplier) beyond the additive main effects."""

MAIHDA_INTERACTION_SD = (0.15, 0.08)
"""SDs (log rate, log gradient per 10 points) of a small interaction drawn for every stratum beside the
planted one in the recovery test and notebook 09: with all other strata exactly additive, the
stratum SD would be tiny and the N(0, sd^2) stratum effects would shrink the planted strata far
towards 0 (a property of MAIHDA's normal stratum effects, not of the data)."""


def curve_coefficients(xbar: float) -> tuple[float, float, float]:
    """Solve (d0, d1, d2) of the typical-LA referral gradient curve.

    Parameters
    ----------
    xbar : float
        Mean LA deprivation (unweighted mean over LAs of the child-weighted LA means).

    Returns
    -------
    tuple of float
        ``log g(X) = d0 + d1 l + d2 l^2`` with ``l = log(X / xbar)`` passing exactly through
        :data:`REFERRAL_CURVE`.
    """
    if not xbar > 0.1:
        raise HierarchyError(f"mean LA deprivation {xbar:.3f} must exceed 0.1 to place the "
                             "curve point 10 points below it")
    ls = np.array([math.log((xbar + dx) / xbar) for dx in REFERRAL_CURVE])
    a = np.column_stack([np.ones(3), ls, ls**2])
    d = np.linalg.solve(a, np.log(np.array(list(REFERRAL_CURVE.values()))))
    return float(d[0]), float(d[1]), float(d[2])


def log_gradient(x_la: np.ndarray | float, xbar: float, d: tuple[float, float, float],
                 clip: tuple[float, float] | None = CURVE_CLIP) -> np.ndarray:
    """Log gradient score of a typical LA at deprivation ``x_la`` (curve clipped to ``clip``).

    Parameters
    ----------
    x_la : array_like
        LA deprivation.
    xbar : float
        Mean LA deprivation.
    d : tuple of float
        Curve coefficients from :func:`curve_coefficients` (possibly shifted in ``d0``).
    clip : tuple of float, optional
        X range outside which the curve is held constant; None for no clipping.

    Returns
    -------
    numpy.ndarray
    """
    x = np.asarray(x_la, dtype=float)
    if clip is not None:
        x = np.clip(x, *clip)
    ell = np.log(x / xbar)
    return d[0] + d[1] * ell + d[2] * ell**2


def _targets(geo: Geography, year: int, stage: str) -> tuple[np.ndarray, np.ndarray, int]:
    """DfE target per LA (in geo.la order), imputed flags, and the year used."""
    col = TARGET_COLUMN[stage]
    dfe = geo.dfe
    if year not in set(dfe["year"].tolist()):
        raise HierarchyError(f"no DfE figures for year {year} in {geo.source}; years: "
                             f"{sorted(set(dfe['year'].tolist()))}")
    years_with = sorted(dfe.loc[dfe[col].notna(), "year"].unique().tolist())
    if not years_with:
        raise HierarchyError(f"the DfE table has no {col} figures for any year")
    if year in years_with:
        used = year
    else:
        used = int(min(years_with, key=lambda y: (abs(y - year), -y)))
    rows = dfe[dfe["year"] == used].set_index("la")
    la = geo.la["la"]
    counts = rows[col].reindex(la).to_numpy(dtype=float)
    pop = rows["pop_0_17"].reindex(la).to_numpy(dtype=float)
    ok = np.isfinite(counts) & np.isfinite(pop) & (pop > 0)
    rate = counts[ok].sum() / pop[ok].sum()
    imputed = ~np.isfinite(counts)
    counts = np.where(imputed, rate * geo.la["children"].to_numpy(dtype=float), counts)
    return counts, imputed, used


def _off_the_curve(v: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """LA slope deviations with their projection on the curve's basis (1, l, l^2) removed.

    The realised LA slopes then regress exactly onto the typical-LA curve, so the simulated
    population itself has the published gradients (1.62 / 2.33 / 1.39), not a random draw
    around them (151 LAs with tau = 0.1 would otherwise move the 10-points-less gradient by
    about +-0.1).
    """
    if len(v) <= 3:
        return v
    basis = np.column_stack([np.ones_like(ell), ell, ell**2])
    return v - basis @ np.linalg.lstsq(basis, v, rcond=None)[0]


def _la_regression(alpha: np.ndarray, ell: np.ndarray, slope_res: np.ndarray
                   ) -> dict[str, float | None]:
    ok = np.isfinite(alpha)
    a1, a0 = np.polyfit(ell[ok], alpha[ok], 1)
    res = alpha[ok] - (a0 + a1 * ell[ok])
    corr = float(np.corrcoef(res, slope_res[ok])[0, 1]) if ok.sum() > 2 else None
    return {"a0": float(a0), "a1": float(a1), "intercept_residual_sd": float(res.std(ddof=1)),
            "correlation": corr}


def _deciles(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """National deciles over neighbourhoods (1 = least deprived); ties broken by code."""
    order = np.lexsort((codes, x))
    dec = np.empty(len(x), dtype=np.int64)
    dec[order] = np.arange(len(x)) * 10 // len(x) + 1
    return dec

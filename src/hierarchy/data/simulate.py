"""Calibrated national simulator of neighbourhood counts with a known truth.

:func:`simulate` draws one count per neighbourhood (LSOA), or per neighbourhood x stratum, and stage
from a negative binomial multilevel model whose parameters are set so that the published figures are
reproduced; :func:`simulate_years` does the same for several years (neighbourhood x year rows, each
year calibrated to its own DfE LA totals, the LA effects persisting, an optional gradient trend; its
own docstring describes its truth); :func:`write` saves the table (parquet) and its truth (JSON) side
by side.

Data-generating process
-----------------------
For neighbourhood i in LA j, stage s (``referral``, ``s47``, ``cp_plan``, ``looked_after``)::

    y_is ~ NegBin(mu_is, phi_s)                 (variance mu + mu^2 / phi)
    log mu_is = log E_i + alpha_js + (beta_js + o_k) * w_i + r_k
    w_i = (x_i - X_j) / 0.1                     (within-LA centring, per 10 points)
    beta_js = log g(X_j) + log(G_s / 1.62) + v_j + e_js
    log g(X) = d0 + d1 * l + d2 * l^2,  l = clip(log(X / Xbar), log(0.04/Xbar), log(0.28/Xbar))

x is the neighbourhood income rate, X_j the child-weighted mean of x over LA j and Xbar the
unweighted mean of X_j over LAs. (d0, d1, d2) solve g(Xbar) = 1.62, g(Xbar - 0.1) = 2.33,
g(Xbar + 0.1) = 1.39 exactly (the published referral gradient scores); ``G_s`` (gradient at mean
LA deprivation) is 1.62, 1.72, 1.80, 1.95 for the four stages. The curve is clipped to X in
[0.04, 0.28] so that the least deprived LAs (X down to 0.029) do not extrapolate the quadratic;
``v_j ~ N(0, tau)`` with ``tau = 0.10`` is shared across stages and ``e_js ~ N(0, 0.03)`` adds a
little stage-specific slope noise (none for referrals). ``alpha_js`` is solved so that each LA's
expected total, summed over its rows, equals the DfE count for ``year`` (referrals ->
``referrals``, s47 -> ``s47``, cp_plan -> ``cpp_start``, looked_after -> ``cla_at31``, from the
nearest year with data when ``year`` has none). An LA without a DfE value gets the national rate
times its children; the truth lists these. Dispersions phi: 6, 5, 4, 4.

Strata (``o_k`` on the slope, ``r_k`` on the log rate): age bands multiply the gradient score by
1.10, 1.03, 0.96, 0.90 (0-4, 5-9, 10-15, 16-17) and the rate by 1.15, 0.95, 1.00, 0.85; sex: no
gradient difference, male/female rate ratio 1.05, exposure split 0.488 female / 0.512 male. The
log multipliers are centred so their national exposure-weighted mean is 0, so the pooled gradient
and ``alpha`` keep their unstratified meaning. Rows with zero exposure (an empty age band) are left
out. Ethnicity (broad groups White, Mixed, Asian, Black, Other) splits each row's children by its
neighbourhood's *simulated* ethnic shares (:func:`hierarchy.data.findings.ethnic_populations`; a user
with Census 2021 tables gives those instead, see that module) and multiplies the gradient score by the
group's score over White's (1.91, 1.62, 1.48, 1.27, 1.40) and the rate by 1, 1.5, 0.6, 1.2, 0.9,
centred as above. ``interaction=`` adds, for named ethnicity x sex x age-band strata, a log rate and a
log gradient beyond these additive main effects (MAIHDA's intersectional interaction; the truth's
``interaction`` gives the planted values and the part main effects cannot carry); off by default.

Table columns
-------------
``neighbourhood``, ``la``, ``msoa``, [``ethnicity``], [``age_band``], [``sex``], ``deprivation`` (= x),
``exposure`` (int64 children in the row; strata rows sum to the LSOA's children), ``referral``,
``s47``, ``cp_plan``, ``looked_after`` (int64), ``la_rural_share``, ``la_log_density``.

Truth (JSON)
------------
``year``, ``seed``, ``geography`` (source), ``family`` ("negative_binomial"), ``centring``,
``strata``, ``n_rows``, ``n_la``, ``la_deprivation`` {``measure``, ``mean`` (Xbar),
``transform`` ("log"), ``curve_clip`` [0.04, 0.28], ``clipped_las``}, ``stages`` (per stage:
``d0``, ``d1``, ``d2``, ``gradient_at_mean``, ``gradient_10_less``, ``gradient_10_more``,
``dispersion``, ``tau``, ``stage_noise_sd``, ``slope_residual_sd``, ``a0``, ``a1``,
``intercept_residual_sd`` (OLS of alpha on unclipped l over LAs), ``correlation`` (of intercept
and slope residuals), ``la_gradient_range`` [min, max of exp(beta_j)], ``la_gradient_q05_q95``,
``target_column``, ``target_year``, ``imputed_las``, ``expected_total``, ``dfe_total``,
``simulated_total``, ``stratum_gradient_at_mean`` {stratum: score}), ``strata_terms`` (slope and
rate offsets), ``las`` (per LA: ``la``, ``X``, ``l``, ``children`` and per stage ``alpha``
(null when the target is 0), ``beta``, ``gradient``, ``expected``, ``variance`` (of the
simulated total under the model), ``dfe``, ``imputed``, ``simulated``) and ``deciles``
(national deciles of x over neighbourhoods, 1 = least deprived: ``x_min``, ``x_max``,
``children`` and per stage the ``expected`` and ``simulated`` rate per 10,000 children). With
``interaction=`` or ``interaction_sd=``: ``interaction`` {``group`` ("ethnicity:sex:age_band"),
``planted``, ``sd``, ``offsets`` (log rate and log gradient per stratum label), ``beyond_main_effects``
(the part additive main effects cannot carry: what a MAIHDA main-effects fit estimates)}.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.data.reference import Geography
from hierarchy.errors import HierarchyError

__all__ = ["simulate", "simulate_years", "parse_years", "write", "curve_coefficients", "log_gradient",
           "SIM_STAGES", "MAIHDA_INTERACTION", "stratum_labels", "beyond_main_effects",
           "main_effect_indicators", "indicator_name"]

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


# --------------------------------------------------------------------------------------------


def _rows(geo: Geography, strata: tuple[str, ...], eth_rng: np.random.Generator | None = None
          ) -> dict[str, np.ndarray]:
    """Expand the LSOA table to rows: index of LSOA, exposure, and stratum labels/terms.

    Ethnicity splits each row's children by its neighbourhood's simulated ethnic shares
    (:func:`hierarchy.data.findings.ethnic_populations`, drawn from ``eth_rng``), the same shares
    for every age band and sex (largest remainder, so the groups sum to the row)."""
    lsoa = geo.lsoa
    n = len(lsoa)
    if "age" in strata:
        bands = list(AGE_COLUMNS)
        expo = lsoa[[AGE_COLUMNS[b] for b in bands]].to_numpy(dtype=np.int64)
        idx = np.repeat(np.arange(n), len(bands))
        age = np.tile(np.array(bands, dtype=object), n)
        exposure = expo.reshape(-1)
    else:
        idx = np.arange(n)
        age = None
        exposure = lsoa["children"].to_numpy(dtype=np.int64)
    eth = None
    if "ethnicity" in strata:
        from hierarchy.data import findings  # findings imports this module: import at use

        pops = findings.ethnic_populations(geo, eth_rng or np.random.default_rng(0)).to_numpy(dtype=float)
        shares = pops / np.maximum(pops.sum(axis=1, keepdims=True), 1.0)
        groups = np.array(findings.ETHNIC_GROUPS, dtype=object)
        exposure = findings._round_split(exposure, shares[idx]).reshape(-1)
        idx = np.repeat(idx, len(groups))
        if age is not None:
            age = np.repeat(age, len(groups))
        eth = np.tile(groups, len(idx) // len(groups))
    sex = None
    if "sex" in strata:
        female = np.rint(exposure * SEX_SHARE["female"]).astype(np.int64)
        exposure = np.column_stack([female, exposure - female]).reshape(-1)
        idx = np.repeat(idx, 2)
        if age is not None:
            age = np.repeat(age, 2)
        if eth is not None:
            eth = np.repeat(eth, 2)
        sex = np.tile(np.array(["female", "male"], dtype=object), len(idx) // 2)
    keep = exposure > 0
    out = {"idx": idx[keep], "exposure": exposure[keep]}
    if eth is not None:
        out["ethnicity"] = eth[keep]
    if age is not None:
        out["age_band"] = age[keep]
    if sex is not None:
        out["sex"] = sex[keep]
    return out


def _centred_logs(labels: np.ndarray, exposure: np.ndarray, mult: dict[str, float]
                  ) -> tuple[np.ndarray, dict[str, float]]:
    """Log multipliers per row, centred to exposure-weighted mean zero; also per level."""
    logs = {k: math.log(v) for k, v in mult.items()}
    weights = {k: float(exposure[labels == k].sum()) for k in mult}
    total = sum(weights.values())
    centre = sum(logs[k] * weights[k] for k in mult) / total if total else 0.0
    level = {k: logs[k] - centre for k in mult}
    return np.array([level[k] for k in labels], dtype=float), level


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


@dataclass(frozen=True)
class _Population:
    """What persists across years: the rows, deprivation, strata terms and the drawn LA and MSOA effects."""

    la_codes: np.ndarray  # (n_la,)
    X: np.ndarray  # (n_la,) LA deprivation
    xbar: float
    d: tuple[float, float, float]  # referral curve coefficients
    ell: np.ndarray  # (n_la,) log(X / xbar), unclipped
    x: np.ndarray  # (n_lsoa,) neighbourhood deprivation
    rows: dict[str, np.ndarray]  # from _rows: idx, exposure, [age_band], [sex]
    row_la: np.ndarray  # (n_rows,) LA index of each row
    w: np.ndarray  # (n_rows,)
    slope_off: np.ndarray  # (n_rows,) stratum offsets on the slope
    rate_off: np.ndarray  # (n_rows,) stratum and MSOA offsets on the log rate
    strata_terms: dict[str, Any]
    moderation: np.ndarray  # (n_la,) LA-condition moderation of the log gradient
    per_sd: dict[str, float]
    v: np.ndarray  # (n_la,) LA slope deviations (off the curve)
    noise: dict[str, np.ndarray]  # stage -> (n_la,) stage slope noise
    msoa_effect: np.ndarray
    msoa_codes: np.ndarray


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
    from hierarchy.data import findings  # findings imports this module: import at use

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
        from hierarchy.data import findings  # findings imports this module: import at use

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


def _check_strata(strata: tuple[str, ...]) -> tuple[str, ...]:
    strata = tuple(strata)
    bad = [s for s in strata if s not in KNOWN_STRATA]
    if bad or len(set(strata)) != len(strata):
        raise HierarchyError(f"strata must be distinct values from {KNOWN_STRATA}, got {strata}")
    return tuple(s for s in KNOWN_STRATA if s in strata)


def _population(geo: Geography, strata: tuple[str, ...], rng: np.random.Generator,
                la_conditions: bool, *, seed: int = 0,
                interaction: dict[str, tuple[float, float]] | None = None) -> _Population:
    """Rows, deprivation and strata terms of ``geo``, and the LA slope, MSOA and stage-noise draws
    (in this order from ``rng``; ethnic populations from a stream of their own, ``seed``)."""
    lsoa, la = geo.lsoa, geo.la
    la_codes = la["la"].to_numpy()
    la_pos = pd.Index(la_codes).get_indexer(lsoa["la"])
    if (la_pos < 0).any():
        raise HierarchyError("geography: neighbourhoods in LAs missing from the LA table")
    n_la = len(la)

    X = la["deprivation"].to_numpy(dtype=float)
    xbar = float(X.mean())
    d = curve_coefficients(xbar)
    ell = np.log(X / xbar)
    x = lsoa["income_rate"].to_numpy(dtype=float)
    w_lsoa = (x - X[la_pos]) / 0.1

    rows = _rows(geo, strata, np.random.default_rng([seed, 2021]))
    idx, exposure = rows["idx"], rows["exposure"]
    row_la = la_pos[idx]
    slope_off = np.zeros(len(idx))
    rate_off = np.zeros(len(idx))
    strata_terms: dict[str, Any] = {}
    if "age_band" in rows:
        s_off, s_lev = _centred_logs(rows["age_band"], exposure, AGE_GRADIENT)
        r_off, r_lev = _centred_logs(rows["age_band"], exposure, AGE_RATE)
        slope_off += s_off
        rate_off += r_off
        strata_terms["age_band"] = {"slope_offset": s_lev, "log_rate_offset": r_lev,
                                    "gradient_multiplier": AGE_GRADIENT,
                                    "rate_ratio": AGE_RATE}
    if "ethnicity" in rows:
        from hierarchy.data import findings  # findings imports this module: import at use

        mult = {g: v / findings.ETHNIC_GRADIENT["White"] for g, v in findings.ETHNIC_GRADIENT.items()}
        s_off, s_lev = _centred_logs(rows["ethnicity"], exposure, mult)
        r_off, r_lev = _centred_logs(rows["ethnicity"], exposure, findings.ETHNIC_RATE)
        slope_off += s_off
        rate_off += r_off
        strata_terms["ethnicity"] = {"slope_offset": s_lev, "log_rate_offset": r_lev,
                                     "gradient_multiplier": mult, "rate_ratio": findings.ETHNIC_RATE}
    if "sex" in rows:
        r_off, r_lev = _centred_logs(rows["sex"], exposure, SEX_RATE)
        rate_off += r_off
        strata_terms["sex"] = {"slope_offset": dict.fromkeys(SEX_RATE, 0.0),
                               "log_rate_offset": r_lev, "gradient_multiplier": {},
                               "rate_ratio": SEX_RATE, "exposure_share": SEX_SHARE}
    if interaction:  # label -> (log rate, log gradient) offsets
        labels = stratum_labels(rows)
        for lab, (log_rate, log_grad) in interaction.items():
            on = labels == lab
            rate_off[on] += log_rate
            slope_off[on] += log_grad

    v = _off_the_curve(rng.normal(0.0, TAU, n_la), np.log(np.clip(X, *CURVE_CLIP) / xbar))
    msoa_codes, msoa_of_lsoa = np.unique(lsoa["msoa"].astype(str).to_numpy(), return_inverse=True)
    msoa_effect = rng.normal(0.0, MSOA_SD, len(msoa_codes))
    rate_off = rate_off + msoa_effect[msoa_of_lsoa[idx]]
    conditions = {"la_rural_share": la["rural_share"].to_numpy(dtype=float),
                  "la_log_density": la["log_density"].to_numpy(dtype=float)}
    per_sd = LA_CONDITION_MODERATION if la_conditions else dict.fromkeys(LA_CONDITION_MODERATION, 0.0)
    moderation = sum(m * (conditions[c] - conditions[c].mean()) / (conditions[c].std() or 1.0)
                     for c, m in per_sd.items())
    noise = {s: (np.zeros(n_la) if s == "referral" else rng.normal(0.0, STAGE_NOISE_SD, n_la))
             for s in SIM_STAGES}
    return _Population(la_codes=la_codes, X=X, xbar=xbar, d=d, ell=ell, x=x, rows=rows, row_la=row_la,
                       w=w_lsoa[idx], slope_off=slope_off, rate_off=rate_off, strata_terms=strata_terms,
                       moderation=moderation, per_sd=per_sd, v=v, noise=noise, msoa_effect=msoa_effect,
                       msoa_codes=msoa_codes)


def _one_year(geo: Geography, pop: _Population, year: int, rng: np.random.Generator, *,
              exposure: np.ndarray | None = None, log_trend: float = 0.0, poisson: bool = False
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Expected counts calibrated to ``year``'s DfE LA totals, then NB counts drawn from ``rng``
    (Poisson counts with ``poisson``: a spatial field stands in for the overdispersion).

    ``exposure`` replaces the rows' children (same length; rows of 0 get 0 counts); ``log_trend`` is
    added to every stage's log gradient (the typical-LA curve and so every LA's slope).

    Returns
    -------
    mus, counts : dict
        Stage -> expected and drawn count of each row.
    per_la : dict
        Stage -> per-LA arrays ``alpha``, ``beta``, ``expected``, ``dfe``, ``imputed``, ``variance``,
        ``simulated``.
    stages : dict
        Stage -> the truth's ``stages`` entry (module docstring).
    """
    exposure = pop.rows["exposure"] if exposure is None else exposure
    n_la, row_la, xbar = len(pop.la_codes), pop.row_la, pop.xbar
    mus: dict[str, np.ndarray] = {}
    stages: dict[str, Any] = {}
    per_la: dict[str, dict[str, np.ndarray]] = {}
    for s in SIM_STAGES:
        shift = math.log(GRADIENT_AT_MEAN[s] / GRADIENT_AT_MEAN["referral"]) + log_trend
        ds = (pop.d[0] + shift, pop.d[1], pop.d[2])
        curve = log_gradient(pop.X, xbar, ds)
        beta = curve + pop.moderation + pop.v + pop.noise[s]
        kernel = exposure * np.exp((beta[row_la] + pop.slope_off) * pop.w + pop.rate_off)
        denom = np.bincount(row_la, kernel, minlength=n_la)
        target, imputed, used = _targets(geo, year, s)
        ratio = target / denom
        mu = kernel * ratio[row_la]
        mus[s] = mu
        with np.errstate(divide="ignore"):
            alpha = np.log(ratio)
        expected = np.bincount(row_la, mu, minlength=n_la)
        variance = np.bincount(row_la, mu + mu**2 / DISPERSION[s], minlength=n_la)
        per_la[s] = {"alpha": alpha, "beta": beta, "expected": expected, "dfe": target,
                     "imputed": imputed, "variance": variance}
        grads = np.exp(beta)
        reg = _la_regression(alpha, pop.ell, beta - curve - pop.moderation)
        at = {k: float(np.exp(log_gradient(xbar + dx, xbar, ds)))
              for k, dx in (("gradient_at_mean", 0.0), ("gradient_10_less", -0.1),
                            ("gradient_10_more", 0.1))}
        strat_grad: dict[str, float] = {}
        for key in ("ethnicity", "age_band"):
            if key in pop.strata_terms:
                for lev, off in pop.strata_terms[key]["slope_offset"].items():
                    strat_grad[f"{key}={lev}"] = float(at["gradient_at_mean"] * math.exp(off))
        stages[s] = {
            "d0": ds[0], "d1": ds[1], "d2": ds[2], **at,
            "dispersion": DISPERSION[s], "tau": TAU,
            "stage_noise_sd": 0.0 if s == "referral" else STAGE_NOISE_SD,
            "slope_residual_sd": float((beta - curve - pop.moderation).std(ddof=1)) if n_la > 1 else 0.0,
            **reg,
            "la_gradient_range": [float(grads.min()), float(grads.max())],
            "la_gradient_q05_q95": [float(np.quantile(grads, 0.05)),
                                    float(np.quantile(grads, 0.95))],
            "target_column": TARGET_COLUMN[s], "target_year": int(used),
            "imputed_las": [str(c) for c in pop.la_codes[imputed]],
            "expected_total": float(mu.sum()), "dfe_total": float(target.sum()),
            "stratum_gradient_at_mean": strat_grad,
        }

    counts: dict[str, np.ndarray] = {}
    for s in SIM_STAGES:
        phi = DISPERSION[s]
        lam = mus[s] if poisson else rng.gamma(phi, mus[s] / phi)
        counts[s] = rng.poisson(lam).astype(np.int64)
        if poisson:
            stages[s]["dispersion"] = None
        stages[s]["simulated_total"] = int(counts[s].sum())
        per_la[s]["simulated"] = np.bincount(row_la, counts[s], minlength=n_la)
    return mus, counts, per_la, stages


def _frame(geo: Geography, pop: _Population, exposure: np.ndarray, counts: dict[str, np.ndarray]
           ) -> pd.DataFrame:
    """The table's columns (module docstring) for the population's rows."""
    lsoa, la, rows = geo.lsoa, geo.la, pop.rows
    idx = rows["idx"]
    table = pd.DataFrame({
        "neighbourhood": lsoa["lsoa"].to_numpy()[idx],
        "la": lsoa["la"].to_numpy()[idx],
        "msoa": lsoa["msoa"].to_numpy()[idx],
    })
    for key in ("ethnicity", "age_band", "sex"):
        if key in rows:
            table[key] = rows[key]
    for col in ("neighbourhood", "la", "msoa", "ethnicity", "age_band", "sex"):
        if col in table:
            table[col] = table[col].astype(str)
    table["deprivation"] = pop.x[idx]
    table["exposure"] = exposure.astype(np.int64)
    for s in SIM_STAGES:
        table[s] = counts[s]
    table["la_rural_share"] = la["rural_share"].to_numpy(dtype=float)[pop.row_la]
    table["la_log_density"] = la["log_density"].to_numpy(dtype=float)[pop.row_la]
    return table


def simulate(geo: Geography, *, year: int = 2019, strata: tuple[str, ...] = (),
             seed: int = 0, la_conditions: bool = False,
             interaction: dict[str, tuple[float, float]] | None = None,
             interaction_sd: tuple[float, float] = (0.0, 0.0),
             spatial: tuple[float, float] | None = None, graph: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate neighbourhood counts for every stage, calibrated to DfE LA totals.

    Parameters
    ----------
    geo : Geography
        Reference or generated geography (with its DfE table).
    year : int
        DfE ``time_period`` whose LA totals the expected counts reproduce.
    strata : tuple of str
        Any of ``"ethnicity"``, ``"age"``, ``"sex"``. Ethnic groups are simulated (module docstring).
    seed : int
        Seed of the numpy random generator; same seed, same counts.
    la_conditions : bool
        Moderate the LA gradients by the LA conditions (:data:`LA_CONDITION_MODERATION`).
    interaction : dict, optional
        Intersectional interaction beyond the additive main effects: ``{"Black/male/10-15": (rate
        ratio, gradient multiplier)}`` (labels ethnicity/sex/age_band; needs all three strata), e.g.
        :data:`MAIHDA_INTERACTION`. Default none; the truth's ``interaction`` says what was planted.
    interaction_sd : (float, float)
        SDs of an interaction (log rate, log gradient per 10 points) drawn for every ethnicity x sex x
        age-band stratum, e.g. :data:`MAIHDA_INTERACTION_SD`; default none.
    spatial : (float, float), optional
        ``(sd, mix)`` of a BYM2 neighbourhood field added to every stage's log rate
        (:func:`hierarchy.data.geography.draw_bym2`), whose unstructured part then stands in for the
        negative binomial's overdispersion: counts are Poisson given the field (the truth of
        ``models/gradient_bym2_poisson.toml``); the truth's ``spatial`` holds its values.
    graph : hierarchy.data.geography.Graph, optional
        The neighbourhood graph of ``spatial`` (default :func:`spatial_graph` of ``geo``).

    Returns
    -------
    table : pandas.DataFrame
        Columns as in the module docstring.
    truth : dict
        JSON-serialisable parameters and checks (see the module docstring).
    """
    strata = _check_strata(strata)
    planted = _check_interaction(interaction, strata)
    offsets, _ = _interaction_offsets(planted, interaction_sd, strata, seed)
    # A stream of its own: the synthetic geography draws from default_rng(seed), and sharing it
    # would make the LA slope noise a copy of the LA deprivation draws.
    rng = np.random.default_rng([seed, 20190331])
    pop = _population(geo, strata, rng, la_conditions, seed=seed, interaction=offsets)
    spatial_truth = None
    if spatial is not None:
        pop, spatial_truth = _with_spatial_field(geo, pop, spatial, graph, seed)
    lsoa, la = geo.lsoa, geo.la
    la_codes, X, x, ell, idx = pop.la_codes, pop.X, pop.x, pop.ell, pop.rows["idx"]
    mus, counts, per_la, stages = _one_year(geo, pop, year, rng, poisson=spatial is not None)
    table = _frame(geo, pop, pop.rows["exposure"], counts)

    # national deciles of neighbourhood deprivation
    dec = _deciles(x, lsoa["lsoa"].to_numpy().astype(str))
    kids = np.bincount(dec, lsoa["children"].to_numpy(dtype=float), minlength=11)[1:]
    deciles: dict[str, Any] = {
        "definition": "deciles of neighbourhood income rate over neighbourhoods "
                      "(equal numbers of LSOAs), 1 = least deprived; rate per 10,000 children",
        "decile": list(range(1, 11)),
        "x_min": [float(x[dec == k].min()) for k in range(1, 11)],
        "x_max": [float(x[dec == k].max()) for k in range(1, 11)],
        "children": [int(c) for c in kids],
    }
    row_dec = dec[idx]
    for s in SIM_STAGES:
        e = np.bincount(row_dec, mus[s], minlength=11)[1:]
        o = np.bincount(row_dec, counts[s].astype(float), minlength=11)[1:]
        deciles[s] = {"expected": [float(v) for v in 1e4 * e / kids],
                      "simulated": [float(v) for v in 1e4 * o / kids]}

    extremes = _extremes(x, lsoa["children"].to_numpy(dtype=float), idx, mus["referral"])
    clipped = [str(c) for c, xx in zip(la_codes, X, strict=True)
               if xx < CURVE_CLIP[0] or xx > CURVE_CLIP[1]]
    las = []
    children_la = la["children"].to_numpy()
    for j, code in enumerate(la_codes):
        rec: dict[str, Any] = {"la": str(code), "X": float(X[j]), "l": float(ell[j]),
                               "children": int(children_la[j])}
        for s in SIM_STAGES:
            p = per_la[s]
            rec[s] = {"alpha": float(p["alpha"][j]) if np.isfinite(p["alpha"][j]) else None,
                      "beta": float(p["beta"][j]), "gradient": float(np.exp(p["beta"][j])),
                      "expected": float(p["expected"][j]),
                      "variance": float(p["variance"][j]), "dfe": float(p["dfe"][j]),
                      "imputed": bool(p["imputed"][j]),
                      "simulated": int(p["simulated"][j])}
        las.append(rec)

    truth: dict[str, Any] = {
        "year": int(year), "seed": int(seed), "geography": geo.source,
        "family": "negative_binomial",
        "centring": "within/between: w = (x - X)/0.1",
        "strata": list(strata), "n_rows": len(table), "n_la": len(la_codes),
        "la_deprivation": _la_deprivation_truth(pop, clipped),
        "msoa": _msoa_truth(pop),
        "la_conditions": {"gradient_per_sd": pop.per_sd,
                          "note": "added to each LA's log gradient per SD over LAs of the condition "
                                  "(sd with ddof=0), same for every stage"},
        "stages": stages, "strata_terms": pop.strata_terms, "las": las, "deciles": deciles,
        "extremes": extremes,
    }
    if offsets:
        truth["interaction"] = _interaction_truth(pop, planted, offsets, interaction_sd)
    if spatial_truth is not None:  # the field's unstructured part is the overdispersion: Poisson counts
        truth["spatial"] = spatial_truth
        truth["family"] = "poisson"
    return table, _jsonable(truth)


def spatial_graph(geo: Geography):
    """The neighbourhood graph of ``geo``: the LSOA map's queen contiguity for the reference geography
    (:func:`hierarchy.data.geography.graph_for`), a lattice with each LA a block for a generated one."""
    from hierarchy.data import geography

    return geography.graph_for(geo.lsoa["lsoa"].astype(str).to_numpy(),
                               groups=geo.lsoa["la"].astype(str).to_numpy())


def _with_spatial_field(geo: Geography, pop: _Population, spatial: tuple[float, float], graph: Any,
                        seed: int) -> tuple[_Population, dict[str, Any]]:
    """``pop`` with a BYM2 field on the neighbourhoods added to every row's log rate, and its truth."""
    from dataclasses import replace

    from hierarchy.data import geography

    sd, mix = (float(v) for v in spatial)
    if not (sd >= 0 and 0 <= mix <= 1):
        raise HierarchyError(f"spatial = (sd, mix) needs sd >= 0 and mix in [0, 1], got ({sd}, {mix}); "
                             "e.g. 0.3,0.7")
    codes = geo.lsoa["lsoa"].astype(str).to_numpy()
    graph = spatial_graph(geo) if graph is None else geography.subgraph(graph, codes, where="the geography")
    node = pd.Index(graph.codes).get_indexer(codes)
    field = geography.draw_bym2(graph, sd, mix, np.random.default_rng([seed, 31, 2016]))[node]
    truth = {"sd": sd, "mix": mix, "model": "BYM2 (Riebler et al. 2016): sd * (sqrt(mix / scale) * icar + "
                                            "sqrt(1 - mix) * iid), sum-to-zero per connected part",
             "graph": geography.describe(graph), "realised_sd": float(field.std(ddof=1)),
             "neighbourhood": codes.tolist(), "field": field.round(5).tolist()}
    return replace(pop, rate_off=pop.rate_off + field[pop.rows["idx"]]), truth


def _la_deprivation_truth(pop: _Population, clipped: list[str]) -> dict[str, Any]:
    return {"measure": "child-weighted mean of neighbourhood income rate", "mean": pop.xbar,
            "transform": "log", "curve_clip": list(CURVE_CLIP), "clipped_las": clipped,
            "note": "the gradient curve log g(X) = d0 + d1 l + d2 l^2, l = log(X/mean), is "
                    "evaluated with X clipped to curve_clip"}


def _msoa_truth(pop: _Population) -> dict[str, Any]:
    e = pop.msoa_effect
    return {"sd": MSOA_SD, "realised_sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
            "n_msoa": len(pop.msoa_codes)}


# -------------------------------------------------------------------------------------------- years

TREND_ANCHOR = 2019
"""Year in which a multi-year simulation's gradients are the published ones (the 2018-19 census)."""


def parse_years(text: str) -> tuple[int, ...]:
    """Years from ``"2013-2025"``, ``"2019,2020"`` or a mix (``"2013-2015,2019"``), in order.

    Raises
    ------
    HierarchyError
        On anything else, a reversed range or a year given twice, naming the fix.
    """
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{4})\s*-\s*(\d{4})|(\d{4})", part)
        if not m:
            raise HierarchyError(f"--years {text!r}: '{part}' is not a year or a range of years; write e.g. "
                                 "--years 2013-2025 or --years 2019,2020")
        first, last = (int(m.group(1)), int(m.group(2))) if m.group(3) is None else (int(m.group(3)),) * 2
        if last < first:
            raise HierarchyError(f"--years {text!r}: the range {part} runs backwards; write {last}-{first}")
        out += range(first, last + 1)
    twice = sorted({y for y in out if out.count(y) > 1})
    if twice:
        raise HierarchyError(f"--years {text!r} names {', '.join(map(str, twice))} more than once; give each "
                             "year once")
    return tuple(sorted(out))


def _check_years(geo: Geography, years) -> tuple[int, ...]:
    if isinstance(years, str):
        years = parse_years(years)
    try:
        years = tuple(sorted(int(y) for y in years))
    except (TypeError, ValueError):
        raise HierarchyError(f"years must be whole years such as (2019, 2020), got {years!r}") from None
    if not years:
        raise HierarchyError("no years to simulate: give at least one, e.g. years=(2019, 2020)")
    if len(set(years)) != len(years):
        raise HierarchyError(f"years {years} name a year more than once; give each year once")
    have = sorted(int(y) for y in set(geo.dfe["year"].tolist()))
    missing = [y for y in years if y not in have]
    if missing:
        span = f"{have[0]}-{have[-1]}" if have == list(range(have[0], have[-1] + 1)) else ", ".join(map(str, have))
        raise HierarchyError(f"no DfE LA figures for {', '.join(map(str, missing))} in {geo.source} (it has "
                             f"{span}): every simulated year is calibrated to that year's DfE LA totals, so "
                             f"choose years within {span} (e.g. --years {have[0]}-{have[-1]})")
    return years


def _exposure_scale(geo: Geography, year: int) -> np.ndarray:
    """Per LA: DfE's child population in ``year`` over the geography's children (1 where DfE has none)."""
    rows = geo.dfe[geo.dfe["year"] == year].set_index("la")
    pop = rows["pop_0_17"].reindex(geo.la["la"]).to_numpy(dtype=float)
    scale = pop / geo.la["children"].to_numpy(dtype=float)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _two_way(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Additive decomposition of ``alpha`` (LA x year) over the LAs with every year finite:
    ``alpha = mean + A_j + Y_t + U_jt`` with A, Y and each row and column of U summing to 0.
    Returns A (nan for LAs left out), Y, U (nan rows for them) and the mask of LAs used."""
    ok = np.isfinite(alpha).all(axis=1)
    a = alpha[ok]
    grand = a.mean()
    la_eff = a.mean(axis=1) - grand
    year_eff = a.mean(axis=0) - grand
    resid = a - grand - la_eff[:, None] - year_eff[None, :]
    A = np.full(len(alpha), np.nan)
    U = np.full(alpha.shape, np.nan)
    A[ok], U[ok] = la_eff, resid
    return A, year_eff, U, ok


def simulate_years(geo: Geography, years, *, seed: int = 0, strata: tuple[str, ...] = (),
                   la_conditions: bool = False, gradient_trend: float = 1.0
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate neighbourhood x year counts, each year calibrated to that year's DfE LA totals.

    The LA slopes (``v_j``, stage noise), the MSOA effects and the strata terms are drawn once (the
    same draws as :func:`simulate` with this ``seed``) and persist over the years; each year's
    ``alpha_jt`` is solved so that LA j's expected total equals DfE's count for year t, so the year
    effects and the LA x year variation are those DfE's LA totals imply. The truth decomposes them:
    ``alpha_jt = mean + A_j + Y_t + U_jt`` (two-way, each margin of U summing to 0), with the
    realised ``year_sd`` (of Y_t), ``la_year_sd`` (of U, on (LAs - 1)(years - 1) degrees of freedom)
    and the persistent LA intercepts A_j. Exposures are the geography's children scaled per LA so
    that each LA-year's children equal DfE's child population that year (``pop_0_17``; unscaled
    where DfE has none), rounded per row.

    Parameters
    ----------
    geo : Geography
        Reference or generated geography; its DfE table must have every year.
    years : iterable of int, or str
        DfE ``time_period`` years; a string such as ``"2013-2025"`` or ``"2019,2020"`` is read by
        :func:`parse_years`.
    seed : int
        Seed of the numpy random generator; same seed, same counts.
    strata : tuple of str
        Any of ``"age"``, ``"sex"``.
    la_conditions : bool
        As in :func:`simulate`.
    gradient_trend : float
        Multiplier of every gradient score (every stage, every LA) per year after
        :data:`TREND_ANCHOR` (1.0: flat; 1.03: 3% steeper each year, shallower before 2019).

    Returns
    -------
    table : pandas.DataFrame
        The columns of :func:`simulate` plus ``year`` (int64), year-major; rows with no children that
        year are left out.
    truth : dict
        ``years``, ``seed``, ``geography``, ``family``, ``strata``, ``n_rows``, ``n_la``,
        ``la_deprivation``, ``msoa``, ``la_conditions``, ``gradient_trend`` {``ratio_per_year``,
        ``log_per_year``, ``anchor_year``}, ``stages`` (per stage: ``dispersion``, ``tau``,
        ``target_column``, ``by_year`` {year: ``gradient_at_mean``, ``gradient_10_less``,
        ``gradient_10_more``, ``target_year``, ``imputed_las``, ``expected_total``, ``dfe_total``,
        ``simulated_total``}, ``year_effect`` {year: Y_t - Y_first}, ``year_sd``, ``la_year_sd``,
        ``la_intercept_sd``, ``decomposed_las``), ``las`` (per LA: ``la``, ``X``, ``l``, ``children`` and
        per stage ``intercept`` (A_j) and ``beta``/``gradient`` in the anchor year) and ``la_years``
        (per LA x year: ``la``, ``year``, ``exposure`` and per stage ``alpha``, ``la_year_effect``
        (U_jt), ``expected``, ``variance``, ``dfe``, ``imputed``, ``simulated``).
    """
    strata = _check_strata(strata)
    years = _check_years(geo, years)
    trend = float(gradient_trend)
    if not (math.isfinite(trend) and trend > 0):
        raise HierarchyError(f"gradient_trend is a ratio per year (1.0 = flat), got {gradient_trend!r}")
    rng = np.random.default_rng([seed, 20190331])  # as simulate: the same LA effects for a seed
    pop = _population(geo, strata, rng, la_conditions, seed=seed)
    la_codes, n_la = pop.la_codes, len(pop.la_codes)
    frames, la_years = [], []
    alphas = {s: np.empty((n_la, len(years))) for s in SIM_STAGES}
    by_year: dict[str, dict[str, Any]] = {s: {} for s in SIM_STAGES}
    anchor_beta: dict[str, np.ndarray] = {}
    for t, year in enumerate(years):
        log_trend = math.log(trend) * (year - TREND_ANCHOR)
        exposure = np.rint(pop.rows["exposure"] * _exposure_scale(geo, year)[pop.row_la]).astype(np.int64)
        _, counts, per_la, stages = _one_year(geo, pop, year, rng, exposure=exposure, log_trend=log_trend)
        frame = _frame(geo, pop, exposure, counts)
        frame.insert(frame.columns.get_loc("deprivation"), "year", np.int64(year))
        frames.append(frame[exposure > 0])
        kids = np.bincount(pop.row_la, exposure, minlength=n_la)
        for s in SIM_STAGES:
            alphas[s][:, t] = per_la[s]["alpha"]
            st = stages[s]
            by_year[s][str(year)] = {k: st[k] for k in (
                "gradient_at_mean", "gradient_10_less", "gradient_10_more", "la_gradient_range", "target_year",
                "imputed_las", "expected_total", "dfe_total", "simulated_total")}
            anchor_beta[s] = per_la[s]["beta"] - log_trend
        for j, code in enumerate(la_codes):
            rec: dict[str, Any] = {"la": str(code), "year": int(year), "exposure": int(kids[j])}
            for s in SIM_STAGES:
                p = per_la[s]
                rec[s] = {"alpha": p["alpha"][j], "expected": p["expected"][j], "variance": p["variance"][j],
                          "dfe": p["dfe"][j], "imputed": bool(p["imputed"][j]),
                          "simulated": int(p["simulated"][j])}
            la_years.append(rec)
    table = pd.concat(frames, ignore_index=True)

    stage_truth: dict[str, Any] = {}
    intercepts: dict[str, np.ndarray] = {}
    for s in SIM_STAGES:
        A, Y, U, ok = _two_way(alphas[s])
        intercepts[s] = A
        dof = (int(ok.sum()) - 1) * (len(years) - 1)
        for t in range(len(years)):
            for j in range(n_la):
                la_years[t * n_la + j][s]["la_year_effect"] = U[j, t]
        stage_truth[s] = {
            "dispersion": DISPERSION[s], "tau": TAU, "stage_noise_sd": 0.0 if s == "referral" else STAGE_NOISE_SD,
            "target_column": TARGET_COLUMN[s], "by_year": by_year[s],
            "year_effect": {str(y): float(Y[t] - Y[0]) for t, y in enumerate(years)},
            "year_sd": float(Y.std(ddof=1)) if len(years) > 1 else 0.0,
            "la_year_sd": float(math.sqrt(np.nansum(U**2) / dof)) if dof > 0 else 0.0,
            "la_intercept_sd": float(np.nanstd(A, ddof=1)) if ok.sum() > 1 else 0.0,
            "decomposed_las": int(ok.sum()),
        }
    las = []
    for j, code in enumerate(la_codes):
        rec = {"la": str(code), "X": float(pop.X[j]), "l": float(pop.ell[j]),
               "children": int(geo.la["children"].to_numpy()[j])}
        for s in SIM_STAGES:
            rec[s] = {"intercept": intercepts[s][j], "beta": float(anchor_beta[s][j]),
                      "gradient": float(np.exp(anchor_beta[s][j]))}
        las.append(rec)
    clipped = [str(c) for c, xx in zip(la_codes, pop.X, strict=True) if xx < CURVE_CLIP[0] or xx > CURVE_CLIP[1]]
    truth: dict[str, Any] = {
        "years": list(years), "seed": int(seed), "geography": geo.source, "family": "negative_binomial",
        "centring": "within/between: w = (x - X)/0.1", "strata": list(strata), "n_rows": len(table),
        "n_la": n_la, "n_years": len(years),
        "la_deprivation": _la_deprivation_truth(pop, clipped), "msoa": _msoa_truth(pop),
        "la_conditions": {"gradient_per_sd": pop.per_sd,
                          "note": "added to each LA's log gradient per SD over LAs of the condition"},
        "gradient_trend": {"ratio_per_year": trend, "log_per_year": math.log(trend), "anchor_year": TREND_ANCHOR,
                           "note": "every gradient score (every stage and LA) is multiplied by ratio_per_year "
                                   "for each year after anchor_year (divided before it)"},
        "exposure": "the geography's children scaled per LA so each LA-year's children equal DfE's "
                    "pop_0_17 that year (unscaled where DfE has none), rounded per row",
        "year_effects": "alpha_jt = mean + A_j + Y_t + U_jt over the LAs with every alpha finite; year_effect "
                        "is Y_t - Y_first (the log rate ratio to the first year of a typical LA at w = 0); "
                        "year_sd the SD of Y_t (ddof 1); la_year_sd the SD of U_jt on (LAs-1)(years-1) df",
        "stages": stage_truth, "strata_terms": pop.strata_terms, "las": las, "la_years": la_years,
    }
    return table, _jsonable(truth)


EXTREME_LOW = 0.01
"""Published lower extreme: neighbourhoods with under 1% of families income deprived."""
EXTREME_HIGH = 0.55
"""Upper extreme: neighbourhoods at or above 55% income deprived (the published 64% is the most
deprived neighbourhood; 55% keeps more than a handful of neighbourhoods in the group)."""


def extreme_groups(x: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the two published extremes of neighbourhood deprivation ``x``.

    ``least``: x < 1%; ``most``: x >= 55%. Where a (small, generated) geography has no
    neighbourhood in a group, the group falls back to the 1% of neighbourhoods at that end (at least
    one); the truth records which definition was used.
    """
    x = np.asarray(x, dtype=float)
    k = max(1, int(round(0.01 * len(x))))
    order = np.argsort(x, kind="stable")
    least, most = x < EXTREME_LOW, x >= EXTREME_HIGH
    if not least.any():
        least = np.zeros(len(x), bool)
        least[order[:k]] = True
    if not most.any():
        most = np.zeros(len(x), bool)
        most[order[-k:]] = True
    return {"least": least, "most": most}


def _extremes(x: np.ndarray, children: np.ndarray, idx: np.ndarray, mu: np.ndarray) -> dict[str, Any]:
    """Expected referral rate per 10,000 children in the published extremes of deprivation."""
    groups = extreme_groups(x)
    mu_lsoa = np.bincount(idx, mu, minlength=len(x))
    out: dict[str, Any] = {"published": {"least": 100.0, "most": 1340.0},
                           "note": "published: about 100 per 10,000 where under 1% of families are "
                                   "income deprived, more than 1,340 in the most deprived (64%)"}
    for name, m in groups.items():
        fixed = EXTREME_LOW if name == "least" else EXTREME_HIGH
        used_fixed = bool(((x < fixed) if name == "least" else (x >= fixed)).any())
        out[name] = {"definition": (f"x < {fixed}" if name == "least" else f"x >= {fixed}") if used_fixed
                     else f"the 1% of neighbourhoods at the {name}-deprived end (none beyond {fixed})",
                     "neighbourhoods": int(m.sum()), "x_min": float(x[m].min()), "x_max": float(x[m].max()),
                     "expected_rate": float(1e4 * mu_lsoa[m].sum() / children[m].sum())}
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _atomic_write(path: Path, write_to) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write(table: pd.DataFrame, truth: dict[str, Any], out: Path | str) -> Path:
    """Write the table to ``out`` (parquet) and the truth beside it, both atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`simulate`.
    truth : dict
        From :func:`simulate`.
    out : pathlib.Path or str
        Parquet path; the truth goes to ``out`` with suffix ``.truth.json``.

    Returns
    -------
    pathlib.Path
        The truth file. The same inputs give byte-identical files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth_path = out.with_suffix(".truth.json")
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    _atomic_write(out, lambda p: pq.write_table(arrow, p, compression="zstd"))
    text = json.dumps(truth, indent=1, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(truth_path, lambda p: p.write_text(text, encoding="utf-8"))
    return truth_path

"""The simulated population of one geography: neighbourhood x stratum rows with their exposures and
true rates, and one year's counts drawn from it (:mod:`hierarchy.data.simulate` builds tables from it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.data.calibration import (
    AGE_COLUMNS,
    AGE_GRADIENT,
    AGE_RATE,
    CURVE_CLIP,
    DISPERSION,
    GRADIENT_AT_MEAN,
    KNOWN_STRATA,
    LA_CONDITION_MODERATION,
    MSOA_SD,
    SEX_RATE,
    SEX_SHARE,
    SIM_STAGES,
    STAGE_NOISE_SD,
    TARGET_COLUMN,
    TAU,
    _la_regression,
    _off_the_curve,
    _targets,
    curve_coefficients,
    log_gradient,
)
from hierarchy.data.intersections import (
    stratum_labels,
)
from hierarchy.data.reference import Geography
from hierarchy.errors import HierarchyError


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
        from hierarchy.data import findings  # findings imports simulate, which imports this module: import at use

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
        from hierarchy.data import findings  # findings imports simulate, which imports this module: import at use

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
        Stage -> the truth's ``stages`` entry (:mod:`hierarchy.data.simulate` docstring).
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
    """The table's columns (:mod:`hierarchy.data.simulate` docstring) for the population's rows."""
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

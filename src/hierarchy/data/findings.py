"""Simulated tables with a known truth for every published finding of the social-gradient study.

:func:`simulate_findings` draws one table per analysis ("scenario") on one geography, with one set
of LA slope deviations, each calibrated so that its true estimands equal the published figures
(per 10 percentage points of neighbourhood income deprivation unless noted) and each LA's expected
total equals DfE's. The national table of :func:`hierarchy.simulate.simulate` is the ``base``
scenario; the others add what it cannot express. Counts are negative binomial (dispersion 6 unless
noted); ``curve_j = log g(X_j)`` is the published referral curve of LA deprivation X_j
(:func:`hierarchy.data.simulate.log_gradient`: 1.62 at mean LA deprivation, 2.33 ten points less, 1.39
ten points more) and ``v_j ~ N(0, 0.10)`` an LA slope deviation with its projection on the curve's
basis removed, so the realised LA slopes regress exactly onto the curve. ``hierarchy replicate --tables
--out DIR`` writes the tables (``DIR/data/{scenario}.parquet``) with this truth beside each; the
truth is also in ``DIR/truth.json``.

Scenarios (table -> model file -> what is true)
------------------------------------------------
``base``
    :func:`~hierarchy.simulate.simulate` (referral, s47, cp_plan, looked_after; headline 1.62 /
    2.33 / 1.39, CP plans 1.80) plus ``re_referral`` and ``repeat_cp_plan``: counts out of the
    neighbourhood's referrals and CP plans (the earlier count is the exposure; rows without one have
    none), ``log p = a + c z_j + (g0 + g1 z_j) w + u_j + b_j w`` with z = log(X/mean X),
    ``u ~ N(0, 0.1)``, ``b ~ N(0, 0.03)`` (both projected off (1, z)), drawn binomial out of the earlier
    count with the probability gamma-mixed (shape 10, mean p; capped at 1); national shares
    22.6% of referrals (DfE 2019) and 21.9% of plans. Truth: the conversion gradient ten points
    less / more (1.12 / 0.98 re-referrals, 1.10 / 0.97 repeat plans: steepest in affluent LAs, the
    published interaction) and the rate ratio of a typical LA ten points less deprived to one ten
    points more for a neighbourhood at mean LA deprivation (1.30 and 1.25: highest in affluent LAs).
    These values are simulated: the study published directions only.
``age_sex``
    neighbourhood x sex x single year of age 0-17 (each ONS age band's children split evenly over its
    years, the remainder to the youngest; 48.8% female, rounded). Slope ``curve_j + v_j +
    log(0.986) (age - 8.5)``, rate ``log(0.98) (age - 8.5) + log(1.05) [male]``; column ``age_c =
    age - 8.5``. Truth: 1.62 for a child of mean age of either sex; gradient ratio male / female
    1.00 (published: no difference); 0.986 per year of age (published: falling with each year; the
    value matches the age bands' 1.10 to 0.90 over 14.5 years).
``ethnicity``
    neighbourhood x broad ethnic group (White, Mixed, Asian, Black, Other). Populations: the LSOA's
    children split by shares that rise for minority groups with density and deprivation (logit
    per SD of log density: Mixed 0.5, Asian 0.8, Black 1.0, Other 0.7; per 10 points of deprivation
    0.15, 0.25, 0.30, 0.20; LA noise sd 0.3), calibrated to national shares 72 / 7 / 12 / 6 / 3%
    and rounded so groups sum to the LSOA's children. Users with real data supply census tables
    instead (Census 2021 TS021 "ethnic group" at LSOA, or an age x ethnicity table such as RM032
    for children): one row per neighbourhood x group, columns ``ethnicity`` and ``exposure``.
    Slope ``curve_j + v_j + log(G_k / 1.62)``: White 1.91, Black 1.27 (published), Mixed 1.62,
    Asian 1.48, Other 1.40 (simulated between, as published); rate ratios 1, 1.5, 0.6, 1.2, 0.9.
``assessment``
    neighbourhood x factor identified at assessment (``factor``; count ``assessment``, exposure the
    children): neglect 1.84 and physical disability 1.47 (published: highest, lowest), domestic abuse
    1.74, emotional abuse 1.66, mental health 1.56 (simulated between). Each factor's LA totals are
    a share of DfE referrals (0.20, 0.04, 0.30, 0.20, 0.25).
``plan_category``
    neighbourhood x initial CP plan category (``category``; count ``cp_plan``): neglect 1.98 and
    sexual abuse 1.62 (published), emotional abuse 1.85, multiple 1.78, physical abuse 1.70
    (simulated between); LA totals shares 0.48, 0.04, 0.37, 0.04, 0.07 of DfE plans started.
``rural``
    neighbourhoods with ``rural`` (RUC2011 D/E = 1; :mod:`hierarchy.data.reference`) and ``sparsity``
    (minus log density, standardised over neighbourhoods). Slope ``curve_j + v_j + log(1.15) rural +
    log(1.05) sparsity``; rate ``log(0.9) rural``. Truth: 1.62 urban at mean density; 1.15 rural /
    urban and 1.05 per SD sparser (published: steeper, after LA deprivation; values simulated).
``la_conditions``
    neighbourhoods with ``la_inequality`` (:func:`la_income_inequality`: the 20:20 ratio of IoD2019
    income rates), ``la_expenditure`` (simulated children's services spend per child, GBP:
    ``900 exp(1.5 (X - mean X) + N(0, 0.2))``) and ``la_workforce_stability`` (simulated share of
    social workers in post a year earlier: ``0.85 - 0.3 (X - mean X) + N(0, 0.05)``, clipped to
    0.5-0.98). Slope ``curve_j + v_j + m_I I_j + log(1.04) E_j + log(0.97) W_j`` with each covariate
    standardised over LAs (sd ddof=0, as the design does). Truth: 1.04 and 0.97 per SD (published:
    a little, once LA deprivation is in) and Webb et al.'s contrast, solved through ``m_I``: the log
    gradient in an LA one SD below mean deprivation and one SD above mean inequality is 5.00 times
    that in an LA one SD above mean deprivation and one SD below mean inequality (a ratio of slopes:
    the same per SD and per 10 points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.data.reference import AGE_BANDS, Geography
from hierarchy.data.simulate import (
    GRADIENT_AT_MEAN,
    TAU,
    _jsonable,
    _off_the_curve,
    _targets,
    curve_coefficients,
    log_gradient,
    simulate,
)
from hierarchy.errors import HierarchyError

__all__ = ["simulate_findings", "la_income_inequality", "ethnic_populations", "single_year_ages",
           "SCENARIOS", "ETHNIC_GRADIENT", "FACTOR_GRADIENT", "CATEGORY_GRADIENT", "WEBB_RATIO"]

SCENARIOS = ("base", "age_sex", "ethnicity", "assessment", "plan_category", "rural", "la_conditions")
DISPERSION = 6.0
REFERENCE_GRADIENT = GRADIENT_AT_MEAN["referral"]

ETHNIC_GROUPS = ("White", "Mixed", "Asian", "Black", "Other")
ETHNIC_GRADIENT = {"White": 1.91, "Mixed": 1.62, "Asian": 1.48, "Black": 1.27, "Other": 1.40}
ETHNIC_RATE = {"White": 1.0, "Mixed": 1.5, "Asian": 0.6, "Black": 1.2, "Other": 0.9}
ETHNIC_SHARE = {"White": 0.72, "Mixed": 0.07, "Asian": 0.12, "Black": 0.06, "Other": 0.03}
ETHNIC_DENSITY = {"White": 0.0, "Mixed": 0.5, "Asian": 0.8, "Black": 1.0, "Other": 0.7}
ETHNIC_DEPRIVATION = {"White": 0.0, "Mixed": 0.15, "Asian": 0.25, "Black": 0.30, "Other": 0.20}
ETHNIC_LA_SD = 0.3

FACTOR_GRADIENT = {"neglect": 1.84, "domestic_abuse": 1.74, "emotional_abuse": 1.66, "mental_health": 1.56,
                   "physical_disability": 1.47}
FACTOR_SHARE = {"neglect": 0.20, "domestic_abuse": 0.30, "emotional_abuse": 0.20, "mental_health": 0.25,
                "physical_disability": 0.04}
CATEGORY_GRADIENT = {"neglect": 1.98, "emotional_abuse": 1.85, "multiple": 1.78, "physical_abuse": 1.70,
                     "sexual_abuse": 1.62}
CATEGORY_SHARE = {"neglect": 0.48, "emotional_abuse": 0.37, "multiple": 0.04, "physical_abuse": 0.07,
                  "sexual_abuse": 0.04}

AGE_YEAR_GRADIENT = 0.986
AGE_YEAR_RATE = 0.98
MEAN_AGE = 8.5
FEMALE_SHARE = 0.488
MALE_RATE = 1.05

RURAL_GRADIENT = 1.15
SPARSITY_GRADIENT = 1.05
RURAL_RATE = 0.9

EXPENDITURE_GRADIENT = 1.04
WORKFORCE_GRADIENT = 0.97
WEBB_RATIO = 5.0

PROVISION = {
    "re_referral": {"exposure": "referral", "share": 0.226, "gradient_10_less": 1.12,
                    "gradient_10_more": 0.98, "la_ratio": 1.30},
    "repeat_cp_plan": {"exposure": "cp_plan", "share": 0.219, "gradient_10_less": 1.10,
                       "gradient_10_more": 0.97, "la_ratio": 1.25},
}
PROVISION_DISPERSION = 10.0
PROVISION_LA_SD = (0.10, 0.03)


# -------------------------------------------------------------------------------------------- inputs


def la_income_inequality(lsoa: pd.DataFrame) -> pd.Series:
    """LA income inequality: the 20:20 ratio of neighbourhood income deprivation.

    For each LA, its neighbourhoods (LSOAs) are ranked by the IoD2019 income rate; the ratio is the
    child-weighted mean rate of the most deprived fifth of them over that of the least deprived fifth
    (``max(1, n // 5)`` neighbourhoods each). An LA with fewer than two neighbourhoods (Isles of
    Scilly) gets 1.0 (no measurable inequality).

    Parameters
    ----------
    lsoa : pandas.DataFrame
        ``la``, ``income_rate``, ``children`` (``Geography.lsoa``).

    Returns
    -------
    pandas.Series
        Indexed by LA code, sorted.
    """
    missing = [c for c in ("la", "income_rate", "children") if c not in lsoa]
    if missing:
        raise HierarchyError(f"la_income_inequality needs columns {', '.join(missing)}")
    out = {}
    for la, g in lsoa.groupby("la", sort=True):
        g = g.sort_values("income_rate", kind="stable")
        n = len(g)
        if n < 2:
            out[la] = 1.0
            continue
        k = max(1, n // 5)
        lo, hi = g.iloc[:k], g.iloc[-k:]
        low = np.average(lo["income_rate"], weights=np.maximum(lo["children"], 1))
        high = np.average(hi["income_rate"], weights=np.maximum(hi["children"], 1))
        if low <= 0:
            raise HierarchyError(f"LA {la}: its least deprived fifth has income rate 0; the 20:20 ratio "
                                 "is undefined")
        out[la] = float(high / low)
    return pd.Series(out, name="la_inequality")


def _round_split(total: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Integer split of ``total`` (n,) by ``shares`` (n, k), summing exactly (largest remainder)."""
    raw = total[:, None] * shares
    base = np.floor(raw).astype(np.int64)
    short = total - base.sum(axis=1)
    rank = np.argsort(np.argsort(-(raw - base), axis=1, kind="stable"), axis=1, kind="stable")
    return base + (rank < short[:, None])


def ethnic_populations(geo: Geography, rng: np.random.Generator) -> pd.DataFrame:
    """Children per neighbourhood by broad ethnic group (simulated; see the module docstring).

    Returns
    -------
    pandas.DataFrame
        One column per group of :data:`ETHNIC_GROUPS`, rows in ``geo.lsoa`` order, summing to
        ``children``.
    """
    lsoa = geo.lsoa
    kids = lsoa["children"].to_numpy(dtype=np.int64)
    logd = np.log(np.maximum(lsoa["density"].to_numpy(dtype=float), 1e-3))
    dstd = (logd - logd.mean()) / (logd.std() or 1.0)
    x = lsoa["income_rate"].to_numpy(dtype=float)
    la_pos = pd.Index(geo.la["la"]).get_indexer(lsoa["la"])
    la_noise = rng.normal(0.0, ETHNIC_LA_SD, (len(geo.la), len(ETHNIC_GROUPS)))
    la_noise[:, 0] = 0.0
    slope = np.array([[ETHNIC_DENSITY[g], ETHNIC_DEPRIVATION[g]] for g in ETHNIC_GROUPS])
    lin = dstd[:, None] * slope[:, 0] + ((x - x.mean()) / 0.1)[:, None] * slope[:, 1] + la_noise[la_pos]
    target = np.array([ETHNIC_SHARE[g] for g in ETHNIC_GROUPS])
    c = np.log(target)
    for _ in range(50):  # national child-weighted shares equal the targets
        p = np.exp(lin + c)
        p /= p.sum(axis=1, keepdims=True)
        realised = (kids[:, None] * p).sum(axis=0) / kids.sum()
        c += np.log(target / realised)
    counts = _round_split(kids, p)
    return pd.DataFrame(counts, columns=list(ETHNIC_GROUPS))


def single_year_ages(geo: Geography) -> np.ndarray:
    """Children per neighbourhood by single year of age 0-17, ``(n_lsoa, 18)``.

    Each ONS age band's children are split evenly over its years, the remainder going to the
    youngest years, so the years sum to the band and to ``children``.
    """
    out = np.zeros((len(geo.lsoa), 18), dtype=np.int64)
    for col, (lo, hi) in AGE_BANDS.items():
        c = geo.lsoa[col].to_numpy(dtype=np.int64)
        n = hi - lo + 1
        base, rem = c // n, c % n
        for k in range(n):
            out[:, lo + k] = base + (k < rem)
    return out


# -------------------------------------------------------------------------------------------- core


def _calibrated(row_la: np.ndarray, n_la: int, exposure: np.ndarray, w: np.ndarray, slope: np.ndarray,
                rate_off: np.ndarray, target: np.ndarray, phi: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Expected and drawn NB counts with each LA's expected total equal to ``target``."""
    kernel = exposure * np.exp(slope * w + rate_off)
    denom = np.bincount(row_la, kernel, minlength=n_la)
    ratio = np.divide(target, denom, out=np.zeros(n_la), where=denom > 0)
    mu = kernel * ratio[row_la]
    y = rng.poisson(rng.gamma(phi, np.maximum(mu, 1e-300) / phi)).astype(np.int64)
    return mu, y


def _frame(geo: Geography, idx: np.ndarray, exposure: np.ndarray, **cols) -> pd.DataFrame:
    lsoa = geo.lsoa
    out = pd.DataFrame({"neighbourhood": lsoa["lsoa"].to_numpy()[idx].astype(str),
                        "la": lsoa["la"].to_numpy()[idx].astype(str),
                        "msoa": lsoa["msoa"].to_numpy()[idx].astype(str),
                        "deprivation": lsoa["income_rate"].to_numpy(dtype=float)[idx],
                        "exposure": exposure.astype(np.int64)})
    for k, v in cols.items():
        out[k] = v
    return out


def _standardise(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / (sd if sd > 0 else 1.0)


def _provision(table: pd.DataFrame, X: np.ndarray, xbar: float, la_pos: np.ndarray,
               rng: np.random.Generator) -> dict[str, Any]:
    """Add re-referral and repeat-plan columns to the base table; return their truth."""
    truth = {}
    z = np.log(X / xbar)
    z_less, z_more = math.log((xbar - 0.1) / xbar), math.log((xbar + 0.1) / xbar)
    w = (table["deprivation"].to_numpy() - X[la_pos]) / 0.1
    basis = np.column_stack([np.ones_like(z), z])
    for col, p in PROVISION.items():
        g1 = (math.log(p["gradient_10_less"]) - math.log(p["gradient_10_more"])) / (z_less - z_more)
        g0 = math.log(p["gradient_10_less"]) - g1 * z_less
        # ratio at x = mean X: the less deprived LA sees w = +1, the more deprived w = -1
        c = (math.log(p["la_ratio"]) - (g0 + g1 * z_less) - (g0 + g1 * z_more)) / (z_less - z_more)
        u = rng.normal(0, PROVISION_LA_SD[0], len(X))
        b = rng.normal(0, PROVISION_LA_SD[1], len(X))
        u = u - basis @ np.linalg.lstsq(basis, u, rcond=None)[0]
        b = b - basis @ np.linalg.lstsq(basis, b, rcond=None)[0]
        expo = table[p["exposure"]].to_numpy(dtype=float)
        kernel = expo * np.exp(c * z[la_pos] + u[la_pos] + (g0 + g1 * z[la_pos] + b[la_pos]) * w)
        a = math.log(p["share"] * expo.sum() / kernel.sum()) if kernel.sum() > 0 else 0.0
        prob = np.divide(math.exp(a) * kernel, expo, out=np.zeros(len(expo)), where=expo > 0)
        # a subset of the earlier count: binomial with a gamma-mixed probability (mean prob, the NB's
        # extra variance), capped at 1
        mixed = np.minimum(1.0, prob * rng.gamma(PROVISION_DISPERSION, 1 / PROVISION_DISPERSION, len(prob)))
        table[col] = rng.binomial(table[p["exposure"]].to_numpy(dtype=np.int64), mixed).astype(np.int64)
        truth[col] = {
            "exposure": p["exposure"], "share": p["share"], "dispersion": PROVISION_DISPERSION,
            "a": a, "c": c, "g0": g0, "g1": g1, "la_sd": list(PROVISION_LA_SD),
            "gradient_at_mean": math.exp(g0), "gradient_10_less": p["gradient_10_less"],
            "gradient_10_more": p["gradient_10_more"],
            "interaction_ratio": p["gradient_10_less"] / p["gradient_10_more"],
            "la_ratio_at_mean_x": p["la_ratio"],
            "note": "simulated values: the study published directions only (highest in affluent LAs, "
                    "highest of all in their deprived neighbourhoods)",
        }
    return truth


# -------------------------------------------------------------------------------------------- main


def simulate_findings(geo: Geography, *, year: int = 2019, seed: int = 0,
                      scenarios: tuple[str, ...] = SCENARIOS
                      ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Simulate one table per analysis of the study, with its truth (see the module docstring).

    Parameters
    ----------
    geo : Geography
        Reference or generated geography.
    year : int
        DfE year whose LA totals the expected counts reproduce.
    seed : int
        Same seed, same tables.
    scenarios : tuple of str
        Any of :data:`SCENARIOS` (``base`` is always simulated: the others' calibration and the
        re-referral exposures come from it).

    Returns
    -------
    tables : dict of str to pandas.DataFrame
    truth : dict
        ``year``, ``seed``, ``geography``, ``la_deprivation`` {``mean``, ``sd``}, and per scenario its
        parameters and true estimands (JSON-serialisable).
    """
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        raise HierarchyError(f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(SCENARIOS)}")
    rng = np.random.default_rng([seed, 15])
    world = _world(geo, year, rng)
    tables, out = {}, {}
    tables["base"], out["base"] = _base(world, year, seed, rng)
    for name, step in _SCENARIO_STEPS:  # in this order whatever the order of ``scenarios``: one rng
        if name in scenarios:
            tables[name], out[name] = step(world, rng)
    truth = {"year": int(year), "seed": int(seed), "geography": geo.source, "scenarios": out,
             "la_deprivation": {"mean": world.xbar, "sd": float(world.X.std()), "curve": list(world.d)},
             "tau": TAU, "dispersion": DISPERSION}
    return tables, _jsonable(truth)


@dataclass(frozen=True)
class _World:
    """What every scenario shares: the geography, the LA curve and slope deviations, DfE's LA totals."""

    geo: Geography
    la_pos: np.ndarray  # each neighbourhood's LA (position in geo.la)
    X: np.ndarray  # LA deprivation
    xbar: float
    d: tuple  # the referral curve's coefficients
    curve: np.ndarray  # log gradient of each LA on the curve
    ell_c: np.ndarray  # log(X / mean X), X clipped to the curve's range
    v: np.ndarray  # LA slope deviations, off the curve
    w_lsoa: np.ndarray  # (x - X_la) / 0.1 of each neighbourhood
    kids: np.ndarray  # children of each neighbourhood
    referrals: np.ndarray  # DfE referrals per LA
    ref_year: int
    plans: np.ndarray  # DfE plans started per LA
    plan_year: int

    @property
    def n_la(self) -> int:
        return len(self.geo.la)


def _world(geo: Geography, year: int, rng: np.random.Generator) -> _World:
    """The scenarios' shared parts (draws the LA slope deviations from ``rng``)."""
    lsoa, la = geo.lsoa, geo.la
    la_pos = pd.Index(la["la"]).get_indexer(lsoa["la"])
    X = la["deprivation"].to_numpy(dtype=float)
    xbar = float(X.mean())
    d = curve_coefficients(xbar)
    ell_c = np.log(np.clip(X, 0.04, 0.28) / xbar)
    v = _off_the_curve(rng.normal(0.0, TAU, len(la)), ell_c)
    x = lsoa["income_rate"].to_numpy(dtype=float)
    referrals, _, ref_year = _targets(geo, year, "referral")
    plans, _, plan_year = _targets(geo, year, "cp_plan")
    return _World(geo=geo, la_pos=la_pos, X=X, xbar=xbar, d=d, curve=log_gradient(X, xbar, d), ell_c=ell_c, v=v,
                  w_lsoa=(x - X[la_pos]) / 0.1, kids=lsoa["children"].to_numpy(dtype=np.int64),
                  referrals=referrals, ref_year=ref_year, plans=plans, plan_year=plan_year)


def _base(world: _World, year: int, seed: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The national table (:func:`~hierarchy.simulate.simulate`) with LA deprivation, and its truth."""
    base, base_truth = simulate(world.geo, year=year, seed=seed)
    base_pos = pd.Index(world.geo.la["la"]).get_indexer(base["la"])
    base["la_deprivation"] = world.X[base_pos]  # child-weighted: the exposure of the provision models is a count
    return base, {"table": "base", "simulate_truth": {k: base_truth[k] for k in
                                                      ("stages", "extremes", "la_deprivation", "msoa")},
                  "provision": _provision(base, world.X, world.xbar, base_pos, rng)}


def _gradients_at_mean(world: _World, levels: dict[str, float]) -> dict[str, float]:
    """Each level's gradient at mean LA deprivation."""
    at_mean = float(log_gradient(world.xbar, world.xbar, world.d))  # the curve at mean LA deprivation: log 1.62
    return {k: float(math.exp(at_mean + math.log(g / REFERENCE_GRADIENT))) for k, g in levels.items()}


def _age_sex(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``age_sex``: neighbourhood x sex x single year of age."""
    lsoa, la_pos = world.geo.lsoa, world.la_pos
    ages = single_year_ages(world.geo)  # (n, 18)
    female = np.rint(ages * FEMALE_SHARE).astype(np.int64)
    expo = np.stack([female, ages - female], axis=-1)  # (n, 18, 2)
    idx = np.repeat(np.arange(len(lsoa)), 36)
    age = np.tile(np.repeat(np.arange(18), 2), len(lsoa))
    sex = np.tile(np.array(["female", "male"], dtype=object), 18 * len(lsoa))
    expo = expo.reshape(-1)
    keep = expo > 0
    idx, age, sex, expo = idx[keep], age[keep], sex[keep], expo[keep]
    age_c = age - MEAN_AGE
    slope = world.curve[la_pos[idx]] + world.v[la_pos[idx]] + math.log(AGE_YEAR_GRADIENT) * age_c
    rate = math.log(AGE_YEAR_RATE) * age_c + math.log(MALE_RATE) * (sex == "male")
    mu, y = _calibrated(la_pos[idx], world.n_la, expo, world.w_lsoa[idx], slope, rate, world.referrals,
                        DISPERSION, rng)
    table = _frame(world.geo, idx, expo, sex=sex.astype(str), age=age, age_c=age_c, referral=y)
    return table, {"gradient_by_sex": {"female": REFERENCE_GRADIENT, "male": REFERENCE_GRADIENT},
                   "sex_gradient_ratio": 1.0, "age_year_gradient": AGE_YEAR_GRADIENT,
                   "age_year_rate": AGE_YEAR_RATE, "male_rate": MALE_RATE, "mean_age": MEAN_AGE,
                   "gradient_at_mean_age": REFERENCE_GRADIENT,
                   "gradient_by_age": {str(a): float(REFERENCE_GRADIENT * AGE_YEAR_GRADIENT
                                                     ** (a - MEAN_AGE)) for a in range(18)},
                   "female_share": FEMALE_SHARE, "expected_total": float(mu.sum())}


def _stratified(world: _World, rng: np.random.Generator, levels: dict[str, float], rate: dict[str, float] | None,
                share: dict[str, float] | None, pops: np.ndarray | None, target: np.ndarray):
    """Neighbourhood x level counts with each level's gradient ``levels``: calibrated together with rate
    ratios ``rate``, or each level to its ``share`` of ``target``. Returns rows' neighbourhood, level,
    exposure, count and expected count."""
    la_pos = world.la_pos
    names = list(levels)
    k = len(names)
    idx = np.repeat(np.arange(len(world.geo.lsoa)), k)
    lev = np.tile(np.arange(k), len(world.geo.lsoa))
    expo = (pops.reshape(-1) if pops is not None else np.repeat(world.kids, k))
    keep = expo > 0
    idx, lev, expo = idx[keep], lev[keep], expo[keep]
    log_g = np.array([math.log(levels[n] / REFERENCE_GRADIENT) for n in names])
    slope = world.curve[la_pos[idx]] + world.v[la_pos[idx]] + log_g[lev]
    y = np.zeros(len(idx), dtype=np.int64)
    mu = np.zeros(len(idx))
    if share is None:
        r = np.log(np.array([rate[n] for n in names]))[lev]
        mu, y = _calibrated(la_pos[idx], world.n_la, expo, world.w_lsoa[idx], slope, r, target, DISPERSION, rng)
    else:
        for j, n in enumerate(names):
            m = lev == j
            mu[m], y[m] = _calibrated(la_pos[idx[m]], world.n_la, expo[m], world.w_lsoa[idx[m]], slope[m],
                                      np.zeros(m.sum()), share[n] * target, DISPERSION, rng)
    return idx, np.array(names, dtype=object)[lev].astype(str), expo, y, mu


def _ethnicity(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``ethnicity``: neighbourhood x broad ethnic group."""
    pops = ethnic_populations(world.geo, rng)
    idx, lev, expo, y, mu = _stratified(world, rng, ETHNIC_GRADIENT, ETHNIC_RATE, None, pops.to_numpy(),
                                        world.referrals)
    shares = pops.sum() / pops.to_numpy().sum()
    return _frame(world.geo, idx, expo, ethnicity=lev, referral=y), {
        "gradient": _gradients_at_mean(world, ETHNIC_GRADIENT), "published": ["White", "Black"],
        "rate_ratio": ETHNIC_RATE, "national_share": {k: float(v) for k, v in shares.items()},
        "white_black_ratio": ETHNIC_GRADIENT["White"] / ETHNIC_GRADIENT["Black"],
        "expected_total": float(mu.sum())}


def _assessment(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``assessment``: neighbourhood x factor identified at assessment."""
    idx, lev, expo, y, _ = _stratified(world, rng, FACTOR_GRADIENT, None, FACTOR_SHARE, None, world.referrals)
    return _frame(world.geo, idx, expo, factor=lev, assessment=y), {
        "gradient": _gradients_at_mean(world, FACTOR_GRADIENT), "published": ["neglect", "physical_disability"],
        "share_of_referrals": FACTOR_SHARE,
        "neglect_disability_ratio": FACTOR_GRADIENT["neglect"] / FACTOR_GRADIENT["physical_disability"],
        "target_year": world.ref_year}


def _plan_category(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``plan_category``: neighbourhood x initial CP plan category."""
    idx, lev, expo, y, _ = _stratified(world, rng, CATEGORY_GRADIENT, None, CATEGORY_SHARE, None, world.plans)
    return _frame(world.geo, idx, expo, category=lev, cp_plan=y), {
        "gradient": _gradients_at_mean(world, CATEGORY_GRADIENT), "published": ["neglect", "sexual_abuse"],
        "share_of_plans": CATEGORY_SHARE,
        "neglect_sexual_abuse_ratio": CATEGORY_GRADIENT["neglect"] / CATEGORY_GRADIENT["sexual_abuse"],
        "target_year": world.plan_year}


def _rural(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``rural``: neighbourhoods with rural and sparsity."""
    lsoa, la_pos = world.geo.lsoa, world.la_pos
    rural = lsoa["rural"].to_numpy().astype(np.int64)
    logd = np.log(np.maximum(lsoa["density"].to_numpy(dtype=float), 1e-3))
    sparsity = -_standardise(logd)
    idx = np.arange(len(lsoa))
    slope = (world.curve[la_pos] + world.v[la_pos] + math.log(RURAL_GRADIENT) * rural
             + math.log(SPARSITY_GRADIENT) * sparsity)
    mu, y = _calibrated(la_pos, world.n_la, world.kids, world.w_lsoa, slope, math.log(RURAL_RATE) * rural,
                        world.referrals, DISPERSION, rng)
    return _frame(world.geo, idx, world.kids, rural=rural, sparsity=sparsity, referral=y), {
        "gradient_urban_mean_density": REFERENCE_GRADIENT, "rural_gradient_ratio": RURAL_GRADIENT,
        "sparsity_gradient_per_sd": SPARSITY_GRADIENT, "rural_rate_ratio": RURAL_RATE,
        "rural_share": float(rural.mean()),
        "sparsity": "minus log density (people per km2), standardised over neighbourhoods"}


def _la_conditions(world: _World, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Scenario ``la_conditions``: LA inequality, expenditure and workforce stability moderate the slope."""
    X, xbar, n_la, la_pos = world.X, world.xbar, world.n_la, world.la_pos
    ineq = la_income_inequality(world.geo.lsoa).reindex(world.geo.la["la"]).to_numpy(dtype=float)
    spend = 900.0 * np.exp(1.5 * (X - xbar) + rng.normal(0, 0.2, n_la))
    stable = np.clip(0.85 - 0.3 * (X - xbar) + rng.normal(0, 0.05, n_la), 0.5, 0.98)
    covs = {"la_inequality": ineq, "la_expenditure": np.round(spend, 1), "la_workforce_stability":
            np.round(stable, 3)}
    std = {k: _standardise(c) for k, c in covs.items()}
    sd_x = float(X.std())
    lo = float(log_gradient(xbar - sd_x, xbar, world.d))
    hi = float(log_gradient(xbar + sd_x, xbar, world.d))
    m_i = (WEBB_RATIO * hi - lo) / (1 + WEBB_RATIO)
    basis = np.column_stack([np.ones(n_la), world.ell_c, world.ell_c**2, *std.values()])
    v2 = world.v - basis @ np.linalg.lstsq(basis, world.v, rcond=None)[0] if n_la > basis.shape[1] else world.v
    slope_la = (world.curve + v2 + m_i * std["la_inequality"]
                + math.log(EXPENDITURE_GRADIENT) * std["la_expenditure"]
                + math.log(WORKFORCE_GRADIENT) * std["la_workforce_stability"])
    mu, y = _calibrated(la_pos, n_la, world.kids, world.w_lsoa, slope_la[la_pos], np.zeros(len(world.kids)),
                        world.referrals, DISPERSION, rng)
    table = _frame(world.geo, np.arange(len(world.geo.lsoa)), world.kids,
                   **{k: c[la_pos] for k, c in covs.items()}, referral=y)
    return table, _la_conditions_truth(covs, m_i, lo, hi, sd_x)


def _la_conditions_truth(covs: dict[str, np.ndarray], m_i: float, lo: float, hi: float, sd_x: float) -> dict:
    """Scenario ``la_conditions``' truth: the inequality's effect ``m_i`` per SD, the Webb ratio."""
    g_lo, g_hi = lo + m_i, hi - m_i
    return {
        "inequality_definition": "20:20 ratio: child-weighted mean IoD2019 income rate of the most "
                                 "deprived fifth of the LA's neighbourhoods over the least deprived fifth",
        "inequality_per_sd": m_i, "expenditure_gradient_per_sd": EXPENDITURE_GRADIENT,
        "workforce_gradient_per_sd": WORKFORCE_GRADIENT, "la_deprivation_sd": sd_x,
        "gradient_low_dep_high_ineq": math.exp(g_lo), "gradient_high_dep_low_ineq": math.exp(g_hi),
        "webb_ratio": g_lo / g_hi, "gradient_at_mean": REFERENCE_GRADIENT,
        "covariate_mean": {k: float(c.mean()) for k, c in covs.items()},
        "covariate_sd": {k: float(c.std()) for k, c in covs.items()},
        "webb_definition": "log gradient (per SD or per 10 points: a ratio of slopes) in an LA 1 SD below "
                           "mean LA deprivation and 1 SD above mean inequality, over that in an LA 1 SD "
                           "above mean deprivation and 1 SD below mean inequality; other covariates at "
                           "their means",
        "simulated_covariates": "la_expenditure (GBP per child) and la_workforce_stability (share) are "
                                "simulated, not real LA data"}


_SCENARIO_STEPS = (("age_sex", _age_sex), ("ethnicity", _ethnicity), ("assessment", _assessment),
                   ("plan_category", _plan_category), ("rural", _rural), ("la_conditions", _la_conditions))
"""Each scenario beside ``base`` and the step that simulates its table and truth, in the order they draw."""

"""Synthetic child-level CIN census extracts with a known truth.

:func:`simulate_extract` draws neighbourhood x age band x sex counts from the calibrated national
simulator (:func:`hierarchy.simulate.simulate`) and writes one child per counted child, so that the
aggregation of the extract (:func:`hierarchy.aggregate.aggregate`) gives back exactly the
simulator's ``referral``, ``s47`` and ``cp_plan`` columns, and hence its gradients.

Construction, per row with counts R (referral), S (s47), P (cp_plan) and n = max(R, S, P)
children (LAchildID unique over the whole extract, so also within each LA):

* children 0..R-1 are referred in the census year (date uniform over its days); children R..n-1
  (only when S or P exceed R) were referred in the previous year and are still open;
* children 0..S-1 get a section 47 enquiry 0-30 days after their referral (or after 1 April for
  the earlier referrals), 0..P-1 a plan (with an initial conference on the same day) 0-30 days
  after that, both clipped to 31 March;
* a share of children referred in the year had an earlier, closed episode 1-400 days before
  1 April (``truth['re_referral']`` marks those within 12 months: DfE's re-referral);
* the birth date gives the row's age band at every event in the year (no birthday between the
  first and last of them); sex 1/2 by the row; ethnicity drawn from broad shares;
* episode durations and plan durations are piecewise exponential in time since the start
  (:data:`CIN_HAZARD`, :data:`CPP_HAZARD`, per day, by band of days), multiplied by
  ``exp(u_la + (log_gradient + v_la) * w)`` with ``w = (x - X_la) / 0.1`` and LA effects
  (:func:`la_effects`, SDs :data:`LA_HAZARD_SD`); episodes still open on 31 March have
  no closure date (right-censored). Episode closure is drawn independently of any plan (a
  simplification: real episodes close after their plans end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierarchy import AGE_BANDS
from hierarchy.data.reference import AGE_BANDS as AGE_BAND_YEARS
from hierarchy.data.reference import Geography
from hierarchy.data.simulate import simulate

CUTS_DAYS: tuple[int, ...] = (0, 91, 182, 365)
"""Duration bands (days since start): [0, 91), [91, 182), [182, 365), [365, inf)."""
CIN_HAZARD = {"hazards": (1 / 120, 1 / 200, 1 / 300, 1 / 400), "log_gradient": -0.10}
"""Closure hazard per day of CIN episodes by band, and its log change per 10 points of ``w``
(episodes in more deprived neighbourhoods of an LA stay open longer)."""
CPP_HAZARD = {"hazards": (1 / 250, 1 / 220, 1 / 180, 1 / 300), "log_gradient": -0.05}
LA_HAZARD_SD = (0.2, 0.05)
"""SDs of each LA's log-hazard effect and of its gradient's deviation (mean 0: the hazards above are
a typical LA's), for every duration and re-entry hazard."""
REENTRY_CUTS_DAYS: tuple[int, ...] = (0, 182, 365, 730)
"""Re-entry bands (days since the return home): [0, 182), [182, 365), [365, 730), [730, inf)."""
REENTRY_HAZARD = {"hazards": (0.30 / 365.25, 0.20 / 365.25, 0.08 / 365.25, 0.03 / 365.25),
                  "log_gradient": 0.12}
"""Re-entry hazard per day by band after a return home (about 36% re-enter within six years) and its
log change per 10 points of ``w`` (LA effects: :data:`LA_HAZARD_SD`)."""
RETURN_HOME_RATE = 0.003
"""Returns home from care per child per year in an average neighbourhood."""
PRIOR_EPISODE_SHARE = 0.2
ETHNIC_SHARE = {"WBRI": 0.72, "MWBC": 0.05, "APKN": 0.07, "BAFR": 0.06, "OOTH": 0.05, "WOTH": 0.05}
NEED_SHARE = {"N1": 0.50, "N2": 0.08, "N3": 0.20, "N4": 0.06, "N5": 0.03, "N6": 0.03, "N7": 0.02,
              "N8": 0.06, "N9": 0.02}
PLAN_SHARE = {"NEG": 0.50, "EMO": 0.36, "PHY": 0.07, "SAB": 0.04, "MUL": 0.03}


def draw_piecewise(t0: np.ndarray, mult: np.ndarray, rng: np.random.Generator,
                   hazards=CIN_HAZARD["hazards"], cuts=CUTS_DAYS) -> np.ndarray:
    """Event times (days) of a piecewise-constant hazard ``mult * hazards[k]``, given survival to ``t0``."""
    cuts = np.asarray(cuts, dtype=float)
    h = np.asarray(hazards, dtype=float)
    target = rng.exponential(size=len(t0))  # cumulative hazard to spend after t0
    t = np.asarray(t0, dtype=float).copy()
    out = np.full(len(t), np.inf)
    left = target.copy()
    for k in range(len(h)):
        hi = cuts[k + 1] if k + 1 < len(cuts) else np.inf
        active = np.isinf(out) & (t < hi)
        span = np.where(active, hi - np.maximum(t, cuts[k]), 0.0)
        rate = mult * h[k]
        need = left / rate
        done = active & (need <= span)
        out[done] = np.maximum(t[done], cuts[k]) + need[done]
        left = np.where(active & ~done, left - span * rate, left)
        t = np.where(active & ~done, hi, t)
    return out


def simulate_extract(geo: Geography, *, year: int = 2019, seed: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A child-level extract whose aggregation reproduces a national simulation.

    Returns
    -------
    extract : pandas.DataFrame
        DfE field names, dates as ISO text, one row per episode.
    table : pandas.DataFrame
        The simulator's neighbourhood x age band x sex table (the truth of the counts), with a
        ``re_referral`` column counted by construction.
    truth : dict
        The simulator's truth plus ``durations`` (hazards, cut points, log gradients).
    """
    table, truth = simulate(geo, year=year, strata=("age", "sex"), seed=seed)
    rng = np.random.default_rng([seed, 17])  # drawn from in this order: events, births, durations, fields
    ev = _events(table, year, rng)
    birth = _birth_dates(table, ev, rng)
    closure, cpp_end, la_eff = _durations(table, ev, rng, seed)
    main = _main_episodes(table, ev, birth, closure, cpp_end, rng)
    extract, rr, gap = _with_earlier_episodes(main, ev, rng)
    table = table.copy()
    table["re_referral"] = np.bincount(ev.row, rr, minlength=len(table)).astype(np.int64)
    truth = {**truth, "child_level": {
        "children": len(ev.row), "episodes": len(extract), "re_referrals": int(rr.sum()),
        "gap_days_of_re_referrals": [int(gap[rr].min()), int(gap[rr].max())] if rr.any() else []},
        "durations": _durations_truth(la_eff)}
    return extract, table, truth


@dataclass(frozen=True)
class _Events:
    """Each simulated child's row of the table and dates in the census year (:func:`_events`)."""

    start: np.datetime64  # 1 April of the census year
    end: np.datetime64  # 31 March
    row: np.ndarray  # the child's row of the table
    in_year: np.ndarray  # referred in the census year (else the year before, still open)
    ref: np.ndarray  # referral date
    has_s47: np.ndarray
    has_cp: np.ndarray
    s47: np.ndarray  # section 47 date (meaningful where has_s47)
    cpp: np.ndarray  # plan start date (meaningful where has_cp)


def _events(table: pd.DataFrame, year: int, rng: np.random.Generator) -> _Events:
    """One child per counted child of each row: referral, section 47 and plan dates (module docstring)."""
    start, end = np.datetime64(f"{year - 1}-04-01"), np.datetime64(f"{year}-03-31")
    n_days = int((end - start).astype(int)) + 1
    R, S, P = (table[c].to_numpy() for c in ("referral", "s47", "cp_plan"))
    n = np.maximum.reduce([R, S, P])
    row = np.repeat(np.arange(len(table)), n)
    i = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)  # index within the row
    m = len(row)
    in_year = i < R[row]
    d = np.timedelta64(1, "D")
    ref = np.where(in_year, start + rng.integers(0, n_days, m) * d, start - rng.integers(1, 201, m) * d)
    has_s47, has_cp = i < S[row], i < P[row]
    s47 = np.minimum(np.where(in_year, ref, start) + rng.integers(0, 31, m) * d, end)
    cp_base = np.where(has_s47, s47, np.where(in_year, ref, start))
    cpp = np.minimum(cp_base + rng.integers(0, 31, m) * d, end)
    return _Events(start=start, end=end, row=row, in_year=in_year, ref=ref, has_s47=has_s47, has_cp=has_cp,
                   s47=s47, cpp=cpp)


def _birth_dates(table: pd.DataFrame, ev: _Events, rng: np.random.Generator) -> pd.DatetimeIndex:
    """Birth dates: the row's age band at every event in the year, no birthday between them."""
    first = np.where(ev.in_year, ev.ref, np.where(ev.has_s47, ev.s47, ev.cpp))
    last = np.maximum.reduce([first, np.where(ev.has_s47, ev.s47, first), np.where(ev.has_cp, ev.cpp, first)])
    bands = table["age_band"].to_numpy()[ev.row]
    lo = np.array([AGE_BAND_YEARS[c][0] for c in AGE_BAND_YEARS])
    hi = np.array([AGE_BAND_YEARS[c][1] for c in AGE_BAND_YEARS])
    b = pd.Index(AGE_BANDS).get_indexer(bands)
    age = rng.integers(lo[b], hi[b] + 1)
    age = np.where(ev.in_year, age, np.maximum(age, 1))  # born before a referral up to 200 days before 1 April
    f, la_ = pd.DatetimeIndex(first), pd.DatetimeIndex(last)
    upper = _minus_years(f, age)
    lower = _minus_years(la_, age + 1)
    room = np.maximum(np.asarray((upper - lower).days) - 1, 0)
    return upper - pd.to_timedelta(np.floor(rng.random(len(ev.row)) * (room + 1)).astype(int), unit="D")


def _durations(table: pd.DataFrame, ev: _Events, rng: np.random.Generator, seed: int
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Episode closure and plan end dates (NaT when open on 31 March) and the LA effects on their hazards."""
    d = np.timedelta64(1, "D")
    row, m = ev.row, len(ev.row)
    w = ((table["deprivation"] - table.groupby("la")["deprivation"].transform(
        lambda s: np.average(s, weights=table.loc[s.index, "exposure"]))) / 0.1).to_numpy()[row]
    la_codes = table["la"].to_numpy()[row]
    la_eff = {kind: la_effects(np.unique(table["la"].astype(str)), np.random.default_rng([seed, 17, i]))
              for i, kind in enumerate(("cin", "cpp"))}
    u_cin, v_cin = (np.array([la_eff["cin"][j][la] for la in la_codes]) for j in (0, 1))
    u_cpp, v_cpp = (np.array([la_eff["cpp"][j][la] for la in la_codes]) for j in (0, 1))
    mult = np.exp(u_cin + (CIN_HAZARD["log_gradient"] + v_cin) * w)
    t0 = np.where(ev.in_year, 0.0, (ev.start - ev.ref) / d)
    dur = draw_piecewise(t0, mult, rng, CIN_HAZARD["hazards"])
    closure = _end_date(ev.ref, dur, ev.end)
    cpp_dur = draw_piecewise(np.zeros(m), np.exp(u_cpp + (CPP_HAZARD["log_gradient"] + v_cpp) * w), rng,
                             CPP_HAZARD["hazards"])
    return closure, _end_date(ev.cpp, cpp_dur, ev.end), la_eff


def _main_episodes(table: pd.DataFrame, ev: _Events, birth: pd.DatetimeIndex, closure: np.ndarray,
                   cpp_end: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """The census year's episodes, one per child, in DfE field names (dates still datetimes)."""
    row, m = ev.row, len(ev.row)
    # numbered over the whole extract: IDs numbered 1, 2, ... in every LA made ~10 pairs of different
    # children in two LAs share an ID, birth date and referral date nationally, which the extract check
    # rightly reads as one episode in two LAs
    ids = np.array([f"C{k:07d}" for k in range(1, m + 1)])
    eth = rng.choice(list(ETHNIC_SHARE), m, p=list(ETHNIC_SHARE.values()))
    need = rng.choice(list(NEED_SHARE), m, p=list(NEED_SHARE.values()))
    cat = rng.choice(list(PLAN_SHARE), m, p=list(PLAN_SHARE.values()))
    sex = np.where(table["sex"].to_numpy()[row] == "male", "1", "2")
    has_cp, nat = ev.has_cp, np.datetime64("NaT")
    return pd.DataFrame({
        "LAchildID": ids, "LA": table["la"].to_numpy()[row], "LSOA": table["neighbourhood"].to_numpy()[row],
        "PersonBirthDate": birth.to_numpy().astype("datetime64[D]"), "GenderCurrent": sex, "Ethnicity": eth,
        "CINreferralDate": ev.ref, "PrimaryNeedCode": need,
        "S47ActualStartDate": np.where(ev.has_s47, ev.s47, nat),
        "DateOfInitialCPC": np.where(has_cp, ev.cpp, nat),
        "CPPstartDate": np.where(has_cp, ev.cpp, nat),
        "CPPendDate": np.where(has_cp, cpp_end, nat),
        "InitialCategoryOfAbuse": np.where(has_cp, cat, None),
        "CINclosureDate": closure, "ReasonForClosure": np.where(pd.isna(closure), None, "RC1"),
    })


def _with_earlier_episodes(main: pd.DataFrame, ev: _Events, rng: np.random.Generator
                           ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The extract: ``main`` with earlier closed episodes 1-400 days before 1 April, dates as ISO text, rows
    shuffled; each child's re-referral (an earlier episode within 12 months) and its gap in days."""
    start, ref, m = ev.start, ev.ref, len(ev.row)
    d = np.timedelta64(1, "D")
    prior = ev.in_year & (rng.random(m) < PRIOR_EPISODE_SHARE)
    ref0 = start - rng.integers(1, 401, m) * d
    prior &= ref0 > main["PersonBirthDate"].to_numpy()
    gap = ((ref - ref0) / d).astype(int)
    close0 = ref0 + np.floor(rng.random(m) * np.maximum((start - ref0) / d - 1, 1)).astype(int) * d
    earlier = main[prior].copy()
    earlier["CINreferralDate"] = ref0[prior]
    earlier["CINclosureDate"] = close0[prior]
    earlier["ReasonForClosure"] = "RC8"
    for col in ("S47ActualStartDate", "DateOfInitialCPC", "CPPstartDate", "CPPendDate"):
        earlier[col] = np.datetime64("NaT")
    earlier["InitialCategoryOfAbuse"] = None
    extract = pd.concat([earlier, main], ignore_index=True)
    for col in extract.columns:
        if pd.api.types.is_datetime64_any_dtype(extract[col]):
            extract[col] = pd.to_datetime(extract[col]).dt.strftime("%Y-%m-%d")
    extract = extract.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    one_year = (pd.to_datetime(ref0) + pd.DateOffset(years=1)).to_numpy()
    return extract, prior & (ref < one_year), gap


def _durations_truth(la_eff: dict) -> dict:
    """``truth['durations']``: the hazards, cut points, log gradients and LA effects of the durations."""
    return {"cuts_days": list(CUTS_DAYS), "unit": "per day",
            "cin_closure": {"hazards": list(CIN_HAZARD["hazards"]), "log_gradient": CIN_HAZARD["log_gradient"],
                            "la_sd": list(LA_HAZARD_SD), "la_effects": _listed(la_eff["cin"])},
            "cpp_end": {"hazards": list(CPP_HAZARD["hazards"]), "log_gradient": CPP_HAZARD["log_gradient"],
                        "la_sd": list(LA_HAZARD_SD), "la_effects": _listed(la_eff["cpp"])},
            "w": "(x - X_la) / 0.1, X_la the child-weighted mean of x over the LA"}


def la_effects(las: np.ndarray, rng: np.random.Generator, sd=LA_HAZARD_SD) -> tuple[dict, dict]:
    """Each LA's log-hazard effect and gradient deviation, independent normals with SDs ``sd``."""
    return (dict(zip(las, rng.normal(0, sd[0], len(las)), strict=True)),
            dict(zip(las, rng.normal(0, sd[1], len(las)), strict=True)))


def _listed(eff: tuple[dict, dict]) -> dict:
    return {"intercept": {k: float(v) for k, v in eff[0].items()},
            "gradient": {k: float(v) for k, v in eff[1].items()}}


def _minus_years(dates: pd.DatetimeIndex, years: np.ndarray) -> pd.DatetimeIndex:
    """``dates`` minus whole calendar years (29 February -> 28 February)."""
    y = dates.year.to_numpy() - years
    mth, day = dates.month.to_numpy(), dates.day.to_numpy()
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    day = np.where((mth == 2) & (day == 29) & ~leap, 28, day)
    return pd.DatetimeIndex(pd.to_datetime(pd.DataFrame({"year": y, "month": mth, "day": day})))


def _end_date(begin: np.ndarray, days: np.ndarray, end: np.datetime64) -> np.ndarray:
    finite = np.isfinite(days)
    whole = np.where(finite, np.floor(days), 0).astype(np.int64)
    out = begin + whole * np.timedelta64(1, "D")
    return np.where(finite & (out <= end), out, np.datetime64("NaT"))


def simulate_care_extract(geo: Geography, *, year: int = 2019, years: int = 7, seed: int = 0
                          ) -> tuple[pd.DataFrame, dict]:
    """A looked-after extract (one row per care episode) with returns home and re-entries of known hazard.

    Children return home (``ReasonEpisodeCeased`` E4A or E4B) uniformly over the ``years`` census
    years ending 31 March ``year``, at ``RETURN_HOME_RATE * children * exp(0.5 * (x - mean x) / 0.1)``
    per neighbourhood and year; each has the care episode that ended (started 30-700 days before)
    and, if the child re-entered by 31 March ``year``, the next episode (open, or ended X1/E8).
    Time to re-entry is piecewise exponential (:data:`REENTRY_HAZARD` per day by band of
    :data:`REENTRY_CUTS_DAYS`) times ``exp(u_la + (log_gradient + v_la) * w)`` (:func:`la_effects`).
    A few children leave care other ways (adopted E11, other E8) and are never at risk.

    Returns
    -------
    extract : pandas.DataFrame
        Fields LAchildID, LA, LSOA, PersonBirthDate, GenderCurrent, CLAstartDate, CLAendDate,
        ReasonEpisodeCeased (dates as ISO text).
    truth : dict
        ``reentry``: hazards, cut points, log gradient, LA effects, the share re-entering within
        six years of a typical neighbourhood (w = 0) of a typical LA.
    """
    rng = np.random.default_rng([seed, 903])
    lsoa = geo.lsoa
    kids = lsoa["children"].to_numpy(dtype=float)
    x = lsoa["income_rate"].to_numpy(dtype=float)
    la = lsoa["la"].astype(str).to_numpy()
    X_la = pd.Series(x * kids).groupby(la).sum() / pd.Series(kids).groupby(la).sum()
    w = (x - X_la.loc[la].to_numpy()) / 0.1
    x_mean = np.sum(kids * x) / kids.sum()
    n = rng.poisson(RETURN_HOME_RATE * years * kids * np.exp(0.5 * (x - x_mean) / 0.1))
    row = np.repeat(np.arange(len(lsoa)), n)
    m = len(row)
    end = np.datetime64(f"{year}-03-31")
    first = np.datetime64(f"{year - years}-04-01")
    span = int((end - first).astype(int)) + 1
    d = np.timedelta64(1, "D")
    home = first + rng.integers(0, span, m) * d
    eff = la_effects(np.unique(la), np.random.default_rng([seed, 903, 1]))
    u, v = (np.array([e[j] for j in la[row]]) for e in eff)
    mult = np.exp(u + (REENTRY_HAZARD["log_gradient"] + v) * w[row])
    t = draw_piecewise(np.zeros(m), mult, rng, REENTRY_HAZARD["hazards"], REENTRY_CUTS_DAYS)
    back = _end_date(home, np.maximum(t, 1.0), end)  # a start on the day of the return is a transfer
    start0 = home - rng.integers(30, 701, m) * d
    age = rng.integers(1, 16, m)
    born = pd.to_timedelta(age * 365 + rng.integers(0, 365, m), unit="D")
    birth = pd.DatetimeIndex(start0.astype("datetime64[ns]")) - born
    ids = np.array([f"L{k:07d}" for k in range(1, m + 1)])  # unique over the extract, as in simulate_extract
    sex = rng.choice(["1", "2"], m)
    base = pd.DataFrame({"LAchildID": ids, "LA": la[row], "LSOA": lsoa["lsoa"].astype(str).to_numpy()[row],
                         "PersonBirthDate": birth.to_numpy().astype("datetime64[D]"), "GenderCurrent": sex})
    left = base.assign(CLAstartDate=start0, CLAendDate=home, ReasonEpisodeCeased=rng.choice(["E4A", "E4B"], m))
    again = ~pd.isna(back)
    later_end = back + rng.integers(30, 900, m) * d
    closed = again & (later_end <= end)
    reentry = base[again].assign(CLAstartDate=back[again],
                                 CLAendDate=np.where(closed, later_end, np.datetime64("NaT"))[again],
                                 ReasonEpisodeCeased=np.where(closed, "E8", None)[again])
    k = max(1, m // 10)  # children who left care other ways: never at risk of re-entry
    other = base.iloc[:0].copy()
    if m:
        pick = rng.choice(m, k, replace=False)
        other = base.iloc[pick].assign(LAchildID=[f"A{i:07d}" for i in range(k)],
                                       CLAstartDate=start0[pick], CLAendDate=home[pick],
                                       ReasonEpisodeCeased=rng.choice(["E11", "E8"], k))
    extract = pd.concat([left, reentry, other], ignore_index=True)
    for col in ("PersonBirthDate", "CLAstartDate", "CLAendDate"):
        extract[col] = pd.to_datetime(extract[col]).dt.strftime("%Y-%m-%d")
    extract = extract.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    h = np.asarray(REENTRY_HAZARD["hazards"])
    cuts = np.asarray(REENTRY_CUTS_DAYS, dtype=float)
    six = 6 * 365.25
    cum = np.sum(h * np.clip(np.minimum(six, np.append(cuts[1:], np.inf)) - cuts, 0, None))
    truth = {"reentry": {"cuts_days": list(REENTRY_CUTS_DAYS), "unit": "per day",
                         "hazards": list(h), "log_gradient": REENTRY_HAZARD["log_gradient"],
                         "la_sd": list(LA_HAZARD_SD), "la_effects": _listed(eff),
                         "share_within_six_years_typical": float(1 - np.exp(-cum)),
                         "returns_home": int(m), "reentries_observed": int(again.sum()),
                         "extract_end": str(end), "first_return_home": str(first),
                         "w": "(x - X_la) / 0.1, X_la the child-weighted mean of x over the LA"}}
    return extract, truth

"""Durations and re-entry as time-to-event outcomes: piecewise-exponential (Poisson) tables.

A piecewise-exponential survival model is a Poisson model with person-time at risk as exposure:
split each spell (a CIN episode from referral to closure, a child protection plan from start to
end, or a return home from care to re-entry) at the band cut points, and count per neighbourhood x
duration band the events and the days at risk. Spells still open at the extract's end are
right-censored there. :func:`spells` builds the spells from parsed records (any start and end
date fields, so re-entry to care uses the same code on a looked-after extract with a return-home
date and the next care start), :func:`person_time` the table, :func:`fit_piecewise` the maximum
likelihood fit of ``log hazard = band + gradient * w`` (Newton's method; ``w`` the within-LA
deprivation per 10 points, as in the count models), :func:`kaplan_meier` and :func:`estimands` the
field's summaries (median duration, share ended within 3 months) by deprivation group, with groups
behind fewer than the disclosure threshold's spells or events suppressed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierarchy.data.reference import Geography
from hierarchy.disclosure import THRESHOLD
from hierarchy.errors import HierarchyError

CUTS_DAYS: tuple[int, ...] = (0, 91, 182, 365)
"""Default band edges in days since the start: [0, 91), [91, 182), [182, 365), [365, inf)."""

SPELLS = {"cin": ("CINreferralDate", "CINclosureDate"), "cpp": ("CPPstartDate", "CPPendDate")}


def spells(records: pd.DataFrame, start: str, end: str, *, since: pd.Timestamp,
           extract_end: pd.Timestamp) -> pd.DataFrame:
    """One row per distinct (child, start date) starting on or after ``since``.

    Returns columns ``child``, ``neighbourhood``, ``start``, ``days`` (to the end or to the
    extract's end + 1 day) and ``event`` (1 ended, 0 censored).
    """
    for col in (start, end):
        if col not in records:
            raise HierarchyError(f"the extract has no {col} field: cannot build {start} -> {end} spells")
    r = records.dropna(subset=[start])
    r = r[r[start] >= since].sort_values(["child", start, end], kind="stable")
    r = r.drop_duplicates(["child", start])  # one spell per start, the earliest recorded end
    ended = r[end].notna() & (r[end] <= extract_end)
    stop = r[end].where(ended, extract_end + pd.Timedelta(days=1))
    return pd.DataFrame({"child": r["child"].to_numpy(), "neighbourhood": r["LSOA"].astype(str).to_numpy(),
                         "start": r[start].to_numpy(), "days": (stop - r[start]).dt.days.to_numpy(),
                         "event": ended.astype(int).to_numpy()})


def person_time(sp: pd.DataFrame, geo: Geography, cuts=CUTS_DAYS) -> pd.DataFrame:
    """Neighbourhood x duration band: ``events``, ``exposure`` (days at risk), ``w`` and geography."""
    cuts = np.asarray(cuts, dtype=float)
    upper = np.append(cuts[1:], np.inf)
    d = sp["days"].to_numpy(dtype=float)[:, None]
    at_risk = np.clip(np.minimum(d, upper) - cuts, 0, None)
    band_of_end = np.searchsorted(cuts, d[:, 0], side="right") - 1
    events = np.zeros_like(at_risk)
    events[np.arange(len(d)), band_of_end] = sp["event"].to_numpy()
    labels = [f"{int(a)}-{int(b)}" if np.isfinite(b) else f"{int(a)}+" for a, b in zip(cuts, upper, strict=True)]
    long = pd.DataFrame({"neighbourhood": np.repeat(sp["neighbourhood"].to_numpy(), len(cuts)),
                         "duration_band": np.tile(labels, len(d)), "band": np.tile(np.arange(len(cuts)), len(d)),
                         "events": events.reshape(-1), "exposure": at_risk.reshape(-1)})
    table = long.groupby(["neighbourhood", "band", "duration_band"], as_index=False)[["events", "exposure"]].sum()
    table = table[table["exposure"] > 0].copy()
    lsoa = geo.lsoa.set_index(geo.lsoa["lsoa"].astype(str))
    X = lsoa.groupby("la").apply(lambda g: np.average(g["income_rate"], weights=g["children"]),
                                 include_groups=False)
    table["la"] = lsoa.loc[table["neighbourhood"], "la"].astype(str).to_numpy()
    table["deprivation"] = lsoa.loc[table["neighbourhood"], "income_rate"].to_numpy(dtype=float)
    table["w"] = (table["deprivation"] - X.loc[table["la"]].to_numpy()) / 0.1
    table["events"] = table["events"].astype(np.int64)
    return table.reset_index(drop=True)


def fit_piecewise(table: pd.DataFrame, *, iterations: int = 50) -> dict[str, np.ndarray]:
    """Poisson maximum likelihood of ``events ~ exposure * exp(band_k + gradient * w)``.

    Returns ``hazard`` (per day, per band), ``log_gradient`` and their standard errors ``se``.
    """
    bands = table["band"].to_numpy()
    k = int(bands.max()) + 1
    X = np.column_stack([np.eye(k)[bands], table["w"].to_numpy()])
    y, off = table["events"].to_numpy(float), np.log(table["exposure"].to_numpy(float))
    theta = np.append(np.log(np.maximum(np.bincount(bands, y, k), 0.5) / np.bincount(bands, np.exp(off), k)), 0.0)
    for _ in range(iterations):
        mu = np.exp(off + X @ theta)
        info = X.T @ (X * mu[:, None])
        step = np.linalg.solve(info, X.T @ (y - mu))
        theta = theta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ (X * np.exp(off + X @ theta)[:, None]))))
    return {"hazard": np.exp(theta[:k]), "log_gradient": float(theta[k]), "se": se}


def kaplan_meier(days: np.ndarray, event: np.ndarray) -> pd.DataFrame:
    """Kaplan-Meier survival: columns ``days`` (event times), ``at_risk``, ``events``, ``survival``."""
    days, event = np.asarray(days), np.asarray(event)
    times = np.unique(days[event == 1])
    at_risk = np.array([(days >= t).sum() for t in times])
    ev = np.array([((days == t) & (event == 1)).sum() for t in times])
    return pd.DataFrame({"days": times, "at_risk": at_risk, "events": ev,
                         "survival": np.cumprod(1 - ev / np.maximum(at_risk, 1))})


def estimands(sp: pd.DataFrame, geo: Geography, *, groups: int = 5, within_days: int = 91,
              threshold: int = THRESHOLD) -> pd.DataFrame:
    """Median duration and share ended within ``within_days`` by national quantile group of deprivation.

    Groups with fewer than ``threshold`` spells or events are suppressed (NaN, ``suppressed`` True).
    """
    x = geo.lsoa.set_index(geo.lsoa["lsoa"].astype(str))["income_rate"]
    edges = np.quantile(x.to_numpy(), np.linspace(0, 1, groups + 1))
    g = np.clip(np.searchsorted(edges, x.loc[sp["neighbourhood"]].to_numpy(), side="right"), 1, groups)
    rows = []
    for k in range(1, groups + 1):
        s = sp[g == k]
        n_ev = int(s["event"].sum())
        row = {"group": k, "x_from": edges[k - 1], "x_to": edges[k], "spells": len(s), "events": n_ev,
               "median_days": np.nan, f"share_within_{within_days}": np.nan, "suppressed": True}
        if len(s) >= threshold and n_ev >= threshold:
            km = kaplan_meier(s["days"].to_numpy(), s["event"].to_numpy())
            below = km[km["survival"] <= 0.5]
            before = km[km["days"] <= within_days]
            row.update(median_days=float(below["days"].iloc[0]) if len(below) else np.nan,
                       suppressed=False,
                       **{f"share_within_{within_days}": 1 - float(before["survival"].iloc[-1]) if len(before)
                          else 0.0})
        else:
            row.update(spells=np.nan, events=np.nan)  # counts behind a suppressed group are not shown
        rows.append(row)
    return pd.DataFrame(rows)

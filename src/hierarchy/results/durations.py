"""Durations and re-entry as time-to-event outcomes: piecewise-exponential (Poisson) tables.

The Bayesian route: :func:`model_table` writes the neighbourhood x duration-band table in the
columns ``hierarchy validate``/``hierarchy fit`` take (``events`` a named count, ``band`` a named
stratum, ``exposure`` child-years at risk), the shipped models
``models/cin_duration_poisson.toml``, ``cpp_duration_poisson.toml`` and
``care_reentry_poisson.toml`` fit ``events ~ w * z + C(band) + (1 + w | la) +
offset(log(exposure))`` with the prior set ``priors/time_to_event.toml`` (log hazards per
child-year), and :func:`posterior_estimands` turns the posterior into the field's terms (median
duration, share ended within 3 months, share re-entering within six years) for a typical LA at
mean LA deprivation and 10 points either side, by neighbourhood deprivation quintile.

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

REENTRY_CUTS_DAYS: tuple[int, ...] = (0, 182, 365, 730)
"""Default band edges for re-entry to care after a return home: [0, 182), [182, 365), [365, 730), [730, inf)."""

SPELLS = {"cin": ("CINreferralDate", "CINclosureDate"), "cpp": ("CPPstartDate", "CPPendDate")}

YEAR_DAYS = 365.25
"""Days in a child-year at risk (the exposure unit of :func:`model_table`)."""


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
    """Neighbourhood x duration band: ``events``, ``exposure`` (days at risk), ``w``, ``la_deprivation`` (the
    LA's child-weighted mean deprivation) and geography."""
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
    table["la_deprivation"] = X.loc[table["la"]].to_numpy(dtype=float)  # one value per LA
    table["w"] = (table["deprivation"] - table["la_deprivation"]) / 0.1
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


def reentry_spells(records: pd.DataFrame, *, since: pd.Timestamp, until: pd.Timestamp | None = None,
                   extract_end: pd.Timestamp) -> pd.DataFrame:
    """Spells from a return home (a care episode ending with :data:`~hierarchy.data.extract.RETURN_HOME_CODES`)
    to the child's next care start; censored at the extract's end.

    ``records`` are parsed looked-after records (:func:`hierarchy.data.extract.parse_extract` of an
    extract with ``CLAstartDate``, ``CLAendDate``, ``ReasonEpisodeCeased``). Returns home on or
    after ``since`` (and on or before ``until``) start a spell; columns as :func:`spells`.
    """
    from hierarchy.data.extract import RETURN_HOME_CODES

    for col in ("CLAstartDate", "CLAendDate", "ReasonEpisodeCeased"):
        if col not in records:
            raise HierarchyError(f"the extract has no {col} field: re-entry spells need care episodes with "
                                 "CLAstartDate, CLAendDate and ReasonEpisodeCeased")
    home = records[records["ReasonEpisodeCeased"].isin(RETURN_HOME_CODES) & records["CLAendDate"].notna()]
    home = home[(home["CLAendDate"] >= since) & (home["CLAendDate"] <= (until or extract_end))]
    home = home.drop_duplicates(["child", "CLAendDate"])
    starts = records.dropna(subset=["CLAstartDate"])[["child", "CLAstartDate"]].sort_values("CLAstartDate")
    nxt = pd.merge_asof(home.sort_values("CLAendDate")[["child", "LSOA", "CLAendDate"]],
                        starts.rename(columns={"CLAstartDate": "next_start"}), left_on="CLAendDate",
                        right_on="next_start", by="child", direction="forward", allow_exact_matches=False)
    ended = nxt["next_start"].notna() & (nxt["next_start"] <= extract_end)
    stop = nxt["next_start"].where(ended, extract_end + pd.Timedelta(days=1))
    return pd.DataFrame({"child": nxt["child"].to_numpy(), "neighbourhood": nxt["LSOA"].astype(str).to_numpy(),
                         "start": nxt["CLAendDate"].to_numpy(),
                         "days": (stop - nxt["CLAendDate"]).dt.days.to_numpy(),
                         "event": ended.astype(int).to_numpy()})


def band_labels(cuts=CUTS_DAYS) -> list[str]:
    """Band names in days, zero-padded so that they sort in time order (``0000-0091``, ..., ``0365+``)."""
    cuts = [int(c) for c in cuts]
    if cuts[0] != 0 or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise HierarchyError(f"band cut points must start at 0 and increase, got {cuts}")
    width = max(4, len(str(cuts[-1])))
    last = f"{cuts[-1]:0{width}d}+"
    return [f"{a:0{width}d}-{b:0{width}d}" for a, b in zip(cuts, cuts[1:], strict=False)] + [last]


def cuts_of(labels) -> np.ndarray:
    """Cut points (days) from the band names of :func:`band_labels`, in time order."""
    starts = sorted({int(str(lab).split("-")[0].rstrip("+")) for lab in labels})
    return np.asarray(starts, dtype=float)


def model_table(sp: pd.DataFrame, geo: Geography, cuts=CUTS_DAYS) -> pd.DataFrame:
    """The neighbourhood x band table ``hierarchy fit`` takes with the shipped duration models.

    Columns ``neighbourhood``, ``la``, ``deprivation``, ``la_deprivation`` (the LA's child-weighted
    mean of ``deprivation`` over all its neighbourhoods, as in the referral table: the duration
    models read it, not the mean weighted by time at risk), ``band`` (:func:`band_labels`),
    ``events`` and ``exposure`` (child-years at risk, days / :data:`YEAR_DAYS`). Rows without time
    at risk are left out (no child was in that band there). Stays inside the secure environment:
    it holds neighbourhood-level counts.
    """
    pt = person_time(sp, geo, cuts)
    labels = band_labels(cuts)
    return pd.DataFrame({"neighbourhood": pt["neighbourhood"], "la": pt["la"], "deprivation": pt["deprivation"],
                         "la_deprivation": pt["la_deprivation"],
                         "band": np.asarray(labels, dtype=object)[pt["band"].to_numpy()],
                         "events": pt["events"].astype(np.int64),
                         "exposure": pt["exposure"].to_numpy(dtype=float) / YEAR_DAYS})


def survival_from_hazards(log_hazard: np.ndarray, cuts_days: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Survival at ``days`` from piecewise-constant log hazards per child-year.

    ``log_hazard`` has the bands on its last axis; returns ``(..., len(days))``.
    """
    cuts = np.asarray(cuts_days, dtype=float)
    upper = np.append(cuts[1:], np.inf)
    t = np.asarray(days, dtype=float)
    overlap = np.clip(np.minimum(t[:, None], upper[None, :]) - cuts[None, :], 0, None) / YEAR_DAYS  # (T, K)
    return np.exp(-np.einsum("...k,tk->...t", np.exp(log_hazard), overlap))


def median_days(log_hazard: np.ndarray, cuts_days: np.ndarray) -> np.ndarray:
    """Median time to the event (days) under piecewise-constant hazards (per child-year)."""
    cuts = np.asarray(cuts_days, dtype=float)
    h = np.exp(log_hazard) / YEAR_DAYS  # per day
    width = np.append(np.diff(cuts), np.inf)
    cum_before = np.concatenate([np.zeros(h.shape[:-1] + (1,)),
                                 np.cumsum(h[..., :-1] * width[:-1], axis=-1)], axis=-1)
    target = np.log(2.0)
    k = np.clip((cum_before <= target).sum(axis=-1) - 1, 0, len(cuts) - 1)
    cb = np.take_along_axis(cum_before, k[..., None], -1)[..., 0]
    hk = np.take_along_axis(h, k[..., None], -1)[..., 0]
    return cuts[k] + (target - cb) / hk


def posterior_estimands(idata, *, within_days: int = 91, horizon_days: int | None = None, groups: int = 5,
                        prob: float = 0.9) -> pd.DataFrame:
    """The field's duration estimands from the posterior of a duration or re-entry fit.

    For a typical LA (LA effects at their mean) at mean LA deprivation and 10 points less / more,
    and a neighbourhood at the median deprivation of each national quantile group of the fitted
    rows: median time to the event (days), the share ended within ``within_days`` (default 91:
    3 months) and, with ``horizon_days`` (e.g. 6 * 365 for re-entry within six years), the share
    by then. Each as posterior mean and central ``prob`` interval.

    These are model predictions at public covariate values: no observed count enters the table.
    """
    from hierarchy.likelihood import model
    from hierarchy.results.estimands import la_levels
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    spec = as_fit(idata).spec
    if spec.strata != ("band",) or spec.stacked:
        raise HierarchyError(f"model '{spec.name}' is not a duration model: it needs one outcome and the "
                             "duration bands as its stratum, C(band) (see models/cin_duration_poisson.toml)")
    des = provenance(idata)["design"]
    post = idata.posterior
    labels = np.unique(idata.constant_data["stratum"].to_numpy().astype(str))
    cuts = cuts_of(labels)
    order = [str(lab) for lab in sorted(labels, key=lambda v: int(str(v).split("-")[0].rstrip("+")))]
    ref = order[0]
    x = idata.constant_data["deprivation"].to_numpy()
    edges = np.quantile(x, np.linspace(0, 1, groups + 1))
    mids = np.array([np.median(x[(x >= lo) & (x <= hi)]) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    z = la_levels(idata)
    from hierarchy.language.design import w_of

    rows = []
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    flat = post.stack(sample=("chain", "draw"))
    for level in z["la_level"].to_numpy():
        zl = z.sel(la_level=level)
        X = float(zl["la_deprivation"])
        for g, xm in enumerate(mids, start=1):
            w = float(w_of(np.array([xm]), np.array([X]), des["x_mean"], spec)[0])
            base = model.log_rate(flat, spec, w=w, z=float(zl)).to_numpy()  # (S,)
            lh = []
            for lab in order:
                v = base.copy()
                if lab != ref and "stratum_intercept_offset" in flat:
                    v = v + flat["stratum_intercept_offset"].sel(stratum=lab).to_numpy()
                    if "stratum_gradient_offset" in flat:
                        v = v + flat["stratum_gradient_offset"].sel(stratum=lab).to_numpy() * w
                lh.append(v)
            lh = np.stack(lh, axis=-1)  # (S, K)
            days = [within_days] + ([horizon_days] if horizon_days else [])
            share = 1 - survival_from_hazards(lh, cuts, np.asarray(days))
            med = median_days(lh, cuts)
            row = {"la_level": str(level), "la_deprivation": X, "group": g, "deprivation": float(xm)}
            for name, v in [("median_days", med), (f"share_within_{within_days}", share[:, 0])] + \
                    ([(f"share_within_{horizon_days}", share[:, 1])] if horizon_days else []):
                row[name] = float(np.mean(v))
                row[f"{name}_lo"], row[f"{name}_hi"] = (float(q) for q in np.quantile(v, [lo_q, hi_q]))
            rows.append(row)
    return pd.DataFrame(rows)

"""The findings of a report as short sentences in the field's words, each with its interval.

Every number is a report table's (:mod:`hierarchy.reporting.tables`), rounded to the precision its
interval justifies, and every interval is at the report's probability (``--prob``). Published
figures (:mod:`hierarchy.published`) appear only beside the estimate they describe, in the data's
census year (:func:`published_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import published
from hierarchy.reporting import page
from hierarchy.reporting.tables import ALL_LAS
from hierarchy.reporting.text import decimals_for, pct, pct_decimals
from hierarchy.results import estimands

STAGE_WORDS = {"referral": "referral", "assessment": "assessment", "s47": "section 47 enquiry",
               "cp_plan": "child protection plan", "looked_after": "looked-after"}
RISE = "a 10-point rise in the share of income-deprived people in the neighbourhood"


@dataclass(frozen=True)
class Published:
    """The published figures a report shows beside its estimates, and the sentence saying which (or why none).

    ``gradients``: typical-LA gradient scores (per 10 points) by LA level; ``la_range``: (low, high)
    of the LA gradient scores; ``label``: what and when, for legends; ``when``: the census year as
    the field writes it (``2018-19``); ``note``: the sentence the page prints.
    """

    gradients: dict[str, float]
    la_range: tuple[float, float] | None
    label: str
    note: str
    when: str = ""


def published_for(outcome: str | list, *, year: int | None, stratified: bool = False,
                  la_levels: Any = None) -> Published:
    """The published figures that describe a fit's headline estimands (:mod:`hierarchy.published`).

    A figure is shown only when its outcome (the fit's first stage), estimand, LA level, scale (per
    10 points) and census year all match; the year is the data's (:func:`hierarchy.published.data_year`).
    Nothing is shown for a stratified fit (its headline is the reference stratum's, the published
    figures describe all children) or when the year is unknown.

    Parameters
    ----------
    outcome : str or list
        The model's outcome (stages: the first is the headline).
    year : int or None
        Census year of the data (2019 for 2018-19).
    stratified : bool
        The fit has strata.
    la_levels : iterable of str, optional
        LA levels of the fit's headline gradient scores; published scores at other levels are left out.
    """
    stage = str(outcome[0] if isinstance(outcome, list) else outcome)
    if stratified:
        return Published({}, None, "", "No published figures are shown: the headline estimates are the reference "
                                       "stratum's, and the published figures describe all children.")
    grads = published.gradient_scores(outcome=stage, year=year)
    if la_levels is not None:
        keep = {str(v) for v in la_levels}
        grads = {k: v for k, v in grads.items() if k in keep}
    la_range = published.gradient_range(outcome=stage, year=year)
    if year is None or (not grads and la_range is None):
        note = published.note(outcome=stage, year=year)
        if year is not None and note.startswith("Published"):  # figures for that year, none for these estimands
            note = (f"No published figures are shown: those for {stage} in {published.season(year)} describe "
                    "estimands this fit does not have.")
        return Published({}, None, "", note)
    label = f"published {outcome_words(stage)} gradient scores, {published.season(year)}"
    return Published(grads, la_range, label, published.note(outcome=stage, year=year), published.season(year))


def _change(g: float, dec: int) -> str:
    c = 100 * (g - 1)
    return f"{abs(c):.{dec}f}% {'higher' if c >= 0 else 'lower'}"


def _pct_interval(mean: float, lo: float, hi: float, prob: float) -> str:
    """``62% higher (90% interval 60% to 65%)``, the words repeated when the interval spans 1."""
    dec = pct_decimals(100 * (hi - lo))
    if (lo - 1) * (hi - 1) > 0 and (lo - 1) * (mean - 1) > 0:
        near, far = sorted((abs(100 * (lo - 1)), abs(100 * (hi - 1))))
        return f"{_change(mean, dec)} ({prob:.0%} interval {near:.{dec}f}% to {far:.{dec}f}%)"
    return f"{_change(mean, dec)} ({prob:.0%} interval {_change(lo, dec)} to {_change(hi, dec)})"


def _ratio_interval(mean: float, lo: float, hi: float, prob: float) -> str:
    dec = max(decimals_for(hi - lo), 2)
    return f"{mean:.{dec}f} ({prob:.0%} interval {lo:.{dec}f} to {hi:.{dec}f})"


def outcome_words(outcome: str | list) -> str:
    """The field's name of a stage's rate (``referral``, ``section 47 enquiry``...)."""
    stage = outcome[0] if isinstance(outcome, list) else outcome
    return STAGE_WORDS.get(str(stage), str(stage).replace("_", " "))


def findings(tables: dict[str, pd.DataFrame], *, outcome: str | list, prob: float,
             x_mean: float | None = None, stratified: bool = False, year: int | None = None
             ) -> list[page.Finding]:
    """The findings as short sentences in the field's words, each with its interval.

    Every number is the estimand table's, rounded (:func:`decimals_for`); the wording is
    associational ("is associated with"). Published figures appear only beside the estimate they
    describe, in the data's census year (:func:`published_for`).

    Parameters
    ----------
    tables : dict of pandas.DataFrame
        :func:`estimand_tables` (and :func:`subgroup_tables`) output.
    outcome : str or list
        The model's outcome (the first stage of stacked fits is the headline).
    prob : float
        Interval probability.
    x_mean : float, optional
        National mean neighbourhood deprivation, where the inverse-intervention contrast is read.
    stratified : bool
        The headline is a reference stratum's (no published comparison).
    year : int, optional
        Census year of the data, for the published figures (None: unknown, none shown).
    """
    rate = f"{outcome_words(outcome)} rate"
    est = tables["estimands"]
    head = est[(est["estimand"] == "gradient_score") & (est["scale"] == estimands.PER_10)]
    pub = published_for(outcome, year=year, stratified=stratified,
                        la_levels=head["la_level"] if "la_level" in head else None)
    out: list[page.Finding] = []
    where = {"mean": "a local authority of average deprivation", ALL_LAS: "a typical local authority",
             "10 points less": "a local authority 10 points less deprived",
             "10 points more": "a local authority 10 points more deprived"}
    for _, r in head.set_index("la_level").reindex(["mean", ALL_LAS, "10 points less", "10 points more"]
                                                   ).dropna(subset=["mean"]).iterrows():
        level = str(r.name)
        X = f" ({pct(r['la_deprivation'])} income-deprived)" if "la_deprivation" in r and \
            np.isfinite(r.get("la_deprivation", np.nan)) else ""
        shown = f"; published for {pub.when}: {_change(pub.gradients[level], 0)}" if level in pub.gradients else ""
        rise = RISE if not out else "the same rise"
        out.append(page.Finding(f"In {where[level]}{X}, {rise} is associated with a {rate} "
                                f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)}{shown}.",
                                "estimands"))
    inv = tables.get("inverse_intervention")
    if inv is not None and len(head) == 3 and len(inv):
        i = int(np.argmin(np.abs(inv["x"].to_numpy() - (x_mean if x_mean is not None else inv["x"].median()))))
        r = inv.iloc[i]
        above = inv[inv["lower"] > 1]
        span = (f"; the {prob:.0%} interval lies above no difference for {len(above)} of the "
                f"{len(inv)} neighbourhood deprivation levels shown ({pct(inv['x'].min())} to "
                f"{pct(inv['x'].max())})")
        if "extrapolated" in inv:
            seen = inv.loc[~inv["extrapolated"].astype(bool), "x"]
            span += (f", of which the data have neighbourhoods in local authorities of both levels only from "
                     f"{pct(seen.min())} to {pct(seen.max())}" if len(seen) else
                     ", none of them seen in local authorities of both levels (the contrast is an extrapolation)")
        out.append(page.Finding(
            f"For neighbourhoods of the same deprivation ({pct(r['x'])} income-deprived), being in a "
            f"local authority 10 points less deprived rather than 10 points more deprived is associated "
            f"with a {rate} {_pct_interval(r['mean'], r['lower'], r['upper'], prob)}{span}.",
            "inverse-intervention"))
    la = tables.get("la_gradients")
    if la is not None and len(la):
        lo, hi = la["mean"].min(), la["mean"].max()
        n_above = int((la["lower"] > 1).sum())
        shown = (f" (published for {pub.when}: {pub.la_range[0]:.1f} to {pub.la_range[1]:.1f})"
                 if pub.la_range else "")
        out.append(page.Finding(
            f"Gradient scores (the {rate} multiplier for a 10-point rise) differ between local "
            f"authorities: their posterior means range from {lo:.2f} to {hi:.2f} over the {len(la)} "
            f"local authorities{shown}; {n_above} of them have a {prob:.0%} interval above 1.",
            "la-gradients"))
    share = est[est["estimand"] == "between_la_share"]
    if len(share):
        r = share.iloc[0]
        dec = pct_decimals(100 * (r["upper"] - r["lower"]))
        out.append(page.Finding(
            f"{100 * r['mean']:.{dec}f}% ({prob:.0%} interval {100 * r['lower']:.{dec}f}% to "
            f"{100 * r['upper']:.{dec}f}%) of the variation in {rate}s (log scale) lies between local "
            "authorities.", "estimands"))
    out += _subgroup_findings(tables, prob=prob)
    out += year_findings(tables, prob=prob)
    return out


def year_findings(tables: dict[str, pd.DataFrame], *, prob: float) -> list[page.Finding]:
    """Sentences on the gradient over the years: first and last year, and the trend."""
    yg = tables.get("year_gradients")
    if yg is None:
        return []
    mean = yg[yg["la_level"] == "mean"]
    first, last = mean.iloc[0], mean.iloc[-1]
    now = _pct_interval(last["mean"], last["lower"], last["upper"], prob)
    then = _pct_interval(first["mean"], first["lower"], first["upper"], prob)
    ratio = _ratio_interval(last["ratio_to_first"], last["ratio_lower"], last["ratio_upper"], prob)
    out = [page.Finding(
        f"In {last['year']}, {RISE} is associated with a rate {now} (local authority of average "
        f"deprivation), against {then} in {first['year']}: {ratio} times the {first['year']} gradient "
        f"(probability that it is steeper: {last['p_steeper_than_first']:.2f}).", "years")]
    tr = tables.get("year_trend")
    if tr is not None:
        r = tr.iloc[0]
        out.append(page.Finding(
            f"Over the years fitted, the gradient score changed by a factor of "
            f"{_ratio_interval(r['mean'], r['lower'], r['upper'], prob)} a year (probability that it is "
            f"steepening: {r['p_steepening']:.2f}).", "years"))
    return out


def _subgroup_findings(tables: dict[str, pd.DataFrame], *, prob: float) -> list[page.Finding]:
    """Sentences for stages, strata, stage escalation and the formula's gradient moderators."""
    out: list[page.Finding] = []
    sub = tables.get("subgroup_gradients")
    if sub is not None:
        if "stage" in sub:
            first = sub.groupby("stage", sort=False).head(1)
            for _, r in first.iloc[1:].iterrows():
                out.append(page.Finding(
                    f"At the {outcome_words(str(r['stage']))} stage, {RISE} is associated with a rate "
                    f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)} (local authority of "
                    "average deprivation).", "subgroups"))
        if "stratum" in sub:
            part = sub if "stage" not in sub else sub[sub["stage"] == sub["stage"].iloc[0]]
            lo, hi = part.loc[part["mean"].idxmin()], part.loc[part["mean"].idxmax()]
            out.append(page.Finding(
                f"By stratum, the gradient is shallowest for {lo['stratum']}: "
                f"{_pct_interval(lo['mean'], lo['lower'], lo['upper'], prob)}; and steepest for "
                f"{hi['stratum']}: {_pct_interval(hi['mean'], hi['lower'], hi['upper'], prob)}.", "subgroups"))
    esc = tables.get("escalation")
    if esc is not None:
        for _, r in esc.iterrows():
            b, a = (outcome_words(s.strip()) for s in str(r["step"]).split("/"))
            out.append(page.Finding(
                f"The gradient at the {b} stage is {_ratio_interval(r['mean'], r['lower'], r['upper'], prob)} "
                f"times the gradient at the {a} stage (probability that it is steeper: "
                f"{r['p_steeper']:.2f}).", "escalation"))
    est = tables["estimands"]
    mod = est[est["estimand"] == "moderated_gradient_score"]
    for _, r in mod.iterrows():
        out.append(page.Finding(
            f"Where {r['subgroup']}, {RISE} is associated with a rate "
            f"{_pct_interval(r['mean'], r['lower'], r['upper'], prob)} (local authority of average "
            "deprivation, other neighbourhood terms at 0).", "estimands"))
    con = tables.get("moderator_contrasts")
    if con is not None:
        for _, r in con.iterrows():
            interval = _ratio_interval(r["mean"], r["lower"], r["upper"], prob)
            if " vs " in str(r["contrast"]):
                a, b = str(r["contrast"]).split(" vs ")
                text = f"The gradient score where {a} is {interval} times the score where {b}"
            else:  # a numeric moderator: a trend per unit ("per year")
                text = f"The gradient score changes by a factor of {interval} {r['contrast']}"
            out.append(page.Finding(f"{text} (probability above 1: {r['p_greater_than_1']:.2f}).", "moderators"))
    return out

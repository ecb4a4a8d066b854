"""Figures and HTML/Markdown pages of a prior comparison
(:func:`hierarchy.results.compare_priors.compare_priors`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, NullFormatter

from hierarchy import published
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families
from hierarchy.reporting.figures import new_figure, to_png
from hierarchy.reporting.report import bullets, format_columns, write_pages
from hierarchy.results.prior_predictive import PriorPredictive
from hierarchy.results.prior_sensitivity import sensitivity_findings
from hierarchy.results.prior_settings import (
    ESTIMAND_LABELS,
    IMPOSSIBLE_RATE,
    SENSITIVITY_THRESHOLD,
    VISIBLE_IMPOSSIBLE,
    _big,
    published_note,
)

if TYPE_CHECKING:  # compare_priors.py builds on this module
    from hierarchy.results.compare_priors import PriorComparison


def _colours(names: list[str]) -> dict[str, str]:
    palette = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#35978f", "#878787"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def plot_prior_predictive(checks: dict[str, PriorPredictive], *, outcome: str = "referral",
                          year: int | None = None) -> bytes:
    """PNG: implied rate per 10,000 by decile (left) and implied gradient scores (right).

    Parameters
    ----------
    checks : dict of str to PriorPredictive
        Prior set name -> :func:`prior_predictive` result.
    outcome : str
        Stage name for the axis label.
    year : int, optional
        Census year of the data: the published LA rate range of ``outcome`` in ``year`` is shaded
        when :mod:`hierarchy.published` has one.

    Returns
    -------
    bytes
        The PNG image.
    """
    fig, ax = new_figure(1, 2, size=(11.0, 4.2))
    names = list(checks)
    col = _colours(names)
    left, right = ax[0, 0], ax[0, 1]
    for i, (name, c) in enumerate(checks.items()):
        d = c.deciles
        xs = d["decile"] + (i - (len(names) - 1) / 2) * 0.08
        off = bool((d["rate_median"] > 1e8).any())
        left.plot(xs, d["rate_median"], "o-", color=col[name], ms=4,
                  label=f"{name} (median off scale)" if off else name)
        left.fill_between(xs, d["rate_lower"].clip(lower=1e-3), d["rate_upper"].clip(upper=1e12),
                          color=col[name], alpha=0.12, lw=0)
        g = _first_stage(c.gradients)
        ys = np.arange(len(g)) + (i - (len(names) - 1) / 2) * 0.15
        right.errorbar(g["median"], ys, xerr=[g["median"] - g["lower"], g["upper"] - g["median"]],
                       fmt="o", color=col[name], label=name, ms=4, capsize=2)
    left.axhline(IMPOSSIBLE_RATE, color="k", ls="--", lw=1)
    left.text(1, IMPOSSIBLE_RATE * 1.3, "10,000: more referrals than children", fontsize=8)
    band = published.rate_range(outcome=outcome, year=year)
    if band is not None:
        left.axhspan(band[0], band[1], color="0.85", zorder=0, label=f"published LA range {year}")
    left.set_yscale("log")
    left.set_ylim(1e-1, 1e8)
    left.set_xticks(range(1, 11))
    left.set_xlabel("national decile of neighbourhood deprivation (1 = least deprived)")
    left.set_ylabel(f"implied {outcome.replace('_', ' ')} rate per 10,000 children")
    prob = float(next(iter(checks.values())).deciles["prob"].iloc[0])
    left.set_title(f"Prior predictive: median and {prob:.0%} interval")
    left.legend(fontsize="small")
    levels = list(_first_stage(next(iter(checks.values())).gradients)["la_level"])
    short = {"10 points less": "LA 10 points\nless deprived", "mean": "LA at mean\ndeprivation",
             "10 points more": "LA 10 points\nmore deprived"}
    right.set_yticks(range(len(levels)), [short.get(lv, lv) for lv in levels])
    pub = _first_stage(next(iter(checks.values())).gradients).set_index("la_level")["published"]
    for j, lv in enumerate(levels):
        if np.isfinite(pub.get(lv, np.nan)):
            right.plot([pub[lv]], [j], "k|", ms=14)
    right.set_xscale("log")
    right.xaxis.set_major_locator(FixedLocator([0.1, 0.25, 0.5, 1, 2, 4, 10]))
    right.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xlim(0.1, 10)  # wider priors run off the panel
    right.axvline(1.0, color="0.6", lw=0.8)
    right.set_xlabel("implied gradient score per 10 points"
                     + (" (| = published)" if np.isfinite(pub.to_numpy(dtype=float)).any() else ""))
    right.set_title("Prior of the typical-LA gradient score")
    return to_png(fig)


def _first_stage(gradients: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first stage of a stacked model's prior gradients (all rows otherwise): the
    stage the figure's rates are for."""
    return gradients[gradients["stage"] == gradients["stage"].iloc[0]] if "stage" in gradients else gradients


def plot_forest(estimands: pd.DataFrame) -> bytes:
    """PNG: forest plot of the headline gradient scores under each prior set.

    Parameters
    ----------
    estimands : pandas.DataFrame
        ``prior_set``, ``la_level``, ``mean``, ``lower``, ``upper`` (as
        :attr:`PriorComparison.estimands`).

    Returns
    -------
    bytes
        The PNG image: one panel per LA level, published values (where the ``published`` column has
        one) dashed.
    """
    levels = list(dict.fromkeys(estimands["la_level"]))
    names = list(dict.fromkeys(estimands["prior_set"]))
    col = _colours(names)
    fig, ax = new_figure(1, len(levels), size=(3.6 * len(levels), 0.5 * len(names) + 1.8))
    for j, lv in enumerate(levels):
        a = ax[0, j]
        part = estimands[estimands["la_level"] == lv].set_index("prior_set").reindex(names)
        ys = np.arange(len(names))[::-1]
        for y, name in zip(ys, names, strict=True):
            r = part.loc[name]
            a.errorbar([r["mean"]], [y], xerr=[[r["mean"] - r["lower"]], [r["upper"] - r["mean"]]],
                       fmt="o", color=col[name], capsize=3)
        pub = float(part["published"].iloc[0]) if "published" in part else np.nan
        a.set_yticks(ys, names if j == 0 else [""] * len(names))
        if np.isfinite(pub):
            a.axvline(pub, color="k", ls="--", lw=1)
            a.set_title(f"{ESTIMAND_LABELS[lv]}\n(published {pub:.2f}, dashed)", fontsize=9)
        else:
            a.set_title(ESTIMAND_LABELS[lv], fontsize=9)
        a.set_xlabel("gradient score per 10 points")
    return to_png(fig)


def _write_prior_pages(result: PriorComparison, *, spec: ModelSpec, sets: list[PriorSet],
                       data: Path, dhash: str, fit_table: pd.DataFrame, prob: float,
                       year: int | None = None) -> None:
    """Write the CSV tables (recorded in ``result.tables``), figures and pages."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    checks = result.prior_predictive
    deciles = pd.concat([c.deciles.assign(prior_set=n) for n, c in checks.items()], ignore_index=True)
    deciles = deciles[["prior_set", *[c for c in deciles.columns if c != "prior_set"]]]
    imp = pd.DataFrame([{"prior_set": n, "impossible_share": c.impossible_share,
                         "impossible_share_median_draw": c.impossible_median,
                         "draws_with_any_impossible": c.impossible_any,
                         "visible_mass_on_impossible": c.impossible_share >= VISIBLE_IMPOSSIBLE,
                         "prior_draws": c.n_draws} for n, c in checks.items()])
    grads = pd.concat([c.gradients.assign(prior_set=n) for n, c in checks.items()], ignore_index=True)
    grads = grads[["prior_set", *[c for c in grads.columns if c != "prior_set"]]]
    used = _used_groups(spec)
    priors_tab = pd.DataFrame([{"prior_set": s.name, **{g: str(s.priors[g]) for g in used
                                                        if g in s.priors}} for s in sets])
    posterior = not result.estimands.empty
    tables = {"prior_predictive_deciles": deciles, "prior_predictive_impossible": imp,
              "prior_gradients": grads, "prior_sets": priors_tab}
    if posterior:
        tables.update({"posterior_estimands": result.estimands, "movement": result.movement,
                       "sensitivity": result.sensitivity, "fits": fit_table})
    for name, frame in tables.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        result.tables[name] = path
    outcome = spec.stages[0]
    figures = {"prior_predictive": plot_prior_predictive(checks, outcome=outcome, year=year)}
    band = published.rate_range(outcome=outcome, year=year)
    reference = (f"For reference, published LA {outcome.replace('_', ' ')} rates in England in {year} ranged "
                 f"from {band[0]:,.0f} to {band[1]:,.0f} per 10,000 ({band[2]})." if band else "")
    dec_wide = deciles.assign(interval=[f"{_big(m)} ({_big(lo)} to {_big(hi)})" for m, lo, hi in
                                        zip(deciles["rate_median"], deciles["rate_lower"],
                                            deciles["rate_upper"], strict=True)])
    dec_wide = dec_wide.pivot(index="decile", columns="prior_set", values="interval")[list(checks)]
    dec_wide = dec_wide.reset_index()
    intro = [f"Model: {spec.name} ({spec.family}, outcome {spec.outcome}). Data: {data} "
             f"(hash {dhash}). Prior sets: {', '.join(s.name for s in sets)}. Intervals are "
             f"equal-tailed {prob:.0%} intervals. Gradient scores are rate multipliers per 10 "
             "percentage points of neighbourhood income deprivation in a typical LA; rates are "
             "per 10,000 children.", published_note(outcome, year)]
    sections = [
        ("Findings", bullets(result.findings), None),
        ("Prior sets", [], priors_tab),
        ("Prior predictive check: implied rates by deprivation decile",
         [("p", "Rates a prior implies for the data's neighbourhoods before seeing any counts "
                "(exp of the linear predictor, no count noise), summarised over prior draws as "
                f"median ({prob:.0%} interval), per 10,000 children. Anything above 10,000 means "
                "more events than children: impossible. " + reference),
          *bullets([c.verdict() for c in checks.values()])], dec_wide, "prior_predictive"),
        ("Prior predictive check: impossible rates", [],
         format_columns(imp, {"impossible_share": "{:.2%}", "impossible_share_median_draw": "{:.2%}",
                              "draws_with_any_impossible": "{:.1%}"})),
        ("Prior predictive check: implied gradient scores",
         [("p", "Prior of the typical-LA gradient score at mean LA deprivation and 10 points "
                "less/more deprived; p_below_1 is the prior probability of a reversed gradient.")],
         format_columns(grads, {"la_deprivation": "{:.1%}", "median": "{:.3g}", "lower": "{:.3g}",
                                "upper": "{:.3g}", "p_below_1": "{:.2f}", "published": "{:.2f}"})),
    ]
    if posterior:
        figures["forest"] = plot_forest(result.estimands)
        sections += _posterior_sections(result, fit_table)
    write_pages(out, f"Prior comparison: {spec.name}", sections, figures, intro=intro)


def _posterior_sections(result: PriorComparison, fit_table: pd.DataFrame) -> list[tuple]:
    """Page sections of the posterior comparison: estimands, their movement, sensitivity, fits."""
    sens = result.sensitivity
    sens_show = format_columns(sens[["prior_set", "parameter", "prior", "likelihood", "diagnosis"]],
                               {"prior": "{:.3f}", "likelihood": "{:.3f}"})
    est = format_columns(result.estimands[["prior_set", "la_level", "la_deprivation", "mean", "sd",
                                           "lower", "upper", "published"]],
                         {"la_deprivation": "{:.1%}", "mean": "{:.3f}", "sd": "{:.3f}",
                          "lower": "{:.3f}", "upper": "{:.3f}", "published": "{:.2f}"})
    mov = format_columns(result.movement[["estimand", "published", "min_mean", "min_prior_set",
                                          "max_mean", "max_prior_set", "movement", "movement_in_sd"]],
                         {"published": "{:.2f}", "min_mean": "{:.3f}", "max_mean": "{:.3f}",
                          "movement": "{:.3f}", "movement_in_sd": "{:.2f}"})
    return [
        ("Posterior headline estimands by prior set", [], est, "forest"),
        ("How much the estimands move between prior sets",
         [("p", "movement = largest minus smallest posterior mean over the prior sets; "
                "movement_in_sd divides it by the average posterior SD.")], mov),
        ("Power-scaling prior sensitivity",
         [("p", "How much each posterior changes when the prior (or the likelihood) is "
                "strengthened or weakened slightly (power-scaling, Kallioinen et al. 2024; "
                f"arviz.psens). Values above {SENSITIVITY_THRESHOLD} are flagged: prior-sensitive "
                "with a sensitive likelihood suggests prior-data conflict; prior-sensitive with an "
                "insensitive likelihood means the data say little and the prior decides."),
          *bullets(sensitivity_findings(sens))], sens_show),
        ("Fits", [], fit_table),
    ]


def _used_groups(spec: ModelSpec) -> list[str]:
    """Prior groups the model uses, in reporting order."""
    two = len(spec.coefs) == 2
    flags = {"intercept": True, "gradient": two, "la_deprivation": spec.la.between_effect,
             "cross_level": two and spec.la.cross_level, "la_covariates": bool(spec.la.covariates),
             "la_sd": True, "la_corr": two, "msoa_sd": spec.msoa.random_intercept}
    flags |= dict.fromkeys(families.get(spec.family).prior_groups, True)  # the family's (dispersion, zi...)
    return [g for g, used in flags.items() if used]

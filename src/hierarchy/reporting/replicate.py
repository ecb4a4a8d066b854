"""Every published finding of the social-gradient study, simulated with a known truth and recovered.

:func:`replicate` simulates the tables of :func:`hierarchy.data.findings.simulate_findings`, fits one model
file per analysis (:data:`ANALYSES`), and turns each fit into rows of one replication table
(:func:`findings_rows`): the published figure, its true value in the simulation, the posterior mean
with a 90% equal-tailed interval, whether the interval covers the truth, and for a direction the
study reported (steeper, highest, lowest, falls) the posterior probability of that direction.
:func:`write_page` writes the table as CSV and a page in the shared template
(:mod:`hierarchy.reporting.page`: status line, findings, figures with captions, the table as an
appendix; HTML and Markdown) with a forest plot of the subgroup gradients and the curve of the
gradient against LA deprivation beside the published points.

The analyses that fit one model to one table with another outcome (the four stages) are fitted in
one compiled program where their designs agree in everything the model function closes over (the
LA-effect parameterisation ``auto`` chooses from the counts included; :func:`batch_refusal`,
:func:`fit_all`; :func:`hierarchy.inference.batch.fit_batch`: side by side on an accelerator, in
turn on CPU); ``batched=False`` fits each alone.

Estimands (all from posterior predictions of a typical LA at mean LA deprivation, per 10 points,
unless the row says otherwise; :mod:`hierarchy.results.estimands`): the headline and stage gradients; the
lowest and highest LA gradient score (per draw, over LAs); the rate per 10,000 children in the
least and most deprived neighbourhoods (posterior predictive); subgroup gradients of strata and
their ratios; the gradient ratio per unit of a ``w:col`` term (rural vs urban, per SD sparser, per
year of age); the gradient ratio per SD of an LA covariate; Webb et al.'s contrast (the log gradient
in a low-deprivation, high-inequality LA over that in a high-deprivation, low-inequality LA, each
1 SD from the mean); and, for re-referrals and repeat plans, the rate ratio of a typical LA 10 points
less deprived to one 10 points more for a neighbourhood at mean LA deprivation and the ratio of
their gradients (the interaction).

The fitting lives in :mod:`hierarchy.reporting.replicate_fits` and the table's rows in
:mod:`hierarchy.reporting.replicate_rows` (their names are re-exported here); this module holds the
analyses, the figures, the page and the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import published
from hierarchy.errors import HierarchyError
from hierarchy.reporting.replicate_fits import (  # noqa: F401  (re-exported: the replication's public names)
    DEFAULT_PRIORS,
    Analysis,
    _same,
    analysis_spec,
    analysis_table,
    batch_groups,
    batch_refusal,
    fit_all,
    fit_analyses_batched,
    fit_analysis,
)
from hierarchy.reporting.replicate_rows import (  # noqa: F401  (re-exported: the replication's public names)
    COLUMNS,
    PROB,
    _age_sex_rows,
    _flat,
    _la_condition_rows,
    _levels,
    _provision_rows,
    _referral_rows,
    _row,
    _rural_rows,
    _stage_rows,
    _strata_rows,
    _stratum_rows,
    findings_rows,
    moderator_ratio,
)

STUDY_YEAR = 2019
"""Census year of the study replicated (Children in Need census 2018-19): its published points."""

ANALYSES: tuple[Analysis, ...] = (
    Analysis("referral", "base", "inverse_intervention_nb_log"),
    Analysis("s47", "base", "inverse_intervention_nb_log", outcome="s47"),
    Analysis("cp_plan", "base", "inverse_intervention_nb_log", outcome="cp_plan"),
    Analysis("looked_after", "base", "inverse_intervention_nb_log", outcome="looked_after"),
    Analysis("age_sex", "age_sex", "age_sex_gradient_nb"),
    Analysis("ethnicity", "ethnicity", "ethnicity_strata_nb"),
    Analysis("assessment", "assessment", "assessment_factor_nb"),
    Analysis("plan_category", "plan_category", "plan_category_nb"),
    Analysis("rural", "rural", "rural_sparsity_nb"),
    Analysis("la_conditions", "la_conditions", "la_provision_nb"),
    Analysis("re_referral", "base", "re_referral_provision_nb", needs_positive="referral"),
    Analysis("repeat_cp_plan", "base", "repeat_plan_provision_nb", needs_positive="cp_plan"),
)

FINDINGS: dict[str, str] = {
    "extremes": "referral rates from about 100 per 10,000 (under 1% income deprived) to more than 1,340 "
                "(the most deprived)",
    "headline": "referral gradient 1.62 at mean LA deprivation, 2.33 ten points less, 1.39 ten points more",
    "la_range": "LA referral gradient scores range from 1.2 to 2.4",
    "falls": "the gradient falls as LA deprivation rises at every threshold",
    "stages": "CP plan gradient 1.80 (and the simulated s47 / looked-after stage gradients)",
    "sex": "no difference by sex",
    "age": "steeper for younger children, falling with each successive year of age",
    "ethnicity": "White 1.91 (steepest), Black 1.27 (lowest), Asian, Mixed and Other between",
    "assessment": "assessment factor: neglect 1.84 (highest), physical disability 1.47 (lowest)",
    "plan_category": "CP plan category: neglect 1.98 (highest), sexual abuse 1.62 (lowest)",
    "rural": "steeper in rural and sparsely populated neighbourhoods, after LA deprivation",
    "la_provision": "LA expenditure and workforce stability change the gradient a little once LA deprivation "
                    "is in",
    "inequality": "gradient ~5 times stronger (per SD) in low-deprivation, high-inequality LAs than in "
                  "high-deprivation, low-inequality LAs (Webb et al. 2020)",
    "provision": "re-referrals and repeat CP plans highest in affluent LAs, highest of all in their deprived "
                 "neighbourhoods (interaction)",
}
"""Each published finding of issue 15; every one has at least one row in the replication table."""

FIGURES = ("forest", "curve")


# ------------------------------------------------------------------------------------------- figures


def plot_forest(table: pd.DataFrame):
    """Forest plot of subgroup gradients (log axis): posterior mean and 90% interval, truth as a cross."""
    from hierarchy.reporting.figures import GREY, OBSERVED, PREDICTED, new_figure, ratio_axis

    sub = table[table["estimand"].str.startswith("gradient, ")].iloc[::-1].reset_index(drop=True)
    fig, ax = new_figure(size=(7.5, 0.32 * len(sub) + 1.5))
    ax = ax[0, 0]
    y = np.arange(len(sub))
    ax.hlines(y, sub["lower"], sub["upper"], color=PREDICTED, lw=2, label="90% interval")
    ax.plot(sub["mean"], y, "o", color=PREDICTED, label="posterior mean")
    ax.plot(sub["truth"], y, "x", color=OBSERVED, ms=8, label="simulated truth")
    shown = pd.to_numeric(sub["published"], errors="coerce")
    ax.plot(shown, y, "s", mfc="none", color="#333333", ms=7, label="published")
    ax.set_yticks(y, [f"{a}: {e.removeprefix('gradient, ')}" for a, e in zip(sub["analysis"], sub["estimand"],
                                                                             strict=True)])
    ax.axvline(1.0, color=GREY, lw=0.8)
    ratio_axis(ax, "x")
    ax.set_xlabel("gradient score per 10 points (typical LA, mean LA deprivation; log scale)")
    fig.legend(loc="outside lower center", ncols=4, fontsize=8)
    return fig, sub


def plot_curve(idata, truth: dict[str, Any]):
    """Referral gradient against LA deprivation: the simulated truth, the posterior and the published points.

    The posterior curve is :func:`hierarchy.results.estimands.gradient_curve` (dashed beyond the
    fitted LAs' deprivation range); the published points are the study's (:data:`STUDY_YEAR`,
    :mod:`hierarchy.published`) at the simulation's mean LA deprivation and 10 points either side.
    """
    from hierarchy.data.simulate import log_gradient
    from hierarchy.reporting.figures import OBSERVED, PREDICTED, curve_with_extrapolation, new_figure, ratio_axis
    from hierarchy.results.estimands import LA_LEVELS, gradient_curve, summarise

    la = truth["la_deprivation"]
    X = np.linspace(0.04, 0.28, 49)
    curve = summarise(gradient_curve(idata, X), prob=PROB)
    true = np.exp(log_gradient(X, la["mean"], tuple(la["curve"])))
    pub = published.gradient_scores(outcome="referral", year=STUDY_YEAR)
    fig, ax = new_figure()
    ax = ax[0, 0]
    flags = curve["extrapolated"] if "extrapolated" in curve else np.zeros(len(curve), dtype=bool)
    beyond = curve_with_extrapolation(ax, X, curve["mean"], curve["lower"], curve["upper"], flags,
                                      colour=PREDICTED, label=f"posterior mean and {PROB:.0%} interval")
    ax.plot(X, true, ":", color=OBSERVED, lw=2, label="simulated truth")
    ax.plot([la["mean"] + LA_LEVELS[k] for k in pub], list(pub.values()), "ks",
            label=f"published ({published.season(STUDY_YEAR)})")
    if beyond:
        ax.plot([], [], "--", color=PREDICTED, label="dashed: beyond the fitted LAs' deprivation range")
    ratio_axis(ax, "y")
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    ax.set_xlabel("LA deprivation (child-weighted mean income rate)")
    ax.set_ylabel("referral gradient score per 10 points (log scale)")
    ax.legend(fontsize=8)
    data = pd.DataFrame({"la_deprivation": X, "truth": true, "mean": curve["mean"].to_numpy(),
                         "lower": curve["lower"].to_numpy(), "upper": curve["upper"].to_numpy(),
                         "extrapolated": np.asarray(flags, dtype=bool)})
    return fig, data


# ------------------------------------------------------------------------------------------- page


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through the project's atomic writer (:func:`hierarchy.paths.atomic_path`)."""
    from hierarchy.paths import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _g(v: float) -> str:
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The replication table as text, one row per estimand (for the page and its Markdown)."""
    out = pd.DataFrame({
        "finding": table["finding"], "estimand": table["estimand"], "published": table["published"].astype(str),
        "truth": table["truth"].map(_g), "posterior mean": table["mean"].map(_g),
        f"{PROB:.0%} interval": [f"{_g(lo)} to {_g(hi)}" for lo, hi in zip(table["lower"], table["upper"],
                                                                          strict=True)],
        "covered": table["covered"].map({True: "yes", False: "NO"}),
        "P(published direction)": [f"{p:.2f} ({d})" if p is not None and not pd.isna(p) else ""
                                   for p, d in zip(table["p_direction"], table["direction"], strict=True)],
        "note": table["note"].fillna("").astype(str)})
    return out.reset_index(drop=True)


def replication_findings(table: pd.DataFrame) -> list:
    """One sentence per published finding: how many of its truths were recovered, with an example."""
    from hierarchy.reporting.page import Finding

    out = []
    for key, text in FINDINGS.items():
        rows = table[table["finding"] == key]
        if rows.empty:
            continue
        r = rows.iloc[0]
        sentence = (f"{text[0].upper()}{text[1:]}: {int(rows['covered'].sum())} of {len(rows)} simulated truths "
                    f"inside their {PROB:.0%} intervals (e.g. {r['estimand']}: {_g(r['mean'])}, interval "
                    f"{_g(r['lower'])} to {_g(r['upper'])}, truth {_g(r['truth'])})")
        d = rows[rows["p_direction"].notna()]
        if len(d):
            sentence += (f"; probability of the published direction ({d.iloc[0]['direction']}): "
                         f"{float(d.iloc[0]['p_direction']):.2f}")
        out.append(Finding(sentence + ".", "replication-table"))
    return out


def check_out(out: Path, figures=()) -> None:
    """Refuse an output path that is a file, or a folder holding files that are not a replication page."""
    out = Path(out)
    ours = {"replication.csv", "replication.md", "index.html", "truth.json", "data"} | \
        {f"{k}.{e}" for k in (*FIGURES, *figures) for e in ("png", "csv")}
    if out.exists():
        if not out.is_dir():
            raise HierarchyError(f"--out {out} is a file; give a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise HierarchyError(f"{out} holds files that are not a replication page ({', '.join(foreign[:5])}); "
                                 "give an empty or new folder")


CAPTIONS = {"forest": "Read across rows: each subgroup's gradient score per 10 points (posterior mean and 90% "
                      "interval) should cover its simulated truth (cross); squares are the published figures.",
            "curve": "Read the band against the dotted line: the referral gradient against LA deprivation, "
                     "posterior against the simulated truth, with the published points (log scale; dashed: "
                     "beyond the fitted LAs' deprivation range)."}


def write_page(table: pd.DataFrame, out: Path, *, meta: dict[str, Any],
               figures: dict[str, Any]) -> dict[str, Path]:
    """Write ``replication.csv``, the page (``index.html``, ``replication.md``) and figure PNG/CSV into ``out``.

    The page is the shared template's (:mod:`hierarchy.reporting.page`): a status line (how many
    truths the intervals cover), one finding per published result, the figures with captions, then
    the replication table, the truths not covered and the list of findings as appendices. Refuses
    to write into a folder that holds files other than its own outputs (nothing is written over
    that is not ours).
    """
    from hierarchy.reporting import page
    from hierarchy.reporting.figures import to_png

    out = Path(out)
    check_out(out, figures)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "replication.csv", "md": out / "replication.md", "html": out / "index.html"}
    _atomic_text(paths["csv"], table.to_csv(index=False))
    n_cov, n = int(table["covered"].sum()), len(table)
    ok = n > 0 and n_cov >= 0.8 * n
    status = (f"{n_cov} of {n} truths inside their {PROB:.0%} intervals (about {PROB:.0%} expected): "
              + ("the published findings are recovered." if ok else
                 "fewer than 80% covered, so the estimands are biased or the fits unconverged; do not rely on "
                 "this replication."))
    missed = [f"not covered: {r.finding} / {r.estimand} (truth {r.truth:.3g}, interval [{r.lower:.3g}, "
              f"{r.upper:.3g}]){': ' + r.note if r.note else ''}" for r in table[~table["covered"]].itertuples()]
    intro = (f"Each published finding of the social-gradient study ({published.season(STUDY_YEAR)}) is built into "
             "a simulation as its truth and recovered by fitting the shipped models: the published figure, its "
             f"value in the simulation, the posterior mean with a {PROB:.0%} equal-tailed interval, and for a "
             "published direction the posterior probability of it.",
             f"Geography: {meta['geography']}; {meta['settings']}; wall time {meta['wall_s']:.0f} s.")
    pngs = []
    for k, (fig, data) in figures.items():
        png = to_png(fig)
        _atomic_text(out / f"{k}.csv", data.to_csv(index=False))
        pngs.append(page.PageFigure(k, CAPTIONS.get(k, k.replace("_", " ") + "."), png))
        paths[k] = out / f"{k}.png"
    S = page.Section
    sections = [S("Replication table", "replication-table",
                  (f"One row per estimand; every number also in replication.csv. covered: the truth lies inside "
                   f"the {PROB:.0%} interval.",), table=display_table(table), csv="replication.csv"),
                S("Truths not covered", "not-covered", () if missed else ("None.",), tuple(missed),
                  warn_words=("not covered",)),
                S("Published findings replicated", "published-findings", (), tuple(FINDINGS.values()))]
    rendered = page.Page(title="Replication of the published social-gradient findings (simulated truth)",
                         status=status, status_ok=ok, intro=intro, findings=tuple(replication_findings(table)),
                         figures=tuple(pngs), sections=tuple(sections), figure_dir="")
    page.write_page(rendered, out, html_name="index.html", md_name="replication.md")
    return paths


# ------------------------------------------------------------------------------------------- main


FAST = {"n_la": 24, "lsoa_per_la": 25.0, "chains": 2, "tune": 250, "draws": 250}
FULL = {"chains": 4, "tune": 500, "draws": 500}


def replicate(out: Path, *, geo=None, fast: bool = False, seed: int = 0, year: int = 2019,
              analyses: tuple[str, ...] | None = None, chains: int | None = None, tune: int | None = None,
              draws: int | None = None, float32: bool | None = None,
              fit_fn: Callable[..., Any] | None = None, progress: Callable[[str], None] | None = None,
              write_tables: bool = False, batched: bool = True, method: str = "nuts") -> pd.DataFrame:
    """Simulate, fit every analysis and write the replication page into ``out``.

    Parameters
    ----------
    out : pathlib.Path
        Output folder (new, empty or an earlier replication page).
    geo : Geography, optional
        Default: the reference geography when found (a generated one of 151 LAs otherwise); with
        ``fast`` a small generated one (:data:`FAST`).
    fast : bool
        Small geography and short chains: a few minutes on 2 cores.
    analyses : tuple of str, optional
        Names of :data:`ANALYSES` to fit (default all).
    fit_fn : callable, optional
        ``fit_fn(spec, table, chains=, tune=, draws=, seed=, float32=)`` returning InferenceData;
        default :func:`fit_analysis`.
    write_tables : bool
        Also write each simulated table to ``out/data/{scenario}.parquet`` with the truth beside it
        (:func:`hierarchy.data.simulate.write`), to fit them with ``hierarchy fit``.
    batched : bool
        Fit the analyses whose designs agree (the stage outcomes of one table, where ``auto`` centres
        their LA effects alike) in one compiled program each (:func:`fit_all`); ignored with ``fit_fn``.
    method : {"nuts", "laplace"}
        ``laplace``: each analysis by the embedded Laplace mode, alone (models outside its regime by NUTS,
        said in the log; :func:`fit_all`).

    Returns
    -------
    pandas.DataFrame
        The replication table (:data:`COLUMNS`).
    """
    from hierarchy.data import findings, reference

    t0 = time.perf_counter()
    check_out(out)  # before hours of fitting, not after
    say = progress or (lambda s: None)
    if geo is None:
        geo = (reference.synthetic_geography(FAST["n_la"], seed=seed, lsoa_per_la=FAST["lsoa_per_la"]) if fast
               else reference.get_geography())
    settings = dict(FAST if fast else FULL)
    settings.update({k: v for k, v in (("chains", chains), ("tune", tune), ("draws", draws)) if v is not None})
    f32 = (not fast) if float32 is None else float32
    names = [a.name for a in ANALYSES]
    chosen = names if analyses is None else list(analyses)
    bad = [n for n in chosen if n not in names]
    if bad:
        raise HierarchyError(f"unknown analysis {', '.join(bad)}; choose from {', '.join(names)}")
    tables, truth = findings.simulate_findings(geo, year=year, seed=seed)
    say(f"simulated {len(tables)} tables on {geo.source} ({time.perf_counter() - t0:.0f} s)")
    fits, timings = fit_all([a for a in ANALYSES if a.name in chosen], tables, chains=settings["chains"],
                            tune=settings["tune"], draws=settings["draws"], seed=seed, float32=f32,
                            fit_fn=fit_fn, batched=batched, say=say, method=method)
    table = findings_rows(fits, tables, truth)
    figures = {"forest": plot_forest(table)}
    if "referral" in fits:
        figures["curve"] = plot_curve(fits["referral"], truth)
    meta = {"geography": geo.source, "wall_s": time.perf_counter() - t0,
            "settings": f"{settings['chains']} chains x ({settings['tune']} + {settings['draws']}), seed {seed}"
                        f"{', float32 rows' if f32 else ''}{', Laplace mode' if method == 'laplace' else ''}"}
    write_page(table, Path(out), meta=meta, figures=figures)
    if write_tables:
        from hierarchy.data.simulate import write

        for name, t in tables.items():
            write(t, truth, Path(out) / "data" / f"{name}.parquet")
    summary = {"truth": truth, "timings_s": timings, "batched": batched and fit_fn is None, **meta}
    _atomic_text(Path(out) / "truth.json", json.dumps(summary, indent=1, sort_keys=True, default=float) + "\n")
    say(f"wrote {out} ({meta['wall_s']:.0f} s)")
    return table


def main(args) -> int:
    """``hierarchy replicate``: see :func:`replicate`; exits 0 when the page is written."""
    from hierarchy.data import reference
    from hierarchy.inference.sampling import enable_compilation_cache, use_host_devices

    use_host_devices(args.chains or (FAST if args.fast else FULL)["chains"])
    enable_compilation_cache()
    geo = None
    if args.synthetic and not args.fast:
        geo = reference.synthetic_geography(args.n_la, seed=args.seed)
    elif not args.fast:
        geo = reference.get_geography(args.reference_dir)
    analyses = tuple(a.strip() for a in args.analyses.split(",") if a.strip()) or None
    table = replicate(args.out, geo=geo, fast=args.fast, seed=args.seed, year=args.year, analyses=analyses,
                      chains=args.chains, tune=args.tune, draws=args.draws, progress=print,
                      write_tables=args.tables, batched=getattr(args, "batched", True),
                      method=getattr(args, "method", "nuts"))
    print(f"{int(table['covered'].sum())} of {len(table)} truths covered; page: {Path(args.out) / 'index.html'}")
    return 0

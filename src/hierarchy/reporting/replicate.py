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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy import published, shipped
from hierarchy.errors import HierarchyError

PROB = 0.9
STUDY_YEAR = 2019
"""Census year of the study replicated (Children in Need census 2018-19): its published points."""
DEFAULT_PRIORS = "weakly_informative"  # a shipped prior set (hierarchy.shipped)


@dataclass(frozen=True)
class Analysis:
    """One fit: a scenario's table, a model file, and optionally a replaced outcome / row filter."""

    name: str
    scenario: str
    model: str
    outcome: str | None = None
    needs_positive: str | None = None  # keep rows where this column > 0 (an exposure that is a count)


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
COLUMNS = ["finding", "analysis", "estimand", "published", "scale", "truth", "mean", "lower", "upper",
           "covered", "direction", "p_direction", "note"]


# ------------------------------------------------------------------------------------------- fitting


def analysis_spec(a: Analysis):
    """The model spec of an analysis (its model file, the outcome replaced where it says so)."""
    from hierarchy.language.spec import load_spec

    path = shipped.resolve(a.model, "models")
    if not path.exists():
        raise HierarchyError(f"analysis '{a.name}': model file {path} not found")
    spec = load_spec(path)
    if a.outcome:
        spec = replace(spec, outcome=a.outcome, name=f"{spec.name}_{a.outcome}")
    return spec


def analysis_table(a: Analysis, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The rows an analysis fits (rows whose count exposure is 0 have no exposure and are left out)."""
    t = tables[a.scenario]
    if a.needs_positive:
        t = t[t[a.needs_positive] > 0].reset_index(drop=True)
    return t


def fit_analysis(spec, table: pd.DataFrame, *, priors=None, chains: int = 2, tune: int = 300,
                 draws: int = 300, seed: int = 0, float32: bool = False):
    """Fit ``spec`` to ``table`` with NumPyro NUTS; the InferenceData the estimands read."""
    from hierarchy.data import table as data_mod
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.results.fitfile import build_idata

    pset = priors if priors is not None else load_priors(shipped.resolve(DEFAULT_PRIORS, "priors"))
    design = build_design(table, spec)
    draws_ = fit(spec, pset, design, chains=chains, tune=tune, draws=draws, seed=seed, float32=float32)
    return build_idata(draws_, spec, pset, design, data_hash=data_mod.data_hash(table, **spec.hashed_columns),
                       data_source=f"simulated:{spec.name}")


# ------------------------------------------------------------------------------------------- batched fits


def _same(a: Any, b: Any) -> bool:
    """Whether two design values are equal: arrays element-wise (NaN equal to NaN), containers and
    dataclasses item by item."""
    import dataclasses

    if a is b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # strings and objects have no NaN
            return bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def batch_refusal(spec, design, spec0, design0, *, other: str | None = None) -> str | None:
    """Why a fit of ``spec`` to ``design`` cannot share one compiled program with a fit of ``spec0`` to
    ``design0`` (None: it can); ``other`` names the second fit in the reason (default ``spec0.name``).

    :func:`hierarchy.likelihood.jaxmodel.model_fn` closes over the spec and the design: everything but
    the counts. So the two may differ only in the outcome's name and its counts ``y``; their rows,
    LAs, centring constants, covariates and the LA-effect parameterisation that ``auto`` chooses from
    the counts (:func:`hierarchy.language.design.centring`) must agree.
    """
    import dataclasses

    from hierarchy.language.design import centring, describe_centring, stratum_level_weights
    from hierarchy.likelihood.model import la_effect_labels

    other = other or spec0.name
    a, b = spec.to_dict(), spec0.to_dict()
    keys = sorted(k for k in set(a) | set(b) if k not in ("name", "outcome") and a.get(k) != b.get(k))
    if keys:
        return f"its model differs from {other}'s in {', '.join(keys)}"
    if len(design.y) != len(design0.y):
        return f"it fits {len(design.y):,} rows, {other} {len(design0.y):,}"
    fields = [f.name for f in dataclasses.fields(design) if f.name not in ("y", "stage_names")
              and not _same(getattr(design, f.name), getattr(design0, f.name))]
    if len(design.stage_names) != len(design0.stage_names):
        fields.append("stage_names")
    if fields:
        return f"its design differs from {other}'s in {', '.join(fields)}"
    c, c0 = centring(spec, design), centring(spec0, design0)
    if not _same(c, c0):
        labels = la_effect_labels(spec)
        return (f"its LA effects are parameterised {describe_centring(c, labels)}, {other}'s "
                f"{describe_centring(c0, labels)} (chosen from the counts)")
    if not _same(stratum_level_weights(spec, design), stratum_level_weights(spec0, design0)):
        return f"its LA effects are drawn at other stratum weights than {other}'s (from the counts)"
    return None


def batch_groups(fits: dict[str, tuple[Any, Any]]) -> tuple[list[list[str]], dict[str, str]]:
    """Group fits that can share one compiled program (:func:`batch_refusal`).

    Parameters
    ----------
    fits : dict
        Name -> ``(spec, design)``, in fitting order.

    Returns
    -------
    (list of list of str, dict of str to str)
        The groups in order (each fit joins the first group whose first fit it agrees with), and for
        each fit that starts a group after the first, why it could not join the first group.
    """
    groups: list[list[str]] = []
    why: dict[str, str] = {}
    for name, (spec, design) in fits.items():
        for g in groups:
            if batch_refusal(spec, design, *fits[g[0]], other=g[0]) is None:
                g.append(name)
                break
        else:
            if groups:
                lead = groups[0][0]
                why[name] = f"{name} not batched with {lead}: " + str(batch_refusal(
                    spec, design, *fits[lead], other=lead))
            groups.append([name])
    return groups, why


def fit_analyses_batched(specs: dict[str, Any], tables: dict[str, pd.DataFrame], *, priors=None,
                         chains: int = 2, tune: int = 300, draws: int = 300, seed: int = 0,
                         float32: bool = False, vectorize: bool | None = None) -> dict[str, Any]:
    """Fit analyses whose designs agree (:func:`batch_refusal`) in one compiled program.

    The model function is the first analysis' and each fit's counts its own
    (:func:`hierarchy.inference.batch.fit_batch`: side by side on an accelerator, in turn on CPU);
    each fit's InferenceData is built as :func:`fit_analysis` builds it, from its own spec and design,
    with ``batch`` (the batch's size) and ``batched_with`` in its sampler settings.

    Parameters
    ----------
    specs, tables : dict
        Analysis name -> model spec and -> the table it fits.
    priors, chains, tune, draws, seed, float32
        As :func:`fit_analysis`.
    vectorize : bool, optional
        :func:`~hierarchy.inference.batch.fit_batch`'s (default: side by side on an accelerator only).

    Returns
    -------
    dict of str to arviz.InferenceData

    Raises
    ------
    HierarchyError
        When a design disagrees with the first (the reason from :func:`batch_refusal`).
    """
    import jax

    from hierarchy.data import table as data_mod
    from hierarchy.inference.batch import fit_batch
    from hierarchy.language.design import build_design, centring, describe_centring
    from hierarchy.language.priors import load_priors
    from hierarchy.likelihood.jaxmodel import hist_len_for, make_layout, model_data, model_fn
    from hierarchy.likelihood.model import la_effect_labels
    from hierarchy.results.fitfile import build_idata

    jax.config.update("jax_enable_x64", True)  # float32 means float32 rows, as a single fit
    pset = priors if priors is not None else load_priors(shipped.resolve(DEFAULT_PRIORS, "priors"))
    names = list(specs)
    designs = {n: build_design(tables[n], specs[n]) for n in names}
    first = names[0]
    for n in names[1:]:
        why = batch_refusal(specs[n], designs[n], specs[first], designs[first], other=first)
        if why:
            raise HierarchyError(f"analysis '{n}' cannot be fitted in one batch with '{first}': {why}; "
                                 "fit it alone (batched=False)")
    n_rows = len(designs[first].y)
    hist_len = hist_len_for(max(int(d.y.max(initial=0)) for d in designs.values()), n_rows)  # one shape
    layouts = {n: make_layout(d, hist_len=hist_len) for n, d in designs.items()}
    dtype = "float32" if float32 else "float64"
    res = fit_batch(model_fn(specs[first], pset, designs[first], layouts[first]),
                    [model_data(layouts[n], dtype) for n in names], chains=chains, tune=tune, draws=draws,
                    seed=seed, vectorize=vectorize, diagnostics=False)
    out = {}
    for b, n in enumerate(names):
        spec, design = specs[n], designs[n]
        d = res.draws(b, seed=seed, float32=float32, draws_requested=draws, max_draws=draws,
                      parameterisation=describe_centring(centring(spec, design), la_effect_labels(spec)),
                      batched_with=names)
        out[n] = build_idata(d, spec, pset, design, data_hash=data_mod.data_hash(tables[n], **spec.hashed_columns),
                             data_source=f"simulated:{spec.name}")
    return out


def fit_all(analyses: list[Analysis], tables: dict[str, pd.DataFrame], *, chains: int, tune: int, draws: int,
            seed: int = 0, float32: bool = False, fit_fn: Callable[..., Any] | None = None,
            batched: bool = True, refit: bool = False, say: Callable[[str], None] = lambda s: None
            ) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit every analysis: those whose designs agree in one batch each (``batched`` and the default
    ``fit_fn``; :func:`batch_groups`), the others alone with ``fit_fn`` (default :func:`fit_analysis`).

    A fit of a batch that misses the convergence bar (its diagnostics' status is not ``ok``) is kept, with
    a line in the log: a fit alone would run the same sampler for the same draws (the replication's fits do
    not sample on), so a second try only costs time (measured at ``--fast``: 508 s with refits against
    259 s without, every fit missing the bar either way). ``refit=True`` refits such a fit alone anyway.
    Returns the InferenceData and the seconds of each analysis (a batch's time shared equally among
    its fits, plus any refit).
    """
    from hierarchy.language.design import build_design
    from hierarchy.results.fitfile import provenance

    specs = {a.name: analysis_spec(a) for a in analyses}
    rows = {a.name: analysis_table(a, tables) for a in analyses}
    kw = dict(chains=chains, tune=tune, draws=draws, seed=seed, float32=float32)
    alone = fit_fn or fit_analysis
    if batched and fit_fn is None:
        groups, why = batch_groups({n: (s, build_design(rows[n], s)) for n, s in specs.items()})
        for reason in why.values():
            say(reason)
    else:
        groups = [[n] for n in specs]
    fits, timings = {}, {}
    for group in groups:
        t = time.perf_counter()
        if len(group) == 1:
            [n] = group
            fits[n] = alone(specs[n], rows[n], **kw)
            timings[n] = time.perf_counter() - t
            say(f"fitted {n} ({len(rows[n]):,} rows) in {timings[n]:.0f} s")
            continue
        fits.update(fit_analyses_batched({n: specs[n] for n in group}, {n: rows[n] for n in group}, **kw))
        share = (time.perf_counter() - t) / len(group)
        say(f"fitted {', '.join(group)} ({len(rows[group[0]]):,} rows each) in one batch in "
            f"{share * len(group):.0f} s")
        for n in group:
            timings[n] = share
            d = provenance(fits[n])["diagnostics"]
            if d["status"] != "ok" and not refit:
                say(f"{n}: the batched fit missed the convergence bar ({'; '.join(d['reasons'])}); kept (a fit "
                    "alone would run the same draws)")
            if refit and d["status"] != "ok":
                say(f"{n}: the batched fit missed the convergence bar ({'; '.join(d['reasons'])}); "
                    "refitting it alone")
                t = time.perf_counter()
                fits[n] = alone(specs[n], rows[n], **kw)
                timings[n] += time.perf_counter() - t
                say(f"fitted {n} alone in {time.perf_counter() - t:.0f} s")
    return fits, timings


# ------------------------------------------------------------------------------------------- estimands


def _flat(da: xr.DataArray) -> np.ndarray:
    dims = [d for d in ("chain", "draw", "sample") if d in da.dims]
    return da.transpose(*dims, ...).to_numpy().reshape(-1, *[da.sizes[d] for d in da.dims if d not in dims])


def _row(finding: str, analysis: str, estimand: str, published: str, scale: str, truth: float,
         draws: np.ndarray, *, direction: str = "", p: float | None = None, note: str = "") -> dict[str, Any]:
    draws = np.asarray(draws, dtype=float).ravel()
    lo, hi = np.quantile(draws, [(1 - PROB) / 2, (1 + PROB) / 2])
    return {"finding": finding, "analysis": analysis, "estimand": estimand, "published": published,
            "scale": scale, "truth": float(truth), "mean": float(draws.mean()), "lower": float(lo),
            "upper": float(hi), "covered": bool(lo <= truth <= hi), "direction": direction,
            "p_direction": None if p is None else float(p), "note": note}


def _levels(da: xr.DataArray, dim: str) -> dict[str, np.ndarray]:
    return {str(k): _flat(da.sel({dim: k})) for k in da[dim].to_numpy()}


def moderator_ratio(idata, col: str) -> np.ndarray:
    """Draws of the gradient ratio at ``col`` = 1 vs 0 for a ``w:col`` term, per 10 points.

    The one predictor is linear in ``w:col``, so this is ``exp(b_{w:col} * 10 points / scale)``.
    (:func:`hierarchy.results.estimands.moderated_gradients` gives the same for one such term, but fails with two:
    ``sel(row_term=...)`` keeps a scalar coordinate that ``xr.concat`` then finds in conflict.)
    """
    from hierarchy.results.estimands import TEN_POINTS
    from hierarchy.results.fit import as_fit

    spec = as_fit(idata).spec
    term = f"w:{col}"
    if term not in spec.row_terms:
        raise HierarchyError(f"the fit has no term {term}; its neighbourhood terms: {', '.join(spec.row_terms)}")
    b = idata.posterior["row_coef"].sel(row_term=term, drop=True)
    return _flat(np.exp(b * TEN_POINTS / spec.deprivation.scale))


def _stratum_rows(finding, analysis, g: dict[str, np.ndarray], truth: dict[str, float], published: dict,
                  top: str, bottom: str, *, what: str) -> list[dict[str, Any]]:
    """Subgroup gradients, the top / bottom contrast and the probability of the published order."""
    names = list(g)
    stack = np.stack([g[n] for n in names], axis=-1)
    rows = [_row(finding, analysis, f"gradient, {what}={n}", f"{published[n]:.2f}" if n in published
                 else "between (not published)", "per 10 points", truth[n], g[n]) for n in names]
    ratio = g[top] / g[bottom]
    rows.append(_row(finding, analysis, f"gradient ratio {top} / {bottom}",
                     f"{published[top] / published[bottom]:.2f}",
                     "ratio of gradient scores", truth[top] / truth[bottom], ratio,
                     direction=f"{top} steeper than {bottom}", p=(ratio > 1).mean()))
    p_top = (stack.argmax(-1) == names.index(top)).mean()
    p_bottom = (stack.argmin(-1) == names.index(bottom)).mean()
    rows[names.index(top)].update(direction=f"{top} steepest", p_direction=float(p_top))
    rows[names.index(bottom)].update(direction=f"{bottom} least steep", p_direction=float(p_bottom))
    return rows


def findings_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame], truth: dict[str, Any]
                  ) -> pd.DataFrame:
    """The replication table: one row per estimand of :data:`FINDINGS` (see the module docstring).

    Parameters
    ----------
    fits : dict
        Analysis name (:data:`ANALYSES`) to InferenceData.
    tables, truth
        From :func:`hierarchy.data.findings.simulate_findings`.
    """
    sc = truth["scenarios"]
    rows: list[dict[str, Any]] = []
    for part in (_stage_rows, _referral_rows, _age_sex_rows, _strata_rows, _rural_rows, _la_condition_rows,
                 _provision_rows):
        rows += part(fits, tables, sc)
    return pd.DataFrame(rows, columns=COLUMNS)


def _stage_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: headline and stage gradients, and their fall with LA deprivation."""
    from hierarchy.results import estimands as est

    stages = sc["base"]["simulate_truth"]["stages"]
    keys = {"10 points less": "gradient_10_less", "mean": "gradient_at_mean",
            "10 points more": "gradient_10_more"}
    rows: list[dict[str, Any]] = []
    for stage in ("referral", "s47", "cp_plan", "looked_after"):
        if stage not in fits:
            continue
        h = est.headline_gradients(fits[stage])
        lv = _levels(h, "la_level")
        t = stages[stage]
        if stage == "referral":
            for k, pub in (("mean", "1.62"), ("10 points less", "2.33"), ("10 points more", "1.39")):
                rows.append(_row("headline", stage, f"referral gradient, LA deprivation {k}", pub,
                                 "per 10 points", t[keys[k]], lv[k]))
        else:
            pub = "1.80" if stage == "cp_plan" else "simulated (not published)"
            rows.append(_row("stages", stage, f"{stage} gradient at mean LA deprivation", pub, "per 10 points",
                             t["gradient_at_mean"], lv["mean"]))
        ratio = lv["10 points less"] / lv["10 points more"]
        rows.append(_row("falls", stage, f"{stage}: gradient 10 points less / 10 points more deprived LA",
                         "> 1", "ratio of gradient scores", t["gradient_10_less"] / t["gradient_10_more"], ratio,
                         direction="falls as LA deprivation rises", p=(ratio > 1).mean()))
    return rows


def _referral_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                   sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: the range of LA gradients and the rates at the extremes."""
    from hierarchy.data.simulate import extreme_groups
    from hierarchy.results import estimands as est

    stages = sc["base"]["simulate_truth"]["stages"]
    rows: list[dict[str, Any]] = []
    if "referral" in fits:
        idata = fits["referral"]
        lag = _flat(est.la_gradients(idata))
        lo_t, hi_t = stages["referral"]["la_gradient_range"]
        note = "extreme LA gradients are shrunk towards the typical one; the range of posterior means is narrower"
        rows.append(_row("la_range", "referral", "lowest LA gradient score", "1.2", "per 10 points", lo_t,
                         lag.min(-1), note=note))
        rows.append(_row("la_range", "referral", "highest LA gradient score", "2.4", "per 10 points", hi_t,
                         lag.max(-1), note=note))
        yrep = est.posterior_predictive(idata, n_draws=200).to_numpy()
        base = tables["base"]
        x, expo = base["deprivation"].to_numpy(), base["exposure"].to_numpy(dtype=float)
        ext = sc["base"]["simulate_truth"]["extremes"]
        for name, mask in extreme_groups(x).items():
            pub = "about 100" if name == "least" else "more than 1,340"
            rate = 1e4 * yrep[:, mask].sum(-1) / expo[mask].sum()
            rows.append(_row("extremes", "referral", f"referral rate, {name} deprived neighbourhoods "
                             f"({ext[name]['definition']}, {ext[name]['neighbourhoods']} neighbourhoods)", pub,
                             "per 10,000 children", ext[name]["expected_rate"], rate,
                             note="expected rate in the simulation (calibrated to DfE LA totals, not to this "
                                  "figure); posterior predictive"))
    return rows


def _age_sex_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                  sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: gradients by sex and by year of age."""
    from hierarchy.results import estimands as est

    rows: list[dict[str, Any]] = []
    if "age_sex" in fits:
        idata, t = fits["age_sex"], sc["age_sex"]
        g = _levels(est.subgroup_gradients(idata), "stratum")
        for s in ("female", "male"):
            rows.append(_row("sex", "age_sex", f"gradient, sex={s} (mean age)", "no difference", "per 10 points",
                             t["gradient_by_sex"][s], g[s]))
        ratio = g["male"] / g["female"]
        rows.append(_row("sex", "age_sex", "gradient ratio male / female", "1 (no difference)",
                         "ratio of gradient scores", t["sex_gradient_ratio"], ratio,
                         direction="no difference: the interval covers 1",
                         p=float(np.quantile(ratio, 0.05) <= 1 <= np.quantile(ratio, 0.95))))
        per_year = moderator_ratio(idata, "age_c")
        rows.append(_row("age", "age_sex", "gradient ratio per year of age", "< 1 (falls with each year)",
                         "ratio of gradient scores", t["age_year_gradient"], per_year,
                         direction="younger steeper", p=(per_year < 1).mean(),
                         note="value simulated: the bands' 1.10 to 0.90 over 14.5 years"))
    return rows


def _strata_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                 sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: subgroup gradients by ethnicity, assessment factor, plan category."""
    from hierarchy.results import estimands as est

    rows: list[dict[str, Any]] = []
    for name, what, top, bottom in (("ethnicity", "ethnicity", "White", "Black"),
                                    ("assessment", "factor", "neglect", "physical_disability"),
                                    ("plan_category", "category", "neglect", "sexual_abuse")):
        if name in fits:
            g = _levels(est.subgroup_gradients(fits[name]), "stratum")
            t = sc[name]["gradient"]
            pub = {k: t[k] for k in sc[name]["published"]}
            rows += _stratum_rows(name, name, g, t, pub, top, bottom, what=what)
    return rows


def _rural_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: rural and sparsity gradient ratios."""
    rows: list[dict[str, Any]] = []
    if "rural" in fits:
        t = sc["rural"]
        for col, tv, label in (("rural", t["rural_gradient_ratio"], "rural / urban"),
                               ("sparsity", t["sparsity_gradient_per_sd"], "per SD sparser")):
            r = moderator_ratio(fits["rural"], col)
            rows.append(_row("rural", "rural", f"gradient ratio {label}", "> 1 (steeper)",
                             "ratio of gradient scores", tv, r, direction="steeper", p=(r > 1).mean(),
                             note="value simulated"))
    return rows


def _la_condition_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                       sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: LA provision covariates and Webb et al.'s contrast."""
    from hierarchy.language.design import z_of
    from hierarchy.likelihood import model
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    rows: list[dict[str, Any]] = []
    if "la_conditions" in fits:
        idata, t = fits["la_conditions"], sc["la_conditions"]
        spec = as_fit(idata).spec
        post, des = idata.posterior, provenance(idata)["design"]
        names = [str(c) for c in post["la_covariate"].to_numpy()]

        def log_grad(X: float, cov: dict[str, float]) -> xr.DataArray:
            z = float(z_of(X, des["X_mean"], spec))
            vec = xr.DataArray([cov.get(n, 0.0) for n in names], dims="la_covariate",
                               coords={"la_covariate": names})
            return (model.log_rate(post, spec, w=1.0, z=z, la_cov=vec)
                    - model.log_rate(post, spec, w=0.0, z=z, la_cov=vec))

        base = log_grad(des["X_mean"], {})
        for col, tv, label in (("la_expenditure", t["expenditure_gradient_per_sd"], "expenditure"),
                               ("la_workforce_stability", t["workforce_gradient_per_sd"], "workforce stability")):
            r = _flat(np.exp(log_grad(des["X_mean"], {col: 1.0}) - base))
            rows.append(_row("la_provision", "la_conditions", f"gradient ratio per SD of LA {label}",
                             "a little (near 1)", "ratio of gradient scores", tv, r,
                             direction="a little: within 0.9-1.1", p=((r > 0.9) & (r < 1.1)).mean(),
                             note="covariate and value simulated"))
        sd_x = float(idata.constant_data["la_deprivation"].to_numpy().std())
        lo = log_grad(des["X_mean"] - sd_x, {"la_inequality": 1.0})
        hi = log_grad(des["X_mean"] + sd_x, {"la_inequality": -1.0})
        webb = _flat(lo / hi)
        for label, draws_, tv in (("low-deprivation, high-inequality", lo, t["gradient_low_dep_high_ineq"]),
                                  ("high-deprivation, low-inequality", hi, t["gradient_high_dep_low_ineq"])):
            rows.append(_row("inequality", "la_conditions", f"gradient in a {label} LA (1 SD from the means)",
                             "(the ratio's parts)", "per 10 points", tv, _flat(np.exp(draws_))))
        rows.append(_row("inequality", "la_conditions", "log gradient, low-deprivation high-inequality LA / "
                         "high-deprivation low-inequality LA (each 1 SD from the mean)", "about 5",
                         "ratio of log gradients (per SD = per 10 points)", t["webb_ratio"], webb,
                         direction="stronger in low-deprivation, high-inequality LAs", p=(webb > 1).mean(),
                         note="inequality: 20:20 ratio of IoD2019 income rates"))
    return rows


def _provision_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                    sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: re-referrals and repeat plans in affluent LAs."""
    from hierarchy.results import estimands as est
    from hierarchy.results.fitfile import provenance

    rows: list[dict[str, Any]] = []
    for name, label in (("re_referral", "re-referrals per referral"), ("repeat_cp_plan", "repeat plans per plan")):
        if name not in fits:
            continue
        idata, t = fits[name], sc["base"]["provision"][name]
        x_mean = provenance(idata)["design"]["X_mean"]
        ii = _flat(est.inverse_intervention(idata, x=np.array([x_mean])))
        rows.append(_row("provision", name, f"{label}: typical LA 10 points less / more deprived, neighbourhood "
                         "at mean LA deprivation", "> 1 (highest in affluent LAs)", "rate ratio",
                         t["la_ratio_at_mean_x"], ii, direction="highest in affluent LAs", p=(ii > 1).mean(),
                         note="value simulated"))
        lv = _levels(est.headline_gradients(idata), "la_level")
        inter = lv["10 points less"] / lv["10 points more"]
        rows.append(_row("provision", name, f"{label}: gradient 10 points less / more deprived LA (interaction)",
                         "> 1 (deprived neighbourhoods of affluent LAs highest)", "ratio of gradient scores",
                         t["interaction_ratio"], inter, direction="steeper in affluent LAs", p=(inter > 1).mean(),
                         note="value simulated"))
    return rows


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
              write_tables: bool = False, batched: bool = True) -> pd.DataFrame:
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
                            fit_fn=fit_fn, batched=batched, say=say)
    table = findings_rows(fits, tables, truth)
    figures = {"forest": plot_forest(table)}
    if "referral" in fits:
        figures["curve"] = plot_curve(fits["referral"], truth)
    meta = {"geography": geo.source, "wall_s": time.perf_counter() - t0,
            "settings": f"{settings['chains']} chains x ({settings['tune']} + {settings['draws']}), seed {seed}"
                        f"{', float32 rows' if f32 else ''}"}
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
                      write_tables=args.tables, batched=getattr(args, "batched", True))
    print(f"{int(table['covered'].sum())} of {len(table)} truths covered; page: {Path(args.out) / 'index.html'}")
    return 0

"""Check a model file without fitting it: ``hierarchy check MODEL [--priors P] [--data D]``.

:func:`check_model` validates the model (and prior set), and describes it: the model as one
lme4/brms formula, every parameter it has with the prior it gets (by class, or the term's own
``[terms."..."]`` prior; :meth:`~hierarchy.language.priors.PriorSet.for_term`,
:meth:`~hierarchy.language.priors.PriorSet.group_sd`),
and, given data, a one-line prior predictive summary (:func:`hierarchy.results.compare_priors.prior_predictive`):
implied rates per 10,000 in the least and most deprived deciles, the share of neighbourhoods with
impossible rates, and the implied gradient score at mean LA deprivation. Nothing is fitted or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import shipped
from hierarchy.errors import HierarchyError
from hierarchy.language.priors import PriorSet, load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood import families


@dataclass
class ModelCheck:
    """What :func:`check_model` found: the model, its parameters and priors, the prior predictive line."""

    spec: ModelSpec
    priors: PriorSet
    model_path: str
    priors_path: str
    parameters: pd.DataFrame
    prior_predictive: str | None = None
    data_note: str | None = None
    notes: list[str] = field(default_factory=list)
    ml: pd.DataFrame | None = None
    ml_note: str | None = None

    def format(self) -> str:
        """The plain-text description printed by ``hierarchy check``."""
        s = self.spec
        lines = [f"model {s.name} ({self.model_path}): valid",
                 f"  formula: {s.formula_text}",
                 f"  family: {s.family}, {families.get(s.family).description}",
                 f"  deprivation: w = (x - {'X_la' if s.deprivation.centring == 'within_between' else 'mean x'})"
                 f" / {s.deprivation.scale:g}; LA deprivation z = "
                 + ("log(X / mean X)" if s.la_deprivation.transform == "log" else
                    f"(X - mean X) / {s.deprivation.scale:g}")
                 + ("" if s.la_deprivation.measure == "mean" else f" (X = column {s.la_deprivation.measure})"),
                 f"  LA effects: {', '.join(s.coefs)}; parameterisation {s.la.parameterisation}"
                 + (f"; stages {', '.join(s.stages)} ({s.la.stage_structure})" if s.stacked else "")]
        if s.description:
            lines.append(f"  {s.description}")
        lines.append(f"prior set {self.priors.name} ({self.priors_path}): valid")
        lines.append("parameters:")
        width = max(len(p) for p in self.parameters["parameter"])
        cw = max(len(c) for c in self.parameters["class"])
        pw = max(len(c) for c in self.parameters["prior"])
        for _, r in self.parameters.iterrows():
            lines.append(f"  {r['parameter'].ljust(width)}  {r['class'].ljust(cw)}  {r['prior'].ljust(pw)}"
                         + (f"  ({r['meaning']})" if r["meaning"] else ""))
        lines.extend(f"note: {n}" for n in self.notes)
        if self.data_note:
            lines.append(self.data_note)
        if self.prior_predictive:
            lines.append(self.prior_predictive)
        if self.ml is not None:
            lines.extend([self.ml_note or "", _ml_text(self.ml)])
        return "\n".join(lines)


def parameters(spec: ModelSpec, priors: PriorSet) -> pd.DataFrame:
    """The model's parameters with their prior class and prior.

    Parameters
    ----------
    spec : ModelSpec
    priors : PriorSet

    Returns
    -------
    pandas.DataFrame
        ``parameter`` (the fit's variable name, with its coordinate), ``class`` (prior group, or
        ``terms."t"`` for a term's own prior), ``prior``, ``meaning``.

    Raises
    ------
    SpecError
        When the prior set lacks a class the model needs, or has a per-term prior for a term the
        model lacks.
    """
    priors.check_terms(spec.row_terms)
    rows: list[tuple[str, str, str]] = []

    def add(name: str, group: str, meaning: str, prior=None) -> None:
        rows.append((name, group, str(prior if prior is not None else priors[group]), meaning))

    _fixed_parameters(spec, priors, add)
    _la_parameters(spec, add)
    _group_parameters(spec, priors, add)
    return pd.DataFrame(rows, columns=["parameter", "class", "prior", "meaning"])


def _fixed_parameters(spec: ModelSpec, priors: PriorSet, add) -> None:
    """:func:`parameters`' rows of the fixed effects: intercept, gradient, LA-level and row terms, strata."""
    per_stage = "[each stage]" if spec.stacked else ""
    add(f"intercept{per_stage}", "intercept",
        f"log rate per {exposure_unit(spec)[0]}, typical LA at mean LA deprivation, w = 0")
    if "gradient" in spec.coefs:
        add(f"gradient{per_stage}", "gradient", f"log rate ratio per {spec.deprivation.scale:g} of deprivation")
    if spec.la.between_effect:
        add(f"la_deprivation{per_stage}", "la_deprivation", "LA intercept per unit of z")
    if "gradient" in spec.coefs and spec.la.cross_level:
        add(f"cross_level{per_stage}", "cross_level", "LA gradient per unit of z")
    for c in spec.la.covariates:
        add(f"la_cov_intercept[{c}]", "la_covariates", "LA intercept per SD of the covariate")
        if "gradient" in spec.coefs:
            add(f"la_cov_gradient[{c}]", "la_covariates", "LA gradient per SD of the covariate")
    for t in spec.row_terms:
        own = t in priors.terms
        group = f'terms."{t}"' if own else ("interactions" if "w" in t.split(":") else "neighbourhood_covariates")
        add(f"row_coef[{t}]", group, "neighbourhood-level term", prior=priors.for_term(t))
    if spec.strata:
        add(f"stratum_intercept_offset[{'/'.join(spec.strata)}]", "stratum_effects",
            "log rate vs the reference stratum")
        if "gradient" in spec.coefs and spec.stratum_gradient:
            add(f"stratum_gradient_offset[{'/'.join(spec.strata)}]", "stratum_effects",
                "gradient vs the reference stratum")


def _la_parameters(spec: ModelSpec, add) -> None:
    """:func:`parameters`' rows of the LA effects: SDs, correlation, the anchored stages' loadings."""
    effects = ([f"{s}:{c}" for s in spec.stages for c in spec.coefs] if spec.stacked and not spec.anchored
               else list(spec.coefs))
    for e in effects:
        add(f"la_sd[{e}]", "la_sd", "SD of LA effects" + (" (first stage)" if spec.anchored else ""))
    if len(effects) > 1:
        add("la_corr", "la_corr", f"LKJ correlation of the {len(effects)} LA effects")
    if spec.anchored:
        for s in spec.stages[1:]:
            for c in spec.coefs:
                add(f"la_loading[{s}:{c}]", "la_loading", "how the stage's LA effect follows the first stage's")
                add(f"la_stage_sd[{s}:{c}]", "la_stage_sd", "SD of the stage's own LA deviations")


def _group_parameters(spec: ModelSpec, priors: PriorSet, add) -> None:
    """:func:`parameters`' rows of the other groups, the spatial term and the family's own parameters."""
    per_stage = "[each stage]" if spec.stacked else ""
    if spec.msoa.random_intercept:
        add("msoa_sd", "msoa_sd", "SD of MSOA intercepts")
    for g, slope in spec.groups:
        group = f"{g}_sd" if f"{g}_sd" in priors.priors else "group_sd"
        for c in (("intercept", "gradient") if slope else ("intercept",)):
            add(f"{g}_sd" + (f"[{c}]" if slope else ""), group, f"SD of {g} {c}s", prior=priors.group_sd(g))
    if getattr(spec, "spatial", None):  # the term's own meanings (hierarchy.likelihood.spatial)
        from hierarchy.likelihood.parameters import BY_NAME

        for name in ("spatial_sd", "spatial_mix"):
            add(name, BY_NAME[name].prior_group, BY_NAME[name].meaning)
    for r in families.get(spec.family).parameters:  # the family's own (NB dispersion, zi, obs_sd...)
        if r["role"] == "hyper":
            add(r["name"] + (per_stage if r.get("per_stage") else ""), r["prior_group"], r["meaning"])


def check_model(model: str | os.PathLike, priors: str | os.PathLike | None = None, *,
                data: str | os.PathLike | None = None, columns: str | os.PathLike | None = None,
                draws: int = 200, seed: int = 0, ml: bool = False,
                fit: str | os.PathLike | None = None) -> ModelCheck:
    """Validate a model (and prior set) without fitting, and describe it.

    Parameters
    ----------
    model : path or str
        A model file or a shipped model's name.
    priors : path or str, optional
        A prior set file or a shipped set's name (default: the default set).
    data : path, optional
        A neighbourhood table: checked against the model's columns, and used for a one-line prior
        predictive summary (its counts are not read).
    columns : path, optional
        Column map of ``data``.
    draws : int
        Prior predictive draws.
    seed : int
        Seed of the prior draws.
    ml : bool
        Also fit ``data`` by Laplace maximum likelihood (reads its counts).
    fit : path, optional
        With ``ml``: a fit file of this model and data, whose posterior is put beside the estimates.

    Returns
    -------
    ModelCheck
        ``.format()`` gives the text ``hierarchy check`` prints.

    Raises
    ------
    HierarchyError
        The model or prior set is invalid, the set lacks a prior the model needs, the data lack
        a column the model reads, ``ml`` without data or for a model outside the Laplace regime, or
        ``fit`` without ``ml`` or of another model or data.
    DataValidationError
        The data fail validation for this model (its counts, strata, row keys and exposure, which must
        be above 0 in every row); the report names the rows and the command that sets them aside.
    """
    model_path = shipped.resolve(model, "models")
    priors_path = shipped.resolve(priors or shipped.DEFAULT_PRIORS, "priors")
    spec, pset = load_spec(model_path), load_priors(priors_path)
    result = ModelCheck(spec=spec, priors=pset, model_path=str(model_path), priors_path=str(priors_path),
                        parameters=parameters(spec, pset))
    if (ml or fit is not None) and data is None:
        raise HierarchyError("check --ml fits the model to a table: give it with --data")
    if fit is not None and not ml:
        raise HierarchyError(f"--fit {fit} is put beside the maximum likelihood estimates: add --ml")
    if data is not None:
        result.prior_predictive, result.data_note = _prior_line(spec, pset, data, columns, draws, seed,
                                                                model=str(model))
    if ml:
        result.ml, result.ml_note = ml_check(spec, pset, data, columns, fit=fit, model=str(model))
    return result


def ml_check(spec: ModelSpec, pset: PriorSet, data: Any, columns: Any = None, *, fit: Any = None,
             model: str | None = None) -> tuple[pd.DataFrame, str]:
    """Laplace maximum likelihood of ``spec`` on ``data``, beside the posterior of ``fit`` when given.

    Returns a table (``parameter``, ``ml``, ``ml_se``; with a fit also ``posterior_mean``, ``posterior_sd``
    and ``difference_in_sd`` = (ML - mean) / SD) and a line saying how the fit went.
    """
    from hierarchy.data import table as data_mod
    from hierarchy.inference.ml import fit_ml
    from hierarchy.language.design import build_design

    table = data_mod.load(data, columns=columns, model=model, **data_mod.model_columns(spec))
    res = fit_ml(spec, pset, build_design(table, spec))
    out = res.table().rename(columns={"estimate": "ml", "se": "ml_se"})
    status = "converged" if res.converged else f"NOT converged ({res.message})"
    note = (f"maximum likelihood (Laplace over the LA effects, as glmmTMB): {status}, log marginal "
            f"{res.log_marginal:,.1f}, {res.seconds:.1f} s")
    if fit is None:
        return out, note
    from hierarchy.results.fitfile import load_fit

    post = load_fit(fit, model=spec, data_hash=data_mod.data_hash(table, **spec.hashed_columns)).posterior
    means, sds = [], []
    for label in out["parameter"]:
        draws = _posterior_draws(post, label)
        means.append(np.nan if draws is None else float(draws.mean()))
        sds.append(np.nan if draws is None else float(draws.std()))
    out["posterior_mean"], out["posterior_sd"] = means, sds
    out["difference_in_sd"] = (out["ml"] - out["posterior_mean"]) / out["posterior_sd"]
    return out, note + f"; posterior of {fit} beside it"


def _posterior_draws(post: Any, label: str):
    """Draws of ``name``, ``name[i]`` or ``name[i,j]`` from a posterior Dataset (None if absent)."""
    name, _, index = label.partition("[")
    if name not in post:
        return None
    da = post[name].stack(sample=("chain", "draw")).transpose("sample", ...)
    idx = tuple(int(i) for i in index.rstrip("]").split(",")) if index else ()
    return da.values[(slice(None), *idx)]


def _ml_text(t: pd.DataFrame) -> str:
    """The ML table as aligned text lines."""
    width = max(len(p) for p in t["parameter"])
    has_post = "posterior_mean" in t
    head = f"  {'parameter'.ljust(width)}  {'ML':>9}  {'(SE)':>9}" + (
        f"  {'posterior':>9}  {'(SD)':>9}  {'ML - mean':>10}" if has_post else "")
    rows = [head]
    for _, r in t.iterrows():
        line = f"  {r['parameter'].ljust(width)}  {r['ml']:9.4f}  ({r['ml_se']:7.4f})"
        if has_post:
            line += (f"  {r['posterior_mean']:9.4f}  ({r['posterior_sd']:7.4f})  {r['difference_in_sd']:+7.2f} SD"
                     if np.isfinite(r["posterior_mean"]) else "  (not in the fit)")
        rows.append(line)
    return "\n".join(rows)


def _prior_line(spec: ModelSpec, pset: PriorSet, data: Any, columns: Any, draws: int, seed: int,
                model: str | None = None) -> tuple[str, str]:
    import jax

    from hierarchy.data import table as data_mod
    from hierarchy.language.design import build_design
    from hierarchy.results.compare_priors import prior_predictive

    jax.config.update("jax_enable_x64", True)
    table = data_mod.load(data, columns=columns, model=model, **data_mod.model_columns(spec))
    design = build_design(table, spec)
    pp = prior_predictive(spec, pset, design, draws=draws, seed=seed)
    d = pp.deciles
    first, last = d.iloc[0], d.iloc[-1]
    g = pp.gradients
    g = g[g["la_level"] == "mean"].iloc[0] if "mean" in set(g["la_level"]) else None
    grad = (f"; gradient score at mean LA deprivation {g['median']:.2g} ({g['lower']:.2g} to {g['upper']:.2g})"
            if g is not None else "")
    note = (f"data {data}: {len(table):,} rows, {design.n_la} LAs; the model's columns are all there"
            + (f" (column map {columns})" if columns else ""))
    per = exposure_unit(spec)[1]
    line = (f"prior predictive ({draws} draws, {pset.name}): {spec.stages[0].replace('_', ' ')} rate per "
            f"10,000 {per} in decile 1 {_big(first['rate_median'])} ({_big(first['rate_lower'])} to "
            f"{_big(first['rate_upper'])}), decile 10 {_big(last['rate_median'])} ({_big(last['rate_lower'])} "
            f"to {_big(last['rate_upper'])}); {100 * pp.impossible_share:.2f}% of neighbourhoods above "
            f"10,000 per 10,000 {per} (impossible){grad}")
    return line, note


def exposure_unit(spec: ModelSpec) -> tuple[str, str]:
    """What a model's rate is per, singular and plural: ``("child", "children")`` for the children
    column, else the exposure column's own name (``("referral", "referrals")`` for a re-referrals per
    referral model)."""
    if spec.exposure == "exposure":
        return "child", "children"
    name = spec.exposure.replace("_", " ")
    return name, name if name.endswith("s") else f"{name}s"


def _big(v: float) -> str:
    return f"{v:,.0f}" if abs(v) < 1e6 else f"{v:.1e}"

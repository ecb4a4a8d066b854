"""Comparing prior sets: ``hierarchy compare-priors``.

:func:`compare_priors` fits one model under several prior sets and puts side by side

* prior predictive checks in the units of the field (:func:`prior_predictive`): the referral
  rate per 10,000 children that each prior implies for the data's neighbourhoods, by national
  deprivation decile (median and 90% interval over prior draws; rates ``exp(eta)`` without the
  count noise), the share of neighbourhoods whose implied rate exceeds 10,000 per 10,000 (more
  referrals than children: impossible) and the implied gradient scores of a typical LA at mean
  LA deprivation and 10 points less / more;
* the headline estimands under each prior (gradient scores at mean LA deprivation and 10 points
  less / more), with how far their posterior means move between prior sets, as a table and a
  forest plot;
* power-scaling prior sensitivity (:func:`power_scaling`, Kallioinen et al. 2024 via
  :func:`arviz.psens`) of every hyperparameter and headline estimand, with prior-sensitive
  parameters and prior-data conflict flagged in plain words.

Published figures (:mod:`hierarchy.published`, one table with sources) appear only beside the
estimand they describe: the same outcome, LA level, scale and census year. The year is the data's
(:func:`data_year`: a single ``year`` column value, or the simulator's truth file beside the data);
when it is not known, or the table has nothing for that outcome and year, none is shown and the
page says why.

Fits are saved in ``--fits-dir`` and reused when a saved fit has the same model, prior set and
data hashes (:func:`find_fit`); missing fits run on Dask (:mod:`hierarchy.inference.sweep`).
The output folder gets ``index.html`` (self-contained, figures embedded), ``index.md`` (with the
figures as PNG files beside it) and CSV tables.

Worked example (national simulated data, as in :mod:`hierarchy.results.compare_models`)::

    hierarchy compare-priors --data out/national_2019.parquet \
        --model models/inverse_intervention_nb_log.toml \
        --priors weakly_informative vague informative_cwip regularising \
        --chains 2 --tune 500 --draws 500 --out out/priors

Measured on the same data: posterior means of the three headline gradient scores move by 0.020
(10 points less, 2.27-2.29), 0.001 (mean, 1.628-1.629) and 0.004 (10 points more, 1.396-1.400)
between the four shipped sets, at most 0.3 posterior SD; in the prior, 49% of neighbourhoods have
an impossible rate under ``vague``, 0.98% under ``weakly_informative``, 0.29% under
``regularising`` and 0.08% under ``informative_cwip``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.ticker import FixedLocator, NullFormatter

from hierarchy import published, shipped
from hierarchy.config import config_hash, did_you_mean
from hierarchy.data import table as data_mod
from hierarchy.errors import FitFileError, HierarchyError
from hierarchy.inference.sweep import FitJob, run_jobs
from hierarchy.language.design import Design, build_design, z_of
from hierarchy.language.priors import PriorSet, load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.likelihood.model import HYPERPARAMETERS, STAGE_VARS, typical_gradient
from hierarchy.likelihood.predictor import ROW_PARAMS, design_rows, group_params, predictor_draws
from hierarchy.reporting.figures import new_figure, to_png
from hierarchy.reporting.report import bullets, format_columns, write_pages
from hierarchy.results.compare_models import loglik_draws
from hierarchy.results.estimands import LA_LEVELS, deciles_of, headline_gradients, la_levels, summarise
from hierarchy.results.fitfile import add_log_likelihood, load_fit, provenance

IMPOSSIBLE_RATE = 10_000.0
"""Rate per 10,000 children above which a neighbourhood has more referrals than children."""
VISIBLE_IMPOSSIBLE = 0.05
"""Prior share of neighbourhoods with impossible rates from which a prior is said to put
*visible* mass on impossible rates (and the page warns)."""
NEGLIGIBLE_IMPOSSIBLE = 0.01
"""Below this share the prior mass on impossible rates is called negligible."""
SENSITIVITY_THRESHOLD = 0.05
"""Power-scaling sensitivity above which a quantity is called sensitive (Kallioinen et al.)."""
GRADIENT_SCALE = "per 10 points"
PUBLISHED = {level: published.value(outcome="referral", estimand="gradient_score", la_level=level,
                                    scale=GRADIENT_SCALE, year=2019) for level in LA_LEVELS}
"""Referral gradient scores of 2018-19, as read from :mod:`hierarchy.published` (kept for notebooks:
the pages look figures up by outcome and year with :func:`published_gradient`)."""
ESTIMAND_LABELS = {"10 points less": "gradient score, LA 10 points less deprived",
                   "mean": "gradient score at mean LA deprivation",
                   "10 points more": "gradient score, LA 10 points more deprived"}
PRIORS_DIR = Path("priors")
CONFLICT = "prior-data conflict"
PRIOR_DOMINATES = "prior dominates (weak likelihood)"

__all__ = ["CONFLICT", "ESTIMAND_LABELS", "IMPOSSIBLE_RATE", "NEGLIGIBLE_IMPOSSIBLE", "PRIORS_DIR",
           "PRIOR_DOMINATES", "PUBLISHED", "SENSITIVITY_THRESHOLD", "VISIBLE_IMPOSSIBLE",
           "PriorComparison", "PriorPredictive", "compare_priors", "data_year", "find_fit", "plot_forest",
           "plot_prior_predictive", "power_scaling", "prior_draws", "prior_predictive", "published_gradient",
           "read_provenance", "resolve_prior_path", "sensitivity_findings"]


# ------------------------------------------------------------------------------ published figures


def published_gradient(outcome: str, year: int | None, level: str) -> float:
    """The published typical-LA gradient score (per 10 points) for ``outcome`` in ``year`` at LA
    level ``level``, or NaN when the table has none (or the year is unknown)."""
    v = published.value(outcome=outcome, estimand="gradient_score", la_level=level, scale=GRADIENT_SCALE,
                        year=year)
    return np.nan if v is None else v


data_year = published.data_year  # the census year of a table (one lookup for every page)


def published_note(outcome: str, year: int | None) -> str:
    """A sentence on which published figures the pages show for ``outcome`` and ``year``."""
    return published.note(outcome=outcome, year=year, estimands=("gradient_score", "la_rate_range"))


# ------------------------------------------------------------------------------ prior predictive


@dataclass
class PriorPredictive:
    """Prior predictive check of one prior set, in rates per 10,000 children.

    Attributes
    ----------
    prior_set : str
        Name of the prior set.
    deciles : pandas.DataFrame
        One row per national decile of the data's neighbourhoods (1 = least deprived):
        ``decile``, ``deprivation_min``, ``deprivation_max``, ``neighbourhoods``, ``children``,
        ``rate_median``, ``rate_lower``, ``rate_upper`` (children-weighted implied rate of the
        decile, per 10,000; median and ``prob`` interval over prior draws),
        ``impossible_share`` (mean share of the decile's neighbourhoods above 10,000), ``prob``.
    impossible_share : float
        Mean over prior draws of the share of neighbourhoods whose implied rate exceeds
        10,000 per 10,000: the prior probability that a neighbourhood has more referrals than
        children.
    impossible_median : float
        Median over prior draws of that share (what a typical prior draw implies).
    impossible_any : float
        Share of prior draws with at least one impossible neighbourhood.
    gradients : pandas.DataFrame
        Implied gradient scores of a typical LA: ``la_level``, ``la_deprivation``,
        ``median``, ``lower``, ``upper``, ``p_below_1`` (prior probability of a reversed
        gradient), ``published``, ``prob``.
    n_draws : int
        Prior draws used.
    outcome : str
        The (first) modelled outcome.
    year : int or None
        Census year of the data, for published figures (None: unknown, none shown).
    """

    prior_set: str
    deciles: pd.DataFrame
    impossible_share: float
    impossible_median: float
    impossible_any: float
    gradients: pd.DataFrame
    n_draws: int
    outcome: str = "referral"
    year: int | None = None

    def verdict(self) -> str:
        """One plain sentence on the prior mass on impossible rates."""
        share = self.impossible_share
        where = self.deciles.loc[self.deciles["impossible_share"].idxmax(), "decile"]
        text = (f"{self.prior_set}: in the prior, {_pct(share)} of neighbourhoods have an implied "
                f"rate above 10,000 per 10,000 children (more referrals than children: "
                f"impossible)")
        if share >= VISIBLE_IMPOSSIBLE:
            return (f"{text}. This prior puts visible mass on impossible rates; it is not weakly "
                    f"informative in the units of the field.")
        if share >= NEGLIGIBLE_IMPOSSIBLE:
            return (f"{text}, most often in deprivation decile {where} (1 = least deprived): a "
                    "little prior mass on impossible rates, small next to the data but worth "
                    "tightening if the prior is meant to exclude them.")
        return f"{text}: negligible."


def prior_draws(spec: ModelSpec, priors: PriorSet, design: Design, *, draws: int = 1000,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Draws of every parameter from the prior, by NumPyro ``Predictive`` on the model function.

    Parameters
    ----------
    spec, priors, design
        The model, prior set and data design.
    draws : int
        Number of prior draws.
    seed : int
        Seed of the JAX random key.

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter name -> array with a leading draw axis (includes ``la_coef``).
    """
    import jax
    from numpyro.infer import Predictive

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    layout = make_layout(design)
    model = model_fn(spec, priors, design, layout)
    sample = Predictive(model, num_samples=draws)(jax.random.PRNGKey(seed), model_data(layout))
    return {k: np.asarray(v) for k, v in sample.items() if k != spec.outcome}


def _log_rates(spec: ModelSpec, design: Design, draws: dict[str, np.ndarray], sl: slice) -> np.ndarray:
    """Log rate per child of every row for the draws in ``sl`` (``exp`` gives the rate): the one
    predictor without the exposure."""
    rows = design_rows(design) | {"log_exposure": np.zeros(len(design.y))}
    keys = ROW_PARAMS + group_params(design.group_names)
    return predictor_draws(rows, {k: v[sl] for k, v in draws.items() if k in keys})


def prior_predictive(spec: ModelSpec, priors: PriorSet, design: Design, *, draws: int = 1000,
                     seed: int = 0, prob: float = 0.9, chunk: int = 100,
                     year: int | None = None) -> PriorPredictive:
    """Prior predictive check of ``priors`` for ``spec`` on the neighbourhoods of ``design``.

    Parameters
    ----------
    spec : ModelSpec
        Model specification.
    priors : PriorSet
        Prior set to check.
    design : Design
        The data's design (exposures, deprivation, LAs); outcome counts are not used.
    draws : int
        Prior draws.
    seed : int
        Random seed.
    prob : float
        Interval probability.
    chunk : int
        Draws processed at once (memory: ``chunk x rows`` floats).
    year : int, optional
        Census year of the data: published gradient scores for the outcome and year are put beside
        the implied ones (none when None).

    Returns
    -------
    PriorPredictive
    """
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be in (0, 1), got {prob}")
    pd_draws = prior_draws(spec, priors, design, draws=draws, seed=seed)
    codes = np.array([s.split("|", 1)[0] for s in design.row_ids.astype(str)])
    dec = deciles_of(design.x, codes)
    onehot = (dec[:, None] == np.arange(1, 11)[None, :]).astype(float)
    expo = np.exp(design.log_exposure)
    children = expo @ onehot
    rows_per = onehot.sum(0)
    dec_rate, dec_imp, share = [], [], []
    log_limit = np.log(IMPOSSIBLE_RATE / 1e4)
    for s in range(0, draws, chunk):
        eta = _log_rates(spec, design, pd_draws, slice(s, s + chunk))
        with np.errstate(over="ignore", invalid="ignore"):
            dec_rate.append(1e4 * (np.exp(eta) * expo) @ onehot / children)
        bad = (eta > log_limit).astype(float)
        dec_imp.append(bad @ onehot / rows_per)
        share.append(bad.mean(1))
    rate = np.concatenate(dec_rate)
    imp = np.concatenate(dec_imp)
    share_arr = np.concatenate(share)
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    deciles = pd.DataFrame({
        "decile": np.arange(1, 11),
        "deprivation_min": [design.x[dec == k].min() for k in range(1, 11)],
        "deprivation_max": [design.x[dec == k].max() for k in range(1, 11)],
        "neighbourhoods": [len(set(codes[dec == k])) for k in range(1, 11)],
        "children": children,
        "rate_median": np.nanquantile(rate, 0.5, axis=0),
        "rate_lower": np.nanquantile(rate, lo, axis=0),
        "rate_upper": np.nanquantile(rate, hi, axis=0),
        "impossible_share": imp.mean(0), "prob": prob})
    gradients = _prior_gradients(spec, design, pd_draws, prob=prob, year=year)
    return PriorPredictive(prior_set=priors.name, deciles=deciles,
                           impossible_share=float(share_arr.mean()),
                           impossible_median=float(np.median(share_arr)),
                           impossible_any=float((share_arr > 0).mean()), gradients=gradients,
                           n_draws=draws, outcome=spec.stages[0], year=year)


def _prior_gradients(spec: ModelSpec, design: Design, draws: dict[str, np.ndarray], *,
                     prob: float, year: int | None, outcome: str | None = None) -> pd.DataFrame:
    """Implied gradient scores of a typical LA at mean LA deprivation and -/+ 10 points."""
    names = tuple(n for n in STAGE_VARS if n != "dispersion")  # the typical LA's coefficients
    post = xr.Dataset({k: (("chain", "draw", "stage")[:draws[k].ndim + 1], draws[k][None])
                       for k in names if k in draws})
    if "stage" in post.dims:  # stacked: one set of rows per stage
        return pd.concat([_prior_gradients(spec, design, {k: v[:, i] if v.ndim == 2 else v
                                                          for k, v in draws.items() if k in names}, prob=prob,
                                           year=year, outcome=stage)
                          .assign(stage=stage) for i, stage in enumerate(spec.stages)], ignore_index=True)
    step = 0.1 / spec.deprivation.scale
    rows = []
    for level, off in LA_LEVELS.items():
        X = design.X_mean + off
        if X <= 0 and spec.la_deprivation.transform == "log":
            continue
        z = float(z_of(X, design.X_mean, spec))
        if "gradient" in post:
            score = np.exp(step * typical_gradient(post, spec, z=z)).to_numpy().ravel()
        else:
            score = np.ones(post.sizes["draw"])
        lo, med, hi = np.quantile(score, [(1 - prob) / 2, 0.5, (1 + prob) / 2])
        rows.append({"la_level": level, "la_deprivation": X, "median": med, "lower": lo,
                     "upper": hi, "p_below_1": float((score < 1).mean()),
                     "published": published_gradient(outcome or spec.stages[0], year, level), "prob": prob})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ sensitivity


def _hyper_posterior(idata) -> xr.Dataset:
    """Hyperparameters of a fit as a Dataset; ``la_corr`` as its off-diagonal correlation."""
    post = idata.posterior
    out = {}
    for name in HYPERPARAMETERS:
        if name not in post:
            continue
        da = post[name]
        if name == "la_corr":
            da = da.isel(coef=0, coef_=1, drop=True)
        out[name] = da
    return xr.Dataset(out)


def headline_by_level(idata) -> xr.DataArray:
    """The headline gradient scores (:func:`hierarchy.results.estimands.headline_gradients`) on dim
    ``la_level``, also for a model without LA-level terms.

    Without them the typical LA's gradient is the same at every LA deprivation level and the
    headline draws have no ``la_level`` dim; they are repeated at each level (with its
    ``la_deprivation``), so that every prior set's table has the same rows and each level is set
    beside its published figure.
    """
    head = headline_gradients(idata)
    if "la_level" in head.dims:
        return head
    levels = la_levels(idata)
    out = head.expand_dims(la_level=levels["la_level"].to_numpy(), axis=-1)
    return out.assign_coords(la_deprivation=("la_level", levels["la_deprivation"].to_numpy()))


def power_scaling(idata, *, threshold: float = SENSITIVITY_THRESHOLD, delta: float = 0.01,
                  estimands: bool = True) -> pd.DataFrame:
    """Power-scaling prior and likelihood sensitivity of every hyperparameter of a fit.

    Uses :func:`arviz.psens` (cumulative Jensen-Shannon distance of the posterior when the prior,
    or the likelihood, is raised to the power ``1 -/+ delta``, by Pareto-smoothed importance
    weights; Kallioinen et al. 2024). The prior is the joint prior of the hyperparameters (the
    fit's ``log_prior`` group); the likelihood is the sum of the pointwise ``log_likelihood``.

    ``arviz.psens`` needs the posterior, log prior and log likelihood to hold the same draws; a
    fit whose log-likelihood was thinned (``log_likelihood_thinned_by > 1``) is therefore
    restricted to the draws the log-likelihood was evaluated at, for both components.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit with ``posterior``, ``log_prior`` and ``log_likelihood`` groups.
    threshold : float
        Sensitivity above which a quantity is flagged (0.05 by convention).
    delta : float
        Power-scaling perturbation.
    estimands : bool
        Also report the headline gradient scores (:func:`hierarchy.results.estimands.headline_gradients`).

    Returns
    -------
    pandas.DataFrame
        ``parameter``, ``prior`` and ``likelihood`` sensitivity, ``diagnosis``
        (``"prior-data conflict"``, ``"prior dominates (weak likelihood)"`` or ``""``) and
        ``explanation`` (a few plain words), one row per scalar quantity; ``draws`` used.
        :func:`sensitivity_findings` turns it into sentences.
    """
    import arviz as az

    missing = [g for g in ("log_prior", "log_likelihood") if g not in idata.groups()]
    if missing:
        raise FitFileError(f"power-scaling sensitivity needs the {' and '.join(missing)} "
                           "group(s), which this fit lacks; refit with hierarchy fit")
    pos = loglik_draws(idata)
    post = _hyper_posterior(idata)
    if estimands and "gradient" in post:
        head = headline_gradients(idata)
        if "la_level" not in head.dims:  # no LA-level terms: one gradient at every LA level
            post["gradient score (every LA level)"] = head.reset_coords(drop=True)
        for level in head["la_level"].to_numpy() if "la_level" in head.dims else ():
            post[f"gradient score ({level})"] = head.sel(la_level=level, drop=True).reset_coords(
                drop=True)
    post = post.isel(draw=pos)
    draw = np.arange(len(pos))
    post = post.assign_coords(draw=draw)
    lp = idata.log_prior.isel(draw=pos).assign_coords(chain=post["chain"], draw=draw)
    ll = idata.log_likelihood.assign_coords(chain=post["chain"], draw=draw)
    sub = az.InferenceData(posterior=post, log_prior=lp, log_likelihood=ll)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = az.psens(sub, component="prior", delta=delta)
        lik = az.psens(sub, component="likelihood", delta=delta)
    rows = []
    for name in prior.data_vars:
        p_da, l_da = prior[name], lik[name]
        if p_da.ndim == 0:
            items = [(name, float(p_da), float(l_da))]
        else:
            dim = p_da.dims[0]
            items = [(f"{name}[{c}]", float(p_da.sel({dim: c})), float(l_da.sel({dim: c})))
                     for c in p_da[dim].to_numpy()]
        for label, ps, ls in items:
            diag, text = _diagnose_sensitivity(label, ps, ls, threshold)
            rows.append({"parameter": label, "prior": ps, "likelihood": ls, "diagnosis": diag,
                         "explanation": text, "draws": int(post.sizes["chain"] * len(pos))})
    return pd.DataFrame(rows)


def _diagnose_sensitivity(name: str, prior: float, lik: float, threshold: float) -> tuple[str, str]:
    if not (np.isfinite(prior) and prior > threshold):
        return "", ""
    if np.isfinite(lik) and lik > threshold:
        return CONFLICT, "the prior and the data pull it in different directions"
    return PRIOR_DOMINATES, "the data say little about it; the prior decides"


def sensitivity_findings(sensitivity: pd.DataFrame, *, threshold: float = SENSITIVITY_THRESHOLD
                         ) -> list[str]:
    """Plain-language lines from :func:`power_scaling` tables.

    Parameters
    ----------
    sensitivity : pandas.DataFrame
        :func:`power_scaling` output, optionally with a ``prior_set`` column (one line or two
        per prior set).
    threshold : float
        The threshold the diagnoses used (for the wording).

    Returns
    -------
    list of str
    """
    out = []
    frame = sensitivity if "prior_set" in sensitivity else sensitivity.assign(prior_set="fit")
    for name, part in frame.groupby("prior_set", sort=False):
        flagged = part[part["diagnosis"] != ""]
        if flagged.empty:
            out.append(f"{name}: no hyperparameter or headline estimand is prior-sensitive (all "
                       f"power-scaling prior sensitivities <= {threshold}).")
            continue
        conflict = flagged[flagged["diagnosis"] == CONFLICT]
        weak = flagged[flagged["diagnosis"] == PRIOR_DOMINATES]
        if len(conflict):
            items = ", ".join(f"{r.parameter} ({r.prior:.3f} / {r.likelihood:.3f})"
                              for r in conflict.itertuples())
            out.append(f"{name}: prior-data conflict for {items} (prior / likelihood sensitivity). "
                       "Their posteriors move both when the prior and when the likelihood is made "
                       "slightly stronger or weaker: the prior and the data pull in different "
                       "directions. Check these priors against what the data say, or widen them.")
        if len(weak):
            items = ", ".join(f"{r.parameter} ({r.prior:.3f} / {r.likelihood:.3f})"
                              for r in weak.itertuples())
            out.append(f"{name}: prior-sensitive with a weak likelihood for {items} (prior / "
                       f"likelihood sensitivity; likelihood <= {threshold}). The data say little "
                       "about these; their posteriors largely repeat the prior, so report them as "
                       "prior-driven or get more data (e.g. more LAs).")
    return out


# ------------------------------------------------------------------------------ fit reuse


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """Provenance of a saved fit, read cheaply (posterior attributes only).

    Parameters
    ----------
    path : path
        A fit file.

    Returns
    -------
    dict or None
        The provenance, or None when the file is not a readable fit.
    """
    try:
        with xr.open_dataset(path, group="posterior", engine="h5netcdf") as ds:
            return json.loads(ds.attrs["hierarchy"])
    except Exception:  # not a fit, damaged, or another format: simply not reusable
        return None


def find_fit(fits_dir: str | os.PathLike, *, model_hash: str, priors_hash: str, data_hash: str,
             settings: dict[str, Any] | None = None) -> Path | None:
    """A saved fit in ``fits_dir`` of this model, prior set and data, or None.

    Parameters
    ----------
    fits_dir : path
        Folder of ``*.nc`` fit files.
    model_hash, priors_hash, data_hash : str
        Hashes the fit's provenance must match (``ModelSpec.hash()``, ``PriorSet.hash()``,
        :func:`hierarchy.data.table.data_hash`).
    settings : dict, optional
        Preferred sampler settings (e.g. ``{"chains": 2, "draws": 500}``): among matching fits,
        one with these settings wins, then the newest.

    Returns
    -------
    pathlib.Path or None
    """
    folder = Path(fits_dir)
    if not folder.is_dir():
        return None
    found = []
    for p in folder.glob("*.nc"):
        prov = read_provenance(p)
        if prov is None:
            continue
        if (prov.get("model_hash"), prov.get("priors_hash"), prov.get("data_hash")) != (
                model_hash, priors_hash, data_hash):
            continue
        same = all(prov.get("sampler", {}).get(k) == v for k, v in (settings or {}).items())
        found.append((same, p.stat().st_mtime, p))
    return max(found)[2] if found else None


def resolve_prior_path(prior: str | os.PathLike, priors_dir: str | os.PathLike = PRIORS_DIR) -> Path:
    """A prior set file from a path or the name of a shipped set (``vague`` -> priors/vague.toml).

    Parameters
    ----------
    prior : str or path
        An existing file, or a set name looked up in ``priors_dir`` (and, for the default
        ``priors``, in the checkout's ``priors/``).
    priors_dir : path
        Folder of named sets.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    HierarchyError
        When neither exists; the message suggests the closest known name.
    """
    path = Path(prior)
    if path.exists() or Path(priors_dir) == PRIORS_DIR:  # a file, or a shipped set (package data)
        return shipped.resolve(prior, "priors")
    named = Path(priors_dir) / f"{prior}.toml"
    if named.exists() and path.suffix != ".toml":
        return named
    known = sorted(p.stem for p in Path(priors_dir).glob("*.toml"))
    raise HierarchyError(f"prior set {str(prior)!r}: no such file, and not the name of a set in "
                         f"{priors_dir}{did_you_mean(str(prior), known)} (known: {', '.join(known) or 'none'})")


# ------------------------------------------------------------------------------ compare priors


@dataclass
class PriorComparison:
    """Everything :func:`compare_priors` computed and where it wrote it.

    Attributes
    ----------
    out : pathlib.Path
        Output folder.
    html, markdown : pathlib.Path
        The pages.
    fits : dict of str to pathlib.Path
        Prior set name -> fit file used.
    reused, fitted : list of pathlib.Path
        Fits found in the fits folder, and fits made by this run.
    prior_predictive : dict of str to PriorPredictive
    estimands : pandas.DataFrame
        Headline gradient scores under each prior set.
    movement : pandas.DataFrame
        Per estimand: range of posterior means over prior sets.
    sensitivity : pandas.DataFrame
        :func:`power_scaling` of each fit, with a ``prior_set`` column.
    findings : list of str
        Plain-language findings, as on the page.
    tables : dict of str to pathlib.Path
        CSV files written.
    jobs : list of hierarchy.inference.sweep.JobResult
        The fits run by this call (worker pid, timings), in prior-set order.
    """

    out: Path
    html: Path
    markdown: Path
    fits: dict[str, Path]
    reused: list[Path]
    fitted: list[Path]
    prior_predictive: dict[str, PriorPredictive]
    estimands: pd.DataFrame
    movement: pd.DataFrame
    sensitivity: pd.DataFrame
    findings: list[str]
    tables: dict[str, Path] = field(default_factory=dict)
    jobs: list = field(default_factory=list)


def compare_priors(data: str | os.PathLike, model: str | os.PathLike,
                   priors: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                   fits_dir: str | os.PathLike = "fits", chains: int = 4, tune: int = 1000,
                   draws: int = 1000, seed: int = 0, workers: int | None = None, executor=None,
                   prior_draws_n: int = 1000, prob: float = 0.9, refit: bool = False,
                   columns: str | os.PathLike | None = None, prior_only: bool = False,
                   year: int | None = None,
                   log: Callable[[str], None] | None = None) -> PriorComparison:
    """Fit ``model`` under each prior set and compare priors, posteriors and sensitivity.

    Parameters
    ----------
    data : path
        Neighbourhood table (CSV or Parquet).
    model : path
        Model spec file.
    priors : sequence of path or str
        Prior set files, or names of sets in ``priors/`` (at least one; names must differ).
    out : path
        Output folder for the pages and tables.
    fits_dir : path
        Where fits are looked up and saved.
    chains, tune, draws, seed : int
        Sampler settings of new fits.
    workers : int, optional
        Parallel fitting processes (default: :func:`hierarchy.inference.sweep.default_workers`).
    executor : concurrent.futures.Executor, optional
        Run the fits there instead (see :func:`hierarchy.inference.sweep.run_sweep`).
    prior_draws_n : int
        Prior predictive draws per prior set.
    prob : float
        Interval probability of every interval shown.
    refit : bool
        Fit even when a matching fit exists.
    columns : path, optional
        Column map of the data (TOML).
    prior_only : bool
        Prior predictive checks only: no fits, no posterior sections.
    year : int, optional
        Census year of the data (2019 for 2018-19), for the published figures shown beside the
        estimands; default :func:`data_year`. With no year known, none is shown.
    log : callable, optional
        Progress messages go here (e.g. ``print``).

    Returns
    -------
    PriorComparison
    """
    say = log or (lambda _msg: None)
    out = Path(out)
    if not priors:
        raise HierarchyError("compare-priors needs at least one prior set")
    spec = load_spec(model)
    paths = [resolve_prior_path(p) for p in priors]
    sets = [load_priors(p) for p in paths]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise HierarchyError(f"prior sets must have distinct names, got {', '.join(names)}")
    cmap = data_mod.load_column_map(columns) if columns else None
    table = data_mod.load(data, columns=cmap, **spec.data_columns)
    dhash = data_mod.data_hash(table, **spec.hashed_columns)
    design = build_design(table, spec)
    year = data_year(data, table) if year is None else int(year)
    outcome = spec.stages[0]

    say(f"prior predictive checks ({prior_draws_n} draws per prior set)")
    checks = {s.name: prior_predictive(spec, s, design, draws=prior_draws_n, seed=seed, prob=prob, year=year)
              for s in sets}
    if prior_only:
        result = PriorComparison(out=out, html=out / "index.html", markdown=out / "index.md",
                                 fits={}, reused=[], fitted=[], prior_predictive=checks,
                                 estimands=pd.DataFrame(), movement=pd.DataFrame(),
                                 sensitivity=pd.DataFrame(),
                                 findings=[c.verdict() for c in checks.values()])
        fit_table = pd.DataFrame()
    else:
        settings = {"chains": chains, "tune": tune, "draws": draws, "seed": seed}
        fits, reused, results = _find_or_fit(spec, sets, paths, data=data, model=model,
                                             columns=columns, dhash=dhash, fits_dir=Path(fits_dir),
                                             settings=settings, refit=refit, workers=workers,
                                             executor=executor, say=say)
        # fit files hold no log-likelihood (it discloses the counts): recompute it here, in memory
        idatas = {s.name: add_log_likelihood(load_fit(fits[s.name], model=spec, priors=s, data_hash=dhash),
                                             design) for s in sets}
        frames, sens = [], []
        for name, idata in idatas.items():
            say(f"{name}: estimands and power-scaling sensitivity")
            head = summarise(headline_by_level(idata), prob=prob)
            head.insert(0, "prior_set", name)
            frames.append(head)
            s = power_scaling(idata)
            s.insert(0, "prior_set", name)
            sens.append(s)
        estimands = pd.concat(frames, ignore_index=True)
        estimands["published"] = [published_gradient(outcome, year, str(lv)) for lv in estimands["la_level"]]
        sensitivity = pd.concat(sens, ignore_index=True)
        movement = _movement(estimands)
        fit_table = _fit_table(fits, reused, idatas, sets)
        result = PriorComparison(out=out, html=out / "index.html", markdown=out / "index.md",
                                 fits=fits, reused=reused, fitted=[r.path for r in results],
                                 prior_predictive=checks, estimands=estimands, movement=movement,
                                 sensitivity=sensitivity,
                                 findings=_prior_findings(checks, movement, sensitivity, fit_table),
                                 jobs=list(results))
    _write_prior_pages(result, spec=spec, sets=sets, data=Path(data), dhash=dhash,
                       fit_table=fit_table, prob=prob, year=year)
    say(f"wrote {result.html} and {result.markdown}")
    return result


def _find_or_fit(spec: ModelSpec, sets: list[PriorSet], paths: list[Path], *,
                 data: str | os.PathLike, model: str | os.PathLike,
                 columns: str | os.PathLike | None, dhash: str, fits_dir: Path,
                 settings: dict[str, int], refit: bool, workers: int | None, executor,
                 say: Callable[[str], None]) -> tuple[dict[str, Path], list[Path], list]:
    """Fit files of ``spec`` under each prior set: matching saved fits, else new parallel fits.

    Returns prior set name -> fit file, the reused files and the sweep's job results.
    """
    fits: dict[str, Path] = {}
    reused: list[Path] = []
    missing = []
    for path, pset in zip(paths, sets, strict=True):
        found = None if refit else find_fit(fits_dir, model_hash=spec.hash(),
                                            priors_hash=pset.hash(), data_hash=dhash,
                                            settings=settings)
        if found is not None:
            say(f"{pset.name}: reusing {found}")
            fits[pset.name] = found
            reused.append(found)
        else:
            missing.append((path, pset))
    if not missing:
        return fits, reused, []
    # one fit alone may spread its chains over the cores; several share them, a chain at a time
    alone = len(missing) == 1 or (workers == 1 and executor is None)
    jobs = [FitJob(data=Path(data), model=Path(model), priors=path,
                   out=fits_dir / f"{spec.name}__{pset.name}__"
                                  f"{config_hash([spec.hash(), pset.hash(), dhash])[:10]}.nc",
                   columns=Path(columns) if columns else None, **settings,
                   chain_method="parallel" if alone else "sequential") for path, pset in missing]
    say(f"fitting {len(jobs)} prior set(s): {', '.join(pset.name for _, pset in missing)}")
    results = run_jobs(jobs, executor=executor, workers=workers, refit=refit,
                       on_done=lambda r: say(f"  done in {r.seconds:.0f} s: {r.path}"))
    for (_, pset), res in zip(missing, results, strict=True):
        fits[pset.name] = res.path
    return fits, reused, results


def _movement(estimands: pd.DataFrame) -> pd.DataFrame:
    """Range of posterior means over prior sets, per headline estimand."""
    rows = []
    for level, part in estimands.groupby("la_level", sort=False):
        lo, hi = part.loc[part["mean"].idxmin()], part.loc[part["mean"].idxmax()]
        move = float(hi["mean"] - lo["mean"])
        sd = float(part["sd"].mean())
        rows.append({"estimand": ESTIMAND_LABELS.get(str(level), str(level)), "la_level": level,
                     "la_deprivation": float(part["la_deprivation"].iloc[0]),
                     "published": float(part["published"].iloc[0]) if "published" in part else np.nan,
                     "min_mean": float(lo["mean"]), "min_prior_set": lo["prior_set"],
                     "max_mean": float(hi["mean"]), "max_prior_set": hi["prior_set"],
                     "movement": move, "movement_in_sd": move / sd if sd > 0 else np.nan})
    return pd.DataFrame(rows)


def _fit_table(fits: dict[str, Path], reused: list[Path], idatas: dict, sets: list[PriorSet]
               ) -> pd.DataFrame:
    rows = []
    for s in sets:
        prov = provenance(idatas[s.name])
        smp = prov.get("sampler", {})
        diag = prov.get("diagnostics", {})
        rows.append({"prior_set": s.name, "fit": str(fits[s.name]),
                     "source": "reused" if fits[s.name] in reused else "fitted now",
                     "chains": smp.get("chains"), "tune": smp.get("tune"), "draws": smp.get("draws"),
                     "seed": smp.get("seed"), "diagnostics": diag.get("status", "?"),
                     "notes": "; ".join(diag.get("reasons", []))})
    return pd.DataFrame(rows)


def _prior_findings(checks: dict[str, PriorPredictive], movement: pd.DataFrame,
                    sensitivity: pd.DataFrame, fit_table: pd.DataFrame) -> list[str]:
    out = [c.verdict() for c in checks.values()]
    for _, r in movement.iterrows():
        pub = f" (published {r['published']:.2f})" if np.isfinite(r["published"]) else ""
        out.append(f"{r['estimand']}{pub}: posterior means range from "
                   f"{r['min_mean']:.2f} ({r['min_prior_set']}) to {r['max_mean']:.2f} "
                   f"({r['max_prior_set']}), a movement of {r['movement']:.3f} "
                   f"({r['movement_in_sd']:.1f} posterior SD).")
    out.extend(sensitivity_findings(sensitivity))
    for _, r in fit_table.iterrows():
        if r["diagnostics"] != "ok":
            out.append(f"{r['prior_set']}: the fit's convergence diagnostics warn ({r['notes']}); "
                       "treat its numbers with care.")
    return out


# ------------------------------------------------------------------------------ figures


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


# ------------------------------------------------------------------------------ pages


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
             "la_sd": True, "la_corr": two, "msoa_sd": spec.msoa.random_intercept,
             "dispersion": spec.family == "negative_binomial",
             "obs_sd": spec.family == "poisson_lognormal"}
    return [g for g, used in flags.items() if used]


def _pct(share: float) -> str:
    if share == 0:
        return "0%"
    if share < 0.001:
        return "<0.1%"
    return f"{100 * share:.2f}%" if share < 0.1 else f"{100 * share:.1f}%"


def _big(v: float) -> str:
    """A rate for a table: thousands separators, or scientific notation when absurdly large."""
    if not np.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:,.0f}" if abs(v) < 1e6 else f"{v:.1e}"



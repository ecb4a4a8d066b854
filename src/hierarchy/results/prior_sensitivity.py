"""Power-scaling sensitivity of a fit's headline quantities to its prior and likelihood (Kallioinen et
al.), and the findings it supports (prior-data conflict, prior dominance)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import FitFileError
from hierarchy.likelihood.model import HYPERPARAMETERS
from hierarchy.results.compare_models import loglik_draws
from hierarchy.results.estimands import headline_gradients, la_levels
from hierarchy.results.prior_settings import (
    CONFLICT,
    PRIOR_DOMINATES,
    SENSITIVITY_THRESHOLD,
)


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

"""Cross-validation by local authority: does a model predict an LA it has not seen?

PSIS-LOO over neighbourhood rows (:mod:`hierarchy.results.compare_models`, ``--cv rows``) asks how
well a model predicts a left-out neighbourhood of an LA whose other neighbourhoods it has seen. The
question "does the model generalise to a new LA" needs the LA left out as a whole:

* **leave-one-LA-out by PSIS** (``--cv la``): one log-likelihood term per LA, and PSIS-LOO on those
  terms estimates the elpd of a new LA. The pointwise log-likelihood summed over each LA's rows (all
  its neighbourhoods and strata, :func:`la_log_likelihood`) is such a term, given the LA's fitted
  effects; leaving out a whole LA moves those effects a lot, so most LAs' Pareto k is above the
  threshold (:func:`pareto_k_threshold`). With the data at hand the LA's effects are integrated out
  instead (:func:`la_integrated_log_likelihood`, integrated importance sampling), which leaves few
  LAs above the threshold; those are then left out exactly, by refits;
* **exact refits / K-fold by LA** (``--cv la-kfold``): each fold is a refit with its LAs' rows
  removed (:func:`fit_without`, the fit's own model, prior set and sampler settings), and each
  held-out LA's log predictive density integrates its LA effects over the refit's LA-level
  distribution (:func:`la_log_predictive`): for every posterior draw, the LA effects ``a`` of
  the held-out LA have the distribution ``N(mean(z, LA covariates), Sigma)`` that
  :func:`hierarchy.results.predict.predict` draws new LAs from, and
  ``log p(y_LA | draw) = log integral prod_i p(y_i | a) N(a | mean, Sigma) da`` is computed by
  adaptive Gauss-Hermite quadrature around the mode (as the Poisson-lognormal marginal
  log-likelihood in :mod:`hierarchy.results.fitfile`), on the one linear predictor.

* **batched refits** (:func:`heldout_lpd_batched`, compare-models' default when no refit is to be
  saved): every fold in one compiled program (:func:`hierarchy.inference.batch.fit_batch`), each
  fold the whole table's layout with its held-out rows masked (:func:`fold_data`); the held-out
  LAs' effects then follow their prior and the log predictive integrates them as above. The
  deprivation centring is then the whole table's (held-out covariates, never counts, enter it), and
  so is the choice of parameterisation (which does not change the posterior). Measured on 8 LAs
  x 6, 4 folds: held-out ELPD -213.66 batched against -213.38 fold by fold (MC SE of the
  difference 0.28; tests/inference/test_batch.py).

Held-out rows are really held out: a fold's fit is made from the table without those LAs' rows
(its provenance records that table's data hash and row count), and the held-out LAs' deprivation
is centred with the training fit's constants, as a new LA would be.

Models supported by the refits: families whose row density is log-concave in the log mean (negative
binomial and Poisson: a family's ``laplace_refusal`` says why not), one outcome (not stacked stages),
LA intercepts (and gradients) with LA deprivation and LA covariates in their means, strata,
neighbourhood-level terms and other group effects whose levels the training fit has. Models whose
held-out LAs bring effects of their own besides the LA effects (MSOA effects, Poisson-lognormal row
effects, group levels only they have) are refused with the reason: those effects would need
integrating too.

The work is split by job, and every name is importable from here: held-out rows
(:mod:`hierarchy.results.cv_heldout`), the integrated log predictive density
(:mod:`hierarchy.results.cv_predictive`), refits one by one and batched
(:mod:`hierarchy.results.cv_refits`) and the refit plan and budget (:mod:`hierarchy.results.cv_plan`).
This module keeps the PSIS side (the Pareto-k threshold, the log-likelihood summed by LA) and the
stacking weights.
"""

from __future__ import annotations

import numpy as np

from hierarchy.errors import HierarchyError
from hierarchy.results.cv_heldout import HeldOut, heldout_rows, heldout_within, integration_unsupported, own_rows
from hierarchy.results.cv_plan import fit_seconds, la_folds, refit_budget_line, refit_plan, refit_progress_line
from hierarchy.results.cv_predictive import (
    GAUSS_HERMITE_NODES,
    flat_posterior,
    la_integrated_log_likelihood,
    la_log_predictive,
    la_lpd,
)
from hierarchy.results.cv_predictive import NEWTON_STEPS as NEWTON_STEPS
from hierarchy.results.cv_refits import REFIT_SETTINGS as REFIT_SETTINGS
from hierarchy.results.cv_refits import (
    batch_unsupported,
    fit_without,
    fold_data,
    heldout_lpd,
    heldout_lpd_batched,
)

PARETO_K_CAP = 0.7
"""The largest Pareto-k threshold: reached at 2,154 draws and more (:func:`pareto_k_threshold`)."""

__all__ = ["GAUSS_HERMITE_NODES", "PARETO_K_CAP", "HeldOut", "batch_unsupported", "fit_seconds", "fit_without",
           "flat_posterior", "fold_data", "heldout_lpd", "heldout_lpd_batched", "heldout_rows",
           "heldout_within", "integration_unsupported", "la_folds", "la_integrated_log_likelihood",
           "la_log_likelihood", "la_log_predictive", "la_lpd", "own_rows", "pareto_k_threshold",
           "refit_budget_line", "refit_plan", "refit_progress_line", "stacking_weights"]


def pareto_k_threshold(n_draws: int) -> float:
    """Pareto k above which a PSIS-LOO term is unreliable, for ``n_draws`` posterior draws.

    ``min(1 - 1 / log10(S), 0.7)`` (Vehtari et al. 2024, "Pareto smoothed importance sampling",
    section 3; ArviZ's ``good_k``): with fewer draws the tail estimate needs a smaller k, e.g. 0.57
    for 200 draws, 0.62 for 400, 0.67 for 1,000 and 0.7 from 2,154 draws on. Every place in the
    package that flags k uses this function.

    Parameters
    ----------
    n_draws : int
        Draws the log-likelihood was evaluated at (all chains).

    Returns
    -------
    float
    """
    n = int(n_draws)
    if n < 11:
        raise HierarchyError(f"Pareto k needs more than 10 posterior draws for a threshold, got {n}")
    return float(min(1.0 - 1.0 / np.log10(n), PARETO_K_CAP))


# ---------------------------------------------------------------------------- grouping by LA


def la_log_likelihood(idata, *, var_name: str | None = None):
    """The pointwise log-likelihood summed over each LA's rows: one term per LA.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit with ``log_likelihood`` and ``constant_data`` (``la_of`` per row) groups.
    var_name : str, optional
        Log-likelihood variable (default: the only one).

    Returns
    -------
    xarray.Dataset
        The same variable with dims ``chain, draw, la`` (float64 sums; LAs in code order).
    """
    import xarray as xr

    ll = idata.log_likelihood
    name = var_name or _only_var(ll)
    da = ll[name].transpose("chain", "draw", "neighbourhood")
    la_of = idata.constant_data["la_of"].sel(neighbourhood=da["neighbourhood"]).to_numpy().astype(str)
    las, index = np.unique(la_of, return_inverse=True)
    order = np.argsort(index, kind="stable")
    starts = np.searchsorted(index[order], np.arange(len(las)))
    sums = np.add.reduceat(da.to_numpy().astype(np.float64)[..., order], starts, axis=-1)
    return xr.Dataset({name: (("chain", "draw", "la"), sums)},
                      coords={"chain": da["chain"].to_numpy(), "draw": da["draw"].to_numpy(), "la": las})


def _only_var(ds) -> str:
    names = list(ds.data_vars)
    if len(names) != 1:
        raise HierarchyError(f"the log_likelihood group has {len(names)} variables ({', '.join(names)}); "
                             "name the one to use")
    return names[0]


# ---------------------------------------------------------------------------- stacking and the refit budget


def stacking_weights(pointwise: dict[str, np.ndarray]) -> dict[str, float]:
    """Stacking weights of models from their pointwise ELPD, computed on the log scale.

    Maximises ``sum_i log sum_k w_k exp(elpd_ik)`` over the simplex (Yao et al. 2018), as
    :func:`arviz.compare` does with ``method="stacking"``, but with each unit's values shifted by
    their maximum over the models and the sum taken by log-sum-exp. ArviZ exponentiates the values
    as they are: a left-out LA's ELPD sums its rows (e.g. -800), ``exp`` underflows to 0 for every
    model, the objective is ``-inf`` everywhere and the optimiser returns its start, equal weights
    (the 0.50 / 0.50 shown beside "a clear preference (6.6 SE)", issue 34). Shifting a unit's values
    by one constant does not change the optimum.

    Parameters
    ----------
    pointwise : dict of str to numpy.ndarray
        Model name -> pointwise ELPD over the same units (rows or LAs), in the same order.

    Returns
    -------
    dict of str to float
        Model name -> weight (non-negative, summing to 1).
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax, logsumexp, softmax

    names = list(pointwise)
    L = np.column_stack([np.asarray(pointwise[n], dtype=float).ravel() for n in names])
    if not np.isfinite(L).all():
        raise HierarchyError("stacking weights need finite pointwise ELPD values for every model")
    if len(names) == 1:
        return {names[0]: 1.0}
    L = L - L.max(axis=1, keepdims=True)

    def objective(theta):
        t = np.concatenate([[0.0], theta])  # the first model's logit is fixed at 0
        lse = logsumexp(L + log_softmax(t), axis=1)
        resp = np.exp(L + log_softmax(t) - lse[:, None]).sum(axis=0)  # sum_i r_ik
        return -lse.sum(), -(resp - len(L) * softmax(t))[1:]

    res = minimize(objective, np.zeros(len(names) - 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-10})
    w = softmax(np.concatenate([[0.0], res.x]))
    w = np.where(w < 1e-6, 0.0, w)  # a weight the optimum sends to 0 only ever reaches it in the limit
    return dict(zip(names, (w / w.sum()).tolist(), strict=True))

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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, build_design, w_of, z_of
from hierarchy.likelihood import families

PARETO_K_CAP = 0.7
"""The largest Pareto-k threshold: reached at 2,154 draws and more (:func:`pareto_k_threshold`)."""
GAUSS_HERMITE_NODES = 12
"""Quadrature nodes per LA effect (12 x 12 = 144 points for an LA intercept and gradient)."""
NEWTON_STEPS = 40
"""Newton steps to the mode of each held-out LA's effects (each step at most 1 on the log scale)."""
REFIT_SETTINGS = ("sampler", "chains", "tune", "draws", "seed", "chain_method", "target_accept",
                  "float32", "warmup_tree_depth")
"""Sampler settings a refit takes from the fit it stands for."""

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


def la_folds(las: Sequence[str], k: int, *, seed: int = 0) -> pd.Series:
    """Assign LAs to ``k`` folds at random, as evenly as possible (sizes differ by at most one).

    Parameters
    ----------
    las : sequence of str
        LA codes (duplicates are ignored).
    k : int
        Number of folds, 2 to the number of LAs.
    seed : int
        Seed of the random assignment; the same LAs, ``k`` and seed give the same folds.

    Returns
    -------
    pandas.Series
        Fold number (0 to k-1) indexed by LA code, in code order.
    """
    codes = np.unique(np.asarray(las).astype(str))
    if not 2 <= int(k) <= len(codes):
        raise HierarchyError(f"--folds must be between 2 and the number of LAs ({len(codes)}), got {k}")
    fold = np.empty(len(codes), dtype=int)
    fold[np.random.default_rng(seed).permutation(len(codes))] = np.arange(len(codes)) % int(k)
    return pd.Series(fold, index=pd.Index(codes, name="la"), name="fold")


# ---------------------------------------------------------------------------- held-out rows


@dataclass(frozen=True)
class HeldOut:
    """The rows of held-out LAs, centred with a training fit's constants.

    Attributes
    ----------
    las : numpy.ndarray
        Held-out LA codes (``J``), in code order.
    rows : dict
        Row arrays for :func:`hierarchy.likelihood.predictor.linear_predictor` (``la_index`` into
        ``las``; other indices into the training fit's levels).
    y : numpy.ndarray
        Observed counts of the rows.
    la_design : numpy.ndarray
        ``(n, E)``: what multiplies each LA effect in a row's linear predictor (1, and ``w`` for
        the LA gradient).
    z, la_cov : numpy.ndarray
        LA deprivation (transformed, centred as in training) and standardised LA covariates of the
        held-out LAs, ``(J,)`` and ``(J, k)``.
    n_rows : int
    """

    las: np.ndarray
    rows: dict
    y: np.ndarray
    la_design: np.ndarray
    z: np.ndarray
    la_cov: np.ndarray
    n_rows: int


def integration_unsupported(spec) -> str | None:
    """Why a model's LA effects cannot be integrated for a held-out LA (None: they can)."""
    try:
        _refuse_unsupported(spec, "")
    except HierarchyError as e:
        return str(e).split(": ", 2)[-1].split(". Use --cv")[0]
    return None


def _refuse_unsupported(spec, what: str) -> None:
    why = None
    if spec.stacked:
        why = "its stages are stacked (one LA effect per stage)"
    elif (refusal := families.get(spec.family).laplace_refusal) is not None:  # quadrature at a Newton mode
        why = refusal
    elif spec.msoa.random_intercept:
        why = "it has MSOA effects: a held-out LA's MSOAs are new and their effects would need integrating too"
    if why:
        raise HierarchyError(f"{what}: cross-validation by LA with refits is not available for model "
                             f"'{spec.name}': {why}. Use --cv rows, or --cv la with --max-refits 0 "
                             "(PSIS only).")


def heldout_rows(table: pd.DataFrame, spec, train: Design) -> HeldOut:
    """Rows of the LAs in ``table`` as a fit on ``train`` sees new LAs.

    Deprivation is centred with the training constants (``X_mean``, ``x_mean``, covariate centres
    and scales), as :func:`hierarchy.results.predict.predict` does for a new LA; strata and other
    group levels are those of the training fit.

    Parameters
    ----------
    table : pandas.DataFrame
        The held-out LAs' rows (canonical columns).
    spec : ModelSpec
    train : Design
        Design of the training table.

    Returns
    -------
    HeldOut
    """
    _refuse_unsupported(spec, "held-out LAs")
    own = build_design(table, spec)  # y, x, LA deprivation and levels of the held-out rows
    if set(own.la_codes) & set(train.la_codes):
        raise HierarchyError("held-out LAs are also in the training data: "
                             f"{', '.join(sorted(set(own.la_codes) & set(train.la_codes))[:5])}")
    z = z_of(own.la_X, train.X_mean, spec)
    w = w_of(own.x, own.la_X[own.la_index], train.x_mean, spec)
    cov = own.la_cov * own.la_cov_scale + own.la_cov_center  # the raw LA covariates
    cov = (cov - train.la_cov_center) / train.la_cov_scale
    values = {"w": w, "z": z[own.la_index], **{c: table[c].to_numpy(dtype=float) for c in spec.row_columns}}
    row_X = np.column_stack([np.prod([values[c] for c in t.split(":")], axis=0) for t in spec.row_terms]) \
        if spec.row_terms else np.zeros((len(w), 0))
    stratum = _map_levels(np.asarray(own.stratum_names)[own.stratum_index], train.stratum_names, "stratum")
    groups = tuple((g, _map_levels(lv[ix], tl, f"level of {g}"))
                   for g, lv, ix, tl in zip(own.group_names, own.group_levels, own.group_index,
                                            train.group_levels, strict=True))
    rows = {"la_index": own.la_index, "stage_index": own.stage_index, "stratum_index": stratum,
            "log_exposure": own.log_exposure, "w": w, "row_X": row_X, "groups": groups}
    la_design = np.column_stack([np.ones_like(w), w][:len(spec.coefs)])
    return HeldOut(las=own.la_codes, rows=rows, y=own.y, la_design=la_design, z=z, la_cov=cov,
                   n_rows=len(w))


def own_rows(design: Design, spec) -> HeldOut:
    """Every LA of a fit's own design as :class:`HeldOut` rows (its own centring), for the
    integrated leave-one-LA-out log-likelihood of the fit (:func:`la_integrated_log_likelihood`)."""
    _refuse_unsupported(spec, "leave-one-LA-out")
    rows = {"la_index": design.la_index, "stage_index": design.stage_index,
            "stratum_index": design.stratum_index, "log_exposure": design.log_exposure, "w": design.w,
            "row_X": design.row_X, "groups": tuple(zip(design.group_names, design.group_index, strict=True))}
    return HeldOut(las=design.la_codes, rows=rows, y=design.y,
                   la_design=np.column_stack([np.ones_like(design.w), design.w][:len(spec.coefs)]),
                   z=design.z, la_cov=design.la_cov, n_rows=len(design.y))


def _map_levels(values: np.ndarray, levels: Sequence[str], what: str) -> np.ndarray:
    pos = {str(v): i for i, v in enumerate(levels)}
    out = np.array([pos.get(str(v), -1) for v in values], dtype=np.int64)
    if (out < 0).any():
        missing = sorted({str(v) for v, o in zip(values, out, strict=True) if o < 0})
        raise HierarchyError(f"held-out LAs have a {what} the training data lack ({', '.join(missing[:3])}): "
                             "its effect would need integrating too; use fewer folds so that every "
                             "level stays in training, or --cv rows")
    return out


# ---------------------------------------------------------------------------- log predictive density


def la_log_predictive(spec, heldout: HeldOut, posterior: dict[str, np.ndarray], *,
                      nodes: int = GAUSS_HERMITE_NODES, batch: int = 25) -> np.ndarray:
    """``log p(y_LA | draw)`` of each held-out LA, its LA effects integrated out, ``(draws, J)``.

    For each posterior draw, the held-out LA's effects ``a`` (intercept, and gradient) follow the
    draw's LA-level distribution ``N(mean, Sigma)``: mean ``intercept + la_deprivation z +
    la_cov_intercept . cov`` (and ``gradient + cross_level z + la_cov_gradient . cov``),
    ``Sigma`` from ``la_sd`` and ``la_corr``. The integral of the product of the LA's row
    likelihoods over ``a`` is computed by adaptive Gauss-Hermite quadrature (``nodes`` per effect)
    around the mode (Newton), with the row terms from the one linear predictor.

    Parameters
    ----------
    spec : ModelSpec
    heldout : HeldOut
        :func:`heldout_rows`.
    posterior : dict of str to numpy.ndarray
        Draws of the training fit with a leading draw axis (chains flattened).
    nodes : int
        Gauss-Hermite nodes per LA effect.
    batch : int
        Draws per compiled batch.

    Returns
    -------
    numpy.ndarray
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    from hierarchy.likelihood import parameters
    from hierarchy.likelihood.predictor import ROW_PARAMS, group_params, linear_predictor, over_draws

    jax.config.update("jax_enable_x64", True)
    _refuse_unsupported(spec, "held-out LAs")
    J, E = len(heldout.las), heldout.la_design.shape[1]
    la = jnp.asarray(heldout.rows["la_index"])
    D = jnp.asarray(heldout.la_design, dtype=float)
    y = jnp.asarray(heldout.y, dtype=float)
    z, cov = jnp.asarray(heldout.z, dtype=float), jnp.asarray(heldout.la_cov, dtype=float)
    rows = {k: v for k, v in heldout.rows.items() if v is not None}
    x1, w1 = np.polynomial.hermite.hermgauss(nodes)
    grid = np.stack(np.meshgrid(*[x1] * E, indexing="ij"), -1).reshape(-1, E)
    log_w = np.log(np.stack(np.meshgrid(*[w1] * E, indexing="ij"), -1).reshape(-1, E)).sum(-1)
    X = jnp.asarray(grid)
    base = jnp.asarray(log_w + (grid ** 2).sum(-1))  # log weight + |x|^2
    fam = families.get(spec.family)

    def seg(v):
        return jax.ops.segment_sum(v, la, num_segments=J)

    def one(p):
        q = {k: v for k, v in p.items() if k != "la_coef"}
        q["la_coef"] = jnp.zeros((J, E))
        c = linear_predictor(rows, q, jnp)  # every term but the LA effects
        mean = [p["intercept"] + (p["la_deprivation"] * z if "la_deprivation" in p else 0.0)
                + (cov @ p["la_cov_intercept"] if "la_cov_intercept" in p else 0.0)]
        if E == 2:
            mean.append(p["gradient"] + (p["cross_level"] * z if "cross_level" in p else 0.0)
                        + (cov @ p["la_cov_gradient"] if "la_cov_gradient" in p else 0.0))
        mu = jnp.stack([jnp.broadcast_to(m, (J,)) for m in mean], -1)  # (J, E)
        sd = jnp.reshape(p["la_sd"], (E,))
        corr = jnp.reshape(p["la_corr"], (E, E)) if E > 1 else jnp.ones((1, 1))
        sigma = sd[:, None] * corr * sd[None, :]
        prec = jnp.linalg.inv(sigma)
        lik = {k: p[k] for k in fam.likelihood_params}  # the family's parameters (NB dispersion...)

        def grad_hess(a):
            _, l1, l2 = fam.row_derivatives(y, c + jnp.sum(a[la] * D, -1), lik)
            g = seg(l1[:, None] * D) - (a - mu) @ prec
            h = seg(l2[:, None, None] * D[:, :, None] * D[:, None, :]) - prec
            return g, h

        def newton(a, _):
            g, h = grad_hess(a)
            step = jnp.linalg.solve(h, g[..., None])[..., 0]
            size = jnp.sqrt(jnp.sum(step ** 2, -1, keepdims=True))
            return a - step * jnp.minimum(1.0, 1.0 / jnp.maximum(size, 1e-300)), None

        mode, _ = jax.lax.scan(newton, mu, None, length=NEWTON_STEPS)
        _, h = grad_hess(mode)
        chol = jnp.linalg.cholesky(jnp.linalg.inv(-h))  # (J, E, E)
        A = mode[:, None, :] + jnp.sqrt(2.0) * jnp.einsum("jef,kf->jke", chol, X)  # (J, K, E)
        eta = c[:, None] + jnp.einsum("nke,ne->nk", A[la], D)
        ll = fam.logpmf(y[:, None], eta, {k: jnp.reshape(v, (-1, 1)) for k, v in lik.items()}, jnp)
        dev = A - mu[:, None, :]
        prior = (-0.5 * jnp.einsum("jke,ef,jkf->jk", dev, prec, dev)
                 - 0.5 * (E * jnp.log(2 * jnp.pi) + jnp.linalg.slogdet(sigma)[1]))
        log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        return logsumexp(base[None, :] + seg(ll) + prior, axis=1) + 0.5 * E * jnp.log(2.0) + log_det

    keys = [k for k in dict.fromkeys((*ROW_PARAMS, *group_params(g for g, _ in spec.groups),
                                      *parameters.names(role="hyper")))
            if k in posterior and not k.startswith(("msoa_", "eps_", "obs_"))]  # no row-level effects here
    return over_draws(one, {k: np.asarray(posterior[k], dtype=float) for k in keys}, batch=batch,
                      dtype=np.float64)


def la_integrated_log_likelihood(idata, table: pd.DataFrame, *, draws: np.ndarray | None = None,
                                 var_name: str = "log_lik"):
    """``log p(y_LA | draw)`` of every LA of a fit, its LA effects integrated out: one term per LA.

    The LA's rows summed given its *fitted* effects (:func:`la_log_likelihood`) make PSIS weights
    ``1 / p(y_LA | a_LA, theta)`` that are far from the leave-one-LA-out posterior, so their Pareto k
    is mostly above the threshold. Integrating the LA's effects over the LA-level distribution
    (:func:`la_log_predictive`) leaves weights ``1 / p(y_LA | theta)`` over the hyperparameters only
    ("integrated importance sampling", Vehtari et al. 2016, JMLR 17(103)), whose k are much smaller
    (measured: 2 of 30 LAs above 0.62 against 21 of 30). Both estimate the same quantity.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit.
    table : pandas.DataFrame
        The table it was made from.
    draws : numpy.ndarray, optional
        Positions of the posterior draws to use in each chain (default: all).
    var_name : str
        Name of the variable.

    Returns
    -------
    xarray.Dataset
        dims ``chain, draw, la``.
    """
    import xarray as xr

    from hierarchy.data.table import data_hash
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    spec = as_fit(idata).spec
    have, want = data_hash(table, **spec.hashed_columns), provenance(idata)["data_hash"]
    if have != want:
        raise HierarchyError(f"the data given (hash {have}) are not the data this fit was made from (hash {want})")
    design = build_design(table, spec)
    post = idata.posterior if draws is None else idata.posterior.isel(draw=np.asarray(draws))
    held = own_rows(design, spec)
    lp = la_log_predictive(spec, held, flat_posterior(post)).reshape(post.sizes["chain"], post.sizes["draw"], -1)
    return xr.Dataset({var_name: (("chain", "draw", "la"), lp)},
                      coords={"chain": post["chain"].to_numpy(), "draw": post["draw"].to_numpy(),
                              "la": design.la_codes})


def la_lpd(log_p: np.ndarray) -> np.ndarray:
    """Log predictive density of each LA from ``log p(y_LA | draw)``, ``(draws, J) -> (J,)``:
    ``log mean_s p(y_LA | draw s)``."""
    from scipy.special import logsumexp

    return logsumexp(log_p, axis=0) - np.log(log_p.shape[0])


def flat_posterior(posterior) -> dict[str, np.ndarray]:
    """Draws of a posterior Dataset (or of a fit's posterior) with chains flattened (leading draw axis)."""
    post = getattr(posterior, "posterior", posterior)
    out = {}
    for k in post.data_vars:
        v = post[k].transpose("chain", "draw", ...).to_numpy()
        out[k] = v.reshape((-1,) + v.shape[2:])
    return out


# ---------------------------------------------------------------------------- refits


def fit_without(idata, table: pd.DataFrame, las: Sequence[str], *, fits_dir: str | os.PathLike | None = None,
                label: str = "fit", log: Callable[[str], None] | None = None) -> tuple[Any, Design, str]:
    """Refit a fit's model, prior set and sampler settings to ``table`` without the rows of ``las``.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit the refit stands for (its provenance gives model, priors and sampler settings).
    table : pandas.DataFrame
        The table it was made from (canonical columns; its data hash must be the fit's).
    las : sequence of str
        LA codes whose rows are removed.
    fits_dir : path, optional
        Folder where refits are saved (shareable fit files, like any ``hierarchy fit``) and found
        again: a file there with the same training data hash, model, prior set and sampler settings
        is reused instead of refitting.
    label : str
        Model label for file names and messages.
    log : callable, optional
        Gets one line per refit.

    Returns
    -------
    (arviz.InferenceData, Design, str)
        The refit, its design (the training rows) and ``"fitted"`` or ``"reused"``.
    """
    from hierarchy.data.table import data_hash
    from hierarchy.inference.sampling import fit
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import build_idata, load_fit, provenance, save_fit

    held = as_fit(idata)
    spec, priors = held.spec, held.priors
    prov = provenance(idata)
    codes = table["la"].astype(str)
    left_out = sorted({str(c) for c in las})
    unknown = sorted(set(left_out) - set(codes))
    if unknown:
        raise HierarchyError(f"LA(s) {', '.join(unknown[:5])} are not in the data")
    train = table[~codes.isin(left_out).to_numpy()].reset_index(drop=True)
    if train["la"].nunique() < 2:
        raise HierarchyError("a refit needs at least two LAs left in the training data; use more folds")
    design = build_design(train, spec)
    dhash = data_hash(train, **spec.hashed_columns)
    settings = {k: prov["sampler"][k] for k in REFIT_SETTINGS if k in prov["sampler"]}
    key = hashlib.sha256(json.dumps([dhash, prov["model_hash"], prov["priors_hash"], settings],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = None
    if fits_dir is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
        path = Path(fits_dir) / f"{safe}__without_{len(left_out)}_la_{key}.nc"
        if path.exists():
            old = load_fit(path)
            p = provenance(old)
            same = (p["data_hash"], p["model_hash"], p["priors_hash"]) == (dhash, prov["model_hash"],
                                                                           prov["priors_hash"])
            if same and {k: p["sampler"].get(k) for k in settings} == settings:
                return old, design, "reused"
    if log:
        log(f"refitting {label} without {len(left_out)} LA(s) ({len(train):,} of {len(table):,} rows)")
    draws = fit(spec, priors, design, **settings)
    out = build_idata(draws, spec, priors, design, data_hash=dhash,
                      data_source=f"{prov.get('data_source') or 'data'} without LA(s) {', '.join(left_out[:5])}"
                                  f"{' ...' if len(left_out) > 5 else ''}",
                      column_map=prov.get("column_map"))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_fit(out, path)
    return out, design, "fitted"


def heldout_lpd(idata, table: pd.DataFrame, las: Sequence[str], **kw) -> tuple[pd.Series, dict]:
    """Refit without ``las`` (:func:`fit_without`) and return their log predictive densities.

    Returns
    -------
    (pandas.Series, dict)
        lpd per held-out LA (indexed by code) and facts about the refit (``status``,
        ``train_rows``, ``train_data_hash``, ``heldout_rows``, ``heldout_data_hash``, ``diagnostics``:
        ``ok`` or ``warn: reasons``).
    """
    from hierarchy.data.table import data_hash
    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    spec = as_fit(idata).spec
    _refuse_unsupported(spec, "compare-models")
    refit, train, status = fit_without(idata, table, las, **kw)
    test = table[table["la"].astype(str).isin({str(c) for c in las}).to_numpy()].reset_index(drop=True)
    held = heldout_rows(test, spec, train)
    lpd = la_lpd(la_log_predictive(spec, held, flat_posterior(refit)))
    d = diagnose(refit)
    facts = {"status": status, "train_rows": int(provenance(refit)["design"]["n_rows"]),
             "train_data_hash": provenance(refit)["data_hash"], "heldout_rows": held.n_rows,
             "heldout_data_hash": data_hash(test, **spec.hashed_columns),
             "diagnostics": d["status"] + (": " + "; ".join(d["reasons"]) if d["reasons"] else "")}
    return pd.Series(lpd, index=pd.Index(held.las, name="la")), facts


# ---------------------------------------------------------------------------- batched refits


def batch_unsupported(idata) -> str | None:
    """Why a fit's refits cannot run batched in one program (None: they can).

    Batched refits (:func:`heldout_lpd_batched`) fit the full table's layout with the held-out rows
    masked, with NumPyro NUTS and a fixed number of draws. Not batched: other samplers (nutpie,
    PyMC) and the Laplace mode, and BYM2 models (masking keeps the held-out neighbourhoods in the
    graph, which a refit without their rows does not have).
    """
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    sampler = provenance(idata).get("sampler", {})
    if sampler.get("sampler", "numpyro") != "numpyro":
        return f"its sampler is {sampler['sampler']} (batched refits run NumPyro NUTS)"
    if sampler.get("method", "nuts") != "nuts":
        return f"its method is {sampler['method']} (batched refits run NUTS on every parameter)"
    if as_fit(idata).spec.spatial:
        return "it has a BYM2 term: masking a fold's rows would keep its neighbourhoods in the graph"
    return None


def fold_data(layout, design: Design, train: np.ndarray, dtype=None) -> dict:
    """The model data of ``layout`` with only the rows ``train`` (bool, design row order) observed.

    The other rows are masked (``mask`` 0, count 0) and the whole-data summaries (count histogram,
    rows per stage, ``sum lgamma(y + 1)``) are of the training rows only, so the log density is that
    of the training rows while every array keeps the full layout's shape; the held-out LAs' own
    effects then follow their prior.
    """
    from dataclasses import replace

    from scipy.special import gammaln

    from hierarchy.likelihood.jaxmodel import model_data

    train = np.asarray(train, dtype=bool)
    real = layout.rows >= 0
    keep = real & train[np.where(real, layout.rows, 0)]
    n_stage, hist_len = layout.y_hist.shape
    y, stage = design.y[train].astype(np.int64), design.stage_index[train]
    hist = (np.stack([np.bincount(y[stage == s], minlength=hist_len) for s in range(n_stage)]).astype(float)
            if hist_len else np.zeros((n_stage, 0)))
    fold = replace(layout, mask=keep.astype(float), y=np.where(keep, layout.y, 0.0), y_hist=hist,
                   n_stage_rows=np.bincount(stage, minlength=n_stage).astype(float),
                   lgamma_y1=float(gammaln(y + 1.0).sum()))
    return model_data(fold, dtype)


def heldout_within(design: Design, spec, las: Sequence[str], train: np.ndarray) -> HeldOut:
    """The rows of ``las`` in a design as :class:`HeldOut` rows of that design's own centring.

    For a fit of the whole design with those rows masked (:func:`fold_data`): their LA deprivation
    and covariates are centred with the constants the fit used, and their strata and group levels
    are the fit's. A level that no training row has is refused, as :func:`heldout_rows` does.
    """
    own = own_rows(design, spec)
    pos = np.flatnonzero(np.isin(design.la_codes, [str(c) for c in las]))
    rows = np.isin(design.la_index, pos)
    new_index = np.full(design.n_la, -1)
    new_index[pos] = np.arange(len(pos))
    out = {k: (v[rows] if isinstance(v, np.ndarray) and v.shape[:1] == rows.shape else v)
           for k, v in own.rows.items() if k != "groups"}
    out["la_index"] = new_index[design.la_index[rows]]
    for name, index, levels in (("stratum", design.stratum_index, design.stratum_names),
                                *((f"level of {g}", i, lv) for g, i, lv in zip(
                                    design.group_names, design.group_index, design.group_levels, strict=True))):
        missing = sorted(set(index[rows]) - set(index[train]))
        if missing:
            raise HierarchyError(f"held-out LAs have a {name} the training data lack "
                                 f"({', '.join(str(levels[m]) for m in missing[:3])}): its effect would need "
                                 "integrating too; use fewer folds so that every level stays in training, "
                                 "or --cv rows")
    out["groups"] = tuple((g, i[rows]) for g, i in own.rows["groups"])
    return HeldOut(las=design.la_codes[pos], rows=out, y=design.y[rows], la_design=own.la_design[rows],
                   z=design.z[pos], la_cov=design.la_cov[pos], n_rows=int(rows.sum()))


def heldout_lpd_batched(idata, table: pd.DataFrame, groups: Sequence[Sequence[str]], *,
                        log: Callable[[str], None] | None = None, vectorize: bool | None = None,
                        label: str = "fit") -> list[tuple[pd.Series, dict]]:
    """:func:`heldout_lpd` of every LA group at once: all refits in one compiled program.

    Each refit is the fit's model and prior set on the whole table's layout with the group's rows
    masked (:func:`fold_data`; the held-out LAs' effects follow their prior, which the log predictive
    integrates over anyway), sampled with the fit's NUTS settings by
    :func:`hierarchy.inference.batch.fit_batch`. Unlike :func:`fit_without` the training design's
    constants are the whole table's: LA deprivation centred over every LA (the held-out LAs'
    covariates, never their counts, enter it) and one parameterisation for every fold (chosen from
    the whole table; it does not change the posterior). Refits are not saved as fit files.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit the refits stand for.
    table : pandas.DataFrame
        The table it was made from (its data hash must be the fit's).
    groups : sequence of sequence of str
        The LAs held out by each refit.
    log : callable, optional
        Gets one line before the refits and one after.
    vectorize : bool, optional
        :func:`~hierarchy.inference.batch.fit_batch`'s (default: side by side on an accelerator only).
    label : str
        Model label for messages.

    Returns
    -------
    list of (pandas.Series, dict)
        Per group, as :func:`heldout_lpd`: lpd per held-out LA and facts (``status`` ``"batched"``,
        rows and data hashes of the training and held-out rows, ``diagnostics``: ``ok`` or ``warn:
        reasons`` of the refit by the single-fit bar).
    """
    import jax

    from hierarchy.data.table import data_hash
    from hierarchy.inference.batch import fit_batch
    from hierarchy.likelihood.jaxmodel import make_layout, model_fn
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    fit_ = as_fit(idata)
    spec, priors, prov = fit_.spec, fit_.priors, provenance(idata)
    _refuse_unsupported(spec, "compare-models")
    why = batch_unsupported(idata)
    if why:
        raise HierarchyError(f"{label}: refits cannot run batched: {why}; refit fold by fold (batched=False)")
    have = data_hash(table, **spec.hashed_columns)
    if have != prov["data_hash"]:
        raise HierarchyError(f"the data given (hash {have}) are not the data {label} was made from "
                             f"(hash {prov['data_hash']})")
    jax.config.update("jax_enable_x64", True)
    design = build_design(table, spec)
    codes = table["la"].astype(str).to_numpy()
    held_sets = [sorted({str(c) for c in g}) for g in groups]
    unknown = sorted(set().union(*held_sets) - set(codes))
    if unknown:
        raise HierarchyError(f"LA(s) {', '.join(unknown[:5])} are not in the data")
    row_la = design.la_codes[design.la_index]
    trains = [~np.isin(row_la, h) for h in held_sets]
    if any(len(np.unique(row_la[t])) < 2 for t in trains):
        raise HierarchyError("a refit needs at least two LAs left in the training data; use more folds")
    helds = [heldout_within(design, spec, h, t) for h, t in zip(held_sets, trains, strict=True)]
    settings = prov["sampler"]
    layout = make_layout(design)
    data = [fold_data(layout, design, t, "float32" if settings.get("float32") else "float64") for t in trains]
    if log:
        log(f"refitting {label} without each of {len(groups)} LA group(s) in one program "
            f"({len(table):,} rows, the held-out rows masked)")
    res = fit_batch(model_fn(spec, priors, design, layout), data, chains=int(settings.get("chains", 4)),
                    tune=int(settings.get("tune", 1000)), draws=int(settings.get("draws", 1000)),
                    seed=int(settings.get("seed", 0)), target_accept=float(settings.get("target_accept", 0.8)),
                    warmup_tree_depth=int(settings.get("warmup_tree_depth", 6)), vectorize=vectorize)
    if log:
        log(f"{len(groups)} refits of {label} done in {res.timings['compile'] + res.timings['run']:.0f} s "
            f"({res.timings['compile']:.0f} s compiling)")
    out = []
    for b, (held, train) in enumerate(zip(helds, trains, strict=True)):
        post = {k: v.reshape((-1,) + v.shape[2:]) for k, v in res.fit(b)[0].items()}
        lpd = la_lpd(la_log_predictive(spec, held, post))
        d = res.diagnostics[b]
        test = table[np.isin(codes, held_sets[b])].reset_index(drop=True)
        facts = {"status": "batched", "train_rows": int(train.sum()),
                 "train_data_hash": data_hash(table[~np.isin(codes, held_sets[b])].reset_index(drop=True),
                                              **spec.hashed_columns),
                 "heldout_rows": held.n_rows, "heldout_data_hash": data_hash(test, **spec.hashed_columns),
                 "diagnostics": d["status"] + (": " + "; ".join(d["reasons"]) if d["reasons"] else "")}
        out.append((pd.Series(lpd, index=pd.Index(held.las, name="la")), facts))
    return out


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


def refit_plan(las: Sequence[str], bad: dict[str, Sequence[str]], *, cv: str, folds: int, max_refits: int,
               seed: int = 0) -> tuple[str, dict[str, list[list[str]]], pd.Series, str]:
    """Which refits grouped cross-validation runs, within a budget of ``max_refits`` per model.

    * ``cv="la-kfold"``: ``folds`` refits per model, each without one fold of LAs; refused when
      ``folds`` is above ``max_refits``;
    * ``cv="la"``: the LAs whose Pareto k is above the threshold (``bad``) are refitted one by one
      when there are at most ``max_refits`` of them in every model; when there are more, K-fold by
      LA with ``min(folds, max_refits)`` folds replaces PSIS for every LA (each LA is still left out
      once, by a coarser split); with a budget below 2 no K-fold is possible and PSIS is kept, the
      unreliable LAs flagged.

    Parameters
    ----------
    las : sequence of str
        LA codes, in the order of the pointwise values.
    bad : dict of str to sequence of str
        Model name -> LA codes whose Pareto k is above the threshold.
    cv : {"la", "la-kfold"}
    folds, max_refits, seed : int
        ``--folds``, ``--max-refits`` and the seed of the fold assignment.

    Returns
    -------
    (str, dict, pandas.Series, str)
        The method (``"psis"``, ``"exact"`` or ``"kfold"``), model name -> the LA groups of its
        refits, each LA's fold (-1: none) and why, in words.
    """
    las = [str(c) for c in las]
    no_fold = pd.Series(-1, index=pd.Index(las, name="la"))
    n_bad = max((len(b) for b in bad.values()), default=0)
    if cv == "la-kfold":
        if folds > max_refits:
            raise HierarchyError(f"--cv la-kfold --folds {folds} needs {folds} refits per model, more than "
                                 f"--max-refits {max_refits}: lower --folds or raise --max-refits")
        k, why = folds, f"K-fold by LA, {folds} folds (asked for)"
    elif n_bad == 0:
        return "psis", {n: [] for n in bad}, no_fold, "every LA-level Pareto k is at most the threshold"
    elif n_bad <= max_refits:
        return ("exact", {n: [[str(c)] for c in b] for n, b in bad.items()}, no_fold,
                f"{n_bad} LA(s) with Pareto k above the threshold, each refitted exactly "
                f"(within --max-refits {max_refits})")
    elif max_refits < 2:
        return ("psis", {n: [] for n in bad}, no_fold,
                f"--max-refits {max_refits}: {n_bad} LA(s) with Pareto k above the threshold, more than "
                "that to refit one by one and too few refits for K-fold by LA (2 at least), so PSIS is kept "
                "and those LAs are flagged")
    else:
        k = min(folds, max_refits, len(las))
        why = (f"{n_bad} LA(s) with Pareto k above the threshold, more than --max-refits {max_refits}: "
               f"K-fold by LA with {k} folds instead (min(--folds {folds}, --max-refits {max_refits}))")
    fold_of = la_folds(las, k, seed=seed)
    groups = [list(fold_of.index[fold_of == f]) for f in range(k)]
    return "kfold", {n: groups for n in bad}, fold_of, why


def fit_seconds(idata) -> float | None:
    """Seconds a fit took (its provenance ``timings``: ``total``, or warm-up plus sampling), or None."""
    from hierarchy.results.fitfile import provenance

    t = provenance(idata).get("timings") or {}
    total = t.get("total", (t.get("warmup") or 0.0) + (t.get("sampling") or 0.0))
    return float(total) if total else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def refit_budget_line(plan: dict[str, list[list[str]]], seconds: dict[str, float | None], why: str) -> str:
    """One line said before any refit: how many refits will run and how long they are likely to take.

    The estimate is each model's own fit time (its provenance) per refit: a refit has fewer rows
    and the same sampler settings, so this is an upper estimate; refits saved by an earlier run are
    reused and take seconds.

    Parameters
    ----------
    plan : dict
        Model name -> LA groups of its refits (:func:`refit_plan`).
    seconds : dict
        Model name -> its fit's seconds (:func:`fit_seconds`; None: unknown).
    why : str
        The reason of the plan.
    """
    n = sum(len(g) for g in plan.values())
    if n == 0:
        return f"grouped cross-validation: no refits ({why})"
    per = ", ".join(f"{m} {len(g)}" for m, g in plan.items())
    known = {m: s for m, s in seconds.items() if s}
    total = sum(len(plan[m]) * s for m, s in known.items())
    eta = (f"about {_duration(total)} at most (each model's own fit time per refit: "
           + ", ".join(f"{m} {s:.0f} s" for m, s in known.items()) + "; saved refits are reused)"
           if len(known) == len(plan) else "time unknown until the first refit (no fit time recorded)")
    return f"grouped cross-validation: {n} refits ({per}), {eta}; {why}. Cap them with --max-refits N."


def refit_progress_line(done: int, total: int, elapsed: float) -> str:
    """Progress after ``done`` of ``total`` refits, ``elapsed`` seconds in: the time left as measured so far."""
    left = elapsed / done * (total - done) if done else float("nan")
    return (f"refit {done} of {total} done after {_duration(elapsed)}"
            + (f"; about {_duration(left)} left" if done < total else ""))

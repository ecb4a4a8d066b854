"""The log predictive density of a held-out LA, its LA effects integrated out (:mod:`hierarchy.results.cv`).

:func:`la_log_predictive` integrates a held-out LA's effects over a draw's LA-level distribution by
adaptive Gauss-Hermite quadrature around the mode; :func:`la_integrated_log_likelihood` gives that
term for every LA of a fit (PSIS leave-one-LA-out), :func:`la_lpd` averages it over draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.inference import blocks
from hierarchy.language.design import build_design
from hierarchy.likelihood import families
from hierarchy.results.cv_heldout import HeldOut, own_rows, refuse_unsupported

GAUSS_HERMITE_NODES = 12
"""Quadrature nodes per LA effect (12 x 12 = 144 points for an LA intercept and gradient)."""
NEWTON_STEPS = 40
"""Newton steps to the mode of each held-out LA's effects (each step at most 1 on the log scale)."""

__all__ = ["GAUSS_HERMITE_NODES", "NEWTON_STEPS", "flat_posterior", "la_integrated_log_likelihood",
           "la_log_predictive", "la_lpd"]


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
        :func:`~hierarchy.results.cv_heldout.heldout_rows`.
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
    refuse_unsupported(spec, "held-out LAs")
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
        prec = blocks.inverse_spd(sigma)
        lik = {k: p[k] for k in fam.likelihood_params}  # the family's parameters (NB dispersion...)

        def grad_hess(a):
            _, l1, l2 = fam.row_derivatives(y, c + jnp.sum(a[la] * D, -1), lik)
            g = seg(l1[:, None] * D) - (a - mu) @ prec
            h = seg(l2[:, None, None] * D[:, :, None] * D[:, None, :]) - prec
            return g, h

        def newton(a, _):
            g, h = grad_hess(a)
            step = -blocks.solve(-h, g)  # h negative definite (blocks: no LAPACK, see its docstring)
            size = jnp.sqrt(jnp.sum(step ** 2, -1, keepdims=True))
            return a - step * jnp.minimum(1.0, 1.0 / jnp.maximum(size, 1e-300)), None

        mode, _ = jax.lax.scan(newton, mu, None, length=NEWTON_STEPS)
        _, h = grad_hess(mode)
        chol = blocks.cholesky(blocks.inverse_spd(-h))  # (J, E, E)
        A = mode[:, None, :] + jnp.sqrt(2.0) * jnp.einsum("jef,kf->jke", chol, X)  # (J, K, E)
        eta = c[:, None] + jnp.einsum("nke,ne->nk", A[la], D)
        ll = fam.logpmf(y[:, None], eta, {k: jnp.reshape(v, (-1, 1)) for k, v in lik.items()}, jnp)
        dev = A - mu[:, None, :]
        prior = (-0.5 * jnp.einsum("jke,ef,jkf->jk", dev, prec, dev)
                 - 0.5 * (E * jnp.log(2 * jnp.pi) + blocks.logdet_spd(sigma)))
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

    The LA's rows summed given its *fitted* effects (:func:`~hierarchy.results.cv.la_log_likelihood`) make
    PSIS weights ``1 / p(y_LA | a_LA, theta)`` that are far from the leave-one-LA-out posterior, so their Pareto k
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

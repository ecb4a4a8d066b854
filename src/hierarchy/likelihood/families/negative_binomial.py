"""Negative binomial counts (NB2): mean ``mu = exp(eta)``, dispersion ``phi``, variance ``mu + mu^2 / phi``."""

from __future__ import annotations

import functools

import numpy as np

from hierarchy.likelihood.families import Family
from hierarchy.likelihood.families._rows import (
    gammaln,
    in_row_precision,
    log_in_two,
    row_arrays,
    total,
    with_chunk_gradient,
)

PARAMETERS = (dict(name="dispersion", role="hyper", prior_group="dispersion", per_stage=True, predictor=True,
                   meaning="negative binomial dispersion phi (variance mu + mu^2 / phi)"),)


def logpmf(y, eta, params: dict, xp):
    """The NB2 log density of each row with every constant; ``params["dispersion"]`` is ``phi``."""
    phi = params["dispersion"]
    lg = gammaln(xp)
    return (lg(y + phi) - lg(phi) - lg(y + 1) + phi * xp.log(phi)
            + y * eta - (y + phi) * xp.logaddexp(xp.log(phi), eta))


def row_terms(y, eta, phi, log_phi_mu, log_1_mu_phi):
    """``-y log(1 + phi / mu) - phi log(1 + mu / phi)`` per row: the log density less its ``lgamma`` terms,
    summed as terms of a few units, not two of ~40 that nearly cancel, so float32 rows round it ~5 times
    less (at 427k rows the plain form's rounding stalled NUTS' warm-up, bench/RESULTS.md, multi-year)."""
    return -(y * (log_phi_mu - eta) + phi * log_1_mu_phi)


def row_derivatives(y, eta, params: dict) -> tuple:
    """:func:`row_terms` and its first and second derivatives in ``eta`` (one ``exp`` per row)."""
    import jax.numpy as jnp

    phi = params["dispersion"]
    mu = jnp.exp(eta)
    log_phi_mu = jnp.log(phi + mu)
    value = row_terms(y, eta, phi, log_phi_mu, log_phi_mu - jnp.log(phi))
    r = phi / (phi + mu)
    return value, r * (y - mu), -r * mu * (phi + y) / (phi + mu)


def row_third(y, eta, params: dict) -> tuple:
    """The derivatives of :func:`row_derivatives` beyond it: the third derivative in ``eta`` and, for
    ``dispersion``, those of the value and of the first and second derivatives in ``phi`` (the Laplace
    mode's gradient of its log-determinant, :mod:`hierarchy.inference.laplace`)."""
    import jax.numpy as jnp

    phi = params["dispersion"]
    mu = jnp.exp(eta)
    s = phi + mu
    log_1_mu_phi = jnp.log(s) - jnp.log(phi)
    d2 = -phi * mu * (phi + y) / s**2
    d_phi = (-log_1_mu_phi + (mu - y) / s, (y - mu) * mu / s**2, -mu * (mu * (2 * phi + y) - y * phi) / s**3)
    return d2 * (phi - mu) / s, {"dispersion": d_phi}


def draw(rng: np.random.Generator, mu: np.ndarray, params: dict) -> np.ndarray:
    """NB2 counts at means ``mu``: Poisson given a gamma rate."""
    phi = params["dispersion"]
    return rng.poisson(rng.gamma(phi, mu / phi))


def rows(a, b, phi, per_row, log_exposure, w, y, mask):
    """NB log-likelihood over chunk rows, less its ``lgamma`` terms, at ``eta = log_exposure + a + b w +
    per_row``; ``a, b, phi`` are (K, 1) per chunk (:func:`row_terms`)."""
    import jax.numpy as jnp

    dtype = jnp.result_type(a)
    hi, lo = log_in_two(phi, y.dtype)
    a, b, phi, per_row = in_row_precision(y, a, b, phi, per_row)
    eta = log_exposure + a + b * w + per_row
    log_phi_mu = jnp.log(phi + jnp.exp(eta))
    return total(mask * row_terms(y, eta, phi, log_phi_mu, (log_phi_mu - hi) - lo), dtype)


@functools.cache
def chunks():
    """:func:`rows` without per-row terms, with a hand-written gradient: its forward pass reduces the row
    derivatives to one value per chunk, so the backward pass reads no per-row arrays (about twice as fast
    as JAX's own gradient on CPU in float32, bench/RESULTS.md)."""
    import jax.numpy as jnp

    def fwd(a, b, phi, log_exposure, w, y, mask):
        dtype = jnp.result_type(a)
        own = [jnp.result_type(x) for x in (a, b, phi)]  # each gradient in its input's dtype (a folded
        hi, lo = log_in_two(phi, y.dtype)                # group term makes a float64 beside a float32 b)
        a, b, phi = in_row_precision(y, a, b, phi)
        eta = log_exposure + a + b * w
        mu = jnp.exp(eta)
        log_phi_mu = jnp.log(phi + mu)
        log_1_mu_phi = (log_phi_mu - hi) - lo  # log(1 + mu / phi)
        d_eta = mask * phi * (y - mu) / (phi + mu)
        grads = (jnp.sum(d_eta, 1, keepdims=True, dtype=own[0]),  # into each input's dtype: see _rows.total
                 jnp.sum(d_eta * w, 1, keepdims=True, dtype=own[1]),
                 jnp.sum(-mask * (log_1_mu_phi + (y - mu) / (phi + mu)), 1, keepdims=True, dtype=own[2]))
        return total(mask * row_terms(y, eta, phi, log_phi_mu, log_1_mu_phi), dtype), grads

    return with_chunk_gradient(fwd)


def dispersion_site(priors, stage_param, row_dtype):
    """The dispersion ``phi`` (one per stage when stacked), at the rows' precision everywhere: the float32
    rows see phi rounded, and the float64 ``lgamma`` terms must see the same value, or the log density
    jumps with each float32 step of phi (bench/RESULTS.md, float32 rows at 400k rows)."""
    import jax
    import jax.numpy as jnp

    phi = jnp.atleast_1d(stage_param("dispersion", "dispersion"))  # (S,)
    return phi + jax.lax.stop_gradient(phi.astype(row_dtype).astype(phi.dtype) - phi)


def numpyro_sites(priors, stage_param, row_dtype) -> dict:
    """The dispersion site (see :func:`dispersion_site`)."""
    return {"dispersion": dispersion_site(priors, stage_param, row_dtype)}


def lgamma_terms(arr: dict, phi, phi_k):
    """``sum_i lgamma(y_i + phi) - lgamma(phi)``: by the count histogram (a few hundred count values
    instead of every row), or row by row when the layout has none; ``phi`` (S,), ``phi_k`` (K, 1)."""
    import jax.numpy as jnp
    from jax.scipy.special import gammaln as lg

    dtype = jnp.result_type(float)
    if arr["y_hist"].shape[1]:
        values = jnp.arange(arr["y_hist"].shape[1], dtype=dtype)
        lgamma_y_phi = jnp.sum(arr["y_hist"] * lg(values[None, :] + phi[:, None]))
    else:
        lgamma_y_phi = total(arr["mask"] * lg(arr["y"] + phi_k.astype(arr["y"].dtype)), dtype)
    return lgamma_y_phi - jnp.sum(arr["n_stage_rows"] * lg(phi))


def loglik_rest(arr: dict, chunk: dict, first_chunk):
    """:func:`numpyro_loglik` less its rows' :func:`row_terms` (the ``lgamma`` terms), from each chunk's
    dispersion ``chunk["dispersion"]`` (K,); ``first_chunk`` (S,) a chunk of each stage (any chunk for a
    stage without rows). The Laplace mode adds the rows' sum it has computed already."""
    phi_k = chunk["dispersion"]
    return lgamma_terms(arr, phi_k[first_chunk], phi_k[:, None])


def numpyro_loglik(arr: dict, a, b, per_row, sites: dict, chunk: dict):
    """The chunked log-likelihood less ``sum lgamma(y + 1)``; ``per_row`` None: the fast chunk path."""
    phi_k = chunk["dispersion"]
    return (lgamma_terms(arr, sites["dispersion"], phi_k)
            + (chunks()(a, b, phi_k, *row_arrays(arr)) if per_row is None else
               rows(a, b, phi_k, per_row, *row_arrays(arr))))


def pymc_likelihood(name: str, eta, priors, sdims, stage_index, observed, dims) -> None:
    """The dispersion and the observed NB variable (inside a PyMC model)."""
    import pymc as pm
    import pytensor.tensor as pt

    phi = pt.atleast_1d(priors["dispersion"].pymc("dispersion", dims=sdims))[stage_index]
    pm.NegativeBinomial(name, mu=pt.exp(eta), alpha=phi, observed=observed, dims=dims)


FAMILY = Family(name="negative_binomial", rank=1, description="negative binomial (NB2: variance mu + mu^2 / phi)",
                logpmf=logpmf, row_derivatives=row_derivatives, draw=draw, numpyro_sites=numpyro_sites,
                numpyro_loglik=numpyro_loglik, pymc_likelihood=pymc_likelihood, parameters=PARAMETERS,
                prior_groups={"dispersion": "positive"}, likelihood_params=("dispersion",),
                row_third=row_third, loglik_rest=loglik_rest)

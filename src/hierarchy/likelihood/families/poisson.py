"""Poisson counts: ``y ~ Poisson(mu)``, ``mu = exp(eta)``, variance ``mu``."""

from __future__ import annotations

import functools

import numpy as np

from hierarchy.likelihood.families import Family
from hierarchy.likelihood.families._rows import (
    eta_of,
    gammaln,
    in_row_precision,
    row_arrays,
    total,
    with_chunk_gradient,
)


def logpmf(y, eta, params: dict, xp):
    """``y eta - exp(eta) - lgamma(y + 1)`` per row (``params`` unused)."""
    return y * eta - xp.exp(eta) - gammaln(xp)(y + 1)


def saturated(y, eta):
    """``y (eta - log y) - (exp(eta) - y)`` per row (``y log y = 0`` at ``y = 0``): the row log density
    less ``lgamma(y + 1)`` and ``y log y - y``, terms of a few units that float32 rounds far less than
    ``y eta - mu``."""
    import jax.numpy as jnp

    return y * (eta - jnp.log(jnp.where(y > 0, y, 1))) - (jnp.exp(eta) - y)


def row_derivatives(y, eta, params: dict) -> tuple:
    """:func:`saturated` and its first and second derivatives in ``eta``."""
    import jax.numpy as jnp

    mu = jnp.exp(eta)
    return saturated(y, eta), y - mu, -mu


def row_third(y, eta, params: dict) -> tuple:
    """The third derivative of :func:`saturated` in ``eta``, and no likelihood parameters to differentiate
    in (see the negative binomial's ``row_third``)."""
    import jax.numpy as jnp

    return -jnp.exp(eta), {}


def draw(rng: np.random.Generator, mu: np.ndarray, params: dict) -> np.ndarray:
    """Poisson counts at means ``mu``."""
    return rng.poisson(mu)


def rows(a, b, per_row, log_exposure, w, y, mask):
    """Poisson log-likelihood over chunk rows, less ``lgamma(y + 1)`` and ``y log y - y`` (the model adds
    that back as one float64 total), at ``eta = log_exposure + a + b w + per_row``; ``a, b`` (K, 1)."""
    import jax.numpy as jnp

    dtype = jnp.result_type(a)
    a, b, per_row = in_row_precision(y, a, b, per_row)
    eta = log_exposure + a + b * w + per_row
    return total(mask * saturated(y, eta), dtype)


@functools.cache
def chunks():
    """:func:`rows` without per-row terms, with a hand-written gradient: its forward pass reduces the row
    derivatives to one value per chunk, so the backward pass reads no per-row arrays."""
    import jax.numpy as jnp

    def fwd(a, b, log_exposure, w, y, mask):
        dtype = jnp.result_type(a)
        own = [jnp.result_type(x) for x in (a, b)]  # each gradient in its input's dtype
        eta = eta_of(a, b, None, log_exposure, w, y)
        d_eta = mask * (y - jnp.exp(eta))
        grads = (jnp.sum(d_eta, 1, keepdims=True, dtype=own[0]),  # into each input's dtype: see _rows.total
                 jnp.sum(d_eta * w, 1, keepdims=True, dtype=own[1]))
        return total(mask * saturated(y, eta), dtype), grads

    return with_chunk_gradient(fwd)


def numpyro_sites(priors, stage_param, row_dtype) -> dict:
    """No likelihood parameters."""
    return {}


def loglik_rest(arr: dict, chunk: dict, first_chunk):
    """:func:`numpyro_loglik` less its rows' :func:`saturated` terms (``sum y log y - y``; see the
    negative binomial's ``loglik_rest``)."""
    return arr["y_log_y"]


def numpyro_loglik(arr: dict, a, b, per_row, sites: dict, chunk: dict):
    """The chunked log-likelihood less ``sum lgamma(y + 1)``; ``per_row`` None: the fast chunk path."""
    return arr["y_log_y"] + (chunks()(a, b, *row_arrays(arr)) if per_row is None else
                             rows(a, b, per_row, *row_arrays(arr)))


def pymc_likelihood(name: str, eta, priors, sdims, stage_index, observed, dims) -> None:
    """The observed Poisson variable (inside a PyMC model)."""
    import pymc as pm
    import pytensor.tensor as pt

    pm.Poisson(name, mu=pt.exp(eta), observed=observed, dims=dims)


FAMILY = Family(name="poisson", rank=0, description="Poisson (variance mu)", logpmf=logpmf,
                row_derivatives=row_derivatives, draw=draw, numpyro_sites=numpyro_sites,
                numpyro_loglik=numpyro_loglik, pymc_likelihood=pymc_likelihood,
                row_third=row_third, loglik_rest=loglik_rest)

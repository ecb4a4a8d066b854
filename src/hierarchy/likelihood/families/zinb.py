"""Zero-inflated negative binomial counts: a structural zero with probability ``zi``, else NB2.

``P(y = 0) = zi + (1 - zi) NB(0 | mu, phi)``, ``P(y = k) = (1 - zi) NB(k | mu, phi)`` for ``k > 0``: mean
``(1 - zi) mu``. For sparse neighbourhood x stratum counts where some cells cannot have a case (no service
contact, a stratum absent from an area) beyond what the NB's own zeros allow. ``zi`` (one per stage when
stages are stacked) has the prior group ``zero_inflation`` (shipped: Beta(1, 9), mean 0.1); ``dispersion``
is the negative binomial's.

The Laplace mode refuses it: at a zero count the row log density falls from 0 to ``log zi`` along a
sigmoid in ``eta``, so it is convex there (:func:`row_derivatives`'s second derivative is positive) and
the latent effects' conditional posterior need not be log-concave.
"""

from __future__ import annotations

import numpy as np

from hierarchy.likelihood.families import Family
from hierarchy.likelihood.families import negative_binomial as nb
from hierarchy.likelihood.families._rows import in_row_precision, log_in_two, row_arrays, total

PARAMETERS = (*nb.PARAMETERS,
              dict(name="zi", role="hyper", prior_group="zero_inflation", per_stage=True, predictor=True,
                   meaning="zero-inflation probability: share of structural zeros (zinb)"))


def _inflated(y, nb_log_density, zi, xp):
    """The zero-inflated row log density from the NB's (``zi`` broadcasts against it)."""
    kept = xp.log1p(-zi) + nb_log_density
    return xp.where(y > 0, kept, xp.logaddexp(xp.log(zi), kept))


def logpmf(y, eta, params: dict, xp):
    """Each row's log density with every constant; ``params``: ``dispersion`` (phi) and ``zi``."""
    return _inflated(y, nb.logpmf(y, eta, params, xp), params["zi"], xp)


def row_derivatives(y, eta, params: dict) -> tuple:
    """The model's row terms (the NB's :func:`~hierarchy.likelihood.families.negative_binomial.row_terms`,
    zero-inflated) and their first and second derivatives in ``eta``. At a zero count, with ``s`` the NB
    part's share of ``P(y = 0)``: ``f' = s t'``, ``f'' = s t'' + s (1 - s) t'^2`` (``t`` the NB's term)."""
    import jax.numpy as jnp

    t, t1, t2 = nb.row_derivatives(y, eta, params)
    zi = params["zi"]
    kept = jnp.log1p(-zi) + t
    f0 = jnp.logaddexp(jnp.log(zi), kept)
    s = jnp.exp(kept - f0)
    positive = y > 0
    return (jnp.where(positive, kept, f0), jnp.where(positive, t1, s * t1),
            jnp.where(positive, t2, s * t2 + s * (1 - s) * t1**2))


def draw(rng: np.random.Generator, mu: np.ndarray, params: dict) -> np.ndarray:
    """Counts at NB means ``mu``: NB2 draws, each set to zero with probability ``zi``."""
    y = nb.draw(rng, mu, params)
    return np.where(rng.random(np.shape(y)) < params["zi"], 0, y)


def rows(a, b, phi, zi, per_row, log_exposure, w, y, mask):
    """Log-likelihood over chunk rows less the NB's ``lgamma`` terms (which cancel at zero counts, so
    :func:`~hierarchy.likelihood.families.negative_binomial.lgamma_terms` adds them for every row);
    ``a, b, phi, zi`` (K, 1) per chunk, ``per_row`` (K, C) or 0.0. JAX differentiates it."""
    import jax.numpy as jnp

    dtype = jnp.result_type(a)
    hi, lo = log_in_two(phi, y.dtype)
    a, b, phi, zi, per_row = in_row_precision(y, a, b, phi, zi, per_row)
    eta = log_exposure + a + b * w + per_row
    log_phi_mu = jnp.log(phi + jnp.exp(eta))
    t = nb.row_terms(y, eta, phi, log_phi_mu, (log_phi_mu - hi) - lo)
    return total(mask * _inflated(y, t, zi, jnp), dtype)


def numpyro_sites(priors, stage_param, row_dtype) -> dict:
    """The NB's dispersion and ``zi`` (one per stage when stacked)."""
    import jax.numpy as jnp

    phi = nb.dispersion_site(priors, stage_param, row_dtype)
    return {"dispersion": phi, "zi": jnp.atleast_1d(stage_param("zi", "zero_inflation"))}


def numpyro_loglik(arr: dict, a, b, per_row, sites: dict, chunk: dict):
    """The chunked log-likelihood less ``sum lgamma(y + 1)``."""
    phi_k = chunk["dispersion"]
    return (nb.lgamma_terms(arr, sites["dispersion"], phi_k)
            + rows(a, b, phi_k, chunk["zi"], 0.0 if per_row is None else per_row, *row_arrays(arr)))


def pymc_likelihood(name: str, eta, priors, sdims, stage_index, observed, dims) -> None:
    """The dispersion, ``zi`` and the observed variable (PyMC's ``psi`` is ``1 - zi``)."""
    import pymc as pm
    import pytensor.tensor as pt

    phi = pt.atleast_1d(priors["dispersion"].pymc("dispersion", dims=sdims))[stage_index]
    zi = pt.atleast_1d(priors["zero_inflation"].pymc("zi", dims=sdims))[stage_index]
    pm.ZeroInflatedNegativeBinomial(name, psi=1.0 - zi, mu=pt.exp(eta), alpha=phi, observed=observed, dims=dims)


FAMILY = Family(name="zinb", rank=3, description="zero-inflated negative binomial (structural zeros with "
                "probability zi, else NB2)", logpmf=logpmf, row_derivatives=row_derivatives, draw=draw,
                numpyro_sites=numpyro_sites, numpyro_loglik=numpyro_loglik, pymc_likelihood=pymc_likelihood,
                parameters=PARAMETERS, prior_groups={"dispersion": "positive", "zero_inflation": "unit"},
                likelihood_params=("dispersion", "zi"),
                laplace_refusal=("the zero-inflated negative binomial (family zinb) is outside the Laplace "
                                 "regime: at a zero count its row log density falls from 0 to log(zi) along a "
                                 "sigmoid in the log mean, so it is not log-concave and Newton's mode and "
                                 "Gaussian approximation of the LA effects are not assured"))

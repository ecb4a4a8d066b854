"""Poisson-lognormal counts: Poisson given one log-normal effect per row, ``eta + obs_sd * eps_raw``.

The row effect enters the one linear predictor (:func:`hierarchy.likelihood.predictor.row_terms` reads
``eps_raw`` and ``obs_sd``), so the likelihood given it is the Poisson family's; fits do not keep it, so a
fit's pointwise log-likelihood integrates it out (:func:`marginal_loglik`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hierarchy.likelihood.families import Family, poisson

if TYPE_CHECKING:
    from hierarchy.language.design import Design

PARAMETERS = (dict(name="obs_sd", role="hyper", prior_group="obs_sd", predictor=True, within_la_sd=True,
                   meaning="SD of the observation-level effects"),
              dict(name="eps_raw", role="per_row", predictor=True))


def numpyro_row_sites(priors, n_rows: int) -> dict:
    """``obs_sd`` and the standard normal row effects ``eps_raw`` (NumPyro sites, inside a model)."""
    import numpyro
    import numpyro.distributions as nd

    return {"obs_sd": numpyro.sample("obs_sd", priors["obs_sd"].numpyro()),
            "eps_raw": numpyro.sample("eps_raw", nd.Normal(0.0, 1.0).expand([n_rows]).to_event(1))}


def pymc_row_sites(priors) -> dict:
    """The PyMC twin of :func:`numpyro_row_sites` (inside a model with a ``neighbourhood`` dimension)."""
    import pymc as pm

    return {"obs_sd": priors["obs_sd"].pymc("obs_sd"),
            "eps_raw": pm.Normal("eps_raw", 0.0, 1.0, dims="neighbourhood")}


def draw_row_sites(rng: np.random.Generator, shape: int | tuple[int, ...]) -> dict:
    """Row effects drawn afresh (fits do not keep them): ``shape`` is the row count, or (draws, rows)."""
    return {"eps_raw": rng.standard_normal(shape)}


def marginal_loglik(design: Design, posterior: dict[str, np.ndarray], *, nodes: int, batch: int = 100
                    ) -> np.ndarray:
    """Each row's log-likelihood at each draw with its row effect integrated out, ``(draws, rows)`` float32:
    log of int Poisson(y | exp(eta + s e)) N(e | 0, 1) de, adaptive Gauss-Hermite (``nodes`` nodes) per row.

    ``posterior`` holds the draws of the predictor's parameters (leading draw axis; no ``eps_raw``: fits do
    not keep it), as :func:`hierarchy.results.fitfile.pointwise_log_likelihood` passes them.
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import gammaln, logsumexp

    from hierarchy.likelihood.jaxmodel import ROW_PARAMS, _row_eta
    from hierarchy.likelihood.predictor import over_draws

    x, w = np.polynomial.hermite.hermgauss(nodes)
    x, logw = jnp.asarray(x), jnp.asarray(np.log(w))
    y = jnp.asarray(design.y, dtype=float)

    def one(p):
        eta = _row_eta(design, p, jnp)
        s = p["obs_sd"]

        def g(e):  # log joint of the observation-level effect e
            lin = eta + s * e
            return y * lin - jnp.exp(lin) - gammaln(y + 1) - 0.5 * e ** 2

        def newton(e, _):
            lam = jnp.exp(eta + s * e)
            grad, hess = s * (y - lam) - e, -(s ** 2) * lam - 1.0
            return e - grad / hess, None

        start = jnp.clip((jnp.log(jnp.maximum(y, 0.5)) - eta) / s, -8.0, 8.0)
        mode, _ = jax.lax.scan(newton, start, None, length=30)
        sd = 1.0 / jnp.sqrt(s ** 2 * jnp.exp(eta + s * mode) + 1.0)
        points = mode[:, None] + jnp.sqrt(2.0) * sd[:, None] * x[None, :]  # the nodes about each row's mode
        gk = jax.vmap(g, in_axes=1, out_axes=1)(points)
        return (logsumexp(logw[None, :] + gk + x[None, :] ** 2, axis=1)
                + jnp.log(jnp.sqrt(2.0) * sd) - 0.5 * jnp.log(2 * jnp.pi))

    keys = [k for k in ROW_PARAMS if k in posterior and k != "eps_raw"]
    return over_draws(one, {k: posterior[k] for k in keys}, batch=batch, dtype=np.float32)


FAMILY = Family(name="poisson_lognormal", rank=2,
                description="Poisson-lognormal (Poisson given a log-normal effect per row)",
                logpmf=poisson.logpmf, row_derivatives=poisson.row_derivatives, draw=poisson.draw,
                numpyro_sites=poisson.numpyro_sites, numpyro_loglik=poisson.numpyro_loglik,
                pymc_likelihood=poisson.pymc_likelihood, parameters=PARAMETERS,
                prior_groups={"obs_sd": "positive"}, numpyro_row_sites=numpyro_row_sites,
                pymc_row_sites=pymc_row_sites, draw_row_sites=draw_row_sites, marginal_loglik=marginal_loglik,
                laplace_refusal=("Poisson-lognormal row effects (family poisson_lognormal: one latent effect per "
                                 "row, each resting on one count) are outside the Laplace regime"))

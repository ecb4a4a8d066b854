"""Poisson-lognormal counts: Poisson given one log-normal effect per row, ``eta + obs_sd * eps_raw``.

The row effect enters the one linear predictor (:func:`hierarchy.likelihood.predictor.row_terms` reads
``eps_raw`` and ``obs_sd``), so the likelihood given it is the Poisson family's.
"""

from __future__ import annotations

import numpy as np

from hierarchy.likelihood.families import Family, poisson

PARAMETERS = (dict(name="obs_sd", role="hyper", prior_group="obs_sd", predictor=True,
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


FAMILY = Family(name="poisson_lognormal", rank=2,
                description="Poisson-lognormal (Poisson given a log-normal effect per row)",
                logpmf=poisson.logpmf, row_derivatives=poisson.row_derivatives, draw=poisson.draw,
                numpyro_sites=poisson.numpyro_sites, numpyro_loglik=poisson.numpyro_loglik,
                pymc_likelihood=poisson.pymc_likelihood, parameters=PARAMETERS,
                prior_groups={"obs_sd": "positive"}, numpyro_row_sites=numpyro_row_sites,
                pymc_row_sites=pymc_row_sites, draw_row_sites=draw_row_sites,
                laplace_refusal=("Poisson-lognormal row effects (family poisson_lognormal: one latent effect per "
                                 "row, each resting on one count) are outside the Laplace regime"))

"""The count families, one module each: everything about a family is declared once, in its module.

A family module (``poisson``, ``negative_binomial``, ``poisson_lognormal``, ``zinb``) defines ``FAMILY``, a
:class:`Family`: its name (the model file's ``family = "..."``), its parameters (rows of the parameter
table, :mod:`hierarchy.likelihood.parameters`) and their prior groups with the support each prior must
have, and the functions every layer needs:

* ``logpmf(y, eta, params, xp)``: each row's log density with every constant, at log mean ``eta``;
  xp-generic (numpy or ``jax.numpy``); ``params`` maps the family's likelihood parameters to arrays that
  broadcast against ``y`` (pointwise log-likelihood, cross-validation, tests);
* ``row_derivatives(y, eta, params)``: the NumPyro model's own row terms (free of ``lgamma`` per row)
  and their first and second derivatives in ``eta`` (the Laplace mode's Newton steps, JAX);
* ``draw(rng, mu, params)``: counts at means ``mu`` (numpy; simulation, SBC, predictive checks);
* ``numpyro_sites`` / ``numpyro_loglik``: the NumPyro sites of its likelihood parameters and its
  chunked log-likelihood (:mod:`hierarchy.likelihood.jaxmodel`), with hand-written chunk gradients where
  the family has them;
* ``numpyro_row_sites`` / ``pymc_row_sites`` / ``draw_row_sites``: per-row effects the predictor reads
  (Poisson-lognormal's ``eps_raw`` times ``obs_sd``);
* ``pymc_likelihood``: its parameters and observed variable in a PyMC model (:mod:`hierarchy.likelihood.model`);
* ``laplace_refusal``: why the Laplace mode cannot marginalise under it (None: it can);
* ``row_third(y, eta, params)`` / ``loglik_rest(arr, chunk, first_chunk)``: the third derivative per row
  (and the likelihood parameters' derivatives) and the log-likelihood's terms outside the rows' sum, for the
  Laplace mode's log-determinant gradient and joint (None: :mod:`hierarchy.inference.laplace` falls back to
  automatic differentiation and the model's own potential);
* ``marginal_loglik(design, posterior, batch=, nodes=)``: for a family with per-row effects that fits do
  not keep (Poisson-lognormal), each row's log-likelihood at each draw with them integrated out (None: the
  row density given the predictor is the log-likelihood;
  :func:`hierarchy.results.fitfile.pointwise_log_likelihood`).

The registry (:func:`get`, :func:`names`) is the package's modules: a new family is one new module.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hierarchy.errors import SpecError


def _none(*args: Any, **kwargs: Any) -> dict:
    return {}


@dataclass(frozen=True)
class Family:
    """One count family (see the module docstring for each function's contract)."""

    name: str
    rank: int  # order in lists and messages
    description: str
    logpmf: Callable
    row_derivatives: Callable
    draw: Callable
    numpyro_sites: Callable  # (priors, stage_param, row_dtype) -> {name: per-stage value}
    numpyro_loglik: Callable  # (arr, a, b, per_row, sites, chunk) -> log-likelihood less sum lgamma(y + 1)
    pymc_likelihood: Callable  # (name, eta, priors, sdims, stage_index, observed, dims) -> None
    parameters: tuple[dict, ...] = ()  # rows of the parameter table
    prior_groups: Mapping[str, str] = field(default_factory=dict)  # prior group -> support
    likelihood_params: tuple[str, ...] = ()  # per-stage parameters the row density reads
    numpyro_row_sites: Callable = _none  # (priors, n_rows) -> {name: value} read by the predictor
    pymc_row_sites: Callable = _none  # (priors) -> {name: value}
    draw_row_sites: Callable = _none  # (rng, rows or (draws, rows)) -> {name: value}: unkept row effects
    laplace_refusal: str | None = None
    marginal_loglik: Callable | None = None  # (design, posterior, batch, nodes) -> (draws, rows) float32
    row_third: Callable | None = None  # (y, eta, params) -> (d3, {param: derivatives}): the Laplace mode's
    loglik_rest: Callable | None = None  # (arr, chunk, first_chunk) -> terms outside the rows' sum

    def stage_params(self, p: Mapping[str, Any], stage_index, xp) -> dict:
        """The likelihood parameters of ``p`` (one value, or one per stage) at each row of ``stage_index``."""
        return {k: xp.atleast_1d(xp.asarray(p[k]))[stage_index] for k in self.likelihood_params}


@functools.cache
def _registry() -> Mapping[str, Family]:
    found = [importlib.import_module(f"{__name__}.{m.name}").FAMILY
             for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return MappingProxyType({f.name: f for f in sorted(found, key=lambda f: (f.rank, f.name))})


def names() -> tuple[str, ...]:
    """Every family's name, in rank order."""
    return tuple(_registry())


def all_families() -> tuple[Family, ...]:
    """Every family, in rank order."""
    return tuple(_registry().values())


def get(name: str) -> Family:
    """The family called ``name``.

    Raises
    ------
    SpecError
        When no module declares it (the message lists those that do).
    """
    try:
        return _registry()[name]
    except KeyError:
        raise SpecError(f"family {name!r} is not one of {', '.join(names())}") from None

"""Simulation-based calibration (Talts et al. 2018) of a model spec under a prior set.

Draw parameters from the prior, counts from the model's likelihood, refit with NUTS, and rank each
true value among thinned posterior draws: for a correct model and sampler the ranks are uniform.

All replicates run as one compiled program (:func:`hierarchy.inference.batch.fit_batch`): NumPyro's
NUTS kernels (``numpyro.infer.hmc.hmc``) are ``vmap``-ped over replicates, with the counts a traced
argument of fixed shape. ``MCMC.run`` would compile again for every replicate.

``method="laplace"`` calibrates the embedded Laplace mode instead (:mod:`hierarchy.inference.laplace`):
each replicate as one ``fit --method laplace`` (the hyperparameters' mode, NUTS on the hyperparameters,
the LA effects drawn given each draw), in turn, with the counts an argument of programs compiled once
for all replicates (:func:`hierarchy.inference.laplace_fit.fit_replicates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood.jaxmodel import draw_counts, hist_len_for, make_layout, model_data, model_fn, with_counts
from hierarchy.likelihood.model import HYPERPARAMETERS


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true values, out of ``n_post`` thinned posterior draws (0..n_post)."""

    ranks: dict[str, np.ndarray]  # parameter label -> (replicates,) ranks
    n_post: int
    divergences: np.ndarray  # (replicates,) divergent transitions after warm-up
    seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # Laplace: per replicate (1st compiles)

    def uniformity(self, bins: int = 8) -> pd.DataFrame:
        """Chi-square test of rank uniformity per parameter, with the bin counts."""
        from scipy import stats

        rows = []
        for name, r in self.ranks.items():
            counts = np.bincount(r * bins // (self.n_post + 1), minlength=bins)
            rows.append({"parameter": name, "p_value": stats.chisquare(counts).pvalue,
                         "bin_counts": counts.tolist()})
        return pd.DataFrame(rows).set_index("parameter")


def _scalars(name: str, value: np.ndarray) -> dict[str, tuple]:
    """Labels and indices of the scalar components of one draw of a parameter to rank."""
    if name == "la_corr":  # the strict lower triangle
        i, j = np.tril_indices(value.shape[-1], -1)
        return {f"la_corr[{a},{b}]": (a, b) for a, b in zip(i, j, strict=True)}
    if name == "la_coef":  # the first LA's coefficients stand in for the rest
        return {f"la_coef[{','.join(map(str, (0, *i)))}]": (0, *i) for i in np.ndindex(value.shape[1:])}
    if value.ndim == 0:
        return {name: ()}
    return {f"{name}[{','.join(map(str, i))}]": i for i in np.ndindex(value.shape)}


def sbc(spec: ModelSpec, priors: PriorSet, design: Design, *, replicates: int = 100, warmup: int = 300,
        draws: int = 300, thin: int = 3, seed: int = 0, fit_priors: PriorSet | None = None,
        vectorize: bool | None = None, method: str = "nuts", chains: int = 1) -> SBCResult:
    """Simulation-based calibration of ``spec`` under ``priors`` on the design of ``design``.

    Parameters
    ----------
    spec, priors, design
        The model, the prior set and the geography/exposures (the design's counts are ignored).
    replicates
        Number of prior draws, each refitted with ``chains`` chains.
    warmup, draws, thin
        NUTS warm-up and kept iterations; every ``thin``-th draw is used for the ranks.
    seed
        Seeds the prior draws, the simulated counts and the chains.
    fit_priors
        Refit under these priors instead (SBC should then flag the mismatch).
    vectorize
        NUTS: refit the replicates side by side (``jax.vmap``, the default) or in turn (``jax.lax.map``):
        the same draws (:func:`hierarchy.inference.batch.fit_batch`). Laplace fits run in turn (each
        replicate's mode is found on the host); True is refused.
    method : {"nuts", "laplace"}
        Refit by NUTS on every parameter, or by the embedded Laplace mode (NUTS on the hyperparameters, a
        fixed ``warmup`` + ``draws`` per chain: no sampling on to the bar).
    chains
        Chains per replicate (NUTS: 1 only; Laplace: side by side); the ranks use every chain's thinned
        draws.

    Returns
    -------
    SBCResult
        Ranks for every scalar hyperparameter and the first LA's coefficients.

    Raises
    ------
    HierarchyError
        An unknown method, ``vectorize=True`` or ``chains > 1`` where they do not apply, or a model outside the
        Laplace mode's regime (the message names the term).
    """
    import jax
    from numpyro.infer import Predictive

    check_method(spec, design, method, vectorize, chains)
    key_prior, _, key_fit = jax.random.split(jax.random.PRNGKey(seed), 3)
    prior_layout = make_layout(design)
    prior = Predictive(model_fn(spec, priors, design, prior_layout), num_samples=replicates)(
        key_prior, model_data(prior_layout))
    prior = {k: np.asarray(v) for k, v in prior.items()}
    rng = np.random.default_rng([seed, 2018])
    ys = [draw_counts(spec, design, {k: v[r] for k, v in prior.items()}, rng) for r in range(replicates)]
    names = [k for k in (*HYPERPARAMETERS, "la_coef") if k in prior]
    seconds = np.zeros(0)
    if method == "laplace":
        from hierarchy.inference.laplace_fit import fit_replicates

        seeds = [int(np.random.default_rng([seed, r]).integers(2**31)) for r in range(replicates)]
        post, divergences, seconds = fit_replicates(spec, fit_priors or priors, design, ys, names, warmup=warmup,
                                                    draws=draws, thin=thin, seeds=seeds, chains=chains)
    else:
        post, divergences = _fit_nuts(spec, fit_priors or priors, design, ys, names, warmup=warmup, draws=draws,
                                      thin=thin, keys=jax.random.split(key_fit, replicates),
                                      vectorize=True if vectorize is None else vectorize)
    ranks: dict[str, np.ndarray] = {}
    for name in names:
        truth, sample = prior[name], np.asarray(post[name])  # (R, ...), (R, n_post, ...)
        for label, idx in _scalars(name, truth[0]).items():
            ranks[label] = np.sum(sample[(slice(None), slice(None), *idx)]
                                  < truth[(slice(None), *idx)][:, None], axis=1)
    return SBCResult(ranks=ranks, n_post=chains * -(-draws // thin), divergences=np.asarray(divergences),
                     seconds=np.asarray(seconds))


def check_method(spec: ModelSpec, design: Design, method: str, vectorize: bool | None = None,
                 chains: int = 1) -> None:
    """Refuse what :func:`sbc` cannot do with ``method`` (a :class:`HierarchyError` saying what to change),
    before any work: the ``sbc`` command calls it before it says what it will fit."""
    if method not in ("nuts", "laplace"):
        raise HierarchyError(f"sbc: unknown method {method!r}; choose nuts or laplace")
    if method == "nuts" and chains != 1:
        raise HierarchyError(f"sbc: NUTS refits each replicate with one chain (all replicates in one program), "
                             f"got {chains} chains: give 1 (--chains 1) or method 'laplace' (--method laplace)")
    if method == "laplace":
        if vectorize:
            raise HierarchyError("sbc: vectorize=True runs the replicates side by side in one NUTS program; "
                                 "Laplace fits run one replicate at a time: leave vectorize out (or False) with "
                                 "method 'laplace', or use method 'nuts'")
        from hierarchy.inference.laplace import refusal

        why = refusal(spec, design)
        if why:
            raise HierarchyError(f"{spec.name}: method 'laplace' refused: {why}; calibrate it with method 'nuts' "
                                 "(hierarchy sbc --method nuts)")


def _fit_nuts(spec: ModelSpec, priors: PriorSet, design: Design, ys: list[np.ndarray], names: list[str], *,
              warmup: int, draws: int, thin: int, keys, vectorize: bool) -> tuple[dict, np.ndarray]:
    """Fit every replicate's counts ``ys`` with one NUTS chain in one compiled program: thinned draws of
    ``names``, ``(R, n_post, ...)``, and the divergent transitions of each replicate."""
    from hierarchy.inference.batch import fit_batch

    hist_len = hist_len_for(max(int(y.max()) for y in ys), len(design.y))  # one length for every replicate
    layout = make_layout(design, chunk=min(64, int(np.bincount(design.la_index).max())), hist_len=hist_len)
    data = [model_data(with_counts(layout, y, design.stage_index)) for y in ys]
    # one chain per replicate, side by side (vmap) even on CPU: vmapped chains step in lockstep, and
    # on CPU that still beat batches of replicates (measured)
    fits = fit_batch(model_fn(spec, priors, design, layout), data, chains=1, tune=warmup, draws=draws, thin=thin,
                     keys=keys, sites=names, max_tree_depth=10, warmup_tree_depth=10, vectorize=vectorize,
                     diagnostics=False)
    post = {k: np.asarray(v[:, 0]) for k, v in fits.posterior.items()}  # (R, n_post, ...): the one chain
    return post, np.asarray(fits.stats["diverging"].sum(axis=(1, 2)))

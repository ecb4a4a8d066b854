"""Many fits of one model shape in one compiled program: SBC replicates, CV folds, data sets alike.

:func:`fit_batch` fits a batch of data pytrees of one shape with one NumPyro model: NumPyro's NUTS
kernels (``numpyro.infer.hmc.hmc``, the kernels :class:`numpyro.infer.NUTS` runs), ``chains``
chains inside each fit, each chain warming up its own step size and diagonal mass matrix as in
:func:`hierarchy.inference.sampling.fit`. The data are a traced argument, so the whole batch compiles
once (``MCMC.run`` would compile again for every data set whose arrays are new).

On an accelerator the fits run side by side (``jax.vmap`` over the batch: one launch carries all of
them); on CPU they run in turn (``jax.lax.map``), the same per-fit code with the same keys, so the
draws do not depend on the device beyond rounding. Each fit is judged by the bar a single fit is
(:func:`hierarchy.inference.diagnostics.diagnose`: R-hat, bulk/tail ESS, divergences, tree depth,
E-BFMI).

What a batch cannot do that :func:`~hierarchy.inference.sampling.fit` does: sample on until the bar
is met (``max_draws``: each fit would stop at a different length), other samplers (nutpie, PyMC),
the Laplace mode, and data sets whose arrays differ in shape (pad them to one layout, with the
layout's ``mask``, first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import CHAINS, DRAWS, MAX_TREE_DEPTH, PER_ROW, TUNE, WARMUP_TREE_DEPTH

__all__ = ["BatchFit", "fit_batch", "split_batch"]


@dataclass
class BatchFit:
    """Draws, sampler statistics and diagnostics of a batch of fits.

    Attributes
    ----------
    posterior : dict of str to numpy.ndarray
        Site -> ``(fit, chain, draw, ...)`` draws (kept after thinning).
    stats : dict of str to numpy.ndarray
        ``diverging``, ``energy``, ``n_steps``, ``tree_depth``: ``(fit, chain, draw)``, every
        post-warm-up iteration (not thinned).
    diagnostics : list of dict
        :func:`~hierarchy.inference.diagnostics.diagnose` of each fit (empty when not asked for).
    timings : dict of str to float
        Seconds: ``compile`` and ``run`` (the whole batch).
    settings : dict
        The sampler settings and ``vectorized`` (True: ``vmap``; False: ``lax.map``).
    """

    posterior: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_fits(self) -> int:
        """Number of fits in the batch."""
        return int(next(iter(self.stats.values())).shape[0])

    def fit(self, b: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Draws ``(chain, draw, ...)`` and statistics ``(chain, draw)`` of fit ``b``."""
        return ({k: v[b] for k, v in self.posterior.items()}, {k: v[b] for k, v in self.stats.items()})

    def draws(self, b: int, **settings: Any):
        """Fit ``b`` as the :class:`~hierarchy.inference.sampling.Draws` a single fit returns, for a fit file.

        Its settings are the batch's NUTS settings, ``batch`` (the batch's size) and ``settings``
        (e.g. ``seed``, ``method``); its timings are the batch's ``compile`` and ``run`` over the number
        of fits, and ``batch_total`` the whole batch's. Sampler statistics are thinned like the draws.
        """
        from hierarchy.inference.sampling import Draws

        post, stats = self.fit(b)
        thin = int(self.settings.get("thin", 1))
        n = self.n_fits
        timings = {"warmup_and_sampling": self.timings.get("run", 0.0) / n,
                   "compile": self.timings.get("compile", 0.0) / n,
                   "batch_total": sum(self.timings.values())}
        keep = {k: v for k, v in self.settings.items() if k not in ("fits", "vectorized")}
        return Draws(posterior=dict(post), stats={k: v[:, ::thin] for k, v in stats.items()}, timings=timings,
                     settings={"sampler": "numpyro", "method": "nuts", **keep, "max_tree_depth": keep.get(
                         "max_tree_depth", MAX_TREE_DEPTH), "batch": n, "batch_vectorized": self.settings.get(
                         "vectorized"), **settings})


def split_batch(data: Sequence[dict]) -> tuple[Any, list[bool], list[np.ndarray], list[Any]]:
    """Split data pytrees of one shape into the leaves that differ between them and those they share.

    Parameters
    ----------
    data : sequence of dict
        One pytree of arrays per fit, all of the same structure, shapes and dtypes.

    Returns
    -------
    (treedef, list of bool, list of numpy.ndarray, list)
        The tree structure; for each leaf whether it varies; the varying leaves stacked along a
        new first axis (in leaf order); the shared leaves (each once).

    Raises
    ------
    HierarchyError
        When the batch is empty or a data set's structure, shape or dtype differs from the first's.
    """
    import jax

    if not len(data):
        raise HierarchyError("a batch of fits needs at least one data set")
    leaves0, tree = jax.tree.flatten(data[0])
    per_fit = []
    for b, d in enumerate(data):
        leaves, t = jax.tree.flatten(d)
        if t != tree:
            raise HierarchyError(f"data set {b} of the batch has other arrays than data set 0 ({t} vs {tree}): "
                                 "every fit of a batch needs the same arrays")
        for i, (a, a0) in enumerate(zip(leaves, leaves0, strict=True)):
            if np.shape(a) != np.shape(a0) or np.result_type(a) != np.result_type(a0):
                raise HierarchyError(f"data set {b} of the batch: array {_leaf_name(tree, i)} is "
                                     f"{np.result_type(a)}{np.shape(a)}, data set 0's is "
                                     f"{np.result_type(a0)}{np.shape(a0)}; pad the data sets to one layout "
                                     "(mask the rows a fit does not have) so that they share one shape")
        per_fit.append([np.asarray(a) for a in leaves])
    varies = [any(not np.array_equal(f[i], per_fit[0][i]) for f in per_fit[1:]) for i in range(len(leaves0))]
    stacked = [np.stack([f[i] for f in per_fit]) for i in range(len(leaves0)) if varies[i]]
    shared = [leaves0[i] for i in range(len(leaves0)) if not varies[i]]
    return tree, varies, stacked, shared


def _leaf_name(tree, i: int) -> str:
    import jax

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        tree.unflatten(list(range(tree.num_leaves))))[0]]
    return paths[i] if i < len(paths) else f"#{i}"


def fit_batch(model: Callable, data: Sequence[dict], *, chains: int = CHAINS, tune: int = TUNE,
              draws: int = DRAWS, seed: int = 0, keys: Any = None, target_accept: float = 0.8,
              max_tree_depth: int = MAX_TREE_DEPTH, warmup_tree_depth: int = WARMUP_TREE_DEPTH,
              thin: int = 1, sites: Sequence[str] | None = None, vectorize: bool | None = None,
              diagnostics: bool = True, init_radius: float = 2.0) -> BatchFit:
    """Fit ``model`` to every data set of ``data`` with NUTS, all in one compiled program.

    Parameters
    ----------
    model : callable
        A NumPyro model taking one argument, the data pytree (e.g.
        :func:`hierarchy.likelihood.jaxmodel.model_fn` with :func:`~hierarchy.likelihood.jaxmodel.model_data`).
    data : sequence of dict
        One data pytree per fit, of one structure, shape and dtype (:func:`split_batch`).
    chains, tune, draws
        Chains per fit (vectorised inside the fit), warm-up and kept iterations per chain.
    seed : int
        Seeds the fits when ``keys`` is not given (fit ``b`` gets the ``b``-th split of it).
    keys : jax.Array, optional
        One PRNG key per fit, ``(len(data), 2)``: the same key gives the same draws whatever the batch.
    target_accept, max_tree_depth, warmup_tree_depth
        NUTS settings, as :func:`hierarchy.inference.sampling.fit` (the tree depth is capped at
        ``warmup_tree_depth`` during warm-up).
    thin : int
        Keep every ``thin``-th draw of the posterior (sampler statistics keep every draw).
    sites : sequence of str, optional
        Sites to keep (default: every site but the per-row effects).
    vectorize : bool, optional
        True: ``jax.vmap`` over the fits; False: ``jax.lax.map`` (in turn). Default: vmap on an
        accelerator, in turn on CPU.
    diagnostics : bool
        Judge each fit (:func:`~hierarchy.inference.diagnostics.diagnose`; a second of ArviZ per fit).
    init_radius : float
        Chains start uniformly in ``(-r, r)`` on the unconstrained scale (NumPyro's ``init_to_uniform``).

    Returns
    -------
    BatchFit
    """
    import jax
    import jax.numpy as jnp

    if min(chains, draws, thin) < 1 or tune < 0:
        raise HierarchyError(f"a batch of fits needs chains, draws and thin >= 1 and tune >= 0 (got chains "
                             f"{chains}, draws {draws}, thin {thin}, tune {tune})")
    tree, varies, stacked, shared = split_batch(data)
    n = len(data)
    keys = jax.random.split(jax.random.PRNGKey(seed), n) if keys is None else jnp.asarray(keys)
    if keys.shape[0] != n:
        raise HierarchyError(f"{keys.shape[0]} keys for a batch of {n} fits: give one key per fit")
    vectorize = jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)
    nuts = dict(chains=chains, tune=tune, draws=draws, thin=thin, target_accept=target_accept,
                max_tree_depth=max_tree_depth, warmup_tree_depth=warmup_tree_depth)
    run = _program(model, data[0], tree, varies, nuts, sites=sites, vectorize=vectorize, init_radius=init_radius)
    t = time.perf_counter()
    compiled = jax.jit(run).lower(keys, stacked, shared).compile()
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    post, (diverging, energy, steps) = jax.block_until_ready(compiled(keys, stacked, shared))
    t_run = time.perf_counter() - t
    steps = np.asarray(steps)
    out = BatchFit(posterior={k: np.asarray(v) for k, v in post.items()},
                   stats={"diverging": np.asarray(diverging), "energy": np.asarray(energy), "n_steps": steps,
                          "tree_depth": np.floor(np.log2(steps + 1)).astype(int)},
                   timings={"compile": t_compile, "run": t_run},
                   settings={**nuts, "vectorized": vectorize, "fits": n})
    if diagnostics:
        out.diagnostics = [diagnose_fit(*out.fit(b), max_tree_depth=max_tree_depth, thin=thin) for b in range(n)]
    return out


def fit_jobs(jobs: Sequence[tuple[Any, Any, Any]], *, chains: int, tune: int, draws: int, seed: int = 0,
             keys: Any = None, target_accept: float = 0.8, float32: bool = False, vectorize: bool | None = None,
             **settings: Any) -> tuple[BatchFit, list[Any]]:
    """Fit ``(spec, priors, design)`` jobs of one structure in one compiled program; each job's Draws.

    The jobs may differ only in their counts (``design.y``) and in their priors' numbers (same structure,
    :func:`hierarchy.language.priors.structure_difference`); the caller checks that (the replication's
    ``batch_refusal``, :func:`hierarchy.language.priors.group_by_structure`). The model function is the
    first job's (:func:`hierarchy.likelihood.jaxmodel.model_fn`), each job's data its own counts (one
    histogram length for all) and, when the jobs' prior sets are not one object, its priors' numbers
    (:func:`~hierarchy.likelihood.jaxmodel.with_prior_values`). Run by :func:`fit_batch` (side by side on an
    accelerator, in turn on CPU; ``seed``, ``keys``, ``target_accept``, ``vectorize`` are its).

    Returns
    -------
    (BatchFit, list of Draws)
        The batch, and per job (in order) :meth:`BatchFit.draws` with ``seed``, ``float32``,
        ``draws_requested`` and ``max_draws`` (= ``draws``), the job's LA-effect ``parameterisation`` and
        ``settings`` in its sampler settings.
    """
    import jax

    from hierarchy.language.design import centring, describe_centring
    from hierarchy.likelihood.jaxmodel import hist_len_for, make_layout, model_data, model_fn, with_prior_values
    from hierarchy.likelihood.model import la_effect_labels

    jax.config.update("jax_enable_x64", True)  # float32 means float32 rows, as a single fit
    spec0, priors0, design0 = jobs[0]
    hist_len = hist_len_for(max(int(d.y.max(initial=0)) for _, _, d in jobs), len(design0.y))  # one shape
    layouts = {id(d): make_layout(d, hist_len=hist_len) for _, _, d in jobs}
    dtype = "float32" if float32 else "float64"
    data = [model_data(layouts[id(d)], dtype) for _, _, d in jobs]
    if any(p is not priors0 for _, p, _ in jobs):
        data = [with_prior_values(x, p) for x, (_, p, _) in zip(data, jobs, strict=True)]
    res = fit_batch(model_fn(spec0, priors0, design0, layouts[id(design0)]), data, chains=chains, tune=tune,
                    draws=draws, seed=seed, keys=keys, target_accept=target_accept, vectorize=vectorize,
                    diagnostics=False)
    per_job = [res.draws(b, seed=seed, float32=float32, draws_requested=draws, max_draws=draws,
                         parameterisation=describe_centring(centring(s, d), la_effect_labels(s)), **settings)
               for b, (s, _, d) in enumerate(jobs)]
    return res, per_job


def _program(model: Callable, example: dict, tree, varies: list[bool], nuts: dict[str, Any], *,
             sites: Sequence[str] | None, vectorize: bool, init_radius: float) -> Callable:
    """``run(keys, varying leaves, shared leaves) -> (draws, (diverging, energy, steps))``: the batch of
    NUTS fits as one function to compile (see :func:`fit_batch`)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import constrain_fn, potential_energy

    from hierarchy.inference.sampling import initial_point

    chains, tune, draws, thin = (nuts[k] for k in ("chains", "tune", "draws", "thin"))
    template = initial_point(model, example, 0)  # the sites' shapes, in one compiled program (not op by op)

    def potential_gen(arr):
        return lambda z: potential_energy(model, (arr,), {}, z)

    def postprocess_gen(arr):
        return lambda z: constrain_fn(model, (arr,), {}, z, return_deterministic=True)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
    keep = None if sites is None else tuple(sites)

    def merged(var, common):
        it_v, it_s = iter(var), iter(common)
        return tree.unflatten([next(it_v) if v else next(it_s) for v in varies])

    def chain(key, arr):
        k_init, k_run = jax.random.split(key)
        leaves, ztree = jax.tree.flatten(template)
        z0 = ztree.unflatten([jax.random.uniform(k, jnp.shape(leaf), leaf.dtype, -init_radius, init_radius)
                              for k, leaf in zip(jax.random.split(k_init, len(leaves)), leaves, strict=True)])
        state = init_kernel(z0, num_warmup=tune, target_accept_prob=nuts["target_accept"],
                            max_tree_depth=(nuts["warmup_tree_depth"], nuts["max_tree_depth"]), model_args=(arr,),
                            rng_key=k_run)
        state = jax.lax.fori_loop(0, tune, lambda _, s: sample_kernel(s, model_args=(arr,)), state)

        def step(s, _):
            s = sample_kernel(s, model_args=(arr,))
            return s, (s.z, (s.diverging, s.energy, s.num_steps))

        _, (zs, stats) = jax.lax.scan(step, state, None, length=draws)
        post = jax.vmap(postprocess_gen(arr))(jax.tree.map(lambda z: z[::thin], zs))
        post = {k: v for k, v in post.items() if (k in keep if keep is not None else k not in PER_ROW)}
        return post, stats

    def one_fit(key, var, common):
        return jax.vmap(chain, in_axes=(0, None))(jax.random.split(key, chains), merged(var, common))

    if vectorize:
        def run(keys, var, common):
            return jax.vmap(one_fit, in_axes=(0, 0, None))(keys, var, common)
    else:
        def run(keys, var, common):
            return jax.lax.map(lambda kv: one_fit(kv[0], kv[1], common), (keys, var))
    return run


def diagnose_fit(posterior: dict[str, np.ndarray], stats: dict[str, np.ndarray], *,
                 max_tree_depth: int = MAX_TREE_DEPTH, thin: int = 1) -> dict[str, Any]:
    """:func:`~hierarchy.inference.diagnostics.diagnose` of one fit of a batch (its draws ``(chain, draw, ...)``).

    The sampler statistics are thinned like the draws, so that E-BFMI and the divergences are of
    the same iterations; divergences are counted over every iteration.
    """
    import arviz as az

    from hierarchy.inference.diagnostics import diagnose

    ss = {k: v[:, ::thin] for k, v in stats.items() if k in ("energy", "tree_depth", "diverging")}
    d = diagnose(az.from_dict(posterior={k: v for k, v in posterior.items() if k not in PER_ROW},
                              sample_stats=ss), max_tree_depth=max_tree_depth)
    if thin > 1 and "divergences" in d:  # count every divergent transition, not every thin-th
        total = int(np.sum(stats["diverging"]))
        if total != d["divergences"]:
            d["reasons"] = [r for r in d["reasons"] if not r.endswith("divergent transitions")]
            if total:
                d["reasons"].append(f"{total} divergent transitions")
            d["divergences"] = total
            d["status"] = "warn" if d["reasons"] else "ok"
    return d

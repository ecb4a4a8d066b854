"""The embedded Laplace mode's sampling side: the hyperparameters' mode, NUTS over them, the latent draws.

:mod:`hierarchy.inference.laplace` builds the problem (the Laplace marginal of the hyperparameters, its
IFT gradient, Newton's mode of the LA effects); here:

- :func:`find_mode`: the hyperparameters' posterior mode (BFGS, scipy, on the jitted value and gradient),
  the inverse Hessian there, and Newton's starting point at any hyperparameters (:class:`Start`);
- :func:`sample`: one fit (``hierarchy fit --method laplace``): NumPyro NUTS (dense mass matrix, started
  around the mode) over the unconstrained hyperparameters, then the LA effects drawn from
  ``N(x_hat(theta), H^-1)`` given each draw (:func:`draw_latent`), every site and deterministic by the
  model's own ``postprocess_fn``, so the posterior has the names of a centred NUTS fit;
- :func:`fit_replicates`: many data sets of one shape (the Laplace SBC) with the counts an argument of
  three compiled programs (the marginal's value and gradient, the LA mode, and one replicate's NUTS
  warm-up, sampling and latent draws, NumPyro's functional ``hmc`` kernels), compiled once for all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hierarchy.inference import blocks
from hierarchy.inference.laplace import (
    MAX_NEWTON,
    NEWTON_TOL,
    Problem,
    build_problem,
    hyper_init,
    laplace_potential,
    mode_and_hessian,
)
from hierarchy.language.design import Design
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec

DRAW_BATCH = 200
"""Hyperparameter draws per batch when the latent effects are drawn (memory: batch x rows)."""


class Start(NamedTuple):
    """Newton's starting point at any hyperparameters ``zh``: the LA mode ``x_mode`` at the hyperparameters'
    mode ``q_mode`` (flat) plus its derivative ``slope`` (central differences) times the distance, which
    leaves Newton one or two steps from NUTS' draws. A pytree of arrays: it can be a program's argument."""

    x_mode: Any  # (J, E)
    slope: Any  # (J, E, Q)
    q_mode: Any  # (Q,)

    def __call__(self, zh: dict):
        from jax.flatten_util import ravel_pytree

        return self.x_mode + self.slope @ (ravel_pytree(zh)[0] - self.q_mode)


class ModePrograms(NamedTuple):
    """:func:`find_mode`'s jitted functions of (flat hyperparameters, data): the Laplace marginal's value
    and gradient, and the LA mode; ``data`` None for the problem's own data (closed over)."""

    value_grad: Any
    x_hat: Any
    unravel: Any


def mode_programs(problem: Problem, zh0: dict, x0) -> ModePrograms:
    """:func:`find_mode`'s programs for ``problem`` (hyperparameters shaped as ``zh0``, Newton from ``x0``):
    made once, they serve every data set of the problem's shapes (:attr:`Problem.rebind`)."""
    import jax
    from jax.flatten_util import ravel_pytree

    unravel = ravel_pytree(zh0)[1]

    def bound(data) -> Problem:
        return problem if data is None else problem.rebind(data)

    value_grad = jax.jit(jax.value_and_grad(lambda v, data: laplace_potential(bound(data), x0)(unravel(v))))
    x_hat = jax.jit(lambda v, data: mode_and_hessian(bound(data), unravel(v), x0)[0])
    return ModePrograms(value_grad, x_hat, unravel)


def find_mode(problem: Problem, zh0: dict, x0, *, data: dict | None = None,
              programs: ModePrograms | None = None) -> tuple[dict, np.ndarray, Start]:
    """The hyperparameters' posterior mode under the Laplace marginal (BFGS, scipy, on the jitted value
    and gradient), the inverse of the Hessian there (central differences of the gradient), and Newton's
    starting point at any ``zh`` (:class:`Start`).

    ``data``: another data set of the problem's shapes (:attr:`Problem.rebind`; default its own);
    ``programs``: :func:`mode_programs` of the problem, to reuse their compilation across data sets.
    """
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize

    programs = programs or mode_programs(problem, zh0, x0)
    flat0 = ravel_pytree(zh0)[0]

    def fun(q):
        v, g = programs.value_grad(q, data)
        return float(v), np.asarray(g, dtype=float)

    res = minimize(fun, np.asarray(flat0, dtype=float), jac=True, method="BFGS", options={"maxiter": 200})
    q = res.x if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) else np.asarray(flat0, dtype=float)
    h, eye = 1e-4, np.eye(len(q))
    hess = np.stack([(fun(q + h * e)[1] - fun(q - h * e)[1]) / (2 * h) for e in eye])
    hess = 0.5 * (hess + hess.T)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full_like(hess, np.nan)
    x_mode = programs.x_hat(q, data)
    slope = jnp.stack([(programs.x_hat(q + h * e, data) - programs.x_hat(q - h * e, data)) / (2 * h)
                       for e in eye], axis=-1)
    return programs.unravel(q), cov, Start(x_mode, slope, jnp.asarray(q))


def draw_latent(problem: Problem, zh_draws: dict, start, key, batch: int = DRAW_BATCH) -> dict[str, np.ndarray]:
    """For each hyperparameter draw (leading axis), the LA effects from ``N(x_hat, H^-1)`` and every
    site and deterministic of the model (constrained), as numpy arrays with the same leading axis."""
    import jax
    import jax.numpy as jnp

    def one(zh, k):
        x_hat, H, _, _ = mode_and_hessian(problem, zh, start)
        x = blocks.draw(x_hat, blocks.cholesky(H), jax.random.normal(k, x_hat.shape, x_hat.dtype))
        return problem.postprocess({**zh, **problem.sites_of(x)})

    many = jax.jit(jax.vmap(one))
    n = len(next(iter(zh_draws.values())))
    keys = jax.random.split(key, n)
    parts = [many({k: jnp.asarray(v[s:s + batch]) for k, v in zh_draws.items()}, keys[s:s + batch])
             for s in range(0, n, batch)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def sample(spec: ModelSpec, priors: PriorSet, design: Design, settings: dict, progress: bool = False):
    """NUTS over the hyperparameters under the Laplace marginal, then the LA effects given each draw.

    ``settings`` are :func:`hierarchy.inference.sampling.fit`'s; it is updated in place (the chain
    method used, sampling on, the Laplace details) like the NUTS path's. Returns a
    :class:`~hierarchy.inference.sampling.Draws` with a centred NUTS fit's posterior names.
    """
    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.inference.sampling import MAX_TREE_DEPTH, Draws, _joined, draws_to_bar

    t = time.perf_counter()
    problem = build_problem(spec, priors, design, float32=settings["float32"], seed=settings["seed"])
    zh_mode, cov, start = find_mode(problem, hyper_init(problem), problem.x0)
    t_mode = time.perf_counter() - t
    key = jax.random.PRNGKey(settings["seed"])
    init = _chain_inits(zh_mode, cov, settings["chains"], jax.random.fold_in(key, 1))
    if settings["chains"] == 1:  # NumPyro takes one chain's initial values without a chain axis
        init = jax.tree.map(lambda v: v[0], init)
    kernel = NUTS(potential_fn=laplace_potential(problem, start), target_accept_prob=settings["target_accept"],
                  max_tree_depth=(settings["warmup_tree_depth"], MAX_TREE_DEPTH), dense_mass=True,
                  inverse_mass_matrix=cov if _usable(cov) else None)
    chain_method = settings["chain_method"]
    if chain_method == "parallel" and jax.local_device_count() < settings["chains"]:
        chain_method = "sequential" if jax.local_device_count() == 1 else "parallel"
    mcmc = MCMC(kernel, num_warmup=settings["tune"], num_samples=settings["draws"], num_chains=settings["chains"],
                chain_method=chain_method, progress_bar=progress and chain_method != "vectorized")
    t = time.perf_counter()
    mcmc.warmup(key, init_params=init, extra_fields=("num_steps",), collect_warmup=True)
    jax.block_until_ready(mcmc.post_warmup_state)
    t_warm = time.perf_counter() - t
    warm_steps = float(np.mean(mcmc.get_extra_fields()["num_steps"])) if settings["tune"] else 0.0
    fields = ("diverging", "num_steps", "energy")
    timing = {"sampling": 0.0, "latent": 0.0}

    def block(k: int) -> tuple[dict, dict]:
        t1 = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields)
        zh = mcmc.get_samples(group_by_chain=True)
        ex = {f: np.asarray(v) for f, v in mcmc.get_extra_fields(group_by_chain=True).items()}
        jax.block_until_ready(zh)
        t2 = time.perf_counter()
        shape = next(iter(zh.values())).shape[:2]
        flat = {name: np.asarray(v).reshape((-1,) + v.shape[2:]) for name, v in zh.items()}
        post = draw_latent(problem, flat, start, jax.random.fold_in(key, 100 + k))
        post = {name: v.reshape(shape + v.shape[1:]) for name, v in post.items()}
        timing["sampling"] += t2 - t1
        timing["latent"] += time.perf_counter() - t2
        return post, ex

    runs = [block(0)]
    samples, ex = _joined(runs)
    while settings["draws"] < settings["max_draws"]:
        more = draws_to_bar(samples, ex, settings["max_draws"])
        if not more:
            break
        mcmc.post_warmup_state, mcmc.num_samples = mcmc.last_state, more
        runs.append(block(len(runs)))
        samples, ex = _joined(runs)
        settings["draws"] += more
        settings["continuations"] = settings.get("continuations", 0) + 1
    steps = ex["num_steps"]
    stats = {"diverging": ex["diverging"], "energy": ex["energy"], "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings["chain_method_used"] = chain_method
    settings["max_tree_depth"] = MAX_TREE_DEPTH
    settings["laplace"] = {
        "marginalised": _describe(problem),
        "hyperparameters": sorted(hyper_init(problem)),
        "newton_tol": NEWTON_TOL, "max_newton": MAX_NEWTON,
        "gradient": "implicit function theorem: one differentiated Newton step from the converged mode",
        "init": "BFGS mode of the Laplace marginal, chains drawn from its inverse Hessian, which is also the "
                "first dense mass matrix"}
    return Draws(posterior=samples, stats=stats,
                 timings={"mode": t_mode, "warmup": t_warm, "sampling": timing["sampling"],
                          "latent_draws": timing["latent"], "warmup_mean_steps": warm_steps})


def _describe(problem: Problem) -> str:
    """The marginalised sites in words, for provenance."""
    parts = [f"{b.name} ({problem.n_la} LAs x {b.width})" if b.la is None else
             f"{b.name} ({len(b.la)} levels, up to {b.width} per LA)" for b in problem.blocks]
    out = ", ".join(parts) + f": {problem.n_eff} effects per LA block, centred"
    if problem.dropped_zero_sum:
        out += ("; " + ", ".join(problem.dropped_zero_sum) + " without the sum to zero over LAs that NUTS uses "
                "(iid effects, as lme4 and glmmTMB fit them)")
    return out


def _usable(cov: np.ndarray) -> bool:
    """Whether ``cov`` (the inverse Hessian at the mode) is a covariance: finite, symmetric positive definite."""
    cov = 0.5 * (cov + cov.T)
    return bool(np.all(np.isfinite(cov)) and np.all(np.linalg.eigvalsh(cov) > 0))


def _chain_inits(zh: dict, cov: np.ndarray, chains: int, key) -> dict:
    """Initial hyperparameters per chain: draws from ``N(mode, cov)`` (the Laplace posterior's
    Gaussian approximation), or the mode itself where ``cov`` is not a usable covariance."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(zh)
    cov = 0.5 * (cov + cov.T)
    ok = _usable(cov)
    noise = jax.random.normal(key, (chains, flat.shape[0]), flat.dtype)
    q = flat + (noise @ jnp.linalg.cholesky(jnp.asarray(cov)).T if ok else 0.0 * noise)
    return jax.vmap(unravel)(q)


def fit_replicates(spec: ModelSpec, priors: PriorSet, design: Design, ys: Sequence[np.ndarray],
                   names: Sequence[str], *, warmup: int, draws: int, thin: int, seeds: Sequence[int],
                   chains: int = 1, target_accept: float = 0.8) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit every replicate's counts ``ys`` (design row order) by the Laplace mode, compiled once for all.

    Each replicate as :func:`sample` fits one data set, without sampling on to the bar: the hyperparameters'
    mode (:func:`find_mode`, BFGS on the host), ``chains`` chains (side by side) started around it,
    ``warmup`` + ``draws`` NUTS iterations each, then the LA effects drawn given every ``thin``-th draw.
    The counts are an argument of the compiled programs (:attr:`Problem.rebind`; one count-histogram
    length for all, as the NUTS SBC), so replicates 2..R reuse replicate 1's compilation.

    Parameters
    ----------
    spec, priors, design
        The model (within the Laplace regime), the prior set to fit under, the geography and exposures.
    ys
        One count vector per replicate.
    names
        The sites to return (sites or deterministics of the centred model).
    warmup, draws, thin, chains, target_accept
        NUTS settings per replicate.
    seeds
        One seed per replicate (its chains' starts, NUTS and the latent draws).

    Returns
    -------
    (dict, numpy.ndarray, numpy.ndarray)
        ``names`` -> ``(R, chains * ceil(draws / thin), ...)`` thinned draws (chain after chain); the
        divergent transitions after warm-up per replicate; the seconds each replicate took (the first
        includes the compilation).
    """
    import jax

    from hierarchy.likelihood.jaxmodel import hist_len_for, make_layout, model_data, with_counts

    jax.config.update("jax_enable_x64", True)
    hist_len = hist_len_for(max(int(np.max(y)) for y in ys), len(design.y))  # one length for every replicate
    layout = make_layout(design, hist_len=hist_len)
    layouts = [with_counts(layout, np.asarray(y), design.stage_index) for y in ys]
    problem = build_problem(spec, priors, design, layout=layouts[0], seed=int(seeds[0]))
    zh0, x0 = hyper_init(problem), problem.x0
    programs = mode_programs(problem, zh0, x0)
    run = jax.jit(_replicate_program(problem, tuple(names), warmup=warmup, draws=draws, thin=thin, chains=chains,
                                     target_accept=target_accept))
    out: dict[str, list] = {k: [] for k in names}
    divergences, seconds = [], []
    for lay, seed in zip(layouts, seeds, strict=True):
        t = time.perf_counter()
        data = model_data(lay, "float64")
        zh_mode, cov, start = find_mode(problem, zh0, x0, data=data, programs=programs)
        key = jax.random.PRNGKey(int(seed))
        init = _chain_inits(zh_mode, cov, chains, jax.random.fold_in(key, 1))
        mass = cov if _usable(cov) else np.eye(len(cov))  # NumPyro's default where the mode's is not usable
        post, div = jax.block_until_ready(run(data, start, init, mass, key))
        for k in names:
            out[k].append(np.asarray(post[k]))
        divergences.append(int(div))
        seconds.append(time.perf_counter() - t)
    return {k: np.stack(v) for k, v in out.items()}, np.asarray(divergences), np.asarray(seconds)


def _replicate_program(problem: Problem, names: tuple[str, ...], *, warmup: int, draws: int, thin: int,
                       chains: int, target_accept: float):
    """``run(data, start, init, inverse_mass, key) -> (draws of names, divergences)``: one replicate of
    :func:`fit_replicates` (NumPyro's NUTS kernels, ``numpyro.infer.hmc.hmc``, over the Laplace marginal of
    ``data``), to compile once."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc

    from hierarchy.inference.sampling import MAX_TREE_DEPTH, WARMUP_TREE_DEPTH

    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda data, start: laplace_potential(problem.rebind(data), start), algo="NUTS")

    def chain(z0, key, data, start, mass):
        args = (data, start)
        state = init_kernel(z0, num_warmup=warmup, inverse_mass_matrix=mass, dense_mass=True,
                            target_accept_prob=target_accept, max_tree_depth=(WARMUP_TREE_DEPTH, MAX_TREE_DEPTH),
                            model_args=args, rng_key=key)
        state = jax.lax.fori_loop(0, warmup, lambda _, s: sample_kernel(s, model_args=args), state)

        def step(s, _):
            s = sample_kernel(s, model_args=args)
            return s, (s.z, s.diverging)

        _, (zs, diverging) = jax.lax.scan(step, state, None, length=draws)
        return jax.tree.map(lambda z: z[::thin], zs), jnp.sum(diverging)

    def run(data, start, init, mass, key):
        zs, diverging = jax.vmap(chain, in_axes=(0, 0, None, None, None))(
            init, jax.random.split(key, chains), data, start, mass)
        flat = jax.tree.map(lambda v: v.reshape((-1,) + v.shape[2:]), zs)  # chain after chain
        pb = problem.rebind(data)

        def one(zk):
            zh, k = zk
            x_hat, H, _, _ = mode_and_hessian(pb, zh, start)
            x = blocks.draw(x_hat, blocks.cholesky(H), jax.random.normal(k, x_hat.shape, x_hat.dtype))
            post = pb.postprocess({**zh, **pb.sites_of(x)})
            return {n: post[n] for n in names}

        n = chains * -(-draws // thin)
        keys = jax.random.split(jax.random.fold_in(key, 100), n)
        return jax.lax.map(one, (flat, keys), batch_size=min(DRAW_BATCH, n)), jnp.sum(diverging)

    return run

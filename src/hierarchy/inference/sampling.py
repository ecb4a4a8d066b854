"""Samplers behind one :func:`fit`: NUTS in NumPyro (default), nutpie, PyMC, BlackJAX, and the
quick approximations pathfinder (BlackJAX) and ADVI (NumPyro, mean-field).

Every sampler returns the same :class:`Draws` (arrays with leading ``chain, draw`` axes and
normalised sample statistics), which :mod:`hierarchy.results.fitfile` turns into InferenceData.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierarchy.compiled import release_compiled_programs
from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, centring, describe_centring
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import parameters
from hierarchy.likelihood.model import la_effect_labels

METHODS = ("nuts", "laplace")
SAMPLERS = ("numpyro", "nutpie", "pymc", "blackjax", "pathfinder", "advi")
MAX_TREE_DEPTH = 10
WARMUP_TREE_DEPTH = 6
PER_ROW = parameters.names(role="per_row")  # per-neighbourhood latent effects: for the likelihood, not stored


@dataclass
class Draws:
    """Posterior draws and sampler statistics from any sampler."""

    posterior: dict[str, np.ndarray]  # name -> (chain, draw, ...)
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (chain, draw)
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    settings: dict[str, Any] = field(default_factory=dict)


def use_host_devices(n: int) -> None:
    """Let JAX run ``n`` chains in parallel on CPU; only effective before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def enable_compilation_cache(path: str | None = None) -> None:
    """Turn on JAX's persistent compilation cache (default ``~/.cache/hierarchy/jax``)."""
    import jax

    path = path or os.path.join(os.path.expanduser("~"), ".cache", "hierarchy", "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def fit(spec: ModelSpec, priors: PriorSet, design: Design, *, sampler: str = "numpyro",
        chains: int = 4, tune: int = 1000, draws: int = 1000, seed: int = 0,
        chain_method: str = "parallel", progress: bool = False, target_accept: float = 0.8,
        float32: bool = False, warmup_tree_depth: int = WARMUP_TREE_DEPTH,
        max_draws: int | None = None, method: str = "nuts") -> Draws:
    """Sample the posterior of ``spec`` under ``priors`` given ``design``.

    ``method`` ``"nuts"`` samples every parameter; ``"laplace"`` (NumPyro NUTS only) marginalises
    the LA effects by an embedded Laplace approximation, samples the hyperparameters and draws the
    LA effects given each draw (:mod:`hierarchy.inference.laplace`); models outside its regime are
    refused with the reason (the caller may fall back to ``"nuts"``). ``settings["method"]`` records it.

    ``max_draws`` (NumPyro NUTS only) lets the fit sample on past ``draws``: while any parameter
    misses the convergence bar (R-hat <= 1.01, bulk and tail ESS >= 400:
    :mod:`hierarchy.inference.diagnostics`), the chains go on from where they stopped, with the
    adapted step size and mass matrix, for as many draws as the bar needs (:func:`draws_to_bar`),
    up to ``max_draws`` per chain. ``settings["draws"]`` is then the number kept and
    ``settings["draws_requested"]`` the first block.

    ``float32`` puts the per-row arithmetic in float32 (about twice as fast on CPU) and keeps the
    parameters, the log density and the sampler in float64 (:mod:`hierarchy.likelihood.jaxmodel`).
    ``warmup_tree_depth`` caps NUTS trees during NumPyro's warm-up (``2**d - 1`` leapfrog steps):
    before the mass matrix is adapted the trees run to the cap, and at 10 they made the national
    stacked warm-up several times longer than its sampling (bench/RESULTS.md).
    """
    if sampler not in SAMPLERS:
        from hierarchy.config import did_you_mean

        raise HierarchyError(f"unknown sampler '{sampler}'{did_you_mean(sampler, SAMPLERS)}; "
                             f"choose from {', '.join(SAMPLERS)}")
    if method not in METHODS:
        from hierarchy.config import did_you_mean

        raise HierarchyError(f"unknown method '{method}'{did_you_mean(method, METHODS)}; "
                             f"choose from {', '.join(METHODS)}")
    if method == "laplace" and sampler != "numpyro":
        raise HierarchyError(f"method 'laplace' samples the hyperparameters with NumPyro NUTS, not '{sampler}'; "
                             "use --sampler numpyro (the default) or --method nuts")
    if method == "laplace":
        from hierarchy.inference.laplace import check_supported

        check_supported(spec, design)
    settings = dict(method=method, sampler=sampler, chains=chains, tune=tune, draws=draws, seed=seed,
                    chain_method=chain_method, target_accept=target_accept, float32=float32,
                    warmup_tree_depth=warmup_tree_depth, draws_requested=draws,
                    max_draws=max(draws, max_draws or draws),
                    parameterisation=describe_centring(centring(spec, design), la_effect_labels(spec)))
    t0 = time.perf_counter()
    release_compiled_programs()  # a process that fits many times would run out of memory maps
    if max_draws is not None and max_draws < draws:
        raise HierarchyError(f"max_draws {max_draws} is below draws {draws}: it is the most draws per chain "
                             f"to keep; give at least {draws} (equal turns sampling on off), or leave it out")
    if max_draws is not None and max_draws > draws and sampler != "numpyro":
        raise HierarchyError(f"max_draws (sampling on until converged) needs the numpyro sampler, not "
                             f"'{sampler}'; drop --max-draws or use --sampler numpyro")
    if method == "laplace":
        from hierarchy.inference.laplace import sample

        settings["parameterisation"] = "centred (LA effects marginalised by Laplace, drawn given each draw)"
        out = sample(spec, priors, design, settings, progress)
    elif sampler == "numpyro":
        out = _numpyro(spec, priors, design, settings, progress)
    elif sampler in ("pathfinder", "advi"):
        out = _approximate(spec, priors, design, settings)
    else:
        out = _pymc(spec, priors, design, settings, progress)
    out.timings["total"] = time.perf_counter() - t0
    out.settings = settings
    return out


def _numpyro(spec, priors, design, settings, progress) -> Draws:
    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)  # float32 means float32 rows (jaxmodel: mixed precision)
    layout = make_layout(design)
    model = model_fn(spec, priors, design, layout)
    data = model_data(layout, "float32" if settings["float32"] else "float64")
    key = jax.random.PRNGKey(settings["seed"])
    kernel = NUTS(model, target_accept_prob=settings["target_accept"],
                  max_tree_depth=(settings["warmup_tree_depth"], MAX_TREE_DEPTH))
    chain_method = settings["chain_method"]
    if chain_method == "parallel" and jax.local_device_count() < settings["chains"]:
        chain_method = "sequential" if jax.local_device_count() == 1 else "parallel"
    mcmc = MCMC(kernel, num_warmup=settings["tune"], num_samples=settings["draws"],
                num_chains=settings["chains"], chain_method=chain_method,
                progress_bar=progress and chain_method != "vectorized", jit_model_args=True)
    t = time.perf_counter()
    mcmc.warmup(key, data, extra_fields=("num_steps",), collect_warmup=True)
    jax.block_until_ready(mcmc.post_warmup_state)
    t_warm = time.perf_counter() - t
    warm_steps = float(np.mean(mcmc.get_extra_fields()["num_steps"])) if settings["tune"] else 0.0
    fields = ("diverging", "num_steps", "energy")
    t = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, data, extra_fields=fields)
    blocks = [(mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True))]
    jax.block_until_ready(blocks[-1])
    samples, ex = _joined(blocks)
    while settings["draws"] < settings["max_draws"]:
        more = draws_to_bar(samples, ex, settings["max_draws"])
        if not more:
            break
        # sample on from where the chains stopped, with the adapted step size and mass matrix
        mcmc.post_warmup_state, mcmc.num_samples = mcmc.last_state, more
        mcmc.run(mcmc.post_warmup_state.rng_key, data, extra_fields=fields)
        blocks.append((mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True)))
        samples, ex = _joined(blocks)
        settings["draws"] += more
        settings["continuations"] = settings.get("continuations", 0) + 1
    t_samp = time.perf_counter() - t
    steps = ex["num_steps"]
    stats = {"diverging": ex["diverging"], "energy": ex["energy"], "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings["chain_method_used"] = chain_method
    settings["max_tree_depth"] = MAX_TREE_DEPTH
    return Draws(posterior=samples, stats=stats,
                 timings={"warmup": t_warm, "sampling": t_samp, "warmup_mean_steps": warm_steps})


def _joined(blocks: list[tuple[dict, dict]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Samples and extra fields of consecutive runs, joined along the draw axis."""
    return tuple({k: np.concatenate([np.asarray(b[i][k]) for b in blocks], axis=1) for k in blocks[0][i]}
                 for i in (0, 1))


def draws_to_bar(samples: dict[str, np.ndarray], extra: dict[str, np.ndarray], max_draws: int) -> int:
    """How many more draws per chain the fit needs to meet the convergence bar (0: it meets it).

    Estimated from the draws so far, as ESS grows and R-hat^2 - 1 shrinks in proportion to the
    draws when the chains mix, with a 20% margin, and capped at ``max_draws`` per chain. Each
    continuation recompiles NumPyro's sampler, so one well-sized block beats several small ones.
    """
    import arviz as az

    from hierarchy.inference.diagnostics import ESS_MIN, RHAT_MAX, diagnose

    post = {k: v for k, v in samples.items() if k not in PER_ROW}
    d = diagnose(az.from_dict(posterior=post, sample_stats={"diverging": extra["diverging"]}))
    ess = np.nan_to_num(min(d["ess_bulk_min"], d["ess_tail_min"]), nan=1.0)
    rhat = d["rhat_max"] if np.isfinite(d["rhat_max"]) else 1.0  # no finite R-hat: ESS decides
    if rhat <= RHAT_MAX and ess >= ESS_MIN:
        return 0
    n = next(iter(post.values())).shape[1]
    factor = max(ESS_MIN / max(ess, 1.0), (rhat**2 - 1) / (RHAT_MAX**2 - 1))
    return int(min(np.ceil(1.2 * n * factor), max_draws) - n)


def meets_bar(samples: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> bool:
    """Whether every reported parameter has R-hat <= 1.01 and bulk and tail ESS >= 400."""
    n = next(iter(samples.values())).shape[1]
    return draws_to_bar(samples, extra, n + 1) == 0


def _pymc(spec, priors, design, settings, progress) -> Draws:
    import pymc as pm

    from hierarchy.likelihood.model import build_model

    model = build_model(spec, priors, design)
    kwargs = dict(draws=settings["draws"], tune=settings["tune"], chains=settings["chains"],
                  random_seed=settings["seed"], progressbar=progress,
                  target_accept=settings["target_accept"], compute_convergence_checks=False)
    if settings["sampler"] != "pymc":
        kwargs["nuts_sampler"] = settings["sampler"]
    if settings["sampler"] == "pymc":
        kwargs["cores"] = min(settings["chains"], os.cpu_count() or 1)
    t = time.perf_counter()
    with model:
        idata = pm.sample(**kwargs)
    t_all = time.perf_counter() - t
    post = {k: v.values for k, v in idata.posterior.data_vars.items()}
    if "la_corr" in post and post["la_corr"].ndim == 3:  # packed upper triangle -> matrix
        r = post["la_corr"][..., 0]
        one = np.ones_like(r)
        post["la_corr"] = np.stack([np.stack([one, r], -1), np.stack([r, one], -1)], -2)
    ss = idata.sample_stats
    stats = {"diverging": ss["diverging"].values.astype(bool)}
    for name, alias in (("energy", "energy"), ("n_steps", "n_steps"), ("tree_depth", "tree_depth"),
                        ("tree_depth", "depth")):
        if alias in ss and name not in stats:
            stats[name] = ss[alias].values
    settings["max_tree_depth"] = MAX_TREE_DEPTH
    return Draws(posterior=post, stats=stats, timings={"sampling": t_all})


def _approximate(spec, priors, design, settings) -> Draws:
    """Pathfinder (BlackJAX) or mean-field ADVI (NumPyro SVI) in the unconstrained space."""
    from functools import partial

    import jax
    from numpyro.infer.util import initialize_model

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    layout = make_layout(design)
    model = partial(model_fn(spec, priors, design, layout),
                    model_data(layout, "float32" if settings["float32"] else "float64"))
    key = jax.random.PRNGKey(settings["seed"])
    n = settings["chains"] * settings["draws"]
    t = time.perf_counter()
    if settings["sampler"] == "advi":
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal
        from numpyro.optim import Adam

        guide = AutoNormal(model)
        svi = SVI(model, guide, Adam(0.02), Trace_ELBO())
        res = svi.run(key, max(settings["tune"] * 10, 2000), progress_bar=False)
        samples = guide.sample_posterior(jax.random.fold_in(key, 1), res.params,
                                         sample_shape=(n,))
        samples = {k: v for k, v in samples.items() if k != "_auto_latent"}
    else:
        import blackjax

        info = initialize_model(key, model)
        flat, unravel = jax.flatten_util.ravel_pytree(info.param_info.z)

        def logdensity(q):
            return -info.potential_fn(unravel(q))

        state, _ = blackjax.vi.pathfinder.approximate(jax.random.fold_in(key, 1), logdensity, flat,
                                                      maxiter=1000)
        qs = blackjax.vi.pathfinder.sample(jax.random.fold_in(key, 2), state, num_samples=n)
        qs = qs[0] if isinstance(qs, tuple) else qs
        samples = jax.vmap(lambda q: info.postprocess_fn(unravel(q)))(qs)
    post = {k: np.asarray(v).reshape((settings["chains"], settings["draws"]) + v.shape[1:])
            for k, v in samples.items()}
    post = {k: v for k, v in post.items() if not k.startswith("_")}
    return Draws(posterior=post, timings={"sampling": time.perf_counter() - t})

"""Samplers behind one :func:`fit`: NUTS in NumPyro (default), nutpie or PyMC; and the panel fits.

Every sampler returns the same :class:`Draws` (arrays with leading ``chain, draw`` axes and
normalised sample statistics), which :mod:`hierarchy.results.fitfile` turns into InferenceData.
Each offered sampler is checked against NumPyro NUTS on a simulated fit (posterior means of the
hyperparameters within 0.1 NUTS posterior SD: tests/inference/test_sampling_options.py); the ones
that failed that check are refused by name (:data:`REMOVED_SAMPLERS`).

The sampler defaults (:data:`CHAINS`, :data:`TUNE`, :data:`DRAWS`, :func:`default_max_draws`) are
set here once, for ``hierarchy fit`` and the panel fits (:func:`fit_panels`): NumPyro fits sample on
until the convergence bar is met (:func:`draws_to_bar`), up to ``max_draws`` per chain.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierarchy.compiled import release_compiled_programs
from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, centring, describe_centring
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import parameters, spatial
from hierarchy.likelihood.model import la_effect_labels

METHODS = ("nuts", "laplace")
SAMPLERS = ("numpyro", "nutpie", "pymc", "chees")  # chees: many chains (hierarchy.inference.chees)
REMOVED_SAMPLERS = {  # measured on tests/inference/test_sampling_options.py's fit (20 LAs x 20, Poisson)
    "pathfinder": "its posterior missed NUTS by up to 13 NUTS posterior SDs (LA SD 0.76 against 0.22)",
    "advi": "mean-field ADVI missed the NUTS posterior means by up to 1.0 NUTS SD (intercept)",
    "blackjax": "PyMC's BlackJAX NUTS path fails with the installed BlackJAX",
}
CHAINS = 4
TUNE = 1000
DRAWS = 1000
MAX_DRAWS_FACTOR = 3  # sampling on stops at this many times the first block of draws
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


def default_max_draws(draws: int) -> int:
    """The most draws per chain a fit of ``draws`` draws samples on to while it misses the bar."""
    return MAX_DRAWS_FACTOR * draws


def initial_point(model, data, seed: int) -> dict:
    """Unconstrained initial values of every site: each prior's median (of 15 draws), as NumPyro's
    ``init_to_median``, in one compiled program (NumPyro's ``initialize_model`` runs the model op by
    op: a minute of compilation at national scale)."""
    import jax
    from numpyro.distributions import biject_to
    from numpyro.handlers import seed as seeded
    from numpyro.handlers import substitute, trace
    from numpyro.infer import init_to_median

    @jax.jit
    def init(key, data):
        tr = trace(substitute(seeded(model, key), substitute_fn=init_to_median(num_samples=15))).get_trace(data)
        return {k: biject_to(v["fn"].support).inv(v["value"]) for k, v in tr.items()
                if v["type"] == "sample" and not v["is_observed"]}

    return init(jax.random.PRNGKey(seed), data)


def check_sampler(sampler: str) -> str:
    """``sampler`` if it is offered; else a one-line error saying why not and what to use."""
    if sampler in REMOVED_SAMPLERS:
        raise HierarchyError(f"--sampler {sampler} is no longer offered: {REMOVED_SAMPLERS[sampler]}; "
                             f"use --sampler numpyro (the default), {' or '.join(SAMPLERS[1:])}")
    if sampler not in SAMPLERS:
        from hierarchy.config import did_you_mean

        raise HierarchyError(f"unknown sampler '{sampler}'{did_you_mean(sampler, SAMPLERS)}; "
                             f"choose from {', '.join(SAMPLERS)}")
    return sampler


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


def with_defaults(sampler: str, chains: int | None = None, tune: int | None = None, draws: int | None = None,
                  target_accept: float | None = None) -> tuple[int, int, int, float]:
    """``chains``, ``tune``, ``draws`` and ``target_accept`` with those left as None set to the sampler's
    defaults: 4 x (1000 + 1000) at 0.8 for NUTS; chees's (:mod:`hierarchy.inference.chees`)."""
    if sampler == "chees":
        from hierarchy.inference import chees as many

        defaults = (many.CHAINS, many.TUNE, many.DRAWS, many.TARGET_ACCEPT)
    else:
        defaults = (CHAINS, TUNE, DRAWS, 0.8)
    given = (chains, tune, draws, target_accept)
    return tuple(d if v is None else v for v, d in zip(given, defaults, strict=True))


def fit(spec: ModelSpec, priors: PriorSet, design: Design, *, sampler: str = "numpyro",
        chains: int | None = None, tune: int | None = None, draws: int | None = None, seed: int = 0,
        chain_method: str = "parallel", progress: bool = False, target_accept: float | None = None,
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

    ``sampler="chees"`` runs many short chains with one adapted trajectory length
    (:mod:`hierarchy.inference.chees`), judged by nested R-hat. ``chains``, ``tune``, ``draws`` and
    ``target_accept`` left as None take the sampler's defaults: 4 x (1000 + 1000) at 0.8 for NUTS;
    128 x (500 + 100) at a harmonic-mean acceptance of 0.651 for chees.
    """
    check_sampler(sampler)
    chains, tune, draws, target_accept = with_defaults(sampler, chains, tune, draws, target_accept)
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
        from hierarchy.inference.laplace_fit import sample

        settings["parameterisation"] = "centred (LA effects marginalised by Laplace, drawn given each draw)"
        out = sample(spec, priors, design, settings, progress)
    elif sampler == "numpyro":
        out = _numpyro(spec, priors, design, settings, progress)
    elif sampler == "chees":
        from hierarchy.inference.chees import fit_chees

        out = fit_chees(spec, priors, design, settings)
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
    unkept = tuple(f"~z.{site}" for site in spatial.SITES) if design.graph is not None else ()
    t = time.perf_counter()
    mcmc.warmup(key, data, extra_fields=("num_steps", *unkept), collect_warmup=True)
    jax.block_until_ready(mcmc.post_warmup_state)
    t_warm = time.perf_counter() - t
    warm_steps = float(np.mean(mcmc.get_extra_fields()["num_steps"])) if settings["tune"] else 0.0
    fields = ("diverging", "num_steps", "energy")
    t = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, data, extra_fields=fields + unkept)
    samples, ex, more = sample_on(mcmc, (data,), settings["max_draws"], fields=fields + unkept)
    if more:
        settings["draws"] += sum(more)
        settings["continuations"] = len(more)
    t_samp = time.perf_counter() - t
    steps = ex["num_steps"]
    stats = {"diverging": ex["diverging"], "energy": ex["energy"], "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings["chain_method_used"] = chain_method
    settings["max_tree_depth"] = MAX_TREE_DEPTH
    return Draws(posterior=samples, stats=stats,
                 timings={"warmup": t_warm, "sampling": t_samp, "warmup_mean_steps": warm_steps})


def sample_on(mcmc, args: tuple, max_draws: int, *, fields: tuple[str, ...] = ("diverging",),
              judged=None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[int]]:
    """Go on sampling a NumPyro ``mcmc`` that has just run, until the bar is met or ``max_draws`` per chain.

    While :func:`draws_to_bar` asks for more, the chains go on from where they stopped, with the adapted
    step size and mass matrix. ``judged`` maps the samples (chain, draw, ...) to the ones the bar is
    judged on (default: all but the per-row effects). Returns the samples and extra fields of all the
    blocks joined along the draw axis, and the sizes of the blocks added. ``mcmc`` is left set to go
    on: give it ``post_warmup_state = None`` before a fresh run.
    """
    import jax

    blocks = [(mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True))]
    jax.block_until_ready(blocks[-1])
    samples, ex = _joined(blocks)
    added: list[int] = []
    while next(iter(samples.values())).shape[1] < max_draws:
        more = draws_to_bar(judged(samples) if judged else samples, ex, max_draws)
        if not more:
            break
        mcmc.post_warmup_state, mcmc.num_samples = mcmc.last_state, more
        mcmc.run(mcmc.post_warmup_state.rng_key, *args, extra_fields=fields)
        blocks.append((mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True)))
        samples, ex = _joined(blocks)
        added.append(more)
    return samples, ex, added


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
    if settings["sampler"] == "pymc":  # PyMC forks a process per core: with JAX running that can deadlock
        kwargs["cores"] = 1 if "jax" in sys.modules else min(settings["chains"], os.cpu_count() or 1)
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


# ------------------------------------------------------------------------------ the LA panel fits


def fit_panel(design, spec, **kwargs):
    """Fit one measure of the LA panel (:func:`fit_panels` with one design)."""
    return fit_panels([design], spec, **kwargs)[0]


PANEL_TARGET_ACCEPT = 0.9
"""The LA panel fits' NUTS target acceptance (:func:`fit_panels`, ``hierarchy fit`` of a panel model)."""


def fit_panels(designs: list, spec, *, chains: int = CHAINS, tune: int = TUNE, draws: int = DRAWS,
               max_draws: int | None = None, seed: int = 0, progress: bool = False,
               target_accept: float = PANEL_TARGET_ACCEPT) -> list:
    """Fit measures of the LA panel (:mod:`hierarchy.likelihood.panel_model`) with NumPyro NUTS.

    Each fit samples on past ``draws`` per chain until the convergence bar is met (:func:`sample_on`),
    up to ``max_draws`` (default :func:`default_max_draws`); a fit that misses it at the cap ends with a
    ``WARN:`` warning naming the parameter, also in its ``diagnostics["warning"]``. Chains run one
    after another; measures of the same shape share one compiled sampler.

    Returns
    -------
    list of PanelFit
        One per design, in order; ``diagnostics`` holds :func:`panel_diagnostics`.
    """
    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.likelihood import panel_model as pm

    max_draws = default_max_draws(draws) if max_draws is None else max_draws
    if max_draws < draws:
        raise HierarchyError(f"max_draws {max_draws} is below draws {draws}: give at least {draws}")
    jax.config.update("jax_enable_x64", True)
    fits, samplers = [], {}
    for design in designs:
        if release_compiled_programs():  # the shared samplers' programs went with the rest
            samplers.clear()
        shape = pm.panel_shape(design, spec)
        if shape not in samplers:  # the data are arguments: one traced program per shape and row count
            samplers[shape] = MCMC(NUTS(pm.panel_model_fn(spec, shape), target_accept_prob=target_accept),
                                   num_warmup=tune, num_samples=draws, num_chains=chains,
                                   chain_method="sequential", progress_bar=progress, jit_model_args=True)
        mcmc = samplers[shape]
        if mcmc.post_warmup_state is not None:  # it went on sampling the last measure: warm up afresh
            mcmc.post_warmup_state, mcmc.num_samples = None, draws
            mcmc._set_collection_params()  # else numpyro keeps the last continuation's number of draws
        start = time.perf_counter()
        args = pm.model_args(design)
        mcmc.run(jax.random.PRNGKey(seed), *args)
        grouped, extra, more = sample_on(mcmc, args, max_draws, judged=pm.diagnostic_draws)
        seconds = time.perf_counter() - start
        diag = panel_diagnostics(pm.diagnostic_draws(grouped), extra)
        diag.update(draws=draws + sum(more), continuations=len(more))
        if diag["status"] != "ok":
            diag["warning"] = (f"WARN: {spec.name} {design.measure}: not converged after {diag['draws']} draws "
                               f"per chain (max_draws {max_draws}): {diag['warning']}; do not report it until "
                               "this is fixed")
            warnings.warn(diag["warning"], UserWarning, stacklevel=2)
        draws_ = {k: np.asarray(v).reshape(-1, *v.shape[2:]) for k, v in grouped.items()}
        fits.append(pm.PanelFit(spec=spec, design=design, draws=draws_, centred=shape[0], seconds=seconds,
                                diagnostics=diag))
    return fits


def panel_diagnostics(samples: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> dict[str, Any]:
    """R-hat, bulk and tail ESS and divergences of a panel fit, with the worst parameter of each.

    ``status`` is ``ok`` or ``warn``; ``warning`` lists what missed the bar (empty when ok).
    """
    import arviz as az

    from hierarchy.inference.diagnostics import diagnose

    d = diagnose(az.from_dict(posterior=samples, sample_stats={"diverging": np.asarray(extra["diverging"])}))
    return {"status": d["status"], "max_rhat": d["rhat_max"], "rhat_worst": d["rhat_worst"],
            "min_ess_bulk": d["ess_bulk_min"], "ess_bulk_worst": d["ess_bulk_worst"],
            "min_ess_tail": d["ess_tail_min"], "ess_tail_worst": d["ess_tail_worst"],
            "min_ess": min(d["ess_bulk_min"], d["ess_tail_min"]), "divergences": d["divergences"],
            "warning": "; ".join(d["reasons"])}

"""Many chains with one adapted, jittered trajectory length: ChEES-HMC (Hoffman, Radul & Sountsov 2021).

Hundreds of chains run in lockstep with the same step size, diagonal mass matrix and (jittered) number
of leapfrog steps, so one compiled program carries every chain: the shape that pays on a GPU, where
vectorised NUTS waits for its longest trajectory (issue 30). The adaptation is BlackJAX's
``chees_adaptation`` (step size by dual averaging of the chains' harmonic-mean acceptance, trajectory
length by Adam on the ChEES criterion, a diagonal mass matrix from the ensemble); sampling is
``blackjax.dynamic_hmc`` with the adapted values.

The chains run in ``superchains`` groups; the chains of a group start from one point (drawn uniformly
in (-2, 2) on the unconstrained scale, as NumPyro's default), so nested R-hat (Margossian et al. 2024:
:func:`hierarchy.inference.diagnostics.nested_rhat`) can judge many short chains. The sample statistic
``superchain`` records each chain's group in the fit file, and :func:`~hierarchy.inference.diagnostics.diagnose`
then gates on nested R-hat in place of R-hat.

:func:`run` is the core: a pure function of (log density, data pytree, initial positions, key), jittable
and vmappable over the data (batched fits of one shape). :func:`fit_chees` is the ``hierarchy fit
--sampler chees`` path on a NumPyro model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hierarchy.errors import HierarchyError

CHAINS = 128
TUNE = 500
DRAWS = 100
TARGET_ACCEPT = 0.651  # harmonic mean of the chains' acceptance (optimal for HMC at fixed length)
LEARNING_RATE = 0.025  # Adam on log trajectory length
INITIAL_STEP_SIZE = 0.1
MAX_LEAPFROG_STEPS = 1000
MAX_KEPT = 16_384  # draws kept in the fit file (all chains): more chains x draws are thinned to this
CHAINS_PER_SUPERCHAIN_MAX = 16
INIT_RADIUS = 1.0  # superchains start within this of the prior medians (unconstrained scale)


def refusal(spec, design=None) -> str | None:
    """Why ``--sampler chees`` refuses ``spec`` (a sentence naming the term), or None.

    ``design`` is accepted for the signature :func:`hierarchy.inference.laplace.refusal` has; no refusal
    needs it yet. Measured refusals (``bench/chees_agreement.py``), not a list of untried terms.
    """
    if getattr(spec, "spatial", None):
        return ("the spatial term car(neighbourhood) (BYM2) is not supported by --sampler chees: on a 20-LA test "
                "set its shared step size fell to 0.003, trajectories ran to the step cap and half the "
                "transitions diverged (bench/chees_agreement.py)")
    if spec.family == "poisson" and spec.strata:
        return ("Poisson models with a stratum term (the duration models' C(band)) are not supported by --sampler "
                "chees yet: on care_reentry_poisson (20 LAs) nested R-hat was 14.9 with 1,600 divergent "
                "transitions, while NUTS converged (bench/chees_agreement.py)")
    return None


def check_supported(spec, design=None) -> None:
    """Raise :class:`HierarchyError` naming the term when ``--sampler chees`` refuses ``spec``."""
    why = refusal(spec, design)
    if why:
        raise HierarchyError(f"{spec.name}: {why}; fit it with --sampler numpyro (the default)")


def superchains_for(chains: int) -> int:
    """How many superchains ``chains`` chains run in: 8 (4 below 64 chains), each of equal size.

    Raises
    ------
    HierarchyError
        When ``chains`` is below 16 or not a multiple of the number of superchains.
    """
    if chains < 16:
        raise HierarchyError(f"--chains {chains} is too few for --sampler chees: it runs many short chains "
                             "judged by nested R-hat; give at least 16 (default 128)")
    k = 8 if chains >= 64 else 4
    if chains % k:
        raise HierarchyError(f"--chains {chains} with --sampler chees: give a multiple of {k} (the chains run "
                             f"in {k} superchains of equal size for nested R-hat), e.g. {chains - chains % k + k}")
    return k


def initial_positions(template: Any, superchains: int, chains: int, key, radius: float = INIT_RADIUS) -> Any:
    """Initial unconstrained positions (chains, ...): one point per superchain, ``template`` (each prior's
    median: :func:`hierarchy.inference.sampling.initial_point`) plus uniform(-radius, radius) noise, repeated
    for each of its ``chains // superchains`` chains (chain ``c`` is in superchain ``c // size``).

    Dispersed about the prior medians rather than about 0 (NumPyro's and Stan's uniform(-2, 2)): an
    intercept of 0 to 2 on the log scale (1 to 7 events per child) left whole superchains of Poisson fits
    stuck at their start, every transition divergent at the step size the other chains share."""
    import jax
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(template)
    keys = jax.random.split(key, len(leaves))
    size = chains // superchains
    out = [jnp.repeat(jnp.asarray(x)[None] + jax.random.uniform(
        k, (superchains, *jnp.shape(x)), jnp.result_type(x), -radius, radius), size, axis=0)
        for k, x in zip(keys, leaves, strict=True)]
    return tree.unflatten(out)


def _steps_fn(num_warmup: int, num_draws: int):
    """Jittered number of leapfrog steps: ``ceil(u L)`` with ``u`` the chain's next Halton number, as in
    ``blackjax.chees_adaptation`` (the sequence continues from warm-up into sampling)."""
    import jax.numpy as jnp
    from blackjax.mcmc.dynamic_hmc import halton_sequence

    max_bits = int(np.ceil(np.log2(num_warmup + num_draws)))

    def steps(i, num_leapfrog_steps):
        return jnp.asarray(jnp.ceil(halton_sequence(i, max_bits) * num_leapfrog_steps), dtype=int)

    return steps


def run(logdensity: Callable[[Any, Any], Any], data: Any, positions: Any, key, *, num_warmup: int = TUNE,
        num_draws: int = DRAWS, thin: int = 1, target_accept: float = TARGET_ACCEPT,
        learning_rate: float = LEARNING_RATE, transform: Callable[[Any, Any], Any] | None = None
        ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """ChEES warm-up then jittered HMC sampling of every chain; pure, jittable, vmappable over ``data``.

    Parameters
    ----------
    logdensity : callable
        ``logdensity(position, data) -> scalar`` on the unconstrained scale.
    data : pytree
        The model's data (a traced argument: vmap over a leading batch axis for batched fits).
    positions : pytree
        Initial positions, leaves ``(chains, ...)`` (run as one flat vector a chain: BlackJAX's ChEES
        criterion takes each leaf as ``(chains, dim)``). Every chain takes the same jittered number of
        leapfrog steps at each iteration, so the chains move in lockstep.
    key : jax.random.PRNGKey
    num_warmup, num_draws, thin : int
        Adaptation steps, sampling steps and the stride of the draws kept: ``ceil(num_draws / thin)``
        draws are kept, each the last of ``thin`` steps (so ``thin * ceil(num_draws / thin)`` steps run).
    target_accept : float
        Target harmonic-mean acceptance of the step-size adaptation.
    learning_rate : float
        Adam's learning rate for the log trajectory length.
    transform : callable, optional
        ``transform(position, data) -> pytree`` of what to keep from each draw (default: the position).

    Returns
    -------
    kept : pytree
        Leaves ``(chains, kept draws, ...)``.
    stats : dict
        ``diverging`` (any divergence within each kept stride), ``acceptance_rate``, ``n_steps``,
        ``energy``: each ``(chains, kept draws)``.
    adapted : dict
        ``step_size``, ``n_leapfrog`` (mean number of leapfrog steps before jitter) and
        ``inverse_mass_matrix`` (flat, diagonal).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from blackjax import chees_adaptation
    from blackjax.mcmc import dynamic_hmc
    from jax.flatten_util import ravel_pytree

    chains = jax.tree.leaves(positions)[0].shape[0]
    _, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], positions))
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(positions)
    density = lambda p: logdensity(unravel(p), data)  # noqa: E731
    keep = (lambda p: unravel(p)) if transform is None else (lambda p: transform(unravel(p), data))
    k_warm, k_draw = jax.random.split(key)
    warmup = chees_adaptation(density, chains, target_acceptance_rate=target_accept,
                              mass_matrix_estimation="diagonal", adaptation_info_fn=lambda *_: None,
                              max_leapfrog_steps=MAX_LEAPFROG_STEPS)
    (states, params), _ = warmup.run(k_warm, flat, INITIAL_STEP_SIZE, optax.adam(learning_rate),
                                     num_warmup, max_sampling_steps=num_draws)
    kernel = dynamic_hmc.build_kernel(next_random_arg_fn=lambda i: i + 1,
                                      integration_steps_fn=_steps_fn(num_warmup, num_draws))
    step = jax.vmap(lambda k, s: kernel(k, s, density, params["step_size"], params["inverse_mass_matrix"],
                                        params["integration_steps_params"]))

    def one(s, k):
        s, info = step(jax.random.split(k, chains), s)
        steps = jax.vmap(_steps_fn(num_warmup, num_draws), (0, None))(s.random_generator_arg - 1,
                                                                       params["integration_steps_params"][0])
        return s, (info.is_divergent, info.acceptance_rate, steps, info.energy)

    def stride(s, k):
        s, (div, acc, steps, energy) = jax.lax.scan(one, s, jax.random.split(k, thin))
        stats = {"diverging": div.any(0), "acceptance_rate": acc[-1], "n_steps": steps[-1], "energy": energy[-1]}
        return s, (jax.vmap(keep)(s.position), stats)

    n_kept = -(-num_draws // thin)
    _, (kept, stats) = jax.lax.scan(stride, states, jax.random.split(k_draw, n_kept))
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  (draw, chain, ...) -> (chain, draw, ...)
    adapted = {"step_size": params["step_size"], "n_leapfrog": params["integration_steps_params"][0],
               "inverse_mass_matrix": params["inverse_mass_matrix"]}
    return jax.tree.map(swap, kept), {k: swap(v) for k, v in stats.items()}, adapted


def check_float32_rows(logdensity: Callable[[Any, Any], Any], data32: Any, data64: Any, positions: Any) -> None:
    """Refuse float32 rows when the chains' log density or its gradient, vmapped over the chains as the
    sampler runs them, departs from float64's.

    Both are evaluated at ``positions`` (leaves ``(chains, ...)``) once on ``data32`` and once on
    ``data64``. A chain fails when its log density differs by more than ``1 + 1e-5 |log density|`` or
    its gradient by more than ``1e-3 (1 + max |gradient|)`` (float32 rounding on 1,328 rows: 2e-3 and
    7e-4 at gradients of 2e4). Measured (issue 30): on CPU with jaxlib 0.10.2, float32 row sums cast to
    float64 go wrong when vmapped past 2**14 chunk sums (51 chains of 320 chunks): log densities off by
    700 to 15,000 and gradients by 13,000, so the shared step size fell to 6e-6.

    Raises
    ------
    HierarchyError
        Naming the chains and the gap, and the fix: ``--sampler chees`` without ``--float32``.
    """
    import jax
    from jax.flatten_util import ravel_pytree

    def both(data):
        out = jax.jit(jax.vmap(jax.value_and_grad(lambda p: logdensity(p, data))))(positions)
        flat = jax.vmap(lambda g: ravel_pytree(g)[0])(out[1])
        return np.asarray(out[0], dtype=float), np.asarray(flat, dtype=float)

    (lp32, g32), (lp64, g64) = both(data32), both(data64)
    bad = ~(np.abs(lp32 - lp64) <= 1.0 + 1e-5 * np.abs(lp64))  # NaN counts as bad
    bad |= ~(np.max(np.abs(g32 - g64), axis=1) <= 1e-3 * (1.0 + np.max(np.abs(g64), axis=1)))
    if bad.any():
        c = int(np.argmax(bad))
        raise HierarchyError(
            f"--float32 with --sampler chees: the log density or its gradient in float32 rows differs from "
            f"float64 in {int(bad.sum())} of {len(bad)} chains when the chains are evaluated together on this "
            f"device (chain {c}: log density {lp32[c]:.6g} against {lp64[c]:.6g}, largest gradient gap "
            f"{np.max(np.abs(g32[c] - g64[c])):.3g}); the step size would collapse (issue 30). Fit with "
            "--sampler chees without --float32")


def kept_draws(chains: int, draws: int, max_kept: int = MAX_KEPT) -> tuple[int, int]:
    """The stride and the draws kept per chain: every chain, at most ``max_kept`` draws in all."""
    thin = max(1, -(-chains * draws // max_kept))
    return thin, -(-draws // thin)


def fit_chees(spec, priors, design, settings: dict[str, Any]) -> Any:
    """``hierarchy fit --sampler chees``: the NumPyro model's density sampled by :func:`run`.

    ``settings`` (from :func:`hierarchy.inference.sampling.fit`) gives ``chains``, ``tune``, ``draws``,
    ``seed``, ``float32`` and ``target_accept``; the superchains, the stride and the adapted step size
    and trajectory length are added to it. Returns :class:`hierarchy.inference.sampling.Draws` with the
    sample statistic ``superchain`` (chain, draw). A model :func:`refusal` names is refused, and so are
    float32 rows whose vmapped log density or gradient departs from float64's (:func:`check_float32_rows`).
    """
    import jax
    from numpyro.infer.util import constrain_fn, potential_energy

    from hierarchy.inference.sampling import PER_ROW, Draws, initial_point
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    check_supported(spec, design)
    jax.config.update("jax_enable_x64", True)
    chains, tune, draws = settings["chains"], settings["tune"], settings["draws"]
    superchains = superchains_for(chains)
    thin, kept = kept_draws(chains, draws)
    layout = make_layout(design)
    data = model_data(layout, "float32" if settings["float32"] else "float64")
    _, k_init, k_run = jax.random.split(jax.random.PRNGKey(settings["seed"]), 3)
    model = model_fn(spec, priors, design, layout)
    template = initial_point(model, data, settings["seed"])  # shapes only; one compiled program, not op by op

    def transform(z, d):
        sites = constrain_fn(model, (d,), {}, z, return_deterministic=True)
        return {k: v for k, v in sites.items() if k not in PER_ROW}

    positions = initial_positions(template, superchains, chains, k_init)
    def logdensity(z, d):
        return -potential_energy(model, (d,), {}, z)

    if settings["float32"]:
        check_float32_rows(logdensity, data, model_data(layout, "float64"), positions)
    program = jax.jit(lambda d, p, k: run(logdensity, d, p, k, num_warmup=tune, num_draws=draws, thin=thin,
                                          target_accept=settings["target_accept"], transform=transform))
    t = time.perf_counter()
    compiled = program.lower(data, positions, k_run).compile()
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(data, positions, k_run))
    t_run = time.perf_counter() - t
    kept_draws_, stats, adapted = jax.tree.map(np.asarray, out)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    if thin > 1:  # E-BFMI needs consecutive energies
        stats.pop("energy")
    stats["superchain"] = np.repeat(np.arange(chains) // (chains // superchains), kept).reshape(chains, kept)
    settings.update(superchains=superchains, chains_per_superchain=chains // superchains, thin=thin,
                    draws_run=kept * thin, draws=kept, max_kept=MAX_KEPT,
                    step_size=float(adapted["step_size"]), mean_leapfrog_steps=float(np.mean(stats["n_steps"])),
                    trajectory_length=float(adapted["step_size"] * adapted["n_leapfrog"]),
                    chain_method_used="vectorized",
                    init=f"prior medians +- {INIT_RADIUS:g} (uniform, unconstrained), one point per superchain")
    return Draws(posterior=dict(kept_draws_), stats=stats,
                 timings={"compile": t_compile, "warmup_and_sampling": t_run})

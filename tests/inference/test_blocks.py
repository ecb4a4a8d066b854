"""Small-block linear algebra without LAPACK (``hierarchy.inference.blocks``): the same factors, solves,
log-determinants and draws as numpy's LAPACK, differentiable, and no LAPACK call left in the Laplace
mode's compiled programs (jaxlib 0.10.2's batched LAPACK kernels can deadlock XLA's thread pool on 2 cores:
the module docstring says how CI hung)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hierarchy.inference import blocks, laplace

ROOT = Path(__file__).resolve().parents[2]


def spd(rng, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Random symmetric positive definite blocks with condition numbers up to ~1e4."""
    a = rng.standard_normal((*shape, k, k))
    scale = np.exp(rng.uniform(-4.0, 4.0, (*shape, k)))  # scales over 4 orders of magnitude, as LA SDs
    h = a @ np.swapaxes(a, -1, -2) + k * np.eye(k)
    return h * np.sqrt(scale[..., :, None] * scale[..., None, :])


@pytest.mark.parametrize("k", [1, 2, 3, 8, 15])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_factor_solve_logdet_and_draw_equal_lapack(k, shape):
    import jax

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(k)
    h = spd(rng, shape, k)
    g = rng.standard_normal((*shape, k))
    L = np.asarray(blocks.cholesky(h))
    np.testing.assert_allclose(L, np.linalg.cholesky(h), rtol=1e-10, atol=1e-12 * np.abs(L).max())
    np.testing.assert_allclose(blocks.solve(h, g), np.linalg.solve(h, g[..., None])[..., 0], rtol=1e-8)
    np.testing.assert_allclose(blocks.logdet(L), np.sum(np.linalg.slogdet(h)[1]), rtol=1e-12)
    eps = rng.standard_normal((*shape, k))
    x = np.asarray(blocks.draw(g, L, eps))
    np.testing.assert_allclose(np.einsum("...fe,...f->...e", L, x - g), eps, rtol=1e-8, atol=1e-10)  # L'(x-g)=eps


def test_log_determinant_differentiates_to_the_inverse():
    """d log det H / dH = H^-1 (symmetric H): the reverse pass through the column loop is right."""
    import jax

    jax.config.update("jax_enable_x64", True)
    h = spd(np.random.default_rng(3), (4,), 6)
    grad = np.asarray(jax.grad(lambda m: blocks.logdet(blocks.cholesky(0.5 * (m + np.swapaxes(m, -1, -2)))))(h))
    np.testing.assert_allclose(grad, np.linalg.inv(h), rtol=1e-7, atol=1e-9 * np.abs(grad).max())


SPLIT_COST = 200_000
"""jaxlib 0.10.2 splits a LAPACK call over the thread pool once ``batch x k^3`` passes about this (read off
its ``CholeskyFactorization`` kernel: chunks of ``max(batch / threads, 200,000 / cost)`` matrices)."""


def lapack_calls(hlo: str) -> list[tuple[str, int, int]]:
    """``(target, batch, k)`` of every LAPACK custom call in compiled HLO text (its first operand's shape)."""
    calls = []
    for target, dims in re.findall(r'custom-call\(.*?custom_call_target="(lapack_\w+)".*?'
                                   r'operand_layout_constraints=\{f(?:32|64)\[([\d,]*)\]', hlo):
        shape = [int(d) for d in dims.split(",") if d]
        calls.append((target, int(np.prod(shape[:-2])), shape[-1]))
    return calls


def test_no_lapack_call_the_thread_pool_would_split_in_the_laplace_programs():
    """The Laplace potential with its gradient, and the latent draws vmapped over a batch of hyperparameter
    draws (``laplace_fit.draw_latent``'s), on the anchored stacked model's 6-effect LA blocks: what is
    left of LAPACK (the model's own 2 x 2 LA correlation pieces) stays 10x under the size that jaxlib
    splits over the thread pool. Before, the blocks' ``lapack_dgetrf_ffi`` / ``dpotrf`` took
    ``DRAW_BATCH x LAs`` 6 x 6 matrices."""
    import jax
    from jax.flatten_util import ravel_pytree

    from hierarchy.data import simulate
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.inference.laplace_fit import DRAW_BATCH
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(ROOT / "models/stages_nb.toml")
    table, _ = simulate.simulate(synthetic_geography(3, seed=2, lsoa_per_la=6), seed=2)
    problem = laplace.build_problem(spec, load_priors(ROOT / "priors/weakly_informative.toml"),
                                    build_design(table, spec))
    assert max(b.width for b in problem.blocks) == 6  # la_anchor + la_stage_centred per LA
    flat, unravel = ravel_pytree(laplace.hyper_init(problem))
    potential = jax.value_and_grad(lambda v: laplace.laplace_potential(problem, problem.x0)(unravel(v)))

    def draw_one(v, key):  # laplace_fit.draw_latent's, vmapped over DRAW_BATCH draws
        x_hat, H, _, _ = laplace.mode_and_hessian(problem, unravel(v), problem.x0)
        return blocks.draw(x_hat, blocks.cholesky(H), jax.random.normal(key, x_hat.shape, x_hat.dtype))

    keys = jax.random.split(jax.random.PRNGKey(0), DRAW_BATCH)
    programs = {"potential": jax.jit(potential).lower(flat),
                "draws": jax.jit(jax.vmap(draw_one)).lower(np.repeat(flat[None], DRAW_BATCH, 0), keys)}
    for name, lowered in programs.items():
        calls = lapack_calls(lowered.compile().as_text())
        assert all(k <= 2 for _, _, k in calls), f"{name}: LAPACK on blocks over 2 x 2: {calls}"
        assert all(b * k**3 * 10 < SPLIT_COST for _, b, k in calls), f"{name}: {calls}"


def test_inverse_and_solve_differentiate_like_lapack():
    """The hand-written derivatives of ``inverse_spd`` and ``solve`` (``-H^-1 dH H^-1``) against JAX's
    own through ``jnp.linalg.solve``, in a direction that keeps H symmetric."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(5)
    h, g = spd(rng, (3,), 5), rng.standard_normal((3, 5))
    d = rng.standard_normal(h.shape)
    dh = d + np.swapaxes(d, -1, -2)
    for ours, ref in ((lambda m: blocks.solve(m, g), lambda m: jnp.linalg.solve(m, g[..., None])[..., 0]),
                      (blocks.inverse_spd, jnp.linalg.inv),
                      (blocks.logdet_spd, lambda m: jnp.sum(jnp.linalg.slogdet(m)[1]))):
        got, want = jax.jvp(ours, (h,), (dh,)), jax.jvp(ref, (h,), (dh,))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * np.abs(b).max())
    cot = jax.grad(lambda m: jnp.sum(blocks.solve(m, g) ** 2))(h)
    np.testing.assert_allclose(cot, jax.grad(lambda m: jnp.sum(jnp.linalg.solve(m, g[..., None]) ** 2))(h),
                               rtol=1e-7, atol=1e-9)

"""Linear algebra on many small symmetric positive definite blocks (the Laplace mode's per-LA Hessians and
prior precisions, ``(..., k, k)``), written as plain JAX arithmetic over the columns, without LAPACK.

Why not ``jnp.linalg``: jaxlib 0.10.2's CPU LAPACK kernels (Cholesky, LU, triangular solve and the rest)
split a large enough batch of matrices (``batch x k^3`` over ~200,000) over XLA's intra-op thread pool and
block the calling pool thread until the pieces are done. When as many such kernels run at once as the pool
has threads (2 on CI's 2 cores), no piece can start and the process hangs for ever: CI's slow suite hung in
the years model's Laplace draws with both pool threads in ``lapack_dgetrf_ffi`` under ``ParallelBatchMap``
(gdb, 2026-12-07). jaxlib 0.11.1 compiles that path out; it is not on PyPI here. The loops over the columns
cost 15-60% more per Laplace evaluation on small data than LAPACK did (bench/RESULTS.md, top section).
``tests/inference/test_blocks.py`` checks each function against numpy's LAPACK and that no LAPACK call is
left in the Laplace mode's compiled programs.
"""

from __future__ import annotations

import functools


def cholesky(H):
    """Lower Cholesky factor ``L`` (``H = L L'``) of every block of ``H`` (``(..., k, k)``)."""
    import jax.numpy as jnp

    k = H.shape[-1]
    cols = []  # column j of L: zeros above the diagonal
    for j in range(k):
        s = H[..., :, j]
        if j:
            done = jnp.stack(cols, axis=-1)  # (..., k, j)
            s = s - jnp.einsum("...im,...m->...i", done, done[..., j, :])
        d = jnp.sqrt(s[..., j:j + 1])
        cols.append(jnp.concatenate([jnp.zeros_like(s[..., :j]), d, s[..., j + 1:] / d], axis=-1))
    return jnp.stack(cols, axis=-1)


def solve_lower(L, b):
    """``L^-1 b`` per block (forward substitution; ``b``: ``(..., k)``)."""
    import jax.numpy as jnp

    y = []
    for i in range(L.shape[-1]):
        r = b[..., i]
        if i:
            r = r - jnp.einsum("...m,...m->...", L[..., i, :i], jnp.stack(y, axis=-1))
        y.append(r / L[..., i, i])
    return jnp.stack(y, axis=-1)


def solve_upper(L, y):
    """``L'^-1 y`` per block, ``L`` lower triangular (back substitution; ``y``: ``(..., k)``)."""
    import jax.numpy as jnp

    k = L.shape[-1]
    x = [None] * k
    for i in reversed(range(k)):
        r = y[..., i]
        if i < k - 1:
            r = r - jnp.einsum("...m,...m->...", L[..., i + 1:, i], jnp.stack(x[i + 1:], axis=-1))
        x[i] = r / L[..., i, i]
    return jnp.stack(x, axis=-1)


def inverse(L):
    """``(L L')^-1`` per block, from the Cholesky factors ``L``."""
    import jax.numpy as jnp

    eye = jnp.broadcast_to(jnp.eye(L.shape[-1], dtype=L.dtype), L.shape)
    X = solve_lower(L[..., None, :, :], eye)  # row r is L^-1 e_r: X = L^-T
    return jnp.einsum("...ir,...jr->...ij", X, X)  # L^-T L^-1


def _inverse_spd_jvp(primals, tangents):
    import jax.numpy as jnp

    (H,), (dH,) = primals, tangents
    Hi = inverse(cholesky(H))
    return Hi, -jnp.einsum("...ij,...jk,...kl->...il", Hi, dH, Hi)


def _logdet_spd_jvp(primals, tangents):
    import jax.numpy as jnp

    (H,), (dH,) = primals, tangents
    L = cholesky(H)
    return logdet(L), jnp.sum(inverse(L) * dH)  # d log det H = tr(H^-1 dH), H and dH symmetric


@functools.cache
def _with_jvp(name: str):
    import jax

    fn, jvp = {"inverse": (lambda H: inverse(cholesky(H)), _inverse_spd_jvp),
               "logdet": (lambda H: logdet(cholesky(H)), _logdet_spd_jvp)}[name]
    f = jax.custom_jvp(fn)
    f.defjvp(jvp)
    return f


def inverse_spd(H):
    """``H^-1`` per block of a symmetric positive definite ``H``, with the derivative ``-H^-1 dH H^-1``
    (products of small matrices, instead of a reverse pass through the column loops)."""
    return _with_jvp("inverse")(H)


def solve(H, g):
    """``H^-1 g`` per block of a symmetric positive definite ``H`` (``g``: ``(..., k)``)."""
    import jax.numpy as jnp

    return jnp.einsum("...ij,...j->...i", inverse_spd(H), g)


def logdet(L):
    """``log det (L L')`` summed over every block, from the Cholesky factors ``L``."""
    import jax.numpy as jnp

    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)))


def logdet_spd(H):
    """``log det H`` summed over the blocks of a symmetric positive definite ``H``, with the derivative
    ``tr(H^-1 dH)``."""
    return _with_jvp("logdet")(H)


def draw(x_hat, L, eps):
    """``x_hat + L'^-1 eps`` per block: a draw from ``N(x_hat, (L L')^-1)`` for standard normal ``eps``."""
    return x_hat + solve_upper(L, eps)

"""Helpers the families' chunked row sums share (:mod:`hierarchy.likelihood.jaxmodel`'s layout).

Rows come in ``(K, C)`` blocks (``K`` chunks of ``C`` rows, padding masked out); per-chunk values are
``(K, 1)``. The rows may be float32 while the parameters and every sum across chunks stay float64.
"""

from __future__ import annotations

from typing import Any


def gammaln(xp) -> Any:
    """``lgamma`` for the array module ``xp`` (numpy or ``jax.numpy``)."""
    if xp.__name__.startswith("jax"):
        from jax.scipy.special import gammaln as jax_gammaln

        return jax_gammaln
    from scipy.special import gammaln as scipy_gammaln

    return scipy_gammaln


def total(x, dtype):
    """Sum of (K, C) row terms (each computed in the rows' precision) accumulated in ``dtype``.

    Summed straight into ``dtype`` (``jnp.sum(..., dtype=)``), never a float32 sum cast to float64
    afterwards: XLA on CPU (jaxlib 0.10.2) gets that pattern wrong once it is vmapped over more than 2**14
    chunk sums (e.g. 320 chunks x 51 chains), by up to thousands of log units (``tests/likelihood/
    test_families.py::test_float32_row_sums_are_right_vmapped_over_many_chains``)."""
    import jax.numpy as jnp

    return jnp.sum(jnp.sum(x, axis=1, dtype=dtype))


def in_row_precision(x, *per_chunk) -> tuple:
    """``per_chunk`` values cast to the dtype of the row array ``x``."""
    import jax.numpy as jnp

    return tuple(jnp.asarray(p).astype(x.dtype) for p in per_chunk)


def log_in_two(phi, row_dtype) -> tuple:
    """``log(phi)`` as two numbers of the rows' precision, ``hi + lo``, exact to float64.

    Every row subtracts ``log(phi)``: rounded once to float32, its error (~1e-7) is the same in every
    row and adds up over a million rows to jumps of ~4 in the log density between neighbouring values
    of phi (bench/RESULTS.md); ``(x - hi) - lo`` keeps the row terms at float32 cost without it.
    """
    import jax.numpy as jnp

    log_phi = jnp.log(phi)
    hi = log_phi.astype(row_dtype)
    return hi, (log_phi - hi.astype(log_phi.dtype)).astype(row_dtype)


def with_chunk_gradient(fwd):
    """``fwd(*per_chunk, log_exposure, w, y, mask) -> (value, per-chunk gradients)`` as a function
    with that gradient (the four row arrays get none)."""
    import jax

    def bwd(grads, g):  # each cotangent in its input's dtype (fwd gives each gradient in it)
        return (*((g * x).astype(x.dtype) for x in grads), None, None, None, None)

    f = jax.custom_vjp(lambda *args: fwd(*args)[0])
    f.defvjp(fwd, bwd)
    return f


def eta_of(a, b, per_row, log_exposure, w, y) -> tuple:
    """Per-chunk ``a, b`` and the rows' other terms cast to the rows' precision, and ``eta``."""
    if per_row is None:
        a, b = in_row_precision(y, a, b)
        return log_exposure + a + b * w
    a, b, per_row = in_row_precision(y, a, b, per_row)
    return log_exposure + a + b * w + per_row


def row_arrays(arr: dict) -> tuple:
    """The row arrays the chunk sums take, from :func:`hierarchy.likelihood.jaxmodel.model_data`'s dict."""
    return arr["log_exposure"], arr["w"], arr["y"], arr["mask"]

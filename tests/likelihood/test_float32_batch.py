"""Float32 row sums stay right when the likelihood is vmapped over many chains (chees, batched SBC and CV).

XLA on CPU (jaxlib 0.10.2) computes ``sum(sum(float32 rows, axis=1).astype(float64))`` wrongly once it is
vmapped over more than 2**14 chunk sums (found by the chees step-size collapse on ``stages_age_nb`` with 128
chains: log densities off by thousands from batch position 51 on, 320 chunks). The families now sum straight
into the wider dtype (:func:`hierarchy.likelihood.families._rows.total`); this test fails on the old pattern."""

from __future__ import annotations

import numpy as np
import pytest

from hierarchy.likelihood.families import negative_binomial, poisson

K, C, B = 320, 64, 64  # 320 chunks x 64 chains: 20,480 chunk sums per batch, past 2**14


@pytest.mark.parametrize("family", ["negative_binomial", "poisson"])
def test_float32_row_sums_are_right_vmapped_over_many_chains(family):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    rows = dict(log_exposure=rng.normal(2.0, 0.5, (K, C)), w=rng.normal(0, 1, (K, C)),
                y=rng.poisson(8.0, (K, C)).astype(float), mask=(rng.random((K, C)) < 0.9).astype(float))
    rows = {k: jnp.asarray(v, jnp.float32) for k, v in rows.items()}
    a = jnp.asarray(rng.normal(-0.5, 0.3, (B, K, 1)))
    b = jnp.asarray(rng.normal(0.4, 0.1, (B, K, 1)))
    phi = jnp.asarray(rng.uniform(5, 20, (B, K, 1)))
    if family == "negative_binomial":
        f = negative_binomial.chunks()
        args = (a, b, phi)
    else:
        f = poisson.chunks()
        args = (a, b)
    rest = (rows["log_exposure"], rows["w"], rows["y"], rows["mask"])
    vg = jax.value_and_grad(lambda *p: f(*p, *rest), argnums=tuple(range(len(args))))
    batched_v, batched_g = jax.jit(jax.vmap(vg))(*args)
    one = jax.jit(vg)
    for i in range(B):
        v, g = one(*(x[i] for x in args))
        assert abs(float(batched_v[i]) - float(v)) < 1e-6 * abs(float(v)) + 1e-3, (i, batched_v[i], v)
        for gb, gi in zip(batched_g, g, strict=True):
            np.testing.assert_allclose(np.asarray(gb[i]), np.asarray(gi), rtol=1e-5, atol=1e-3)

"""The families' ``row_third`` (the Laplace mode's log-determinant gradient): JAX's derivatives of their
``row_derivatives``, in ``eta`` and in each likelihood parameter."""

from __future__ import annotations

import numpy as np
import pytest

from hierarchy.likelihood.families import negative_binomial, poisson

CASES = [(poisson, {}), (negative_binomial, {"dispersion": 0.7}), (negative_binomial, {"dispersion": 25.0})]


@pytest.mark.parametrize(("module", "params"), CASES)
def test_row_third_is_autodiff_of_row_derivatives(module, params):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(2)
    y = jnp.asarray(np.r_[np.zeros(10), rng.poisson(4.0, 30), [400.0]])
    eta = jnp.asarray(np.r_[rng.normal(1.0, 1.5, 40), [6.0]])
    p = {k: jnp.full(y.shape, v) for k, v in params.items()}
    d3, d_par = module.row_third(y, eta, p)

    def d2(e):
        return module.row_derivatives(y, e, p)[2]

    np.testing.assert_allclose(d3, jax.jvp(d2, (eta,), (jnp.ones_like(eta),))[1], rtol=1e-10, atol=1e-12)
    assert set(d_par) == set(params)
    for k in params:
        want = jax.jvp(lambda v, k=k: module.row_derivatives(y, eta, {**p, k: v}), (p[k],),
                       (jnp.ones_like(p[k]),))[1]
        assert len(d_par[k]) == 3
        for got, ref in zip(d_par[k], want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)

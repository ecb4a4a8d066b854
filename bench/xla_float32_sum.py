"""The XLA fault behind chees' step-size collapse (issue 30), in plain JAX: on CPU (jaxlib 0.10.2),
``sum(sum(float32 rows, axis=1).astype(float64))`` vmapped over more than 2**14 chunk sums comes out wrong
(here from batch position 51 of 65, 320 chunks each). Summing straight into float64 (``dtype=``), as
``hierarchy.likelihood.families._rows.total`` now does, is right. For an upstream report.

    python bench/xla_float32_sum.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
K, C, B = 320, 64, 65
rng = np.random.default_rng(0)
mask = jnp.asarray(rng.random((K, C)) < 0.8, jnp.float32)
rows = jnp.asarray(rng.normal(size=(K, C)), jnp.float32)
a = jnp.asarray(rng.normal(size=(B, K, 1)))

for name, total in (("sum(...).astype(float64)", lambda x: jnp.sum(jnp.sum(x, axis=1).astype(jnp.float64))),
                    ("sum(..., dtype=float64)", lambda x: jnp.sum(jnp.sum(x, axis=1, dtype=jnp.float64)))):
    def f(a, total=total):
        return total(mask * (rows + a.astype(jnp.float32)))

    batched = np.asarray(jax.jit(jax.vmap(f))(a))
    alone = np.array([float(jax.jit(f)(a[i])) for i in range(B)])
    err = np.abs(batched - alone)
    print(f"{jax.__version__} {jax.default_backend()} {name}: wrong at batch positions "
          f"{np.nonzero(err > 1e-3)[0].tolist()}, largest error {err.max():.4g}")

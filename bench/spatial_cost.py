"""Where a national BYM2 fit's time and memory go (issue 31): per-gradient cost of the term's parts, the
sampler's own cost per leapfrog step at the model's size, and memory growth per chain method.

On the national table that ``bench/spatial_bench.py`` simulates (2019 referrals on the real map, 32,844
LSOAs), prints in one run:

- value and gradient of the whole BYM2 model's potential, and of the non-spatial default's, in ms;
- the field's projection (general form against the cell-mean form now used) and the ICAR edge sum;
- NumPyro's NUTS per leapfrog step on a standard normal of the BYM2 model's dimension (its own cost);
- with ``--memory SECONDS``: resident memory growth of a 2-chain fit per chain method, each in a fresh
  process stopped after SECONDS (``parallel`` is NumPyro's pmap over host devices).

    python bench/spatial_cost.py [--data national_0.parquet] [--memory 120]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CHILD = """
import os, sys, threading, time
t0 = time.perf_counter()
def watch():
    while True:
        rss = int(open(f"/proc/{os.getpid()}/statm").read().split()[1]) * 4096 / 2**30
        print(f"RSS {time.perf_counter() - t0:.0f} {rss:.3f}", flush=True)
        time.sleep(5)
threading.Thread(target=watch, daemon=True).start()
from hierarchy import workflow
workflow.fit_files(data=sys.argv[1], model="gradient_bym2_poisson", priors="weakly_informative",
                   out=sys.argv[2], chains=2, tune=60, draws=2000, max_draws=2000, progress=False,
                   chain_method=sys.argv[3])
"""


def per_call(f, x, reps: int = 400) -> float:
    """ms per value-and-gradient of ``f`` at ``x``, inside one compiled loop (no dispatch cost)."""
    import jax

    @jax.jit
    def loop(x):
        def body(_, c):
            v, g = jax.value_and_grad(f)(jax.tree.map(lambda a, b: a + 1e-9 * b, x, c[1]))
            return c[0] + v, g
        return jax.lax.fori_loop(0, reps, body, (0.0, x))

    jax.block_until_ready(loop(x))
    t = time.perf_counter()
    jax.block_until_ready(loop(x))
    return 1e3 * (time.perf_counter() - t) / reps


def potential(model: str, data: Path):
    """The NumPyro potential of a shipped model on ``data`` and a point to evaluate it at."""
    import jax
    from numpyro.infer.util import initialize_model

    from hierarchy import shipped, workflow
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    spec = load_spec(shipped.resolve(model, "models"))
    pset = load_priors(shipped.resolve("weakly_informative", "priors"))
    design = workflow._prepare(str(data), spec, None, None, lambda _m: None).design
    layout = make_layout(design)
    args = (model_data(layout, "float64"),)
    info = initialize_model(jax.random.PRNGKey(0), model_fn(spec, pset, design, layout), model_args=args,
                            dynamic_args=True)
    return info.potential_fn(*args), info.param_info.z, design


def nuts_step_ms(dim: int) -> float:
    """NumPyro NUTS, ms per leapfrog step on a standard normal of ``dim`` (fixed step, no adaptation)."""
    import jax
    import numpy as np
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import MCMC, NUTS

    def model():
        numpyro.sample("x", nd.Normal(0.0, 1.0).expand([dim]).to_event(1))

    mcmc = MCMC(NUTS(model, step_size=0.02, adapt_step_size=False, adapt_mass_matrix=False, max_tree_depth=7),
                num_warmup=0, num_samples=50, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    for seed in (1, 2):  # the first run from a post-warm-up state compiles again: time the second
        mcmc.post_warmup_state = mcmc.last_state
        t = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps",))
        jax.block_until_ready(mcmc.last_state)
        ms = 1e3 * (time.perf_counter() - t) / float(np.sum(mcmc.get_extra_fields()["num_steps"]))
    return ms


def memory(data: Path, seconds: int) -> None:
    for method in ("parallel", "sequential", "vectorized"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(data), f"{tmp}/fit.nc", method],
                                     capture_output=True, text=True, timeout=seconds, cwd=ROOT)
                out = run.stdout
            except subprocess.TimeoutExpired as stopped:
                out = (stopped.stdout or b"").decode()
        pts = [tuple(map(float, ln.split()[1:])) for ln in out.splitlines() if ln.startswith("RSS ")]
        late = [p for p in pts if p[0] >= seconds / 2]
        rate = float("nan")
        if len(late) > 1:
            rate = (late[-1][1] - late[0][1]) / max(late[-1][0] - late[0][0], 1) * 1024
        print(f"memory, 2 chains {method:10s}: {pts[-1][1] if pts else float('nan'):.2f} GiB after "
              f"{pts[-1][0] if pts else 0:.0f} s; growth over the second half {rate:.1f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a national table (default: simulate one, as spatial_bench does)")
    ap.add_argument("--memory", type=int, default=0, help="seconds per chain method for the memory check")
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hierarchy.likelihood import spatial

    jax.config.update("jax_enable_x64", True)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from hierarchy.data import reference, simulate

            table, truth = simulate.simulate(reference.get_geography(), seed=0, spatial=(0.3, 0.7))
            data = Path(tmp) / "national_0.parquet"
            simulate.write(table, truth, data)
        pot, z, design = potential("gradient_bym2_poisson", data)
        print(f"BYM2 model potential + gradient:        {per_call(pot, z):.3f} ms "
              f"({sum(np.size(v) for v in z.values()):,} sampled values)")
        pot0, z0, _ = potential("inverse_intervention_nb_log", data)
        print(f"non-spatial default, same table:        {per_call(pot0, z0):.3f} ms")
        graph = design.graph
        proj = spatial.projection(graph)
        x = jnp.asarray(np.random.default_rng(0).normal(size=graph.n))
        w = jnp.asarray(np.random.default_rng(1).normal(size=graph.n))
        edges = np.asarray(graph.edges)
        rows = {"baseline (one dot product)": lambda v: jnp.sum(w * v),
                "projection, general form": lambda v: jnp.sum(w * spatial.project(v, (None, *proj[1:]), jnp)),
                f"projection, cell means ({'used' if proj[0] is not None else 'not equivalent here'})":
                    lambda v: jnp.sum(w * spatial.project(v, proj, jnp)),
                "ICAR edge sum": lambda v: -0.5 * jnp.sum((v[edges[:, 0]] - v[edges[:, 1]]) ** 2),
                "free_logp (projection + edges + rest)": lambda v: spatial.free_logp(v, graph, jnp, proj)[0]}
        for label, f in rows.items():
            print(f"{label:40s} {per_call(f, x):.3f} ms")
        dim = sum(np.size(v) for v in z.values())
        print(f"NumPyro NUTS per leapfrog step, standard normal of {dim:,}: {nuts_step_ms(dim):.3f} ms; "
              f"of 6,000: {nuts_step_ms(6000):.3f} ms")
        if args.memory:
            memory(data, args.memory)


if __name__ == "__main__":
    main()

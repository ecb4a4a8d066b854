"""Where one evaluation of the Laplace potential goes: its pieces, one row pass, Newton, the value, the
value and gradient, beside one NUTS gradient of the full model (same data, same run).

    python bench/laplace_profile.py stages_age_nb --las 20     # stacked x age bands, 20 generated LAs
    python bench/laplace_profile.py years_gradient_nb          # 13 years, England (reference data)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--las", type=int, help="generated LAs of 217 neighbourhoods (default: England)")
    args = ap.parse_args()

    import jax
    from jax.flatten_util import ravel_pytree

    jax.config.update("jax_enable_x64", True)
    from hierarchy.data import reference, simulate
    from hierarchy.inference import laplace
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / "models" / f"{args.model}.toml")
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    geo = (reference.synthetic_geography(args.las, seed=0, lsoa_per_la=217) if args.las
           else reference.get_geography())
    if spec.strata == ("year",):
        table, _ = simulate.simulate_years(geo, tuple(range(2013, 2026)), seed=1)
    else:
        table, _ = simulate.simulate(geo, seed=1, strata=("age",) if "age_band" in spec.strata else ())
    design = build_design(table, spec)
    t = time.perf_counter()
    pb = laplace.build_problem(spec, priors, design)
    print(f"{args.model}: {len(design.y):,} rows, {pb.n_eff} latent effects per LA, "
          f"build {time.perf_counter() - t:.1f} s")
    zh = laplace.hyper_init(pb)
    flat, unravel = ravel_pytree(zh)
    print(f"{flat.shape[0]} hyperparameters")

    def timeit(name, f, *a):
        jax.block_until_ready(f(*a))
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            jax.block_until_ready(f(*a))
            ts.append(time.perf_counter() - t)
        print(f"{name:32s} median {1e3 * np.median(ts):7.2f} ms  (min {1e3 * np.min(ts):.2f})", flush=True)

    pieces = jax.jit(lambda q: pb.pieces(unravel(q)))
    timeit("pieces", pieces, flat)
    pc = pieces(flat)
    x_hat = jax.jit(lambda q: laplace.mode_and_hessian(pb, unravel(q), pb.x0)[0])(flat)
    timeit("one row pass (f, g, H)", jax.jit(lambda pc, x: pb.local(pc, x)), pc, x_hat)
    timeit("one row pass (f)", jax.jit(lambda pc, x: pb.local(pc, x, derivatives=False)[0]), pc, x_hat)
    newton = jax.jit(lambda q, x0: laplace.newton(pb, pb.pieces(unravel(q)), x0))
    timeit("Newton from the mode", newton, flat, x_hat)
    U = laplace.laplace_potential(pb, lambda z: x_hat)
    timeit("Laplace potential", jax.jit(lambda q: U(unravel(q))), flat)
    timeit("Laplace potential and gradient", jax.jit(jax.value_and_grad(lambda q: U(unravel(q)))), flat)
    full = {**zh, **pb.sites_of(x_hat)}
    timeit("NUTS: full model and gradient", jax.jit(jax.value_and_grad(pb.potential)), full)


if __name__ == "__main__":
    main()

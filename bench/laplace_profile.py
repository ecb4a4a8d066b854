"""Where one evaluation of the Laplace potential goes: its pieces, one row pass, Newton, the value, the
value and gradient, beside one NUTS gradient of the full model (same data, same run).

    python bench/laplace_profile.py stages_age_nb --las 20     # stacked x age bands, 20 generated LAs
    python bench/laplace_profile.py years_gradient_nb          # 13 years, England (reference data)
    python bench/laplace_profile.py stages_age_nb --las 20 --autodiff   # the implementation before
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--las", type=int, help="generated LAs of 217 neighbourhoods (default: England)")
    ap.add_argument("--mode", action="store_true",
                    help="also at draws about the Laplace posterior mode, Newton started as NUTS starts it "
                         "(find_mode's linear prediction): Newton's iterations and the value and gradient")
    ap.add_argument("--autodiff", action="store_true",
                    help="the implementation before issue 29's third step, for comparison: the row sums' "
                         "derivatives by automatic differentiation, a row pass for the score at Newton's mode "
                         "and the full model's potential at x_hat")
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
    if args.autodiff:
        row_sums = laplace._row_sums
        laplace._row_sums = lambda family, rows: row_sums(family, rows).fun  # plain JAX: autodiff of rows
    t = time.perf_counter()
    pb = laplace.build_problem(spec, priors, design)
    if args.autodiff:
        pb = replace(pb, joint=None, newton_local=None, score=None)
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
    timeit("pieces, value and reverse pass", jax.jit(jax.grad(
        lambda q: sum(jax.numpy.sum(v) for v in jax.tree_util.tree_leaves(pb.pieces(unravel(q)))))), flat)

    def gh(pc, x):
        _, g, H = pb.local(pc, x)
        return jax.numpy.sum(g) + jax.numpy.sum(H)

    timeit("row pass (g, H), reverse pass", jax.jit(jax.grad(gh, argnums=(0, 1))), pc, x_hat)
    newton = jax.jit(lambda q, x0: laplace.newton(pb, pb.pieces(unravel(q)), x0))
    timeit("Newton from the mode", newton, flat, x_hat)
    U = laplace.laplace_potential(pb, lambda z: x_hat)
    timeit("Laplace potential", jax.jit(lambda q: U(unravel(q))), flat)
    timeit("Laplace potential and gradient", jax.jit(jax.value_and_grad(lambda q: U(unravel(q)))), flat)
    full = {**zh, **pb.sites_of(x_hat)}
    timeit("NUTS: full model and gradient", jax.jit(jax.value_and_grad(pb.potential)), full)
    if args.mode:
        at_draws(pb, zh, timeit)


def at_draws(pb, zh, timeit) -> None:
    """Newton's iterations and the Laplace value and gradient at draws from the Laplace posterior's
    Gaussian approximation, Newton started by find_mode's linear prediction (as in NUTS)."""
    import jax
    from jax.flatten_util import ravel_pytree

    from hierarchy.inference import laplace, laplace_fit

    zh_mode, cov, start = laplace_fit.find_mode(pb, zh, pb.x0)
    q0, unravel = ravel_pytree(zh_mode)
    chol = np.linalg.cholesky(0.5 * (cov + cov.T))
    draws = [q0 + chol @ np.random.default_rng(i).standard_normal(len(q0)) for i in range(8)]
    its = jax.jit(lambda q: laplace.newton(pb, pb.pieces(unravel(q)), start(unravel(q)))[2])
    print("Newton iterations from the linear start at 8 draws:", [int(its(q)) for q in draws])
    vg = jax.jit(jax.value_and_grad(lambda q: laplace.laplace_potential(pb, start)(unravel(q))))
    timeit("Laplace value and gradient, a draw", vg, draws[0])


if __name__ == "__main__":
    main()

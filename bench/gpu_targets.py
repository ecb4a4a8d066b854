"""Issue 30's targets, each printed beside its anchor: many chains and many fits per launch.

One script for the device check (``bench/gpu_run.sh targets``) and for the same work on the CPU path,
so the two columns of the table come from the same code. The data sets are simulated where the
reference data are and carried in ``--data-cache`` (derived real data: never commit that folder):

    python bench/bench_scale.py default --seeds 11 --data-cache .gpu/data --simulate-only   # off the device
    python bench/gpu_targets.py fit --data-cache .gpu/data                  # NUTS 4 chains vs chees 128/512
    python bench/gpu_targets.py sbc --replicates 100 --data-cache .gpu/data
    python bench/gpu_targets.py lolo --las 151 --data-cache .gpu/data       # leave-one-LA-out, batched
    python bench/gpu_targets.py laplace --data-cache .gpu/data              # Laplace: chains in turn vs vectorised

Each work item prints one line: ``TARGET work: wall s (target, CPU anchor) status``. Without the cache a
generated geography of ``--geo-las`` LAs is used (for a quick run on a laptop).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

TARGETS = {  # work -> (GPU target s, CPU anchor as issue 30 states it)
    "fit": (5.0, "8-14 s on 2 cores (NUTS, 4 chains)"),
    "sbc": (300.0, "~100 x a single fit"),
    "lolo": (300.0, "~151 x a single fit"),
    "laplace": (5.0, "the default by NUTS, same run"),
}


def _inputs(args):
    """Spec, priors and design of the national default (or a generated geography without the cache)."""
    from bench_scale import dataset

    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    table, _ = dataset("default", args.seed, args.geo_las, args.data_cache)
    spec = load_spec(ROOT / "models" / "inverse_intervention_nb_log.toml")
    priors = load_priors(ROOT / "priors" / "weakly_informative.toml")
    return table, spec, priors, build_design(table, spec)


def _line(work: str, what: str, wall: float, status: str) -> None:
    import jax

    target, anchor = TARGETS[work]
    print(f"TARGET {what}: {wall:.1f} s on {jax.devices()[0].platform} (GPU target <= {target:g} s; "
          f"CPU today {anchor}) {status}", flush=True)


def _rhat(diag: dict) -> str:
    if "nested_rhat_max" in diag:
        return f"nested R-hat {diag['nested_rhat_max']:.4f}, bar {diag['nested_rhat_threshold']:.4f}"
    return f"R-hat {diag['rhat_max']:.3f}"


def _timed_fit(args, inputs, work: str, what: str, **kw) -> None:
    """The national default (``inputs``: :func:`_inputs`) fitted with ``kw``
    (:func:`hierarchy.inference.sampling.fit`), twice unless ``--once`` (the second run reads the compiled
    program from the cache); one target line for the last run."""
    import arviz as az

    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.inference.sampling import PER_ROW
    from hierarchy.inference.sampling import fit as sample

    _, spec, priors, design = inputs
    for _ in range(1 if args.once else 2):
        t = time.perf_counter()
        d = sample(spec, priors, design, seed=args.seed, float32=True, **kw)
        wall = time.perf_counter() - t
    post = {k: v for k, v in d.posterior.items() if k not in PER_ROW}
    diag = diagnose(az.from_dict(posterior=post, sample_stats=d.stats))
    _line(work, what, wall, f"{diag['status']} ({_rhat(diag)}, ESS {diag['ess_bulk_min']:.0f})")


def fit(args) -> None:
    """The national default: NUTS (4 chains) and chees at each ``--chees-chains``."""
    inputs = _inputs(args)
    _timed_fit(args, inputs, "fit", "default fit numpyro x 4 chains", sampler="numpyro", chains=4, max_draws=3000,
               chain_method="vectorized")
    for chains in args.chees_chains:
        _timed_fit(args, inputs, "fit", f"default fit chees x {chains} chains", sampler="chees", chains=chains,
                   chain_method="parallel")


def sbc(args) -> None:
    """``--replicates`` SBC replicates of the national default, one compiled program."""
    from hierarchy.inference.sbc import sbc as run

    _, spec, priors, design = _inputs(args)
    t = time.perf_counter()
    res = run(spec, priors, design, replicates=args.replicates, seed=args.seed, vectorize=True)
    wall = time.perf_counter() - t
    worst = float(res.uniformity()["p_value"].min())
    _line("sbc", f"{args.replicates} SBC replicates", wall,
          f"(smallest uniformity p {worst:.3f}; divergent replicates {(res.divergences > 0).sum()})")


def lolo(args) -> None:
    """Leave-one-LA-out refits of a national default fit, batched (the first ``--las`` LAs)."""
    import tempfile

    from hierarchy.results.cv import heldout_lpd_batched
    from hierarchy.results.fitfile import load_fit
    from hierarchy.workflow import fit_files

    table, *_ = _inputs(args)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.parquet", Path(tmp) / "fit.nc"
        table.to_parquet(data)
        fit_files(data=data, model="inverse_intervention_nb_log", priors="weakly_informative", out=out,
                  chains=4, tune=500, draws=500, progress=False, float32=True)
        idata = load_fit(out)
        las = sorted(table["la"].unique())[:args.las]
        t = time.perf_counter()
        results = heldout_lpd_batched(idata, table, [[la] for la in las], vectorize=True)
        wall = time.perf_counter() - t
    ok = sum(str(facts.get("diagnostics", "")).startswith("ok") for _, facts in results)
    _line("lolo", f"leave-one-LA-out, {len(las)} refits", wall, f"({ok} of {len(las)} refits at the bar)")


def laplace(args) -> None:
    """The national default by the embedded Laplace mode (issue 30 item 3): 4 hyperparameter chains run
    in turn (``sequential``, one device) against one vectorised program (``vectorized``)."""
    inputs = _inputs(args)
    for chain_method in ("sequential", "vectorized"):
        _timed_fit(args, inputs, "laplace", f"default fit laplace, 4 chains {chain_method}", method="laplace",
                   chains=4, max_draws=3000, chain_method=chain_method)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", choices=("fit", "sbc", "lolo", "laplace"))
    p.add_argument("--data-cache", type=Path, default=None, help="bench_scale.py's cache (.gpu/data)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--geo-las", type=int, default=None, help="a generated geography of this many LAs")
    p.add_argument("--chees-chains", type=int, nargs="+", default=[128, 512])
    p.add_argument("--replicates", type=int, default=100)
    p.add_argument("--las", type=int, default=151)
    p.add_argument("--once", action="store_true", help="one run per sampler (compile time included)")
    args = p.parse_args()
    from hierarchy.inference.sampling import enable_compilation_cache

    enable_compilation_cache()
    {"fit": fit, "sbc": sbc, "lolo": lolo, "laplace": laplace}[args.work](args)


if __name__ == "__main__":
    main()

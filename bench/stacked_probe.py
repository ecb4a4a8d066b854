"""Probe the geometry of the stacked model (four stages x age bands) on a generated geography.

Prints the parameterisation ``auto`` chose, leapfrog steps per iteration (per chain), divergences
and the diagnostics of a short 2-chain fit. Used to find what makes the national stacked fit slow::

    python bench/stacked_probe.py --las 30 --lsoa-per-la 40                  # simulator as shipped
    python bench/stacked_probe.py --las 30 --lsoa-per-la 40 --stage-noise 0.1
    python bench/stacked_probe.py --las 30 --lsoa-per-la 40 --float32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--national", action="store_true",
                   help="the national geography (real when found, else generated; 525k rows)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--las", type=int, default=30)
    p.add_argument("--lsoa-per-la", type=float, default=40.0)
    p.add_argument("--stage-noise", type=float, default=None,
                   help="SD of the stage-specific LA slope noise (simulator default 0.03)")
    p.add_argument("--parameterisation", choices=("auto", "centred", "non_centred"), default="auto")
    p.add_argument("--stage-structure", choices=("correlated", "anchored"), default=None,
                   help="override the model file's la.stage_structure")
    p.add_argument("--float32", action="store_true", help="float32 rows (float64 density and sampler)")
    p.add_argument("--chain-method", default="parallel", choices=("parallel", "sequential", "vectorized"))
    p.add_argument("--warmup-tree-depth", type=int, default=None, help="default: hierarchy.inference.sampling's")
    p.add_argument("--tune", type=int, default=300)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (the data stay seed 0)")
    args = p.parse_args()

    from hierarchy.inference.sampling import use_host_devices

    use_host_devices(args.chains)
    import arviz as az

    from hierarchy.data import reference, simulate
    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import ModelSpec, load_spec

    if args.stage_noise is not None:
        simulate.STAGE_NOISE_SD = args.stage_noise
    geo = (reference.get_geography() if args.national else
           reference.synthetic_geography(args.las, seed=0, lsoa_per_la=args.lsoa_per_la))
    table, _ = simulate.simulate(geo, year=2019, seed=0, strata=("age",))
    spec = load_spec(ROOT / "models/stages_age_nb.toml").to_dict()
    spec["la"] = {**spec["la"], "parameterisation": args.parameterisation}
    if args.stage_structure:
        spec["la"]["stage_structure"] = args.stage_structure
    spec = ModelSpec.from_dict(spec)
    design = build_design(table, spec)
    t = time.perf_counter()
    d = fit(spec, load_priors(ROOT / "priors/weakly_informative.toml"), design, chains=args.chains,
            tune=args.tune, draws=args.draws, seed=args.seed, float32=args.float32,
            chain_method=args.chain_method,
            **({"warmup_tree_depth": args.warmup_tree_depth} if args.warmup_tree_depth else {}))
    wall = time.perf_counter() - t
    diag = diagnose(az.from_dict(posterior=d.posterior, sample_stats=d.stats))
    print(f"{len(design.y):,} rows; parameterisation: {d.settings['parameterisation']}")
    print(f"wall {wall:.0f} s (warm-up incl. compilation {d.timings['warmup']:.0f} s, sampling "
          f"{d.timings['sampling']:.0f} s); mean steps in warm-up {d.timings['warmup_mean_steps']:.1f}, "
          f"per sampling iteration by chain {d.stats['n_steps'].mean(axis=1).round(1).tolist()}; "
          f"divergences {diag['divergences']}; tree-depth saturation {diag['tree_depth_saturation']:.2f}")
    print(f"R-hat max {diag['rhat_max']:.3f} ({diag['rhat_worst']}); min bulk ESS {diag['ess_bulk_min']:.0f} "
          f"({diag['ess_bulk_worst']}); min tail ESS {diag['ess_tail_min']:.0f}; E-BFMI {diag['bfmi_min']:.2f}")


if __name__ == "__main__":
    main()

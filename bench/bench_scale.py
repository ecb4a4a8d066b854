"""Convergence at scale, over several seeds: the default model, the stacked model, the multi-year model.

Each fit runs to the convergence bar (R-hat <= 1.01, bulk and tail ESS >= 400 for every parameter,
LA effects included): ``--max-draws`` lets NUTS sample on past ``--draws`` while the bar is missed
(:func:`hierarchy.inference.sampling.fit`). For every seed it prints the wall time (warm-up with
compilation, sampling), the draws kept, leapfrog steps, the worst R-hat and ESS, divergences and,
where the truth has them, whether the 90% intervals of the three headline gradients cover it. The
last lines give the median and the worst over seeds beside the targets of issue 18.

    python bench/bench_scale.py default --seeds 11-20                       # part 4
    python bench/bench_scale.py default --seeds 11-20 --max-draws 500       # a new user's 500 + 500
    python bench/bench_scale.py stacked --seeds 0-2 --chains 2              # part 2
    python bench/bench_scale.py years --seeds 0-2                           # part 3

Data: ``hierarchy simulate`` on the real England geography when found, else a generated one
(``--las``). The data's seed is the seed; the sampler's seed is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = {"default": 60.0, "stacked": 120.0, "years": 120.0}
MODELS = {"default": "inverse_intervention_nb_log", "stacked": "stages_age_nb", "years": "years_gradient_nb"}


def seeds(text: str) -> list[int]:
    """``11-20`` or ``0,3,5``."""
    if "-" in text:
        a, b = (int(v) for v in text.split("-"))
        return list(range(a, b + 1))
    return [int(v) for v in text.split(",")]


def dataset(kind: str, seed: int, las: int | None, cache: Path | None = None):
    """The simulated table and truth of one seed, read from (or kept in) ``cache`` when given.

    The cache lets a machine without the reference data (a GPU machine) fit the same data sets:
    they hold derived real data, so keep the folder out of the repository.
    """
    import gzip
    import pickle

    from hierarchy.data import reference, simulate

    path = None if cache is None else cache / f"{kind}_{seed}_{las or 'england'}.pkl.gz"
    if path is not None and path.exists():
        return pickle.loads(gzip.decompress(path.read_bytes()))
    geo = reference.synthetic_geography(las, seed=0, lsoa_per_la=217) if las else reference.get_geography()
    if kind == "years":
        out = simulate.simulate_years(geo, years=range(2013, 2026), seed=seed)
    else:
        out = simulate.simulate(geo, year=2019, seed=seed, strata=("age",) if kind == "stacked" else ())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(pickle.dumps(out), compresslevel=6))
        tmp.replace(path)
    return out


def covered(posterior: dict, spec, design, truth: dict) -> int | None:
    """How many of the three headline gradients' 90% intervals cover the truth (default model)."""
    import numpy as np

    from hierarchy.language.design import z_of

    if ("cross_level" not in posterior or "referral" not in truth.get("stages", {})
            or posterior["cross_level"].ndim > 2):  # stacked: one gradient per stage, not the default's
        return None
    z = z_of(design.X_mean + np.array([-0.1, 0.0, 0.1]), design.X_mean, spec)
    g = np.exp(posterior["gradient"].reshape(-1, 1) + posterior["cross_level"].reshape(-1, 1) * z)
    t = truth["stages"]["referral"]
    if "gradient_10_less" not in t:  # the multi-year truth is per year
        return None
    true = np.array([t["gradient_10_less"], t["gradient_at_mean"], t["gradient_10_more"]])
    lo, hi = np.quantile(g, [0.05, 0.95], axis=0)
    return int(((lo <= true) & (true <= hi)).sum())


def one(kind: str, seed: int, args) -> dict:
    import arviz as az
    import numpy as np

    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.inference.sampling import PER_ROW, fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    table, truth = dataset(kind, seed, args.las, args.data_cache)
    spec = load_spec(ROOT / "models" / f"{args.model or MODELS[kind]}.toml")
    design = build_design(table, spec)
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    t = time.perf_counter()
    d = fit(spec, priors, design, chains=args.chains, tune=args.tune, draws=args.draws, seed=seed,
            float32=True, max_draws=args.max_draws, chain_method=args.chain_method)
    wall = time.perf_counter() - t
    post = {k: v for k, v in d.posterior.items() if k not in PER_ROW}
    diag = diagnose(az.from_dict(posterior=post, sample_stats=d.stats))
    fit_mb = sum(v.nbytes for v in post.values()) / 2**20
    return {"kind": kind, "seed": seed, "rows": len(design.y), "wall": wall, "warmup": d.timings["warmup"],
            "sampling": d.timings["sampling"], "draws": d.settings["draws"],
            "steps": float(np.mean(d.stats["n_steps"])), "rhat": diag["rhat_max"],
            "rhat_worst": diag["rhat_worst"], "ess_bulk": diag["ess_bulk_min"],
            "ess_tail": diag["ess_tail_min"], "ess_worst": diag["ess_bulk_worst"],
            "divergences": diag["divergences"], "status": diag["status"], "draws_mb": fit_mb,
            "covered": covered(d.posterior, spec, design, truth)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=sorted(TARGET_S))
    p.add_argument("--seeds", type=seeds, default=[0, 1, 2])
    p.add_argument("--model", default=None, help="a shipped model name (default: the kind's)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--draws", type=int, default=500, help="draws per chain in each block")
    p.add_argument("--max-draws", type=int, default=2000, help="draws per chain at most")
    p.add_argument("--chain-method", default="parallel")
    p.add_argument("--las", type=int, default=None, help="a generated geography of this many LAs")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--data-cache", type=Path, default=None,
                   help="read the simulated data sets from here, simulating (and keeping) those missing")
    p.add_argument("--simulate-only", action="store_true", help="fill --data-cache and stop")
    args = p.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.chains}")
    from hierarchy.inference.sampling import enable_compilation_cache

    enable_compilation_cache()
    rows = []
    cols = ("seed", "rows", "wall", "warmup", "sampling", "draws", "steps", "rhat", "ess_bulk", "ess_tail",
            "divergences", "covered", "status", "rhat_worst", "ess_worst")
    print(f"{args.kind}: {args.chains} chains x ({args.tune} + {args.draws}, at most {args.max_draws}), "
          f"float32 rows; target {TARGET_S[args.kind]:.0f} s to R-hat <= 1.01, ESS >= 400")
    print(" | ".join(cols))
    if args.simulate_only:
        for s in args.seeds:
            dataset(args.kind, s, args.las, args.data_cache)
        return
    for s in args.seeds:
        r = one(args.kind, s, args)
        rows.append(r)
        print(" | ".join(f"{r[c]:.3f}" if c == "rhat" else f"{r[c]:.1f}" if isinstance(r[c], float)
                         else str(r[c]) for c in cols), flush=True)
    import numpy as np

    walls = np.array([r["wall"] for r in rows])
    print(f"median wall {np.median(walls):.1f} s, worst {walls.max():.1f} s (target {TARGET_S[args.kind]:.0f} s); "
          f"worst R-hat {max(r['rhat'] for r in rows):.3f}, worst bulk/tail ESS "
          f"{min(r['ess_bulk'] for r in rows):.0f}/{min(r['ess_tail'] for r in rows):.0f}; "
          f"{sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok; draws in memory "
          f"{max(r['draws_mb'] for r in rows):.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

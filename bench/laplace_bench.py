"""The embedded Laplace mode (issue 29) beside full NUTS on the same data, same run.

Simulates the national table (``hierarchy simulate``: :func:`hierarchy.data.simulate.simulate` on the
real geography when found, else a generated one of 151 LAs), fits one model with ``method="nuts"``
and ``method="laplace"`` and prints, per seed and as medians over seeds: wall time (with
compilation), min bulk and tail ESS, max R-hat, min bulk ESS per second, divergences, mean leapfrog
steps, and the accuracy check (hyperparameter means in NUTS posterior SDs, SD ratios).

    python bench/laplace_bench.py                          # default model, 3 seeds
    python bench/laplace_bench.py --seeds 1 --model gradient_poisson --small
    python bench/laplace_bench.py --kind stacked --las 30  # bench_scale's data sets (stacked, years)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

CHAINS = 4
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={CHAINS}")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KIND_MODELS = {"default": "inverse_intervention_nb_log", "stacked": "stages_age_nb", "years": "years_gradient_nb"}
"""bench_scale.py's models (its MODELS)."""
HYPER = ("intercept", "gradient", "la_deprivation", "cross_level", "la_sd", "la_corr", "dispersion", "la_loading",
         "la_stage_sd", "stratum_intercept_offset", "stratum_gradient_offset", "la:year_sd")


def national_table(seed: int, small: bool):
    """The national simulated table (or 30 generated LAs of 50 neighbourhoods with ``small``)."""
    from hierarchy.data import reference, simulate

    geo = (reference.synthetic_geography(30, seed=seed, lsoa_per_la=50) if small
           else reference.get_geography())
    table, _ = simulate.simulate(geo, year=2019, seed=seed)
    return table, geo.source


def kind_table(kind: str, seed: int, las: int | None):
    """``bench/bench_scale.py``'s data set of ``kind`` (default, stacked, years) and its model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "bench_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table, _ = mod.dataset(kind, seed, las)
    return table, f"{las} generated LAs" if las else "England"


def summary(draws) -> dict:
    """Diagnostics of one fit: the project's own (:func:`hierarchy.inference.diagnostics.diagnose`)."""
    import arviz as az

    from hierarchy.inference.diagnostics import diagnose

    post = {k: v for k, v in draws.posterior.items() if k != "eps_raw"}
    d = diagnose(az.from_dict(posterior=post, sample_stats=draws.stats))
    wall = draws.timings["total"]
    return {"wall": wall, "ess_bulk": d["ess_bulk_min"], "ess_tail": d["ess_tail_min"], "rhat": d["rhat_max"],
            "ess_per_s": d["ess_bulk_min"] / wall, "divergences": int(draws.stats["diverging"].sum()),
            "steps": float(draws.stats["n_steps"].mean())}


def accuracy(lap: dict, nuts: dict) -> tuple[float, float]:
    """Largest |mean difference| in NUTS posterior SDs and largest |SD ratio - 1| over hyperparameters."""
    dmean, dsd = 0.0, 0.0
    for k in HYPER:
        if k not in nuts:
            continue
        a, b = lap[k].reshape(-1, *lap[k].shape[2:]), nuts[k].reshape(-1, *nuts[k].shape[2:])
        sd = b.std(0)
        keep = sd > 1e-9  # the correlation matrix's constant diagonal
        dmean = max(dmean, float(np.max(np.abs(a.mean(0) - b.mean(0))[keep] / sd[keep])))
        dsd = max(dsd, float(np.max(np.abs(a.std(0)[keep] / sd[keep] - 1))))
    return dmean, dsd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="inverse_intervention_nb_log")
    ap.add_argument("--priors", default="weakly_informative")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--float32", action="store_true", help="float32 rows in both fits")
    ap.add_argument("--small", action="store_true", help="30 generated LAs, not the national table")
    ap.add_argument("--kind", choices=["default", "stacked", "years"],
                    help="bench_scale.py's data set and model (stacked: stages x age bands; years: 2013-2025)")
    ap.add_argument("--las", type=int, help="with --kind: generated LAs of 217 neighbourhoods (default: England)")
    args = ap.parse_args()

    from hierarchy.inference.sampling import enable_compilation_cache, fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    enable_compilation_cache()
    if args.kind:
        args.model = KIND_MODELS[args.kind]
    spec = load_spec(ROOT / "models" / f"{args.model}.toml")
    priors = load_priors(ROOT / "priors" / f"{args.priors}.toml")
    rows: dict[str, list[dict]] = {"nuts": [], "laplace": []}
    acc = []
    print(f"{args.model}: {CHAINS} chains x ({args.tune} + {args.draws}), float32 rows: {args.float32}, "
          f"{os.cpu_count()} cores (shared machine: load {os.getloadavg()[0]:.1f})")
    for seed in range(args.seeds):
        table, source = (kind_table(args.kind, seed, args.las) if args.kind
                         else national_table(seed, args.small))
        design = build_design(table, spec)
        post = {}
        for method in ("nuts", "laplace"):
            t = time.perf_counter()
            draws = fit(spec, priors, design, chains=CHAINS, tune=args.tune, draws=args.draws, seed=seed,
                        float32=args.float32, method=method, max_draws=args.draws)
            s = summary(draws)
            s["wall"] = time.perf_counter() - t
            s["ess_per_s"] = s["ess_bulk"] / s["wall"]
            rows[method].append(s)
            post[method] = draws.posterior
            print(f"seed {seed} {method:8s} {len(table):,} rows ({source}): wall {s['wall']:6.1f} s, "
                  f"min bulk ESS {s['ess_bulk']:6.0f}, tail {s['ess_tail']:6.0f}, R-hat {s['rhat']:.3f}, "
                  f"ESS/s {s['ess_per_s']:6.1f}, steps {s['steps']:5.1f}, divergences {s['divergences']}; "
                  f"timings {({k: round(v, 1) for k, v in draws.timings.items()})}", flush=True)
        acc.append(accuracy(post["laplace"], post["nuts"]))
        print(f"seed {seed} accuracy: hyperparameter means within {acc[-1][0]:.3f} NUTS SD, "
              f"SDs within {100 * acc[-1][1]:.1f}%", flush=True)
    print(f"\nmedians over {args.seeds} seed(s)")
    print("| method | wall s | min bulk ESS | max R-hat | ESS/s | steps |")
    print("|---|---|---|---|---|---|")
    for method, r in rows.items():
        med = {k: float(np.median([x[k] for x in r])) for k in r[0]}
        print(f"| {method} | {med['wall']:.1f} | {med['ess_bulk']:.0f} | {med['rhat']:.3f} | "
              f"{med['ess_per_s']:.1f} | {med['steps']:.1f} |")
    print(f"accuracy (worst over seeds): means within {max(a[0] for a in acc):.3f} NUTS SD, "
          f"SDs within {100 * max(a[1] for a in acc):.1f}%")


if __name__ == "__main__":
    main()

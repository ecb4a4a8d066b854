"""Space at national scale (issue 31): the default model and its BYM2 twin on one simulated national table
with a known spatial field, side by side in one run.

Simulates 2019 referrals on the reference geography (32,844 LSOAs on the real map; a lattice for a generated
geography) with a BYM2 field of known SD and mixing, then fits ``inverse_intervention_nb_log`` (no spatial
term) and ``gradient_bym2_poisson`` (the BYM2 term), each sampled on until R-hat <= 1.01 and bulk ESS >= 400
or the draw cap, and prints per fit: wall time, graph build, max R-hat, min bulk ESS, peak memory, and the
gradient at mean LA deprivation, spatial SD and mixing against the truth, with 90% intervals. Anchor
(the issue's target): converged in <= 10 minutes on 2 quiet cores, memory under 4 GiB.

    python bench/spatial_bench.py [--seeds 1] [--sd 0.3] [--mix 0.7] [--chains 2] [--tune 500] [--draws 500]
                                  [--keep DIR]   # keep the tables and fit files there (for `hierarchy report`)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("inverse_intervention_nb_log", "gradient_bym2_poisson")


def one_fit(data: Path, model: str, out: Path, args) -> dict:
    """Fit in a fresh process (peak memory of that fit alone) and read back what it recorded."""
    code = (f"from hierarchy import workflow; print(workflow.fit_files(data={str(data)!r}, model={model!r}, "
            f"priors='weakly_informative', out={str(out)!r}, chains={args.chains}, tune={args.tune}, "
            f"draws={args.draws}, max_draws={4 * args.draws}, progress=False, log=print)); "
            "import resource; print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    peak = int(run.stdout.rsplit("PEAK_KB", 1)[1].split()[0]) / 2**20
    graph_line = next((ln for ln in run.stdout.splitlines() if ln.startswith("neighbourhood graph")), "")
    return {"wall": wall, "peak_gib": peak, "out": out, "graph": graph_line}


def summarise(fit_path: Path) -> dict:
    import numpy as np

    from hierarchy.results import estimands
    from hierarchy.results.fit import as_fit

    fit = as_fit(fit_path)
    d = fit.provenance["diagnostics"]
    g = estimands.headline_gradients(fit).sel(la_level="mean").to_numpy().ravel()
    row = {"rhat": d.get("rhat_max"), "ess": d.get("ess_bulk_min"), "status": d.get("status"),
           "gradient": (g.mean(), *np.quantile(g, [0.05, 0.95]))}
    for name in ("spatial_sd", "spatial_mix"):
        if name in fit.posterior:
            v = fit.posterior[name].to_numpy().ravel()
            row[name] = (v.mean(), *np.quantile(v, [0.05, 0.95]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--sd", type=float, default=0.3)
    ap.add_argument("--mix", type=float, default=0.7)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--keep", type=Path, help="folder for the tables and fit files (default: a temporary one)")
    args = ap.parse_args()
    from hierarchy.data import reference, simulate

    geo = reference.get_geography()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep or scratch)
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            table, truth = simulate.simulate(geo, seed=seed, spatial=(args.sd, args.mix))
            data = Path(tmp) / f"national_{seed}.parquet"
            simulate.write(table, truth, data)
            print(f"seed {seed}: {len(table):,} rows, {geo.source[:40]}; simulated with the field in "
                  f"{time.perf_counter() - t0:.0f} s; {truth['spatial']['graph']}")
            want = truth["stages"]["referral"]["gradient_at_mean"]
            for model in MODELS:
                r = one_fit(data, model, Path(tmp) / f"{model}_{seed}.nc", args)
                s = summarise(r["out"])
                lo_hi = lambda t: f"{t[0]:.3f} ({t[1]:.3f}-{t[2]:.3f})"  # noqa: E731
                extra = "".join(f"; {k} {lo_hi(s[k])} (truth {v})" for k, v in
                                (("spatial_sd", args.sd), ("spatial_mix", args.mix)) if k in s)
                print(f"  {model:28s} wall {r['wall']:6.0f} s (anchor <= 600)  peak {r['peak_gib']:.2f} GiB "
                      f"(anchor < 4)  {s['status']} R-hat {s['rhat']:.3f} ESS {s['ess']:.0f}  gradient at mean "
                      f"{lo_hi(s['gradient'])} (truth {want:.3f}){extra}")
                if r["graph"]:
                    print(f"    {r['graph']}")
    print(json.dumps({"python": sys.version.split()[0], "maxrss_gib_parent":
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


if __name__ == "__main__":
    main()

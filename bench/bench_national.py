"""National-scale benchmark: hierarchy's NumPyro path against PyMC's default sampler and bambi.

Fits the default NB model (inverse_intervention_nb_log) and its Poisson twin on the national
simulated data (32,844 neighbourhoods in 151 LAs: the real geography when found, else a generated
one) and prints, side by side in one run: wall time split into warmup (with compilation) and
sampling, mean leapfrog steps, gradient time, min bulk and tail ESS over all parameters,
ESS per second, max R-hat, and ratios against the anchors. Anchors may run shorter; compare rates.

    python bench/bench_national.py                 # everything, medians of 3
    python bench/bench_national.py --reps 1 --skip-bambi --skip-pymc
    python bench/bench_national.py --stacked       # four stages x age bands (~525k rows) too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHAINS = 4
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={CHAINS}")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BAMBI_VENV = ROOT / "bench" / ".venv-bambi"


def national_table(strata: tuple[str, ...] = ()):
    from hierarchy.data import reference, simulate

    geo = reference.get_geography()
    table, _ = simulate.simulate(geo, year=2019, seed=0, strata=strata)
    return table, geo.source


def gradient_ms(spec, priors, design, *, precision: str = "mixed", reps: int = 7, calls: int = 100,
                gather: bool | None = None, inspect=None) -> float:
    """Median time of one value-and-gradient of the log density (milliseconds).

    ``precision``: "mixed" (float32 rows, float64 parameters and sums: what ``fit(float32=True)``
    runs), "float64", or "float32" (everything, JAX's x64 off: the earlier float32 mode).
    ``gather``: the chunk layout (``jaxmodel.model_fn``). ``inspect(hlo_text)`` is called with the
    gradient's HLO program before timing.
    """
    import jax
    from numpyro.infer.util import initialize_model

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", precision != "float32")
    layout = make_layout(design)
    dtype = "float64" if precision == "float64" else "float32"
    info = initialize_model(jax.random.PRNGKey(0), model_fn(spec, priors, design, layout, gather=gather),
                            model_args=(model_data(layout, dtype),))
    vg = jax.jit(jax.value_and_grad(info.potential_fn))
    z = info.param_info.z
    if inspect is not None:
        inspect(vg.lower(z).as_text(dialect="hlo"))
    jax.block_until_ready(vg(z))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            out = vg(z)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t) / calls * 1e3)
    return float(np.median(times))


def headline(posterior: dict, spec, design) -> np.ndarray:
    """Draws of the typical-LA gradient at mean LA deprivation and 10 points less / more."""
    from hierarchy.language.design import z_of

    z = z_of(design.X_mean + np.array([-0.1, 0.0, 0.1]), design.X_mean, spec)
    g = posterior["gradient"].reshape(-1, 1) + posterior["cross_level"].reshape(-1, 1) * z
    return np.exp(g)


def ours(spec, priors, design, *, tune: int, draws: int, float32: bool, seed: int,
         chain_method: str = "parallel") -> dict:
    """One hierarchy fit (NumPyro NUTS, parallel chains by default) with its figures."""
    import arviz as az

    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.inference.sampling import fit

    t = time.perf_counter()
    d = fit(spec, priors, design, chains=CHAINS, tune=tune, draws=draws, seed=seed, float32=float32,
            chain_method=chain_method)
    wall = time.perf_counter() - t
    idata = az.from_dict(posterior=d.posterior, sample_stats=d.stats)
    diag = diagnose(idata)
    h = headline(d.posterior, spec, design)
    return {"headline_mean": h.mean(0).tolist(), "headline_sd": h.std(0).tolist(),
            "wall": wall, "warmup": d.timings["warmup"], "sampling": d.timings["sampling"],
            "steps": float(d.stats["n_steps"].mean()), "warmup_steps": d.timings["warmup_mean_steps"],
            "ess_bulk": diag["ess_bulk_min"], "ess_tail": diag["ess_tail_min"], "rhat": diag["rhat_max"],
            "divergences": diag["divergences"], "draws": CHAINS * draws}


def pymc_default(spec, priors, design, *, tune: int, draws: int) -> dict:
    """PyMC's default sampler (C backend) on the same model."""
    import arviz as az
    import pymc as pm

    from hierarchy.likelihood.model import build_model

    t = time.perf_counter()
    with build_model(spec, priors, design):
        idata = pm.sample(tune=tune, draws=draws, chains=CHAINS, cores=2, random_seed=0,
                          progressbar=False, compute_convergence_checks=False)
    wall = time.perf_counter() - t
    post = idata.posterior.drop_vars([v for v in ("la_raw",) if v in idata.posterior])
    return {"wall": wall, "ess_bulk": float(az.ess(post).to_array().min()),
            "ess_tail": float(az.ess(post, method="tail").to_array().min()),
            "rhat": float(az.rhat(post).to_array().max()), "draws": CHAINS * draws,
            "steps": float(idata.sample_stats["n_steps"].mean()),
            "divergences": int(idata.sample_stats["diverging"].sum())}


def ensure_bambi_venv() -> Path:
    python = BAMBI_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BAMBI_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "bambi==0.17.*", "matplotlib<3.11",
                        "pyarrow"], check=True)
    return python


def bambi_fit(spec, design, *, tune: int, draws: int) -> dict:
    """bambi's formula fit of the same model with its defaults, in its own venv."""
    import pandas as pd

    python = ensure_bambi_venv()
    frame = pd.DataFrame({"y": design.y, "w": design.w, "z": design.z[design.la_index],
                          "log_exposure": design.log_exposure, "la": design.la_codes[design.la_index]})
    family = "negativebinomial" if spec.family == "negative_binomial" else "poisson"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bambi.parquet"
        frame.to_parquet(path)
        out = subprocess.run([str(python), str(ROOT / "bench" / "bambi_anchor.py"), str(path), family,
                              str(CHAINS), str(tune), str(draws)], capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_runs(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], int | float)]
    return {k: float(np.median([r[k] for r in runs])) for k in keys}


def row(name: str, r: dict) -> str:
    if "error" in r:
        return f"| {name} | failed: {r['error']} |"
    ess_s = r["ess_bulk"] / r["wall"]
    return (f"| {name} | {r['wall']:.1f} | {r.get('warmup', float('nan')):.1f} | "
            f"{r.get('sampling', float('nan')):.1f} | {r.get('steps', float('nan')):.1f} | "
            f"{r['ess_bulk']:.0f} | {r['ess_tail']:.0f} | {ess_s:.2f} | {r['rhat']:.3f} | "
            f"{r.get('divergences', 0):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tune", type=int, default=500)
    p.add_argument("--draws", type=int, default=750)
    p.add_argument("--anchor-tune", type=int, default=300)
    p.add_argument("--anchor-draws", type=int, default=300)
    p.add_argument("--skip-pymc", action="store_true")
    p.add_argument("--skip-bambi", action="store_true")
    p.add_argument("--stacked", action="store_true", help="also fit four stages x age bands")
    p.add_argument("--families", default="negative_binomial,poisson")
    p.add_argument("--chain-method", default="parallel", choices=("parallel", "sequential", "vectorized"),
                   help="how the 4 chains run (vectorized: one program for all chains, for a GPU)")
    args = p.parse_args()

    from hierarchy.inference.sampling import enable_compilation_cache
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import ModelSpec, load_spec

    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    base = load_spec(ROOT / "models/inverse_intervention_nb_log.toml").to_dict()
    table, source = national_table()
    print(f"data: {len(table):,} rows, {table['la'].nunique()} LAs ({source}); "
          f"{CHAINS} chains on {os.cpu_count()} cores")
    header = ("| run | wall s | warmup s (incl. compile) | sampling s | mean steps | min bulk ESS | "
              "min tail ESS | bulk ESS/s | max R-hat | divergences |\n|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for family in args.families.split(","):
        spec = ModelSpec.from_dict({**base, "family": family, "name": f"inverse_intervention_{family}"})
        design = build_design(table, spec)
        g32 = gradient_ms(spec, priors, design, precision="mixed")
        g64 = gradient_ms(spec, priors, design, precision="float64")
        print(f"\n## {family}: one value-and-gradient over {len(design.y):,} rows: "
              f"{g32:.3f} ms (float32 rows), {g64:.3f} ms (float64)\n")
        print(header)
        cold_dir = tempfile.mkdtemp(prefix="jaxcache-")
        enable_compilation_cache(cold_dir)
        runs = [ours(spec, priors, design, tune=args.tune, draws=args.draws, float32=True, seed=s,
                     chain_method=args.chain_method)
                for s in range(args.reps)]
        for i, r in enumerate(runs):
            print(row(f"hierarchy f32 run {i + 1}{' (cold cache)' if i == 0 else ''}", r), flush=True)
        med = median_runs(runs)
        print(row(f"hierarchy f32, median of {args.reps}", med), flush=True)
        res = {"gradient_ms_f32": g32, "gradient_ms_f64": g64, "ours": runs, "ours_median": med}
        f64 = ours(spec, priors, design, tune=args.tune, draws=args.draws, float32=False, seed=0,
                   chain_method=args.chain_method)
        print(row("hierarchy f64 (accuracy check)", f64), flush=True)
        diff = np.abs(np.array(runs[0]["headline_mean"]) - f64["headline_mean"]) / np.array(f64["headline_sd"])
        m32, m64 = (np.round(r["headline_mean"], 3).tolist() for r in (runs[0], f64))
        print(f"\nfloat32 check, gradient at 10 less / mean / 10 more: f32 {m32} vs f64 {m64}; "
              f"|difference| / posterior sd = {np.round(diff, 2).tolist()} (Monte Carlo noise is ~0.05)")
        res["f64"] = f64
        if not args.skip_pymc:
            res["pymc"] = pymc_default(spec, priors, design, tune=args.anchor_tune, draws=args.anchor_draws)
            print(row(f"PyMC default ({args.anchor_tune}+{args.anchor_draws})", res["pymc"]), flush=True)
        if not args.skip_bambi:
            res["bambi"] = bambi_fit(spec, design, tune=args.anchor_tune, draws=args.anchor_draws)
            print(row(f"bambi defaults ({args.anchor_tune}+{args.anchor_draws})", res["bambi"]), flush=True)
        ours_rate = med["ess_bulk"] / med["wall"]
        for anchor in ("pymc", "bambi"):
            if anchor in res and "error" not in res[anchor]:
                rate = res[anchor]["ess_bulk"] / res[anchor]["wall"]
                print(f"\nmin-bulk-ESS per second: hierarchy / {anchor} = {ours_rate / rate:.1f}x "
                      f"(wall {med['wall']:.0f} s vs {res[anchor]['wall']:.0f} s)")
        results[family] = res
    if args.stacked:
        spec = load_spec(ROOT / "models/stages_age_nb.toml")
        stacked, _ = national_table(strata=("age",))
        design = build_design(stacked, spec)
        print(f"\n## stacked: four stages x age bands, {len(design.y):,} rows; one gradient "
              f"{gradient_ms(spec, priors, design, reps=3, calls=10):.1f} ms (float32 rows)\n")
        print(header)
        r = ours(spec, priors, design, tune=300, draws=300, float32=True, seed=0,
                 chain_method=args.chain_method)
        print(row("hierarchy f32 (300+300)", r))
        results["stacked"] = r
    out = ROOT / "bench" / "last_run.json"
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nfigures saved to {out}")


if __name__ == "__main__":
    main()

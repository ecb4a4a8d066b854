"""The default model written as a plain lme4 formula against today's hand-written default.

A user who writes ``referral ~ w + z + w:z + (1 + w | la) + offset(log(exposure))`` (as bambi or
lme4 users do) must get the hierarchical centring and chunked layout that make the default fast.
This script builds both specs, shows they compile to the same model (equal specs and hash, the
same centring), then fits both on the same national simulated data in one run, alternating, and
prints min-ESS per second and its ratio (target: the formula within 1.25x of the hand-written).

    python bench/formula_default.py --reps 3            # national, 4 chains x (500 + 500), float32 rows
    python bench/formula_default.py --reps 1 --fast     # small generated geography

bambi's fit of the same formula is measured by bench_national.py (its own venv): RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpy as np  # noqa: E402
from bench_national import median_runs, ours, row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAND_WRITTEN = {  # today's default as switches (the form every shipped model had before formulas)
    "name": "inverse_intervention_nb_log", "family": "negative_binomial", "outcome": "referral",
    "la_deprivation": {"measure": "mean", "transform": "log"},
    "la": {"random_intercept": True, "random_gradient": True, "between_effect": True, "cross_level": True,
           "parameterisation": "auto"}}
PLAIN = {"name": "inverse_intervention_nb_log", "family": "negative_binomial",
         "formula": "referral ~ w + z + w:z + (1 + w | la) + offset(log(exposure))"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="fits of each form (seeds 0, 1, ...)")
    ap.add_argument("--tune", type=int, default=500, help="warm-up draws per chain")
    ap.add_argument("--draws", type=int, default=500, help="draws per chain")
    ap.add_argument("--fast", action="store_true", help="a small generated geography")
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    from hierarchy.data import reference, simulate
    from hierarchy.language.design import build_design, centring
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import ModelSpec

    hand, plain = ModelSpec.from_dict(HAND_WRITTEN), ModelSpec.from_dict(PLAIN)
    geo = reference.get_geography(synthetic=args.fast, n_la=20 if args.fast else 151, seed=0)
    table, _ = simulate.simulate(geo, year=2019, seed=0)
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    designs = {"hand-written": build_design(table, hand), "plain formula": build_design(table, plain)}
    print(f"{geo.source}: {len(table):,} rows, {table['la'].nunique()} LAs")
    print(f"same spec: {hand == plain}; hashes {hand.hash()} / {plain.hash()}; same centring: "
          f"{np.array_equal(centring(hand, designs['hand-written']), centring(plain, designs['plain formula']))}")
    print(f"formula: {plain.formula_text}")
    runs = {k: [] for k in designs}
    for seed in range(args.reps):
        for name, spec in (("hand-written", hand), ("plain formula", plain)):
            runs[name].append(ours(spec, priors, designs[name], tune=args.tune, draws=args.draws, float32=True,
                                   seed=seed))
    print("\n| model | wall s | warmup s | sampling s | steps | min bulk ESS | min tail ESS | ESS/s | "
          "max R-hat | divergences |\n|---|---|---|---|---|---|---|---|---|---|")
    med = {k: median_runs(v) for k, v in runs.items()}
    for k, m in med.items():
        print(row(f"{k} (median of {args.reps})", m))
    rate = {k: m["ess_bulk"] / m["wall"] for k, m in med.items()}
    def ess_s(r: dict) -> float:
        return r["ess_bulk"] / r["wall"]

    per_seed = [ess_s(h) / ess_s(f) for h, f in zip(runs["hand-written"], runs["plain formula"], strict=True)]
    print(f"\nmin-ESS/s hand-written / plain formula: {rate['hand-written'] / rate['plain formula']:.2f} "
          f"(per seed: {', '.join(f'{r:.2f}' for r in per_seed)}; target <= 1.25)")


if __name__ == "__main__":
    main()

"""Laplace maximum likelihood of the shipped LA panel model on the real DfE panel, beside the reference
GLMM fit (issue 29 item 3: glmmTMB-style, NB2, ``(1 + t | la)``, year effects fixed, referrals, 2013-2025
series units).

Needs the England reference folder (``hierarchy demo --real`` finds it the same way). Prints each estimate
and its standard error beside the reference figure (referrals only), the difference in standard errors, and
the wall time per measure. JAX's persistent compilation cache is on, as in ``hierarchy demo --real``, in a
new temporary folder: the first measure compiles, measures of the same shape after it reuse the compile.
Nothing else is written.

    python bench/ml_panel_real.py [--measures referrals,s47] [--model panel_stages_nb]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from hierarchy import shipped
from hierarchy.data.panel import build_panel
from hierarchy.inference.sampling import enable_compilation_cache
from hierarchy.likelihood import panel_model as pm
from hierarchy.reporting.panel_report import ml_panel

REFERENCE = {  # referrals, panel_stages_nb: (estimate, SE or None)
    "alpha": (-2.919, 0.018), "b_dep": (0.310, 0.035), "b_t": (-0.0015, 0.0030), "b_dep_t": (-0.0046, 0.0057),
    "sd_u": (0.216, None), "sd_v": (0.0337, None), "phi": (30.9, None),
}


def _one(table, measure: str, model: str, spec) -> None:
    design = pm.panel_design(table, measure, spec)
    print(f"\n{model}, {measure}: {len(design.units)} units x {len(design.years)} years "
          f"({design.years[0]}-{design.years[-1]}), {int(design.observed.sum())} observed cells, "
          f"{int(design.censored.sum())} censored")
    start = time.perf_counter()
    res = ml_panel(design, spec)
    seconds = time.perf_counter() - start
    ref = REFERENCE if (measure, model) == ("referrals", "panel_stages_nb") else {}
    print(f"{'parameter':10s} {'ML':>10s} {'SE':>9s} {'reference':>10s} {'ref SE':>8s} {'diff/SE':>8s}")
    for name in ("alpha", "b_dep", "b_t", "b_dep_t", "sd_u", "sd_v", "corr_uv", "phi"):
        if name not in res.estimates:
            continue
        est, se = float(res.estimates[name]), float(res.se[name])
        r, rse = ref.get(name, (np.nan, None))
        print(f"{name:10s} {est:10.4f} {se:9.4f} {r:10.4f} {rse if rse is not None else np.nan:8.4f} "
              f"{(est - r) / se:8.2f}")
    print(f"log marginal likelihood (Laplace) {res.log_marginal:.2f}; {res.message}; {res.evaluations} "
          f"evaluations; {seconds:.1f} s; {'; '.join(res.notes)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measures", default="referrals")
    ap.add_argument("--model", default="panel_stages_nb")
    args = ap.parse_args()
    spec = pm.load_panel_spec(shipped.resolve(args.model, "models"))
    table = build_panel().table
    with tempfile.TemporaryDirectory() as cache:
        enable_compilation_cache(cache)
        for measure in args.measures.split(","):
            _one(table, measure, args.model, spec)


if __name__ == "__main__":
    main()

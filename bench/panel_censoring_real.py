"""How the real DfE panel's headline estimates move when DfE's suppressed ``c`` cells (1-5) enter the
likelihood as interval-censored rather than being left out (issue 32 item 3).

Fits the shipped ``panel_stages_nb`` model to each measure that has ``c`` cells, twice (censored, dropped),
on the real panel (needs the reference folder), and prints per measure: the cells each way, the
deprivation slope ``b_dep`` (log rate per 10 points of LA deprivation, 2019), the LA SD, and the 2019 rate per
10,000 of the LAs whose cells were censored, with 90% intervals.

    python bench/panel_censoring_real.py [--measures s47,icpc,cpp_start] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from hierarchy import shipped
from hierarchy.data.panel import build_panel
from hierarchy.likelihood import panel_model as pm


def _interval(x: np.ndarray) -> str:
    lo, hi = np.quantile(x, [0.05, 0.95])
    return f"{x.mean():.3f} ({lo:.3f} to {hi:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measures", default="s47,icpc,cpp_start")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    spec = pm.load_panel_spec(shipped.resolve("panel_stages_nb", "models"))
    table = build_panel().table
    for measure in args.measures.split(","):
        kept = pm.panel_design(table, measure, spec)
        cen = kept.censored
        dropped = dataclasses.replace(kept, lower=np.where(cen, np.nan, kept.lower),
                                      upper=np.where(cen, np.nan, kept.upper))
        units = sorted(set(kept.unit_names[kept.unit_idx[cen]]))
        which = np.isin(kept.unit_names, units)
        y19 = int(np.flatnonzero(kept.years == 2019)[0])
        print(f"\n{measure}: {int(cen.sum())} censored cells in {units}; observed {int(kept.observed.sum())}")
        for label, design in (("censored", kept), ("dropped", dropped)):
            t0 = time.perf_counter()
            fit = pm.fit_panel(design, spec, seed=args.seed)
            rate = np.exp(fit.log_rate()[:, which, y19]) * design.rate_scale
            d = fit.diagnostics
            print(f"  {label:8s} b_dep {_interval(fit.draws['b_dep'])}; small-LA 2019 rate per 10,000 "
                  f"{'; '.join(_interval(r) for r in rate.T)}; R-hat {d['max_rhat']:.3f}, min ESS "
                  f"{d['min_ess']:.0f}, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

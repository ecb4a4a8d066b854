"""Convergence diagnostics with a plain verdict: ``ok`` or ``warn`` with reasons."""

from __future__ import annotations

from typing import Any

import numpy as np

from hierarchy.likelihood import parameters

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3
LATENT = parameters.names(role=("latent", "per_row"))
"""Auxiliary draws, not reported (``la_coef`` holds the LA effects; a view of the parameter table)."""


def diagnose(idata, *, approximate: bool = False, max_tree_depth: int = 10) -> dict[str, Any]:
    """R-hat, bulk/tail ESS, divergences, tree-depth saturation and E-BFMI of a fit.

    Returns a JSON-ready dict with the figures, ``status`` (``ok``/``warn``) and ``reasons``.
    """
    import arviz as az

    post = idata.posterior[[v for v in idata.posterior.data_vars if v not in LATENT]]
    if "la_corr" in post:  # the diagonal is constant 1: keep the correlations above it
        c = post["la_corr"]
        iu = np.triu_indices(c.shape[-1], 1)
        post = post.assign(la_corr=(("chain", "draw", "pair"), c.values[..., iu[0], iu[1]]))
    post = post.drop_vars([v for v in ("la_coef_flat",) if v in post])
    out: dict[str, Any] = {"approximate": approximate, "reasons": []}
    if approximate:
        out["reasons"].append("approximation, not MCMC: use it to explore, not to report")
    elif post.sizes["chain"] < 2:
        out["reasons"].append("one chain: R-hat needs at least 2")
    if not approximate:
        rhat, bulk, tail = az.rhat(post), az.ess(post, method="bulk"), az.ess(post, method="tail")
        worst = {}
        for name, ds, pick in (("rhat", rhat, max), ("ess_bulk", bulk, min), ("ess_tail", tail, min)):
            vals = {v: float(pick(np.ravel(ds[v].values))) for v in ds.data_vars}
            var = pick(vals, key=lambda k: vals[k] if np.isfinite(vals[k]) else -np.inf)
            worst[name] = (vals[var], var)
        out.update(rhat_max=worst["rhat"][0], rhat_worst=worst["rhat"][1],
                   ess_bulk_min=worst["ess_bulk"][0], ess_bulk_worst=worst["ess_bulk"][1],
                   ess_tail_min=worst["ess_tail"][0], ess_tail_worst=worst["ess_tail"][1])
        if out["rhat_max"] > RHAT_MAX:
            out["reasons"].append(f"R-hat {out['rhat_max']:.3f} > {RHAT_MAX} ({out['rhat_worst']})")
        for k in ("ess_bulk", "ess_tail"):
            if out[f"{k}_min"] < ESS_MIN:
                out["reasons"].append(f"{k.replace('_', ' ')} ESS {out[f'{k}_min']:.0f} < "
                                      f"{ESS_MIN} ({out[f'{k}_worst']})")
        ss = idata.sample_stats
        out["divergences"] = int(ss["diverging"].sum()) if "diverging" in ss else None
        if out["divergences"]:
            out["reasons"].append(f"{out['divergences']} divergent transitions")
        if "tree_depth" in ss:
            sat = float((ss["tree_depth"] >= max_tree_depth).mean())
            out["tree_depth_saturation"] = sat
            if sat > 0:
                out["reasons"].append(f"{sat:.1%} of draws hit the maximum tree depth")
        if "energy" in ss:
            out["bfmi_min"] = float(np.min(az.bfmi(idata)))
            if out["bfmi_min"] < BFMI_MIN:
                out["reasons"].append(f"E-BFMI {out['bfmi_min']:.2f} < {BFMI_MIN}")
    out["status"] = "warn" if out["reasons"] else "ok"
    return out


def format_diagnostics(d: dict[str, Any]) -> str:
    """One-paragraph human summary of :func:`diagnose` output."""
    lines = [f"diagnostics: {d['status'].upper()}"]
    if "rhat_max" in d:
        lines.append(f"  max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.0f}, "
                     f"min tail ESS {d['ess_tail_min']:.0f}, divergences {d.get('divergences')}, "
                     f"E-BFMI {d.get('bfmi_min', float('nan')):.2f}")
    lines += [f"  - {r}" for r in d["reasons"]]
    return "\n".join(lines)

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


def advice(d: dict[str, Any], posterior: Any = None, *, model: str = "MODEL") -> list[str]:
    """What most likely fixes a fit that missed the bar, with the change to make (empty when it passed).

    Parameters
    ----------
    d : dict
        :func:`diagnose` output.
    posterior : xarray.Dataset, optional
        The draws, to say what the worst parameter's posterior looks like (an SD piled at 0).
    model : str
        The model file or name, for the commands shown.
    """
    if d.get("status") == "ok" or d.get("approximate"):
        return []
    out = []
    worst = d.get("rhat_worst") if (d.get("rhat_max") or 0) > RHAT_MAX else d.get("ess_bulk_worst")
    if worst and posterior is not None and worst in posterior and str(worst).endswith("_sd"):
        v = np.asarray(posterior[worst].values, dtype=float)
        cols = v.reshape(v.shape[0] * v.shape[1], -1).T  # one row per component (intercept, gradient ...)
        piled = [c for c in cols if np.quantile(c, 0.5) < 0.05 or np.quantile(c, 0.1) < 0.1 * np.quantile(c, 0.9)]
        if piled:
            out.append(f"{worst} is piled near 0 (median {np.quantile(piled[0], 0.5):.3f}): the data say this "
                       "effect barely varies, and its effects form a funnel. Most likely fix: parameterisation = "
                       f"\"non_centred\" under [la] in {model}; or drop the varying slope ((1 | la)); or a "
                       f"tighter prior, e.g. --prior '{worst}=exponential(10)'")
    if d.get("divergences"):
        out.append(f"{d['divergences']} divergences: refit with --target-accept 0.95 (smaller steps); if they "
                   "stay, the geometry is a funnel: non-centred parameterisation")
    if (d.get("bfmi_min") or 1.0) < BFMI_MIN and not out:
        out.append("low E-BFMI: a funnel between an SD and its effects; try parameterisation = \"non_centred\"")
    if not out and worst:
        out.append(f"{worst} mixes slowly: more draws (--draws 2000, or --max-draws 6000 to sample on until the "
                   "bar is met)")
    return out

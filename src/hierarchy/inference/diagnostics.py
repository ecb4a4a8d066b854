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


def _fit_record(posterior: Any) -> dict[str, Any]:
    """The provenance a fit's posterior carries (``attrs["hierarchy"]``), or ``{}``."""
    import json

    try:
        return json.loads(getattr(posterior, "attrs", {}).get("hierarchy") or "{}")
    except (TypeError, ValueError):
        return {}


def _was_centred(used: str | None, label: str) -> bool | None:
    """Whether the LA effect ``label`` was centred in a fit recorded as ``used`` (``centred``,
    ``non_centred`` or ``mixed (centred: a, b)``); None when not recorded."""
    if not used:
        return None
    if used.startswith("mixed"):
        if label.isdigit():  # components without names: cannot tell which
            return None
        return label in [k.strip() for k in used.split(":", 1)[-1].rstrip(")").split(",")]
    return used.startswith("centred")


def _piled_near_zero(posterior: Any, worst: str) -> tuple[str, float] | None:
    """The first component of SD ``worst`` whose posterior is piled near 0, as (label, median)."""
    da = posterior[worst]
    v = np.asarray(da.values, dtype=float)
    cols = v.reshape(v.shape[0] * v.shape[1], -1).T  # one row per component (intercept, gradient ...)
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    labels = [str(c) for c in da[extra[0]].values] if len(extra) == 1 else [str(k) for k in range(len(cols))]
    for label, c in zip(labels, cols, strict=True):
        if np.quantile(c, 0.5) < 0.05 or np.quantile(c, 0.1) < 0.1 * np.quantile(c, 0.9):
            return label, float(np.quantile(c, 0.5))
    return None


def advice(d: dict[str, Any], posterior: Any = None, *, model: str = "MODEL") -> list[str]:
    """What most likely fixes a fit that missed the bar, with the change to make (empty when it passed).

    The advice follows the parameterisation the fit used (recorded in ``posterior.attrs``): a funnel
    of a centred LA effect is fixed by ``non_centred`` (which ``auto`` now picks when the data show
    the effect barely varies over LAs: :func:`hierarchy.language.design.centring`); an effect already
    non-centred is not told to be non-centred again.

    Parameters
    ----------
    d : dict
        :func:`diagnose` output.
    posterior : xarray.Dataset, optional
        The draws, to say what the worst parameter's posterior looks like (an SD piled at 0), with
        the fit's provenance in ``attrs["hierarchy"]`` where it has one.
    model : str
        The model file or name, for the commands shown.
    """
    if d.get("status") == "ok" or d.get("approximate"):
        return []
    record = _fit_record(posterior)
    used = record.get("sampler", {}).get("parameterisation")
    asked = record.get("model_spec", {}).get("la", {}).get("parameterisation")
    out = []
    done = used is not None and used.startswith("non_centred")  # non_centred would change nothing
    worst = d.get("rhat_worst") if (d.get("rhat_max") or 0) > RHAT_MAX else d.get("ess_bulk_worst")
    funnel_fix = 'parameterisation = "non_centred" under [la] in ' + model
    if worst and posterior is not None and worst in posterior and str(worst).endswith("_sd"):
        piled = _piled_near_zero(posterior, worst)
        if piled:
            label, median = piled
            centred = _was_centred(used, label) if worst == "la_sd" else None
            head = (f"{worst} is piled near 0 ({label}: median {median:.3f}): the data say this effect barely "
                    "varies, and its effects form a funnel with it. ")
            tight = f"a tighter prior, e.g. --prior '{worst}=exponential(10)'"
            done = done or centred is False
            if centred is False:
                fix = (f"it was already non-centred, so: drop its varying part (e.g. (1 | la) for a gradient), or "
                       f"{tight}, or --target-accept 0.95")
            else:
                how = " under auto" if asked == "auto" else ""
                why = (f" (this fit centred it{how}; auto non-centres an effect whose spread over LAs the data "
                       "show near 0)") if centred else ""
                fix = f"{funnel_fix}{why}; or drop the varying part ((1 | la)); or {tight}"
            out.append(head + "Most likely fix: " + fix)
    if d.get("divergences"):
        then = ("a tighter prior on the SD that piles at 0, or a simpler model" if done
                else f"the geometry is a funnel: {funnel_fix}")
        out.append(f"{d['divergences']} divergences: refit with --target-accept 0.95 (smaller steps); if they "
                   f"stay, {then}")
    if (d.get("bfmi_min") or 1.0) < BFMI_MIN and not out:
        out.append("low E-BFMI: a funnel between an SD and its effects; " +
                   ("try a tighter prior on that SD" if done else f"try {funnel_fix}"))
    if not out and worst:
        out.append(f"{worst} mixes slowly: more draws (--draws 2000, or --max-draws 6000 to sample on until the "
                   "bar is met)")
    return out

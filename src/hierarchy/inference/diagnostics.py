"""Convergence diagnostics with a plain verdict: ``ok`` or ``warn`` with reasons.

A fit of many short chains run in superchains (``--sampler chees``: the sample statistic ``superchain``
names each chain's group) is gated on nested R-hat (:func:`nested_rhat`, Margossian et al. 2024) in
place of R-hat; bulk and tail ESS, divergences and E-BFMI are judged as for any fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hierarchy.likelihood import parameters

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3
LATENT = parameters.names(role=("latent", "per_row"))
"""Auxiliary draws, not reported (``la_coef`` holds the LA effects; a view of the parameter table)."""


def nested_rhat(x: np.ndarray, superchain: np.ndarray) -> float:
    """Nested R-hat of one scalar: ``sqrt(1 + B_nu / W_nu)`` over superchains of chains started together.

    ``B_nu`` is the variance (ddof 1) of the superchain means; ``W_nu`` the mean over superchains of
    the within-superchain variance, the variance (ddof 1) of its chain means plus the mean of its
    chains' variances (ddof 1); a term is 0 with one chain a superchain or one draw a chain
    (Margossian et al. 2024, eqs. 4-8; as ``posterior::rhat_nested``).

    Parameters
    ----------
    x : ndarray
        Draws ``(chain, draw)``.
    superchain : ndarray
        ``(chain,)`` superchain of each chain; every superchain the same number of chains.

    Returns
    -------
    float
        Nested R-hat, NaN when a draw is not finite or every chain is constant.
    """
    x = np.asarray(x, dtype=float)
    ids, counts = np.unique(superchain, return_counts=True)
    if x.ndim != 2 or len(superchain) != x.shape[0] or counts.min() != counts.max() or len(ids) < 2:
        raise ValueError(f"nested_rhat needs draws (chain, draw) and 2 or more superchains of equal size; got "
                         f"draws {x.shape} and superchain sizes {counts.tolist()}")
    if not np.all(np.isfinite(x)):
        return float("nan")
    groups = [x[np.asarray(superchain) == k] for k in ids]  # each (chains in it, draw)
    means = np.array([g.mean() for g in groups])
    between = np.array([g.mean(1).var(ddof=1) if len(g) > 1 else 0.0 for g in groups])
    within = np.array([g.var(1, ddof=1).mean() if x.shape[1] > 1 else 0.0 for g in groups])
    w_nu = float(np.mean(between + within))
    return float(np.sqrt(1.0 + means.var(ddof=1) / w_nu)) if w_nu > 0 else float("nan")


def nested_rhat_threshold(chains_per_superchain: int) -> float:
    """The nested R-hat bar ``sqrt(1 + 1/M)`` for ``M`` chains a superchain (Margossian et al. 2024).

    It is the value nested R-hat takes, in expectation, for chains that have forgotten their start
    with one draw each: a higher value says the superchain means differ by more than stationary
    chains allow, i.e. the warm-up did not remove the start (the chains' draws beyond one only lower it).
    """
    return float(np.sqrt(1.0 + 1.0 / chains_per_superchain))


def _nested(post, superchain: np.ndarray) -> dict[str, Any]:
    """Nested R-hat of every scalar of ``post`` (an xarray Dataset), the worst and the bar."""
    ids, counts = np.unique(superchain, return_counts=True)
    vals = {}
    for v in post.data_vars:
        a = np.asarray(post[v].values, dtype=float)
        cols = a.reshape(a.shape[0], a.shape[1], -1)
        vals[v] = max((nested_rhat(cols[..., i], superchain) for i in range(cols.shape[-1])),
                      key=lambda r: r if np.isfinite(r) else -np.inf)
    worst = max(vals, key=lambda k: vals[k] if np.isfinite(vals[k]) else -np.inf)
    return {"nested_rhat_max": vals[worst], "nested_rhat_worst": worst, "superchains": int(len(ids)),
            "nested_rhat_threshold": nested_rhat_threshold(int(counts[0]))}


def diagnose(idata, *, approximate: bool = False, max_tree_depth: int = 10) -> dict[str, Any]:
    """R-hat, bulk/tail ESS, divergences, tree-depth saturation and E-BFMI of a fit.

    A fit whose sample statistics hold ``superchain`` (chain, draw) is judged on nested R-hat against
    :func:`nested_rhat_threshold` instead of R-hat <= 1.01 (R-hat is still reported); the figures are
    ``nested_rhat_max``, ``nested_rhat_worst``, ``nested_rhat_threshold`` and ``superchains``.

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
        ss = idata.sample_stats
        if "superchain" in ss:
            out.update(_nested(post, np.asarray(ss["superchain"].values)[:, 0]))
            if out["nested_rhat_max"] > out["nested_rhat_threshold"]:
                out["reasons"].append(f"nested R-hat {out['nested_rhat_max']:.4f} > "
                                      f"{out['nested_rhat_threshold']:.4f} ({out['nested_rhat_worst']})")
        elif out["rhat_max"] > RHAT_MAX:
            out["reasons"].append(f"R-hat {out['rhat_max']:.3f} > {RHAT_MAX} ({out['rhat_worst']})")
        for k in ("ess_bulk", "ess_tail"):
            if out[f"{k}_min"] < ESS_MIN:
                out["reasons"].append(f"{k.replace('_', ' ')} ESS {out[f'{k}_min']:.0f} < "
                                      f"{ESS_MIN} ({out[f'{k}_worst']})")
        _sampler_checks(out, idata, max_tree_depth)
    out["status"] = "warn" if out["reasons"] else "ok"
    return out


def _sampler_checks(out: dict[str, Any], idata, max_tree_depth: int) -> None:
    """:func:`diagnose`'s checks of the sampler statistics: divergences, tree depth, E-BFMI (into ``out``)."""
    import arviz as az

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


def format_diagnostics(d: dict[str, Any]) -> str:
    """One-paragraph human summary of :func:`diagnose` output."""
    lines = [f"diagnostics: {d['status'].upper()}"]
    if "rhat_max" in d:
        lines.append(f"  max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.0f}, "
                     f"min tail ESS {d['ess_tail_min']:.0f}, divergences {d.get('divergences')}, "
                     f"E-BFMI {d.get('bfmi_min', float('nan')):.2f}")
    if "nested_rhat_max" in d:
        lines.append(f"  max nested R-hat {d['nested_rhat_max']:.4f} (bar {d['nested_rhat_threshold']:.4f}, "
                     f"{d['superchains']} superchains; it replaces R-hat <= {RHAT_MAX} for many short chains)")
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
    if "nested_rhat_max" in d:  # many short chains: nested R-hat is the gate
        missed = (d.get("nested_rhat_max") or 0) > d["nested_rhat_threshold"]
        worst = d.get("nested_rhat_worst") if missed else d.get("ess_bulk_worst")
    else:
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
    if not out and worst and "nested_rhat_max" in d:
        out.append(f"{worst} has not mixed across the superchains: a longer warm-up (--tune 1000) or more "
                   "draws per chain (--draws 200)")
    elif not out and worst:
        out.append(f"{worst} mixes slowly: more draws (--draws 2000, or --max-draws 6000 to sample on until the "
                   "bar is met)")
    return out

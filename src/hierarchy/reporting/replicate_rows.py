"""The replication table's rows (:mod:`hierarchy.reporting.replicate`): :func:`findings_rows` turns the
fits of the analyses into one row per estimand of each published finding (the published figure, its
simulated truth, the posterior mean with a :data:`PROB` equal-tailed interval, whether it covers the truth,
and the posterior probability of a published direction); see the replicate module's docstring for the
estimands."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError

PROB = 0.9
COLUMNS = ["finding", "analysis", "estimand", "published", "scale", "truth", "mean", "lower", "upper",
           "covered", "direction", "p_direction", "note"]


# ------------------------------------------------------------------------------------------- estimands


def _flat(da: xr.DataArray) -> np.ndarray:
    dims = [d for d in ("chain", "draw", "sample") if d in da.dims]
    return da.transpose(*dims, ...).to_numpy().reshape(-1, *[da.sizes[d] for d in da.dims if d not in dims])


def _row(finding: str, analysis: str, estimand: str, published: str, scale: str, truth: float,
         draws: np.ndarray, *, direction: str = "", p: float | None = None, note: str = "") -> dict[str, Any]:
    draws = np.asarray(draws, dtype=float).ravel()
    lo, hi = np.quantile(draws, [(1 - PROB) / 2, (1 + PROB) / 2])
    return {"finding": finding, "analysis": analysis, "estimand": estimand, "published": published,
            "scale": scale, "truth": float(truth), "mean": float(draws.mean()), "lower": float(lo),
            "upper": float(hi), "covered": bool(lo <= truth <= hi), "direction": direction,
            "p_direction": None if p is None else float(p), "note": note}


def _levels(da: xr.DataArray, dim: str) -> dict[str, np.ndarray]:
    return {str(k): _flat(da.sel({dim: k})) for k in da[dim].to_numpy()}


def moderator_ratio(idata, col: str) -> np.ndarray:
    """Draws of the gradient ratio at ``col`` = 1 vs 0 for a ``w:col`` term, per 10 points.

    The one predictor is linear in ``w:col``, so this is ``exp(b_{w:col} * 10 points / scale)``.
    (:func:`hierarchy.results.estimands.moderated_gradients` gives the same for one such term, but fails with two:
    ``sel(row_term=...)`` keeps a scalar coordinate that ``xr.concat`` then finds in conflict.)
    """
    from hierarchy.results.estimands import TEN_POINTS
    from hierarchy.results.fit import as_fit

    spec = as_fit(idata).spec
    term = f"w:{col}"
    if term not in spec.row_terms:
        raise HierarchyError(f"the fit has no term {term}; its neighbourhood terms: {', '.join(spec.row_terms)}")
    b = idata.posterior["row_coef"].sel(row_term=term, drop=True)
    return _flat(np.exp(b * TEN_POINTS / spec.deprivation.scale))


def _stratum_rows(finding, analysis, g: dict[str, np.ndarray], truth: dict[str, float], published: dict,
                  top: str, bottom: str, *, what: str) -> list[dict[str, Any]]:
    """Subgroup gradients, the top / bottom contrast and the probability of the published order."""
    names = list(g)
    stack = np.stack([g[n] for n in names], axis=-1)
    rows = [_row(finding, analysis, f"gradient, {what}={n}", f"{published[n]:.2f}" if n in published
                 else "between (not published)", "per 10 points", truth[n], g[n]) for n in names]
    ratio = g[top] / g[bottom]
    rows.append(_row(finding, analysis, f"gradient ratio {top} / {bottom}",
                     f"{published[top] / published[bottom]:.2f}",
                     "ratio of gradient scores", truth[top] / truth[bottom], ratio,
                     direction=f"{top} steeper than {bottom}", p=(ratio > 1).mean()))
    p_top = (stack.argmax(-1) == names.index(top)).mean()
    p_bottom = (stack.argmin(-1) == names.index(bottom)).mean()
    rows[names.index(top)].update(direction=f"{top} steepest", p_direction=float(p_top))
    rows[names.index(bottom)].update(direction=f"{bottom} least steep", p_direction=float(p_bottom))
    return rows


def findings_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame], truth: dict[str, Any]
                  ) -> pd.DataFrame:
    """The replication table: one row per estimand of :data:`FINDINGS` (see the module docstring).

    Parameters
    ----------
    fits : dict
        Analysis name (:data:`ANALYSES`) to InferenceData.
    tables, truth
        From :func:`hierarchy.data.findings.simulate_findings`.
    """
    sc = truth["scenarios"]
    rows: list[dict[str, Any]] = []
    for part in (_stage_rows, _referral_rows, _age_sex_rows, _strata_rows, _rural_rows, _la_condition_rows,
                 _provision_rows):
        rows += part(fits, tables, sc)
    return pd.DataFrame(rows, columns=COLUMNS)


def _stage_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: headline and stage gradients, and their fall with LA deprivation."""
    from hierarchy.results import estimands as est

    stages = sc["base"]["simulate_truth"]["stages"]
    keys = {"10 points less": "gradient_10_less", "mean": "gradient_at_mean",
            "10 points more": "gradient_10_more"}
    rows: list[dict[str, Any]] = []
    for stage in ("referral", "s47", "cp_plan", "looked_after"):
        if stage not in fits:
            continue
        h = est.headline_gradients(fits[stage])
        lv = _levels(h, "la_level")
        t = stages[stage]
        if stage == "referral":
            for k, pub in (("mean", "1.62"), ("10 points less", "2.33"), ("10 points more", "1.39")):
                rows.append(_row("headline", stage, f"referral gradient, LA deprivation {k}", pub,
                                 "per 10 points", t[keys[k]], lv[k]))
        else:
            pub = "1.80" if stage == "cp_plan" else "simulated (not published)"
            rows.append(_row("stages", stage, f"{stage} gradient at mean LA deprivation", pub, "per 10 points",
                             t["gradient_at_mean"], lv["mean"]))
        ratio = lv["10 points less"] / lv["10 points more"]
        rows.append(_row("falls", stage, f"{stage}: gradient 10 points less / 10 points more deprived LA",
                         "> 1", "ratio of gradient scores", t["gradient_10_less"] / t["gradient_10_more"], ratio,
                         direction="falls as LA deprivation rises", p=(ratio > 1).mean()))
    return rows


def _referral_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                   sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: the range of LA gradients and the rates at the extremes."""
    from hierarchy.data.simulate import extreme_groups
    from hierarchy.results import estimands as est

    stages = sc["base"]["simulate_truth"]["stages"]
    rows: list[dict[str, Any]] = []
    if "referral" in fits:
        idata = fits["referral"]
        lag = _flat(est.la_gradients(idata))
        lo_t, hi_t = stages["referral"]["la_gradient_range"]
        note = "extreme LA gradients are shrunk towards the typical one; the range of posterior means is narrower"
        rows.append(_row("la_range", "referral", "lowest LA gradient score", "1.2", "per 10 points", lo_t,
                         lag.min(-1), note=note))
        rows.append(_row("la_range", "referral", "highest LA gradient score", "2.4", "per 10 points", hi_t,
                         lag.max(-1), note=note))
        yrep = est.posterior_predictive(idata, n_draws=200).to_numpy()
        base = tables["base"]
        x, expo = base["deprivation"].to_numpy(), base["exposure"].to_numpy(dtype=float)
        ext = sc["base"]["simulate_truth"]["extremes"]
        for name, mask in extreme_groups(x).items():
            pub = "about 100" if name == "least" else "more than 1,340"
            rate = 1e4 * yrep[:, mask].sum(-1) / expo[mask].sum()
            rows.append(_row("extremes", "referral", f"referral rate, {name} deprived neighbourhoods "
                             f"({ext[name]['definition']}, {ext[name]['neighbourhoods']} neighbourhoods)", pub,
                             "per 10,000 children", ext[name]["expected_rate"], rate,
                             note="expected rate in the simulation (calibrated to DfE LA totals, not to this "
                                  "figure); posterior predictive"))
    return rows


def _age_sex_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                  sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: gradients by sex and by year of age."""
    from hierarchy.results import estimands as est

    rows: list[dict[str, Any]] = []
    if "age_sex" in fits:
        idata, t = fits["age_sex"], sc["age_sex"]
        g = _levels(est.subgroup_gradients(idata), "stratum")
        for s in ("female", "male"):
            rows.append(_row("sex", "age_sex", f"gradient, sex={s} (mean age)", "no difference", "per 10 points",
                             t["gradient_by_sex"][s], g[s]))
        ratio = g["male"] / g["female"]
        rows.append(_row("sex", "age_sex", "gradient ratio male / female", "1 (no difference)",
                         "ratio of gradient scores", t["sex_gradient_ratio"], ratio,
                         direction="no difference: the interval covers 1",
                         p=float(np.quantile(ratio, 0.05) <= 1 <= np.quantile(ratio, 0.95))))
        per_year = moderator_ratio(idata, "age_c")
        rows.append(_row("age", "age_sex", "gradient ratio per year of age", "< 1 (falls with each year)",
                         "ratio of gradient scores", t["age_year_gradient"], per_year,
                         direction="younger steeper", p=(per_year < 1).mean(),
                         note="value simulated: the bands' 1.10 to 0.90 over 14.5 years"))
    return rows


def _strata_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                 sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: subgroup gradients by ethnicity, assessment factor, plan category."""
    from hierarchy.results import estimands as est

    rows: list[dict[str, Any]] = []
    for name, what, top, bottom in (("ethnicity", "ethnicity", "White", "Black"),
                                    ("assessment", "factor", "neglect", "physical_disability"),
                                    ("plan_category", "category", "neglect", "sexual_abuse")):
        if name in fits:
            g = _levels(est.subgroup_gradients(fits[name]), "stratum")
            t = sc[name]["gradient"]
            pub = {k: t[k] for k in sc[name]["published"]}
            rows += _stratum_rows(name, name, g, t, pub, top, bottom, what=what)
    return rows


def _rural_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: rural and sparsity gradient ratios."""
    rows: list[dict[str, Any]] = []
    if "rural" in fits:
        t = sc["rural"]
        for col, tv, label in (("rural", t["rural_gradient_ratio"], "rural / urban"),
                               ("sparsity", t["sparsity_gradient_per_sd"], "per SD sparser")):
            r = moderator_ratio(fits["rural"], col)
            rows.append(_row("rural", "rural", f"gradient ratio {label}", "> 1 (steeper)",
                             "ratio of gradient scores", tv, r, direction="steeper", p=(r > 1).mean(),
                             note="value simulated"))
    return rows


def _la_condition_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                       sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: LA provision covariates and Webb et al.'s contrast."""
    from hierarchy.language.design import z_of
    from hierarchy.likelihood import model
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    rows: list[dict[str, Any]] = []
    if "la_conditions" in fits:
        idata, t = fits["la_conditions"], sc["la_conditions"]
        spec = as_fit(idata).spec
        post, des = idata.posterior, provenance(idata)["design"]
        names = [str(c) for c in post["la_covariate"].to_numpy()]

        def log_grad(X: float, cov: dict[str, float]) -> xr.DataArray:
            z = float(z_of(X, des["X_mean"], spec))
            vec = xr.DataArray([cov.get(n, 0.0) for n in names], dims="la_covariate",
                               coords={"la_covariate": names})
            return (model.log_rate(post, spec, w=1.0, z=z, la_cov=vec)
                    - model.log_rate(post, spec, w=0.0, z=z, la_cov=vec))

        base = log_grad(des["X_mean"], {})
        for col, tv, label in (("la_expenditure", t["expenditure_gradient_per_sd"], "expenditure"),
                               ("la_workforce_stability", t["workforce_gradient_per_sd"], "workforce stability")):
            r = _flat(np.exp(log_grad(des["X_mean"], {col: 1.0}) - base))
            rows.append(_row("la_provision", "la_conditions", f"gradient ratio per SD of LA {label}",
                             "a little (near 1)", "ratio of gradient scores", tv, r,
                             direction="a little: within 0.9-1.1", p=((r > 0.9) & (r < 1.1)).mean(),
                             note="covariate and value simulated"))
        sd_x = float(idata.constant_data["la_deprivation"].to_numpy().std())
        lo = log_grad(des["X_mean"] - sd_x, {"la_inequality": 1.0})
        hi = log_grad(des["X_mean"] + sd_x, {"la_inequality": -1.0})
        webb = _flat(lo / hi)
        for label, draws_, tv in (("low-deprivation, high-inequality", lo, t["gradient_low_dep_high_ineq"]),
                                  ("high-deprivation, low-inequality", hi, t["gradient_high_dep_low_ineq"])):
            rows.append(_row("inequality", "la_conditions", f"gradient in a {label} LA (1 SD from the means)",
                             "(the ratio's parts)", "per 10 points", tv, _flat(np.exp(draws_))))
        rows.append(_row("inequality", "la_conditions", "log gradient, low-deprivation high-inequality LA / "
                         "high-deprivation low-inequality LA (each 1 SD from the mean)", "about 5",
                         "ratio of log gradients (per SD = per 10 points)", t["webb_ratio"], webb,
                         direction="stronger in low-deprivation, high-inequality LAs", p=(webb > 1).mean(),
                         note="inequality: 20:20 ratio of IoD2019 income rates"))
    return rows


def _provision_rows(fits: dict[str, Any], tables: dict[str, pd.DataFrame],
                    sc: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`findings_rows`: re-referrals and repeat plans in affluent LAs."""
    from hierarchy.results import estimands as est
    from hierarchy.results.fitfile import provenance

    rows: list[dict[str, Any]] = []
    for name, label in (("re_referral", "re-referrals per referral"), ("repeat_cp_plan", "repeat plans per plan")):
        if name not in fits:
            continue
        idata, t = fits[name], sc["base"]["provision"][name]
        x_mean = provenance(idata)["design"]["X_mean"]
        ii = _flat(est.inverse_intervention(idata, x=np.array([x_mean])))
        rows.append(_row("provision", name, f"{label}: typical LA 10 points less / more deprived, neighbourhood "
                         "at mean LA deprivation", "> 1 (highest in affluent LAs)", "rate ratio",
                         t["la_ratio_at_mean_x"], ii, direction="highest in affluent LAs", p=(ii > 1).mean(),
                         note="value simulated"))
        lv = _levels(est.headline_gradients(idata), "la_level")
        inter = lv["10 points less"] / lv["10 points more"]
        rows.append(_row("provision", name, f"{label}: gradient 10 points less / more deprived LA (interaction)",
                         "> 1 (deprived neighbourhoods of affluent LAs highest)", "ratio of gradient scores",
                         t["interaction_ratio"], inter, direction="steeper in affluent LAs", p=(inter > 1).mean(),
                         note="value simulated"))
    return rows

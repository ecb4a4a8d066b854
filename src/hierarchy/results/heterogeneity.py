"""Between-LA heterogeneity in the field's measures, and region-of-practical-equivalence statements.

Issue 32, items 1 and 4. Three layers, as in arviz-stats: array functions on numbers
(:func:`mrr_from_variance`, :func:`vpc_from_components`, :func:`pcv_from_variances`,
:func:`rope_probabilities`), xarray functions on a saved fit that return draws (dims
``chain, draw`` or ``sample`` plus one labelled dim), and :func:`summary_rows`, one tidy table
for ``hierarchy summary`` and the report. Every measure carries a one-line plain definition
(:data:`DEFINITIONS`) for the page. Issue 32, item 2: intersectional strata (MAIHDA) are measured in
:mod:`hierarchy.results.maihda` (:func:`~hierarchy.results.maihda.maihda_rows`,
:func:`~hierarchy.results.maihda.interaction_table`); their definitions are :data:`MAIHDA_DEFINITIONS`.

The LA level is the model's ``(a_j, b_j) ~ MVN(LA-level mean, Sigma)`` with
``Sigma = diag(la_sd) la_corr diag(la_sd)`` (:mod:`hierarchy.likelihood.model`). The variance of
an LA's log rate about its LA-level mean, for a neighbourhood at centred deprivation ``w``, is

    sigma^2(w) = Sigma_aa + 2 w Sigma_ab + w^2 Sigma_bb

(:func:`la_variance`); at ``w = 0`` it is the LA intercept variance. It is the LA variance left
once the LA-level terms (LA deprivation, covariates) are in the mean, so a model with them gives
the *residual* heterogeneity. Stacked-stage fits give one value per stage (their LA effects
for that stage: the correlated block, or for an anchored model ``loading^2 Sigma + stage_sd^2``).

References: Larsen & Merlo (2005) Am J Epidemiol 161:81; Austin, Stryhn, Leckie & Merlo (2018)
Stat Med 37:3341; Leckie, Browne, Goldstein, Merlo & Austin (2020) Psychol Methods 25:787.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import w_of, z_of
from hierarchy.likelihood import model, parameters
from hierarchy.results import estimands
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import exposure_is_public, provenance

Q75 = NormalDist().inv_cdf(0.75)
"""Phi^-1(0.75) = 0.6745: the median of |N(0, 1)| over sqrt(2) (Larsen & Merlo 2005)."""
SPREAD_QUANTILES = (0.05, 0.95)
DEFINITIONS = {
    "median_rate_ratio": (
        "Median rate ratio (MRR): compare the same neighbourhood in two LAs picked at random (with the "
        "same LA deprivation); the higher rate is typically this many times the lower. 1 means LAs do "
        "not differ (Larsen & Merlo 2005; Austin et al. 2018)."),
    "vpc": (
        "Variance partition coefficient (VPC) on the count scale: the share of the variation in a "
        "neighbourhood's count that lies between LAs, for a neighbourhood of the stated children at "
        "the stated rate (Austin et al. 2018; Leckie et al. 2020)."),
    "pcv": (
        "Proportional change in LA variance (PCV): the share of the simpler model's LA variance that the "
        "fuller model's extra terms (e.g. LA deprivation and inequality) explain; (var_null - var_full) / "
        "var_null, negative when the fuller model leaves more."),
    "la_gradient_spread": (
        "LA gradient spread: the 5th and 95th percentiles of the LAs' gradient scores (per 10 points), so "
        "nine LAs in ten have a gradient between the two."),
    "rope": (
        "Region of practical equivalence (ROPE): the probability that the ratio lies inside the stated "
        "region, i.e. that any difference is too small to matter; a high value is evidence of no "
        "difference, not just an absent one."),
}
NO_LA_LEVEL = ("this fit has no LA level (no 'la_sd' in its posterior): the MRR, VPC, PCV and LA gradient "
               "spread need LA random effects, e.g. '(1 + w | la)' in the formula")
COLUMNS = ("estimand", "stage", "reference", "reference_rate", "exposure", "scale", "mean", "sd", "lower",
           "upper", "prob", "rope_low", "rope_high", "p_below", "p_inside", "p_above", "definition")
SAMPLE_DIMS = ("chain", "draw", "sample")


# ---------------------------------------------------------------------------- arrays


def mrr_from_variance(variance: Any) -> Any:
    """Median rate ratio ``exp(sqrt(2 variance) Phi^-1(0.75))`` of a log-scale LA variance.

    Parameters
    ----------
    variance : array_like
        Variance of the LA effects on the log-rate scale (draws or numbers), >= 0.

    Returns
    -------
    array_like
        Same shape (xarray in, xarray out).
    """
    return np.exp(np.sqrt(2.0 * variance) * Q75)


def vpc_from_components(var_la: Any, mu: Any, *, dispersion: Any = np.inf, var_within: Any = 0.0,
                        zero_inflation: Any = 0.0) -> Any:
    """Count-scale VPC of a log-link count model with normal LA effects.

    With ``u ~ N(0, var_la)`` between LAs, ``v ~ N(0, var_within)`` within them (MSOA or
    observation-level effects) and marginal mean ``mu`` (``exp(eta + (var_la + var_within) / 2)``),
    exactly (the lognormal moments of Austin et al. 2018; Leckie et al. 2020, NB2)::

        VPC = mu (e^var_la - 1) / (mu (e^(var_la + var_within) - 1) + 1 + mu e^(var_la + var_within) k)

    with ``k = 1 / phi``: the between-LA variance of the LA's expected count over the variance of the
    count. Poisson: ``dispersion = inf``. Zero-inflated NB (``zero_inflation = zi``): given the effects
    the count has mean ``m = (1 - zi) M`` and variance ``(1 - zi) M (1 + M / phi + zi M)``, ``M`` the NB
    mean, which is the formula with ``mu`` the marginal expected count ``m`` and
    ``k = (1 / phi + zi) / (1 - zi)``.

    Parameters
    ----------
    var_la, mu, dispersion, var_within, zero_inflation : array_like
        Broadcast together; ``mu`` is the marginal expected count of the unit (rate x exposure, the
        structural zeros included).

    Returns
    -------
    array_like
        Proportions in [0, 1).
    """
    total = var_la + var_within
    square = mu * np.exp(total)  # E[M^2] / mu
    extra = (square / dispersion + square * zero_inflation) / (1.0 - zero_inflation)  # NB: square / phi
    return mu * np.expm1(var_la) / (mu * np.expm1(total) + 1.0 + extra)


def pcv_from_variances(var_null: Any, var_full: Any) -> Any:
    """Proportional change in variance ``(var_null - var_full) / var_null``, elementwise (paired draws)."""
    return (var_null - var_full) / var_null


def rope_probabilities(draws: Any, region: tuple[float, float], *, axis: Any = None) -> dict[str, Any]:
    """P(below), P(inside), P(above) the closed region ``[lo, hi]``, as shares of the draws.

    Parameters
    ----------
    draws : array_like
    region : (float, float)
        ``lo < hi``; checked by :func:`check_region`.
    axis : int or tuple, optional
        Axes of the draws (default: all).

    Returns
    -------
    dict
        ``p_below``, ``p_inside``, ``p_above`` (summing to 1).
    """
    lo, hi = check_region(region)
    d = np.asarray(draws, dtype=float)
    return {"p_below": (d < lo).mean(axis=axis), "p_inside": ((d >= lo) & (d <= hi)).mean(axis=axis),
            "p_above": (d > hi).mean(axis=axis)}


def check_region(region: Any) -> tuple[float, float]:
    """``(lo, hi)`` as floats, or a one-line error saying what is wrong and how to write it."""
    try:
        lo, hi = (float(v) for v in region)
    except (TypeError, ValueError):
        raise HierarchyError(f"a ROPE is two numbers (lo, hi), e.g. 0.95,1.05; got {region!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise HierarchyError(f"a ROPE needs finite lo < hi, e.g. 0.95,1.05; got {lo}, {hi}")
    return lo, hi


def parse_rope(text: str) -> tuple[float, float]:
    """Parse ``--rope 0.95,1.05`` into ``(0.95, 1.05)`` (for the command line)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2:
        raise HierarchyError(f"--rope takes two numbers separated by a comma, e.g. 0.95,1.05; got {text!r}")
    return check_region(parts)


# ---------------------------------------------------------------------------- the LA level of a fit


def _fit(fit: Any) -> Any:
    return as_fit(fit)


def stage_of(fit: Any, stage: str | None = None) -> Any:
    """The fit as a single-stage fit: ``stage`` of a stacked fit (default the first), else the fit."""
    f = as_fit(fit)
    if stage is not None and stage not in f.spec.stages:
        raise HierarchyError(f"the fit models {', '.join(f.spec.stages)}, not stage {stage!r}")
    return f.stage(stage)


def has_la_level(fit: Any) -> bool:
    """Whether the fit has LA random effects (an ``la_sd`` in its posterior)."""
    return "la_sd" in _fit(fit).posterior


def _cov(sd: xr.DataArray, corr: xr.DataArray | None) -> xr.DataArray:
    """``diag(sd) corr diag(sd)`` on dims ``coef, coef_`` (identity ``corr`` when None)."""
    coefs = sd["coef"].to_numpy()
    if corr is None:
        corr = xr.DataArray(np.eye(len(coefs)), dims=("coef", "coef_"), coords={"coef": coefs, "coef_": coefs})
    return sd * corr * sd.rename(coef="coef_")


def _as_coef(da: xr.DataArray, labels: list[str], coefs: list[str]) -> xr.DataArray:
    """Select ``labels`` of the stacked ``la_effect`` dims and relabel them as ``coef`` (``coef_``)."""
    out = da.sel(la_effect=labels).rename(la_effect="coef").assign_coords(coef=coefs)
    if "la_effect_" in out.dims:
        out = out.sel(la_effect_=labels).rename(la_effect_="coef_").assign_coords(coef_=coefs)
    return out


def la_covariance(fit: Any, *, stage: str | None = None) -> xr.DataArray | None:
    """Covariance of an LA's effects (intercept, gradient) about their LA-level mean, per draw.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
    stage : str, optional
        Stage of a stacked fit (default: the first).

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, coef, coef_`` on the log-rate scale (gradient per unit of ``w``);
        None when the fit has no LA level.
    """
    view = stage_of(fit, stage)
    post, spec = view.posterior, as_fit(view).spec
    if "la_sd" not in post:
        return None
    sd, corr = post["la_sd"], post.get("la_corr")
    if "la_effect" in sd.dims:  # stacked, one correlated block: this stage's effects
        coefs = list(spec.coefs)
        labels = [f"{spec.outcome}:{c}" for c in coefs]
        sd, corr = _as_coef(sd, labels, coefs), None if corr is None else _as_coef(corr, labels, coefs)
    cov = _cov(sd, corr)
    later = post["later_stage"].to_numpy().astype(str) if "later_stage" in post.coords else []
    if spec.outcome in later:  # anchored: e_js = m_js + loading_s * u_j + d_js (d independent)
        load = post["la_loading"].sel(later_stage=spec.outcome, drop=True)
        own = post["la_stage_sd"].sel(later_stage=spec.outcome, drop=True)
        cov = cov * load * load.rename(coef="coef_") + _cov(own, None)
    return cov.drop_vars([c for c in cov.coords if c not in ("chain", "draw", "coef", "coef_")])


def la_variance(fit: Any, *, w: Any = 0.0, stage: str | None = None) -> xr.DataArray | None:
    """Variance of an LA's log rate about its LA-level mean at centred deprivation ``w``.

    ``sigma^2(w) = Sigma_aa + 2 w Sigma_ab + w^2 Sigma_bb``; the intercept variance at ``w = 0``
    (under within/between centring, a neighbourhood at its LA's mean deprivation).

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
    w : float or xarray.DataArray
        Centred neighbourhood deprivation in the model's units (``deprivation.scale``: 1 = 10 points).
    stage : str, optional

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw`` (plus those of ``w``); None without an LA level.
    """
    cov = la_covariance(fit, stage=stage)
    if cov is None:
        return None
    a = cov.sel(coef="intercept", coef_="intercept", drop=True)
    if "gradient" not in cov["coef"]:
        return a + 0.0 * w
    ab = cov.sel(coef="intercept", coef_="gradient", drop=True)
    return a + 2.0 * w * ab + w**2 * cov.sel(coef="gradient", coef_="gradient", drop=True)


def _label(da: xr.DataArray, name: str, scale: str, key: str) -> xr.DataArray:
    da = da.rename(name)
    text = DEFINITIONS.get(key) or MAIHDA_DEFINITIONS[key]
    da.attrs = {"scale": scale, "description": text, "definition": text}
    return da


# ---------------------------------------------------------------------------- measures


def median_rate_ratio(fit: Any, *, w: float = 0.0, stage: str | None = None) -> xr.DataArray | None:
    """Median rate ratio between LAs, per draw, from the LA variance at ``w`` (default the intercept's).

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw``; scale "rate ratio"; None without an LA level.
    """
    var = la_variance(fit, w=w, stage=stage)
    if var is None:
        return None
    return _label(mrr_from_variance(var), "median_rate_ratio", "rate ratio", "median_rate_ratio")


def _mean_exposure(view: Any) -> float:
    """Mean exposure per fitted neighbourhood (strata rows summed), for the default VPC unit."""
    if not _has_public_exposure(view):
        raise HierarchyError("this fit does not carry a public exposure (children per neighbourhood): "
                             "give the VPC's unit size, exposure=... (e.g. 366 children)")
    cd = view.constant_data
    codes = [str(s).split("|", 1)[0] for s in cd["neighbourhood"].to_numpy()]
    per = pd.Series(cd["exposure"].to_numpy().astype(float), index=codes).groupby(level=0).sum()
    return float(np.round(per.mean()))


def _references(view: Any, spec: Any, des: dict[str, Any]) -> xr.DataArray:
    """Centred deprivation ``w`` of the default VPC references in a typical LA at mean LA deprivation:
    ``w = 0`` and the median neighbourhood deprivation of each national decile (coordinate ``deprivation``)."""
    ref = des["X_mean"] if spec.deprivation.centring == "within_between" else des["x_mean"]
    labels, x = ["w = 0"], [float(ref)]
    cd = view.constant_data if "constant_data" in view.groups() else {}
    if "deprivation" in cd and "neighbourhood" in cd:
        codes = np.array([str(s).split("|", 1)[0] for s in cd["neighbourhood"].to_numpy()])
        dep = cd["deprivation"].to_numpy().astype(float)
        dec = estimands.deciles_of(dep, codes)
        first = pd.Series(dep, index=codes)
        keep = ~first.index.duplicated()
        for k in sorted(set(dec.tolist())):
            labels.append(f"decile {k}")
            x.append(float(np.median(dep[keep & (dec == k)])))
    w = w_of(np.array(x), des["X_mean"], des["x_mean"], spec)
    return xr.DataArray(w, dims="reference", coords={"reference": labels, "deprivation": ("reference", x)})


def _check_rates(rates: Mapping[str, float]) -> xr.DataArray:
    if not isinstance(rates, Mapping) or not rates:
        raise HierarchyError(f"rates are a mapping of label to rate per 10,000, e.g. {{'England 2019': 553.7}}; "
                             f"got {rates!r}")
    vals = []
    for k, v in rates.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = np.nan
        if not (np.isfinite(v) and v > 0):
            raise HierarchyError(f"rates: {k!r} is {rates[k]!r}; give a rate per 10,000 children above 0")
        vals.append(v)
    return xr.DataArray(vals, dims="reference", coords={"reference": [str(k) for k in rates]})


def vpc(fit: Any, *, rates: Mapping[str, float] | None = None, exposure: float | None = None,
        stage: str | None = None) -> xr.DataArray | None:
    """Count-scale variance partition coefficient between LAs at reference rates, per draw.

    A neighbourhood of ``exposure`` children (default: the fitted neighbourhoods' mean) in a
    typical LA at mean LA deprivation, with the LA and within-LA (MSOA, Poisson-lognormal)
    variances and the NB dispersion (and zero inflation ``zi``: model rates are then the marginal
    expected rates, ``(1 - zi)`` times the NB mean's) of the fit; other group terms are held at zero and strata
    at the reference stratum (:func:`vpc_from_components`).

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
    rates : mapping of str to float, optional
        Stated reference rates per 10,000 children (marginal over LAs), e.g. the national rate;
        the LA variance is taken at ``w = 0``. Default: the model's own rates at ``w = 0`` and at
        the median deprivation of each national decile (the LA variance at each decile's ``w``).
    exposure : float, optional
        Children in the reference neighbourhood.
    stage : str, optional

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, reference``; coordinates ``reference_rate`` (per 10,000; the
        posterior mean for model rates) and ``exposure``; None without an LA level.
    """
    view = stage_of(fit, stage)
    post = view.posterior
    if "la_sd" not in post:
        return None
    spec, des = as_fit(view).spec, provenance(view)["design"]
    size = _mean_exposure(view) if exposure is None else float(exposure)
    if not (np.isfinite(size) and size > 0):
        raise HierarchyError(f"exposure must be a number of children above 0, got {exposure!r}")
    var_within: Any = 0.0
    for k in parameters.names(within_la_sd=True):
        if k in post:
            var_within = var_within + post[k] ** 2
    phi = post["dispersion"] if "dispersion" in post else np.inf
    zi = post["zi"] if "zi" in post else 0.0  # zero-inflated NB: its structural zeros
    if rates is None:
        w = _references(view, spec, des)
        var_la = la_variance(view, w=w)
        z0 = float(z_of(des["X_mean"], des["X_mean"], spec))
        rate = 1e4 * (1 - zi) * np.exp(model.log_rate(post, spec, w=w, z=z0) + (var_la + var_within) / 2)
        shown = rate.mean([d for d in SAMPLE_DIMS if d in rate.dims])
    else:
        rate = shown = _check_rates(rates)
        var_la = la_variance(view, w=0.0)
    out = vpc_from_components(var_la, rate * size / 1e4, dispersion=phi, var_within=var_within, zero_inflation=zi)
    out = out.assign_coords(reference_rate=("reference", shown.to_numpy()), exposure=size)
    return _label(out.transpose(*[d for d in SAMPLE_DIMS if d in out.dims], "reference"), "vpc",
                  "proportion of count variance between LAs", "vpc")


def la_gradient_spread(fit: Any, *, quantiles: tuple[float, float] = SPREAD_QUANTILES,
                       stage: str | None = None) -> xr.DataArray | None:
    """Percentiles over LAs of the LA gradient scores (per 10 points), per draw.

    From the fitted LAs' partially pooled gradients (:func:`hierarchy.results.estimands.la_gradients`):
    where LAs have few neighbourhoods the shrinkage narrows the spread. Percentiles interpolate
    linearly between LAs (numpy's default).

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, reference`` (``"5th percentile"``, ``"95th percentile"``); None
        without LA-varying gradients.
    """
    view = stage_of(fit, stage)
    if "la_coef" not in view.posterior or "gradient" not in view.posterior["coef"]:
        return None
    g = estimands.la_gradients(view)
    q = g.drop_vars([c for c in g.coords if c not in g.dims]).quantile(list(quantiles), dim="la")
    names = [f"{round(100 * p):g}th percentile" for p in quantiles]
    q = q.rename(quantile="reference").assign_coords(reference=names)
    return _label(q.transpose(..., "reference"), "la_gradient_spread", estimands.PER_10, "la_gradient_spread")


def _flat(da: xr.DataArray) -> xr.DataArray:
    """Draws of ``da`` on one dim ``sample`` numbered 0..n-1 (chain-major, as stored)."""
    st = da.stack(sample=("chain", "draw")).transpose("sample", ...)
    return xr.DataArray(st.to_numpy(), dims=st.dims, coords={d: st[d] for d in st.dims if d != "sample"})


def pcv(null: Any, full: Any, *, n_draws: int | None = None, stage: str | None = None) -> xr.DataArray | None:
    """Proportional change in LA variance from a null to a fuller nested fit, per paired draw.

    One value per LA coefficient both fits vary by LA (``intercept``: variance at ``w = 0``;
    ``gradient``: the gradient variance). The two posteriors are independent (separate fits),
    so pairing draw i of one with draw i of the other samples their joint (product) posterior;
    the chains are independent of each other, so index pairing needs no shuffling.

    Parameters
    ----------
    null, full : str, os.PathLike or arviz.InferenceData
        Fits of the same data and outcome; ``full`` adds terms (e.g. LA deprivation) to ``null``.
    n_draws : int, optional
        Thin both to this many evenly spaced draws; needed when their numbers of draws differ.
    stage : str, optional

    Returns
    -------
    xarray.DataArray or None
        Dims ``sample, reference`` (the coefficient); None when either fit has no LA level.
    """
    a, b = stage_of(null, stage), stage_of(full, stage)
    _check_pair(a, b)
    ca, cb = la_covariance(a), la_covariance(b)
    if ca is None or cb is None:
        return None
    coefs = [c for c in ca["coef"].to_numpy() if c in cb["coef"].to_numpy()]
    va, vb = (_flat(xr.concat([c.sel(coef=k, coef_=k, drop=True) for k in coefs], "reference"))
              for c in (ca, cb))
    va, vb = _paired(va, vb, n_draws)
    out = pcv_from_variances(va, vb).assign_coords(reference=coefs)
    return _label(out, "pcv", "proportion of LA variance", "pcv")


def _check_pair(a: Any, b: Any) -> None:
    """Refuse a PCV between fits of different data or outcomes (one line naming both).

    A fuller model reads more columns of the same table (``la_inequality``, main-effect columns), so
    its data hash differs: the fits pair when their rows, outcome and exposure hashes
    (``provenance["rows_hash"]``) agree, as in model comparison."""
    pa, pb = provenance(a), provenance(b)
    ra, rb = pa.get("rows_hash"), pb.get("rows_hash")
    same_rows = isinstance(ra, dict) and isinstance(rb, dict) and ra == rb
    if pa.get("data_hash") != pb.get("data_hash") and not same_rows:
        raise HierarchyError(f"the PCV compares two fits of the same data; the null fit's data hash "
                             f"{pa.get('data_hash')} differs from the full fit's {pb.get('data_hash')}: "
                             "fit both models to the same table")
    if as_fit(a).spec.outcome != as_fit(b).spec.outcome:
        raise HierarchyError(f"the PCV compares fits of one outcome; the null fit models "
                             f"{as_fit(a).spec.outcome!r}, the full fit {as_fit(b).spec.outcome!r}")


def _paired(va: xr.DataArray, vb: xr.DataArray, n_draws: int | None) -> tuple[xr.DataArray, xr.DataArray]:
    """Evenly spaced draws of two independent posteriors (dim ``sample``), the same number of each."""
    n_a, n_b = va.sizes["sample"], vb.sizes["sample"]
    if n_draws is None and n_a != n_b:
        raise HierarchyError(f"the null fit has {n_a} draws and the full fit {n_b}: pass n_draws (at most "
                             f"{min(n_a, n_b)}) to pair evenly spaced draws of each")
    n = n_a if n_draws is None else int(n_draws)
    if not 1 < n <= min(n_a, n_b):
        raise HierarchyError(f"n_draws must be between 2 and {min(n_a, n_b)} (the smaller fit's draws), got {n}")
    va, vb = (v.isel(sample=np.linspace(0, v.sizes["sample"] - 1, n).round().astype(int)) for v in (va, vb))
    return va, vb


# ---------------------------------------------------------------------------- contrasts and ROPE


def _bare(da: xr.DataArray) -> xr.DataArray:
    """``da`` without its non-dimension coordinates (scalar ``stage``, ``la_deprivation``, ...)."""
    return da.drop_vars([c for c in da.coords if c not in da.dims])


def _contrasts_of_stage(view: Any, prefix: str) -> list[xr.DataArray]:
    """Gradient ratios of one single-stage fit, each on a one-label ``reference`` dim."""
    post, spec = view.posterior, as_fit(view).spec
    out = []
    if "stratum_gradient_offset" in post:
        sub = _bare(estimands.subgroup_gradients(view))
        ref = str(sub["stratum"].to_numpy()[0])
        for s in sub["stratum"].to_numpy()[1:]:
            ratio = sub.sel(stratum=s, drop=True) / sub.isel(stratum=0, drop=True)
            out.append(ratio.expand_dims(reference=[f"{prefix}{s} / {ref} gradient"]))
    mod = estimands.moderated_gradients(view)
    if mod is not None:
        mod = _bare(mod)
        des = provenance(view)["design"]
        z0 = float(z_of(des["X_mean"], des["X_mean"], spec))
        base = np.exp(model.typical_gradient(post, spec, z=z0) * estimands.TEN_POINTS / spec.deprivation.scale)
        groups = tuple(f"{g}=" for g, slope in spec.groups if slope)
        labels = [str(v) for v in mod["subgroup"].to_numpy()]
        for lab in labels:
            if lab.startswith(groups):
                ratio, name = mod.sel(subgroup=lab, drop=True) / _bare(base), f"{lab} / typical gradient"
            elif lab.endswith("=1") and f"{lab[:-1]}0" in labels:
                ratio = mod.sel(subgroup=lab, drop=True) / mod.sel(subgroup=f"{lab[:-1]}0", drop=True)
                name = f"{lab} / {lab[:-1]}0 gradient"
            else:
                continue
            out.append(ratio.expand_dims(reference=[prefix + name]))
    return out


def gradient_contrasts(fit: Any) -> xr.DataArray | None:
    """Gradient ratios to state equivalence for, per draw (typical LA at mean LA deprivation).

    Each stratum's gradient over the reference stratum's (``male / female``), each ``w:col``
    moderator's gradient at ``col=1`` over ``col=0``, each level of a group with varying gradients
    over the typical gradient, and (stacked stages) each stage's gradient over the stage below.

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, reference`` (the contrast); scale "ratio of gradient scores"; None when
        the fit has no such contrast.
    """
    idata = _fit(fit)
    spec = as_fit(idata).spec
    parts = []
    for stage in spec.stages:
        parts += _contrasts_of_stage(stage_of(idata, stage), f"{stage}: " if spec.stacked else "")
    esc = estimands.escalation(idata) if spec.stacked else None
    if esc is not None:
        esc = _bare(esc)
        parts.append(esc.rename(step="reference").assign_coords(
            reference=[f"{s} gradient" for s in esc["step"].to_numpy()]))
    if not parts:
        return None
    out = xr.concat([p.transpose("chain", "draw", "reference") for p in parts], "reference")
    out = out.rename("gradient_ratio")
    out.attrs = {"scale": "ratio of gradient scores", "description": "gradient ratio, typical LA"}
    return out


def _table(da: xr.DataArray, *, prob: float, extra: Mapping[str, xr.DataArray] | None = None) -> pd.DataFrame:
    """Tidy rows of draws ``da`` (sample dims plus at most ``reference``): mean, sd, interval, ``extra``."""
    ds = estimands.interval(da, prob=prob)
    for k, v in (extra or {}).items():
        ds[k] = v
    keep = {"reference_rate", "exposure"}
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c not in keep])
    if "reference" not in ds.dims:
        ds = ds.expand_dims(reference=[""])
    frame = ds.to_dataframe().reset_index()
    frame.insert(0, "estimand", str(da.name))
    frame["scale"] = da.attrs.get("scale", "")
    frame["prob"] = prob
    frame["definition"] = da.attrs.get("definition", da.attrs.get("description", ""))
    return frame


def rope_table(draws: Any, region: tuple[float, float], *, prob: float = 0.9,
               name: str = "contrast") -> pd.DataFrame:
    """Probability inside a region of practical equivalence, with mean and interval, from draws.

    Parameters
    ----------
    draws : xarray.DataArray or array_like
        Draws (dims ``chain, draw`` or ``sample``, plus at most ``reference``), e.g.
        :func:`gradient_contrasts`; an array is taken as one quantity's draws.
    region : (float, float)
        The closed region ``[lo, hi]`` on the draws' scale, e.g. ``(0.95, 1.05)`` for a ratio.
    prob : float
        Probability of the equal-tailed interval.
    name : str
        Estimand name for plain arrays.

    Returns
    -------
    pandas.DataFrame
        One row per quantity: ``estimand``, ``reference``, ``mean``, ``sd``, ``lower``, ``upper``,
        ``prob``, ``rope_low``, ``rope_high``, ``p_below``, ``p_inside``, ``p_above``, ``definition``.
    """
    lo, hi = check_region(region)
    if isinstance(draws, xr.DataArray):
        da = draws.copy()
    else:
        da = xr.DataArray(np.asarray(draws, dtype=float).ravel(), dims="sample", name=name)
    dims = [d for d in SAMPLE_DIMS if d in da.dims]
    if not dims:
        raise HierarchyError(f"ROPE draws need a chain/draw or sample dim; got dims {da.dims}")
    da.attrs = {**da.attrs, "definition": f"{DEFINITIONS['rope']} Region: [{lo:g}, {hi:g}]."}
    p = rope_probabilities(da.transpose(*dims, ...).to_numpy(), (lo, hi), axis=tuple(range(len(dims))))
    rest = [d for d in da.dims if d not in dims]
    extra = {k: xr.DataArray(v, dims=rest, coords={d: da[d] for d in rest if d in da.coords})
             for k, v in p.items()}
    frame = _table(da, prob=prob, extra=extra)
    frame["rope_low"], frame["rope_high"] = lo, hi
    return frame


# ---------------------------------------------------------------------------- the table


def _has_public_exposure(view: Any) -> bool:
    cd = view.constant_data if "constant_data" in view.groups() else {}
    return "exposure" in cd and exposure_is_public(view)


def _stage_rows(view: Any, *, prob: float, rates: Mapping[str, float] | None, exposure: float | None,
                notes: list[str]) -> list[pd.DataFrame]:
    """MRR, VPC and LA gradient spread rows of one single-stage fit."""
    if not has_la_level(view):
        notes.append(NO_LA_LEVEL)
        return []
    frames = [_table(median_rate_ratio(view).expand_dims(reference=["w = 0"]), prob=prob)]
    if exposure is None and not _has_public_exposure(view):
        notes.append("VPC left out: the fit's exposure is not public children counts; pass exposure=")
    else:
        frames.append(_table(vpc(view, rates=rates, exposure=exposure), prob=prob))
    spread = la_gradient_spread(view)
    if spread is not None:
        frames.append(_table(spread, prob=prob))
    return frames


def summary_rows(fit: Any, *, prob: float = 0.9, rope: tuple[float, float] | None = None, null: Any = None,
                 rates: Mapping[str, float] | None = None, exposure: float | None = None,
                 n_draws: int | None = None) -> pd.DataFrame:
    """Between-LA heterogeneity (MRR, VPC, LA gradient spread, PCV) and ROPE rows of a fit, tidy.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit; stacked stages give rows per stage.
    prob : float
        Probability of the equal-tailed intervals.
    rope : (float, float), optional
        Region of practical equivalence for the gradient ratios (:func:`gradient_contrasts`).
    null : str, os.PathLike or arviz.InferenceData, optional
        A nested simpler fit of the same data: adds the PCV from ``null`` to ``fit``.
    rates, exposure
        VPC references (:func:`vpc`).
    n_draws : int, optional
        PCV draw pairing (:func:`pcv`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; empty (with the reason in ``attrs["notes"]``) for a fit without an
        LA level or contrasts.
    """
    region = None if rope is None else check_region(rope)
    idata = _fit(fit)
    spec = as_fit(idata).spec
    frames, notes = [], []
    for stage in spec.stages:
        view = stage_of(idata, stage)
        rows = _stage_rows(view, prob=prob, rates=rates, exposure=exposure, notes=notes)
        if null is not None and has_la_level(view):
            change = pcv(null, idata, n_draws=n_draws, stage=stage)
            if change is not None:
                rows.append(_table(change, prob=prob))
        frames += [r.assign(stage=stage if spec.stacked else "") for r in rows]
    if region is not None:
        contrasts = gradient_contrasts(idata)
        if contrasts is None:
            notes.append("no gradient ratios in this fit for the ROPE (strata, w:col terms, groups with "
                         "gradients or stacked stages)")
        else:
            frames.append(rope_table(contrasts, region, prob=prob).assign(stage=""))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    out = out.reindex(columns=list(COLUMNS))
    out.attrs["notes"] = list(dict.fromkeys(notes))
    return out


# ---------------------------------------------------------------------------- intersectional strata (MAIHDA)
#
# Issue 32, item 2. MAIHDA (Evans, Leckie, Subramanian, Bell & Merlo 2024, SSM Popul Health 26:101664):
# strata = combinations of ethnicity x sex x age band, a partially pooled group
# ``(1 + w | ethnicity:sex:age_band)`` (models/maihda_null_nb.toml), fitted again with the additive main
# effects as fixed terms (models/maihda_main_nb.toml). A stratum's effect ``u_k = {g}_raw * {g}_sd``
# (intercept: log rate; gradient: log gradient per unit of w) is, in the main-effects fit, its
# intersectional interaction beyond the main effects.

MAIHDA_DEFINITIONS = {
    "stratum_vpc_log": (
        "Stratum VPC (log scale): the share of the modelled variance of log rates (strata, LAs, MSOAs) that "
        "lies between the intersectional strata, for a neighbourhood at its LA's mean deprivation."),
    "stratum_vpc": (
        "Stratum VPC (count scale): the share of the variation in a neighbourhood-stratum row's count that "
        "lies between strata, for a row of the stated children at the stated rate (Austin et al. 2018)."),
    "stratum_pcv": (
        "PCV from the null to the main-effects model: the share of the between-strata variance that the "
        "additive main effects of ethnicity, sex and age band explain; the rest is intersectional "
        "interaction (Evans et al. 2024)."),
    "stratum_interaction": (
        "Stratum interaction: a stratum's effect in the main-effects model, its rate (or gradient) over "
        "what its ethnicity, sex and age band predict added up; P(direction) is the posterior "
        "probability of its sign."),
}


_IN_MAIHDA = ("STRATUM_COEFS", "interaction_table", "maihda_rows", "stratum_effects", "stratum_group",
              "stratum_pcv", "stratum_scores", "stratum_variance", "stratum_vpc", "stratum_vpc_log")


def __getattr__(name: str) -> Any:
    """The MAIHDA measures moved to :mod:`hierarchy.results.maihda` (which builds on this module) stay
    importable from here: ``heterogeneity.maihda_rows`` is ``maihda.maihda_rows``."""
    if name in _IN_MAIHDA:
        from hierarchy.results import maihda

        return getattr(maihda, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Social-gradient estimands from a saved fit (DESIGN section 3).

Every estimand is computed from posterior *predictions* (:func:`hierarchy.likelihood.model.log_rate`
differences, or draws of counts), never from coefficient algebra, so the same code serves any
centring and LA-deprivation transform. Functions return xarray DataArrays of draws (dims
``chain, draw`` or ``sample``) whose ``attrs`` carry ``scale`` and ``description``;
:func:`summarise` turns one into a tidy table with mean, sd and an equal-tailed interval.

Scales: a *gradient score* is the rate multiplier for a 10-percentage-point rise in neighbourhood
income deprivation ("per 10 points"); :func:`per_sd` converts it to a rise of one standard
deviation of neighbourhood deprivation ("per SD"). Rates are per 10,000 children.

The typical LA has its LA effects at their mean given LA deprivation (and LA covariates at
their mean). "10 points less / more" means LA deprivation X_mean -/+ 0.1, with X_mean the
unweighted mean over LAs of LA deprivation stored in the fit.

Curves say where they extrapolate: :func:`gradient_curve` (against LA deprivation),
:func:`typical_rates` and :func:`inverse_intervention` (against neighbourhood deprivation) carry a
boolean coordinate ``extrapolated`` (a column of their :func:`summarise` table), True where the
curve lies beyond the data: outside the fitted LAs' deprivation range, or outside the
neighbourhood deprivation seen in LAs near that LA level (:func:`x_range_near`).

The inputs, levels and summaries every estimand shares are in :mod:`hierarchy.results.estimand_base`,
the posterior predictive checks in :mod:`hierarchy.results.ppc`; both are importable from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import w_of, z_of
from hierarchy.likelihood import model
from hierarchy.likelihood.predictor import predictor_draws
from hierarchy.results.estimand_base import (  # noqa: F401  (moved there; importable from here as before)
    LA_LEVELS,
    PER_10,
    PER_10K,
    TEN_POINTS,
    TRUTH_KEYS,
    _label,
    _outside,
    _parts,
    _step,
    as_idata,
    interval,
    la_deprivation_range,
    la_levels,
    stage_view,
    summarise,
    x_grid,
    x_range_near,
)
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import (  # noqa: F401  (exposure_is_public: re-exported)
    exposure_is_public,
    provenance,
)
from hierarchy.results.ppc import (  # noqa: F401  (moved there; importable from here as before)
    COUNT_EDGES,
    _bin_label,
    _codes,
    _draw_arrays,
    count_distribution,
    decile_table,
    deciles_of,
    fit_rows,
    has_row_data,
    la_decile_table,
    neighbourhood_deciles,
    observed_counts,
    posterior_predictive,
    with_private_denominator,
)

SHARE_DEFINITION = (
    "Share of latent (log-scale) variance between LAs: the variance over LAs of each LA's mean "
    "log rate (the linear predictor without the exposure: LA intercepts with LA deprivation and "
    "covariates, gradient, neighbourhood terms and groups, averaged over the LA's neighbourhoods), "
    "divided by that plus the within-LA variance of the same predictor (for the default model the "
    "gradient term b_j * w_i; plus the MSOA variance and the BYM2 variance spatial_sd^2, each if "
    "modelled, counted as within-LA) plus the observation-level variance "
    "log(1 + 1/mu + 1/phi) (Nakagawa et al. 2017; mu = mean expected count per neighbourhood, "
    "phi = NB dispersion; Poisson drops 1/phi; Poisson-lognormal adds obs_sd^2; the zero-inflated NB's "
    "is log(1 + (1/mu + 1/phi + zi) / (1 - zi)), its variance over its squared mean). "
    "Neighbourhoods are weighted equally.")


# ---------------------------------------------------------------------------- estimands


def headline_gradients(idata) -> xr.DataArray:
    """Gradient score of a typical LA at mean LA deprivation and 10 points less / more.

    The rate multiplier per 10 points of neighbourhood deprivation: the ratio of predicted rates
    10 points apart within the typical LA at each LA deprivation level.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, la_level``; coordinate ``la_deprivation``; scale "per 10 points".
    """
    post, spec, _ = _parts(idata)
    z = la_levels(idata)
    d = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    return _label(np.exp(d), "gradient_score", PER_10,
                  "rate multiplier per 10 points of neighbourhood income deprivation, typical LA")


def la_gradients(idata) -> xr.DataArray | None:
    """LA-specific gradient scores exp(b_j) (per 10 points); None without random gradients.

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, la``; coordinate ``la_deprivation``.
    """
    post, spec, _ = _parts(idata)
    if "gradient" not in spec.coefs:
        return None
    b = post["la_coef"].sel(coef="gradient", drop=True)
    da = np.exp(b * _step(spec)).assign_coords(
        la_deprivation=("la", idata.constant_data["la_deprivation"].sel(la=b["la"]).to_numpy()))
    return _label(da, "la_gradient_score", PER_10,
                  "rate multiplier per 10 points of neighbourhood income deprivation, each LA")


def gradient_curve(idata, X: np.ndarray | None = None, *, n: int = 41) -> xr.DataArray | None:
    """Typical-LA gradient score (per 10 points) against LA deprivation.

    The headline gradient (:func:`headline_gradients`) at every LA deprivation ``X``.

    Parameters
    ----------
    idata : arviz.InferenceData
    X : numpy.ndarray, optional
        LA deprivation grid (proportions). Default: ``n`` points from the least to the most deprived
        fitted LA, widened to the headline levels X_mean -/+ 10 points when those lie beyond them
        (the least and most deprived LAs' own values among them).
    n : int
        Points of the default grid.

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, la_deprivation``; coordinate ``extrapolated``: True outside the fitted
        LAs' deprivation range. None for models without an LA deprivation term (one typical LA).
    """
    post, spec, des = _parts(idata)
    if "la_deprivation" not in post:
        return None
    seen = la_deprivation_range(idata)
    if X is None:
        if seen is None:
            raise HierarchyError("the fit has no constant_data: give the LA deprivation grid X")
        levels = des["X_mean"] + np.array(list(LA_LEVELS.values()))
        X = np.linspace(max(min(seen[0], levels.min()), 1e-3), max(seen[1], levels.max()), n)
        X = np.unique(np.r_[X, seen[0], seen[1]])  # the curve's solid part ends exactly at the data's range
    X = np.asarray(X, dtype=float)
    if spec.la_deprivation.transform == "log" and (X <= 0).any():
        raise HierarchyError("LA deprivation must be above 0 on a log scale; the grid X has values <= 0")
    z = xr.DataArray(z_of(X, des["X_mean"], spec), dims="la_deprivation", coords={"la_deprivation": X})
    d = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    out = np.exp(d)
    if seen is not None:
        out = out.assign_coords(extrapolated=("la_deprivation", _outside(X, *seen)))
    return _label(out, "gradient_curve", PER_10, "typical-LA gradient score by LA deprivation")


def _w_grid(x: np.ndarray, X: np.ndarray, x_mean: float, spec) -> xr.DataArray:
    return xr.DataArray(w_of(x[None, :], X[:, None], x_mean, spec), dims=("la_level", "x"))


def typical_rates(idata, x: np.ndarray | None = None) -> xr.DataArray:
    """Predicted rate per 10,000 children in a typical LA at each LA level, over a grid of x.

    Parameters
    ----------
    idata : arviz.InferenceData
    x : numpy.ndarray, optional
        Neighbourhood deprivation (proportion); default :func:`x_grid`.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, la_level, x``; coordinate ``extrapolated`` (la_level, x): True where x is
        outside the neighbourhood deprivation seen in LAs near that level (:func:`x_range_near`).
    """
    post, spec, des = _parts(idata)
    x = x_grid(idata) if x is None else np.asarray(x, dtype=float)
    z = la_levels(idata)
    w = _w_grid(x, z["la_deprivation"].to_numpy(), des["x_mean"], spec).assign_coords(
        la_level=z["la_level"], x=x)
    rate = 1e4 * np.exp(model.log_rate(post, spec, w=w, z=z))
    ranges = x_range_near(idata, z["la_deprivation"].to_numpy())
    if ranges is not None:
        flags = np.stack([_outside(x, lo, hi) for lo, hi in ranges])
        rate = rate.assign_coords(extrapolated=(("la_level", "x"), flags))
    return _label(rate, "rate", PER_10K, "predicted rate, typical LA, by neighbourhood deprivation x")


def inverse_intervention(idata, x: np.ndarray | None = None) -> xr.DataArray:
    """Rate ratio between a typical LA 10 points less deprived and one 10 points more deprived.

    Both LAs are compared for a neighbourhood of the same absolute deprivation ``x``; under
    within/between centring the neighbourhood's ``w`` differs between them (:func:`w_of`).
    Values above 1 mean the less deprived LA intervenes more (the inverse intervention law).

    Parameters
    ----------
    idata : arviz.InferenceData
    x : numpy.ndarray, optional
        Neighbourhood deprivation grid; default :func:`x_grid`.

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw, x``; coordinate ``extrapolated`` (x): True where x is outside the
        neighbourhood deprivation seen in LAs near either of the two levels (:func:`x_range_near`).
    """
    post, spec, des = _parts(idata)
    x = x_grid(idata) if x is None else np.asarray(x, dtype=float)
    X = des["X_mean"] + np.array([-TEN_POINTS, TEN_POINTS])
    if spec.la_deprivation.transform == "log" and X[0] <= 0:
        raise HierarchyError(f"mean LA deprivation {des['X_mean']:.3f} is too low to compare LAs "
                             "10 points either side on a log scale")
    z = z_of(X, des["X_mean"], spec)
    w = w_of(x[None, :], X[:, None], des["x_mean"], spec)
    less, more = (model.log_rate(post, spec, w=xr.DataArray(w[k], dims="x", coords={"x": x}),
                                 z=float(z[k])) for k in (0, 1))
    ratio = np.exp(less - more)
    ranges = x_range_near(idata, X)
    if ranges is not None:  # the contrast needs both LAs: beyond either one's range it extrapolates
        ratio = ratio.assign_coords(extrapolated=("x", _outside(x, *ranges[0]) | _outside(x, *ranges[1])))
    return _label(ratio, "inverse_intervention_ratio",
                  "rate ratio (LA 10 points less / 10 points more deprived)",
                  "predicted rate ratio for a neighbourhood of the same deprivation x")


def deprivation_sd(idata) -> float:
    """Standard deviation of neighbourhood deprivation over neighbourhoods (proportion)."""
    x = pd.Series(idata.constant_data["deprivation"].to_numpy(), index=_codes(idata))
    return float(x[~x.index.duplicated()].std(ddof=1))


def per_sd(gradient: xr.DataArray, sd: float) -> xr.DataArray:
    """Convert gradient scores per 10 points to per ``sd`` of neighbourhood deprivation.

    Parameters
    ----------
    gradient : xarray.DataArray
        Gradient scores per 10 points.
    sd : float
        Standard deviation of neighbourhood deprivation (proportion), e.g. :func:`deprivation_sd`.

    Returns
    -------
    xarray.DataArray
        ``gradient ** (sd / 0.1)``, labelled "per SD (s = ... points)".
    """
    if gradient.attrs.get("scale") != PER_10:
        raise HierarchyError(f"per_sd converts gradients per 10 points, got {gradient.attrs}")
    out = gradient ** (sd / TEN_POINTS)
    return _label(out, str(gradient.name), f"per SD (1 SD = {100 * sd:.1f} points)",
                  str(gradient.attrs.get("description", "")).replace("per 10 points", "per SD"))


def subgroup_gradients(fit: Any) -> xr.DataArray | None:
    """Gradient scores of a typical LA at mean LA deprivation by stage and by stratum.

    Computed on the full fit (all stages): the stage's gradient plus each stratum's gradient
    offset (0 for the reference stratum). Dims ``chain, draw`` plus ``stage`` (stacked fits) and
    ``stratum`` (stratified fits, every level); None for fits with neither.
    """
    idata = as_fit(fit)
    spec = idata.spec
    if not (spec.stacked or spec.strata):
        return None
    post, des = idata.posterior, provenance(idata)["design"]
    z = float(z_of(des["X_mean"], des["X_mean"], spec))
    log_g = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    if "stratum_gradient_offset" in post:
        names = [str(n) for n in idata.constant_data["stratum"].to_numpy()]
        ref = [n for n in dict.fromkeys(names) if n not in post["stratum"].to_numpy()][0]
        off = post["stratum_gradient_offset"] * _step(spec)
        zero = xr.zeros_like(off.isel(stratum=0)).expand_dims(stratum=[ref])
        log_g = log_g + xr.concat([zero, off], "stratum")
    return _label(np.exp(log_g), "subgroup_gradient_score", PER_10,
                  "rate multiplier per 10 points, typical LA at mean LA deprivation, by stage/stratum")


def moderated_gradients(fit: Any) -> xr.DataArray | None:
    """Gradient scores of a typical LA at mean LA deprivation by a formula's gradient moderators.

    For each neighbourhood-level term ``w:col`` (one numeric column, e.g. ``w:rural``): the gradient
    with ``col`` at 0 and at 1 (the other neighbourhood terms held at 0); for each group with varying
    gradients (``(1 + w | ethnicity)``): the gradient of each level. Dim ``subgroup`` (``rural=1``,
    ``ethnicity=White``); None when the formula has neither. Contrasts: :func:`moderator_contrasts`.
    """
    idata = as_fit(fit)
    spec = idata.spec
    post, des = idata.posterior, provenance(idata)["design"]
    z = float(z_of(des["X_mean"], des["X_mean"], spec))
    base = model.log_rate(post, spec, w=_step(spec), z=z) - model.log_rate(post, spec, w=0.0, z=z)
    parts = []
    for term in spec.row_terms:
        cols = [c for c in term.split(":") if c != "w"]
        if "w" in term.split(":") and len(cols) == 1 and cols[0] != "z":
            slope = post["row_coef"].sel(row_term=term, drop=True) * _step(spec)
            parts += [base.expand_dims(subgroup=[f"{cols[0]}=0"]),
                      (base + slope).expand_dims(subgroup=[f"{cols[0]}=1"])]
    for g, with_slope in spec.groups:
        if with_slope:
            dev = (post[f"{g}_raw"].sel({f"{g}_coef": "gradient"}) *
                   post[f"{g}_sd"].sel({f"{g}_coef": "gradient"})) * _step(spec)
            dev = dev.drop_vars(f"{g}_coef", errors="ignore")
            parts.append((base + dev).rename({g: "subgroup"}).assign_coords(
                subgroup=[f"{g}={v}" for v in post[g].to_numpy()]))
    if not parts:
        return None
    return _label(np.exp(xr.concat(parts, "subgroup")), "moderated_gradient_score", PER_10,
                  "rate multiplier per 10 points, typical LA at mean LA deprivation, by moderator "
                  "(other neighbourhood terms held at 0)")


def contrast_label(column: str, *, binary: bool | None = None) -> str:
    """How the contrast of a ``w:column`` term is worded.

    A 0/1 column compares its two values (``rural=1 vs rural=0``); a numeric column is a linear
    trend, worded per unit: ``per year`` for ``year``, ``per 1 unit of age`` otherwise.
    ``binary=None`` (the values are unknown): ``year`` is a trend, any other column 0/1.
    """
    if binary is None:
        binary = column.lower() != "year"
    if binary:
        return f"{column}=1 vs {column}=0"
    return "per year" if column.lower() == "year" else f"per 1 unit of {column}"


def _binary_columns(idata) -> dict[str, bool]:
    """Whether each row term's values are all 0 or 1, where the fit holds them (``row_X``)."""
    cd = idata.constant_data if "constant_data" in idata.groups() else None
    if cd is None or "row_X" not in cd:
        return {}
    return {str(t): bool(np.isin(cd["row_X"].sel(row_term=t).to_numpy(), (0, 1)).all())
            for t in cd["row_term"].to_numpy()}


def moderator_contrasts(fit: Any, *, prob: float = 0.9) -> pd.DataFrame | None:
    """Ratio of gradient scores for one unit more of each ``w:col`` term, with P(ratio > 1).

    One row per term: ``contrast`` worded by :func:`contrast_label` (``rural=1 vs rural=0``, or
    ``per year`` for a numeric year), the posterior mean, the equal-tailed ``prob`` interval
    (``lower``, ``upper``, ``prob``) and ``p_greater_than_1``.
    """
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be between 0 and 1, got {prob}")
    g = moderated_gradients(fit)
    if g is None:
        return None
    binary = _binary_columns(as_fit(fit))
    tail = (1 - prob) / 2
    rows = []
    for label in [str(s) for s in g["subgroup"].to_numpy() if str(s).endswith("=1")]:
        col = label[:-2]
        r = (g.sel(subgroup=label) / g.sel(subgroup=f"{col}=0")).to_numpy().ravel()
        rows.append({"contrast": contrast_label(col, binary=binary.get(f"w:{col}")), "mean": r.mean(),
                     "lower": np.quantile(r, tail), "upper": np.quantile(r, 1 - tail), "prob": prob,
                     "p_greater_than_1": (r > 1).mean()})
    return pd.DataFrame(rows)


def escalation(fit: Any) -> xr.DataArray | None:
    """Gradient escalation: ratio of each stage's gradient score to the previous stage's.

    Dims ``chain, draw, step`` (e.g. ``s47 / referral``); values above 1 mean the gradient is
    steeper at the higher threshold. None unless stages are stacked.
    """
    g = subgroup_gradients(fit)
    if g is None or "stage" not in g.dims:
        return None
    if "stratum" in g.dims:
        g = g.isel(stratum=0, drop=True)
    stages = [str(v) for v in g["stage"].to_numpy()]
    parts = [(g.sel(stage=b, drop=True) / g.sel(stage=a, drop=True)).expand_dims(step=[f"{b} / {a}"])
             for a, b in zip(stages, stages[1:], strict=False)]
    return _label(xr.concat(parts, "step"), "gradient_escalation", "ratio of gradient scores",
                  "gradient score at the higher stage divided by the stage below, typical LA")


def between_la_share(idata, *, chunk: int = 100) -> xr.DataArray:
    """Share of latent (log-scale) variance between LAs (see :data:`SHARE_DEFINITION`).

    Returns
    -------
    xarray.DataArray
        Dims ``chain, draw``; a proportion.
    """
    post, spec, _ = _parts(idata)
    rows = fit_rows(idata)
    la_idx, expo = rows["la_index"], np.exp(rows["log_exposure"])
    rows = rows | {"log_exposure": np.zeros(len(la_idx))}
    n_la = post.sizes["la"]
    shape = (post.sizes["chain"], post.sizes["draw"])
    draws = _draw_arrays(post.stack(sample=("chain", "draw")), spec)
    n_j = np.bincount(la_idx, minlength=n_la).astype(float)
    share = n_j / n_j.sum()
    v_between, v_within, mu = [], [], []
    for s in range(0, int(np.prod(shape)), chunk):  # the one predictor, chunk draws at a time
        eta = predictor_draws(rows, {k: v[s:s + chunk] for k, v in draws.items()}, batch=chunk)
        m_j = np.stack([np.bincount(la_idx, e, n_la) for e in eta]) / np.maximum(n_j, 1)
        s2_j = np.stack([np.bincount(la_idx, e**2, n_la) for e in eta]) / np.maximum(n_j, 1) - m_j**2
        v_between.append((share * m_j**2).sum(-1) - (share * m_j).sum(-1) ** 2)
        v_within.append((share * s2_j).sum(-1))
        mu.append((expo * np.exp(eta)).mean(-1))
    v_between, mu = np.concatenate(v_between), np.concatenate(mu)
    v_within = (np.concatenate(v_within) + _flat(post, "msoa_sd", shape) ** 2
                + _flat(post, "spatial_sd", shape) ** 2)  # per-node effects are not stored
    zi = _flat(post, "zi", shape, 0.0)  # zero-inflated NB: log(1 + variance / mean^2) of its counts
    v_obs = np.log1p((1 / mu + (1 / _flat(post, "dispersion", shape, np.inf)) + zi) / (1 - zi))
    v_obs = v_obs + _flat(post, "obs_sd", shape) ** 2
    out = v_between / (v_between + v_within + v_obs)
    da = xr.DataArray(out.reshape(shape), dims=("chain", "draw"),
                      coords={"chain": post["chain"], "draw": post["draw"]})
    return _label(da, "between_la_share", "proportion of latent log-scale variance",
                  SHARE_DEFINITION)


SPATIAL_MEASURES = {
    "structured_share": ("proportion of the BYM2 effects' variance",
                         "structured (ICAR) share of the neighbourhood effects' variance: spatial_mix"),
    "sd": ("SD on the log-rate scale", "SD of the BYM2 neighbourhood effects: spatial_sd"),
    "neighbourhood_share": ("proportion of neighbourhood-level log-rate variance",
                            "share of the neighbourhood-level log-rate variance that is neighbourhood (BYM2) "
                            "rather than LA: spatial_sd^2 / (spatial_sd^2 + variance of the LA intercepts)"),
}
"""The measures of :func:`spatial_share`: name -> (scale, one-line definition)."""


def spatial_share(fit: Any) -> xr.DataArray | None:
    """The BYM2 term's summaries per draw (:data:`SPATIAL_MEASURES`); None for a non-spatial fit.

    ``structured_share`` is ``spatial_mix``; ``sd`` is ``spatial_sd``; ``neighbourhood_share`` is
    ``spatial_sd^2 / (spatial_sd^2 + sigma_a^2)``, ``sigma_a^2`` the variance of the LA intercepts (at a
    neighbourhood of its LA's mean deprivation, :func:`hierarchy.results.heterogeneity.la_variance`;
    0 without an LA level, so the share is 1).

    Returns
    -------
    xarray.DataArray or None
        Dims ``chain, draw, measure`` (in the order of :data:`SPATIAL_MEASURES`).
    """
    from hierarchy.results.heterogeneity import la_variance  # it imports this module

    idata = as_idata(fit)
    post = idata.posterior
    if "spatial_sd" not in post or "spatial_mix" not in post:
        return None
    sd, mix = post["spatial_sd"], post["spatial_mix"]
    la_var = la_variance(idata, w=0.0)
    la_var = xr.zeros_like(sd) if la_var is None else la_var
    share = sd**2 / (sd**2 + la_var)
    keep = ("chain", "draw")
    parts = [v.drop_vars([c for c in v.coords if c not in keep]) for v in (mix, sd, share)]
    out = xr.concat(parts, "measure").assign_coords(measure=list(SPATIAL_MEASURES))
    return _label(out.transpose("chain", "draw", "measure"), "spatial_share", "by measure",
                  "; ".join(d for _, d in SPATIAL_MEASURES.values()))


def spatial_estimands(fit: Any) -> list[xr.DataArray]:
    """:func:`spatial_share` as one labelled scalar estimand per measure (``spatial_<measure>``);
    empty for a non-spatial fit."""
    share = spatial_share(fit)
    if share is None:
        return []
    return [_label(share.sel(measure=m, drop=True), f"spatial_{m}", scale, text)
            for m, (scale, text) in SPATIAL_MEASURES.items()]


def _flat(post: xr.Dataset, name: str, shape: tuple[int, int], default: float = 0.0) -> np.ndarray:
    if name not in post:
        return np.full(int(np.prod(shape)), default)
    return post[name].to_numpy().reshape(-1)


# ---------------------------------------------------------------------------- summaries


def headline_table(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """The three headline gradient scores (per 10 points) as a tidy table."""
    return summarise(headline_gradients(idata), prob=prob)


def estimands_table(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """Scalar estimands, tidy: headline gradients per 10 points and per SD, subgroup gradients
    (when the posterior has them), the between-LA variance share and, for a spatial fit, the
    BYM2 term's measures (:func:`spatial_estimands`).

    Columns: ``estimand``, ``la_level``, ``la_deprivation``, ``subgroup``, ``scale``, ``mean``,
    ``sd``, ``lower``, ``upper``, ``prob``, ``description``.
    """
    head = headline_gradients(idata)
    parts = [head, per_sd(head, deprivation_sd(idata))]
    for sub in (subgroup_gradients(idata), moderated_gradients(idata)):
        if sub is not None:
            parts.append(sub)
    if has_row_data(idata):  # a conversion-rate fit read without its data has no exposures
        parts.append(between_la_share(idata))
    parts += spatial_estimands(idata)
    frames = [summarise(p, prob=prob).assign(description=p.attrs["description"]) for p in parts]
    out = pd.concat(frames, ignore_index=True)
    cols = ["estimand", "la_level", "la_deprivation", "subgroup", "scale", "mean", "sd", "lower",
            "upper", "prob", "description"]
    return out.reindex(columns=[c for c in cols if c in out])

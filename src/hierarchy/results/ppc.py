"""Posterior predictive checks of a fit: the fitted rows, replicated counts, observed counts (disclosure
controlled), and tables of both by national deprivation decile and by count band."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.disclosure import ROUNDING, THRESHOLD, disclose_frame
from hierarchy.language.design import w_of
from hierarchy.likelihood import families, model, parameters
from hierarchy.likelihood.predictor import ROW_PARAMS, group_params, predictor_draws
from hierarchy.results.estimand_base import (
    PER_10K,
    _parts,
    interval,
)
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import (  # noqa: F401  (exposure_is_public: re-exported)
    design_of,
    exposure_is_public,
    fitted_positions,
    missing_row_data,
    provenance,
    require_row_data,
)

COUNT_EDGES = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, np.inf)


def _codes(idata) -> np.ndarray:
    """Neighbourhood code of each fitted row (row ids are ``code|stratum...``)."""
    ids = idata.constant_data["neighbourhood"].to_numpy().astype(str)
    return np.array([s.split("|", 1)[0] for s in ids])


def has_row_data(idata) -> bool:
    """Whether the fit (as given: a saved fit, or one with :func:`~hierarchy.results.fitfile.with_row_data`)
    holds every row input the predictor reads."""
    return not missing_row_data(idata)


def _rows(idata, spec, des: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LA index (into the posterior's ``la``), centred deprivation w and exposure of each row."""
    require_row_data(idata, "this estimand")
    cd = idata.constant_data
    la_idx = pd.Index(idata.posterior["la"].to_numpy().astype(str)).get_indexer(
        cd["la_of"].to_numpy().astype(str))
    X = cd["la_deprivation"].sel(la=idata.posterior["la"]).to_numpy()
    w = w_of(cd["deprivation"].to_numpy(), X[la_idx], des["x_mean"], spec)
    return la_idx, np.asarray(w), cd["exposure"].to_numpy()


def deciles_of(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """National decile (1 = least deprived) of each row's neighbourhood.

    Deciles are over neighbourhoods (equal numbers of neighbourhoods, not children), ranked by
    deprivation with ties broken by code, as in :mod:`hierarchy.data.simulate`; rows of the same
    neighbourhood (strata) share its decile.

    Parameters
    ----------
    x : numpy.ndarray
        Neighbourhood deprivation of each row.
    codes : numpy.ndarray
        Neighbourhood code of each row.

    Returns
    -------
    numpy.ndarray
        Integer deciles 1..10.
    """
    s = pd.Series(np.asarray(x, dtype=float), index=np.asarray(codes).astype(str))
    first = s[~s.index.duplicated()]
    order = np.lexsort((first.index.to_numpy(), first.to_numpy()))
    dec = np.empty(len(first), dtype=np.int64)
    dec[order] = np.arange(len(first)) * 10 // len(first) + 1
    return dec[first.index.get_indexer(s.index)]


def neighbourhood_deciles(idata) -> np.ndarray:
    """:func:`deciles_of` for the rows of a fit (from its ``constant_data``)."""
    return deciles_of(idata.constant_data["deprivation"].to_numpy(), _codes(idata))


def fit_rows(idata) -> dict[str, Any]:
    """The one predictor's row arrays (:mod:`hierarchy.likelihood.predictor`) for the fitted rows of a fit file:
    indices into the posterior's coordinates, ``w`` and exposures rebuilt from ``constant_data``."""
    post, spec, des = _parts(idata)
    cd = idata.constant_data
    la_idx, w, expo = _rows(idata, spec, des)
    stages = list(spec.stages)
    stage = cd["stage"].to_numpy().astype(str) if "stage" in cd else np.full(len(w), stages[0])
    levels = ["__reference__", *(post["stratum"].to_numpy().astype(str) if "stratum" in post.coords else [])]
    k = pd.Index(levels).get_indexer(cd["stratum"].to_numpy().astype(str))
    groups = tuple((g, pd.Index(post[g].to_numpy().astype(str)).get_indexer(cd[f"{g}_of"].to_numpy().astype(str)))
                   for g, _ in spec.groups)
    return {"la_index": la_idx, "stage_index": pd.Index(stages).get_indexer(stage),
            "stratum_index": np.where(k < 0, 0, k),  # the reference level is not a coordinate: offset 0
            "log_exposure": np.log(expo), "w": np.asarray(w),
            "row_X": cd["row_X"].to_numpy() if "row_X" in cd else None, "groups": groups}


def _draw_arrays(flat: xr.Dataset, spec) -> dict[str, np.ndarray]:
    """Posterior draws (dim ``sample`` first) of the parameters the predictor reads (not the family's
    likelihood parameters, which only the counts read: :func:`family_draws`)."""
    skip = {"msoa_raw", "eps_raw", *families.get(spec.family).likelihood_params}
    keys = [k for k in (*ROW_PARAMS, *group_params(g for g, _ in spec.groups)) if k in flat and k not in skip]
    return {k: flat[k].transpose("sample", ...).to_numpy() for k in keys}


def family_draws(flat: xr.Dataset, fam: families.Family, samples: slice,
                 stage: np.ndarray) -> dict[str, np.ndarray]:
    """The family's likelihood parameters (``dispersion``, ``zi``...) of the draws ``samples`` of ``flat``
    (dim ``sample``), at each row's stage: ``{name: (draws, rows)}`` for :attr:`Family.draw`."""
    out = {}
    for k in fam.likelihood_params:
        v = flat[k].transpose("sample", ...).to_numpy()[samples]
        out[k] = v.reshape(len(v), -1)[:, stage]
    return out


def posterior_predictive(idata, *, n_draws: int = 200, seed: int = 0,
                         chunk: int = 50) -> xr.DataArray:
    """Replicated counts for every fitted row from the one linear predictor (the family's draws).

    ``n_draws`` posterior draws, evenly spaced over all chains, bound the memory
    (``n_draws x rows``). MSOA effects (when modelled) and Poisson-lognormal row effects are
    drawn afresh from their fitted SDs (the fit file does not store the MSOA of each row).

    Returns
    -------
    xarray.DataArray
        Integer counts, dims ``sample, neighbourhood``.
    """
    post, spec, _ = _parts(idata)
    fam = families.get(spec.family)
    rows = fit_rows(idata)
    flat = post.stack(sample=("chain", "draw"))
    n_total = flat.sizes["sample"]
    pick = np.unique(np.linspace(0, n_total - 1, min(n_draws, n_total)).round().astype(int))
    flat = flat.isel(sample=pick)
    eta_all = predictor_draws(rows, _draw_arrays(flat, spec), batch=chunk)
    rng = np.random.default_rng(seed)
    out = np.empty(eta_all.shape, dtype=np.int64)
    stage = rows["stage_index"]
    for s in range(0, len(pick), chunk):
        eta = eta_all[s:s + chunk]
        for sd_name in parameters.names(within_la_sd=True):
            if sd_name in flat:
                sd = flat[sd_name].to_numpy()[s:s + chunk, None]
                eta = eta + rng.normal(0.0, 1.0, eta.shape) * sd
        out[s:s + chunk] = fam.draw(rng, np.exp(eta), family_draws(flat, fam, slice(s, s + chunk), stage))
    return xr.DataArray(out, dims=("sample", "neighbourhood"),
                        coords={"neighbourhood": idata.constant_data["neighbourhood"].to_numpy()},
                        name=model.observed_name(spec))


def observed_counts(idata, data: Any = None) -> np.ndarray | None:
    """Observed outcome counts aligned with the fitted rows, or None when not available.

    Parameters
    ----------
    idata : arviz.InferenceData
    data : str, os.PathLike or pandas.DataFrame, optional
        The table the fit was made from (its data hash must match the fit's). Without it the
        fit's ``observed_data`` group is used, if it was saved with the data.

    Returns
    -------
    numpy.ndarray or None
        Raw counts: for disclosure-controlled tables only, never publish as they are.
    """
    idata = as_fit(idata)
    spec = idata.spec
    if data is None:
        if "observed_data" in idata.groups():
            return idata.observed_data[spec.outcome].to_numpy()
        return None
    design = design_of(idata, data, None, spec)
    return design.y[fitted_positions(idata, design)]


def decile_table(idata, yrep: xr.DataArray, observed: np.ndarray | None = None, *,
                 prob: float = 0.9, threshold: int = THRESHOLD,
                 rounding: int = ROUNDING) -> pd.DataFrame:
    """Rates per 10,000 children by national decile: posterior predictive vs observed.

    Observed counts are disclosure-controlled (:mod:`hierarchy.disclosure`); the observed rate
    is computed from the published count.

    Returns
    -------
    pandas.DataFrame
        ``decile``, ``deprivation_min``, ``deprivation_max``, ``neighbourhoods``, ``children``,
        ``predicted_mean``, ``predicted_sd``, ``predicted_lower``, ``predicted_upper``, ``prob``,
        ``scale`` and, with observed data, ``observed_count``, ``observed_rate``.
    """
    require_row_data(idata, "the decile table")
    dec = neighbourhood_deciles(idata)
    x = idata.constant_data["deprivation"].to_numpy()
    expo = np.rint(idata.constant_data["exposure"].to_numpy())  # stored as exp(log exposure)
    codes = _codes(idata)
    onehot = (dec[:, None] == np.arange(1, 11)[None, :]).astype(float)
    children = expo @ onehot
    pred = xr.DataArray(1e4 * (yrep.to_numpy() @ onehot) / children, dims=("sample", "decile"),
                        coords={"decile": np.arange(1, 11)}, name="rate", attrs={"scale": PER_10K})
    s = interval(pred, prob=prob)
    frame = pd.DataFrame({
        "decile": np.arange(1, 11),
        "deprivation_min": [x[dec == k].min() for k in range(1, 11)],
        "deprivation_max": [x[dec == k].max() for k in range(1, 11)],
        "neighbourhoods": [len(set(codes[dec == k])) for k in range(1, 11)],
        "children": children,
        **{f"predicted_{k}": s[k].to_numpy() for k in ("mean", "sd", "lower", "upper")},
        "prob": prob, "scale": PER_10K})
    if observed is not None:
        frame["observed_count"] = np.asarray(observed, dtype=float) @ onehot
        frame = disclose_frame(frame, counts=["observed_count"],
                               rates={"observed_rate": ("observed_count", "children")},
                               threshold=threshold, rounding=rounding)
    return with_private_denominator(idata, frame, threshold=threshold, rounding=rounding)


def with_private_denominator(idata, frame: pd.DataFrame, *, threshold: int, rounding: int) -> pd.DataFrame:
    """When the exposure is a count (referrals for re-referrals), its column is an observed count too:
    suppressed and rounded like one, and the observed rate recomputed from both published counts."""
    if exposure_is_public(idata):
        return frame
    from hierarchy.disclosure import disclose_counts

    out = frame.copy()
    out["children"] = disclose_counts(frame["children"].to_numpy(dtype=float), threshold=threshold,
                                      rounding=rounding)
    if "observed_rate" in out:
        denom = out["children"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["observed_rate"] = np.where(denom > 0, 1e4 * out["observed_count"].to_numpy(dtype=float) / denom,
                                            np.nan)
    return out  # the column keeps the name "children" that the report and checking folder read


def la_decile_table(idata, observed: np.ndarray, *, threshold: int = THRESHOLD,
                    rounding: int = ROUNDING) -> pd.DataFrame:
    """Observed counts and rates per 10,000 by LA and national decile, disclosure-controlled.

    Returns
    -------
    pandas.DataFrame
        Long: ``la``, ``la_deprivation``, ``decile`` (``"1"``..``"10"`` and ``"all"``),
        ``neighbourhoods``, ``children``, ``observed_count``, ``observed_rate`` (NaN where
        suppressed); only cells with neighbourhoods.
    """
    require_row_data(idata, "the LA x decile table")
    cd = idata.constant_data
    rows = pd.DataFrame({"la": cd["la_of"].to_numpy().astype(str),
                         "decile": neighbourhood_deciles(idata).astype(str), "code": _codes(idata),
                         "children": np.rint(cd["exposure"].to_numpy()),
                         "observed_count": np.asarray(observed, dtype=float)})
    agg = {"neighbourhoods": ("code", "nunique"), "children": ("children", "sum"),
           "observed_count": ("observed_count", "sum")}
    by_cell = rows.groupby(["la", "decile"], as_index=False).agg(**agg)
    by_la = rows.groupby("la", as_index=False).agg(**agg).assign(decile="all")
    frame = pd.concat([by_cell, by_la], ignore_index=True)
    order = {str(k): k for k in range(1, 11)} | {"all": 11}
    frame = frame.sort_values(["la", "decile"], key=lambda c: c.map(order) if c.name == "decile"
                              else c).reset_index(drop=True)
    X = cd["la_deprivation"].to_series()
    X.index = X.index.astype(str)
    frame.insert(1, "la_deprivation", X.reindex(frame["la"]).to_numpy())
    frame["decile"] = frame["decile"].astype(str)
    frame = disclose_frame(frame, counts=["observed_count"],
                           rates={"observed_rate": ("observed_count", "children")},
                           threshold=threshold, rounding=rounding)
    return with_private_denominator(idata, frame, threshold=threshold, rounding=rounding)


def count_distribution(yrep: xr.DataArray, observed: np.ndarray | None = None, *,
                       edges: tuple[float, ...] = COUNT_EDGES, prob: float = 0.9,
                       threshold: int = THRESHOLD, rounding: int = ROUNDING) -> pd.DataFrame:
    """Posterior predictive check of the count distribution: neighbourhoods per count bin.

    Observed numbers of neighbourhoods per bin are observed counts and are disclosure-controlled.

    Returns
    -------
    pandas.DataFrame
        ``bin`` (label), ``low``, ``high`` (bin is low <= count < high), ``predicted_mean``,
        ``predicted_lower``, ``predicted_upper``, ``prob`` and, with observed data,
        ``observed_neighbourhoods``.
    """
    edges_arr = np.asarray(edges, dtype=float)
    y = yrep.to_numpy()
    per_bin = np.stack([((y >= lo) & (y < hi)).sum(-1) for lo, hi in zip(edges_arr[:-1],
                                                                            edges_arr[1:],
                                                                            strict=True)], -1)
    s = interval(xr.DataArray(per_bin, dims=("sample", "bin")), prob=prob)
    frame = pd.DataFrame({"bin": [_bin_label(lo, hi) for lo, hi in zip(edges_arr[:-1], edges_arr[1:],
                                                                        strict=True)],
                          "low": edges_arr[:-1], "high": edges_arr[1:],
                          "predicted_mean": s["mean"].to_numpy(),
                          "predicted_lower": s["lower"].to_numpy(),
                          "predicted_upper": s["upper"].to_numpy(), "prob": prob})
    if observed is not None:
        obs = np.asarray(observed)
        frame["observed_neighbourhoods"] = [((obs >= lo) & (obs < hi)).sum() for lo, hi in
                                            zip(edges_arr[:-1], edges_arr[1:], strict=True)]
        frame = disclose_frame(frame, counts=["observed_neighbourhoods"], threshold=threshold,
                               rounding=rounding)
    return frame


def _bin_label(lo: float, hi: float) -> str:
    if not np.isfinite(hi):
        return f"{lo:,.0f}+"
    return f"{lo:,.0f}" if hi - lo == 1 else f"{lo:,.0f}-{hi - 1:,.0f}"

"""Panel fit files: one measure of an LA panel model, as ArviZ netCDF with provenance, sealed, written atomically.

A panel fit file (``hierarchy fit --model panel_*``) holds:

* ``posterior``: the parameter draws (chain, draw): ``alpha``, ``b_t``, ``b_dep``, ``b_dep_t``, ``b_rural``,
  ``b_density``, ``sd_u``, ``sd_v``, ``corr_uv``, ``sd_g``, ``phi`` as the model has them, the LA effects
  ``uv`` (la, effect) or ``u`` (la), and the year effects ``g`` (year); no non-centred raw draws;
* ``constant_data``: the public inputs: LA codes and names, years, ``t``, the LA deprivation ``z`` (per 10
  points about the mean) and covariates, and for a rate measure the children 0-17 (ONS) it is per;
* ``observed_data`` only with ``include_data``: the counts (and a conversion's exposure, a count).

``posterior.attrs["hierarchy"]`` is the provenance as JSON, with ``"kind": "panel"``: the model file and its
SHA-256, the spec, the measure and its formula, the data file and its SHA-256, the method and sampler
settings, the diagnostics, the cells each likelihood treatment covered, and the disclosure verdict.
``posterior.attrs["hierarchy_seal"]`` is :func:`hierarchy.results.fitfile.content_hash`, checked on load.

Disclosure: the panel's counts are DfE's published LA figures (public, DfE's own suppression of 1 to 5
applied), and the provenance says so (``data_public``). The neighbourhood fits' rules still apply unchanged
(:func:`hierarchy.results.rowdata.effect_group_risks`): a fit is marked ``shareable`` only when it stores no
count below 10 and no effect group (an LA over its years, a year over its LAs) whose published total is below
10 or whose cells are no more than its effects (their counts solve from the effect draws).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import FitFileError
from hierarchy.likelihood.panel_model import PanelDesign, PanelFit, cell_treatment

__all__ = ["PANEL_FORMAT", "build_panel_idata", "file_sha256", "is_panel_fit", "load_panel_fit",
           "parameter_table", "panel_risks", "summary_text"]

PANEL_FORMAT = 1
KIND = "panel"
DATA_PUBLIC = ("DfE published LA figures (children's social care statistics, DfE's suppression of counts of 1 to "
               "5 applied) and ONS mid-year population estimates: public data")
SCALARS = ("alpha", "b_t", "b_dep", "b_dep_t", "b_rural", "b_density", "sd_u", "sd_v", "corr_uv", "sd_g", "phi")
"""The scalar parameters of a panel fit, in the order its table lists them."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def panel_risks(design: PanelDesign, *, la_trend: bool, include_data: bool, threshold: int = 10) -> list[str]:
    """What a panel fit would disclose (empty: nothing), by the neighbourhood fits' rules.

    The LA effect draws carry each LA's total over its years, the year effects each year's total over the
    LAs (:func:`hierarchy.results.rowdata.effect_group_risks`); stored counts are checked one by one.
    """
    obs = design.observed
    y = np.where(obs, design.count, 0.0)
    out = []
    for level, index, k in (("LA", design.unit_idx, 1 + int(la_trend)), ("year", design.year_idx, 1)):
        totals = np.bincount(index, weights=y)
        rows = np.bincount(index, weights=obs.astype(float))
        used = rows > 0
        if small := int((used & (totals < threshold)).sum()):
            out.append(f"{small} {level}(s) of {design.measure} have fewer than {threshold} published counts in "
                       f"all: their totals can be estimated closely from the {level} effect draws")
        if few := int((used & (rows <= k)).sum()):
            out.append(f"{few} {level}(s) of {design.measure} have at most {k} published cell(s): their counts "
                       f"can be rebuilt from the {level} effect draws")
    if include_data:
        stored = [design.count[np.isfinite(design.count)]]
        if design.rate_scale != 10_000:  # a conversion's exposure is the earlier stage's count
            stored.append(design.exposure[np.isfinite(design.exposure)])
        if n := int(sum(((s > 0) & (s < threshold)).sum() for s in stored)):
            out.append(f"the stored data (include_data) hold {n} count(s) below {threshold}")
    return out


def _posterior(fit: PanelFit, chains: int) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The stored draws (chain, draw, ...) and their dims: no raw draws, ``corr_uv`` for the Cholesky factor."""
    post, dims = {}, {}
    for name, v in fit.draws.items():
        if name.endswith("_raw") or name == "inv_sqrt_phi":
            continue
        v = np.asarray(v)
        v = v.reshape(chains, -1, *v.shape[1:])
        if name == "L_corr":
            post["corr_uv"] = v[..., 1, 0]
            continue
        post[name] = v
        dims[name] = {"uv": ["la", "effect"], "u": ["la"], "g": ["year"]}.get(name, [])
    return post, dims


def _constant_data(d: PanelDesign):
    import xarray as xr

    shape = (len(d.units), len(d.years))
    data = {"la_name": ("la", d.unit_names.astype(str)), "t": ("year", d.t), "z": ("la", d.z)}
    for k, name in enumerate(d.x_names):
        data[name] = ("la", d.x[:, k])
    if d.rate_scale == 10_000:  # children 0-17 (ONS): public; a conversion's exposure is a count
        data["children"] = (("la", "year"), d.exposure.reshape(shape))
    return xr.Dataset(data, coords={"la": d.units.astype(str), "year": d.years.astype(int)})


def build_panel_idata(fit: PanelFit, *, chains: int, model_path: str | Path, data_path: str | Path,
                      data_source: str, sampler: dict[str, Any], include_data: bool = False):
    """The sealed InferenceData of one panel fit (see the module docstring).

    Parameters
    ----------
    fit : PanelFit
        One measure's fit (:func:`hierarchy.inference.sampling.fit_panels`), draws flattened over ``chains``.
    chains : int
        Chains the draws came from (chain-major, as ``fit_panels`` flattens them).
    model_path, data_path : path
        The model file and the panel file (hashed into the provenance).
    data_source : str
        What the panel says it was built from (``Panel.source``).
    sampler : dict
        The sampler settings (asked and done).
    include_data : bool
        Store the counts (``observed_data``); checked against the disclosure rules like the rest.
    """
    import arviz as az
    import xarray as xr

    from hierarchy.results.fitfile import seal, versions

    d, spec = fit.design, fit.spec
    post, dims = _posterior(fit, chains)
    idata = az.from_dict(posterior=post, dims=dims,
                         coords={"la": d.units.astype(str), "year": d.years.astype(int),
                                 "effect": ["intercept", "trend"]})
    idata.add_groups(constant_data=_constant_data(d))
    shape = (len(d.units), len(d.years))
    if include_data:
        idata.add_groups(observed_data=xr.Dataset(
            {"count": (("la", "year"), d.count.reshape(shape)),
             "exposure": (("la", "year"), d.exposure.reshape(shape))},
            coords={"la": d.units.astype(str), "year": d.years.astype(int)}))
    risks = panel_risks(d, la_trend=spec.la_trend, include_data=include_data)
    prov = {
        "kind": KIND, "format": PANEL_FORMAT, "model": spec.name, "model_file": str(model_path),
        "model_file_sha256": file_sha256(model_path), "panel_spec": asdict(spec), "measure": d.measure,
        "formula": spec.formula(d.measure), "spec_key": spec.key(d.measure), "family": spec.family,
        "data_file": str(data_path), "data_sha256": file_sha256(data_path), "data_source": data_source,
        "data_public": DATA_PUBLIC, "method": "nuts", "sampler": sampler, "seed": sampler.get("seed"),
        "centred": fit.centred, "seconds": fit.seconds, "diagnostics": fit.diagnostics,
        "cells": cell_treatment(d).set_index("treatment")["cells"].to_dict(),
        "design": {"n_la": len(d.units), "n_years": len(d.years), "dep_mean": d.dep_mean,
                   "rate_scale": d.rate_scale, "x_names": list(d.x_names)},
        "include_data": include_data, "disclosure_risks": risks, "shareable": not risks,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "versions": versions(),
    }
    idata.posterior.attrs["hierarchy"] = json.dumps(prov, default=_json_default)
    return seal(idata)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON: {type(o).__name__}")


def is_panel_fit(path: str | Path) -> bool:
    """True when ``path`` is a fit file whose provenance says it is a panel fit."""
    path = Path(path)
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5["posterior"].attrs.get("hierarchy")
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return json.loads(raw).get("kind") == KIND
    except Exception:  # unreadable, not HDF5, no provenance: not a panel fit
        return False


def load_panel_fit(path: str | Path):
    """Load a panel fit, checking its kind, format and seal; problems are one line naming the file."""
    import arviz as az

    from hierarchy.results.fitfile import SEAL_ATTR, content_hash

    path = Path(path)
    if not path.exists():
        raise FitFileError(f"{path}: no such fit file")
    if not is_panel_fit(path):
        raise FitFileError(f"{path}: not a panel fit (hierarchy fit --model panel_...); neighbourhood fits are "
                           "read by hierarchy summary, report and predict")
    idata = az.from_netcdf(str(path), engine="h5netcdf")
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    if prov.get("format") != PANEL_FORMAT:
        raise FitFileError(f"{path}: panel fit format {prov.get('format')!r}, this version reads {PANEL_FORMAT}: "
                           "refit it")
    if idata.posterior.attrs.get(SEAL_ATTR) != content_hash(idata):
        raise FitFileError(f"{path}: its content does not match its seal (edited or damaged after it was "
                           "saved); refusing it: refit")
    return idata


def parameter_table(idata, *, prob: float = 0.9) -> pd.DataFrame:
    """Mean, SD, central ``prob`` interval, R-hat and bulk/tail ESS of the scalar parameters of a panel fit."""
    import arviz as az

    names = [n for n in SCALARS if n in idata.posterior]
    post = idata.posterior[names]
    rhat, bulk, tail = az.rhat(post), az.ess(post, method="bulk"), az.ess(post, method="tail")
    q = ((1 - prob) / 2, (1 + prob) / 2)
    rows = []
    for n in names:
        x = post[n].values.ravel()
        lo, hi = np.quantile(x, q)
        rows.append({"parameter": n, "mean": x.mean(), "sd": x.std(ddof=1), "lower": lo, "upper": hi,
                     "r_hat": float(rhat[n]), "ess_bulk": float(bulk[n]), "ess_tail": float(tail[n])})
    return pd.DataFrame(rows).set_index("parameter")


FORMATS = ("table", "csv", "markdown", "json")


def summary_text(path: str | Path, *, prob: float = 0.9, fmt: str = "table") -> str:
    """What ``hierarchy summary`` prints for a panel fit: what was fitted, the verdicts, the parameter table.

    ``fmt``: ``table`` (text), ``csv`` (the parameter table), ``markdown`` or ``json`` (both with the
    header facts).
    """
    if fmt not in FORMATS:
        raise FitFileError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    idata = load_panel_fit(path)
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    table = parameter_table(idata, prob=prob)
    if fmt == "csv":
        return table.to_csv().rstrip("\n")
    if fmt == "json":
        keep = ("kind", "model", "measure", "formula", "family", "data_file", "data_sha256", "data_source",
                "data_public", "method", "sampler", "diagnostics", "cells", "shareable", "disclosure_risks")
        return json.dumps({"fit": str(path), **{k: prov[k] for k in keep}, "prob": prob,
                           "parameters": table.reset_index().to_dict(orient="records")}, indent=1,
                          default=_json_default)
    head = _header(path, prov, prob)
    if fmt == "markdown":
        cols = ["parameter", *table.columns]
        rows = [[n, *(f"{v:.4g}" for v in r)] for n, r in zip(table.index, table.to_numpy(), strict=True)]
        lines = ["| " + " | ".join(c) + " |" for c in [cols, ["---"] * len(cols), *rows]]
        return "\n".join([*(f"- {h}" for h in head), "", *lines])
    return "\n".join([*head, table.to_string(float_format=lambda v: f"{v:.4g}")])


def _header(path, prov: dict, prob: float) -> list[str]:
    """The lines above a panel fit's parameter table."""
    diag, s = prov["diagnostics"], prov["sampler"]
    cells = ", ".join(f"{v} {k}" for k, v in prov["cells"].items())
    return [
        f"{path}: panel fit of {prov['measure']} under {prov['model']} ({prov['family']})",
        f"formula: {prov['formula']}",
        f"data: {prov['data_file']} ({prov['data_source']}; sha256 {prov['data_sha256'][:12]}); "
        f"{prov['design']['n_la']} LAs x {prov['design']['n_years']} years; cells: {cells}",
        f"method: {prov['method']}, {s['chains']} chains x ({s['tune']} warm-up + {diag.get('draws', s['draws'])} "
        f"draws), seed {prov['seed']}, LA effects {'centred' if prov['centred'] else 'non-centred'}",
        f"diagnostics: {diag['status']} (max R-hat {diag['max_rhat']:.3f} on {diag['rhat_worst']}, min ESS "
        f"{diag['min_ess']:.0f}, {diag['divergences']} divergences)"
        + (f"; {diag['warning']}" if diag.get("warning") else ""),
        f"shareable: {'yes' if prov['shareable'] else 'NO: ' + '; '.join(prov['disclosure_risks'])}",
        f"parameters ({prob:.0%} intervals; t = year - {prov['panel_spec']['reference_year']}, dep per 10 "
        f"points of LA {prov['panel_spec']['deprivation']}):",
    ]

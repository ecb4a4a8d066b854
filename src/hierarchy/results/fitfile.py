"""Fit files: ArviZ InferenceData netCDF with provenance, sealed by a content hash, written atomically.

What a fit file holds by default (a *shareable* fit, DESIGN sections 5 and 8):

* ``posterior``: parameter draws (hyperparameters and LA / MSOA effects; never per-neighbourhood
  latent effects);
* ``sample_stats``: divergences, energy, tree depth (for the diagnostics);
* ``log_prior``: log prior density of each hyperparameter draw (for power-scaling);
* ``constant_data``: the public inputs per neighbourhood row (deprivation, children, LA, stage,
  stratum) and per LA (LA deprivation, its transform): no outcome and nothing computed from one.

It holds **no pointwise log-likelihood** and no observed counts: a stored log-likelihood with the
posterior and ``constant_data`` gives back every observed count exactly (measured: all 1,125
counts of a small fit). Two groups are written only when asked, and make the file disclosive:

* ``log_likelihood`` (``include_log_likelihood=True``; thinned to at most
  :data:`LOGLIK_MAX_VALUES` values), for LOO without the data. Without it,
  :func:`add_log_likelihood` recomputes it from the data table where the data are (what
  ``hierarchy compare-models --data`` and ``compare-priors`` do);
* ``observed_data`` (``include_data=True``).

``posterior.attrs["hierarchy"]`` holds the provenance as JSON: model spec, prior set, their
hashes, the data hash, column map, sampler settings, seed, versions, timings, the design
constants the estimands use and the diagnostics. ``posterior.attrs["hierarchy_seal"]`` is a
SHA-256 of the provenance and of every array of every group (:func:`content_hash`);
:func:`load_fit` refuses a file whose content does not match it, so an edited diagnostics
verdict, design constant or draw is caught. The seal detects edits, it is not a signature:
anyone with this code can reseal a file; the report and summary therefore also recompute the
diagnostics from the draws (:func:`checked_diagnostics`).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hierarchy.errors import FitFileError
from hierarchy.inference.sampling import PER_ROW, Draws
from hierarchy.language.design import Design
from hierarchy.language.priors import PriorSet, config_hash
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families
from hierarchy.results.rowdata import (  # noqa: F401  (re-exported: fitfile's public names)
    effect_group_risks,
    private_row_data,
    public_row_data,
    term_risks,
)

FORMAT = 3
"""Fit file format: 3 = sealed, log-likelihood only when asked, only public row data, derived constants
checked on load (older formats are refused)."""
LOGLIK_MAX_VALUES = 25_000_000  # ~100 MB of float32
SEAL_ATTR = "hierarchy_seal"
REQUIRED_KEYS = ("format", "model_spec", "model_hash", "priors", "priors_hash", "data_hash",
                 "sampler", "design", "diagnostics", "include_data", "include_log_likelihood",
                 "created", "shareable", "disclosure_risks", "private_row_data")
"""Provenance keys every fit must have (a missing one is refused with its name)."""
REQUIRED_DESIGN_KEYS = ("X_mean", "x_mean", "la_cov_center", "la_cov_scale", "n_rows", "n_la")
PUBLIC_ROW_DATA = ("deprivation", "exposure", "la_of", "stage", "stratum")
"""The only per-neighbourhood arrays a shareable fit holds (public inputs, in ``constant_data``)."""
GAUSS_HERMITE_NODES = 32
"""Quadrature nodes of a family's marginal log-likelihood (its unstored row effects integrated out)."""


def versions() -> dict[str, str]:
    """Versions of Python and the numerical stack."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("hierarchy", "pymc", "pytensor", "numpyro", "jax", "jaxlib", "arviz", "numpy",
                "pandas", "xarray", "nutpie", "blackjax"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def build_idata(draws: Draws, spec: ModelSpec, priors: PriorSet, design: Design, *,
                data_hash: str, data_source: str = "", column_map: dict | None = None,
                data_year: int | None = None, include_data: bool = False, include_log_likelihood: bool = False,
                diagnostics: dict | None = None, rows_hash: dict | None = None,
                geography: str | Path | None = None):
    """Assemble a sealed InferenceData with the provenance attributes.

    Parameters
    ----------
    draws : hierarchy.inference.sampling.Draws
    spec, priors, design
        The model, prior set and design the draws were made with.
    data_hash, data_source, column_map, data_year
        Provenance of the data (``data_year``: its census year, for the published figures a
        report shows beside the estimates; :func:`hierarchy.published.data_year`).
    include_data : bool
        Store the observed counts (``observed_data``): the file is then disclosive.
    include_log_likelihood : bool
        Store the pointwise log-likelihood (``log_likelihood``), from which the observed counts
        can be rebuilt exactly: the file is then disclosive. Off by default; LOO and power-scaling
        recompute it from the data (:func:`add_log_likelihood`).
    diagnostics : dict, optional
        Precomputed :func:`hierarchy.inference.diagnostics.diagnose` output.
    rows_hash : dict, optional
        :func:`hierarchy.data.table.rows_hash` of the table (rows, outcome, exposure), so that fits of one
        table with different terms can be compared.
    geography : path, optional
        The map (``--geography``) a spatial model's graph was read from; None: the default map.
    """
    import arviz as az
    import xarray as xr

    from hierarchy.inference.diagnostics import diagnose
    from hierarchy.likelihood.model import coords, dims, observed_name

    crd = coords(spec, design)
    crd["coef_"] = crd["coef"]
    if "la_effect" in crd:
        crd["la_effect_"] = crd["la_effect"]
    centred_groups = {f"{g}_{k}" for g in design.group_names for k in ("centred", "grid")}  # kept as {g}_raw
    centred_groups.add("la_level")  # kept as la_coef (the same draws, shifted back)
    post = {k: v for k, v in draws.posterior.items() if k not in PER_ROW and k not in centred_groups}
    with warnings.catch_warnings():  # many short chains (--sampler chees) are meant: not a shape mix-up
        warnings.filterwarnings("ignore", message="More chains .* than draws")
        idata = az.from_dict(posterior=post, sample_stats=draws.stats or None, coords=crd,
                             dims={k: v for k, v in dims(spec).items() if k in post})
    obs = observed_name(spec)
    idata.add_groups(log_prior=_log_prior(draws.posterior, priors),
                     constant_data=public_row_data(spec, design, crd))
    if include_data:
        idata.add_groups(observed_data=xr.Dataset(
            {obs: ("neighbourhood", design.y)},
            coords={"neighbourhood": crd["neighbourhood"]}))
    approximate = draws.settings.get("sampler") in ("pathfinder", "advi")
    if diagnostics is None:
        diagnostics = diagnose(idata, approximate=approximate,
                               max_tree_depth=draws.settings.get("max_tree_depth", 10))
    step = None
    if include_log_likelihood:
        step = _loglik_step(idata, len(design.y))
        idata.add_groups(log_likelihood=log_likelihood_dataset(idata, design, spec=spec, step=step))
    risks = effect_group_risks(spec, design, post) + term_risks(spec, design)
    prov = {
        "format": FORMAT,
        "model_spec": spec.to_dict(), "model_hash": spec.hash(), "formula": spec.formula_text,
        "priors": priors.to_dict(), "priors_hash": priors.hash(),
        "config_hash": config_hash([spec.hash(), priors.hash()]),
        "data_hash": data_hash, "rows_hash": rows_hash, "data_source": str(data_source), "column_map": column_map,
        "data_year": None if data_year is None else int(data_year),
        "sampler": draws.settings, "seed": draws.settings.get("seed"),
        "timings": draws.timings, "versions": versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "include_data": include_data, "include_log_likelihood": include_log_likelihood,
        "disclosure_risks": risks, "shareable": not (include_data or include_log_likelihood or risks),
        "private_row_data": private_row_data(spec),
        "log_likelihood_thinned_by": step,
        "design": {"X_mean": design.X_mean, "x_mean": design.x_mean,
                   "la_cov_center": design.la_cov_center.tolist(),
                   "la_cov_scale": design.la_cov_scale.tolist(), "n_rows": int(len(design.y)),
                   "n_la": design.n_la},
        "diagnostics": diagnostics,
    }
    if getattr(design, "graph", None) is not None:  # a spatial model: the map, to rebuild and check it
        from hierarchy.data.geography import graph_record

        prov["graph"] = graph_record(design.graph, geography)
    idata.posterior.attrs["hierarchy"] = json.dumps(prov, default=_json_default)
    return seal(idata)


def with_row_data(idata, data: Any, *, columns: Any = None):
    """A copy of a fit whose ``constant_data`` also holds the private row inputs, re-read from the data.

    In memory only (never save it): the exposure of a conversion-rate model is a count.

    Parameters
    ----------
    idata : arviz.InferenceData
    data : str, os.PathLike, pandas.DataFrame or Design
        The table the fit was made from (its data hash must match), or its design.
    columns : str or os.PathLike, optional
        Column map of the table.
    """
    import arviz as az

    missing = missing_row_data(idata)
    if not missing:
        return idata
    spec, _ = fit_spec(idata)
    design = data if isinstance(data, Design) else design_of(idata, data, columns, spec)
    pos = fitted_positions(idata, design)
    cd = idata.constant_data.copy()
    if "exposure" in missing:
        cd["exposure"] = ("neighbourhood", np.exp(design.log_exposure)[pos])
    if "row_X" in missing and design.row_names:
        cd = cd.assign_coords(row_term=list(design.row_names))
        cd["row_X"] = (("neighbourhood", "row_term"), design.row_X[pos])
    groups = {g: idata[g] for g in idata.groups()}
    groups["constant_data"] = cd
    return az.InferenceData(**groups)


def missing_row_data(idata) -> list[str]:
    """The private row inputs (``exposure``, ``row_X``) the fit, as given, lacks (empty: it has them all)."""
    return [k for k in provenance(idata).get("private_row_data", []) if k not in idata.constant_data]


def exposure_is_public(idata) -> bool:
    """Whether the fit's exposure is the children column (public), not a count such as referrals."""
    return "exposure" not in provenance(idata).get("private_row_data", [])


def fitted_positions(idata, design: Design) -> np.ndarray:
    """Position in ``design`` of each fitted row of ``idata`` (refused when the data lack one)."""
    import pandas as pd

    pos = pd.Index(np.asarray(design.row_ids).astype(str)).get_indexer(
        idata.constant_data["neighbourhood"].to_numpy().astype(str))
    if (pos < 0).any():
        raise FitFileError("the data lack some of the fitted neighbourhood rows; pass the table used to fit it")
    return pos


def require_row_data(idata, what: str) -> None:
    """Refuse, with the fix, when ``what`` needs row inputs the fit file does not hold."""
    missing = missing_row_data(idata)
    if missing:
        spec = ModelSpec.from_dict(provenance(idata)["model_spec"])
        names = {"exposure": f"its exposure '{spec.exposure}' (a count, not public)",
                 "row_X": "its non-public row terms (" + ", ".join(
                     t for t in spec.row_terms) + ")"}
        raise FitFileError(f"{what} needs {' and '.join(names[k] for k in missing)}, which the fit file "
                           "does not store (it would disclose counts); give the table it was fitted on "
                           "(--data TABLE, or data= in Python)")


# ---------------------------------------------------------------------------- log-likelihood


def _loglik_step(idata, n_rows: int) -> int:
    """Thinning of the draws that keeps the pointwise log-likelihood under LOGLIK_MAX_VALUES."""
    n = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    return max(1, int(np.ceil(n * n_rows / LOGLIK_MAX_VALUES)))


def pointwise_log_likelihood(spec: ModelSpec, design: Design, posterior: dict[str, np.ndarray],
                             *, batch: int = 100) -> np.ndarray:
    """Log-likelihood of each row at each draw, ``(draws, rows)`` float32.

    A family whose per-row effects the fit does not store (Poisson-lognormal) integrates them out with its
    ``marginal_loglik`` (:mod:`hierarchy.likelihood.families`; adaptive Gauss-Hermite quadrature,
    :data:`GAUSS_HERMITE_NODES` nodes around each row's mode): this is also the log-likelihood LOO should use
    for such a model. The others: :func:`hierarchy.likelihood.jaxmodel.pointwise_loglik`.

    Parameters
    ----------
    spec, design
        Model and design (the design carries the observed counts).
    posterior : dict of str to numpy.ndarray
        Parameter draws with a leading draw axis (chains flattened); per-row latent draws are
        ignored.
    batch : int
        Draws per compiled batch.
    """
    from hierarchy.likelihood.jaxmodel import pointwise_loglik

    posterior = {k: v for k, v in posterior.items() if k not in PER_ROW}
    marginal = families.get(spec.family).marginal_loglik
    if marginal is None:
        return pointwise_loglik(spec, design, posterior, batch=batch)
    return marginal(design, posterior, batch=batch, nodes=GAUSS_HERMITE_NODES)


def log_likelihood_dataset(idata, design: Design, *, spec: ModelSpec, step: int | None = None):
    """The ``log_likelihood`` group of a fit, computed from its posterior and the data's design.

    Parameters
    ----------
    idata : arviz.InferenceData
        A fit (its posterior and ``constant_data``).
    design : hierarchy.language.design.Design
        Design of the table the fit was made from (same rows in the same order).
    spec : ModelSpec
        The fit's model.
    step : int, optional
        Keep every ``step``-th draw (default: the thinning that keeps under
        :data:`LOGLIK_MAX_VALUES` values).

    Returns
    -------
    xarray.Dataset
        One variable named after the outcome, dims ``chain, draw, neighbourhood``.
    """
    import xarray as xr

    from hierarchy.likelihood.jaxmodel import ROW_PARAMS
    from hierarchy.likelihood.model import observed_name

    rows = np.asarray(idata.constant_data["neighbourhood"].to_numpy()).astype(str)
    if len(design.row_ids) != len(rows) or not np.array_equal(np.asarray(design.row_ids).astype(str), rows):
        raise FitFileError("the data's rows are not the rows this fit was made from (a different "
                           "table, or a different model's rows); pass the table used to fit it")
    step = step or _loglik_step(idata, len(rows))
    post = idata.posterior
    chains = post.sizes["chain"]
    kept = post["draw"].to_numpy()[::step]
    flat = {}
    for k in ROW_PARAMS:
        if k in post and k not in PER_ROW:
            v = post[k].transpose("chain", "draw", ...).to_numpy()[:, ::step]
            flat[k] = v.reshape((-1,) + v.shape[2:])
    ll = pointwise_log_likelihood(spec, design, flat).reshape(chains, len(kept), len(rows))
    return xr.Dataset({observed_name(spec): (("chain", "draw", "neighbourhood"), ll)},
                      coords={"chain": post["chain"].to_numpy(), "draw": kept,
                              "neighbourhood": idata.constant_data["neighbourhood"].to_numpy()})


def add_log_likelihood(idata, data: Any, *, columns: Any = None):
    """A copy of a fit with its pointwise log-likelihood recomputed from the data (in memory only).

    Use it where the data are (the secure environment) for LOO and power-scaling; never save the
    result for sharing: with the log-likelihood the counts can be rebuilt.

    Parameters
    ----------
    idata : arviz.InferenceData
        A loaded fit (not a stage view of a stacked fit).
    data : str, os.PathLike, pandas.DataFrame or hierarchy.language.design.Design
        The table the fit was made from (its data hash must match), or its design.
    columns : str or os.PathLike, optional
        Column map of the table.

    Returns
    -------
    arviz.InferenceData
        With a ``log_likelihood`` group (an existing one is kept as it is).
    """
    import arviz as az

    if "log_likelihood" in idata.groups():
        return idata
    spec, _ = fit_spec(idata)
    design = data if isinstance(data, Design) else design_of(idata, data, columns, spec)
    groups = {g: idata[g] for g in idata.groups()}
    groups["log_likelihood"] = log_likelihood_dataset(idata, design, spec=spec)
    return az.InferenceData(**groups)


def design_of(idata, data: Any, columns: Any, spec: ModelSpec) -> Design:
    """Design of the table a fit was made from, refused unless its data hash is the fit's."""
    import pandas as pd

    from hierarchy.data import table as data_mod
    from hierarchy.language.design import build_design

    if isinstance(data, pd.DataFrame):
        table = data
    else:
        cmap = data_mod.load_column_map(columns) if columns else None
        table = data_mod.load(data, columns=cmap, **spec.data_columns)
    prov = provenance(idata)
    have, want = data_mod.data_hash(table, **spec.hashed_columns), prov["data_hash"]
    if have != want:
        raise FitFileError(f"the data given (hash {have}) are not the data this fit was made from "
                           f"(hash {want}); pass the table used to fit it")
    return build_design(table, spec, graph=graph_of(prov, table) if getattr(spec, "spatial", None) else None)


def graph_of(prov: dict[str, Any], table: Any):
    """The neighbourhood graph a spatial fit was made with, rebuilt for ``table`` from the map it recorded
    (its ``--geography`` file, else the default map) and checked against the recorded hash."""
    from hierarchy.data import geography

    record = prov.get("graph") or {}
    graph = geography.table_graph(table, record.get("file"))
    if record.get("hash") and geography.graph_hash(graph) != record["hash"]:
        raise FitFileError(f"the neighbourhood graph rebuilt now ({graph.source}) is not the one this fit was "
                           f"made with ({record.get('source')}); give the same map (--geography) and table")
    return graph


# ---------------------------------------------------------------------------- seal


def _canonical_bytes(values: np.ndarray) -> bytes:
    """Bytes of an array that survive the netCDF round trip (dtype widths, bool, strings)."""
    a = np.asarray(values)
    if a.dtype.kind in "biu":
        return np.ascontiguousarray(a, dtype="<i8").tobytes()
    if a.dtype.kind == "f":
        return np.ascontiguousarray(a, dtype="<f8").tobytes()
    return "\x1f".join(str(v) for v in a.ravel()).encode("utf-8")


def content_hash(idata) -> str:
    """SHA-256 of a fit's provenance and of every variable and coordinate of every group.

    Names, dimensions, shapes and values are covered; values are hashed as 64-bit numbers or
    text, so the hash is the same before and after a netCDF round trip.
    """
    import hashlib

    h = hashlib.sha256()
    h.update(str(idata.posterior.attrs.get("hierarchy", "")).encode("utf-8"))
    for group in sorted(idata.groups()):
        ds = idata[group]
        for name in sorted(map(str, ds.variables)):
            da = ds[name]
            h.update(f"\n{group}/{name}{tuple(da.dims)}{tuple(da.shape)}".encode())
            h.update(_canonical_bytes(da.to_numpy()))
    return h.hexdigest()


def seal(idata):
    """Store :func:`content_hash` in ``posterior.attrs`` (returns ``idata``)."""
    idata.posterior.attrs.pop(SEAL_ATTR, None)
    idata.posterior.attrs[SEAL_ATTR] = content_hash(idata)
    return idata


def _check_seal(idata, path: Path) -> None:
    stored = idata.posterior.attrs.get(SEAL_ATTR)
    if stored is None:
        raise FitFileError(f"{path}: has no content seal ('{SEAL_ATTR}'): it was made by an older "
                           "version of hierarchy (whose fit files also carried the disclosive "
                           "pointwise log-likelihood) or the seal was removed. Refit it.")
    if content_hash(idata) != stored:
        raise FitFileError(f"{path}: its content does not match its seal: the provenance (e.g. the "
                           "diagnostics or a design constant) or the draws were edited after "
                           "the fit was saved, or the file is damaged. Refusing it: refit.")


def _check_keys(prov: dict[str, Any], path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in prov]
    design = prov.get("design")
    if isinstance(design, dict):
        missing += [f"design.{k}" for k in REQUIRED_DESIGN_KEYS if k not in design]
    elif "design" not in missing:
        missing.append("design (not a table)")
    if missing:
        raise FitFileError(f"{path}: the provenance lacks {', '.join(missing)}; the file was "
                           "edited or damaged (or made by an older version). Refit it.")


def _check_groups(idata, prov: dict[str, Any], spec: ModelSpec, path: Path) -> None:
    """Refuse a file whose groups or row data say more than its flags: a "shareable" file may hold no
    observed data, no log-likelihood and no row array that is not public."""
    problems = []
    if "observed_data" in idata.groups() and not prov["include_data"]:
        problems.append("an observed_data group that its provenance says it does not hold")
    if "log_likelihood" in idata.groups() and not prov["include_log_likelihood"]:
        problems.append("a log_likelihood group that its provenance says it does not hold")
    if prov["private_row_data"] != private_row_data(spec):
        problems.append("a list of private row data that is not its model's")
    if "constant_data" in idata.groups():
        held = set(map(str, idata.constant_data.data_vars))
        extra = sorted(held & set(prov["private_row_data"]))
        g_of = {f"{g}_of" for g, _ in spec.groups}
        allowed = {"deprivation", "exposure", "la_of", "la_deprivation", "z", "stage", "stratum", "row_X",
                   "la_covariates"} | g_of
        extra += sorted(held - allowed)
        if extra:
            problems.append(f"row data that are not public ({', '.join(extra)})")
    flagged = prov["include_data"] or prov["include_log_likelihood"] or bool(prov["disclosure_risks"])
    if prov["shareable"] == flagged:
        problems.append(f"a 'shareable: {str(prov['shareable']).lower()}' flag that its content contradicts")
    if problems:
        raise FitFileError(f"{path}: holds {'; '.join(problems)}: the file was edited. Refusing it: refit.")


def _close(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))


def _check_constants(idata, prov: dict[str, Any], spec: ModelSpec, path: Path) -> None:
    """Recompute every design constant the stored public data determine and refuse a mismatch.

    The seal is a plain hash anyone can recompute, so an edited constant (e.g. ``X_mean``, which moves
    every "10 points less/more" estimand) resealed would pass it; the constants are therefore derived
    again from ``constant_data`` (LA deprivation from the rows, ``X_mean``, ``z``, ``x_mean``, the LA
    covariates' centre and scale, the numbers of rows and LAs), as the diagnostics are from the draws.
    """
    from hierarchy.disclosure import public_column
    from hierarchy.language.design import z_of

    des, cd = prov["design"], idata.constant_data
    bad = []
    if des["n_rows"] != cd.sizes.get("neighbourhood") or des["n_la"] != cd.sizes.get("la"):
        bad.append("the numbers of rows and LAs")
    la_X = cd["la_deprivation"].to_numpy().astype(float)
    if not _close(des["X_mean"], la_X.mean()):
        bad.append("X_mean (the mean LA deprivation)")
    if not _close(cd["z"].to_numpy(), z_of(la_X, float(la_X.mean()), spec)):
        bad.append("z (the transformed LA deprivation)")
    if "exposure" in cd and spec.exposure == "exposure":  # children weight the means
        import pandas as pd

        x, weight = cd["deprivation"].to_numpy().astype(float), cd["exposure"].to_numpy().astype(float)
        if not _close(des["x_mean"], np.sum(weight * x) / weight.sum()):
            bad.append("x_mean (the child-weighted mean deprivation)")
        if spec.la_deprivation.measure == "mean":
            la = pd.Index(cd["la"].to_numpy().astype(str)).get_indexer(cd["la_of"].to_numpy().astype(str))
            rows = np.bincount(la, weight * x, len(la_X)) / np.bincount(la, weight, len(la_X))
            if (la < 0).any() or not _close(rows, la_X):
                bad.append("la_deprivation (the child-weighted LA means of the rows)")
    if "la_covariates" in cd:
        raw = cd["la_covariates"].to_numpy().astype(float)
        sd = raw.std(axis=0)
        if not (_close(des["la_cov_center"], raw.mean(axis=0))
                and _close(des["la_cov_scale"], np.where(sd > 0, sd, 1.0))):
            bad.append("la_cov_center / la_cov_scale (the LA covariates' centre and scale)")
    elif spec.la.covariates and all(map(public_column, spec.la.covariates)):
        bad.append("the LA covariates (missing)")
    if bad:
        raise FitFileError(f"{path}: its stored design constants are not those of its own data: "
                           f"{', '.join(bad)}. The file was edited (and resealed). Refusing it: refit.")


def checked_diagnostics(idata) -> dict[str, Any]:
    """The stored diagnostics, refused unless the draws give the same verdict and figures.

    Recomputes :func:`hierarchy.inference.diagnostics.diagnose` from the posterior and sample stats of a
    fit as loaded (not a stage view), so a verdict edited and resealed is still caught.

    Raises
    ------
    FitFileError
        When the stored verdict or figures differ from those of the draws.
    """
    from hierarchy.inference.diagnostics import diagnose

    prov = provenance(idata)
    stored = prov["diagnostics"]
    settings = prov.get("sampler", {})
    fresh = diagnose(idata, approximate=bool(stored.get("approximate", False)),
                     max_tree_depth=settings.get("max_tree_depth", 10))
    same = fresh.get("status") == stored.get("status")
    for key in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "bfmi_min"):
        a, b = fresh.get(key), stored.get(key)
        if (a is None) != (b is None) or (a is not None and not np.isclose(
                float(a), float(b), rtol=1e-6, atol=1e-9, equal_nan=True)):
            same = False
    if not same:
        raise FitFileError(f"the stored diagnostics ({stored.get('status')}: "
                           f"{'; '.join(stored.get('reasons', [])) or 'no reasons'}) are not those of "
                           f"the draws ({fresh['status']}: {'; '.join(fresh['reasons']) or 'no reasons'})"
                           ": the fit file was edited. Refusing it: refit.")
    return stored


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _log_prior(posterior: dict[str, np.ndarray], priors: PriorSet):
    """Log prior density of each hyperparameter draw (for power-scaling sensitivity), in one compiled
    program (op by op, JAX compiled each density's few operations one at a time: ~10% of a small fit's wall)."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as nd
    import xarray as xr

    from hierarchy.likelihood.parameters import prior_groups

    groups = {var: group for var, group in prior_groups().items() if var in posterior}
    values = {var: jnp.asarray(posterior[var]) for var in [*groups, "la_corr"] if var in posterior}

    @jax.jit
    def densities(v: dict) -> dict:
        out = {var: priors[group].numpyro().log_prob(v[var]).reshape(v[var].shape[:2] + (-1,)).sum(-1)
               for var, group in groups.items()}
        if "la_corr" in v:
            out["la_corr"] = nd.LKJ(v["la_corr"].shape[-1], priors["la_corr"].params["eta"]).log_prob(v["la_corr"])
        return out

    return xr.Dataset({var: (("chain", "draw"), np.asarray(lp)) for var, lp in densities(values).items()})


def save_fit(idata, path: str | Path) -> Path:
    """Write ``idata`` to ``path`` atomically: a temporary file beside it, then a rename."""
    from hierarchy.paths import atomic_path  # removes leftovers of killed writes, cleans up on failure

    path = Path(path)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return path


def provenance(idata) -> dict[str, Any]:
    """The provenance dict stored in a fit (a copy; a :class:`hierarchy.results.fit.Fit` gives its own)."""
    held = getattr(idata, "provenance", None)
    if isinstance(held, dict):
        return json.loads(json.dumps(held))
    try:
        return json.loads(idata.posterior.attrs["hierarchy"])
    except (KeyError, AttributeError, json.JSONDecodeError) as err:
        raise FitFileError("not a hierarchy fit: the posterior has no readable 'hierarchy' "
                           f"provenance attribute ({err.__class__.__name__})") from None


def load_fit(path: str | Path, *, model: str | Path | ModelSpec | None = None,
             priors: str | Path | PriorSet | None = None, data_hash: str | None = None):
    """Load a fit, check its provenance and seal, and refuse it if it does not match the given files.

    Raises
    ------
    FitFileError
        When the file is missing, unreadable, of another format, lacks a provenance key, does
        not match its seal (edited after saving), or was fitted with other files.
    """
    import arviz as az

    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    path = Path(path)
    if not path.exists():
        raise FitFileError(f"{path}: no such fit file")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    except Exception as err:  # netCDF/HDF5 raise many types for a damaged file
        raise FitFileError(f"{path}: cannot be read as a fit file (corrupt or truncated?): "
                           f"{err.__class__.__name__}: {err}") from None
    if "posterior" not in idata.groups():
        raise FitFileError(f"{path}: has no posterior group; not a hierarchy fit")
    prov = provenance(idata)
    if not isinstance(prov, dict):
        raise FitFileError(f"{path}: its provenance is not a table; the file was edited or damaged")
    if prov.get("kind") == "panel":
        raise FitFileError(f"{path}: a panel fit (hierarchy fit --model panel_*): hierarchy summary prints it; "
                           "report, predict and compare-models take neighbourhood fits")
    if prov.get("format") != FORMAT:
        raise FitFileError(f"{path}: fit file format {prov.get('format')!r}, this version reads "
                           f"format {FORMAT} (sealed, no log-likelihood unless asked for). Refit it.")
    _check_keys(prov, path)
    _check_seal(idata, path)
    spec = ModelSpec.from_dict(prov["model_spec"], source=f"{path} (stored spec)")
    _check_groups(idata, prov, spec, path)
    _check_constants(idata, prov, spec, path)
    pset = PriorSet.from_dict(prov["priors"], source=f"{path} (stored priors)")
    if spec.hash() != prov["model_hash"] or pset.hash() != prov["priors_hash"]:
        raise FitFileError(f"{path}: stored model/prior hashes do not match the stored files; "
                           "the provenance was edited or damaged. Refit.")
    checks = []
    if model is not None:
        want = model if isinstance(model, ModelSpec) else load_spec(model)
        checks.append(("model", want.hash(), spec.hash(), want.name, spec.name))
    if priors is not None:
        want = priors if isinstance(priors, PriorSet) else load_priors(priors)
        checks.append(("prior set", want.hash(), pset.hash(), want.name, pset.name))
    if data_hash is not None:
        checks.append(("data", data_hash, prov["data_hash"], data_hash, prov["data_hash"]))
    for what, want_h, have_h, want_n, have_n in checks:
        if want_h != have_h:
            raise FitFileError(f"{path} was fitted with {what} '{have_n}' (hash {have_h}), which "
                               f"differs from '{want_n}' (hash {want_h}); refit with "
                               f"hierarchy fit, or pair it with the {what} it was made with")
    return idata


def fit_spec(idata) -> tuple[ModelSpec, PriorSet]:
    """The model spec and prior set a fit was made with (read once by :func:`hierarchy.results.fit.as_fit`)."""
    if isinstance(getattr(idata, "spec", None), ModelSpec):
        return idata.spec, idata.priors
    prov = provenance(idata)
    return ModelSpec.from_dict(prov["model_spec"]), PriorSet.from_dict(prov["priors"])


def list_fits(folder: str | Path) -> str:
    """A table of the fits in ``folder``: model, priors, sampler, date, diagnostics, shareable.

    Every file is checked as :func:`load_fit` checks it; a file that fails is listed as refused,
    with the reason, never with the verdict it claims.
    """
    rows = []
    for p in sorted(Path(folder).glob("*.nc")):
        try:
            idata = load_fit(p)
            checked_diagnostics(idata)  # as summary and report do: a resealed verdict is refused here too
            prov = provenance(idata)
            rows.append((p.name, prov["model_spec"]["name"], prov["priors"]["name"],
                         prov["sampler"].get("sampler", "?"), prov["created"][:16],
                         prov["diagnostics"]["status"], "yes" if prov.get("shareable") else "NO"))
        except FitFileError as err:
            rows.append((p.name, "?", "?", "?", "?", f"refused: {str(err).removeprefix(f'{p}: ')[:90]}", "?"))
        except Exception as err:
            rows.append((p.name, "?", "?", "?", "?", f"unreadable ({err.__class__.__name__})", "?"))
    if not rows:
        return f"no fits in {folder}"
    head = ("fit", "model", "priors", "sampler", "created", "diagnostics", "shareable")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in [head, *rows])

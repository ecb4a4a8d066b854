"""Fit files: ArviZ InferenceData netCDF with provenance, written atomically.

Groups: ``posterior``, ``sample_stats``, ``log_likelihood`` (pointwise, for LOO; thinned to at
most :data:`LOGLIK_MAX_VALUES` values), ``log_prior`` (per hyperparameter, for power-scaling),
``constant_data`` (covariates and exposures: no outcomes) and, only when asked,
``observed_data``. ``posterior.attrs["hierarchy"]`` holds the provenance as JSON: model spec,
prior set, their hashes, the data hash, column map, sampler settings, seed, versions, timings
and diagnostics.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from hierarchy.design import Design
from hierarchy.errors import FitFileError
from hierarchy.priors import PriorSet, config_hash
from hierarchy.sampling import PER_ROW, Draws
from hierarchy.spec import ModelSpec

FORMAT = 1
LOGLIK_MAX_VALUES = 25_000_000  # ~100 MB of float32


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
                include_data: bool = False, diagnostics: dict | None = None):
    """Assemble InferenceData with every group and the provenance attributes."""
    import arviz as az
    import xarray as xr

    from hierarchy.diagnostics import diagnose
    from hierarchy.jaxmodel import pointwise_loglik
    from hierarchy.model import coords, dims, observed_name

    crd = coords(spec, design)
    crd["coef_"] = crd["coef"]
    if "la_effect" in crd:
        crd["la_effect_"] = crd["la_effect"]
    post = {k: v for k, v in draws.posterior.items() if k not in PER_ROW}
    idata = az.from_dict(posterior=post, sample_stats=draws.stats or None, coords=crd,
                         dims={k: v for k, v in dims(spec).items() if k in post})
    obs = observed_name(spec)
    chains, n_draw = next(iter(post.values())).shape[:2]
    step = max(1, int(np.ceil(chains * n_draw * len(design.y) / LOGLIK_MAX_VALUES)))
    flat = {k: v[:, ::step].reshape((-1,) + v.shape[2:]) for k, v in draws.posterior.items()}
    ll = pointwise_loglik(spec, design, flat).reshape(chains, -1, len(design.y))
    kept = np.arange(n_draw)[::step]
    idata.add_groups(
        log_likelihood=xr.Dataset({obs: (("chain", "draw", "neighbourhood"), ll)},
                                  coords={"chain": np.arange(chains), "draw": kept,
                                          "neighbourhood": crd["neighbourhood"]}),
        log_prior=_log_prior(draws.posterior, priors),
        constant_data=xr.Dataset(
            {"deprivation": ("neighbourhood", design.x),
             "exposure": ("neighbourhood", np.exp(design.log_exposure)),
             "la_of": ("neighbourhood", design.la_codes[design.la_index]),
             "la_deprivation": ("la", design.la_X), "z": ("la", design.z),
             "stage": ("neighbourhood", np.array(design.stage_names)[design.stage_index]),
             "stratum": ("neighbourhood", np.array(design.stratum_names)[design.stratum_index]),
             **({"row_X": (("neighbourhood", "row_term"), design.row_X)} if design.row_names else {}),
             **{f"{g}_of": ("neighbourhood", lv[ix]) for g, lv, ix in
                zip(design.group_names, design.group_levels, design.group_index, strict=True)}},
            coords={"neighbourhood": crd["neighbourhood"], "la": crd["la"],
                    **({"row_term": list(design.row_names)} if design.row_names else {})}),
    )
    if include_data:
        idata.add_groups(observed_data=xr.Dataset(
            {obs: ("neighbourhood", design.y)},
            coords={"neighbourhood": crd["neighbourhood"]}))
    approximate = draws.settings.get("sampler") in ("pathfinder", "advi")
    if diagnostics is None:
        diagnostics = diagnose(idata, approximate=approximate,
                               max_tree_depth=draws.settings.get("max_tree_depth", 10))
    prov = {
        "format": FORMAT,
        "model_spec": spec.to_dict(), "model_hash": spec.hash(), "formula": spec.formula_text,
        "priors": priors.to_dict(), "priors_hash": priors.hash(),
        "config_hash": config_hash([spec.hash(), priors.hash()]),
        "data_hash": data_hash, "data_source": str(data_source), "column_map": column_map,
        "sampler": draws.settings, "seed": draws.settings.get("seed"),
        "timings": draws.timings, "versions": versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "include_data": include_data, "log_likelihood_thinned_by": step,
        "design": {"X_mean": design.X_mean, "x_mean": design.x_mean,
                   "la_cov_center": design.la_cov_center.tolist(),
                   "la_cov_scale": design.la_cov_scale.tolist(), "n_rows": int(len(design.y)),
                   "n_la": design.n_la},
        "diagnostics": diagnostics,
    }
    idata.posterior.attrs["hierarchy"] = json.dumps(prov, default=_json_default)
    return idata


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _log_prior(posterior: dict[str, np.ndarray], priors: PriorSet):
    """Log prior density of each hyperparameter draw (for power-scaling sensitivity)."""
    import jax.numpy as jnp
    import numpyro.distributions as nd
    import xarray as xr

    groups = {"intercept": "intercept", "gradient": "gradient",
              "la_deprivation": "la_deprivation", "cross_level": "cross_level",
              "la_cov_intercept": "la_covariates", "la_cov_gradient": "la_covariates",
              "stratum_intercept_offset": "stratum_effects", "stratum_gradient_offset": "stratum_effects",
              "la_sd": "la_sd", "la_loading": "la_loading", "la_stage_sd": "la_stage_sd",
              "msoa_sd": "msoa_sd", "dispersion": "dispersion",
              "obs_sd": "obs_sd"}
    out = {}
    for var, group in groups.items():
        if var in posterior:
            v = jnp.asarray(posterior[var])
            lp = priors[group].numpyro().log_prob(v)
            out[var] = (("chain", "draw"), np.asarray(lp.reshape(v.shape[:2] + (-1,)).sum(-1)))
    if "la_corr" in posterior:
        d = nd.LKJ(posterior["la_corr"].shape[-1], priors["la_corr"].params["eta"])
        out["la_corr"] = (("chain", "draw"), np.asarray(d.log_prob(jnp.asarray(posterior["la_corr"]))))
    return xr.Dataset(out)


def save_fit(idata, path: str | Path) -> Path:
    """Write ``idata`` to ``path`` atomically: a temporary file beside it, then a rename."""
    from hierarchy.paths import atomic_path  # removes leftovers of killed writes, cleans up on failure

    path = Path(path)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return path


def provenance(idata) -> dict[str, Any]:
    """The provenance dict stored in a fit."""
    try:
        return json.loads(idata.posterior.attrs["hierarchy"])
    except (KeyError, AttributeError, json.JSONDecodeError) as err:
        raise FitFileError("not a hierarchy fit: the posterior has no readable 'hierarchy' "
                           f"provenance attribute ({err.__class__.__name__})") from None


def load_fit(path: str | Path, *, model: str | Path | ModelSpec | None = None,
             priors: str | Path | PriorSet | None = None, data_hash: str | None = None):
    """Load a fit, check its provenance, and refuse it if it does not match the given files."""
    import arviz as az

    from hierarchy.priors import load_priors
    from hierarchy.spec import load_spec

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
    spec = ModelSpec.from_dict(prov["model_spec"], source=f"{path} (stored spec)")
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
    """The model spec and prior set a fit was made with."""
    prov = provenance(idata)
    return ModelSpec.from_dict(prov["model_spec"]), PriorSet.from_dict(prov["priors"])


def list_fits(folder: str | Path) -> str:
    """A table of the fits in ``folder``: model, priors, sampler, date, diagnostics status."""
    import xarray as xr

    rows = []
    for p in sorted(Path(folder).glob("*.nc")):
        try:
            with xr.open_dataset(p, group="posterior", engine="h5netcdf") as ds:
                prov = json.loads(ds.attrs["hierarchy"])
            rows.append((p.name, prov["model_spec"]["name"], prov["priors"]["name"],
                         prov["sampler"].get("sampler", "?"), prov["created"][:16],
                         prov["diagnostics"]["status"]))
        except Exception as err:
            rows.append((p.name, "?", "?", "?", "?", f"unreadable ({err.__class__.__name__})"))
    if not rows:
        return f"no fits in {folder}"
    head = ("fit", "model", "priors", "sampler", "created", "diagnostics")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in [head, *rows])

"""From a validated neighbourhood table and a model spec to the arrays a model needs.

Centring (DESIGN section 3): with neighbourhood deprivation ``x`` and LA deprivation ``X``,
``w = (x - X) / scale`` (within) and ``z = log(X / mean X)`` or ``(X - mean X) / scale`` (between,
by the spec's transform). ``mean X`` is the unweighted mean over LAs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.spec import ModelSpec


@dataclass(frozen=True)
class Design:
    """Model inputs as numpy arrays; rows keep the table's order."""

    y: np.ndarray  # (n,) int counts of the outcome
    log_exposure: np.ndarray  # (n,)
    x: np.ndarray  # (n,) neighbourhood deprivation (proportion)
    w: np.ndarray  # (n,) centred neighbourhood deprivation, per `scale`
    la_index: np.ndarray  # (n,) int
    la_codes: np.ndarray  # (n_la,) str
    la_X: np.ndarray  # (n_la,) LA deprivation (proportion)
    X_mean: float
    z: np.ndarray  # (n_la,) transformed, centred LA deprivation
    la_cov: np.ndarray  # (n_la, k) LA covariates, standardised
    la_cov_names: tuple[str, ...]
    la_cov_center: np.ndarray  # (k,) means used to standardise
    la_cov_scale: np.ndarray  # (k,) sds used to standardise
    row_ids: np.ndarray  # (n,) str neighbourhood (x stratum) identifiers
    msoa_index: np.ndarray | None
    msoa_codes: np.ndarray | None
    x_mean: float  # exposure-weighted mean of x (grand-mean centring)

    @property
    def n_la(self) -> int:
        return len(self.la_codes)

    @property
    def rows_per_la(self) -> float:
        return float(np.median(np.bincount(self.la_index, minlength=self.n_la)))


def z_of(X: np.ndarray | float, X_mean: float, spec: ModelSpec) -> np.ndarray:
    """Transformed, centred LA deprivation for LA deprivation ``X`` (proportion)."""
    X = np.asarray(X, dtype=float)
    if spec.la_deprivation.transform == "log":
        if np.any(X <= 0):
            raise HierarchyError("log LA deprivation needs LA deprivation > 0")
        return np.log(X / X_mean)
    return (X - X_mean) / spec.deprivation.scale


def w_of(x: np.ndarray | float, X: np.ndarray | float, x_mean: float, spec: ModelSpec) -> np.ndarray:
    """Centred neighbourhood deprivation for ``x`` in an LA of deprivation ``X``."""
    ref = X if spec.deprivation.centring == "within_between" else x_mean
    return (np.asarray(x, dtype=float) - ref) / spec.deprivation.scale


def build_design(table: pd.DataFrame, spec: ModelSpec) -> Design:
    """Arrays for ``spec`` from a validated canonical table (see :mod:`hierarchy.data`)."""
    needed = ["la", "neighbourhood", "deprivation", spec.exposure, spec.outcome,
              *spec.la.covariates]
    if spec.la_deprivation.measure != "mean":
        needed.append(spec.la_deprivation.measure)
    if spec.msoa.random_intercept:
        needed.append("msoa")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise HierarchyError(f"model '{spec.name}' needs column(s) {', '.join(missing)} that the "
                             f"data lacks (has: {', '.join(map(str, table.columns))})")
    la_codes, la_index = np.unique(table["la"].astype(str).to_numpy(), return_inverse=True)
    exposure = table[spec.exposure].to_numpy(dtype=float)
    x = table["deprivation"].to_numpy(dtype=float)
    y = table[spec.outcome].to_numpy()
    if np.any(exposure <= 0):
        raise HierarchyError("exposure must be > 0 in every modelled row; validate the data "
                             "first (hierarchy validate) and drop empty rows with --drop-invalid")
    n_la = len(la_codes)
    if spec.la_deprivation.measure == "mean":
        la_X = np.bincount(la_index, exposure * x, n_la) / np.bincount(la_index, exposure, n_la)
    else:
        la_X = _la_level(table[spec.la_deprivation.measure].to_numpy(dtype=float), la_index, n_la)
    X_mean = float(la_X.mean())
    x_mean = float(np.sum(exposure * x) / exposure.sum())
    z = z_of(la_X, X_mean, spec)
    w = w_of(x, la_X[la_index], x_mean, spec)
    cov = np.column_stack([_la_level(table[c].to_numpy(dtype=float), la_index, n_la)
                           for c in spec.la.covariates]) if spec.la.covariates else np.zeros((n_la, 0))
    center, scale = cov.mean(axis=0), cov.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    strata = [c for c in ("age_band", "sex", "ethnicity", "need", "stage") if c in table.columns]
    ids = table["neighbourhood"].astype(str)
    for c in strata:
        ids = ids + "|" + table[c].astype(str)
    msoa_index = msoa_codes = None
    if spec.msoa.random_intercept:
        msoa_codes, msoa_index = np.unique(table["msoa"].astype(str).to_numpy(), return_inverse=True)
    return Design(y=y.astype(np.int64), log_exposure=np.log(exposure), x=x, w=w, la_index=la_index,
                  la_codes=la_codes, la_X=la_X, X_mean=X_mean, z=z, la_cov=(cov - center) / scale,
                  la_cov_names=tuple(spec.la.covariates), la_cov_center=center, la_cov_scale=scale,
                  row_ids=ids.to_numpy(), msoa_index=msoa_index, msoa_codes=msoa_codes,
                  x_mean=x_mean)


def _la_level(values: np.ndarray, la_index: np.ndarray, n_la: int) -> np.ndarray:
    """One value per LA from a column that must be constant within each LA."""
    out = np.full(n_la, np.nan)
    out[la_index] = values
    if not np.allclose(values, out[la_index], equal_nan=True):
        raise HierarchyError("an LA-level column varies within an LA; run hierarchy validate")
    return out

"""Held-out LAs' rows for cross-validation by LA (:mod:`hierarchy.results.cv`).

The rows of LAs a fit has not seen, as that fit sees a new LA (:func:`heldout_rows`: deprivation
centred with the training constants, strata and group levels the training fit's); every LA of a
fit's own design (:func:`own_rows`, for the integrated leave-one-LA-out log-likelihood); the rows of
some LAs of a design fitted with those rows masked (:func:`heldout_within`, batched refits); and which
models' LA effects cannot be integrated for a held-out LA (:func:`integration_unsupported`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, build_design, w_of, z_of
from hierarchy.likelihood import families

__all__ = ["HeldOut", "heldout_rows", "heldout_within", "integration_unsupported", "own_rows",
           "refuse_unsupported"]


@dataclass(frozen=True)
class HeldOut:
    """The rows of held-out LAs, centred with a training fit's constants.

    Attributes
    ----------
    las : numpy.ndarray
        Held-out LA codes (``J``), in code order.
    rows : dict
        Row arrays for :func:`hierarchy.likelihood.predictor.linear_predictor` (``la_index`` into
        ``las``; other indices into the training fit's levels).
    y : numpy.ndarray
        Observed counts of the rows.
    la_design : numpy.ndarray
        ``(n, E)``: what multiplies each LA effect in a row's linear predictor (1, and ``w`` for
        the LA gradient).
    z, la_cov : numpy.ndarray
        LA deprivation (transformed, centred as in training) and standardised LA covariates of the
        held-out LAs, ``(J,)`` and ``(J, k)``.
    n_rows : int
    """

    las: np.ndarray
    rows: dict
    y: np.ndarray
    la_design: np.ndarray
    z: np.ndarray
    la_cov: np.ndarray
    n_rows: int


def integration_unsupported(spec) -> str | None:
    """Why a model's LA effects cannot be integrated for a held-out LA (None: they can)."""
    try:
        refuse_unsupported(spec, "")
    except HierarchyError as e:
        return str(e).split(": ", 2)[-1].split(". Use --cv")[0]
    return None


def refuse_unsupported(spec, what: str) -> None:
    why = None
    if spec.stacked:
        why = "its stages are stacked (one LA effect per stage)"
    elif (refusal := families.get(spec.family).laplace_refusal) is not None:  # quadrature at a Newton mode
        why = refusal
    elif spec.msoa.random_intercept:
        why = "it has MSOA effects: a held-out LA's MSOAs are new and their effects would need integrating too"
    if why:
        raise HierarchyError(f"{what}: cross-validation by LA with refits is not available for model "
                             f"'{spec.name}': {why}. Use --cv rows, or --cv la with --max-refits 0 "
                             "(PSIS only).")


def heldout_rows(table: pd.DataFrame, spec, train: Design) -> HeldOut:
    """Rows of the LAs in ``table`` as a fit on ``train`` sees new LAs.

    Deprivation is centred with the training constants (``X_mean``, ``x_mean``, covariate centres
    and scales), as :func:`hierarchy.results.predict.predict` does for a new LA; strata and other
    group levels are those of the training fit.

    Parameters
    ----------
    table : pandas.DataFrame
        The held-out LAs' rows (canonical columns).
    spec : ModelSpec
    train : Design
        Design of the training table.

    Returns
    -------
    HeldOut
    """
    refuse_unsupported(spec, "held-out LAs")
    own = build_design(table, spec)  # y, x, LA deprivation and levels of the held-out rows
    if set(own.la_codes) & set(train.la_codes):
        raise HierarchyError("held-out LAs are also in the training data: "
                             f"{', '.join(sorted(set(own.la_codes) & set(train.la_codes))[:5])}")
    z = z_of(own.la_X, train.X_mean, spec)
    w = w_of(own.x, own.la_X[own.la_index], train.x_mean, spec)
    cov = own.la_cov * own.la_cov_scale + own.la_cov_center  # the raw LA covariates
    cov = (cov - train.la_cov_center) / train.la_cov_scale
    values = {"w": w, "z": z[own.la_index], **{c: table[c].to_numpy(dtype=float) for c in spec.row_columns}}
    row_X = np.column_stack([np.prod([values[c] for c in t.split(":")], axis=0) for t in spec.row_terms]) \
        if spec.row_terms else np.zeros((len(w), 0))
    stratum = _map_levels(np.asarray(own.stratum_names)[own.stratum_index], train.stratum_names, "stratum")
    groups = tuple((g, _map_levels(lv[ix], tl, f"level of {g}"))
                   for g, lv, ix, tl in zip(own.group_names, own.group_levels, own.group_index,
                                            train.group_levels, strict=True))
    rows = {"la_index": own.la_index, "stage_index": own.stage_index, "stratum_index": stratum,
            "log_exposure": own.log_exposure, "w": w, "row_X": row_X, "groups": groups}
    la_design = np.column_stack([np.ones_like(w), w][:len(spec.coefs)])
    return HeldOut(las=own.la_codes, rows=rows, y=own.y, la_design=la_design, z=z, la_cov=cov,
                   n_rows=len(w))


def own_rows(design: Design, spec) -> HeldOut:
    """Every LA of a fit's own design as :class:`HeldOut` rows (its own centring), for the integrated
    leave-one-LA-out log-likelihood of the fit
    (:func:`~hierarchy.results.cv_predictive.la_integrated_log_likelihood`)."""
    refuse_unsupported(spec, "leave-one-LA-out")
    rows = {"la_index": design.la_index, "stage_index": design.stage_index,
            "stratum_index": design.stratum_index, "log_exposure": design.log_exposure, "w": design.w,
            "row_X": design.row_X, "groups": tuple(zip(design.group_names, design.group_index, strict=True))}
    return HeldOut(las=design.la_codes, rows=rows, y=design.y,
                   la_design=np.column_stack([np.ones_like(design.w), design.w][:len(spec.coefs)]),
                   z=design.z, la_cov=design.la_cov, n_rows=len(design.y))


def _map_levels(values: np.ndarray, levels: Sequence[str], what: str) -> np.ndarray:
    pos = {str(v): i for i, v in enumerate(levels)}
    out = np.array([pos.get(str(v), -1) for v in values], dtype=np.int64)
    if (out < 0).any():
        missing = sorted({str(v) for v, o in zip(values, out, strict=True) if o < 0})
        raise HierarchyError(f"held-out LAs have a {what} the training data lack ({', '.join(missing[:3])}): "
                             "its effect would need integrating too; use fewer folds so that every "
                             "level stays in training, or --cv rows")
    return out


def heldout_within(design: Design, spec, las: Sequence[str], train: np.ndarray) -> HeldOut:
    """The rows of ``las`` in a design as :class:`HeldOut` rows of that design's own centring.

    For a fit of the whole design with those rows masked (:func:`~hierarchy.results.cv_refits.fold_data`):
    their LA deprivation and covariates are centred with the constants the fit used, and their strata
    and group levels are the fit's. A level that no training row has is refused, as :func:`heldout_rows` does.
    """
    own = own_rows(design, spec)
    pos = np.flatnonzero(np.isin(design.la_codes, [str(c) for c in las]))
    rows = np.isin(design.la_index, pos)
    new_index = np.full(design.n_la, -1)
    new_index[pos] = np.arange(len(pos))
    out = {k: (v[rows] if isinstance(v, np.ndarray) and v.shape[:1] == rows.shape else v)
           for k, v in own.rows.items() if k != "groups"}
    out["la_index"] = new_index[design.la_index[rows]]
    for name, index, levels in (("stratum", design.stratum_index, design.stratum_names),
                                *((f"level of {g}", i, lv) for g, i, lv in zip(
                                    design.group_names, design.group_index, design.group_levels, strict=True))):
        missing = sorted(set(index[rows]) - set(index[train]))
        if missing:
            raise HierarchyError(f"held-out LAs have a {name} the training data lack "
                                 f"({', '.join(str(levels[m]) for m in missing[:3])}): its effect would need "
                                 "integrating too; use fewer folds so that every level stays in training, "
                                 "or --cv rows")
    out["groups"] = tuple((g, i[rows]) for g, i in own.rows["groups"])
    return HeldOut(las=design.la_codes[pos], rows=out, y=design.y[rows], la_design=own.la_design[rows],
                   z=design.z[pos], la_cov=design.la_cov[pos], n_rows=int(rows.sum()))

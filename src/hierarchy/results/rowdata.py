"""What a fit file may hold of the data: the public row inputs, and the coefficients whose draws give
counts back (DESIGN section 10: "disclosure rule for every new term").

:func:`private_row_data` names the per-row inputs of a model that are not public (a count used as
exposure, a row term on a non-public column): they are never stored. :func:`effect_group_risks` and
:func:`term_risks` name the group levels, stratum levels and covariates that rest on too little for
their draws to be shared; :func:`hierarchy.results.fitfile.build_idata` marks such a fit disclosive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hierarchy.language.design import Design
from hierarchy.language.spec import ModelSpec

# ---------------------------------------------------------------------------- public row data


def private_row_data(spec: ModelSpec) -> list[str]:
    """The per-row inputs of ``spec`` that are not public and so are never stored in a fit file.

    A count used as exposure (``offset(log(s47))``: every neighbourhood's s47 count) and a row term
    reading a column outside :data:`hierarchy.disclosure.PUBLIC_COLUMNS` are re-read from the data
    where a command needs them (:func:`hierarchy.results.fitfile.with_row_data`), as the log-likelihood is.
    """
    from hierarchy.disclosure import public_column

    out = [] if public_column(spec.exposure) else ["exposure"]
    if any(not public_column(c) for c in spec.row_columns):
        out.append("row_X")
    return out


def public_row_data(spec: ModelSpec, design: Design, crd: dict[str, Any]):
    """The ``constant_data`` group: the public inputs per row and per LA, nothing else."""
    import xarray as xr

    from hierarchy.disclosure import public_column

    private = private_row_data(spec)
    data = {"deprivation": ("neighbourhood", design.x),
            "la_of": ("neighbourhood", design.la_codes[design.la_index]),
            "la_deprivation": ("la", design.la_X), "z": ("la", design.z),
            "stage": ("neighbourhood", np.array(design.stage_names)[design.stage_index]),
            "stratum": ("neighbourhood", np.array(design.stratum_names)[design.stratum_index]),
            **{f"{g}_of": ("neighbourhood", lv[ix]) for g, lv, ix in
               zip(design.group_names, design.group_levels, design.group_index, strict=True)}}
    if "exposure" not in private:
        data["exposure"] = ("neighbourhood", np.exp(design.log_exposure))
    coords = {"neighbourhood": crd["neighbourhood"], "la": crd["la"]}
    if design.row_names and "row_X" not in private:
        data["row_X"] = (("neighbourhood", "row_term"), design.row_X)
        coords["row_term"] = list(design.row_names)
    if len(design.la_cov_names) and all(map(public_column, design.la_cov_names)):
        raw = design.la_cov * design.la_cov_scale + design.la_cov_center
        data["la_covariates"] = (("la", "la_covariate"), raw)
        coords["la_covariate"] = list(design.la_cov_names)
    return xr.Dataset(data, coords=coords)


# ---------------------------------------------------------------------------- residual risk


def effect_group_risks(spec: ModelSpec, design: Design, posterior_names: Any = ("la_coef",), *,
                       threshold: int = 10) -> list[str]:
    """Groups whose observed totals the stored effect draws give away (counts of groups only).

    The posterior draws of a group's random effects carry the group's sufficient statistics: by
    the score identity E[d log p / d a_j] = 0 the total count of LA j (and its deprivation-weighted
    total) is the posterior mean of a function of the draws (measured: LA totals of 787-11,910
    back to within 0.1-1% from 200 draws; the error shrinks as 1/sqrt(draws)). So a group whose
    total is below ``threshold``, or which has no more rows than effects (its rows' counts solve
    from those totals), is disclosed by a fit that stores its effect draws.

    Returns
    -------
    list of str
        Plain sentences naming how many groups are at risk (empty: none).
    """
    names = set(posterior_names)
    out = []
    n_eff = 1 + int(bool(getattr(spec.la, "random_gradient", True)))
    groups = [("LA", design.la_index, n_eff)] if "la_coef" in names else []
    if design.msoa_index is not None and "msoa_raw" in names:
        groups.append(("MSOA", design.msoa_index, 1))
    for g, index, slope in zip(design.group_names, design.group_index, design.group_slope, strict=True):
        if f"{g}_raw" in names:  # any other group term: (1 | year), (1 | la:year), (1 + w | g) ...
            groups.append((f"'{g}'", index, 1 + int(slope)))
    for level, index, k in groups:
        key = index.astype(np.int64) * len(design.stage_names) + design.stage_index
        totals = np.bincount(key, weights=design.y.astype(float))
        rows = np.bincount(key)
        used = rows > 0
        small = int((used & (totals < threshold)).sum())
        few = int((used & (rows <= k)).sum())
        if small:
            out.append(f"{small} {level}(-stage) group(s) have fewer than {threshold} counts in all: "
                       f"their totals can be estimated closely from the {level} effect draws")
        if few:
            out.append(f"{few} {level}(-stage) group(s) have at most {k} row(s): their counts can be "
                       f"rebuilt from the {level} effect draws")
    return out


def term_risks(spec: ModelSpec, design: Design, *, threshold: int = 10) -> list[str]:
    """Coefficients whose rows give counts back: row terms and stratum levels (fixed effects).

    By the same score identity as :func:`effect_group_risks`, a coefficient's draws carry the total
    count of the rows its term touches (the non-zero rows of a covariate, a stratum level) and, by
    difference with the rest, of the rows it does not touch. A term is at risk when either total is
    below ``threshold`` but not zero, or when it touches a single row (whose count is then its total).

    Returns
    -------
    list of str
        Plain sentences, one per term at risk (empty: none).
    """
    out = []
    y = design.y.astype(float)
    checks = [(f"term '{t}'", design.row_X[:, j] != 0) for j, t in enumerate(design.row_names)]
    checks += [(f"stratum level '{name}'", design.stratum_index == k)
               for k, name in enumerate(design.stratum_names) if len(design.stratum_names) > 1]
    for label, touched in checks:
        for s, stage in enumerate(design.stage_names):
            here = design.stage_index == s
            inside, outside = touched & here, ~touched & here
            where = f" ({stage})" if len(design.stage_names) > 1 else ""
            if not inside.any() or not outside.any():
                continue
            small = [t for t in (y[inside].sum(), y[outside].sum()) if 0 < t < threshold]
            if int(inside.sum()) == 1 or int(outside.sum()) == 1:
                out.append(f"{label}{where} rests on a single row: its count can be rebuilt from the "
                           "coefficient's draws")
            elif small:
                out.append(f"{label}{where} separates rows holding fewer than {threshold} counts in all: "
                           "their total can be estimated closely from the coefficient's draws")
    return out

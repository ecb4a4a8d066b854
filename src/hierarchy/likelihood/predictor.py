"""The one linear predictor: log expected count of each row at one parameter point.

For row i in LA j, stage s, stratum k, MSOA m and level l of each other group g::

    eta_i = log exposure_i + a_js + a_k + (b_js + b_k) w_i + sum_t row_coef_t X_it
            + msoa_m + u_gl + v_gl w_i + eps_i + s_node(i)

(``s``: the BYM2 neighbourhood effect of the row's node, :mod:`hierarchy.likelihood.spatial`.)

Written once with array operations that numpy, ``jax.numpy`` and ``pytensor.tensor`` share
(indexing, ``+``, ``*``, ``@`` and ``xp.concatenate``), so the NumPyro density (chunk rows), the PyMC
builder, pointwise log-likelihood, prior and posterior predictive draws, estimands and SBC all call
it. ``rows`` maps names to row arrays of any one shape (the design's ``(n,)`` rows, or the chunked
layout's ``(K, C)``); :func:`design_rows` gives them for a design. ``p`` maps parameter names (the
model's variables) to values at one point.
"""

from __future__ import annotations

from typing import Any

from hierarchy.likelihood import parameters, spatial

ROW_PARAMS = parameters.names(predictor=True)
"""Parameters the predictor (and the likelihood) read, besides each group's ``{g}_raw, {g}_sd`` (a view of
the parameter table)."""


def group_params(group_names) -> tuple[str, ...]:
    """Parameter names of the other grouping columns' effects."""
    return tuple(f"{g}_{k}" for g in group_names for k in ("raw", "sd"))


def design_rows(design) -> dict[str, Any]:
    """The row arrays of a :class:`~hierarchy.language.design.Design` that the predictor reads."""
    return {"la_index": design.la_index, "stage_index": design.stage_index,
            "stratum_index": design.stratum_index, "log_exposure": design.log_exposure, "w": design.w,
            "row_X": design.row_X, "msoa_index": design.msoa_index,
            "groups": tuple(zip(design.group_names, design.group_index, strict=True)),
            "spatial": spatial.rows_of(design)}


def _with_reference(offsets, xp):
    """Offsets against the reference level, with a leading 0 for the reference itself."""
    return xp.concatenate([xp.zeros(1), offsets])


def _static_shape(x) -> tuple:
    """The shape of a numpy/JAX array, or the static shape of a PyTensor variable (which must be known)."""
    shape = getattr(getattr(x, "type", None), "shape", None)
    if shape is None or not isinstance(shape, tuple):
        return tuple(x.shape)
    if any(d is None for d in shape):
        raise ValueError("the predictor needs the static shape of its PyTensor inputs (pt.specify_shape)")
    return shape


def la_terms(rows: dict, p: dict, xp) -> tuple[Any, Any]:
    """LA (and stage, stratum) intercept ``a`` and gradient ``b`` of each row."""
    coef = p["la_coef"]
    la, st = rows["la_index"], rows["stage_index"]
    with_gradient = _static_shape(coef)[-1] == 2
    if coef.ndim == 2:
        a = coef[la, 0]
        b = coef[la, 1] if with_gradient else 0.0
    else:
        a = coef[la, st, 0]
        b = coef[la, st, 1] if with_gradient else 0.0
    if "stratum_intercept_offset" in p:
        k = rows["stratum_index"]
        a = a + _with_reference(p["stratum_intercept_offset"], xp)[k]
        if "stratum_gradient_offset" in p:
            b = b + _with_reference(p["stratum_gradient_offset"], xp)[k]
    return a, b


def row_terms(rows: dict, p: dict, xp) -> Any:
    """Terms that vary within an (LA, stage, stratum) beyond ``b w``: neighbourhood-level terms,
    MSOA and other group effects, Poisson-lognormal row effects, the BYM2 neighbourhood effect; 0.0 when
    there are none."""
    out = 0.0
    if "row_coef" in p and rows.get("row_X") is not None and rows["row_X"].shape[-1]:
        out = out + rows["row_X"] @ p["row_coef"]
    if "msoa_raw" in p:
        out = out + (p["msoa_raw"] * p["msoa_sd"])[rows["msoa_index"]]
    for g, index in rows.get("groups", ()):
        u = p[f"{g}_raw"] * p[f"{g}_sd"]
        if u.ndim == 1:  # static in numpy, JAX and PyTensor
            out = out + u[index]
        else:
            out = out + u[index, 0] + u[index, 1] * rows["w"]
    if "eps_raw" in p:
        eps = p["eps_raw"]
        out = out + (eps[rows["row_index"]] if "row_index" in rows else eps) * p["obs_sd"]
    if "spatial_phi" in p or "spatial_phi_free" in p:
        if rows.get("spatial") is None:
            raise ValueError("the BYM2 term needs rows['spatial'] = (node_index, scale, projection): build the "
                             "rows with design_rows of a design that has the graph")
        out = out + spatial.row_effect(rows["spatial"], p, xp)
    return out


def linear_predictor(rows: dict, p: dict, xp) -> Any:
    """``eta`` of each row (see module docstring)."""
    a, b = la_terms(rows, p, xp)
    return rows["log_exposure"] + a + b * rows["w"] + row_terms(rows, p, xp)


def over_draws(fn, draws: dict, *, batch: int = 100, dtype=None) -> Any:
    """``fn(p)`` (a JAX function of one parameter point) for each draw of ``draws`` (arrays with a
    leading draw axis), as a numpy array ``(draws, ...)`` computed in jitted, vmapped batches of
    ``batch`` draws (memory: ``batch`` draws at a time on the device)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    many = jax.jit(jax.vmap(fn))
    n = len(next(iter(draws.values())))
    return np.concatenate([np.asarray(many({k: jnp.asarray(v[s:s + batch]) for k, v in draws.items()}),
                                      dtype=dtype) for s in range(0, n, batch)])


def predictor_draws(rows: dict, draws: dict, *, batch: int = 100) -> Any:
    """:func:`linear_predictor` for each draw of ``draws`` (arrays with a leading draw axis), as a
    numpy array ``(draws, *row shape)`` computed in JAX batches of ``batch`` draws."""
    import jax.numpy as jnp

    rows = {k: v for k, v in rows.items() if v is not None}
    return over_draws(lambda p: linear_predictor(rows, p, jnp), draws, batch=batch)

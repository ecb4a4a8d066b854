"""NumPyro twin of :func:`hierarchy.likelihood.model.build_model`, written for speed.

Same variables, same density (tests compare them at random points), but laid out for JAX:

- rows are sorted by LA and cut into chunks of ``chunk`` rows that each hold one LA, padded
  to a dense ``[n_chunks, chunk]`` block; LA coefficients reach the chunks through a one-hot
  matrix product, so neither the density nor its gradient has a gather/scatter over rows
  (scatter-add is slow on GPU with jaxlib 0.10.2, DESIGN section 4);
- the family's row sums come from its module (:mod:`hierarchy.likelihood.families`); the negative
  binomial's ``sum_i lgamma(y_i + phi)`` is summed over a histogram of the counts
  (a few hundred count values instead of 32.8k rows);
- the data enter as an argument with fixed shapes, so refitting new counts on the same design
  (simulation-based calibration) reuses one compilation.
- constants that do not depend on parameters (``lgamma(y + 1)``) are computed once;
- mixed precision: the per-row arrays may be float32 while the parameters, the sampler and every
  sum across chunks stay float64 (each chunk's rows are summed in the row precision, the chunk
  totals in the parameter precision), so float32 speed does not cost a log density whose rounding
  at 500k rows (~0.1 in a total of ~1e6) confuses NUTS' energy check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, centring, group_centring, group_zero_sum, stratum_level_weights
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families, spatial
from hierarchy.likelihood.families import negative_binomial as _nb
from hierarchy.likelihood.families import poisson as _poisson
from hierarchy.likelihood.families._rows import log_in_two as _log_in_two  # noqa: F401 (tests read them here)
from hierarchy.likelihood.families._rows import total as _total  # noqa: F401
from hierarchy.likelihood.model import STRATUM_OFFSETS, la_effect_order, observed_name, stratum_offsets
from hierarchy.likelihood.predictor import (
    ROW_PARAMS,
    design_rows,
    group_params,
    la_terms,
    linear_predictor,
    over_draws,
    row_terms,
)

_nb_rows, _nb_chunks, _poisson_rows, _poisson_chunks = _nb.rows, _nb.chunks, _poisson.rows, _poisson.chunks
"""The families' chunk sums under their former names here (tests and bench scripts read them)."""


@dataclass(frozen=True)
class Layout:
    """Padded chunked arrays (numpy) for the likelihood; each chunk is one (LA, stage, stratum)."""

    chunk_la: np.ndarray  # (K,) LA of each chunk
    chunk_stage: np.ndarray  # (K,) stage of each chunk
    chunk_stratum: np.ndarray  # (K,) stratum of each chunk
    onehot: np.ndarray  # (K, n_la) float
    onehot_stage: np.ndarray  # (K, S) float
    onehot_stratum: np.ndarray  # (K, n_strata) float
    w: np.ndarray  # (K, C)
    log_exposure: np.ndarray  # (K, C)
    y: np.ndarray  # (K, C) float
    mask: np.ndarray  # (K, C) 1.0 for real rows
    rows: np.ndarray  # (K, C) original row index, -1 for padding
    y_hist: np.ndarray  # (S, H) rows of each stage with count 0, 1, ..., H-1
    n_stage_rows: np.ndarray  # (S,) rows per stage
    lgamma_y1: float  # sum_i lgamma(y_i + 1)
    msoa_index: np.ndarray | None  # (K, C) int, 0 in padding
    n_rows: int
    row_X: np.ndarray | None = None  # (K, C, p) neighbourhood-level terms
    group_index: tuple[np.ndarray, ...] = ()  # (K, C) int per other grouping column
    node_index: np.ndarray | None = None  # (K, C) int: each row's node of the graph (BYM2), 0 in padding


def _hist(y: np.ndarray, stage: np.ndarray, n_stage: int, hist_len: int) -> np.ndarray:
    if hist_len == 0:
        return np.zeros((n_stage, 0))
    return np.stack([np.bincount(y[stage == s], minlength=hist_len) for s in range(n_stage)]).astype(float)


def hist_len_for(max_count: int, n_rows: int) -> int:
    """Count-histogram length for counts up to ``max_count``: the next power of two, or 0 (lgamma
    row by row) when that would be longer than the ``n_rows`` rows it summarises."""
    hist_len = int(2 ** np.ceil(np.log2(max_count + 2)))
    return hist_len if hist_len <= n_rows else 0


def make_layout(design: Design, chunk: int = 64, hist_len: int | None = None) -> Layout:
    """Sort rows by (LA, stage, stratum) and pad each group into chunks of ``chunk`` rows.

    ``hist_len`` fixes the length of the count histogram (default: next power of two above the
    largest count), so that data sets with the same design share compiled code; 0 means no
    histogram (``lgamma(y + phi)`` row by row), the default when the histogram would be longer than
    the data.
    """
    from scipy.special import gammaln

    n_stage, n_strata = len(design.stage_names), len(design.stratum_names)
    group = (design.la_index * n_stage + design.stage_index) * n_strata + design.stratum_index
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group, minlength=design.n_la * n_stage * n_strata)
    per_group = -(-sizes // chunk)
    K = int(per_group.sum())
    rows = np.full((K, chunk), -1, dtype=np.int64)
    chunk_group = np.repeat(np.arange(len(sizes)), per_group)
    starts = np.repeat(np.cumsum(sizes) - sizes, per_group) + chunk * (
        np.arange(K) - np.repeat(np.cumsum(per_group) - per_group, per_group))
    ends = np.repeat(np.cumsum(sizes), per_group)
    for k in range(K):
        part = order[starts[k]:min(starts[k] + chunk, ends[k])]
        rows[k, :len(part)] = part
    mask = rows >= 0
    safe = np.where(mask, rows, 0)

    def pad(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
        return np.where(mask, a[safe], fill)

    def onehot(index: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros((K, n))
        out[np.arange(K), index] = 1.0
        return out

    if hist_len is None:
        hist_len = hist_len_for(int(design.y.max()), len(design.y))
    if hist_len and design.y.max() >= hist_len:
        raise ValueError(f"hist_len {hist_len} is too short for a count of {design.y.max()}")
    chunk_la, chunk_stage, chunk_stratum = (chunk_group // (n_stage * n_strata),
                                            chunk_group // n_strata % n_stage, chunk_group % n_strata)
    msoa = None if design.msoa_index is None else np.where(mask, design.msoa_index[safe], 0)
    row_X = None if design.row_X is None else np.where(mask[..., None], design.row_X[safe], 0.0)
    return Layout(chunk_la=chunk_la, chunk_stage=chunk_stage, chunk_stratum=chunk_stratum,
                  onehot=onehot(chunk_la, design.n_la), onehot_stage=onehot(chunk_stage, n_stage),
                  onehot_stratum=onehot(chunk_stratum, n_strata),
                  w=pad(design.w), log_exposure=pad(design.log_exposure), y=pad(design.y.astype(float)),
                  mask=mask.astype(float), rows=rows,
                  y_hist=_hist(design.y, design.stage_index, n_stage, hist_len),
                  n_stage_rows=np.bincount(design.stage_index, minlength=n_stage).astype(float),
                  lgamma_y1=float(gammaln(design.y + 1.0).sum()), msoa_index=msoa, n_rows=len(design.y),
                  row_X=row_X, group_index=tuple(np.where(mask, g[safe], 0) for g in design.group_index),
                  node_index=None if design.node_index is None else np.where(mask, design.node_index[safe], 0))


def model_data(layout: Layout, dtype=None) -> dict:
    """The arrays the model function takes: per-chunk and per-row arrays as ``dtype`` (the row
    precision), the whole-data summaries (count histogram, totals) in JAX's default float."""
    import jax.numpy as jnp

    dtype = dtype or jnp.result_type(float)
    rows = ("onehot", "onehot_stage", "onehot_stratum", "w", "log_exposure", "y", "mask")
    out = {k: jnp.asarray(getattr(layout, k), dtype=dtype) for k in rows}
    if layout.row_X is not None and layout.row_X.shape[-1]:
        out["row_X"] = jnp.asarray(layout.row_X, dtype=dtype)
    out |= {k: jnp.asarray(getattr(layout, k), dtype=jnp.result_type(float))
            for k in ("y_hist", "n_stage_rows", "lgamma_y1")}
    y = np.asarray(layout.y, dtype=float)
    out["y_log_y"] = jnp.asarray(np.sum(y * np.log(np.where(y > 0, y, 1.0)) - y), dtype=jnp.result_type(float))
    return out


def with_prior_values(data: dict, priors: PriorSet) -> dict:
    """``data`` (:func:`model_data`) carrying the numbers of ``priors`` (:meth:`PriorSet.values`, in JAX's
    default float): :func:`model_fn`'s model then uses them in place of its own prior set's, which must
    have the same structure (:func:`hierarchy.language.priors.structure_difference`). One compiled
    program so serves several prior sets (:func:`hierarchy.workflow.fit_prior_files`)."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.result_type(float)
    return {**data, "priors": jax.tree.map(lambda v: jnp.asarray(v, dtype=dtype), priors.values())}


def with_counts(layout: Layout, y: np.ndarray, stage_index: np.ndarray | None = None) -> Layout:
    """The same layout with new counts ``y`` (in design row order), same shapes."""
    from dataclasses import replace

    from scipy.special import gammaln

    mask = layout.rows >= 0
    n_stage, hist_len = layout.y_hist.shape
    stage = np.zeros(len(y), dtype=np.int64) if stage_index is None else stage_index
    return replace(layout, y=np.where(mask, y[np.where(mask, layout.rows, 0)], 0.0),
                   y_hist=_hist(y, stage, n_stage, hist_len)[:, :hist_len],
                   lgamma_y1=float(gammaln(y + 1.0).sum()))


def model_fn(spec: ModelSpec, priors: PriorSet, design: Design, layout: Layout,
             gather: bool | None = None, fold_groups: bool = True, expose: bool = False):
    """Return a NumPyro model ``model(data)`` for ``spec``; ``data`` is :func:`model_data`.

    Parameters are in JAX's default float; the row arithmetic is in the precision of ``data``.

    ``gather`` picks how chunks get their LA, stage and stratum terms: by indexing (default on CPU,
    where it is twice as fast at national stacked scale) or by one-hot matrix products (default
    elsewhere: no scatter-add in the gradient, which jaxlib 0.10.2 makes slow on GPU).

    ``fold_groups`` adds an intercept-only group term that is constant within every chunk (``(1 |
    la:year)`` when year is the stratum) to the chunk's intercept, one gather per chunk instead of one
    per row; with no other row terms the likelihood then takes the fast per-chunk path. The log
    density is the same either way.

    ``data`` may carry prior numbers (:func:`with_prior_values`): the model then binds them to ``priors``
    (:meth:`PriorSet.bind`), so one program serves every prior set of the same structure.

    ``expose`` records what the likelihood reads as deterministic sites: each chunk's intercept and
    gradient ``_chunk_a, _chunk_b`` (K,), its rows' other terms ``_per_row`` (K, C; absent when there are
    none) and each of the family's likelihood parameters per chunk (the negative binomial's
    ``_chunk_dispersion`` (K,)): the embedded Laplace mode's view of the
    predictor (:mod:`hierarchy.inference.laplace`).

    The model is built from one function per part, in the order of its sites: the LA means
    (:func:`_la_mean`), the stratum offsets, the LA effects (:func:`_la_effects`), each chunk's LA terms
    (:func:`_chunk_la_terms`), the row terms (:func:`_chunk_row_terms`) and the likelihood
    (:func:`_likelihood`).
    """
    import jax
    import jax.numpy as jnp

    dtype = jnp.result_type(float)
    fixed = _Fixed(spec=spec, design=design, layout=layout, family=families.get(spec.family),
                   centred=centring(spec, design), level_weights=stratum_level_weights(spec, design),
                   z=jnp.asarray(design.z, dtype=dtype)[:, None], cov=jnp.asarray(design.la_cov, dtype=dtype),
                   msoa_index=None if layout.msoa_index is None else jnp.asarray(layout.msoa_index),
                   obs_rows=np.where(layout.rows >= 0, layout.rows, 0),
                   gather=jax.default_backend() == "cpu" if gather is None else gather,
                   folded=chunk_groups(design, layout) if fold_groups else {}, expose=expose, dtype=dtype)
    given = priors

    def model(arr):
        priors = given.bind(arr["priors"]) if "priors" in arr else given  # with_prior_values: numbers as data
        p, flat = _la_coefficients(fixed, priors)
        a, b = _chunk_la_terms(fixed, arr, p, flat)
        a, per_row = _chunk_row_terms(fixed, priors, arr, a)
        _likelihood(fixed, priors, arr, a, b, per_row)

    return model


@dataclass(frozen=True)
class _Fixed:
    """What :func:`model_fn`'s model reads besides its data and prior numbers, fixed when it is built."""

    spec: ModelSpec
    design: Design
    layout: Layout
    family: families.Family
    centred: np.ndarray  # (E,) which LA effects are centred (:func:`centring`)
    level_weights: np.ndarray | None  # stratum weights of the level the LA effects are drawn at
    z: object  # (n_la, 1) LA deprivation
    cov: object  # (n_la, q) LA covariates
    msoa_index: object  # (K, C) or None
    obs_rows: np.ndarray  # (K, C) each slot's design row, 0 in padding
    gather: bool  # chunk terms by indexing (True) or one-hot products
    folded: dict  # group terms constant within each chunk: {name: (K,) level}
    expose: bool
    dtype: object  # the parameters' float

    @property
    def ncoef(self) -> int:
        return len(self.spec.coefs)

    @property
    def n_stage(self) -> int:
        return len(self.spec.stages)


def _stage_param(spec: ModelSpec, priors: PriorSet, name: str, group: str):
    """Sample ``name`` from prior ``group``: one per stage in a stacked model."""
    import numpyro

    d = priors[group].numpyro()
    if spec.stacked:
        return numpyro.sample(name, d.expand([len(spec.stages)]).to_event(1))
    return numpyro.sample(name, d)


def _per_chunk(values, onehot, index: np.ndarray, gather: bool):
    """Each chunk's entry of ``values`` (one per level of ``index``), shape (K, 1)."""
    return (values[index] if gather else onehot @ values.astype(onehot.dtype))[:, None]


def _la_mean(fixed: _Fixed, priors: PriorSet):
    """Sample the LA-level mean's coefficients; the mean of each LA's effects ``(n_la, E)``, its intercept
    and (with a gradient) gradient interleaved per stage."""
    import jax.numpy as jnp
    import numpyro

    spec, design = fixed.spec, fixed.design

    def stage_param(name: str, group: str):
        return _stage_param(spec, priors, name, group)

    mean_a = jnp.atleast_1d(stage_param("intercept", "intercept")) + jnp.zeros((design.n_la, fixed.n_stage),
                                                                               fixed.dtype)
    if spec.la.between_effect:
        mean_a = mean_a + jnp.atleast_1d(stage_param("la_deprivation", "la_deprivation")) * fixed.z
    if design.la_cov_names:
        p = priors["la_covariates"].numpyro().expand([len(design.la_cov_names)]).to_event(1)
        mean_a = mean_a + (fixed.cov @ numpyro.sample("la_cov_intercept", p))[:, None]
    parts = [mean_a]
    if fixed.ncoef == 2:
        mean_b = jnp.atleast_1d(stage_param("gradient", "gradient")) + jnp.zeros_like(mean_a)
        if spec.la.cross_level:
            mean_b = mean_b + jnp.atleast_1d(stage_param("cross_level", "cross_level")) * fixed.z
        if design.la_cov_names:
            mean_b = mean_b + (fixed.cov @ numpyro.sample("la_cov_gradient", p))[:, None]
        parts.append(mean_b)
    return jnp.stack(parts, axis=2).reshape(design.n_la, fixed.n_stage * fixed.ncoef)


def _stratum_sites(fixed: _Fixed, priors: PriorSet) -> dict:
    """Sample the stratum offsets (``stratum_intercept_offset``, ...), none without strata."""
    import numpyro

    if not fixed.spec.strata:
        return {}
    off = priors["stratum_effects"].numpyro().expand([len(fixed.design.stratum_names) - 1]).to_event(1)
    return {k: numpyro.sample(k, off) for k in stratum_offsets(fixed.spec)}


def _level_shift(fixed: _Fixed, p: dict):
    """The shift ``(ncoef,)`` to the count-weighted mean stratum level at which the LA effects are drawn,
    or None."""
    import jax.numpy as jnp

    if fixed.level_weights is None:
        return None
    dtype = fixed.dtype
    return jnp.stack([jnp.asarray(fixed.level_weights[1:], dtype) @ p[k] if k in p else jnp.zeros((), dtype)
                      for k in STRATUM_OFFSETS[:fixed.ncoef]])


def _la_coefficients(fixed: _Fixed, priors: PriorSet) -> tuple[dict, object]:
    """Sample the LA means, stratum offsets and LA effects: the predictor's LA parameters (stratum offsets
    and ``la_coef`` (n_la, S, ncoef)) and the effects flat ``(n_la, E)``."""
    import numpyro

    design = fixed.design
    mean = _la_mean(fixed, priors)
    p = _stratum_sites(fixed, priors)
    shift = _level_shift(fixed, p)
    if shift is not None:  # LA effects drawn at the count-weighted mean stratum level
        mean = mean + shift
    flat = _la_effects(fixed, priors, mean, shift)
    if fixed.spec.stacked:
        numpyro.deterministic("la_coef", flat.reshape(design.n_la, fixed.n_stage, fixed.ncoef))
    p["la_coef"] = flat.reshape(design.n_la, fixed.n_stage, fixed.ncoef)
    return p, flat


def _la_effects(fixed: _Fixed, priors: PriorSet, mean, shift):
    """Sample the LA effects ``(n_la, E)`` around ``mean``: anchored on the first stage, drawn at the mean
    stratum level (less ``shift``) or correlated around ``mean``."""
    import numpyro

    centred, stacked = fixed.centred, fixed.spec.stacked
    if fixed.spec.anchored:
        return _anchored_effects(fixed, priors, mean)
    if shift is not None:
        level = _correlated(mean, centred, priors, "la_level")
        return numpyro.deterministic("la_coef", level - shift)
    return _correlated(mean, centred, priors, "la_coef_flat" if stacked else "la_coef")


def _anchored_effects(fixed: _Fixed, priors: PriorSet, mean):
    """An anchored model's LA effects: correlated in the first stage, each later stage loading on it."""
    import jax.numpy as jnp
    import numpyro

    ncoef, n_la, centred = fixed.ncoef, fixed.design.n_la, fixed.centred
    first = _correlated(mean[:, :ncoef], centred[:ncoef], priors, "la_anchor")
    u = (first - mean[:, :ncoef])[:, None, :]
    later_shape = [fixed.n_stage - 1, ncoef]
    loading = numpyro.sample("la_loading", priors["la_loading"].numpyro().expand(later_shape).to_event(2))
    stage_sd = numpyro.sample("la_stage_sd", priors["la_stage_sd"].numpyro().expand(later_shape).to_event(2))
    later_mean = mean[:, ncoef:].reshape(n_la, fixed.n_stage - 1, ncoef) + loading * u
    later = _independent(later_mean.reshape(n_la, -1), stage_sd.reshape(-1), centred[ncoef:])
    return numpyro.deterministic("la_coef_flat", jnp.concatenate([first, later], axis=1))


def _chunk_la_terms(fixed: _Fixed, arr: dict, p: dict, flat) -> tuple[object, object]:
    """Each chunk's (not row's) LA intercept ``a`` and gradient ``b`` (K, 1) for its stage and stratum;
    ``b`` zeros without a gradient."""
    import jax.numpy as jnp

    layout, ncoef, dtype = fixed.layout, fixed.ncoef, fixed.dtype
    if fixed.gather:  # the one predictor's LA terms, at chunk level
        a, b = la_terms({"la_index": layout.chunk_la, "stage_index": layout.chunk_stage,
                         "stratum_index": layout.chunk_stratum}, p, jnp)
        a, b = a[:, None], (b[:, None] if ncoef == 2 else 0.0)
    else:  # the same by one-hot products (no scatter-add in the gradient on GPU)
        c = (arr["onehot"] @ flat.astype(arr["onehot"].dtype)).reshape(-1, fixed.n_stage, ncoef)
        c = jnp.einsum("ksc,ks->kc", c, arr["onehot_stage"])
        a, b = c[:, :1], (c[:, 1:2] if ncoef == 2 else 0.0)
        for name in ("stratum_intercept_offset", "stratum_gradient_offset"):
            if name in p:
                off = _per_chunk(jnp.concatenate([jnp.zeros(1, dtype), p[name]]), arr["onehot_stratum"],
                                 layout.chunk_stratum, False)
                a, b = (a + off, b) if name == "stratum_intercept_offset" else (a, b + off)
    b = b if ncoef == 2 else jnp.zeros_like(a)
    return a, b


def _chunk_row_terms(fixed: _Fixed, priors: PriorSet, arr: dict, a) -> tuple[object, object]:
    """Sample the row terms' parameters; the chunk intercepts ``a`` with the group terms that are constant
    within each chunk folded in, and the terms that vary within a chunk ``(K, C)`` (0.0 when none do)."""
    import jax.numpy as jnp

    design, layout = fixed.design, fixed.layout
    p = row_params(fixed.spec, priors, design, layout.n_rows)
    for g, index in fixed.folded.items():  # group effects constant within each chunk: per chunk
        a = a + (p[f"{g}_raw"] * p[f"{g}_sd"])[index][:, None]
    # terms that vary within a chunk beyond the deprivation slope: the one predictor's row terms
    groups = tuple((g, i) for g, i in zip(design.group_names, layout.group_index, strict=True)
                   if g not in fixed.folded)
    rows_k = {"row_X": arr.get("row_X"), "msoa_index": fixed.msoa_index, "w": arr["w"],
              "row_index": fixed.obs_rows, "groups": groups, "spatial": chunk_spatial(design, layout)}
    return a, row_terms(rows_k, p, jnp)


def _likelihood(fixed: _Fixed, priors: PriorSet, arr: dict, a, b, per_row) -> None:
    """Sample the family's parameters and add the log likelihood of the counts as one factor (with
    ``expose``, the deterministic sites the likelihood would read instead)."""
    import numpyro

    spec, layout, family = fixed.spec, fixed.layout, fixed.family
    within = not isinstance(per_row, float)  # row_terms gives 0.0 when no term varies within a chunk
    if fixed.expose:
        numpyro.deterministic("_chunk_a", a[:, 0])
        numpyro.deterministic("_chunk_b", b[:, 0])
        if within:
            numpyro.deterministic("_per_row", per_row)

    def stage_param(name: str, group: str):
        return _stage_param(spec, priors, name, group)

    sites = family.numpyro_sites(priors, stage_param, arr["y"].dtype)  # the likelihood's parameters
    chunk = {k: _per_chunk(v, arr["onehot_stage"], layout.chunk_stage, fixed.gather) for k, v in sites.items()}
    if fixed.expose:  # the pieces only: no likelihood (a custom chunk gradient has no forward mode)
        for k, v in chunk.items():
            numpyro.deterministic(f"_chunk_{k}", v[:, 0])
        return
    ll = family.numpyro_loglik(arr, a, b, per_row if within else None, sites, chunk)
    numpyro.factor(observed_name(spec), ll - arr["lgamma_y1"])


def chunk_spatial(design: Design, layout: Layout) -> tuple[np.ndarray, np.ndarray] | None:
    """The predictor's ``rows["spatial"]`` in the chunked layout: each row's node ``(K, C)`` (0 in padding)
    and the graph's per-node scale, or None without the BYM2 term."""
    return None if layout.node_index is None else (layout.node_index, np.asarray(design.graph.scale))


def chunk_groups(design: Design, layout: Layout) -> dict[str, np.ndarray]:
    """Intercept-only group terms whose level is the same in every row of each chunk, with each
    chunk's level ``(K,)``: they can join the chunk's intercept (:func:`model_fn`)."""
    valid = layout.rows >= 0
    out = {}
    for g, slope, index in zip(design.group_names, design.group_slope, layout.group_index, strict=True):
        if not slope and np.all((index == index[:, :1]) | ~valid):
            out[g] = index[:, 0].copy()  # a chunk's first row is always a data row
    return out


def _correlated(mean, mask: np.ndarray, priors: PriorSet, name: str):
    """Twin of :func:`hierarchy.likelihood.model._correlated`: correlated LA effects (la, E) around ``mean``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    perm, inv, n_nc = la_effect_order(mask)
    n_la, n_eff = mean.shape
    la_sd = numpyro.sample("la_sd", priors["la_sd"].numpyro().expand([n_eff]).to_event(1))
    if n_eff > 1:
        corr = numpyro.sample("la_corr", nd.LKJ(n_eff, priors["la_corr"].params["eta"]))
        chol = la_sd[perm][:, None] * jnp.linalg.cholesky(corr[perm][:, perm])
    else:
        chol = jnp.diag(la_sd)
    mean = mean[:, perm]
    if n_nc == 0:
        return numpyro.sample(name, nd.MultivariateNormal(mean, scale_tril=chol))
    raw = numpyro.sample("la_raw", nd.Normal(0.0, 1.0).expand([n_la, n_nc]).to_event(2))
    x = mean[:, :n_nc] + raw @ chol[:n_nc, :n_nc].T
    if n_nc < n_eff:  # the centred effects given the non-centred ones
        x_c = numpyro.sample("la_centred", nd.MultivariateNormal(
            mean[:, n_nc:] + raw @ chol[n_nc:, :n_nc].T, scale_tril=chol[n_nc:, n_nc:]))
        x = jnp.concatenate([x, x_c], axis=1)[:, inv]
    return numpyro.deterministic(name, x)


def _independent(mean, sd, mask: np.ndarray):
    """Twin of :func:`hierarchy.likelihood.model._independent`: the later stages of an anchored model."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    perm, inv, n_nc = la_effect_order(mask)
    mean, sd = mean[:, perm], sd[perm]
    parts = []
    if n_nc:
        raw = numpyro.sample("la_stage_raw", nd.Normal(0.0, 1.0).expand([mean.shape[0], n_nc]).to_event(2))
        parts.append(mean[:, :n_nc] + raw * sd[:n_nc])
    if n_nc < len(mask):
        parts.append(numpyro.sample("la_stage_centred", nd.Normal(mean[:, n_nc:], sd[n_nc:]).to_event(2)))
    return jnp.concatenate(parts, axis=1)[:, inv]


def row_params(spec: ModelSpec, priors: PriorSet, design: Design, n_rows: int) -> dict:
    """Sample the parameters of the predictor's row terms (NumPyro sites, inside a model):
    neighbourhood-level coefficients ``b_{term}`` (and ``row_coef``), MSOA and other group effects
    (``{g}_raw`` times ``{g}_sd``: ``{g}_raw`` standard normal, or the centred ``{g}_centred`` over
    ``{g}_sd`` where :func:`hierarchy.language.design.group_centring` says) and Poisson-lognormal row
    effects."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    p = {}
    if design.row_names:
        priors.check_terms(design.row_names)
        p["row_coef"] = numpyro.deterministic("row_coef", jnp.stack(
            [numpyro.sample(f"b_{t}", priors.for_term(t).numpyro()) for t in design.row_names]))
    if spec.msoa.random_intercept:
        p["msoa_sd"] = numpyro.sample("msoa_sd", priors["msoa_sd"].numpyro())
        p["msoa_raw"] = numpyro.sample("msoa_raw",
                                       nd.Normal(0.0, 1.0).expand([len(design.msoa_codes)]).to_event(1))
    for g, levels, slope, centred, axes, grid in zip(design.group_names, design.group_levels, design.group_slope,
                                                     group_centring(spec, design), group_zero_sum(spec, design),
                                                     design.grids, strict=True):
        shape = [len(levels), 2] if slope else [len(levels)]
        sd = priors.group_sd(g).numpyro()
        p[f"{g}_sd"] = numpyro.sample(f"{g}_sd", sd.expand([2]).to_event(1) if slope else sd)
        if axes:  # on the grid of its components, summing to zero along the axes in ``axes``
            scale = p[f"{g}_sd"] if centred else 1.0
            u = _zero_sum_grid(f"{g}_grid", scale, tuple(int(i.max()) + 1 for i in grid), axes)[grid]
            p[f"{g}_raw"] = numpyro.deterministic(f"{g}_raw", u / p[f"{g}_sd"] if centred else u)
        elif centred:  # the predictor reads {g}_raw * {g}_sd: the same effects, another geometry
            u = numpyro.sample(f"{g}_centred", nd.Normal(0.0, p[f"{g}_sd"]).expand(shape).to_event(len(shape)))
            p[f"{g}_raw"] = numpyro.deterministic(f"{g}_raw", u / p[f"{g}_sd"])
        else:
            p[f"{g}_raw"] = numpyro.sample(f"{g}_raw", nd.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))
    p |= families.get(spec.family).numpyro_row_sites(priors, n_rows)
    if design.graph is not None:
        p |= spatial.numpyro_sites(priors, design.graph)
    return p


def _zero_sum_grid(name: str, scale, shape: tuple[int, ...], axes: tuple[int, ...]):
    """Sample ``name``, an array of ``shape`` that sums to zero along ``axes`` (NumPyro's
    ZeroSumNormal, which constrains the trailing axes: the others are batch axes, moved back)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    free = [k for k in range(len(shape)) if k not in axes]
    order = free + list(axes)
    d = nd.ZeroSumNormal(scale, tuple(shape[k] for k in axes))
    if free:
        d = d.expand([shape[k] for k in free]).to_event(len(free))
    return jnp.transpose(numpyro.sample(name, d), np.argsort(order))


def _row_eta(design: Design, p: dict, xp):
    """Linear predictor per design row at one parameter point (the one predictor)."""
    return linear_predictor(design_rows(design), p, xp)


def _params(design: Design) -> tuple[str, ...]:
    return ROW_PARAMS + group_params(design.group_names)


def pointwise_loglik(spec: ModelSpec, design: Design, posterior: dict[str, np.ndarray],
                     *, batch: int = 100) -> np.ndarray:
    """Log-likelihood of each row for each draw, ``(draws, n)`` float32, in draw batches.

    ``posterior`` maps names to arrays with a leading draw axis (chains flattened). A spatial model's
    posterior must hold its per-node effects (``spatial_phi``, ``spatial_theta``), which fit files do not
    keep: without them this is refused rather than computed without the term.
    """
    import jax.numpy as jnp

    if design.graph is not None and not {"spatial_phi", "spatial_phi_free"} & set(posterior):
        raise HierarchyError(f"model '{spec.name}' has a BYM2 term (car(neighbourhood)) whose per-neighbourhood "
                             "effects a fit file does not keep (size, disclosure), so its pointwise "
                             "log-likelihood (LOO, WAIC) cannot be computed from the fit; compare it with its "
                             "non-spatial twin on the headline estimands instead")
    y = jnp.asarray(design.y, dtype=jnp.result_type(float))
    stage = jnp.asarray(design.stage_index)
    family = families.get(spec.family)

    def one(p):
        return family.logpmf(y, _row_eta(design, p, jnp), family.stage_params(p, stage, jnp), jnp)

    keys = [k for k in _params(design) if k in posterior]
    return over_draws(one, {k: posterior[k] for k in keys}, batch=batch, dtype=np.float32)


def draw_counts(spec: ModelSpec, design: Design, params: dict[str, np.ndarray],
                rng: np.random.Generator) -> np.ndarray:
    """Counts drawn from the model's likelihood at one parameter point (design row order)."""
    family = families.get(spec.family)
    p = {k: np.asarray(v) for k, v in params.items() if k in _params(design)}
    if any(r["role"] == "per_row" and r["name"] not in p for r in family.parameters):  # never stored: drawn
        p |= family.draw_row_sites(rng, len(design.y))
    if design.graph is not None and not {"spatial_phi", "spatial_phi_free"} & set(p):  # never stored: drawn
        p |= spatial.draw_latents(design.graph, rng)
    mu = np.exp(_row_eta(design, p, np))
    return family.draw(rng, mu, family.stage_params(p, design.stage_index, np))

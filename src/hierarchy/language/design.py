"""From a validated neighbourhood table and a model spec to the arrays a model needs.

Centring (DESIGN section 3): with neighbourhood deprivation ``x`` and LA deprivation ``X``,
``w = (x - X) / scale`` (within) and ``z = log(X / mean X)`` or ``(X - mean X) / scale`` (between,
by the spec's transform). ``mean X`` is the unweighted mean over LAs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from hierarchy import AGE_BANDS
from hierarchy.config import did_you_mean
from hierarchy.data.geography import Graph
from hierarchy.data.table import row_key, user_name
from hierarchy.errors import HierarchyError
from hierarchy.language.spec import ModelSpec


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
    x_mean: float  # child-weighted mean of x (grand-mean centring)
    stage_index: np.ndarray  # (n,) int, index into stage_names
    stage_names: tuple[str, ...]
    stratum_index: np.ndarray  # (n,) int, index into stratum_names (0 = reference level)
    stratum_names: tuple[str, ...]
    row_X: np.ndarray | None = None  # (n, p) neighbourhood-level terms (products of row values)
    row_names: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()  # other grouping columns (crossed or stratum groups)
    group_index: tuple[np.ndarray, ...] = ()  # (n,) int per group
    group_levels: tuple[np.ndarray, ...] = ()  # level names per group
    group_slope: tuple[bool, ...] = ()  # whether the group's gradients vary too
    group_grid: tuple[tuple[np.ndarray, ...] | None, ...] = ()  # per "a:b" group whose levels fill the
    # a x b grid: each level's index along a and along b (:func:`group_zero_sum`); else None
    node_index: np.ndarray | None = None  # (n,) int: each row's node of ``graph`` (car(neighbourhood))
    graph: Graph | None = None  # the neighbourhood graph of a spatial model (hierarchy.data.geography)

    @property
    def grids(self) -> tuple[tuple[np.ndarray, ...] | None, ...]:
        """``group_grid``, one entry (None: no grid) per group term."""
        return self.group_grid or (None,) * len(self.group_names)

    @property
    def n_la(self) -> int:
        return len(self.la_codes)


CENTRING_SE = {"intercept": 0.2, "gradient": 0.1}
"""``auto`` centres an LA effect when the data pin it down better than this (its median standard
error over LAs, log scale): about the between-LA SD of intercepts and of gradients in this field."""


STAGE_DEVIATION_SE = {"intercept": 0.2, "gradient": 0.03}
"""The same for a later stage's own LA deviations in an anchored stacked model (``la_stage_sd``):
LAs move their thresholds together, so a stage's own gradient deviations are small."""



def joined_labels(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The values of ``columns`` per row as one label, ``a/b``: vectorised (a row-wise join took
    minutes on national multi-year tables)."""
    out = table[columns[0]].astype(str)
    for c in columns[1:]:
        out = out + "/" + table[c].astype(str)
    return out

GROUP_CENTRING_SE = 0.1
"""``auto`` centres a group term's effects (``(1 | year)``, ``(1 | la:year)``) when the counts pin a
level's intercept down better than this (median over levels of 1 / sqrt(its total count), log scale).
LA x year cells of a national table hold hundreds of referrals (SE ~0.03): non-centred, their effects
make a funnel with the group SD and NUTS took ~290 leapfrog steps per draw (bench/RESULTS.md)."""


def group_centring(spec: ModelSpec, design: Design) -> tuple[bool, ...]:
    """Whether each group term's effects are centred (``{g}_centred ~ Normal(0, {g}_sd)``) rather than
    non-centred (``{g}_raw`` standard normal), in ``design.group_names`` order.

    ``la.parameterisation`` = ``centred`` / ``non_centred`` applies to every group; ``auto`` centres an
    intercept-only group whose levels the data determine (:data:`GROUP_CENTRING_SE`) better than the
    spread of its levels in these data (:func:`group_spread`): levels that barely vary make a funnel
    when centred, however many counts there are. Groups with their own gradients stay non-centred
    under ``auto``.
    """
    if spec.la.parameterisation != "auto":
        return tuple(spec.la.parameterisation == "centred" for _ in design.group_names)
    y = design.y.astype(float)
    out = []
    for g, (index, levels, slope) in enumerate(zip(design.group_index, design.group_levels, design.group_slope,
                                                   strict=True)):
        totals = np.bincount(index, y, minlength=len(levels))
        with np.errstate(divide="ignore"):
            se = float(np.median(1.0 / np.sqrt(totals)))
        if slope or se >= GROUP_CENTRING_SE:
            out.append(False)
            continue
        spread, noise = group_spread(design, g)
        out.append(bool(noise < (spread if np.isfinite(spread) else np.inf)))
    return tuple(out)


def group_spread(design: Design, g: int) -> tuple[float, float]:
    """SD of group term ``g``'s level intercepts estimated from the data alone (:func:`between_sd` of
    each level's log rate, beyond the main effects of the components of an ``a:b`` group that fills
    its grid), and the median standard error of a level's log rate (overdispersion included)."""
    index, levels = design.group_index[g], design.group_levels[g]
    est, var, _ = per_group_poisson(design, index, len(levels), slope=False)
    grid = design.grids[g]
    X = None
    if grid is not None:
        X = np.column_stack([np.eye(int(c.max()) + 1)[c][:, 1:] for c in grid])
    with np.errstate(invalid="ignore"):
        noise = float(np.median(np.sqrt(var[:, 0])))
    return between_sd(est[:, 0], var[:, 0], X), noise


def la_effect_se(spec: ModelSpec, design: Design) -> np.ndarray:
    """Median over LAs of each LA effect's standard error from the counts alone, ``(n_effects,)``.

    Poisson information: ``sum y`` for an intercept, ``sum y (w - wbar)^2`` for a gradient, per LA
    and stage, in the model's stage-major effect order (``stage:intercept, stage:gradient, ...``).
    """
    n_stage = len(design.stage_names)
    group = design.la_index * n_stage + design.stage_index
    n = design.n_la * n_stage
    y = design.y.astype(float)
    info = [np.bincount(group, y, minlength=n)]
    if len(spec.coefs) == 2:
        wbar = np.bincount(group, y * design.w, minlength=n) / np.maximum(info[0], 1e-12)
        info.append(np.bincount(group, y * (design.w - wbar[group]) ** 2, minlength=n))
    with np.errstate(divide="ignore"):
        se = 1.0 / np.sqrt(np.stack(info, axis=-1).reshape(design.n_la, n_stage, -1))
    return np.median(se, axis=0).reshape(-1)


def per_group_poisson(design: Design, group: np.ndarray, n_group: int, *,
                      slope: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group Poisson regressions of the counts on the within-group centred ``w`` (with the
    model's offset), vectorised: estimates ``(n_group, c)``, their variances ``(n_group, c)`` and
    whether each group has any counts (c = 2 with ``slope``, else 1).

    The variances are the sandwich for negative binomial counts (``var y = mu (1 + alpha mu)``,
    ``alpha`` by moments from the within-group residuals, 0 for Poisson-like data), so that
    overdispersion is not read as between-group spread. They are asymptotic: calibrated at 200 rows
    a group, ~15% low at 40 (a spread then reads a little larger, towards centring).
    """
    y, off = design.y.astype(float), design.log_exposure
    total = np.bincount(group, y, minlength=n_group)
    expo = np.bincount(group, np.exp(off), minlength=n_group)
    ok = (total > 0) & (expo > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(ok, np.log(np.maximum(total, 1e-300) / np.maximum(expo, 1e-300)), 0.0)
        wbar = np.bincount(group, np.exp(off) * design.w, minlength=n_group) / np.maximum(expo, 1e-300)
    wc = design.w - wbar[group] if slope else np.zeros_like(y)
    b = np.zeros(n_group)
    for _ in range(30 if slope else 0):  # Newton on (a, b), per group; 2 x 2 solves in closed form
        mu = np.exp(np.clip(off + a[group] + b[group] * wc, -700, 700))
        r = y - mu
        g0, g1 = (np.bincount(group, v, minlength=n_group) for v in (r, r * wc))
        h00, h01, h11 = (np.bincount(group, v, minlength=n_group) for v in (mu, mu * wc, mu * wc ** 2))
        det = h00 * h11 - h01 ** 2
        good = ok & (det > 1e-12 * np.maximum(h00 * h11, 1e-300))
        safe = np.where(good, det, 1.0)
        a = a + np.where(good, (h11 * g0 - h01 * g1) / safe, 0.0)
        b = b + np.where(good, np.clip((h00 * g1 - h01 * g0) / safe, -5, 5), 0.0)
    mu = np.exp(np.clip(off + a[group] + b[group] * wc, -700, 700))
    alpha = max(0.0, float(np.sum((y - mu) ** 2 - y)) / max(float(np.sum(mu ** 2)), 1e-300))
    meat = mu * (1.0 + alpha * mu)
    X = [np.ones_like(y), wc] if slope else [np.ones_like(y)]
    H = np.array([[np.bincount(group, mu * p * q, minlength=n_group) for q in X] for p in X]).transpose(2, 0, 1)
    M = np.array([[np.bincount(group, meat * p * q, minlength=n_group) for q in X] for p in X]).transpose(2, 0, 1)
    keep = ok & (np.abs(np.linalg.det(H)) > 1e-12 * np.prod(np.diagonal(H, axis1=1, axis2=2), axis=1))
    Hinv = np.linalg.inv(np.where(keep[:, None, None], H, np.eye(len(X))))
    var = np.diagonal(Hinv @ M @ Hinv, axis1=1, axis2=2).copy()
    var[~keep] = np.inf
    return np.stack([a, b], axis=-1)[:, : len(X)], var, keep


def between_sd(est: np.ndarray, var: np.ndarray, X: np.ndarray | None = None) -> float:
    """Between-group SD of ``est`` beyond its sampling variances ``var``: the method-of-moments
    (DerSimonian-Laird) estimate, of the residuals of a weighted regression on ``X`` (columns: group
    covariates; an intercept is added). Groups with infinite variance are left out; 0 when no spread
    beyond the noise, nan with fewer groups than regressors + 2."""
    keep = np.isfinite(var) & np.isfinite(est) & (var > 0)
    cols = [np.ones(len(est))] + ([] if X is None else list(np.atleast_2d(np.asarray(X, float).T)))
    D = np.stack(cols, axis=-1)[keep]
    e, wt = est[keep], 1.0 / var[keep]
    k, p = D.shape
    if k < p + 2:
        return float("nan")
    A = np.linalg.pinv(D.T @ (wt[:, None] * D))
    beta = A @ (D.T @ (wt * e))
    q = float(np.sum(wt * (e - D @ beta) ** 2))
    trace = float(wt.sum() - np.trace(A @ (D.T @ ((wt ** 2)[:, None] * D))))
    return float(np.sqrt(max(0.0, (q - (k - p)) / trace))) if trace > 0 else float("nan")


def la_effect_spread(spec: ModelSpec, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Between-LA SD of each LA effect estimated from the data alone, and the median over LAs of the
    per-LA standard errors it was measured against (overdispersion included), each ``(n_effects,)``
    in the order of :func:`la_effect_se`.

    Each LA's (and stage's) intercept and gradient come from a Poisson regression of its own rows
    (:func:`per_group_poisson`); their spread beyond their standard errors, after the LA-level terms
    of the model (LA deprivation ``z`` where the model has it, LA covariates), is
    :func:`between_sd`. A later stage of an anchored model is measured by its deviations from the
    first stage. Strata, neighbourhood terms and other groups are not fitted per LA: a rough
    estimate, for choosing a parameterisation only.
    """
    n_stage, c = len(design.stage_names), len(spec.coefs)
    group = design.la_index * n_stage + design.stage_index
    est, var, _ = per_group_poisson(design, group, design.n_la * n_stage, slope=c == 2)
    est, var = est.reshape(design.n_la, n_stage, c), var.reshape(design.n_la, n_stage, c)
    if spec.anchored:
        est = np.concatenate([est[:, :1], est[:, 1:] - est[:, :1]], axis=1)
        var = np.concatenate([var[:, :1], var[:, 1:] + var[:, :1]], axis=1)
    cov = [design.la_cov] if design.la_cov_names else []
    out = []
    for s in range(n_stage):
        for j, coef in enumerate(spec.coefs):
            uses_z = spec.la.between_effect if coef == "intercept" else spec.la.cross_level
            X = np.column_stack([design.z] * uses_z + cov) if uses_z or cov else None
            out.append(between_sd(est[:, s, j], var[:, s, j], X))
    with np.errstate(invalid="ignore"):
        se = np.median(np.sqrt(var), axis=0).reshape(-1)
    return np.asarray(out), se


def centring(spec: ModelSpec, design: Design) -> np.ndarray:
    """Which LA effects are centred (hierarchical centring) rather than non-centred, ``(n_effects,)``.

    ``auto`` decides per effect: centred where the data determine each LA's effect better than both
    the field's usual between-LA SD (Poisson standard error :func:`la_effect_se` under
    :data:`CENTRING_SE`) and the between-LA SD these data show (standard error with overdispersion
    under the spread, both from :func:`la_effect_spread`). The
    centred form funnels when the between-LA SD is near 0 however many counts there are: re-referrals
    per referral with LA gradients that do not vary gave R-hat 1.72 and 1,216 divergences centred,
    none non-centred. So a stacked model can centre referral effects and non-centre the sparse
    looked-after ones, and an effect that barely varies over LAs is non-centred.
    """
    n_eff = len(spec.coefs) * len(design.stage_names)
    if spec.la.parameterisation != "auto":
        return np.full(n_eff, spec.la.parameterisation == "centred")
    later = STAGE_DEVIATION_SE if spec.anchored else CENTRING_SE
    limit = np.concatenate([[CENTRING_SE[c] for c in spec.coefs],
                            np.tile([later[c] for c in spec.coefs], len(design.stage_names) - 1)])
    spread, se = la_effect_spread(spec, design)
    return (la_effect_se(spec, design) < limit) & (se < np.nan_to_num(spread, nan=np.inf))


def stratum_level_weights(spec: ModelSpec, design: Design) -> np.ndarray | None:
    """Weights of the strata (share of the counts) in the level the centred LA effects are drawn at,
    or None where the LA effects keep their plain mean.

    With strata (``C(year) + w:C(year)``) the offsets are coded against the first stratum, so an LA
    intercept (gradient) is its first stratum's level and all of them move with every offset: a
    direction a diagonal mass matrix cannot follow. Centred LA effects are therefore drawn around
    their mean plus the count-weighted mean of the stratum offsets (the first is 0), which is taken off
    again (``la_level`` -> ``la_coef``): the same model (a shift, unit Jacobian), with LA effects that
    the data pin down on their own. On 30 LAs x 13 years it gave ~1.5x the ESS per leapfrog step
    (median of 3 seeds, bench/RESULTS.md). Only for a non-stacked model whose LA intercepts are centred.
    (Weighting by exposure instead gave ~1.2x.) A fit from exported sums draws the same parameters:
    its pseudo-counts add up to each cell's exact sum (:func:`hierarchy.inference.sufficient.public_design`).
    """
    if not spec.strata or spec.stacked or len(design.stratum_names) < 2 or not centring(spec, design)[0]:
        return None
    totals = np.bincount(design.stratum_index, design.y.astype(float), minlength=len(design.stratum_names))
    if totals.sum() <= 0:
        return None
    return totals / totals.sum()


def group_zero_sum(spec: ModelSpec, design: Design) -> tuple[tuple[int, ...], ...]:
    """The component axes along which each group term's effects sum to zero, in ``design.group_names``
    order (``()``: unconstrained).

    An intercept-only interaction group such as ``(1 | la:year)`` whose levels fill the LA x year grid
    sums to zero over each component that has an effect of its own in the model: the LA (its LA
    intercept), a stratum column (``C(year)``), a group term ``(1 | year)``, the MSOA (``(1 | msoa)``).
    Unconstrained, the mean of an LA's LA-year effects trades off with its LA intercept, and the mean
    of a year's with that year's intercept, which only the priors settle: NUTS took 31 leapfrog steps
    per draw on 30 LAs x 13 years and ran to the tree-depth limit nationally. Summing to zero removes
    those directions (a ZeroSumNormal, as in PyMC): the main effects carry the means and ``{g}_sd`` is
    the scale of the interaction before the constraint. The predictor is unchanged.
    """
    own = {"la", *spec.strata, *(g for g, _ in spec.groups if ":" not in g)}
    if spec.msoa.random_intercept:
        own.add("msoa")
    out = []
    for g, slope, grid in zip(design.group_names, design.group_slope, design.grids, strict=True):
        parts = g.split(":")
        axes = () if slope or grid is None else tuple(k for k, c in enumerate(parts) if c in own)
        out.append(axes)
    return tuple(out)


def _grid(table: pd.DataFrame, columns: list[str], first: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Each level's index along every column (levels given by the row ``first`` of each), or None
    when the levels do not fill the grid of the columns' values."""
    codes = [pd.factorize(table[c].astype(str).to_numpy(), sort=True) for c in columns]
    if int(np.prod([len(u) for _, u in codes])) != len(first):
        return None
    return tuple(c[first] for c, _ in codes)


def describe_centring(mask: np.ndarray, labels: list[str]) -> str:
    """``centred``, ``non_centred`` or ``mixed (centred: ...)`` for provenance and messages."""
    if mask.all() or not mask.any():
        return "centred" if mask.all() else "non_centred"
    return "mixed (centred: " + ", ".join(k for k, c in zip(labels, mask, strict=True) if c) + ")"


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


def stratum_labels(table: pd.DataFrame, columns: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Index of each row's stratum (combined over ``columns``) and the ordered level names.

    Age bands keep their natural order and sexes are ordered female, male; the first level is
    the reference the stratum offsets are measured against.
    """
    if not columns:
        return np.zeros(len(table), dtype=np.int64), ("all",)
    labels = joined_labels(table, list(columns)).to_numpy()
    known = {c: order for c, order in (("age_band", AGE_BANDS), ("sex", ("female", "male")))}

    def key(level: str) -> tuple:
        parts = level.split("/")
        return tuple((known[c].index(p) if c in known and p in known[c] else 99, p)
                     for c, p in zip(columns, parts, strict=True))

    names = tuple(sorted(set(labels), key=key))
    lookup = {v: i for i, v in enumerate(names)}
    return np.array([lookup[v] for v in labels], dtype=np.int64), names


def _exposure_message(table: pd.DataFrame, spec: ModelSpec, bad: np.ndarray) -> str:
    """Which rows have no exposure, and the command that sets them aside (``validate --model``)."""
    from hierarchy.data.table import ValidationReport
    from hierarchy.shipped import names

    shown = user_name(table, spec.exposure)
    codes = ", ".join(pd.unique(table["neighbourhood"].astype(str).to_numpy()[bad])[:3])
    model = spec.name if spec.name in names("models") else "MODEL.toml"
    command = ValidationReport(str(table.attrs.get("source", "TABLE")), model=model,
                               columns="MAP.toml" if table.attrs.get("column_map") else None).drop_command()
    n = int(bad.sum())
    value = table[spec.exposure].to_numpy(dtype=float)[bad]
    what = "0" if (value == 0).all() else "0, below 0 or missing"
    return (f"{n} row{'s' if n > 1 else ''} {'have' if n > 1 else 'has'} {shown} {what} "
            f"(e.g. neighbourhood {codes}), but {shown} is the exposure of model '{spec.name}' "
            f"(offset(log({spec.exposure}))) and must be above 0 in every row it fits; to name them and set "
            f"them aside: {command}, then fit kept.csv")


def spatial_nodes(table: pd.DataFrame, graph: Graph | None) -> tuple[np.ndarray, Graph]:
    """Each row's node in the neighbourhood graph, and the graph (:func:`hierarchy.data.geography.graph_for`
    of the table's neighbourhoods when ``graph`` is None).

    Raises
    ------
    HierarchyError
        When a neighbourhood of the table is not a node of the graph: the message names the codes, their
        first rows and the fix (a map that has them, or leave those rows out).
    """
    codes = table["neighbourhood"].astype(str).to_numpy()
    if graph is None:
        from hierarchy.data import geography

        graph = geography.table_graph(table)
    lookup = pd.Index(np.asarray(graph.codes).astype(str))
    if not lookup.is_unique:
        raise HierarchyError(f"the neighbourhood graph ({graph.source}) lists a code twice: rebuild it")
    index = lookup.get_indexer(codes)
    missing = index < 0
    if missing.any():
        rows = np.flatnonzero(missing)
        shown = ", ".join(f"{codes[r]} (row {r + 1})" for r in rows[:3])
        raise HierarchyError(f"{int(missing.sum())} row(s) have a neighbourhood that is not on the map "
                             f"({graph.source}): {shown}; column 'neighbourhood' (rows count data rows from 1). "
                             "Give a map that has them (--geography FILE), or leave those rows out and refit")
    la_codes, la_of_row = np.unique(table["la"].astype(str).to_numpy(), return_inverse=True)
    group = np.full(graph.n, -1, dtype=np.int64)  # -1: a node of the map without rows
    group[index] = la_of_row
    clash = np.flatnonzero(group[index] != la_of_row)
    if len(clash):
        r = int(clash[0])
        raise HierarchyError(f"neighbourhood {codes[r]} is in more than one LA (row {r + 1}: "
                             f"{la_codes[la_of_row[r]]}); column 'la': each neighbourhood belongs to one LA")
    return index.astype(np.int64), replace(graph, group=group)


def build_design(table: pd.DataFrame, spec: ModelSpec, graph: Graph | None = None) -> Design:
    """Arrays for ``spec`` from a validated canonical table (see :mod:`hierarchy.data.table`).

    With several stages the table's rows are stacked once per stage (stage-major order). A spatial
    model (``car(neighbourhood)``) maps each row to its node of ``graph`` (default: the graph of the
    table's neighbourhoods, :func:`hierarchy.data.geography.graph_for`); ``graph`` is ignored otherwise.
    """
    row_cols = spec.row_columns
    needed = ["la", "neighbourhood", "deprivation", spec.exposure, *spec.stages, *spec.strata,
              *spec.la.covariates, *row_cols, *spec.group_columns]
    if spec.la_deprivation.measure != "mean":
        needed.append(spec.la_deprivation.measure)
    if spec.msoa.random_intercept:
        needed.append("msoa")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        cols = list(map(str, table.columns))
        hints = "".join(did_you_mean(m, cols, template=f"; for '{m}' did you mean '{{}}'?") for m in missing)
        shown = ", ".join(list(dict.fromkeys(map(str, table.columns)))[:40]) + (", ..." if len(cols) > 40 else "")
        raise HierarchyError(f"model '{spec.name}' needs column(s) {', '.join(missing)} that the "
                             f"data lacks (has: {shown}){hints}; if the table calls one something else, map it "
                             f"in a column map (--columns MAP.toml, [columns] {missing[0]} = \"YOUR COLUMN\")")
    needed = list(dict.fromkeys(needed))
    for col in (*spec.stages, spec.exposure, *row_cols):
        _numeric(table, col, count=col in spec.stages, shown=user_name(table, col))
    la_codes, la_index = np.unique(table["la"].astype(str).to_numpy(), return_inverse=True)
    exposure = table[spec.exposure].to_numpy(dtype=float)
    # LA deprivation is child-weighted: by the children column when the model's exposure is
    # something else (a count such as referrals, for re-referrals per referral)
    weight = table["exposure"].to_numpy(dtype=float) if "exposure" in table.columns else exposure
    x = table["deprivation"].to_numpy(dtype=float)
    if np.any(~(exposure > 0)):
        raise HierarchyError(_exposure_message(table, spec, ~(exposure > 0)))
    n_la = len(la_codes)
    if spec.la_deprivation.measure == "mean":
        la_X = np.bincount(la_index, weight * x, n_la) / np.bincount(la_index, weight, n_la)
    else:
        la_X = _la_level(table[spec.la_deprivation.measure].to_numpy(dtype=float), la_index, n_la)
    X_mean = float(la_X.mean())
    x_mean = float(np.sum(weight * x) / weight.sum())
    z = z_of(la_X, X_mean, spec)
    w = w_of(x, la_X[la_index], x_mean, spec)
    cov = np.column_stack([_la_level(table[c].to_numpy(dtype=float), la_index, n_la)
                           for c in spec.la.covariates]) if spec.la.covariates else np.zeros((n_la, 0))
    center, scale = cov.mean(axis=0), cov.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    ids = table["neighbourhood"].astype(str)
    known = [c for c in ("age_band", "sex", "ethnicity", "need") if c in table.columns]
    group_cols = [c for c in spec.group_columns if c != "la"]
    for c in dict.fromkeys([*known, *spec.strata, *group_cols]):
        ids = ids + "|" + table[c].astype(str)
    if ids.duplicated().any():  # a neighbourhood x year table read by Year + w:Year: the year is in the key
        for c in row_key(table, [*known, *spec.strata, *group_cols], spec.data_columns["keys"])[1:]:
            if c not in (*known, *spec.strata, *group_cols):
                ids = ids + "|" + table[c].astype(str)
    msoa_index = msoa_codes = None
    if spec.msoa.random_intercept:
        msoa_codes, msoa_index = np.unique(table["msoa"].astype(str).to_numpy(), return_inverse=True)
    stratum_index, stratum_names = stratum_labels(table, spec.strata)
    n_stage = len(spec.stages)

    def stack(a: np.ndarray) -> np.ndarray:
        return np.tile(a, n_stage) if n_stage > 1 else a

    y = np.concatenate([table[s].to_numpy() for s in spec.stages]).astype(np.int64)
    values = {"w": w, "z": z[la_index], **{c: table[c].to_numpy(dtype=float) for c in row_cols}}
    row_X = np.column_stack([np.prod([values[c] for c in t.split(":")], axis=0) for t in spec.row_terms]) \
        if spec.row_terms else np.zeros((len(table), 0))
    group_index, group_levels, group_grid = [], [], []
    for g, _ in spec.groups:  # "a:b" groups by each combination of a and b
        labels = joined_labels(table, g.split(":"))
        levels, first, index = np.unique(labels.to_numpy(), return_index=True, return_inverse=True)
        group_levels.append(levels)
        group_index.append(stack(index))
        group_grid.append(_grid(table, g.split(":"), first) if ":" in g else None)
    if n_stage > 1:
        ids = pd.Series(np.concatenate([(ids + "|" + s).to_numpy() for s in spec.stages]))
    node_index, graph = spatial_nodes(table, graph) if spec.spatial else (None, None)
    return Design(y=y, log_exposure=stack(np.log(exposure)), x=stack(x), w=stack(w),
                  la_index=stack(la_index), la_codes=la_codes, la_X=la_X, X_mean=X_mean, z=z,
                  la_cov=(cov - center) / scale, la_cov_names=tuple(spec.la.covariates),
                  la_cov_center=center, la_cov_scale=scale, row_ids=ids.to_numpy(),
                  msoa_index=None if msoa_index is None else stack(msoa_index), msoa_codes=msoa_codes,
                  x_mean=x_mean, stage_index=np.repeat(np.arange(n_stage), len(table)),
                  stage_names=spec.stages, stratum_index=stack(stratum_index),
                  stratum_names=stratum_names, row_X=np.tile(row_X, (n_stage, 1)), row_names=spec.row_terms,
                  group_names=tuple(g for g, _ in spec.groups), group_index=tuple(group_index),
                  group_levels=tuple(group_levels), group_slope=tuple(s for _, s in spec.groups),
                  group_grid=tuple(group_grid), graph=graph,
                  node_index=None if node_index is None else stack(node_index))


def _numeric(table: pd.DataFrame, col: str, *, count: bool, shown: str | None = None) -> None:
    """Refuse a model column that is not numeric (or, for counts, not non-negative integers); the
    message names the column as ``shown`` (the user's name of it)."""
    v = pd.to_numeric(table[col], errors="coerce") if table[col].dtype != bool else None
    bad = np.ones(len(table), bool) if v is None else ~np.isfinite(v.to_numpy(dtype=float))
    if count and v is not None:
        a = v.to_numpy(dtype=float)
        bad |= (a < 0) | (np.nan_to_num(a) % 1 != 0)
    if bad.any():
        rows = ", ".join(str(r + 1) for r in np.flatnonzero(bad)[:5])
        what = "non-negative whole numbers (a count)" if count else "finite numbers"
        raise HierarchyError(f"column '{shown or col}' must hold {what}; rows {rows} do not "
                             f"({int(bad.sum())} in all; row numbers count data rows from 1): fix or drop them")


def _la_level(values: np.ndarray, la_index: np.ndarray, n_la: int) -> np.ndarray:
    """One value per LA from a column that must be constant within each LA."""
    out = np.full(n_la, np.nan)
    out[la_index] = values
    if not np.allclose(values, out[la_index], equal_nan=True):
        raise HierarchyError("an LA-level column varies within an LA; run hierarchy validate")
    return out


def group_parent_la(design: Design, g: int) -> np.ndarray | None:
    """The LA of each level of group term ``g`` if every level lies within one LA (``la:year``), else None."""
    index = design.group_index[g]
    n = len(design.group_levels[g])
    pairs = np.unique(np.stack([index, design.la_index]), axis=1)
    if pairs.shape[1] != n or not np.array_equal(pairs[0], np.arange(n)):
        return None
    return pairs[1]

"""Neighbourhood maps and their adjacency graph: boundaries read with geopandas/pyogrio, queen
contiguity with libpysal, connected parts and the BYM2 scaling of each part.

The data layer's view of space: a :class:`Graph` over the neighbourhood codes of a table (nodes in the
table's order of first appearance), its undirected edges, the connected part of each node and, per node,
the geometric mean of the marginal variances of its part's intrinsic CAR (the BYM2 scaling, Riebler et al.
2016; 1.0 for a singleton, Freni-Sterrantino et al. 2018). Nothing here knows about models.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from hierarchy.errors import HierarchyError
from hierarchy.paths import atomic_path

__all__ = [
    "BOUNDARY_FILE",
    "Graph",
    "PartScale",
    "contiguity",
    "describe",
    "draw_bym2",
    "graph_for",
    "lattice",
    "lattice_cells",
    "part_scales",
    "read_boundaries",
    "read_graph",
    "scaling_factors",
    "subgraph",
    "write_edges",
]

BOUNDARY_FILE = "geography/lsoa11_bsc_england.geojson.gz"
"""The England LSOA 2011 map, relative to the reference folder."""

EXACT_MAX = 3000
"""Parts up to this many nodes get the exact (dense) BYM2 scale; bigger ones a sampled one."""

SAMPLE = 400
"""Nodes sampled for the scale of a part bigger than :data:`EXACT_MAX`."""

CACHE_ENV = "HIERARCHY_CACHE"
CACHE_VERSION = 1
_LSOA = re.compile(r"^E01\d{6}$")
_FIX_MAP = ("Fix: give --geography FILE, a boundary file or an edge list (from,to) holding them "
            "(e.g. 2021 LSOAs or another map)")


@dataclass(frozen=True)
class Graph:
    """An undirected neighbourhood graph.

    Attributes
    ----------
    codes : numpy.ndarray
        ``(n,)`` neighbourhood codes (str), the node order.
    edges : numpy.ndarray
        ``(E, 2)`` int32 node indices, ``i < j``, each edge once, sorted.
    component : numpy.ndarray
        ``(n,)`` int32 connected part of each node, 0 the largest (ties by first node).
    scale : numpy.ndarray
        ``(n,)`` float64: geometric mean of the marginal variances of the unit-precision ICAR of the
        node's part under its sum-to-zero constraint; 1.0 for singletons.
    source : str
        Where the graph came from (a boundary file and its hash, an edge list, or ``"lattice"``).
    left_out : int
        Neighbourhoods on the map that the table does not have (dropped when the graph was cut to it).
    group : numpy.ndarray, optional
        ``(n,)`` int: each node's LA (set by the design of a table), whose sums of the structured effect a
        model may constrain; None for a bare map.
    """

    codes: np.ndarray
    edges: np.ndarray
    component: np.ndarray
    scale: np.ndarray
    source: str
    left_out: int = 0
    group: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self.codes)

    @property
    def n_components(self) -> int:
        """Number of connected parts (singletons included)."""
        return int(self.component.max()) + 1 if self.n else 0

    @property
    def singletons(self) -> np.ndarray:
        """``(n,)`` bool: nodes with no neighbour."""
        degree = np.bincount(self.edges.ravel(), minlength=self.n)
        return degree == 0



@dataclass(frozen=True)
class PartScale:
    """The BYM2 scale of one connected part, and how it was found.

    Attributes
    ----------
    part : int
        The part (as in ``Graph.component``).
    size : int
        Its nodes.
    scale : float
        Geometric mean of the marginal variances of its unit-precision ICAR (sum-to-zero); 1.0 alone.
    sample : int
        Nodes whose variance was computed (``size`` when exact).
    se_log : float
        Standard error of the mean log variance (0 when exact): ``scale`` is known to about
        ``100 * se_log`` per cent.
    """

    part: int
    size: int
    scale: float
    sample: int
    se_log: float


# --- building a graph -------------------------------------------------------------------------------


def _normalise_edges(edges: np.ndarray | Sequence, n: int) -> np.ndarray:
    """``(E, 2)`` int32, ``i < j``, unique, sorted; self-loops and out-of-range nodes are errors."""
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if e.size and (e.min() < 0 or e.max() >= n):
        raise HierarchyError(f"edge node index out of range 0..{n - 1}")
    if np.any(e[:, 0] == e[:, 1]):
        raise HierarchyError("an edge joins a node to itself")
    e = np.unique(np.sort(e, axis=1), axis=0)
    return e.astype(np.int32).reshape(-1, 2)


def _adjacency(n: int, edges: np.ndarray) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency matrix."""
    i, j = edges[:, 0], edges[:, 1]
    data = np.ones(2 * len(edges))
    return sp.csr_matrix((data, (np.r_[i, j], np.r_[j, i])), shape=(n, n))


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected part per node, 0 the largest, ties broken by the part's first node."""
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    _, label = connected_components(_adjacency(n, edges), directed=False)
    size = np.bincount(label)
    first = np.full(len(size), n)
    np.minimum.at(first, label, np.arange(n))
    order = np.lexsort((first, -size))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[label].astype(np.int32)


def _part_nodes(component: np.ndarray) -> list[np.ndarray]:
    """The nodes of each part, part 0 first, each in node order."""
    component = np.asarray(component)
    if not len(component):
        return []
    order = np.argsort(component, kind="stable")
    return np.split(order, np.cumsum(np.bincount(component))[:-1])


def _build(codes, edges, source: str) -> Graph:
    """A :class:`Graph` from unique codes and node pairs: edges normalised, parts and scales computed."""
    codes = np.asarray(codes, dtype=str)
    edges = _normalise_edges(edges, len(codes))
    component = _components(len(codes), edges)
    return Graph(codes=codes, edges=edges, component=component,
                 scale=scaling_factors(len(codes), edges, component), source=source)


def _name_codes(codes: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(str(c) for c in list(codes)[:limit])
    return shown + (f" (and {len(codes) - limit} more)" if len(codes) > limit else "")


def contiguity(frame, *, source: str = "boundaries") -> Graph:
    """Queen contiguity (a shared vertex is enough) of neighbourhood polygons, with libpysal.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Indexed by neighbourhood code (unique), as :func:`read_boundaries` returns.
    source : str
        Recorded as ``Graph.source``.

    Returns
    -------
    Graph
        Nodes in the frame's row order; parts and BYM2 scales computed.
    """
    from libpysal.graph import Graph as PysalGraph

    codes = pd.Index(frame.index.astype(str))
    if codes.has_duplicates:
        dup = codes[codes.duplicated()].unique()
        raise HierarchyError(f"{source}: {len(dup)} code(s) on more than one row: {_name_codes(dup)}. "
                             "Fix: dissolve the map to one polygon per code")
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.any():
        raise HierarchyError(f"{source}: {int(empty.sum())} code(s) without a polygon: "
                             f"{_name_codes(codes[np.asarray(empty)])}. Fix: remove them or add their boundaries")
    shapes = frame[[frame.geometry.name]].set_axis(codes, axis=0)
    pysal = PysalGraph.build_contiguity(shapes, rook=False)
    coo = pysal.sparse.tocoo()
    position = codes.get_indexer(pd.Index(pysal.unique_ids))
    keep = (coo.data > 0) & (coo.row < coo.col)
    edges = np.c_[position[coo.row[keep]], position[coo.col[keep]]]
    return _build(codes.to_numpy(), edges, source)


# --- the BYM2 scale ----------------------------------------------------------------------------------


def _reduced_laplacian(nodes: np.ndarray, adjacency: sp.csr_matrix) -> sp.csc_matrix:
    """``Q = D - A`` of a connected part, its last node grounded (row and column dropped): SPD."""
    a = adjacency[nodes][:, nodes]
    q = sp.diags(np.asarray(a.sum(axis=1)).ravel()) - a
    return sp.csc_matrix(q[:-1, :-1])


def _factor(q_r: sp.csc_matrix):
    """Sparse LU of an SPD matrix with a symmetric fill-reducing order and no pivoting."""
    return splu(q_r, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})


def _exact_log_variances(q_r: sp.csc_matrix) -> np.ndarray:
    """``log diag(Q^+)`` of a part from the dense inverse of its grounded Laplacian."""
    m = q_r.shape[0] + 1
    sigma0 = np.zeros((m, m))
    sigma0[:-1, :-1] = np.linalg.inv(q_r.toarray())
    row = sigma0.sum(axis=1)
    return np.log(np.diag(sigma0) - 2.0 * row / m + row.sum() / m**2)


def _sampled_log_variances(q_r: sp.csc_matrix, sample: int, rng: np.random.Generator) -> np.ndarray:
    """``log diag(Q^+)`` at ``sample`` random nodes of a part, one sparse solve per node."""
    m = q_r.shape[0] + 1
    lu = _factor(q_r)
    row = np.r_[lu.solve(np.ones(m - 1)), 0.0]  # Sigma0 @ 1, the grounded node's row is 0
    total = row.sum()
    nodes = np.sort(rng.choice(m, size=min(sample, m), replace=False))
    diag = np.zeros(len(nodes))
    inner = np.flatnonzero(nodes < m - 1)
    for start in range(0, len(inner), 64):
        chunk = nodes[inner[start:start + 64]]
        rhs = np.zeros((m - 1, len(chunk)))
        rhs[chunk, np.arange(len(chunk))] = 1.0
        diag[inner[start:start + 64]] = lu.solve(rhs)[chunk, np.arange(len(chunk))]
    return np.log(diag - 2.0 * row[nodes] / m + total / m**2)


def part_scales(n: int, edges: np.ndarray, component: np.ndarray, *, parts: Iterable[int] | None = None,
                sample: int = SAMPLE, exact_max: int = EXACT_MAX, seed: int = 0) -> list[PartScale]:
    """BYM2 scale of each connected part: ``exp(mean(log diag(Q^+)))`` over the part.

    Parameters
    ----------
    n : int
        Nodes.
    edges : numpy.ndarray
        ``(E, 2)`` node pairs.
    component : numpy.ndarray
        ``(n,)`` part of each node.
    parts : iterable of int, optional
        Only these parts (default all).
    sample, exact_max, seed : int
        Parts of more than ``exact_max`` nodes: the mean over ``sample`` nodes drawn with ``seed``
        (exact ``Sigma0 e_i`` columns from one sparse LU); smaller parts: exact, dense.

    Returns
    -------
    list of PartScale
    """
    edges = np.asarray(edges).reshape(-1, 2)
    adjacency = _adjacency(n, edges)
    out = []
    members = _part_nodes(component)
    for part in (range(len(members)) if parts is None else parts):
        nodes = members[part]
        m = len(nodes)
        if m == 1:
            out.append(PartScale(part, 1, 1.0, 1, 0.0))
            continue
        q_r = _reduced_laplacian(nodes, adjacency)
        if m <= exact_max:
            logs, se = _exact_log_variances(q_r), 0.0
        else:
            logs = _sampled_log_variances(q_r, sample, np.random.default_rng([seed, m]))
            se = float(logs.std(ddof=1) / math.sqrt(len(logs)) * math.sqrt(1 - len(logs) / m))
        out.append(PartScale(int(part), m, float(np.exp(logs.mean())), len(logs), se))
    return out


def scaling_factors(n: int, edges: np.ndarray, component: np.ndarray, **options) -> np.ndarray:
    """``(n,)`` BYM2 scale of each node's part (1.0 for singletons); see :func:`part_scales`.

    Parameters
    ----------
    n : int
        Nodes.
    edges : numpy.ndarray
        ``(E, 2)`` node pairs.
    component : numpy.ndarray
        ``(n,)`` part of each node.
    **options
        ``sample``, ``exact_max``, ``seed`` of :func:`part_scales`.

    Returns
    -------
    numpy.ndarray
    """
    members = _part_nodes(component)
    scale = np.ones(n)
    for p in part_scales(n, edges, component, **options):
        scale[members[p.part]] = p.scale
    return scale


# --- files --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_edge_list(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def _cache_dir() -> Path:
    """``$HIERARCHY_CACHE/graphs``, else ``~/.cache/hierarchy/graphs`` (the maps' cache is beside it)."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/hierarchy").expanduser() / "graphs"


def read_graph(path: Path | str, *, code_column: str | None = None) -> Graph:
    """The neighbourhood graph of a boundary file (cached) or of an edge list.

    Parameters
    ----------
    path : path-like
        A boundary file (anything :func:`read_boundaries` reads) or an edge list CSV: columns
        ``from``, ``to`` of codes, one row per pair (either or both directions); a row with an empty
        ``to`` names a node (needed for isolated nodes; the node order is that of first appearance).
    code_column : str, optional
        The code column of a boundary file (see :func:`read_boundaries`).

    Returns
    -------
    Graph
        Boundary graphs are cached as ``.npz`` keyed by the file's sha256 in ``$HIERARCHY_CACHE/graphs``
        (default ``~/.cache/hierarchy/graphs``); a cache that fails its checks is rebuilt.
    """
    path = Path(path)
    if not path.is_file():
        raise HierarchyError(f"{path}: no such map file. Fix: give --geography a boundary file or an edge list")
    digest = _sha256(path)
    source = f"{path} (sha256 {digest[:12]})"
    if _is_edge_list(path):
        return _read_edge_list(path, source)
    cache = _cache_dir() / f"{digest}-{code_column or 'auto'}-v{CACHE_VERSION}.npz"
    cached = _load_cache(cache, digest, source)
    if cached is not None:
        return cached
    graph = contiguity(read_boundaries(path, code_column=code_column), source=source)
    try:
        _save_cache(cache, graph, digest)
    except OSError as err:
        warnings.warn(f"graph cache not written ({cache}: {err}); the map will be read again next time",
                      UserWarning, stacklevel=2)
    return graph


def _save_cache(cache: Path, graph: Graph, digest: str) -> None:
    with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, codes=graph.codes, edges=graph.edges, component=graph.component,
                            scale=graph.scale, sha256=np.array(digest), version=np.array(CACHE_VERSION))


def _load_cache(cache: Path, digest: str, source: str) -> Graph | None:
    """The cached graph, or None when absent or failing any check (then it is rebuilt)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["sha256"]) != digest or int(z["version"]) != CACHE_VERSION:
                raise ValueError("key mismatch")
            codes, edges = z["codes"].astype(str), z["edges"].astype(np.int32)
            component, scale = z["component"].astype(np.int32), z["scale"].astype(np.float64)
        n = len(codes)
        if not (np.array_equal(edges, _normalise_edges(edges, n)) and len(component) == len(scale) == n
                and np.array_equal(component, _components(n, edges))
                and np.all(np.isfinite(scale) & (scale > 0)) and len(set(codes)) == n):
            raise ValueError("inconsistent arrays")
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
        warnings.warn(f"graph cache {cache} is unreadable or inconsistent ({err}); rebuilding it",
                      UserWarning, stacklevel=3)
        return None
    return Graph(codes=codes, edges=edges, component=component, scale=scale, source=source)


def _read_edge_list(path: Path, source: str) -> Graph:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("from", "to") if c not in table.columns]
    if missing:
        raise HierarchyError(f"{path}: edge list lacks column(s) {missing} (have {list(table.columns)}). "
                             "Fix: give columns 'from' and 'to' of neighbourhood codes")
    a, b = table["from"].str.strip().to_numpy(), table["to"].str.strip().to_numpy()
    for bad, column, what in ((a == "", "from", "an empty 'from'"),
                              ((a == b) & (a != ""), "to", "'from' equal to 'to'")):
        if bad.any():
            lines = ", ".join(map(str, np.flatnonzero(bad)[:5] + 2))
            raise HierarchyError(f"{path}: column '{column}': {int(bad.sum())} row(s) with {what} (file lines "
                                 f"{lines}; the header is line 1). Fix: each row names two neighbouring codes, "
                                 "or one code and an empty 'to'")
    index, codes = pd.factorize(np.c_[a, b].ravel())  # first appearance, row by row
    index = index.reshape(-1, 2)
    pairs = index[b != ""]
    keep = np.asarray(codes) != ""
    remap = np.cumsum(keep) - 1
    return _build(np.asarray(codes)[keep], remap[pairs], f"edge list {source}")


def write_edges(graph: Graph, path: Path | str) -> Path:
    """Write ``graph`` as an edge list CSV that :func:`read_graph` reads back (atomically).

    Parameters
    ----------
    graph : Graph
    path : path-like

    Returns
    -------
    pathlib.Path
        One row per node first (empty ``to``: keeps the node order and the isolated nodes), then one
        row per edge.
    """
    path = Path(path)
    nodes = pd.DataFrame({"from": graph.codes, "to": ""})
    pairs = pd.DataFrame({"from": graph.codes[graph.edges[:, 0]], "to": graph.codes[graph.edges[:, 1]]})
    with atomic_path(path) as tmp:
        pd.concat([nodes, pairs], ignore_index=True).to_csv(tmp, index=False)
    return path


# --- a graph for a table ------------------------------------------------------------------------------


def _codes_array(codes, where: str) -> np.ndarray:
    series = pd.Series(np.asarray(codes, dtype=object))
    blank = series.isna() | (series.astype(str).str.strip() == "")
    if blank.any():
        rows = np.flatnonzero(blank.to_numpy())
        raise HierarchyError(f"{where}: {int(blank.sum())} row(s) without a neighbourhood code (row positions, "
                             f"0-based: {_name_codes(rows)}). Fix: fill or remove them")
    return series.astype(str).to_numpy()


def subgraph(graph: Graph, codes, *, where: str = "the table") -> Graph:
    """``graph`` cut to the neighbourhoods of a table.

    Parameters
    ----------
    graph : Graph
        The map's graph.
    codes : array-like of str
        The table's codes, possibly repeated (e.g. LSOA x stratum rows).
    where : str
        Names the table in errors.

    Returns
    -------
    Graph
        Nodes in the order of first appearance in ``codes``; parts recomputed (cutting can split a
        part); scales kept for parts left whole and recomputed otherwise; ``left_out`` counts the
        map's nodes that the table lacks.

    Raises
    ------
    HierarchyError
        If a code is not on the map.
    """
    codes = _codes_array(codes, where)
    unique = pd.unique(codes)
    position = pd.Index(graph.codes).get_indexer(unique)
    if (position < 0).any():
        absent = unique[position < 0]
        rows = [int(np.flatnonzero(codes == c)[0]) for c in absent[:5]]
        raise HierarchyError(f"{where}: {len(absent)} neighbourhood code(s) not on the map {graph.source}: "
                             f"{_name_codes(absent)} (first at row positions, 0-based: "
                             f"{', '.join(map(str, rows))}). {_FIX_MAP}")
    new = np.full(graph.n, -1)
    new[position] = np.arange(len(position))
    e = new[graph.edges]
    edges = _normalise_edges(e[(e >= 0).all(axis=1)], len(unique))
    component = _components(len(unique), edges)
    scale = graph.scale[position].copy()
    members = _part_nodes(component)
    old = graph.component[position]
    old_size = np.bincount(graph.component, minlength=graph.n_components)
    redo = [p for p, nodes in enumerate(members)  # a part not identical to a part of the map
            if old[nodes].min() != old[nodes].max() or old_size[old[nodes[0]]] != len(nodes)]
    for p in part_scales(len(unique), edges, component, parts=redo):
        scale[members[p.part]] = p.scale
    return Graph(codes=np.asarray(unique, dtype=str), edges=edges, component=component, scale=scale,
                 source=graph.source, left_out=graph.left_out + graph.n - len(unique))


def graph_for(codes, *, geography: Path | str | None = None, reference_dir: Path | None = None,
              code_column: str | None = None, where: str = "the table", groups=None) -> Graph:
    """The neighbourhood graph of a table: its own map, or England's LSOA 2011 map.

    Parameters
    ----------
    codes : array-like of str
        The table's neighbourhood codes (may repeat).
    geography : path-like, optional
        A boundary file or edge list (``--geography``); default the reference folder's LSOA map,
        used only when every code looks like an England LSOA code (``E01`` and six digits).
    reference_dir : pathlib.Path, optional
        The reference folder (default: :func:`hierarchy.data.reference.find_reference_dir`).
    code_column : str, optional
        The code column of a boundary file.
    where : str
        Names the table in errors.
    groups : array-like of str, optional
        Each code's LA (aligned with ``codes``). A generated geography (every code ``N`` and six digits,
        :func:`hierarchy.data.reference.synthetic_geography`) has no map: its graph is the lattice the
        simulator draws its fields on (:func:`lattice` of the codes sorted by LA then code, each LA a block).

    Returns
    -------
    Graph
        :func:`subgraph` of the map to ``codes``.
    """
    from hierarchy.data.reference import find_reference_dir

    if geography is None and groups is not None:
        frame = pd.DataFrame({"code": _codes_array(codes, where), "group": np.asarray(groups).astype(str)})
        if len(frame) and frame["code"].str.fullmatch(_GENERATED).all():
            nodes = frame.drop_duplicates("code").sort_values(["group", "code"])
            grid = lattice(nodes["code"].to_numpy(), groups=nodes["group"].to_numpy())
            return subgraph(grid, frame["code"].to_numpy(), where=where)
    if geography is None:
        values = pd.unique(_codes_array(codes, where))
        odd = [c for c in values if not _LSOA.match(c)]
        if odd:
            raise HierarchyError(f"{where}: neighbourhood codes are not England LSOA codes (e.g. "
                                 f"{_name_codes(odd, 3)}), so there is no default map. {_FIX_MAP}")
        folder = find_reference_dir(reference_dir)
        if folder is None or not (folder / BOUNDARY_FILE).is_file():
            raise HierarchyError(f"{where}: the England LSOA map ({BOUNDARY_FILE}) was not found in the "
                                 f"reference folder ({folder or 'none found'}). {_FIX_MAP}")
        geography = folder / BOUNDARY_FILE
    return subgraph(read_graph(geography, code_column=code_column), codes, where=where)


def table_graph(table: pd.DataFrame, geography: Path | str | None = None) -> Graph:
    """:func:`graph_for` of a canonical table: its ``neighbourhood`` codes, each in its ``la``."""
    return graph_for(table["neighbourhood"].astype(str).to_numpy(), geography=geography,
                     groups=table["la"].astype(str).to_numpy())


# --- generated geographies ----------------------------------------------------------------------------

_GENERATED = r"N\d{6}"
"""Neighbourhood codes of a generated geography (:func:`hierarchy.data.reference.synthetic_geography`)."""


def _lattice_xy(n: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Cell ``(x, y)`` of each node: each group a near-square block, blocks on shelves, row-major."""
    if groups is None:
        sizes = [n] if n else []
    else:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise HierarchyError(f"lattice: {len(groups)} groups for {n} codes. Fix: give one group per code")
        starts = np.r_[True, groups[1:] != groups[:-1]] if n else np.zeros(0, bool)
        if len(pd.unique(groups)) != int(starts.sum()):
            raise HierarchyError("lattice: a group's codes are not together. Fix: sort the codes by group")
        sizes = np.diff(np.r_[np.flatnonzero(starts), n]).tolist()
    widths = [math.ceil(math.sqrt(m)) for m in sizes]
    heights = [math.ceil(m / w) for m, w in zip(sizes, widths, strict=True)]
    area = sum(w * h for w, h in zip(widths, heights, strict=True))
    total = max([math.ceil(math.sqrt(area))] + widths, default=0)
    x, y = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    cx = cy = shelf = start = 0
    for m, w, h in zip(sizes, widths, heights, strict=True):
        if cx and cx + w > total:
            cx, cy, shelf = 0, cy + shelf, 0
        k = np.arange(m)
        x[start:start + m], y[start:start + m] = cx + k % w, cy + k // w
        cx, shelf, start = cx + w, max(shelf, h), start + m
    return x, y


def _queen_edges(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros((0, 2), dtype=np.int32)
    grid = np.full((y.max() + 3, x.max() + 3), -1)
    grid[y + 1, x + 1] = np.arange(len(x))
    pairs = []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        other = grid[y + 1 + dy, x + 1 + dx]
        pairs.append(np.c_[np.arange(len(x))[other >= 0], other[other >= 0]])
    return np.concatenate(pairs)


def lattice(codes, groups=None) -> Graph:
    """A queen lattice for a generated geography (no real map).

    Parameters
    ----------
    codes : array-like of str
        Unique codes, in the order to lay them out (sorted by LA, so each LA is a block).
    groups : array-like, optional
        The LA of each code: each LA then gets its own near-square block.

    Returns
    -------
    Graph
        ``source="lattice"``; :func:`lattice_cells` draws the same layout.
    """
    codes = _codes_array(codes, "lattice")
    if len(set(codes)) != len(codes):
        raise HierarchyError("lattice: codes repeat. Fix: give each neighbourhood once")
    return _build(codes, _queen_edges(*_lattice_xy(len(codes), groups)), "lattice")


def lattice_cells(graph_or_codes, groups=None):
    """Unit squares of the :func:`lattice` layout, to draw maps of generated data.

    Parameters
    ----------
    graph_or_codes : Graph or array-like of str
        A lattice graph (checked against the layout) or the codes given to :func:`lattice`.
    groups : array-like, optional
        As given to :func:`lattice`.

    Returns
    -------
    geopandas.GeoDataFrame
        Indexed by ``code``; first row of cells at the top; no CRS.
    """
    import geopandas as gpd
    import shapely

    graph = graph_or_codes if isinstance(graph_or_codes, Graph) else None
    codes = graph.codes if graph is not None else _codes_array(graph_or_codes, "lattice")
    x, y = _lattice_xy(len(codes), groups)
    if graph is not None and not np.array_equal(graph.edges, _normalise_edges(_queen_edges(x, y), len(codes))):
        raise HierarchyError("lattice_cells: the graph is not this lattice layout. Fix: pass the groups "
                             "the lattice was built with, and the graph before any subgraph cut")
    boxes = shapely.box(x, -y - 1, x + 1, -y)
    return gpd.GeoDataFrame(geometry=boxes, index=pd.Index(codes, name="code"))


# --- simulation and description -----------------------------------------------------------------------


def _icar_draws(graph: Graph, rng: np.random.Generator, k: int) -> np.ndarray:
    """``(k, n)`` unit-precision ICAR draws, sum-to-zero per part; singletons N(0, 1)."""
    phi = rng.standard_normal((k, graph.n))
    adjacency = _adjacency(graph.n, graph.edges)
    for part, nodes in enumerate(_part_nodes(graph.component)):
        m = len(nodes)
        if m == 1:
            continue
        local = np.full(graph.n, -1)
        local[nodes] = np.arange(m)
        e = local[graph.edges[graph.component[graph.edges[:, 0]] == part]]
        # incidence B (Q = B B'): x = Q_r^-1 B_r z has covariance Q_r^-1 for z ~ N(0, I)
        incidence = sp.csr_matrix((np.r_[np.ones(len(e)), -np.ones(len(e))],
                                   (np.r_[e[:, 0], e[:, 1]], np.r_[np.arange(len(e)), np.arange(len(e))])),
                                  shape=(m, len(e)))
        lu = _factor(_reduced_laplacian(nodes, adjacency))
        x = lu.solve(np.asarray(incidence[:-1] @ rng.standard_normal((len(e), k))))
        x = np.vstack([x.reshape(m - 1, k), np.zeros((1, k))])
        phi[:, nodes] = (x - x.mean(axis=0)).T
    return phi


def condition_on_groups(graph: Graph, phi: np.ndarray) -> np.ndarray:
    """Unit ICAR draws ``phi`` (``(k, n)``, summing to zero per part) conditioned on each group's sum
    being zero too (``graph.group``: each node's LA, -1 for none; singletons left alone), the law of the
    model's constrained field: ``phi - S B' (B S B')^+ B phi`` for the group indicator rows ``B`` and ``S``
    each part's pseudo-inverse Laplacian (not a projection, which has another covariance). Unchanged
    without groups."""
    if graph.group is None or not graph.n:
        return phi
    group = np.asarray(graph.group)
    on = ~graph.singletons & (group >= 0)
    rows_b = np.zeros((graph.n, int(group.max()) + 1))
    rows_b[np.flatnonzero(on), group[on]] = 1.0
    sb = np.zeros_like(rows_b)
    adjacency = _adjacency(graph.n, graph.edges)
    for nodes in _part_nodes(graph.component):
        if len(nodes) == 1:
            continue
        r = rows_b[nodes] - rows_b[nodes].mean(axis=0)
        x = np.vstack([_factor(_reduced_laplacian(nodes, adjacency)).solve(np.ascontiguousarray(r[:-1])),
                       np.zeros((1, r.shape[1]))])
        sb[nodes] = x - x.mean(axis=0)
    return phi - (phi @ rows_b) @ np.linalg.pinv(rows_b.T @ sb, hermitian=True) @ sb.T


def draw_bym2(graph: Graph, sd: float, mix: float, rng: np.random.Generator, *,
              size: int | None = None) -> np.ndarray:
    """Draw a BYM2 field ``sd * (sqrt(mix / scale) * phi + sqrt(1 - mix) * theta)``.

    Parameters
    ----------
    graph : Graph
    sd : float
        Total standard deviation (>= 0): the geometric mean of the marginal variances is ``sd**2``
        when ``mix`` is 0 or 1.
    mix : float
        Spatial share, in [0, 1].
    rng : numpy.random.Generator
    size : int, optional
        Draws; default one.

    Returns
    -------
    numpy.ndarray
        ``(n,)``, or ``(size, n)``; ``phi`` sums to zero over each part (and each group of
        ``graph.group``, :func:`condition_on_groups`); singletons unstructured.
    """
    if not (np.isfinite(sd) and sd >= 0):
        raise HierarchyError(f"spatial SD must be a number >= 0 (got {sd})")
    if not (0.0 <= mix <= 1.0):
        raise HierarchyError(f"spatial mixing must be in [0, 1] (got {mix})")
    k = 1 if size is None else int(size)
    phi = condition_on_groups(graph, _icar_draws(graph, rng, k))
    theta = rng.standard_normal((k, graph.n))
    field = sd * (np.sqrt(mix / graph.scale) * phi + np.sqrt(1.0 - mix) * theta)
    return field[0] if size is None else field


def graph_hash(graph: Graph) -> str:
    """16-hex SHA-256 of the graph's codes (in node order) and edges: what a fit file checks a rebuilt graph by."""
    h = hashlib.sha256("\n".join(map(str, graph.codes)).encode())
    h.update(np.ascontiguousarray(graph.edges, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def graph_record(graph: Graph, geography: Path | str | None = None) -> dict:
    """What a fit file records of its graph: where it came from (``file``: the ``--geography`` given, None for
    the default map), its sizes and :func:`graph_hash`."""
    return {"source": graph.source, "file": None if geography is None else str(geography),
            "hash": graph_hash(graph), "nodes": int(graph.n), "edges": int(len(graph.edges)),
            "parts": int(graph.n_components), "singletons": int(graph.singletons.sum()),
            "left_out": int(graph.left_out)}


def describe(graph: Graph) -> str:
    """One plain line: nodes, edges, mean neighbours, parts and their sizes, singletons, left out."""
    sizes = np.sort(np.bincount(graph.component, minlength=graph.n_components))[::-1]
    shown = ", ".join(map(str, sizes[:10])) + (", ..." if len(sizes) > 10 else "")
    mean = 2 * len(graph.edges) / graph.n if graph.n else 0.0
    left = f"; {graph.left_out} on the map but not in the table left out" if graph.left_out else ""
    return (f"{graph.n} neighbourhoods, {len(graph.edges)} neighbour pairs, {mean:.2f} neighbours on average, "
            f"{graph.n_components} connected part{'s' if graph.n_components != 1 else ''} (sizes {shown}), "
            f"{int(graph.singletons.sum())} alone{left} ({graph.source})")


def read_boundaries(path: Path | str, *, code_column: str | None = None):
    """Neighbourhood polygons from a boundary file (GeoJSON, gzipped GeoJSON, GeoPackage, shapefile).

    Parameters
    ----------
    path : path-like
        The file; ``.gz`` is read through GDAL's ``/vsigzip/``.
    code_column : str, optional
        The column of neighbourhood codes; default the first of ``LSOA11CD``, ``LSOA21CD``, ``code``.

    Returns
    -------
    geopandas.GeoDataFrame
        Indexed by the code (str), with a ``geometry`` column in the file's CRS.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such boundary file")
    frame = gpd.read_file(f"/vsigzip/{path}" if path.suffix == ".gz" else path)
    candidates = [code_column] if code_column else ["LSOA11CD", "LSOA21CD", "code"]
    found = [c for c in candidates if c in frame.columns]
    if not found:
        raise ValueError(f"{path}: no code column (looked for {candidates}; have {list(frame.columns)}). "
                         "Fix: name it with code_column= (--geography-code on the command line)")
    return frame.set_index(frame[found[0]].astype(str)).rename_axis("code")

"""Neighbourhood maps and their adjacency graph: boundaries read with geopandas/pyogrio, queen
contiguity with libpysal, connected parts and the BYM2 scaling of each part.

The data layer's view of space: a :class:`Graph` over the neighbourhood codes of a table (nodes in the
table's order of first appearance), its undirected edges, the connected part of each node and, per node,
the geometric mean of the marginal variances of its part's intrinsic CAR (the BYM2 scaling, Riebler et al.
2016; 1.0 for a singleton, Freni-Sterrantino et al. 2018). Nothing here knows about models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Graph", "read_boundaries"]


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
    """

    codes: np.ndarray
    edges: np.ndarray
    component: np.ndarray
    scale: np.ndarray
    source: str
    left_out: int = 0

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

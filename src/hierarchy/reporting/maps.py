"""Maps of a report: LA choropleths and the neighbourhood deprivation map (issue 31 item 5).

Neighbourhood polygons come from a boundary file (``--geography FILE``; default the ONS LSOA 2011
boundaries in the reference folder, :data:`BOUNDARY_FILE`) or, for a generated geography (codes
``N000001``), from :func:`hierarchy.data.geography.lattice_cells` (each LA a block). They are
dissolved to the fit's LAs (each neighbourhood's LA as the fit recorded it) and drawn with geopandas
on matplotlib's Agg canvas: no web tiles, nothing fetched.

What may be drawn where (DESIGN sections 5 and 8):

* on the page (registered outputs, :mod:`hierarchy.reporting.registry`): each LA's gradient score
  (a posterior estimand the report already tabulates), the DfE rate (published) and neighbourhood
  deprivation (public);
* only in :data:`INSIDE_ONLY` beside the report, with a README saying it stays inside the secure
  environment: anything derived from neighbourhood counts (fitted neighbourhood rates). Those maps are
  never registered, so neither the page nor the checking folder can carry them.

Cost: the dissolved LA polygons (keyed by the boundary source's hash and the neighbourhood -> LA
assignment), the projected neighbourhood polygons (keyed by the file's hash) and the public
deprivation map (keyed by its inputs) are cached under ``$HIERARCHY_CACHE/maps`` or
``~/.cache/hierarchy/maps``, written atomically; an unreadable cache entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.paths import atomic_path

__all__ = ["BOUNDARY_FILE", "INSIDE_ONLY", "Boundaries", "MapSet", "boundary_file", "cache_folder", "cached",
           "choropleth", "deprivation_map", "dfe_map", "dfe_rates", "dfe_table", "digest", "file_digest",
           "fitted_rate_map", "gradient_figure", "gradient_map", "la_shapes", "la_value_map",
           "neighbourhood_shapes", "panel_maps", "report_maps", "resolve_boundaries", "write_inside_only"]

MAP_VERSION = "1"
"""Part of every cache key of a drawn map: bump it when the drawing changes."""
BOUNDARY_FILE = Path("geography/lsoa11_bsc_england.geojson.gz")
"""The boundary file in the reference folder (ONS LSOA 2011, super-generalised, England)."""
DRAW_CRS = "EPSG:27700"
"""Geographic boundaries are drawn in British National Grid metres."""
SIMPLIFY_M = 100.0
"""Tolerance (metres) of the coverage-preserving simplification of the LA polygons drawn."""
INSIDE_ONLY = "inside_only"
"""Folder beside the report for maps derived from neighbourhood counts (never shared)."""
INSIDE_README = (
    "INSIDE THE SECURE ENVIRONMENT ONLY. The maps in this folder are derived from neighbourhood counts "
    "(fitted neighbourhood rates). They have not been through output checking and must not leave the secure "
    "environment: do not copy them into the report, the checking folder or any output request.\n")
HOW_TO_GET = ("give a boundary file of the neighbourhood codes (hierarchy report --geography FILE) or the "
              f"reference folder (../shared/data/england or $HIERARCHY_REFERENCE_DIR) holding {BOUNDARY_FILE}")
ONS_SOURCE = ("Boundaries: ONS LSOA 2011 (super-generalised), Office for National Statistics, OGL v3; "
              "contains OS data © Crown copyright and database right.")
DFE_MEASURES = {"referral": "referrals", "referrals": "referrals", "s47": "s47", "cin": "cin",
                "cin_at31": "cin", "cpp_start": "cpp_start", "cpp_at31": "cpp_at31", "cla_at31": "cla_at31"}
"""Outcome column -> DfE measure of :attr:`hierarchy.data.reference.Geography.dfe` mapped beside it."""
NO_VALUE = {"color": "#d9d9d9", "hatch": "////", "edgecolor": "#9a9a9a", "linewidth": 0.2}


@dataclass(frozen=True)
class Boundaries:
    """Polygons of a fit's neighbourhoods and of its LAs, ready to draw.

    ``las``: indexed by LA code (dissolved, simplified); ``codes``: the fit's neighbourhoods on the map;
    ``source``: the source line of the maps; ``key``: digest of the polygons and the assignment;
    ``missing``: the fit's neighbourhoods not on the map; :attr:`hoods` reads the neighbourhood polygons
    only when a map needs them (the cached maps do not).
    """

    las: Any
    codes: pd.Index
    source: str
    key: str
    load: Callable[[], Any]
    missing: int = 0

    @property
    def hoods(self) -> Any:
        """The fit's neighbourhood polygons on the map, indexed by code (read on first use)."""
        return self.load().loc[self.codes]


@dataclass(frozen=True)
class MapSet:
    """A report's maps: ``public`` ``{name: (PNG bytes, plotted data)}`` for the page (with a caption in
    front once :mod:`hierarchy.reporting.figure_list` adds it), ``inside`` ``{name: PNG bytes}`` for
    :data:`INSIDE_ONLY` only, and ``notes`` for the page."""

    public: dict[str, tuple] = field(default_factory=dict)
    inside: dict[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- cache


def cache_folder() -> Path:
    """``$HIERARCHY_CACHE/maps``, else ``~/.cache/hierarchy/maps``."""
    root = os.environ.get("HIERARCHY_CACHE")
    return (Path(root).expanduser() if root else Path("~/.cache/hierarchy").expanduser()) / "maps"


def digest(*parts: bytes | str | np.ndarray | pd.Index | pd.Series) -> str:
    """16-hex SHA-256 of ``parts`` (each length-prefixed, so no two lists of parts collide); an array,
    index or series counts as one part, its values as text."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray | pd.Index | pd.Series):
            p = "\n".join(np.asarray(p, dtype=object).astype(str))
        b = p.encode("utf-8") if isinstance(p, str) else bytes(p)
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """16-hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cached(name: str, build: Callable[[], Any], *, read: Callable[[Path], Any],
           write: Callable[[Any, Path], None]) -> Any:
    """The cache entry ``name`` (read with ``read``), else ``build()`` written atomically with ``write``.

    An entry that cannot be read (truncated, corrupt) is rebuilt and replaced.
    """
    path = cache_folder() / name
    if path.is_file():
        try:
            return read(path)
        except Exception:  # noqa: BLE001  (any unreadable entry: rebuild it)
            pass
    value = build()
    try:
        with atomic_path(path) as tmp:
            write(value, tmp)
    except OSError:  # a read-only home: draw without caching
        pass
    return value


def _read_geo(path: Path) -> Any:
    import geopandas as gpd

    return gpd.read_parquet(path)


def _write_geo(frame: Any, tmp: Path) -> None:
    frame.to_parquet(tmp)


# ---------------------------------------------------------------------------- boundaries


def boundary_file(geography: str | os.PathLike | None = None) -> Path | None:
    """The boundary file to use: ``geography`` if given, else :data:`BOUNDARY_FILE` in the reference folder."""
    if geography is not None:
        return Path(geography)
    from hierarchy.data.reference import find_reference_dir

    folder = find_reference_dir()
    path = None if folder is None else folder / BOUNDARY_FILE
    return path if path is not None and path.is_file() else None


def _frame_digest(frame: Any) -> str:
    import shapely

    wkb = shapely.to_wkb(frame.geometry.to_numpy())
    return digest("frame", frame.index, b"".join(len(w).to_bytes(8, "little") + w for w in wkb))


def _read_codes(path: Path) -> pd.Index:
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        raise ValueError(f"{path}: truncated")
    return pd.Index(np.array(text.splitlines(), dtype=object), dtype=object)


def _write_codes(codes: pd.Index, tmp: Path) -> None:
    tmp.write_text("\n".join(map(str, codes)) + "\n", encoding="utf-8")


def neighbourhood_shapes(la_of: pd.Series, geography: Any = None
                         ) -> tuple[pd.Index, Callable[[], Any], str, str] | str:
    """The codes on the map, a loader of their polygons, the source line and a key; or why there are none.

    ``la_of``: each neighbourhood's LA, indexed by code; ``geography``: a boundary file, a GeoDataFrame
    indexed by code, or None (the reference folder's file; for generated codes ``N000001`` the lattice of
    :func:`hierarchy.data.geography.lattice_cells`, each LA a block).
    A file's polygons (projected to :data:`DRAW_CRS`) and its list of codes are cached by its hash.
    """
    import functools

    import geopandas as gpd

    from hierarchy.data import geography as geo_mod

    lattice = getattr(geo_mod, "lattice_cells", None)
    if geography is None and lattice is not None and len(la_of) and str(la_of.index[0]).startswith("N"):
        order = pd.DataFrame({"la": la_of.to_numpy(), "code": la_of.index}).sort_values(["la", "code"])
        geography = lattice(order["code"].to_numpy(), groups=order["la"].to_numpy())
        source = "Generated geography: a lattice of unit squares, not real places."
    else:
        source = "Boundaries: given with the report."
    if isinstance(geography, gpd.GeoSeries):
        geography = geography.to_frame("geometry")
    if isinstance(geography, gpd.GeoDataFrame):
        frame = geography.set_axis(geography.index.astype(str))
        return frame.index, lambda: frame, source, _frame_digest(frame)
    path = boundary_file(geography)
    if path is None:
        return f"no neighbourhood boundaries found: {HOW_TO_GET}"
    if not path.is_file():
        from hierarchy.errors import HierarchyError

        raise HierarchyError(f"{path}: no such boundary file (--geography); fix: name an existing GeoJSON, "
                             "GeoPackage or shapefile of the neighbourhoods, or leave --geography out")
    key = file_digest(path)

    def build() -> Any:
        frame = geo_mod.read_boundaries(path)[["geometry"]]
        return frame.to_crs(DRAW_CRS) if frame.crs is not None and not frame.crs.is_projected else frame

    @functools.cache
    def load() -> Any:
        return cached(f"hoods-{key}-{MAP_VERSION}.parquet", build, read=_read_geo, write=_write_geo)

    on_map = cached(f"codes-{key}.txt", lambda: load().index.astype(str), read=_read_codes, write=_write_codes)
    source = ONS_SOURCE if path.name == BOUNDARY_FILE.name else f"Boundaries: {path.name} (hash {key})."
    return on_map, load, source, key


def la_shapes(load: Callable[[], Any], la_of: pd.Series, key: str) -> Any:
    """The polygons of ``load()`` dissolved by ``la_of`` (code -> LA) and simplified for drawing, cached by
    ``key`` and the assignment."""
    assignment = digest(key, la_of.index, la_of)

    def build() -> Any:
        frame = load().loc[la_of.index, ["geometry"]].assign(la=la_of.to_numpy())
        las = frame.dissolve("la")
        if las.crs is not None and las.crs.is_projected:
            las = las.set_geometry(las.geometry.simplify_coverage(SIMPLIFY_M))
        return las

    return cached(f"las-{assignment}-{MAP_VERSION}.parquet", build, read=_read_geo, write=_write_geo)


def resolve_boundaries(la_of: pd.Series, geography: Any = None) -> Boundaries | str:
    """The polygons of a fit's neighbourhoods and LAs (``la_of``: code -> LA), or one line saying why none."""
    la_of = pd.Series(la_of.to_numpy().astype(str).astype(object),  # numpy strings: arrow's isin is slow
                      index=pd.Index(la_of.index.to_numpy().astype(str).astype(object), dtype=object))
    found = neighbourhood_shapes(la_of, geography)
    if isinstance(found, str):
        return found
    codes, load, source, key = found
    on_map = la_of.index.isin(pd.Index(np.asarray(codes, dtype=object), dtype=object))
    if not on_map.any():
        return (f"no neighbourhood of the fit is on the map ({source.rstrip('.')}; fit codes look like "
                f"{la_of.index[0]!r}, the map's like {str(codes[0])!r}): {HOW_TO_GET}")
    la_of = la_of[on_map]
    return Boundaries(las=la_shapes(load, la_of, key), codes=la_of.index, source=source,
                      key=digest(key, la_of.index, la_of), load=load, missing=int((~on_map).sum()))


# ---------------------------------------------------------------------------- drawing


def _london(codes: pd.Index) -> np.ndarray | None:
    """Which LA codes are London boroughs (E09...), when there are others too (else None: no inset)."""
    inner = np.asarray(codes.astype(str).str.startswith("E09"))
    return inner if inner.any() and not inner.all() else None


def _draw(ax: Any, part: Any, outline: Any, *, cmap: str, norm: Any, edge: float) -> None:
    """One map panel: grey hatched shapes without a value, coloured ones, LA borders on top."""
    blank = ~np.isfinite(part["value"].to_numpy())
    if blank.any():
        part[blank].plot(ax=ax, **NO_VALUE)
    part[~blank].plot(ax=ax, column="value", cmap=cmap, norm=norm, edgecolor="#4d4d4d", linewidth=edge)
    if outline is not None and len(outline):
        outline.boundary.plot(ax=ax, color="white", linewidth=0.4)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")


def choropleth(shapes: Any, values: pd.Series, *, title: str, label: str, source: str, cmap: str,
               norm: Any, ticks: tuple[float, ...] | None = None, outline: Any = None,
               inset: np.ndarray | None = None, edge: float = 0.25) -> Any:
    """A print-friendly choropleth of ``values`` (indexed like ``shapes``) with a labelled colour bar.

    Shapes without a value are drawn grey and hatched. ``outline``: LA polygons whose borders are drawn
    on top (over neighbourhoods); ``inset``: boolean mask of the shapes shown enlarged in a London inset.

    Returns
    -------
    matplotlib.figure.Figure
        The main axes' first collection with an array holds exactly the finite ``values``, in the
        order of ``shapes``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(6.0, 6.6))  # fixed layout: constrained layout measures every polygon (~1 s)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.07, 0.78, 0.85))
    frame = shapes[["geometry"]].assign(value=values.reindex(shapes.index).to_numpy(dtype=float))
    _draw(ax, frame, outline, cmap=cmap, norm=norm, edge=edge)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if inset is not None:
        box = ax.inset_axes([0.0, 0.62, 0.34, 0.38])  # over the Irish Sea
        ring = None if outline is None else outline[_london(outline.index) if _london(outline.index)
                                                    is not None else np.zeros(len(outline), bool)]
        _draw(box, frame[inset], ring, cmap=cmap, norm=norm, edge=edge)
        box.set_title("London", fontsize=8)
    ax.set_title(title, fontsize=10, wrap=True)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_axes((0.83, 0.2, 0.03, 0.6)))
    bar.set_label(label, fontsize=8)
    if ticks:
        shown = [t for t in ticks if norm.vmin <= t <= norm.vmax]
        bar.set_ticks(shown)
        bar.set_ticklabels([f"{t:g}" for t in shown])
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.tick_params(labelsize=7)
    blank = int((~np.isfinite(frame["value"].to_numpy())).sum())
    note = f" Grey, hatched: {blank} with no figure." if blank else ""
    fig.text(0.01, 0.01, source + note, fontsize=6.5, ha="left", va="bottom", wrap=True)
    return fig


def _png(fig: Any) -> bytes:
    from hierarchy.reporting.figures import to_png

    try:
        return to_png(fig)
    finally:
        fig.clear()


# ---------------------------------------------------------------------------- the maps


def _read_png(path: Path) -> bytes:
    data = path.read_bytes()
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")):
        raise ValueError(f"{path}: not a whole PNG")
    return data


def _write_bytes(data: bytes, tmp: Path) -> None:
    tmp.write_bytes(data)


def gradient_map(b: Boundaries, la_table: pd.DataFrame) -> tuple[bytes, pd.DataFrame]:
    """:func:`gradient_figure` as PNG bytes, and its plotted data."""
    fig, plotted = gradient_figure(b, la_table)
    return _png(fig), plotted


def gradient_figure(b: Boundaries, la_table: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """Each LA's gradient score (posterior mean), diverging around 1 on a log scale (PuOr), and the data."""
    from matplotlib.colors import LogNorm

    from hierarchy.reporting.figures import RATIO_TICKS

    values = pd.Series(la_table["mean"].to_numpy(dtype=float), index=la_table["la"].astype(str))
    shown = values[values.index.isin(b.las.index) & np.isfinite(values.to_numpy()) & (values > 0)]
    reach = max(float(np.exp(np.abs(np.log(shown.to_numpy())).max())) if len(shown) else 2.0, 1.05)
    fig = choropleth(b.las, values, title="Gradient score of each local authority (posterior mean)",
                     label="rate ratio per 10 points of neighbourhood income deprivation (1 = no gradient)",
                     source=f"Model estimates of this fit. {b.source}", cmap="PuOr",
                     norm=LogNorm(1 / reach, reach),
                     ticks=RATIO_TICKS, inset=_london(b.las.index))
    plotted = pd.DataFrame({"la": b.las.index.astype(str), "gradient_score_mean": values.reindex(b.las.index)})
    return fig, plotted.reset_index(drop=True)


def dfe_rates(dfe: pd.DataFrame, measure: str, year: int | None) -> tuple[pd.Series, int] | None:
    """DfE's published rate per 10,000 children of ``measure`` by LA in ``year`` (else the latest year
    published) from the long DfE table ``dfe``, or None when DfE has none."""
    d = dfe[dfe[measure].notna() & dfe["pop_0_17"].gt(0)]
    if not len(d):
        return None
    year = int(year) if year is not None and int(year) in set(d["year"]) else int(d["year"].max())
    d = d[d["year"] == year]
    return pd.Series((d[measure] / d["pop_0_17"] * 1e4).to_numpy(), index=d["la"].astype(str)), year


def dfe_map(b: Boundaries, dfe: pd.DataFrame, outcome: str, year: int | None
            ) -> tuple[bytes, pd.DataFrame, str] | str:
    """DfE's published rate by LA (cividis, darker = higher), or one line saying why there is none."""
    from matplotlib.colors import Normalize

    measure = DFE_MEASURES.get(outcome, "referrals")
    found = dfe_rates(dfe, measure, year)
    if found is None or not found[0].index.isin(b.las.index).any():
        return f"no DfE {measure} map: DfE publishes no figure for the fit's LAs (codes like {b.las.index[0]!r})"
    rates, year = found
    shown = rates[rates.index.isin(b.las.index)]
    what = "referrals" if measure == "referrals" else measure.replace("_", " ")
    fig = choropleth(b.las, rates, title=f"DfE {what} per 10,000 children, year ending 31 March {year}",
                     label=f"{what} per 10,000 children aged 0-17 (DfE)",
                     source=f"DfE children's social care statistics ({year}), published. {b.source}",
                     cmap="cividis_r", norm=Normalize(float(shown.min()), float(shown.max())),
                     inset=_london(b.las.index))
    plotted = pd.DataFrame({"la": b.las.index.astype(str), "year": year,
                            f"{measure}_per_10000": rates.reindex(b.las.index).to_numpy()})
    return _png(fig), plotted, what


def deprivation_map(b: Boundaries, x: pd.Series, la_of: pd.Series) -> tuple[bytes, pd.DataFrame]:
    """Neighbourhood income deprivation (public; viridis, darker = more deprived), the PNG cached by its
    inputs; the plotted data is its summary by LA (no neighbourhood codes)."""
    from matplotlib.colors import Normalize

    pct = 100 * x.reindex(b.codes) if x.max() <= 1 else x.reindex(b.codes)
    hood_la = la_of.reindex(b.codes).astype(str)
    london = _london(pd.Index(hood_la))

    def build() -> bytes:
        return _png(choropleth(
            b.hoods, pct, title="Neighbourhood income deprivation", edge=0.0, outline=b.las, inset=london,
            label="people income-deprived (%, IoD2019 income domain)", source=f"Public data. {b.source}",
            cmap="viridis_r", norm=Normalize(0.0, float(np.nanpercentile(pct, 99)) or 1.0)))

    key = digest(b.key, MAP_VERSION, "deprivation", pct.index, np.round(pct.to_numpy(), 6).tobytes())
    png = cached(f"deprivation-{key}.png", build, read=_read_png, write=_write_bytes)
    summary = pct.groupby(hood_la.to_numpy()).agg(["count", "min", "median", "max"])
    summary.columns = ["neighbourhoods", "deprivation_min_pct", "deprivation_median_pct", "deprivation_max_pct"]
    return png, summary.rename_axis("la").reset_index()


def _row_codes(idata: Any) -> np.ndarray:
    """Neighbourhood code of each fitted row (row ids are ``code|stratum...``)."""
    return np.array([s.split("|", 1)[0] for s in idata.constant_data["neighbourhood"].to_numpy().astype(str)])


def fitted_rate_map(b: Boundaries, idata: Any, *, n_draws: int) -> bytes:
    """Fitted neighbourhood rates per 10,000 (posterior predictive mean): derived from neighbourhood counts,
    so for :data:`INSIDE_ONLY` only, never the page."""
    from matplotlib.colors import Normalize

    from hierarchy.results import estimands

    cd = idata.constant_data
    first = (cd["stage"].to_numpy().astype(str) == str(cd["stage"].to_numpy()[0])) if "stage" in cd else \
        np.ones(cd.sizes["neighbourhood"], bool)
    mean = estimands.posterior_predictive(idata, n_draws=n_draws).mean("sample").to_numpy()[first]
    codes = _row_codes(idata)[first]
    expo = pd.Series(cd["exposure"].to_numpy()[first]).groupby(codes).sum()
    rate = pd.Series(mean).groupby(codes).sum() / expo * 1e4
    hood_la = pd.Series(cd["la_of"].to_numpy().astype(str)[first], index=codes)
    hood_la = hood_la[~hood_la.index.duplicated()].reindex(b.codes)
    shown = rate.reindex(b.codes)
    return _png(choropleth(
        b.hoods, rate, title="INSIDE ONLY: fitted neighbourhood rates (derived from neighbourhood counts)",
        label="fitted rate per 10,000 (posterior predictive mean)", edge=0.0, outline=b.las,
        inset=_london(pd.Index(hood_la.astype(str))),
        source=f"Stays inside the secure environment: not output-checked. {b.source}", cmap="viridis_r",
        norm=Normalize(float(np.nanmin(shown)), float(np.nanpercentile(shown, 99)))))


def _read_frame(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def _write_frame(frame: pd.DataFrame, tmp: Path) -> None:
    frame.to_parquet(tmp, index=False)


def dfe_table() -> pd.DataFrame | None:
    """The reference folder's DfE LA table (:attr:`hierarchy.data.reference.Geography.dfe`), cached by the
    size and time of the files it is built from; None without a reference folder."""
    from hierarchy.data import reference
    from hierarchy.errors import HierarchyError

    try:
        folder = reference.find_reference_dir()
    except HierarchyError:
        return None
    if folder is None:
        return None
    files = sorted(p for p in (folder / "dfe_csc").glob("*.csv")) + [folder / f for f in reference.REQUIRED_FILES]
    stats = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files if p.is_file()]
    return cached(f"dfe-{digest(MAP_VERSION, *stats)}.parquet", lambda: reference.load_reference(folder).dfe,
                  read=_read_frame, write=_write_frame)


def report_maps(idata: Any, tables: dict[str, pd.DataFrame], *, geography: Any = None, year: int | None = None,
                inside: bool = False, n_draws: int = 200, dfe: pd.DataFrame | None | str = "find") -> MapSet:
    """The maps of a fit's report, without captions: ``public`` ``{name: (PNG, plotted)}``.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit (its ``constant_data``: each row's neighbourhood, LA and deprivation).
    tables : dict
        The report's tables (``la_gradients`` for the gradient map).
    geography : path-like or geopandas.GeoDataFrame, optional
        Boundary file or polygons indexed by neighbourhood code (default: :func:`neighbourhood_shapes`).
    year : int, optional
        Census year of the DfE rate shown (default the latest DfE publishes).
    inside : bool
        Also draw the maps derived from neighbourhood counts (for :data:`INSIDE_ONLY` only).
    n_draws : int
        Posterior draws of the fitted neighbourhood rates.
    dfe : pandas.DataFrame or None, optional
        The long DfE LA table (default: the reference folder's, :func:`dfe_table`; None: no DfE map).
    """
    cd = idata.constant_data
    codes = _row_codes(idata)
    keep = ~pd.Index(codes).duplicated()
    la_of = pd.Series(cd["la_of"].to_numpy().astype(str)[keep], index=codes[keep])
    b = resolve_boundaries(la_of, geography)
    if isinstance(b, str):
        return MapSet(notes=(f"No maps: {b}.",))
    notes = [f"{b.missing:,} of the fit's neighbourhoods are not on the map."] if b.missing else []
    public: dict[str, tuple[bytes, pd.DataFrame]] = {}
    if "la_gradients" in tables:
        public["map_la_gradients"] = gradient_map(b, tables["la_gradients"])
    dfe = dfe_table() if isinstance(dfe, str) else dfe
    from hierarchy.results.fit import as_fit

    outcome = as_fit(idata).spec.outcome
    outcome = outcome[0] if isinstance(outcome, list | tuple) else outcome
    drawn = dfe_map(b, dfe, str(outcome), year) if dfe is not None else \
        "no DfE rate map: it needs the reference folder (../shared/data/england or $HIERARCHY_REFERENCE_DIR)"
    if isinstance(drawn, str):
        notes.append(drawn[0].upper() + drawn[1:] + ".")
    else:
        public["map_dfe_rate"] = drawn[:2]
    x = pd.Series(cd["deprivation"].to_numpy().astype(float)[keep], index=codes[keep])
    public["map_deprivation"] = deprivation_map(b, x, la_of)
    inside_maps = {}
    if inside:
        from hierarchy.results import estimands

        if estimands.has_row_data(idata):
            inside_maps["fitted_neighbourhood_rates"] = fitted_rate_map(b, idata, n_draws=n_draws)
        else:
            notes.append("No fitted-rate map: the fit lacks its rows' exposures (give --data).")
    return MapSet(public=public, inside=inside_maps, notes=tuple(notes))


def write_inside_only(maps: dict[str, bytes], report_dir: str | os.PathLike) -> Path | None:
    """Write count-derived maps into ``report_dir``/:data:`INSIDE_ONLY` with its README; None if no maps."""
    if not maps:
        return None
    folder = Path(report_dir) / INSIDE_ONLY
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "README.txt") as tmp:
        tmp.write_text(INSIDE_README, encoding="utf-8")
    for name, png in maps.items():
        with atomic_path(folder / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    return folder


def _reference() -> Any:
    """The reference geography, or None when there is no (complete) reference folder."""
    from hierarchy.data.reference import maybe_reference
    from hierarchy.errors import HierarchyError

    try:
        return maybe_reference()
    except HierarchyError:
        return None


def la_value_map(b: Boundaries, values: pd.Series, *, title: str, label: str, source: str) -> bytes:
    """A sequential LA choropleth (cividis, darker = higher) of ``values`` indexed by LA code."""
    from matplotlib.colors import Normalize

    shown = values[values.index.isin(b.las.index) & np.isfinite(values.to_numpy(dtype=float))]
    return _png(choropleth(b.las, values, title=title, label=label, source=f"{source} {b.source}",
                           cmap="cividis_r", norm=Normalize(float(shown.min()), float(shown.max())),
                           inset=_london(b.las.index)))


def panel_maps(la_maps: dict[str, tuple[pd.Series, str, str]], *, year: int | None = None,
               outcome: str = "referrals", lsoa: pd.DataFrame | None = None) -> MapSet:
    """Maps of the LA panel report on the reference geography's LAs (UTLA codes of its LSOA lookup).

    Parameters
    ----------
    la_maps : dict
        ``{name: (values by LA code, title, colour-bar label)}``: LA-level model estimates of the panel.
    year : int, optional
        Year of the DfE rate map (default the latest published).
    outcome : str
        The DfE measure mapped.
    lsoa : pandas.DataFrame, optional
        The reference geography's ``lsoa`` table (``lsoa``, ``la``, ``income_rate``); default: read.

    Returns
    -------
    MapSet
        ``public`` ``{name: (PNG, plotted or None)}``; ``notes`` when there is no map and why.
    """
    if lsoa is None:
        geo = _reference()
        if geo is None:
            return MapSet(notes=("No maps: they need the reference folder (../shared/data/england or "
                                 "$HIERARCHY_REFERENCE_DIR) with its LSOA lookup and boundaries.",))
        lsoa = geo.lsoa
    la_of = pd.Series(lsoa["la"].astype(str).to_numpy(), index=lsoa["lsoa"].astype(str).to_numpy())
    b = resolve_boundaries(la_of)
    if isinstance(b, str):
        return MapSet(notes=(f"No maps: {b}.",))
    public: dict[str, tuple] = {}
    for name, (values, title, label) in la_maps.items():
        if values.index.isin(b.las.index).any():
            public[name] = (la_value_map(b, values, title=title, label=label,
                                         source="Model estimates from DfE's published LA figures."), None)
    dfe = dfe_table()
    drawn = dfe_map(b, dfe, outcome, year) if dfe is not None else "no DfE rate map"
    if not isinstance(drawn, str):
        public["map_dfe_rate"] = drawn[:2]
    x = pd.Series(lsoa["income_rate"].to_numpy(dtype=float), index=la_of.index)
    public["map_deprivation"] = deprivation_map(b, x, la_of)
    return MapSet(public=public)

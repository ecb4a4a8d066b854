"""The neighbourhood graph (issue 31): contiguity, parts, BYM2 scales, files, cuts, lattices, draws."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import geography as geo
from hierarchy.data.reference import find_reference_dir
from hierarchy.errors import HierarchyError
from tests.helpers import need_reference


def _graph(n, edges, source="test"):
    return geo._build([f"C{i:03d}" for i in range(n)], np.asarray(edges).reshape(-1, 2), source)


def _pinv_log_scale(n, edges, nodes):
    a = geo._adjacency(n, np.asarray(edges)).toarray()[np.ix_(nodes, nodes)]
    q = np.diag(a.sum(axis=1)) - a
    return np.exp(np.log(np.diag(np.linalg.pinv(q))).mean())


def _grid_edges(rows, cols):
    x, y = np.meshgrid(np.arange(cols), np.arange(rows))
    return geo._queen_edges(x.ravel(), y.ravel())


GRAPHS = {
    "path": (6, [(i, i + 1) for i in range(5)]),
    "ring": (7, [(i, (i + 1) % 7) for i in range(7)]),
    "grid": (20, _grid_edges(4, 5)),
    # two parts (a triangle, a path of 4) and a singleton (node 3)
    "parts": (8, [(0, 1), (1, 2), (0, 2), (4, 5), (5, 6), (6, 7)]),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_exact_scale_matches_the_pseudo_inverse(name):
    n, edges = GRAPHS[name]
    g = _graph(n, edges)
    for part in range(g.n_components):
        nodes = np.flatnonzero(g.component == part)
        want = 1.0 if len(nodes) == 1 else _pinv_log_scale(n, edges, nodes)
        np.testing.assert_allclose(g.scale[nodes], want, rtol=1e-10)


def test_parts_are_ordered_largest_first_and_singletons_found():
    g = _graph(*GRAPHS["parts"])
    assert g.component.tolist() == [1, 1, 1, 2, 0, 0, 0, 0]
    assert g.singletons.tolist() == [False] * 3 + [True] + [False] * 4
    assert g.scale[3] == 1.0 and g.edges.dtype == np.int32
    assert (g.edges[:, 0] < g.edges[:, 1]).all()
    line = geo.describe(g)
    assert "8 neighbourhoods, 6 neighbour pairs" in line and "3 connected parts (sizes 4, 3, 1)" in line
    assert "1 alone" in line


def test_sampled_scale_agrees_with_the_exact_one_on_a_3000_node_grid():
    n, edges = 55 * 55, _grid_edges(55, 55)
    component = np.zeros(n, dtype=np.int32)
    (exact,) = geo.part_scales(n, edges, component, exact_max=4000)
    (sampled,) = geo.part_scales(n, edges, component, seed=11)
    assert exact.sample == n and exact.se_log == 0.0
    assert sampled.sample == geo.SAMPLE and 0.002 < sampled.se_log < 0.03
    assert abs(np.log(sampled.scale / exact.scale)) < 3 * sampled.se_log


def test_contiguity_of_polygons_is_queen_and_keeps_the_frame_order():
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    # a 2x2 block (corner neighbours count: queen), and a far-away island
    boxes = [shapely.box(1, 1, 2, 2), shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1),
             shapely.box(0, 1, 1, 2), shapely.box(9, 9, 10, 10)]
    frame = gpd.GeoDataFrame(geometry=boxes, index=pd.Index(list("dabce"), name="code"))
    g = geo.contiguity(frame)
    assert g.codes.tolist() == list("dabce")
    assert len(g.edges) == 6 and g.component.tolist() == [0, 0, 0, 0, 1]
    assert g.singletons.tolist() == [False] * 4 + [True]
    dup = frame.set_axis(pd.Index(list("daace"), name="code"))
    with pytest.raises(HierarchyError, match="1 code.*more than one row: a"):
        geo.contiguity(dup)


def _write_boxes(path, codes, column="LSOA11CD"):
    gpd = pytest.importorskip("geopandas")
    shapely = pytest.importorskip("shapely")
    boxes = [shapely.box(i % 3, i // 3, i % 3 + 1, i // 3 + 1) for i in range(len(codes))]
    gpd.GeoDataFrame({column: codes}, geometry=boxes, crs="EPSG:27700").to_file(path, driver="GeoJSON")
    return path


def test_boundary_graph_is_cached_and_a_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(geo.CACHE_ENV, str(tmp_path / "cache"))
    plain = _write_boxes(tmp_path / "map.geojson", [f"E0100000{i}" for i in range(7)])
    zipped = tmp_path / "map.geojson.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    first = geo.read_graph(zipped)
    assert first.n == 7 and first.n_components == 1 and "sha256" in first.source
    (cache,) = (tmp_path / "cache" / "graphs").glob("*.npz")
    again = geo.read_graph(zipped)
    np.testing.assert_array_equal(again.edges, first.edges)
    np.testing.assert_array_equal(again.scale, first.scale)
    np.testing.assert_array_equal(again.codes, first.codes)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = geo.read_graph(zipped)
    np.testing.assert_array_equal(rebuilt.edges, first.edges)
    with np.load(cache) as z:  # rewritten whole
        np.testing.assert_array_equal(z["edges"], first.edges)
    # a readable cache with wrong contents is not trusted either
    with open(cache, "wb") as handle:
        np.savez(handle, codes=first.codes, edges=first.edges[:-1], component=first.component,
                 scale=first.scale * 0 - 1, sha256=np.array("x"), version=np.array(geo.CACHE_VERSION))
    with pytest.warns(UserWarning, match="rebuilding"):
        np.testing.assert_array_equal(geo.read_graph(zipped).edges, first.edges)


def test_edge_list_round_trip_keeps_order_singletons_and_scales(tmp_path):
    g = geo._build(np.array(["Z9", "A1", "M5", "B2", "Q7", "K3", "L0", "X1"]), GRAPHS["parts"][1], "x")
    path = geo.write_edges(g, tmp_path / "edges.csv")
    back = geo.read_graph(path)
    np.testing.assert_array_equal(back.codes, g.codes)
    np.testing.assert_array_equal(back.edges, g.edges)
    np.testing.assert_array_equal(back.component, g.component)
    np.testing.assert_allclose(back.scale, g.scale)
    assert back.source.startswith("edge list") and not list(tmp_path.glob(".*tmp*"))


def test_edge_list_reads_both_directions_once_and_rejects_bad_rows(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("from,to\nA,B\nB,A\nB,C\nD,\n")
    g = geo.read_graph(path)
    assert g.codes.tolist() == ["A", "B", "C", "D"] and g.edges.tolist() == [[0, 1], [1, 2]]
    assert g.singletons.tolist() == [False, False, False, True]
    path.write_text("from,to\nA,B\nC,C\n")
    with pytest.raises(HierarchyError, match=r"e.csv: .*1 row\(s\) with 'from' equal to 'to' \(file lines 3"):
        geo.read_graph(path)
    path.write_text("from,to\nA,B\n,C\n")
    with pytest.raises(HierarchyError, match="column 'from'.*empty 'from'.*lines 3"):
        geo.read_graph(path)
    path.write_text("a,b\nA,B\n")
    with pytest.raises(HierarchyError, match=r"lacks column\(s\) \['from', 'to'\]"):
        geo.read_graph(path)


def test_subgraph_follows_the_table_and_splits_parts():
    g = _graph(*GRAPHS["path"])  # C000 - C001 - ... - C005
    table = ["C004", "C004", "C000", "C001", "C005", "C000", "C003"]
    cut = geo.subgraph(g, table)
    assert cut.codes.tolist() == ["C004", "C000", "C001", "C005", "C003"]
    assert cut.left_out == 1  # C002
    # C002 gone: the path splits into {C000, C001} and {C003, C004, C005}
    assert cut.component.tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(cut.scale, [_pinv_log_scale(3, [(0, 1), (1, 2)], [0, 1, 2])] + [0.25] * 2
                               + [_pinv_log_scale(3, [(0, 1), (1, 2)], [0, 1, 2])] * 2)
    whole = geo.subgraph(g, g.codes[::-1])  # every part whole: scales kept
    np.testing.assert_array_equal(whole.scale, g.scale)
    assert whole.left_out == 0


def test_subgraph_names_the_codes_not_on_the_map():
    g = _graph(*GRAPHS["path"])
    table = ["C000"] + [f"E{i}" for i in range(7)] + ["E0"]
    with pytest.raises(HierarchyError) as err:
        geo.subgraph(g, table, where="refs.csv")
    text = str(err.value)
    assert "refs.csv: 7 neighbourhood code(s) not on the map" in text
    assert "E0, E1, E2, E3, E4 (and 2 more)" in text and "row positions, 0-based: 1, 2, 3, 4, 5" in text
    assert "--geography FILE" in text and "\n" not in text
    with pytest.raises(HierarchyError, match="without a neighbourhood code"):
        geo.subgraph(g, ["C000", None])


def test_graph_for_needs_a_map_for_codes_that_are_not_lsoas(tmp_path):
    with pytest.raises(HierarchyError, match="not England LSOA codes.*N000001.*--geography"):
        geo.graph_for(["N000001", "N000002"])
    path = tmp_path / "e.csv"
    path.write_text("from,to\nN1,N2\nN2,N3\n")
    g = geo.graph_for(["N3", "N2"], geography=path)
    assert g.codes.tolist() == ["N3", "N2"] and g.left_out == 1 and len(g.edges) == 1


def test_lattice_is_a_queen_grid_with_matching_cells():
    codes = [f"N{i:06d}" for i in range(12)]
    g = geo.lattice(codes)  # 4 x 3
    assert g.source == "lattice" and g.n_components == 1
    degree = np.bincount(g.edges.ravel(), minlength=g.n)
    assert sorted(degree.tolist()) == [3] * 4 + [5] * 6 + [8] * 2
    cells = geo.lattice_cells(g)
    assert cells.index.tolist() == codes and np.allclose(cells.area, 1.0)
    touching = {tuple(sorted(p)) for p in geo.contiguity(cells).edges.tolist()}
    assert touching == {tuple(p) for p in g.edges.tolist()}


def test_lattice_gives_each_group_a_block():
    groups = ["a"] * 9 + ["b"] * 4 + ["c"] * 5
    codes = [f"N{i:06d}" for i in range(len(groups))]
    g = geo.lattice(codes, groups)
    cells = geo.lattice_cells(g, groups)
    blocks = cells.assign(la=groups).dissolve("la")
    assert (blocks.geometry.geom_type == "Polygon").all()  # each LA one piece
    assert np.allclose(blocks.geometry.area, [9, 4, 5])
    with pytest.raises(HierarchyError, match="not this lattice"):
        geo.lattice_cells(g)
    with pytest.raises(HierarchyError, match="not together"):
        geo.lattice(codes, ["a", "b"] * 9)


def test_bym2_draws_have_the_scaled_variance_and_sum_to_zero_per_part():
    """Over 4000 draws on a grid plus a triangle and a singleton: with mix 1 each part sums to zero and
    the geometric mean of the marginal variances over each part is sd^2; each node's variance is
    sd^2 * diag(Q^+)/scale. Relative MC error of one variance is sqrt(2/4000) = 2.2%."""
    edges = np.r_[_grid_edges(6, 6), [(36, 37), (37, 38), (36, 38)]]
    g = _graph(40, edges)
    sd, draws = 0.7, 4000
    field = geo.draw_bym2(g, sd, 1.0, np.random.default_rng(5), size=draws)
    assert field.shape == (draws, 40)
    for part in range(g.n_components):
        nodes = np.flatnonzero(g.component == part)
        variance = field[:, nodes].var(axis=0)
        if len(nodes) > 1:
            np.testing.assert_allclose(field[:, nodes].sum(axis=1), 0.0, atol=1e-9)
            a = geo._adjacency(40, g.edges).toarray()[np.ix_(nodes, nodes)]
            want = sd**2 * np.diag(np.linalg.pinv(np.diag(a.sum(1)) - a)) / g.scale[nodes]
            assert np.all(np.abs(np.log(variance / want)) < 4 * np.sqrt(2 / draws))
        assert abs(np.log(np.exp(np.log(variance).mean()) / sd**2)) < 4 * np.sqrt(2 / draws)
    unstructured = geo.draw_bym2(g, sd, 0.0, np.random.default_rng(6), size=draws)
    assert abs(np.log(unstructured.var(axis=0).mean() / sd**2)) < 4 * np.sqrt(2 / (40 * draws))
    one = geo.draw_bym2(g, sd, 0.5, np.random.default_rng(7))
    assert one.shape == (40,) and np.isfinite(one).all()
    with pytest.raises(HierarchyError, match="mixing"):
        geo.draw_bym2(g, sd, 1.5, np.random.default_rng(0))


def test_the_real_lsoa_map(tmp_path, monkeypatch):
    """32,844 LSOAs, queen contiguity: mean 5.88 neighbours, 7 parts (mainland ... Isles of Scilly);
    built once (cached in tmp_path), then cut to a table through graph_for."""
    folder = need_reference(find_reference_dir())
    if not (folder / geo.BOUNDARY_FILE).is_file():
        need_reference(None)
    monkeypatch.setenv(geo.CACHE_ENV, str(tmp_path))
    start = time.perf_counter()
    g = geo.read_graph(folder / geo.BOUNDARY_FILE)
    assert time.perf_counter() - start < 60
    assert g.n == 32844
    assert np.bincount(g.component).tolist() == [32708, 89, 25, 11, 7, 3, 1]
    assert abs(2 * len(g.edges) / g.n - 5.88) < 0.02
    scales = [g.scale[g.component == p][0] for p in range(7)]
    assert 0.75 < scales[0] < 0.85  # sampled: 0.80 (SE of the log 0.019) at seed 0
    np.testing.assert_allclose(scales[1:], [0.5782, 0.2919, 0.2663, 0.3008, 0.2222, 1.0], atol=1e-4)
    wight = g.codes[g.component == 1]
    table = np.r_[wight, wight[:5], g.codes[g.singletons]]
    cut = geo.graph_for(table, reference_dir=folder)  # from the cache
    assert cut.n == 90 and cut.left_out == 32844 - 90 and cut.n_components == 2
    np.testing.assert_allclose(cut.scale, [scales[1]] * 89 + [1.0])
    with pytest.raises(HierarchyError, match="1 neighbourhood code.*E01999999.*--geography"):
        geo.graph_for(np.append(wight, "E01999999"), reference_dir=folder)

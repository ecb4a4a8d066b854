"""Maps in every report (issue 31 item 5): LA choropleths of the gradient score and the DfE rate, the
neighbourhood deprivation map, the cache, and where count-derived maps may go.

The synthetic geography has no polygons: these tests draw it on their own stand-in lattice (unit squares,
each LA a block), passed to the report as ``geography``. The real-boundary test reads the reference folder's
LSOA file (skipped without it, except in CI).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from hierarchy.reporting import maps, registry, report
from tests.helpers import SHARED_FIT


def lattice(la_of: pd.Series):
    """Unit squares indexed by neighbourhood code, each LA a square block, blocks in rows of four."""
    import geopandas as gpd
    from shapely.geometry import box

    groups = la_of.groupby(la_of.to_numpy(), sort=True).groups
    step = max(math.ceil(math.sqrt(len(c))) for c in groups.values()) + 1
    codes, cells = [], []
    for j, (_la, members) in enumerate(groups.items()):
        side = math.ceil(math.sqrt(len(members)))
        ox, oy = (j % 4) * step, (j // 4) * step
        for i, code in enumerate(members):
            codes.append(str(code))
            cells.append(box(ox + i % side, oy + i // side, ox + i % side + 1, oy + i // side + 1))
    return gpd.GeoDataFrame(geometry=cells, index=pd.Index(codes, name="code"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HIERARCHY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "maps"


def _assignment(n_la: int = 6, per_la: int = 9) -> pd.Series:
    codes = [f"N{i + 1:06d}" for i in range(n_la * per_la)]
    return pd.Series(np.repeat([f"LA{j + 1:03d}" for j in range(n_la)], per_la), index=codes)


def _coloured(ax):
    return next(c for c in ax.collections if c.get_array() is not None)


def test_la_colours_follow_the_gradient_scores(cache):
    la_of = _assignment()
    b = maps.resolve_boundaries(la_of, lattice(la_of))
    assert list(b.las.index) == sorted(set(la_of))
    scores = pd.DataFrame({"la": sorted(set(la_of)), "mean": [1.2, 2.6, 0.7, 1.0, 1.9, 1.5]})
    fig, plotted = maps.gradient_figure(b, scores)
    coll = _coloured(fig.axes[0])
    assert np.allclose(np.asarray(coll.get_array()), scores["mean"])  # one value per LA, in order
    pos = coll.norm(np.asarray(coll.get_array()))
    assert np.isclose(coll.norm(1.0), 0.5)  # diverging, centred on 1 (log scale)
    assert np.argmax(np.abs(pos - 0.5)) == 1 and pos[1] > 0.99  # the steepest LA is the most extreme
    assert pos[2] < 0.5 < pos[0]  # reversed gradient on the other side
    faces = coll.get_facecolors()
    assert np.allclose(faces[1], coll.cmap(pos[1])) and not np.allclose(faces[1], faces[0])
    assert list(plotted["gradient_score_mean"]) == [1.2, 2.6, 0.7, 1.0, 1.9, 1.5]
    bar = fig.axes[-1]
    assert "rate ratio per 10 points" in bar.get_ylabel() and "1 = no gradient" in bar.get_ylabel()
    assert "Gradient score" in fig.axes[0].get_title()
    assert any("Boundaries" in t.get_text() for t in fig.texts)  # the source line


def test_dfe_rate_map_greys_suppressed_las_and_summarises_by_la(cache):
    la_of = _assignment()
    b = maps.resolve_boundaries(la_of, lattice(la_of))
    las = sorted(set(la_of))
    dfe = pd.DataFrame({"la": las * 2, "year": [2019] * 6 + [2020] * 6, "pop_0_17": 10_000.0,
                        "referrals": [500, 600, np.nan, 800, 300, 400, 1, 1, 1, 1, 1, 1.0]})
    png, plotted, what = maps.dfe_map(b, dfe, "referral", 2019)
    assert png.startswith(b"\x89PNG") and what == "referrals"
    assert plotted["referrals_per_10000"].isna().sum() == 1 and set(plotted["year"]) == {2019}
    assert plotted.loc[plotted["la"] == "LA002", "referrals_per_10000"].item() == 600
    assert "Grey, hatched: 1" in _texts_of_dfe(b, dfe)


def _texts_of_dfe(b, dfe) -> str:
    from matplotlib.colors import Normalize

    rates = maps.dfe_rates(dfe, "referrals", 2019)[0]
    fig = maps.choropleth(b.las, rates, title="t", label="l", source="s.", cmap="cividis_r",
                          norm=Normalize(300, 800))
    return " ".join(t.get_text() for t in fig.texts)


def test_deprivation_map_and_la_polygons_are_cached_and_a_corrupt_entry_rebuilt(cache, monkeypatch):
    la_of = _assignment()
    shapes = lattice(la_of)
    x = pd.Series(np.linspace(0.01, 0.5, len(la_of)), index=la_of.index)
    b = maps.resolve_boundaries(la_of, shapes)
    png, summary = maps.deprivation_map(b, x, la_of)
    assert "code" not in summary and "neighbourhood" not in summary  # a summary by LA only
    assert summary["neighbourhoods"].sum() == len(la_of)
    entries = {p.name.split("-")[0]: p for p in cache.iterdir()}
    assert {"las", "deprivation"} <= set(entries)

    def fail(*a, **k):
        raise AssertionError("drawn or dissolved again: the cache was not used")

    with monkeypatch.context() as m:  # second time: nothing is drawn or dissolved
        m.setattr(maps, "choropleth", fail)
        m.setattr(type(shapes), "dissolve", fail)
        again = maps.resolve_boundaries(la_of, shapes)
        assert maps.deprivation_map(again, x, la_of)[0] == png
        assert again.las.geometry.equals(b.las.geometry)
    entries["deprivation"].write_bytes(png[: len(png) // 2])  # a truncated entry is rebuilt
    entries["las"].write_bytes(b"not parquet")
    rebuilt = maps.resolve_boundaries(la_of, shapes)
    assert maps.deprivation_map(rebuilt, x, la_of)[0] == png
    assert entries["deprivation"].read_bytes() == png and len(rebuilt.las) == 6


def test_generated_codes_are_drawn_on_the_data_layers_lattice(cache):
    la_of = _assignment()
    b = maps.resolve_boundaries(la_of)
    assert "lattice" in b.source and list(b.las.index) == sorted(set(la_of))
    assert np.isclose(b.las.area, 9.0).all()  # each LA one block of its 9 unit squares


def test_no_boundaries_says_how_to_get_them(cache, monkeypatch):
    from hierarchy.data import geography

    la_of = _assignment()
    monkeypatch.setattr(maps, "boundary_file", lambda geography=None: None)
    monkeypatch.delattr(geography, "lattice_cells", raising=False)
    why = maps.resolve_boundaries(la_of)
    assert isinstance(why, str) and "--geography FILE" in why and "reference folder" in why
    other = lattice(la_of.set_axis([f"E0{i:07d}" for i in range(len(la_of))]))
    why = maps.resolve_boundaries(la_of, other)
    assert "no neighbourhood of the fit is on the map" in why and "N000001" in why


def test_registry_declares_the_public_maps_only():
    names = {o.name: o for o in registry.FIGURES}
    assert {"map_la_gradients", "map_dfe_rate", "map_deprivation"} <= set(names)
    assert names["map_la_gradients"].basis == registry.MODEL
    assert names["map_dfe_rate"].basis == names["map_deprivation"].basis == registry.PUBLIC
    assert not any("fitted" in n or "inside" in n for n in names)  # count-derived maps: never registered


# ---------------------------------------------------------------------------- a report


@pytest.fixture(scope="module")
def written(shared_fit, tmp_path_factory):
    from hierarchy.data import geography

    root = tmp_path_factory.mktemp("maps_report")
    old = os.environ.get("HIERARCHY_CACHE")
    os.environ["HIERARCHY_CACHE"] = str(root / "cache")
    try:
        table = pd.read_parquet(shared_fit["data"])
        la_of = table.drop_duplicates("neighbourhood").set_index("neighbourhood")["la"].astype(str)
        shapes = lattice(la_of)
        report.write_report(shared_fit["fit"], root / "report", data=shared_fit["data"], n_draws=20,
                            geography=shapes, inside_maps=True, for_checking=root / "checking")
        with pytest.MonkeyPatch.context() as m:
            m.setattr(maps, "boundary_file", lambda geography=None: None)
            m.delattr(geography, "lattice_cells", raising=False)
            bare = report.build_outputs(shared_fit["fit"], data=shared_fit["data"], n_draws=20)
    finally:
        if old is None:
            os.environ.pop("HIERARCHY_CACHE", None)
        else:
            os.environ["HIERARCHY_CACHE"] = old
    return {"report": root / "report", "checking": root / "checking", "bare": bare}


@SHARED_FIT
def test_report_shows_the_maps_and_keeps_count_derived_ones_inside(written):
    out, checking = written["report"], written["checking"]
    md, html = (out / "report.md").read_text(), (out / "index.html").read_text()
    for name in ("map_la_gradients", "map_deprivation"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000
        assert f"(figures/{name}.png)" in md and f"id='fig-{name}'" in html
        assert (checking / f"figure_{name}.png").read_bytes() == (out / "figures" / f"{name}.png").read_bytes()
    inside = out / maps.INSIDE_ONLY
    assert (inside / "fitted_neighbourhood_rates.png").stat().st_size > 5000
    assert "INSIDE THE SECURE ENVIRONMENT ONLY" in (inside / "README.txt").read_text()
    shared = [p for p in out.rglob("*") if maps.INSIDE_ONLY not in p.parts] + list(checking.rglob("*"))
    assert not any("fitted_neighbourhood" in p.name for p in shared)
    inside_png = (inside / "fitted_neighbourhood_rates.png").read_bytes()
    assert not any(p.is_file() and p.read_bytes() == inside_png for p in shared)
    results = json.loads((checking / "results.json").read_text())["results"]
    assert {"figure_map_la_gradients", "figure_map_deprivation"} <= set(results)
    assert "Public data only" in results["figure_map_deprivation"]["comments"][0]


@SHARED_FIT
def test_a_report_without_boundaries_builds_and_says_why(written):
    bare = written["bare"]
    assert not any(o.name.startswith("map_") for o in bare.entries)
    note = next(s for s in bare.page.sections if s.anchor == "maps").paragraphs
    assert len(note) == 1 and note[0].startswith("No maps:") and "--geography FILE" in note[0]


# ---------------------------------------------------------------------------- the real boundaries


def test_real_boundaries_dissolve_to_las_with_a_london_inset(cache):
    from hierarchy.data import reference

    folder = reference.find_reference_dir()
    if folder is None or not (folder / maps.BOUNDARY_FILE).is_file():
        if os.environ.get("CI"):
            pytest.fail("the reference folder's boundary file is required in CI")
        pytest.skip("no reference boundary file")
    lsoa = reference.load_reference(folder).lsoa
    some = lsoa[lsoa["la"].isin(["E09000001", "E09000002", "E06000001"])]  # City, Barking, Hartlepool
    la_of = pd.Series(some["la"].astype(str).to_numpy(), index=some["lsoa"].astype(str).to_numpy())
    b = maps.resolve_boundaries(la_of)
    assert sorted(b.las.index) == ["E06000001", "E09000001", "E09000002"] and b.missing == 0
    assert b.las.crs.to_epsg() == 27700 and "ONS LSOA 2011" in b.source
    fig, _ = maps.gradient_figure(b, pd.DataFrame({"la": list(b.las.index), "mean": [1.5, 2.0, 1.2]}))
    assert [ax.get_title() for ax in fig.axes[0].child_axes] == ["London"]


# ---------------------------------------------------------------------------- the panel report


def test_panel_report_without_real_las_says_so(tmp_path):
    from types import SimpleNamespace

    from hierarchy.reporting import panel_report

    stub = SimpleNamespace(source="synthetic(n_la=20, seed=0)")
    written, notes = panel_report._maps(stub, pd.DataFrame(columns=["measure"]), tmp_path)
    assert written == [] and notes and notes[0].startswith("No maps:")


@pytest.mark.slow
def test_panel_report_maps_the_real_las(tmp_path, monkeypatch):
    """National: 32,844 LSOAs dissolved to 151 LAs, three maps; the second time from the cache."""
    import time
    from types import SimpleNamespace

    from hierarchy.data import reference
    from hierarchy.reporting import panel_report

    folder = reference.find_reference_dir()
    if folder is None or not (folder / maps.BOUNDARY_FILE).is_file():
        pytest.skip("no reference boundary file")
    monkeypatch.setenv("HIERARCHY_CACHE", str(tmp_path / "cache"))
    la = reference.load_reference(folder).la
    las = pd.DataFrame({"measure": "referrals", "unit": la["la"], "last_year": 2024,
                        "rate_last": np.linspace(300, 900, len(la))})
    stub = SimpleNamespace(source=f"reference:{folder}")
    written, notes = panel_report._maps(stub, las, tmp_path)
    assert [f for _c, f in written] == ["map_referral_rate.png", "map_dfe_rate.png", "map_deprivation.png"]
    assert not notes and all((tmp_path / f).stat().st_size > 20_000 for _c, f in written)
    start = time.process_time()
    panel_report._maps(stub, las, tmp_path)
    assert time.process_time() - start < 6.0  # cached: boundaries and the deprivation map are read, not made

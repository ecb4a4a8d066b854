"""Tests of hierarchy.data.reference: finding, parsing and mapping the real data; generated geography."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import reference
from hierarchy.errors import HierarchyError

LSOA_COLUMNS = ["lsoa", "lsoa_name", "msoa", "la", "la_name", "income_rate", "children",
                "age_0_4", "age_5_9", "age_10_15", "age_16_17", "ruc11_code", "rural", "density"]
LA_COLUMNS = ["la", "la_name", "n_lsoa", "children", "deprivation", "rural_share", "log_density"]
DFE_COLUMNS = ["la", "year", "pop_0_17", "referrals", "cin", "s47", "cpp_start", "cpp_at31",
               "cla_at31"]
BANDS = ["age_0_4", "age_5_9", "age_10_15", "age_16_17"]


def _child_weighted_check(geo: reference.Geography) -> None:
    lsoa, la = geo.lsoa, geo.la
    w = (lsoa["income_rate"] * lsoa["children"]).groupby(lsoa["la"]).sum()
    dep = w / lsoa.groupby("la")["children"].sum()
    np.testing.assert_allclose(la.set_index("la")["deprivation"].loc[dep.index], dep, rtol=1e-12)


# ------------------------------------------------------------------------------------------
# finding the folder


def test_explicit_missing_folder_is_an_error(tmp_path):
    with pytest.raises(HierarchyError, match="does not exist"):
        reference.find_reference_dir(tmp_path / "nowhere")


def test_explicit_incomplete_folder_names_missing_file(tmp_path):
    first = tmp_path / reference.REQUIRED_FILES[0]
    first.parent.mkdir(parents=True)
    first.write_text("x\n")
    with pytest.raises(HierarchyError, match=re.escape(reference.REQUIRED_FILES[1])):
        reference.find_reference_dir(tmp_path)
    with pytest.raises(HierarchyError, match="incomplete"):
        reference.load_reference(tmp_path)


def test_env_var_incomplete_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(reference.ENV_VAR, str(tmp_path))
    with pytest.raises(HierarchyError, match=reference.ENV_VAR):
        reference.find_reference_dir()


def test_synthetic_forced_and_suppression_markers():
    geo = reference.get_geography(synthetic=True, n_la=5, seed=1)
    assert geo.source == "synthetic(n_la=5, seed=1)" and not geo.is_reference
    parsed = reference._numeric(pd.Series(["12", "c", "x", "z", "low", " 1,234 ", None]), "t")
    assert parsed.iloc[0] == 12 and parsed.iloc[5] == 1234
    assert parsed.iloc[1:5].isna().all() and np.isnan(parsed.iloc[6])
    with pytest.raises(HierarchyError, match="unreadable"):
        reference._numeric(pd.Series(["12", "abc"]), "t")


def test_missing_reference_skips_locally_and_fails_on_ci(monkeypatch):
    from tests.helpers import in_ci, need_reference

    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        assert in_ci()
        with pytest.raises(pytest.fail.Exception, match="CI provisions it"):
            need_reference(None)
    for value in ("", "0", "false"):
        monkeypatch.setenv("CI", value)
        assert not in_ci()
        with pytest.raises(pytest.skip.Exception, match="reference data not found"):
            need_reference(None)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        need_reference(None)


# ------------------------------------------------------------------------------------------
# real geography


def test_reference_found_and_loaded(reference_dir):
    # (how long loading takes is a benchmark's business, not the suite's: no timing asserted here)
    reference._load_cached.cache_clear()
    geo = reference.load_reference(reference_dir)
    assert geo.is_reference and str(reference_dir) in geo.source
    assert reference.maybe_reference(reference_dir) is not None
    assert reference.get_geography(reference_dir).is_reference


def test_reference_lsoa_table(reference_geography):
    lsoa = reference_geography.lsoa
    assert list(lsoa.columns) == LSOA_COLUMNS
    assert len(lsoa) == 32_844 and lsoa["lsoa"].is_unique
    assert lsoa["la"].nunique() == 151
    assert abs(lsoa["children"].sum() / 12.0e6 - 1) < 0.01
    assert lsoa["income_rate"].between(0.003, 0.61).all()
    # the ONS single-year bands agree exactly with children_0_17_mid2019 for every LSOA
    assert (lsoa[BANDS].sum(axis=1) == lsoa["children"]).all()
    assert lsoa["msoa"].notna().all() and lsoa["msoa"].nunique() > 6_000
    # RUC2011: D and E are rural (~17% of LSOAs); A-C urban
    assert set(lsoa.loc[lsoa["rural"], "ruc11_code"].str[0]) == {"D", "E"}
    assert 0.12 < lsoa["rural"].mean() < 0.22
    assert (lsoa["density"] > 0).all()


def test_reference_la_table(reference_geography):
    la = reference_geography.la
    assert list(la.columns) == LA_COLUMNS and len(la) == 151
    dep = la["deprivation"]
    assert abs(dep.mean() - 0.147) < 0.002 and abs(dep.std() - 0.053) < 0.002
    assert abs(dep.min() - 0.029) < 0.002 and abs(dep.max() - 0.270) < 0.002
    n = la["n_lsoa"]
    assert n.median() == pytest.approx(161, abs=2) and n.min() == 1 and 880 < n.max() < 920
    assert la["rural_share"].between(0, 1).all()
    assert np.isfinite(la["log_density"]).all()
    _child_weighted_check(reference_geography)


def test_reference_dfe_2019(reference_geography):
    geo = reference_geography
    dfe = geo.dfe
    assert list(dfe.columns) == DFE_COLUMNS
    assert not dfe.duplicated(["la", "year"]).any()
    assert set(dfe["la"]) == set(geo.la["la"])
    y19 = dfe[dfe["year"] == 2019].set_index("la")
    assert set(y19.index) == set(geo.la["la"])
    assert y19["referrals"].notna().all() and y19["pop_0_17"].notna().all()
    rate = 1e4 * y19["referrals"].sum() / y19["pop_0_17"].sum()
    assert rate == pytest.approx(553.7, rel=0.02)
    la_rate = 1e4 * y19["referrals"] / y19["pop_0_17"]
    assert 150 < la_rate.min() and la_rate.max() < 1_500
    assert y19["cla_at31"].isna().all()  # not in the DfE files before 2021
    cla = dfe[dfe["year"] >= 2021].set_index("la")["cla_at31"]
    assert set(cla.index[cla.isna()]) <= {"E06000053", "E09000001"}  # Scilly ("z"), City ("c")
    assert sorted(dfe["year"].unique()) == list(range(2013, 2026))
    assert (dfe.groupby("year")["la"].nunique() == 151).all()


def test_reference_dfe_mapping_conserves_counts(reference_dir, reference_geography):
    """Summing successor and predecessor codes onto UTLA19 keeps national totals."""
    raw = reference._read_dfe_sources(reference_dir)
    mapped = reference_geography.dfe
    checked = 0
    for name, col in [("rates", "referrals"), ("rates", "s47"), ("d3", "cpp_start"),
                      ("cla", "cla_at31")]:
        frame = raw[name]
        for year in sorted(frame["year"].unique()):
            r = frame.loc[frame["year"] == year, col]
            if r.notna().all():
                m = mapped.loc[mapped["year"] == year, col]
                assert m.sum() == pytest.approx(r.sum(), rel=1e-9), (col, year)
                checked += 1
    assert checked >= 10
    # DfE uses codes that are not UTLA19 codes, and every one of them is mapped (no warning)
    assert set(raw["rates"]["la"]) - set(reference_geography.la["la"])
    lsoa, extra = reference._read_lsoa(reference_dir)
    cw = reference._crosswalk(lsoa, extra["utla23"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in raw.values():
            reference._map_dfe(frame, cw)


def test_reference_tables_are_copies(reference_geography, reference_dir):
    geo = reference.load_reference(reference_dir)
    geo.lsoa.loc[0, "children"] = -1
    assert reference.load_reference(reference_dir).lsoa.loc[0, "children"] != -1


# ------------------------------------------------------------------------------------------
# generated geography


def test_synthetic_size_and_columns():
    geo = reference.synthetic_geography(30, seed=2, lsoa_per_la=50)
    assert list(geo.lsoa.columns) == LSOA_COLUMNS
    assert list(geo.la.columns) == LA_COLUMNS
    assert list(geo.dfe.columns) == DFE_COLUMNS
    assert len(geo.la) == 30 and geo.lsoa["la"].nunique() == 30
    assert sorted(geo.dfe["year"].unique()) == list(range(2013, 2026))
    assert (geo.lsoa[BANDS].sum(axis=1) == geo.lsoa["children"]).all()
    _child_weighted_check(geo)


def test_synthetic_deterministic_and_seeded():
    a = reference.synthetic_geography(10, seed=3, lsoa_per_la=20)
    b = reference.synthetic_geography(10, seed=3, lsoa_per_la=20)
    c = reference.synthetic_geography(10, seed=4, lsoa_per_la=20)
    for name in ("lsoa", "la", "dfe"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.lsoa["income_rate"].equals(c.lsoa["income_rate"])


def test_synthetic_codes_are_fake():
    geo = reference.synthetic_geography(20, seed=0, lsoa_per_la=20)
    assert geo.lsoa["la"].str.fullmatch(r"LA\d{3}").all()
    assert geo.lsoa["lsoa"].str.fullmatch(r"N\d{6}").all()
    assert geo.lsoa["msoa"].str.fullmatch(r"M\d{5}").all()
    for col in ("lsoa", "msoa", "la"):
        assert not geo.lsoa[col].str.startswith("E0").any()


def test_synthetic_distributions_resemble_england():
    geo = reference.synthetic_geography(151, seed=0)
    la, lsoa = geo.la, geo.lsoa
    assert abs(la["deprivation"].mean() - 0.147) < 0.012
    assert 0.04 < la["deprivation"].std() < 0.065
    assert la["deprivation"].between(0.028, 0.282).all()
    assert lsoa["income_rate"].between(0.003, 0.65).all()
    assert la["n_lsoa"].median() == pytest.approx(161, rel=0.2)
    assert lsoa["children"].mean() == pytest.approx(366, rel=0.08)
    assert lsoa.groupby("msoa").size().median() == pytest.approx(5, abs=1)
    assert 0.08 < lsoa["rural"].mean() < 0.3
    y19 = geo.dfe[geo.dfe["year"] == 2019]
    assert 1e4 * y19["referrals"].sum() / y19["pop_0_17"].sum() == pytest.approx(550, rel=0.12)
    assert y19[["referrals", "s47", "cpp_start", "cpp_at31"]].notna().all().all()
    assert (y19["s47"] < y19["referrals"]).all()
    assert geo.dfe.loc[geo.dfe["year"] >= 2021, "cla_at31"].notna().all()


def test_no_reference_found_falls_back_to_synthetic(tmp_path, monkeypatch):
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    monkeypatch.setattr(reference, "__file__", str(tmp_path / "repo" / "src" / "pkg" / "m.py"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert reference.find_reference_dir() is None
    assert reference.maybe_reference() is None
    geo = reference.get_geography(n_la=4, seed=2)
    assert geo.source == "synthetic(n_la=4, seed=2)"
    with pytest.raises(HierarchyError, match="no England reference data"):
        reference.load_reference()

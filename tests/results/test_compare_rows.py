"""compare-models compares a model with the same model plus a term (issue 34/1): fits of one table
are comparable when their rows, outcome and exposure are the same, whatever other columns they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierarchy.data import table as data_mod
from hierarchy.errors import HierarchyError
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results.compare_checks import check_same_data as _check_same_data
from hierarchy.results.compare_checks import recorded_map as _recorded_map
from tests.helpers import ROOT, with_formula_columns

DEFAULT = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
PLUS_RURAL = ModelSpec.from_dict({**{k: v for k, v in DEFAULT.to_dict().items() if k in ("family", "deprivation",
                                                                                         "la_deprivation")},
                                  "name": "plus_rural", "formula": DEFAULT.formula_text.replace(
                                      " + (1 + w | la)", " + rural + w:rural + (1 + w | la)")})


@pytest.fixture(scope="module")
def table(small_geography):
    from hierarchy.data.simulate import simulate

    return with_formula_columns(simulate(small_geography, seed=1)[0])


def _prov(t, spec, source="t.csv"):
    return {"data_hash": data_mod.data_hash(t, **spec.hashed_columns), "rows_hash": data_mod.rows_hash(t, spec),
            "data_source": source, "model_spec": spec.to_dict()}


def test_a_model_plus_a_term_has_another_data_hash_but_the_same_rows(table):
    assert PLUS_RURAL.row_terms == ("rural", "w:rural")
    a, b = _prov(table, DEFAULT), _prov(table, PLUS_RURAL)
    assert a["data_hash"] != b["data_hash"]  # the old check refused this comparison
    assert a["rows_hash"] == b["rows_hash"]
    _check_same_data([Path("m0.nc"), Path("m1.nc")], [a, b])  # comparable
    shuffled = table.sample(frac=1.0, random_state=0)
    assert data_mod.rows_hash(shuffled, DEFAULT) == a["rows_hash"]  # row order does not matter


@pytest.mark.parametrize("change, part", [
    (lambda t: t.assign(referral=t["referral"] + (t.index == 3)), "outcome counts"),
    (lambda t: t.assign(exposure=t["exposure"] * 1.01), "exposure"),
    (lambda t: t.drop(index=5), "rows"),
])
def test_fits_of_other_rows_outcome_or_exposure_are_refused_naming_what_differs(table, change, part):
    a, b = _prov(table, DEFAULT), _prov(change(table), PLUS_RURAL, "other.csv")
    with pytest.raises(HierarchyError, match=f"their {part}.* differ") as err:
        _check_same_data([Path("m0.nc"), Path("m1.nc")], [a, b])
    assert "other.csv" in str(err.value) and "\n" not in str(err.value)


def test_old_fits_without_the_rows_hash_keep_the_data_hash_check(table):
    a, b = _prov(table, DEFAULT), _prov(table, PLUS_RURAL)
    del b["rows_hash"]
    with pytest.raises(HierarchyError, match="different data.*m1.nc record.* no hash of the rows"):
        _check_same_data([Path("m0.nc"), Path("m1.nc")], [a, b])
    del a["rows_hash"]
    a["data_hash"] = b["data_hash"]
    _check_same_data([Path("m0.nc"), Path("m1.nc")], [a, b])  # same data hash: fine as before


def test_compare_models_reuses_the_column_map_recorded_in_the_fits(table, tmp_path):
    user = table.rename(columns={"neighbourhood": "LSOA code", "referral": "Referrals", "rural": "Rural"})
    path = tmp_path / "user.csv"
    user.to_csv(path, index=False)
    recorded = {"neighbourhood": "LSOA code", "referral": "Referrals"}
    provs = [{"column_map": recorded}, {"column_map": {**recorded, "rural": "Rural"}}]
    cmap = _recorded_map(path, provs, [Path("m0.nc"), Path("m1.nc")])
    loaded = data_mod.load(path, columns=cmap, **PLUS_RURAL.data_columns)
    assert {"neighbourhood", "referral", "rural"} <= set(loaded.columns)
    table.to_csv(tmp_path / "canonical.csv", index=False)
    assert _recorded_map(tmp_path / "canonical.csv", provs, [Path("m0.nc"), Path("m1.nc")]) is None  # no map
    with pytest.raises(HierarchyError, match="m1.nc recorded another column map.*--columns"):
        _recorded_map(path, [{"column_map": recorded}, {"column_map": {"referral": "refs"}}],
                      [Path("m0.nc"), Path("m1.nc")])

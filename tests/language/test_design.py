"""Design decisions read from the counts: which group terms are centred."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierarchy.data.simulate import simulate_years
from hierarchy.language.design import GROUP_CENTRING_SE, build_design, group_centring
from hierarchy.language.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_group_terms_are_centred_where_the_counts_pin_their_levels_down(small_geography):
    """``auto``: an intercept-only group is centred when the median level's 1/sqrt(total count) is
    under GROUP_CENTRING_SE; few counts leave it non-centred; an explicit parameterisation wins."""
    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    table, _ = simulate_years(small_geography, years=[2019, 2020], seed=2)
    assert spec.groups == (("la:year", False),)

    def expected(t):
        totals = t.groupby(["la", "year"])["referral"].sum().to_numpy()
        return bool(np.median(1 / np.sqrt(totals)) < GROUP_CENTRING_SE)

    many = table.assign(referral=table["referral"] * 50)
    few = table.assign(referral=(table["referral"] > 0).astype(int))
    assert expected(many) and not expected(few)  # the two cases fall either side of the limit
    assert group_centring(spec, build_design(many, spec)) == (True,)
    assert group_centring(spec, build_design(few, spec)) == (False,)
    for p, want in (("centred", True), ("non_centred", False)):
        fixed = ModelSpec.from_dict({**spec.to_dict(), "la": {**spec.to_dict()["la"], "parameterisation": p}})
        assert group_centring(fixed, build_design(few if want else many, fixed)) == (want,)

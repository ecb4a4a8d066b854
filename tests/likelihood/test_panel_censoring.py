"""DfE's suppressed ('c', 1-5) cells kept in the LA-panel likelihood as interval-censored (issue 32 item 3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hierarchy.data import panel
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import fit_panels
from hierarchy.likelihood import panel_model as pm

MODELS = Path(__file__).resolve().parents[2] / "models"


def _spec(**kw):
    return replace(pm.load_panel_spec(MODELS / "panel_stages_nb.toml"), **kw)


def test_censored_log_prob_is_the_difference_of_cdfs():
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpyro.distributions as dist

    mu = np.array([0.5, 3.0, 7.0, 40.0])
    lo, hi = np.array([1.0, 1.0, 2.0, 1.0]), np.array([5.0, 5.0, 10.0, 1.0])
    got = np.asarray(pm.censored_log_prob(dist.Poisson(mu), lo, hi, 9))
    want = np.log(stats.poisson.cdf(hi, mu) - stats.poisson.cdf(lo - 1, mu))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    phi = 4.0  # NB2(mu, phi) = scipy nbinom(n=phi, p=phi / (phi + mu))
    got = np.asarray(pm.censored_log_prob(dist.NegativeBinomial2(mu, phi), lo, hi, 9))
    p = phi / (phi + mu)
    want = np.log(stats.nbinom.cdf(hi, phi, p) - stats.nbinom.cdf(lo - 1, phi, p))
    np.testing.assert_allclose(got, want, rtol=1e-5)  # NumPyro's NB pmf: lgamma to ~1e-7


def test_c_cells_carry_bounds_other_markers_are_left_out_and_counted():
    p = panel.synthetic_panel(n_la=10, years=(2018, 2019, 2020), seed=2, suppress=0.1, small_las=3)
    t = p.table
    la = t[(t["level"] == "LA") & (t["measure"] == "s47")]
    assert (la["marker"] == "c").sum() > 0 and (la["marker"] == "x").sum() > 0
    lo, hi = panel.count_bounds(la)
    c = (la["marker"] == "c").to_numpy()
    assert (lo[c] == 1).all() and (hi[c] == 5).all()
    pub = (la["marker"] == "").to_numpy()
    assert np.array_equal(lo[pub], la["count"].to_numpy()[pub]) and np.array_equal(hi[pub], lo[pub])
    assert np.isnan(lo[~c & ~pub]).all()
    d = pm.panel_design(t, "s47", _spec())
    assert not (d.censored & d.observed).any()
    cells = pm.cell_treatment(d).set_index("treatment")["cells"]
    assert cells["censored"] == c.sum() and cells["observed"] == pub.sum()  # one LA per series here
    assert cells.sum() == len(d.count)
    # the censored cells go into the model padded to a block, bounds and rows intact
    idx, c_lo, c_hi, mask = pm._censored_args(d)
    assert len(idx) % pm.CENSOR_BLOCK == 0 and mask.sum() == c.sum()
    assert (c_lo[mask] == 1).all() and (c_hi[mask] == 5).all() and d.censored[idx[mask]].all()
    assert "(censored)" in p.describe() and "(left out)" in p.describe()


def test_series_of_censored_parts_sums_their_bounds():
    p = panel.synthetic_panel(n_la=6, years=(2019, 2020), seed=1, small_las=2)
    t = p.table.copy()
    la = (t["level"] == "LA") & (t["measure"] == "s47")
    a, b = sorted(t.loc[la, "la_code"].unique())[-2:]
    t.loc[la & t["la_code"].isin([a, b]), "series"] = "S"
    t.loc[la & t["la_code"].isin([a, b]) & (t["year"] == 2019), ["count", "marker"]] = [np.nan, "c"]
    t.loc[la & (t["la_code"] == a) & (t["year"] == 2020), ["count", "marker"]] = [np.nan, "c"]
    t.loc[la & (t["la_code"] == b) & (t["year"] == 2020), ["count", "marker"]] = [7.0, ""]
    d = pm.panel_design(t, "s47", _spec())
    row = {(u, y): i for i, (u, y) in enumerate(zip(d.units[d.unit_idx], d.years[d.year_idx], strict=True))}
    assert (d.lower[row["S", 2019]], d.upper[row["S", 2019]]) == (2, 10)
    assert (d.lower[row["S", 2020]], d.upper[row["S", 2020]]) == (8, 12)
    assert pm._censor_width(d) == 9


def test_a_c_cell_in_a_year_without_a_rule_is_refused():
    p = panel.synthetic_panel(n_la=4, years=(2019,), seed=0, small_las=4)
    t = p.table[p.table["level"] == "LA"].copy()
    t["year"] = 2031
    with pytest.raises(HierarchyError, match=r"marker: 'c' cells in years \[2031\].*SUPPRESSION_BOUNDS"):
        panel.count_bounds(t)


def test_panel_page_says_how_many_cells_each_treatment_covered(tmp_path):
    from hierarchy.reporting.panel_report import _cell_treatments, _treatment_html

    p = panel.synthetic_panel(n_la=10, years=(2018, 2019, 2020), seed=2, suppress=0.1, small_las=3)
    spec = _spec()
    fits = {m: pm.PanelFit(spec=spec, design=pm.panel_design(p.table, m, spec), draws={}, centred=True,
                           seconds=0.0, diagnostics={}) for m in ("s47", "referrals")}
    cells = _cell_treatments(fits).set_index("measure")
    for m, f in fits.items():
        assert cells.at[m, "censored"] == f.design.censored.sum()
        assert cells.at[m, "observed"] == f.design.observed.sum()
    page = _treatment_html(cells.reset_index())
    n_c = int(cells["censored"].sum())
    assert n_c > 0 and f"{n_c:,} that DfE suppressed as 'c'" in page and "left out" in page


@pytest.mark.slow  # two NUTS fits (two compiles): ~70 s on 2 cores
def test_censoring_recovers_small_las_where_dropping_biases_them_upward():
    """Eight Scilly-sized LAs (300 children, s47 ~5 a year): ~60% of their cells are 'c'. Kept as
    censored, their rates are recovered; dropped, only their 0s and 6+ stay and their rates go up."""
    spec = _spec()
    p = panel.synthetic_panel(n_la=24, years=tuple(range(2016, 2024)), seed=5, suppress=0.0, small_las=8)
    dropped = p.table.copy()
    dropped.loc[dropped["marker"] == "c", "marker"] = "x"
    kept, drop = pm.panel_design(p.table, "s47", spec), pm.panel_design(dropped, "s47", spec)
    small = np.arange(16, 24)
    assert pm.cell_treatment(kept).set_index("treatment").at["censored", "cells"] >= 30
    tr = p.truth["s47"]
    z, t = kept.z[:, None], kept.t[None]
    truth = (tr["alpha"] + tr["b_dep"] * z + (tr["b_t"] + tr["b_dep_t"] * z) * t + np.array(tr["g"])[None]
             + np.array(tr["u"])[:, None] + np.array(tr["v"])[:, None] * t).mean(axis=1)
    bias = {}
    fits = fit_panels([kept, drop], spec, seed=1, chains=1, tune=300, draws=300, max_draws=300)
    for name, fit in zip(("censored", "dropped"), fits, strict=True):
        mean_log_rate = fit.log_rate().mean(axis=2)  # draws x units: the LA's mean log rate over the years
        lo, hi = np.quantile(mean_log_rate, [0.05, 0.95], axis=0)
        bias[name] = float((mean_log_rate.mean(0) - truth)[small].mean())
        if name == "censored":
            assert ((lo <= truth) & (truth <= hi))[small].sum() >= 6, (lo[small], truth[small], hi[small])
    assert abs(bias["censored"]) < 0.08, bias  # measured: -0.005
    assert bias["dropped"] > 0.12 and bias["dropped"] - bias["censored"] > 0.1, bias  # measured: +0.21

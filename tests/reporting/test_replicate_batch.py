"""Tests of the replication's batched fits (hierarchy.reporting.replicate_fits, re-exported by
hierarchy.reporting.replicate: batch_refusal, batch_groups, fit_analyses_batched, fit_all): analyses share one
compiled program only where their designs agree in everything the model function closes over, a fit that
misses the bar is refitted alone, and (slow) a batched fit agrees with the same analysis fitted alone."""

from __future__ import annotations

import json
from dataclasses import replace

import arviz as az
import numpy as np
import pytest

from hierarchy.data import findings
from hierarchy.errors import HierarchyError
from hierarchy.language.design import build_design, centring
from hierarchy.reporting import replicate, replicate_fits

STAGES = ("referral", "s47", "cp_plan", "looked_after")


@pytest.fixture(scope="module")
def base(small_geography):
    tables, truth = findings.simulate_findings(small_geography, seed=2, scenarios=("base",))
    analyses = [a for a in replicate.ANALYSES if a.name in STAGES]
    specs = {a.name: replicate.analysis_spec(a) for a in analyses}
    rows = {a.name: replicate.analysis_table(a, tables) for a in analyses}
    designs = {n: build_design(rows[n], specs[n]) for n in specs}
    return {"tables": tables, "truth": truth, "analyses": analyses, "specs": specs, "rows": rows,
            "designs": designs}


def test_the_stage_outcomes_are_grouped_by_the_parameterisation_their_counts_choose(base):
    """The four stage analyses fit one table and one model with another outcome: their designs differ only
    in the counts, so they are grouped exactly by the LA-effect centring ``auto`` chooses from the counts."""
    specs, designs = base["specs"], base["designs"]
    groups, why = replicate.batch_groups({n: (specs[n], designs[n]) for n in STAGES})
    assert sorted(n for g in groups for n in g) == sorted(STAGES)
    masks = {n: tuple(centring(specs[n], designs[n])) for n in STAGES}
    for g in groups:
        assert {masks[n] for n in g} == {masks[g[0]]}, groups
    assert len(groups) == len(set(masks.values()))
    for g in groups[1:]:
        assert why[g[0]].startswith(f"{g[0]} not batched with referral: its LA effects are parameterised")
        assert "referral's" in why[g[0]] and "chosen from the counts" in why[g[0]]
    assert set(why) == {g[0] for g in groups[1:]}


def test_batch_refusal_names_what_differs(base):
    specs, designs, rows = base["specs"], base["designs"], base["rows"]
    s0, d0 = specs["referral"], designs["referral"]
    # other counts, the same centring: one program
    y = d0.y + (np.arange(len(d0.y)) % 3 == 0)  # a few more
    same = replace(d0, y=y)
    assert tuple(centring(s0, same)) == tuple(centring(s0, d0))
    assert replicate.batch_refusal(specs["s47"], replace(designs["s47"], y=y), s0, d0) is None
    # counts so few that auto non-centres the LA effects: another model function
    sparse = replace(d0, y=(np.arange(len(d0.y)) % 7 == 0).astype(d0.y.dtype))
    assert not np.array_equal(centring(s0, sparse), centring(s0, d0))
    assert "parameterised" in replicate.batch_refusal(s0, sparse, s0, d0)
    # other rows (a row filter, as re-referrals keep referred neighbourhoods)
    fewer = rows["referral"][rows["referral"]["referral"] > 0].reset_index(drop=True)
    assert len(fewer) < len(rows["referral"])
    assert "rows" in replicate.batch_refusal(s0, build_design(fewer, s0), s0, d0)
    # the same rows with one neighbourhood's deprivation changed: its centred deprivation differs
    moved = rows["referral"].copy()
    moved.loc[0, "deprivation"] = moved.loc[0, "deprivation"] + 0.05
    why = replicate.batch_refusal(s0, build_design(moved, s0), s0, d0)
    assert why.startswith("its design differs from") and " x" in why and "w" in why
    # another model file
    other = replicate.analysis_spec(next(a for a in replicate.ANALYSES if a.name == "re_referral"))
    assert "its model differs" in replicate.batch_refusal(other, d0, s0, d0)


def test_fit_analyses_batched_refuses_designs_that_disagree_before_fitting(base):
    specs, rows = base["specs"], base["rows"]
    fewer = rows["s47"][rows["s47"]["s47"] > 0].reset_index(drop=True)
    with pytest.raises(HierarchyError, match=r"analysis 's47' cannot be fitted in one batch with 'referral': "
                                             r"it fits [\d,]+ rows.*fit it alone \(batched=False\)"):
        replicate.fit_analyses_batched({"referral": specs["referral"], "s47": specs["s47"]},
                                       {"referral": rows["referral"], "s47": fewer})


def _fake(status: str, reasons=()):
    idata = az.from_dict(posterior={"gradient": np.zeros((2, 3))})
    idata.posterior.attrs["hierarchy"] = json.dumps({"diagnostics": {"status": status, "reasons": list(reasons)}})
    return idata


def test_fit_all_batches_groups_and_refits_alone_a_fit_that_misses_the_bar(base, monkeypatch):
    """Groups of two or more go to one batch; single ones and a batched fit that misses the bar are fitted
    alone, and the log says why."""
    specs, designs = base["specs"], base["designs"]
    groups, _ = replicate.batch_groups({n: (specs[n], designs[n]) for n in STAGES})
    batched_calls, alone_calls = [], []

    def batched(sp, tabs, **kw):
        batched_calls.append(list(sp))
        return {n: _fake("warn" if n == "referral" else "ok", ["bulk ESS 10 < 400 (gradient)"]) for n in sp}

    def alone(spec, table, **kw):
        alone_calls.append(spec.name)
        return _fake("ok")

    monkeypatch.setattr(replicate_fits, "fit_analyses_batched", batched)  # where fit_all looks them up
    monkeypatch.setattr(replicate_fits, "fit_analysis", alone)
    log = []
    fits, timings = replicate.fit_all(base["analyses"], base["tables"], chains=2, tune=10, draws=10,
                                      refit=True, say=log.append)
    assert set(fits) == set(timings) == set(STAGES)
    assert batched_calls == [g for g in groups if len(g) > 1]
    singles = [specs[g[0]].name for g in groups if len(g) == 1]
    refit = [specs["referral"].name] if len(groups[0]) > 1 else []
    assert sorted(alone_calls) == sorted(singles + refit)
    if refit:
        assert any(s.startswith("referral: the batched fit missed the convergence bar (bulk ESS 10 < 400")
                   and s.endswith("refitting it alone") for s in log), log
    # by default (refit=False) the batched fit is kept, bar missed or not, and the log says so
    alone_calls.clear()
    log.clear()
    fits, _ = replicate.fit_all(base["analyses"], base["tables"], chains=2, tune=10, draws=10, say=log.append)
    assert sorted(alone_calls) == sorted(singles)
    if refit:
        assert any(s.startswith("referral: the batched fit missed") and "kept" in s for s in log), log
    assert all(fits[n] is not None for n in STAGES)
    # off: every analysis alone, in order
    alone_calls.clear()
    batched_calls.clear()
    replicate.fit_all(base["analyses"], base["tables"], chains=2, tune=10, draws=10, batched=False)
    assert batched_calls == [] and alone_calls == [specs[n].name for n in STAGES]


def test_a_given_fit_fn_fits_each_analysis_alone(base, monkeypatch):
    monkeypatch.setattr(replicate_fits, "fit_analyses_batched", lambda *a, **k: pytest.fail("batched"))
    seen = []
    fits, _ = replicate.fit_all(base["analyses"], base["tables"], chains=2, tune=10, draws=10,
                                fit_fn=lambda spec, table, **kw: seen.append(spec.outcome) or _fake("ok"))
    assert seen == list(STAGES) and list(fits) == list(STAGES)


@pytest.mark.slow  # 2 x 3 fits of 12 LAs x 30 neighbourhoods, 2 x (500 + 1000): ~5 min on 2 loaded cores
def test_batched_stage_fits_agree_with_fits_alone(base):
    """Each batched fit's headline gradients (a typical LA at mean LA deprivation and 10 points either side)
    within 0.15 posterior SD of the same analysis fitted alone (MC SE of the difference ~0.05 SD at these
    draws), with the same provenance, and the findings rows built from both agree."""
    from hierarchy.results import estimands as est
    from hierarchy.results.fitfile import provenance

    specs, rows, designs = base["specs"], base["rows"], base["designs"]
    groups, _ = replicate.batch_groups({n: (specs[n], designs[n]) for n in STAGES})
    kw = dict(chains=2, tune=500, draws=1000, seed=3)
    batched, alone = {}, {}
    for g in groups:
        if len(g) > 1:
            batched.update(replicate.fit_analyses_batched({n: specs[n] for n in g}, {n: rows[n] for n in g}, **kw))
    assert batched, f"no two stage analyses share a design on this geography: {groups}"
    for n in batched:
        alone[n] = replicate.fit_analysis(specs[n], rows[n], **kw)
        pb, pa = provenance(batched[n]), provenance(alone[n])
        assert pb["data_hash"] == pa["data_hash"] and pb["model_hash"] == pa["model_hash"]
        assert pb["sampler"]["parameterisation"] == pa["sampler"]["parameterisation"]
        assert pb["sampler"]["batch"] == len(pb["sampler"]["batched_with"]) > 1
        assert pb["diagnostics"]["rhat_max"] < 1.02 and pb["diagnostics"]["ess_bulk_min"] > 200, \
            (n, pb["diagnostics"]["reasons"])  # mixed enough that the means are comparable
        hb = np.log(est.headline_gradients(batched[n]))
        ha = np.log(est.headline_gradients(alone[n]))
        dims = [d for d in ("chain", "draw") if d in ha.dims]
        gap = np.abs(hb.mean(dims) - ha.mean(dims)) / ha.std(dims)
        assert float(gap.max()) < 0.15, (n, gap.to_numpy())
    tb = replicate.findings_rows(batched, base["tables"], base["truth"])
    ta = replicate.findings_rows(alone, base["tables"], base["truth"])
    assert list(tb["estimand"]) == list(ta["estimand"]) and len(tb) >= 2 * len(batched)
    np.testing.assert_allclose(tb["truth"], ta["truth"])
    width = (ta["upper"] - ta["lower"]).to_numpy()
    assert np.all(np.abs(tb["mean"] - ta["mean"]).to_numpy() < 0.1 * width), tb.compare(ta)


@pytest.mark.parametrize("flag", [True, False, None])
def test_main_passes_batched_on(monkeypatch, tmp_path, flag):
    """``--batched/--no-batched`` reaches replicate(); a parser without the flag means batched."""
    import argparse

    import pandas as pd

    from hierarchy.inference import sampling

    monkeypatch.setattr(sampling, "use_host_devices", lambda n: None)
    monkeypatch.setattr(sampling, "enable_compilation_cache", lambda *a: None)
    seen = {}
    monkeypatch.setattr(replicate, "replicate", lambda out, **kw: seen.update(kw) or pd.DataFrame({"covered": []}))
    args = dict(out=tmp_path, fast=True, synthetic=False, n_la=12, seed=0, year=2019, analyses="referral",
                chains=None, tune=None, draws=None, tables=False, reference_dir=None)
    if flag is not None:
        args["batched"] = flag
    assert replicate.main(argparse.Namespace(**args)) == 0
    assert seen["batched"] is (True if flag is None else flag) and seen["analyses"] == ("referral",)

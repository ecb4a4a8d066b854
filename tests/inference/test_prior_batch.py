"""Prior sets as data and their batched fits (issue 30, item 2): ``compare-priors`` and ``sweep`` cells
that differ only in a prior set of one structure share one compiled program.

Fast: a prior set's numbers round-trip through ``values``/``bind``; sets of one structure are told apart
from the others with a one-line reason; the model built with one set and given another set's numbers
has exactly the other set's log density (also under ``jit``, the numbers traced); refused batches (other
samplers, Laplace, another structure) fit one by one with the reason; the sweep groups jobs into tasks.
Slow: two shipped sets of one structure fitted as one batch against the same sets fitted one by one with
``fit_files`` (hyperparameter posterior means within 0.15 posterior SD), with the content keys a single
fit records, so that a rerun of the sweep refits nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.errors import SpecError
from hierarchy.inference.sweep import FitJob, prior_batches
from hierarchy.language.priors import Prior, PriorSet, group_by_structure, load_priors, structure_difference

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("weakly_informative", "vague", "informative_cwip", "regularising", "time_to_event")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _set(name: str) -> PriorSet:
    return load_priors(ROOT / f"priors/{name}.toml")


def test_values_and_bind_carry_the_numbers_of_a_set_of_the_same_structure():
    wi, cwip = _set("weakly_informative"), _set("informative_cwip")
    values = cwip.values()
    assert list(values["groups"]) == sorted(cwip.priors) and values["terms"] == {}
    assert values["groups"]["gradient"] == {"mu": 0.48, "sigma": 0.1}
    bound = wi.bind(values)
    assert bound.name == wi.name and bound.structure() == wi.structure()
    assert {g: p.params for g, p in bound.priors.items()} == {g: p.params for g, p in cwip.priors.items()}
    x = np.array([-0.5, 0.1, 0.7])
    for group in ("gradient", "la_sd", "dispersion", "zero_inflation"):
        np.testing.assert_array_equal(bound[group].numpyro().log_prob(np.abs(x) / 2),
                                      cwip[group].numpyro().log_prob(np.abs(x) / 2), err_msg=group)
    # the originals keep their validated behaviour
    assert wi.hash() == _set("weakly_informative").hash() and str(wi["gradient"]) != str(bound["gradient"])
    with pytest.raises(SpecError, match="must be > 0"):
        Prior("HalfNormal", {"sigma": -1.0})


def test_bind_refuses_numbers_of_another_structure_naming_the_group():
    wi, vague = _set("weakly_informative"), _set("vague")
    with pytest.raises(SpecError, match="group 'la_sd' have parameters \\['beta'\\].*HalfNormal"):
        wi.bind(vague.values())
    values = wi.values()
    del values["groups"]["la_sd"]
    with pytest.raises(SpecError, match="la_sd"):
        wi.bind(values)
    with pytest.raises(SpecError, match="groups"):
        wi.bind({"intercept": {"mu": 0.0, "sigma": 1.0}})


def test_structure_difference_names_the_first_difference_in_one_line():
    sets = {n: _set(n) for n in SHIPPED}
    assert structure_difference(sets["weakly_informative"], sets["informative_cwip"]) is None
    why = structure_difference(sets["vague"], sets["weakly_informative"])
    assert why == "vague uses Exponential for dispersion, weakly_informative Gamma (and 4 more differences)"
    assert "\n" not in why
    reg = structure_difference(sets["weakly_informative"], sets["regularising"])
    assert reg.startswith("weakly_informative uses HalfNormal for la_sd, regularising Exponential")
    fewer = PriorSet("fewer", {g: p for g, p in sets["weakly_informative"].priors.items() if g != "msoa_sd"})
    assert structure_difference(fewer, sets["weakly_informative"]) == \
        "weakly_informative has a prior for msoa_sd, fewer has none"
    own = {"w:rural": Prior("StudentT", {"nu": 3, "mu": 0, "sigma": 1})}
    term = PriorSet("own", dict(fewer.priors), terms=own)
    assert structure_difference(term, fewer) == "own has a prior for the term w:rural, fewer has none"
    # the shipped sets: three share a structure, vague and regularising each have their own
    groups = group_by_structure([sets[n] for n in SHIPPED])
    assert [[SHIPPED[i] for i in g] for g in groups] == [
        ["weakly_informative", "informative_cwip", "time_to_event"], ["vague"], ["regularising"]]


def _small(model: str = "gradient_nb"):
    import jax

    from hierarchy.data import reference, simulate
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec
    from hierarchy.likelihood.jaxmodel import make_layout

    jax.config.update("jax_enable_x64", True)
    spec = load_spec(ROOT / f"models/{model}.toml")
    table, _ = simulate.simulate(reference.synthetic_geography(5, seed=2, lsoa_per_la=6), seed=2)
    design = build_design(table, spec)
    return spec, design, make_layout(design)


def test_the_model_given_another_sets_numbers_has_that_sets_log_density_exactly():
    """Built with weakly_informative, given informative_cwip's numbers: informative_cwip's model, at
    the same point, to 1e-10 (eagerly and under jit, where the numbers are traced)."""
    import jax
    import numpyro.handlers as handlers
    from numpyro.infer.util import log_density

    from hierarchy.likelihood.jaxmodel import model_data, model_fn, with_prior_values

    spec, design, layout = _small()
    wi, cwip = _set("weakly_informative"), _set("informative_cwip")
    data = model_data(layout)
    m_wi, m_cwip = model_fn(spec, wi, design, layout), model_fn(spec, cwip, design, layout)
    trace = handlers.trace(handlers.seed(m_cwip, 1)).get_trace(data)
    point = {k: v["value"] for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]}
    assert {"la_corr", "dispersion", "la_sd"} <= set(point)
    want = float(log_density(m_cwip, (data,), {}, point)[0])
    given = float(log_density(m_wi, (with_prior_values(data, cwip),), {}, point)[0])
    traced = jax.jit(lambda d, p: log_density(m_wi, (d,), {}, p)[0])
    jitted = float(traced(with_prior_values(data, cwip), point))
    own = float(log_density(m_wi, (data,), {}, point)[0])
    assert abs(given - want) < 1e-10 and abs(jitted - want) < 1e-10
    assert abs(own - want) > 1e-3  # the numbers matter: weakly_informative's own density differs


def test_refused_batches_fit_one_by_one_with_the_reason(monkeypatch, tmp_path):
    from hierarchy import workflow

    calls = []

    def fake_fit_files(**kw):
        calls.append(kw)
        return f"fitted {Path(kw['priors']).stem} alone"

    monkeypatch.setattr(workflow, "fit_files", fake_fit_files)
    monkeypatch.setattr(workflow, "_prepare", lambda *a, **k: pytest.fail("no batch, no shared design"))
    data = tmp_path / "d.csv"
    data.write_text("la\n")
    outs = [tmp_path / "a.nc", tmp_path / "b.nc"]
    kw = dict(data=data, model="gradient_nb", outs=outs, chains=2, tune=10, draws=10)
    for extra, reason in ((dict(sampler="nutpie"), "sampler nutpie"), (dict(method="laplace"), "method laplace")):
        calls.clear()
        fits = workflow.fit_prior_files(priors=["weakly_informative", "informative_cwip"], **kw, **extra)
        assert [f.batch for f in fits] == [1, 1] and all(reason in f.note for f in fits)
        assert [Path(c["priors"]).stem for c in calls] == ["weakly_informative", "informative_cwip"]
        assert [c["out"] for c in calls] == outs and all(c["chains"] == 2 for c in calls)
    calls.clear()
    said = []
    fits = workflow.fit_prior_files(priors=["weakly_informative", "vague"], log=said.append, **kw)
    assert fits[0].note.startswith("weakly_informative uses Gamma for dispersion, vague Exponential")
    assert fits[1].note.startswith("vague uses Exponential for dispersion")
    assert [f.summary for f in fits] == ["fitted weakly_informative alone", "fitted vague alone"]
    assert any("vague: fitted alone (vague uses" in line for line in said)
    with pytest.raises(Exception, match="same fit file"):
        workflow.fit_prior_files(priors=["weakly_informative", "vague"], **{**kw, "outs": [outs[0], outs[0]]})
    assert workflow.batch_refusal("numpyro", "nuts") is None


def test_the_sweep_batches_jobs_that_differ_only_in_a_same_structure_prior_set(tmp_path):
    def job(prior: str, name: str, **kw) -> FitJob:
        return FitJob(data=tmp_path / "d.parquet", model=ROOT / "models/gradient_nb.toml",
                      priors=ROOT / f"priors/{prior}.toml", out=tmp_path / f"{name}.nc", chains=2, tune=10,
                      draws=10, **kw)

    jobs = [job("weakly_informative", "wi"), job("vague", "vague"), job("informative_cwip", "cwip"),
            job("weakly_informative", "wi_seed1", seed=1), job("time_to_event", "tte", chain_method="parallel"),
            job("weakly_informative", "wi_nutpie", sampler="nutpie"),
            job("informative_cwip", "cwip_nutpie", sampler="nutpie")]
    tasks, notes = prior_batches(jobs, range(len(jobs)))
    assert tasks == [[0, 2, 4], [1], [3], [5], [6]]  # chain_method does not matter to a batch
    assert notes[1].startswith("vague uses Exponential for dispersion, weakly_informative Gamma")
    assert 3 not in notes  # nothing to batch it with: no note
    assert "sampler nutpie" in notes[5] and "sampler nutpie" in notes[6]
    tasks, notes = prior_batches(jobs, [1, 3])
    assert tasks == [[1], [3]] and notes == {}


@pytest.mark.slow  # one batch of two fits and the same two fits alone, 4 x (500 + 1000) draws: ~3-5 min
def test_a_batch_of_prior_sets_matches_the_sets_fitted_one_by_one(tmp_path):
    import arviz as az

    from hierarchy.data import reference, simulate
    from hierarchy.inference.sweep import execute, fit_key, read_provenance
    from hierarchy.workflow import fit_files, fit_prior_files

    table, _ = simulate.simulate(reference.synthetic_geography(12, seed=5, lsoa_per_la=25), seed=5)
    data = tmp_path / "d.parquet"
    table.to_parquet(data)
    names = ["weakly_informative", "informative_cwip"]
    settings = dict(chains=4, tune=500, draws=1000, seed=3)
    said: list[str] = []
    fits = fit_prior_files(data=data, model="gradient_poisson", priors=names,
                           outs=[tmp_path / f"batch_{n}.nc" for n in names], log=said.append, **settings)
    assert [f.batch for f in fits] == [2, 2], said
    for name, f in zip(names, fits, strict=True):
        alone = tmp_path / f"alone_{name}.nc"
        fit_files(data=data, model="gradient_poisson", priors=name, out=alone, progress=False, **settings)
        pb, pa = read_provenance(f.out), read_provenance(alone)
        assert pb["priors"]["name"] == name and pb["priors_hash"] == pa["priors_hash"]
        assert pb["sampler"]["batch"] == 2 and pb["sampler"]["batch_prior_sets"] == names
        assert fit_key(pb) == fit_key(pa)  # the content key a single fit records
        b, a = az.from_netcdf(f.out).posterior, az.from_netcdf(alone).posterior
        for var in ("intercept", "gradient", "la_sd"):
            diff = np.abs(b[var].mean(("chain", "draw")) - a[var].mean(("chain", "draw"))).values
            sd = a[var].std(("chain", "draw")).values
            assert (diff < 0.15 * sd).all(), (name, var, diff / sd)
    jobs = [FitJob(data=data, model=ROOT / "models/gradient_poisson.toml", priors=ROOT / f"priors/{n}.toml",
                   out=tmp_path / f"batch_{n}.nc", **settings) for n in names]
    again = execute(jobs, scheduler="synchronous")
    assert [r.status for r in again.results] == ["skipped", "skipped"]  # a rerun refits nothing


def test_compare_priors_and_sweep_take_batched_and_no_batched(monkeypatch, tmp_path):
    from hierarchy.cli import build_parser, comparing
    from hierarchy.results import compare

    parser = build_parser()
    base = ["compare-priors", "--data", "d.csv", "--priors", "vague", "--out", "o"]
    assert parser.parse_args(base).batched is True
    assert parser.parse_args([*base, "--no-batched"]).batched is False
    assert parser.parse_args(["sweep", "g.toml", "--out", "o", "--no-batched"]).batched is False
    assert parser.parse_args(["sweep", "g.toml", "--out", "o"]).batched is True
    seen = {}

    def fake(*_a, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(compare, "compare_priors", fake)
    with pytest.raises(SystemExit):
        comparing._compare_priors(parser.parse_args([*base, "--no-batched"]))
    assert seen["batched"] is False

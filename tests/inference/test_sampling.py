"""NumPyro NUTS set-up: the warm-up tree-depth cap on an anchored stacked model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.data.simulate import simulate
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a stacked fit with full-depth sampling trees, ~40 s: run by make test-slow (CI runs it)
def test_warm_up_trees_are_capped_and_sampling_trees_are_not(small_geography):
    from hierarchy.inference.sampling import MAX_TREE_DEPTH, fit

    table, truth = simulate(small_geography, seed=5)
    spec = load_spec(ROOT / "models/stages_nb.toml")
    design = build_design(table, spec)
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    d = fit(spec, priors, design, chains=2, tune=150, draws=100, seed=1, chain_method="sequential",
            warmup_tree_depth=3)
    assert d.settings["warmup_tree_depth"] == 3 and d.settings["max_tree_depth"] == MAX_TREE_DEPTH
    assert 1 <= d.timings["warmup_mean_steps"] <= 2**3 - 1  # capped at 7 leapfrog steps
    assert d.stats["n_steps"].max() > 2**3 - 1  # sampling trees grow past the warm-up cap
    # and the fit still recovers every stage's gradient at mean LA deprivation
    g = d.posterior["gradient"].reshape(-1, len(spec.stages))
    for k, stage in enumerate(spec.stages):
        lo, hi = np.quantile(g[:, k], [0.001, 0.999])
        assert lo < np.log(truth["stages"][stage]["gradient_at_mean"]) < hi, (stage, lo, hi)


@pytest.mark.slow  # four short fits: about a minute on 2 cores
def test_sampling_goes_on_until_the_bar_is_met_and_no_further(small_geography):
    """``max_draws``: 100 draws per chain miss ESS >= 400; the fit samples on from where the chains
    stopped, as many draws as the bar needs (estimated from the first block), or to the cap; the
    new draws go on from the old ones, they do not repeat them."""
    from hierarchy.errors import HierarchyError
    from hierarchy.inference.sampling import fit, meets_bar

    table, _ = simulate(small_geography, seed=5)
    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    design = build_design(table, spec)
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    kw = dict(chains=2, tune=100, draws=100, seed=3, chain_method="sequential")
    on = fit(spec, priors, design, max_draws=3000, **kw)
    n = on.settings["draws"]
    assert 100 < n < 3000 and on.settings["draws_requested"] == 100
    assert 1 <= on.settings["continuations"] <= 2  # sized from the first block, not a block of 100 at a time
    assert all(v.shape[:2] == (2, n) for v in on.posterior.values())
    assert on.stats["n_steps"].shape == (2, n)
    assert meets_bar(on.posterior, on.stats)
    assert not meets_bar({k: v[:, :100] for k, v in on.posterior.items()},
                         {k: v[:, :100] for k, v in on.stats.items()})
    g = on.posterior["gradient"]
    assert not np.allclose(g[:, 100:200], g[:, :100])  # the next block goes on, it does not repeat
    capped = fit(spec, priors, design, max_draws=150, **kw)
    assert capped.settings["draws"] == 150  # stops at the cap even though the bar is missed
    np.testing.assert_array_equal(capped.posterior["gradient"][:, :100], g[:, :100])  # same seed, same chains
    with pytest.raises(HierarchyError, match="needs the numpyro sampler"):
        fit(spec, priors, design, sampler="pymc", max_draws=200, **kw)
    with pytest.raises(HierarchyError, match="max_draws 50 is below draws 100"):  # not silently off
        fit(spec, priors, design, max_draws=50, **kw)


def test_draws_to_bar_sizes_the_continuation_from_ess_and_works_with_one_chain():
    """Independent draws: 2 x 2,000 meet the bar (0 more); 2 x 100 need about 1.2 x 400 / ESS times
    the draws; one chain (split R-hat) is sized too, and the cap holds."""
    from hierarchy.inference.sampling import draws_to_bar

    rng = np.random.default_rng(0)

    def need(chains, n, cap=10_000):
        return draws_to_bar({"a": rng.normal(size=(chains, n))}, {"diverging": np.zeros((chains, n), bool)}, cap)

    assert need(2, 2000) == 0
    assert 100 <= need(2, 100) <= 400  # ~ 1.2 x 100 x 400 / 200 - 100 = 140 for ESS ~ 200
    one = need(1, 200)
    assert 200 <= one <= 600 and need(1, 200, cap=300) == 100  # capped at 300 per chain

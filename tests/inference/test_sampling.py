"""NumPyro NUTS set-up: the warm-up tree-depth cap on an anchored stacked model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierarchy.data.simulate import simulate
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


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

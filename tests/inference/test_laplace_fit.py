"""The Laplace mode over counts given as an argument (hierarchy.inference.laplace_fit, issue 29 item 2):
a problem rebound to other counts is the problem built on them, and one compiled program serves both."""

from __future__ import annotations

import numpy as np
import pytest

from hierarchy.inference import laplace, laplace_fit
from hierarchy.likelihood.jaxmodel import make_layout, model_data, with_counts
from tests.inference.test_laplace import PRIORS, known_truth


def _two_problems():
    """The default model on 5 LAs built on its counts ``y1`` and on other counts ``y2`` (one layout),
    the first's :func:`~hierarchy.inference.laplace_fit.mode_programs` and both data pytrees."""
    spec, design, _, _ = known_truth("inverse_intervention_nb_log", 5, 12, seed=6)
    rng = np.random.default_rng(0)
    y1 = np.asarray(design.y)
    y2 = rng.poisson(np.maximum(y1, 1) * 1.3)
    layout = make_layout(design, hist_len=int(max(y1.max(), y2.max())) + 1)
    lay1, lay2 = with_counts(layout, y1, design.stage_index), with_counts(layout, y2, design.stage_index)
    pb1 = laplace.build_problem(spec, PRIORS, design, layout=lay1)
    pb2 = laplace.build_problem(spec, PRIORS, design, layout=lay2)
    programs = laplace_fit.mode_programs(pb1, laplace.hyper_init(pb1), pb1.x0)
    return pb1, pb2, programs, model_data(lay1, "float64"), model_data(lay2, "float64")


@pytest.mark.slow  # 20-45 s on 2 loaded cores: two builds, two compilations
def test_rebound_problem_is_the_problem_built_on_those_counts():
    """Value and gradient of the Laplace marginal of a problem built on counts ``y1`` and rebound to ``y2``
    (one jitted program, the counts its argument) equal those of the problem built on ``y2``, and differ
    from those at ``y1`` (the counts do reach the program)."""
    import jax
    from jax.flatten_util import ravel_pytree

    pb1, pb2, programs, d1, d2 = _two_problems()
    q = ravel_pytree(laplace.hyper_init(pb1))[0] + 0.05
    own = jax.jit(jax.value_and_grad(lambda v: laplace.laplace_potential(pb2, pb2.x0)(programs.unravel(v))))
    v2, g2 = own(q)
    v, g = programs.value_grad(q, d2)
    np.testing.assert_allclose(v, v2, rtol=1e-10)
    np.testing.assert_allclose(g, g2, rtol=1e-8, atol=1e-10)
    v1, _ = programs.value_grad(q, d1)
    assert abs(float(v1) - float(v2)) > 1.0
    assert programs.value_grad._cache_size() == 1  # both data sets: one compilation


@pytest.mark.slow
@pytest.mark.long  # ~60 s on 2 loaded cores: three compilations and two BFGS runs (CI's time)
def test_find_mode_on_rebound_counts_is_find_mode_on_a_problem_built_on_them():
    """:func:`~hierarchy.inference.laplace_fit.find_mode` given the other counts as data, through the first
    problem's programs, finds the mode, inverse Hessian and Newton start of a problem built on them."""
    pb1, pb2, programs, _, d2 = _two_problems()
    zh = laplace.hyper_init(pb1)
    mode2, cov2, start2 = laplace_fit.find_mode(pb2, zh, pb2.x0)
    mode, cov, start = laplace_fit.find_mode(pb1, zh, pb1.x0, data=d2, programs=programs)
    for k in mode:
        np.testing.assert_allclose(mode[k], mode2[k], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cov, cov2, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(start(mode), start2(mode2), rtol=1e-6, atol=1e-8)

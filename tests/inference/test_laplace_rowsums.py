"""The Laplace mode's row sums with their hand-written forward derivative (``laplace._row_sums``): the
Laplace potential and its gradient equal those of plain automatic differentiation of the families'
``row_derivatives`` (the earlier implementation), to 1e-8 in float64."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hierarchy.inference import laplace
from hierarchy.language.priors import load_priors
from hierarchy.likelihood import families

ROOT = Path(__file__).resolve().parents[2]
PRIORS = load_priors(ROOT / "priors/weakly_informative.toml")


def autodiff_local(problem, design, family: str):
    """The Laplace ``local`` of before: every row derivative by automatic differentiation."""
    import jax
    import jax.numpy as jnp

    from hierarchy.likelihood.jaxmodel import make_layout

    spec_family = families.get(family)
    layout = make_layout(design)
    le, w, y, mask = (jnp.asarray(getattr(layout, k), jnp.float64) for k in ("log_exposure", "w", "y", "mask"))
    chunk_la = jnp.asarray(layout.chunk_la)

    def segment(t):
        return jax.ops.segment_sum(t, chunk_la, num_segments=problem.n_la, indices_are_sorted=True)

    def local(pc, x, derivatives=True):
        xk = x[chunk_la]
        a = pc.a0 + jnp.sum(pc.A * xk, 1)
        b = pc.b0 + jnp.sum(pc.B * xk, 1)
        eta = le + a[:, None] + b[:, None] * w
        eta = eta if pc.per_row is None else eta + pc.per_row
        ll, d1, d2 = spec_family.row_derivatives(y, eta, {k: v[:, None] for k, v in pc.family.items()})
        Px = jnp.einsum("jef,jf->je", pc.P, x)
        value = jnp.sum(pc.g0 * x, 1) + 0.5 * jnp.sum(x * Px, 1) - segment(jnp.sum(mask * ll, 1))
        d1, d2 = mask * d1, mask * d2
        G0, G1 = jnp.sum(d1, 1)[:, None], jnp.sum(d1 * w, 1)[:, None]
        S0, S1, S2 = (jnp.sum(d2 * w**k, 1)[:, None, None] for k in range(3))
        AA, AB, BB = (jnp.einsum("ke,kf->kef", u, v) for u, v in ((pc.A, pc.A), (pc.A, pc.B), (pc.B, pc.B)))
        g = pc.g0 + Px - segment(pc.A * G0 + pc.B * G1)
        H = pc.P - segment(AA * S0 + (AB + jnp.swapaxes(AB, 1, 2)) * S1 + BB * S2)
        return value, g, H

    return local


@pytest.mark.parametrize("model", ["inverse_intervention_nb_log", "rural_gradient_nb",  # rural: per-row terms
                                   pytest.param("gradient_poisson", marks=pytest.mark.slow),
                                   pytest.param("stages_nb", marks=pytest.mark.slow)])
def test_potential_and_gradient_equal_autodiff(model):
    import jax
    from jax.flatten_util import ravel_pytree

    from hierarchy.data import simulate
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / f"models/{model}.toml")
    table, _ = simulate.simulate(synthetic_geography(5, seed=3, lsoa_per_la=10), seed=3)
    table["rural"] = (np.arange(len(table)) % 3 == 0).astype(float)  # a row covariate: per-row terms
    design = build_design(table, spec)
    pb = laplace.build_problem(spec, PRIORS, design)
    if model == "rural_gradient_nb":
        assert pb.pieces(laplace.hyper_init(pb)).per_row is not None  # the per-row tangent is exercised
    old = replace(pb, local=autodiff_local(pb, design, spec.family), joint=None, newton_local=None,
                  score=None)  # every row derivative by autodiff, the full model's potential
    zh = laplace.hyper_init(pb)
    flat, unravel = ravel_pytree(zh)
    rng = np.random.default_rng(0)
    new = jax.jit(jax.value_and_grad(lambda v: laplace.laplace_potential(pb, pb.x0)(unravel(v))))
    ref = jax.jit(jax.value_and_grad(lambda v: laplace.laplace_potential(old, pb.x0)(unravel(v))))
    for q in (flat, flat + 0.3 * rng.standard_normal(flat.shape)):
        new_vg, old_vg = new(q), ref(q)
        np.testing.assert_allclose(new_vg[0], old_vg[0], rtol=1e-10)
        scale = float(np.max(np.abs(old_vg[1])))
        np.testing.assert_allclose(new_vg[1], old_vg[1], rtol=1e-8, atol=1e-10 * scale)
        assert scale > 0


def test_third_derivatives_by_forward_differentiation_where_a_family_has_none():
    """A family without ``row_third`` (zero-inflated NB) gets one by forward differentiation of its
    ``row_derivatives``; on the NB it equals the NB's own."""
    import jax
    import jax.numpy as jnp

    from hierarchy.likelihood.families import negative_binomial as nb

    jax.config.update("jax_enable_x64", True)
    fam = replace(families.get("negative_binomial"), row_third=None)  # as a family that declares none
    third = laplace._row_third(fam)
    assert third is not nb.row_third
    y = jnp.asarray([0.0, 1.0, 3.0, 40.0])
    eta = jnp.asarray([-1.0, 0.5, 1.2, 3.5])
    p = {"dispersion": jnp.full(4, 2.5)}
    d3, par = third(y, eta, p)
    d3_own, par_own = nb.row_third(y, eta, p)
    np.testing.assert_allclose(d3, d3_own, rtol=1e-12)
    for got, ref in zip(par["dispersion"], par_own["dispersion"], strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    assert laplace._row_third(families.get("negative_binomial")) is nb.row_third


@pytest.mark.parametrize("model", ["gradient_poisson",
                                   pytest.param("stages_nb", marks=pytest.mark.slow)])  # one dispersion per stage
def test_joint_from_the_row_sums_is_the_models_potential(model):
    """``Problem.joint`` (the model's sites without its likelihood, plus the rows' sum ``local`` computed
    and the family's ``loglik_rest``) equals the NUTS path's potential, value and gradient."""
    import jax
    import jax.numpy as jnp

    from hierarchy.data import simulate
    from hierarchy.data.reference import synthetic_geography
    from hierarchy.language.design import build_design
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / f"models/{model}.toml")
    table, _ = simulate.simulate(synthetic_geography(4, seed=2, lsoa_per_la=8), seed=2)
    pb = laplace.build_problem(spec, PRIORS, build_design(table, spec))
    assert pb.joint is not None
    zh = {k: v + 0.1 for k, v in laplace.hyper_init(pb).items()}
    x = pb.x0 + 0.2 * jnp.asarray(pb.real, float)

    def new(zh, x):
        return pb.joint(zh, pb.pieces(zh), x, pb.local(pb.pieces(zh), x)[0])

    def old(zh, x):
        return pb.potential({**zh, **pb.sites_of(x)})

    (v_new, g_new), (v_old, g_old) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(zh, x) for f in (new, old))
    np.testing.assert_allclose(v_new, v_old, rtol=1e-11)
    for a, b in zip(jax.tree_util.tree_leaves(g_new), jax.tree_util.tree_leaves(g_old), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)

"""Embedded Laplace approximation: each LA's group effects marginalised, NUTS over the hyperparameters.

Given the hyperparameters ``theta`` (fixed effects, SDs, correlations, loadings, dispersion, ...), the
group effects that belong to one LA form a Gaussian block ``x_j`` a priori: its intercept and gradient
at every stage (``la_coef``; ``la_level`` with strata; ``la_coef_flat`` stacked; an anchored stacked
model's ``la_anchor`` and ``la_stage_centred``) and the levels of intercept-only group terms nested in it
(``(1 | la:year)``). They reach the likelihood only through each chunk's intercept and gradient (a
chunk holds rows of one LA), so their conditional posterior is near-Gaussian with a Hessian that is
block-diagonal by LA (DESIGN section 10). Here:

- the pieces at ``theta`` are read off the project's own NumPyro model (centred, run with ``expose``):
  the latent prior's gradient and precision blocks by automatic differentiation of its own sites'
  log densities (quadratic in ``x``), each chunk's intercept and gradient as an affine map of ``x``,
  the rows' other terms and the dispersion;
- ``x_hat(theta)``: Newton's method on every LA block at once, one pass over the rows per iteration
  (the family's first and second derivatives per row, its ``row_derivatives``, reduced to five sums
  per chunk), with a per-LA backtracking step;
- the Laplace log marginal ``-U(x_hat, theta) + (n/2) log 2 pi - 1/2 sum_j log det H_j``, with ``U``
  the NUTS path's own potential energy (same priors, Jacobians and likelihood: the model's sites'
  densities, run without its likelihood, plus the rows' sum from the pass that gives ``H`` at ``x_hat``
  and the family's ``loglik_rest``);
- its gradient by the implicit function theorem: Newton runs on stopped gradients and one more
  Newton step from the converged mode is differentiated, whose derivative there is the IFT derivative
  ``d x_hat / d theta = H^-1 d(grad_x log p) / d theta``; nothing differentiates through the loop.
  The row sums carry a hand-written forward derivative (the family's ``row_third``: third derivatives
  in ``eta`` and derivatives in its parameters, summed in the same pass), so the reverse pass of
  ``log det H`` is per chunk, not per row; the differentiated step's score comes from Newton's last row
  pass (its Hessian and parameter sums give its derivative). One differentiated row pass per
  evaluation, beside Newton's (bench/RESULTS.md, issue 29 third step);
- in :mod:`hierarchy.inference.laplace_fit`, the sampling side: NUTS (NumPyro, dense mass matrix) over
  the unconstrained hyperparameters, started from draws around their Laplace posterior mode (BFGS, with
  its inverse Hessian), then the latent effects drawn from ``N(x_hat(theta), H^-1)`` for every draw, so
  the posterior has the names of a centred NUTS fit.

The problem's functions close over one data set; :attr:`Problem.rebind` closes them over another of the
same shapes (or over JAX tracers), so that one compiled program fits many (the Laplace SBC).

Group effects that cannot be given to one LA (``(1 | year)``) stay hyperparameters, sampled by NUTS,
up to :data:`MAX_HYPER` values; a group term summing to zero over LAs is marginalised without that
constraint (the formula's own iid effects, as lme4 and glmmTMB fit it: the sum over LAs couples the
blocks), which the fit's provenance says. Models outside the regime are refused with the reason
(:func:`refusal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from hierarchy.errors import HierarchyError
from hierarchy.inference import blocks
from hierarchy.inference.sampling import initial_point
from hierarchy.language.design import Design, group_zero_sum
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families, parameters

LA_SITES = parameters.names(la_block=True)
"""The centred model's sites of LA effects (one row per LA) that are marginalised (the parameter table's view)."""
MAX_HYPER = 200
"""Group effects that stay hyperparameters (not nested in an LA) beyond this many: refused."""
NEWTON_TOL = 1e-6
"""Newton stops when every LA's Newton decrement ``g' H^-1 g`` (log density units) is below this; the
differentiated step that follows squares the remaining error."""
MAX_NEWTON = 50


def _nested_groups(design: Design, layout) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Intercept-only group terms constant within every chunk whose levels each lie in one LA, with each
    level's LA and its slot among that LA's levels."""
    from hierarchy.likelihood.jaxmodel import chunk_groups

    out = {}
    for g, chunk_level in chunk_groups(design, layout).items():
        n = len(design.group_levels[design.group_names.index(g)])
        pairs = np.unique(np.stack([chunk_level, layout.chunk_la], 1), axis=0)
        if len(pairs) != n or len(np.unique(pairs[:, 0])) != n:
            continue  # a level in two LAs, or a level without rows
        la = pairs[np.argsort(pairs[:, 0]), 1]
        order = np.lexsort((np.arange(n), la))
        first = np.searchsorted(la[order], la[order])
        slot = np.empty(n, dtype=np.int64)
        slot[order] = np.arange(n) - first
        out[g] = (la, slot)
    return out


def refusal(spec: ModelSpec, design: Design, layout=None) -> str | None:
    """Why ``spec`` is outside the Laplace mode's regime (a sentence naming the term), or None.
    ``layout``: the design's chunked layout where the caller has it (built here when needed)."""
    from hierarchy.likelihood.jaxmodel import make_layout

    why = families.get(spec.family).laplace_refusal
    if why:
        return why
    if getattr(spec, "spatial", None):
        return ("the spatial term car(neighbourhood) (one BYM2 effect per neighbourhood) is not supported by the "
                "Laplace mode yet (only effects that belong to one LA are marginalised)")
    if spec.msoa.random_intercept:
        return ("the MSOA group term (1 | msoa) is not supported by the Laplace mode yet (its effects vary "
                "within an LA's rows; only effects constant over an LA's, stage's and stratum's rows are "
                "marginalised)")
    if not design.group_names:
        return None
    nested = _nested_groups(design, make_layout(design) if layout is None else layout)
    for g, levels, slope in zip(design.group_names, design.group_levels, design.group_slope, strict=True):
        n = len(levels) * (2 if slope else 1)
        if g not in nested and slope:
            return (f"the group term (1 + w | {g}) gives {g} its own gradient across LAs: its effects stay among "
                    "the hyperparameters, and NUTS over the Laplace marginal froze on them (ethnicity_gradient_nb "
                    "on 20 LAs: R-hat 2.7, 98.8% of draws at the maximum tree depth, where NUTS on every "
                    "parameter converged; bench/chees_agreement.py --method laplace)")
        if g not in nested and n > MAX_HYPER:
            return (f"the group term (1 | {g}) has {n} effects that do not each belong to one LA (or vary "
                    f"within an LA's rows): sampling them beside the hyperparameters (at most {MAX_HYPER}) "
                    "is not the Laplace mode's regime")
    return None


def latent_sites(design: Design, layout) -> list[str]:
    """The centred model's sites the Laplace approximation integrates out: the LA effects and the
    ``{g}_centred`` effects of group terms nested in LAs (:func:`_nested_groups`)."""
    return [*LA_SITES, *(f"{g}_centred" for g in _nested_groups(design, layout))]


def check_supported(spec: ModelSpec, design: Design, layout=None) -> None:
    """Raise :class:`HierarchyError` naming the term when ``spec`` is outside the regime."""
    why = refusal(spec, design, layout)
    if why:
        raise HierarchyError(f"{spec.name}: method 'laplace' refused: {why}; fit it with method 'nuts' "
                             "(hierarchy fit --method nuts)")


class Pieces(NamedTuple):
    """What the latent effects' conditional posterior needs from the hyperparameters (one evaluation)."""

    a0: Any  # (K,) each chunk's intercept at x = 0
    b0: Any  # (K,) and gradient
    A: Any  # (K, E) d intercept / d x_j of the chunk's LA j
    B: Any  # (K, E) d gradient / d x_j
    g0: Any  # (J, E) gradient of the latent prior's negative log density at x = 0
    P: Any  # (J, E, E) its precision blocks
    per_row: Any  # (K, C) the rows' other terms (row coefficients, groups that stay hyperparameters), or None
    family: Any  # {name: (K,)} each chunk's likelihood parameters (the NB's dispersion; none for Poisson)
    m: Any = None  # (J, E) the latent prior's mean -P^-1 g0 (:func:`_prior_mean`)


class Block(NamedTuple):
    """One marginalised site: its columns ``[offset, offset + width)`` of each LA's block; ``la`` and
    ``slot`` (per level) for a group term's site, None for an LA site (one row per LA)."""

    name: str
    offset: int
    width: int
    la: np.ndarray | None = None
    slot: np.ndarray | None = None


@dataclass(frozen=True)
class Problem:
    """The pieces of one Laplace fit, as pure JAX functions closed over the data (:attr:`rebind`: over
    other data)."""

    potential: Any  # joint potential energy over every site (unconstrained)
    postprocess: Any  # unconstrained sites -> every site and deterministic (constrained)
    pieces: Any  # zh -> Pieces
    local: Any  # (Pieces, x) -> (value_j, grad_j, hess_j) of the joint's negative log density per LA
    blocks: tuple[Block, ...]
    hyper0: dict  # unconstrained initial hyperparameters
    x0: Any  # (J, E) initial latent effects
    real: np.ndarray  # (J, E) bool: the entries of x that are effects (False: padding of short groups)
    dropped_zero_sum: tuple[str, ...] = ()
    joint: Any = None  # (zh, Pieces, x, local's value at x) -> potential at (zh, x) from local's row sums
    newton_local: Any = None  # (Pieces, x) -> local's (value, g, H) and the chunk sums g's derivative needs
    score: Any = None  # (Pieces, x, chunk sums from newton_local) -> g at x, differentiable in the pieces
    chunk_la: Any = None  # (K,) each chunk's LA
    rebind: Any = None  # data -> this problem over other counts (same shapes; arrays or tracers)

    @property
    def n_la(self) -> int:
        return int(self.real.shape[0])

    @property
    def n_eff(self) -> int:
        return int(self.real.shape[1])

    def sites_of(self, x) -> dict:
        """The marginalised sites' values for latent blocks ``x`` (J, E)."""
        return {b.name: (x[:, b.offset:b.offset + b.width] if b.la is None else x[b.la, b.offset + b.slot])
                for b in self.blocks}

    def x_of(self, sites: dict):
        """The latent blocks (J, E) holding the marginalised sites' values (0 in padding)."""
        import jax.numpy as jnp

        x = jnp.zeros(self.real.shape)
        for b in self.blocks:
            v = jnp.asarray(sites[b.name])
            if b.la is None:
                x = x.at[:, b.offset:b.offset + b.width].set(v)
            else:
                x = x.at[b.la, b.offset + b.slot].set(v)
        return x


def centred_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its LA and group effects centred: sites of effects, not of standardised ones."""
    return replace(spec, la=replace(spec.la, parameterisation="centred"))


def _blocks(z: dict, design: Design, nested: dict) -> tuple[Block, ...]:
    """The marginalised sites of the centred model's unconstrained sites ``z``."""
    out, offset = [], 0
    for name in LA_SITES:
        if name in z:
            width = int(z[name].shape[1])
            out.append(Block(name, offset, width))
            offset += width
    for g, (la, slot) in nested.items():
        name = f"{g}_centred"
        if name in z:
            width = int(slot.max()) + 1
            out.append(Block(name, offset, width, la, slot))
            offset += width
    return tuple(out)


def build_problem(spec: ModelSpec, priors: PriorSet, design: Design, *, float32: bool = False, seed: int = 0,
                  layout=None) -> Problem:
    """The Laplace pieces for ``spec`` (which must pass :func:`check_supported`), closed over the counts of
    ``layout`` (default: the design's chunked layout). :attr:`Problem.rebind` gives the same problem over
    other counts of the same shapes (:func:`hierarchy.likelihood.jaxmodel.with_counts`), as arrays or as
    JAX tracers: one compiled program then serves every data set (the Laplace SBC)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import constrain_fn, potential_energy

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    layout = make_layout(design) if layout is None else layout  # group_grid (dropped below) is not in it
    check_supported(spec, design, layout)
    jax.config.update("jax_enable_x64", True)
    spec_c = centred_spec(spec)
    dropped = tuple(g for g, axes in zip(design.group_names, group_zero_sum(spec_c, design), strict=True)
                    if axes and 0 in axes and g.split(":")[0] == "la")
    if dropped:  # the sum over LAs couples the blocks: iid effects (the formula's own meaning)
        design = replace(design, group_grid=())
    model = model_fn(spec_c, priors, design, layout)
    probe = model_fn(spec_c, priors, design, layout, expose=True)
    data = model_data(layout, "float32" if float32 else "float64")
    z = initial_point(model, data, seed)
    blocks = _blocks(z, design, _nested_groups(design, layout))
    if not blocks:
        raise HierarchyError(f"{spec.name}: the centred model has no LA effects to marginalise")
    n_eff = sum(b.width for b in blocks)
    real = np.ones((design.n_la, n_eff), dtype=bool)
    for b in blocks:
        if b.la is not None:
            real[:, b.offset:b.offset + b.width] = False
            real[b.la, b.offset + b.slot] = True
    family = families.get(spec.family)
    names = {b.name for b in blocks}
    base = Problem(potential=None, postprocess=None, pieces=None, local=None, blocks=blocks,
                   hyper0={k: v for k, v in z.items() if k not in names}, x0=None, real=real,
                   dropped_zero_sum=dropped, chunk_la=np.asarray(layout.chunk_la))
    base = replace(base, x0=base.x_of({b.name: z[b.name] for b in blocks}))

    def bind(data: dict) -> Problem:
        """``base``'s functions closed over ``data`` (:func:`hierarchy.likelihood.jaxmodel.model_data`)."""
        y = jnp.asarray(data["y"], jnp.float64)
        return replace(base, potential=partial(potential_energy, model, (data,), {}),
                       postprocess=partial(constrain_fn, model, (data,), {}, return_deterministic=True),
                       pieces=_pieces_fn(probe, data, base, family), rebind=bind,
                       joint=_joint_fn(family, layout, data, partial(potential_energy, probe, (data,), {}),
                                       base.sites_of),
                       **_local_fns(family, layout, base.n_la, y))

    return bind(data)


def _pieces_fn(probe, data: dict, problem: Problem, family):
    """:attr:`Problem.pieces`: the pieces read off the centred model run with ``expose`` on ``data``."""
    import jax
    import jax.numpy as jnp
    from numpyro.handlers import substitute, trace
    from numpyro.infer.util import _unconstrain_reparam

    names = {b.name for b in problem.blocks}
    n_la, n_eff = problem.n_la, problem.n_eff
    pad = jnp.asarray(~problem.real, jnp.float64)
    f64 = jnp.float64

    def run(zh, x):
        params = {**zh, **problem.sites_of(x)}
        return trace(substitute(probe, substitute_fn=partial(_unconstrain_reparam, params))).get_trace(data)

    def pieces(zh) -> Pieces:
        zero = jnp.zeros((n_la, n_eff))
        basis = jnp.broadcast_to(jnp.eye(n_eff)[:, None, :], (n_eff, n_la, n_eff))

        def chunk_ab(x):
            tr = run(zh, x)
            return tr["_chunk_a"]["value"].astype(f64), tr["_chunk_b"]["value"].astype(f64)

        def nlp(x):
            tr = run(zh, x)
            return (-sum(jnp.sum(tr[n]["fn"].log_prob(tr[n]["value"])) for n in names)
                    + 0.5 * jnp.sum(pad * x**2))

        tr = run(zh, zero)
        a0, b0 = chunk_ab(zero)
        # one direction at a time (vmapped, the MVN's forward-over-reverse derivative took 100x longer)
        A, B = (jnp.stack(d, axis=1) for d in zip(*(jax.jvp(chunk_ab, (zero,), (d,))[1] for d in basis),
                                                      strict=True))
        grad = jax.grad(nlp)
        P = jnp.stack([jax.jvp(grad, (zero,), (d,))[1] for d in basis], axis=-1)  # column e of each block
        chunk = {k: tr[f"_chunk_{k}"]["value"].astype(f64) for k in family.likelihood_params}
        per_row = tr["_per_row"]["value"].astype(f64) if "_per_row" in tr else None
        g0 = grad(zero)
        return Pieces(a0, b0, A, B, g0, P, per_row, chunk, _prior_mean(P, g0))

    return pieces


def _local_fns(family, layout, n_la: int, y) -> dict:
    """:attr:`Problem.local`, :attr:`Problem.newton_local` and :attr:`Problem.score` over the layout's
    rows with counts ``y`` (the layout's shape; float64)."""
    import jax
    import jax.numpy as jnp

    chunk_la = jnp.asarray(layout.chunk_la)
    le, w, mask = (jnp.asarray(getattr(layout, k), jnp.float64) for k in ("log_exposure", "w", "mask"))

    def segment(t):
        return jax.ops.segment_sum(t, chunk_la, num_segments=n_la, indices_are_sorted=True)

    counts = np.bincount(layout.chunk_la, minlength=n_la)
    slots = np.full((n_la, max(int(counts.max()), 1)), len(layout.chunk_la))  # padding: a row of zeros
    for j in range(n_la):
        slots[j, :counts[j]] = np.flatnonzero(layout.chunk_la == j)

    def by_la(t):
        """Per-chunk ``t`` (K, 2, E) as each LA's chunks (J, 2 * most chunks of an LA, E), zeros padding."""
        t = jnp.concatenate([t, jnp.zeros((1,) + t.shape[1:], t.dtype)])[slots]
        return t.reshape(n_la, -1, t.shape[-1])

    sums = _row_sums(family, (le, w, y, mask))

    def local(pc: Pieces, x, derivatives: bool = True):
        """Per LA: negative log joint (up to terms free of x), its gradient and Hessian in x_j."""
        xk = x[chunk_la]
        a = pc.a0 + jnp.sum(pc.A * xk, 1)
        b = pc.b0 + jnp.sum(pc.B * xk, 1)
        d = x - pc.m
        Pd = jnp.einsum("jef,jf->je", pc.P, d)
        prior = 0.5 * jnp.sum(d * Pd, 1)
        if not derivatives:
            eta = le + a[:, None] + b[:, None] * w
            eta = eta if pc.per_row is None else eta + pc.per_row
            ll = family.row_derivatives(y, eta, {k: v[:, None] for k, v in pc.family.items()})[0]
            return prior - segment(jnp.sum(mask * ll, 1)), None, None
        return assemble(pc, prior, Pd, sums(a, b, pc.family, pc.per_row))

    def assemble(pc: Pieces, prior, Pd, chunk_sums):
        """``local``'s value, gradient and Hessian from the chunks' row sums; ``prior`` and ``Pd`` the latent
        prior's quadratic and gradient, ``P (x - m)``, about its mean (not about 0: with an SD near zero
        ``P`` is huge and the terms of ``g0' x + x' P x / 2`` cancel to noise of hundreds of log units)."""
        L, G0, G1, S0, S1, S2 = chunk_sums
        g = Pd - segment(pc.A * G0[:, None] + pc.B * G1[:, None])
        # sum over each LA's chunks of [A B] [[S0 S1] [S1 S2]] [A B]': one batched product per LA
        V = jnp.stack([pc.A, pc.B], 1)  # (K, 2, E)
        W = jnp.stack([pc.A * S0[:, None] + pc.B * S1[:, None], pc.A * S1[:, None] + pc.B * S2[:, None]], 1)
        return prior - segment(L), g, pc.P - jnp.einsum("jne,jnf->jef", by_la(V), by_la(W))

    param_sums = _param_score_sums(family, (le, w, y, mask))

    def newton_local(pc: Pieces, x):
        """``local`` (not differentiated) and each chunk's score and Hessian sums and its likelihood
        parameters' score sums, what :func:`score` needs."""
        xk = x[chunk_la]
        a, b = pc.a0 + jnp.sum(pc.A * xk, 1), pc.b0 + jnp.sum(pc.B * xk, 1)
        d = x - pc.m
        Pd = jnp.einsum("jef,jf->je", pc.P, d)
        chunk_sums = sums(a, b, pc.family, pc.per_row)
        value, g, H = assemble(pc, 0.5 * jnp.sum(d * Pd, 1), Pd, chunk_sums)
        return value, g, H, (*chunk_sums[1:], param_sums(a, b, pc.family, pc.per_row))

    def score(pc: Pieces, x, cs):
        """``local``'s ``g`` at ``x`` from :func:`newton_local`'s chunk sums there (no row pass), with its
        derivative in the pieces (rows without per-row terms only)."""
        xk = x[chunk_la]
        G0, G1 = _score_sums(pc.a0 + jnp.sum(pc.A * xk, 1), pc.b0 + jnp.sum(pc.B * xk, 1), pc.family, cs)
        return jnp.einsum("jef,jf->je", pc.P, x - pc.m) - segment(pc.A * G0[:, None] + pc.B * G1[:, None])

    return {"local": local, "newton_local": newton_local, "score": score}


def _joint_fn(family, layout, data: dict, probe_potential, sites_of):
    """:attr:`Problem.joint` (None where the family declares no ``loglik_rest``): ``probe_potential`` is
    the potential of the model run with ``expose`` (every site's density, no likelihood)."""
    import jax.numpy as jnp

    rest = getattr(family, "loglik_rest", None)  # :mod:`hierarchy.likelihood.families`
    if rest is None:
        return None
    chunk_stage = np.asarray(layout.chunk_stage)
    first_chunk = np.array([np.flatnonzero(chunk_stage == s)[0] if np.any(chunk_stage == s) else 0
                            for s in range(len(layout.n_stage_rows))])

    def joint(zh, pc: Pieces, x, value):
        """The NUTS path's potential at ``(zh, x)``: the sites' densities and the likelihood, whose rows'
        sum is the latent prior's quadratic at ``x`` less ``local``'s ``value`` (no second row pass)."""
        d = x - pc.m
        rows = 0.5 * jnp.einsum("je,jef,jf->", d, pc.P, d) - jnp.sum(value)
        loglik = rest(data, pc.family, first_chunk) + rows - data["lgamma_y1"]
        return probe_potential({**zh, **sites_of(x)}) - loglik

    return joint


def _row_third(family):
    """The family's ``row_third`` (third derivative in ``eta`` and the likelihood parameters' derivatives
    of ``row_derivatives``), or one by forward differentiation of its ``row_derivatives``."""
    import jax
    import jax.numpy as jnp

    own = getattr(family, "row_third", None)
    if own is not None:
        return own

    def third(y, eta, params):
        d3 = jax.jvp(lambda e: family.row_derivatives(y, e, params)[2], (eta,), (jnp.ones_like(eta),))[1]
        return d3, {k: jax.jvp(lambda v, k=k: family.row_derivatives(y, eta, {**params, k: v}), (params[k],),
                               (jnp.ones_like(params[k]),))[1] for k in params}

    return third


def _row_sums(family, rows: tuple):
    """``sums(a, b, fam, per_row)``: each chunk's row sums ``(sum ll, sum d1, sum d1 w, sum d2 w^k for k =
    0, 1, 2)`` of the family's ``row_derivatives`` at ``eta = log_exposure + a + b w + per_row``, with a
    forward derivative that sums the rows' third derivatives and parameter derivatives in the same pass.

    ``a, b`` (K,), ``fam`` {name: (K,)}, ``per_row`` (K, C) or None; ``rows`` the layout's float64
    ``(log_exposure, w, y, mask)``. Automatic differentiation of the row derivatives instead keeps every
    row's intermediates and walks them back (with ``per_row`` None the reverse pass here is per chunk).
    """
    import jax
    import jax.numpy as jnp

    le, w, y, mask = rows
    third = _row_third(family)

    def at(a, b, fam, per_row):
        eta = le + a[:, None] + b[:, None] * w
        return (eta if per_row is None else eta + per_row), {k: v[:, None] for k, v in fam.items()}

    def total(t):
        return jnp.sum(mask * t, 1)

    def primal(a, b, fam, per_row):
        eta, params = at(a, b, fam, per_row)
        ll, d1, d2 = family.row_derivatives(y, eta, params)
        return total(ll), total(d1), total(d1 * w), total(d2), total(d2 * w), total(d2 * w * w)

    def jvp(primals, tangents):
        a, b, fam, per_row = primals
        da, db, dfam, dper = tangents
        eta, params = at(a, b, fam, per_row)
        ll, d1, d2 = family.row_derivatives(y, eta, params)
        d3, d_par = third(y, eta, params)
        outs = (ll, d1, d1 * w, d2, d2 * w, d2 * w * w)
        in_eta = (d1, d2, d2 * w, d3, d3 * w, d3 * w * w)  # each output's row terms, differentiated in eta
        in_par = {k: (v[0], v[1], v[1] * w, v[2], v[2] * w, v[2] * w * w) for k, v in d_par.items()}
        tans = []
        for o, r in enumerate(in_eta):
            t = total(r) * da + total(r * w) * db + sum(total(in_par[k][o]) * dfam[k] for k in fam)
            tans.append(t if per_row is None else t + total(r * dper))
        return tuple(total(o) for o in outs), tuple(tans)

    f = jax.custom_jvp(primal)
    f.defjvp(jvp)
    return f


def _param_score_sums(family, rows: tuple):
    """``q(a, b, fam, per_row)``: each chunk's sums ``(sum d d1 / d p, sum w d d1 / d p)`` for each
    likelihood parameter ``p`` (the derivative of the score sums in ``p``), as :func:`_row_sums`."""
    import jax.numpy as jnp

    le, w, y, mask = rows
    third = _row_third(family)

    def q(a, b, fam, per_row):
        eta = le + a[:, None] + b[:, None] * w
        eta = eta if per_row is None else eta + per_row
        d_par = third(y, eta, {k: v[:, None] for k, v in fam.items()})[1]
        return {k: (jnp.sum(mask * v[1], 1), jnp.sum(mask * v[1] * w, 1)) for k, v in d_par.items()}

    return q


def _score_sums_jvp(primals, tangents):
    a, b, fam, cs = primals
    da, db, dfam, _ = tangents
    G0, G1, S0, S1, S2, Q = cs
    return (G0, G1), (S0 * da + S1 * db + sum(Q[k][0] * dfam[k] for k in fam),
                      S1 * da + S2 * db + sum(Q[k][1] * dfam[k] for k in fam))


def _score_sums(a, b, fam, cs):
    """The chunk score sums ``(G0, G1)`` of ``cs`` (computed at ``a, b, fam`` by Newton's last row pass),
    with their derivative in ``a, b, fam`` from the Hessian sums and parameter score sums there."""
    import jax

    f = jax.custom_jvp(lambda a, b, fam, cs: (cs[0], cs[1]))
    f.defjvp(_score_sums_jvp)
    return f(a, b, fam, cs)


def _prior_mean(P, g0):
    """The latent prior's mean ``-P_j^-1 g0_j`` per LA block, solved with each block scaled to a unit
    diagonal: with an SD near zero the block's scales span many orders of magnitude (``1 / sd^2``), which
    the scaling takes out of the solve (a chain at log SD -20 found a spurious well of -900 log units
    where the quadratic was formed about 0)."""
    import jax.numpy as jnp

    s = 1.0 / jnp.sqrt(jnp.diagonal(P, axis1=-2, axis2=-1))  # (J, E)
    return -s * blocks.solve(P * s[..., :, None] * s[..., None, :], s * g0)


def newton(problem: Problem, pc: Pieces, x0, tol: float = NEWTON_TOL, max_iter: int = MAX_NEWTON):
    """Mode of the latent effects given the pieces ``pc`` (:attr:`Problem.pieces`), from ``x0``.

    Newton's method on every LA block at once, one pass over the rows per iteration: the candidate's
    value, gradient and Hessian come together, and a candidate that does not lower an LA's negative log
    density enough (Armijo) is replaced by half the step for that LA. Returns the mode, the largest
    Newton decrement and the iterations. Not meant to be differentiated (see the module docstring).
    """
    return _newton(problem, pc, x0, tol, max_iter)[:3]


def _newton(problem: Problem, pc: Pieces, x0, tol: float = NEWTON_TOL, max_iter: int = MAX_NEWTON):
    """:func:`newton`, and its last row pass at the mode: ``g``, ``H`` and the chunk sums of
    :attr:`Problem.newton_local` (None without it)."""
    import jax
    import jax.numpy as jnp

    local = problem.newton_local or (lambda pc, x: (*problem.local(pc, x), None))

    def keep(ok, new, old):  # ok per LA, or per chunk for the chunk sums
        return jax.tree_util.tree_map(lambda n, o: jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o),
                                      new, old)

    def cond(state):
        return (state[-2] < max_iter) & (state[-1] > tol)

    def body(state):
        x, f, g, H, cs, step, t, it, _ = state
        slope = jnp.sum(g * step, axis=1)  # <= 0
        cand = x + t[:, None] * step
        fc, gc, Hc, csc = local(pc, cand)
        ok = jnp.isfinite(fc) & (fc <= f + 1e-4 * t * slope)
        x, f, g, H = keep(ok, (cand, fc, gc, Hc), (x, f, g, H))
        cs = None if cs is None else keep(ok[problem.chunk_la], csc, cs)
        step = -blocks.solve(H, g)
        dec = jnp.max(jnp.where(jnp.isfinite(step).all(1), -jnp.sum(g * step, axis=1), jnp.inf))
        return x, f, g, H, cs, step, jnp.where(ok, 1.0, 0.5 * t), it + 1, dec

    f, g, H, cs = local(pc, x0)
    step = -blocks.solve(H, g)
    dec = jnp.max(-jnp.sum(g * step, axis=1))
    state = (x0, f, g, H, cs, step, jnp.ones(x0.shape[0], x0.dtype), 0, dec)
    out = jax.lax.while_loop(cond, body, state)
    return out[0], out[-1], out[-2], out[2], out[3], out[4]


def mode_and_hessian(problem: Problem, zh: dict, start):
    """``x_hat(theta)`` with its IFT derivative, the Hessian blocks at it, the largest Newton decrement
    before the last step, and the joint potential energy at ``x_hat``. ``start``: Newton's starting
    point, an array or a function of ``zh`` (:func:`find_mode`'s linear prediction of the mode)."""
    import jax

    x0 = jax.lax.stop_gradient(start(zh) if callable(start) else start)
    pc = problem.pieces(zh)
    x_star, dec, _, g, H, cs = jax.lax.stop_gradient(_newton(problem, jax.lax.stop_gradient(pc), x0))
    if cs is not None and pc.per_row is None:  # Newton's last row pass was at x_star: its sums give g
        g = problem.score(pc, x_star, cs)
    else:
        _, g, H = problem.local(pc, x_star)
    x_hat = x_star - blocks.solve(jax.lax.stop_gradient(H), g)  # x_star at convergence, with the IFT derivative
    value, _, H_hat = problem.local(pc, x_hat)
    joint = (problem.potential({**zh, **problem.sites_of(x_hat)}) if problem.joint is None else
             problem.joint(zh, pc, x_hat, value))
    return x_hat, H_hat, dec, joint


def laplace_potential(problem: Problem, start):
    """``U(theta) = -log p(y, theta)`` by Laplace (unconstrained hyperparameters), for NUTS."""
    n = int(problem.real.sum())

    def potential(zh):
        _, H, _, joint = mode_and_hessian(problem, zh, start)
        return joint + 0.5 * blocks.logdet_spd(H) - 0.5 * n * math.log(2 * math.pi)

    return potential


def hyper_init(problem: Problem) -> dict:
    """The unconstrained hyperparameters of the model's initial point (every site not marginalised)."""
    return dict(problem.hyper0)

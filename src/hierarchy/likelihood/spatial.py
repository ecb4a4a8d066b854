"""The BYM2 neighbourhood effect, ``+ car(neighbourhood)`` in a formula: everything about the term in one place.

For node k of the neighbourhood graph (:class:`hierarchy.data.geography.Graph`; several rows may share
a node: neighbourhood x stratum, stacked stages, years)::

    s_k = spatial_sd * (sqrt(spatial_mix / scale_k) * phi_k + sqrt(1 - spatial_mix) * theta_k)

``theta ~ N(0, 1)`` iid; ``phi`` an intrinsic CAR on the graph's edges,
``log p(phi) = -0.5 sum_edges (phi_i - phi_j)^2``, summing to zero in each connected part and, in a design
(which sets each node's LA), in each LA: the LA effects carry each LA's level and ``phi`` the structure
within and across LAs (without it the LA intercepts and the field's LA means trade off and the LA effects
do not mix: R-hat 1.55 on 8 LAs of 256 lattice nodes, 1.07 with it); ``phi_k ~ N(0, 1)`` for a node without
neighbours
(scale 1: an island is unstructured only, Freni-Sterrantino, Ventrucci & Rue 2018). ``scale_k``, the
geometric mean of the marginal variances of the node's part, makes ``spatial_sd`` the SD of the effect
whatever the graph (Riebler et al. 2016). ``s`` is added to the one linear predictor of every row
(:func:`hierarchy.likelihood.predictor.row_terms`), so every family, stratum, stage and year has it.

The sums are held at zero exactly: the sampler moves a free vector ``x`` (``spatial_phi_free``) and
``phi = P x`` is its orthogonal projection onto the constraints' null space (:func:`project`), while
``x - P x`` is standard normal (:func:`free_logp`), so ``phi`` has the constrained ICAR as its law. A soft
constraint (each LA's sum ``~ N(0, 0.001 m)``) was used before: its LA-sum directions had posterior SD
~0.015 against ~1 for the field's smooth directions, which a diagonal mass matrix cannot rescale, so the
national fit ran at step size 0.006 and ~240 leapfrog steps per draw during warm-up
(bench/RESULTS.md).

Priors (prior groups of a prior set): ``spatial_sd`` a PC prior, exponential with
``P(spatial_sd > U) = alpha`` (U = 1, alpha = 0.01: rate ``-log(alpha) / U`` = 4.6); ``spatial_mix``
Beta(1, 1) as brms does. The PC prior of the mixing parameter (Riebler et al. 2016, section 4) needs
the eigenvalues of each part's scaled ICAR precision: not done.

Disclosure and size: ``phi`` and ``theta`` are per-node latents (role ``per_row`` of
:mod:`hierarchy.likelihood.parameters`): used for the likelihood, never stored in a fit file (32,844 nodes
x draws is ~1 GB, and a neighbourhood's effect is derived from its own counts). ``spatial_sd`` and
``spatial_mix`` are hyperparameters, reported.

The functions are written once with array operations numpy, ``jax.numpy`` and ``pytensor.tensor`` share;
the NumPyro sites (:func:`numpyro_sites`), the PyMC twin's (:func:`pymc_sites`) and exact prior draws
of the latents (:func:`draw_latents`) use them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

SUM_TO_ZERO_SD = 0.001
"""SD of each constrained sum of ``phi`` per node in the soft form whose precision the conjugate-gradient
draws solve with (:func:`_precision_matvec`); the model holds the sums at zero exactly (:func:`project`)."""

PARAMETERS: tuple[dict[str, Any], ...] = (
    dict(name="spatial_sd", role="hyper", prior_group="spatial_sd", predictor=True,
         meaning="SD of the BYM2 neighbourhood effects"),
    dict(name="spatial_mix", role="hyper", prior_group="spatial_mix", predictor=True,
         meaning="share of the BYM2 effects' variance that is spatially structured"),
    dict(name="spatial_phi", role="per_row", predictor=True,
         meaning="scaled ICAR component per node (never stored)"),
    dict(name="spatial_phi_free", role="per_row", predictor=True,
         meaning="the sampled vector whose projection onto the sum-to-zero constraints is spatial_phi"),
    dict(name="spatial_theta", role="per_row", predictor=True,
         meaning="unstructured component per node (never stored)"),
)
"""The term's rows of :data:`hierarchy.likelihood.parameters.TABLE` (as keyword arguments of its Parameter)."""

SITES = ("spatial_phi_free", "spatial_theta")
"""The per-node sampled sites (length ``graph.n``), which the sampler does not keep (2 x 32,844 values
per draw nationally: with them a national fit peaked at 19.5 GiB)."""


def constraint_sets(graph) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """The sum-to-zero constraints of ``phi``: one kind per connected part and, when the design set
    ``graph.group``, one per LA. Each kind as ``(segment of each node, node in a constraint (0/1), weight
    of each segment)``: weight ``1 / (0.001 m)`` (the soft form's, :data:`SUM_TO_ZERO_SD`) for a segment of
    ``m >= 1`` constrained nodes (nodes with neighbours and a group), 0 for an empty one."""
    single = np.asarray(graph.singletons)
    out = []
    for ids in (graph.component, getattr(graph, "group", None)):
        if ids is None or not len(single):
            continue
        ids = np.asarray(ids, dtype=np.int64)
        seg = np.where(ids < 0, ids.max() + 1, ids)  # nodes without a group: a segment of their own
        mask = (~single & (ids >= 0)).astype(float)
        size = np.bincount(seg, mask, int(seg.max()) + 1)
        weight = np.where(size > 0, 1.0 / (SUM_TO_ZERO_SD * np.maximum(size, 1.0)), 0.0)
        out.append((seg, mask, weight))
    return tuple(out)


def projection(graph, sets=None) -> tuple:
    """What :func:`project` needs: ``(cells, kinds, ginv)``.

    ``kinds`` are the constraint kinds of :func:`constraint_sets` as ``(segment, mask, offset)`` and
    ``ginv`` the pseudo-inverse of ``A A^T`` for the constraint matrix ``A`` (one row per segment of each
    kind; rows may repeat, e.g. an LA that is a whole island). ``cells`` is ``(cell, mask, 1 / size)`` for
    the partition of the constrained nodes by LA and connected part when its zero-sum space is the same
    (every kind constrains the same nodes, so each LA's or part's sum is a sum of cell sums; the spaces are
    then equal when their dimensions are, as on the England map, where every island lies in one LA), else
    None.
    The projection is then each cell's mean taken out, cheaper per gradient than the general form
    (national map: 0.30 against 0.42 ms, bench/spatial_cost.py)."""
    sets = constraint_sets(graph) if sets is None else sets
    sizes = [len(w) for _, _, w in sets]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    gram = np.zeros((offsets[-1], offsets[-1]))
    for a, (seg_a, mask_a, _) in enumerate(sets):
        for b, (seg_b, mask_b, _) in enumerate(sets):
            np.add.at(gram, (offsets[a] + seg_a, offsets[b] + seg_b), mask_a * mask_b)
    kinds = tuple((seg, mask, int(o)) for (seg, mask, _), o in zip(sets, offsets, strict=False))
    cells = None
    if sets and all(np.array_equal(m, sets[0][1]) for _, m, _ in sets):
        mask = sets[0][1]
        key = np.stack([seg for seg, _, _ in sets], axis=1)
        _, cell = np.unique(key, axis=0, return_inverse=True)
        cell = cell.ravel()
        size = np.bincount(cell, mask)
        if (size > 0).sum() == np.linalg.matrix_rank(gram, hermitian=True):
            cells = (cell, mask, np.where(size > 0, 1.0 / np.maximum(size, 1.0), 0.0))
    return cells, kinds, np.linalg.pinv(gram, hermitian=True)


def project(x, proj: tuple, xp) -> Any:
    """``x`` (n,) projected onto the vectors whose constrained sums are all 0 (see module docstring)."""
    cells, kinds, ginv = proj
    if cells is not None:  # a partition: each cell's mean out
        cell, mask, inv_size = cells
        return x - mask * (_segment_sum(x * mask, cell, len(inv_size), xp) * inv_size)[cell]
    if not kinds:
        return x
    sums = xp.concatenate([_segment_sum(x * mask, seg, int(seg.max()) + 1, xp)
                           for seg, mask, _ in kinds])
    t = xp.dot(ginv, sums) if getattr(xp, "__name__", "").startswith("pytensor") else ginv @ sums
    out = x
    for seg, mask, offset in kinds:
        out = out - mask * t[offset + seg]
    return out


def free_logp(x, graph, xp, proj=None) -> Any:
    """Log density of the free vector ``x`` (n,), up to a constant: the ICAR of ``phi = P x`` on the
    graph's edges, ``N(0, 1)`` for the part of ``x`` that :func:`project` removes and for each node
    without neighbours. Returns ``(log density, phi)``."""
    proj = projection(graph) if proj is None else proj
    phi = project(x, proj, xp)
    edges = np.asarray(graph.edges)
    out = -0.5 * xp.sum((phi[edges[:, 0]] - phi[edges[:, 1]]) ** 2) if len(edges) else 0.0
    out = out - 0.5 * xp.sum((x - phi) ** 2)
    single = np.flatnonzero(graph.singletons)
    if len(single):
        out = out - 0.5 * xp.sum(phi[single] ** 2)
    return out, phi


def _segment_sum(x, seg: np.ndarray, k: int, xp) -> Any:
    """Sums of ``x`` over segments ``seg`` (numpy, JAX or PyTensor)."""
    name = getattr(xp, "__name__", "")
    if name.startswith("jax"):
        return xp.zeros(k, dtype=x.dtype).at[seg].add(x)
    if name.startswith("pytensor"):
        return xp.inc_subtensor(xp.zeros(k)[seg], x)
    return np.bincount(seg, x, k)


def effect(p: dict, scale, xp) -> Any:
    """``s`` per node (see module docstring) from ``p``'s ``spatial_{sd,mix,phi,theta}`` and ``scale`` (n,)."""
    mix = p["spatial_mix"]
    return p["spatial_sd"] * (xp.sqrt(mix / scale) * p["spatial_phi"] + xp.sqrt(1.0 - mix) * p["spatial_theta"])


def row_effect(spatial_rows, p: dict, xp) -> Any:
    """The term's contribution to each row's linear predictor: ``s[node_index]``; ``spatial_rows`` is
    ``(node_index, scale[, projection])`` (node index in any row shape, the graph's per-node scale, and
    the :func:`projection` that gives ``spatial_phi`` from the sampled ``spatial_phi_free`` when ``p``
    holds the sampler's site rather than the field)."""
    node_index, scale, *proj = spatial_rows
    if "spatial_phi" not in p:
        if not proj:
            raise ValueError("spatial_phi_free needs the projection: rows['spatial'] from rows_of(design)")
        p = {**p, "spatial_phi": project(p["spatial_phi_free"], proj[0], xp)}
    return effect(p, scale, xp)[node_index]


def rows_of(design) -> tuple | None:
    """The predictor's ``rows["spatial"]`` of a design: ``(node_index, scale, projection)``, or None
    without the term."""
    if getattr(design, "graph", None) is None:
        return None
    return design.node_index, np.asarray(design.graph.scale, dtype=float), projection(design.graph)


def numpyro_sites(priors, graph) -> dict:
    """Sample the term's NumPyro sites (inside a model) and return them by name."""
    import numpyro
    import numpyro.distributions as nd

    n = graph.n
    dist = _icar_distribution()(graph)
    return {"spatial_sd": numpyro.sample("spatial_sd", priors["spatial_sd"].numpyro()),
            "spatial_mix": numpyro.sample("spatial_mix", priors["spatial_mix"].numpyro()),
            "spatial_phi": dist.phi(numpyro.sample("spatial_phi_free", dist)),
            "spatial_theta": numpyro.sample("spatial_theta", nd.Normal(0.0, 1.0).expand([n]).to_event(1))}


def pymc_sites(priors, graph) -> dict:
    """The same variables in a PyMC model (inside its context): the free vector flat with
    :func:`free_logp` as a potential (PyMC's ``pm.ICAR`` takes a dense n x n adjacency matrix and one
    global sum-to-zero; the England graph has 32,844 nodes and 7 parts), so the density equals NumPyro's."""
    import pymc as pm
    import pytensor.tensor as pt

    n = graph.n
    p = {"spatial_sd": priors["spatial_sd"].pymc("spatial_sd"),
         "spatial_mix": priors["spatial_mix"].pymc("spatial_mix"),
         "spatial_theta": pm.Normal("spatial_theta", 0.0, 1.0, shape=n)}
    logp, p["spatial_phi"] = free_logp(pm.Flat("spatial_phi_free", shape=n), graph, pt)
    pm.Potential("spatial_icar", logp)
    return p


@functools.cache
def _icar_distribution():
    """A NumPyro distribution class for the free vector ``x`` whose projection is ``phi``
    (:meth:`phi`): :func:`free_logp` as its density, and exact draws (``phi`` by conjugate gradients on
    the sparse precision of :func:`_precision_matvec`, projected; plus a standard normal draw of the removed
    part), so prior predictive checks and simulation-based calibration can draw it."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as nd

    class ICAR(nd.Distribution):
        support = nd.constraints.real_vector

        def __init__(self, graph):
            self.graph, self.sets = graph, constraint_sets(graph)
            self.proj = projection(graph, self.sets)
            super().__init__(batch_shape=(), event_shape=(graph.n,))

        def phi(self, x):
            """The field ``phi`` of a free vector ``x`` (its last axis)."""
            return jnp.vectorize(lambda v: project(v, self.proj, jnp), signature="(n)->(n)")(x)

        def log_prob(self, value):
            return jnp.vectorize(lambda v: free_logp(v, self.graph, jnp, self.proj)[0],
                                 signature="(n)->()")(value)

        def sample(self, key, sample_shape=()):
            def draw(k):
                k1, k2 = jax.random.split(k)
                e = jax.random.normal(k2, (self.graph.n,))
                phi = project(_draw_jax(self.graph, self.sets, k1), self.proj, jnp)
                return phi + e - project(e, self.proj, jnp)

            keys = jax.random.split(key, int(np.prod(sample_shape)) or 1)
            return jax.vmap(draw)(keys).reshape(tuple(sample_shape) + (self.graph.n,))

    return ICAR


def _precision_matvec(graph, sets):
    """``x -> Q x`` for the ICAR's precision Q with the constraints soft (graph Laplacian, the rank-one soft
    constraints, the identity on singletons), in JAX."""
    import jax.numpy as jnp

    edges = np.asarray(graph.edges)
    i, j = jnp.asarray(edges[:, 0]), jnp.asarray(edges[:, 1])
    single = jnp.asarray(graph.singletons, dtype=float)
    n = graph.n

    def matvec(x):
        d = x[i] - x[j]
        out = jnp.zeros(n).at[i].add(d).at[j].add(-d) + single * x
        for seg, mask, weight in sets:
            sums = _segment_sum(x * mask, seg, len(weight), jnp)
            out = out + mask * (weight ** 2 * sums)[seg]
        return out

    return matvec, (i, j, single)


def _draw_jax(graph, sets, key):
    """One exact draw of ``phi``: ``b ~ N(0, Q)`` from the edges (incidence^T e) and the constraints'
    rows, then ``Q x = b``."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.sparse.linalg import cg

    matvec, (i, j, single) = _precision_matvec(graph, sets)
    keys = jax.random.split(key, 2 + len(sets))
    e = jax.random.normal(keys[0], (len(graph.edges),))
    b = jnp.zeros(graph.n).at[i].add(e).at[j].add(-e) + single * jax.random.normal(keys[1], (graph.n,))
    for k, (seg, mask, weight) in zip(keys[2:], sets, strict=True):
        b = b + mask * (weight * jax.random.normal(k, (len(weight),)))[seg]
    tol = 1e-10 if b.dtype == jnp.float64 else 1e-5  # float32 cannot reach 1e-10: it would run to maxiter
    x, _ = cg(matvec, b, tol=tol, maxiter=min(20 * graph.n, 50_000))
    return x


def draw_latents(graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One prior draw of ``spatial_phi`` and ``spatial_theta`` (numpy, exact): ``phi`` has covariance
    the pseudo-inverse of each part's graph Laplacian (a hard sum-to-zero), N(0, 1) on singletons, by sparse
    solves, one per part with one node held at 0; with LAs set (``graph.group``) it is then conditioned on
    each LA's sum being 0 too (:func:`hierarchy.data.geography.condition_on_groups`), the law the model's
    :func:`project` gives."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    from hierarchy.data.geography import condition_on_groups

    n, edges = graph.n, np.asarray(graph.edges)
    e = rng.standard_normal(len(edges))
    b = np.bincount(edges[:, 0], e, n) - np.bincount(edges[:, 1], e, n) if len(edges) else np.zeros(n)
    rows = np.concatenate([edges[:, 0], edges[:, 1], edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0], edges[:, 0], edges[:, 1]])
    vals = np.concatenate([-np.ones(2 * len(edges)), np.ones(2 * len(edges))])
    lap = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    phi = rng.standard_normal(n)  # singletons keep theirs
    single = np.asarray(graph.singletons)
    for c in np.unique(np.asarray(graph.component)[~single]):
        nodes = np.flatnonzero((np.asarray(graph.component) == c) & ~single)
        free = nodes[1:]
        x = np.zeros(len(nodes))
        x[1:] = np.atleast_1d(spsolve(lap[free][:, free].tocsc(), b[free]))
        phi[nodes] = x - x.mean()
    return {"spatial_phi": condition_on_groups(graph, phi[None])[0], "spatial_theta": rng.standard_normal(n)}

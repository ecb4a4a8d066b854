"""The BYM2 neighbourhood effect, ``+ car(neighbourhood)`` in a formula: everything about the term in one place.

For node k of the neighbourhood graph (:class:`hierarchy.data.geography.Graph`; several rows may share
a node: neighbourhood x stratum, stacked stages, years)::

    s_k = spatial_sd * (sqrt(spatial_mix / scale_k) * phi_k + sqrt(1 - spatial_mix) * theta_k)

``theta ~ N(0, 1)`` iid; ``phi`` an intrinsic CAR on the graph's edges,
``log p(phi) = -0.5 sum_edges (phi_i - phi_j)^2``, with a soft sum-to-zero per connected part
(``sum(phi in part) ~ N(0, 0.001 m_part)``) and, in a design (which sets each node's LA), the same per LA:
the LA effects carry each LA's level and ``phi`` the structure within and across LAs (without it the LA
intercepts and the field's LA means trade off and the LA effects do not mix: R-hat 1.55 on 8 LAs of 256
lattice nodes, 1.07 with it); ``phi_k ~ N(0, 1)`` for a node without neighbours
(scale 1: an island is unstructured only, Freni-Sterrantino, Ventrucci & Rue 2018). ``scale_k``, the
geometric mean of the marginal variances of the node's part, makes ``spatial_sd`` the SD of the effect
whatever the graph (Riebler et al. 2016). ``s`` is added to the one linear predictor of every row
(:func:`hierarchy.likelihood.predictor.row_terms`), so every family, stratum, stage and year has it.

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
"""SD of each connected part's sum of ``phi`` per node of the part (the soft constraint)."""

PARAMETERS: tuple[dict[str, Any], ...] = (
    dict(name="spatial_sd", role="hyper", prior_group="spatial_sd", predictor=True,
         meaning="SD of the BYM2 neighbourhood effects"),
    dict(name="spatial_mix", role="hyper", prior_group="spatial_mix", predictor=True,
         meaning="share of the BYM2 effects' variance that is spatially structured"),
    dict(name="spatial_phi", role="per_row", predictor=True,
         meaning="scaled ICAR component per node (never stored)"),
    dict(name="spatial_theta", role="per_row", predictor=True,
         meaning="unstructured component per node (never stored)"),
)
"""The term's rows of :data:`hierarchy.likelihood.parameters.TABLE` (as keyword arguments of its Parameter)."""

LATENT = ("spatial_phi", "spatial_theta")
"""The per-node arrays (length ``graph.n``)."""


def constraint_sets(graph) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """The soft sum-to-zero constraints of ``phi``: one kind per connected part and, when the design set
    ``graph.group``, one per LA. Each kind as ``(segment of each node, node in a constraint (0/1), weight
    of each segment)``: weight ``1 / (0.001 m)`` for a segment of ``m >= 1`` constrained nodes (nodes with
    neighbours and a group), 0 otherwise."""
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


def _segment_sum(x, seg: np.ndarray, k: int, xp) -> Any:
    """Sums of ``x`` over segments ``seg`` (numpy, JAX or PyTensor)."""
    name = getattr(xp, "__name__", "")
    if name.startswith("jax"):
        return xp.zeros(k, dtype=x.dtype).at[seg].add(x)
    if name.startswith("pytensor"):
        return xp.inc_subtensor(xp.zeros(k)[seg], x)
    return np.bincount(seg, x, k)


def icar_logp(phi, graph, xp, sets=None) -> Any:
    """Log density of ``phi`` (n,): the ICAR on the graph's edges, the soft sum-to-zero constraints
    (:func:`constraint_sets`) and ``N(0, 1)`` for each node without neighbours, normalising constants of
    the normals included.

    Examples
    --------
    >>> import numpy as np
    >>> from hierarchy.data.geography import Graph
    >>> g = Graph(codes=np.array(["a", "b"]), edges=np.array([[0, 1]]), component=np.zeros(2, int),
    ...           scale=np.ones(2), source="hand")
    >>> round(float(icar_logp(np.array([0.5, -0.5]), g, np)), 3)  # -0.5 * 1^2 + log N(0 | 0, 0.002)
    4.796
    """
    sets = constraint_sets(graph) if sets is None else sets
    edges = np.asarray(graph.edges)
    out = -0.5 * xp.sum((phi[edges[:, 0]] - phi[edges[:, 1]]) ** 2) if len(edges) else 0.0
    for seg, mask, weight in sets:
        on = weight > 0
        sums = _segment_sum(phi * mask, seg, len(weight), xp)
        constant = float(np.sum(-np.log(weight[on])) + 0.5 * on.sum() * np.log(2 * np.pi))
        out = out - 0.5 * xp.sum((sums * weight) ** 2) - constant
    single = np.flatnonzero(graph.singletons)
    if len(single):
        out = out - 0.5 * xp.sum(phi[single] ** 2) - 0.5 * len(single) * float(np.log(2 * np.pi))
    return out


def effect(p: dict, scale, xp) -> Any:
    """``s`` per node (see module docstring) from ``p``'s ``spatial_{sd,mix,phi,theta}`` and ``scale`` (n,)."""
    mix = p["spatial_mix"]
    return p["spatial_sd"] * (xp.sqrt(mix / scale) * p["spatial_phi"] + xp.sqrt(1.0 - mix) * p["spatial_theta"])


def row_effect(spatial_rows, p: dict, xp) -> Any:
    """The term's contribution to each row's linear predictor: ``s[node_index]``; ``spatial_rows`` is
    ``(node_index, scale)`` (node index in any row shape, the graph's per-node scale)."""
    node_index, scale = spatial_rows
    return effect(p, scale, xp)[node_index]


def rows_of(design) -> tuple[np.ndarray, np.ndarray] | None:
    """The predictor's ``rows["spatial"]`` of a design: ``(node_index, scale)``, or None without the term."""
    if getattr(design, "graph", None) is None:
        return None
    return design.node_index, np.asarray(design.graph.scale, dtype=float)


def numpyro_sites(priors, graph) -> dict:
    """Sample the term's NumPyro sites (inside a model) and return them by name."""
    import numpyro
    import numpyro.distributions as nd

    n = graph.n
    return {"spatial_sd": numpyro.sample("spatial_sd", priors["spatial_sd"].numpyro()),
            "spatial_mix": numpyro.sample("spatial_mix", priors["spatial_mix"].numpyro()),
            "spatial_phi": numpyro.sample("spatial_phi", _icar_distribution()(graph)),
            "spatial_theta": numpyro.sample("spatial_theta", nd.Normal(0.0, 1.0).expand([n]).to_event(1))}


def pymc_sites(priors, graph) -> dict:
    """The same variables in a PyMC model (inside its context): ``phi`` flat with the ICAR as a potential
    (PyMC's ``pm.ICAR`` takes a dense n x n adjacency matrix and one global sum-to-zero; the England graph
    has 32,844 nodes and 7 parts), so the density equals NumPyro's."""
    import pymc as pm
    import pytensor.tensor as pt

    n = graph.n
    p = {"spatial_sd": priors["spatial_sd"].pymc("spatial_sd"),
         "spatial_mix": priors["spatial_mix"].pymc("spatial_mix"),
         "spatial_phi": pm.Flat("spatial_phi", shape=n),
         "spatial_theta": pm.Normal("spatial_theta", 0.0, 1.0, shape=n)}
    pm.Potential("spatial_icar", icar_logp(p["spatial_phi"], graph, pt))
    return p


@functools.cache
def _icar_distribution():
    """A NumPyro distribution class for ``phi``: :func:`icar_logp` as its density and exact draws from
    the proper Gaussian it defines (conjugate gradients on its sparse precision), so prior predictive
    checks and simulation-based calibration can draw it."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as nd

    class ICAR(nd.Distribution):
        support = nd.constraints.real_vector

        def __init__(self, graph):
            self.graph, self.sets = graph, constraint_sets(graph)
            super().__init__(batch_shape=(), event_shape=(graph.n,))

        def log_prob(self, value):
            return icar_logp(value, self.graph, jnp, self.sets)

        def sample(self, key, sample_shape=()):
            draw = functools.partial(_draw_jax, self.graph, self.sets)
            keys = jax.random.split(key, int(np.prod(sample_shape)) or 1)
            out = jax.vmap(draw)(keys)
            return out.reshape(tuple(sample_shape) + (self.graph.n,))

    return ICAR


def _precision_matvec(graph, sets):
    """``x -> Q x`` for the precision Q of :func:`icar_logp` (graph Laplacian, the rank-one soft
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
    the pseudo-inverse of each part's graph Laplacian (a hard sum-to-zero, to which the soft one is
    within 0.1%), N(0, 1) on singletons. Sparse solves, one per part with one node held at 0; with LAs set
    (``graph.group``) each LA's mean is then taken out, a projection close to (not exactly) the soft prior."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

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
    group = getattr(graph, "group", None)
    if group is not None:  # each LA's sum at 0 too: its mean taken out (a projection, close to the soft prior)
        on = ~single & (np.asarray(group) >= 0)
        g = np.asarray(group)[on]
        phi[on] -= (np.bincount(g, phi[on]) / np.maximum(np.bincount(g), 1))[g]
    return {"spatial_phi": phi, "spatial_theta": rng.standard_normal(n)}

"""Laplace maximum likelihood of a NumPyro latent Gaussian model (the classical GLMM check).

What glmmTMB, TMB and lme4 (``nAGQ = 1``) do, for any NumPyro model whose sites are named:

- the objective is the log density of the **observed** sites (``obs=``, ``numpyro.factor``) and the
  **latent** sites only: the hyperparameters carry no prior (their own sites' log densities are left
  out), so its maximum is the maximum likelihood estimate, not a posterior mode;
- the latent sites (real-valued group effects, e.g. the LA intercepts and trends) are integrated out by a
  Laplace approximation, ``log p(y | theta) ~ f(x_hat, theta) + n/2 log 2 pi - 1/2 log det(-H)``, with
  ``x_hat(theta)`` found by Newton's method on the dense Hessian ``H = d2 f / dx2`` with a backtracking
  line search. ``H`` is assembled from one Hessian-vector product per colour of its sparsity pattern
  (read off column by column once, at two random points; Curtis-Powell-Reid compression): for LA blocks of
  two effects that is two products instead of one per latent value, the same matrix ``jax.hessian`` gives;
- the marginal is maximised over the unconstrained hyperparameters (each site's support bijection:
  ``log`` of an SD, the Cholesky-correlation angles, ...) by L-BFGS (``scipy.optimize``). Its gradient
  is exact at a converged mode by the implicit function theorem, computed as in
  :mod:`hierarchy.inference.laplace`: Newton runs on plain values, then **one** Newton step from the
  converged mode is differentiated, whose derivative is ``d x_hat / d theta = -H^-1 d2 f / dx dtheta``;
  nothing is differentiated through the Newton loop;
- standard errors: the Hessian of the negative log marginal at the optimum by central differences of
  that gradient (as TMB's ``sdreport`` does with ``optimHess``), inverted, and carried to the reported
  scale (SDs, correlations, dispersion, any function of the hyperparameters) by the delta method.

A site that is neither observed, latent nor a hyperparameter must be named in ``unused``: it is held at
its initial value and its log density left out (e.g. the SD of effects that are treated as fixed here).
The model's array arguments go into the compiled programs as arguments, so data sets of one shape (the
panel's measures) share a compile, and JAX's persistent compilation cache where it is on. The supports of
the hyperparameter sites must not depend on other sites (they are read once, while tracing).

Measured (``python bench/ml_panel_real.py``, real DfE panel, referrals, ``panel_stages_nb``): the reference
glmmTMB-style figures to within 0.1 SE; 40-70 s on 2 shared cores, most of it compiling, 13-17 s for a
further measure of the same shape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

__all__ = ["MLResult", "fit_ml", "laplace_ml"]

NEWTON_TOL = 1e-12
"""Inner Newton stops when the Newton decrement ``g' (-H)^-1 g`` (log density units) is below this."""
MAX_NEWTON = 100
FLAT_SE = 3.0
"""A hyperparameter whose standard error on the unconstrained scale (log SD, ...) is above this is not
pinned down by the data: the fit is reported as singular, not converged."""
FD_STEP = 1e-4
"""Central-difference step (unconstrained scale, relative above 1) of the Hessian at the optimum."""


@dataclass(frozen=True)
class MLResult:
    """A Laplace maximum likelihood fit.

    ``estimates`` and ``se`` are on the reported scale (constrained hyperparameters and the ``reported``
    functions); ``latent`` holds the conditional modes of the latent sites at the optimum; ``hessian``
    is that of the negative log marginal in the unconstrained hyperparameters, ``cov`` its inverse.
    """

    estimates: dict[str, np.ndarray]
    se: dict[str, np.ndarray]
    latent: dict[str, np.ndarray]
    log_marginal: float
    unconstrained: np.ndarray
    hessian: np.ndarray
    cov: np.ndarray
    converged: bool
    message: str
    evaluations: int
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def table(self) -> pd.DataFrame:
        """One row per scalar: ``parameter`` (``name`` or ``name[i]``), ``estimate``, ``se``."""
        rows = []
        for name, value in self.estimates.items():
            flat, se = np.ravel(value), np.ravel(self.se[name])
            for i, (v, s) in enumerate(zip(flat, se, strict=True)):
                label = name if np.ndim(value) == 0 else f"{name}[{i}]"
                rows.append({"parameter": label, "estimate": float(v), "se": float(s)})
        return pd.DataFrame(rows)


def _trace(model, args, kwargs, values: Mapping, seed: int = 0, substitute_fn=None):
    from numpyro import handlers

    m = handlers.seed(model, seed)
    m = handlers.substitute(m, data=dict(values)) if substitute_fn is None else handlers.substitute(
        m, substitute_fn=substitute_fn)
    return handlers.trace(m).get_trace(*args, **kwargs)


def _site_log_prob(site):
    import jax.numpy as jnp

    fn, value = site["fn"], site["value"]
    lp = fn.log_prob(value, site["intermediates"]) if site["intermediates"] else fn.log_prob(value)
    if site["scale"] is not None:
        lp = site["scale"] * lp
    return jnp.sum(lp)


def _check_sites(trace, latent: Sequence[str], hyper: Sequence[str], unused: Sequence[str]) -> None:
    """Every free sample site named once; latent sites real-valued; clear errors otherwise."""
    from numpyro.distributions import constraints

    free = [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]
    named = list(latent) + list(hyper) + list(unused)
    if dup := sorted({n for n in named if named.count(n) > 1}):
        raise HierarchyError(f"laplace_ml: sites {dup} named twice among latent, hyper and unused; name each once")
    if missing := [n for n in named if n not in free]:
        raise HierarchyError(f"laplace_ml: {missing} are not free sample sites of the model (free sites: {free}); "
                             "fix the site names")
    if left := [n for n in free if n not in named]:
        raise HierarchyError(f"laplace_ml: sample sites {left} are neither latent, hyper nor unused; name each in "
                             "one of the three")
    for n in latent:
        support = trace[n]["support"]
        base = getattr(support, "base_constraint", support)
        if base is not constraints.real:
            raise HierarchyError(f"laplace_ml: latent site {n!r} has support {support}; the Laplace approximation "
                                 "here needs real-valued latent sites (use a centred Gaussian group effect)")


@dataclass(frozen=True)
class _Packing:
    """Flatten and unflatten named sites; hyperparameters through their support bijections."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    transforms: tuple = ()

    def unpack(self, flat) -> dict:
        out, k = {}, 0
        for i, (name, shape, size) in enumerate(zip(self.names, self.shapes, self.sizes, strict=True)):
            part = flat[k:k + size]
            k += size
            if self.transforms:
                t = self.transforms[i]
                out[name] = t(part.reshape(t.inverse_shape(shape)) if shape else part[0])
            else:
                out[name] = part.reshape(shape)
        return out


def _packing(trace, names: Sequence[str], constrained: bool):
    import jax.numpy as jnp
    from numpyro.distributions.transforms import biject_to

    shapes, sizes, transforms, flats = [], [], [], []
    for n in names:
        value = jnp.asarray(trace[n]["value"])
        if constrained:
            t = biject_to(trace[n]["support"])
            u = jnp.ravel(t.inv(value))
            transforms.append(t)
        else:
            u = jnp.ravel(value)
        shapes.append(tuple(value.shape))
        sizes.append(int(u.size))
        flats.append(u)
    pack = _Packing(tuple(names), tuple(shapes), tuple(sizes), tuple(transforms))
    return pack, jnp.concatenate(flats) if flats else jnp.zeros(0)


def _data(args: tuple, kwargs: dict) -> tuple[tuple, Callable]:
    """The array arguments (passed to the compiled programs as arguments, not baked in as constants, so
    that data sets of one shape share a compile and the persistent compilation cache) and a function
    that puts them back: ``rebuild(data) -> (args, kwargs)``."""
    import jax.numpy as jnp

    keys = sorted(kwargs)
    flat = [*args, *(kwargs[k] for k in keys)]
    dynamic = [i for i, a in enumerate(flat) if hasattr(a, "shape") and hasattr(a, "dtype") and np.ndim(a) > 0]

    def rebuild(data):
        items = list(flat)
        for i, d in zip(dynamic, data, strict=True):
            items[i] = d
        return tuple(items[:len(args)]), dict(zip(keys, items[len(args):], strict=True))

    return tuple(jnp.asarray(flat[i]) for i in dynamic), rebuild


def _log_joint_fn(model, rebuild: Callable, latent: Sequence[str], lat: _Packing, hyp: _Packing, held: Mapping):
    """``f(x, u, data)``: log density of the observed and latent sites at latent ``x``, hyperparameters
    ``u``."""
    keep = set(latent)

    def f(x, u, data):
        values = {**held, **hyp.unpack(u), **lat.unpack(x)}
        args, kwargs = rebuild(data)
        trace = _trace(model, args, kwargs, values)
        total = 0.0
        for name, site in trace.items():
            if site["type"] == "sample" and (site["is_observed"] or name in keep):
                total = total + _site_log_prob(site)
        return total

    return f


def _newton_step(g: np.ndarray, h: np.ndarray) -> np.ndarray | None:
    """``(-h)^-1 g`` by Cholesky; where ``-h`` is not positive definite, by its eigenvalues floored at a
    small positive value (a step that still ascends); None if nothing finite comes out."""
    neg = -h
    try:
        c = np.linalg.cholesky(neg)
        step = np.linalg.solve(c.T, np.linalg.solve(c, g))
    except np.linalg.LinAlgError:
        try:
            lam, vec = np.linalg.eigh(neg)
        except np.linalg.LinAlgError:
            return None
        floor = 1e-8 * max(float(np.max(np.abs(lam))), 1.0)
        step = vec @ ((vec.T @ g) / np.maximum(lam, floor))
    return step if np.all(np.isfinite(step)) else None


def _newton(fns, x, u, tol: float = NEWTON_TOL, max_iter: int = MAX_NEWTON):
    """Maximise ``f(., u)`` from ``x``: damped Newton with backtracking; returns (x, converged)."""
    f_only, grad_hess = fns
    fx = float(f_only(x, u))
    if not np.isfinite(fx):
        return x, False
    for _ in range(max_iter):
        g, h = (np.asarray(a) for a in grad_hess(x, u))
        step = _newton_step(g, h) if np.all(np.isfinite(g)) and np.all(np.isfinite(h)) else None
        if step is None:
            return x, False
        decrement = float(g @ step)
        if decrement < tol:
            return x, True
        t = 1.0
        while t > 1e-12:
            cand = x + t * step
            fc = float(f_only(cand, u))
            if np.isfinite(fc) and fc >= fx + 1e-4 * t * decrement:
                break
            t /= 2
        else:
            return x, decrement < 1e-6  # no ascent left at machine precision
        x, fx = cand, fc
    return x, False


def _colouring(pattern: np.ndarray) -> np.ndarray:
    """Greedy colouring of the columns of a symmetric sparsity pattern such that no row has nonzeros in
    two columns of one colour (structurally orthogonal: Curtis, Powell and Reid 1974)."""
    p = pattern.astype(np.int64)
    conflict = (p.T @ p) > 0
    colours = np.full(len(p), -1)
    for j in range(len(p)):
        used = set(colours[conflict[j] & (colours >= 0)].tolist())
        colours[j] = next(c for c in range(len(p)) if c not in used)
    return colours


def _sparse_hessian(f, x0, u0, data, seed: int = 0):
    """``hess(x, u)``: the dense Hessian of ``f`` in ``x`` from one Hessian-vector product per colour of
    its sparsity pattern (read off the full Hessian at two random points near ``x0``): two products for
    LA blocks of two effects, instead of one per latent value."""
    import jax
    import jax.numpy as jnp

    grad_x = jax.grad(f, argnums=0)
    hvp = jax.jit(lambda x, u, v, data: jax.jvp(lambda xx: grad_x(xx, u, data), (x,), (v,))[1])
    rng = np.random.default_rng(seed)
    n = len(x0)
    pattern = np.eye(n, dtype=bool)
    for _ in range(2):
        x = jnp.asarray(x0) + 0.1 * rng.standard_normal(n)
        for j in range(n):  # column j of the Hessian
            col = np.asarray(hvp(x, u0, jnp.asarray(np.eye(1, n, j)[0]), data))
            pattern[:, j] |= (col != 0) | ~np.isfinite(col)
    pattern |= pattern.T
    colours = _colouring(pattern)
    seeds = jnp.asarray(np.eye(colours.max() + 1)[colours].T)    # colours x n
    cols, mask = jnp.asarray(colours), jnp.asarray(pattern)

    def hess(x, u, data):
        products = jax.vmap(lambda v: jax.jvp(lambda xx: grad_x(xx, u, data), (x,), (v,))[1])(seeds)
        return jnp.where(mask, products[cols].T, 0.0)               # H[i, j] = (H v_colour(j))[i]

    return hess, int(colours.max() + 1)


def _laplace_fns(f, hess_x, data):
    """Jitted pieces, at ``data``: ``f``, its x-gradient and Hessian, and the negative Laplace log marginal
    at ``u`` after one differentiated Newton step from ``x0`` (its u-gradient is the IFT gradient at a
    mode)."""
    import jax
    import jax.numpy as jnp

    grad_x = jax.grad(f, argnums=0)

    def neg_marginal(u, x0, data):
        x0 = jax.lax.stop_gradient(x0)
        h0 = jax.lax.stop_gradient(hess_x(x0, u, data))  # its derivative multiplies grad_x(x0) = 0
        x1 = x0 + jnp.linalg.solve(-h0, grad_x(x0, u, data))
        _sign, logdet = jnp.linalg.slogdet(-hess_x(x1, u, data))
        n = x0.shape[0]
        return -(f(x1, u, data) + 0.5 * n * math.log(2 * math.pi) - 0.5 * logdet)

    f_only = jax.jit(f)
    grad_hess = jax.jit(lambda x, u, data: (grad_x(x, u, data), hess_x(x, u, data)))
    value_grad = jax.jit(jax.value_and_grad(neg_marginal, argnums=0))
    return ((lambda x, u: f_only(x, u, data)), (lambda x, u: grad_hess(x, u, data))), (
        lambda u, x: value_grad(u, x, data))


def _initial(model, data: tuple, rebuild: Callable, init: Mapping | None, seed: int) -> dict[str, dict]:
    """Each sample site's ``type``, ``is_observed``, ``support`` and initial ``value`` (free sites): ``init``
    where given, prior means elsewhere (medians of prior draws where a distribution has no mean); the
    values from one compiled run of the model (a plain run compiles every operation on its own)."""
    import jax
    from numpyro.infer.initialization import init_to_mean

    given, mean, sites = dict(init or {}), init_to_mean(), {}

    def value(site):
        return given[site["name"]] if site["name"] in given else mean(site)

    def values(data):
        args, kwargs = rebuild(data)
        trace = _trace(model, args, kwargs, {}, seed=seed, substitute_fn=value)
        sites.clear()
        sites.update({n: {"type": s["type"], "is_observed": s["is_observed"], "support": s["fn"].support}
                      for n, s in trace.items() if s["type"] == "sample"})
        return {n: s["value"] for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}

    for name, v in jax.jit(values)(data).items():
        sites[name]["value"] = v
    return sites


def laplace_ml(model: Callable, *args, latent: Sequence[str], hyper: Sequence[str], unused: Sequence[str] = (),
               reported: Mapping[str, Callable] | None = None, init: Mapping | None = None, seed: int = 0,
               max_iter: int = 500, **kwargs) -> MLResult:
    """Laplace maximum likelihood estimates and standard errors of a NumPyro model.

    Parameters
    ----------
    model : callable
        NumPyro model; called as ``model(*args, **kwargs)``.
    latent : sequence of str
        Real-valued sample sites integrated out by the Laplace approximation (group effects).
    hyper : sequence of str
        Sample sites estimated by maximum likelihood (fixed effects, SDs, correlations, dispersion); their
        own log densities (priors) are left out of the objective.
    unused : sequence of str
        Other free sample sites: held at their initial value, their log density left out.
    reported : mapping of str to callable, optional
        Extra quantities ``fn(values) -> array`` of the constrained hyperparameters (a dict by site name),
        reported with delta-method standard errors beside the hyperparameters themselves.
    init : mapping, optional
        Initial values by site name (constrained); others start at their prior means (medians where a
        distribution has none).
    seed : int
        Seed of the prior draws behind initial medians and of the sparsity probe.
    max_iter : int
        L-BFGS iterations at most.

    Returns
    -------
    MLResult
    """
    import jax
    from threadpoolctl import threadpool_limits

    jax.config.update("jax_enable_x64", True)
    with threadpool_limits(1, user_api="blas"):  # small dense solves: BLAS threads only contend (10-50x)
        return _fit(model, args, kwargs, latent, hyper, unused, reported or {}, init, seed, max_iter)


def _fit(model, args, kwargs, latent, hyper, unused, reported, init, seed, max_iter) -> MLResult:
    """:func:`laplace_ml` (its arguments, unpacked)."""
    import jax.numpy as jnp

    start = time.perf_counter()
    data, rebuild = _data(tuple(args), dict(kwargs))
    trace0 = _initial(model, data, rebuild, init, seed)
    _check_sites(trace0, latent, hyper, unused)
    held = {n: trace0[n]["value"] for n in unused}
    lat, x0 = _packing(trace0, latent, constrained=False)
    hyp, u0 = _packing(trace0, hyper, constrained=True)
    f = _log_joint_fn(model, rebuild, latent, lat, hyp, held)
    hess_x, colours = _sparse_hessian(f, x0, u0, data, seed)
    newton_fns, value_grad = _laplace_fns(f, hess_x, data)
    state = {"x": np.asarray(x0, float), "evals": 0, "ok": True}

    def objective(u):
        u = jnp.asarray(u)
        state["evals"] += 1
        for start_x in (state["x"], x0):  # warm start; the initial values if that fails
            x, ok = _newton(newton_fns, jnp.asarray(start_x), u)
            if ok:
                break
        state["ok"] = ok
        value, grad = value_grad(u, x)
        if not ok or not np.isfinite(float(value)):
            return np.inf, np.zeros(len(u))  # the line search steps back
        state["x"] = np.asarray(x)
        return float(value), np.asarray(grad, float)

    u_hat, res, hess = _minimise(objective, np.asarray(u0, float), max_iter)
    value, grad = objective(u_hat)  # leaves the latent modes at u_hat
    x_hat, inner_ok = state["x"], state["ok"]
    converged, message, cov = _covariance(hess, grad, hyp, res)
    estimates, se = _delta(hyp, u_hat, cov, reported)
    notes = (f"latent Hessian from {colours} Hessian-vector products per evaluation",)
    notes += () if inner_ok else ("the inner Newton did not converge at the optimum",)
    return MLResult(estimates=estimates, se=se, latent={k: np.asarray(v) for k, v in lat.unpack(x_hat).items()},
                    log_marginal=-value, unconstrained=u_hat, hessian=hess, cov=cov,
                    converged=bool(converged and inner_ok), message=message, evaluations=state["evals"],
                    seconds=time.perf_counter() - start, notes=notes)


def _minimise(objective: Callable, u0: np.ndarray, max_iter: int):
    """L-BFGS (restarted where its line search gives up short of a stationary point, e.g. after a trial
    point whose inner Newton failed), then Newton steps on the finite-difference Hessian, which also
    copes with the very different curvatures of fixed effects and SDs. Returns (u, scipy result, the
    Hessian at u)."""
    from scipy.optimize import minimize

    u = u0
    for _ in range(4):
        res = minimize(objective, u, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "ftol": 1e-13, "gtol": 1e-7})
        u = res.x
        if np.max(np.abs(res.jac)) < 1e-2:
            break
    value, grad = objective(u)
    hess = None
    for _ in range(20):
        hess = _fd_hessian(lambda v: objective(v)[1], u)
        lam, vec = np.linalg.eigh(hess)
        step = -(vec @ ((vec.T @ grad) / np.maximum(np.abs(lam), 1e-8 * max(np.max(np.abs(lam)), 1.0))))
        decrement = float(-grad @ step)
        t = 1.0
        while t > 1e-6:
            v_new, g_new = objective(u + t * step)
            if v_new <= value + 1e-4 * t * (grad @ step):
                break
            t /= 2
        else:
            break
        u, value, grad = u + t * step, v_new, g_new
        if decrement < 1e-8:  # a last step this small leaves the Hessian as it was
            break
    res.x, res.fun, res.jac = u, value, grad
    return u, res, hess


def _fd_hessian(grad: Callable[[np.ndarray], np.ndarray], u: np.ndarray) -> np.ndarray:
    """Symmetrised central differences of ``grad`` at ``u``."""
    n = len(u)
    h = np.empty((n, n))
    for i in range(n):
        step = FD_STEP * max(1.0, abs(u[i]))
        e = np.zeros(n)
        e[i] = step
        h[i] = (grad(u + e) - grad(u - e)) / (2 * step)
    return (h + h.T) / 2


def _labels(hyp: _Packing) -> list[str]:
    return [n if size == 1 else f"{n}[{i}]" for n, size in zip(hyp.names, hyp.sizes, strict=True)
            for i in range(size)]


def _covariance(hess: np.ndarray, grad: np.ndarray, hyp: _Packing, res) -> tuple[bool, str, np.ndarray]:
    """Inverse Hessian; not converged (with the parameter named) where the curvature is not positive or
    the Newton decrement at the optimum is not small."""
    message = str(res.message)
    eig, vec = np.linalg.eigh(hess)
    if np.all(eig > 0):
        cov = np.linalg.inv(hess)
        decrement = float(grad @ cov @ grad)
        flat = [lab for lab, sd in zip(_labels(hyp), np.sqrt(np.diag(cov)), strict=True) if sd > FLAT_SE]
        if flat:  # e.g. an SD run to 0: a singular fit (lme4's word), its standard error meaningless
            return False, (f"a singular fit: the likelihood is flat in {flat} on the unconstrained scale "
                           f"(standard error above {FLAT_SE}; an SD at 0?)"), cov
        if decrement < 1e-6:
            return True, f"converged (Newton decrement {decrement:.1e})", cov
        return False, f"{message}; not at a maximum (Newton decrement {decrement:.2g})", cov
    if np.any(eig <= 0):
        worst = _labels(hyp)[int(np.argmax(np.abs(vec[:, int(np.argmin(eig))])))]
        message = (f"{message}; the Hessian is not positive definite (flat or boundary direction, mostly "
                   f"{worst}): standard errors are not available")
        return False, message, np.full_like(hess, np.nan)
    return False, message, np.full_like(hess, np.nan)


def _delta(hyp: _Packing, u: np.ndarray, cov: np.ndarray, reported: Mapping[str, Callable]):
    """Constrained hyperparameters and ``reported`` quantities with delta-method standard errors."""
    import jax
    import jax.numpy as jnp

    def quantities(uu):
        values = hyp.unpack(uu)
        out = {n: jnp.asarray(v) for n, v in values.items()}
        out.update({n: jnp.asarray(fn(values)) for n, fn in reported.items()})
        return out

    uj = jnp.asarray(u)
    est = jax.jit(quantities)(uj)
    jac = jax.jit(jax.jacfwd(quantities))(uj)
    estimates, se = {}, {}
    for name in (*hyp.names, *reported):  # in the order given (jit returns keys sorted)
        value = est[name]
        j = np.asarray(jac[name]).reshape(-1, len(u))
        var = np.einsum("ij,jk,ik->i", j, cov, j)
        estimates[name] = np.asarray(value)
        se[name] = np.sqrt(np.maximum(var, 0)).reshape(np.shape(value))
    return estimates, se


def fit_ml(spec, priors, design, *, seed: int = 0, max_iter: int = 500) -> MLResult:
    """Laplace maximum likelihood of a neighbourhood model: glmmTMB's estimates and standard errors.

    The model is the centred form of ``spec`` (:func:`hierarchy.inference.laplace.centred_spec`): the LA
    effects (and group effects nested in LAs) are integrated out, every other free site (fixed effects, LA
    SDs and correlation, dispersion) is estimated; their priors are left out. Models outside the Laplace
    regime (per-row effects, the spatial term) are refused with the reason. The correlation is reported
    by its off-diagonal elements only (``la_corr[i,j]``, ``i > j``).

    Raises
    ------
    HierarchyError
        ``spec`` is outside the regime (:func:`hierarchy.inference.laplace.check_supported`).
    """
    import jax
    from numpyro.handlers import seed as seeded
    from numpyro.handlers import trace

    from hierarchy.inference.laplace import centred_spec, check_supported, latent_sites
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    layout = make_layout(design)
    check_supported(spec, design, layout)
    model = model_fn(centred_spec(spec), priors, design, layout)
    data = model_data(layout, "float64")
    tr = trace(seeded(model, seed)).get_trace(data)
    free = [k for k, v in tr.items() if v["type"] == "sample" and not v.get("is_observed")]
    latent = [k for k in latent_sites(design, layout) if k in free]
    hyper = [k for k in free if k not in latent]
    reported = {}
    if "la_corr" in hyper:  # its unconstrained angles are estimated; reported by its off-diagonals
        n = int(tr["la_corr"]["value"].shape[-1])
        reported = {f"la_corr[{i},{j}]": (lambda v, i=i, j=j: v["la_corr"][i, j])
                    for i in range(n) for j in range(i)}
    res = laplace_ml(model, data, latent=latent, hyper=hyper, reported=reported, seed=seed, max_iter=max_iter)
    return replace(res, estimates={k: v for k, v in res.estimates.items() if k != "la_corr"},
                   se={k: v for k, v in res.se.items() if k != "la_corr"})

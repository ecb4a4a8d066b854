"""Embedded Laplace approximation: the LA effects marginalised, NUTS over the hyperparameters only.

For the models whose only group effects are the LA level, ``(alpha_j, beta_j) ~ MVN(m_j(theta),
Sigma(theta))`` with Poisson or negative binomial counts, the LA effects ``x_j`` given the
hyperparameters ``theta`` (fixed effects, LA SDs and correlation, dispersion, row coefficients) have a
near-Gaussian conditional posterior whose Hessian is block-diagonal by LA (DESIGN section 10). Here:

- ``x_hat(theta)``: Newton's method on every LA block at once (an ``E x E`` Hessian per LA, ``E`` the
  LA effects per LA), with a per-LA backtracking step, from one fixed start;
- the Laplace log marginal ``log p(y, theta) ~= log p(y, x_hat, theta) + (n/2) log 2 pi
  - 1/2 sum_j log det H_j``, with ``log p(y, x, theta)`` the NUTS path's own joint density (the
  project's NumPyro model, centred, run once per evaluation through NumPyro's potential energy: same
  priors, Jacobians and likelihood; its change from that point to ``x_hat`` from the per-LA terms) and
  ``H_j = Sigma^-1 + W_j``, ``Sigma`` and the LA means read off the model's own MVN site and ``W_j``
  from the model's row terms (:func:`_row_derivatives`) through the one linear predictor;
- its gradient by the implicit function theorem: the Newton iterations run on stopped gradients, and
  one more Newton step from the converged mode is differentiated, whose derivative there is the IFT
  derivative ``d x_hat / d theta = H^-1 d(grad_x log p) / d theta`` (the difference, ``d(H^-1)/d theta``
  times the gradient at the mode, vanishes at convergence); nothing differentiates through the loop;
- NUTS (NumPyro, ``potential_fn``) over the unconstrained hyperparameters, started from draws around
  their Laplace posterior mode (BFGS, with its inverse Hessian);
- the LA effects drawn from ``N(x_hat(theta), H^-1)`` for every hyperparameter draw, and every site
  and deterministic of the model computed by its own ``postprocess_fn``, so the posterior has the names
  of a centred NUTS fit (``la_coef``, ``la_sd``, ``la_corr``, ...).

Models outside the regime are refused with the reason (:func:`refusal`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec

LATENT = "la_coef"
NEWTON_TOL = 1e-6
"""Newton stops when every LA's Newton decrement ``g' H^-1 g`` (log density units) is below this; the
differentiated step that follows squares the remaining error."""
MAX_NEWTON = 50
DRAW_BATCH = 200
"""Hyperparameter draws per batch when the LA effects are drawn (memory: batch x rows)."""


def refusal(spec: ModelSpec, design: Design) -> str | None:
    """Why ``spec`` is outside the Laplace mode's regime (a sentence naming the term), or None."""
    if spec.family == "poisson_lognormal":
        return ("Poisson-lognormal row effects (family poisson_lognormal: one latent effect per row, each "
                "resting on one count) are outside the Laplace regime")
    if getattr(spec, "spatial", None):
        return ("the spatial term car(neighbourhood) (one BYM2 effect per neighbourhood) is not supported by the "
                "Laplace mode yet (only the LA level is marginalised)")
    if spec.stacked:
        return f"stacked stages ({', '.join(spec.stages)}) are not supported by the Laplace mode yet"
    if spec.strata:
        return f"strata ({', '.join(spec.strata)}) are not supported by the Laplace mode yet"
    if spec.msoa.random_intercept:
        return "the MSOA group term (1 | msoa) is not supported by the Laplace mode yet"
    if design.group_names:
        return (f"the group term(s) {', '.join(f'(1 | {g})' for g in design.group_names)} are not "
                "supported by the Laplace mode yet (only the LA level is marginalised)")
    return None


def check_supported(spec: ModelSpec, design: Design) -> None:
    """Raise :class:`HierarchyError` naming the term when ``spec`` is outside the regime."""
    why = refusal(spec, design)
    if why:
        raise HierarchyError(f"{spec.name}: method 'laplace' refused: {why}; fit it with method 'nuts' "
                             "(hierarchy fit --method nuts)")


class Prior(NamedTuple):
    """What the LA effects' conditional posterior needs from the hyperparameters (one model run)."""

    m: Any  # (J, E) LA means
    P: Any  # (J, E, E) prior precision
    eta0: Any  # (K, C) linear predictor without the LA effects
    phi: Any  # dispersion, or None (Poisson)
    potential: Any  # the joint potential energy at the x the model ran at


@dataclass(frozen=True)
class Problem:
    """The pieces of one Laplace fit, as pure JAX functions closed over the data."""

    potential: Any  # joint potential energy over {hyper..., LATENT: x} (unconstrained)
    postprocess: Any  # unconstrained sites -> every site and deterministic (constrained)
    local: Any  # (Prior, x) -> (value_j, grad_j, hess_j) of the joint's negative log density per LA
    prior: Any  # (zh, x) -> Prior
    z_init: dict  # unconstrained initial values of every site
    n_la: int
    n_eff: int


def _centred(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its LA effects centred: one MVN site ``la_coef`` (what is marginalised)."""
    return replace(spec, la=replace(spec.la, parameterisation="centred"))


def build_problem(spec: ModelSpec, priors: PriorSet, design: Design, *, float32: bool = False,
                  seed: int = 0) -> Problem:
    """The Laplace pieces for ``spec`` (which must pass :func:`check_supported`)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import init_to_median
    from numpyro.infer.util import _unconstrain_params, initialize_model, log_density

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn
    from hierarchy.likelihood.predictor import linear_predictor

    check_supported(spec, design)
    jax.config.update("jax_enable_x64", True)
    spec_c = _centred(spec)
    layout = make_layout(design)
    model = model_fn(spec_c, priors, design, layout)
    data = model_data(layout, "float32" if float32 else "float64")
    info = initialize_model(jax.random.PRNGKey(seed), model, model_args=(data,), init_strategy=init_to_median)
    if LATENT not in info.param_info.z:
        raise HierarchyError(f"{spec.name}: the centred model has no '{LATENT}' site to marginalise")
    n_la, n_eff = info.param_info.z[LATENT].shape
    f64 = jnp.float64
    rows = {"la_index": layout.chunk_la[:, None], "stage_index": layout.chunk_stage[:, None],
            "stratum_index": layout.chunk_stratum[:, None], "log_exposure": jnp.asarray(layout.log_exposure, f64),
            "w": jnp.asarray(layout.w, f64),
            "row_X": None if layout.row_X is None else jnp.asarray(layout.row_X, f64)}
    y, mask = jnp.asarray(layout.y, f64), jnp.asarray(layout.mask, f64)
    onehot = jnp.asarray(layout.onehot, f64)  # (K, J): chunk sums to LA sums without scatter
    # d eta / d x[:, e], the same for every LA: the predictor is linear in la_coef
    V = jnp.stack([jax.jvp(lambda x: linear_predictor(rows, {LATENT: x}, jnp) + 0.0 * rows["w"],
                           (jnp.zeros((n_la, n_eff)),), (jnp.zeros((n_la, n_eff)).at[:, e].set(1.0),))[1]
                   for e in range(n_eff)])
    V = V * mask  # padding rows carry nothing

    def prior(zh, x=None):
        """One run of the model at ``{zh, LATENT: x}`` (default zeros): the LA means and precision from
        its own MVN site, the predictor without la_coef, phi, and the potential energy there."""
        x = jnp.zeros((n_la, n_eff)) if x is None else x
        log_joint, tr = log_density(_unconstrain_params(model, {**zh, LATENT: x}), (data,), {}, {})
        fn = tr[LATENT]["fn"]
        P = jnp.broadcast_to(_inverse_spd(fn.scale_tril), (n_la, n_eff, n_eff))
        p = {k: s["value"] for k, s in tr.items() if s["type"] in ("sample", "deterministic")}
        p[LATENT] = jnp.zeros((n_la, n_eff))
        eta0 = linear_predictor(rows, p, jnp)
        return Prior(jnp.broadcast_to(fn.loc, (n_la, n_eff)), P, eta0, p.get("dispersion"), -log_joint)

    def eta_of(x, eta0):
        return eta0 + jnp.einsum("ekc,ke->kc", V, x[layout.chunk_la])

    def local(pr, x, derivatives: bool = True):
        """Per LA: negative log joint (up to terms free of x), its gradient and Hessian in x_j."""
        m, P, eta0, phi = pr.m, pr.P, pr.eta0, pr.phi
        eta = eta_of(x, eta0)
        r = x - m
        ll, d1, d2 = _row_derivatives(y, eta, phi)
        value = 0.5 * jnp.einsum("je,jef,jf->j", r, P, r) - onehot.T @ jnp.sum(mask * ll, axis=1)
        if not derivatives:
            return value, None, None
        g = jnp.einsum("jef,jf->je", P, r) - onehot.T @ jnp.einsum("kc,ekc->ke", d1, V)
        H = P - jnp.einsum("kj,kef->jef", onehot, jnp.einsum("kc,ekc,fkc->kef", d2, V, V))
        return value, g, H

    return Problem(potential=info.potential_fn, postprocess=info.postprocess_fn, local=local, prior=prior,
                   z_init=info.param_info.z, n_la=int(n_la), n_eff=int(n_eff))


def _row_derivatives(y, eta, phi):
    """Each row's log-likelihood at log mean ``eta`` less the terms free of ``eta`` (the NumPyro model's
    own row terms, :mod:`hierarchy.likelihood.jaxmodel`; no ``lgamma`` per row), and its first and
    second derivatives in ``eta``: negative binomial with dispersion ``phi``, Poisson when ``phi`` is
    None. The derivatives are written out (one ``exp`` per row: automatic differentiation of the value
    cost several times more at national scale); tests check them against the model's own gradient and
    Hessian."""
    import jax.numpy as jnp

    from hierarchy.likelihood.jaxmodel import _nb_row_terms, _poisson_saturated

    mu = jnp.exp(eta)
    if phi is None:
        return _poisson_saturated(y, eta), y - mu, -mu
    log_phi = jnp.log(phi)
    log_phi_mu = jnp.logaddexp(log_phi, eta)
    value = _nb_row_terms(y, eta, phi, log_phi_mu, log_phi_mu - log_phi)
    return value, phi * (y - mu) / (phi + mu), -phi * mu * (phi + y) / (phi + mu) ** 2


def _solve(H, g):
    """``H_j^-1 g_j`` for every LA block (closed form for 1 x 1 and 2 x 2 blocks: batched LAPACK
    calls on tiny matrices cost far more than the arithmetic on CPU)."""
    import jax.numpy as jnp

    if H.shape[-1] == 1:
        return g / H[..., 0]
    if H.shape[-1] == 2:
        a, b, c, d = H[..., 0, 0], H[..., 0, 1], H[..., 1, 0], H[..., 1, 1]
        det = a * d - b * c
        return jnp.stack([d * g[..., 0] - b * g[..., 1], a * g[..., 1] - c * g[..., 0]], axis=-1) / det[..., None]
    return jnp.linalg.solve(H, g[..., None])[..., 0]


def _cholesky(H):
    """Lower Cholesky factor of every (symmetric positive definite) block (closed form up to 2 x 2)."""
    import jax.numpy as jnp

    if H.shape[-1] == 1:
        return jnp.sqrt(H)
    if H.shape[-1] == 2:
        l11 = jnp.sqrt(H[..., 0, 0])
        l21 = H[..., 1, 0] / l11
        l22 = jnp.sqrt(H[..., 1, 1] - l21**2)
        zero = jnp.zeros_like(l11)
        return jnp.stack([jnp.stack([l11, zero], -1), jnp.stack([l21, l22], -1)], -2)
    return jnp.linalg.cholesky(H)


def _inverse_spd(L):
    """``(L L')^-1`` for every block, from its Cholesky factor ``L``."""
    import jax
    import jax.numpy as jnp

    n = L.shape[-1]
    if n <= 2:
        Linv = _lower_inverse(L)
        return jnp.swapaxes(Linv, -1, -2) @ Linv
    eye = jnp.eye(n, dtype=L.dtype)
    return jax.vmap(lambda m: jax.scipy.linalg.cho_solve((m, True), eye))(L.reshape(-1, n, n)).reshape(L.shape)


def _lower_inverse(L):
    """Inverse of lower triangular 1 x 1 or 2 x 2 blocks."""
    import jax.numpy as jnp

    if L.shape[-1] == 1:
        return 1.0 / L
    l11, l21, l22 = L[..., 0, 0], L[..., 1, 0], L[..., 1, 1]
    zero = jnp.zeros_like(l11)
    return jnp.stack([jnp.stack([1.0 / l11, zero], -1), jnp.stack([-l21 / (l11 * l22), 1.0 / l22], -1)], -2)


def _logdet(L):
    """``log det (L L')`` summed over blocks."""
    import jax.numpy as jnp

    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)))


def _draw(x_hat, L, eps):
    """``x_hat + L'^-1 eps`` per block: a draw from ``N(x_hat, (L L')^-1)``."""
    import jax
    import jax.numpy as jnp

    if L.shape[-1] <= 2:
        return x_hat + jnp.einsum("...fe,...f->...e", _lower_inverse(L), eps)
    return x_hat + jax.scipy.linalg.solve_triangular(L, eps[..., None], lower=True, trans=1)[..., 0]


def newton(problem: Problem, pr, x0, tol: float = NEWTON_TOL, max_iter: int = MAX_NEWTON):
    """Mode of the LA effects given hyperparameter pieces ``pr`` (:attr:`Problem.prior`), from ``x0``.

    Newton's method on every LA block at once; a step that does not lower an LA's negative log
    density (Armijo) is halved for that LA. Returns the mode and the largest Newton decrement.
    Not meant to be differentiated (see the module docstring).
    """
    import jax
    import jax.numpy as jnp

    def cond(state):
        _, _, it, dec = state
        return (it < max_iter) & (dec > tol)

    def body(state):
        x, scale, it, _ = state
        f, g, H = problem.local(pr, x)
        step = -_solve(H, g)
        slope = jnp.sum(g * step, axis=1)  # <= 0
        cand = x + scale[:, None] * step
        f_new = problem.local(pr, cand, derivatives=False)[0]
        ok = f_new <= f + 1e-4 * scale * slope
        x = jnp.where(ok[:, None], cand, x)
        scale = jnp.where(ok, jnp.minimum(1.0, 2.0 * scale), 0.5 * scale)
        dec = jnp.max(jnp.where(jnp.isfinite(slope), -slope, jnp.inf))
        return x, scale, it + 1, dec

    state = (x0, jnp.ones(x0.shape[0], x0.dtype), 0, jnp.asarray(jnp.inf, x0.dtype))
    x, _, it, dec = jax.lax.while_loop(cond, body, state)
    return x, dec, it


def mode_and_hessian(problem: Problem, zh: dict, start):
    """``x_hat(theta)`` with its IFT derivative, the Hessian blocks at it, the largest Newton decrement
    before the last step, and the joint potential energy at ``x_hat``. ``start``: Newton's starting
    point, an array or a function of ``zh`` (:func:`find_mode`'s linear prediction of the mode)."""
    import jax

    x0 = jax.lax.stop_gradient(start(zh) if callable(start) else start)
    pr = problem.prior(zh, x0)
    x_star, dec, _ = newton(problem, jax.lax.stop_gradient(pr), x0)
    x_star = jax.lax.stop_gradient(x_star)
    _, g, H = problem.local(pr, x_star)
    x_hat = x_star - _solve(H, g)  # = x_star at convergence; its derivative is the IFT one
    f_hat, _, H_hat = problem.local(pr, x_hat)
    # the model's potential at x_hat: at x0 from its one run, plus the change of the per-LA terms,
    # which are the same function of x up to terms free of x (tests/inference/test_laplace.py)
    potential = pr.potential + (f_hat - problem.local(pr, x0, derivatives=False)[0]).sum()
    return x_hat, H_hat, dec, potential


def laplace_potential(problem: Problem, start):
    """``U(theta) = -log p(y, theta)`` by Laplace (unconstrained hyperparameters), for NUTS."""
    n = problem.n_la * problem.n_eff

    def potential(zh):
        _, H, _, joint = mode_and_hessian(problem, zh, start)
        return joint + 0.5 * _logdet(_cholesky(H)) - 0.5 * n * math.log(2 * math.pi)

    return potential


def hyper_init(problem: Problem) -> dict:
    """The unconstrained hyperparameters of the model's initial point (every site but the LA effects)."""
    return {k: v for k, v in problem.z_init.items() if k != LATENT}


def find_mode(problem: Problem, zh0: dict, x0) -> tuple[dict, np.ndarray, Any]:
    """The hyperparameters' posterior mode under the Laplace marginal (BFGS, scipy, on the jitted value
    and gradient), the inverse of the Hessian there (central differences of the gradient), and a
    starting point for Newton's method at any ``zh``: the LA mode at the mode plus its derivative
    (central differences) times the distance, which leaves Newton one or two steps from NUTS' draws."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize

    flat0, unravel = ravel_pytree(zh0)
    U = laplace_potential(problem, x0)
    vg = jax.jit(jax.value_and_grad(lambda v: U(unravel(v))))

    def fun(q):
        v, g = vg(q)
        return float(v), np.asarray(g, dtype=float)

    res = minimize(fun, np.asarray(flat0, dtype=float), jac=True, method="BFGS", options={"maxiter": 200})
    q = res.x if np.all(np.isfinite(res.x)) and np.isfinite(res.fun) else np.asarray(flat0, dtype=float)
    h, eye = 1e-4, np.eye(len(q))
    hess = np.stack([(fun(q + h * e)[1] - fun(q - h * e)[1]) / (2 * h) for e in eye])
    hess = 0.5 * (hess + hess.T)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full_like(hess, np.nan)
    x_hat = jax.jit(lambda v: mode_and_hessian(problem, unravel(v), x0)[0])
    x_mode = x_hat(q)
    slope = jnp.stack([(x_hat(q + h * e) - x_hat(q - h * e)) / (2 * h) for e in eye], axis=-1)
    q_mode = jnp.asarray(q)

    def start(zh):
        return x_mode + slope @ (ravel_pytree(zh)[0] - q_mode)

    return unravel(q), cov, start


def draw_latent(problem: Problem, zh_draws: dict, start, key, batch: int = DRAW_BATCH) -> dict[str, np.ndarray]:
    """For each hyperparameter draw (leading axis), the LA effects from ``N(x_hat, H^-1)`` and every
    site and deterministic of the model (constrained), as numpy arrays with the same leading axis."""
    import jax
    import jax.numpy as jnp

    def one(zh, k):
        x_hat, H, _, _ = mode_and_hessian(problem, zh, start)
        x = _draw(x_hat, _cholesky(H), jax.random.normal(k, x_hat.shape, x_hat.dtype))
        return problem.postprocess({**zh, LATENT: x})

    many = jax.jit(jax.vmap(one))
    n = len(next(iter(zh_draws.values())))
    keys = jax.random.split(key, n)
    parts = [many({k: jnp.asarray(v[s:s + batch]) for k, v in zh_draws.items()}, keys[s:s + batch])
             for s in range(0, n, batch)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def sample(spec: ModelSpec, priors: PriorSet, design: Design, settings: dict, progress: bool = False):
    """NUTS over the hyperparameters under the Laplace marginal, then the LA effects given each draw.

    ``settings`` are :func:`hierarchy.inference.sampling.fit`'s; it is updated in place (the chain
    method used, sampling on, the Laplace details) like the NUTS path's. Returns a
    :class:`~hierarchy.inference.sampling.Draws` with a centred NUTS fit's posterior names.
    """
    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.inference.sampling import MAX_TREE_DEPTH, Draws, _joined, draws_to_bar

    t = time.perf_counter()
    problem = build_problem(spec, priors, design, float32=settings["float32"], seed=settings["seed"])
    zh_mode, cov, start = find_mode(problem, hyper_init(problem), problem.z_init[LATENT])
    t_mode = time.perf_counter() - t
    key = jax.random.PRNGKey(settings["seed"])
    init = _chain_inits(zh_mode, cov, settings["chains"], jax.random.fold_in(key, 1))
    kernel = NUTS(potential_fn=laplace_potential(problem, start), target_accept_prob=settings["target_accept"],
                  max_tree_depth=(settings["warmup_tree_depth"], MAX_TREE_DEPTH))
    chain_method = settings["chain_method"]
    if chain_method == "parallel" and jax.local_device_count() < settings["chains"]:
        chain_method = "sequential" if jax.local_device_count() == 1 else "parallel"
    mcmc = MCMC(kernel, num_warmup=settings["tune"], num_samples=settings["draws"], num_chains=settings["chains"],
                chain_method=chain_method, progress_bar=progress and chain_method != "vectorized")
    t = time.perf_counter()
    mcmc.warmup(key, init_params=init, extra_fields=("num_steps",), collect_warmup=True)
    jax.block_until_ready(mcmc.post_warmup_state)
    t_warm = time.perf_counter() - t
    warm_steps = float(np.mean(mcmc.get_extra_fields()["num_steps"])) if settings["tune"] else 0.0
    fields = ("diverging", "num_steps", "energy")
    timing = {"sampling": 0.0, "latent": 0.0}

    def block(k: int) -> tuple[dict, dict]:
        t1 = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields)
        zh = mcmc.get_samples(group_by_chain=True)
        ex = {f: np.asarray(v) for f, v in mcmc.get_extra_fields(group_by_chain=True).items()}
        jax.block_until_ready(zh)
        t2 = time.perf_counter()
        shape = next(iter(zh.values())).shape[:2]
        flat = {name: np.asarray(v).reshape((-1,) + v.shape[2:]) for name, v in zh.items()}
        post = draw_latent(problem, flat, start, jax.random.fold_in(key, 100 + k))
        post = {name: v.reshape(shape + v.shape[1:]) for name, v in post.items()}
        timing["sampling"] += t2 - t1
        timing["latent"] += time.perf_counter() - t2
        return post, ex

    blocks = [block(0)]
    samples, ex = _joined(blocks)
    while settings["draws"] < settings["max_draws"]:
        more = draws_to_bar(samples, ex, settings["max_draws"])
        if not more:
            break
        mcmc.post_warmup_state, mcmc.num_samples = mcmc.last_state, more
        blocks.append(block(len(blocks)))
        samples, ex = _joined(blocks)
        settings["draws"] += more
        settings["continuations"] = settings.get("continuations", 0) + 1
    steps = ex["num_steps"]
    stats = {"diverging": ex["diverging"], "energy": ex["energy"], "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings["chain_method_used"] = chain_method
    settings["max_tree_depth"] = MAX_TREE_DEPTH
    settings["laplace"] = {
        "marginalised": f"{LATENT} ({problem.n_la} LAs x {problem.n_eff} effects), centred on the LA-level mean",
        "hyperparameters": sorted(hyper_init(problem)),
        "newton_tol": NEWTON_TOL, "max_newton": MAX_NEWTON,
        "gradient": "implicit function theorem: one differentiated Newton step from the converged mode",
        "init": "BFGS mode of the Laplace marginal, chains drawn from its inverse Hessian"}
    return Draws(posterior=samples, stats=stats,
                 timings={"mode": t_mode, "warmup": t_warm, "sampling": timing["sampling"],
                          "latent_draws": timing["latent"], "warmup_mean_steps": warm_steps})


def _chain_inits(zh: dict, cov: np.ndarray, chains: int, key) -> dict:
    """Initial hyperparameters per chain: draws from ``N(mode, cov)`` (the Laplace posterior's
    Gaussian approximation), or the mode itself where ``cov`` is not a usable covariance."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(zh)
    cov = 0.5 * (cov + cov.T)
    ok = np.all(np.isfinite(cov)) and np.all(np.linalg.eigvalsh(cov) > 0)
    noise = jax.random.normal(key, (chains, flat.shape[0]), flat.dtype)
    q = flat + (noise @ jnp.linalg.cholesky(jnp.asarray(cov)).T if ok else 0.0 * noise)
    return jax.vmap(unravel)(q)

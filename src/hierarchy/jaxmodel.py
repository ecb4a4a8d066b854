"""NumPyro twin of :func:`hierarchy.model.build_model`, written for speed.

Same variables, same density (tests compare them at random points), but laid out for JAX:

- rows are sorted by LA and cut into chunks of ``chunk`` rows that each hold one LA, padded
  to a dense ``[n_chunks, chunk]`` block; LA coefficients reach the chunks through a one-hot
  matrix product, so neither the density nor its gradient has a gather/scatter over rows
  (scatter-add is slow on GPU with jaxlib 0.10.2, DESIGN section 4);
- the negative binomial's ``sum_i lgamma(y_i + phi)`` is summed over a histogram of the counts
  (a few hundred count values instead of 32.8k rows);
- the data enter as an argument with fixed shapes, so refitting new counts on the same design
  (simulation-based calibration) reuses one compilation.
- constants that do not depend on parameters (``lgamma(y + 1)``) are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierarchy.design import Design
from hierarchy.priors import PriorSet
from hierarchy.spec import ModelSpec, resolve_parameterisation


@dataclass(frozen=True)
class Layout:
    """Padded chunked arrays (numpy) for the likelihood."""

    chunk_la: np.ndarray  # (K,) LA of each chunk
    onehot: np.ndarray  # (K, n_la) float
    w: np.ndarray  # (K, C)
    log_exposure: np.ndarray  # (K, C)
    y: np.ndarray  # (K, C) float
    mask: np.ndarray  # (K, C) 1.0 for real rows
    rows: np.ndarray  # (K, C) original row index, -1 for padding
    y_hist: np.ndarray  # (H,) number of rows with count 0, 1, ..., H-1
    lgamma_y1: float  # sum_i lgamma(y_i + 1)
    msoa_index: np.ndarray | None  # (K, C) int, 0 in padding
    n_rows: int


def make_layout(design: Design, chunk: int = 64, hist_len: int | None = None) -> Layout:
    """Sort rows by LA and pad them into one-LA chunks of ``chunk`` rows.

    ``hist_len`` fixes the length of the count histogram (default: next power of two above the
    largest count), so that data sets with the same design share compiled code.
    """
    from scipy.special import gammaln

    order = np.argsort(design.la_index, kind="stable")
    counts = np.bincount(design.la_index, minlength=design.n_la)
    chunks_per_la = -(-counts // chunk)
    K = int(chunks_per_la.sum())
    rows = np.full((K, chunk), -1, dtype=np.int64)
    chunk_la = np.repeat(np.arange(design.n_la), chunks_per_la)
    start = 0
    k = 0
    for n in counts:
        idx = order[start:start + n]
        start += n
        for s in range(0, n, chunk):
            part = idx[s:s + chunk]
            rows[k, :len(part)] = part
            k += 1
    mask = rows >= 0
    safe = np.where(mask, rows, 0)

    def pad(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
        return np.where(mask, a[safe], fill)

    hist_len = hist_len or int(2 ** np.ceil(np.log2(design.y.max() + 2)))
    if design.y.max() >= hist_len:
        raise ValueError(f"hist_len {hist_len} is too short for a count of {design.y.max()}")
    onehot = np.zeros((K, design.n_la))
    onehot[np.arange(K), chunk_la] = 1.0
    msoa = None if design.msoa_index is None else np.where(mask, design.msoa_index[safe], 0)
    return Layout(chunk_la=chunk_la, onehot=onehot, w=pad(design.w),
                  log_exposure=pad(design.log_exposure), y=pad(design.y.astype(float)),
                  mask=mask.astype(float), rows=rows,
                  y_hist=np.bincount(design.y, minlength=hist_len).astype(float),
                  lgamma_y1=float(gammaln(design.y + 1.0).sum()),
                  msoa_index=msoa, n_rows=len(design.y))


def model_data(layout: Layout, dtype=None) -> dict:
    """The arrays the model function takes, as JAX arrays of ``dtype``."""
    import jax.numpy as jnp

    dtype = dtype or jnp.result_type(float)
    out = {k: jnp.asarray(getattr(layout, k), dtype=dtype)
           for k in ("onehot", "w", "log_exposure", "y", "mask", "y_hist")}
    out["lgamma_y1"] = jnp.asarray(layout.lgamma_y1, dtype=dtype)
    return out


def with_counts(layout: Layout, y: np.ndarray) -> Layout:
    """The same layout with new counts ``y`` (in design row order), same shapes."""
    from dataclasses import replace

    from scipy.special import gammaln

    mask = layout.rows >= 0
    return replace(layout, y=np.where(mask, y[np.where(mask, layout.rows, 0)], 0.0),
                   y_hist=np.bincount(y, minlength=len(layout.y_hist)).astype(float)[:len(layout.y_hist)],
                   lgamma_y1=float(gammaln(y + 1.0).sum()))


def model_fn(spec: ModelSpec, priors: PriorSet, design: Design, layout: Layout,
             dtype=None):
    """Return a NumPyro model ``model(data)`` for ``spec``; ``data`` is :func:`model_data`."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from jax.scipy.special import gammaln

    dtype = dtype or jnp.result_type(float)
    param = resolve_parameterisation(spec, design.rows_per_la)
    ncoef = len(spec.coefs)
    z = jnp.asarray(design.z, dtype=dtype)
    cov = jnp.asarray(design.la_cov, dtype=dtype)
    n_rows = layout.n_rows
    msoa_index = None if layout.msoa_index is None else jnp.asarray(layout.msoa_index)
    obs_rows = np.where(layout.rows >= 0, layout.rows, 0)

    def model(arr):
        mean_a = numpyro.sample("intercept", priors["intercept"].numpyro())
        mean_a = mean_a + jnp.zeros(design.n_la, dtype)
        if spec.la.between_effect:
            mean_a = mean_a + numpyro.sample("la_deprivation", priors["la_deprivation"].numpyro()) * z
        if design.la_cov_names:
            p = priors["la_covariates"].numpyro().expand([len(design.la_cov_names)]).to_event(1)
            mean_a = mean_a + cov @ numpyro.sample("la_cov_intercept", p)
        means = [mean_a]
        if ncoef == 2:
            mean_b = numpyro.sample("gradient", priors["gradient"].numpyro()) + jnp.zeros_like(z)
            if spec.la.cross_level:
                mean_b = mean_b + numpyro.sample("cross_level", priors["cross_level"].numpyro()) * z
            if design.la_cov_names:
                mean_b = mean_b + cov @ numpyro.sample("la_cov_gradient", p)
            means.append(mean_b)
        mean = jnp.stack(means, axis=1)
        la_sd = numpyro.sample("la_sd", priors["la_sd"].numpyro().expand([ncoef]).to_event(1))
        if ncoef == 2:
            corr = numpyro.sample("la_corr", nd.LKJ(2, priors["la_corr"].params["eta"]))
            chol = la_sd[:, None] * jnp.linalg.cholesky(corr)
        else:
            chol = jnp.diag(la_sd)
        if param == "centred":
            la_coef = numpyro.sample("la_coef", nd.MultivariateNormal(mean, scale_tril=chol))
        else:
            raw = numpyro.sample("la_raw", nd.Normal(0.0, 1.0).expand([design.n_la, ncoef])
                                 .to_event(2))
            la_coef = numpyro.deterministic("la_coef", mean + raw @ chol.T)
        c = arr["onehot"] @ la_coef  # (K, ncoef): no scatter in the gradient
        eta = arr["log_exposure"] + c[:, :1]
        if ncoef == 2:
            eta = eta + c[:, 1:2] * arr["w"]
        if spec.msoa.random_intercept:
            msoa_sd = numpyro.sample("msoa_sd", priors["msoa_sd"].numpyro())
            msoa_raw = numpyro.sample("msoa_raw", nd.Normal(0.0, 1.0)
                                      .expand([len(design.msoa_codes)]).to_event(1))
            eta = eta + (msoa_raw * msoa_sd)[msoa_index]
        if spec.family == "poisson_lognormal":
            obs_sd = numpyro.sample("obs_sd", priors["obs_sd"].numpyro())
            eps_raw = numpyro.sample("eps_raw", nd.Normal(0.0, 1.0).expand([n_rows]).to_event(1))
            eta = eta + eps_raw[obs_rows] * obs_sd
        y, mask = arr["y"], arr["mask"]
        if spec.family == "negative_binomial":
            phi = numpyro.sample("dispersion", priors["dispersion"].numpyro())
            values = jnp.arange(arr["y_hist"].shape[0], dtype=dtype)
            ll = (jnp.sum(arr["y_hist"] * gammaln(values + phi))
                  - n_rows * (gammaln(phi) - phi * jnp.log(phi))
                  + jnp.sum(mask * (y * eta - (y + phi) * jnp.logaddexp(jnp.log(phi), eta))))
        else:
            ll = jnp.sum(mask * (y * eta - jnp.exp(eta)))
        numpyro.factor(spec.outcome, ll - arr["lgamma_y1"])

    return model


def pointwise_loglik(spec: ModelSpec, design: Design, posterior: dict[str, np.ndarray],
                     *, batch: int = 100) -> np.ndarray:
    """Log-likelihood of each row for each draw, ``(draws, n)`` float32, in draw batches.

    ``posterior`` maps names to arrays with a leading draw axis (chains flattened).
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import gammaln

    idx = jnp.asarray(design.la_index)
    w = jnp.asarray(design.w)
    loge = jnp.asarray(design.log_exposure)
    y = jnp.asarray(design.y, dtype=w.dtype)
    msoa = None if design.msoa_index is None else jnp.asarray(design.msoa_index)

    def one(p):
        eta = loge + p["la_coef"][idx, 0]
        if p["la_coef"].shape[-1] == 2:
            eta = eta + p["la_coef"][idx, 1] * w
        if msoa is not None:
            eta = eta + (p["msoa_raw"] * p["msoa_sd"])[msoa]
        if "eps_raw" in p:
            eta = eta + p["eps_raw"] * p["obs_sd"]
        if "dispersion" in p:
            phi = p["dispersion"]
            return (gammaln(y + phi) - gammaln(phi) - gammaln(y + 1) + phi * jnp.log(phi)
                    + y * eta - (y + phi) * jnp.logaddexp(jnp.log(phi), eta))
        return y * eta - jnp.exp(eta) - gammaln(y + 1)

    keys = [k for k in ("la_coef", "msoa_raw", "msoa_sd", "eps_raw", "obs_sd", "dispersion")
            if k in posterior]
    n_draws = len(posterior["la_coef"])
    out = np.empty((n_draws, len(design.y)), dtype=np.float32)
    many = jax.jit(jax.vmap(one))
    for s in range(0, n_draws, batch):
        out[s:s + batch] = np.asarray(many({k: jnp.asarray(posterior[k][s:s + batch])
                                            for k in keys}))
    return out


def draw_counts(spec: ModelSpec, design: Design, params: dict[str, np.ndarray],
                rng: np.random.Generator) -> np.ndarray:
    """Counts drawn from the model's likelihood at one parameter point (design row order)."""
    coef = np.asarray(params["la_coef"])
    eta = design.log_exposure + coef[design.la_index, 0]
    if coef.shape[-1] == 2:
        eta = eta + coef[design.la_index, 1] * design.w
    if "msoa_raw" in params:
        eta = eta + (np.asarray(params["msoa_raw"]) * params["msoa_sd"])[design.msoa_index]
    if spec.family == "poisson_lognormal":
        eps = params.get("eps_raw")
        eps = rng.standard_normal(len(eta)) if eps is None else np.asarray(eps)
        eta = eta + eps * params["obs_sd"]
    mu = np.exp(eta)
    if spec.family == "negative_binomial":
        phi = float(params["dispersion"])
        return rng.poisson(rng.gamma(phi, mu / phi))
    return rng.poisson(mu)

"""An export that leaves the children behind: LA-level sufficient sums of a Poisson model.

For a Poisson model whose neighbourhood terms are public (deprivation, populations, geography),
the log-likelihood is ``sum_i y_i eta_i - sum_i mu_i - sum_i log y_i!``. The middle term needs
only public data; the last does not depend on the parameters; and with the workbench's linear
predictor ``eta_i = log E_i + a_{la,stage} + o_stratum + (b_{la,stage} + g_stratum) w_i`` the first
is ``sum_c [n_c (a + o) + t_c (b + g)]`` over cells c = LA x stage x stratum, with
``n_c = sum y_i`` and ``t_c = sum y_i w_i`` over the cell's rows (``w`` is public). So the
posterior given the sums and the public table is *exactly* the posterior given the counts.

This holds for ``family = "poisson"`` with no MSOA random intercept. It does **not** hold for the
negative binomial (its likelihood needs ``lgamma(y_i + phi)`` row by row), for the
Poisson-lognormal or for any neighbourhood-level random effect (each needs its own row's count).

:func:`sufficient_sums` computes the sums and refuses a cell behind fewer children than the
disclosure threshold (zeros included); :func:`write_sums` writes them atomically;
:func:`fit_sufficient` fits the same NumPyro model outside from the sums and the public table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy.compiled import release_compiled_programs
from hierarchy.disclosure import THRESHOLD
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import Draws
from hierarchy.language.design import Design, build_design
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec

SUM_COLUMNS = ("la", "stage", "stratum", "n", "sum_yw")


def check_exact(spec: ModelSpec) -> None:
    """Raise unless the sums are sufficient for ``spec`` (Poisson, no neighbourhood-level effects)."""
    if spec.family != "poisson":
        raise HierarchyError(f"model '{spec.name}' is {spec.family}: LA-level sums are sufficient only for "
                             "a Poisson model (the negative binomial and Poisson-lognormal likelihoods need "
                             "every neighbourhood's count); use a Poisson model such as "
                             "models/gradient_poisson.toml")
    if spec.msoa.random_intercept:
        raise HierarchyError(f"model '{spec.name}' has an MSOA random intercept: its likelihood needs "
                             "counts per MSOA, which LA sums do not give; drop [msoa] for the export")


def sufficient_sums(table: pd.DataFrame, spec: ModelSpec, *, threshold: int = THRESHOLD) -> pd.DataFrame:
    """Per LA x stage x stratum: ``n`` (sum of counts) and ``sum_yw`` (sum of count x w).

    Raises
    ------
    HierarchyError
        If the model is not one for which the sums are sufficient, or any cell has fewer than
        ``threshold`` children behind it (zero included): coarsen the strata or pool LAs.
    """
    check_exact(spec)
    design = build_design(table, spec)
    return _sums(design, threshold=threshold)


def _sums(design: Design, *, threshold: int) -> pd.DataFrame:
    y = design.y.astype(float)
    frame = pd.DataFrame({"la": design.la_codes[design.la_index],
                          "stage": np.asarray(design.stage_names)[design.stage_index],
                          "stratum": np.asarray(design.stratum_names, dtype=object)[design.stratum_index],
                          "n": y, "sum_yw": y * design.w})
    sums = frame.groupby(["la", "stage", "stratum"], sort=True, observed=True)[["n", "sum_yw"]].sum().reset_index()
    sums["n"] = sums["n"].astype(np.int64)
    small = sums[sums["n"] < threshold]
    if len(small):
        ex = ", ".join(f"{r.la}/{r.stage}/{r.stratum}: {r.n}" for r in small.head(3).itertuples())
        raise HierarchyError(f"{len(small)} of {len(sums)} LA x stage x stratum sums rest on fewer than "
                             f"{threshold} children (e.g. {ex}); they cannot leave the secure environment. "
                             "Fix: use fewer strata, pool small LAs, or drop the stage")
    return sums


def write_sums(sums: pd.DataFrame, out: str | os.PathLike, *, spec: ModelSpec, threshold: int) -> Path:
    """Write the sums as CSV atomically, with a comment header naming the model and threshold."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(f"# sufficient sums for model {spec.name} (hash {spec.hash()}); every n >= {threshold}\n")
            sums[list(SUM_COLUMNS)].to_csv(fh, index=False, float_format="%.10g")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_sums(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sums file written by :func:`write_sums`."""
    try:
        sums = pd.read_csv(path, comment="#", dtype={"la": str, "stage": str, "stratum": str})
    except (OSError, ValueError) as err:
        raise HierarchyError(f"cannot read sums file {path}: {err}") from None
    missing = [c for c in SUM_COLUMNS if c not in sums.columns]
    if missing:
        raise HierarchyError(f"{path} lacks column(s) {', '.join(missing)}: "
                             "write it with hierarchy export-sufficient")
    sums["stratum"] = sums["stratum"].fillna("")
    return sums


def public_design(public: pd.DataFrame, sums: pd.DataFrame, spec: ModelSpec) -> tuple[Design, np.ndarray]:
    """Design from the public table, and the sums as arrays (n, t) indexed (la, stage, stratum).

    The design's counts are pseudo-counts (each cell's ``n`` spread over its rows by exposure, rounded
    so that they add up to ``n`` exactly) used only to choose the parameterisation; the likelihood uses
    the sums.
    """
    check_exact(spec)
    table = public.copy()
    for s in spec.stages:
        table[s] = 0
    design = build_design(table, spec)
    la = pd.Index(design.la_codes)
    stage = pd.Index(design.stage_names)
    stratum = pd.Index(np.asarray(design.stratum_names, dtype=object).astype(str))
    idx = (la.get_indexer(sums["la"].astype(str)), stage.get_indexer(sums["stage"].astype(str)),
           stratum.get_indexer(sums["stratum"].astype(str)))
    for what, i, col in zip(("LA", "stage", "stratum"), idx, ("la", "stage", "stratum"), strict=True):
        if (i < 0).any():
            raise HierarchyError(f"the sums name {what} {sums[col][i < 0].iloc[0]!r}, which the public table "
                                 "and model do not have: use the table and model the sums were made from")
    arr = np.zeros((2, len(la), len(stage), len(stratum)))
    have = np.zeros(arr.shape[1:], dtype=bool)
    have[idx] = True
    used = np.zeros_like(have)
    used[design.la_index, design.stage_index, design.stratum_index] = True
    if (used & ~have).any():
        j, s_, k = (a[0] for a in np.nonzero(used & ~have))
        raise HierarchyError(f"{int((used & ~have).sum())} LA x stage x stratum cells of the public table have no "
                             f"sum (e.g. {la[j]}/{stage[s_]}/{stratum[k]}): the public table must cover the same "
                             "LAs and strata as the table the sums were exported from")
    arr[0][idx] = sums["n"].to_numpy(dtype=float)
    arr[1][idx] = sums["sum_yw"].to_numpy(dtype=float)
    expo = np.exp(design.log_exposure)
    cell = (design.la_index * len(stage) + design.stage_index) * len(stratum) + design.stratum_index
    share = expo / np.bincount(cell, expo, minlength=arr[0].size)[cell]
    pseudo = _apportion(arr[0].reshape(-1), cell, share)
    from dataclasses import replace

    return replace(design, y=pseudo), arr


def _apportion(n: np.ndarray, cell: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Whole numbers per row that add up to ``n[cell]`` in every cell, in proportion to ``share``
    (largest remainders)."""
    raw = n[cell] * share
    low = np.floor(raw)
    short = np.rint(n - np.bincount(cell, low, minlength=len(n))).astype(np.int64)
    order = np.lexsort((low - raw, cell))  # by cell, then the largest remainder first
    ranked = cell[order]
    rank = np.empty(len(cell), dtype=np.int64)
    rank[order] = np.arange(len(cell)) - np.searchsorted(ranked, ranked)
    return (low + (rank < short[cell])).astype(np.int64)


def sufficient_model(spec: ModelSpec, priors: PriorSet, design: Design, arr: np.ndarray):
    """NumPyro model: the workbench's model on zero counts plus the sums' term ``sum n (a+o) + t (b+g)``."""
    import jax.numpy as jnp
    import numpyro
    from numpyro import handlers

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn, with_counts

    layout = with_counts(make_layout(design), np.zeros(len(design.y), dtype=np.int64), design.stage_index)
    inner = model_fn(spec, priors, design, layout)
    data = model_data(layout)
    n, t = jnp.asarray(arr[0]), jnp.asarray(arr[1])

    def model():
        with handlers.trace() as tr:
            inner(data)
        coef = tr["la_coef"]["value"]
        if coef.ndim == 2:
            coef = coef[:, None, :]
        a = coef[..., 0][:, :, None]
        b = coef[..., 1][:, :, None] if coef.shape[-1] == 2 else 0.0
        if "stratum_intercept_offset" in tr:
            a = a + jnp.concatenate([jnp.zeros(1), tr["stratum_intercept_offset"]["value"]])
            if "stratum_gradient_offset" in tr:
                b = b + jnp.concatenate([jnp.zeros(1), tr["stratum_gradient_offset"]["value"]])
        numpyro.factor("sufficient_sums", jnp.sum(n * a + t * b))

    return model


def fit_sufficient(sums: pd.DataFrame, public: pd.DataFrame, spec: ModelSpec, priors: PriorSet, *,
                   chains: int = 4, tune: int = 500, draws: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """Posterior draws (chains x draws x ...) of the model fitted from the sums and the public table."""
    draws_, _ = sample_sufficient(sums, public, spec, priors, chains=chains, tune=tune, draws=draws, seed=seed)
    return draws_.posterior


def sample_sufficient(sums: pd.DataFrame, public: pd.DataFrame, spec: ModelSpec, priors: PriorSet, *,
                      chains: int = 4, tune: int = 500, draws: int = 500, seed: int = 0,
                      progress: bool = False) -> tuple[Draws, Design]:
    """NUTS on the sums' likelihood: :class:`~hierarchy.inference.sampling.Draws` as ``hierarchy fit`` makes them,
    and the public design (its counts are pseudo-counts: see :func:`public_design`)."""
    import time

    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.inference.sampling import MAX_TREE_DEPTH
    from hierarchy.language.design import centring, describe_centring
    from hierarchy.likelihood.model import la_effect_labels

    jax.config.update("jax_enable_x64", True)
    release_compiled_programs()
    design, arr = public_design(public, sums, spec)
    chain_method = "parallel" if jax.local_device_count() >= chains else "sequential"
    mcmc = MCMC(NUTS(sufficient_model(spec, priors, design, arr), max_tree_depth=MAX_TREE_DEPTH),
                num_warmup=tune, num_samples=draws, num_chains=chains, chain_method=chain_method,
                progress_bar=progress)
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps", "energy"))
    samples = mcmc.get_samples(group_by_chain=True)
    ex = mcmc.get_extra_fields(group_by_chain=True)
    steps = np.asarray(ex["num_steps"])
    stats = {"diverging": np.asarray(ex["diverging"]), "energy": np.asarray(ex["energy"]), "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings = dict(sampler="numpyro", chains=chains, tune=tune, draws=draws, seed=seed,
                    chain_method=chain_method, chain_method_used=chain_method, target_accept=0.8, float32=False,
                    max_tree_depth=MAX_TREE_DEPTH, likelihood="sufficient_sums",
                    parameterisation=describe_centring(centring(spec, design), la_effect_labels(spec)))
    total = time.perf_counter() - t
    return Draws(posterior={k: np.asarray(v) for k, v in samples.items()}, stats=stats, settings=settings,
                 timings={"sampling": total, "total": total}), design


def sums_hash(sums: pd.DataFrame) -> str:
    """16-hex hash of the sums (cells in sorted order, values as written)."""
    from hierarchy.config import config_hash

    cells = sums[list(SUM_COLUMNS)].sort_values(["la", "stage", "stratum"]).astype(str).to_numpy().tolist()
    return config_hash({"sums": cells})


def sums_model_hash(path: str | os.PathLike) -> str | None:
    """The model hash :func:`write_sums` wrote in the file's first line (None if absent)."""
    import re

    with open(path, "rb") as fh:
        m = re.search(r"\(hash ([0-9a-f]{16})\)", fh.readline().decode("utf-8", errors="replace"))
    return m.group(1) if m else None

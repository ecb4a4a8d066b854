"""Prior predictive checks of a model under a prior set: draws from the priors, the rates and gradient
scores they imply, and the share of impossible rates (more events than children)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from hierarchy.errors import HierarchyError
from hierarchy.language.design import Design, z_of
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.likelihood import families
from hierarchy.likelihood.model import STAGE_VARS, typical_gradient
from hierarchy.likelihood.predictor import ROW_PARAMS, design_rows, group_params, predictor_draws
from hierarchy.results.estimands import LA_LEVELS, deciles_of
from hierarchy.results.prior_settings import (
    IMPOSSIBLE_RATE,
    NEGLIGIBLE_IMPOSSIBLE,
    VISIBLE_IMPOSSIBLE,
    _pct,
    published_gradient,
)


@dataclass
class PriorPredictive:
    """Prior predictive check of one prior set, in rates per 10,000 children.

    Attributes
    ----------
    prior_set : str
        Name of the prior set.
    deciles : pandas.DataFrame
        One row per national decile of the data's neighbourhoods (1 = least deprived):
        ``decile``, ``deprivation_min``, ``deprivation_max``, ``neighbourhoods``, ``children``,
        ``rate_median``, ``rate_lower``, ``rate_upper`` (children-weighted implied rate of the
        decile, per 10,000; median and ``prob`` interval over prior draws),
        ``impossible_share`` (mean share of the decile's neighbourhoods above 10,000), ``prob``.
    impossible_share : float
        Mean over prior draws of the share of neighbourhoods whose implied rate exceeds
        10,000 per 10,000: the prior probability that a neighbourhood has more referrals than
        children.
    impossible_median : float
        Median over prior draws of that share (what a typical prior draw implies).
    impossible_any : float
        Share of prior draws with at least one impossible neighbourhood.
    gradients : pandas.DataFrame
        Implied gradient scores of a typical LA: ``la_level``, ``la_deprivation``,
        ``median``, ``lower``, ``upper``, ``p_below_1`` (prior probability of a reversed
        gradient), ``published``, ``prob``.
    n_draws : int
        Prior draws used.
    outcome : str
        The (first) modelled outcome.
    year : int or None
        Census year of the data, for published figures (None: unknown, none shown).
    """

    prior_set: str
    deciles: pd.DataFrame
    impossible_share: float
    impossible_median: float
    impossible_any: float
    gradients: pd.DataFrame
    n_draws: int
    outcome: str = "referral"
    year: int | None = None

    def verdict(self) -> str:
        """One plain sentence on the prior mass on impossible rates."""
        share = self.impossible_share
        where = self.deciles.loc[self.deciles["impossible_share"].idxmax(), "decile"]
        text = (f"{self.prior_set}: in the prior, {_pct(share)} of neighbourhoods have an implied "
                f"rate above 10,000 per 10,000 children (more referrals than children: "
                f"impossible)")
        if share >= VISIBLE_IMPOSSIBLE:
            return (f"{text}. This prior puts visible mass on impossible rates; it is not weakly "
                    f"informative in the units of the field.")
        if share >= NEGLIGIBLE_IMPOSSIBLE:
            return (f"{text}, most often in deprivation decile {where} (1 = least deprived): a "
                    "little prior mass on impossible rates, small next to the data but worth "
                    "tightening if the prior is meant to exclude them.")
        return f"{text}: negligible."


def prior_draws(spec: ModelSpec, priors: PriorSet, design: Design, *, draws: int = 1000,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Draws of every parameter from the prior, by NumPyro ``Predictive`` on the model function.

    Parameters
    ----------
    spec, priors, design
        The model, prior set and data design.
    draws : int
        Number of prior draws.
    seed : int
        Seed of the JAX random key.

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter name -> array with a leading draw axis (includes ``la_coef``).
    """
    import jax
    from numpyro.infer import Predictive

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    layout = make_layout(design)
    model = model_fn(spec, priors, design, layout)
    sample = Predictive(model, num_samples=draws)(jax.random.PRNGKey(seed), model_data(layout))
    return {k: np.asarray(v) for k, v in sample.items() if k != spec.outcome}


def _log_rates(spec: ModelSpec, design: Design, draws: dict[str, np.ndarray], sl: slice) -> np.ndarray:
    """Log rate per child of every row for the draws in ``sl`` (``exp`` gives the rate): the one
    predictor without the exposure."""
    rows = design_rows(design) | {"log_exposure": np.zeros(len(design.y))}
    keys = ROW_PARAMS + group_params(design.group_names)
    return predictor_draws(rows, {k: v[sl] for k, v in draws.items() if k in keys})


def prior_predictive(spec: ModelSpec, priors: PriorSet, design: Design, *, draws: int = 1000,
                     seed: int = 0, prob: float = 0.9, chunk: int = 100,
                     year: int | None = None) -> PriorPredictive:
    """Prior predictive check of ``priors`` for ``spec`` on the neighbourhoods of ``design``.

    Parameters
    ----------
    spec : ModelSpec
        Model specification.
    priors : PriorSet
        Prior set to check.
    design : Design
        The data's design (exposures, deprivation, LAs); outcome counts are not used.
    draws : int
        Prior draws.
    seed : int
        Random seed.
    prob : float
        Interval probability.
    chunk : int
        Draws processed at once (memory: ``chunk x rows`` floats).
    year : int, optional
        Census year of the data: published gradient scores for the outcome and year are put beside
        the implied ones (none when None).

    Returns
    -------
    PriorPredictive
    """
    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be in (0, 1), got {prob}")
    pd_draws = prior_draws(spec, priors, design, draws=draws, seed=seed)
    codes = np.array([s.split("|", 1)[0] for s in design.row_ids.astype(str)])
    dec = deciles_of(design.x, codes)
    onehot = (dec[:, None] == np.arange(1, 11)[None, :]).astype(float)
    expo = np.exp(design.log_exposure)
    children = expo @ onehot
    rows_per = onehot.sum(0)
    dec_rate, dec_imp, share = [], [], []
    log_limit = np.log(IMPOSSIBLE_RATE / 1e4)
    for s in range(0, draws, chunk):
        eta = _log_rates(spec, design, pd_draws, slice(s, s + chunk))
        with np.errstate(over="ignore", invalid="ignore"):
            dec_rate.append(1e4 * (np.exp(eta) * expo) @ onehot / children)
        bad = (eta > log_limit).astype(float)
        dec_imp.append(bad @ onehot / rows_per)
        share.append(bad.mean(1))
    rate = np.concatenate(dec_rate)
    imp = np.concatenate(dec_imp)
    share_arr = np.concatenate(share)
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    deciles = pd.DataFrame({
        "decile": np.arange(1, 11),
        "deprivation_min": [design.x[dec == k].min() for k in range(1, 11)],
        "deprivation_max": [design.x[dec == k].max() for k in range(1, 11)],
        "neighbourhoods": [len(set(codes[dec == k])) for k in range(1, 11)],
        "children": children,
        "rate_median": np.nanquantile(rate, 0.5, axis=0),
        "rate_lower": np.nanquantile(rate, lo, axis=0),
        "rate_upper": np.nanquantile(rate, hi, axis=0),
        "impossible_share": imp.mean(0), "prob": prob})
    gradients = _prior_gradients(spec, design, pd_draws, prob=prob, year=year)
    return PriorPredictive(prior_set=priors.name, deciles=deciles,
                           impossible_share=float(share_arr.mean()),
                           impossible_median=float(np.median(share_arr)),
                           impossible_any=float((share_arr > 0).mean()), gradients=gradients,
                           n_draws=draws, outcome=spec.stages[0], year=year)


def _prior_gradients(spec: ModelSpec, design: Design, draws: dict[str, np.ndarray], *,
                     prob: float, year: int | None, outcome: str | None = None) -> pd.DataFrame:
    """Implied gradient scores of a typical LA at mean LA deprivation and -/+ 10 points."""
    family = {r["name"] for f in families.all_families() for r in f.parameters}  # dispersion, zi...
    names = tuple(n for n in STAGE_VARS if n not in family)  # the typical LA's coefficients
    post = xr.Dataset({k: (("chain", "draw", "stage")[:draws[k].ndim + 1], draws[k][None])
                       for k in names if k in draws})
    if "stage" in post.dims:  # stacked: one set of rows per stage
        return pd.concat([_prior_gradients(spec, design, {k: v[:, i] if v.ndim == 2 else v
                                                          for k, v in draws.items() if k in names}, prob=prob,
                                           year=year, outcome=stage)
                          .assign(stage=stage) for i, stage in enumerate(spec.stages)], ignore_index=True)
    step = 0.1 / spec.deprivation.scale
    rows = []
    for level, off in LA_LEVELS.items():
        X = design.X_mean + off
        if X <= 0 and spec.la_deprivation.transform == "log":
            continue
        z = float(z_of(X, design.X_mean, spec))
        if "gradient" in post:
            score = np.exp(step * typical_gradient(post, spec, z=z)).to_numpy().ravel()
        else:
            score = np.ones(post.sizes["draw"])
        lo, med, hi = np.quantile(score, [(1 - prob) / 2, 0.5, (1 + prob) / 2])
        rows.append({"la_level": level, "la_deprivation": X, "median": med, "lower": lo,
                     "upper": hi, "p_below_1": float((score < 1).mean()),
                     "published": published_gradient(outcome or spec.stages[0], year, level), "prob": prob})
    return pd.DataFrame(rows)

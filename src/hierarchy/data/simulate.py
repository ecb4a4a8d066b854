"""Calibrated national simulator of neighbourhood counts with a known truth.

:func:`simulate` draws one count per neighbourhood (LSOA), or per neighbourhood x stratum, and stage
from a negative binomial multilevel model whose parameters are set so that the published figures are
reproduced; :func:`simulate_years` does the same for several years (neighbourhood x year rows, each
year calibrated to its own DfE LA totals, the LA effects persisting, an optional gradient trend; its
own docstring describes its truth); :func:`write` saves the table (parquet) and its truth (JSON) side
by side.

Data-generating process
-----------------------
For neighbourhood i in LA j, stage s (``referral``, ``s47``, ``cp_plan``, ``looked_after``)::

    y_is ~ NegBin(mu_is, phi_s)                 (variance mu + mu^2 / phi)
    log mu_is = log E_i + alpha_js + (beta_js + o_k) * w_i + r_k
    w_i = (x_i - X_j) / 0.1                     (within-LA centring, per 10 points)
    beta_js = log g(X_j) + log(G_s / 1.62) + v_j + e_js
    log g(X) = d0 + d1 * l + d2 * l^2,  l = clip(log(X / Xbar), log(0.04/Xbar), log(0.28/Xbar))

x is the neighbourhood income rate, X_j the child-weighted mean of x over LA j and Xbar the
unweighted mean of X_j over LAs. (d0, d1, d2) solve g(Xbar) = 1.62, g(Xbar - 0.1) = 2.33,
g(Xbar + 0.1) = 1.39 exactly (the published referral gradient scores); ``G_s`` (gradient at mean
LA deprivation) is 1.62, 1.72, 1.80, 1.95 for the four stages. The curve is clipped to X in
[0.04, 0.28] so that the least deprived LAs (X down to 0.029) do not extrapolate the quadratic;
``v_j ~ N(0, tau)`` with ``tau = 0.10`` is shared across stages and ``e_js ~ N(0, 0.03)`` adds a
little stage-specific slope noise (none for referrals). ``alpha_js`` is solved so that each LA's
expected total, summed over its rows, equals the DfE count for ``year`` (referrals ->
``referrals``, s47 -> ``s47``, cp_plan -> ``cpp_start``, looked_after -> ``cla_at31``, from the
nearest year with data when ``year`` has none). An LA without a DfE value gets the national rate
times its children; the truth lists these. Dispersions phi: 6, 5, 4, 4.

Strata (``o_k`` on the slope, ``r_k`` on the log rate): age bands multiply the gradient score by
1.10, 1.03, 0.96, 0.90 (0-4, 5-9, 10-15, 16-17) and the rate by 1.15, 0.95, 1.00, 0.85; sex: no
gradient difference, male/female rate ratio 1.05, exposure split 0.488 female / 0.512 male. The
log multipliers are centred so their national exposure-weighted mean is 0, so the pooled gradient
and ``alpha`` keep their unstratified meaning. Rows with zero exposure (an empty age band) are left
out. Ethnicity (broad groups White, Mixed, Asian, Black, Other) splits each row's children by its
neighbourhood's *simulated* ethnic shares (:func:`hierarchy.data.findings.ethnic_populations`; a user
with Census 2021 tables gives those instead, see that module) and multiplies the gradient score by the
group's score over White's (1.91, 1.62, 1.48, 1.27, 1.40) and the rate by 1, 1.5, 0.6, 1.2, 0.9,
centred as above. ``interaction=`` adds, for named ethnicity x sex x age-band strata, a log rate and a
log gradient beyond these additive main effects (MAIHDA's intersectional interaction; the truth's
``interaction`` gives the planted values and the part main effects cannot carry); off by default.

Table columns
-------------
``neighbourhood``, ``la``, ``msoa``, [``ethnicity``], [``age_band``], [``sex``], ``deprivation`` (= x),
``exposure`` (int64 children in the row; strata rows sum to the LSOA's children), ``referral``,
``s47``, ``cp_plan``, ``looked_after`` (int64), ``la_rural_share``, ``la_log_density``.

Truth (JSON)
------------
``year``, ``seed``, ``geography`` (source), ``family`` ("negative_binomial"), ``centring``,
``strata``, ``n_rows``, ``n_la``, ``la_deprivation`` {``measure``, ``mean`` (Xbar),
``transform`` ("log"), ``curve_clip`` [0.04, 0.28], ``clipped_las``}, ``stages`` (per stage:
``d0``, ``d1``, ``d2``, ``gradient_at_mean``, ``gradient_10_less``, ``gradient_10_more``,
``dispersion``, ``tau``, ``stage_noise_sd``, ``slope_residual_sd``, ``a0``, ``a1``,
``intercept_residual_sd`` (OLS of alpha on unclipped l over LAs), ``correlation`` (of intercept
and slope residuals), ``la_gradient_range`` [min, max of exp(beta_j)], ``la_gradient_q05_q95``,
``target_column``, ``target_year``, ``imputed_las``, ``expected_total``, ``dfe_total``,
``simulated_total``, ``stratum_gradient_at_mean`` {stratum: score}), ``strata_terms`` (slope and
rate offsets), ``las`` (per LA: ``la``, ``X``, ``l``, ``children`` and per stage ``alpha``
(null when the target is 0), ``beta``, ``gradient``, ``expected``, ``variance`` (of the
simulated total under the model), ``dfe``, ``imputed``, ``simulated``) and ``deciles``
(national deciles of x over neighbourhoods, 1 = least deprived: ``x_min``, ``x_max``,
``children`` and per stage the ``expected`` and ``simulated`` rate per 10,000 children). With
``interaction=`` or ``interaction_sd=``: ``interaction`` {``group`` ("ethnicity:sex:age_band"),
``planted``, ``sd``, ``offsets`` (log rate and log gradient per stratum label), ``beyond_main_effects``
(the part additive main effects cannot carry: what a MAIHDA main-effects fit estimates)}.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.data.calibration import (  # noqa: F401  (moved there; importable from here as before)
    CURVE_CLIP,
    DISPERSION,
    GRADIENT_AT_MEAN,
    MAIHDA_INTERACTION,
    MAIHDA_INTERACTION_SD,
    MSOA_SD,
    REFERRAL_CURVE,
    SIM_STAGES,
    STAGE_NOISE_SD,
    TARGET_COLUMN,
    TAU,
    _deciles,
    _off_the_curve,
    _targets,
    curve_coefficients,
    log_gradient,
)
from hierarchy.data.intersections import (
    _check_interaction,
    _interaction_offsets,
    _interaction_truth,
    beyond_main_effects,
    indicator_name,
    main_effect_indicators,
    stratum_labels,
)
from hierarchy.data.population import _check_strata, _frame, _one_year, _Population, _population
from hierarchy.data.reference import Geography
from hierarchy.errors import HierarchyError
from hierarchy.paths import atomic_path

__all__ = ["simulate", "simulate_years", "parse_years", "write", "curve_coefficients", "log_gradient",
           "SIM_STAGES", "MAIHDA_INTERACTION", "stratum_labels", "beyond_main_effects",
           "main_effect_indicators", "indicator_name"]


# --------------------------------------------------------------------------------------------


def simulate(geo: Geography, *, year: int = 2019, strata: tuple[str, ...] = (),
             seed: int = 0, la_conditions: bool = False,
             interaction: dict[str, tuple[float, float]] | None = None,
             interaction_sd: tuple[float, float] = (0.0, 0.0),
             spatial: tuple[float, float] | None = None, graph: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate neighbourhood counts for every stage, calibrated to DfE LA totals.

    Parameters
    ----------
    geo : Geography
        Reference or generated geography (with its DfE table).
    year : int
        DfE ``time_period`` whose LA totals the expected counts reproduce.
    strata : tuple of str
        Any of ``"ethnicity"``, ``"age"``, ``"sex"``. Ethnic groups are simulated (module docstring).
    seed : int
        Seed of the numpy random generator; same seed, same counts.
    la_conditions : bool
        Moderate the LA gradients by the LA conditions (:data:`LA_CONDITION_MODERATION`).
    interaction : dict, optional
        Intersectional interaction beyond the additive main effects: ``{"Black/male/10-15": (rate
        ratio, gradient multiplier)}`` (labels ethnicity/sex/age_band; needs all three strata), e.g.
        :data:`MAIHDA_INTERACTION`. Default none; the truth's ``interaction`` says what was planted.
    interaction_sd : (float, float)
        SDs of an interaction (log rate, log gradient per 10 points) drawn for every ethnicity x sex x
        age-band stratum, e.g. :data:`MAIHDA_INTERACTION_SD`; default none.
    spatial : (float, float), optional
        ``(sd, mix)`` of a BYM2 neighbourhood field added to every stage's log rate
        (:func:`hierarchy.data.geography.draw_bym2`), whose unstructured part then stands in for the
        negative binomial's overdispersion: counts are Poisson given the field (the truth of
        ``models/gradient_bym2_poisson.toml``); the truth's ``spatial`` holds its values.
    graph : hierarchy.data.geography.Graph, optional
        The neighbourhood graph of ``spatial`` (default :func:`spatial_graph` of ``geo``).

    Returns
    -------
    table : pandas.DataFrame
        Columns as in the module docstring.
    truth : dict
        JSON-serialisable parameters and checks (see the module docstring).
    """
    strata = _check_strata(strata)
    planted = _check_interaction(interaction, strata)
    offsets, _ = _interaction_offsets(planted, interaction_sd, strata, seed)
    # A stream of its own: the synthetic geography draws from default_rng(seed), and sharing it
    # would make the LA slope noise a copy of the LA deprivation draws.
    rng = np.random.default_rng([seed, 20190331])
    pop = _population(geo, strata, rng, la_conditions, seed=seed, interaction=offsets)
    spatial_truth = None
    if spatial is not None:
        pop, spatial_truth = _with_spatial_field(geo, pop, spatial, graph, seed)
    lsoa, la = geo.lsoa, geo.la
    la_codes, X, x, ell, idx = pop.la_codes, pop.X, pop.x, pop.ell, pop.rows["idx"]
    mus, counts, per_la, stages = _one_year(geo, pop, year, rng, poisson=spatial is not None)
    table = _frame(geo, pop, pop.rows["exposure"], counts)

    deciles = _decile_truth(lsoa, x, idx, mus, counts)
    extremes = _extremes(x, lsoa["children"].to_numpy(dtype=float), idx, mus["referral"])
    clipped = [str(c) for c, xx in zip(la_codes, X, strict=True)
               if xx < CURVE_CLIP[0] or xx > CURVE_CLIP[1]]
    las = _la_truth(la, la_codes, X, ell, per_la)

    truth: dict[str, Any] = {
        "year": int(year), "seed": int(seed), "geography": geo.source,
        "family": "negative_binomial",
        "centring": "within/between: w = (x - X)/0.1",
        "strata": list(strata), "n_rows": len(table), "n_la": len(la_codes),
        "la_deprivation": _la_deprivation_truth(pop, clipped),
        "msoa": _msoa_truth(pop),
        "la_conditions": {"gradient_per_sd": pop.per_sd,
                          "note": "added to each LA's log gradient per SD over LAs of the condition "
                                  "(sd with ddof=0), same for every stage"},
        "stages": stages, "strata_terms": pop.strata_terms, "las": las, "deciles": deciles,
        "extremes": extremes,
    }
    if offsets:
        truth["interaction"] = _interaction_truth(pop, planted, offsets, interaction_sd)
    if spatial_truth is not None:  # the field's unstructured part is the overdispersion: Poisson counts
        truth["spatial"] = spatial_truth
        truth["family"] = "poisson"
    return table, _jsonable(truth)


def _decile_truth(lsoa: pd.DataFrame, x: np.ndarray, idx: np.ndarray, mus: dict[str, np.ndarray],
                  counts: dict[str, np.ndarray]) -> dict[str, Any]:
    """National deciles of neighbourhood deprivation with each stage's expected and simulated rates."""
    dec = _deciles(x, lsoa["lsoa"].to_numpy().astype(str))
    kids = np.bincount(dec, lsoa["children"].to_numpy(dtype=float), minlength=11)[1:]
    deciles: dict[str, Any] = {
        "definition": "deciles of neighbourhood income rate over neighbourhoods "
                      "(equal numbers of LSOAs), 1 = least deprived; rate per 10,000 children",
        "decile": list(range(1, 11)),
        "x_min": [float(x[dec == k].min()) for k in range(1, 11)],
        "x_max": [float(x[dec == k].max()) for k in range(1, 11)],
        "children": [int(c) for c in kids],
    }
    row_dec = dec[idx]
    for s in SIM_STAGES:
        e = np.bincount(row_dec, mus[s], minlength=11)[1:]
        o = np.bincount(row_dec, counts[s].astype(float), minlength=11)[1:]
        deciles[s] = {"expected": [float(v) for v in 1e4 * e / kids],
                      "simulated": [float(v) for v in 1e4 * o / kids]}
    return deciles


def _la_truth(la: pd.DataFrame, la_codes: np.ndarray, X: np.ndarray, ell: np.ndarray,
              per_la: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One record per LA: its deprivation and, per stage, its true coefficients and totals."""
    las = []
    children_la = la["children"].to_numpy()
    for j, code in enumerate(la_codes):
        rec: dict[str, Any] = {"la": str(code), "X": float(X[j]), "l": float(ell[j]),
                               "children": int(children_la[j])}
        for s in SIM_STAGES:
            p = per_la[s]
            rec[s] = {"alpha": float(p["alpha"][j]) if np.isfinite(p["alpha"][j]) else None,
                      "beta": float(p["beta"][j]), "gradient": float(np.exp(p["beta"][j])),
                      "expected": float(p["expected"][j]),
                      "variance": float(p["variance"][j]), "dfe": float(p["dfe"][j]),
                      "imputed": bool(p["imputed"][j]),
                      "simulated": int(p["simulated"][j])}
        las.append(rec)
    return las


def spatial_graph(geo: Geography):
    """The neighbourhood graph of ``geo``: the LSOA map's queen contiguity for the reference geography
    (:func:`hierarchy.data.geography.graph_for`), a lattice with each LA a block for a generated one."""
    from hierarchy.data import geography

    return geography.graph_for(geo.lsoa["lsoa"].astype(str).to_numpy(),
                               groups=geo.lsoa["la"].astype(str).to_numpy())


def _with_spatial_field(geo: Geography, pop: _Population, spatial: tuple[float, float], graph: Any,
                        seed: int) -> tuple[_Population, dict[str, Any]]:
    """``pop`` with a BYM2 field on the neighbourhoods added to every row's log rate, and its truth."""
    from dataclasses import replace

    from hierarchy.data import geography

    sd, mix = (float(v) for v in spatial)
    if not (sd >= 0 and 0 <= mix <= 1):
        raise HierarchyError(f"spatial = (sd, mix) needs sd >= 0 and mix in [0, 1], got ({sd}, {mix}); "
                             "e.g. 0.3,0.7")
    codes = geo.lsoa["lsoa"].astype(str).to_numpy()
    graph = spatial_graph(geo) if graph is None else geography.subgraph(graph, codes, where="the geography")
    node = pd.Index(graph.codes).get_indexer(codes)
    la_of_node = pd.Series(geo.lsoa["la"].astype(str).to_numpy(), index=codes).reindex(graph.codes)
    graph = replace(graph, group=pd.factorize(la_of_node.to_numpy())[0])  # the model's law: LA sums 0 too
    field = geography.draw_bym2(graph, sd, mix, np.random.default_rng([seed, 31, 2016]))[node]
    truth = {"sd": sd, "mix": mix, "model": "BYM2 (Riebler et al. 2016): sd * (sqrt(mix / scale) * icar + "
                                            "sqrt(1 - mix) * iid), the icar summing to zero per connected part "
                                            "and per LA (the LA effects carry the LA levels); no MSOA effects",
             "graph": geography.describe(graph), "realised_sd": float(field.std(ddof=1)),
             "neighbourhood": codes.tolist(), "field": field.round(5).tolist()}
    _, msoa_of_lsoa = np.unique(geo.lsoa["msoa"].astype(str).to_numpy(), return_inverse=True)
    idx = pop.rows["idx"]  # the field stands in for the MSOA effects too: they go, so the truth is the model's
    return replace(pop, rate_off=pop.rate_off - pop.msoa_effect[msoa_of_lsoa[idx]] + field[idx],
                   msoa_effect=np.zeros_like(pop.msoa_effect)), truth


def _la_deprivation_truth(pop: _Population, clipped: list[str]) -> dict[str, Any]:
    return {"measure": "child-weighted mean of neighbourhood income rate", "mean": pop.xbar,
            "transform": "log", "curve_clip": list(CURVE_CLIP), "clipped_las": clipped,
            "note": "the gradient curve log g(X) = d0 + d1 l + d2 l^2, l = log(X/mean), is "
                    "evaluated with X clipped to curve_clip"}


def _msoa_truth(pop: _Population) -> dict[str, Any]:
    e = pop.msoa_effect
    return {"sd": MSOA_SD, "realised_sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
            "n_msoa": len(pop.msoa_codes)}


# -------------------------------------------------------------------------------------------- years

TREND_ANCHOR = 2019
"""Year in which a multi-year simulation's gradients are the published ones (the 2018-19 census)."""


def parse_years(text: str) -> tuple[int, ...]:
    """Years from ``"2013-2025"``, ``"2019,2020"`` or a mix (``"2013-2015,2019"``), in order.

    Raises
    ------
    HierarchyError
        On anything else, a reversed range or a year given twice, naming the fix.
    """
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{4})\s*-\s*(\d{4})|(\d{4})", part)
        if not m:
            raise HierarchyError(f"--years {text!r}: '{part}' is not a year or a range of years; write e.g. "
                                 "--years 2013-2025 or --years 2019,2020")
        first, last = (int(m.group(1)), int(m.group(2))) if m.group(3) is None else (int(m.group(3)),) * 2
        if last < first:
            raise HierarchyError(f"--years {text!r}: the range {part} runs backwards; write {last}-{first}")
        out += range(first, last + 1)
    twice = sorted({y for y in out if out.count(y) > 1})
    if twice:
        raise HierarchyError(f"--years {text!r} names {', '.join(map(str, twice))} more than once; give each "
                             "year once")
    return tuple(sorted(out))


def _check_years(geo: Geography, years) -> tuple[int, ...]:
    if isinstance(years, str):
        years = parse_years(years)
    try:
        years = tuple(sorted(int(y) for y in years))
    except (TypeError, ValueError):
        raise HierarchyError(f"years must be whole years such as (2019, 2020), got {years!r}") from None
    if not years:
        raise HierarchyError("no years to simulate: give at least one, e.g. years=(2019, 2020)")
    if len(set(years)) != len(years):
        raise HierarchyError(f"years {years} name a year more than once; give each year once")
    have = sorted(int(y) for y in set(geo.dfe["year"].tolist()))
    missing = [y for y in years if y not in have]
    if missing:
        span = f"{have[0]}-{have[-1]}" if have == list(range(have[0], have[-1] + 1)) else ", ".join(map(str, have))
        raise HierarchyError(f"no DfE LA figures for {', '.join(map(str, missing))} in {geo.source} (it has "
                             f"{span}): every simulated year is calibrated to that year's DfE LA totals, so "
                             f"choose years within {span} (e.g. --years {have[0]}-{have[-1]})")
    return years


def _exposure_scale(geo: Geography, year: int) -> np.ndarray:
    """Per LA: DfE's child population in ``year`` over the geography's children (1 where DfE has none)."""
    rows = geo.dfe[geo.dfe["year"] == year].set_index("la")
    pop = rows["pop_0_17"].reindex(geo.la["la"]).to_numpy(dtype=float)
    scale = pop / geo.la["children"].to_numpy(dtype=float)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _two_way(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Additive decomposition of ``alpha`` (LA x year) over the LAs with every year finite:
    ``alpha = mean + A_j + Y_t + U_jt`` with A, Y and each row and column of U summing to 0.
    Returns A (nan for LAs left out), Y, U (nan rows for them) and the mask of LAs used."""
    ok = np.isfinite(alpha).all(axis=1)
    a = alpha[ok]
    grand = a.mean()
    la_eff = a.mean(axis=1) - grand
    year_eff = a.mean(axis=0) - grand
    resid = a - grand - la_eff[:, None] - year_eff[None, :]
    A = np.full(len(alpha), np.nan)
    U = np.full(alpha.shape, np.nan)
    A[ok], U[ok] = la_eff, resid
    return A, year_eff, U, ok


def simulate_years(geo: Geography, years, *, seed: int = 0, strata: tuple[str, ...] = (),
                   la_conditions: bool = False, gradient_trend: float = 1.0
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate neighbourhood x year counts, each year calibrated to that year's DfE LA totals.

    The LA slopes (``v_j``, stage noise), the MSOA effects and the strata terms are drawn once (the
    same draws as :func:`simulate` with this ``seed``) and persist over the years; each year's
    ``alpha_jt`` is solved so that LA j's expected total equals DfE's count for year t, so the year
    effects and the LA x year variation are those DfE's LA totals imply. The truth decomposes them:
    ``alpha_jt = mean + A_j + Y_t + U_jt`` (two-way, each margin of U summing to 0), with the
    realised ``year_sd`` (of Y_t), ``la_year_sd`` (of U, on (LAs - 1)(years - 1) degrees of freedom)
    and the persistent LA intercepts A_j. Exposures are the geography's children scaled per LA so
    that each LA-year's children equal DfE's child population that year (``pop_0_17``; unscaled
    where DfE has none), rounded per row.

    Parameters
    ----------
    geo : Geography
        Reference or generated geography; its DfE table must have every year.
    years : iterable of int, or str
        DfE ``time_period`` years; a string such as ``"2013-2025"`` or ``"2019,2020"`` is read by
        :func:`parse_years`.
    seed : int
        Seed of the numpy random generator; same seed, same counts.
    strata : tuple of str
        Any of ``"age"``, ``"sex"``.
    la_conditions : bool
        As in :func:`simulate`.
    gradient_trend : float
        Multiplier of every gradient score (every stage, every LA) per year after
        :data:`TREND_ANCHOR` (1.0: flat; 1.03: 3% steeper each year, shallower before 2019).

    Returns
    -------
    table : pandas.DataFrame
        The columns of :func:`simulate` plus ``year`` (int64), year-major; rows with no children that
        year are left out.
    truth : dict
        ``years``, ``seed``, ``geography``, ``family``, ``strata``, ``n_rows``, ``n_la``,
        ``la_deprivation``, ``msoa``, ``la_conditions``, ``gradient_trend`` {``ratio_per_year``,
        ``log_per_year``, ``anchor_year``}, ``stages`` (per stage: ``dispersion``, ``tau``,
        ``target_column``, ``by_year`` {year: ``gradient_at_mean``, ``gradient_10_less``,
        ``gradient_10_more``, ``target_year``, ``imputed_las``, ``expected_total``, ``dfe_total``,
        ``simulated_total``}, ``year_effect`` {year: Y_t - Y_first}, ``year_sd``, ``la_year_sd``,
        ``la_intercept_sd``, ``decomposed_las``), ``las`` (per LA: ``la``, ``X``, ``l``, ``children`` and
        per stage ``intercept`` (A_j) and ``beta``/``gradient`` in the anchor year) and ``la_years``
        (per LA x year: ``la``, ``year``, ``exposure`` and per stage ``alpha``, ``la_year_effect``
        (U_jt), ``expected``, ``variance``, ``dfe``, ``imputed``, ``simulated``).
    """
    strata = _check_strata(strata)
    years = _check_years(geo, years)
    trend = float(gradient_trend)
    if not (math.isfinite(trend) and trend > 0):
        raise HierarchyError(f"gradient_trend is a ratio per year (1.0 = flat), got {gradient_trend!r}")
    rng = np.random.default_rng([seed, 20190331])  # as simulate: the same LA effects for a seed
    pop = _population(geo, strata, rng, la_conditions, seed=seed)
    la_codes, n_la = pop.la_codes, len(pop.la_codes)
    frames, la_years = [], []
    alphas = {s: np.empty((n_la, len(years))) for s in SIM_STAGES}
    by_year: dict[str, dict[str, Any]] = {s: {} for s in SIM_STAGES}
    anchor_beta: dict[str, np.ndarray] = {}
    for t, year in enumerate(years):
        log_trend = math.log(trend) * (year - TREND_ANCHOR)
        exposure = np.rint(pop.rows["exposure"] * _exposure_scale(geo, year)[pop.row_la]).astype(np.int64)
        _, counts, per_la, stages = _one_year(geo, pop, year, rng, exposure=exposure, log_trend=log_trend)
        frame = _frame(geo, pop, exposure, counts)
        frame.insert(frame.columns.get_loc("deprivation"), "year", np.int64(year))
        frames.append(frame[exposure > 0])
        kids = np.bincount(pop.row_la, exposure, minlength=n_la)
        for s in SIM_STAGES:
            alphas[s][:, t] = per_la[s]["alpha"]
            st = stages[s]
            by_year[s][str(year)] = {k: st[k] for k in (
                "gradient_at_mean", "gradient_10_less", "gradient_10_more", "la_gradient_range", "target_year",
                "imputed_las", "expected_total", "dfe_total", "simulated_total")}
            anchor_beta[s] = per_la[s]["beta"] - log_trend
        la_years += _la_year_records(la_codes, year, kids, per_la)
    table = pd.concat(frames, ignore_index=True)

    stage_truth, intercepts = _year_stage_truth(alphas, by_year, years, la_years)
    las = _year_la_truth(geo, pop, intercepts, anchor_beta)
    clipped = [str(c) for c, xx in zip(la_codes, pop.X, strict=True) if xx < CURVE_CLIP[0] or xx > CURVE_CLIP[1]]
    truth: dict[str, Any] = {
        "years": list(years), "seed": int(seed), "geography": geo.source, "family": "negative_binomial",
        "centring": "within/between: w = (x - X)/0.1", "strata": list(strata), "n_rows": len(table),
        "n_la": n_la, "n_years": len(years),
        "la_deprivation": _la_deprivation_truth(pop, clipped), "msoa": _msoa_truth(pop),
        "la_conditions": {"gradient_per_sd": pop.per_sd,
                          "note": "added to each LA's log gradient per SD over LAs of the condition"},
        "gradient_trend": {"ratio_per_year": trend, "log_per_year": math.log(trend), "anchor_year": TREND_ANCHOR,
                           "note": "every gradient score (every stage and LA) is multiplied by ratio_per_year "
                                   "for each year after anchor_year (divided before it)"},
        "exposure": "the geography's children scaled per LA so each LA-year's children equal DfE's "
                    "pop_0_17 that year (unscaled where DfE has none), rounded per row",
        "year_effects": "alpha_jt = mean + A_j + Y_t + U_jt over the LAs with every alpha finite; year_effect "
                        "is Y_t - Y_first (the log rate ratio to the first year of a typical LA at w = 0); "
                        "year_sd the SD of Y_t (ddof 1); la_year_sd the SD of U_jt on (LAs-1)(years-1) df",
        "stages": stage_truth, "strata_terms": pop.strata_terms, "las": las, "la_years": la_years,
    }
    return table, _jsonable(truth)



def _la_year_records(la_codes: np.ndarray, year: int, kids: np.ndarray,
                     per_la: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One truth record per LA for ``year``: its children and, per stage, its intercept and totals."""
    records = []
    for j, code in enumerate(la_codes):
        rec: dict[str, Any] = {"la": str(code), "year": int(year), "exposure": int(kids[j])}
        for s in SIM_STAGES:
            p = per_la[s]
            rec[s] = {"alpha": p["alpha"][j], "expected": p["expected"][j], "variance": p["variance"][j],
                      "dfe": p["dfe"][j], "imputed": bool(p["imputed"][j]),
                      "simulated": int(p["simulated"][j])}
        records.append(rec)
    return records


def _year_la_truth(geo: Geography, pop: _Population, intercepts: dict[str, np.ndarray],
                   anchor_beta: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One truth record per LA of :func:`simulate_years`: its deprivation and, per stage, its persistent
    intercept and its log gradient in the anchor year."""
    las = []
    for j, code in enumerate(pop.la_codes):
        rec = {"la": str(code), "X": float(pop.X[j]), "l": float(pop.ell[j]),
               "children": int(geo.la["children"].to_numpy()[j])}
        for s in SIM_STAGES:
            rec[s] = {"intercept": intercepts[s][j], "beta": float(anchor_beta[s][j]),
                      "gradient": float(np.exp(anchor_beta[s][j]))}
        las.append(rec)
    return las


def _year_stage_truth(alphas: dict[str, np.ndarray], by_year: dict[str, dict[str, Any]], years: tuple[int, ...],
                      la_years: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each stage's truth over the years, from the two-way decomposition of its LA x year intercepts
    (:func:`_two_way`); adds each LA-year's ``la_year_effect`` to ``la_years`` (year-major records).

    Returns
    -------
    stage_truth : dict
        Per stage, the ``stages`` entry of :func:`simulate_years`' truth.
    intercepts : dict
        Per stage, the persistent LA intercepts A_j.
    """
    stage_truth: dict[str, Any] = {}
    intercepts: dict[str, np.ndarray] = {}
    for s in SIM_STAGES:
        A, Y, U, ok = _two_way(alphas[s])
        n_la = len(A)
        intercepts[s] = A
        dof = (int(ok.sum()) - 1) * (len(years) - 1)
        for t in range(len(years)):
            for j in range(n_la):
                la_years[t * n_la + j][s]["la_year_effect"] = U[j, t]
        stage_truth[s] = {
            "dispersion": DISPERSION[s], "tau": TAU, "stage_noise_sd": 0.0 if s == "referral" else STAGE_NOISE_SD,
            "target_column": TARGET_COLUMN[s], "by_year": by_year[s],
            "year_effect": {str(y): float(Y[t] - Y[0]) for t, y in enumerate(years)},
            "year_sd": float(Y.std(ddof=1)) if len(years) > 1 else 0.0,
            "la_year_sd": float(math.sqrt(np.nansum(U**2) / dof)) if dof > 0 else 0.0,
            "la_intercept_sd": float(np.nanstd(A, ddof=1)) if ok.sum() > 1 else 0.0,
            "decomposed_las": int(ok.sum()),
        }
    return stage_truth, intercepts


EXTREME_LOW = 0.01
"""Published lower extreme: neighbourhoods with under 1% of families income deprived."""
EXTREME_HIGH = 0.55
"""Upper extreme: neighbourhoods at or above 55% income deprived (the published 64% is the most
deprived neighbourhood; 55% keeps more than a handful of neighbourhoods in the group)."""


def extreme_groups(x: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of the two published extremes of neighbourhood deprivation ``x``.

    ``least``: x < 1%; ``most``: x >= 55%. Where a (small, generated) geography has no
    neighbourhood in a group, the group falls back to the 1% of neighbourhoods at that end (at least
    one); the truth records which definition was used.
    """
    x = np.asarray(x, dtype=float)
    k = max(1, int(round(0.01 * len(x))))
    order = np.argsort(x, kind="stable")
    least, most = x < EXTREME_LOW, x >= EXTREME_HIGH
    if not least.any():
        least = np.zeros(len(x), bool)
        least[order[:k]] = True
    if not most.any():
        most = np.zeros(len(x), bool)
        most[order[-k:]] = True
    return {"least": least, "most": most}


def _extremes(x: np.ndarray, children: np.ndarray, idx: np.ndarray, mu: np.ndarray) -> dict[str, Any]:
    """Expected referral rate per 10,000 children in the published extremes of deprivation."""
    groups = extreme_groups(x)
    mu_lsoa = np.bincount(idx, mu, minlength=len(x))
    out: dict[str, Any] = {"published": {"least": 100.0, "most": 1340.0},
                           "note": "published: about 100 per 10,000 where under 1% of families are "
                                   "income deprived, more than 1,340 in the most deprived (64%)"}
    for name, m in groups.items():
        fixed = EXTREME_LOW if name == "least" else EXTREME_HIGH
        used_fixed = bool(((x < fixed) if name == "least" else (x >= fixed)).any())
        out[name] = {"definition": (f"x < {fixed}" if name == "least" else f"x >= {fixed}") if used_fixed
                     else f"the 1% of neighbourhoods at the {name}-deprived end (none beyond {fixed})",
                     "neighbourhoods": int(m.sum()), "x_min": float(x[m].min()), "x_max": float(x[m].max()),
                     "expected_rate": float(1e4 * mu_lsoa[m].sum() / children[m].sum())}
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write(table: pd.DataFrame, truth: dict[str, Any], out: Path | str) -> Path:
    """Write the table to ``out`` (parquet) and the truth beside it, both atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`simulate`.
    truth : dict
        From :func:`simulate`.
    out : pathlib.Path or str
        Parquet path; the truth goes to ``out`` with suffix ``.truth.json``.

    Returns
    -------
    pathlib.Path
        The truth file. The same inputs give byte-identical files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    truth_path = out.with_suffix(".truth.json")
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(out) as tmp:  # the project's one atomic writer (its leftovers are recognised and cleaned)
        pq.write_table(arrow, tmp, compression="zstd")
    text = json.dumps(truth, indent=1, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(truth_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return truth_path

"""LA x year count models of the DfE panel (NumPyro) and their estimands.

The classical check (Laplace maximum likelihood of the same model) is
:func:`hierarchy.reporting.panel_report.ml_check` (the likelihood layer does not import inference).

A panel model file (``models/panel_*.toml``) names the measures it is fitted to, one fit each::

    name = "panel_stages_nb"
    family = "nb"                       # or "poisson"
    formula = [                         # one formula per measure (hierarchy.likelihood.panel_formula)
        "referrals ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(children))",
        "s47 ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(children))",
    ]
    unit = "series"                     # "series" (stable areas over 2013-2025) or "la_code"
    deprivation = "deprivation"         # or "idaci": the LA deprivation measure (dep)
    reference_year = 2019               # t = year - reference_year
    parameterisation = "auto"           # "centred", "non_centred" or "auto"

A file is recognised as a panel model by any of the keys ``unit``, ``reference_year`` or ``deprivation``
as a string (or the old ``measures`` and ``terms``): :func:`is_panel_model`. Older files give ``measures``
and a term list ``terms = ["t", "year", "dep", "dep:t", "(1 + t | la)"]`` instead of ``formula``; they
load to the same spec, with a ``FutureWarning`` giving the formulas to write instead.

A model file carries no sampler settings: :func:`hierarchy.inference.sampling.fit_panels` fits each
measure with the same defaults as ``hierarchy fit`` and samples on until the convergence bar is met
(or ends with a WARN naming the parameter). A ``[sampling]`` table of ``chains``, ``warmup`` and
``draws`` (files written before that) is ignored with a ``FutureWarning`` saying so.

The linear predictor, for unit j (an LA) in year y with ``t = year - reference_year`` and ``z_j`` its
deprivation in 10-point units about the mean over units (``b`` for extra LA covariates ``x_j``)::

    log mu_jy = log E_jy + u_j + v_j t + g_y
    (u_j, v_j) ~ MVN((alpha + b_dep z_j + b x_j, b_t + b_dep_t z_j), Sigma)    # "(1 + t | la)"

``g_y`` are year effects with no level and no linear trend (an orthonormal basis of what is left of
the years once a constant and ``t`` are taken out), so ``alpha``, ``b_t``, ``b_dep`` and ``b_dep_t``
keep their meaning with year effects in. Terms (a spec's names; a formula writes ``year`` as ``C(year)``,
the rest as they are): ``t`` (national trend, always on when ``year`` is), ``year``, ``dep``,
``dep:t``, ``rural`` (share of children in rural LSOAs, per 10 points), ``density`` (log density about
its mean), ``(1 | la)`` or ``(1 + t | la)``. The LA-level terms sit in the means of
the LA effects (hierarchical centring); with ``parameterisation = "auto"`` the LA effects are centred
when the counts pin them down (median Poisson standard error of a unit's log rate below 0.2; DESIGN s.4)
and non-centred otherwise. A count DfE suppressed as ``"c"`` (1 to 5,
:data:`hierarchy.data.panel.SUPPRESSION_BOUNDS`) enters the likelihood as interval-censored,
``P(lo <= Y <= hi)`` under the NB or Poisson (a log-sum-exp of the pmf over its values; a series that
adds up censored parts gets the sums of their bounds); counts with other markers (``"x"``, ``"u"``, ...)
are left out of the likelihood and predicted. :func:`cell_treatment` counts the cells of each kind.

Conversion measures (s47 per referral, ...) carry the earlier stage's count as exposure, so ``alpha``
is the log conversion rate.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy.data.panel import CONVERSIONS, RATE_MEASURES, count_bounds
from hierarchy.errors import SpecError
from hierarchy.likelihood.panel_formula import FIXED_TERMS, RANDOM_TERMS, formulas_to_spec, render_panel_formula

__all__ = [
    "PanelDesign",
    "PanelFit",
    "PanelSpec",
    "cell_treatment",
    "censored_log_prob",
    "england_totals",
    "estimands",
    "diagnostic_draws",
    "is_panel_model",
    "la_estimands",
    "load_panel_spec",
    "model_args",
    "panel_design",
    "panel_model_fn",
    "panel_shape",
    "year_basis",
]

PANEL_KEYS = ("unit", "reference_year", "measures", "terms")
"""Keys only a panel model file has (a neighbourhood model file refuses them; its ``[deprivation]`` is a
table, a panel file's ``deprivation`` a string)."""


@dataclass(frozen=True)
class PanelSpec:
    """A panel model file (see the module docstring)."""

    name: str
    family: str
    measures: tuple[str, ...]
    terms: tuple[str, ...]
    unit: str = "series"
    deprivation: str = "deprivation"
    reference_year: int = 2019
    parameterisation: str = "auto"
    description: str = ""

    @property
    def la_trend(self) -> bool:
        return "(1 + t | la)" in self.terms

    @property
    def covariates(self) -> tuple[str, ...]:
        return tuple(t for t in self.terms if t in ("rural", "density"))

    def formula(self, measure: str) -> str:
        """The formula of one measure (:func:`hierarchy.likelihood.panel_formula.render_panel_formula`)."""
        return render_panel_formula(self, measure)

    def key(self, measure: str) -> str:
        """16-hex hash of what a fit of one measure depends on."""
        d = {k: getattr(self, k) for k in ("family", "terms", "unit", "deprivation", "reference_year",
                                           "parameterisation")}
        return hashlib.sha256(json.dumps({**d, "measure": measure}, sort_keys=True).encode()).hexdigest()[:16]


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise SpecError(f"{path}: cannot read panel model file ({err})") from err


def is_panel_model(path: Path) -> bool:
    """True when the model file at ``path`` is a panel model (it has a key of :data:`PANEL_KEYS`)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return any(k in raw for k in PANEL_KEYS) or isinstance(raw.get("deprivation"), str)


def load_panel_spec(path: Path) -> PanelSpec:
    """Read and check a panel model file; errors name the file, key and fix."""
    path = Path(path)
    raw = _read_toml(path)
    known = {"name", "description", "family", "formula", "measures", "terms", "unit", "deprivation",
             "reference_year", "parameterisation", "sampling"}
    if extra := sorted(set(raw) - known):
        raise SpecError(f"{path}: unknown keys {extra}; known: {sorted(known)}")
    for key in ("name", "family"):
        if key not in raw:
            raise SpecError(f"{path}: missing key {key!r}")
    family = raw["family"]
    if family not in ("nb", "poisson"):
        raise SpecError(f"{path}: family {family!r}: use 'nb' or 'poisson'")
    measures, terms = _measures_and_terms(raw, path)
    unit = raw.get("unit", "series")
    if unit not in ("series", "la_code"):
        raise SpecError(f"{path}: unit {unit!r}: use 'series' or 'la_code'")
    dep = raw.get("deprivation", "deprivation")
    if dep not in ("deprivation", "idaci"):
        raise SpecError(f"{path}: deprivation {dep!r}: use 'deprivation' (income rate) or 'idaci'")
    par = raw.get("parameterisation", "auto")
    if par not in ("auto", "centred", "non_centred"):
        raise SpecError(f"{path}: parameterisation {par!r}: use 'auto', 'centred' or 'non_centred'")
    _old_sampling(path, raw.get("sampling"))
    spec = PanelSpec(name=str(raw["name"]), family=family, measures=measures, terms=terms, unit=unit,
                     deprivation=dep, reference_year=int(raw.get("reference_year", 2019)),
                     parameterisation=par, description=str(raw.get("description", "")))
    if "formula" not in raw:
        lines = ",\n".join(f'    "{spec.formula(m)}"' for m in measures)
        warnings.warn(f"{path}: measures and terms are the old form of a panel model; write one formula per "
                      f"measure instead (the same model), in place of both:\nformula = [\n{lines},\n]",
                      FutureWarning, stacklevel=2)
    return spec


def _measures_and_terms(raw: dict, path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The measures and terms of a file: from its ``formula``, or from the old ``measures`` and ``terms``."""
    if "formula" in raw:
        if old := [k for k in ("measures", "terms") if k in raw]:
            raise SpecError(f"{path}: {' and '.join(old)} come from the formula: delete {' and '.join(old)}")
        return formulas_to_spec(raw["formula"], path)
    for key in ("measures", "terms"):
        if key not in raw:
            raise SpecError(f"{path}: missing key 'formula' (e.g. formula = [\"referrals ~ t + C(year) + dep + "
                            "dep:t + (1 + t | la) + offset(log(children))\"])")
    measures = tuple(raw["measures"])
    allowed = set(RATE_MEASURES) | set(CONVERSIONS)
    if bad := [m for m in measures if m not in allowed]:
        raise SpecError(f"{path}: measures {bad} unknown; choose from {sorted(allowed)}")
    terms = tuple(" ".join(t.split()) for t in raw["terms"])
    if bad := [t for t in terms if t not in FIXED_TERMS + RANDOM_TERMS]:
        raise SpecError(f"{path}: terms {bad} not understood; panel terms are {list(FIXED_TERMS + RANDOM_TERMS)}")
    if sum(t in RANDOM_TERMS for t in terms) != 1:
        raise SpecError(f"{path}: terms need exactly one LA term, '(1 | la)' or '(1 + t | la)'")
    if "dep:t" in terms and "dep" not in terms:
        raise SpecError(f"{path}: 'dep:t' needs 'dep' in terms")
    if "year" in terms and "t" not in terms:
        terms = ("t", *terms)  # year effects are defined net of a linear trend
    return measures, terms


OLD_SAMPLING_KEYS = ("chains", "warmup", "draws")


def _old_sampling(path: Path, sampling) -> None:
    """A ``[sampling]`` table of an older panel file: its fixed draw counts are ignored, with a warning.

    Ignored rather than refused: the counts only ever stopped a fit short of the convergence bar, and the
    fit without them estimates the same quantities, so an older file keeps working. Anything else in the
    table is not understood and refused.
    """
    if sampling is None:
        return
    if not isinstance(sampling, dict) or (extra := sorted(set(sampling) - set(OLD_SAMPLING_KEYS))):
        raise SpecError(f"{path}: [sampling] {extra if isinstance(sampling, dict) else sampling!r} not "
                        "understood; delete the [sampling] table (panel fits take no sampler settings)")
    warnings.warn(f"{path}: [sampling] ({', '.join(f'{k} = {v}' for k, v in sampling.items())}) is ignored: "
                  "panel fits sample on until R-hat <= 1.01 and ESS >= 400 (hierarchy.inference.sampling); "
                  "delete the [sampling] table", FutureWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# design


def year_basis(t: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n_years x n_years - 2) of year effects with no level and no linear trend."""
    t = np.asarray(t, float)
    x = np.column_stack([np.ones_like(t), t])
    q, _ = np.linalg.qr(np.column_stack([x, np.eye(len(t))]))
    return q[:, 2:len(t)]


@dataclass(frozen=True)
class PanelDesign:
    """Arrays for one measure: one row per unit x year (all of them, observed or not)."""

    measure: str
    units: np.ndarray          # unit codes
    unit_names: np.ndarray
    years: np.ndarray          # the measure's years
    unit_idx: np.ndarray       # per row
    year_idx: np.ndarray
    t: np.ndarray              # year - reference_year, per year
    count: np.ndarray          # NaN where suppressed
    lower: np.ndarray          # bounds of the count: = count where published, DfE's 1-5 where 'c'
    upper: np.ndarray          # (summed over a series' parts), NaN where left out
    exposure: np.ndarray       # NaN where the exposure is missing
    z: np.ndarray              # per unit: deprivation per 10 points about the mean over units
    x: np.ndarray              # per unit: extra covariates (n_units x k)
    dep_mean: float            # mean deprivation over units (a proportion)
    x_names: tuple[str, ...]
    england: pd.Series         # DfE's published England count per year
    england_exposure: pd.Series
    rate_scale: float          # 10,000 for rates per child, 100 for conversions
    neighbours: dict = field(default_factory=dict)  # unit -> list of neighbour units

    @property
    def observed(self) -> np.ndarray:
        """Cells in the likelihood: a published count and a positive exposure (a conversion whose
        earlier stage is 0 carries no information)."""
        return np.isfinite(self.count) & self.predictable

    @property
    def censored(self) -> np.ndarray:
        """Cells in the likelihood as interval-censored: no count, known bounds, a positive exposure."""
        return ~np.isfinite(self.count) & np.isfinite(self.lower) & np.isfinite(self.upper) & self.predictable

    @property
    def predictable(self) -> np.ndarray:
        return np.isfinite(self.exposure) & (np.nan_to_num(self.exposure) > 0)


def panel_design(table: pd.DataFrame, measure: str, spec: PanelSpec) -> PanelDesign:
    """Aggregate one measure of a panel table onto the spec's units (a sum is NaN if a part is)."""
    d = table[(table["measure"] == measure) & (table["level"] == "LA")]
    if not len(d):
        raise SpecError(f"measure {measure!r} has no LA rows in the panel")
    unit = spec.unit
    pre = "series_" if unit == "series" else ""
    name_col = "series_name" if unit == "series" else "la_name"
    lower, upper = count_bounds(d)
    d = d.assign(lower=lower, upper=upper)
    g = d.groupby([unit, "year"], sort=True)
    agg = pd.DataFrame({c: g[c].sum(min_count=1) for c in ("count", "exposure", "lower", "upper")})
    for c in ("count", "exposure", "lower", "upper"):  # a sum is NaN if a part is
        agg.loc[g[c].apply(lambda s: s.isna().any()), c] = np.nan
    units = np.array(sorted(d[unit].unique()))
    years = np.array(sorted(d["year"].unique()))
    full = pd.MultiIndex.from_product([units, years], names=[unit, "year"])
    agg = agg.reindex(full)
    per_unit = d.groupby(unit).first()
    dep = per_unit[pre + spec.deprivation].reindex(units).to_numpy(float)
    z = (dep - dep.mean()) / 0.1
    xs, names = [], []
    if "rural" in spec.terms:
        r = per_unit[pre + "rural_share"].reindex(units).to_numpy(float)
        xs.append((r - r.mean()) / 0.1)
        names.append("rural")
    if "density" in spec.terms:
        r = per_unit[pre + "log_density"].reindex(units).to_numpy(float)
        xs.append(r - r.mean())
        names.append("density")
    e = table[(table["measure"] == measure) & (table["level"] == "England")].set_index("year")
    code_of_number = dict(zip(d["dfe_number"], d[unit], strict=False))
    neighbours = {}
    for u, sn in per_unit["stat_neighbours"].reindex(units).items():
        near = [code_of_number.get(n) for n in str(sn).split(",") if n]
        neighbours[u] = [n for n in dict.fromkeys(near) if n and n != u]
    return PanelDesign(
        measure=measure, units=units, unit_names=per_unit[name_col].reindex(units).to_numpy(str),
        years=years, unit_idx=np.repeat(np.arange(len(units)), len(years)),
        year_idx=np.tile(np.arange(len(years)), len(units)), t=(years - spec.reference_year).astype(float),
        count=agg["count"].to_numpy(float), lower=agg["lower"].to_numpy(float),
        upper=agg["upper"].to_numpy(float), exposure=agg["exposure"].to_numpy(float), z=z,
        x=np.column_stack(xs) if xs else np.zeros((len(units), 0)), dep_mean=float(dep.mean()),
        x_names=tuple(names), england=e["count"].reindex(years), england_exposure=e["exposure"].reindex(years),
        rate_scale=100.0 if measure in CONVERSIONS else 10_000.0, neighbours=neighbours)


# --------------------------------------------------------------------------------------------
# model


def _centred(design: PanelDesign, spec: PanelSpec) -> bool:
    if spec.parameterisation != "auto":
        return spec.parameterisation == "centred"
    obs = design.observed
    tot = np.bincount(design.unit_idx[obs], weights=design.count[obs], minlength=len(design.units))
    return bool(np.median(1 / np.sqrt(np.maximum(tot, 1))) < 0.2)


def censored_log_prob(like, lower, upper, width: int):
    """``log P(lower <= Y <= upper)`` per cell: a log-sum-exp of the pmf over the ``width`` values from
    ``lower`` (values above ``upper`` left out).

    Parameters
    ----------
    like : numpyro.distributions.Distribution
        Count distribution with batch shape ``(n,)`` (one per censored cell).
    lower, upper : array of shape (n,)
        Inclusive bounds; ``upper - lower < width``.
    width : int
        Number of values summed over (static: one compile per width).
    """
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    k = lower[None, :] + jnp.arange(width, dtype=lower.dtype)[:, None]      # width x n
    lp = jnp.where(k <= upper[None, :], like.log_prob(k), -jnp.inf)
    return logsumexp(lp, axis=0)


CENSOR_BLOCK = 32  # censored cells go in padded to a multiple of this: measures share one compile


def _censored_args(design: PanelDesign) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row index, lower, upper, mask) of the censored cells, padded to a multiple of CENSOR_BLOCK."""
    rows = np.flatnonzero(design.censored)
    n = CENSOR_BLOCK * max(1, -(-len(rows) // CENSOR_BLOCK))
    pad = n - len(rows)
    idx = np.concatenate([rows, np.zeros(pad, int)])
    lo = np.concatenate([design.lower[rows], np.zeros(pad)])
    hi = np.concatenate([design.upper[rows], np.zeros(pad)])
    return idx, lo, hi, np.arange(n) < len(rows)


def _censor_width(design: PanelDesign) -> int:
    c = design.censored
    return int(max(5, np.max(design.upper[c] - design.lower[c]) + 1 if c.any() else 0))


def _model_fn(spec: PanelSpec, centred: bool, n_units: int, n_years: int, n_x: int, n_censored: int = 0,
              width: int = 5):
    """The NumPyro model for one spec and panel shape; data go in as arguments (one compile per shape)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    x_names = tuple(t for t in ("rural", "density") if t in spec.terms)
    assert len(x_names) == n_x

    def model(ui, yi, t, log_e, y, mask, z, x, basis, loc0, ci, c_lo, c_hi, c_mask):
        alpha = numpyro.sample("alpha", dist.Normal(loc0, 2.0))
        mean_u = alpha + jnp.zeros(n_units)
        if "dep" in spec.terms:
            mean_u = mean_u + numpyro.sample("b_dep", dist.Normal(0.0, 1.0)) * z
        for k, name in enumerate(x_names):
            mean_u = mean_u + numpyro.sample(f"b_{name}", dist.Normal(0.0, 1.0)) * x[:, k]
        mean_v = jnp.zeros(n_units)
        if "t" in spec.terms:
            mean_v = mean_v + numpyro.sample("b_t", dist.Normal(0.0, 0.2))
        if "dep:t" in spec.terms:
            mean_v = mean_v + numpyro.sample("b_dep_t", dist.Normal(0.0, 0.1)) * z
        sd_u = numpyro.sample("sd_u", dist.HalfNormal(1.0))
        if spec.la_trend:
            sd_v = numpyro.sample("sd_v", dist.HalfNormal(0.1))
            corr = numpyro.sample("L_corr", dist.LKJCholesky(2, 2.0))
            scale_tril = jnp.stack([sd_u, sd_v])[:, None] * corr
            mean = jnp.stack([mean_u, mean_v], axis=1)
            if centred:
                uv = numpyro.sample("uv", dist.MultivariateNormal(mean, scale_tril=scale_tril).to_event(1))
            else:
                raw = numpyro.sample("uv_raw", dist.Normal(0.0, 1.0).expand([n_units, 2]).to_event(2))
                uv = numpyro.deterministic("uv", mean + raw @ scale_tril.T)
            u, v = uv[:, 0], uv[:, 1]
        else:
            if centred:
                u = numpyro.sample("u", dist.Normal(mean_u, sd_u).to_event(1))
            else:
                raw = numpyro.sample("u_raw", dist.Normal(0.0, 1.0).expand([n_units]).to_event(1))
                u = numpyro.deterministic("u", mean_u + sd_u * raw)
            v = mean_v
        eta = log_e + u[ui] + v[ui] * t[yi]
        if "year" in spec.terms:
            sd_g = numpyro.sample("sd_g", dist.HalfNormal(0.2))
            g_raw = numpyro.sample("g_raw", dist.Normal(0.0, sd_g).expand([n_years - 2]).to_event(1))
            g = numpyro.deterministic("g", basis @ g_raw)
            eta = eta + g[yi]
        if spec.family == "nb":
            inv_sqrt_phi = numpyro.sample("inv_sqrt_phi", dist.HalfNormal(1.0))
            phi = numpyro.deterministic("phi", 1.0 / inv_sqrt_phi**2)
            family = lambda m: dist.NegativeBinomial2(m, phi)  # noqa: E731
        else:
            family = dist.Poisson
        mu = jnp.exp(eta)
        numpyro.sample("y", family(mu).mask(mask).to_event(1), obs=y)  # censored, left-out cells: masked
        if n_censored:  # DfE's 'c' cells: P(lo <= Y <= hi)
            lp = censored_log_prob(family(mu[ci]), c_lo, c_hi, width)
            numpyro.factor("y_censored", jnp.sum(jnp.where(c_mask, lp, 0.0)))

    return model


def _model_args(design: PanelDesign) -> tuple:
    obs = design.observed
    ok = design.predictable
    y = np.where(obs, design.count, 0.0)
    log_e = np.log(np.where(ok, design.exposure, 1.0))
    loc0 = float(np.log(design.count[obs].sum() / design.exposure[obs].sum()))
    basis = year_basis(design.t) if len(design.t) > 2 else np.zeros((len(design.t), 0))
    return (design.unit_idx, design.year_idx, design.t, log_e, y, obs, design.z, design.x, basis, loc0,
            *_censored_args(design))


@dataclass(frozen=True)
class PanelFit:
    """Posterior draws of one measure under one spec (draws flattened over chains)."""

    spec: PanelSpec
    design: PanelDesign
    draws: dict[str, np.ndarray]
    centred: bool
    seconds: float
    diagnostics: dict

    def la_effects(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, v): draws x units; v is the LA trend (or its mean when LAs share one trend)."""
        if "uv" in self.draws:
            return self.draws["uv"][..., 0], self.draws["uv"][..., 1]
        u = self.draws["u"]
        v = np.zeros_like(u)
        if "b_t" in self.draws:
            v = v + self.draws["b_t"][:, None]
        if "b_dep_t" in self.draws:
            v = v + self.draws["b_dep_t"][:, None] * self.design.z[None, :]
        return u, v

    def g(self) -> np.ndarray:
        """Year effects, draws x years (zeros without a 'year' term)."""
        if "g" in self.draws:
            return self.draws["g"]
        return np.zeros((len(self.draws["alpha"]), len(self.design.years)))

    def log_rate(self) -> np.ndarray:
        """log rate per exposure unit, draws x units x years."""
        u, v = self.la_effects()
        return u[:, :, None] + v[:, :, None] * self.design.t[None, None, :] + self.g()[:, None, :]


def panel_shape(design: PanelDesign, spec: PanelSpec) -> tuple:
    """What the compiled program of one measure depends on besides its data: measures with the same
    shape share one sampler (``panel_model_fn(spec, shape)``), their data go in as arguments."""
    return (_centred(design, spec), len(design.units), len(design.years), design.x.shape[1],
            len(_censored_args(design)[0]), _censor_width(design))


def panel_model_fn(spec: PanelSpec, shape: tuple):
    """The NumPyro model of ``spec`` for measures of one :func:`panel_shape`; call it with :func:`model_args`."""
    return _model_fn(spec, *shape)


def model_args(design: PanelDesign) -> tuple:
    """The data of one measure, as the arguments of :func:`panel_model_fn`'s model."""
    return _model_args(design)


def diagnostic_draws(grouped: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The draws (chain, draw, ...) that convergence is judged on: the sampled and derived parameters
    without the non-centred raw draws, and the LA intercept-trend correlation instead of its
    Cholesky factor (whose constant entries have no R-hat)."""
    out = {k: v for k, v in grouped.items() if not k.endswith("_raw") and k != "L_corr"}
    if "L_corr" in grouped:
        out["corr_uv"] = grouped["L_corr"][..., 1, 0]
    return out


def cell_treatment(design: PanelDesign) -> pd.DataFrame:
    """How many unit x year cells of a measure each treatment covered: ``observed`` (a published
    count), ``censored`` (DfE's ``"c"``: between its bounds) and ``left out`` (another marker, no
    published count, or no positive exposure: predicted, not in the likelihood)."""
    obs, cen = design.observed, design.censored
    return pd.DataFrame({"measure": design.measure, "treatment": ["observed", "censored", "left out"],
                         "cells": [int(obs.sum()), int(cen.sum()), int((~obs & ~cen).sum())]})


# --------------------------------------------------------------------------------------------
# estimands


def _interval(x: np.ndarray, prob: float) -> tuple[float, float, float]:
    lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
    return float(np.mean(x)), float(lo), float(hi)


def england_totals(fit: PanelFit, *, prob: float = 0.9) -> pd.DataFrame:
    """Predicted England count per year beside DfE's published England figure.

    ``predicted``: the sum over every LA of its fitted count for the year. For a negative binomial
    (a Poisson whose mean carries a gamma LA-year effect) an observed cell's fitted count is the
    posterior mean of that effect times ``mu`` (``mu (phi + y) / (phi + mu)``); a suppressed cell's
    is ``mu``, predicted from the LA's intercept and trend, the year effect and its exposure.
    ``model_mean`` sums ``mu`` alone (no LA-year effects). ``diff_pct`` compares the posterior mean
    of ``predicted`` with the published figure.
    """
    d = fit.design
    rate = np.exp(fit.log_rate())                                   # draws x units x years
    e = d.exposure.reshape(len(d.units), len(d.years))
    complete = np.isfinite(e).all(axis=0)
    mu = rate * np.where(np.isfinite(e), e, 0.0)[None]
    y = d.count.reshape(len(d.units), len(d.years))
    fitted = mu
    if "phi" in fit.draws:  # NB2 = Poisson with a gamma LA-year effect: its posterior mean given the count
        phi = fit.draws["phi"][:, None, None]
        fitted = np.where(np.isfinite(y)[None], mu * (phi + np.nan_to_num(y)[None]) / (phi + mu), mu)
    total = fitted.sum(axis=1)
    model_mean = mu.sum(axis=1).mean(axis=0)
    rows = []
    for k, yr in enumerate(d.years):
        mean, lo, hi = _interval(total[:, k], prob)
        pub = float(d.england.get(yr, np.nan))
        obs = d.count.reshape(len(d.units), len(d.years))[:, k]
        rows.append({"measure": d.measure, "year": int(yr), "published": pub, "predicted": mean,
                     "lower": lo, "upper": hi, "diff_pct": 100 * (mean / pub - 1) if pub else np.nan,
                     "model_mean": float(model_mean[k]),
                     "model_mean_diff_pct": 100 * (model_mean[k] / pub - 1) if pub else np.nan,
                     "suppressed_cells": int(np.isnan(obs).sum()),
                     "exposure_complete": bool(complete[k])})
    return pd.DataFrame(rows)


def estimands(fit: PanelFit, *, prob: float = 0.9) -> pd.DataFrame:
    """England estimands in the field's units, with ``prob`` intervals.

    Rows: the England rate per year (predicted total / exposure; per 10,000 children, or per 100 of
    the earlier stage), the typical-LA rate at mean LA deprivation per year, the ratio per 10 points
    of LA deprivation per year, the England change per year (annualised, first to last year, %), the
    typical LA's change per year (%), and the change in the deprivation ratio per year.
    """
    d = fit.design
    dr = fit.draws
    s = d.rate_scale
    unit = "per 10,000 children" if s == 10_000 else f"per 100 {RATE_OR_STAGE.get(d.measure, '')}".strip()
    rows = []

    def add(name, yr, x, units):
        m, lo, hi = _interval(x, prob)
        rows.append({"measure": d.measure, "estimand": name, "year": yr, "mean": m, "lower": lo, "upper": hi,
                     "units": units})

    e = d.exposure.reshape(len(d.units), len(d.years))
    ok = np.isfinite(e)
    rate = np.exp(fit.log_rate())
    eng = np.sum(rate * np.where(ok, e, 0)[None], axis=1) / np.sum(np.where(ok, e, 0), axis=0)[None]
    g = fit.g()
    bt = dr.get("b_t", np.zeros_like(dr["alpha"]))
    typical = dr["alpha"][:, None] + bt[:, None] * d.t[None] + g
    for k, yr in enumerate(d.years):
        add("England rate", int(yr), s * eng[:, k], unit)
        add("rate at mean LA deprivation", int(yr), s * np.exp(typical[:, k]), unit)
        if "b_dep" in dr:
            bdt = dr.get("b_dep_t", np.zeros_like(dr["b_dep"]))
            add("ratio per 10 points of LA deprivation", int(yr), np.exp(dr["b_dep"] + bdt * d.t[k]), "ratio")
    n = len(d.years) - 1
    if n > 0:
        add(f"England change per year {d.years[0]}-{d.years[-1]}", None,
            100 * ((eng[:, -1] / eng[:, 0]) ** (1 / n) - 1), "% per year")
        add(f"England change {d.years[0]}-{d.years[-1]}", None, eng[:, -1] / eng[:, 0], "ratio")
    if "b_t" in dr:
        add("typical LA change per year", None, 100 * (np.exp(bt) - 1), "% per year")
    if "b_dep_t" in dr:
        add("change in deprivation ratio per year", None, 100 * (np.exp(dr["b_dep_t"]) - 1), "% per year")
    return pd.DataFrame(rows)


RATE_OR_STAGE = {m: den for m, (_num, den) in CONVERSIONS.items()}


def la_estimands(fit: PanelFit, unit: str | None = None, *, prob: float = 0.9) -> pd.DataFrame:
    """Per-LA estimands: the LA's rate in the first and last year and its change per year (%), with
    intervals; all units, or one (code or name)."""
    d = fit.design
    lr = fit.log_rate()
    _u, v = fit.la_effects()
    g = fit.g()
    idx = range(len(d.units))
    if unit is not None:
        hit = [i for i in idx if unit in (d.units[i], d.unit_names[i])]
        if not hit:
            raise SpecError(f"no LA {unit!r} in the {d.measure} panel; codes look like {d.units[0]!r}")
        idx = hit
    n = len(d.years) - 1
    rows = []
    for i in idx:
        first = _interval(d.rate_scale * np.exp(lr[:, i, 0]), prob)
        last = _interval(d.rate_scale * np.exp(lr[:, i, -1]), prob)
        ch = _interval(100 * (np.exp((lr[:, i, -1] - lr[:, i, 0]) / max(n, 1)) - 1), prob)
        trend = _interval(100 * (np.exp(v[:, i]) - 1), prob)
        rows.append({"measure": d.measure, "unit": d.units[i], "name": d.unit_names[i],
                     "rate_first": first[0], "rate_first_lower": first[1], "rate_first_upper": first[2],
                     "rate_last": last[0], "rate_last_lower": last[1], "rate_last_upper": last[2],
                     "change_pct_per_year": ch[0], "change_lower": ch[1], "change_upper": ch[2],
                     "trend_pct_per_year": trend[0], "trend_lower": trend[1], "trend_upper": trend[2],
                     "first_year": int(d.years[0]), "last_year": int(d.years[-1])})
    del g
    return pd.DataFrame(rows)

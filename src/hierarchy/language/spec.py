"""Model specifications as data, read from ``models/*.toml``.

A model file carries an lme4/brms formula (:mod:`hierarchy.language.formula`) beside the domain settings it
keeps::

    name = "inverse_intervention_nb_log"
    family = "negative_binomial"    # poisson | negative_binomial | poisson_lognormal | zinb
    formula = "referral ~ w * z + (1 + w | la) + offset(log(exposure))"
    categorical = []                # extra categorical columns (besides hierarchy.STRATA and C(col))

    [deprivation]
    scale = 0.1                     # effects per 10 percentage points of income deprivation
    centring = "within_between"     # w = (x - X_la) / scale ; or "grand_mean": (x - mean x) / scale

    [la_deprivation]
    measure = "mean"                # child-weighted mean of x over the LA, or an la_* column
    transform = "log"               # z = log(X / mean X)  |  "identity": z = (X - mean X) / scale

    [la]
    parameterisation = "auto"       # auto | centred | non_centred
    stage_structure = "correlated"  # stacked stages: "correlated" (one LKJ over every stage's
                                    # LA effects) | "anchored" (later stages follow the first
                                    # stage's LA effects with loadings, plus small independent
                                    # stage deviations; see hierarchy.likelihood.model)

``+ car(neighbourhood)`` (or ``car(neighbourhood, type = "bym2")``) adds a BYM2 neighbourhood effect on
the map's graph (``spatial = "bym2"``; :mod:`hierarchy.likelihood.spatial`).

Without ``formula`` the older switches say the same (``outcome``, ``exposure``, ``strata``,
``[la] random_gradient / between_effect / cross_level / covariates``, ``[msoa] random_intercept``);
a formula sets them and may not be mixed with them. Both forms compile to the same spec and hash:
the formula is surface syntax, the roles are the model (:func:`hierarchy.language.formula.render` writes any
spec back as one formula).

``auto`` decides per LA effect (each stage's intercept and gradient): centred where the counts pin
the effect down (DESIGN section 4: there the non-centred form mixes hundreds of times worse),
non-centred where they do not; see :func:`hierarchy.language.design.centring`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hierarchy.config import config_hash, did_you_mean, read_toml
from hierarchy.errors import SpecError
from hierarchy.language.formula import SPATIAL_TYPES, compile_formula, render

FAMILIES = ("poisson", "negative_binomial", "poisson_lognormal", "zinb")
"""The family modules' names (:mod:`hierarchy.likelihood.families`, which this layer may not import; a test
checks the two agree): a family is declared in its module, this list only lets a model file name it."""


@dataclass(frozen=True)
class Deprivation:
    scale: float = 0.1
    centring: str = "within_between"


@dataclass(frozen=True)
class LADeprivation:
    measure: str = "mean"
    transform: str = "log"


@dataclass(frozen=True)
class LALevel:
    random_intercept: bool = True
    random_gradient: bool = True
    between_effect: bool = True
    cross_level: bool = True
    covariates: tuple[str, ...] = ()
    parameterisation: str = "auto"
    stage_structure: str = "correlated"


@dataclass(frozen=True)
class MSOALevel:
    random_intercept: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A validated model specification (see module docstring for the file format)."""

    name: str
    family: str = "negative_binomial"
    outcome: str | tuple[str, ...] = "referral"
    exposure: str = "exposure"
    strata: tuple[str, ...] = ()
    description: str = ""
    deprivation: Deprivation = field(default_factory=Deprivation)
    la_deprivation: LADeprivation = field(default_factory=LADeprivation)
    la: LALevel = field(default_factory=LALevel)
    msoa: MSOALevel = field(default_factory=MSOALevel)
    row_terms: tuple[str, ...] = ()  # neighbourhood-level terms, e.g. ("rural", "w:rural")
    groups: tuple[tuple[str, bool], ...] = ()  # other grouping columns: (column, with a gradient)
    stratum_gradient: bool = True  # strata move the gradient too (w:C(g))
    categorical: tuple[str, ...] = ()
    spatial: str = ""  # "bym2": a BYM2 effect per neighbourhood of the map's graph (car(neighbourhood))
    formula: str = field(default="", compare=False)  # as written (surface syntax: not in the hash)

    @property
    def formula_text(self) -> str:
        """The model as one lme4/brms formula."""
        return render(self)

    @property
    def stages(self) -> tuple[str, ...]:
        """The modelled count columns (one unless stages are stacked)."""
        return (self.outcome,) if isinstance(self.outcome, str) else tuple(self.outcome)

    @property
    def data_columns(self) -> dict[str, tuple[str, ...]]:
        """The count, stratum and row-key columns the model names, as :func:`hierarchy.data.table.load`
        and ``data_hash`` take them (``counts=``, ``strata=``, ``keys=``), so any column a formula names is
        validated and hashed. ``keys``: the columns of row terms and groups (``year`` of ``Year + w:Year``
        or ``(1 | la:year)``), which may tell the rows of a neighbourhood x year table apart."""
        keys = [c for c in [*self.row_columns, *self.group_columns] if c not in ("la", "msoa", *self.strata)]
        return {"counts": self.stages, "strata": self.strata, "keys": tuple(dict.fromkeys(keys))}

    @property
    def row_columns(self) -> list[str]:
        """The table columns the neighbourhood-level terms read (``rural`` of ``w:rural``)."""
        return list(dict.fromkeys(c for t in self.row_terms for c in t.split(":") if c not in ("w", "z")))

    @property
    def group_columns(self) -> list[str]:
        """The table columns the group terms read (``la`` and ``year`` of ``(1 | la:year)``)."""
        return list(dict.fromkeys(c for g, _ in self.groups for c in g.split(":")))

    @property
    def hashed_columns(self) -> dict[str, tuple[str, ...]]:
        """``data_columns`` plus every other column the design reads (``numbers``: row-term columns,
        a named exposure or LA deprivation measure; ``codes``: group-term columns), as ``data_hash``
        takes them: a fit, a sweep's content key and a data check then see a change to any of them."""
        measure = [self.la_deprivation.measure] if self.la_deprivation.measure != "mean" else []
        return {**self.data_columns, "numbers": tuple(dict.fromkeys([*self.row_columns, self.exposure, *measure])),
                "codes": tuple(self.group_columns)}

    @property
    def stacked(self) -> bool:
        return len(self.stages) > 1

    @property
    def anchored(self) -> bool:
        """Whether later stages' LA effects are anchored on the first stage's (see hierarchy.likelihood.model)."""
        return self.stacked and self.la.stage_structure == "anchored"

    @property
    def coefs(self) -> tuple[str, ...]:
        """LA-varying coefficients, the ``coef`` dimension of the model."""
        return ("intercept", "gradient") if self.la.random_gradient else ("intercept",)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("formula")  # surface syntax: the fields below are the model (formula_text renders them)
        d["la"]["covariates"] = list(self.la.covariates)
        # fields added with the formula language: omitted at their defaults, so specs written
        # before them (and their formula twins) keep their hash
        for key, default in (("row_terms", ()), ("groups", ()), ("stratum_gradient", True),
                             ("categorical", ()), ("spatial", "")):
            if d[key] == default or (isinstance(default, tuple) and not d[key]):
                d.pop(key)
            elif isinstance(default, tuple):
                d[key] = [list(g) if isinstance(g, tuple) else g for g in d[key]]
        if not isinstance(self.outcome, str):
            d["outcome"] = list(self.outcome)
        if self.strata:
            d["strata"] = list(self.strata)
        else:
            d.pop("strata")
        return d

    def hash(self) -> str:
        """16-hex hash of the canonical form (ignores the free-text description)."""
        d = self.to_dict()
        d.pop("description")
        if d["la"]["stage_structure"] == "correlated":  # added later: earlier fits keep their hash
            d["la"].pop("stage_structure")
        return config_hash(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> ModelSpec:
        """Validate nested data; errors name ``source``, the key and the allowed values."""
        d = dict(d)
        sections = {"deprivation": Deprivation, "la_deprivation": LADeprivation,
                    "la": LALevel, "msoa": MSOALevel}
        scalars = {"name", "family", "outcome", "exposure", "description", "strata", "formula", "categorical",
                   "row_terms", "groups", "stratum_gradient", "spatial"}  # the last four: the compiled form
        for key in d:
            if key not in scalars | set(sections):
                raise SpecError(f"{source}: unknown key '{key}'"
                                f"{did_you_mean(key, sorted(scalars | set(sections)))}")
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise SpecError(f"{source}: a model spec needs name = \"...\"")
        for key in ("family", "description", "exposure", "formula", "spatial"):
            _typed(source, key, d.get(key, ""), str)
        kwargs = _scalar_keys({k: d[k] for k in scalars if k in d}, d, source)
        kwargs.update(_section_tables(sections, d, source))
        if "formula" in kwargs:
            kwargs.update(_from_formula(kwargs, d, source))
        spec = cls(**kwargs)
        _check(spec, source)
        return spec


def _scalar_keys(kwargs: dict[str, Any], d: dict[str, Any], source: str) -> dict[str, Any]:
    """:meth:`ModelSpec.from_dict`'s top-level keys, checked and in their Python types."""
    kwargs["categorical"] = _names(source, "categorical", d.get("categorical", []))
    if isinstance(kwargs.get("outcome"), list):
        out = _names(source, "outcome", kwargs["outcome"])
        kwargs["outcome"] = out[0] if len(out) == 1 else out
    elif "outcome" in kwargs:
        _typed(source, "outcome", kwargs["outcome"], str)
    if "strata" in kwargs:
        kwargs["strata"] = _names(source, "strata", kwargs["strata"])
    if "row_terms" in kwargs:
        kwargs["row_terms"] = _names(source, "row_terms", kwargs["row_terms"])
    if "groups" in kwargs:
        g = kwargs["groups"]
        if not (isinstance(g, list) and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                                            and isinstance(x[1], bool) for x in g)):
            raise SpecError(f"{source}: groups must be a list of [column, with_gradient] pairs")
        kwargs["groups"] = tuple((x[0], x[1]) for x in g)
    if "stratum_gradient" in kwargs:
        _typed(source, "stratum_gradient", kwargs["stratum_gradient"], bool)
    return kwargs


def _section_tables(sections: dict[str, type], d: dict[str, Any], source: str) -> dict[str, Any]:
    """:meth:`ModelSpec.from_dict`'s tables (``[la]``, ``[deprivation]``...), each checked key by key."""
    kwargs: dict[str, Any] = {}
    for key, kind in sections.items():
        table = d.get(key, {})
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [{key}] must be a table")
        allowed = list(kind.__dataclass_fields__)
        for sub, value in table.items():
            if sub not in allowed:
                raise SpecError(f"{source}: [{key}] has no key '{sub}'"
                                f"{did_you_mean(sub, allowed)}; allowed: {', '.join(allowed)}")
            if sub == "covariates":
                table = {**table, "covariates": _names(source, "la.covariates", value)}
            else:
                _typed(source, f"{key}.{sub}", value, type(kind.__dataclass_fields__[sub].default))
        kwargs[key] = kind(**table)
    return kwargs


def _typed(source: str, key: str, value: Any, kind: type) -> None:
    """Refuse a value of the wrong TOML type (``"false"`` for false, ``"0.1"`` for 0.1)."""
    ok = (isinstance(value, int | float) and not isinstance(value, bool)) if kind is float else \
        isinstance(value, kind)
    if not ok:
        want = {bool: "true or false (no quotes)", float: "a number (no quotes)", str: "a quoted string"}[kind]
        raise SpecError(f"{source}: {key} = {_short(value)} must be {want}")


def _short(value: Any) -> str:
    """``repr(value)`` cut short (a nested or 40 KB value is not echoed whole)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 3, 80, 80, 6, 6
    return r.repr(value)


def _names(source: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{source}: {key} must be a list of column names, e.g. [\"age_band\"], "
                        f"got {_short(value)}")
    return tuple(value)


_FORMULA_SETS = ("outcome", "exposure", "strata", "row_terms", "groups", "stratum_gradient", "spatial")
_FORMULA_SETS_LA = ("random_gradient", "between_effect", "cross_level", "covariates")


def _from_formula(kwargs: dict[str, Any], d: dict[str, Any], source: str) -> dict[str, Any]:
    """Spec fields from ``formula``; refuses the older switches beside it (they would disagree)."""
    clash = [k for k in _FORMULA_SETS if k in d] + \
        [f"la.{k}" for k in _FORMULA_SETS_LA if k in d.get("la", {})] + \
        ["msoa.random_intercept" for _ in [0] if "random_intercept" in d.get("msoa", {})]
    if clash:
        raise SpecError(f"{source}: {', '.join(clash)} and formula both say which terms the model has: "
                        "remove the former (the formula sets them)")
    c = compile_formula(kwargs["formula"], categorical=kwargs["categorical"], source=source)
    la = kwargs.get("la", LALevel())
    la = LALevel(random_intercept=True, random_gradient=c.random_gradient, between_effect=c.between_effect,
                 cross_level=c.cross_level, covariates=c.covariates, parameterisation=la.parameterisation,
                 stage_structure=la.stage_structure)
    return {"outcome": c.outcome, "exposure": c.exposure, "strata": c.strata, "la": la,
            "msoa": MSOALevel(random_intercept=c.msoa), "row_terms": c.row_terms, "groups": c.groups,
            "stratum_gradient": c.stratum_gradient if c.strata else True, "spatial": c.spatial}


def _choice(source: str, what: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise SpecError(f"{source}: {what} = {value!r} is not one of {', '.join(options)}"
                        f"{did_you_mean(str(value), options)}")


def _check(spec: ModelSpec, source: str) -> None:
    _choice(source, "family", spec.family, FAMILIES)
    for col in (*spec.stages, spec.exposure, *spec.strata):
        if not col.isidentifier():
            raise SpecError(f"{source}: {col!r} is not a column name (letters, digits and _)")
    if len(set(spec.stages)) != len(spec.stages):
        raise SpecError(f"{source}: outcome lists a stage twice: {list(spec.stages)}")
    if spec.exposure in spec.stages:
        raise SpecError(f"{source}: {spec.exposure} is both the outcome and the exposure")
    _choice(source, "deprivation.centring", spec.deprivation.centring,
            ("within_between", "grand_mean"))
    _choice(source, "la_deprivation.transform", spec.la_deprivation.transform, ("identity", "log"))
    _choice(source, "la.parameterisation", spec.la.parameterisation,
            ("auto", "centred", "non_centred"))
    _choice(source, "la.stage_structure", spec.la.stage_structure, ("correlated", "anchored"))
    if spec.spatial:
        _choice(source, "spatial", spec.spatial, SPATIAL_TYPES)
    if not (math.isfinite(spec.deprivation.scale) and spec.deprivation.scale > 0):
        raise SpecError(f"{source}: deprivation.scale must be a finite number > 0 (0.1 = per 10 points), "
                        f"got {spec.deprivation.scale}")
    m = spec.la_deprivation.measure
    if m != "mean" and not m.startswith("la_"):
        raise SpecError(f"{source}: la_deprivation.measure must be 'mean' or an la_* column, got {m!r}")
    if not spec.la.random_intercept:
        raise SpecError(f"{source}: la.random_intercept = false is not supported: neighbourhoods "
                        "are nested in LAs, so the LA intercept must vary")
    for c in spec.la.covariates:
        if not c.startswith("la_"):
            raise SpecError(f"{source}: la.covariates entry {c!r} must name an la_* column")
    if spec.stacked and (spec.row_terms or spec.groups):
        raise SpecError(f"{source}: stacked stages with neighbourhood terms or extra groups are not "
                        "supported yet; fit the stages one at a time")


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a model spec file."""
    try:
        raw = read_toml(path)
    except RecursionError:
        raise SpecError(f"{path}: the TOML is nested too deeply to read; a model file is name, family, formula "
                        "and a few tables of settings (see models/gradient_nb.toml)") from None
    return ModelSpec.from_dict(raw, source=str(path))

"""Model specifications as data, read from ``models/*.toml``.

A spec says which count is modelled and how (all keys but ``name`` are optional)::

    name = "inverse_intervention_nb_log"
    family = "negative_binomial"    # poisson | negative_binomial | poisson_lognormal
    outcome = "referral"            # a count column (hierarchy.STAGES), or a list of them:
                                    # stages stacked in one model, each with its own intercept,
                                    # gradient, LA terms and dispersion; LA effects correlated
                                    # across stages
    strata = []                     # stratum columns (e.g. ["age_band"]): intercept and gradient
                                    # offsets against the first level
    exposure = "exposure"           # column of children at risk (log offset)

    [deprivation]
    scale = 0.1                     # effects per 10 percentage points of income deprivation
    centring = "within_between"     # w = (x - X_la) / scale ; or "grand_mean": (x - mean x) / scale

    [la_deprivation]
    measure = "mean"                # child-weighted mean of x over the LA, or an la_* column
    transform = "log"               # z = log(X / mean X)  |  "identity": z = (X - mean X) / scale

    [la]
    random_intercept = true
    random_gradient = true          # correlated with the intercept (LKJ prior)
    between_effect = true           # z in the mean of the LA intercepts
    cross_level = true              # z in the mean of the LA gradients
    covariates = []                 # la_* columns, in the means of intercepts and gradients
    parameterisation = "auto"       # auto | centred | non_centred
    stage_structure = "correlated"  # stacked stages: "correlated" (one LKJ over every stage's
                                    # LA effects) | "anchored" (later stages follow the first
                                    # stage's LA effects with loadings, plus small independent
                                    # stage deviations; see hierarchy.model)

    [msoa]
    random_intercept = false        # a middle level: neighbourhoods in MSOAs in LAs

``auto`` decides per LA effect (each stage's intercept and gradient): centred where the counts pin
the effect down (DESIGN section 4: there the non-centred form mixes hundreds of times worse),
non-centred where they do not; see :func:`hierarchy.design.centring`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hierarchy import STAGES, STRATA
from hierarchy.errors import SpecError
from hierarchy.priors import config_hash, did_you_mean, read_toml

FAMILIES = ("poisson", "negative_binomial", "poisson_lognormal")


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

    @property
    def stages(self) -> tuple[str, ...]:
        """The modelled count columns (one unless stages are stacked)."""
        return (self.outcome,) if isinstance(self.outcome, str) else tuple(self.outcome)

    @property
    def stacked(self) -> bool:
        return len(self.stages) > 1

    @property
    def anchored(self) -> bool:
        """Whether later stages' LA effects are anchored on the first stage's (see hierarchy.model)."""
        return self.stacked and self.la.stage_structure == "anchored"

    @property
    def coefs(self) -> tuple[str, ...]:
        """LA-varying coefficients, the ``coef`` dimension of the model."""
        return ("intercept", "gradient") if self.la.random_gradient else ("intercept",)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["la"]["covariates"] = list(self.la.covariates)
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
        scalars = {"name", "family", "outcome", "exposure", "description", "strata"}
        for key in d:
            if key not in scalars | set(sections):
                raise SpecError(f"{source}: unknown key '{key}'"
                                f"{did_you_mean(key, sorted(scalars | set(sections)))}")
        kwargs: dict[str, Any] = {k: d[k] for k in scalars if k in d}
        if isinstance(kwargs.get("outcome"), list):
            out = tuple(kwargs["outcome"])
            kwargs["outcome"] = out[0] if len(out) == 1 else out
        if "strata" in kwargs:
            if not isinstance(kwargs["strata"], list | tuple):
                raise SpecError(f"{source}: strata must be a list of column names, e.g. [\"age_band\"]")
            kwargs["strata"] = tuple(kwargs["strata"])
        if not isinstance(kwargs.get("name"), str):
            raise SpecError(f"{source}: a model spec needs name = \"...\"")
        for key, kind in sections.items():
            table = d.get(key, {})
            if not isinstance(table, dict):
                raise SpecError(f"{source}: [{key}] must be a table")
            allowed = list(kind.__dataclass_fields__)
            for sub in table:
                if sub not in allowed:
                    raise SpecError(f"{source}: [{key}] has no key '{sub}'"
                                    f"{did_you_mean(sub, allowed)}; allowed: {', '.join(allowed)}")
            if key == "la" and "covariates" in table:
                table = {**table, "covariates": tuple(table["covariates"])}
            kwargs[key] = kind(**table)
        spec = cls(**kwargs)
        _check(spec, source)
        return spec


def _choice(source: str, what: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise SpecError(f"{source}: {what} = {value!r} is not one of {', '.join(options)}"
                        f"{did_you_mean(str(value), options)}")


def _check(spec: ModelSpec, source: str) -> None:
    _choice(source, "family", spec.family, FAMILIES)
    for stage in spec.stages:
        _choice(source, "outcome", stage, STAGES)
    if len(set(spec.stages)) != len(spec.stages):
        raise SpecError(f"{source}: outcome lists a stage twice: {list(spec.stages)}")
    for stratum in spec.strata:
        _choice(source, "strata", stratum, STRATA)
    _choice(source, "deprivation.centring", spec.deprivation.centring,
            ("within_between", "grand_mean"))
    _choice(source, "la_deprivation.transform", spec.la_deprivation.transform, ("identity", "log"))
    _choice(source, "la.parameterisation", spec.la.parameterisation,
            ("auto", "centred", "non_centred"))
    _choice(source, "la.stage_structure", spec.la.stage_structure, ("correlated", "anchored"))
    if not spec.deprivation.scale > 0:
        raise SpecError(f"{source}: deprivation.scale must be > 0 (0.1 = per 10 points)")
    m = spec.la_deprivation.measure
    if m != "mean" and not m.startswith("la_"):
        raise SpecError(f"{source}: la_deprivation.measure must be 'mean' or an la_* column, got {m!r}")
    if not spec.la.random_intercept:
        raise SpecError(f"{source}: la.random_intercept = false is not supported: neighbourhoods "
                        "are nested in LAs, so the LA intercept must vary")
    for c in spec.la.covariates:
        if not c.startswith("la_"):
            raise SpecError(f"{source}: la.covariates entry {c!r} must name an la_* column")


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a model spec file."""
    return ModelSpec.from_dict(read_toml(path), source=str(path))

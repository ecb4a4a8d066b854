"""Prior sets as data: one named distribution per parameter group, read from TOML.

A prior is nested data ``{"dist": "Normal", "mu": 0.0, "sigma": 0.5}`` (the same shape as
pymc-extras' ``Prior``, flattened): :class:`Prior` validates it, round-trips it through
``to_dict``/``from_dict`` and turns it into a PyMC or a NumPyro distribution with the same
density. Parameter names follow PyMC (``mu``, ``sigma``, ``alpha``, ``beta``, ``lam``, ``nu``).

A prior set file::

    name = "weakly_informative"
    description = "..."
    [intercept]
    dist = "Normal"
    mu = -3.0
    sigma = 1.0

Parameter groups (:data:`GROUPS`) are on the model's scale: log rate per child for the intercept;
log rate ratio per 10 percentage points of neighbourhood deprivation for the gradient; per unit of
the transformed LA deprivation for ``la_deprivation`` and ``cross_level``. The negative binomial
has mean ``mu`` and dispersion ``phi`` (variance ``mu + mu**2 / phi``): ``dispersion`` is ``phi``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierarchy.config import config_hash, did_you_mean, read_toml
from hierarchy.errors import SpecError

# dist name -> (required parameters, support)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "Normal": (("mu", "sigma"), "real"),
    "StudentT": (("nu", "mu", "sigma"), "real"),
    "Cauchy": (("alpha", "beta"), "real"),
    "HalfNormal": (("sigma",), "positive"),
    "HalfStudentT": (("nu", "sigma"), "positive"),
    "HalfCauchy": (("beta",), "positive"),
    "Exponential": (("lam",), "positive"),
    "Gamma": (("alpha", "beta"), "positive"),
    "InverseGamma": (("alpha", "beta"), "positive"),
    "LogNormal": (("mu", "sigma"), "positive"),
    "Uniform": (("lower", "upper"), "interval"),
    "LKJ": (("eta",), "correlation"),
}

GROUPS: dict[str, str] = {
    "intercept": "real",
    "gradient": "real",
    "la_deprivation": "real",
    "cross_level": "real",
    "la_covariates": "real",
    "stage_effects": "real",
    "stratum_effects": "real",
    "la_sd": "positive",
    "la_corr": "correlation",
    "la_loading": "real",
    "la_stage_sd": "positive",
    "msoa_sd": "positive",
    "dispersion": "positive",
    "obs_sd": "positive",
    "neighbourhood_covariates": "real",
    "interactions": "real",
    "group_sd": "positive",
}
"""Parameter group (class) -> support its prior must have. ``neighbourhood_covariates`` and
``interactions`` are the classes of a formula's neighbourhood-level terms (without and with ``w``);
``group_sd`` the SDs of other grouping columns' effects (``(1 | year)``), unless the set has a group
named ``{column}_sd`` (as ``msoa_sd``). A ``[terms."w:rural"]`` table gives one term its own prior
(as brms's ``coef``); naming a term the model lacks is an error."""


@dataclass(frozen=True)
class Prior:
    """One distribution with fixed numeric parameters."""

    dist: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dist not in DISTRIBUTIONS:
            raise SpecError(f"unknown distribution '{self.dist}'{did_you_mean(self.dist, list(DISTRIBUTIONS))}; "
                            f"known: {', '.join(DISTRIBUTIONS)}")
        required, _ = DISTRIBUTIONS[self.dist]
        for key in self.params:
            if key not in required:
                raise SpecError(f"{self.dist} has no parameter '{key}'{did_you_mean(key, required)}; "
                                f"it takes {', '.join(required)}")
        missing = [k for k in required if k not in self.params]
        if missing:
            raise SpecError(f"{self.dist} needs parameter(s) {', '.join(missing)}")
        for key, value in self.params.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise SpecError(f"{self.dist} parameter '{key}' must be a finite number, got {value!r}")
            if key in ("sigma", "beta", "lam", "nu", "eta", "alpha") and value <= 0 and not (
                    self.dist in ("Cauchy",) and key == "alpha"):
                raise SpecError(f"{self.dist} parameter '{key}' must be > 0, got {value}")
        if self.dist == "Uniform" and self.params["lower"] >= self.params["upper"]:
            raise SpecError("Uniform needs lower < upper")
        object.__setattr__(self, "params", {k: float(v) for k, v in self.params.items()})

    @property
    def support(self) -> str:
        return DISTRIBUTIONS[self.dist][1]

    def to_dict(self) -> dict[str, Any]:
        """Nested-data form, ``{"dist": ..., **params}``."""
        return {"dist": self.dist, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        """Inverse of :meth:`to_dict`."""
        if "dist" not in d:
            raise SpecError(f"a prior needs a 'dist' key, got keys {sorted(d)}")
        params = {k: v for k, v in d.items() if k != "dist"}
        return cls(str(d["dist"]), params)

    def pymc(self, name: str, **kwargs: Any):
        """Create the PyMC random variable ``name`` (inside a model context)."""
        import pymc as pm

        return getattr(pm, self.dist)(name, **self.params, **kwargs)

    def numpyro(self):
        """The equivalent NumPyro distribution (same density as :meth:`pymc`)."""
        import numpyro.distributions as nd

        p = self.params
        match self.dist:
            case "Normal":
                return nd.Normal(p["mu"], p["sigma"])
            case "StudentT":
                return nd.StudentT(p["nu"], p["mu"], p["sigma"])
            case "Cauchy":
                return nd.Cauchy(p["alpha"], p["beta"])
            case "HalfNormal":
                return nd.HalfNormal(p["sigma"])
            case "HalfStudentT":
                return nd.FoldedDistribution(nd.StudentT(p["nu"], 0.0, p["sigma"]))
            case "HalfCauchy":
                return nd.HalfCauchy(p["beta"])
            case "Exponential":
                return nd.Exponential(p["lam"])
            case "Gamma":
                return nd.Gamma(p["alpha"], p["beta"])
            case "InverseGamma":
                return nd.InverseGamma(p["alpha"], p["beta"])
            case "LogNormal":
                return nd.LogNormal(p["mu"], p["sigma"])
            case "Uniform":
                return nd.Uniform(p["lower"], p["upper"])
        raise SpecError(f"{self.dist} has no scalar NumPyro form")  # LKJ is built by the model

    def __str__(self) -> str:
        return f"{self.dist}({', '.join(f'{k}={v:g}' for k, v in self.params.items())})"


@dataclass(frozen=True)
class PriorSet:
    """A named set of priors, one per parameter group."""

    name: str
    priors: dict[str, Prior]
    description: str = ""
    terms: dict[str, Prior] = field(default_factory=dict)  # per-term priors of neighbourhood terms

    def for_term(self, term: str) -> Prior:
        """Prior of the neighbourhood-level term ``term``: its own, or its class's."""
        if term in self.terms:
            return self.terms[term]
        return self["interactions" if "w" in term.split(":") else "neighbourhood_covariates"]

    def group_sd(self, group: str) -> Prior:
        """Prior of the SDs of grouping column ``group``'s effects."""
        return self.priors.get(f"{group}_sd") or self["group_sd"]

    def check_terms(self, row_terms) -> None:
        """Refuse per-term priors for terms the model does not have."""
        for term in self.terms:
            if term not in row_terms:
                raise SpecError(f"prior set '{self.name}' has a prior for the term '{term}', which the model "
                                f"does not have{did_you_mean(term, list(row_terms))}; its neighbourhood terms: "
                                f"{', '.join(row_terms) or 'none'}")

    def __getitem__(self, group: str) -> Prior:
        if group not in self.priors:
            raise SpecError(f"prior set '{self.name}' has no prior for '{group}'"
                            f"{did_you_mean(group, list(self.priors))}; add a [{group}] table")
        return self.priors[group]

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "description": self.description,
             **{g: p.to_dict() for g, p in self.priors.items()}}
        if self.terms:
            d["terms"] = {t: p.to_dict() for t, p in self.terms.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> PriorSet:
        """Validate nested data into a prior set; errors name ``source`` and the group."""
        d = dict(d)
        name = d.pop("name", None)
        if not isinstance(name, str) or not name:
            raise SpecError(f"{source}: a prior set needs a top-level name = \"...\"")
        description = str(d.pop("description", ""))
        priors, terms = {}, {}
        table = d.pop("terms", {})
        if not isinstance(table, dict):
            raise SpecError(f"{source}: [terms] must hold tables such as [terms.\"w:rural\"] with dist = \"...\"")
        for term, value in table.items():
            try:
                terms[term] = Prior.from_dict(value if isinstance(value, dict) else {})
            except SpecError as err:
                raise SpecError(f"{source}: [terms.\"{term}\"]: {err}") from None
            if terms[term].support != "real":
                raise SpecError(f"{source}: [terms.\"{term}\"] needs a real distribution")
        for group, value in d.items():
            if group not in GROUPS and not group.endswith("_sd"):
                raise SpecError(f"{source}: unknown parameter group '{group}'"
                                f"{did_you_mean(group, list(GROUPS))}; known: {', '.join(GROUPS)}")
            if not isinstance(value, dict):
                raise SpecError(f"{source}: [{group}] must be a table with dist = \"...\"")
            try:
                prior = Prior.from_dict(value)
            except SpecError as err:
                raise SpecError(f"{source}: [{group}]: {err}") from None
            want = GROUPS.get(group, "positive")
            if prior.support != want and not (
                    want == "positive" and prior.support == "interval" and prior.params["lower"] >= 0):
                raise SpecError(f"{source}: [{group}] needs a {want} distribution, "
                                f"{prior.dist} is {prior.support}")
            priors[group] = prior
        return cls(name=name, priors=priors, description=description, terms=terms)

    def hash(self) -> str:
        """16-hex hash of the canonical JSON form."""
        return config_hash(self.to_dict())


def load_priors(path: str | Path) -> PriorSet:
    """Read and validate a prior set file."""
    return PriorSet.from_dict(read_toml(path), source=str(path))

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
import re
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
    "Beta": (("alpha", "beta"), "unit"),
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
    "zero_inflation": "unit",
    "neighbourhood_covariates": "real",
    "interactions": "real",
    "group_sd": "positive",
    "spatial_sd": "positive",
    "spatial_mix": "unit",
}
"""Parameter group (class) -> support its prior must have. ``neighbourhood_covariates`` and
``interactions`` are the classes of a formula's neighbourhood-level terms (without and with ``w``);
``group_sd`` the SDs of other grouping columns' effects (``(1 | year)``), unless the set has a group
named ``{column}_sd`` (as ``msoa_sd``). ``zero_inflation`` is the zero-inflated NB's probability of a
structural zero ``zi`` (``family = "zinb"``, :mod:`hierarchy.likelihood.families.zinb`). ``spatial_sd`` and
``spatial_mix`` are the BYM2 term's SD and
mixing parameter (``car(neighbourhood)``, :mod:`hierarchy.likelihood.spatial`): a PC prior for the SD
(Exponential with rate ``-log(alpha) / U`` for ``P(sd > U) = alpha``) and Beta(1, 1) for the mix.
A ``[terms."w:rural"]`` table gives one term its own prior
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

    @classmethod
    def _bound(cls, dist: str, params: dict[str, Any]) -> Prior:
        """A prior of ``dist`` whose parameters may be JAX arrays, traced ones included, unvalidated
        (:meth:`PriorSet.bind`): for building NumPyro distributions only."""
        out = object.__new__(cls)
        object.__setattr__(out, "dist", dist)
        object.__setattr__(out, "params", dict(params))
        return out

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
            case "Beta":
                return nd.Beta(p["alpha"], p["beta"])
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
            if prior.support != want and not _interval_fits(prior, want):
                raise SpecError(f"{source}: [{group}] needs a {want} distribution, "
                                f"{prior.dist} is {prior.support}")
            priors[group] = prior
        return cls(name=name, priors=priors, description=description, terms=terms)

    def hash(self) -> str:
        """16-hex hash of the canonical JSON form."""
        return config_hash(self.to_dict())

    def values(self) -> dict[str, dict[str, dict[str, float]]]:
        """The numeric prior parameters as data, a pytree of floats in a fixed (sorted) order.

        Returns
        -------
        dict
            ``{"groups": {group: {param: value}}, "terms": {term: {param: value}}}``. Two sets of the
            same :meth:`structure` give trees of the same shape, which one model program can take as
            an argument (:meth:`bind`, :func:`hierarchy.likelihood.jaxmodel.with_prior_values`).
        """
        return {"groups": {g: dict(sorted(p.params.items())) for g, p in sorted(self.priors.items())},
                "terms": {t: dict(sorted(p.params.items())) for t, p in sorted(self.terms.items())}}

    def structure(self) -> tuple:
        """What a model built from this set depends on besides numbers: each group's and term's
        distribution and parameter names, sorted. Sets of equal structure differ only in numbers."""
        def part(d: dict[str, Prior]) -> tuple:
            return tuple((k, p.dist, tuple(sorted(p.params))) for k, p in sorted(d.items()))

        return part(self.priors), part(self.terms)

    def bind(self, values: dict[str, Any]) -> PriorSet:
        """This set with the numbers of ``values`` (the form of :meth:`values`), e.g. traced JAX arrays.

        The priors of the result give NumPyro distributions with those numbers; they are not
        validated as numbers (a set made from files was), so the result is for building a model
        only: its name is this set's, its :meth:`hash` and :meth:`to_dict` are not meaningful.
        ``values`` carry numbers, not distributions: check :func:`structure_difference` of the two sets
        first (Gamma and InverseGamma numbers, say, have the same names).

        Raises
        ------
        SpecError
            When ``values`` has other groups, terms or parameter names than this set.
        """
        def bound(kind: str, mine: dict[str, Prior], given: Any) -> dict[str, Prior]:
            if not isinstance(given, dict) or set(given) != set(mine):
                raise SpecError(f"prior values for {kind} {sorted(given) if isinstance(given, dict) else given} "
                                f"do not match prior set '{self.name}' ({sorted(mine)}): bind the values of a "
                                "set of the same structure")
            out = {}
            for k, p in mine.items():
                if not isinstance(given[k], dict) or set(given[k]) != set(p.params):
                    raise SpecError(f"prior values for {kind[:-1]} '{k}' have parameters "
                                    f"{sorted(given[k]) if isinstance(given[k], dict) else given[k]}, "
                                    f"prior set '{self.name}' uses {p.dist}({', '.join(p.params)})")
                out[k] = Prior._bound(p.dist, given[k])
            return out

        if not isinstance(values, dict) or set(values) != {"groups", "terms"}:
            raise SpecError("prior values must be {'groups': ..., 'terms': ...} as PriorSet.values() gives")
        return PriorSet(name=self.name, priors=bound("groups", self.priors, values["groups"]),
                        description=self.description, terms=bound("terms", self.terms, values["terms"]))


def structure_difference(a: PriorSet, b: PriorSet) -> str | None:
    """Why prior sets ``a`` and ``b`` cannot share one model program (None: same :meth:`~PriorSet.structure`).

    Returns
    -------
    str or None
        One line naming the first difference, e.g. ``"vague uses HalfCauchy for la_sd,
        weakly_informative HalfNormal"``, and how many more there are.
    """
    reasons = []
    for kind, da, db in (("", a.priors, b.priors), ("the term ", a.terms, b.terms)):
        for k in sorted(set(da) | set(db)):
            pa, pb = da.get(k), db.get(k)
            if pa is None or pb is None:
                has, lacks = (a, b) if pb is None else (b, a)
                reasons.append(f"{has.name} has a prior for {kind}{k}, {lacks.name} has none")
            elif pa.dist != pb.dist or set(pa.params) != set(pb.params):
                reasons.append(f"{a.name} uses {pa.dist} for {kind}{k}, {b.name} {pb.dist}")
    if not reasons:
        return None
    n = len(reasons) - 1
    return reasons[0] + (f" (and {n} more difference{'s' if n > 1 else ''})" if n else "")


def group_by_structure(sets: list[PriorSet]) -> list[list[int]]:
    """Indices of ``sets`` grouped by :meth:`PriorSet.structure`, in order of first appearance: each
    group's sets differ only in numbers (one model program can fit them all)."""
    groups: dict[tuple, list[int]] = {}
    for i, pset in enumerate(sets):
        groups.setdefault(pset.structure(), []).append(i)
    return list(groups.values())


def _interval_fits(prior: Prior, support: str) -> bool:
    """Whether a Uniform prior lies within ``support`` (positive: lower >= 0; unit: within [0, 1])."""
    if prior.support != "interval":
        return False
    lower, upper = prior.params["lower"], prior.params["upper"]
    return (support == "positive" and lower >= 0) or (support == "unit" and lower >= 0 and upper <= 1)


MAX_EXTENDS = 5
"""Longest chain of prior files extending each other."""


def load_priors(path: str | Path, *, _chain: tuple[str, ...] = ()) -> PriorSet:
    """Read and validate a prior set file.

    A file may change a few priors of another set: ``extends = "weakly_informative"`` (a shipped set's
    name, or a file path, relative to this file) takes every prior of that set, and the file's own
    tables (``[la_sd]``, ``[terms."w:rural"]``) replace or add to them. Without ``name`` the set is
    named after the file. The result is a whole set: its hash and the fit's stored priors list every
    prior, so a change to the base set shows.
    """
    path = Path(path)
    try:
        raw = read_toml(path)
    except RecursionError:
        raise SpecError(f"{path}: the TOML is nested too deeply to read; a prior file is tables of "
                        "dist = \"...\" and numbers (see priors/weakly_informative.toml)") from None
    if "extends" not in raw:
        return PriorSet.from_dict(raw, source=str(path))
    base_name = raw.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise SpecError(f"{path}: extends must name a prior set in quotes, e.g. extends = \"weakly_informative\"")
    if len(_chain) >= MAX_EXTENDS or str(path.resolve()) in _chain:
        raise SpecError(f"{path}: extends goes round in a circle or more than {MAX_EXTENDS} files deep "
                        f"({' -> '.join(_chain)}): extend a shipped set directly")
    from hierarchy import shipped

    beside = path.parent / base_name
    base_path = beside if beside.is_file() else shipped.resolve(base_name, "priors")
    base = load_priors(base_path, _chain=(*_chain, str(path.resolve())))
    merged = {**base.to_dict(), "name": path.stem, "description": f"{base.name} with the priors of {path.name}"}
    for key, value in raw.items():
        if key == "terms" and isinstance(value, dict) and isinstance(merged.get("terms"), dict):
            merged["terms"] = {**merged["terms"], **value}
        else:
            merged[key] = value
    return PriorSet.from_dict(merged, source=f"{path} (extends {base_name})")


# brms / Stan names of the distributions (lower case, without _), beside PyMC's
_BRMS = {"normal": "Normal", "studentt": "StudentT", "cauchy": "Cauchy", "halfnormal": "HalfNormal",
         "halfstudentt": "HalfStudentT", "halfcauchy": "HalfCauchy", "exponential": "Exponential",
         "gamma": "Gamma", "invgamma": "InverseGamma", "inversegamma": "InverseGamma", "lognormal": "LogNormal",
         "uniform": "Uniform", "beta": "Beta", "lkj": "LKJ", "lkjcorr": "LKJ", "lkjcorrcholesky": "LKJ"}
_HALF = {"Normal": ("HalfNormal", "mu"), "StudentT": ("HalfStudentT", "mu"), "Cauchy": ("HalfCauchy", "alpha")}
_OVERRIDE = re.compile(r"\s*(?P<target>[^=]+?)\s*=\s*(?P<dist>[A-Za-z_]+)\s*\((?P<args>[^()]*)\)\s*")


def parse_prior_override(text: str) -> tuple[str, Prior]:
    """One prior written in brms's spirit: ``'w:rural=normal(0, 0.05)'``, ``'la_sd=half_normal(0.3)'``.

    Parameters
    ----------
    text
        ``NAME=dist(args)``: NAME is a parameter group (``la_sd``, ``gradient``: :data:`GROUPS`) or a
        neighbourhood term as the formula writes it (``w:rural``), the one name every page uses;
        dist is a brms/Stan or PyMC name (``normal``, ``student_t``, ``half_normal``, ``lkj``, ...);
        args are numbers in the distribution's order (``student_t(nu, mu, sigma)``, ``gamma(alpha,
        beta)``) or named (``normal(mu=0, sigma=0.05)``).

    Returns
    -------
    (str, Prior)
        The name and its prior. A group's support is checked by :func:`with_prior_overrides`.

    Raises
    ------
    SpecError
        When the text is not of that form, names a distribution or parameter that does not exist, or
        names a parameter by another of its names (``b_w:rural``, ``row_coef[w:rural]``).
    """
    m = _OVERRIDE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SpecError(f"prior {str(text)[:80]!r}: write NAME=dist(numbers), e.g. 'w:rural=normal(0, 0.05)' "
                        "or 'la_sd=half_normal(0.3)'")
    target = m.group("target")
    alias = re.fullmatch(r"(?:b_(.+)|row_coef\[(.+)\])", target)
    if alias:
        term = alias.group(1) or alias.group(2)
        raise SpecError(f"prior {text!r}: call the term {term!r} as the formula writes it: "
                        f"'{term}={m.group('dist')}({m.group('args')})'")
    key = m.group("dist").replace("_", "").lower()
    dist = _BRMS.get(key) or next((d for d in DISTRIBUTIONS if d.lower() == key), None)
    if dist is None:
        raise SpecError(f"prior {text!r}: unknown distribution '{m.group('dist')}'"
                        f"{did_you_mean(key, list(_BRMS))}; known: {', '.join(sorted(_BRMS))}")
    required = DISTRIBUTIONS[dist][0]
    params: dict[str, Any] = {}
    args = [a.strip() for a in m.group("args").split(",") if a.strip()]
    for i, arg in enumerate(args):
        name, _, value = arg.rpartition("=")
        name = name.strip() or (required[i] if i < len(required) else f"argument {i + 1}")
        try:
            params[name] = float(value)
        except ValueError:
            raise SpecError(f"prior {text!r}: {arg!r} is not a number") from None
    if len(args) > len(required):
        raise SpecError(f"prior {text!r}: {dist} takes {len(required)} number(s) ({', '.join(required)}), "
                        f"got {len(args)}")
    try:
        return target, Prior(dist, params)
    except SpecError as err:
        raise SpecError(f"prior {text!r}: {err}") from None


def with_prior_overrides(priors: PriorSet, overrides: list[str] | tuple[str, ...]) -> PriorSet:
    """``priors`` with each ``NAME=dist(args)`` of ``overrides`` replacing its prior (``fit --prior``).

    A group whose prior must be positive (an SD) takes ``normal(0, s)`` as brms does, as the half-normal
    (likewise ``student_t(nu, 0, s)`` and ``cauchy(0, s)``). The set is renamed ``NAME + overrides`` so
    the fit's pages say a prior was changed; its hash changes with it.

    Raises
    ------
    SpecError
        A malformed override (:func:`parse_prior_override`), one name given twice, or a prior whose
        support does not suit the group.
    """
    d = priors.to_dict()
    terms = dict(d.pop("terms", {}))
    seen: set[str] = set()
    for text in overrides:
        target, prior = parse_prior_override(text)
        if target in seen:
            raise SpecError(f"prior for '{target}' given twice: keep one")
        seen.add(target)
        is_group = target in GROUPS or target.endswith("_sd") or target in priors.priors
        near = did_you_mean(target, list(GROUPS), cutoff=0.8)
        if not is_group and near:
            raise SpecError(f"prior {text!r}: '{target}' is not a parameter group{near}")
        half = _HALF.get(prior.dist)
        if is_group and GROUPS.get(target, "positive") == "positive" and half and prior.params[half[1]] == 0:
            prior = Prior(half[0], {k: v for k, v in prior.params.items() if k != half[1]})
        if is_group:
            d[target] = prior.to_dict()
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z_][A-Za-z0-9_]*)*", target):
            terms[target] = prior.to_dict()
        else:
            raise SpecError(f"prior {text!r}: '{target}' is neither a parameter group "
                            f"({', '.join(GROUPS)}) nor a formula term such as w:rural")
    if terms:
        d["terms"] = terms
    d["name"] = f"{priors.name} + {', '.join(overrides)}" if overrides else priors.name
    return PriorSet.from_dict(d, source="--prior")

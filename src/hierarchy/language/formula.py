"""Model formulas in lme4/brms syntax, parsed with ``formulae`` (bambi's parser) and compiled into
the roles the design and the samplers know.

A formula such as::

    referral ~ w * (z + la_inequality) + w:rural + (1 + w | la) + (1 | msoa) + offset(log(exposure))

names the outcome (a count column, or ``c(a, b, ...)`` for stacked stages), the exposure
(``offset(log(col))``) and terms built from ``w`` (within-LA neighbourhood deprivation), ``z`` (the
transformed LA deprivation) and columns of the table. Each term gets one role:

==========================  =====================================================================
term                        role
==========================  =====================================================================
``1``                       mean of the LA intercepts (required)
``w``                       mean of the LA gradients, with ``(1 + w | la)``
``z``, ``la_x``             LA level: in the mean of the LA intercepts (hierarchical centring)
``w:z``, ``w:la_x``         LA level: in the mean of the LA gradients (cross-level interaction)
``C(g)``, ``w:C(g)``        strata: intercept and gradient offsets against g's first level
``rural``, ``w:rural``      neighbourhood level: a coefficient on the row value (any product)
``(1 + w | la)``            correlated LA intercepts and gradients (``(1 | la)``: intercepts)
``(1 | msoa)``              MSOA intercepts (nested in LAs)
``(1 | g)``, ``(1 + w | g)`` a crossed or stratum group: partially pooled intercepts (and gradients);
                            ``(1 | la:year)`` each combination (LA x year variation)
``car(neighbourhood)``      a BYM2 neighbourhood effect on the map's graph (brms ``car(M, type =
                            "bym2")``; ``type = "bym2"`` is the default and only type):
                            :mod:`hierarchy.likelihood.spatial`
==========================  =====================================================================

Columns named ``la_*`` are LA-level (constant within an LA); columns in :data:`hierarchy.STRATA`,
written as ``C(col)`` or listed in the model file's ``categorical`` are categorical. Terms the
compiler cannot lay out are refused with a message naming the term and a form that works.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from hierarchy import STRATA
from hierarchy.errors import SpecError

SPECIAL = ("w", "z")
"""Terms the spec defines: within-LA neighbourhood deprivation and transformed LA deprivation."""


@dataclass(frozen=True)
class Compiled:
    """What a formula says, by role (see module docstring)."""

    outcome: str | tuple[str, ...]
    exposure: str
    random_gradient: bool
    between_effect: bool
    cross_level: bool
    covariates: tuple[str, ...]
    strata: tuple[str, ...]
    stratum_gradient: bool
    msoa: bool
    row_terms: tuple[str, ...]
    groups: tuple[tuple[str, bool], ...]  # (column, with a gradient)
    spatial: str = ""  # "bym2" with car(neighbourhood), else ""


MAX_TERMS = 200
"""Most fixed terms a formula may expand to (``a * b * c`` is 7); counted before expanding, so a
16-way product (65,535 terms) is refused at once instead of expanding for minutes."""

MAX_DEPTH = 50
"""Deepest nesting of brackets a formula may have."""

_TOKEN = re.compile(r"\s*(?:(?P<op>\*\*|[-+*:/^()|~,])|(?P<atom>[^-+*:/^()|~,\s]+))")


def _echo(text: object, limit: int = 120) -> str:
    """``repr(text)``, cut to ``limit`` characters with the full length said (no 40 KB echoes)."""
    r = repr(text) if isinstance(text, str) else f"a {type(text).__name__}"
    return r if len(r) <= limit else f"{r[:limit]}... ({len(str(text)):,} characters)"


def _precheck(text: str, source: str) -> None:
    """Refuse, before ``formulae`` sees it, what it would handle badly: ``||`` (no fix in its
    message), non-ASCII names, deep brackets (recursion) and products that expand to more than
    :data:`MAX_TERMS` terms (minutes of expansion)."""
    if "||" in text:
        raise SpecError(f"{source}: uncorrelated LA effects (1 + w || la) are not supported: the LA "
                        "intercepts and gradients share one correlation (LKJ prior la_corr). Write (1 + w | la); "
                        "to pull the correlation towards 0, give la_corr a larger eta in a prior file "
                        "(extends = \"weakly_informative\" with [la_corr] dist = \"LKJ\", eta = 20), or write "
                        "(1 | la) for LA intercepts only")
    odd = re.search(r"[^\x00-\x7f]", text)
    if odd:
        word = re.search(r"[^\s+*:~()|,/^-]*" + re.escape(odd.group()) + r"[^\s+*:~()|,/^-]*", text).group()
        ascii_ = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
        plain = re.sub(r"[^A-Za-z0-9_]+", "_", ascii_).strip("_").lower() or "col"
        raise SpecError(f"{source}: the name {word!r} has the character {odd.group()!r}: formulas take column "
                        "names of ASCII letters, digits and _; map the column to a plain name in a column map "
                        f"(--columns MAP.toml with [columns] {plain} = \"{word}\") and write {plain} in the "
                        "formula")
    depth = deepest = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise SpecError(f"{source}: the formula nests brackets {deepest} deep (at most {MAX_DEPTH}): write the "
                        "terms out with fewer brackets")
    rhs = text.split("~", 1)[1]
    n = _count_terms([m.group("op") or m.group("atom") for m in _TOKEN.finditer(rhs)])
    if n is not None and n > MAX_TERMS:
        raise SpecError(f"{source}: the formula expands to up to {n:,} terms (at most {MAX_TERMS}): a product "
                        "a * b * c has every interaction of its columns (2^k - 1 terms for k columns); write "
                        "the terms you need with + and a:b")


def _count_terms(tokens: list[str]) -> int | None:
    """Upper bound on the fixed terms the right-hand side expands to (None when it cannot tell:
    ``formulae`` then reports the syntax). Loops over sums and products; recursion only per bracket."""
    cap = 10 ** 9
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def atom() -> int:
        nonlocal pos
        tok = peek()
        if tok == "(":
            start = pos
            pos += 1
            n = total()
            if peek() == "|":  # a group term (1 + w | la): no fixed terms
                pos, n = _skip_to_close(tokens, pos), 0
            if peek() != ")":
                raise ValueError(start)
            pos += 1
            return n
        if tok is None or tok in "+*:/^)|~," or tok == "**":
            raise ValueError(pos)
        pos += 1
        if peek() == "(":  # a call: C(x) is one term, offset(log(x)) none
            pos = _skip_call(tokens, pos)
            return 0 if tok == "offset" else 1
        return 1

    def power() -> int:
        nonlocal pos
        n = atom()
        while peek() in ("**", "^"):
            pos += 1
            k = tokens[pos] if pos < len(tokens) else ""
            pos += 1
            n = min(cap, n ** int(k)) if k.isdigit() and int(k) < 64 else cap
        return n

    def product() -> int:
        nonlocal pos
        n = power()
        while peek() in ("*", ":", "/"):
            op = tokens[pos]
            pos += 1
            m = power()
            n = min(cap, n * m if op == ":" else n + n * m if op == "/" else n + m + n * m)
        return n

    def total() -> int:
        nonlocal pos
        n = 0 if peek() == "-" else product()
        while peek() in ("+", "-"):
            op = tokens[pos]
            pos += 1
            m = product()
            n = min(cap, n + m) if op == "+" else n
        return n

    try:
        n = total()
    except (ValueError, IndexError):
        return None
    return n


def _skip_to_close(tokens: list[str], pos: int) -> int:
    """Position of the ``)`` that closes the bracket ``pos`` is inside (or the end)."""
    depth = 0
    while pos < len(tokens) and not (tokens[pos] == ")" and depth == 0):
        depth += (tokens[pos] == "(") - (tokens[pos] == ")")
        pos += 1
    return pos


def _skip_call(tokens: list[str], pos: int) -> int:
    """Position after the bracketed arguments starting at ``pos`` (a call's ``(...)``)."""
    depth = 0
    while pos < len(tokens):
        depth += (tokens[pos] == "(") - (tokens[pos] == ")")
        pos += 1
        if depth == 0:
            break
    return pos


def _name(component, source: str) -> tuple[str, bool]:
    """Column name of a term component and whether it is written ``C(col)``."""
    name = component.name
    m = re.fullmatch(r"C\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", name)
    if m:
        return m.group(1), True
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SpecError(f"{source}: the term '{name}' is not supported: write columns, w, z, C(col) and "
                        "their products (a:b, a*b); transform columns in the data, not the formula")
    return name, False


SPATIAL_TYPES = ("bym2",)
"""Spatial term types ``car(neighbourhood, type = ...)`` takes (brms also has icar, escar, esicar, bym)."""

_CAR = re.compile(r"\bcar\s*\(([^()]*)\)")


def _spatial(text: str, source: str) -> tuple[str, str]:
    """The formula without its ``car(...)`` term, and the term's type (``""`` when there is none).

    ``car(neighbourhood)`` and ``car(neighbourhood, type = "bym2")`` are a BYM2 effect per neighbourhood
    of the map's graph; anything else written with ``car`` is refused with the form that works.
    """
    if not isinstance(text, str) or "car" not in text:
        return text, ""
    found = list(_CAR.finditer(text))
    if not found:
        if re.search(r"\bcar\s*\(", text):
            raise SpecError(f"{source}: write the spatial term as car(neighbourhood) or "
                            "car(neighbourhood, type = \"bym2\")")
        return text, ""
    if len(found) > 1:
        raise SpecError(f"{source}: the formula has {len(found)} car() terms; a model has at most one spatial "
                        "term: keep one car(neighbourhood)")
    m = found[0]
    before, after = text[:m.start()].rstrip(), text[m.end():].lstrip()
    if before.endswith((":", "*", "/", "|", "(")) or after.startswith((":", "*", "/", "|", ")")) or \
            "~" not in before:
        raise SpecError(f"{source}: {m.group(0)} must be a term of its own, added with + (e.g. "
                        "... + car(neighbourhood) + offset(log(exposure))); products with it and car() in a "
                        "group or on the outcome side are not supported")
    args = [a.strip() for a in m.group(1).split(",")]
    column, kind = args[0], "bym2"
    if column != "neighbourhood":
        hint = "; LAs have their own effects ((1 + w | la))" if column == "la" else ""
        raise SpecError(f"{source}: car({m.group(1)}) puts a spatial effect on '{column}'; the spatial term is "
                        f"one effect per neighbourhood of the map: write car(neighbourhood){hint}")
    for arg in args[1:]:
        key, eq, value = (part.strip() for part in arg.partition("="))
        value = value.strip("\"'")
        if key != "type" or not eq:
            raise SpecError(f"{source}: car() takes the column and type = \"bym2\", got {arg!r}: write "
                            "car(neighbourhood, type = \"bym2\"); the graph comes from the map (--geography)")
        if value not in SPATIAL_TYPES:
            raise SpecError(f"{source}: car(..., type = {value!r}) is not supported: the only type is "
                            "\"bym2\" (scaled ICAR plus unstructured effects with a mixing parameter, "
                            "Riebler et al. 2016); write car(neighbourhood, type = \"bym2\")")
        kind = value
    if before.endswith("+"):
        before = before[:-1].rstrip()
    elif after.startswith("+"):
        after = after[1:].lstrip()
    elif after or not before.endswith("~"):
        raise SpecError(f"{source}: add the spatial term with +, e.g. ... + car(neighbourhood)")
    if before.endswith("~") and not after:
        raise SpecError(f"{source}: the formula has only the spatial term: add the intercept, w and the LA level")
    rest = f"{before} {after}".strip()
    return rest, kind


def compile_formula(text: str, *, categorical: tuple[str, ...] = (), source: str = "<formula>") -> Compiled:
    """Parse ``text`` and assign each term its role; errors name ``source`` and the term."""
    text, spatial = _spatial(text, source)
    desc = _parse(text, source)
    outcome = _response(desc.response, source)
    terms, is_cat, exposure = _fixed_terms(desc, set(categorical) | set(STRATA), source)
    la_expr, msoa, groups = _groups(desc.group_terms, source)
    if la_expr is None:
        raise SpecError(f"{source}: the formula has no LA level: add (1 + w | la) (or (1 | la))")
    random_gradient = "w" in la_expr
    has = set(terms)
    if random_gradient and ("w",) not in has:
        raise SpecError(f"{source}: (1 + w | la) without a fixed w: add w to the formula (the LA gradients "
                        "vary around its mean)")
    if ("w",) in has and not random_gradient:
        raise SpecError(f"{source}: the gradient w must vary by LA in this workbench (the estimands are "
                        "per-LA gradients): write (1 + w | la)")
    cats = sorted({c for t in terms for c in t if is_cat[c]})
    for g, _ in groups:
        if g in cats:
            raise SpecError(f"{source}: '{g}' is both a fixed term and a group (1 | {g}): keep one")
    la_mean, la_grad, strata_terms, row_terms = _sort_terms(terms, is_cat, source)
    covariates = _la_covariates(la_mean, la_grad, random_gradient, source)
    strata = _stratum(strata_terms, source)
    return Compiled(outcome=outcome, exposure=exposure, random_gradient=random_gradient,
                    between_effect="z" in la_mean, cross_level="z" in la_grad, covariates=covariates,
                    strata=tuple(strata), stratum_gradient=any(w for _, w in strata_terms),
                    msoa=msoa, row_terms=tuple(row_terms), groups=tuple(groups), spatial=spatial)


def _fixed_terms(desc, categorical: set[str], source: str) -> tuple[list[tuple[str, ...]], dict[str, bool], str]:
    """The fixed terms of a ``formulae`` description (column tuples), which columns are categorical, and
    the exposure column of its offset; refuses a formula without intercept or offset, or with two offsets."""
    exposure = None
    terms: list[tuple[str, ...]] = []
    is_cat: dict[str, bool] = {}
    intercept = False
    for term in desc.common_terms:
        if type(term).__name__ == "Intercept":
            intercept = True
            continue
        if len(term.components) == 1 and term.components[0].name.startswith("offset("):
            exposure = offset_column(term.components[0].name, source, exposure, "offset(log(column))",
                                     "give one offset(log(exposure))")
            continue
        names = []
        for c in term.components:
            col, wrapped = _name(c, source)
            is_cat[col] = is_cat.get(col, False) or wrapped or col in categorical
            names.append(col)
        terms.append(tuple(names))
    if not intercept:
        raise SpecError(f"{source}: the formula drops the intercept (0 + or - 1); neighbourhoods are nested "
                        "in LAs, so the model needs an intercept whose LA means vary: remove the 0/-1")
    if exposure is None:
        raise SpecError(f"{source}: the formula has no exposure: add + offset(log(exposure)) (children at "
                        "risk; or the earlier stage's count for a conversion rate)")
    return terms, is_cat, exposure


def _sort_terms(terms: list[tuple[str, ...]], is_cat: dict[str, bool], source: str):
    """Each fixed term but ``w`` to its role: LA means (``z``, ``la_*``), LA gradients (the same with
    ``w``), strata (categorical columns, with or without ``w``) or neighbourhood-level terms."""
    la_mean, la_grad, strata_terms, row_terms = {}, {}, [], []  # dicts: ordered sets
    for t in terms:
        if t == ("w",):
            continue
        rest = tuple(c for c in t if c != "w")
        with_w = len(rest) < len(t)
        if t.count("w") > 1 or not rest:
            raise SpecError(f"{source}: the term {':'.join(t)} repeats w")
        if any(is_cat[c] for c in rest):
            if not all(is_cat[c] for c in rest):
                raise SpecError(f"{source}: the term {':'.join(t)} mixes a categorical column with a numeric "
                                "one; write the categorical part as a stratum (C(g) + w:C(g)) and the numeric "
                                "terms separately")
            strata_terms.append((tuple(sorted(rest)), with_w))
        elif len(rest) == 1 and (rest[0] == "z" or rest[0].startswith("la_")):
            (la_grad if with_w else la_mean)[rest[0]] = None
        else:
            row_terms.append(":".join(t))
    return la_mean, la_grad, strata_terms, row_terms


def _la_covariates(la_mean: dict, la_grad: dict, random_gradient: bool, source: str) -> tuple[str, ...]:
    """The LA covariates (LA-level columns but ``z``), each in both LA means when the gradient varies."""
    if la_grad and not random_gradient:
        raise SpecError(f"{source}: {', '.join('w:' + c for c in sorted(la_grad))} moves the LA gradients, "
                        "which need (1 + w | la)")
    covariates = tuple(c for c in {**la_mean, **la_grad} if c != "z")
    for c in covariates:
        if random_gradient and (c not in la_mean or c not in la_grad):
            raise SpecError(f"{source}: the LA covariate {c} must enter both LA means: write w * {c} "
                            f"(= {c} + w:{c}); one without the other is not supported yet")
    return covariates


def _stratum(strata_terms: list[tuple[tuple[str, ...], bool]], source: str) -> tuple[str, ...]:
    """The one stratum term's columns (``()`` when none); refuses several, or ``w:g`` without ``g``."""
    stratum_cols = {cols for cols, _ in strata_terms}
    if len(stratum_cols) > 1:
        raise SpecError(f"{source}: several categorical terms ({', '.join(':'.join(c) for c in stratum_cols)})"
                        ": write one stratum term, e.g. C(age_band):C(sex) for the combined strata, or make "
                        "one of them a group (1 | col)")
    strata = next(iter(stratum_cols), ())
    main = any(not w for _, w in strata_terms)
    if strata and not main:
        raise SpecError(f"{source}: w:{':'.join(strata)} needs the main effect {':'.join(strata)} too")
    return strata



def offset_column(name: str, source: str, seen: str | None, usage: str, one: str = "give one") -> str:
    """The column of an ``offset(log(column))`` term named ``name``; refused in one line (``source``) when it
    is written otherwise (``usage`` says how) or when the formula already has one (``seen``)."""
    m = re.fullmatch(r"offset\(\s*log\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*\)", name)
    if not m:
        raise SpecError(f"{source}: write the exposure as {usage}, got {name}")
    if seen is not None:
        raise SpecError(f"{source}: the formula has two offsets; {one}")
    return m.group(1)

def _parse(text: str, source: str):
    """``formulae``'s model description of ``text``, after :func:`_precheck`; errors are one line."""
    import formulae

    if not isinstance(text, str) or "~" not in text:
        got = "an empty formula" if isinstance(text, str) and not text.strip() else f"{_echo(text)}"
        raise SpecError(f"{source}: formula must be a string like "
                        f"'referral ~ w * z + (1 + w | la) + offset(log(exposure))', got {got}")
    _precheck(text, source)
    try:
        return formulae.model_description(text)
    except RecursionError:
        raise SpecError(f"{source}: the formula is too deeply nested to parse ({len(text):,} characters): "
                        "write the terms out with fewer brackets") from None
    except Exception as e:  # formulae raises several error types for bad syntax
        raise SpecError(f"{source}: cannot parse the formula {_echo(text)}: {_echo(str(e))}") from None


def _response(response, source: str) -> str | tuple[str, ...]:
    if response is None:
        raise SpecError(f"{source}: the formula has no outcome: write 'referral ~ ...'")
    name = response.term.components[0].name
    m = re.fullmatch(r"c\((.*)\)", name)
    names = [s.strip() for s in m.group(1).split(",")] if m else [name]
    for n in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
            raise SpecError(f"{source}: the outcome must be a count column or c(col, col, ...) for stacked "
                            f"stages, got {name}")
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: the outcome lists a column twice: {name}")
    return names[0] if len(names) == 1 else tuple(names)


def _groups(group_terms, source: str) -> tuple[tuple[str, ...] | None, bool, list[tuple[str, bool]]]:
    """LA expression (``("1",)`` or ``("1", "w")``), whether MSOA intercepts, other groups."""
    exprs: dict[str, list[str]] = {}
    for g in group_terms:
        factor = [c.name for c in g.factor.components]
        if factor == ["la", "msoa"] or factor == ["msoa", "la"]:
            factor = ["msoa"]  # (1 | la:msoa): MSOA codes are unique within England
        expr = "1" if type(g.expr).__name__ == "Intercept" else ":".join(c.name for c in g.expr.components)
        exprs.setdefault(":".join(factor), []).append(expr)  # a:b groups by each combination
    la = exprs.pop("la", None)
    for name, expr in ([("la", la)] if la is not None else []) + list(exprs.items()):
        bad = [e for e in expr if e not in ("1", "w")]
        if bad:
            raise SpecError(f"{source}: ({' + '.join(expr)} | {name}) has {', '.join(bad)}: a group may hold "
                            "an intercept and the gradient w only, e.g. (1 + w | " + name + ")")
        if "1" not in expr:
            raise SpecError(f"{source}: (0 + w | {name}) without intercepts is not supported: write (1 + w | "
                            f"{name})")
    msoa = exprs.pop("msoa", None)
    if msoa is not None and "w" in msoa:
        raise SpecError(f"{source}: (1 + w | msoa) is not supported: MSOAs have ~5 neighbourhoods; use (1 | msoa)")
    groups = [(g, "w" in e) for g, e in exprs.items()]
    return (tuple(la) if la is not None else None), msoa is not None, groups


def render(spec) -> str:
    """The formula of a :class:`~hierarchy.language.spec.ModelSpec` in lme4/brms syntax (for any spec)."""
    lhs = spec.outcome if isinstance(spec.outcome, str) else f"c({', '.join(spec.outcome)})"
    grad = spec.la.random_gradient
    la_terms = (["z"] if spec.la.between_effect else []) + list(spec.la.covariates)
    if grad and spec.la.cross_level == spec.la.between_effect and la_terms:
        inner = " + ".join(la_terms)
        fixed = [f"w * ({inner})" if len(la_terms) > 1 else f"w * {inner}"]
    else:
        fixed = (["w"] if grad else []) + la_terms + (["w:z"] if grad and spec.la.cross_level else []) + \
                ([f"w:{c}" for c in spec.la.covariates] if grad else [])
    if spec.strata:
        s = ":".join(f"C({c})" for c in spec.strata)
        fixed += [s] + ([f"w:{s}"] if grad and spec.stratum_gradient else [])
    fixed += list(spec.row_terms)
    parts = fixed + ["(1 + w | la)" if grad else "(1 | la)"]
    if spec.msoa.random_intercept:
        parts.append("(1 | msoa)")
    parts += [f"(1 + w | {g})" if slope else f"(1 | {g})" for g, slope in spec.groups]
    if getattr(spec, "spatial", ""):
        parts.append(f'car(neighbourhood, type = "{spec.spatial}")')
    parts.append(f"offset(log({spec.exposure}))")
    return f"{lhs} ~ " + " + ".join(parts)

"""Panel model formulas: lme4/brms formulas on the DfE LA x year panel, compiled into a panel spec's terms.

A panel model file gives one formula per measure it fits (a string, or a list of strings)::

    formula = [
        "referrals ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(children))",
        "s47 ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(referrals))",
    ]

The formulas are parsed by the neighbourhood models' parser (``formulae``, through
:mod:`hierarchy.language.formula`). The outcome is a stage count and the offset its exposure; the two
name the panel measure (:mod:`hierarchy.data.panel`): ``offset(log(children))`` (children 0-17) makes
a rate measure (``referrals``, ``s47``, ...), the earlier stage's count a conversion
(``s47`` with ``offset(log(referrals))`` is ``s47_per_referral``). The terms:

================================  ==========================================================================
term                              meaning (:mod:`hierarchy.likelihood.panel_model`)
================================  ==========================================================================
``1``                             ``alpha``, the mean of the LA intercepts (required, written or implied)
``t``                             the national trend ``b_t`` per year, ``t = year - reference_year``
``C(year)``                       year effects with **no level and no linear trend** (an orthonormal basis
                                  of what is left of the years once a constant and ``t`` are taken out),
                                  so ``alpha`` and ``b_t`` keep their meaning; needs ``t``
``dep``                           ``b_dep``: the file's ``deprivation`` measure, per 10 points
``dep:t``                         ``b_dep_t``: how the deprivation ratio changes per year; needs ``dep``
``rural``, ``density``            the share of children in rural LSOAs (per 10 points), log density
``(1 | la)``, ``(1 + t | la)``    LA intercepts (and correlated LA trends); exactly one
================================  ==========================================================================

``dep * t`` is ``dep + t + dep:t``. All formulas of one file have the same terms (a model with other
terms is another file). Anything else is refused, naming the term, the file and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

from hierarchy.data.panel import CONVERSIONS, RATE_MEASURES
from hierarchy.errors import SpecError
from hierarchy.language.formula import offset_column

__all__ = ["CHILDREN", "FIXED_TERMS", "RANDOM_TERMS", "compile_panel_formula", "formulas_to_spec",
           "panel_measure", "render_panel_formula"]

FIXED_TERMS = ("t", "year", "dep", "dep:t", "rural", "density")
RANDOM_TERMS = ("(1 | la)", "(1 + t | la)")
CHILDREN = "children"
"""The offset of a rate measure: children 0-17 (the panel's exposure for rate measures)."""

_FORMULA_OF = {"t": "t", "year": "C(year)", "dep": "dep", "dep:t": "dep:t", "rural": "rural",
               "density": "density"}
_TERM_OF = {("t",): "t", ("C(year)",): "year", ("dep",): "dep", ("dep", "t"): "dep:t", ("rural",): "rural",
            ("density",): "density"}
ALLOWED = ("t, C(year), dep, dep:t (or dep * t), rural, density, one of (1 | la) and (1 + t | la), and "
           "offset(log(children)) for a rate or offset(log(<earlier stage>)) for a conversion")


def _stages() -> dict[str, list[str]]:
    """Stage count -> the exposures it is a panel measure with (``children`` or earlier stages)."""
    out: dict[str, list[str]] = {m: [CHILDREN] for m in RATE_MEASURES}
    for num, den in CONVERSIONS.values():
        out.setdefault(num, []).append(den)
    return out


def panel_measure(outcome: str, exposure: str, source: str) -> str:
    """The panel measure of a formula's outcome and offset; a pair no measure has is refused with the fix."""
    stages = _stages()
    if outcome in CONVERSIONS or outcome in ("children", "count", "exposure"):
        raise SpecError(f"{source}: the outcome {outcome!r} is not a stage count: write the stage as the outcome "
                        "and its exposure as the offset, e.g. 's47 ~ ... + offset(log(referrals))' for s47 per "
                        f"referral; stage counts: {', '.join(sorted(stages))}")
    if outcome not in stages:
        raise SpecError(f"{source}: the outcome {outcome!r} is not a panel stage count; choose from "
                        f"{', '.join(sorted(stages))}")
    if exposure == CHILDREN and outcome in RATE_MEASURES:
        return outcome
    for measure, pair in CONVERSIONS.items():
        if pair == (outcome, exposure):
            return measure
    offsets = " or ".join(f"offset(log({d}))" for d in stages[outcome])
    what = "per child" if exposure == CHILDREN else f"per {exposure}"
    raise SpecError(f"{source}: {outcome} {what} is not a panel measure (the offset contradicts the outcome): "
                    f"{outcome} is fitted with {offsets} (children for a rate, the earlier stage for a "
                    "conversion, hierarchy.data.panel.CONVERSIONS)")


def _fixed(desc, source: str) -> tuple[list[str], str]:
    """The fixed terms (panel term names) of a ``formulae`` description and its offset's column."""
    terms, exposure, intercept = [], None, False
    for term in desc.common_terms:
        if type(term).__name__ == "Intercept":
            intercept = True
            continue
        names = tuple(c.name for c in term.components)
        if len(names) == 1 and names[0].startswith("offset("):
            exposure = offset_column(names[0], source, exposure,
                                     "offset(log(children)) or offset(log(<earlier stage>))")
            continue
        key = tuple(sorted(names)) if set(names) == {"dep", "t"} else names
        if key not in _TERM_OF:
            hint = "; year as a number is the trend t: write C(year) for year effects" if names == ("year",) \
                else ""
            raise SpecError(f"{source}: the term {':'.join(names)} is not a panel term{hint}; panel formulas "
                            f"take {ALLOWED}")
        terms.append(_TERM_OF[key])
    if not intercept:
        raise SpecError(f"{source}: the formula drops the intercept (0 + or - 1): panel models need alpha, "
                        "the mean of the LA intercepts; remove the 0/-1")
    if exposure is None:
        raise SpecError(f"{source}: the formula has no offset: add + offset(log(children)) for a rate per child "
                        "or + offset(log(<earlier stage>)) for a conversion")
    return terms, exposure


def _la_term(desc, source: str) -> str:
    """``(1 | la)`` or ``(1 + t | la)`` from the formula's group terms; anything else is refused."""
    exprs: dict[str, list[str]] = {}
    for g in desc.group_terms:
        factor = ":".join(c.name for c in g.factor.components)
        expr = "1" if type(g.expr).__name__ == "Intercept" else ":".join(c.name for c in g.expr.components)
        exprs.setdefault(factor, []).append(expr)
    if other := [f for f in exprs if f != "la"]:
        raise SpecError(f"{source}: the group ({' + '.join(exprs[other[0]])} | {other[0]}) is not a panel term: "
                        f"the panel's groups are LAs, (1 | la) or (1 + t | la); panel formulas take {ALLOWED}")
    la = exprs.get("la")
    if la is None:
        raise SpecError(f"{source}: the formula has no LA level: add (1 + t | la) (or (1 | la))")
    if sorted(la) == ["1"]:
        return "(1 | la)"
    if sorted(la) == ["1", "t"]:
        return "(1 + t | la)"
    raise SpecError(f"{source}: ({' + '.join(la)} | la) is not a panel term: write (1 | la) or (1 + t | la)")


def compile_panel_formula(text: str, source: str = "<formula>") -> tuple[str, tuple[str, ...]]:
    """Parse one panel formula into its measure and its terms (the order of :data:`FIXED_TERMS`, then the LA term).

    Parameters
    ----------
    text : str
        E.g. ``"s47 ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(referrals))"``.
    source : str
        Where the formula came from, for messages (the file).

    Returns
    -------
    (str, tuple of str)
        The panel measure (``s47_per_referral``) and the terms (``("t", "year", "dep", "dep:t",
        "(1 + t | la)")``), as a term-list file writes them.
    """
    from hierarchy.language.formula import _parse  # the neighbourhood formulas' parser (formulae)

    desc = _parse(text, source)
    if desc.response is None:
        raise SpecError(f"{source}: the formula has no outcome: write e.g. 'referrals ~ ...'")
    outcome = desc.response.term.components[0].name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", outcome):
        raise SpecError(f"{source}: the outcome {outcome} is not one stage count: a panel formula fits one "
                        "measure; give one formula per measure (formula = [\"referrals ~ ...\", \"s47 ~ ...\"])")
    fixed, exposure = _fixed(desc, source)
    measure = panel_measure(outcome, exposure, source)
    present = set(fixed)
    if "year" in present and "t" not in present:
        raise SpecError(f"{source}: C(year) has no level and no trend, so it needs the trend t: add t")
    if "dep:t" in present and "dep" not in present:
        raise SpecError(f"{source}: dep:t needs dep: add dep (or write dep * t)")
    return measure, (*[t for t in FIXED_TERMS if t in present], _la_term(desc, source))


def formulas_to_spec(formula, path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The measures and the shared terms of a file's ``formula`` (a string or a list of strings)."""
    items = [formula] if isinstance(formula, str) else formula
    if not isinstance(items, list) or not items or not all(isinstance(f, str) for f in items):
        raise SpecError(f"{path}: formula must be a string or a list of strings, one formula per measure "
                        "(e.g. formula = [\"referrals ~ t + dep + (1 | la) + offset(log(children))\"])")
    measures, terms = [], None
    for i, text in enumerate(items):
        source = f"{path}: formula {i + 1}" if len(items) > 1 else str(path)
        measure, these = compile_panel_formula(text, source)
        if measure in measures:
            raise SpecError(f"{source}: {measure} has two formulas; keep one")
        if terms is not None and these != terms:
            raise SpecError(f"{source}: its terms {list(these)} differ from formula 1's {list(terms)}: the "
                            "formulas of one file share their terms; put a model with other terms in another file")
        measures.append(measure)
        terms = these
    return tuple(measures), terms


def render_panel_formula(spec, measure: str) -> str:
    """The formula of one measure of a panel spec (a term-list file's included), as a formula file writes it."""
    outcome, exposure = CONVERSIONS.get(measure, (measure, CHILDREN))
    fixed = [_FORMULA_OF[t] for t in spec.terms if t in _FORMULA_OF]
    la = [t for t in spec.terms if t in RANDOM_TERMS]
    return f"{outcome} ~ " + " + ".join([*fixed, *la, f"offset(log({exposure}))"])

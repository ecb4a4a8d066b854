"""Published results, shown beside an estimand only when they describe it.

One table, ``hierarchy/published.toml`` (shipped with the package): each figure has an outcome,
estimand (and LA level), scale, year, value (or low/high) and source. :func:`figures` reads it;
:func:`lookup` returns the figures that match an estimand exactly (outcome, estimand, LA level,
scale, year), so a fit of child protection plans, of another year, or of data whose year is not
known gets none of the referral 2019 numbers.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

import pandas as pd

from hierarchy.errors import HierarchyError

TABLE = Path(__file__).with_name("published.toml")
COLUMNS = ("outcome", "estimand", "la_level", "scale", "year", "value", "low", "high", "source")


@cache
def _read(path: str) -> tuple[dict, ...]:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise HierarchyError(f"cannot read the published figures {path}: {err}") from None
    rows = raw.get("figure", [])
    for i, r in enumerate(rows, 1):
        missing = [k for k in ("outcome", "estimand", "scale", "year", "source") if k not in r]
        if missing or not ("value" in r or ("low" in r and "high" in r)):
            raise HierarchyError(f"{path}: figure {i} lacks {', '.join(missing) or 'value (or low and high)'}")
        unknown = set(r) - set(COLUMNS)
        if unknown:
            raise HierarchyError(f"{path}: figure {i} has unknown key(s) {', '.join(sorted(unknown))}")
    return tuple(rows)


def figures(path: str | Path = TABLE) -> pd.DataFrame:
    """Every published figure, one row each (columns :data:`COLUMNS`)."""
    return pd.DataFrame(list(_read(str(path))), columns=list(COLUMNS))


def lookup(*, outcome: str, estimand: str, year: int | None, scale: str, la_level: str | None = None,
           path: str | Path = TABLE) -> pd.DataFrame:
    """The published figures describing one estimand; empty when none does (or ``year`` is None).

    Parameters
    ----------
    outcome : str
        The modelled count column (``referral``, ``cp_plan``...).
    estimand : str
        ``gradient_score``, ``la_gradient_range``, ``la_rate_range`` or ``national_rate``.
    year : int or None
        Census year of the data (by its ending: 2019 for 2018-19). None matches nothing.
    scale : str
        The estimand's scale label (``per 10 points``, ``per 10,000 children``); a figure on another
        scale (per SD) never matches.
    la_level : str, optional
        For gradient scores: ``10 points less``, ``mean``, ``10 points more``.
    """
    table = figures(path)
    if year is None or table.empty:
        return table.iloc[:0]
    keep = ((table["outcome"] == outcome) & (table["estimand"] == estimand) & (table["scale"] == scale)
            & (table["year"] == int(year)))
    if la_level is not None:
        keep &= table["la_level"] == la_level
    return table[keep].reset_index(drop=True)


def value(**match) -> float | None:
    """The single published value matching :func:`lookup`'s arguments, or None."""
    found = lookup(**match)
    return float(found["value"].iloc[0]) if len(found) == 1 and pd.notna(found["value"].iloc[0]) else None


def rate_range(*, outcome: str, year: int | None) -> tuple[float, float, str] | None:
    """(low, high, source) of the published LA rate range per 10,000 for ``outcome`` in ``year``, or None."""
    found = lookup(outcome=outcome, estimand="la_rate_range", year=year, scale="per 10,000 children")
    if found.empty:
        return None
    r = found.iloc[0]
    return float(r["low"]), float(r["high"]), str(r["source"])

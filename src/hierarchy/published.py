"""Published results, shown beside an estimand only when they describe it.

One table, ``hierarchy/published.toml`` (shipped with the package): each figure has an outcome,
estimand (and LA level), scale, year, value (or low/high) and source. :func:`figures` reads it;
:func:`lookup` returns the figures that match an estimand exactly (outcome, estimand, LA level,
scale, year), so a fit of child protection plans, of another year, or of data whose year is not
known gets none of the referral 2019 numbers. :func:`data_year` reads the census year from the
data (a single-valued ``year`` column, or the simulator's truth file beside the table);
:func:`gradient_scores` and :func:`note` give the report what to show and what to say about it.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import cache
from pathlib import Path

import pandas as pd

from hierarchy.errors import HierarchyError

TABLE = Path(__file__).with_name("published.toml")
GRADIENT_SCALE = "per 10 points"
LEVELS = ("10 points less", "mean", "10 points more")
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


def gradient_scores(*, outcome: str, year: int | None, path: str | Path = TABLE) -> dict[str, float]:
    """Published typical-LA gradient scores (per 10 points) of ``outcome`` in ``year``, by LA level.

    Only the levels the table has (``10 points less``, ``mean``, ``10 points more``); empty when
    none, or when ``year`` is None.
    """
    out = {}
    for level in LEVELS:
        v = value(outcome=outcome, estimand="gradient_score", la_level=level, scale=GRADIENT_SCALE, year=year,
                  path=path)
        if v is not None:
            out[level] = v
    return out


def gradient_range(*, outcome: str, year: int | None, path: str | Path = TABLE) -> tuple[float, float] | None:
    """(low, high) of the published LA gradient scores of ``outcome`` in ``year``, or None."""
    found = lookup(outcome=outcome, estimand="la_gradient_range", year=year, scale=GRADIENT_SCALE, path=path)
    return None if found.empty else (float(found["low"].iloc[0]), float(found["high"].iloc[0]))


def season(year: int) -> str:
    """The census year as the field writes it: 2019 -> ``2018-19``."""
    return f"{int(year) - 1}-{int(year) % 100:02d}"


def note(*, outcome: str, year: int | None, estimands: tuple[str, ...] = ("gradient_score", "la_gradient_range"),
         path: str | Path = TABLE) -> str:
    """A sentence saying which published figures a page shows for ``outcome`` and ``year``, and why
    none when none applies."""
    if year is None:
        return ("No published figures are shown: the data's census year is not known (give the table a "
                "single-valued year column, or report with the data the fit was made from).")
    table = figures(path)
    found = table[(table["outcome"] == outcome) & (table["year"] == int(year)) & table["estimand"].isin(estimands)]
    if found.empty:
        return (f"No published figures are shown: the table of published results has none for {outcome} "
                f"in {season(year)} (year {year}).")
    sources = "; ".join(dict.fromkeys(found["source"]))
    return f"Published figures shown are for {outcome} in {season(year)} (sources: {sources})."


def data_year(data: str | os.PathLike | None, table: pd.DataFrame | None = None) -> int | None:
    """The census year of a table: its ``year`` column when that holds one value, else the ``year``
    of the simulator's truth file beside it (``X.truth.json``), else None (unknown).

    Parameters
    ----------
    data : path, optional
        The table's file (for the truth file beside it).
    table : pandas.DataFrame, optional
        The table, for its ``year`` column.
    """
    if table is not None and "year" in table.columns:
        years = pd.to_numeric(table["year"], errors="coerce").dropna().unique()
        return int(years[0]) if len(years) == 1 else None
    if data is not None:
        truth = Path(data).with_suffix(".truth.json")
        if truth.is_file():
            try:
                year = json.loads(truth.read_text(encoding="utf-8")).get("year")
            except (OSError, json.JSONDecodeError, AttributeError):
                return None
            return int(year) if isinstance(year, int) and not isinstance(year, bool) else None
    return None

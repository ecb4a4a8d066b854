"""Column maps: a TOML file from a user's column names to the canonical ones of :mod:`hierarchy.data.table`."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hierarchy import STAGES, STRATA
from hierarchy.config import did_you_mean
from hierarchy.errors import HierarchyError

_MAP_SECTIONS: dict[str, tuple[str, ...] | None] = {
    "columns": ("neighbourhood", "la", "exposure", "deprivation", "msoa"),
    "counts": STAGES,
    "strata": STRATA,
    "la_covariates": None,  # free names; the canonical name becomes la_<name>
}
"""The canonical names of each section. ``[columns]``, ``[counts]`` and ``[strata]`` also take the name a
model reads (``rural``, ``year``, ``re_referral``, any column of a formula), as long as it is a formula
name (ASCII letters, digits and _) and not one letter or two away from a canonical name (a typo)."""


@dataclass(frozen=True)
class ColumnMap:
    """Map from canonical column names to the user's column names.

    Parameters
    ----------
    columns, counts, strata
        Canonical name -> user column, one mapping per TOML section.
    la_covariates
        Covariate name -> user column; the canonical name is ``la_<name>``.
    path
        The TOML file the map came from (for messages).
    """

    columns: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    strata: dict[str, str] = field(default_factory=dict)
    la_covariates: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def canonical_to_user(self) -> dict[str, str]:
        """Return canonical name -> user column for every mapped column."""
        out = {**self.columns, **self.counts, **self.strata}
        for name, user in self.la_covariates.items():
            out[name if name.startswith("la_") else f"la_{name}"] = user
        return out


def load_column_map(path: str | os.PathLike) -> ColumnMap:
    """Read a TOML column map (see ``examples/columns_example.toml``).

    Parameters
    ----------
    path
        TOML file with sections ``[columns]``, ``[counts]``, ``[strata]``, ``[la_covariates]``,
        each mapping canonical names to the user's column names.

    Returns
    -------
    ColumnMap

    Raises
    ------
    HierarchyError
        If the file is missing or not TOML, or has an unknown section or key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise HierarchyError(f"{path}: the TOML is nested too deeply to read; a column map is sections "
                             "of name = \"column\" lines (see examples/columns_example.toml)") from None
    except FileNotFoundError:
        raise HierarchyError(f"column map {path} does not exist") from None
    except IsADirectoryError:
        raise HierarchyError(f"column map {path} is a folder; give its .toml file") from None
    except UnicodeDecodeError:
        raise HierarchyError(f"column map {path} is not a text file (TOML is UTF-8 text); is it the "
                             "right file?") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise HierarchyError(f"cannot read column map {path}: {err}") from None

    sections: dict[str, dict[str, str]] = {name: {} for name in _MAP_SECTIONS}
    for section, body in raw.items():
        if section not in _MAP_SECTIONS:
            home = [s for s, keys in _MAP_SECTIONS.items() if keys and section in keys]
            hint = (f"; '{section}' belongs inside [{home[0]}]" if home
                    else did_you_mean(section, _MAP_SECTIONS, cutoff=0.6,
                                     template="; did you mean [{}]?"))
            raise HierarchyError(
                f"{path}: unknown section [{section}]{hint}. "
                f"Allowed sections: {', '.join(f'[{s}]' for s in _MAP_SECTIONS)}")
        if not isinstance(body, dict):
            raise HierarchyError(f"{path}: [{section}] must be a table of name = \"column\"")
        for key, user in body.items():
            _check_map_key(path, section, key)
            if not isinstance(user, str) or not user.strip():
                got = f"a {'table' if isinstance(user, dict) else 'list'}" if isinstance(user, dict | list) \
                    else repr(user)
                raise HierarchyError(
                    f"{path}: [{section}] {key} must be a column name in quotes, got {got}")
            sections[section][key] = user.strip()

    cmap = ColumnMap(**sections, path=path)
    users = list(cmap.canonical_to_user().values())
    twice = sorted({u for u in users if users.count(u) > 1})
    if twice:
        raise HierarchyError(f"{path}: column(s) {', '.join(map(repr, twice))} are mapped to "
                             "more than one canonical name")
    return cmap


def _check_map_key(path: Path, section: str, key: str) -> None:
    """Refuse a map key that is not a formula name, or that is a near miss of a canonical name."""
    allowed = _MAP_SECTIONS[section]
    if allowed is None or key in allowed:
        return
    canonical = [*_MAP_SECTIONS["columns"], *STAGES, *STRATA]
    if key in canonical:  # in another section than its own: the map is one canonical -> user mapping
        return
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise HierarchyError(f"{path}: [{section}] key {key!r} is not a name a formula can use: the left side "
                             "is the name the model reads (ASCII letters, digits and _, e.g. rural = \"Rural "
                             "flag\"); the right side is your column, as written in the file")
    near = [c for c in canonical if _edits(key.lower(), c) <= (2 if len(c) >= 6 else 1) and len(key) >= 3]
    if near:
        raise HierarchyError(f"{path}: unknown key '{key}' in [{section}]; did you mean '{near[0]}'? "
                             f"Allowed keys: {', '.join(allowed)}, or the name a model's formula reads (one "
                             "that is not a near miss of those)")


def _edits(a: str, b: str) -> int:
    """Levenshtein distance between ``a`` and ``b``."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def user_name(table: pd.DataFrame, column: str) -> str:
    """The user's name of canonical ``column`` (from the column map in ``table.attrs``), else ``column``."""
    return (table.attrs.get("column_map") or {}).get(column, column)

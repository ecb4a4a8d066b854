"""Load, map and validate a neighbourhood table of children's social care counts.

The canonical table has one row per neighbourhood (LSOA), or per neighbourhood x stratum:

* required: ``neighbourhood`` and ``la`` (codes), ``exposure`` (children in the row, > 0),
  ``deprivation`` (income-deprivation rate, a proportion in [0, 1]) and at least one count
  column named after a stage in :data:`hierarchy.STAGES`;
* optional: ``msoa`` (middle-level code), strata columns (:data:`hierarchy.STRATA`) and
  LA-level covariates (any column named ``la_*``, constant within an LA);
* other count and stratum columns when the caller names them (``counts=``, ``strata=``; e.g. the
  ``events`` and duration ``band`` of a time-to-event table, :mod:`hierarchy.results.durations`, or the
  outcome and strata a model file names): checked as the canonical ones are;
* any other column is kept untouched and ignored.

:func:`read_table` reads a CSV or Parquet file (optionally renaming columns with a TOML column
map, :mod:`hierarchy.data.columns`), :func:`validate` reports every problem at once
(:mod:`hierarchy.data.validation`, importable from here), :func:`split_invalid` separates the rows
that fail, and :func:`load` does read + validate + clean dtypes in one call.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import STAGES, STRATA
from hierarchy.data.columns import (  # noqa: F401  (moved there; importable from here as before)
    ColumnMap,
    load_column_map,
    user_name,
)
from hierarchy.data.validation import (  # noqa: F401  (moved there; importable from here as before)
    CODE_COLUMNS,
    REQUIRED,
    Problem,
    ValidationReport,
    _Collector,
    _extra_names,
    _parse_numbers,
    _row_labels,
    _suggest,
    normalise_codes,
    row_key,
    validate,
)
from hierarchy.errors import DataValidationError, HierarchyError
from hierarchy.paths import atomic_path

# --------------------------------------------------------------------------- reading


def read_table(path: str | os.PathLike, columns: ColumnMap | None = None) -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` neighbourhood table and rename mapped columns.

    Values are kept as read (CSV cells as strings) so that :func:`validate` can point at bad
    cells. The index holds row labels users recognise: the file line number for CSV (the
    header is line 1) and the 0-based row position for Parquet.

    Parameters
    ----------
    path
        The table file.
    columns
        Optional column map; mapped user columns are renamed to canonical names.

    Returns
    -------
    pandas.DataFrame
        With ``attrs`` ``source`` (the path), ``row_label`` (``"line"`` or ``"row"``) and,
        when a map is given, ``column_map`` (canonical -> user) and ``column_map_path``.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if not path.exists():
        raise HierarchyError(f"data file {path} does not exist")
    if path.is_dir():
        raise HierarchyError(f"data file {path} is a folder; give a .csv or .parquet file")
    try:
        if path.suffix.lower() == ".csv" or suffixes == ".csv.gz":
            table, row_label = _read_csv(path), "line"
        elif path.suffix.lower() in (".parquet", ".pq"):
            table, row_label = _read_parquet(path), "row"
        else:
            raise HierarchyError(f"cannot read {path}: unknown file type '{path.suffix}' "
                                 "(use .csv or .parquet)")
    except HierarchyError:
        raise
    except UnicodeDecodeError:
        raise HierarchyError(f"cannot read {path}: it is not UTF-8 text; "
                             "save it again as 'CSV UTF-8'") from None
    except Exception as err:  # pandas and pyarrow raise many types for unreadable files
        raise HierarchyError(f"cannot read {path}: {err}") from None

    if columns is not None:
        mapping = columns.canonical_to_user()
        clash = [c for c, u in mapping.items() if c in table.columns and u != c]
        if clash:
            raise HierarchyError(
                f"{path}: the file already has column(s) {', '.join(map(repr, clash))} and "
                f"{columns.path} maps other columns to the same name(s); rename one of them")
        table = table.rename(columns={u: c for c, u in mapping.items()})
        table.attrs["column_map"] = mapping
        table.attrs["column_map_path"] = str(columns.path)

    for col in (*CODE_COLUMNS, *STRATA):
        if col in table.columns:
            table[col] = _as_code(table[col])
    table.attrs["source"] = str(path)
    table.attrs["row_label"] = row_label
    return table


def _check_duplicate_columns(names: list[str], path: Path) -> None:
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        if not name:  # unnamed (e.g. trailing commas): pandas names them 'Unnamed: i'
            continue
        seen.setdefault(name, []).append(i)
    twice = {n: pos for n, pos in seen.items() if len(pos) > 1}
    if twice:
        what = "; ".join(f"'{n}' is columns {', '.join(map(str, pos))}" for n, pos in twice.items())
        raise HierarchyError(f"{path}: the same column name appears more than once ({what}); only one "
                             "could be used. Rename or remove the extra column(s)")


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # pandas renames duplicates 'x.1'
        header = next(csv.reader(fh), [])
    _check_duplicate_columns([str(c).strip() for c in header], path)
    table = pd.read_csv(path, dtype=str, skip_blank_lines=False, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    table.index = pd.RangeIndex(2, len(table) + 2, name="line")  # header is line 1
    for col in table.columns:
        table[col] = table[col].str.strip().replace("", np.nan)
    return table.dropna(how="all")  # blank lines; dropped here so line numbers stay right


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    _check_duplicate_columns([str(n).strip() for n in pq.read_schema(path).names], path)
    table = pd.read_parquet(path)
    if not isinstance(table.index, pd.RangeIndex) and any(n is not None for n in
                                                          table.index.names):
        table = table.reset_index()  # a stored, named index is data
    table.columns = [str(c).strip() for c in table.columns]
    _check_duplicate_columns(list(table.columns), path)
    table.index = pd.RangeIndex(len(table), name="row")
    return table


def _as_code(s: pd.Series) -> pd.Series:
    """Codes as strings, missing kept missing (integer-valued floats lose their '.0')."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        num = pd.to_numeric(s, errors="coerce")
        if (num.dropna() % 1 == 0).all():
            s = num.astype("Int64")
    return s.astype(str).where(s.notna())


# --------------------------------------------------------------------------- using a report


def split_invalid(table: pd.DataFrame,
                  report: ValidationReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into rows that pass and rows that fail an error check.

    Parameters
    ----------
    table
        The table given to :func:`validate`.
    report
        Its report.

    Returns
    -------
    kept, rejected : pandas.DataFrame
        ``rejected`` has an extra ``reason`` column ("; "-joined reasons).

    Raises
    ------
    HierarchyError
        If an error concerns the table as a whole (e.g. a missing column): no choice of
        rows can fix it.
    """
    whole = [p for p in report.errors if p.n_rows == 0]
    if whole:
        raise HierarchyError("cannot drop invalid rows: these problems are not in particular "
                             "rows:\n" + "\n".join(p.format() for p in whole))
    labels = _row_labels(table).tolist()
    bad = np.array([label in report.row_reasons for label in labels], dtype=bool)
    rejected = table[bad].copy()
    rejected["reason"] = ["; ".join(report.row_reasons[lab])
                          for lab, b in zip(labels, bad, strict=True) if b]
    return table[~bad].copy(), rejected


def write_rejected(rejected: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write rejected rows (with their row labels and reasons) to CSV, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        rejected.to_csv(fh, index=True, index_label=rejected.index.name or "row")
    return path


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV or Parquet (by the name's ending), atomically, without its row labels.

    Used for the rows that pass validation (``hierarchy validate --drop-invalid R --kept K``):
    the file has canonical column names, so ``hierarchy fit --data K`` reads it without a map.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise HierarchyError(f"{path}: a table is written as .csv or .parquet")
    frame = table.reset_index(drop=True)
    frame.attrs = {}
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False, encoding="utf-8")
        else:
            frame.to_parquet(tmp, index=False)
    return path


def load(path: str | os.PathLike, *, columns: ColumnMap | str | os.PathLike | None = None,
         reference: Any = None, counts: tuple[str, ...] = (), strata: tuple[str, ...] = (),
         keys: tuple[str, ...] = (), exposure: str = "exposure", model: str | None = None) -> pd.DataFrame:
    """Read and validate a table, and return it with clean dtypes.

    Parameters
    ----------
    path
        CSV or Parquet file.
    columns
        Optional :class:`ColumnMap` (or the path of its TOML file).
    reference
        Optional reference geography (see :func:`validate`).
    counts, strata, keys
        Further count, stratum and row-key columns to check and clean (see :func:`validate`).
    exposure, model
        The model's exposure column, checked > 0 in every row, and the model as the user names it, for
        messages (see :func:`validate`; :func:`model_columns` gives a model's columns).

    Returns
    -------
    pandas.DataFrame
        Codes and strata as str (surrounding spaces removed), counts int64, exposure and
        deprivation float64, numeric ``la_*`` columns float64; index reset; ``attrs``: ``source``,
        ``row_label`` and ``column_map`` (canonical -> user name, when a map was used) kept.

    Raises
    ------
    DataValidationError
        If there is any error; ``err.report`` holds every problem. Warnings are emitted with
        :func:`warnings.warn` (``UserWarning``), one per problem.
    """
    if columns is not None and not isinstance(columns, ColumnMap):
        columns = load_column_map(columns)
    table = read_table(path, columns=columns)
    report = validate(table, source=str(path), reference=reference, counts=counts, strata=strata, keys=keys,
                      exposure=exposure, model=model)
    if not report.ok:
        raise DataValidationError(report)
    for problem in report.warnings:
        warnings.warn(f"{report.source}: {problem.format()}", UserWarning, stacklevel=2)
    out = clean(table, counts=counts, strata=strata, exposure=exposure)
    out.attrs = {"source": str(path), "row_label": table.attrs.get("row_label"),
                 **({"column_map": table.attrs["column_map"]} if table.attrs.get("column_map") else {})}
    return out


def clean(table: pd.DataFrame, *, counts: tuple[str, ...] = (), strata: tuple[str, ...] = (),
          keys: tuple[str, ...] = (), exposure: str = "exposure") -> pd.DataFrame:
    """A table that passed :func:`validate` with clean dtypes (see :func:`load`); index reset.
    ``keys`` (row-key columns a model reads) are kept as read: a numeric year stays a number; the model's
    ``exposure`` is a number (float64) unless it is a count."""
    counts, strata = _extra_names(counts, strata)
    out, _ = normalise_codes(table)
    out = out.reset_index(drop=True)
    for col in (*CODE_COLUMNS, *STRATA, *strata):
        if col in out.columns:
            out[col] = _as_code(out[col]) if col in strata else out[col].astype(str)
    for stage in (*STAGES, *counts):
        if stage in out.columns:
            out[stage] = pd.to_numeric(out[stage]).astype("int64")
    for col in dict.fromkeys(("exposure", "deprivation", exposure)):
        if col in out.columns and col not in (*STAGES, *counts):
            out[col] = pd.to_numeric(out[col]).astype("float64")
    for col in table_roles(out)["la_covariates"]:
        if pd.api.types.is_bool_dtype(out[col]):  # a yes/no LA covariate is a 0/1 number
            out[col] = out[col].astype("float64")
            continue
        num, bad = _parse_numbers(out[col])
        if not bad.any():
            out[col] = num
    return out


def model_columns(spec: Any) -> dict[str, Any]:
    """The columns a model reads, as :func:`validate`, :func:`load` and :func:`clean` take them.

    Parameters
    ----------
    spec
        A :class:`~hierarchy.language.spec.ModelSpec` (``data_columns``, ``exposure``).

    Returns
    -------
    dict
        ``counts``, ``strata``, ``keys`` (``spec.data_columns``) and ``exposure`` (the offset's column).
    """
    return {**spec.data_columns, "exposure": spec.exposure}


def table_roles(table: pd.DataFrame) -> dict[str, list[str]]:
    """Which optional canonical columns a table has.

    Returns
    -------
    dict
        ``counts`` (in :data:`~hierarchy.STAGES` order), ``strata`` (in
        :data:`~hierarchy.STRATA` order) and ``la_covariates`` (sorted ``la_*`` names).
    """
    cols = set(map(str, table.columns))
    return {
        "counts": [s for s in STAGES if s in cols],
        "strata": [s for s in STRATA if s in cols],
        "la_covariates": sorted(c for c in cols if c.startswith("la_")),
    }


def data_hash(table: pd.DataFrame, *, counts: tuple[str, ...] = (), strata: tuple[str, ...] = (),
              numbers: tuple[str, ...] = (), codes: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> str:
    """16-hex content hash of the canonical columns (and the named ``counts``, ``strata``, other
    ``numbers`` and ``codes`` a model reads: see ``ModelSpec.hashed_columns``).

    Independent of row order, column order and file format: numbers are compared by value
    (``3``, ``"3"`` and ``3.0`` hash alike) and codes as strings. Without named columns the hash
    is what it always was; a named column the table lacks is left out. ``keys`` (``ModelSpec.data_columns``)
    are row-term or group columns, already among ``numbers`` or ``codes``: they change nothing.
    """
    roles = table_roles(table)
    counts, strata = _extra_names(counts, strata)
    names = [*REQUIRED, "msoa", *roles["counts"], *roles["strata"], *roles["la_covariates"], *counts, *strata,
             *numbers, *codes]
    cols = sorted(n for n in dict.fromkeys(names) if n in table.columns)
    as_code = {*CODE_COLUMNS, *STRATA, *strata, *(c for c in codes if c not in numbers)}
    text = pd.DataFrame({c: _canonical_text(table[c], code=c in as_code) for c in cols}, index=range(len(table)))
    lines = sorted("\x1f".join(row) for row in text.itertuples(index=False, name=None))
    digest = hashlib.sha256("\x1f".join(cols).encode())
    for line in lines:
        digest.update(b"\n" + line.encode())
    return digest.hexdigest()[:16]


def _canonical_text(s: pd.Series, *, code: bool) -> list[str]:
    if code:
        s = _as_code(s)
        return [str(v) if isinstance(v, str) else "\x00NA" for v in s]
    num, bad = _parse_numbers(s)
    if bad.any():  # not numeric: hash as read
        return [str(v) if pd.notna(v) else "\x00NA" for v in s]
    return ["\x00NA" if np.isnan(v) else str(int(v)) if v.is_integer() else repr(v)
            for v in num.tolist()]


def rows_hash(table: pd.DataFrame, spec: Any) -> dict[str, str]:
    """Hashes of what a fit's log-likelihood is about, for comparing fits of different models.

    Two fits can be compared by cross-validation when they model the same rows, the same outcome
    counts and the same exposure, whatever other columns each reads (``data_hash`` covers those too,
    so it differs between a model and the same model plus ``rural + w:rural``).

    Parameters
    ----------
    table
        The validated canonical table the model is fitted to.
    spec
        The model (a :class:`~hierarchy.language.spec.ModelSpec`: ``stages``, ``exposure``,
        ``strata``, ``data_columns``).

    Returns
    -------
    dict
        ``rows`` (the row key: neighbourhood, strata and the key columns that tell rows apart, and
        each row's LA), ``outcome`` (the modelled counts by row) and ``exposure`` (by row): 16-hex
        each, independent of row order and file format.
    """
    strata = [s for s in dict.fromkeys([*STRATA, *spec.strata]) if s in table.columns]
    keys = tuple(spec.data_columns.get("keys", ()))
    key = [*row_key(table, strata, keys), *(["la"] if "la" in table.columns else [])]
    as_code = {*CODE_COLUMNS, *strata}
    ident = pd.Series(["\x1f".join(r) for r in zip(*(_canonical_text(table[c], code=c in as_code) for c in key),
                                                 strict=True)], dtype=object)

    def digest(label: str, columns: list[str]) -> str:
        values = [_canonical_text(table[c], code=False) for c in columns]
        lines = sorted("\x1e".join([i, *v]) for i, *v in zip(ident, *values, strict=True))
        h = hashlib.sha256(("\x1f".join([label, *key, *columns])).encode())
        for line in lines:
            h.update(b"\n" + line.encode())
        return h.hexdigest()[:16]

    return {"rows": digest("rows", []), "outcome": digest("outcome", list(spec.stages)),
            "exposure": digest("exposure", [spec.exposure])}

"""Validation of a neighbourhood table (:mod:`hierarchy.data.table`): every problem at once (:func:`validate`),
each with its column, rows and fix."""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import STAGES, STRATA
from hierarchy.errors import HierarchyError

REQUIRED: tuple[str, ...] = ("neighbourhood", "la", "exposure", "deprivation")
"""Canonical columns every table must have (plus at least one count column)."""

CODE_COLUMNS: tuple[str, ...] = ("neighbourhood", "la", "msoa")
"""Canonical columns holding geography codes (read as strings)."""

MIN_LA_NEIGHBOURHOODS = 5
"""An LA with fewer neighbourhoods than this gets a warning."""

MAX_ROW_LABELS = 5
"""How many offending row labels a problem lists."""

MAX_EXPOSURE = 1_000_000
"""More children than this in one row is an error: England's largest LA has about 340,000."""

EXPOSURE_OUTLIER = 20
"""Rows with exposure above this multiple of the median get a warning."""

_SCIENTIFIC = re.compile(r"^[+-]?\d+(\.\d+)?[eE][+-]?\d+$")  # '1.00E+05': a spreadsheet's number

_DATE_LIKE = re.compile(r"^\d{1,2}-(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)$", re.I)  # '01-Apr'

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}([,\s\u00a0\u202f]\d{3})+(\.\d*)?$")  # '1,234', '1 234'

_BOOLEAN = {"true", "false"}

SUPPRESSION_MARKERS = ("c", "x", "z", "u", "low", "*", ":", "..", "[c]", "[x]", "[z]")
"""Markers the DfE and ONS use in published tables instead of small or missing counts."""

# Substrings of common user column names, used for "did you mean" hints on required columns.
_ALIASES: dict[str, tuple[str, ...]] = {
    "neighbourhood": ("lsoa", "neighborhood"),
    "la": ("lad", "utla", "la_code", "lacode", "local_authority"),
    "exposure": ("child", "pop", "exposure"),
    "deprivation": ("imd", "income", "idaci", "depriv"),
}


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`validate`.

    Attributes
    ----------
    level : {"error", "warning"}
    column : str or None
        The canonical column concerned (None for table-wide problems).
    n_rows : int
        How many rows are affected (0 for problems with the table as a whole).
    rows : tuple
        The first few (at most 5) row labels affected.
    message, fix : str
        What is wrong and how to fix it.
    """

    level: str
    column: str | None
    n_rows: int
    rows: tuple
    message: str
    fix: str
    shown: str | None = None  # the user's name of the column (from a column map), if it differs

    def format(self) -> str:
        """One line: ``ERROR column 'x': message (rows 1, 2). Fix: ...`` (``x``: the user's name)."""
        where = f" column '{self.shown or self.column}'" if self.column else ""
        rows = ""
        if self.rows:
            more = ", ..." if self.n_rows > len(self.rows) else ""
            word = "row" if self.n_rows == 1 else "rows"
            rows = f" ({word} {', '.join(map(str, self.rows))}{more})"
        stop = "" if (self.message + rows).endswith(("?", ".")) else "."
        return f"{self.level.upper()}{where}: {self.message}{rows}{stop} Fix: {self.fix}"


@dataclass
class ValidationReport:
    """Every problem found in one table.

    Attributes
    ----------
    source : str
        The file (or description) validated.
    problems : list of Problem
    row_reasons : dict
        Row label -> reasons, for every row failing an error check.
    row_label : str
        What row labels are: ``"line"`` (CSV line numbers), ``"row"`` (0-based positions)
        or ``"index"`` (the DataFrame index).
    path, columns, model : str or None
        The table file, its column map and the model (as the user names them) the table was validated
        for, so that :meth:`drop_command` names the command that sets the failing rows aside.
    """

    source: str
    problems: list[Problem] = field(default_factory=list)
    row_reasons: dict[Hashable, list[str]] = field(default_factory=dict)
    row_label: str = "index"
    path: str | None = None
    columns: str | None = None
    model: str | None = None

    @property
    def errors(self) -> list[Problem]:
        """The problems that make the table unusable."""
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems worth a look that do not stop a fit."""
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors

    def drop_command(self, rejects: str = "rejects.csv", kept: str = "kept.csv") -> str:
        """The command that writes the failing rows (with reasons) to ``rejects`` and the rest to ``kept``:
        ``hierarchy validate TABLE [--columns MAP] [--model MODEL] --drop-invalid rejects.csv --kept kept.csv``."""
        words = ["hierarchy", "validate", self.path or self.source,
                 *(["--columns", self.columns] if self.columns else []),
                 *(["--model", self.model] if self.model else []), "--drop-invalid", rejects, "--kept", kept]
        return " ".join(shlex.quote(str(w)) for w in words)

    def format(self) -> str:
        """Header ``SOURCE: N errors, M warnings`` then one line per problem."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        head = f"{self.source}: {_plural(n_err, 'error')}, {_plural(n_warn, 'warning')}"
        if any(p.rows for p in self.problems):
            head += {"line": " (rows are file line numbers; the header is line 1)",
                     "row": " (rows are 0-based row positions)"}.get(self.row_label, "")
        return "\n".join([head, *(p.format() for p in [*self.errors, *self.warnings])])

    __str__ = format


class _Collector:
    """Accumulates problems and per-row reasons while :func:`validate` runs."""

    def __init__(self, table: pd.DataFrame, source: str, model: str | None = None):
        self.labels = _row_labels(table)
        self.report = ValidationReport(source, row_label=table.attrs.get("row_label", "index"),
                                       path=table.attrs.get("source") or source,
                                       columns=table.attrs.get("column_map_path"), model=model)
        self.names = {c: u for c, u in (table.attrs.get("column_map") or {}).items() if u != c}

    def rows(self, level: str, column: str | None, mask, message: str, fix: str,
             reason: str) -> None:
        """Add a problem for the rows in ``mask``; ``message`` may use {n_rows} and {have}."""
        mask = np.asarray(mask, dtype=bool)
        n = int(mask.sum())
        if n == 0:
            return
        labels = self.labels[mask].tolist()
        text = message.format(n_rows=_plural(n, "row"), have="has" if n == 1 else "have")
        shown = self.names.get(column)
        self.report.problems.append(
            Problem(level, column, n, tuple(labels[:MAX_ROW_LABELS]), text, fix, shown))
        if level == "error":
            for label in labels:
                self.report.row_reasons.setdefault(label, []).append(
                    f"{shown or column}: {reason}" if column else reason)

    def table(self, level: str, column: str | None, message: str, fix: str) -> None:
        """Add a problem with the table as a whole (no rows to point at)."""
        self.report.problems.append(Problem(level, column, 0, (), message, fix, self.names.get(column)))


def validate(table: pd.DataFrame, *, source: str, reference: Any = None, counts: tuple[str, ...] = (),
             strata: tuple[str, ...] = (), keys: tuple[str, ...] = (), exposure: str = "exposure",
             model: str | None = None) -> ValidationReport:
    """Check a table read by :func:`read_table` and report every problem at once.

    Parameters
    ----------
    table
        The table, with canonical column names.
    source
        Name of the file, for the report header.
    reference
        Optional reference geography: ``reference.lsoa`` (a DataFrame with column ``lsoa``) and
        ``reference.la`` (with column ``la``); unknown codes give warnings.
    counts, strata
        Further count columns (non-negative whole numbers, like the stages) and stratum columns
        (codes; part of the row key) the caller names, e.g. ``("events",)`` and ``("band",)``.
        Each must be in the table. With ``counts`` the table needs no stage column.
    keys
        Further columns a model reads per row (numbers or codes, e.g. ``year`` of ``Year + w:Year``
        or ``(1 | la:year)``): where the neighbourhood (and strata) repeat, those of them that tell the
        rows apart join the row key (a neighbourhood x year table).
    exposure
        The model's exposure column (``referral`` of ``offset(log(referral))``): it must be in the table
        and above 0 in every row, each row with 0 an error (a row the model cannot fit). The children
        column ``exposure`` is checked whatever the model's exposure (it weights LA deprivation).
    model
        The model as the user names it (a shipped name or a file), for the command in messages
        (:meth:`ValidationReport.drop_command`).

    Returns
    -------
    ValidationReport
    """
    c = _Collector(table, source, model)
    names = [str(col) for col in table.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # every check below needs one column per name
        c.table("error", None, f"the same column name appears more than once: {', '.join(twice)}",
                "rename or remove the extra column(s)")
        return c.report
    raw = table
    table, stripped = normalise_codes(table)
    for col, mask in stripped.items():
        examples = ", ".join(repr(v) for v in pd.unique(raw.loc[mask.to_numpy(), col])[:3])
        c.rows("warning", col, mask, "{n_rows} {have} spaces around the " + col + f" code (e.g. {examples}); "
               "they were removed", "nothing to do: the codes are used without the spaces (fix the "
               "source if you can)", "spaces around the code")
    present = set(table.columns)
    extra_counts, extra_strata = _extra_names(counts, strata)
    _check_columns(c, table, extra_counts, extra_strata)
    if len(table) == 0:
        c.table("error", None, "the table has no rows", "check the file is the right one")

    counts = {s: _parse_numbers(table[s]) for s in (*STAGES, *extra_counts) if s in present}
    for stage, (num, bad) in counts.items():
        _check_count(c, table[stage], stage, num, bad)
    count_num = pd.DataFrame({s: num for s, (num, _) in counts.items()}, index=table.index)
    any_positive = (count_num > 0).any(axis=1).to_numpy()
    _check_all_zero(c, count_num)

    if "exposure" in present:
        _check_exposure(c, table["exposure"], count_num, any_positive)
    if exposure != "exposure":
        _check_model_exposure(c, table, exposure, count_num)

    if "deprivation" in present:
        _check_deprivation(c, table["deprivation"])

    for col in (*CODE_COLUMNS, *STRATA, *extra_strata):
        if col in present:
            c.rows("error", col, table[col].isna(), "{n_rows} {have} no " + col + " value",
                   "fill in the value or drop the rows", "missing")
            _check_code_spelling(c, table[col], col)
    _check_structure(c, table, extra_strata, tuple(k for k in keys if k in present))
    if reference is not None:
        _check_reference(c, table, reference)
    return c.report


def _extra_names(counts: tuple[str, ...], strata: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The named count and stratum columns beyond the canonical ones (refuses clashes)."""
    if isinstance(counts, str) or isinstance(strata, str):
        raise HierarchyError("counts and strata are tuples of column names, e.g. ('events',)")
    fixed = {*REQUIRED, *CODE_COLUMNS}
    for name in (*counts, *strata):
        if not isinstance(name, str) or not name or name in fixed:
            raise HierarchyError(f"{name!r} cannot be named as a count or stratum column: it is "
                                 f"empty or one of {', '.join(sorted(fixed))}")
    both = set(counts) & set(strata)
    if both:
        raise HierarchyError(f"{', '.join(sorted(both))} named both as a count and as a stratum column")
    return (tuple(dict.fromkeys(c for c in counts if c not in STAGES)),
            tuple(dict.fromkeys(c for c in strata if c not in STRATA)))


def normalise_codes(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Codes and strata without surrounding spaces.

    Returns
    -------
    table : pandas.DataFrame
        A copy with the spaces removed (``attrs`` kept); the input itself when nothing changed.
    changed : dict
        Column -> boolean mask of the rows whose code had surrounding spaces (changed columns only).
    """
    changed = {}
    for col in (*CODE_COLUMNS, *STRATA):
        if col in table.columns and not pd.api.types.is_numeric_dtype(table[col]):
            values = table[col]
            text = values.astype(object).map(lambda v: v if pd.isna(v) else str(v))
            stripped = text.str.strip()
            mask = (values.notna() & (stripped != text)).astype(bool)
            if mask.any():
                changed[col] = (mask, stripped)
    if not changed:
        return table, {}
    out = table.copy()
    for col, (_mask, stripped) in changed.items():
        out[col] = stripped.replace("", np.nan)
    out.attrs = dict(table.attrs)
    return out, {col: mask for col, (mask, _) in changed.items()}


def _check_code_spelling(c: _Collector, codes: pd.Series, col: str) -> None:
    """Codes a spreadsheet rewrote, and codes that differ only by upper/lower case."""
    text = codes.dropna().astype(str)
    mangled = codes.notna() & codes.astype(str).map(
        lambda v: isinstance(v, str) and bool(_SCIENTIFIC.match(v) or _DATE_LIKE.match(v)))
    if mangled.any():
        examples = ", ".join(map(repr, pd.unique(codes[mangled])[:3]))
        c.rows("error", col, mangled, "{n_rows} {have} a " + col + " code that a spreadsheet "
               f"rewrote as a number or a date (e.g. {examples}); the original code is lost",
               "export the codes again from the source with the column formatted as Text (do not "
               "open and save the CSV in a spreadsheet)", "code rewritten by a spreadsheet")
    spellings = text.groupby(text.str.upper()).unique()
    clash = spellings[spellings.map(len) > 1]
    if len(clash):
        common = text.value_counts()
        majority = {key: max(values, key=lambda v: (common[v], v)) for key, values in clash.items()}
        upper = codes.astype(str).str.upper()
        minority = codes.notna() & upper.isin(list(majority)) & (codes != upper.map(majority))
        example = ", ".join(map(repr, clash.iloc[0]))
        c.rows("error", col, minority, "{n_rows} {have} a " + col + " code that differs from "
               f"another only by upper/lower case ({_plural(len(clash), 'code')}, e.g. {example}); "
               "they would count as different " + col + "s",
               "use one spelling for each code (ONS codes are upper case)", "code differs only by case")


def _check_all_zero(c: _Collector, count_num: pd.DataFrame) -> None:
    if count_num.empty or count_num.isna().all().all():
        return
    zero = [s for s in count_num if count_num[s].notna().any() and (count_num[s].fillna(0) == 0).all()]
    if zero and len(zero) == count_num.shape[1]:
        c.table("error", None, f"every count is 0 ({', '.join(zero)}): there is nothing to fit",
                "check the count columns are the right ones and the extract is complete")
    elif zero:
        for stage in zero:
            c.table("warning", stage, f"every {stage} count is 0: a model of this stage cannot be fitted",
                    "check the column, or leave the stage out of the model")


def _check_exposure(c: _Collector, raw: pd.Series, count_num: pd.DataFrame, any_positive) -> None:
    exposure, _ = _parse_numbers(raw)
    _check_missing_number(c, raw, exposure, "exposure",
                          "give the number of children in the row (mid-year estimate)")
    c.rows("error", "exposure", exposure < 0, "{n_rows} {have} a negative exposure",
           "exposure is the number of children in the row and cannot be negative",
           "negative")
    c.rows("error", "exposure", (exposure == 0) & any_positive,
           "{n_rows} {have} exposure 0 but positive counts",
           "counts need children: check the population figure or the row's codes",
           "0 with positive counts")
    c.rows("error", "exposure", (exposure == 0) & ~any_positive,
           "{n_rows} {have} exposure 0 (no children): the model needs exposure > 0 in every row",
           "remove the rows (they carry no information): " + c.report.drop_command() + "; or correct "
           "the population figure", "0 (no children)")
    c.rows("error", "exposure", exposure > MAX_EXPOSURE,
           "{n_rows} {have} exposure above " + f"{MAX_EXPOSURE:,} children (e.g. "
           f"{exposure[exposure > MAX_EXPOSURE].iloc[0] if (exposure > MAX_EXPOSURE).any() else 0:,.0f}), "
           "more than in any LA in England",
           "exposure is the number of children in the row: check for a unit or typing error",
           "implausibly large")
    median = exposure[exposure > 0].median()
    if np.isfinite(median) and median > 0:
        far = (exposure > EXPOSURE_OUTLIER * median) & (exposure <= MAX_EXPOSURE)
        c.rows("warning", "exposure", far, "{n_rows} {have} exposure more than "
               f"{EXPOSURE_OUTLIER} times the median row ({median:,.0f})",
               "check these figures: a large exposure weighs heavily in its LA's deprivation",
               "far above the median")
    for stage in (s for s in count_num if s in STAGES):  # a named count may have another exposure (time)
        c.rows("warning", stage, (exposure > 0) & (count_num[stage] > exposure),
               "{n_rows} {have} a " + stage + " count above exposure (more than the "
               "children in the row)",
               "possible for repeat events, otherwise check the exposure figure",
               "count above exposure")


def _check_model_exposure(c: _Collector, table: pd.DataFrame, name: str, count_num: pd.DataFrame) -> None:
    """The model's own exposure column (a count such as ``referral``, or a number such as person-years):
    present, a number, and above 0 in every row the model fits."""
    shown = c.names.get(name, name)
    offset = f"offset(log({name}))"
    if name not in table.columns:
        others = [str(col) for col in table.columns]
        c.table("error", name, f"the model's exposure column '{shown}' ({offset}) is not in the table"
                f"{_suggest(name, others)}", "add the column, map it with --columns, or use a model "
                "whose exposure the table has")
        return
    num, _ = _parse_numbers(table[name])
    if name not in count_num:  # a count column was checked as a count already (missing, negative, whole)
        _check_missing_number(c, table[name], num, name, f"give the model's exposure ({shown}) on every row")
        c.rows("error", name, num < 0,
               "{n_rows} {have} a negative " + shown + f", the model's exposure ({offset})",
               "an exposure cannot be negative: check for a sign error or a coded missing value",
               "negative (the model's exposure)")
    c.rows("error", name, num == 0, "{n_rows} {have} " + shown + f" 0, but {shown} is the model's exposure "
           f"({offset}) and must be above 0 in every row the model fits",
           f"set these rows aside (a row with no {shown} says nothing about a rate per {shown}): "
           + c.report.drop_command() + ", then fit kept.csv", "0 (the model's exposure)")


def _check_columns(c: _Collector, table: pd.DataFrame, extra_counts: tuple[str, ...] = (),
                   extra_strata: tuple[str, ...] = ()) -> None:
    present = list(map(str, table.columns))
    mapped = table.attrs.get("column_map", {})
    map_path = table.attrs.get("column_map_path")
    canonical = {*REQUIRED, *STAGES, *STRATA, "msoa", *extra_counts, *extra_strata}
    unknown = [col for col in present if col not in canonical and not col.startswith("la_")]
    for col, what in [*((n, "count") for n in extra_counts), *((n, "stratum") for n in extra_strata)]:
        if col not in present:
            c.table("error", col, f"{what} column '{col}' (named by the caller: --counts/--strata or the "
                    f"model) is not in the table{_suggest(col, unknown)}",
                    f"name a column the table has, or add '{col}' to the table")

    for col, user in mapped.items():  # mapped columns that are not in the file
        if col not in present and col not in REQUIRED:
            c.table("error", col, f"column '{user}' (mapped to '{col}' in {map_path}) is not "
                    f"in the file{_suggest(user, unknown)}",
                    f"correct the column name in {map_path}")
    for col in REQUIRED:
        if col in present:
            continue
        if col in mapped:
            message = (f"required column '{mapped[col]}' (mapped to '{col}' in {map_path}) "
                       f"is not in the file{_suggest(mapped[col], unknown)}")
            fix = f"correct the column name in {map_path}"
        else:
            message = f"required column '{col}' is missing{_suggest(col, unknown)}"
            fix = (f"rename the column to '{col}' or map it with --columns COLUMNS.toml "
                   "(see examples/columns_example.toml)")
        c.table("error", col, message, fix)

    if extra_counts:
        pass  # the named counts are the table's counts (checked above)
    elif not any(s in present for s in STAGES):
        near = [f"'{u}' -> '{s}'" for s in STAGES for u in unknown if _close(s, u)]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        c.table("error", None, f"no count column ({', '.join(STAGES)}){hint}",
                "rename a count column to a stage name or map it under [counts] with --columns")
    else:  # near-misses of optional columns would be ignored silently otherwise
        for name in (*STAGES, *STRATA, "msoa"):
            if name in present:
                continue
            for user in unknown:
                if _close(name, user, cutoff=0.8):
                    c.table("warning", user, f"column '{user}' is not a canonical name and is "
                            f"ignored; did you mean '{name}'?",
                            f"rename it to '{name}' or map it with --columns")


def _close(name: str, user: str, cutoff: float = 0.75) -> bool:
    user = user.lower()
    return user == name or bool(difflib.get_close_matches(name, [user], n=1, cutoff=cutoff))


def _suggest(name: str, candidates: list[str]) -> str:
    lower = {u.lower(): u for u in candidates}
    found = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
    found += [k for k in lower for a in _ALIASES.get(name, ()) if a in k and k not in found]
    if not found:
        return ""
    return f"; did you mean {' or '.join(repr(lower[k]) for k in found[:3])}?"


def _parse_numbers(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (float64 numbers, NaN where missing or bad; mask of present-but-bad values)."""
    if pd.api.types.is_bool_dtype(s) or s.map(lambda v: isinstance(v, bool | np.bool_)).any():
        num = pd.Series(np.nan, index=s.index)  # true/false is not a number of anything
    elif pd.api.types.is_numeric_dtype(s):
        num = s.astype("float64")
    else:
        num = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = s.notna() & ~np.isfinite(num.fillna(0))
    bad |= s.notna() & num.isna()
    return num.where(~bad), bad


def _not_number_fix(examples: list[str]) -> str | None:
    """A specific fix when the bad values are true/false or use thousands separators."""
    lower = {e.lower() for e in examples}
    if lower and lower <= _BOOLEAN:
        return ("the column holds true/false values, not numbers: is it the right column? Map the "
                "right one with --columns")
    if any(_THOUSANDS.match(e) for e in examples):
        return ("values such as " + ", ".join(repr(e) for e in examples if _THOUSANDS.match(e))
                + " have thousands separators: save the file without number formatting (1234, "
                "not 1,234)")
    if any(e.strip().endswith("%") for e in examples):
        return ("values such as " + ", ".join(repr(e) for e in examples if e.strip().endswith("%"))
                + " are formatted as percentages: save the file without number formatting and "
                "give a proportion (0.12, not 12%)")
    return None


def _check_count(c: _Collector, raw: pd.Series, stage: str, num: pd.Series,
                 bad: pd.Series) -> None:
    nonint = bad | (num.notna() & (num % 1 != 0))
    if nonint.any():
        examples = list(dict.fromkeys(raw[nonint].astype(str)))[:3]
        text = bad & num.isna()
        fix = "counts must be whole numbers"
        special = _not_number_fix(examples)
        if special:
            fix = special
        elif text.any():
            fix = (f"text such as {', '.join(repr(m) for m in SUPPRESSION_MARKERS[:6])} is how "
                   "the DfE marks suppressed or missing counts: get the unsuppressed counts "
                   "(do not replace them with 0) or drop the rows with --drop-invalid")
        c.rows("error", stage, nonint, "{n_rows} {have} non-integer counts (e.g. "
               + ", ".join(map(repr, examples)) + ")", fix, "count not a whole number")
    c.rows("error", stage, num < 0, "{n_rows} {have} negative counts",
           "counts cannot be negative; check for a sign error or a coded missing value like -1",
           "negative count")
    c.rows("error", stage, raw.isna(), "{n_rows} {have} missing counts",
           "fill in the count (0 if there were none) or drop the rows", "missing count")


def _check_missing_number(c: _Collector, raw: pd.Series, num: pd.Series, col: str,
                          fix: str) -> None:
    bad = raw.notna() & num.isna()
    examples = list(dict.fromkeys(raw[bad].astype(str)))[:3]
    what = f" (e.g. {', '.join(map(repr, examples))})" if examples else ""
    fix = _not_number_fix(examples) or fix
    c.rows("error", col, num.isna(), "{n_rows} {have} a missing or non-numeric " + col + what,
           fix, "missing or not a number")


def _check_deprivation(c: _Collector, raw: pd.Series) -> None:
    num, _ = _parse_numbers(raw)
    _check_missing_number(c, raw, num, "deprivation",
                          "give the income-deprivation rate (a proportion, 0 to 1) for each row")
    outside = (num < 0) | (num > 1)
    if not outside.any():
        return
    if num.max() <= 100 and (num > 1).sum() >= num.notna().sum() / 2:  # mostly above 1
        message = ("{n_rows} {have} deprivation outside [0, 1]; the values look like "
                   f"percentages (max {num.max():g})")
        fix = "divide the column by 100: deprivation is a proportion (0.23, not 23)"
    else:
        message = "{n_rows} {have} deprivation outside [0, 1]"
        fix = "deprivation is the proportion of people income-deprived, between 0 and 1"
    c.rows("error", "deprivation", outside, message, fix, "outside [0, 1]")


def _splitting_column(table: pd.DataFrame, key: list[str], max_levels: int = 100) -> str | None:
    """A column (``year`` first) of few values that makes ``key`` unique, e.g. the year of a
    neighbourhood x year table validated without ``--strata year``; None if there is none."""
    others = [c for c in table.columns if c not in key and table[c].nunique() <= max_levels]
    for col in sorted(others, key=lambda c: c != "year"):
        if not table.duplicated(subset=[*key, col]).any():
            return str(col)
    return None


def _check_structure(c: _Collector, table: pd.DataFrame, extra_strata: tuple[str, ...] = (),
                     keys: tuple[str, ...] = ()) -> None:
    present = set(table.columns)
    if "neighbourhood" in present:
        key = row_key(table, [*(s for s in (*STRATA, *extra_strata) if s in present)], keys)
        dup = table.duplicated(subset=key, keep=False) & table[key].notna().all(axis=1)
        if dup.any():
            first = table.loc[dup, key].iloc[0]
            what = " x ".join(key)
            fix = f"keep one row per {what}: aggregate or remove the duplicates"
            split = _splitting_column(table, key)
            if split is not None:
                fix = (f"the rows differ by '{split}': if each is one {split} of the same {what}, name it "
                       f"as a stratum (hierarchy validate --strata {split}); else aggregate or remove them")
            c.rows("error", "neighbourhood", dup, "{n_rows} {have} a duplicated " + what
                   + f" (e.g. {', '.join(map(str, first))})", fix, f"duplicated {what}")
    for child, parent in (("neighbourhood", "la"), ("neighbourhood", "msoa"), ("msoa", "la")):
        _check_nesting(c, table, child, parent)

    if "la" not in present:
        return
    las = table["la"]
    for col in sorted(p for p in present if p.startswith("la_")):
        value, _ = _parse_numbers(table[col])
        if value.isna().all() or (value.isna() & table[col].notna()).any():
            value = table[col]  # not numeric: compare as read
        c.rows("error", col, las.notna() & value.isna(), "{n_rows} {have} no " + col + " value",
               "give the LA's value on every row of the LA", "missing")
        n_values = value.groupby(las).nunique()
        varies = n_values[n_values > 1].index
        if len(varies):
            example = varies[0]
            values = ", ".join(map(str, pd.unique(value[las == example].dropna())[:3]))
            c.rows("error", col, las.isin(varies), "{n_rows} {have} an LA covariate that "
                   f"varies within its LA ({_plural(len(varies), 'LA')}, e.g. {example}: {values})",
                   "an la_* column must have one value per LA; fix the values or rename the "
                   "column so it does not start with 'la_'", "varies within the LA")
    if "neighbourhood" in present:
        sizes = table["neighbourhood"].groupby(las).nunique()
        small = sizes[sizes < MIN_LA_NEIGHBOURHOODS]
        if len(small):
            examples = ", ".join(f"{la}: {n}" for la, n in small.head(3).items())
            c.rows("warning", "la", las.isin(small.index),
                   "{n_rows} {have} an LA with fewer than " + str(MIN_LA_NEIGHBOURHOODS)
                   + f" neighbourhoods ({_plural(len(small), 'LA')}, e.g. {examples})",
                   "small LAs are estimated mostly from the national average; check the LA "
                   "codes or whether the table is complete", "small LA")


def row_key(table: pd.DataFrame, strata: list[str], keys: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The columns that identify a row: ``neighbourhood`` and ``strata``, plus, where those repeat,
    the fewest of ``keys`` (in order) that make the rows unique (all of them if none does)."""
    key = ["neighbourhood", *strata]
    extra = [k for k in dict.fromkeys(keys) if k in table.columns and k not in key]
    if not extra or not table.duplicated(subset=key).any():
        return key
    for k in extra:
        key.append(k)
        if not table.duplicated(subset=key).any():
            break
    return key


def _check_nesting(c: _Collector, table: pd.DataFrame, child: str, parent: str) -> None:
    if child not in table.columns or parent not in table.columns:
        return
    n_parents = table[parent].groupby(table[child]).nunique()
    bad = n_parents[n_parents > 1].index
    if not len(bad):
        return
    example = bad[0]
    parents = ", ".join(map(str, pd.unique(table.loc[table[child] == example, parent].dropna())))
    c.rows("error", child, table[child].isin(bad),
           "{n_rows} {have} " + f"a {child} listed under more than one {parent.upper()} "
           f"({_plural(len(bad), child)}, e.g. {example}: {parents})",
           f"each {child} belongs to exactly one {parent.upper()}: correct the codes (are two "
           "boundary vintages mixed?)", f"listed under more than one {parent.upper()}")


def _check_reference(c: _Collector, table: pd.DataFrame, reference: Any) -> None:
    for col, frame, key, what in (("neighbourhood", reference.lsoa, "lsoa", "LSOA"),
                                  ("la", reference.la, "la", "LA")):
        if col not in table.columns:
            continue
        known = set(frame[key].astype(str))
        unknown = table[col].notna() & ~table[col].isin(known)
        if unknown.any():
            examples = ", ".join(pd.unique(table.loc[unknown, col])[:3].astype(str))
            c.rows("warning", col, unknown, "{n_rows} {have} " + f"{what} codes not in the "
                   f"reference geography (e.g. {examples})",
                   f"check the codes and their boundary vintage match the reference {what}s",
                   f"unknown {what} code")


def _row_labels(table: pd.DataFrame) -> pd.Index:
    return table.index if table.index.is_unique else pd.RangeIndex(len(table))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

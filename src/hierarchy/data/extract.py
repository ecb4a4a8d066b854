"""Read and validate a child-level Children in Need (CIN) census extract.

The extract has one row per child episode, or per dated event within an episode (a row per
section 47 enquiry or per plan repeats the episode's fields), in the DfE field names of
:data:`FIELDS`. Another spelling is mapped with a TOML file whose ``[fields]`` section maps each
DfE name to the user's column (``examples/cin_fields_example.toml``)::

    [fields]
    LAchildID = "child_id"
    CINreferralDate = "referral_date"

:func:`read_extract` reads it (CSV or Parquet, through :func:`hierarchy.data.table.read_table`, so row
labels are CSV line numbers or Parquet row positions), :func:`validate_extract` reports every
problem at once in the style of :func:`hierarchy.data.table.validate` (file, column, rows, fix), and
:func:`parse_extract` returns the typed records the aggregation uses.

Dates are ISO (``2019-03-31``) or DfE day-first (``31/03/2019``). Codes follow the CIN census
guide: ``GenderCurrent`` 0 not known, 1 male, 2 female, 9 not specified; ``Ethnicity`` the
DfE 4-letter codes (``WBRI`` ...; ``REFU``/``NOBT`` refused or not obtained); ``PrimaryNeedCode``
N0-N9; ``InitialCategoryOfAbuse`` PHY, EMO, SAB, NEG, MUL.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hierarchy.config import did_you_mean
from hierarchy.data.table import ValidationReport, _as_code, _Collector, _suggest, read_table
from hierarchy.errors import HierarchyError

REQUIRED_FIELDS: tuple[str, ...] = ("LAchildID", "LA", "LSOA", "PersonBirthDate", "GenderCurrent",
                                    "CINreferralDate")
"""DfE fields every extract must have."""

CARE_REQUIRED_FIELDS: tuple[str, ...] = ("LAchildID", "LA", "LSOA", "PersonBirthDate", "GenderCurrent",
                                         "CLAstartDate")
"""Fields every looked-after (care episode) extract must have: one row per care episode, with
``CLAstartDate`` (SSDA903 DECOM), ``CLAendDate`` (DEC, empty while looked after) and
``ReasonEpisodeCeased`` (REC)."""

DATE_FIELDS: tuple[str, ...] = ("PersonBirthDate", "CINreferralDate", "AssessmentActualStartDate",
                                "S47ActualStartDate", "DateOfInitialCPC", "CPPstartDate", "CPPendDate",
                                "CINclosureDate", "CLAstartDate", "CLAendDate")
"""Date fields (the optional ones may be absent or empty)."""

CODE_FIELDS: tuple[str, ...] = ("Ethnicity", "PrimaryNeedCode", "InitialCategoryOfAbuse",
                                "ReasonForClosure", "AssessmentFactors", "ReasonEpisodeCeased")

RETURN_HOME_CODES: tuple[str, ...] = ("E4A", "E4B")
"""``ReasonEpisodeCeased`` (SSDA903 REC) codes of a return home to parents or relatives (as part of
the care plan, or not): the start of a spell at risk of re-entry to care."""

FIELDS: tuple[str, ...] = tuple(dict.fromkeys((*REQUIRED_FIELDS, *DATE_FIELDS, *CODE_FIELDS)))
"""Every DfE field the aggregation reads; other columns are kept and ignored."""

GENDER = {"0": "not known", "1": "male", "2": "female", "9": "not specified"}
"""``GenderCurrent`` codes; only 1 and 2 have a population to compare with."""

ETHNIC_GROUP = {
    **dict.fromkeys(("WBRI", "WIRI", "WOTH", "WIRT", "WROM"), "White"),
    **dict.fromkeys(("MWBC", "MWBA", "MWAS", "MOTH"), "Mixed"),
    **dict.fromkeys(("AIND", "APKN", "ABAN", "AOTH", "ACHN", "CHNE"), "Asian"),
    **dict.fromkeys(("BCRB", "BAFR", "BOTH"), "Black"),
    **dict.fromkeys(("OOTH",), "Other"),
    **dict.fromkeys(("REFU", "NOBT"), "Unknown"),
}
"""DfE ethnicity codes -> broad ethnic group (the ONS 2011 census groups)."""

NEED_CODES: tuple[str, ...] = tuple(f"N{i}" for i in range(10))
ABUSE_CATEGORY = {"PHY": "physical", "EMO": "emotional", "SAB": "sexual", "NEG": "neglect",
                  "MUL": "multiple"}
"""``InitialCategoryOfAbuse`` codes -> the names used in count columns (``cp_plan_neglect``)."""

REASON_CEASED: tuple[str, ...] = ("E11", "E12", "E13", "E14", "E15", "E16", "E17", "E2", "E3", "E41", "E45",
                                  "E46", "E47", "E48", "E4A", "E4B", "E5", "E6", "E7", "E8", "E9", "X1")
"""SSDA903 reasons a care episode ceased (``ReasonEpisodeCeased``)."""

ORDER: tuple[tuple[str, str], ...] = (
    ("CINreferralDate", "CINclosureDate"), ("CINreferralDate", "AssessmentActualStartDate"),
    ("CINreferralDate", "S47ActualStartDate"), ("S47ActualStartDate", "DateOfInitialCPC"),
    ("CINreferralDate", "CPPstartDate"), ("CPPstartDate", "CPPendDate"), ("CLAstartDate", "CLAendDate"),
)
"""(earlier, later) date pairs that must be in that order within a row."""


@dataclass(frozen=True)
class FieldMap:
    """DfE field name -> the user's column name, from a ``[fields]`` TOML table."""

    fields: dict[str, str]
    path: Path | None = None


def load_field_map(path: str | os.PathLike) -> FieldMap:
    """Read a TOML ``[fields]`` map (see ``examples/cin_fields_example.toml``).

    Raises
    ------
    HierarchyError
        If the file is missing, not TOML, has a section other than ``[fields]``, an unknown DfE
        field (with a did-you-mean hint), a non-string value or a column mapped twice.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HierarchyError(f"field map {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise HierarchyError(f"cannot read field map {path}: {err}") from None
    extra = [s for s in raw if s != "fields"]
    if extra:
        raise HierarchyError(f"{path}: unknown section [{extra[0]}]; a field map has one section, "
                             "[fields], mapping DfE field names to your column names")
    body = raw.get("fields", {})
    if not isinstance(body, dict):
        raise HierarchyError(f"{path}: [fields] must be a table of DfEName = \"your column\"")
    out: dict[str, str] = {}
    for key, user in body.items():
        if key not in FIELDS:
            raise HierarchyError(f"{path}: unknown DfE field '{key}' in [fields]"
                                 f"{did_you_mean(key, FIELDS, cutoff=0.6)}; known: {', '.join(FIELDS)}")
        if not isinstance(user, str) or not user.strip():
            raise HierarchyError(f"{path}: [fields] {key} must be a column name in quotes, got {user!r}")
        out[key] = user.strip()
    users = list(out.values())
    twice = sorted({u for u in users if users.count(u) > 1})
    if twice:
        raise HierarchyError(f"{path}: column(s) {', '.join(map(repr, twice))} mapped to more than one field")
    return FieldMap(out, path)


def read_extract(path: str | os.PathLike, fields: FieldMap | str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet extract, renaming mapped columns to DfE field names.

    Values are kept as read (strings for CSV) so that :func:`validate_extract` can point at bad
    cells; ``attrs`` carry ``source``, ``row_label`` and, with a map, ``field_map`` and its path.
    """
    if fields is not None and not isinstance(fields, FieldMap):
        fields = load_field_map(fields)
    table = read_table(path)
    if fields is not None:
        clash = [f for f, u in fields.fields.items() if f in table.columns and u != f]
        if clash:
            raise HierarchyError(f"{path}: the file already has column(s) {', '.join(map(repr, clash))} and "
                                 f"{fields.path} maps other columns to them; rename one of them")
        table = table.rename(columns={u: f for f, u in fields.fields.items()})
        table.attrs["field_map"] = dict(fields.fields)
        table.attrs["field_map_path"] = str(fields.path)
    for col in (*REQUIRED_FIELDS, *CODE_FIELDS):
        if col in table.columns and col not in DATE_FIELDS:
            table[col] = _as_code(table[col]).str.strip()  # codes as text, missing kept
    return table


def parse_dates(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Dates from ISO or day-first DfE text; returns (datetime64 or NaT, mask of unparseable cells)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s).dt.normalize().astype("datetime64[ns]"), pd.Series(False, index=s.index)
    text = s.astype(str).str.strip().where(s.notna())
    iso = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    uk = pd.to_datetime(text, format="%d/%m/%Y", errors="coerce")
    out = iso.fillna(uk).astype("datetime64[ns]")
    return out, text.notna() & out.isna()


def census_year(dates: pd.Series) -> pd.Series:
    """DfE census year of each date: year Y runs from 1 April Y-1 to 31 March Y (Int64, NA for NaT)."""
    d = pd.to_datetime(dates)
    return (d.dt.year + (d.dt.month >= 4)).astype("Int64")


def age_at(birth: pd.Series, when: pd.Series) -> pd.Series:
    """Completed years of age on each date (a birthday counts on the day itself); Int64."""
    b, w = pd.to_datetime(birth), pd.to_datetime(when)
    before = (w.dt.month < b.dt.month) | ((w.dt.month == b.dt.month) & (w.dt.day < b.dt.day))
    return (w.dt.year - b.dt.year - before.astype("Int64")).astype("Int64")


BULK_SHARE = 0.1
"""A census year can be the default only if at least this share of the busiest year's records are
dated in it: a later year with fewer (one referral typed a year ahead, or dated 2030) decides nothing."""


def _year_field(extract: pd.DataFrame) -> str:
    field = "CINreferralDate" if "CINreferralDate" in extract.columns else "CLAstartDate"
    if field not in extract.columns:
        raise HierarchyError("the extract has neither CINreferralDate nor CLAstartDate: cannot tell its "
                             "census year; give --extract-end")
    return field


def default_census_year(extract: pd.DataFrame, field: str | None = None) -> tuple[int, pd.Series, str]:
    """The census year the bulk of the records support, the records dated after it, and what it rests on.

    The year is the latest census year holding at least :data:`BULK_SHARE` of the busiest year's
    referral dates (care start dates in a looked-after extract); records dated in later years are
    returned (a boolean mask) so that they can be named, never counted in a year of their own.

    Returns
    -------
    tuple
        ``(year, later, note)``: ``note`` says which dates decide the year, e.g.
        ``"census year 2019 holds 7,340 of 9,092 CINreferralDate dates"``.
    """
    field = field or _year_field(extract)
    ref, _ = parse_dates(extract[field])
    years = census_year(ref)
    counts = years.value_counts()
    if not len(counts):
        raise HierarchyError(f"the extract has no valid {field}: cannot tell its census year")
    year = int(counts[counts >= BULK_SHARE * counts.max()].index.max())
    later = (years > year).fillna(False).astype(bool)
    note = f"census year {year} holds {int(counts[year]):,} of {int(counts.sum()):,} {field} dates"
    return year, later, note


def default_extract_end(extract: pd.DataFrame) -> pd.Timestamp:
    """31 March of the census year the bulk of the referral dates (care start dates, in a looked-after
    extract) support (:func:`default_census_year`): the end of the collection.

    Raises
    ------
    HierarchyError
        If some records are dated after that year: they are named (rows and dates), and the fix is to
        correct them or give the extract's end (``--extract-end``) and ``--year``.
    """
    year, later, note = default_census_year(extract)
    if later.any():
        field = _year_field(extract)
        rows = ", ".join(f"{i} ({extract.at[i, field]})" for i in extract.index[later][:5])
        raise HierarchyError(f"{int(later.sum())} record(s) have {field} after census year {year} ({note}; the "
                             f"latest year most records support): row(s) {rows}. Correct those dates, or give "
                             "the extract's real end with --extract-end and the census year with --year")
    return pd.Timestamp(year, 3, 31)


def validate_extract(extract: pd.DataFrame, *, source: str, lsoa_codes=None, lsoa_la=None,
                     extract_end: pd.Timestamp | None = None,
                     required: tuple[str, ...] = REQUIRED_FIELDS) -> ValidationReport:
    """Check an extract read by :func:`read_extract`; every problem at once.

    Parameters
    ----------
    extract
        The extract with DfE field names.
    source
        The file name, for the report.
    lsoa_codes
        Known neighbourhood codes (an unknown LSOA is an error: the child cannot be placed).
    lsoa_la
        Optional mapping LSOA -> LA code of the geography; an extract LA that differs is a warning
        (children placed out of area are counted in the LA of the neighbourhood they live in).
    extract_end
        Last day the extract covers (default :func:`default_extract_end`); later dates are errors.
    required
        The fields every record needs: :data:`REQUIRED_FIELDS` (CIN census) or
        :data:`CARE_REQUIRED_FIELDS` (a looked-after extract, for re-entry to care).

    Returns
    -------
    hierarchy.data.table.ValidationReport
    """
    c = _Collector(extract, source)
    present = set(extract.columns)
    _check_fields(c, extract, required)
    if len(extract) == 0:
        c.table("error", None, "the extract has no rows", "check the file is the right one")
    for col in required:
        if col in present:
            c.rows("error", col, extract[col].isna(), "{n_rows} {have} no " + col,
                   f"fill in {col}: every record needs it", "missing")

    dates = _check_dates(c, extract, extract_end)
    _check_codes(c, extract)
    _check_lsoas(c, extract, lsoa_codes, lsoa_la)
    _check_children(c, extract, dates)
    dup = extract.duplicated(keep="first")
    c.rows("error", None, dup, "{n_rows} {have} an exact copy earlier in the file (duplicated records)",
           "remove the repeated records: each episode or event is recorded once", "duplicated record")
    return c.report


def _check_dates(c: _Collector, extract: pd.DataFrame, extract_end: pd.Timestamp | None) -> dict[str, pd.Series]:
    """:func:`validate_extract`'s date checks (readable, in order, after birth, before the extract's end);
    returns the parsed dates by field."""
    present = set(extract.columns)
    dates = {}
    for col in DATE_FIELDS:
        if col not in present:
            continue
        d, bad = parse_dates(extract[col])
        dates[col] = d
        if bad.any():
            ex = ", ".join(map(repr, pd.unique(extract.loc[bad, col].astype(str))[:3]))
            c.rows("error", col, bad, "{n_rows} {have} a date that cannot be read (e.g. " + ex + ")",
                   "write dates as YYYY-MM-DD or DD/MM/YYYY", "unreadable date")
    first = next((f for f in ("CINreferralDate", "CLAstartDate") if f in dates and dates[f].notna().any()), None)
    end, end_note = extract_end, ""
    if first is not None and extract_end is None:
        year, _, note = default_census_year(extract, first)
        end = pd.Timestamp(year, 3, 31)
        end_note = f", the default: {note}, the latest year most records support"
    for early, late in ORDER:
        if early in dates and late in dates:
            c.rows("error", late, dates[late] < dates[early],
                   "{n_rows} {have} " + f"{late} before {early}",
                   f"check both dates: {late} cannot come before {early} in the same record",
                   f"before {early}")
    birth = dates.get("PersonBirthDate")
    if birth is not None:
        for col, d in dates.items():
            if col != "PersonBirthDate":
                c.rows("error", col, d < birth, "{n_rows} {have} " + f"{col} before PersonBirthDate",
                       "check the birth date and the event date (referrals of unborn children need "
                       "the expected date of birth on or before the referral)", "before birth")
    if end is not None:
        for col, d in dates.items():
            c.rows("error", col, d > end, "{n_rows} {have} " + f"{col} after the extract's end "
                   f"({end.date()}{end_note})", "check the date, or give the extract's real end with "
                   "--extract-end (and the census year with --year)", "after the extract's end")

    return dates


def _check_lsoas(c: _Collector, extract: pd.DataFrame, lsoa_codes, lsoa_la) -> None:
    """:func:`validate_extract`'s neighbourhood checks: known LSOA codes, the LA of each LSOA."""
    present = set(extract.columns)
    if "LSOA" in present and lsoa_codes is not None:
        known = set(map(str, lsoa_codes))
        unknown = extract["LSOA"].notna() & ~extract["LSOA"].isin(known)
        ex = ", ".join(pd.unique(extract.loc[unknown, "LSOA"])[:3].astype(str))
        c.rows("error", "LSOA", unknown, "{n_rows} {have} LSOA codes not in the reference geography "
               f"(e.g. {ex})", "use 2011 LSOA codes (E01...) that match the reference geography, or "
               "correct the codes", "unknown LSOA code")
        if lsoa_la is not None and "LA" in present:
            geo_la = extract["LSOA"].map(dict(lsoa_la))
            differ = geo_la.notna() & extract["LA"].notna() & (geo_la != extract["LA"])
            if differ.any() and (geo_la == extract["LA"]).any():  # same coding: worth a warning
                c.rows("warning", "LA", differ, "{n_rows} {have} an LA other than the LA of the LSOA "
                       "(children living out of area)", "none needed: they are counted in the LA "
                       "of the neighbourhood they live in; check the LSOA if that is wrong",
                       "LA differs from LSOA's LA")


def _check_fields(c: _Collector, extract: pd.DataFrame, required: tuple[str, ...] = REQUIRED_FIELDS) -> None:
    present = list(map(str, extract.columns))
    mapped = extract.attrs.get("field_map", {})
    map_path = extract.attrs.get("field_map_path")
    others = [p for p in present if p not in FIELDS]
    for f, user in mapped.items():
        if f not in present:
            hint = _suggest(user, others)
            c.table("error", f, f"column '{user}' (mapped to '{f}' in {map_path}) is not in the file{hint}",
                    f"correct the column name in {map_path}")
    for f in required:
        if f in present or f in mapped:
            continue
        hint = _suggest(f, others)
        c.table("error", f, f"required field '{f}' is missing{hint}",
                f"rename the column to '{f}' or map it with --columns FIELDS.toml "
                "(see examples/cin_fields_example.toml)")


def _check_codes(c: _Collector, extract: pd.DataFrame) -> None:
    checks = (("GenderCurrent", tuple(GENDER), "0 not known, 1 male, 2 female, 9 not specified"),
              ("Ethnicity", tuple(ETHNIC_GROUP), "the DfE 4-letter codes, e.g. WBRI, MWBC, APKN, BAFR, "
                                                 "OOTH, REFU, NOBT"),
              ("PrimaryNeedCode", NEED_CODES, "N0 to N9"),
              ("InitialCategoryOfAbuse", tuple(ABUSE_CATEGORY), "PHY, EMO, SAB, NEG or MUL"),
              ("ReasonEpisodeCeased", REASON_CEASED, "the SSDA903 REC codes, e.g. E4A, E4B, E11, E8, X1"))
    for col, allowed, text in checks:
        if col not in extract.columns:
            continue
        v = extract[col]
        bad = v.notna() & ~v.str.upper().isin(allowed)
        ex = ", ".join(map(repr, pd.unique(v[bad])[:3]))
        c.rows("error", col, bad, "{n_rows} {have} an unknown " + col + f" code (e.g. {ex})",
               f"use {text}", "unknown code")


def _check_children(c: _Collector, extract: pd.DataFrame, dates: dict[str, pd.Series]) -> None:
    """A child (LA, LAchildID) has one birth date and sex; an episode sits in one LA."""
    if not {"LA", "LAchildID"} <= set(extract.columns):
        return
    key = extract["LA"].astype(str) + "\x1f" + extract["LAchildID"].astype(str)
    for col in ("PersonBirthDate", "GenderCurrent"):
        if col not in extract.columns:
            continue
        value = dates[col].astype(str) if col in dates else extract[col].astype(str)
        n = value.groupby(key).transform("nunique")
        c.rows("error", col, n > 1, "{n_rows} {have} a child (LA, LAchildID) recorded with more than one "
               + col, f"give each child one {col}; or are two children sharing an LAchildID?",
               f"child with several {col}")
    if {"CINreferralDate", "PersonBirthDate"} <= set(dates):
        episode = (extract["LAchildID"].astype(str) + "\x1f" + dates["PersonBirthDate"].astype(str)
                   + "\x1f" + dates["CINreferralDate"].astype(str))
        n_la = extract["LA"].groupby(episode).transform("nunique")
        c.rows("error", "LA", n_la > 1, "{n_rows} {have} one episode (LAchildID, birth date, referral "
               "date) recorded in more than one LA", "an episode belongs to the LA that received the "
               "referral: correct the LA codes or remove the copy", "episode in two LAs")


def parse_extract(extract: pd.DataFrame) -> pd.DataFrame:
    """Typed records from a validated extract: dates as datetime64, codes upper-case text.

    Adds ``child`` (LA + LAchildID, the DfE child identity), ``sex`` (male/female/NA) and
    ``ethnicity`` (broad group, NA where refused or not obtained).
    """
    out = pd.DataFrame(index=extract.index)
    for col in extract.columns:
        if col in DATE_FIELDS:
            out[col] = parse_dates(extract[col])[0]
        elif col in (*REQUIRED_FIELDS, *CODE_FIELDS):
            out[col] = extract[col].str.upper() if col in CODE_FIELDS else extract[col]
    out["child"] = out["LA"].astype(str) + "|" + out["LAchildID"].astype(str)
    out["sex"] = out["GenderCurrent"].map({"1": "male", "2": "female"})
    if "Ethnicity" in out:
        group = out["Ethnicity"].map(ETHNIC_GROUP)
        out["ethnicity"] = group.where(group != "Unknown")
    return out

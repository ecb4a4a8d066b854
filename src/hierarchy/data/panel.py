"""The DfE local-authority panel 2013-2025: one row per LA x year x measure.

Built from the DfE children's social care files in ``dfe_csc/`` of the England reference folder
(see its SOURCES.md) and the IoD2019 LSOA file, or generated (:func:`synthetic_panel`) when the folder
is absent. Nothing derived from the real files is stored in the project.

Columns of the panel
--------------------
``level``
    ``"LA"`` or ``"England"`` (DfE's published England figure, one row per year x measure).
``year``
    DfE ``time_period``: 2019 is the year ending 31 March 2019.
``measure``, ``count``, ``marker``
    The count (float; NaN where DfE suppressed it) and DfE's marker for it (``"c"`` suppressed,
    ``"x"`` not available, ``"u"`` low reliability, ``"z"`` not applicable; ``""`` when published).
    A suppressed count is never 0: a ``"c"`` count lies between the bounds of
    :data:`SUPPRESSION_BOUNDS` for its year (:func:`count_bounds`) and the panel models keep it as
    interval-censored; counts with other markers are left out of the likelihood.
``exposure``, ``exposure_measure``, ``exposure_marker``, ``exposure_note``
    Children 0-17 (ONS mid-year estimate of the previous calendar year, as DfE's rates use) for rate
    measures; the earlier stage's count for conversion measures (:data:`CONVERSIONS`).
``la_code``, ``la_name``, ``dfe_number``
    The authority as DfE reported it that year (``dfe_number`` is DfE's three-digit LA number).
``series``, ``series_name``, ``code_change``
    The stable area an LA belongs to over 2013-2025 (:data:`REORGANISATIONS`): a retired code and its
    successors form one series; ``code_change`` names the reorganisation ('' for none).
``deprivation``, ``idaci``, ``rural_share``, ``log_density``
    The LA's child-weighted IoD2019 income-deprivation rate and IDACI score (proportions) over its
    2011 LSOAs, the share of its children in rural LSOAs (RUC2011 D/E) and log people per km2.
    ``series_*`` columns hold the same for the series.
``stat_neighbours``
    The LA's ten DfE statistical neighbours (DfE LA numbers, comma separated; the 2025 model where
    the LA is in it, else the April 2021 groupings). DfE publishes neighbour lists, not groups.

Judgement calls: the section 47 file uses the superseded codes E06000048 (Northumberland) and
E08000020 (Gateshead) for 2013-2017; they are read as E06000057 and E08000037 (same areas,
:data:`CODE_CORRECTIONS`), and the build refuses files that give one DfE LA number two codes in a
year. The pre-2019 Dorset authorities have no ONS population in the DfE file ("x"); their
exposure is their share (by mid-2019 LSOA children) of the nearest published year of the Dorset area
(BCP + Dorset, mid-2019), noted in ``exposure_note``. IDACI is approximate in the reference file and
missing for 4,553 LSOAs (small, suppressed numerators); those take the value predicted from their
income rate by a least-squares line over the LSOAs that have both.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy.data.reference import REFERENCE_FIX, find_reference_dir, read_reference_csv
from hierarchy.errors import HierarchyError

__all__ = [
    "CONVERSIONS",
    "RATE_MEASURES",
    "REORGANISATIONS",
    "Panel",
    "SUPPRESSION_BOUNDS",
    "build_panel",
    "count_bounds",
    "get_panel",
    "read_panel",
    "synthetic_panel",
    "treatment",
    "write_panel",
]

YEARS = tuple(range(2013, 2026))

# measure -> (file in dfe_csc/, column); exposure: children 0-17
RATE_MEASURES: dict[str, tuple[str, str]] = {
    "referrals": ("c1_children_in_need_referrals_and_rereferrals_2013_to_2025.csv", "referral_count"),
    "cin_at31": ("b1_children_in_need_2013_to_2025.csv", "At31_episodes"),
    "s47": ("c4_children_in_need_section_47s_and_icpcs_2013_to_2025.csv", "Section47"),
    "icpc": ("c4_children_in_need_section_47s_and_icpcs_2013_to_2025.csv", "ICPC"),
    "cpp_start": ("d3_cpps_subsequent_plan_2013_to_2025.csv", "CPP_start"),
    "cpp_at31": ("d5_cpps_at31march_by_duration_2013_to_2025.csv", "CPP_At31"),
    "cla_at31": ("cla_number_and_rate_per_10k_children.csv", "children_count"),
}
# counts that only appear as numerators of conversions
_OTHER_COUNTS: dict[str, tuple[str, str]] = {
    "rereferrals": ("c1_children_in_need_referrals_and_rereferrals_2013_to_2025.csv", "rereferral_count"),
    "nfa": ("c1_children_in_need_referrals_and_rereferrals_2013_to_2025.csv", "no_further_action_count"),
    "not_in_need": ("c1_children_in_need_referrals_and_rereferrals_2013_to_2025.csv", "not_in_need_count"),
    "cpp_subsequent": ("d3_cpps_subsequent_plan_2013_to_2025.csv", "CPP_subsequent"),
}
# conversion measure -> (numerator count, exposure count): the earlier stage is the exposure
CONVERSIONS: dict[str, tuple[str, str]] = {
    "s47_per_referral": ("s47", "referrals"),
    "icpc_per_s47": ("icpc", "s47"),
    "cpp_per_icpc": ("cpp_start", "icpc"),
    "cpp_per_referral": ("cpp_start", "referrals"),
    "rereferral_per_referral": ("rereferrals", "referrals"),
    "nfa_per_referral": ("nfa", "referrals"),
    "not_in_need_per_referral": ("not_in_need", "referrals"),
    "subsequent_per_cpp": ("cpp_subsequent", "cpp_start"),
}
POPULATION_FILE = "ons_mid-year_population_estimates_2012_to_2024.csv"
SN_FILES = ("sn_model_2025_wide.csv", "New_Statistical_Neighbour_Groupings_April_2021.csv")
IOD_FILE = "iod2019/iod2019_lsoa11_england_core.csv"
MARKERS = frozenset({"c", "x", "u", "z", "low", ":", "..", "k", "~"})
SUPPRESSION_BOUNDS: dict[int, tuple[int, int]] = {year: (1, 5) for year in YEARS}
"""The values a count DfE marked ``"c"`` can take, per year (DfE ``time_period``), inclusive.

The same rule in every year 2013-2025: the data guidance of the children in need releases (e.g. 2020,
2021) says "any number between 1 and 5 inclusive has been suppressed and replaced by 'c'" and "0
indicates the original figure submitted was zero"; the 2013-2019 releases published the same cells as
"x" (1 to 5), recoded to ``"c"`` in DfE's 2013-2025 time-series files read here; the children looked
after release (``cla_at31``, 2021-2025) leaves LA figures unrounded and suppresses the same small
counts. DfE also applies secondary suppression "where necessary", which could hide a larger count
as ``"c"``; in the 2013-2025 files every LA ``"c"`` cell is the Isles of Scilly or the City of London
(under 1,000 children), whose counts of these measures are small, so (1, 5) is taken for all of them.
A year not listed here has no known rule: :func:`count_bounds` refuses it."""

# Reorganisations 2013-2025: series code, series name, flag, DfE codes in the series
REORGANISATIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("E06000058+E06000059", "Bournemouth, Christchurch and Poole + Dorset",
     "Dorset 2019: Bournemouth, Poole and Dorset county -> BCP and Dorset (DfE from 2020)",
     ("E06000028", "E06000029", "E10000009", "E06000058", "E06000059")),
    ("E06000060", "Buckinghamshire", "Buckinghamshire 2020: new code, same area (DfE from 2021)",
     ("E10000002", "E06000060")),
    ("E06000061+E06000062", "Northamptonshire (North + West)",
     "Northamptonshire 2021: county -> North and West Northamptonshire (DfE from 2022)",
     ("E10000021", "E06000061", "E06000062")),
    ("E06000063+E06000064", "Cumbria (Cumberland + Westmorland and Furness)",
     "Cumbria 2023: county -> Cumberland and Westmorland and Furness (DfE from 2024)",
     ("E10000006", "E06000063", "E06000064")),
    ("E06000065", "North Yorkshire", "North Yorkshire 2023: new code, same area (DfE from 2024)",
     ("E10000023", "E06000065")),
    ("E06000066", "Somerset", "Somerset 2023: new code, same area (DfE from 2024)",
     ("E10000027", "E06000066")),
)
# superseded codes for the same area (ONS code corrections of 2013) that c4 uses for 2013-2017
CODE_CORRECTIONS = {"E06000048": "E06000057", "E08000020": "E08000037"}  # Northumberland, Gateshead
# pre-2019 Dorset codes: LSOAs found by their 2011 LSOA names
_OLD_DORSET = {"E06000028": ("Bournemouth ",), "E06000029": ("Poole ",),
               "E10000009": ("Christchurch ",)}


def treatment(marker: str) -> str:
    """How the panel models treat a cell with this DfE marker ('' for a published count)."""
    if marker == "":
        return "observed"
    return "censored" if marker == "c" else "left out"


def count_bounds(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of each row's count: the count where published, the year's
    :data:`SUPPRESSION_BOUNDS` where DfE marked it ``"c"``, NaN for other markers (left out).

    Raises
    ------
    HierarchyError
        If a ``"c"`` row's year has no suppression rule in :data:`SUPPRESSION_BOUNDS`.
    """
    count = table["count"].to_numpy(float)
    censored = (table["marker"] == "c").to_numpy() & ~np.isfinite(count)
    years = table["year"].to_numpy()
    if unknown := sorted({int(y) for y in years[censored] if int(y) not in SUPPRESSION_BOUNDS}):
        raise HierarchyError(f"panel column marker: 'c' cells in years {unknown}, which have no DfE "
                             "suppression rule in hierarchy.data.panel.SUPPRESSION_BOUNDS; add the rule from "
                             "that release's data guidance")
    lo = np.array([SUPPRESSION_BOUNDS.get(int(y), (np.nan, np.nan))[0] for y in years], float)
    hi = np.array([SUPPRESSION_BOUNDS.get(int(y), (np.nan, np.nan))[1] for y in years], float)
    return np.where(censored, lo, count), np.where(censored, hi, count)


@dataclass(frozen=True)
class Panel:
    """A built panel and what it says about itself.

    Attributes
    ----------
    table : pandas.DataFrame
        The panel (see the module docstring).
    suppressed : pandas.DataFrame
        LA cells without a published count: ``measure``, ``marker``, ``cells``.
    source : str
        ``"reference:/path"`` or ``"synthetic(...)"``.
    truth : dict
        For a generated panel, the parameters it was drawn from (per measure); else empty.
    """

    table: pd.DataFrame
    suppressed: pd.DataFrame
    source: str
    truth: dict

    @property
    def n_suppressed(self) -> int:
        """LA cells whose count DfE did not publish."""
        return int(self.suppressed["cells"].sum()) if len(self.suppressed) else 0

    def describe(self) -> str:
        """A few lines for the terminal and the report."""
        la = self.table[self.table["level"] == "LA"]
        per_year = la.groupby("year")["la_code"].nunique()
        lines = [f"panel from {self.source}: {len(la):,} LA rows, {la['measure'].nunique()} measures, "
                 f"years {per_year.index.min()}-{per_year.index.max()}, "
                 f"{per_year.min()}-{per_year.max()} LAs a year, {la['series'].nunique()} series",
                 f"suppressed or unpublished LA cells (missing, never 0): {self.n_suppressed}; 'c' "
                 "(1-5) cells enter the models as interval-censored, the others are left out"]
        for m, g in self.suppressed.groupby("measure"):
            lines.append(f"  {m}: " + ", ".join(f"{int(r.cells)} '{r.marker}' ({treatment(r.marker)})"
                                                 for r in g.itertuples()))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# parsing


def _parse(values: pd.Series, what: str) -> tuple[pd.Series, pd.Series]:
    """(numbers, markers) from a DfE column; a marker value is NaN, never 0."""
    text = values.astype("string").str.strip().str.replace(",", "", regex=False).fillna("")
    low = text.str.lower()
    is_marker = low.isin(MARKERS) | (low == "")
    num = pd.to_numeric(text.mask(is_marker), errors="coerce")
    bad = num.isna() & ~is_marker
    if bad.any():
        raise HierarchyError(f"{what}: unreadable values {sorted(set(text[bad]))[:5]} in rows "
                             f"{list(values.index[bad][:5])}; expected numbers or DfE markers "
                             f"{sorted(MARKERS)}")
    marker = low.where(is_marker, "").replace("", pd.NA).fillna("")
    marker = marker.where(~(is_marker & (low == "")), "blank")
    return num.astype("float64"), marker.astype(str)


FIX = REFERENCE_FIX
TOTAL_RANGE = (0.8, 1.05)
"""The published LA counts of a measure and year must add up to between these shares of DfE's England
figure in the same file (suppressed LA cells make up at most ~12% of it in the 2013-2025 files, and
DfE's rounding moves the sum by under 0.01%)."""


def _read_dfe(folder: Path, name: str) -> pd.DataFrame:
    path = folder / "dfe_csc" / name
    if not path.is_file():
        raise HierarchyError(f"DfE file {path} is missing (see SOURCES.md in the reference folder)")
    df = read_reference_csv(path, dtype=str)
    need = {"time_period", "geographic_level", "new_la_code", "la_name", "old_la_code"}
    if not need <= set(df.columns):
        raise HierarchyError(f"{path} lacks columns {sorted(need - set(df.columns))}: it is not the published "
                             f"DfE file; {FIX}")
    bad = pd.to_numeric(df["time_period"], errors="coerce").isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"{path}, column time_period, line {i + 2}: {df['time_period'].iloc[i]!r} is not a "
                             f"year; {FIX}")
    df.attrs["path"] = str(path)
    return df


def _line_of(index) -> np.ndarray:
    """File line numbers of rows read with a header line (line 1)."""
    return np.asarray(index, dtype=np.int64) + 2


def _counts(folder: Path, measure: str, file: str, column: str) -> pd.DataFrame:
    df = _read_dfe(folder, file)
    path = df.attrs["path"]
    if column not in df.columns:
        raise HierarchyError(f"{path} lacks column {column!r} (measure {measure})")
    if "population_type" in df.columns:  # the CLA file: three populations side by side
        df = df[df["population_type"].str.contains("on 31 March", na=False)]
    df = df[df["geographic_level"].isin(["Local authority", "National"])]
    count, marker = _parse(df[column], f"{path}: column {column}")
    bad = count.notna() & ((count < 0) | (count != count.round()))
    if bad.any():
        i = bad.to_numpy().nonzero()[0][0]
        raise HierarchyError(f"{path}, column {column}, line {_line_of(df.index)[i]} "
                             f"({df['la_name'].iloc[i] or 'England'} {df['time_period'].iloc[i]}): "
                             f"{df[column].iloc[i]!r} is not a count (a whole number >= 0; "
                             f"{int(bad.sum())} such values); the file was edited or damaged: {FIX}")
    out = pd.DataFrame({
        "level": np.where(df["geographic_level"] == "National", "England", "LA"),
        "year": pd.to_numeric(df["time_period"], errors="raise").astype("int64"),
        "la_code": df["new_la_code"].fillna("").str.strip().replace(CODE_CORRECTIONS),
        "la_name": df["la_name"].fillna("").str.strip(),
        "dfe_number": df["old_la_code"].fillna("").str.strip(),
        "measure": measure, "count": count, "marker": marker, "line": _line_of(df.index),
    })
    out.loc[out["level"] == "England", ["la_code", "la_name", "dfe_number"]] = ["E92000001", "England", ""]
    # the CLA file lists retired and successor authorities side by side, 'z' for the absent one
    out = out[~((out["level"] == "LA") & (out["marker"] == "z") & (file == RATE_MEASURES["cla_at31"][0]))]
    dup = out.duplicated(["level", "year", "la_code"])
    if dup.any():
        r = out[dup].iloc[0]
        lines = out.loc[dup, "line"].head(5).tolist()
        raise HierarchyError(f"{path} repeats {r.la_code} {r.year} (lines {lines}): the file was edited or "
                             f"damaged; {FIX}")
    return out[out["year"].isin(YEARS)]


def _population(folder: Path) -> pd.DataFrame:
    df = _read_dfe(folder, POPULATION_FILE)
    df = df[df["geographic_level"].isin(["Local authority", "National"])]
    pop, marker = _parse(df["population_estimate"], f"{df.attrs['path']}: population_estimate")
    bad = pop.notna() & ~(pop > 0)
    if bad.any():
        i = bad.to_numpy().nonzero()[0][0]
        raise HierarchyError(f"{df.attrs['path']}, column population_estimate, line {_line_of(df.index)[i]}: "
                             f"{df['population_estimate'].iloc[i]!r} is not a population (> 0); {FIX}")
    code = np.where(df["geographic_level"] == "National", "E92000001", df["new_la_code"].str.strip())
    return pd.DataFrame({"la_code": code, "year": df["time_period"].astype(int) + 1,  # DfE year
                         "pop": pop, "pop_marker": marker})


def _neighbours(folder: Path) -> dict[str, str]:
    """DfE LA number -> comma list of its ten statistical neighbours."""
    out: dict[str, str] = {}
    for name in SN_FILES:  # newest first; an LA keeps the first list found
        path = folder / "dfe_csc" / name
        if not path.is_file():
            continue
        df = read_reference_csv(path, dtype=str)
        key = "old_la_code" if "old_la_code" in df.columns else "LA number"
        cols = [c for c in df.columns if c.replace("_", "").upper().startswith("SN")
                and c.replace("_", "").upper()[2:].isdigit()]
        for _, row in df.iterrows():
            la = str(row[key]).strip()
            if la and la not in out:
                out[la] = ",".join(str(row[c]).strip() for c in cols if pd.notna(row[c]))
    return out


# --------------------------------------------------------------------------------------------
# LA covariates from the LSOAs


def _lsoa(folder: Path) -> pd.DataFrame:
    path = folder / IOD_FILE
    if not path.is_file():
        raise HierarchyError(f"IoD2019 LSOA file {path} is missing (see SOURCES.md in the reference folder)")
    df = read_reference_csv(path, dtype={"ruc11_code": str})
    need = ["lsoa11_name", "utla19_code", "utla23_code", "income_score_rate", "idaci_score_approx",
            "children_0_17_mid2019", "pop_total_mid2019", "ruc11_code", "area_km2_approx"]
    if missing := [c for c in need if c not in df.columns]:
        raise HierarchyError(f"{path} lacks columns {missing}: it is not the reference LSOA file; {FIX}")
    idaci = df["idaci_score_approx"].astype(float)
    have = idaci.notna()
    slope, icept = np.polyfit(df.loc[have, "income_score_rate"], idaci[have], 1)
    df["idaci"] = idaci.fillna(icept + slope * df["income_score_rate"]).clip(0, 1)
    df["rural"] = df["ruc11_code"].str[0].isin(["D", "E"]).astype(float)
    return df


def _members(lsoa: pd.DataFrame, code: str) -> pd.Series:
    """Boolean mask of the LSOAs of a DfE LA code (UTLA23, UTLA19 or a pre-2019 Dorset code)."""
    if code in _OLD_DORSET:
        mask = lsoa["lsoa11_name"].str.startswith(_OLD_DORSET[code])
        if code == "E10000009":  # the old county: today's Dorset plus Christchurch
            mask |= lsoa["utla19_code"] == "E06000059"
        return mask
    mask = lsoa["utla23_code"] == code
    return mask if mask.any() else lsoa["utla19_code"] == code


def _covariates(lsoa: pd.DataFrame, mask: pd.Series) -> dict[str, float]:
    d = lsoa[mask]
    kids = d["children_0_17_mid2019"].astype(float)
    return {"deprivation": float((d["income_score_rate"] * kids).sum() / kids.sum()),
            "idaci": float((d["idaci"] * kids).sum() / kids.sum()),
            "rural_share": float((d["rural"] * kids).sum() / kids.sum()),
            "log_density": float(np.log(d["pop_total_mid2019"].sum() / d["area_km2_approx"].sum())),
            "children_2019": float(kids.sum())}


# --------------------------------------------------------------------------------------------
# building


def _series_of(codes: list[str]) -> dict[str, tuple[str, str, str]]:
    """DfE code -> (series code, series name, code_change flag)."""
    out: dict[str, tuple[str, str, str]] = {}
    for series, name, flag, members in REORGANISATIONS:
        for c in members:
            out[c] = (series, name, flag)
    return out


def build_panel(ref_dir: Path | None = None) -> Panel:
    """Build the LA x year x measure panel from the reference folder.

    Parameters
    ----------
    ref_dir : pathlib.Path, optional
        England reference folder (found with :func:`hierarchy.data.reference.find_reference_dir` when
        omitted).

    Returns
    -------
    Panel

    Raises
    ------
    HierarchyError
        If no folder is found, a file or column is missing, a file is not CSV text or is truncated, a
        value is unreadable, an LA code is neither in the IoD2019 LSOA file nor a known retired code, or a
        count is implausible: not a whole number >= 0, above the children 0-17 of its LA (or England), or
        LA counts adding up to outside :data:`TOTAL_RANGE` of DfE's England figure in the same file.
        Each message names the file, column and line, and says to re-download the file.
    """
    folder = find_reference_dir(ref_dir)
    if folder is None:
        raise HierarchyError("no England reference data found (pass --reference-dir, set "
                             "$HIERARCHY_REFERENCE_DIR, or place it in ../shared/data/england)")
    counts = {m: _counts(folder, m, f, c) for m, (f, c) in {**RATE_MEASURES, **_OTHER_COUNTS}.items()}
    pop = _population(folder)
    lsoa = _lsoa(folder)
    neighbours = _neighbours(folder)

    series_map = _series_of([])
    counts = {m: _harmonise(c, counts["referrals"], series_map) for m, c in counts.items()}
    la_rows = pd.concat([c[c["level"] == "LA"] for c in counts.values()])
    la_rows = la_rows.drop_duplicates(["year", "la_code", "measure"])
    pairs = la_rows.groupby(["year", "dfe_number"])["la_code"].nunique()
    if (pairs > 1).any():
        y, n = pairs[pairs > 1].index[0]
        both = sorted(set(la_rows.loc[(la_rows.year == y) & (la_rows.dfe_number == n), "la_code"]))
        raise HierarchyError(f"DfE files give LA number {n} different codes in {y}: {both}. If a file was edited "
                             f"or damaged, {FIX}; if DfE has really changed a code, report it (the package's "
                             "CODE_CORRECTIONS needs the superseded one)")
    codes = sorted(set(la_rows["la_code"]))
    names = la_rows.drop_duplicates("la_code", keep="first").set_index("la_code")
    cov, series_cov = {}, {}
    for code in codes:
        mask = _members(lsoa, code)
        if not mask.any():
            r = la_rows[la_rows["la_code"] == code].iloc[0]
            raise HierarchyError(f"DfE LA code {code!r} ({names.at[code, 'la_name']}; "
                                 f"{_file_of(r['measure'])}, line {r['line']}) matches no LSOA in "
                                 f"{folder / IOD_FILE} and is not a known reorganisation. If the file was "
                                 f"edited or damaged, {FIX}; if DfE has a new authority, report it (the "
                                 "package's REORGANISATIONS needs it)")
        cov[code] = _covariates(lsoa, mask)
        series, _, _ = series_map.get(code, (code, "", ""))
        if series not in series_cov:
            members = [c for c in codes if series_map.get(c, (c,))[0] == series]
            smask = np.logical_or.reduce([_members(lsoa, c) for c in members])
            series_cov[series] = _covariates(lsoa, pd.Series(smask, index=lsoa.index))

    # exposures: children for rates, the earlier stage for conversions
    children = _children(la_rows, pop, cov)
    _check_plausible(counts, children)
    parts = []
    for m in RATE_MEASURES:
        t = counts[m].merge(children, on=["level", "year", "la_code"], how="left", validate="one_to_one")
        parts.append(t.assign(exposure_measure="children_0_17"))
    for m, (num, den) in CONVERSIONS.items():
        e = counts[den][["level", "year", "la_code", "count", "marker"]].rename(
            columns={"count": "exposure", "marker": "exposure_marker"})
        t = counts[num].merge(e, on=["level", "year", "la_code"], how="left", validate="one_to_one")
        parts.append(t.assign(measure=m, exposure_measure=den, exposure_note=""))
    table = pd.concat(parts, ignore_index=True)
    table["exposure_marker"] = table["exposure_marker"].fillna("missing")
    table["exposure_note"] = table["exposure_note"].fillna("")

    is_la = table["level"] == "LA"
    for col in ("deprivation", "idaci", "rural_share", "log_density"):
        table[col] = np.where(is_la, table["la_code"].map(lambda c, col=col: cov.get(c, {}).get(col)), np.nan)
    table["series"] = [series_map.get(c, (c,))[0] if la else ""
                       for c, la in zip(table["la_code"], is_la, strict=False)]
    table["series_name"] = [series_map[c][1] if c in series_map else (n if la else "")
                            for c, n, la in zip(table["la_code"], table["la_name"], is_la, strict=False)]
    table["code_change"] = [series_map[c][2] if c in series_map else "" for c in table["la_code"]]
    for col in ("deprivation", "idaci", "rural_share", "log_density"):
        table[f"series_{col}"] = table["series"].map(lambda s, col=col: series_cov.get(s, {}).get(col))
    table["stat_neighbours"] = table["dfe_number"].map(neighbours).fillna("")
    table = _order(table)
    return Panel(table=table, suppressed=_suppressed(table), source=f"reference:{folder}", truth={})


def _file_of(measure: str) -> str:
    return {**RATE_MEASURES, **_OTHER_COUNTS}[measure][0]


def _check_plausible(counts: dict[str, pd.DataFrame], children: pd.DataFrame) -> None:
    """Refuse counts no real file holds: above the LA's (or England's) children, or LA counts that do not
    add up to DfE's England figure in the same file within :data:`TOTAL_RANGE`."""
    kids = children.set_index(["level", "year", "la_code"])["exposure"]
    lo, hi = TOTAL_RANGE
    for m, c in counts.items():
        file, column = {**RATE_MEASURES, **_OTHER_COUNTS}[m]
        where = f"dfe_csc/{file}, column {column}"
        pop = kids.reindex(pd.MultiIndex.from_frame(c[["level", "year", "la_code"]])).to_numpy()
        over = c["count"].to_numpy() > pop
        if over.any():
            r = c[over].iloc[0]
            raise HierarchyError(f"{where}, line {r['line']} ({r['la_name']} {r['year']}): {r['count']:,.0f} is "
                                 f"more than the {pop[over][0]:,.0f} children 0-17 it counts among "
                                 f"({int(over.sum())} such rows); the file was edited or damaged: {FIX}")
        la = c[c["level"] == "LA"].groupby("year")["count"].sum()
        eng = c[c["level"] == "England"].set_index("year")
        for year, total in la.items():
            if year not in eng.index or pd.isna(eng.at[year, "count"]):
                continue
            e = float(eng.at[year, "count"])
            if not lo * e <= total <= hi * e:
                top = c[(c["level"] == "LA") & (c["year"] == year)].nlargest(3, "count")
                big = ", ".join(f"line {r.line} ({r.la_name}) {r.count:,.0f}" for r in top.itertuples())
                raise HierarchyError(f"{where}: the LA counts of {year} add up to {total:,.0f}, "
                                     f"{total / e if e else float('inf'):.0%} of DfE's England figure {e:,.0f} "
                                     f"(line {eng.at[year, 'line']}; must be {lo:.0%}-{hi:.0%} of it); "
                                     f"largest: {big}. The file was edited or damaged: {FIX}")


def _harmonise(frame: pd.DataFrame, canonical: pd.DataFrame, series_map: dict) -> pd.DataFrame:
    """Give each LA-year the code the referrals file uses when a file uses a same-area recode.

    The CLA file, for one, reports North Yorkshire as E06000065 from 2021 while the children in need
    files use E10000023 until 2023. Codes of different series for one DfE LA number are an error.
    """
    canon = canonical[canonical["level"] == "LA"].set_index(["year", "dfe_number"])[["la_code", "la_name"]]
    out = frame.copy()
    la = out["level"] == "LA"
    key = pd.MultiIndex.from_arrays([out.loc[la, "year"], out.loc[la, "dfe_number"]])
    want = canon.reindex(key)
    have = out.loc[la, "la_code"].to_numpy()
    new = want["la_code"].to_numpy()
    differs = pd.notna(new) & (new != have)
    for old_code, new_code in set(zip(have[differs], new[differs], strict=False)):
        if series_map.get(old_code, (old_code,))[0] != series_map.get(new_code, (new_code,))[0]:
            raise HierarchyError(f"DfE LA code {old_code} and {new_code} share a DfE LA number in one year but "
                                 f"are different areas. If a file was edited or damaged, {FIX}; if DfE has "
                                 "reorganised authorities, report it (the package's REORGANISATIONS needs it)")
    idx = out.index[la][differs]
    out.loc[idx, "la_code"] = new[differs]
    out.loc[idx, "la_name"] = want["la_name"].to_numpy()[differs]
    return out


def _children(la_rows: pd.DataFrame, pop: pd.DataFrame, cov: dict) -> pd.DataFrame:
    """Children 0-17 (previous mid-year) for every LA-year and England-year."""
    keys = la_rows[["year", "la_code"]].drop_duplicates().assign(level="LA")
    keys = pd.concat([keys, pd.DataFrame({"year": list(YEARS), "la_code": "E92000001", "level": "England"})])
    out = keys.merge(pop, on=["la_code", "year"], how="left")
    out["exposure_marker"] = out["pop_marker"].fillna("missing")
    out["exposure_note"] = ""
    # pre-2019 Dorset authorities: share of the Dorset area by mid-2019 children
    dorset = pop[pop["la_code"].isin(["E06000058", "E06000059"])].groupby("year")["pop"].sum(min_count=2)
    area_kids = sum(cov[c]["children_2019"] for c in ("E06000058", "E06000059") if c in cov)
    for i in out.index[out["pop"].isna() & out["la_code"].isin(list(_OLD_DORSET))]:
        code = out.at[i, "la_code"]
        near = dorset.dropna()
        if not len(near) or not area_kids:
            continue
        y = int(near.index[np.argmin(np.abs(near.index - out.at[i, "year"]))])
        out.at[i, "pop"] = near[y] * cov[code]["children_2019"] / area_kids
        out.at[i, "exposure_note"] = (f"estimated: Dorset area children (mid-{y - 1}) x this LA's share of "
                                      "mid-2019 LSOA children")
    return out.rename(columns={"pop": "exposure"}).drop(columns="pop_marker")


COLUMNS = ["level", "year", "measure", "la_code", "la_name", "dfe_number", "series", "series_name",
           "code_change", "count", "marker", "exposure", "exposure_measure", "exposure_marker",
           "exposure_note", "deprivation", "idaci", "rural_share", "log_density", "series_deprivation",
           "series_idaci", "series_rural_share", "series_log_density", "stat_neighbours"]


def _order(table: pd.DataFrame) -> pd.DataFrame:
    table = table[COLUMNS].copy()
    table["marker"] = np.where(table["count"].isna() & (table["marker"] == ""), "missing", table["marker"])
    table["exposure_marker"] = np.where(table["exposure"].notna(), "",
                                        table["exposure_marker"].replace("", "missing"))
    return table.sort_values(["measure", "level", "year", "la_code"], ignore_index=True)


def _suppressed(table: pd.DataFrame) -> pd.DataFrame:
    la = table[(table["level"] == "LA") & table["count"].isna() & table["measure"].isin(
        list(RATE_MEASURES) + [n for n, (num, _) in CONVERSIONS.items() if num in _OTHER_COUNTS])]
    return (la.groupby(["measure", "marker"]).size().rename("cells").reset_index()
            if len(la) else pd.DataFrame({"measure": [], "marker": [], "cells": []}))


# --------------------------------------------------------------------------------------------
# generated stand-in


def synthetic_panel(n_la: int = 40, *, years: tuple[int, ...] = YEARS, seed: int = 0,
                    suppress: float = 0.01, small_las: int = 0) -> Panel:
    """Generate a panel with the real panel's columns and known truth (fake codes ``LA001``...).

    Each rate measure follows ``log mu = log E + alpha + b_t t + b_dep z + b_dep_t z t + g_y + u_j
    + v_j t`` with ``t = year - 2019``, ``z`` the LA deprivation in 10-point units about its mean,
    ``(u_j, v_j)`` independent normal LA effects and NB2 counts. Conversions draw their numerator
    from the same form with the earlier stage's count as exposure. As DfE does, counts of 1 to 5 are
    marked ``"c"`` (missing, never 0), and a further fraction ``suppress`` of LA cells is marked ``"x"``
    (not available). The last ``small_las`` LAs have 300 children (the Isles of Scilly has about 350),
    so many of their counts are ``"c"``.

    Returns
    -------
    Panel
        ``truth[measure]`` holds ``alpha, b_t, b_dep, b_dep_t, sd_u, sd_v, phi`` and ``g`` (per year).
    """
    rng = np.random.default_rng(seed)
    years = tuple(years)
    codes = [f"LA{i + 1:03d}" for i in range(n_la)]
    dep = np.clip(rng.normal(0.147, 0.053, n_la), 0.03, 0.3)
    kids = np.round(np.exp(rng.normal(np.log(70_000), 0.6, n_la)))
    if small_las:
        kids[n_la - small_las:] = 300.0
    z = (dep - dep.mean()) / 0.1
    t = np.array(years, float) - 2019
    spec = {  # alpha is log rate per child (rates) or per earlier-stage count (conversions)
        "referrals": dict(alpha=np.log(0.055), b_t=0.0, b_dep=0.25, b_dep_t=-0.01, sd_u=0.25, sd_v=0.03,
                          phi=60.0),
        "s47": dict(alpha=np.log(0.018), b_t=0.04, b_dep=0.35, b_dep_t=0.0, sd_u=0.3, sd_v=0.04, phi=40.0),
        "s47_per_referral": dict(alpha=np.log(0.3), b_t=0.03, b_dep=0.1, b_dep_t=0.01, sd_u=0.25,
                                 sd_v=0.03, phi=50.0),
    }
    truth, rows, stage = {}, [], {}
    for m, p in spec.items():
        g = rng.normal(0, 0.03, len(years))
        basis = np.column_stack([np.ones_like(t), t])
        g = g - basis @ np.linalg.lstsq(basis, g, rcond=None)[0]  # no level, no trend: identified
        u = rng.normal(0, p["sd_u"], n_la)
        v = rng.normal(0, p["sd_v"], n_la)
        eta = (p["alpha"] + p["b_dep"] * z[:, None] + (p["b_t"] + p["b_dep_t"] * z[:, None]) * t[None, :]
               + g[None, :] + u[:, None] + v[:, None] * t[None, :])
        if m in CONVERSIONS:
            num, den = CONVERSIONS[m]
            exposure, exp_measure = stage[den], den
        else:
            exposure = np.repeat(kids[:, None], len(years), 1) * np.exp(0.005 * t)[None, :]
            exposure, exp_measure = np.round(exposure), "children_0_17"
        mu = exposure * np.exp(eta)
        y = rng.negative_binomial(p["phi"], p["phi"] / (p["phi"] + mu)).astype(float)
        if m not in CONVERSIONS:
            stage[m] = y
        truth[m] = {**{k: float(v) for k, v in p.items()}, "g": g.tolist(), "u": u.tolist(), "v": v.tolist()}
        for j, code in enumerate(codes):
            for k, yr in enumerate(years):
                rows.append((yr, m, code, y[j, k], exposure[j, k], exp_measure, dep[j]))
    table = pd.DataFrame(rows, columns=["year", "measure", "la_code", "count", "exposure",
                                        "exposure_measure", "deprivation"])
    table["level"] = "LA"
    table["marker"] = ""
    hide = rng.random(len(table)) < suppress
    small = table["count"].between(1, 5).to_numpy()
    # a suppressed stage count hides the same cell as a conversion's exposure
    table.loc[hide, "marker"] = "x"
    table.loc[small, "marker"] = "c"
    hide |= small
    england = (table.groupby(["year", "measure", "exposure_measure"], as_index=False)[["count", "exposure"]]
               .sum().assign(level="England", la_code="E92000001", marker=""))
    table.loc[hide, "count"] = np.nan
    hidden = table.loc[hide & ~table["measure"].isin(list(CONVERSIONS)), ["year", "measure", "la_code"]]
    table = _hide_exposures(table, hidden)
    table = pd.concat([table, england], ignore_index=True)
    table["la_name"] = np.where(table["level"] == "LA", "Authority " + table["la_code"].str[2:], "England")
    table["dfe_number"] = np.where(table["level"] == "LA", "9" + table["la_code"].str[3:], "")
    table["series"] = np.where(table["level"] == "LA", table["la_code"], "")
    table["series_name"] = np.where(table["level"] == "LA", table["la_name"], "")
    table["code_change"] = ""
    table["exposure_note"] = ""
    table["exposure_marker"] = ""
    lookup = dict(zip(codes, dep, strict=False))
    table["deprivation"] = table["la_code"].map(lookup)
    table["idaci"] = table["deprivation"] * 1.2
    table["rural_share"] = table["la_code"].map(dict(zip(codes, rng.uniform(0, 0.6, n_la), strict=False)))
    table["log_density"] = table["la_code"].map(dict(zip(codes, rng.normal(6.5, 1.2, n_la), strict=False)))
    for col in ("deprivation", "idaci", "rural_share", "log_density"):
        table[f"series_{col}"] = table[col]
    numbers = {c: "9" + c[3:] for c in codes}
    near = {c: ",".join(numbers[d] for d in rng.choice([d for d in codes if d != c], min(10, n_la - 1),
                                                         replace=False)) for c in codes}
    table["stat_neighbours"] = table["la_code"].map(near).fillna("")
    table = _order(table)
    return Panel(table=table, suppressed=_suppressed(table), truth=truth,
                 source=f"synthetic(n_la={n_la}, seed={seed})")


def _hide_exposures(table: pd.DataFrame, hidden: pd.DataFrame) -> pd.DataFrame:
    for m, (_num, den) in CONVERSIONS.items():
        h = hidden[hidden["measure"] == den]
        if not len(h):
            continue
        key = table["measure"].eq(m) & table.set_index(["year", "la_code"]).index.isin(
            list(zip(h["year"], h["la_code"], strict=False)))
        table.loc[key, "exposure"] = np.nan
    return table


# --------------------------------------------------------------------------------------------
# files


def write_panel(panel: Panel, path: Path) -> Path:
    """Write the panel as Parquet (atomically); its suppression counts and source go in the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tbl = pa.Table.from_pandas(panel.table, preserve_index=False)
    meta = {b"hierarchy_panel": json.dumps({
        "source": panel.source, "suppressed": panel.suppressed.to_dict(orient="records"),
        "truth": panel.truth}).encode()}
    tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}), **meta})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".parquet.tmp")
    os.close(fd)
    try:
        pq.write_table(tbl, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_panel(path: Path) -> Panel:
    """Read a panel written by :func:`write_panel`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise HierarchyError(f"panel file {path} does not exist (make one with `hierarchy panel build`)")
    tbl = pq.read_table(path)
    raw = (tbl.schema.metadata or {}).get(b"hierarchy_panel")
    if raw is None:
        raise HierarchyError(f"{path} is not a panel written by `hierarchy panel build`")
    meta = json.loads(raw)
    table = tbl.to_pandas()
    if missing := [c for c in COLUMNS if c not in table.columns]:
        raise HierarchyError(f"{path} lacks panel columns {missing}")
    sup = pd.DataFrame(meta["suppressed"], columns=["measure", "marker", "cells"])
    return Panel(table=table, suppressed=sup, source=meta["source"], truth=meta.get("truth", {}))


def get_panel(ref_dir: Path | None = None, *, synthetic: bool = False, seed: int = 0) -> Panel:
    """The real panel when the reference folder is found (and ``synthetic`` is False), else a stand-in."""
    if not synthetic and find_reference_dir(ref_dir) is not None:
        return build_panel(ref_dir)
    return synthetic_panel(seed=seed)

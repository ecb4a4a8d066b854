"""From a child-level CIN extract to the neighbourhood x stratum table of one census year.

Rules (each tested on hand-made records in ``tests/data/test_aggregate.py``):

* **Census year** Y runs from 1 April Y-1 to 31 March Y (DfE ``time_period`` Y).
* **Distinct children**: a child is ``LA`` + ``LAchildID`` (DfE: the ID is unique within an LA).
  Each stage's count is the number of distinct children with at least one such event in the
  year, counted once, in the neighbourhood (``LSOA``) and stratum of their *first* event of that
  kind in the year. Stages: ``referral`` (CINreferralDate), ``assessment``
  (AssessmentActualStartDate, when present), ``s47`` (S47ActualStartDate), ``cp_plan``
  (CPPstartDate) and, by category, ``cp_plan_neglect`` ... (InitialCategoryOfAbuse).
* **Re-referrals** (DfE): a referral within 12 months of the child's previous referral in the same
  LA, i.e. strictly before the same calendar date one year later (a referral on the anniversary is
  not a re-referral). Repeated records of one referral date are one referral. ``re_referral`` counts
  distinct children with a re-referral in the year.
* **Age at the event**: completed years on the event date (``age="band"``: 0-4, 5-9, 10-15, 16-17;
  ``age="single"``: "0" ... "17"). Events at 18 or over, and events that cannot be placed in a
  requested stratum (sex not known, ethnicity refused, no need code), are left out of the counts
  and reported in :attr:`Aggregated.excluded`; nothing is dropped silently.
* **Neighbourhoods**: every LSOA of every LA with a record in the extract gets a row per stratum
  (zero counts included); the LA is the LSOA's LA in the geography (children living out of area
  count where they live). Rows with no children and no events are left out (empty strata).
* **Exposures**: children in the row, from the geography's single-year or age-band populations
  (real ONS mid-year estimates, or the generated geography), split by sex with the simulator's
  0.488 female share, or from a population file the user names (``neighbourhood``, the stratum
  columns, ``exposure``), which ethnicity strata need. ``need`` rows carry the population of their
  other strata (the rate of referrals with that primary need per child).

The output has the canonical column names of :mod:`hierarchy.data.table` plus ``year``, ``re_referral``
and plan-category counts (kept and ignored by ``hierarchy validate`` and ``hierarchy fit``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy import AGE_BANDS
from hierarchy.data.extract import ABUSE_CATEGORY, age_at, census_year
from hierarchy.data.reference import AGE_BANDS as AGE_BAND_YEARS
from hierarchy.data.reference import Geography
from hierarchy.errors import HierarchyError

STAGE_DATES: dict[str, str] = {"referral": "CINreferralDate", "assessment": "AssessmentActualStartDate",
                               "s47": "S47ActualStartDate", "cp_plan": "CPPstartDate"}
"""Canonical count column -> the DfE date field whose events it counts."""

AGGREGATE_STRATA: tuple[str, ...] = ("age_band", "sex", "ethnicity", "need")
FEMALE_SHARE = 0.488
"""Share of children who are female, used to split populations by sex (as the simulator does)."""
MAX_AGE = 17


@dataclass
class Aggregated:
    """The table and what was left out of it.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per neighbourhood x stratum (canonical columns, plus ``year``).
    excluded : pandas.DataFrame
        Events not counted, by ``stage`` and ``reason`` (column ``events``).
    year : int
    """

    table: pd.DataFrame
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    year: int = 0


def age_label(age: pd.Series, mode: str = "band") -> pd.Series:
    """Age-band (``"0-4"`` ...) or single-year (``"7"``) labels; NA outside 0-17."""
    out = pd.Series(pd.NA, index=age.index, dtype="object")
    ok = age.notna() & (age >= 0) & (age <= MAX_AGE)
    if mode == "single":
        out[ok] = age[ok].astype(int).astype(str)
        return out
    for label, (lo, hi) in zip(AGE_BANDS, AGE_BAND_YEARS.values(), strict=True):
        out[ok & (age >= lo) & (age <= hi)] = label
    return out


def re_referrals(records: pd.DataFrame) -> pd.DataFrame:
    """The referrals that are re-referrals (DfE: within 12 months of the child's previous one).

    Parameters
    ----------
    records
        Parsed records (:func:`hierarchy.data.extract.parse_extract`).

    Returns
    -------
    pandas.DataFrame
        One row per re-referral: the first record of that referral date for the child.
    """
    ref = (records.dropna(subset=["CINreferralDate"]).sort_values(["child", "CINreferralDate"], kind="stable")
           .drop_duplicates(["child", "CINreferralDate"]))
    prev = ref.groupby("child")["CINreferralDate"].shift(1)
    within = prev.notna() & (ref["CINreferralDate"] < prev + pd.DateOffset(years=1))
    return ref[within]


def _first_in_year(events: pd.DataFrame, date_col: str, year: int) -> pd.DataFrame:
    ev = events[census_year(events[date_col]) == year]
    return ev.sort_values(["child", date_col], kind="stable").drop_duplicates("child")


def _strata_of(ev: pd.DataFrame, date_col: str, strata: tuple[str, ...], age: str
               ) -> tuple[pd.DataFrame, pd.Series]:
    """Stratum columns at the event and the reason each event cannot be placed (or NA)."""
    out = pd.DataFrame({"neighbourhood": ev["LSOA"].astype(str)}, index=ev.index)
    reason = pd.Series(pd.NA, index=ev.index, dtype="object")
    years = age_at(ev["PersonBirthDate"], ev[date_col])
    reason[years > MAX_AGE] = "aged 18 or over at the event"
    if "age_band" in strata:
        out["age_band"] = age_label(years, age)
    if "sex" in strata:
        out["sex"] = ev["sex"]
        reason[reason.isna() & ev["sex"].isna()] = "sex not known or not specified"
    if "ethnicity" in strata:
        eth = ev["ethnicity"] if "ethnicity" in ev else pd.Series(pd.NA, index=ev.index)
        out["ethnicity"] = eth
        reason[reason.isna() & eth.isna()] = "ethnicity refused, not obtained or missing"
    if "need" in strata:
        need = ev["PrimaryNeedCode"] if "PrimaryNeedCode" in ev else pd.Series(pd.NA, index=ev.index)
        out["need"] = need
        reason[reason.isna() & need.isna()] = "no PrimaryNeedCode"
    return out, reason


def population(geo: Geography, strata: tuple[str, ...], *, age: str = "band",
               pop_file: str | os.PathLike | None = None) -> pd.DataFrame:
    """Children per neighbourhood x (age, sex, ethnicity) stratum: column ``exposure``.

    From ``pop_file`` (CSV or Parquet with ``neighbourhood``, the stratum columns other than
    ``need``, and ``exposure``) when given, else from the geography (``ethnicity`` needs a file).
    """
    keys = [s for s in strata if s != "need"]
    if pop_file is not None:
        path = Path(pop_file)
        try:
            pop = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(
                path, dtype={k: str for k in ("neighbourhood", *keys)})
        except (OSError, ValueError) as err:
            raise HierarchyError(f"cannot read population file {path}: {err}") from None
        missing = [c for c in ("neighbourhood", *keys, "exposure") if c not in pop.columns]
        if missing:
            raise HierarchyError(f"population file {path} lacks column(s) {', '.join(missing)}; it needs "
                                 f"neighbourhood, {', '.join(keys) + ', ' if keys else ''}exposure")
        pop = pop[["neighbourhood", *keys, "exposure"]].copy()
        for k in ("neighbourhood", *keys):
            pop[k] = pop[k].astype(str)
        dup = pop.duplicated(["neighbourhood", *keys], keep=False)
        if dup.any():
            raise HierarchyError(f"population file {path}: {int(dup.sum())} rows repeat a neighbourhood x "
                                 f"{' x '.join(keys) or 'nothing'} (e.g. row {int(np.flatnonzero(dup)[0])}); "
                                 "keep one row each")
        expo = pd.to_numeric(pop["exposure"], errors="coerce")
        if expo.isna().any() or (expo < 0).any():
            raise HierarchyError(f"population file {path}: column exposure must be numbers >= 0 "
                                 f"(row {int(np.flatnonzero(expo.isna() | (expo < 0))[0])})")
        pop["exposure"] = expo.astype(float)
        return pop
    if "ethnicity" in keys:
        raise HierarchyError("ethnicity strata need populations by ethnic group: pass --population FILE "
                             "with columns neighbourhood, ethnicity, ..., exposure")
    lsoa = geo.lsoa
    if "age_band" in keys and age == "single":
        single = _single_years(geo)
        pop = single.melt(id_vars="neighbourhood", var_name="age_band", value_name="exposure")
    elif "age_band" in keys:
        pop = pd.DataFrame({"neighbourhood": np.repeat(lsoa["lsoa"].to_numpy(), len(AGE_BANDS)),
                            "age_band": np.tile(np.array(AGE_BANDS, dtype=object), len(lsoa)),
                            "exposure": lsoa[list(AGE_BAND_YEARS)].to_numpy().reshape(-1)})
    else:
        pop = pd.DataFrame({"neighbourhood": lsoa["lsoa"].to_numpy(), "exposure": lsoa["children"].to_numpy()})
    pop["exposure"] = pop["exposure"].astype(float)
    if "sex" in keys:
        female = np.rint(pop["exposure"].to_numpy() * FEMALE_SHARE)
        f, m = pop.assign(sex="female", exposure=female), pop.assign(sex="male",
                                                                     exposure=pop["exposure"] - female)
        pop = pd.concat([f, m], ignore_index=True)
    pop["neighbourhood"] = pop["neighbourhood"].astype(str)
    return pop[["neighbourhood", *keys, "exposure"]]


def _single_years(geo: Geography) -> pd.DataFrame:
    """Children by single year of age per neighbourhood (ONS file, or bands split evenly)."""
    cols = [str(a) for a in range(MAX_AGE + 1)]
    if geo.is_reference:
        from hierarchy.data.reference import REQUIRED_FILES

        folder = Path(geo.source.split(":", 1)[1])
        ons = pd.read_csv(folder / REQUIRED_FILES[1], usecols=["lsoa11_code", *cols])
        ons = ons.rename(columns={"lsoa11_code": "neighbourhood"})
        return ons[ons["neighbourhood"].isin(set(geo.lsoa["lsoa"]))].reset_index(drop=True)
    out = {"neighbourhood": geo.lsoa["lsoa"].to_numpy()}
    for col, (lo, hi) in AGE_BAND_YEARS.items():
        n = geo.lsoa[col].to_numpy()
        k = hi - lo + 1
        for i, a in enumerate(range(lo, hi + 1)):  # largest remainder: years sum to the band
            out[str(a)] = n // k + (i < n % k)
    return pd.DataFrame(out)


def aggregate(records: pd.DataFrame, geo: Geography, *, year: int,
              strata: tuple[str, ...] = ("age_band", "sex"), age: str = "band",
              pop_file: str | os.PathLike | None = None) -> Aggregated:
    """Count distinct children per neighbourhood x stratum for one census year.

    Parameters
    ----------
    records
        Parsed, validated records (:func:`hierarchy.data.extract.parse_extract`).
    geo
        Geography whose LSOAs the records use.
    year
        Census year (ending 31 March ``year``).
    strata
        Any of ``age_band``, ``sex``, ``ethnicity``, ``need``.
    age
        ``"band"`` or ``"single"`` (single years in the ``age_band`` column).
    pop_file
        Optional population file (see :func:`population`).

    Returns
    -------
    Aggregated

    Raises
    ------
    HierarchyError
        For an unknown stratum or age mode, or a year in which no event is counted (the table would be
        all zeros): the message names the census years the events fall in and the events left out.
    """
    bad = [s for s in strata if s not in AGGREGATE_STRATA]
    if bad or age not in ("band", "single"):
        raise HierarchyError(f"unknown stratum {bad[0]!r}" if bad else f"unknown age mode {age!r}"
                             f"; strata come from {', '.join(AGGREGATE_STRATA)}, age is band or single")
    strata = tuple(s for s in AGGREGATE_STRATA if s in strata)
    lsoa = geo.lsoa.set_index(geo.lsoa["lsoa"].astype(str))
    lsoa_la = lsoa["la"].astype(str)
    las = sorted(set(records["LSOA"].astype(str).map(lsoa_la).dropna()))
    events: dict[str, pd.DataFrame] = {}
    for stage, col in STAGE_DATES.items():
        if col in records:
            events[stage] = _first_in_year(records.dropna(subset=[col]), col, year)
    rr = re_referrals(records)
    events["re_referral"] = _first_in_year(rr, "CINreferralDate", year)
    if "InitialCategoryOfAbuse" in records and "CPPstartDate" in records:
        plans = records.dropna(subset=["CPPstartDate", "InitialCategoryOfAbuse"])
        for code, name in ABUSE_CATEGORY.items():
            events[f"cp_plan_{name}"] = _first_in_year(plans[plans["InitialCategoryOfAbuse"] == code],
                                                       "CPPstartDate", year)
    key = ["neighbourhood", *strata]
    counts, excluded = [], []
    for stage, ev in events.items():
        date_col = "CPPstartDate" if stage.startswith("cp_plan") else STAGE_DATES.get(stage, "CINreferralDate")
        cells, reason = _strata_of(ev, date_col, strata, age)
        if reason.notna().any():
            excluded.append(reason.dropna().value_counts().rename_axis("reason").reset_index(name="events")
                            .assign(stage=stage))
        n = cells[reason.isna()].groupby(key, dropna=False).size().rename(stage)
        counts.append(n)

    pop = population(geo, strata, age=age, pop_file=pop_file)
    pop = pop[pop["neighbourhood"].map(lsoa_la).isin(las)]
    if "need" in strata:
        levels = sorted(set().union(*(set(c.index.get_level_values("need").dropna()) for c in counts)))
        pop = pop.merge(pd.DataFrame({"need": levels}), how="cross")
    grid = pop.set_index(key)["exposure"]
    table = pd.concat([grid, *counts], axis=1).reset_index()  # outer: events outside the grid kept
    table["exposure"] = table["exposure"].fillna(0.0)
    stage_cols = [c for c in (*STAGE_DATES, "re_referral") if c in events] + [
        c for c in events if c.startswith("cp_plan_")]
    table[stage_cols] = table[stage_cols].fillna(0).astype("int64")
    table = table[(table["exposure"] > 0) | (table[stage_cols].sum(axis=1) > 0)]
    geo_cols = lsoa.loc[table["neighbourhood"]]
    la = geo.la.set_index(geo.la["la"].astype(str))
    table.insert(1, "la", geo_cols["la"].astype(str).to_numpy())
    table.insert(2, "msoa", geo_cols["msoa"].astype(str).to_numpy())
    table["deprivation"] = geo_cols["income_rate"].to_numpy(dtype=float)
    table["la_rural_share"] = la.loc[table["la"], "rural_share"].to_numpy(dtype=float)
    table["la_log_density"] = la.loc[table["la"], "log_density"].to_numpy(dtype=float)
    table["year"] = int(year)
    order = ["neighbourhood", "la", "msoa", *strata, "deprivation", "exposure", *stage_cols,
             "la_rural_share", "la_log_density", "year"]
    table = table[order].sort_values(key, kind="stable").reset_index(drop=True)
    for s in strata:
        table[s] = table[s].astype(str)
    ex = (pd.concat(excluded, ignore_index=True)[["stage", "reason", "events"]] if excluded
          else pd.DataFrame(columns=["stage", "reason", "events"]))
    if not table[stage_cols].to_numpy().any():
        _refuse_empty_year(records, ex, year)
    return Aggregated(table=table, excluded=ex, year=int(year))


def _refuse_empty_year(records: pd.DataFrame, excluded: pd.DataFrame, year: int) -> None:
    """An all-zero table says nothing about the year: refuse it, naming the years the events are in and
    the events left out."""
    dated = {col: census_year(records[col].dropna()).value_counts().sort_index()
             for col in STAGE_DATES.values() if col in records}
    where = "; ".join(f"{col}: " + ", ".join(f"{int(y)} ({int(n):,})" for y, n in c.items())
                      for col, c in dated.items() if len(c)) or "no dated events at all"
    left = "; ".join(f"{r.events} {r.stage} events {r.reason}" for r in excluded.itertuples())
    raise HierarchyError(f"no events counted in census year {year} (1 April {year - 1} to 31 March {year}): the "
                         f"table would be all zeros{f' ({left} were left out)' if left else ''}. The extract's "
                         f"events fall in census years {where}; choose --year from those")


def write_table(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``table`` to Parquet atomically (refuses to write over an existing non-Parquet file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise HierarchyError(f"--out {out}: the table is written as Parquet; name it .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp, compression="zstd")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out

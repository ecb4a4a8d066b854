"""Reference geography for England, read at run time, or a generated stand-in.

The real data (IoD2019, ONS mid-2019 populations, ONS lookups and DfE children's social care
statistics) live outside the project, in ``../shared/data/england`` beside the checkout, in a folder
named by ``$HIERARCHY_REFERENCE_DIR`` or in a folder the user passes. Nothing derived from them is
stored in the project. Without them, :func:`synthetic_geography` generates a geography with similar
distributions and obviously fake codes (``LA001``, ``M00001``, ``N000001``).

A :class:`Geography` holds three tables:

``lsoa``
    one row per 2011 LSOA: ``lsoa``, ``lsoa_name``, ``msoa``, ``la`` (UTLA19 code), ``la_name``,
    ``income_rate`` (IoD2019 income domain score, a proportion), ``children`` (0-17, mid-2019),
    ``age_0_4``, ``age_5_9``, ``age_10_15``, ``age_16_17`` (from the ONS single-year-of-age file;
    in the 2019 reference data the four bands sum exactly to ``children_0_17_mid2019`` for all
    32,844 LSOAs, and :func:`load_reference` refuses data where they do not), ``ruc11_code``,
    ``rural`` (RUC2011 class D or E, see below) and ``density`` (people per km2, approximate).
``la``
    one row per children's services authority (UTLA19): ``la``, ``la_name``, ``n_lsoa``,
    ``children``, ``deprivation`` (child-weighted mean of ``income_rate``), ``rural_share``
    (share of children living in rural LSOAs), ``log_density`` (log of population / area).
``dfe``
    long table of DfE counts on UTLA19 codes: ``la``, ``year`` (DfE ``time_period``; 2019 is the
    year ending 31 March 2019), ``pop_0_17``, ``referrals``, ``cin``, ``s47``, ``cpp_start``,
    ``cpp_at31``, ``cla_at31``; NaN where DfE suppressed ("c", "x", "z", "u", "low") or did not
    publish the figure (children looked after are only in the files for 2021 onwards).

Judgement calls
---------------
* Rural: RUC2011 classes A (conurbation), B (minor conurbation) and C (city and town) are urban;
  D (rural town and fringe) and E (village and dispersed) are rural, as in the ONS
  classification. (Class C is *urban*; it holds 45% of LSOAs.)
* DfE LA codes are mapped onto the 151 UTLA19 codes by summing successors: any code that is a
  UTLA23 code in the IoD2019 LSOA file (Buckinghamshire E06000060, North and West
  Northamptonshire E06000061/62, Cumberland E06000063, Westmorland and Furness E06000064, North
  Yorkshire E06000065, Somerset E06000066, ...) is shared out over the UTLA19 codes of its LSOAs in
  proportion to their children, so new reorganisations are picked up from the data rather than a
  list. The three pre-April-2019 codes DfE still uses for 2013-2019 are mapped explicitly:
  Bournemouth (E06000028) and Poole (E06000029) go to Bournemouth, Christchurch and Poole
  (E06000058); the old Dorset county (E10000009) included Christchurch, so its counts are split
  between Dorset (E06000059) and BCP in proportion to children (Christchurch = the LSOAs of BCP
  named "Christchurch ...", about 11.5% of the old county's children). That split is an
  approximation: Christchurch's own referrals were not published separately.
* A mapped value is NaN when any of its parts is suppressed (never a partial sum). A missing
  population (DfE has none for the pre-2019 Dorset codes) is filled from the nearest year with a
  population for the same UTLA19 authority.
* Isles of Scilly (E06000053) is reported separately from Cornwall in these files; it has a 2019
  referral count (16) but most of its other figures are suppressed, so they are NaN here and the
  simulator imputes them from national rates.
* Children looked after come from the CLA file, which lists retired and successor authorities
  side by side with "z" for the one that did not exist; "z" rows are dropped before mapping, and
  the joined table fills any remaining gap.
* Codes that cannot be mapped are dropped with a :class:`UserWarning` naming them.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

__all__ = [
    "REQUIRED_FILES",
    "Geography",
    "find_reference_dir",
    "get_geography",
    "load_reference",
    "maybe_reference",
    "synthetic_geography",
]

ENV_VAR = "HIERARCHY_REFERENCE_DIR"

REQUIRED_FILES: tuple[str, ...] = (
    "iod2019/iod2019_lsoa11_england_core.csv",
    "ons/population_mid2019_lsoa11_single_year_of_age.csv",
    "lookups/lookup_lsoa11_msoa11.csv",
    "dfe_csc/la_csc_rates_2013_2025.csv",
    "dfe_csc/d3_cpps_subsequent_plan_2013_to_2025.csv",
)
"""Files (relative to the reference folder) that :func:`load_reference` needs."""

CLA_FILE = "dfe_csc/cla_number_and_rate_per_10k_children.csv"
"""Used only when the joined DfE table lacks ``cla_at31_dfe``."""

AGE_BANDS: dict[str, tuple[int, int]] = {
    "age_0_4": (0, 4), "age_5_9": (5, 9), "age_10_15": (10, 15), "age_16_17": (16, 17),
}
"""Age-band columns of ``Geography.lsoa`` and the single years (inclusive) they cover."""

DFE_COLUMNS: tuple[str, ...] = (
    "pop_0_17", "referrals", "cin", "s47", "cpp_start", "cpp_at31", "cla_at31",
)

SUPPRESSION_MARKERS = frozenset({"", "c", "x", "z", "u", "low", ":", "..", "k", "~"})

# DfE codes retired on 1 April 2019 (Dorset reorganisation): code -> UTLA19 successor. The old
# Dorset county is split between Dorset and BCP by children (the Christchurch LSOAs), see above.
_BOURNEMOUTH, _POOLE, _OLD_DORSET = "E06000028", "E06000029", "E10000009"
_BCP, _DORSET = "E06000058", "E06000059"


@dataclass(frozen=True)
class Geography:
    """Neighbourhoods, local authorities and DfE LA counts (see the module docstring).

    Attributes
    ----------
    lsoa : pandas.DataFrame
        One row per neighbourhood, sorted by ``la`` then ``lsoa``.
    la : pandas.DataFrame
        One row per local authority, sorted by ``la``.
    dfe : pandas.DataFrame
        DfE counts, long (``la`` x ``year``).
    source : str
        ``"reference:/path"`` or ``"synthetic(n_la=..., seed=...)"``.
    """

    lsoa: pd.DataFrame
    la: pd.DataFrame
    dfe: pd.DataFrame
    source: str

    @property
    def is_reference(self) -> bool:
        """True for the real England geography."""
        return self.source.startswith("reference:")


# --------------------------------------------------------------------------------------------
# locating the folder


def _missing_files(folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def _check_dir(folder: Path, how: str) -> Path:
    if not folder.is_dir():
        raise HierarchyError(f"reference folder {folder} ({how}) does not exist")
    missing = _missing_files(folder)
    if missing:
        raise HierarchyError(f"reference folder {folder} ({how}) is incomplete: missing "
                             + ", ".join(missing))
    return folder.resolve()


def find_reference_dir(explicit: Path | None = None) -> Path | None:
    """Return the England reference data folder, or None when there is none.

    Parameters
    ----------
    explicit : pathlib.Path, optional
        A folder the user named. It must exist and hold every file in :data:`REQUIRED_FILES`.

    Returns
    -------
    pathlib.Path or None
        Searched in order: ``explicit``; ``$HIERARCHY_REFERENCE_DIR``; ``shared/data/england`` in
        the folder holding the repository checkout; ``../shared/data/england`` from the working
        directory. The default locations are used only when complete.

    Raises
    ------
    HierarchyError
        If ``explicit`` or the environment variable names a missing or incomplete folder.
    """
    if explicit is not None:
        return _check_dir(Path(explicit).expanduser(), "given")
    env = os.environ.get(ENV_VAR)
    if env:
        return _check_dir(Path(env).expanduser(), f"${ENV_VAR}")
    candidates = [
        Path(__file__).resolve().parents[4] / "shared" / "data" / "england",
        Path.cwd().parent / "shared" / "data" / "england",
    ]
    for folder in candidates:
        if folder.is_dir() and not _missing_files(folder):
            return folder.resolve()
    return None


# --------------------------------------------------------------------------------------------
# parsing


def _numeric(values: pd.Series, what: str) -> pd.Series:
    """Parse a DfE column: suppression markers -> NaN; anything else non-numeric is an error."""
    text = values.astype("string").str.strip().str.replace(",", "", regex=False)
    marker = text.isna() | text.str.lower().isin(SUPPRESSION_MARKERS)
    out = pd.to_numeric(text.mask(marker), errors="coerce").astype("float64")
    bad = out.isna() & ~marker
    if bad.any():
        examples = sorted(set(text[bad].astype(str)))[:5]
        raise HierarchyError(f"{what}: unreadable values {examples}")
    return out


REFERENCE_FIX = ("re-download it from the publisher (SOURCES.md in the reference folder says where) or point "
                 "--reference-dir at a folder with a good copy")
"""What to do about a damaged, truncated or edited reference file."""


def read_reference_csv(path: Path, **kw) -> pd.DataFrame:
    """Read a reference CSV (``pandas.read_csv`` options in ``kw``), or raise one clear line naming the
    file and the fix (:data:`REFERENCE_FIX`) when it cannot be read, is not text, or is truncated."""
    import csv
    import io

    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HierarchyError(f"cannot read {path} ({err.strerror}): {REFERENCE_FIX}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise HierarchyError(f"{path} is not a CSV text file (byte {err.start:,} is not UTF-8 text): it is "
                             f"damaged or not the published file; {REFERENCE_FIX}") from None
    lines = text.splitlines()
    if "\x00" in text or not lines:
        raise HierarchyError(f"{path} is {'empty' if not lines else 'not a CSV text file (it holds NUL bytes)'}: "
                             f"{REFERENCE_FIX}")
    width = len(next(csv.reader([lines[0]])))
    last = next(csv.reader([lines[-1]]), [])
    if not text.endswith(("\n", "\r")) or (len(lines) > 1 and len(last) < width):
        raise HierarchyError(f"{path} ends part-way through line {len(lines):,} ({len(last)} of {width} fields"
                             f"{'' if text.endswith(chr(10)) else ', no final line break'}): the file looks "
                             f"truncated; {REFERENCE_FIX}")
    try:
        return pd.read_csv(io.StringIO(text), **kw)
    except (ValueError, pd.errors.ParserError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HierarchyError(f"{path} cannot be read as CSV ({first}): {REFERENCE_FIX}") from None


def _read_lsoa(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (lsoa table, extra columns: pop_total, area and utla23 per LSOA)."""
    core_path = folder / REQUIRED_FILES[0]
    core = read_reference_csv(core_path, dtype={"ruc11_code": str, "lsoa11_code": str})
    need = ["lsoa11_code", "lsoa11_name", "utla19_code", "utla19_name", "utla23_code",
            "income_score_rate", "children_0_17_mid2019", "pop_total_mid2019", "ruc11_code",
            "area_km2_approx", "pop_density_2019_per_km2_approx"]
    lacking = [c for c in need if c not in core.columns]
    if lacking:
        raise HierarchyError(f"{core_path} lacks columns {lacking}: {REFERENCE_FIX}")

    ages = read_reference_csv(folder / REQUIRED_FILES[1],
                              usecols=["lsoa11_code"] + [str(a) for a in range(18)])
    msoa = read_reference_csv(folder / REQUIRED_FILES[2], usecols=["lsoa11_code", "msoa11_code"])
    msoa = msoa.drop_duplicates("lsoa11_code")

    df = core.merge(ages, on="lsoa11_code", how="left", validate="one_to_one")
    df = df.merge(msoa, on="lsoa11_code", how="left", validate="one_to_one")
    if df["0"].isna().any():
        raise HierarchyError(f"{REQUIRED_FILES[1]} lacks {int(df['0'].isna().sum())} LSOAs")
    if df["msoa11_code"].isna().any():
        raise HierarchyError(f"{REQUIRED_FILES[2]} lacks {int(df['msoa11_code'].isna().sum())} "
                             "LSOAs")

    lsoa = pd.DataFrame({
        "lsoa": df["lsoa11_code"].astype(str),
        "lsoa_name": df["lsoa11_name"].astype(str),
        "msoa": df["msoa11_code"].astype(str),
        "la": df["utla19_code"].astype(str),
        "la_name": df["utla19_name"].astype(str),
        "income_rate": df["income_score_rate"].astype("float64"),
        "children": df["children_0_17_mid2019"].astype("int64"),
    })
    for col, (lo, hi) in AGE_BANDS.items():
        lsoa[col] = df[[str(a) for a in range(lo, hi + 1)]].sum(axis=1).astype("int64")
    band_sum = lsoa[list(AGE_BANDS)].sum(axis=1)
    off = band_sum != lsoa["children"]
    if off.any():
        raise HierarchyError(
            f"age bands from {REQUIRED_FILES[1]} do not sum to children_0_17_mid2019 for "
            f"{int(off.sum())} LSOAs (e.g. {lsoa.loc[off, 'lsoa'].iloc[0]})")
    lsoa["ruc11_code"] = df["ruc11_code"].astype(str)
    lsoa["rural"] = lsoa["ruc11_code"].str[0].isin(["D", "E"])
    lsoa["density"] = df["pop_density_2019_per_km2_approx"].astype("float64")
    extra = pd.DataFrame({
        "pop_total": df["pop_total_mid2019"].astype("float64"),
        "area": df["area_km2_approx"].astype("float64"),
        "utla23": df["utla23_code"].astype(str),
    })
    order = np.lexsort((lsoa["lsoa"].to_numpy(), lsoa["la"].to_numpy()))
    return (lsoa.iloc[order].reset_index(drop=True), extra.iloc[order].reset_index(drop=True))


def _la_table(lsoa: pd.DataFrame, pop_total: np.ndarray, area: np.ndarray) -> pd.DataFrame:
    """LA summaries from the LSOA table (child-weighted deprivation and rural share)."""
    d = pd.DataFrame({
        "la": lsoa["la"], "la_name": lsoa["la_name"], "children": lsoa["children"],
        "wx": lsoa["income_rate"] * lsoa["children"],
        "rural_children": lsoa["children"] * lsoa["rural"].astype(int),
        "pop": pop_total, "area": area,
    })
    g = d.groupby("la", sort=True)
    la = pd.DataFrame({
        "la_name": g["la_name"].first(),
        "n_lsoa": g.size().astype("int64"),
        "children": g["children"].sum().astype("int64"),
    })
    la["deprivation"] = g["wx"].sum() / la["children"]
    la["rural_share"] = g["rural_children"].sum() / la["children"]
    la["log_density"] = np.log(g["pop"].sum() / g["area"].sum())
    return la.reset_index()


def _crosswalk(lsoa: pd.DataFrame, utla23: pd.Series) -> pd.DataFrame:
    """Weights mapping DfE LA codes onto UTLA19 codes: columns src, dst, w."""
    utla19 = sorted(lsoa["la"].unique())
    parts = [pd.DataFrame({"src": utla19, "dst": utla19, "w": 1.0})]
    kids = pd.DataFrame({"src": utla23.to_numpy(), "dst": lsoa["la"].to_numpy(),
                         "children": lsoa["children"].to_numpy(dtype=float)})
    kids = kids[~kids["src"].isin(utla19)]
    if len(kids):
        k = kids.groupby(["src", "dst"], as_index=False)["children"].sum()
        k["w"] = k["children"] / k.groupby("src")["children"].transform("sum")
        parts.append(k[["src", "dst", "w"]])
    if {_BCP, _DORSET} <= set(utla19):
        bcp = lsoa[lsoa["la"] == _BCP]
        christchurch = bcp.loc[bcp["lsoa_name"].str.startswith("Christchurch "), "children"].sum()
        dorset = lsoa.loc[lsoa["la"] == _DORSET, "children"].sum()
        share = float(christchurch / (christchurch + dorset)) if christchurch + dorset else 0.0
        parts.append(pd.DataFrame({
            "src": [_BOURNEMOUTH, _POOLE, _OLD_DORSET, _OLD_DORSET],
            "dst": [_BCP, _BCP, _DORSET, _BCP],
            "w": [1.0, 1.0, 1.0 - share, share],
        }))
    cw = pd.concat(parts, ignore_index=True)
    cw = cw[cw["w"] > 0]
    return cw.drop_duplicates(["src", "dst"], keep="first").reset_index(drop=True)


def _read_dfe_sources(folder: Path) -> dict[str, pd.DataFrame]:
    """DfE LA rows on the codes DfE used, one frame per file: ``la``, ``year`` and values.

    ``rates`` (the joined table: pop_0_17, referrals, cin, s47, cpp_at31, cla_at31), ``d3``
    (cpp_start) and, when the file is there, ``cla`` (cla_at31). The CLA file lists retired and
    successor authorities side by side with "z" (not applicable) for the one that did not exist
    that year; those rows are dropped before mapping.
    """
    out: dict[str, pd.DataFrame] = {}
    path = folder / REQUIRED_FILES[3]
    rates = read_reference_csv(path, dtype=str)
    rates = rates[rates["geographic_level"] == "Local authority"]
    df = pd.DataFrame({"la": rates["code"].str.strip(),
                       "year": _numeric(rates["time_period"], str(path)).astype("int64")})
    for src, dst in [("pop_0_17_prev_midyear", "pop_0_17"), ("referrals", "referrals"),
                     ("cin_at31", "cin"), ("s47", "s47"), ("cpp_at31", "cpp_at31"),
                     ("cla_at31_dfe", "cla_at31")]:
        df[dst] = (_numeric(rates[src], f"{path}: {src}") if src in rates.columns
                   else np.nan)
    out["rates"] = df

    path = folder / REQUIRED_FILES[4]
    d3 = read_reference_csv(path, dtype=str)
    d3 = d3[d3["geographic_level"] == "Local authority"]
    out["d3"] = pd.DataFrame({"la": d3["new_la_code"].str.strip(),
                              "year": _numeric(d3["time_period"], str(path)).astype("int64"),
                              "cpp_start": _numeric(d3["CPP_start"], f"{path}: CPP_start")})

    path = folder / CLA_FILE
    if path.is_file():
        cla = read_reference_csv(path, dtype=str)
        cla = cla[(cla["geographic_level"] == "Local authority")
                  & cla["population_type"].str.contains("on 31 March", na=False)]
        cla = cla[cla["children_count"].str.strip().str.lower() != "z"]
        out["cla"] = pd.DataFrame({
            "la": cla["new_la_code"].str.strip(),
            "year": _numeric(cla["time_period"], str(path)).astype("int64"),
            "cla_at31": _numeric(cla["children_count"], f"{path}: children_count")})
    for name, frame in out.items():
        dup = frame.duplicated(["la", "year"])
        if dup.any():
            raise HierarchyError(f"DfE {name} file repeats LA x year rows, e.g. "
                                 f"{frame.loc[dup, ['la', 'year']].iloc[0].tolist()}")
    return out


def _map_dfe(raw: pd.DataFrame, cw: pd.DataFrame) -> pd.DataFrame:
    """Sum DfE rows onto UTLA19 codes; a total is NaN if any of its parts is NaN."""
    cols = [c for c in raw.columns if c not in ("la", "year")]
    unknown = sorted(set(raw["la"]) - set(cw["src"]))
    if unknown:
        warnings.warn(f"DfE LA codes not mapped onto UTLA19 and left out: {unknown}",
                      UserWarning, stacklevel=3)
    m = raw.merge(cw, left_on="la", right_on="src", how="inner")
    # the same authority must not arrive twice in one year (a code and its successor)
    n_src = m.groupby(["dst", "year"])["src"].nunique()
    ident = m[m["src"] == m["dst"]].groupby(["dst", "year"]).size()
    clash = n_src[(n_src > 1) & n_src.index.isin(ident.index)]
    if len(clash):
        raise HierarchyError("DfE data report an authority and its successor in the same "
                             f"year: {list(clash.index[:5])}")
    vals = m[cols].mul(m["w"], axis=0)
    keys = [m["dst"].rename("la"), m["year"]]
    summed = vals.groupby(keys, sort=True).sum(min_count=1)
    has_nan = m[cols].isna().groupby(keys, sort=True).any()
    summed = summed.mask(has_nan.reindex(summed.index).to_numpy())
    return summed.reset_index()


def _dfe_table(folder: Path, lsoa: pd.DataFrame, utla23: pd.Series) -> pd.DataFrame:
    """The mapped long DfE table (see the module docstring)."""
    cw = _crosswalk(lsoa, utla23)
    sources = {k: _map_dfe(v, cw) for k, v in _read_dfe_sources(folder).items()}
    out = sources["rates"].merge(sources["d3"], on=["la", "year"], how="outer")
    if "cla" in sources:  # the CLA file is the primary source; the joined table fills gaps
        cla = out[["la", "year"]].merge(sources["cla"], on=["la", "year"], how="left")
        out["cla_at31"] = cla["cla_at31"].fillna(out["cla_at31"]).to_numpy()
    out = out.sort_values(["la", "year"]).reset_index(drop=True)
    # populations missing after mapping (pre-2019 Dorset codes): nearest year of the same LA
    for idx in out.groupby("la").groups.values():
        sub = out.loc[idx]
        have = sub.dropna(subset=["pop_0_17"])
        if len(have) == len(sub) or not len(have):
            continue
        for i in sub.index[sub["pop_0_17"].isna()]:
            nearest = (have["year"] - out.at[i, "year"]).abs().idxmin()
            out.at[i, "pop_0_17"] = have.at[nearest, "pop_0_17"]
    out["year"] = out["year"].astype("int64")
    return out[["la", "year", *DFE_COLUMNS]]


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str) -> Geography:
    path = Path(folder)
    lsoa, extra = _read_lsoa(path)
    la = _la_table(lsoa, extra["pop_total"].to_numpy(), extra["area"].to_numpy())
    dfe = _dfe_table(path, lsoa, extra["utla23"])
    return Geography(lsoa=lsoa, la=la, dfe=dfe, source=f"reference:{path}")


def load_reference(ref_dir: Path | None = None) -> Geography:
    """Read the real England geography and DfE counts (see the module docstring).

    Parameters
    ----------
    ref_dir : pathlib.Path, optional
        Reference folder; found with :func:`find_reference_dir` when omitted.

    Returns
    -------
    Geography
        Parsed tables (cached per folder; each call returns fresh copies of the tables).

    Raises
    ------
    HierarchyError
        If no folder is found or a required file is missing or unreadable.
    """
    folder = find_reference_dir(ref_dir)
    if folder is None:
        raise HierarchyError(
            f"no England reference data found (pass a folder, set ${ENV_VAR}, or place it in "
            "../shared/data/england); needed files: " + ", ".join(REQUIRED_FILES))
    geo = _load_cached(str(folder))
    return Geography(lsoa=geo.lsoa.copy(), la=geo.la.copy(), dfe=geo.dfe.copy(),
                     source=geo.source)


# --------------------------------------------------------------------------------------------
# generated geography


def synthetic_geography(n_la: int = 151, *, seed: int = 0,
                        lsoa_per_la: float = 161.0) -> Geography:
    """Generate a geography resembling England's, with fake codes.

    Parameters
    ----------
    n_la : int
        Number of local authorities (codes ``LA001`` ...).
    seed : int
        Seed of the numpy random generator; the result is a deterministic function of the
        arguments.
    lsoa_per_la : float
        Median number of neighbourhoods per LA (lognormal, log-sd 0.6, at least 1).

    Returns
    -------
    Geography
        LA child-weighted deprivation ~ N(0.147, 0.053) clipped to [0.03, 0.28]; neighbourhood
        income rates lognormal around their LA's level (log-sd 0.67, clipped to [0.003, 0.65]);
        ~366 children per neighbourhood split into age bands 27/29/33/11%; MSOAs of ~5
        neighbourhoods (codes ``M00001``), neighbourhoods ``N000001``; rural flags more common in
        less deprived, sparser LAs; densities; and a DfE table for 2013-2025 with referral rates
        around 550 per 10,000 (higher in more deprived LAs, log-sd ~0.3), s47 ~31%, plans started
        ~8% and plans at 31 March ~7% of referrals, looked after ~70 per 10,000.
    """
    if n_la < 1:
        raise HierarchyError(f"n_la must be at least 1, got {n_la}")
    rng = np.random.default_rng(seed)  # one generator, drawn from by each step in turn
    lsoa, pop_total, area = _synthetic_lsoa(n_la, lsoa_per_la, rng)
    la = _la_table(lsoa, pop_total, area)
    return Geography(lsoa=lsoa, la=la, dfe=_synthetic_dfe(la, rng),
                     source=f"synthetic(n_la={n_la}, seed={seed})")


def _synthetic_deprivation(n_la: int, lsoa_per_la: float, rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each LA's deprivation and neighbourhood count; each neighbourhood's LA, income rate and children."""
    target = np.clip(rng.normal(0.147, 0.053, n_la), 0.03, 0.28)
    n_lsoa = np.maximum(1, np.rint(lsoa_per_la * np.exp(rng.normal(0, 0.6, n_la)))).astype(int)
    la_idx = np.repeat(np.arange(n_la), n_lsoa)
    n = int(n_lsoa.sum())
    sigma = 0.67
    x = target[la_idx] * np.exp(rng.normal(-sigma**2 / 2, sigma, n))
    children = np.maximum(20, np.rint(366 * np.exp(rng.normal(-0.06, 0.35, n)))).astype(np.int64)
    for _ in range(3):  # rescale so each LA's child-weighted mean hits its target
        realised = np.bincount(la_idx, x * children) / np.bincount(la_idx, children)
        x = np.clip(x * (target / realised)[la_idx], 0.003, 0.65)
    return target, n_lsoa, la_idx, np.round(x, 3), children


def _synthetic_bands(children: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each neighbourhood's children split into the age bands ``(n, 4)``, summing to ``children``."""
    n = len(children)
    shares = rng.dirichlet(np.array([0.274, 0.294, 0.331, 0.100]) * 400, size=n)
    bands = np.floor(shares * children[:, None]).astype(np.int64)
    short = children - bands.sum(axis=1)
    bands[np.arange(n), np.argmax(shares - bands / children[:, None], axis=1)] += short
    return bands


def _synthetic_land(target: np.ndarray, la_idx: np.ndarray, x: np.ndarray, children: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Each neighbourhood's density, rural flag, RUC2011 code, population and area: sparser, more rural
    LAs tend to be less deprived."""
    n_la, n = len(target), len(x)
    la_log_density = 7.6 - 8.0 * (target - 0.147) + rng.normal(0, 1.0, n_la)
    log_density = la_log_density[la_idx] + rng.normal(0, 1.0, n) + 4.0 * (x - target[la_idx])
    density = np.round(np.exp(log_density), 1)
    p_rural = 1 / (1 + np.exp(2.5 * (log_density - 6.2)))
    rural = rng.random(n) < p_rural
    ruc = np.where(rural, np.where(rng.random(n) < 0.55, "D1", "E1"),
                   np.where(log_density > 8.3, "A1", "C1"))
    pop_total = np.rint(children / 0.21).astype(float)
    return density, rural, ruc, pop_total, pop_total / density


def _synthetic_msoa(n_lsoa: np.ndarray) -> np.ndarray:
    """MSOA codes: consecutive runs of ~5 neighbourhoods within each LA."""
    msoa = np.empty(int(n_lsoa.sum()), dtype=object)
    counter, start = 0, 0
    for j in range(len(n_lsoa)):
        k = int(n_lsoa[j])
        n_m = max(1, int(round(k / 5)))
        groups = np.minimum(np.arange(k) * n_m // k, n_m - 1)
        msoa[start:start + k] = [f"M{counter + g + 1:05d}" for g in groups]
        counter += n_m
        start += k
    return msoa


def _synthetic_lsoa(n_la: int, lsoa_per_la: float, rng: np.random.Generator
                    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The neighbourhood table of :func:`synthetic_geography`, with each neighbourhood's population and
    area."""
    target, n_lsoa, la_idx, x, children = _synthetic_deprivation(n_la, lsoa_per_la, rng)
    n = len(x)
    bands = _synthetic_bands(children, rng)
    density, rural, ruc, pop_total, area = _synthetic_land(target, la_idx, x, children, rng)
    la_codes = np.array([f"LA{j + 1:03d}" for j in range(n_la)])
    lsoa = pd.DataFrame({
        "lsoa": [f"N{i + 1:06d}" for i in range(n)],
        "lsoa_name": [f"Synthetic {la_codes[j]} {i + 1:06d}" for i, j in enumerate(la_idx)],
        "msoa": _synthetic_msoa(n_lsoa).astype(str),
        "la": la_codes[la_idx],
        "la_name": [f"Synthetic authority {j + 1}" for j in la_idx],
        "income_rate": x,
        "children": children,
    })
    for c, col in enumerate(AGE_BANDS):
        lsoa[col] = bands[:, c]
    lsoa["ruc11_code"] = ruc
    lsoa["rural"] = rural
    lsoa["density"] = density
    for col in ("lsoa", "lsoa_name", "msoa", "la", "la_name", "ruc11_code"):
        lsoa[col] = lsoa[col].astype(str)
    return lsoa, pop_total, area


def _synthetic_dfe(la: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A DfE-like LA x year table for 2013-2025 (see :func:`synthetic_geography`)."""
    n_la = len(la)
    xbar = la["deprivation"].mean()
    years = np.arange(2013, 2026)
    year_effect = {"referrals": 1 + 0.04 * np.sin(years - 2013), "s47": np.linspace(0.75, 1.1,
                                                                                    len(years))}
    la_rate = 565 * np.exp(0.43 * np.log(la["deprivation"].to_numpy() / xbar)
                           + rng.normal(-0.04, 0.28, n_la))
    ratios = {
        "cin": 0.62 * np.exp(rng.normal(0, 0.15, n_la)),
        "s47": 0.31 * np.exp(rng.normal(0, 0.25, n_la)),
        "cpp_start": 0.08 * np.exp(rng.normal(0, 0.2, n_la)),
        "cpp_at31": 0.075 * np.exp(rng.normal(0, 0.25, n_la)),
    }
    cla_rate = 70 * np.exp(0.6 * np.log(la["deprivation"].to_numpy() / xbar)
                           + rng.normal(0, 0.3, n_la))
    rows = []
    kids = la["children"].to_numpy(dtype=float)
    for t, yr in enumerate(years):
        pop = np.rint(kids * (0.96 + 0.004 * t))
        ref = np.rint(pop * la_rate * year_effect["referrals"][t] / 1e4
                      * np.exp(rng.normal(0, 0.05, n_la)))
        rec = {"la": la["la"].to_numpy(), "year": np.full(n_la, yr), "pop_0_17": pop,
               "referrals": ref}
        for k, r in ratios.items():
            eff = year_effect["s47"][t] if k == "s47" else 1.0
            rec[k] = np.rint(ref * r * eff * np.exp(rng.normal(0, 0.05, n_la)))
        rec["cla_at31"] = (np.rint(pop * cla_rate / 1e4) if yr >= 2021
                           else np.full(n_la, np.nan))
        rows.append(pd.DataFrame(rec))
    dfe = pd.concat(rows, ignore_index=True)
    dfe["year"] = dfe["year"].astype("int64")
    for col in DFE_COLUMNS:
        dfe[col] = dfe[col].astype("float64")
    return dfe[["la", "year", *DFE_COLUMNS]].sort_values(["la", "year"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# choosing


def get_geography(ref_dir: Path | None = None, *, synthetic: bool = False, n_la: int = 151,
                  seed: int = 0) -> Geography:
    """Return the reference geography when found (and not ``synthetic``), else a generated one.

    Parameters
    ----------
    ref_dir : pathlib.Path, optional
        Reference folder (an error if given and incomplete).
    synthetic : bool
        Always generate, even when reference data are present.
    n_la, seed : int
        Size and seed of a generated geography.

    Returns
    -------
    Geography
        ``geo.source`` says which one it is.
    """
    if not synthetic:
        folder = find_reference_dir(ref_dir)
        if folder is not None:
            return load_reference(folder)
    return synthetic_geography(n_la, seed=seed)


def maybe_reference(ref_dir: Path | None = None) -> Geography | None:
    """Return the reference geography if a folder is found, else None.

    Parameters
    ----------
    ref_dir : pathlib.Path, optional
        Reference folder (an error if given and incomplete).

    Returns
    -------
    Geography or None
    """
    folder = find_reference_dir(ref_dir)
    return None if folder is None else load_reference(folder)

"""Text versions of report tables: numbers rounded for reading, disclosure-controlled cells marked.

:func:`rounded` gives each centre and interval the decimals its interval justifies
(:func:`decimals_for`); :func:`markdown_table` and :func:`csv_bytes` give a table as Markdown or
as the CSV a report writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hierarchy import disclosure

DISCLOSED = {"observed_count": "{:,.0f}", "observed_neighbourhoods": "{:,.0f}",
             "observed_rate": "{:,.1f}"}
"""Disclosure-controlled columns and their text format in Markdown/HTML."""
DISCLOSED_CSV = {"observed_count": "{:.0f}", "observed_neighbourhoods": "{:.0f}",
                 "observed_rate": "{:.4f}"}


DEPRIVATION = {"la_deprivation": "la_deprivation_pct", "x": "neighbourhood_deprivation_pct",
               "deprivation_min": "deprivation_min_pct", "deprivation_max": "deprivation_max_pct"}
"""Columns holding a share of income-deprived people (a proportion in the tables) and their CSV names.
One rule everywhere: on pages, in printed tables, in sentences and on figures such a share is a
percent with one decimal (``24.3%``, :func:`pct`); in CSV and JSON files it is in percent at full
precision, in a column whose name ends ``_pct`` (:func:`in_percent`), as the maps' summaries are."""


def pct(v: Any) -> str:
    """A deprivation share (proportion) as a percent with one decimal, ``0.243`` -> ``24.3%``."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return f"{100 * v:.1f}%" if np.isfinite(v) else ""


def in_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its deprivation shares in percent under names ending ``_pct`` (:data:`DEPRIVATION`),
    for the files a report writes."""
    have = {c: DEPRIVATION[c] for c in frame.columns if c in DEPRIVATION}
    if not have:
        return frame
    out = frame.copy()
    for c in have:
        out[c] = 100 * pd.to_numeric(out[c], errors="coerce")
    return out.rename(columns=have)


def num(v: Any) -> str:
    """A number as text for reading: thousands separated, three significant figures below 100."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if not isinstance(v, (float, np.floating)):
        return "" if v is None else str(v)
    if not np.isfinite(v):
        return ""
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}" if a >= 1 else f"{v:.3g}"


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Text version of a table: disclosed columns marked, other numbers rounded for reading."""
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED.items() if c in frame})
    out = marked.astype(object).map(num)
    for c in DEPRIVATION:
        if c in frame:
            out[c] = frame[c].map(pct)
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame of strings."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in frame.itertuples(index=False)]
    head = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as the CSV a report writes: every row, full precision, disclosure-controlled cells marked,
    deprivation shares in percent (:func:`in_percent`)."""
    frame = in_percent(frame)
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED_CSV.items() if c in frame})
    return marked.to_csv(index=False).encode("utf-8")


INTERVALS = (("mean", "lower", "upper"), ("predicted_mean", "predicted_lower", "predicted_upper"))
"""(centre, lower, upper) columns rounded to the precision their interval justifies (and the ArviZ
summary's two ``hdi_`` columns, at any probability)."""


def decimals_for(width: float, *, most: int = 4) -> int:
    """Decimal places that show two significant digits of an interval's width (0 to ``most``).

    An interval 0.1 wide justifies two decimals (1.64, 1.59 to 1.69; not 1.6412); one 300 wide
    none (412).
    """
    if not np.isfinite(width) or width <= 0:
        return 2
    return int(np.clip(1 - np.floor(np.log10(width)), 0, most))


def pct_decimals(width: float) -> int:
    """Decimals of a percentage in a sentence: whole numbers unless the interval is under 2 points."""
    return 0 if not np.isfinite(width) or width >= 2 else 1


def fmt(v: Any, dec: int) -> str:
    """``v`` with ``dec`` decimals (non-numbers as :func:`num`, non-finite blank)."""
    if not isinstance(v, (float, np.floating, int, np.integer)) or isinstance(v, (bool, np.bool_)):
        return num(v)
    return f"{v:,.{dec}f}" if np.isfinite(v) else ""


def rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """Text version of a table rounded for reading.

    Centre and interval columns (:data:`INTERVALS`; ``truth`` and ``published`` with them) get
    the decimals their row's interval width justifies (:func:`decimals_for`); SDs and MCSEs two
    significant digits; ESS whole numbers; R-hat three decimals; other numbers :func:`num`.
    Disclosure-controlled columns are marked (:data:`DISCLOSED`) as before.
    """
    marked = disclosure.mark_suppressed(frame, {c: f for c, f in DISCLOSED.items() if c in frame})
    out = marked.astype(object).map(num)
    hdi = [c for c in frame.columns if str(c).startswith("hdi_")]
    for centre, lo, hi in INTERVALS + ((("mean", *hdi),) if len(hdi) == 2 else ()):
        if not {centre, lo, hi} <= set(frame.columns):
            continue
        width = (frame[hi] - frame[lo]).to_numpy(float)
        dec = [decimals_for(w) for w in width]
        for col in (centre, lo, hi, "truth", "published", "truth_expected_rate"):
            if col in frame and col not in DISCLOSED:
                out[col] = [fmt(v, d) for v, d in zip(frame[col], dec, strict=True)]
    for col in frame.columns:
        if col in ("sd", "mcse_mean", "mcse_sd", "predicted_sd") and pd.api.types.is_float_dtype(frame[col]):
            out[col] = [f"{v:.2g}" if np.isfinite(v) else "" for v in frame[col]]
        elif col.startswith("ess_") and pd.api.types.is_numeric_dtype(frame[col]):
            out[col] = [f"{v:,.0f}" if np.isfinite(v) else "" for v in frame[col]]
        elif col == "r_hat":
            out[col] = [f"{v:.3f}" if np.isfinite(v) else "" for v in frame[col]]
        elif col in ("prob", "p_steeper", "p_greater_than_1"):
            out[col] = [f"{v:.2f}" for v in frame[col]]
        elif col in DEPRIVATION:
            out[col] = [pct(v) for v in frame[col]]
    return out


def short(frame: pd.DataFrame, *, keep: int = 12, order: str | None = None,
           always: int | None = None) -> pd.DataFrame:
    """At most ``keep`` rows of a long table: the extremes of ``order``, or evenly spaced rows
    (row ``always`` among them)."""
    if len(frame) <= keep:
        return frame
    if order is not None:
        s = frame.sort_values(order)
        return pd.concat([s.head(keep // 2), s.tail(keep - keep // 2)])
    idx = set(np.linspace(0, len(frame) - 1, keep - (always is not None)).round().astype(int))
    if always is not None:
        idx.add(always)
    return frame.iloc[sorted(idx)]


def lean(frame: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """``frame`` without the columns that repeat one value on every row (said in the caption)."""
    drop = [c for c in ("estimand", "scale", "prob") if c in frame and c not in keep
            and frame[c].astype(str).nunique() <= 1]
    return frame.drop(columns=drop)

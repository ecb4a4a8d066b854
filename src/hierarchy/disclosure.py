"""Disclosure control for published observed counts (DESIGN section 5).

Rules, applied to every observed count and to every rate computed from one, in tables and in
the data behind figures:

* a count below ``threshold`` (default 10) is suppressed: ``NaN`` in numeric data (absent from
  figures), :data:`SUPPRESSED` (``"[c]"``) in text tables;
* any other count is rounded to the nearest multiple of ``rounding`` (default 5; half up);
* a rate is computed from the *rounded* count, and is suppressed when its count is.

Posterior quantities (model predictions, estimands) are not observed counts and are not suppressed.
Denominators (children in the population) are population estimates and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

THRESHOLD = 10
ROUNDING = 5
SUPPRESSED = "[c]"
"""Marker of a suppressed cell in text tables (CSV, Markdown, HTML)."""


def check_rules(threshold: int, rounding: int) -> None:
    """Raise :class:`~hierarchy.errors.HierarchyError` unless the rules are usable.

    Parameters
    ----------
    threshold : int
        Smallest count that may be published (>= 0; 0 publishes every count).
    rounding : int
        Published counts are rounded to a multiple of this (>= 0; 0 or 1: no rounding).
    """
    for name, value in (("threshold", threshold), ("rounding", rounding)):
        if isinstance(value, bool) or not float(value).is_integer() or value < 0:
            raise HierarchyError(f"disclosure {name} must be a whole number >= 0, got {value!r}")


def round_counts(counts: Iterable[float] | np.ndarray, rounding: int = ROUNDING) -> np.ndarray:
    """Round counts to the nearest multiple of ``rounding`` (halves up); NaN stays NaN.

    Parameters
    ----------
    counts : array_like
        Counts (NaN allowed).
    rounding : int
        Base; 0 or 1 leaves counts as they are.

    Returns
    -------
    numpy.ndarray
        Float array.
    """
    c = np.asarray(counts, dtype=float)
    if rounding <= 1:
        return c.copy()
    return np.floor(c / rounding + 0.5) * rounding


def disclose_counts(counts: Iterable[float] | np.ndarray, *, threshold: int = THRESHOLD,
                    rounding: int = ROUNDING) -> np.ndarray:
    """Publishable version of observed counts: suppressed below ``threshold``, else rounded.

    Parameters
    ----------
    counts : array_like
        Observed counts (NaN allowed: treated as suppressed).
    threshold, rounding : int
        The rules (see the module docstring).

    Returns
    -------
    numpy.ndarray
        Float array; NaN where suppressed.
    """
    check_rules(threshold, rounding)
    c = np.asarray(counts, dtype=float)
    out = round_counts(c, rounding)
    out[~(c >= threshold)] = np.nan  # also catches NaN
    return out


def disclose_rates(counts: Iterable[float] | np.ndarray, denominators: Iterable[float] | np.ndarray,
                   *, per: float = 10_000, threshold: int = THRESHOLD,
                   rounding: int = ROUNDING) -> np.ndarray:
    """Rates ``per`` unit of denominator computed from the disclosed (rounded) counts.

    Parameters
    ----------
    counts : array_like
        Observed counts.
    denominators : array_like
        Population at risk (children), same shape.
    per : float
        Rate base (10,000 children by default).
    threshold, rounding : int
        The rules (see the module docstring).

    Returns
    -------
    numpy.ndarray
        Float array; NaN where the count is suppressed or the denominator is not positive.
    """
    published = disclose_counts(counts, threshold=threshold, rounding=rounding)
    d = np.asarray(denominators, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = per * published / d
    rate[~(d > 0)] = np.nan
    return rate


def disclose_frame(frame: pd.DataFrame, *, counts: Iterable[str],
                   rates: Mapping[str, tuple[str, str]] | None = None, per: float = 10_000,
                   threshold: int = THRESHOLD, rounding: int = ROUNDING) -> pd.DataFrame:
    """Apply the rules to the count columns of a table and (re)compute its rate columns.

    Parameters
    ----------
    frame : pandas.DataFrame
        Table with raw observed counts.
    counts : iterable of str
        Observed count columns to disclose.
    rates : mapping, optional
        ``{rate_column: (count_column, denominator_column)}``; each rate is computed from the
        raw count column's disclosed value (overwriting any existing rate column).
    per : float
        Rate base.
    threshold, rounding : int
        The rules.

    Returns
    -------
    pandas.DataFrame
        A copy; count and rate columns are floats with NaN where suppressed.
    """
    out = frame.copy()
    raw = {c: frame[c].to_numpy(dtype=float) for c in counts}
    for rate, (count, denom) in (rates or {}).items():
        source = raw[count] if count in raw else frame[count].to_numpy(dtype=float)
        out[rate] = disclose_rates(source, frame[denom].to_numpy(dtype=float), per=per,
                                   threshold=threshold, rounding=rounding)
    for c, values in raw.items():
        out[c] = disclose_counts(values, threshold=threshold, rounding=rounding)
    return out


def mark_suppressed(frame: pd.DataFrame, formats: Mapping[str, str]) -> pd.DataFrame:
    """Text version of disclosed columns: NaN -> :data:`SUPPRESSED`, numbers formatted.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`disclose_frame`.
    formats : mapping
        ``{column: format}``, e.g. ``{"observed_count": "{:,.0f}", "observed_rate": "{:,.1f}"}``.

    Returns
    -------
    pandas.DataFrame
        A copy with those columns as text.
    """
    out = frame.copy()
    for c, fmt in formats.items():
        out[c] = [fmt.format(v) if np.isfinite(v) else SUPPRESSED
                  for v in frame[c].to_numpy(dtype=float)]
    return out


def rules_text(*, threshold: int = THRESHOLD, rounding: int = ROUNDING) -> str:
    """The disclosure rules in force, as a paragraph for a report.

    Parameters
    ----------
    threshold, rounding : int
        The rules.

    Returns
    -------
    str
    """
    check_rules(threshold, rounding)
    rnd = (f"Other observed counts are rounded to the nearest {rounding} (halves up)"
           if rounding > 1 else "Other observed counts are shown unrounded")
    return (f"Disclosure control: observed counts below {threshold} are suppressed (shown as "
            f"{SUPPRESSED} in tables and left out of figures). {rnd}. Rates are computed from the "
            f"published (rounded) counts and are suppressed when their count is. This applies to "
            "every observed count, including the numbers of neighbourhoods in the count "
            "histogram. Model predictions and estimands are posterior quantities, not observed "
            "counts, and are not suppressed; children (denominators) are population estimates and "
            "are shown as they are.")

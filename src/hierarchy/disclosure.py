"""Disclosure control for published observed counts (DESIGN section 5).

Rules, applied to every observed count and to every rate computed from one, in tables and in
the data behind figures:

* a count below ``threshold`` (default 10) is suppressed: ``NaN`` in numeric data (absent from
  figures), :data:`SUPPRESSED` (``"[c]"``) in text tables;
* any other count is rounded to the nearest multiple of ``rounding`` (default 5; half up);
* a rate is computed from the *rounded* count, and is suppressed when its count is;
* where a table's totals are published (an LA's cells and its total, a national decile and the
  LA cells in it, count bins and the number of neighbourhoods), further cells are suppressed
  (secondary suppression, :func:`secondary_suppression`) until no suppressed cell can be derived
  from the published ones, exactly or to one whole number;
* rules below the defaults need an explicit choice (:func:`require_default_rules`), which the
  report states at its top.

Posterior quantities (model predictions, estimands) are not observed counts and are not suppressed.
Denominators (children in the population) are population estimates and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from hierarchy.errors import HierarchyError

THRESHOLD = 10
ROUNDING = 5
SUPPRESSED = "[c]"
"""Marker of a suppressed cell in text tables (CSV, Markdown, HTML)."""
PUBLIC_COLUMNS = frozenset({
    "neighbourhood", "la", "msoa", "deprivation", "exposure", "year", "rural", "sparsity", "age_c",
    "age_band", "sex", "ethnicity", "need", "category", "factor", "band"})
"""Canonical table columns that are public (codes, geography, deprivation, children, stratum labels): the
only row data a fit file may hold without opt-in. ``exposure`` is the children column; LA-level ``la_*``
measures (published per LA) are public too. A count used as a model's exposure is not."""


def public_column(name: str) -> bool:
    """Whether a canonical column is public (see :data:`PUBLIC_COLUMNS`)."""
    return name in PUBLIC_COLUMNS or name.startswith("la_")


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


# ---------------------------------------------------------------------------- below the defaults


def below_default(threshold: int, rounding: int) -> bool:
    """Whether the rules are weaker than the defaults (threshold < 10 or rounding base < 5)."""
    return threshold < THRESHOLD or rounding < ROUNDING


def require_default_rules(threshold: int, rounding: int, *, allow: bool = False) -> None:
    """Refuse rules below the defaults unless ``allow`` is an explicit choice.

    Raises
    ------
    HierarchyError
        When ``threshold`` < :data:`THRESHOLD` or ``rounding`` < :data:`ROUNDING` and not ``allow``.
    """
    check_rules(threshold, rounding)
    if below_default(threshold, rounding) and not allow:
        raise HierarchyError(
            f"disclosure rules below the defaults (threshold {threshold}, rounding {rounding}; defaults "
            f"{THRESHOLD} and {ROUNDING}) would publish small counts or unrounded counts. If this output "
            "stays inside the secure environment, say so explicitly with --allow-below-default-rules "
            "(allow_below_default_rules=True); the report then states it at its top.")


def below_default_warning(threshold: int, rounding: int) -> str:
    """The warning a report carries at its top when its rules are below the defaults ('' if not)."""
    if not below_default(threshold, rounding):
        return ""
    return (f"WARNING: NOT FOR PUBLICATION. This report was made with disclosure rules below the "
            f"defaults (threshold {threshold} instead of {THRESHOLD}, rounding base {rounding} instead "
            f"of {ROUNDING}), by explicit choice: it may show small or exact observed counts and rates "
            "from which children can be identified. It must not leave the secure environment.")


# ---------------------------------------------------------------------------- secondary suppression


def linear_lines(n_cells: int, lines: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
    """Constraint matrix ``A`` (lines x cells) of published additive relations, ``A @ v = 0``.

    Parameters
    ----------
    n_cells : int
        Number of cells (totals included).
    lines : sequence of (int, sequence of int)
        ``(total, members)``: cell ``total`` is the sum of cells ``members``.
    """
    a = np.zeros((len(lines), n_cells))
    for i, (total, members) in enumerate(lines):
        a[i, list(members)] = 1.0
        a[i, total] -= 1.0
    return a


def derivable(lines_matrix: np.ndarray, suppressed: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
    """Suppressed cells whose exact value follows from the published cells by linear algebra.

    A suppressed cell is determined when its unit vector lies in the row space of the constraint
    matrix restricted to the suppressed cells, i.e. when every null vector of that matrix is zero
    at the cell.

    Returns
    -------
    numpy.ndarray
        Boolean mask over cells (False for published cells).
    """
    from scipy.linalg import null_space

    idx = np.flatnonzero(suppressed)
    out = np.zeros(len(suppressed), dtype=bool)
    if not len(idx):
        return out
    sub = lines_matrix[:, idx]
    sub = sub[np.abs(sub).sum(1) > 0]
    if not len(sub):
        return out
    null = null_space(sub)
    out[idx] = np.abs(null).max(axis=1, initial=0.0) < 1e-7 if null.size else True
    return out


def pinned(values: np.ndarray, suppressed: np.ndarray, lines: Sequence[tuple[int, Sequence[int]]], *,
           rounding: int = ROUNDING, exact: np.ndarray | None = None) -> np.ndarray:
    """Suppressed cells an attacker can pin to one whole number from the published table.

    The attacker knows every additive relation in ``lines``, that counts are >= 0 and that each
    published value is its true count rounded to ``rounding`` (exact when ``rounding`` <= 1 and
    for the ``exact`` cells), and
    bounds each suppressed cell by linear programming (min and max). A cell is pinned when its
    interval holds a single whole number.

    Returns
    -------
    numpy.ndarray
        Boolean mask over cells.
    """
    from scipy.optimize import linprog

    v = np.asarray(values, dtype=float)
    n = len(v)
    half = rounding / 2 if rounding > 1 else 0.0
    exact = np.zeros(n, dtype=bool) if exact is None else np.asarray(exact, dtype=bool)
    bounds = [(0, None) if s else (x, x) if e else (max(0.0, x - half), x + half)
              for x, s, e in zip(v, suppressed, exact, strict=True)]
    a = linear_lines(n, lines)
    out = np.zeros(n, dtype=bool)
    for k in np.flatnonzero(suppressed):
        c = np.zeros(n)
        c[k] = 1.0
        lo = linprog(c, A_eq=a, b_eq=np.zeros(len(a)), bounds=bounds, method="highs")
        hi = linprog(-c, A_eq=a, b_eq=np.zeros(len(a)), bounds=bounds, method="highs")
        if lo.status != 0 or hi.status == 2:  # infeasible: the published table is inconsistent
            continue
        top = np.inf if hi.status == 3 else -hi.fun
        out[k] = np.ceil(lo.fun - 1e-6) >= np.floor(top + 1e-6)
    return out


def secondary_suppression(values: np.ndarray, lines: Sequence[tuple[int, Sequence[int]]], *,
                          rounding: int = ROUNDING, totals: Iterable[int] = (),
                          public: Iterable[int] = ()) -> np.ndarray:
    """Cells to suppress so that no suppressed cell can be derived from the published ones.

    Primary suppression (NaN in ``values``) is extended greedily: while some suppressed cell is
    determined by the additive relations (:func:`derivable`) or pinned to one whole number by
    bounds (:func:`pinned`), the published cell that shares a relation with it is suppressed too,
    preferring cells that do not leave another relation with a single suppressed cell, then
    inner cells over totals, then the smallest.

    Parameters
    ----------
    values : numpy.ndarray
        Published (already rounded) value of every cell, totals included; NaN where suppressed.
    lines : sequence of (int, sequence of int)
        ``(total, members)`` relations: cell ``total`` is the sum of cells ``members``.
    rounding : int
        Rounding base of the published values (the attacker's uncertainty about them).
    totals : iterable of int
        Cells that are totals (suppressed last).
    public : iterable of int
        Cells known anyway (e.g. the number of neighbourhoods): never suppressed.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the cells to show as suppressed (primary and secondary).
    """
    v = np.asarray(values, dtype=float)
    mask = ~np.isfinite(v)
    if not mask.any():
        return mask
    a = linear_lines(len(v), lines)
    is_total = np.zeros(len(v), dtype=bool)
    is_total[list(totals)] = True
    known = np.zeros(len(v), dtype=bool)
    known[list(public)] = True
    def score(c: int, rel: np.ndarray) -> tuple:
        others = np.flatnonzero(a[:, c] != 0)
        alone = any(not (mask & (a[r] != 0)).any() for r in others if r not in rel)
        return (alone, bool(is_total[c]), v[c], c)

    def protect(k: int) -> None:
        rel = np.flatnonzero(a[:, k] != 0)
        cand = np.flatnonzero((np.abs(a[rel]).sum(0) > 0) & ~mask & ~known)
        if not len(cand):  # every neighbour is suppressed: widen to any relation with a suppression
            rel = np.flatnonzero(np.abs(a[:, mask]).sum(1) > 0)
            cand = np.flatnonzero((np.abs(a[rel]).sum(0) > 0) & ~mask & ~known)
        if not len(cand):
            raise HierarchyError("secondary suppression found no cell to suppress; the table's "
                                 "relations are inconsistent")
        mask[min(cand, key=lambda c: score(c, rel))] = True

    while True:
        exposed = derivable(a, mask)
        if exposed.any():  # exact by linear algebra: one cell at a time (cheap to recheck)
            protect(int(np.flatnonzero(exposed)[0]))
            continue
        exposed = pinned(np.where(mask, 0.0, v), mask, lines, rounding=rounding, exact=known)
        if not exposed.any():
            return mask
        for k in np.flatnonzero(exposed):  # pinned by bounds: protect them all before the next LPs
            protect(int(k))

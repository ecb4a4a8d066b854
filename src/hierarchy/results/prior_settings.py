"""What the prior comparison (:mod:`hierarchy.results.compare_priors`) shares between its checks and pages:
thresholds, labels, the published figures it shows and number formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierarchy import published
from hierarchy.results.estimands import LA_LEVELS

IMPOSSIBLE_RATE = 10_000.0
"""Rate per 10,000 children above which a neighbourhood has more referrals than children."""

VISIBLE_IMPOSSIBLE = 0.05
"""Prior share of neighbourhoods with impossible rates from which a prior is said to put
*visible* mass on impossible rates (and the page warns)."""

NEGLIGIBLE_IMPOSSIBLE = 0.01
"""Below this share the prior mass on impossible rates is called negligible."""

SENSITIVITY_THRESHOLD = 0.05
"""Power-scaling sensitivity above which a quantity is called sensitive (Kallioinen et al.)."""

GRADIENT_SCALE = "per 10 points"

PUBLISHED = {level: published.value(outcome="referral", estimand="gradient_score", la_level=level,
                                    scale=GRADIENT_SCALE, year=2019) for level in LA_LEVELS}
"""Referral gradient scores of 2018-19, as read from :mod:`hierarchy.published` (kept for notebooks:
the pages look figures up by outcome and year with :func:`published_gradient`)."""

ESTIMAND_LABELS = {"10 points less": "gradient score, LA 10 points less deprived",
                   "mean": "gradient score at mean LA deprivation",
                   "10 points more": "gradient score, LA 10 points more deprived"}

PRIORS_DIR = Path("priors")

CONFLICT = "prior-data conflict"

PRIOR_DOMINATES = "prior dominates (weak likelihood)"


def published_gradient(outcome: str, year: int | None, level: str) -> float:
    """The published typical-LA gradient score (per 10 points) for ``outcome`` in ``year`` at LA
    level ``level``, or NaN when the table has none (or the year is unknown)."""
    v = published.value(outcome=outcome, estimand="gradient_score", la_level=level, scale=GRADIENT_SCALE,
                        year=year)
    return np.nan if v is None else v


data_year = published.data_year  # the census year of a table (one lookup for every page)


def published_note(outcome: str, year: int | None) -> str:
    """A sentence on which published figures the pages show for ``outcome`` and ``year``."""
    return published.note(outcome=outcome, year=year, estimands=("gradient_score", "la_rate_range"))


def _pct(share: float) -> str:
    if share == 0:
        return "0%"
    if share < 0.001:
        return "<0.1%"
    return f"{100 * share:.2f}%" if share < 0.1 else f"{100 * share:.1f}%"


def _big(v: float) -> str:
    """A rate for a table: thousands separators, or scientific notation when absurdly large."""
    if not np.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:,.0f}" if abs(v) < 1e6 else f"{v:.1e}"

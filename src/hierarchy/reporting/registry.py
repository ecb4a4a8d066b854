"""One registry of report outputs: every table and figure a report may publish, and what it rests on.

The report writer (:func:`hierarchy.reporting.report.write_report`) and the output-checking folder
(:func:`hierarchy.reporting.checking.write_checking_folder`) both read this registry, through
:func:`registered`: an output that is not registered here reaches neither (it is refused), so
nothing reaches a page that the checkers' folder lacks. Each entry says

* ``basis``: a model estimate (posterior quantities), observed counts (disclosure-controlled), both
  (posterior predictive beside observed counts), the sampler's draws, or public data only (published
  statistics and public geography: the DfE rate and deprivation maps);
* ``rests_on``: which rows and counts are behind each of its numbers (a key of :func:`rests_on_text`);
* ``observed``: the observed table whose published (suppressed) values it shows, if any.

Adding a report section is one entry here plus the code that computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hierarchy.errors import HierarchyError

MODEL = "model estimate"
OBSERVED = "observed counts"
BOTH = "model estimate and observed counts"
DRAWS = "sampler draws"
PUBLIC = "public data"
BASES = (MODEL, OBSERVED, BOTH, DRAWS, PUBLIC)


@dataclass(frozen=True)
class Output:
    """A registered report output.

    ``name``: the table's CSV stem or the figure's PNG stem; ``kind``: ``"table"`` or ``"figure"``;
    ``basis``: one of :data:`BASES`; ``rests_on``: a key of :data:`RESTS_ON`; ``observed``: the
    observed table (a registered table) whose published values it shows.
    """

    name: str
    kind: str
    basis: str
    rests_on: str
    observed: str | None = None

    @property
    def uid(self) -> str:
        """The output's name in the checking folder (figures: ``figure_NAME``)."""
        return self.name if self.kind == "table" else f"figure_{self.name}"

    @property
    def file(self) -> str:
        """The file the report writes (tables beside the page, figures under ``figures/``)."""
        return f"{self.name}.csv" if self.kind == "table" else f"{self.name}.png"


RESTS_ON = {
    "all": "Every quantity is a function of all parameters, informed by all {n_hoods} neighbourhoods in "
           "{n_la} LAs.",
    "per_la": "One row per LA: each LA's gradient rests on its own neighbourhoods (fewest {fewest}, median "
              "{median}) and, through partial pooling, on all {n_hoods}.",
    "per_subgroup": "Each row is a typical LA's gradient for a stage, stratum or moderator level: all "
                    "{n_hoods} neighbourhoods in {n_la} LAs are behind it.",
    "per_year": "Each row is a typical LA's gradient in one year (the rows of that year, and through the "
                "shared terms all {n_hoods} neighbourhoods in {n_la} LAs).",
    "cells": "Observed counts by cell, each cell the sum over the neighbourhoods in it; checked cell by cell "
             "(threshold, zeros, dominance over the neighbourhoods in the cell), suppressed, rounded, and "
             "protected against differencing from the published margins.",
    "bins": "Numbers of fitted rows per count bin (each row counts once), checked as a frequency table and "
            "protected against differencing from the public number of rows.",
    "draws": "The sampler's draws of the hyperparameters only (rank plots): no observed quantity.",
    "public": "Public data only: published statistics (DfE children's social care statistics by LA, IoD2019 "
              "income deprivation) drawn on public boundaries (ONS); nothing from this study's counts. The "
              "checker's data is a summary by LA.",
}
"""What each kind of output rests on, as the sentence the checker reads (formatted with the fit's sizes)."""

TABLES = (
    Output("summary", "table", MODEL, "all"),
    Output("estimands", "table", MODEL, "all"),
    Output("la_gradients", "table", MODEL, "per_la"),
    Output("inverse_intervention", "table", MODEL, "all"),
    Output("rate_curves", "table", MODEL, "all"),
    Output("deciles", "table", BOTH, "cells", observed="deciles"),
    Output("count_distribution", "table", BOTH, "bins", observed="count_distribution"),
    Output("la_deciles", "table", OBSERVED, "cells", observed="la_deciles"),
    Output("subgroup_gradients", "table", MODEL, "per_subgroup"),
    Output("escalation", "table", MODEL, "per_subgroup"),
    Output("moderator_contrasts", "table", MODEL, "per_subgroup"),
    Output("year_gradients", "table", MODEL, "per_year"),
    Output("year_trend", "table", MODEL, "per_year"),
    Output("heterogeneity", "table", MODEL, "all"),
)
FIGURES = (
    Output("gradient_curve", "figure", MODEL, "per_la"),
    Output("la_gradients", "figure", MODEL, "per_la"),
    Output("deciles", "figure", BOTH, "cells", observed="deciles"),
    Output("inverse_intervention", "figure", MODEL, "all"),
    Output("subgroups", "figure", MODEL, "per_subgroup"),
    Output("year_gradients", "figure", MODEL, "per_year"),
    Output("rate_curves", "figure", MODEL, "all"),
    Output("la_deciles", "figure", OBSERVED, "cells", observed="la_deciles"),
    Output("count_distribution", "figure", BOTH, "bins", observed="count_distribution"),
    Output("rank", "figure", DRAWS, "draws"),
)
MAPS = (
    Output("map_la_gradients", "figure", MODEL, "per_la"),
    Output("map_dfe_rate", "figure", PUBLIC, "public"),
    Output("map_deprivation", "figure", PUBLIC, "public"),
)
"""The maps a page may show (:mod:`hierarchy.reporting.maps`): estimands and public data only. Maps derived
from neighbourhood counts are never registered: they go only to the report's ``inside_only`` folder."""
FIGURES = FIGURES + MAPS
REGISTRY = {(o.kind, o.name): o for o in TABLES + FIGURES}
"""Every registered output by (kind, name)."""


def entry(name: str, kind: str) -> Output:
    """The registered output ``name`` of ``kind`` (``"table"`` or ``"figure"``).

    Raises
    ------
    HierarchyError
        When it is not registered: it may not be published.
    """
    try:
        return REGISTRY[kind, name]
    except KeyError:
        raise HierarchyError(f"report {kind} {name!r} is not in the registry of report outputs "
                             "(hierarchy.reporting.registry); register it with what it rests on before a "
                             "report may publish it") from None


def registered(tables: Iterable[str], figures: Iterable[str]) -> list[Output]:
    """The registry entries of a report's tables and figures, in the order given.

    Raises
    ------
    HierarchyError
        When any of them is not registered.
    """
    return [entry(n, "table") for n in tables] + [entry(n, "figure") for n in figures]


def rests_on_text(output: Output, sizes: Mapping[str, Any]) -> str:
    """The sentence saying what ``output`` rests on, filled with the fit's ``sizes``.

    ``sizes``: ``n_hoods``, ``n_la``, ``fewest`` and ``median`` (neighbourhoods per LA).
    """
    text = RESTS_ON[output.rests_on].format(**sizes)
    if output.basis == BOTH:
        text = (f"Posterior predictive quantities beside the observed values of table {output.observed!r} as "
                f"published (after the checks, suppression and rounding; suppressed cells absent). {text}")
    return f"Basis: {output.basis}. {text}"

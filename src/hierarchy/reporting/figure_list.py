"""The figures of a report, in reading order, each with the one-line caption saying what to read.

Every figure is a registered output (:mod:`hierarchy.reporting.registry`) drawn from the report's
tables after the one suppression (:mod:`hierarchy.reporting.suppression`), so the observed values
it shows are those published.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hierarchy.reporting import figures, maps
from hierarchy.reporting.findings import published_for
from hierarchy.reporting.tables import at_mean, hyperparameters
from hierarchy.results import estimands
from hierarchy.results.fit import as_fit
from hierarchy.results.fitfile import provenance


def report_figures(idata, tables: dict[str, pd.DataFrame], *, year: int | None = None
                   ) -> dict[str, tuple[str, Any, Any]]:
    """Figures of the report, in reading order: ``{name: (caption, Figure, plotted data)}``.

    Each caption is one line saying what to read from the figure. The findings figures come
    first (gradient against LA deprivation, LA gradients, deciles, inverse-intervention
    contrast), then subgroups and the checks. Published gradient scores are drawn only where
    they describe the fit's estimand in the data's census ``year`` (:func:`published_for`).
    """
    spec = as_fit(idata).spec
    prov = provenance(idata)
    head = tables["estimands"]
    typical = head[at_mean(head)]["mean"]
    prob = float(head["prob"].iloc[0])
    out: dict[str, tuple[str, Any, Any]] = {}
    curve = estimands.gradient_curve(idata)
    if curve is not None:
        pub = published_for(prov["model_spec"]["outcome"], year=year, stratified=bool(spec.strata),
                            la_levels=head.loc[head["estimand"] == "gradient_score", "la_level"])
        curve_table = estimands.summarise(curve, prob=prob)
        beyond = (" Dashed: beyond the fitted LAs' deprivation range (extrapolated)."
                  if curve_table.get("extrapolated", pd.Series(False)).any() else "")
        points = (f"; diamonds: {pub.label}" if pub.gradients else "")
        out["gradient_curve"] = (
            "Read the slope: how the neighbourhood gradient changes with LA deprivation (line: typical LA, "
            f"band: {prob:.0%} interval; dots: each LA{points}; log scale)." + beyond
            + ("" if pub.gradients else f" {pub.note}"),
            *figures.plot_gradient_curve(curve_table, tables.get("la_gradients"),
                                         x_mean=prov["design"]["X_mean"], published=pub.gradients,
                                         published_label=pub.label))
    if "la_gradients" in tables:
        out["la_gradients"] = (f"Read the spread: each LA's gradient score with its {prob:.0%} interval, sorted, "
                               "coloured by LA deprivation (log scale); dashed: typical LA at mean deprivation.",
                               *figures.plot_la_gradients(tables["la_gradients"],
                                                          typical=float(typical.iloc[0])))
    if "deciles" in tables:  # absent when the fit's exposure is a count and no --data was given
        out["deciles"] = ("Read the fit: observed rates (diamonds, small cells suppressed) should sit within "
                          "the predicted intervals in every national deprivation decile.",
                          *figures.plot_deciles(tables["deciles"], outcome=spec.outcome))
    out["inverse_intervention"] = ("Read above 1: for the same neighbourhood deprivation, how much higher the "
                                   "rate is in an LA 10 points less deprived than in one 10 points more (log "
                                   "scale; dashed: neighbourhood deprivation not seen in LAs of both levels).",
                                   *figures.plot_contrast(tables["inverse_intervention"]))
    if "subgroup_gradients" in tables:
        out["subgroups"] = ("Read across rows: gradient scores of a typical LA at mean LA deprivation by "
                            "stage and stratum; crosses mark the truth where known.",
                            *figures.plot_subgroups(tables["subgroup_gradients"]))
    if "year_gradients" in tables:
        out["year_gradients"] = ("Read the slope across years: the gradient score of a typical LA in each year, "
                                 "with intervals, at three levels of LA deprivation (log scale).",
                                 *figures.plot_year_gradients(tables["year_gradients"]))
    out["rate_curves"] = ("Read the gap between lines: predicted rates by neighbourhood deprivation in "
                          "typical LAs at mean LA deprivation and 10 points less / more (dashed: beyond the "
                          "neighbourhood deprivation seen in LAs of that level).",
                          *figures.plot_rate_curves(tables["rate_curves"], outcome=spec.outcome))
    if "la_deciles" in tables:
        out["la_deciles"] = ("Read the fan: observed rates by decile in each LA (suppressed cells left out).",
                             *figures.plot_la_deciles(tables["la_deciles"], outcome=spec.outcome))
    if "count_distribution" in tables:
        out["count_distribution"] = ("Check: observed counts per neighbourhood (bars, bins below the threshold "
                                     "not shown) against the posterior predictive distribution.",
                                     *figures.plot_count_ppc(tables["count_distribution"]))
    out["rank"] = ("Check: rank plots of the hyperparameters; flat histograms mean the chains agree.",
                   *figures.plot_rank(hyperparameters(idata)))
    return out


MAP_CAPTIONS = {
    "map_la_gradients": "Read the colours: each LA's gradient score (posterior mean; purple: rates rise with "
                        "deprivation, darker is steeper; orange: they fall; log scale centred on 1); London "
                        "enlarged where present.",
    "map_dfe_rate": "Context: DfE's published rate per 10,000 children in each LA (darker: higher); grey: "
                    "suppressed or not published.",
    "map_deprivation": "Context: income deprivation of each neighbourhood (IoD2019, darker: more deprived), "
                       "LA borders in white.",
}
"""Captions of the maps a page may show (:data:`hierarchy.reporting.registry.MAPS`)."""


def report_map_figures(idata, tables: dict[str, pd.DataFrame], *, geography: Any = None,
                       year: int | None = None, inside: bool = False, n_draws: int = 200) -> maps.MapSet:
    """The report's maps (:func:`hierarchy.reporting.maps.report_maps`) with their captions:
    ``public`` ``{name: (caption, PNG bytes, plotted data)}``; ``inside`` and ``notes`` as drawn."""
    drawn = maps.report_maps(idata, tables, geography=geography, year=year, inside=inside, n_draws=n_draws)
    public = {name: (MAP_CAPTIONS[name], png, plotted) for name, (png, plotted) in drawn.public.items()}
    return maps.MapSet(public=public, inside=drawn.inside, notes=drawn.notes)

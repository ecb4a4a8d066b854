"""hierarchy: Bayesian multilevel models of the social gradient in children's social care.

Data flow one way, and the subpackages read in that order; each imports only from those above it::

    data        tables, validation, reference geography, simulation, child-level extracts
    language    formulas, model specs, prior sets, design arrays
    likelihood  the one linear predictor, the NumPyro density and its PyMC twin
    inference   samplers, diagnostics, SBC, batches of fits on Dask
    results     fit files, estimands, predictions, comparisons
    reporting   pages and figures (the only layer that renders pages)

Top-level modules serve every layer (errors, config, paths, shipped, published, disclosure) or drive
them (cli, workflow, check, notebook).
"""

__version__ = "0.1.0"

STAGES: tuple[str, ...] = ("referral", "assessment", "s47", "cp_plan", "looked_after")
"""Canonical count columns, one per threshold of intervention, in escalation order."""

STRATA: tuple[str, ...] = ("age_band", "sex", "ethnicity", "need")
"""Canonical stratum columns."""

AGE_BANDS: tuple[str, ...] = ("0-4", "5-9", "10-15", "16-17")

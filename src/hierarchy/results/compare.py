"""Comparing prior specifications and models: one module per command, re-exported here.

* ``hierarchy compare-priors`` (:mod:`hierarchy.results.compare_priors`): fit one model under several
  prior sets and compare prior predictive checks in rates per 10,000 children, the headline
  estimands under each set and power-scaling prior sensitivity; fits are reused when their
  model, prior set and data hashes match.
* ``hierarchy compare-models`` (:mod:`hierarchy.results.compare_models`): compare saved fits of the same
  data and outcome by PSIS-LOO (ELPD differences, stacking weights, Pareto-k diagnostics).

Both write ``index.html`` (self-contained), ``index.md`` and CSV tables
(:func:`hierarchy.reporting.report.write_pages`). The module docstrings hold worked national examples.
"""

from hierarchy.results.compare_models import (
    PARETO_K_THRESHOLD,
    ModelComparison,
    compare_models,
    loo,
    relative_eff,
    write_model_comparison,
)
from hierarchy.results.compare_priors import (
    CONFLICT,
    ESTIMAND_LABELS,
    IMPOSSIBLE_RATE,
    NEGLIGIBLE_IMPOSSIBLE,
    PRIOR_DOMINATES,
    PRIORS_DIR,
    PUBLISHED,
    SENSITIVITY_THRESHOLD,
    VISIBLE_IMPOSSIBLE,
    PriorComparison,
    PriorPredictive,
    compare_priors,
    find_fit,
    plot_forest,
    plot_prior_predictive,
    power_scaling,
    prior_draws,
    prior_predictive,
    read_provenance,
    resolve_prior_path,
    sensitivity_findings,
)

__all__ = ["CONFLICT", "ESTIMAND_LABELS", "IMPOSSIBLE_RATE", "NEGLIGIBLE_IMPOSSIBLE",
           "PARETO_K_THRESHOLD", "PRIORS_DIR", "PRIOR_DOMINATES", "PUBLISHED",
           "SENSITIVITY_THRESHOLD", "VISIBLE_IMPOSSIBLE", "ModelComparison", "PriorComparison",
           "PriorPredictive", "compare_models", "compare_priors", "find_fit", "loo",
           "plot_forest", "plot_prior_predictive", "power_scaling", "prior_draws",
           "prior_predictive", "read_provenance", "relative_eff", "resolve_prior_path",
           "sensitivity_findings", "write_model_comparison"]

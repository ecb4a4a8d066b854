"""Comparing prior specifications and models: one module per command, re-exported here.

* ``hierarchy compare-priors`` (:mod:`hierarchy.results.compare_priors`): fit one model under several
  prior sets and compare prior predictive checks in rates per 10,000 children, the headline
  estimands under each set and power-scaling prior sensitivity; fits are reused when their
  model, prior set and data hashes match.
* ``hierarchy compare-models`` (:mod:`hierarchy.results.compare_models`): compare saved fits of the same
  data and outcome by cross-validation (ELPD differences, stacking weights, Pareto-k diagnostics):
  PSIS-LOO over neighbourhood rows, or leave-one-LA-out and K-fold by LA
  (:mod:`hierarchy.results.cv`).

Both write ``index.html`` (self-contained), ``index.md`` and CSV tables
(:func:`hierarchy.reporting.report.write_pages`). The module docstrings hold worked national examples.
"""

from hierarchy.results.compare_models import (
    CV_MODES,
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
from hierarchy.results.cv import pareto_k_threshold

__all__ = ["CONFLICT", "CV_MODES", "ESTIMAND_LABELS", "IMPOSSIBLE_RATE", "NEGLIGIBLE_IMPOSSIBLE",
           "PRIORS_DIR", "PRIOR_DOMINATES", "PUBLISHED",
           "SENSITIVITY_THRESHOLD", "VISIBLE_IMPOSSIBLE", "ModelComparison", "PriorComparison",
           "PriorPredictive", "compare_models", "compare_priors", "find_fit", "loo", "pareto_k_threshold",
           "plot_forest", "plot_prior_predictive", "power_scaling", "prior_draws",
           "prior_predictive", "read_provenance", "relative_eff", "resolve_prior_path",
           "sensitivity_findings", "write_model_comparison"]

"""Results: fit files, estimands, predictions and comparisons of priors and models."""

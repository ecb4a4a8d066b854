"""hierarchy: Bayesian multilevel models of the social gradient in children's social care.

Data flows one way, one module a stage::

    data / reference / simulate  ->  spec + priors  ->  model  ->  sampling  ->  fitfile
    ->  estimands  ->  report
"""

__version__ = "0.1.0"

STAGES: tuple[str, ...] = ("referral", "assessment", "s47", "cp_plan", "looked_after")
"""Canonical count columns, one per threshold of intervention, in escalation order."""

STRATA: tuple[str, ...] = ("age_band", "sex", "ethnicity", "need")
"""Canonical stratum columns."""

AGE_BANDS: tuple[str, ...] = ("0-4", "5-9", "10-15", "16-17")

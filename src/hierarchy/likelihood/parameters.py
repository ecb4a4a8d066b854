"""The one table of the model's parameters: every other list of parameter names is read from it.

Each row says, once, what a sampled or stored variable is: its prior group (the prior set's class
that gives its prior, or None), its role, whether it has one value per stage when stages are
stacked, whether the one linear predictor reads it, and what it means. The lists that layers
used to keep by hand (reported hyperparameters, per-stage variables, latent auxiliaries, per-row
effects, the predictor's inputs, the log-prior map) are views of this table (:func:`names`).

Roles:

* ``hyper``: population-level parameters, reported (summary, report, SBC, compare-priors) in table order;
* ``effect``: group effects that are stored and reported as estimands (``la_coef``);
* ``latent``: auxiliary draws of a parameterisation, not reported (``la_raw``, ``msoa_raw`` ...);
* ``per_row``: one value per neighbourhood row (or node of the neighbourhood graph: the BYM2 term's
  ``spatial_phi``, ``spatial_theta``), used for the likelihood and never stored (``eps_raw``).

A term kind declared in a module of its own (:mod:`hierarchy.likelihood.spatial`) adds its rows here, and so
does each family (:mod:`hierarchy.likelihood.families`: ``dispersion``, ``obs_sd``, ``eps_raw``, ``zi``; a
parameter two families share, as ``dispersion``, is one row).
"""

from __future__ import annotations

from dataclasses import dataclass

from hierarchy.likelihood import families, spatial


@dataclass(frozen=True)
class Parameter:
    """One row of the parameter table."""

    name: str
    role: str  # hyper | effect | latent | per_row
    prior_group: str | None = None
    per_stage: bool = False
    predictor: bool = False  # read by the one linear predictor (hierarchy.likelihood.predictor)
    meaning: str = ""
    la_block: bool = False  # one row per LA, Gaussian given the hyperparameters: marginalised by the Laplace mode
    within_la_sd: bool = False  # SD of normal effects on the log rate below the LA (MSOA, row): within-LA variance


def _family_rows(*, hyper: bool) -> tuple[Parameter, ...]:
    """The families' rows (hyperparameters, or the others), each name once, in family order; two families
    may share a parameter only with the same row."""
    rows: dict[str, dict] = {}
    for f in families.all_families():
        for r in f.parameters:
            if (r["role"] == "hyper") == hyper and rows.setdefault(r["name"], r) != r:
                raise ValueError(f"family {f.name} declares parameter {r['name']} unlike an earlier family: "
                                 "share the row (import it from that family's module)")
    return tuple(Parameter(**r) for r in rows.values())


TABLE: tuple[Parameter, ...] = (
    Parameter("intercept", "hyper", "intercept", per_stage=True,
              meaning="log rate per child, typical LA at mean LA deprivation, w = 0"),
    Parameter("gradient", "hyper", "gradient", per_stage=True, meaning="log rate ratio per unit of w"),
    Parameter("la_deprivation", "hyper", "la_deprivation", per_stage=True, meaning="LA intercept per unit of z"),
    Parameter("cross_level", "hyper", "cross_level", per_stage=True, meaning="LA gradient per unit of z"),
    Parameter("la_cov_intercept", "hyper", "la_covariates", meaning="LA intercept per SD of an LA covariate"),
    Parameter("la_cov_gradient", "hyper", "la_covariates", meaning="LA gradient per SD of an LA covariate"),
    Parameter("stratum_intercept_offset", "hyper", "stratum_effects", predictor=True,
              meaning="log rate ratio of a stratum against the reference stratum"),
    Parameter("stratum_gradient_offset", "hyper", "stratum_effects", predictor=True,
              meaning="gradient of a stratum minus the reference stratum's"),
    Parameter("row_coef", "hyper", None, predictor=True,
              meaning="coefficient of a neighbourhood-level term (its prior: the term's class)"),
    Parameter("la_sd", "hyper", "la_sd", meaning="SD of the LA effects"),
    Parameter("la_corr", "hyper", "la_corr", meaning="correlation of the LA effects (LKJ)"),
    Parameter("la_loading", "hyper", "la_loading", meaning="later stage's LA effects per first-stage effect"),
    Parameter("la_stage_sd", "hyper", "la_stage_sd", meaning="SD of a later stage's own LA effects"),
    Parameter("msoa_sd", "hyper", "msoa_sd", predictor=True, within_la_sd=True, meaning="SD of the MSOA effects"),
    *_family_rows(hyper=True),
    Parameter("la_coef", "effect", predictor=True, meaning="each LA's intercept and gradient", la_block=True),
    Parameter("la_raw", "latent"),
    Parameter("la_centred", "latent"),
    Parameter("la_level", "latent", la_block=True),
    Parameter("la_coef_flat", "latent", la_block=True),
    Parameter("la_anchor", "latent", la_block=True),
    Parameter("la_stage_raw", "latent"),
    Parameter("la_stage_centred", "latent", la_block=True),
    Parameter("msoa_raw", "latent", predictor=True),
    *_family_rows(hyper=False),
    *(Parameter(**row) for row in spatial.PARAMETERS),
)
"""Every variable of the neighbourhood model (group terms add ``{g}_raw`` and ``{g}_sd``)."""

BY_NAME = {p.name: p for p in TABLE}


def names(*, role: str | tuple[str, ...] | None = None, per_stage: bool | None = None,
          predictor: bool | None = None, la_block: bool | None = None,
          within_la_sd: bool | None = None) -> tuple[str, ...]:
    """Names of the table's rows that match every given filter, in table order.

    Examples
    --------
    >>> names(role="per_row")
    ('eps_raw', 'spatial_phi', 'spatial_phi_free', 'spatial_theta')
    >>> names(within_la_sd=True)  # the within-LA variance components (VPCs, predictive draws)
    ('msoa_sd', 'obs_sd')
    """
    roles = (role,) if isinstance(role, str) else role
    return tuple(p.name for p in TABLE
                 if (roles is None or p.role in roles) and (per_stage is None or p.per_stage == per_stage)
                 and (predictor is None or p.predictor == predictor)
                 and (la_block is None or p.la_block == la_block)
                 and (within_la_sd is None or p.within_la_sd == within_la_sd))


def prior_groups() -> dict[str, str]:
    """Hyperparameter -> its prior group (the log-prior map of a fit file; LKJ and per-term priors apart)."""
    return {p.name: p.prior_group for p in TABLE
            if p.role == "hyper" and p.prior_group is not None and p.name != "la_corr"}

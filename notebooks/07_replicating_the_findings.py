# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 Replicating the published findings with a known truth
#
# The study reported more than the headline gradient: differences by ethnic group, by the factor
# identified at assessment and by child protection plan category; steeper gradients in rural and
# sparse neighbourhoods; LA expenditure, workforce stability and income inequality as moderators
# (Webb et al. 2020); and, for the outcomes of provision, more re-referrals and repeat plans in
# affluent LAs, most of all in their deprived neighbourhoods. Can the workbench recover each of them?
#
# `hierarchy.data.findings.simulate_findings` draws one table per analysis, calibrated so that each true
# estimand equals the published figure (where only a direction was published, the value is chosen
# and labelled "simulated") and each LA's expected total equals DfE's. `hierarchy.reporting.replicate` fits one
# model file per analysis (written as lme4-style formulas) and tabulates, for every finding, the
# truth, the posterior mean, the 90% interval, whether it covers the truth and the posterior
# probability of the published direction. The command line does the same:
# `hierarchy replicate [--fast] --out DIR`.
#
# Run size: `HIERARCHY_FAST=1`: a generated geography of 24 LAs, 2 chains x (250 + 250), and three of
# the twelve analyses (headline, ethnicity, LA conditions); otherwise the national geography and all
# twelve (a long run on 2 cores: the single-year-of-age x sex table has ~1.2 million rows).

# %%
from hierarchy import notebook
from hierarchy.data import findings, reference
from hierarchy.reporting import replicate

S = notebook.setup()
FAST = S.fast
geo = reference.synthetic_geography(24, seed=0, lsoa_per_la=25) if FAST else reference.get_geography()
tables, truth = findings.simulate_findings(geo, seed=0)
print(f"geography: {geo.source}")
for name, t in tables.items():
    print(f"table {name}: {len(t):,} rows, columns {', '.join(t.columns[5:])}")

# %% [markdown]
# ## The analyses, as model files
#
# Each analysis is a formula: strata as fixed offsets (`C(ethnicity) + w:C(ethnicity)`),
# neighbourhood-level moderators (`rural + w:rural`), LA covariates in both LA means
# (`w * (z + la_inequality + ...)`) and a count as the exposure for re-referrals (`offset(log(referral))`).

# %%
for a in replicate.ANALYSES:
    print(f"{a.name:15s} {replicate.analysis_spec(a).formula_text}")

# %% [markdown]
# ## What is true in the simulation
#
# LA income inequality is the 20:20 ratio of IoD2019 income rates within each LA (the most deprived fifth
# of its neighbourhoods over the least deprived fifth). Webb et al.'s contrast is a ratio of slopes, so it
# is the same per SD and per 10 points; the simulator solves the inequality moderation so that it is 5.

# %%
sc = truth["scenarios"]
print("ethnic-group gradients:", {k: round(v, 2) for k, v in sc["ethnicity"]["gradient"].items()})
print("assessment factors:", {k: round(v, 2) for k, v in sc["assessment"]["gradient"].items()})
print("plan categories:", {k: round(v, 2) for k, v in sc["plan_category"]["gradient"].items()})
lc = sc["la_conditions"]
print(f"Webb contrast: {lc['webb_ratio']:.2f} (gradients {lc['gradient_low_dep_high_ineq']:.2f} / "
      f"{lc['gradient_high_dep_low_ineq']:.2f}); inequality: {lc['inequality_definition']}")

# %% [markdown]
# ## Fit and tabulate

# %%
ANALYSES = ("referral", "ethnicity", "la_conditions") if FAST else None
table = replicate.replicate(S.out / "replication", geo=geo, fast=FAST, seed=0, analyses=ANALYSES, progress=print)
show = table[["finding", "estimand", "published", "truth", "mean", "lower", "upper", "covered", "p_direction"]]
show.round(3)

# %%
fig, _ = replicate.plot_forest(table)
notebook.show(fig)

# %% [markdown]
# Checks: every fitted finding has its rows, most truths are inside their 90% intervals, and the
# published order of the ethnic groups is recovered.

# %%
covered = int(table["covered"].sum())
print(f"replication: {len(table)} rows, truth inside the 90% interval in {covered}")
assert set(table["finding"]) >= {"headline", "ethnicity", "inequality"}
assert covered >= 0.75 * len(table)
p = table.loc[table["estimand"] == "gradient ratio White / Black", "p_direction"].item()
print(f"P(White steeper than Black) = {p:.2f}")
assert p > 0.9
print("notebook 07 checks passed")

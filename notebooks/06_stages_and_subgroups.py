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
# # 06 Stages and subgroups: gradient escalation and age bands
#
# The published gradients rise at every threshold of intervention (referral, s47 enquiry, child
# protection plan, looked after) and are steeper for younger children. `models/stages_age_nb.toml`
# fits all four stages in one negative binomial model over neighbourhood x age-band rows:
#
# - each stage has its own intercept, gradient, LA-deprivation terms and dispersion;
# - each LA has an intercept and a gradient per stage; the later stages' LA effects follow the
#   referral ones (`la_loading`) plus small stage-specific deviations (`la_stage_sd`): an LA that
#   intervenes more at referral tends to at every stage (`la.stage_structure = "anchored"`);
# - age bands shift the intercept and the gradient against the reference band 0-4.
#
# The estimand is the gradient score (rate multiplier per 10 points of neighbourhood income
# deprivation) of a typical LA at mean LA deprivation, for every stage x age band, and the
# *escalation*: each stage's score divided by the one below it.
#
# Run size: `HIERARCHY_FAST=1`: 20 generated LAs, 2 chains x (200 + 200); otherwise the national
# geography with four age bands (about 525,000 stacked rows: expect a long fit on 2 cores).

# %%
from hierarchy import notebook
from hierarchy.data import reference, simulate
from hierarchy.data import table as data
from hierarchy.reporting import figures, report
from hierarchy.results import estimands

S = notebook.setup()  # run size (HIERARCHY_FAST), the checkout as working directory, output folders
FAST, SIZE, SETTINGS, OUT_BASE = S.fast, S.size, S.settings, S.out
MODEL, PRIORS = "models/stages_age_nb.toml", "priors/weakly_informative.toml"

geo = reference.synthetic_geography(20, seed=3, lsoa_per_la=25) if FAST else reference.get_geography()
table, truth = simulate.simulate(geo, year=2019, seed=0, strata=("age",))
DATA = OUT_BASE / "data" / f"stages_age_2019_{SIZE}.parquet"
simulate.write(table, truth, DATA)
DATA_HASH = data.data_hash(data.load(DATA))
print(f"geography: {geo.source}; {len(table):,} neighbourhood x age-band rows, 4 stages stacked")
FIT = notebook.fit_or_reuse(S, MODEL, PRIORS, DATA, DATA_HASH)

# %% [markdown]
# ## Gradient scores by stage and age band
#
# `report.subgroup_tables` computes them from the posterior (`estimands.subgroup_gradients`) and
# puts the simulator's truth beside each. The figure is the one the report shows.

# %%
tables = report.subgroup_tables(FIT, prob=0.9, truth=truth)
sub = tables["subgroup_gradients"]
print(sub[["stage", "stratum", "mean", "lower", "upper", "truth", "covered"]].round(3).to_string(index=False))
fig, _ = figures.plot_subgroups(sub)
notebook.show(fig)

# %% [markdown]
# ## Escalation
#
# Each ratio compares a stage's gradient with the stage below, for the reference age band;
# `p_steeper` is the posterior probability that the higher threshold has the steeper gradient.

# %%
esc = tables["escalation"]
print(esc[["step", "mean", "lower", "upper", "p_steeper"]].round(3).to_string(index=False))
true_scores = {s: truth["stages"][s]["gradient_at_mean"] for s in truth["stages"]}
print("true gradient at mean LA deprivation:", {k: round(v, 2) for k, v in true_scores.items()})

# %% [markdown]
# ## Checks

# %%
covered = int(sub["covered"].sum())
print(f"subgroups: {len(sub)} stage x age cells, truth inside the 90% interval in {covered}")
assert len(sub) == 16 and list(sub["stratum"][:4]) == ["0-4", "5-9", "10-15", "16-17"]
assert covered >= 12, sub
for stage, part in sub.groupby("stage"):
    assert part["mean"].is_monotonic_decreasing, f"{stage}: younger children should have steeper gradients"
order = estimands.subgroup_gradients(FIT).isel(stratum=0).mean(("chain", "draw")).to_series()
print("posterior mean gradient by stage (0-4):", order.round(3).to_dict())
assert len(esc) == 3 and order["looked_after"] > order["referral"]  # truth: 1.95 vs 1.62
if not FAST:  # 20 LAs cannot order stages 0.05 apart; national data can
    assert list(order.sort_values().index) == sorted(true_scores, key=true_scores.get)
    assert (esc["mean"] > 1).all()
print("notebook 06 checks passed")

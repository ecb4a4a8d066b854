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
# # 09 Intersectional strata (MAIHDA): for whom is the gradient steepest?
#
# Multilevel analysis of individual heterogeneity and discriminatory accuracy (MAIHDA; Evans, Leckie,
# Subramanian, Bell & Merlo 2024) treats each combination of social positions as a stratum: here
# ethnicity x sex x age band, 5 x 2 x 4 = 40 strata. The strata are a partially pooled group with
# their own intercept *and* gradient, `(1 + w | ethnicity:sex:age_band)`, fitted twice:
#
# - `models/maihda_null_nb.toml`: the strata alone. Their SD holds all the between-strata variation.
# - `models/maihda_main_nb.toml`: plus the additive main effects of ethnicity, sex and age band on the
#   rate and the gradient. A stratum's effect is now its *interaction*: how far it is from what its
#   ethnicity, sex and age band predict added up.
#
# From the pair: each stratum's rate ratio and gradient score, the stratum VPC (share of the variance
# between strata), the PCV (share of the between-strata variance the main effects explain; the rest is
# intersectional), and the strata that interact beyond their main effects, with P(direction).
#
# The data are simulated with a known interaction: two planted strata (`simulate.MAIHDA_INTERACTION`)
# and a small one drawn for every stratum. **The ethnic groups are simulated** too
# (`hierarchy.data.findings.ethnic_populations`): to use real populations, give the children of each
# neighbourhood x ethnic group from Census 2021 (TS021 ethnic group at LSOA, or an age x ethnicity table
# such as RM032 for children) as a table with columns `neighbourhood, ethnicity, age_band, sex,
# exposure` and aggregate the extract with it (`hierarchy aggregate --strata ethnicity,sex,age_band
# --population FILE`); then add the main-effect columns with `simulate.main_effect_indicators`.
#
# Run size: `HIERARCHY_FAST=1`: 30 generated LAs x 20 neighbourhoods, 2 chains x (200 + 200); otherwise
# the national geography (about 1.3 million neighbourhood x stratum rows: a long fit on 2 cores).

# %%
from matplotlib.figure import Figure

from hierarchy import notebook
from hierarchy.data import reference, simulate
from hierarchy.data import table as data
from hierarchy.results import heterogeneity, maihda

S = notebook.setup()
FAST, SIZE = S.fast, S.size
PRIORS = "priors/weakly_informative.toml"
geo = reference.synthetic_geography(30, seed=0, lsoa_per_la=20) if FAST else reference.get_geography()
table, truth = simulate.simulate(geo, year=2019, seed=0, strata=("ethnicity", "age", "sex"),
                                 interaction=simulate.MAIHDA_INTERACTION,
                                 interaction_sd=simulate.MAIHDA_INTERACTION_SD)
table = simulate.main_effect_indicators(table)
DATA = S.out / "data" / f"maihda_2019_{SIZE}.parquet"
simulate.write(table, truth, DATA)
DATA_HASH = data.data_hash(data.load(DATA))
print(f"geography: {geo.source}; {len(table):,} neighbourhood x stratum rows, "
      f"{len(set(simulate.stratum_labels(table)))} strata")
print("planted:", {k: v for k, v in simulate.MAIHDA_INTERACTION.items()}, "(rate ratio, gradient multiplier)")

# %% [markdown]
# ## The two fits
#
# The main-effects model writes `C(ethnicity) + C(sex) + C(age_band)` (and their gradients) as 0/1
# columns against White, female, 0-4: the formula language takes one categorical stratum term.

# %%
FITS = {m: notebook.fit_or_reuse(S, f"models/maihda_{m}_nb.toml", PRIORS, DATA, DATA_HASH)
        for m in ("null", "main")}

# %% [markdown]
# ## Stratum VPC and PCV
#
# The log-scale VPC is the share of the modelled variance of log rates (strata, LAs) between strata;
# the count-scale VPC is that share of a neighbourhood-stratum row's count variance, which the NB and
# Poisson noise of small rows keep low. The PCV is computed from paired draws of the two fits.

# %%
rows = maihda.maihda_rows(FITS["null"], FITS["main"], prob=0.9)
for r in rows.itertuples():
    print(f"{r.estimand}[{r.stage}{'/' + r.reference if r.reference else ''}]: mean={r.mean:.3f} "
          f"lower={r.lower:.3f} upper={r.upper:.3f}")
for key, text in heterogeneity.MAIHDA_DEFINITIONS.items():
    print(f"- {key}: {text}")

# %% [markdown]
# ## Each stratum's gradient
#
# Gradient score: the rate multiplier per 10 points of neighbourhood income deprivation in a typical
# LA at mean LA deprivation, main effects plus the stratum's own effect; 90% intervals.

# %%
scores = maihda.stratum_scores(FITS["main"])
iv = scores.quantile([0.05, 0.5, 0.95], dim=("chain", "draw")).sel(reference="gradient score")
order = iv.sel(quantile=0.5).argsort().values
labels = [str(s) for s in iv["stratum"].values[order]]
fig = Figure(figsize=(6, 9))
ax = fig.subplots()
ax.errorbar(iv.sel(quantile=0.5).values[order], range(len(order)), fmt="o", ms=3,
            xerr=[(iv.sel(quantile=0.5) - iv.sel(quantile=0.05)).values[order],
                  (iv.sel(quantile=0.95) - iv.sel(quantile=0.5)).values[order]])
ax.set_yticks(range(len(order)), labels, fontsize=6)
ax.set_xlabel("gradient score per 10 points (90% interval)")
ax.set_title("Gradient by ethnicity x sex x age band")
fig.tight_layout()
notebook.show(fig)
print(f"steepest: {labels[-1]} {float(iv.sel(quantile=0.5).max()):.2f}; "
      f"shallowest: {labels[0]} {float(iv.sel(quantile=0.5).min()):.2f}")

# %% [markdown]
# ## Which strata interact beyond their main effects?
#
# A stratum's effect in the main-effects fit, flagged when P(direction) > 0.95. The truth is the part
# of the simulated offsets that additive main effects cannot carry (`beyond_main_effects` in the truth
# file).

# %%
tab = maihda.interaction_table(FITS["main"], prob=0.9)
beyond = truth["interaction"]["beyond_main_effects"]
tab["truth"] = [beyond[s]["log_rate" if c == "intercept" else "log_gradient"]
                for s, c in zip(tab["stratum"], tab["coef"], strict=True)]
tab["covers"] = (tab["lower"] <= tab["truth"]) & (tab["truth"] <= tab["upper"])
print(tab.head(10)[["stratum", "coef", "mean", "lower", "upper", "truth", "p_direction", "flagged"]]
      .round(3).to_string(index=False))
planted = []
for lab, (ratio, grad) in simulate.MAIHDA_INTERACTION.items():
    for coef, value in (("intercept", ratio), ("gradient", grad)):
        if value != 1.0:
            r = tab[(tab["stratum"] == lab) & (tab["coef"] == coef)].iloc[0]
            planted.append(r)
            print(f"planted: {lab} {coef} truth={r.truth:.3f} mean={r['mean']:.3f} lower={r.lower:.3f} "
                  f"upper={r.upper:.3f} p_direction={r.p_direction:.3f} flagged={r.flagged}")
coverage = float(tab["covers"].mean())
print(f"coverage of the 90% intervals over {len(tab)} stratum effects: {coverage:.2f}")

# %%
pcv = rows[rows["estimand"] == "stratum_pcv"]
assert ((pcv["mean"] > 0) & (pcv["mean"] < 1)).all(), pcv
vpc = rows[rows["estimand"] == "stratum_vpc_log"].set_index("stage")["mean"]
assert vpc["main effects"] < vpc["null"], vpc
assert all(r.flagged for r in planted), planted
assert coverage >= 0.7, coverage
print("notebook 09 checks passed")

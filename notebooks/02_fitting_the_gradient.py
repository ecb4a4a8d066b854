# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 Fitting the social gradient
#
# This notebook simulates neighbourhood referral counts with a known truth, fits two models with
# NumPyro's NUTS sampler, and reads the convergence diagnostics: R-hat, effective sample size,
# divergences and E-BFMI. It ends with the choice that matters most for sampling these models on
# national data: **centred or non-centred** LA effects, what `parameterisation = "auto"` does, and
# why (DESIGN section 4).
#
# * `models/gradient_nb.toml`: the social gradient alone. LA intercepts and gradients vary around
#   national means; nothing explains why.
# * `models/inverse_intervention_nb_log.toml` (the default): the same plus LA deprivation in the mean
#   of the LA intercepts (between-LA effect) and of the LA gradients (the cross-level interaction
#   that carries the inverse intervention effect, notebook 03).
#
# Run size: `HIERARCHY_FAST=1` fits 30 generated LAs of ~40 neighbourhoods with 2 chains x (200
# warm-up + 200 draws): enough to show the machinery, too few draws to pass the diagnostics. Without
# it: national data (the real England geography when found), 4 chains x (1000 + 1000).

# %%
import dataclasses
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
from IPython.display import display

from hierarchy import notebook
from hierarchy.inference import diagnostics, sampling
from hierarchy.language.design import CENTRING_SE, build_design, centring, describe_centring, la_effect_se
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.reporting import figures, report
from hierarchy.results import estimands, fitfile

S = notebook.setup()  # run size (HIERARCHY_FAST), the checkout as working directory, output folders
FAST, SIZE, SETTINGS, ROOT, OUT_BASE, FITS = S.fast, S.size, S.settings, S.root, S.out, S.fits
show = notebook.show


print(f"run size: {SIZE}; sampler settings {SETTINGS}; fits in {FITS}")

# %% [markdown]
# ## Data
#
# `simulate.simulate` draws one count per neighbourhood from a negative binomial multilevel model
# whose typical-LA referral gradient passes exactly through the published scores (2.33, 1.62 and 1.39
# per 10 points at mean LA deprivation -10, 0 and +10 points) and whose LA totals reproduce the DfE
# 2019 referral counts. The truth is saved beside the data, so every estimate below has a target.

# %%
geo, table, truth, DATA, loaded, DATA_HASH = notebook.simulated_data(S)  # written, validated
rows_per_la = loaded.groupby("la").size()
print(f"geography: {geo.source}")
print(f"{len(loaded):,} neighbourhoods in {loaded['la'].nunique()} LAs (median {rows_per_la.median():.0f} per "
      f"LA); {loaded['referral'].sum():,} referrals; data hash {DATA_HASH}")

# %% [markdown]
# ## The model
#
# For neighbourhood *i* in LA *j*, with *E* children, income-deprivation rate *x* and LA deprivation
# *X* (child-weighted mean of *x* over the LA):
#
# ```
# y_i        ~ NegBin(mu_i, phi)                  variance mu + mu^2 / phi
# log mu_i   = log E_i + a_j + b_j * w_i          w_i = (x_i - X_j) / 0.1
# (a_j, b_j) ~ MVN( (intercept + la_deprivation * z_j,  gradient + cross_level * z_j),  Sigma )
# z_j        = log(X_j / mean X)                  Sigma = diag(la_sd) la_corr diag(la_sd)
# ```
#
# Scales: `a_j` is the log referral rate per child in LA *j*'s average neighbourhood (w = 0);
# `b_j` is the log rate ratio for a 10-point rise in neighbourhood deprivation **within** LA *j*, so
# `exp(b_j)` is that LA's gradient score. `gradient_nb` has `between_effect = false` and
# `cross_level = false`: no `z` terms, one national mean gradient.

# %%
MODELS = {"gradient_nb": "models/gradient_nb.toml",
          "inverse_intervention_nb_log": "models/inverse_intervention_nb_log.toml"}
PRIORS = "priors/weakly_informative.toml"
for path in MODELS.values():
    spec = load_spec(path)
    print(f"--- {path} (hash {spec.hash()}): {spec.description}")
    print(f"    family {spec.family}, outcome {spec.outcome}, centring {spec.deprivation.centring} per "
          f"{spec.deprivation.scale:g}, LA deprivation transform {spec.la_deprivation.transform}, "
          f"la = {spec.to_dict()['la']}")
pset = load_priors(PRIORS)
print(f"\nprior set '{pset.name}': {pset.description}")
display(pd.DataFrame({"prior": {g: str(p) for g, p in pset.priors.items()}}))

# %% [markdown]
# ## Fitting
#
# `workflow.fit_files` is what `hierarchy fit` runs: validate the data, build the design, sample,
# and save an ArviZ netCDF fit whose provenance records the model, priors, data hash, sampler
# settings, versions and diagnostics. A saved fit of exactly this data, model, prior set and
# settings is reused (`fitfile.load_fit` refuses a file made from anything else), so the later
# notebooks do not refit.


# %%
def fit_or_reuse(model: str, priors: str = PRIORS) -> Path:
    """Fit ``model`` under ``priors`` to DATA with SETTINGS, or reuse a saved fit of exactly that."""
    return notebook.fit_or_reuse(S, model, priors, DATA, DATA_HASH)


fits = {name: fit_or_reuse(path) for name, path in MODELS.items()}
idatas = {name: estimands.as_idata(path) for name, path in fits.items()}

# %% [markdown]
# ## Reading the diagnostics
#
# `diagnostics.diagnose` (run when a fit is saved, stored in its provenance) reduces the checks to
# `ok` or `warn` with reasons. Thresholds (Vehtari et al. 2021; Betancourt 2017):
#
# | check | what it detects | threshold |
# |---|---|---|
# | rank-normalised split R-hat | chains (and halves of chains) that disagree | <= 1.01 |
# | bulk ESS | too few effectively independent draws for means and sds | >= 400 |
# | tail ESS | ... for 5% / 95% quantiles, i.e. interval ends | >= 400 |
# | divergences | the leapfrog integrator failed in high curvature: draws biased there | 0 |
# | tree-depth saturation | trajectories cut at 2^10 steps: inefficient, sometimes biased | 0% |
# | E-BFMI | momentum resampling cannot explore the energy (funnels, heavy tails) | >= 0.3 |
#
# All are computed over the population-level parameters and the LA coefficients `la_coef`; the
# auxiliary standard-normal draws of a non-centred model are left out. A fast run (2 x 200 draws)
# rarely reaches 400 effective draws for every parameter and then says `warn`: that is what the
# verdict is for. At full size (4 x 1000) the default model passes on the national data.

# %%
rows = {}
for name, idata in idatas.items():
    d = fitfile.provenance(idata)["diagnostics"]
    rows[name] = d
    print(f"diagnostics[{name}]: status={d['status']} rhat_max={d['rhat_max']:.4f} "
          f"ess_bulk_min={d['ess_bulk_min']:.1f} divergences={d['divergences']} bfmi_min={d['bfmi_min']:.3f}")
    print(diagnostics.format_diagnostics(d))
keys = ["status", "rhat_max", "rhat_worst", "ess_bulk_min", "ess_bulk_worst", "ess_tail_min", "ess_tail_worst",
        "divergences", "tree_depth_saturation", "bfmi_min"]
display(pd.DataFrame(rows).loc[keys])

# %% [markdown]
# The same figures per parameter: `report.arviz_summary` is `arviz.summary` of the scalar
# hyperparameters (vector ones split, e.g. `la_sd[gradient]`; only the off-diagonal of the LA
# correlation). `mcse_mean` is the Monte Carlo error of the posterior mean: compare it with the
# precision you intend to report.

# %%
default = idatas["inverse_intervention_nb_log"]
display(report.arviz_summary(default).round(3))

# %% [markdown]
# ### Trace and rank plots
#
# Trace plots (left: the posterior density per chain; right: draws in sampling order, divergent
# transitions marked along the bottom) show stuck or drifting chains. Rank plots are more sensitive:
# rank all draws of a parameter together; each chain's ranks should be uniform, so every histogram
# should be flat. A chain whose ranks pile up at one end is exploring a different region.

# %%
hyper = report.hyperparameters(default)
names = list(hyper.data_vars)
fig, axes = figures.new_figure(len(names), 2, size=(10.0, 1.6 * len(names)))
az.plot_trace(az.InferenceData(posterior=hyper, sample_stats=default.sample_stats), var_names=names,
              axes=axes, compact=False)
fig.suptitle("Trace plots of the hyperparameters (inverse_intervention_nb_log)")
show(fig)

# %%
fig, _ = figures.plot_rank(hyper)
show(fig)

# %% [markdown]
# ## Centred or non-centred LA effects
#
# The LA coefficients can be sampled two ways, with the same posterior:
#
# * **centred**: `(a_j, b_j) ~ MVN(mean_j, Sigma)` is sampled directly;
# * **non-centred**: `raw_j ~ N(0, I)` is sampled and `(a_j, b_j) = mean_j + chol(Sigma) raw_j`.
#
# Which one samples well depends on how much each LA's own data say about its coefficients. With
# **few** neighbourhoods per LA the prior dominates: in the centred form the scale `la_sd` and the
# coefficients form Neal's funnel (small `la_sd` forces all coefficients together), which gives
# divergences, and the non-centred form removes it. With **many** neighbourhoods per LA (median 161
# nationally) the data pin each `(a_j, b_j)` down; in the non-centred form each `raw_j` must then
# move in lock-step with `la_sd` and the means (`raw_j = (coef_j - mean_j) / la_sd` with `coef_j`
# fixed by the data), a long narrow ridge that NUTS crosses slowly. Measured on the national data
# (DESIGN section 4, 2 chains x (1000 + 1000)): non-centred reached min bulk ESS 16 and R-hat 1.11
# in 92-185 s; centred (hierarchical centring with LA deprivation in the mean) reached 3,353 and
# 1.009 in 54 s, hundreds of times more effective draws per second.
#
# `parameterisation = "auto"` (the default in every shipped model) therefore decides per LA effect
# from the counts: it centres an LA's intercept when its median standard error over LAs (Poisson,
# 1/sqrt(count)) is below 0.2, and its gradient when that is below 0.1, roughly the between-LA SDs
# in this field, *and* when that standard error (overdispersion included) is below the effect's
# spread over LAs estimated from the data alone (per-LA Poisson regressions, DerSimonian-Laird):
# an effect that barely varies between LAs (a re-referral gradient) makes a funnel when centred,
# however many counts there are. Otherwise the effect is non-centred. A stacked model can so centre
# the referral effects and non-centre the sparse looked-after ones. A spec can force either form;
# the fit records what it used.

# %%
spec_default = load_spec(MODELS["inverse_intervention_nb_log"])
design = build_design(loaded, spec_default)
se = la_effect_se(spec_default, design)
auto = describe_centring(centring(spec_default, design), list(spec_default.coefs))
sparse = dataclasses.replace(design, y=design.y // 100)
auto_sparse = describe_centring(centring(spec_default, sparse), list(spec_default.coefs))
print(f"median standard error of an LA intercept / gradient from the counts: {se[0]:.3f} / {se[1]:.3f} "
      f"(centred below {CENTRING_SE['intercept']} / {CENTRING_SE['gradient']})")
print(f"parameterisation (auto) for this data: {auto}")
print(f"parameterisation (auto) with a hundredth of the counts: {auto_sparse}")
print(f"recorded in the fit: {fitfile.provenance(default)['sampler']['parameterisation']}")

# %% [markdown]
# DESIGN's advice is to test both. Here is the non-centred form of the default model on the same
# data, same priors, seed and draws, sampled with the lower-level API that `fit_files` wraps
# (`sampling.fit` returns the draws; `fitfile.build_idata` would add the log-likelihood and
# provenance). With ~40 neighbourhoods per LA in a fast run the gap is smaller than with ~160; on the
# national data it is the difference between a usable and an unusable fit. Near the thresholds it
# can go either way: with LAs that sparse, compare both on your own data.

# %%
nc_dict = spec_default.to_dict()
nc_dict["la"]["parameterisation"] = "non_centred"
spec_nc = ModelSpec.from_dict(nc_dict)
draws_nc = sampling.fit(spec_nc, pset, design, **SETTINGS)
coefs = list(spec_nc.coefs)
idata_nc = az.from_dict(posterior=draws_nc.posterior, sample_stats=draws_nc.stats,
                        coords={"coef": coefs, "coef_": coefs, "la": list(design.la_codes)},
                        dims={"la_coef": ["la", "coef"], "la_raw": ["la", "coef"], "la_sd": ["coef"],
                              "la_corr": ["coef", "coef_"]})
d_nc = diagnostics.diagnose(idata_nc)
print(f"diagnostics[non_centred]: status={d_nc['status']} rhat_max={d_nc['rhat_max']:.4f} "
      f"ess_bulk_min={d_nc['ess_bulk_min']:.1f} divergences={d_nc['divergences']} bfmi_min={d_nc['bfmi_min']:.3f}")

prov_c = fitfile.provenance(default)
d_c = prov_c["diagnostics"]
secs = {"centred": prov_c["timings"]["sampling"], "non_centred": draws_nc.timings["sampling"]}
steps = {"centred": float(default.sample_stats["n_steps"].mean()),
         "non_centred": float(draws_nc.stats["n_steps"].mean())}
comparison = pd.DataFrame({
    p: {"sampling s (after warm-up)": secs[p], "min bulk ESS": d["ess_bulk_min"],
        "worst parameter": d["ess_bulk_worst"], "min bulk ESS per s": d["ess_bulk_min"] / secs[p],
        "max R-hat": d["rhat_max"],
        "divergences": d["divergences"], "mean leapfrog steps": steps[p]}
    for p, d in (("centred", d_c), ("non_centred", d_nc))})
display(comparison)
gain = comparison.loc["min bulk ESS per s", "centred"] / comparison.loc["min bulk ESS per s", "non_centred"]
print(f"centred / non-centred, min bulk ESS per second of sampling: {gain:.1f}x "
      f"({'centred' if gain > 1 else 'non-centred'} mixes better on this data)")

# %%
ess_c = az.ess(report.hyperparameters(default), method="bulk")
ess_nc = az.ess(report.hyperparameters(idata_nc), method="bulk")
labels = list(ess_c.data_vars)
fig, axes = figures.new_figure(size=(7.5, 0.35 * len(labels) + 1.5))
ax = axes[0, 0]
pos = np.arange(len(labels))
ax.barh(pos - 0.2, [float(ess_c[v]) for v in labels], height=0.4, label="centred", color="#2166ac")
ax.barh(pos + 0.2, [float(ess_nc[v]) for v in labels], height=0.4, label="non-centred", color="#b2182b")
ax.axvline(diagnostics.ESS_MIN, color="black", lw=0.8, ls=":")
ax.set_yticks(pos, labels)
ax.set_xscale("log")
ax.set_xlabel(f"bulk ESS ({SETTINGS['chains']} chains x {SETTINGS['draws']} draws; dotted: {diagnostics.ESS_MIN})")
ax.set_title("Same model, same data: centred vs non-centred LA effects")
ax.legend(fontsize="small")
show(fig)

# %% [markdown]
# ## A first look at the estimates
#
# The headline estimand (defined from predictions, notebook 03) is the gradient score of a typical
# LA at mean LA deprivation and 10 points less / more. `gradient_nb` has no LA deprivation terms, so
# its prediction does not depend on LA deprivation and it yields one gradient score for every LA
# level: it cannot express an inverse intervention effect. Its single score sits near the truth at
# mean LA deprivation, averaging over the steeper and shallower LAs.

# %%
heads = pd.concat([estimands.headline_table(i).assign(model=n) for n, i in idatas.items()], ignore_index=True)
heads["la_level"] = heads["la_level"].fillna("any (no LA deprivation term)")
stage = truth["stages"]["referral"]
heads["truth"] = heads["la_level"].map({k: stage[v] for k, v in estimands.TRUTH_KEYS.items()})
display(heads[["model", "la_level", "la_deprivation", "mean", "lower", "upper", "truth"]].round(3))

# %% [markdown]
# ## Checks

# %%
# What the run size allows for the centred fits: R-hat below 1.1 (fast) or 1.05 (full), a bulk ESS
# of at least a tenth of the draws for every parameter, E-BFMI >= 0.3 and divergences in under 1% of
# the draws; the fast run may still say `warn` (ESS below 400), the full-size run may not.
n_draws = SETTINGS["chains"] * SETTINGS["draws"]
for name, d in rows.items():
    assert d["rhat_max"] < (1.1 if FAST else 1.05), (name, d)
    assert d["ess_bulk_min"] >= 0.1 * n_draws and d["bfmi_min"] >= 0.3, (name, d)
    assert isinstance(d["divergences"], int) and d["divergences"] < 0.01 * n_draws, (name, d)
    assert (d["status"] == "ok") == (not d["reasons"]), d
    assert FAST or name != "inverse_intervention_nb_log" or d["status"] == "ok", d
assert auto == "centred" and auto_sparse == "non_centred"
assert prov_c["sampler"]["parameterisation"] == "centred"
assert draws_nc.settings["parameterisation"] == "non_centred"
assert "la_raw" in draws_nc.posterior and "la_raw" not in default.posterior
assert d_nc["rhat_max"] < 1.5 and d_nc["ess_bulk_min"] >= 10, d_nc  # can go either way near the thresholds
for name, part in heads.groupby("model"):
    assert len(part) == (1 if name == "gradient_nb" else 3), part  # gradient_nb: no LA deprivation terms
    assert (part["lower"] < part["mean"]).all() and (part["mean"] < part["upper"]).all(), name
print("notebook 02 checks passed")

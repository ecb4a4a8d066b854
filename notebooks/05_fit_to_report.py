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
# # 05 From a saved fit to a report, with disclosure control
#
# A report author starts from a saved fit: an ArviZ netCDF file whose provenance says exactly which
# data, model, priors, sampler and versions produced it. This notebook loads one, checks it is the
# fit it claims to be, writes the report (`hierarchy report`: HTML, Markdown, CSV tables and
# figures) to a folder, and shows how the **disclosure rules** act on every observed count in it.
#
# Run size: `HIERARCHY_FAST=1`: 30 generated LAs, 2 chains x (200 + 200); otherwise national data
# and 4 chains x (1000 + 1000). A fit saved by notebook 02 or 03 with the same data, model, priors
# and settings is reused.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Image, display

from hierarchy import disclosure, notebook
from hierarchy.errors import FitFileError
from hierarchy.reporting import report
from hierarchy.results import estimands, fitfile

S = notebook.setup()  # run size (HIERARCHY_FAST), the checkout as working directory, output folders
FAST, SIZE, SETTINGS, ROOT, OUT_BASE, FITS = S.fast, S.size, S.settings, S.root, S.out, S.fits
show = notebook.show


REPORT = OUT_BASE / "05_fit_to_report" / "report"
MODEL, PRIORS = "models/inverse_intervention_nb_log.toml", "priors/weakly_informative.toml"
THRESHOLD, ROUNDING = 10, 5

geo, table, truth, DATA, loaded, DATA_HASH = notebook.simulated_data(S)  # written, validated


def fit_or_reuse(model: str, priors: str = PRIORS) -> Path:
    """Fit ``model`` under ``priors`` to DATA with SETTINGS, or reuse a saved fit of exactly that."""
    return notebook.fit_or_reuse(S, model, priors, DATA, DATA_HASH)


FIT = fit_or_reuse(MODEL)
print(f"geography: {geo.source}; fit file {FIT} ({FIT.stat().st_size / 1e6:.1f} MB)")

# %% [markdown]
# ## Loading a fit
#
# `fitfile.load_fit` reads the file and checks its provenance. Given the model file, the prior file
# and the data hash the author believes it was made from, it **refuses** a fit made from anything
# else: the stored spec and priors are hashed (16 hex digits of their canonical form) and compared.
# This is what stops a report from silently describing a different model than its caption says.

# %%
idata = fitfile.load_fit(FIT, model=MODEL, priors=PRIORS, data_hash=DATA_HASH)
prov = fitfile.provenance(idata)
print(f"loaded: model {prov['model_spec']['name']} ({prov['model_hash']}), priors {prov['priors']['name']} "
      f"({prov['priors_hash']}), data {prov['data_hash']}; groups {list(idata.groups())}")
try:
    fitfile.load_fit(FIT, model="models/gradient_nb.toml")
except FitFileError as err:
    print(f"refused: {err}")

# %% [markdown]
# The provenance, as the report shows it. Note `observed data stored in fit: False`: by default a fit
# file carries the covariates and exposures but **no observed counts**, so it can be shared; the
# report below takes the observed counts from the data file, and applies disclosure control to them.

# %%
display(pd.DataFrame(report.provenance_rows(prov), columns=["item", "value"]))
print(fitfile.list_fits(FITS))

# %% [markdown]
# `report.summary_text` is `hierarchy summary`: the ArviZ summary of the hyperparameters, the
# headline estimands and the diagnostics verdict, in one place.

# %%
print(report.summary_text(idata))

# %% [markdown]
# ## The disclosure rules
#
# Neighbourhood-level counts of referrals are sensitive: a small count in a small area can identify
# a family. DfE suppresses counts of 1-5 and rounds; secure research environments commonly require
# at least 10 units behind any published figure. The workbench's defaults (DESIGN section 5):
#
# * an observed count **below the threshold** (default 10) is **suppressed**: `[c]` in tables, absent
#   from figures;
# * every other observed count is **rounded** to a multiple of 5 (halves up);
# * a **rate** is computed from the **rounded** count, and is suppressed with it;
# * model predictions and estimands are posterior quantities, not observed counts, and are not
#   suppressed; denominators (children) are population estimates and are shown as they are.
#
# The threshold and rounding are options of `hierarchy report` and are written into every report.
# A worked example on seven made-up cells of 300 children each:

# %%
print(disclosure.rules_text(threshold=THRESHOLD, rounding=ROUNDING))
raw = np.array([0, 3, 9, 10, 12, 13, 148])
cells = pd.DataFrame({"observed_count": raw, "children": 300})
published = disclosure.disclose_frame(cells, counts=["observed_count"],
                                      rates={"observed_rate": ("observed_count", "children")},
                                      threshold=THRESHOLD, rounding=ROUNDING)
shown = disclosure.mark_suppressed(published, {"observed_count": "{:,.0f}", "observed_rate": "{:,.1f}"})
display(pd.DataFrame({"raw count": raw, "raw rate per 10,000": 1e4 * raw / 300,
                      "published count": shown["observed_count"], "published rate": shown["observed_rate"]}))

# %% [markdown]
# ## Writing the report
#
# `report.write_report` (`hierarchy report FIT --out DIR --data DATA --threshold 10 --rounding 5`)
# writes `index.html` (self-contained, figures embedded), `report.md` with `figures/*.png`, and one
# CSV per table. Passing the simulator's truth adds it beside the estimates.

# %%
index = report.write_report(idata, REPORT, data=DATA, threshold=THRESHOLD, rounding=ROUNDING, truth=truth,
                            n_draws=100 if FAST else 200)
print(f"report: {index}")
for p in sorted(REPORT.rglob("*")):
    if p.is_file():
        print(f"  {p.relative_to(REPORT)}  ({p.stat().st_size / 1e3:.0f} kB)")

# %% [markdown]
# ### The tables, as published
#
# Rates by national decile of neighbourhood deprivation: `predicted_*` are posterior predictive
# quantities (not suppressed); `observed_count` and `observed_rate` went through the rules. With
# well over a hundred neighbourhoods in each decile nothing is small enough to suppress here: the
# counts are only rounded.

# %%
deciles = pd.read_csv(REPORT / "deciles.csv", dtype={"observed_count": str, "observed_rate": str})
display(deciles[["decile", "neighbourhoods", "children", "predicted_mean", "predicted_lower", "predicted_upper",
                 "observed_count", "observed_rate", "truth_expected_rate"]].round(1))

# %% [markdown]
# Observed counts by LA and decile are where small cells appear: some LAs have only one or two
# neighbourhoods in a decile. These cells are suppressed; the rest are rounded.

# %%
la_dec = pd.read_csv(REPORT / "la_deciles.csv", dtype={"observed_count": str, "observed_rate": str})
display(la_dec[la_dec["observed_count"] == disclosure.SUPPRESSED].head(5))
display(la_dec[la_dec["observed_count"] != disclosure.SUPPRESSED].head(5))

# %% [markdown]
# The posterior predictive check of the count distribution counts **neighbourhoods** per count bin:
# those numbers are observed counts too, and get the same treatment.

# %%
display(pd.read_csv(REPORT / "count_distribution.csv", dtype={"observed_neighbourhoods": str}))

# %% [markdown]
# ### Checking the published tables against the rules
#
# Recompute the LA x decile cells without disclosure control (threshold 0, no rounding: for this
# check only, never to publish) and compare with what the report wrote: every raw count below the
# threshold must be `[c]`, every other one rounded to 5, and every rate computed from the rounded
# count.

# %%
observed = estimands.observed_counts(idata, DATA)
rawcells = estimands.la_decile_table(idata, observed, threshold=0, rounding=0)
pub = la_dec.assign(count_num=pd.to_numeric(la_dec["observed_count"], errors="coerce"),
                    rate_num=pd.to_numeric(la_dec["observed_rate"], errors="coerce"))
suppressed = pub["observed_count"] == disclosure.SUPPRESSED
small = rawcells["observed_count"].to_numpy() < THRESHOLD
print(f"la_deciles cells: {len(pub)} published, {int(suppressed.sum())} suppressed, {int(small.sum())} with a "
      f"raw count below {THRESHOLD}")
kept = pub[~suppressed]
rounding_ok = bool((kept["count_num"] % ROUNDING == 0).all() and (kept["count_num"] >= THRESHOLD).all())
rates_ok = bool(np.allclose(kept["rate_num"], 1e4 * kept["count_num"] / kept["children"]))
rates_hidden = bool((pub.loc[suppressed, "observed_rate"] == disclosure.SUPPRESSED).all())
print(f"published counts >= {THRESHOLD} and multiples of {ROUNDING}: {rounding_ok}; rates from rounded counts: "
      f"{rates_ok}; rates suppressed with their counts: {rates_hidden}")

# %% [markdown]
# A stricter rule costs detail: the share of LA x decile cells suppressed at a few thresholds.

# %%
for t in (5, 10, 20, 50):
    cells_t = estimands.la_decile_table(idata, observed, threshold=t, rounding=ROUNDING)
    print(f"threshold {t:>2}: {cells_t['observed_count'].isna().mean():.1%} of {len(cells_t)} cells suppressed")

# %% [markdown]
# One of the report's figures, read back from the folder: observed (disclosure-controlled) and
# posterior predictive rates by decile. Suppressed cells are simply not drawn.

# %%
display(Image(filename=str(REPORT / "figures" / "deciles.png")))
html = index.read_text(encoding="utf-8")
print("disclosure paragraph in index.html:", "below 10 are suppressed" in html)

# %% [markdown]
# ## Checks

# %%
assert index.is_file() and (REPORT / "report.md").is_file()
assert {"rate_curves", "inverse_intervention", "deciles", "rank"} <= {p.stem for p in REPORT.glob("figures/*.png")}
csvs = {p.stem for p in REPORT.glob("*.csv")}
assert {"summary", "estimands", "deciles", "la_deciles", "count_distribution"} <= csvs
assert "below 10 are suppressed" in html
assert disclosure.SUPPRESSED in html or not suppressed.any()
assert not prov["include_data"] and "observed_data" not in idata.groups()
# every small cell is suppressed; secondary suppression may hide more, so no cell can be worked out
assert bool(suppressed.to_numpy()[small].all()) and rounding_ok and rates_ok
assert rates_hidden
# the fit behind the report recovers the simulated gradient at mean LA deprivation, as well as the run size
# allows (notebook 03 derives the bounds: 30 LAs give a posterior SD of about 0.04 there, measured 0.043)
head = estimands.headline_table(idata).set_index("la_level")
assert len(head) == 3 and (head["lower"] < head["mean"]).all() and (head["mean"] < head["upper"]).all()
truth_at_mean = truth["stages"]["referral"]["gradient_at_mean"]
assert head.loc["mean", "sd"] < 0.15 and abs(head.loc["mean", "mean"] - truth_at_mean) < 3 * head.loc["mean", "sd"]
print("notebook 05 checks passed")

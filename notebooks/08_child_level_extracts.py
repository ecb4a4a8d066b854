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
# # 08 From child-level records to neighbourhood counts, durations and re-entry
#
# Inside a secure environment researchers get the Children in Need census (and the looked-after
# return) as child-level records. This notebook walks the whole path on a **simulated** extract
# whose truth is known:
#
# 1. `hierarchy simulate-extract` writes a CIN census extract (one row per episode, DfE field names);
# 2. `hierarchy aggregate` validates it and counts distinct children per neighbourhood in the census
#    year; `hierarchy fit` fits the referral gradient and `hierarchy summary` reads the fit;
# 3. `hierarchy durations` turns CIN episodes into a neighbourhood x duration-band table (events and
#    child-years at risk: piecewise-exponential survival as a Poisson model), which `hierarchy fit`
#    fits with the shipped `cin_duration_poisson` model; the posterior gives the median duration and
#    the share closed within 3 months, by neighbourhood and LA deprivation;
# 4. the same for **re-entry to care** after a return home, from a simulated looked-after extract:
#    the share re-entering within six years;
# 5. the export that leaves the children behind: LA-level sums, then `hierarchy fit --sufficient`.
#
# Run size: `HIERARCHY_FAST=1`: 12 generated LAs, 2 chains x (200 + 200); otherwise 40 LAs and
# 4 chains x (1000 + 1000).

# %%
import json

import numpy as np
import pandas as pd

from hierarchy import notebook
from hierarchy.cli import main
from hierarchy.data import childsim, extract
from hierarchy.data.reference import synthetic_geography
from hierarchy.results import durations, estimands
from hierarchy.results.fitfile import load_fit

S = notebook.setup()
FAST, SETTINGS = S.fast, S.settings
OUT = S.out / "08_child_level_extracts"
OUT.mkdir(parents=True, exist_ok=True)
N_LA, PER_LA = (12, 30) if FAST else (40, 60)
GEO = ["--synthetic", "--n-la", str(N_LA), "--lsoa-per-la", str(PER_LA), "--geo-seed", "3"]
RUN = ["--chains", str(SETTINGS["chains"]), "--tune", str(SETTINGS["tune"]), "--draws", str(SETTINGS["draws"]),
       "--quiet", "--force"]
geo = synthetic_geography(N_LA, seed=3, lsoa_per_la=PER_LA)


def hierarchy(*args: str) -> None:
    """Run a ``hierarchy`` command as on the command line; stop the notebook if it fails."""
    print("$ hierarchy " + " ".join(args))
    code = main(list(args))
    assert code == 0, f"exit status {code}"


# %% [markdown]
# ## 1-2. Extract -> neighbourhood table -> fit -> summary

# %%
EXT = OUT / "extract.csv"
hierarchy("simulate-extract", *GEO, "--seed", "8", "--out", str(EXT))
truth = json.loads(EXT.with_suffix(".truth.json").read_text())
TABLE = OUT / "referrals.parquet"
hierarchy("aggregate", str(EXT), *GEO, "--strata", "", "--out", str(TABLE))
table = pd.read_parquet(TABLE)
counts = pd.read_parquet(EXT.with_suffix(".counts.parquet")).groupby("neighbourhood")["referral"].sum()
same = table.set_index("neighbourhood")["referral"].reindex(counts.index).fillna(0).eq(counts).all()
print(f"aggregated referrals equal the simulated counts in every neighbourhood: {bool(same)}")

# %%
REF_FIT = OUT / "referrals.nc"
hierarchy("fit", "--data", str(TABLE), "--model", "inverse_intervention_nb_log", *RUN, "--out", str(REF_FIT))
hierarchy("summary", str(REF_FIT))
score = estimands.headline_gradients(load_fit(REF_FIT)).sel(la_level="mean")
q05, q95 = (float(score.quantile(q)) for q in (0.05, 0.95))
print(f"referral gradient score at mean LA deprivation: mean={float(score.mean()):.3f} lower={q05:.3f} "
      f"upper={q95:.3f} truth={truth['stages']['referral']['gradient_at_mean']:.3f}")

# %% [markdown]
# ## 3. CIN episode durations as a Bayesian Poisson model
#
# The durations table holds `events` (closures) and `exposure` (child-years at risk) per
# neighbourhood x duration band; `band` is the stratum whose offsets are the band hazards. It stays
# inside the secure environment. `hierarchy validate` needs the names of those columns:

# %%
CIN = OUT / "cin_durations.parquet"
hierarchy("durations", str(EXT), *GEO, "--spell", "cin", "--out", str(CIN), "--force")
hierarchy("validate", str(CIN), "--counts", "events", "--strata", "band")
CIN_FIT = OUT / "cin_durations.nc"
hierarchy("fit", "--data", str(CIN), "--model", "cin_duration_poisson", "--priors", "time_to_event", *RUN,
          "--out", str(CIN_FIT))
cin = load_fit(CIN_FIT)
est = durations.posterior_estimands(cin)
print(est[["la_level", "group", "deprivation", "median_days", "median_days_lo", "median_days_hi",
           "share_within_91", "share_within_91_lo", "share_within_91_hi"]].round(3).to_string(index=False))
t = truth["durations"]["cin_closure"]
lo = float(np.exp(cin.posterior["gradient"]).quantile(0.05))
hi = float(np.exp(cin.posterior["gradient"]).quantile(0.95))
print(f"closure hazard ratio per 10 points of w: lower={lo:.3f} upper={hi:.3f} "
      f"truth={np.exp(t['log_gradient']):.3f}")

# %% [markdown]
# ## 4. Re-entry to care within six years
#
# The looked-after extract has one row per care episode (`CLAstartDate`, `CLAendDate`,
# `ReasonEpisodeCeased`). A return home (E4A/E4B) starts a spell at risk; the child's next care
# start ends it.

# %%
care, care_truth = childsim.simulate_care_extract(geo, year=2019, seed=8)
CARE = OUT / "care.csv"
care.to_csv(CARE, index=False)
RE = OUT / "reentry.parquet"
hierarchy("durations", str(CARE), *GEO, "--spell", "reentry", "--out", str(RE), "--force")
RE_FIT = OUT / "reentry.nc"
hierarchy("fit", "--data", str(RE), "--model", "care_reentry_poisson", "--priors", "time_to_event", *RUN,
          "--out", str(RE_FIT))
re_est = durations.posterior_estimands(load_fit(RE_FIT), horizon_days=6 * 365)
print(re_est[["la_level", "group", "deprivation", "share_within_2190", "share_within_2190_lo",
              "share_within_2190_hi"]].round(3).to_string(index=False))
typical = re_est.query("la_level == 'mean'")["share_within_2190"].mean()
print(f"re-entry within six years, typical LA: estimate={typical:.3f} "
      f"truth={care_truth['reentry']['share_within_six_years_typical']:.3f} (truth at w = 0; published 35%)")

# %% [markdown]
# ## 5. The export that leaves the children behind
#
# For a Poisson model whose neighbourhood terms are public, LA x band sums of the events and of the
# events times `w` carry everything the likelihood needs. Each sum must rest on at least 10
# children; with the small fast geography the longest band fails that, so the export uses the
# first three months and the rest as two bands.

# %%
records = extract.parse_extract(extract.read_extract(EXT))
sp = durations.spells(records, *durations.SPELLS["cin"], since=pd.Timestamp("2018-04-01"),
                      extract_end=pd.Timestamp("2019-03-31"))
two = durations.model_table(sp, geo, (0, 91))
INSIDE, PUBLIC, SUMS = OUT / "cin_two_bands.parquet", OUT / "public.parquet", OUT / "sums.csv"
two.to_parquet(INSIDE, index=False)
two.drop(columns=["events"]).to_parquet(PUBLIC, index=False)
hierarchy("export-sufficient", str(INSIDE), "--model", "cin_duration_poisson", "--out", str(SUMS))
print(pd.read_csv(SUMS, comment="#").head().to_string(index=False))
SUMS_FIT = OUT / "sums.nc"
hierarchy("fit", "--sufficient", str(SUMS), "--data", str(PUBLIC), "--model", "cin_duration_poisson",
          "--priors", "time_to_event", *RUN, "--out", str(SUMS_FIT))
hierarchy("summary", str(SUMS_FIT))
print("notebook 08 checks passed")

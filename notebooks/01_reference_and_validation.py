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
# # 01 Reference geography and data validation
#
# Every model in this workbench is fitted to one table: a row per neighbourhood (LSOA, about 1,500
# people, ~366 children), nested in a local authority (LA, the children's services authority). This
# notebook shows
#
# 1. the **reference geography** the simulator and the checks use: the real England data (IoD2019
#    income domain, ONS mid-2019 child populations, DfE LA counts) when they are found beside the
#    checkout, otherwise a generated stand-in with obviously fake codes; the notebook says which;
# 2. the distribution of **LA deprivation** (the child-weighted mean of neighbourhood income
#    deprivation over the LA), which is the between-LA axis of every estimand that follows;
# 3. a deliberately **bad extract** run through `hierarchy.data.table.validate`: every problem is reported
#    at once, with row numbers and a fix, and `--drop-invalid` sets the failing rows aside with
#    their reasons instead of dropping them silently.
#
# Run size: `HIERARCHY_FAST=1` uses a generated geography of 30 LAs x ~40 neighbourhoods; without it
# the notebook reads the national reference data (`../shared/data/england` or
# `$HIERARCHY_REFERENCE_DIR`) and falls back to a generated 151-LA geography if they are absent.

# %%
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from hierarchy import cli, notebook
from hierarchy.data import reference, simulate
from hierarchy.data import table as data
from hierarchy.errors import DataValidationError, HierarchyError
from hierarchy.reporting import figures

S = notebook.setup()  # run size (HIERARCHY_FAST), the checkout as working directory, output folders
FAST, SIZE, SETTINGS, ROOT, OUT_BASE, FITS = S.fast, S.size, S.settings, S.root, S.out, S.fits
show = notebook.show


OUT = OUT_BASE / "01_reference_and_validation"
OUT.mkdir(parents=True, exist_ok=True)


print(f"run size: {'FAST (small generated data)' if FAST else 'FULL'}; outputs in {OUT}")

# %% [markdown]
# ## 1. The reference geography
#
# `reference.get_geography()` returns the real England geography when the reference folder is
# present (32,844 LSOAs in 151 upper-tier LAs), else `synthetic_geography()`, which reproduces its
# distributions with fake codes (`LA001`, `N000001`). `geo.source` records which one was used, and
# is carried into the simulated data's truth file and every fit made from it.

# %%
if FAST:
    geo = reference.synthetic_geography(30, seed=0, lsoa_per_la=40)
else:
    geo = reference.get_geography()  # real data when found, else a 151-LA stand-in
kind = ("REAL England reference data (IoD2019, ONS mid-2019, DfE)" if geo.is_reference
        else "GENERATED stand-in geography (fake codes; the real data were not used)")
print(f"geography: {geo.source}")
print(f"which: {kind}")
lsoa, la = geo.lsoa, geo.la
per_la = la["n_lsoa"]
print(f"{len(lsoa):,} neighbourhoods in {len(la)} LAs; {lsoa['children'].sum():,} children aged 0-17 "
      f"(mean {lsoa['children'].mean():.0f} per neighbourhood)")
print(f"neighbourhoods per LA: median {per_la.median():.0f}, range {per_la.min()}-{per_la.max()}")
print(f"neighbourhood income rate x: {lsoa['income_rate'].min():.3f}-{lsoa['income_rate'].max():.3f}, "
      "child-weighted mean "
      f"{np.average(lsoa['income_rate'], weights=lsoa['children']):.3f}")

# %% [markdown]
# ## 2. LA deprivation
#
# LA deprivation X is the **child-weighted mean of the neighbourhood income rate over the LA** (the
# model spec can name an external LA measure instead; it records which). The estimands compare a
# typical LA at the **mean X over LAs** (unweighted: each LA counts once, as each LA sets its own
# practice) with LAs **10 percentage points less and more deprived**. On the real data X has mean
# 0.147, sd 0.053, range 0.029-0.270: "10 points less" (about 0.047) is near the least deprived LAs
# and "10 points more" (0.247) near the most deprived, so the headline contrast spans the range of
# English LAs rather than extrapolating beyond it.

# %%
X = la["deprivation"]
X_mean = float(X.mean())
print(f"LA deprivation X: mean {X_mean:.3f}, sd {X.std(ddof=1):.3f}, range {X.min():.3f}-{X.max():.3f}")
print(f"headline LA levels: 10 points less X = {X_mean - 0.1:.3f}, mean X = {X_mean:.3f}, "
      f"10 points more X = {X_mean + 0.1:.3f}")
print(f"LAs below 'X - 10 points': {(X < X_mean - 0.1).sum()}, above 'X + 10 points': {(X > X_mean + 0.1).sum()}")
display(la.sort_values("deprivation")[["la", "la_name", "n_lsoa", "children", "deprivation", "rural_share"]]
        .iloc[[0, 1, len(la) // 2, -2, -1]].round(3))

# %% [markdown]
# DfE publishes referrals per LA (the simulator calibrates every LA's expected total to them). How
# referral rates vary **between** LAs with LA deprivation (right panel) is a different question from
# how they vary between neighbourhoods **within** an LA, and the two need not agree: within/between
# centring (notebook 03) keeps them apart.

# %%
dfe = geo.dfe[geo.dfe["year"] == 2019].set_index("la").reindex(la["la"])
rate = 1e4 * dfe["referrals"] / dfe["pop_0_17"]
ok = rate.notna().to_numpy()
england = 1e4 * dfe["referrals"].sum() / dfe.loc[dfe["referrals"].notna(), "pop_0_17"].sum()
print(f"DfE referrals 2019: {england:.1f} per 10,000 children overall; LA range {rate.min():.0f}-{rate.max():.0f}")

fig, axes = figures.new_figure(1, 3, size=(13.0, 3.8))
ax = axes[0, 0]
ax.hist(100 * X, bins=20, color="#888888")
for off, colour in ((-0.1, figures.LEVEL_COLOURS["10 points less"]), (0.0, figures.LEVEL_COLOURS["mean"]),
                    (0.1, figures.LEVEL_COLOURS["10 points more"])):
    ax.axvline(100 * (X_mean + off), color=colour, lw=1.5)
ax.set_xlabel("LA deprivation X (%), lines: mean and -/+ 10 points")
ax.set_ylabel("LAs")
ax.set_title("LA deprivation")
ax = axes[0, 1]
ax.hist(100 * lsoa["income_rate"], bins=40, weights=lsoa["children"] / 1e3, color="#888888")
ax.set_xlabel("neighbourhood income rate x (%)")
ax.set_ylabel("children (thousands)")
ax.set_title("Neighbourhood deprivation")
ax = axes[0, 2]
ax.scatter(100 * X[ok], rate[ok], s=12, color="#2166ac")
ax.set_xlabel("LA deprivation X (%)")
ax.set_ylabel("referrals per 10,000 children (DfE 2019)")
ax.set_title("Between LAs")
show(fig)

# %% [markdown]
# ## 3. Validating a bad extract
#
# Real extracts break every invariant of the data model: counts that are not non-negative integers
# (DfE suppression markers such as `c`), deprivation given as a percentage, children missing where
# there are referrals, a neighbourhood listed twice or under two LAs, an "LA-level" covariate that
# varies inside an LA, misspelt columns. The loader must say **where and how**, all at once, and
# never drop rows silently.
#
# We take three LAs of simulated counts (the simulator is the subject of notebook 02), write them as
# a CSV like a user's extract, and plant one fault of each kind. Row labels in the report are the
# **file line numbers** (the header is line 1).

# %%
table, truth = simulate.simulate(geo, year=2019, seed=0)
first_las = sorted(table["la"].unique())[:3]
extract = table[table["la"].isin(first_las)].reset_index(drop=True).astype(object)
bad = extract.copy()
line = {i: i + 2 for i in range(len(bad))}  # frame row -> CSV line
other_la = first_las[1]
faults = []  # (level, column, text the report must contain, CSV lines that must be named)


def plant(row: int, column: str, value, level: str, text: str) -> None:
    bad.loc[row, column] = value
    faults.append((level, column, text, [line[row]]))


plant(3, "referral", "c", "error", "non-integer counts")               # DfE suppression marker
plant(5, "s47", -1, "error", "negative counts")                          # coded missing value
plant(7, "deprivation", 23.0, "error", "outside [0, 1]")                 # a percentage, one row
plant(9, "exposure", 0, "error", "exposure 0 but positive counts")       # children missing
plant(11, "la", None, "error", "no la value")                             # missing LA code
plant(19, "cp_plan", 2.5, "error", "non-integer counts")                 # not a whole number
plant(21, "referral", int(bad.loc[21, "exposure"]) + 40, "warning", "above exposure")  # repeat events?
# a duplicated row, and a neighbourhood listed again under another LA
n = len(bad)
dup = bad.loc[[13]].copy()
moved = bad.loc[[15]].copy()  # the copy takes the other LA's code, MSOA and LA covariates
home = bad[bad["la"] == (other_la if moved["la"].iloc[0] != other_la else first_las[0])].iloc[0]
moved[["la", "msoa", "la_rural_share", "la_log_density"]] = home[["la", "msoa", "la_rural_share",
                                                                   "la_log_density"]].to_numpy()
bad = pd.concat([bad, dup, moved], ignore_index=True)
faults.append(("error", "neighbourhood", "duplicated neighbourhood", [line[13], n + 2]))
faults.append(("error", "neighbourhood", "more than one LA", [line[15], n + 3]))
faults.append(("error", "neighbourhood", "more than one MSOA", [line[15], n + 3]))  # it took the other's MSOA
# an LA code that is not in the geography (one neighbourhood: a small, unknown LA)
unknown_row = 23
bad.loc[unknown_row, ["la", "msoa"]] = ["E06099999", "E02099999"]
faults.append(("warning", "la", "fewer than 5 neighbourhoods", [line[unknown_row]]))
faults.append(("warning", "la", "not in the reference geography", [line[unknown_row]]))
# an LA covariate that differs on one row: every row of that LA is affected (which value is right?)
la_of_17 = bad.loc[17, "la"]
bad.loc[17, "la_rural_share"] = float(bad.loc[17, "la_rural_share"]) + 0.2
lines_17 = [i + 2 for i in bad.index[bad["la"] == la_of_17]]
faults.append(("error", "la_rural_share", "varies within its LA", lines_17))
# a misspelt optional column: not canonical, so it would be ignored; the report says so
bad = bad.rename(columns={"looked_after": "looked_afer"})
faults.append(("warning", "looked_afer", "did you mean 'looked_after'", []))

bad_csv = OUT / "bad_extract.csv"
bad.to_csv(bad_csv, index=False)
print(f"wrote {len(bad)} rows ({len(faults)} planted faults) to {bad_csv}")

# %% [markdown]
# `data.read_table` keeps CSV cells as text so that a bad cell can be quoted back; `data.validate`
# runs every check and returns a `ValidationReport`. Errors make the table unusable; warnings are
# worth a look but do not stop a fit. Passing the geography as `reference` adds checks that codes
# exist in it.

# %%
raw = data.read_table(bad_csv)
report = data.validate(raw, source=bad_csv.name, reference=geo)
print(report.format())

# %% [markdown]
# Check that the report names every planted fault, at the right lines.

# %%
found = []
for level, column, text, lines in faults:
    hits = [p for p in report.problems if p.level == level and p.column == column and text in p.message]
    if level == "error":  # every failing row carries its reasons, "column: reason"
        named = all(any(r.startswith(f"{column}:") for r in report.row_reasons.get(lab, [])) for lab in lines)
    else:  # warnings list the first few rows they concern
        named = all(any(lab in p.rows for p in hits) for lab in lines)
    found.append(bool(hits) and named)
    print(f"{'FOUND ' if found[-1] else 'MISSED'} {level:7s} {column:15s} {text!r} lines {lines}")
print(f"planted faults: {len(faults)}, found: {sum(found)}")

# %% [markdown]
# `data.load` (what `hierarchy fit` uses) refuses a table with any error; the exception carries the
# whole report, so a program can show every problem rather than the first.

# %%
try:
    data.load(bad_csv)
except DataValidationError as err:
    print(f"data.load refused the file: {len(err.report.errors)} errors, {len(err.report.warnings)} warnings")

# %% [markdown]
# ### `--drop-invalid`
#
# `hierarchy validate FILE --drop-invalid REJECTS.csv` keeps the rows that pass and writes every
# failing row **with its line number and reasons** to `REJECTS.csv`; it never drops rows silently,
# and it exits 0 so that a pipeline can go on with the kept rows. Note what it does with the LA
# covariate that varies within one LA: every row of that LA is rejected, because nothing in the
# table says which value is right. Without `--drop-invalid` the command exits 1.

# %%
rejects = OUT / "rejects.csv"
for args in (["validate", str(bad_csv)], ["validate", str(bad_csv), "--drop-invalid", str(rejects), "--force"]):
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # the report itself is shown above
        code = cli.main(args)
    print(f"$ hierarchy {' '.join(a if '/' not in a else Path(a).name for a in args)}")
    print(f"  {printed.getvalue().splitlines()[0]}\n  ...\n  {printed.getvalue().splitlines()[-1]}")
    if "--drop-invalid" in args:
        code_drop = code
        print(f"exit code with --drop-invalid: {code}")
    else:
        code_plain = code
        print(f"exit code without --drop-invalid: {code}\n")
rejected = pd.read_csv(rejects)
display(rejected[["line", "neighbourhood", "la", "reason"]].head(12))

# %% [markdown]
# The same from Python: `data.split_invalid(table, report)` returns the kept and rejected rows.
# The kept rows validate without errors (the warnings remain: they are for the user to judge).

# %%
kept, rejected_df = data.split_invalid(raw, report)
recheck = data.validate(kept, source="kept rows", reference=geo)
print(f"rejected rows: {len(rejected_df)}, kept rows: {len(kept)}")
print(recheck.format())

# %% [markdown]
# Problems with the table as a whole cannot be fixed by dropping rows (a missing required column, no
# count column at all). `split_invalid` refuses rather than return an empty or misleading table.

# %%
no_exposure = raw.drop(columns=["exposure"])
rep2 = data.validate(no_exposure, source="no exposure column")
print(rep2.format().splitlines()[1])
try:
    data.split_invalid(no_exposure, rep2)
except HierarchyError as err:
    print(f"split_invalid refused: {err}")

# %% [markdown]
# The same checks from the command line, as a user would run them (a fresh process). The command
# compares codes with the real reference data whenever it finds them, so on a fast run (generated
# geography, fake codes) it adds warnings that every code is unknown: useful when a real extract
# uses a different boundary vintage.

# %%
proc = subprocess.run([sys.executable, "-m", "hierarchy.cli", "validate", str(bad_csv)],
                      capture_output=True, text=True, check=False)
print(f"$ hierarchy validate {bad_csv.name}   (exit {proc.returncode})")
print("\n".join(proc.stdout.splitlines()[:4]) + "\n...")

# %% [markdown]
# ## Checks
# The notebook's key outputs, asserted: which geography was used, every planted fault named, the
# rejected rows are exactly the rows with planted errors, and the kept rows pass.

# %%
error_lines = sorted({lab for level, _c, _t, lines in faults if level == "error" for lab in lines})
assert geo.is_reference == geo.source.startswith("reference:"), geo.source  # the label says what was used
assert len(la) == (30 if FAST else 151) and la["n_lsoa"].sum() == len(lsoa) == lsoa["lsoa"].nunique()
assert all(found), [f for f, ok_ in zip(faults, found, strict=True) if not ok_]
# and nothing but the planted faults: every problem reported is one of them (no false alarm)
unplanted = [f"{p.level} {p.column}: {p.message}" for p in report.problems
             if not any(p.level == lv and p.column == c and t in p.message for lv, c, t, _ in faults)]
assert not report.ok and not unplanted, unplanted
assert code_plain == 1 and code_drop == 0
assert sorted(rejected["line"]) == error_lines, (sorted(rejected["line"]), error_lines)
assert rejected["reason"].str.len().gt(0).all()
assert recheck.ok and len(kept) + len(rejected_df) == len(raw)
print("notebook 01 checks passed")

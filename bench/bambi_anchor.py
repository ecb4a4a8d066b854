"""bambi anchor for bench_national.py, run in its own venv (bambi pins arviz-plots 0.8, which
breaks ``import arviz`` under matplotlib 3.11). Prints one JSON line of figures."""

import json
import sys
import time

import arviz as az
import bambi as bmb
import pandas as pd

data, family, chains, tune, draws = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
df = pd.read_parquet(data)
formula = "y ~ 1 + w + z + w:z + (1 + w | la) + offset(log_exposure)"
t0 = time.perf_counter()
model = bmb.Model(formula, df, family=family)
idata = model.fit(tune=tune, draws=draws, chains=chains, cores=2, random_seed=0, progressbar=False)
wall = time.perf_counter() - t0
post = idata.posterior
print(json.dumps({"wall": wall, "ess_bulk": float(az.ess(post).to_array().min()),
                  "ess_tail": float(az.ess(post, method="tail").to_array().min()),
                  "rhat": float(az.rhat(post).to_array().max()), "draws": chains * draws,
                  "divergences": int(idata.sample_stats["diverging"].sum())}))

"""Helpers shared by the test modules, imported as ``from tests.helpers import ...``.

Fixtures live in ``conftest.py``; plain functions and constants that test modules import live here,
so that the suite runs under every ``--import-mode`` (``conftest`` and ``test_*`` modules are not
importable by name under ``importlib``) and from any working directory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import reference

ROOT = Path(__file__).resolve().parents[1]


NO_REFERENCE = ("England reference data not found (../shared/data/england beside the checkout or "
                "$HIERARCHY_REFERENCE_DIR); real-geography checks need it")



def in_ci() -> bool:
    """True on CI (``CI`` set to anything but empty, 0, false or no), where the reference folder
    is provisioned: a test that needs it fails there instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_reference(folder: Path | None) -> Path:
    """``folder``, or skip (fail on CI) when the reference data were not found."""
    if folder is None:
        if in_ci():
            pytest.fail(f"{NO_REFERENCE}; CI provisions it, so its absence is a failure here", pytrace=False)
        pytest.skip(NO_REFERENCE)
    return folder


def with_formula_columns(table, seed: int = 0):
    """``table`` with the columns the formula example models read (test data, not a simulation of
    them): a rural flag per neighbourhood, LA income inequality, a year and an ethnic group per row,
    re-referrals (of at least one referral per row), and a duration band and events for the duration
    and re-entry models."""
    rng = np.random.default_rng(seed)
    t = table.copy()
    codes = t["neighbourhood"].astype(str)
    rural = {c: int(rng.random() < 0.3) for c in sorted(set(codes))}
    t["rural"] = codes.map(rural).astype(float)
    t["la_inequality"] = t.groupby("la")["deprivation"].transform("std").fillna(0.0)
    t["year"] = rng.choice([2018, 2019, 2020], len(t))
    t["ethnicity"] = rng.choice(["Asian", "Black", "Mixed", "Other", "White"], len(t))
    t["referral"] = np.maximum(t["referral"], 1)
    t["re_referral"] = rng.binomial(t["referral"], 0.2)
    t["band"] = rng.choice(["0000-0091", "0091-0182", "0182+"], len(t))  # duration models (events per band)
    t["events"] = rng.binomial(t["referral"], 0.5)
    # the replication models (issue 15, hierarchy.data.findings): sex x age, factors, plan categories, sparsity,
    # simulated LA covariates, repeat plans (of at least one plan per row), child-weighted LA deprivation
    t["sex"] = rng.choice(["female", "male"], len(t))
    t["age_c"] = rng.integers(0, 18, len(t)) - 8.5
    t["factor"] = rng.choice(["neglect", "mental_health", "physical_disability"], len(t))
    t["assessment"] = rng.binomial(t["referral"], 0.5)
    t["category"] = rng.choice(["neglect", "emotional_abuse", "sexual_abuse"], len(t))
    t["sparsity"] = codes.map({c: rng.normal() for c in sorted(set(codes))}).astype(float)
    las = sorted(set(t["la"].astype(str)))
    for col, mean, sd in (("la_expenditure", 900.0, 150.0), ("la_workforce_stability", 0.85, 0.05)):
        t[col] = t["la"].astype(str).map({la: mean + sd * rng.normal() for la in las}).astype(float)
    t["cp_plan"] = np.maximum(t["cp_plan"], 1)
    t["repeat_cp_plan"] = rng.binomial(t["cp_plan"], 0.2)
    wx = (t["deprivation"] * t["exposure"]).groupby(t["la"]).transform("sum")
    t["la_deprivation"] = wx / t["exposure"].groupby(t["la"]).transform("sum")
    if "age_band" in t:  # the MAIHDA main-effects model's 0/1 columns
        from hierarchy.data import simulate

        t = simulate.main_effect_indicators(t)
    return t


# ------------------------------------------------------------------------------------------
# The session's shared fit (the ``shared_fit`` fixture in conftest.py)

PLANTED = 3
# Every test of the session's shared fit runs on one xdist worker: the fit is made once, and no
# worker sits idle waiting on its file lock.
SHARED_FIT = pytest.mark.xdist_group("shared_fit")


def plant_small_cell(table, value: int = PLANTED) -> dict[str, Any]:
    """Give one LA exactly ``value`` referrals in one decile (changing as little as possible)."""
    import numpy as np

    from hierarchy.results import estimands

    dec = estimands.deciles_of(table["deprivation"].to_numpy(), table["neighbourhood"].to_numpy())
    cells = table.assign(decile=dec).groupby(["la", "decile"])["referral"].agg(["sum", "size"])
    cells["gap"] = (cells["sum"] - value).abs()
    la, d = cells.sort_values(["size", "gap"]).index[0]
    rows = np.flatnonzero((table["la"] == la).to_numpy() & (dec == d))
    counts = table["referral"].to_numpy().copy()
    counts[rows] = 0
    counts[rows[0]] = value
    table["referral"] = counts
    return {"la": str(la), "decile": int(d), "children": float(table["exposure"].to_numpy()[rows].sum())}


def build_shared_fit(folder: Path) -> None:
    from hierarchy import workflow
    from hierarchy.data import simulate

    geo = reference.synthetic_geography(60, seed=1, lsoa_per_la=30)
    # a seed different from the geography's: equal seeds make the LA slope noise v_j a copy of
    # the geography's first draws (LA deprivation), which bends the LA gradient curve
    table, truth = simulate.simulate(geo, year=2019, seed=2)
    planted = plant_small_cell(table)
    data = folder / "data.parquet"
    simulate.write(table, truth, data)
    workflow.fit_files(data=data, model=ROOT / "models/inverse_intervention_nb_log.toml",
                       priors=ROOT / "priors/weakly_informative.toml", out=folder / "fit.tmp.nc",
                       chains=2, tune=400, draws=400, include_data=True, progress=False)
    (folder / "planted.json").write_text(json.dumps(planted))
    os.replace(folder / "fit.tmp.nc", folder / "fit.nc")


def shared_fit_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Paths of the session's shared fit (built on first use): fit, data, truth, planted cell.

    One small fit (60 synthetic LAs of ~30 neighbourhoods, 2 chains x 400 + 400), cached on disk
    for the session. Its table has one planted small cell: an LA with exactly :data:`PLANTED`
    referrals in one national decile (for the disclosure tests).
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist workers share the parent; the lock serialises
        root = root.parent
    folder = root / "hierarchy_report_fit"
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder / "lock")):
        if not (folder / "fit.nc").exists():
            build_shared_fit(folder)
    return {"fit": folder / "fit.nc", "data": folder / "data.parquet",
            "truth": json.loads((folder / "data.truth.json").read_text()),
            "planted": json.loads((folder / "planted.json").read_text())}


# ------------------------------------------------------------------------------------------
# Known-truth data: counts drawn from a model itself at chosen parameters


def geography_table(geo: reference.Geography) -> pd.DataFrame:
    """One row per neighbourhood of ``geo`` (code, LA, children, income rate), no counts yet."""
    lsoa = geo.lsoa
    return pd.DataFrame({"neighbourhood": lsoa["lsoa"], "la": lsoa["la"],
                         "exposure": lsoa["children"].astype(float),
                         "deprivation": lsoa["income_rate"], "referral": 0})


def known_truth_table(spec, table: pd.DataFrame, truth: dict, seed: int,
                      extra=None) -> tuple[pd.DataFrame, dict]:
    """``table`` with ``spec``'s outcome drawn from ``spec`` itself at a known truth.

    The one builder of known-truth data for recovery tests (the simulator, ``hierarchy.data.simulate``,
    is the other source of truth: it is the code under test in ``test_simulate.py``).

    Parameters
    ----------
    spec
        The model the counts are drawn from (its outcome column is replaced).
    table
        Covariates: neighbourhood, LA, exposure, deprivation and whatever else ``spec`` reads.
    truth
        ``intercept``, ``la_deprivation`` (mean LA intercept = intercept + la_deprivation * z),
        ``gradient``, ``cross_level`` (mean LA gradient = gradient + cross_level * z), ``la_sd``
        (SDs of the LA intercepts and gradients about those means), ``rho`` (their correlation,
        default 0) and ``dispersion``; z is ``spec``'s LA predictor, as the design computes it.
    seed
        Seed of the draws (LA effects, then ``extra``, then the counts, from one generator).
    extra
        ``extra(design, rng) -> dict``: further parameters (row coefficients, group effects).

    Returns
    -------
    The new table, and every parameter the counts were drawn at (``truth`` plus ``la_coef`` and
    ``extra``'s).
    """
    from hierarchy.language.design import build_design
    from hierarchy.likelihood.jaxmodel import draw_counts

    design = build_design(table, spec)
    rng = np.random.default_rng(seed)
    sd, rho, n = np.asarray(truth["la_sd"], dtype=float), float(truth.get("rho", 0.0)), design.n_la
    mean = np.column_stack([truth["intercept"] + truth["la_deprivation"] * design.z,
                            truth["gradient"] + truth["cross_level"] * design.z])
    if rho:
        cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
        noise = rng.multivariate_normal(np.zeros(2), cov, size=n)
    else:  # independent: all intercept deviations, then all gradient deviations
        noise = np.column_stack([rng.normal(0, sd[0], n), rng.normal(0, sd[1], n)])
    params = {"la_coef": mean + noise, "dispersion": truth["dispersion"]}
    params.update(extra(design, rng) if extra else {})
    out = table.copy()
    out[spec.outcome] = draw_counts(spec, design, params, rng)
    return out, {**truth, **params}


# ------------------------------------------------------------------------------------------
# Running the notebooks (test_notebooks.py, test_notebook_08.py)

NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300
NUMBER = r"([-+0-9.eE]+|nan)"


def execute(name: str, out: Path, tmp_path: Path, monkeypatch) -> tuple[str, list, object]:
    """Execute notebook ``name`` small (``HIERARCHY_FAST=1``) from ``tmp_path``, writing under ``out``;
    return its stdout text, image outputs and the notebook. Fails on any error output."""
    import jupytext
    import nbclient

    monkeypatch.setenv("HIERARCHY_FAST", "1")
    monkeypatch.setenv("HIERARCHY_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors, text, images = [], [], []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "error":
                errors.append(f"cell {i}: {output.get('ename')}: {output.get('evalue')}\n"
                              + "\n".join(output.get("traceback", [])[-3:]))
            elif kind == "stream" and output.get("name") == "stdout":
                text.append(output.get("text", ""))
            elif kind in ("display_data", "execute_result"):
                if "image/png" in output.get("data", {}):
                    images.append((i, output["data"]["image/png"]))
                if "text/plain" in output.get("data", {}):
                    text.append(output["data"]["text/plain"] + "\n")
    assert not errors, "\n\n".join(errors)
    return "".join(text), images, nb


def lines_with(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def notebooks_with_tests() -> set[str]:
    """Names of the notebooks that some ``test_NN_name`` function under tests/ runs."""
    here = Path(__file__).resolve().parent
    return {m for p in here.rglob("test_*.py")
            for m in re.findall(r"^def test_(\d\d_\w+)\(", p.read_text(encoding="utf-8"), flags=re.M)}


# ------------------------------------------------------------------------------------------
# One table every shipped neighbourhood model can read


def every_column_table(seed: int = 5, n_la: int = 6, lsoa_per_la: int = 20) -> pd.DataFrame:
    """A small simulated table (``n_la`` LAs x ``lsoa_per_la`` neighbourhoods x age x sex) with every column
    a shipped neighbourhood model reads: the simulator's counts plus made-up rural, sparsity, age_c, ethnicity,
    assessment factors, plan categories, re-referrals, repeat plans, duration events and bands, and LA
    measures. For pipeline and disclosure checks, not for estimates."""
    from hierarchy.data import simulate

    geo = reference.synthetic_geography(n_la, seed=seed, lsoa_per_la=lsoa_per_la)
    out = simulate.simulate(geo, seed=seed, strata=("age", "sex"))[0]
    rng = np.random.default_rng(0)
    n = len(out)
    out["rural"] = (rng.random(n) < 0.3).astype(float)
    out["sparsity"] = rng.random(n)
    codes = out["age_band"].astype("category").cat.codes.to_numpy()
    out["age_c"] = (codes - codes.mean()).astype(float)
    out["ethnicity"] = rng.choice(["White", "Black", "Asian", "Mixed", "Other"], n)
    out["factor"] = rng.choice(["neglect", "abuse"], n)
    out["category"] = rng.choice(["neglect", "emotional", "physical"], n)
    out["assessment"] = rng.binomial(out["referral"].to_numpy(), 0.7)
    out["re_referral"] = rng.binomial(out["referral"].to_numpy(), 0.2)
    out["repeat_cp_plan"] = rng.binomial(out["cp_plan"].to_numpy(), 0.2)
    out["events"] = out["referral"]
    out["band"] = rng.choice(["0-6m", "6-12m", "12m+"], n)
    las = out["la"].unique()
    for col in ("la_inequality", "la_expenditure", "la_workforce_stability", "la_deprivation",
                "la_rural_share", "la_log_density"):
        out[col] = out["la"].map(dict(zip(las, rng.uniform(0.1, 0.3, len(las)), strict=True)))
    return simulate.main_effect_indicators(out)  # the MAIHDA main-effects model's 0/1 columns


def table_for(spec, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`every_column_table` shaped for ``spec``: two years of the same neighbourhoods when it reads
    ``year``, and only rows with some exposure when its exposure is a count (a conversion model)."""

    if "year" in spec.formula_text:
        later = table.assign(referral=np.random.default_rng(1).poisson(table["referral"].to_numpy()))
        table = pd.concat([table.assign(year=2019), later.assign(year=2020)], ignore_index=True)
    if spec.exposure in table and spec.exposure != "exposure":
        table = table[table[spec.exposure] > 0].reset_index(drop=True)
    return table


def pymc_minus_numpyro(model, pm_model, logp, draws: dict, n_corr: int) -> tuple[list[float], float]:
    """PyMC's log density less NumPyro's at each of ``draws``' points (the density agreement oracle):
    ``model`` a NumPyro model with its data bound, ``logp`` ``pm_model``'s compiled log density, ``n_corr``
    the size of the LA correlation matrix (PyMC keeps its upper triangle). Returns the differences and
    NumPyro's log density at the last point."""
    import jax.numpy as jnp
    import pytensor.tensor as pt
    from numpyro.infer.util import log_density

    offsets, lp = [], float("nan")
    for s in range(len(next(iter(draws.values())))):
        point = {rv.name: np.asarray(draws[rv.name][s]) for rv in pm_model.free_RVs}
        lp = float(log_density(model, (), {}, {k: jnp.asarray(v) for k, v in point.items()})[0])
        values = {}
        for rv in pm_model.free_RVs:
            val = point[rv.name][np.triu_indices(n_corr, 1)] if rv.name == "la_corr" else point[rv.name]
            tr = pm_model.rvs_to_transforms[rv]
            values[pm_model.rvs_to_values[rv].name] = tr.forward(pt.as_tensor(val), *rv.owner.inputs).eval() \
                if tr else val
        offsets.append(float(logp(values)) - lp)
    return offsets, lp


# ------------------------------------------------------------------------------------------
# Draws without a sampler, for tests of what is done with a fit (not of its estimates)


def prior_draws(spec, priors, design, *, chains: int = 2, draws: int = 30, seed: int = 0):
    """A :class:`hierarchy.inference.sampling.Draws` of ``chains`` x ``draws`` draws from the prior, in the
    shapes and names NUTS gives (every latent and deterministic site, no observed one).

    For plumbing tests of fit files and reports: it skips NUTS's compilation (most of a tiny fit, ~30-60 s
    on 2 busy cores). The sampler itself is tested by tests/inference/test_fit.py (recovery) and
    test_sampling.py."""
    import jax
    from numpyro.infer import Predictive

    from hierarchy.inference.sampling import Draws
    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn
    from hierarchy.likelihood.model import observed_name

    jax.config.update("jax_enable_x64", True)  # as the sampler runs
    layout = make_layout(design)
    model, data = model_fn(spec, priors, design, layout), model_data(layout)
    pred = Predictive(model, num_samples=chains * draws)(jax.random.PRNGKey(seed), data)  # every site
    pred.pop(observed_name(spec))  # the observed site (a KeyError if the model names it otherwise)
    posterior = {k: np.asarray(v).reshape(chains, draws, *np.shape(v)[1:]) for k, v in pred.items()}
    rng = np.random.default_rng(seed)
    steps = np.full((chains, draws), 7)
    stats = {"diverging": np.zeros((chains, draws), bool), "energy": rng.normal(size=(chains, draws)),
             "n_steps": steps, "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings = {"method": "nuts", "sampler": "numpyro", "chains": chains, "tune": 0, "draws": draws, "seed": seed,
                "chain_method": "sequential", "chain_method_used": "sequential", "draws_requested": draws,
                "max_draws": draws, "float32": False, "max_tree_depth": 10, "prior_draws": True}
    timings = {"warmup": 0.0, "sampling": 0.0, "warmup_mean_steps": 7.0, "total": 0.0}  # as fit() gives them
    return Draws(posterior=posterior, stats=stats, timings=timings, settings=settings)

"""Batched fits (hierarchy.inference.batch) and the batched CV refits built on them (results/cv.py).

Fast: the batch runs in turn (lax.map) or side by side (vmap) with the same draws for the same keys
(up to rounding);
data sets of another shape are refused by name; a fold's masked data give the log density of its
training rows exactly (fold + complement = whole table); held-out rows keep the fit's centring.
Slow: K-fold by LA batched in one program against the same folds refitted one by one (held-out
ELPD within its Monte Carlo error), and compare-models' batched path.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.errors import HierarchyError
from hierarchy.inference.batch import fit_batch, split_batch
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.results import cv

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "models/inverse_intervention_nb_log.toml"
FLAT = ROOT / "models/gradient_nb.toml"
DEFAULT = ROOT / "priors/weakly_informative.toml"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _normal_model(arr):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sd = numpyro.sample("sd", dist.HalfNormal(2.0))
    numpyro.factor("y", jnp.sum(arr["mask"] * dist.Normal(mu, sd).log_prob(arr["y"])))


def _normal_data(means=(0.0, 1.0, 3.0), n=30):
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    return [{"y": jnp.asarray(rng.normal(m, 1.0, n)), "mask": jnp.ones(n)} for m in means]


@pytest.mark.slow  # two NUTS programs compiled (a minute or more on 2 loaded cores)
def test_a_batch_in_turn_and_side_by_side_gives_the_same_draws():
    import jax

    jax.config.update("jax_enable_x64", True)
    data = _normal_data()
    kw = dict(chains=2, tune=150, draws=150, seed=1, thin=2)
    in_turn = fit_batch(_normal_model, data, vectorize=False, **kw)
    side = fit_batch(_normal_model, data, vectorize=True, **kw)
    assert set(in_turn.posterior) == {"mu", "sd"}
    assert in_turn.posterior["mu"].shape == (3, 2, 75) and in_turn.stats["diverging"].shape == (3, 2, 150)
    assert not in_turn.settings["vectorized"] and side.settings["vectorized"]
    # the same trajectories; the draws equal up to the rounding of batched arithmetic (~1e-8)
    np.testing.assert_array_equal(in_turn.stats["n_steps"], side.stats["n_steps"])
    for k in in_turn.posterior:
        np.testing.assert_allclose(in_turn.posterior[k], side.posterior[k], rtol=1e-6, atol=1e-6)
    # each fit is its own data set's posterior (known mean within a few posterior SDs) and judged alone
    means = in_turn.posterior["mu"].mean(axis=(1, 2))
    sds = in_turn.posterior["mu"].std(axis=(1, 2))
    truth = np.array([float(d["y"].mean()) for d in data])
    assert np.all(np.abs(means - truth) < 4 * sds + 0.05)
    assert len(in_turn.diagnostics) == 3 and all("rhat_max" in d for d in in_turn.diagnostics)
    # fit 1 as a single fit's Draws (for a fit file): its draws, thinned statistics, settings and seed
    d = in_turn.draws(1, seed=7)
    np.testing.assert_array_equal(d.posterior["mu"], in_turn.posterior["mu"][1])
    assert d.stats["energy"].shape == (2, 75) and d.settings["batch"] == 3 and d.settings["seed"] == 7
    assert d.settings["draws"] == 150 and d.settings["method"] == "nuts" and d.timings["batch_total"] > 0


def test_split_batch_shares_what_does_not_vary_and_names_a_mismatched_array():
    import jax.numpy as jnp

    data = [{"y": jnp.arange(4.0) + b, "mask": jnp.ones(4)} for b in range(3)]
    tree, varies, stacked, shared = split_batch(data)
    assert varies == [True, False] or varies == [False, True]  # dict leaves in key order: mask, y
    assert len(stacked) == 1 and stacked[0].shape == (3, 4) and len(shared) == 1
    with pytest.raises(HierarchyError, match=r"data set 1 of the batch: array \['y'\] is float\d+\(5,\)"):
        split_batch([data[0], {"y": jnp.arange(5.0), "mask": jnp.ones(4)}])
    with pytest.raises(HierarchyError, match="at least one data set"):
        split_batch([])


@pytest.fixture(scope="module")
def small():
    from tests.results.test_cv import la_deprivation_table

    table = la_deprivation_table(8, 6, seed=3)
    spec = load_spec(LOG)
    return table, spec, build_design(table, spec)


@pytest.mark.parametrize("hist", [None, 0])
def test_a_folds_masked_data_give_its_training_rows_log_density(small, hist):
    """The log density of fold A's data plus that of its complement is the whole table's, at any point:
    the masked rows, histogram, rows per stage and lgamma sums of a fold are of its training rows only."""
    import jax
    from numpyro.handlers import seed, trace

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn
    from hierarchy.likelihood.model import observed_name

    jax.config.update("jax_enable_x64", True)
    table, spec, design = small
    layout = make_layout(design, hist_len=hist)
    model = model_fn(spec, load_priors(DEFAULT), design, layout)
    row_la = design.la_codes[design.la_index]
    train = np.isin(row_la, design.la_codes[:3])
    rng = np.random.default_rng(4)
    point = {k: v["value"] for k, v in trace(seed(model, 0)).get_trace(model_data(layout)).items()
             if v["type"] == "sample"}
    point = {k: v + 0.05 * rng.normal(size=np.shape(v)) if k in ("intercept", "gradient") else v
             for k, v in point.items()}

    whole = _factor(model, point, model_data(layout), observed_name(spec))
    a = _factor(model, point, cv.fold_data(layout, design, train), observed_name(spec))
    b = _factor(model, point, cv.fold_data(layout, design, ~train), observed_name(spec))
    assert a + b == pytest.approx(whole, rel=1e-10, abs=1e-8)
    assert a != pytest.approx(whole)  # the masked rows really are left out
    assert _factor(model, point, cv.fold_data(layout, design, np.ones_like(train)),
                   observed_name(spec)) == pytest.approx(whole, rel=1e-12)


def _factor(model, point, data, name):
    """Value of the model's observed-data factor at ``point``."""
    from numpyro.handlers import seed, substitute, trace

    site = trace(substitute(seed(model, 1), point)).get_trace(data)[name]
    return float(site["fn"].log_factor) if hasattr(site["fn"], "log_factor") else float(
        site["fn"].log_prob(site["value"]))


def test_heldout_rows_within_the_fit_keep_its_centring_and_refuse_unseen_levels(small):
    table, spec, design = small
    las = list(design.la_codes[[1, 5]])
    row_la = design.la_codes[design.la_index]
    train = ~np.isin(row_la, las)
    held = cv.heldout_within(design, spec, las, train)
    own = cv.own_rows(design, spec)
    rows = ~train
    assert list(held.las) == las and held.n_rows == rows.sum() and np.array_equal(held.y, design.y[rows])
    assert np.array_equal(held.rows["w"], own.rows["w"][rows])  # the fit's own centring
    assert np.array_equal(held.z, design.z[[1, 5]])
    assert np.array_equal(design.la_codes[[1, 5]][held.rows["la_index"]], row_la[rows])
    # a stratum only the held-out LAs have cannot be predicted: refused as fit-by-fit refits refuse it
    from dataclasses import replace

    two = replace(design, stratum_index=rows.astype(np.int64), stratum_names=["s0", "s1"])
    with pytest.raises(HierarchyError, match=r"stratum the training data lack \(s1\)"):
        cv.heldout_within(two, spec, las, train)


# ------------------------------------------------------------------------------ slow: refits


def _mcse_lpd(log_p: np.ndarray, chains: int) -> np.ndarray:
    """Monte Carlo SE of each LA's ``log mean_s p_s`` (delta method, ESS of ``p_s`` over the chains)."""
    import arviz as az

    p = np.exp(log_p - log_p.max(axis=0))
    out = []
    for j in range(p.shape[1]):
        ess = float(az.ess(p[:, j].reshape(chains, -1)))
        out.append(p[:, j].std() / p[:, j].mean() / np.sqrt(max(ess, 1.0)))
    return np.asarray(out)


@pytest.mark.slow  # two fits' worth of refits (minutes on 2 cores)
def test_batched_kfold_refits_agree_with_refits_fold_by_fold(small, tmp_path):
    """Same folds, same fit settings: the held-out ELPD of the batched refits (one program, rows masked)
    is the fold-by-fold refits' within Monte Carlo error, LA by LA and in total."""
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import load_fit
    from hierarchy.workflow import fit_files

    table, spec, _ = small
    data = tmp_path / "data.parquet"
    table.to_parquet(data)
    fit_files(data=data, model=LOG, priors=DEFAULT, out=tmp_path / "log.nc", chains=2, tune=300, draws=300,
              progress=False, chain_method="sequential")
    idata = load_fit(tmp_path / "log.nc")
    folds = cv.la_folds(table["la"], 4, seed=0)
    groups = [list(folds.index[folds == f]) for f in range(4)]
    t = time.perf_counter()
    batched = cv.heldout_lpd_batched(idata, table, groups)
    t_batched = time.perf_counter() - t
    lpd_b = pd.concat([s for s, _ in batched])
    per, mcse, t = [], [], time.perf_counter()
    for g in groups:
        refit, train, _ = cv.fit_without(idata, table, g)
        held = cv.heldout_rows(table[table["la"].isin(g)], as_fit(idata).spec, train)
        log_p = cv.la_log_predictive(spec, held, cv.flat_posterior(refit))
        per.append(pd.Series(cv.la_lpd(log_p), index=held.las))
        mcse.append(pd.Series(_mcse_lpd(log_p, 2), index=held.las))
    t_per = time.perf_counter() - t
    lpd_p, se = pd.concat(per), pd.concat(mcse)
    diff = lpd_b - lpd_p.loc[lpd_b.index]
    se_diff = np.sqrt(2) * se.loc[lpd_b.index]  # both paths: the same settings, so about the same MC error
    print(f"batched {t_batched:.0f} s, fold by fold {t_per:.0f} s; elpd {lpd_b.sum():.2f} vs {lpd_p.sum():.2f} "
          f"(MC SE of the difference {np.sqrt((se_diff ** 2).sum()):.2f}); per LA |z| max "
          f"{np.abs(diff / se_diff).max():.2f}")
    assert len(lpd_b) == table["la"].nunique() and np.isfinite(lpd_b).all()
    assert abs(diff.sum()) < 4 * np.sqrt((se_diff ** 2).sum()) + 0.1
    assert np.all(np.abs(diff) < 5 * se_diff + 0.1)
    facts = [f for _, f in batched]
    assert all(f["status"] == "batched" for f in facts)
    assert all(f["train_rows"] + f["heldout_rows"] == len(table) for f in facts)
    assert sum(f["heldout_rows"] for f in facts) == len(table)


@pytest.mark.slow
def test_compare_models_batches_the_refits_unless_they_are_to_be_saved(small, tmp_path):
    from hierarchy.results import compare
    from hierarchy.workflow import fit_files

    table, _, _ = small
    data = tmp_path / "data.parquet"
    table.to_parquet(data)
    fits = []
    for model in (LOG, FLAT):
        fits.append(tmp_path / f"{model.stem}.nc")
        fit_files(data=data, model=model, priors=DEFAULT, out=fits[-1], chains=2, tune=100, draws=100,
                  progress=False, chain_method="sequential")
    said: list[str] = []
    result = compare.compare_models(fits, data=data, cv="la-kfold", folds=2, log=said.append)
    assert result.cv == "la-kfold" and len(result.refits) == 4
    assert (result.refits["status"] == "batched").all()
    assert result.refits["diagnostics"].str.match(r"^(ok|warn)").all()
    assert any("in one program" in s for s in said)
    assert (result.refits["train_rows"] + result.refits["heldout_rows"] == len(table)).all()
    for name, elpd in result.loo.items():
        assert elpd["elpd_loo"] == pytest.approx(result.la_cv.loc[result.la_cv["model"] == name, "elpd"].sum())
    with pytest.raises(HierarchyError, match="not the data"):
        cv.heldout_lpd_batched(_load(fits[0]), table.assign(referral=table["referral"] + 1), [[table["la"][0]]])


def _load(path):
    from hierarchy.results.fitfile import load_fit

    return load_fit(path)

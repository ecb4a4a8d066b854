"""What a fit file gives away, and what happens when one is edited (issue 19 sections 1 and 4).

An attacker's attempt to rebuild the observed counts from a fit file, made without the
project's loader: it succeeds on a fit saved with the pointwise log-likelihood (the old default)
and has nothing to work with in a default fit. Then edits of the diagnostics, a design
constant, a draw, the seal and a provenance key are each refused with a message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from hierarchy import cli
from hierarchy.data import reference, simulate
from hierarchy.errors import FitFileError
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.results import fitfile

ROOT = Path(__file__).resolve().parents[2]
# one worker builds the module's fit once: without the group, --dist loadgroup spread the tests over both
# workers and each built it (measured with -n 2: two 100 s set-ups of ``fits`` on the loaded 2-core machine)
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.xdist_group("shareable_fit")]


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> SimpleNamespace:
    """One short NB fit (6 LAs of ~20 neighbourhoods) saved twice: by default, and with the
    pointwise log-likelihood (what every fit file held before)."""
    folder = tmp_path_factory.mktemp("shareable")
    geo = reference.synthetic_geography(6, seed=5, lsoa_per_la=20)
    table = simulate.simulate(geo, seed=5)[0]
    data = folder / "data.parquet"
    table.to_parquet(data)
    spec = load_spec(ROOT / "models/gradient_nb.toml")
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    draws = fit(spec, priors, design, chains=2, tune=100, draws=100, seed=1, progress=False)
    from hierarchy.data.table import data_hash

    kw = dict(data_hash=data_hash(table), data_source=str(data))
    default = fitfile.save_fit(fitfile.build_idata(draws, spec, priors, design, **kw), folder / "default.nc")
    leaky = fitfile.save_fit(fitfile.build_idata(draws, spec, priors, design, include_log_likelihood=True,
                                                 **kw), folder / "with_loglik.nc")
    return SimpleNamespace(folder=folder, data=data, table=table, design=design, default=default,
                           leaky=leaky, spec=spec)


# ---------------------------------------------------------------------------- the attack


def rebuild_counts(path: Path, max_count: int = 2000) -> np.ndarray | None:
    """An attacker's rebuild of every observed count from a fit file alone (None: nothing to use).

    Reads the file with ArviZ (not the project's loader), rebuilds the neighbourhood table from
    ``constant_data`` with a candidate count 0, 1, ..., ``max_count`` in every row, evaluates the
    model's pointwise log-likelihood at the stored draws, and keeps for each row the count whose
    log-likelihood matches the stored one.
    """
    import arviz as az
    from scipy.special import gammaln

    from hierarchy.language.spec import ModelSpec
    from hierarchy.likelihood.jaxmodel import _row_eta

    idata = az.from_netcdf(str(path), engine="h5netcdf")
    if "log_likelihood" not in idata.groups():
        return None
    spec = ModelSpec.from_dict(json.loads(idata.posterior.attrs["hierarchy"])["model_spec"])
    cd = idata.constant_data
    stored = idata.log_likelihood[spec.outcome].stack(s=("chain", "draw")).transpose("s", ...).to_numpy()[:3]
    post = idata.posterior.sel(draw=idata.log_likelihood["draw"]).stack(s=("chain", "draw"))
    table = pd.DataFrame({"neighbourhood": cd["neighbourhood"].to_numpy().astype(str),
                          "la": cd["la_of"].to_numpy().astype(str),
                          "exposure": np.rint(cd["exposure"].to_numpy()),
                          "deprivation": cd["deprivation"].to_numpy(), spec.outcome: 0})
    design = build_design(table, spec)
    k = np.arange(max_count + 1.0)[:, None]
    best = np.full(len(table), -1)
    err = np.full(len(table), np.inf)
    for d in range(len(stored)):
        coef = post["la_coef"].transpose("s", ...).to_numpy()[d]
        eta = np.asarray(_row_eta(design, {"la_coef": coef}, np))[None, :]
        phi = float(post["dispersion"].to_numpy()[d])
        ll = (gammaln(k + phi) - gammaln(phi) - gammaln(k + 1) + phi * np.log(phi) + k * eta
              - (k + phi) * np.logaddexp(np.log(phi), eta))
        e = np.abs(ll - stored[d][None, :])
        pick = e.argmin(0)
        if d == 0:
            best, err = pick, e[pick, np.arange(len(pick))]
        else:
            err = np.maximum(err, e[best, np.arange(len(best))])
    return best if (err < 1e-2).all() else None


def test_old_behaviour_a_stored_log_likelihood_gives_back_every_count(fits):
    """The attack works: with the pointwise log-likelihood, every count comes back exactly."""
    rebuilt = rebuild_counts(fits.leaky, max_count=int(fits.design.y.max()) + 5)
    assert rebuilt is not None
    assert np.array_equal(rebuilt, fits.design.y)
    assert ((fits.design.y >= 1) & (fits.design.y < 10)).sum() >= 10  # small counts among them


def test_a_default_fit_cannot_be_turned_back_into_counts(fits):
    import arviz as az

    assert rebuild_counts(fits.default) is None
    idata = az.from_netcdf(str(fits.default), engine="h5netcdf")
    assert {"log_likelihood", "observed_data", "posterior_predictive", "prior_predictive"}.isdisjoint(
        idata.groups())
    n = len(fits.design.y)
    y = fits.design.y.astype(float)
    for group in idata.groups():  # the only per-row arrays are the public inputs
        ds = idata[group]
        for name, da in ds.data_vars.items():
            if "neighbourhood" in da.dims or n in da.shape:
                assert group == "constant_data" and name in fitfile.PUBLIC_ROW_DATA, (group, name)
            values = da.to_numpy()
            if values.dtype.kind == "f" and values.size >= n:  # no array carries the counts
                assert not np.isin(values.ravel()[:n], y).all() or name in fitfile.PUBLIC_ROW_DATA
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    assert prov["include_log_likelihood"] is False and prov["include_data"] is False
    cd = idata.constant_data  # public inputs as given
    assert np.allclose(np.rint(cd["exposure"].to_numpy()), fits.design_exposure
                       if hasattr(fits, "design_exposure") else np.exp(fits.design.log_exposure))


def test_loo_is_the_same_from_the_data_as_from_a_stored_log_likelihood(fits):
    from hierarchy.results.compare_models import loo

    stored = fitfile.load_fit(fits.leaky)
    recomputed = fitfile.add_log_likelihood(fitfile.load_fit(fits.default), fits.data)
    a, b = loo(stored), loo(recomputed)
    assert a["elpd_loo"] == pytest.approx(b["elpd_loo"], abs=1e-3)
    with pytest.raises(FitFileError, match="not the data this fit was made from"):
        fitfile.add_log_likelihood(fitfile.load_fit(fits.default), fits.table.assign(referral=0))


def test_compare_models_says_what_it_needs_without_a_log_likelihood(fits, capsys):
    assert cli.main(["compare-models", str(fits.default), str(fits.leaky), "--names", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "no pointwise log-likelihood" in err and str(fits.default) in err
    assert cli.main(["compare-models", str(fits.default), str(fits.leaky), "--names", "a", "b",
                     "--data", str(fits.data)]) == 0
    out = capsys.readouterr().out
    assert "elpd_loo" in out


def test_fit_help_says_what_a_fit_file_holds(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--include-log-likelihood" in text and "DISCLOSIVE" in text
    assert "no observed counts and no pointwise log-likelihood" in text
    readme = (ROOT / "README.md").read_text()
    assert "--include-log-likelihood" in readme


def test_poisson_lognormal_marginal_log_likelihood_matches_numerical_integration():
    """The PLN log-likelihood integrates the observation-level effect out (adaptive Gauss-Hermite)."""
    from scipy import integrate, stats

    geo = reference.synthetic_geography(3, seed=1, lsoa_per_la=12)
    table = simulate.simulate(geo, seed=1)[0]
    spec = load_spec(ROOT / "models/inverse_intervention_pln.toml")
    design = build_design(table, spec)
    rng = np.random.default_rng(0)
    post = {"la_coef": rng.normal([-3.0, 0.4], 0.1, size=(3, design.n_la, 2)), "obs_sd": np.array([0.2, 0.5, 1.0])}
    ll = fitfile.pointwise_log_likelihood(spec, design, post)
    from hierarchy.likelihood.jaxmodel import _row_eta

    for d in range(3):
        eta = np.asarray(_row_eta(design, {"la_coef": post["la_coef"][d]}, np))
        sd = post["obs_sd"][d]
        for i in range(0, len(design.y), 4):
            def f(e, y=design.y[i], eta_i=eta[i], sd=sd):
                return stats.poisson.pmf(y, np.exp(eta_i + sd * e)) * stats.norm.pdf(e)

            ref = np.log(integrate.quad(f, -12, 12, points=[0.0], limit=200)[0])
            assert ll[d, i] == pytest.approx(ref, abs=1e-4)


# ---------------------------------------------------------------------------- tampering


def _edit_attrs(path: Path, edit) -> None:
    """Edit the stored provenance (and/or seal) in place, as a user with h5py would."""
    with h5py.File(path, "r+") as f:
        attrs = f["posterior"].attrs
        prov = json.loads(attrs["hierarchy"])
        seal = attrs.get(fitfile.SEAL_ATTR)
        prov, seal = edit(prov, seal)
        attrs["hierarchy"] = json.dumps(prov)
        if seal is None:
            if fitfile.SEAL_ATTR in attrs:
                del attrs[fitfile.SEAL_ATTR]
        else:
            attrs[fitfile.SEAL_ATTR] = seal


def _copy(fits, tmp_path, name="edited.nc") -> Path:
    dst = tmp_path / name
    shutil.copy(fits.default, dst)
    return dst


def _status_ok(prov, seal):
    prov["diagnostics"]["status"], prov["diagnostics"]["reasons"] = "ok", []
    return prov, seal


def _x_mean(prov, seal):
    prov["design"]["X_mean"] *= 0.8
    return prov, seal


def test_the_short_fit_really_warns(fits):
    assert json.loads(fitfile.load_fit(fits.default).posterior.attrs["hierarchy"])["diagnostics"][
        "status"] == "warn"


@pytest.mark.parametrize("edit, message", [
    (_status_ok, "does not match its seal"),
    (_x_mean, "does not match its seal"),
    (lambda p, s: ({k: v for k, v in p.items() if k != "diagnostics"}, s), "lacks diagnostics"),
    (lambda p, s: ({**p, "design": {k: v for k, v in p["design"].items() if k != "X_mean"}}, s),
     "lacks design.X_mean"),
    (lambda p, s: ({k: v for k, v in p.items() if k != "model_hash"}, s), "lacks model_hash"),
    (lambda p, s: (p, None), "no content seal"),
])
def test_an_edited_fit_file_is_refused_with_a_message(fits, tmp_path, capsys, edit, message):
    path = _copy(fits, tmp_path)
    _edit_attrs(path, edit)
    with pytest.raises(FitFileError, match=message):
        fitfile.load_fit(path)
    assert cli.main(["summary", str(path)]) == 2  # a message, not a traceback
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert cli.main(["report", str(path), "--out", str(tmp_path / "rep")]) == 2
    assert not (tmp_path / "rep").exists()  # refused before anything was written


def test_an_edited_draw_is_refused(fits, tmp_path):
    path = _copy(fits, tmp_path)
    with h5py.File(path, "r+") as f:
        f["posterior/gradient"][0, 0] += 0.5
    with pytest.raises(FitFileError, match="does not match its seal"):
        fitfile.load_fit(path)


def test_a_resealed_verdict_is_caught_by_the_draws(fits, tmp_path, capsys):
    """Someone who edits the verdict and recomputes the seal with this code: the summary and the
    report recompute the diagnostics from the draws and refuse the file."""
    path = _copy(fits, tmp_path)
    _edit_attrs(path, _status_ok)
    import arviz as az

    shutil.copy(path, tmp_path / "read.nc")  # read a copy: the edit below needs the file closed
    seal = fitfile.content_hash(az.from_netcdf(str(tmp_path / "read.nc"), engine="h5netcdf"))
    with h5py.File(path, "r+") as f:
        f["posterior"].attrs[fitfile.SEAL_ATTR] = seal
    fitfile.load_fit(path)  # the seal now matches...
    assert cli.main(["summary", str(path)]) == 2  # ...but the verdict is not that of the draws
    err = capsys.readouterr().err
    assert "are not those of the draws" in err and "R-hat" in err


def test_an_untouched_fit_loads_and_summarises(fits, capsys):
    assert cli.main(["summary", str(fits.default)]) == 0
    assert "WARN" in capsys.readouterr().out


# ---------------------------------------------------------------------------- residual risk


def test_groups_whose_totals_the_effect_draws_give_away_are_named(fits):
    """LA effect draws carry each LA's total count (score identity): a fit whose LA has a total
    below 10, or no more rows than LA effects, is flagged as not shareable."""
    spec = fits.spec
    assert fitfile.effect_group_risks(spec, fits.design) == []
    prov = json.loads(fitfile.load_fit(fits.default).posterior.attrs["hierarchy"])
    assert prov["shareable"] is True and prov["disclosure_risks"] == []
    leaky = json.loads(fitfile.load_fit(fits.leaky).posterior.attrs["hierarchy"])
    assert leaky["shareable"] is False
    table = fits.table.copy()
    first = table["la"] == table["la"].iloc[0]
    table.loc[first, "referral"] = 0
    table.loc[first.idxmax(), "referral"] = 3
    risks = fitfile.effect_group_risks(spec, build_design(table, spec))
    assert len(risks) == 1 and risks[0].startswith("1 LA(-stage) group(s) have fewer than 10")
    two = table[~first | (table.index.isin(table.index[first][:2]))]
    two = two.assign(referral=fits.table["referral"])
    risks = fitfile.effect_group_risks(spec, build_design(two, spec))
    assert any("at most 2 row(s)" in r for r in risks)


def test_fits_listing_refuses_an_edited_file_instead_of_showing_its_claim(fits, tmp_path):
    folder = tmp_path / "fits"
    folder.mkdir()
    shutil.copy(fits.default, folder / "good.nc")
    shutil.copy(fits.default, folder / "edited.nc")
    _edit_attrs(folder / "edited.nc", _status_ok)
    lines = {ln.split()[0]: ln for ln in fitfile.list_fits(folder).splitlines()[1:]}
    assert "warn" in lines["good.nc"] and lines["good.nc"].rstrip().endswith("yes")
    assert "refused: its content does not match its seal" in lines["edited.nc"]
    assert " ok " not in lines["edited.nc"]


def test_every_group_term_is_checked_not_only_la_and_msoa(small_geography):
    """``(1 | la:year)`` effect draws give away an LA-year's total like LA effects do: an LA-year
    with one row (Isles of Scilly has one neighbourhood) or under 10 counts is flagged."""
    from hierarchy.data.simulate import simulate_years
    from hierarchy.language.spec import load_spec

    spec = load_spec(ROOT / "models/years_gradient_nb.toml")
    table, _ = simulate_years(small_geography, years=[2019, 2020], seed=3)
    names = ("la_coef", "la:year_raw")
    assert fitfile.effect_group_risks(spec, build_design(table, spec), names) == []
    la, year = table["la"].iloc[0], 2020
    one = table[(table["la"] != la) | (table["year"] != year) | ~table.duplicated(["la", "year"])]
    risks = fitfile.effect_group_risks(spec, build_design(one, spec), names)
    assert any(r.startswith("1 'la:year'(-stage) group(s) have at most 1 row(s)") for r in risks), risks
    assert fitfile.effect_group_risks(spec, build_design(one, spec), ("la_coef",)) == []  # not stored: no risk

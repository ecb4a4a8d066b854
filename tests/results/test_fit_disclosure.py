"""Issue 33 items 1, 2, 5 and 6: what a "shareable" fit file may hold, and what an edit of one must not pass.

Attacks tried (each a test below):
* a count used as exposure (``cp_plan ~ ... + offset(log(s47))``) stored in ``constant_data``;
* a rare neighbourhood covariate (non-zero in one neighbourhood) and a rare stratum level, whose
  coefficient gives that row's count back;
* a design constant (``X_mean``) edited and the file resealed with the project's own function;
* an ``observed_data`` group added to a shareable file and resealed; a private array added;
* the ``shareable`` flag flipped and resealed;
* a signed fit changed after signing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from hierarchy.data import reference, simulate
from hierarchy.data.table import data_hash
from hierarchy.errors import FitFileError, HierarchyError
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results import estimands, fitfile, signing
from tests.helpers import prior_draws

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.xdist_group("fit_disclosure")]
CONVERSION = "cp_plan ~ w * z + (1 + w | la) + offset(log(s47))"


def _spec(formula: str, name: str = "probe") -> ModelSpec:
    return ModelSpec.from_dict({"name": name, "family": "negative_binomial", "formula": formula})


def _save(table, spec, folder: Path, name: str) -> Path:
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    design = build_design(table, spec)
    draws = prior_draws(spec, priors, design, chains=2, draws=40, seed=1)  # what a file records, not estimates
    idata = fitfile.build_idata(draws, spec, priors, design, data_hash=data_hash(table, **spec.hashed_columns))
    return fitfile.save_fit(idata, folder / name)


@pytest.fixture(scope="module")
def conversion(conversion_fit) -> SimpleNamespace:
    """The session's conversion fit (tests/conftest.py), shared with test_conversion_report.py."""
    return conversion_fit


def test_a_count_used_as_exposure_is_never_stored(conversion):
    import arviz as az

    idata = az.from_netcdf(str(conversion.path), engine="h5netcdf")  # as an attacker reads it
    s47 = conversion.table["s47"].to_numpy(dtype=float)
    assert ((s47 >= 1) & (s47 < 10)).sum() > 10  # the small counts the old file gave away
    for group in idata.groups():
        for name, da in idata[group].data_vars.items():
            values = np.asarray(da.to_numpy())
            if values.dtype.kind == "f" and len(s47) in values.shape:
                flat = np.moveaxis(values, values.shape.index(len(s47)), -1).reshape(-1, len(s47))
                assert not any(np.allclose(np.rint(r), s47) for r in flat), (group, name)
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    assert prov["private_row_data"] == ["exposure"] and prov["shareable"] is True
    assert "exposure" not in idata.constant_data


def test_commands_that_need_the_exposure_ask_for_the_data(conversion):
    idata = fitfile.load_fit(conversion.path)
    with pytest.raises(FitFileError, match=r"exposure 's47' \(a count, not public\).*--data"):
        estimands.fit_rows(idata)
    assert "between_la_share" not in set(estimands.estimands_table(idata)["estimand"])  # summary still works
    full = fitfile.with_row_data(idata, conversion.table)
    assert np.allclose(np.rint(full.constant_data["exposure"].to_numpy()), conversion.table["s47"])
    assert "between_la_share" in set(estimands.estimands_table(full)["estimand"])
    with pytest.raises(FitFileError, match="not the data this fit was made from"):
        fitfile.with_row_data(idata, conversion.table.assign(s47=conversion.table["s47"] + 1))


def test_a_count_exposure_is_disclosed_like_a_count_in_decile_tables(conversion):
    full = fitfile.with_row_data(fitfile.load_fit(conversion.path), conversion.table)
    observed = estimands.observed_counts(full, conversion.table)
    la = estimands.la_decile_table(full, observed)
    children = la["children"].to_numpy(dtype=float)
    shown = children[np.isfinite(children)]
    assert np.isnan(children).any() and (shown >= 10).all() and (shown % 5 == 0).all()
    assert np.isnan(la.loc[la["children"].isna(), "observed_rate"]).all()


def _rare_table():
    geo = reference.synthetic_geography(5, seed=4, lsoa_per_la=20)
    table = simulate.simulate(geo, seed=4)[0]
    table["rural"] = 0.0
    table.loc[7, ["rural", "referral"]] = [1.0, 5]
    return table


def test_a_term_on_one_neighbourhood_makes_the_fit_disclosive():
    table = _rare_table()
    spec = _spec("referral ~ w + rural + (1 + w | la) + offset(log(exposure))")
    risks = fitfile.term_risks(spec, build_design(table, spec))
    assert len(risks) == 1 and "term 'rural'" in risks[0] and "single row" in risks[0]
    table.loc[:40, "rural"] = 1.0  # a common covariate: no risk
    assert fitfile.term_risks(spec, build_design(table, spec)) == []


def test_a_stratum_level_with_few_counts_is_named():
    geo = reference.synthetic_geography(4, seed=6, lsoa_per_la=15)
    table = simulate.simulate(geo, seed=6, strata=("sex",))[0]
    spec = _spec("referral ~ w + C(sex) + (1 + w | la) + offset(log(exposure))")
    assert fitfile.term_risks(spec, build_design(table, spec)) == []
    female = table["sex"] == table["sex"].iloc[0]
    table.loc[female, "referral"] = 0
    table.loc[female.idxmax(), "referral"] = 4
    risks = fitfile.term_risks(spec, build_design(table, spec))
    assert any("stratum level" in r and "fewer than 10" in r for r in risks)


def test_the_rare_term_fit_says_so_and_is_listed_as_not_shareable(tmp_path):
    table = _rare_table()
    spec = _spec("referral ~ w + rural + (1 + w | la) + offset(log(exposure))")
    path = _save(table, spec, tmp_path, "rare.nc")
    prov = fitfile.provenance(fitfile.load_fit(path))
    assert prov["shareable"] is False and any("rural" in r for r in prov["disclosure_risks"])
    assert "NO" in fitfile.list_fits(tmp_path).splitlines()[1]


# ---------------------------------------------------------------------------- integrity


def _reseal(path: Path, edit) -> None:
    """Edit a fit as an attacker with this code would: change it, then recompute the seal."""
    import arviz as az

    copy = path.with_name("read-" + path.name)
    shutil.copy(path, copy)
    idata = az.from_netcdf(str(copy), engine="h5netcdf")
    idata = edit(idata)
    fitfile.seal(idata)
    path.unlink()
    idata.to_netcdf(str(path), engine="h5netcdf")


def _edit_prov(fn):
    def edit(idata):
        prov = json.loads(idata.posterior.attrs["hierarchy"])
        fn(prov)
        idata.posterior.attrs["hierarchy"] = json.dumps(prov)
        return idata
    return edit


@pytest.fixture(scope="module")
def default_fit(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("default")
    geo = reference.synthetic_geography(6, seed=5, lsoa_per_la=20)
    table = simulate.simulate(geo, seed=5)[0]
    spec = load_spec(ROOT / "models/inverse_intervention_nb_log.toml")
    return SimpleNamespace(table=table, path=_save(table, spec, folder, "default.nc"), folder=folder)


def _copy(default_fit, tmp_path) -> Path:
    dst = tmp_path / "edited.nc"
    shutil.copy(default_fit.path, dst)
    return dst


def _add_observed(idata):
    import xarray as xr

    idata.add_groups(observed_data=xr.Dataset({"referral": ("neighbourhood", np.ones(
        idata.constant_data.sizes["neighbourhood"]))}))
    return idata


@pytest.mark.parametrize("edit, message", [
    (_edit_prov(lambda p: p["design"].update(X_mean=3 * p["design"]["X_mean"])), "X_mean"),
    (_edit_prov(lambda p: p["design"].update(x_mean=0.5)), "x_mean"),
    (_add_observed, "observed_data group"),
    (_edit_prov(lambda p: p.update(shareable=False)), "shareable: false"),
    (_edit_prov(lambda p: p.update(private_row_data=["exposure"])), "private row data"),
])
def test_an_edit_resealed_with_the_projects_own_function_is_refused(default_fit, tmp_path, edit, message):
    path = _copy(default_fit, tmp_path)
    fitfile.load_fit(path)
    _reseal(path, edit)
    with pytest.raises(FitFileError, match=message):
        fitfile.load_fit(path)
    assert "refused" in fitfile.list_fits(tmp_path)


def test_a_resealed_edit_of_the_public_data_and_its_constant_is_caught_by_the_rows(default_fit, tmp_path):
    """The attacker moves LA deprivation and X_mean together: the rows' child-weighted means disagree."""
    def edit(idata):
        idata.constant_data["la_deprivation"] = idata.constant_data["la_deprivation"] * 3
        prov = json.loads(idata.posterior.attrs["hierarchy"])
        prov["design"]["X_mean"] *= 3
        idata.posterior.attrs["hierarchy"] = json.dumps(prov)
        return idata

    path = _copy(default_fit, tmp_path)
    _reseal(path, edit)
    with pytest.raises(FitFileError, match="la_deprivation|z \\(the transformed"):
        fitfile.load_fit(path)


def test_a_signature_proves_a_fit_unchanged(default_fit, tmp_path):
    key = tmp_path / "keys" / "env.key"
    with pytest.raises(HierarchyError, match="NAME.key"):
        signing.generate_key(tmp_path / "env.pem")
    pub = signing.generate_key(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(HierarchyError, match="only with --force"):
        signing.generate_key(key)
    path = _copy(default_fit, tmp_path)
    with pytest.raises(FitFileError, match="no signature"):
        signing.verify_fit(path, pub)
    signing.sign_fit(path, key)
    signing.verify_fit(path, pub)
    other = signing.generate_key(tmp_path / "other.key")
    with pytest.raises(FitFileError, match="does not verify"):
        signing.verify_fit(path, other)
    _reseal(path, _edit_prov(lambda p: p["design"].update(X_mean=3 * p["design"]["X_mean"])))
    with pytest.raises(FitFileError, match="does not verify"):
        signing.verify_fit(path, pub)


def test_an_edited_draw_with_h5py_still_breaks_the_seal(default_fit, tmp_path):
    path = _copy(default_fit, tmp_path)
    with h5py.File(path, "r+") as f:
        f["posterior/intercept"][0, 0] += 0.5
    with pytest.raises(FitFileError, match="does not match its seal"):
        fitfile.load_fit(path)


def test_keygen_sign_and_verify_from_the_command_line(default_fit, tmp_path, capsys):
    from hierarchy import cli

    fit = _copy(default_fit, tmp_path)
    key = tmp_path / "env.key"
    assert cli.main(["keygen", "--out", str(key)]) == 0
    assert cli.main(["keygen", "--out", str(key)]) == 2  # a key is replaced only with --force
    assert cli.main(["sign", str(fit), "--key", str(key)]) == 0
    assert cli.main(["sign", str(fit), "--key", str(key)]) == 2  # an existing signature needs --force
    assert cli.main(["sign", str(fit), "--key", str(key), "--force"]) == 0
    assert cli.main(["verify", str(fit), "--key", str(tmp_path / "env.pub")]) == 0
    assert "signature verified" in capsys.readouterr().out
    with h5py.File(fit, "r+") as f:
        f["posterior"].attrs["note"] = "edited"
    assert cli.main(["verify", str(fit), "--key", str(tmp_path / "env.pub")]) == 2
    assert "does not verify" in capsys.readouterr().err

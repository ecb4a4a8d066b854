"""The export that leaves the children behind: exact likelihood, disclosure refusal, same posterior."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy.data import simulate
from hierarchy.data.reference import synthetic_geography
from hierarchy.errors import HierarchyError
from hierarchy.inference import sufficient as su
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup():
    geo = synthetic_geography(6, seed=1, lsoa_per_la=20)
    table, _ = simulate.simulate(geo, seed=2, strata=("sex",))
    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    spec = ModelSpec.from_dict({**spec.to_dict(), "strata": ["sex"]})
    return table, spec, load_priors(ROOT / "priors/weakly_informative.toml")


def test_sums_give_the_same_log_density_up_to_a_constant(setup):
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_density

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn

    jax.config.update("jax_enable_x64", True)
    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    design = build_design(table, spec)
    layout = make_layout(design)
    full, data = model_fn(spec, priors, design, layout), model_data(layout)
    suff = su.sufficient_model(spec, priors, *su.public_design(table.drop(columns=["referral"]), sums, spec))
    diffs = []
    for seed in range(3):
        tr = handlers.trace(handlers.seed(full, seed)).get_trace(data)
        params = {k: v["value"] for k, v in tr.items() if v["type"] == "sample"}
        assert "stratum_gradient_offset" in params
        diffs.append(float(log_density(full, (data,), {}, params)[0] - log_density(suff, (), {}, params)[0]))
    assert np.ptp(diffs) < 1e-6 * max(1.0, abs(diffs[0]))


def test_export_refuses_small_sums_and_non_poisson(setup):
    table, spec, _ = setup
    small = table.copy()
    la0 = small["la"].iloc[0]
    small.loc[small["la"] == la0, "referral"] = 0
    small.loc[small.index[small["la"] == la0][0], "referral"] = 9
    with pytest.raises(HierarchyError, match="fewer than 10 children"):
        su.sufficient_sums(small, spec)
    small.loc[small.index[small["la"] == la0][0], "referral"] = 0
    with pytest.raises(HierarchyError, match="fewer than 10"):  # zeros are disclosive too
        su.sufficient_sums(small, spec)
    nb = ModelSpec.from_dict({**spec.to_dict(), "family": "negative_binomial"})
    with pytest.raises(HierarchyError, match="only for a Poisson"):
        su.sufficient_sums(table, nb)


def test_sums_file_round_trip(setup, tmp_path):
    table, spec, _ = setup
    sums = su.sufficient_sums(table, spec)
    su.write_sums(sums, tmp_path / "s.csv", spec=spec, threshold=10)
    back = su.read_sums(tmp_path / "s.csv")
    assert (back["n"] >= 10).all()
    np.testing.assert_allclose(back["sum_yw"], sums["sum_yw"], rtol=1e-9)


@pytest.mark.slow
@pytest.mark.long
def test_sufficient_fit_matches_neighbourhood_fit(setup):
    from hierarchy.inference.sampling import fit

    table, spec, priors = setup
    sums = su.sufficient_sums(table, spec)
    outside = su.fit_sufficient(sums, table.drop(columns=["referral"]), spec, priors, chains=2, tune=400,
                                draws=600, seed=1)
    inside = fit(spec, priors, build_design(table, spec), chains=2, tune=400, draws=600, seed=2,
                 progress=False).posterior
    for name in ("gradient", "intercept"):
        a, b = np.ravel(outside[name]), np.ravel(inside[name])
        se = np.sqrt(a.var() / 200 + b.var() / 200)  # conservative ESS of 200 per fit
        assert abs(a.mean() - b.mean()) < 4 * se, (name, a.mean(), b.mean(), se)


@pytest.mark.slow  # ~110 s on the shared 2-core machine (compiles, samples, summary)
@pytest.mark.long
def test_fit_sufficient_cli_writes_a_normal_fit_file(tmp_path, capsys):
    """extract -> durations table (stays inside) -> sums -> hierarchy fit --sufficient -> summary."""
    import pandas as pd

    from hierarchy.cli import main
    from hierarchy.data import childsim
    from hierarchy.data import extract as ex
    from hierarchy.data import table as data
    from hierarchy.results import durations as du
    from hierarchy.results.fitfile import load_fit, provenance

    geo = synthetic_geography(6, seed=3, lsoa_per_la=30)
    extract, _, _ = childsim.simulate_extract(geo, year=2019, seed=2)
    sp = du.spells(ex.parse_extract(extract), *du.SPELLS["cin"], since=pd.Timestamp("2018-04-01"),
                   extract_end=pd.Timestamp("2019-03-31"))
    with pytest.raises(HierarchyError, match="fewer than 10 children"):  # the 182-365 band of small LAs
        su.sufficient_sums(du.model_table(sp, geo), load_spec(ROOT / "models/cin_duration_poisson.toml"))
    table = du.model_table(sp, geo, (0, 91))  # coarser bands: every sum behind >= 10 closures
    inside = data.write_table(table, tmp_path / "cin.parquet")
    public = data.write_table(table.drop(columns=["events"]), tmp_path / "public.parquet")
    sums, fit = tmp_path / "sums.csv", tmp_path / "sums.nc"
    assert main(["export-sufficient", str(inside), "--model", "cin_duration_poisson", "--out", str(sums)]) == 0
    assert main(["fit", "--sufficient", str(inside), "--data", str(public), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "30", "--draws", "30", "--quiet",
                 "--out", str(fit)]) == 2  # the table with counts is not a sums file
    assert main(["fit", "--sufficient", str(sums), "--data", str(inside), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "30", "--draws", "30", "--quiet",
                 "--out", str(fit)]) == 2  # the public table may not carry the counts
    assert "holds no counts" in capsys.readouterr().err
    assert main(["fit", "--sufficient", str(sums), "--data", str(public), "--model", "gradient_poisson",
                 "--chains", "1", "--tune", "30", "--draws", "30", "--quiet", "--out", str(fit)]) == 2
    assert "exported for a model" in capsys.readouterr().err
    assert main(["fit", "--sufficient", str(sums), "--data", str(public), "--model", "cin_duration_poisson",
                 "--priors", "time_to_event", "--chains", "1", "--tune", "100", "--draws", "100", "--quiet",
                 "--out", str(fit)]) == 0
    idata = load_fit(fit, model=ROOT / "models/cin_duration_poisson.toml",
                     priors=ROOT / "priors/time_to_event.toml")
    prov = provenance(idata)
    assert prov["sampler"]["likelihood"] == "sufficient_sums" and "sums.csv" in prov["data_source"]
    assert "log_likelihood" not in idata.groups() and "observed_data" not in idata.groups()
    assert set(idata.posterior.stratum.values) == {"0091+"}
    capsys.readouterr()
    assert main(["summary", str(fit)]) == 0
    assert "gradient" in capsys.readouterr().out
    est = du.posterior_estimands(idata)
    assert len(est) == 15 and (est["median_days"] > 0).all()


def test_public_table_must_match_the_sums(setup):
    table, spec, _ = setup
    sums = su.sufficient_sums(table, spec)
    public = table.drop(columns=["referral"])
    with pytest.raises(HierarchyError, match="have no sum"):  # an LA the sums do not cover
        su.public_design(public, sums[sums["la"] != sums["la"].iloc[0]], spec)
    extra = public[public["la"] == public["la"].iloc[0]].assign(la="LA999",
                                                                neighbourhood=lambda t: t["neighbourhood"] + "x")
    with pytest.raises(HierarchyError, match="have no sum"):
        su.public_design(pd.concat([public, extra]), sums, spec)


# ---------------------------------------------------------------------------- the commands' files, from any folder


def test_export_sufficient_never_writes_over_a_file_and_works_from_any_folder(tmp_path, monkeypatch, capsys):
    """Run from a folder with no models/ (the model is found by its shipped name); an existing sums
    file, the input table or a file of another kind is refused, untouched; --force replaces a sums file."""
    from hierarchy.cli import main
    from hierarchy.data import table as data

    table, _ = simulate.simulate(synthetic_geography(6, seed=1, lsoa_per_la=20), seed=2)
    inside = data.write_table(table, tmp_path / "inside.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sums = tmp_path / "sums.csv"
    assert main(["export-sufficient", str(inside), "--out", str(sums)]) == 0
    first = sums.read_bytes()
    assert su.read_sums(sums)["n"].min() >= 10 and "gradient_poisson" in first.decode().splitlines()[0]
    sums.write_text(first.decode().replace("gradient_poisson", "edited by hand"))
    capsys.readouterr()
    assert main(["export-sufficient", str(inside), "--out", str(sums)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert "edited by hand" in sums.read_text()  # untouched
    assert main(["export-sufficient", str(inside), "--out", str(inside)]) == 2  # its own input
    assert inside.stat().st_size > 0 and len(pd.read_parquet(inside)) == len(table)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main(["export-sufficient", str(inside), "--out", str(other)]) == 2  # not a CSV name
    assert other.read_text() == "mine"
    assert main(["export-sufficient", str(inside), "--out", str(sums), "--force"]) == 0
    assert sums.read_bytes() == first
    assert list(elsewhere.iterdir()) == []  # nothing written where the command ran


def test_fit_sufficient_defaults_are_shipped_files_found_from_any_folder(tmp_path, monkeypatch):
    """fit-sufficient's default model and priors are the shipped gradient_poisson and
    weakly_informative wherever it runs (they were paths relative to the working folder)."""
    from hierarchy import cli, shipped, workflow

    seen = {}
    monkeypatch.setattr(workflow, "fit_sums_files", lambda **kw: seen.update(kw) or "fitted")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sums.csv").write_text("la\n")
    (tmp_path / "public.csv").write_text("la\n")
    assert cli.main(["fit-sufficient", "sums.csv", "--public", "public.csv", "--out", "fit.nc"]) == 0
    assert seen["model"] == shipped.resolve("gradient_poisson", "models") == ROOT / "models/gradient_poisson.toml"
    assert seen["priors"] == ROOT / "priors/weakly_informative.toml"
    assert seen["model"].is_file() and seen["priors"].is_file()
    (tmp_path / "fit.nc").write_text("not a fit")
    assert cli.main(["fit-sufficient", "sums.csv", "--public", "public.csv", "--out", "fit.nc"]) == 2
    assert (tmp_path / "fit.nc").read_text() == "not a fit"


def test_pseudo_counts_add_up_to_each_cells_sum():
    """Largest remainders: whole numbers in proportion to the shares, summing exactly to each cell's n."""
    n = np.array([7.0, 0.0, 10.0])
    cell = np.array([0, 0, 0, 1, 2, 2])
    share = np.array([0.5, 0.3, 0.2, 1.0, 0.55, 0.45])
    out = su._apportion(n, cell, share)
    assert out.tolist() == [4, 2, 1, 0, 6, 4]  # 3.5, 2.1, 1.4 -> 3 + 2 + 1 = 6, the one left to 3.5
    assert np.bincount(cell, out).tolist() == n.tolist()


# ------------------------------------------------------------------ impossible inputs and differencing (issue 33)


def test_export_refuses_a_count_as_exposure_row_terms_and_a_lowered_threshold(setup):
    """The exposure of an exported model must be public (children); row terms are not summed; a threshold
    below the default needs the explicit choice that ``report`` asks for."""
    table, spec, _ = setup
    conv = ModelSpec.from_dict({**load_spec(ROOT / "models/re_referrals_nb.toml").to_dict(), "family": "poisson"})
    assert conv.exposure == "referral"
    with pytest.raises(HierarchyError, match="exposure of an exported model must be public"):
        su.sufficient_sums(table.assign(re_referral=0), conv)
    rural = load_spec(ROOT / "models/rural_gradient_nb.toml").to_dict()
    rural = ModelSpec.from_dict({**rural, "family": "poisson"})
    with pytest.raises(HierarchyError, match="not sufficient for neighbourhood-level"):
        su.sufficient_sums(table.assign(rural=0.0), rural)
    with pytest.raises(HierarchyError, match="--allow-below-default-rules"):
        su.sufficient_sums(table, spec, threshold=5)
    with pytest.raises(HierarchyError, match="whole number"):
        su.sufficient_sums(table, spec, threshold=2.5)
    assert len(su.sufficient_sums(table, spec, threshold=5, allow_below_default_rules=True)) > 0


def _drop_one_neighbourhood(table: pd.DataFrame, count: int) -> tuple[pd.DataFrame, str]:
    """The table with one neighbourhood's referrals set to ``count`` per stratum, and the code."""
    code = table["neighbourhood"].iloc[0]
    table = table.copy()
    table.loc[table["neighbourhood"] == code, "referral"] = count
    return table, code


def test_two_exports_that_differ_by_one_neighbourhood_may_not_both_leave(setup, tmp_path):
    """All neighbourhoods, then all but one: each passes the threshold, but the difference is that
    neighbourhood's count. The second export is refused (LA x stratum cells and LA totals, also across
    different strata), is written with a warning and a recorded override when allowed, and a difference
    of at least the threshold passes."""
    table, spec, _ = setup
    table, code = _drop_one_neighbourhood(table, 3)
    all_rows, all_but_one = table, table[table["neighbourhood"] != code]
    su.write_sums(su.sufficient_sums(all_rows, spec), tmp_path / "all.csv", spec=spec, threshold=10)
    su.write_sums(su.sufficient_sums(all_rows, spec), tmp_path / "again.csv", spec=spec, threshold=10)  # same rows
    log = su.read_export_log(tmp_path / su.EXPORT_LOG)
    assert len(log) == 2 and log[0]["table_hash"] == log[1]["table_hash"] and "overlap_allowed" not in log[1]
    la = table.loc[table["neighbourhood"] == code, "la"].iloc[0]
    with pytest.raises(HierarchyError, match=f"export 1 in the log .*differ in {la}/referral/female") as err:
        su.write_sums(su.sufficient_sums(all_but_one, spec), tmp_path / "b.csv", spec=spec, threshold=10)
    r0, r1, n0, n1 = map(int, re.search(r"\((\d+) vs (\d+) rows, n (\d+) vs (\d+)\)", str(err.value)).groups())
    assert r0 - r1 == 1 and n0 - n1 == 3  # one row fewer, and that neighbourhood's count
    assert not (tmp_path / "b.csv").exists() and len(su.read_export_log(tmp_path / su.EXPORT_LOG)) == 2
    # unstratified, all but one: the LA totals differ by the neighbourhood's 6 referrals
    flat = ModelSpec.from_dict({**spec.to_dict(), "strata": []})
    with pytest.raises(HierarchyError, match=f"differ in {la}/referral \\(.* rows, n (\\d+) vs (\\d+)\\)") as err:
        su.write_sums(su.sufficient_sums(all_but_one, flat), tmp_path / "c.csv", spec=flat, threshold=10)
    n = re.search(r"n (\d+) vs (\d+)\)", str(err.value)).group(1, 2)
    assert int(n[0]) - int(n[1]) == 6  # female 3 + male 3
    # the same table with one count corrected: same rows, sums one child apart
    fixed = all_rows.copy()
    fixed.loc[fixed.index[5], "referral"] += 1
    with pytest.raises(HierarchyError, match="the same rows, n"):
        su.write_sums(su.sufficient_sums(fixed, spec), tmp_path / "d.csv", spec=spec, threshold=10)
    with pytest.warns(UserWarning, match="may not leave the secure environment together"):
        su.write_sums(su.sufficient_sums(all_but_one, spec), tmp_path / "b.csv", spec=spec, threshold=10,
                      allow_overlap=True)
    assert "export 1" in su.read_export_log(tmp_path / su.EXPORT_LOG)[-1]["overlap_allowed"][0]
    # a neighbourhood with >= 10 referrals in each cell may be left out: no conflict
    big, code2 = _drop_one_neighbourhood(table, 12)
    other = tmp_path / "other"
    su.write_sums(su.sufficient_sums(big, spec), other / "all.csv", spec=spec, threshold=10)
    su.write_sums(su.sufficient_sums(big[big["neighbourhood"] != code2], spec), other / "b.csv", spec=spec,
                  threshold=10)
    assert len(su.read_export_log(other / su.EXPORT_LOG)) == 2


def test_an_unreadable_export_log_is_never_passed_over(setup, tmp_path):
    table, spec, _ = setup
    (tmp_path / su.EXPORT_LOG).write_text('{"exports": 3}')
    with pytest.raises(HierarchyError, match="export log .* cannot be read.*never delete it"):
        su.write_sums(su.sufficient_sums(table, spec), tmp_path / "s.csv", spec=spec, threshold=10)
    assert not (tmp_path / "s.csv").exists() and (tmp_path / su.EXPORT_LOG).read_text() == '{"exports": 3}'


@pytest.fixture
def sums_file(setup, tmp_path):
    table, spec, _ = setup
    path = su.write_sums(su.sufficient_sums(table, spec), tmp_path / "s.csv", spec=spec, threshold=10)
    return path, path.read_text().splitlines()


def _edit(path: Path, lines: list[str], row: int, col: str, value: str) -> Path:
    header = lines[1].split(",")
    cells = lines[2 + row].split(",")
    cells[header.index(col)] = value
    path.write_text("\n".join([*lines[:2 + row], ",".join(cells), *lines[3 + row:]]) + "\n")
    return path


@pytest.mark.parametrize(("col", "value", "message"), [
    ("n", "-20", "column n, line 4 .*cannot be negative"),
    ("n", "12.5", "column n, line 4 .*whole number"),
    ("n", "5", "column n, line 4 .*below the file's own threshold \\(10\\)"),
    ("n", "", "column n, line 4 .*must be a number"),
    ("sum_yw", "inf", "column sum_yw, line 4 .*finite"),
])
def test_read_sums_refuses_sums_no_table_gives(sums_file, col, value, message):
    path, lines = sums_file
    with pytest.raises(HierarchyError, match=message):
        su.read_sums(_edit(path, lines, 1, col, value))


def test_sums_must_be_plausible_for_the_public_table(setup, sums_file):
    """A sum of 1e12 children, a count-weighted sum outside [n min w, n max w], and a repeated cell."""
    table, spec, _ = setup
    path, lines = sums_file
    public = table.drop(columns=["referral"])
    su.public_design(public, su.read_sums(path), spec)  # as written: fine
    with pytest.raises(HierarchyError, match="column n, line 3 .*more than the cell's exposure allows"):
        su.public_design(public, su.read_sums(_edit(path, lines, 0, "n", "1000000000000")), spec)
    with pytest.raises(HierarchyError, match="column sum_yw, line 5 .*outside \\[n x min w, n x max w\\]"):
        su.public_design(public, su.read_sums(_edit(path, lines, 2, "sum_yw", "1e9")), spec)
    path.write_text("\n".join([*lines, lines[2]]) + "\n")
    with pytest.raises(HierarchyError, match="appears twice"):
        su.read_sums(path)


def test_fit_sufficient_gives_one_line_for_a_negative_sum(setup, sums_file, tmp_path, capsys):
    from hierarchy.cli import main
    from hierarchy.data import table as data

    table, _, _ = setup
    path, lines = sums_file
    public = data.write_table(table.drop(columns=["referral"]), tmp_path / "public.parquet")
    _edit(path, lines, 0, "n", "-3")
    assert main(["fit-sufficient", str(path), "--public", str(public), "--out", str(tmp_path / "f.nc")]) == 2
    err = capsys.readouterr().err
    assert "cannot be negative" in err and "Traceback" not in err and not (tmp_path / "f.nc").exists()


def test_cli_export_sufficient_refuses_the_all_but_one_export(setup, tmp_path, capsys):
    """The differencing attack through the command: two tables, one neighbourhood apart, into one folder."""
    from hierarchy.cli import main
    from hierarchy.data import table as data

    table, _, _ = setup
    flat = table.groupby(["neighbourhood", "la", "deprivation"], as_index=False)[["exposure", "referral"]].sum()
    flat, code = _drop_one_neighbourhood(flat, 4)
    full = data.write_table(flat, tmp_path / "full.parquet")
    part = data.write_table(flat[flat["neighbourhood"] != code], tmp_path / "part.parquet")
    out = tmp_path / "out"
    assert main(["export-sufficient", str(full), "--out", str(out / "a.csv")]) == 0
    capsys.readouterr()
    assert main(["export-sufficient", str(part), "--out", str(out / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert "export 1 in the log" in err and "Traceback" not in err and not (out / "b.csv").exists()
    n0, n1 = map(int, re.search(r"n (\d+) vs (\d+)\)", err).groups())
    assert n0 - n1 == 4  # the left-out neighbourhood's count

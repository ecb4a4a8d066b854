"""``hierarchy fit`` of a panel model (issue 28 item 6): one sealed fit file per measure with its provenance,
no counts in a shareable file, the summary's parameter table, and one-line errors for wrong inputs.

The fast tests replace the sampler by independent normal draws of the model's shapes (the CLI, the files and
the checks are what they test); the slow one fits a simulated panel through the command and recovers its truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hierarchy import cli
from hierarchy.data import panel
from hierarchy.likelihood import panel_model as pm
from hierarchy.results import panel_fitfile as pf
from tests.likelihood.test_panel_formula import MODELS

YEARS = (2016, 2017, 2018, 2019, 2020, 2021)


@pytest.fixture(scope="module")
def panel_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("panel") / "panel.parquet"
    return panel.write_panel(panel.synthetic_panel(n_la=12, years=YEARS, seed=3, small_las=2), path)


@pytest.fixture
def fake(monkeypatch):
    """``fit_panels`` replaced by normal draws of each parameter's shape; records what it was asked."""
    from hierarchy.inference import sampling

    calls = []

    def fit_panels(designs, spec, *, seed=0, progress=False, **asked):
        calls.append({"measures": [d.measure for d in designs], "seed": seed, **asked})
        chains, draws = asked.get("chains", 4), asked.get("draws", 1000)
        rng = np.random.default_rng(seed)
        fits = []
        for d in designs:
            n, u, y = chains * draws, len(d.units), len(d.years)
            r = rng.uniform(-0.5, 0.5, n)
            corr = np.zeros((n, 2, 2))
            corr[:, 0, 0], corr[:, 1, 0], corr[:, 1, 1] = 1, r, np.sqrt(1 - r**2)
            g_raw = rng.normal(0, 0.03, (n, y - 2))
            draws_ = {**{k: rng.normal(0, 0.1, n) for k in ("alpha", "b_t", "b_dep", "b_dep_t")},
                      **{k: np.abs(rng.normal(0.2, 0.02, n)) for k in ("sd_u", "sd_v", "sd_g", "inv_sqrt_phi")},
                      "L_corr": corr, "uv": rng.normal(0, 0.2, (n, u, 2)), "g_raw": g_raw,
                      "g": g_raw @ pm.year_basis(d.t).T}
            draws_["phi"] = 1 / draws_["inv_sqrt_phi"] ** 2
            grouped = {k: v.reshape(chains, draws, *v.shape[1:]) for k, v in draws_.items()}
            diag = sampling.panel_diagnostics(pm.diagnostic_draws(grouped),
                                              {"diverging": np.zeros((chains, draws), bool)})
            diag.update(draws=draws, continuations=0)
            fits.append(pm.PanelFit(spec=spec, design=d, draws=draws_, centred=True, seconds=0.1,
                                    diagnostics=diag))
        return fits

    monkeypatch.setattr(sampling, "fit_panels", fit_panels)
    return calls


def _fit(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["fit", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_writes_one_sealed_shareable_fit_per_measure(panel_file, tmp_path, fake, capsys):
    out = tmp_path / "fits" / "stages.nc"
    code, text, err = _fit(capsys, "--model", "panel_stages_nb", "--data", panel_file, "--out", out,
                           "--measure", "referrals", "--measure", "s47", "--chains", "2", "--draws", "50",
                           "--seed", "3")
    assert code == 0, err
    assert fake == [{"measures": ["referrals", "s47"], "seed": 3, "chains": 2, "draws": 50, "tune": 1000,
                     "max_draws": 150, "target_accept": 0.9}]  # the rest: fit_panels' defaults
    for m in ("referrals", "s47"):
        path = out.with_name(f"stages.{m}.nc")
        formula = f"{m} ~ t + C(year) + dep + dep:t + (1 + t | la) + offset(log(children))"
        assert f"wrote {path}: {m} ({formula})" in text
        idata = pf.load_panel_fit(path)
        prov = json.loads(idata.posterior.attrs["hierarchy"])
        assert prov["kind"] == "panel" and prov["measure"] == m and prov["method"] == "nuts"
        assert prov["model_file_sha256"] == pf.file_sha256(MODELS / "panel_stages_nb.toml")
        assert prov["data_sha256"] == pf.file_sha256(panel_file) and "public" in prov["data_public"]
        assert {k: prov["sampler"][k] for k in ("chains", "tune", "draws", "max_draws", "target_accept")} == \
            {"chains": 2, "tune": 1000, "draws": 50, "max_draws": 150, "target_accept": 0.9}
        assert prov["diagnostics"]["draws"] == 50 and prov["cells"]["observed"] > 0
        if m == "referrals":  # the two LAs of 300 children have ~16 referrals a year
            assert prov["shareable"] and not prov["disclosure_risks"] and "shareable" in text
        else:  # and ~5 s47 enquiries a year, mostly "c": their totals are small, the LA effects give them away
            assert not prov["shareable"] and "LA(s) of s47 have" in " ".join(prov["disclosure_risks"])
        assert prov["formula"] == formula and prov["panel_spec"]["name"] == "panel_stages_nb"
        assert set(idata.groups()) == {"posterior", "constant_data"}  # no counts
        assert idata.posterior["uv"].shape == (2, 50, 12, 2) and idata.posterior["g"].dims[-1] == "year"
        assert not [v for v in idata.posterior.data_vars if v.endswith("_raw") or v == "L_corr"]
        assert set(idata.constant_data.data_vars) == {"la_name", "t", "z", "children"}
        summary = pf.summary_text(path)
        assert f"panel fit of {m} under panel_stages_nb" in summary
        assert ("shareable: yes" in summary) == (m == "referrals")
        rows = [ln.split()[0] for ln in summary.splitlines()[-9:]]
        assert rows == ["alpha", "b_t", "b_dep", "b_dep_t", "sd_u", "sd_v", "corr_uv", "sd_g", "phi"]
    # the draws are the sampler's, chain by chain
    first = pf.load_panel_fit(out.with_name("stages.referrals.nc"))
    assert np.isclose(float(first.posterior["corr_uv"].sel(chain=0, draw=0)),
                      float(first.posterior["corr_uv"].values.ravel()[0]))
    # again: the files exist, so --force is needed, before any work
    fake.clear()
    code, _, err = _fit(capsys, "--model", "panel_stages_nb", "--data", panel_file, "--out", out,
                        "--measure", "referrals", "--measure", "s47", "--chains", "2", "--draws", "50")
    assert code == 2 and "stages.referrals.nc already exists; pass --force" in err and not fake
    assert _fit(capsys, "--model", "panel_stages_nb", "--data", panel_file, "--out", out, "--measure",
                "referrals", "--measure", "s47", "--chains", "2", "--draws", "50", "--force")[0] == 0


def test_a_conversion_fit_stores_no_count_and_include_data_is_checked(panel_file, tmp_path, fake, capsys):
    out = tmp_path / "s47_per_referral.nc"
    code, text, err = _fit(capsys, "--model", "panel_screening_nb", "--data", panel_file, "--out", out,
                           "--measure", "s47_per_referral", "--chains", "2", "--draws", "20", "--quiet")
    assert code == 0, err
    assert f"wrote {out}: s47_per_referral (s47 ~ " in text and "offset(log(referrals))" in text
    idata = pf.load_panel_fit(out)  # one measure: --out itself
    assert set(idata.constant_data.data_vars) == {"la_name", "t", "z"}  # the exposure is a count: not stored
    # the counts of two LAs of 300 children: stored with --include-data, some are below 10
    kept = tmp_path / "with_data.nc"
    code, text, err = _fit(capsys, "--model", "panel_stages_nb", "--data", panel_file, "--out", kept,
                           "--measure", "s47", "--chains", "2", "--draws", "20", "--include-data")
    assert code == 0, err
    prov = json.loads(pf.load_panel_fit(kept).posterior.attrs["hierarchy"])
    assert not prov["shareable"] and any("below 10" in r for r in prov["disclosure_risks"])
    assert "DISCLOSIVE, keep it inside" in text and "shareable: NO" in pf.summary_text(kept)


def test_summary_formats_and_the_seal(panel_file, tmp_path, fake, capsys):
    from hierarchy.errors import FitFileError

    out = tmp_path / "s47.nc"
    assert _fit(capsys, "--model", "panel_stages_nb", "--data", panel_file, "--out", out, "--measure", "s47",
                "--chains", "2", "--draws", "20")[0] == 0
    csv = pf.summary_text(out, fmt="csv").splitlines()
    assert csv[0] == "parameter,mean,sd,lower,upper,r_hat,ess_bulk,ess_tail" and len(csv) == 10
    data = json.loads(pf.summary_text(out, fmt="json", prob=0.5))
    assert data["measure"] == "s47" and data["prob"] == 0.5 and len(data["parameters"]) == 9
    assert not data["shareable"] and data["disclosure_risks"]
    md = pf.summary_text(out, fmt="markdown")
    assert "| parameter | mean | sd | lower | upper | r_hat | ess_bulk | ess_tail |" in md
    assert "- formula: s47 ~" in md
    # the commands: summary prints the panel table; the neighbourhood reader says what takes a panel fit
    capsys.readouterr()
    assert cli.main(["summary", str(out), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:10] == csv
    from hierarchy.results.fitfile import load_fit

    with pytest.raises(FitFileError, match="a panel fit .*hierarchy summary prints it; report, predict"):
        load_fit(out)
    with pytest.raises(FitFileError, match="format must be one of"):
        pf.summary_text(out, fmt="xml")
    # a disclosive fit relabelled shareable is refused: the seal covers the provenance
    idata = pf.load_panel_fit(out)
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    idata.posterior.attrs["hierarchy"] = json.dumps({**prov, "shareable": True, "disclosure_risks": []})
    edited = tmp_path / "edited.nc"
    idata.to_netcdf(str(edited), engine="h5netcdf")
    with pytest.raises(FitFileError, match="edited.nc: its content does not match its seal"):
        pf.load_panel_fit(edited)


def test_panel_risks_follow_the_neighbourhood_rules():
    p = panel.synthetic_panel(n_la=6, years=YEARS, seed=1, small_las=2)
    spec = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    assert pf.panel_risks(pm.panel_design(p.table, "referrals", spec), la_trend=True, include_data=False) == []
    d = pm.panel_design(p.table, "s47", spec)  # the fifth LA has two published counts (7 and 7), the sixth none
    assert np.isnan(d.count[-6:]).all() and d.count[-12:-6][np.isfinite(d.count[-12:-6])].tolist() == [7, 7]
    cells = "1 LA(s) of s47 have at most 2 published cell(s): their counts can be rebuilt from the LA effect draws"
    assert pf.panel_risks(d, la_trend=True, include_data=False) == [cells]
    assert pf.panel_risks(d, la_trend=False, include_data=False) == []  # one effect per LA: two cells are enough
    assert pf.panel_risks(d, la_trend=True, include_data=True) == [
        cells, "the stored data (include_data) hold 2 count(s) below 10"]
    assert pf.panel_risks(d, la_trend=False, include_data=False, threshold=20) == [
        "1 LA(s) of s47 have fewer than 20 published counts in all: their totals can be estimated closely from "
        "the LA effect draws"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "panel_stages_nb", "--data", "{table}"], "{table} is not an LA panel: panel_stages_nb"),
    (["--model", "gradient_nb", "--data", "{panel}"], "{panel} is an LA panel (hierarchy panel build) and"),
    (["--model", "panel_stages_nb", "--data", "{panel}"],
     "{panel} has no LA rows of measure icpc, cpp_start, cla_at31 (column 'measure' has referrals, s47, "
     "s47_per_referral): fit the ones it has with --measure referrals --measure s47"),
    (["--model", "panel_stages_nb", "--data", "{panel}", "--measure", "s47_per_referral"],
     "--measure s47_per_referral: panel_stages_nb"),
    (["--model", "panel_stages_nb", "--data", "{panel}", "--priors", "vague"],
     "--priors does not apply to the panel"),
    (["--model", "panel_stages_nb", "--data", "{panel}", "--sampler", "pymc"], "--sampler does not apply"),
    (["--model", "gradient_nb", "--data", "{table}", "--measure", "s47"],
     "is a neighbourhood model: drop --measure"),
])
def test_wrong_inputs_are_one_line_errors_before_any_work(argv, message, panel_file, tmp_path, fake, capsys):
    table = tmp_path / "neighbourhoods.csv"
    table.write_text("neighbourhood,la,referral\nA,L,3\n")
    fill = {"{table}": str(table), "{panel}": str(panel_file)}
    argv = [fill.get(a, a) for a in argv]
    code, _, err = _fit(capsys, *argv, "--out", tmp_path / "x.nc")
    for k, v in fill.items():
        message = message.replace(k, v)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not fake and not (tmp_path / "x.nc").exists()


@pytest.mark.slow
@pytest.mark.long  # ~1.5-2 min; the sampler's own panel checks (test_sampling_panel, censoring) run in CI
def test_hierarchy_fit_recovers_a_simulated_panel(tmp_path, capsys):
    sim = panel.synthetic_panel(n_la=40, seed=5)
    data = panel.write_panel(sim, tmp_path / "panel.parquet")
    out = tmp_path / "referrals.nc"
    code, text, err = _fit(capsys, "--model", "panel_stages_nb", "--data", data, "--out", out, "--measure",
                           "referrals", "--chains", "2", "--tune", "300", "--draws", "300")
    assert code == 0, err
    post = pf.load_panel_fit(out).posterior
    truth = sim.truth["referrals"]
    for name in ("alpha", "b_t", "b_dep", "b_dep_t", "sd_u", "sd_v"):
        x = post[name].values.ravel()
        assert abs(x.mean() - truth[name]) < 3 * x.std() + 0.01, (name, x.mean(), x.std(), truth[name])
    assert abs(np.median(post["phi"].values) / truth["phi"] - 1) < 0.5

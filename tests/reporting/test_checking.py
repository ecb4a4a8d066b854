"""ACRO results folders for output checking (:mod:`hierarchy.reporting.checking`)."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierarchy import disclosure
from hierarchy.errors import HierarchyError
from hierarchy.reporting import checking, registry
from hierarchy.results import estimands
from tests.helpers import PLANTED, SHARED_FIT

DEFAULT_YAML = checking.SHIPPED_CONFIG.read_text(encoding="utf-8")


def _config(tmp_path: Path, **changes) -> dict:
    """An environment's ACRO YAML: ACRO's defaults with some values changed (a file, not code)."""
    text = DEFAULT_YAML
    for key, value in changes.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key}:")]
        text = "\n".join(lines) + f"\n{key}: {value}\n"
    path = tmp_path / f"acro_{'_'.join(f'{k}{v}' for k, v in changes.items()) or 'default'}.yaml"
    path.write_text(text, encoding="utf-8")
    return checking.acro_config(path)


def _table(rows: dict[str, list[float]]) -> pd.DataFrame:
    """Rows of cells plus an All column and an All row (the margins)."""
    n = len(next(iter(rows.values())))
    frame = pd.DataFrame(rows, index=[str(i) for i in range(1, n + 1)]).T.astype(float)
    frame["All"] = frame.sum(axis=1)
    frame.loc["All"] = frame.sum(axis=0)
    return frame


# ---------------------------------------------------------------------------- configuration


def test_the_shipped_configuration_holds_acros_defaults():
    cfg = checking.acro_config(checking.SHIPPED_CONFIG)
    assert (cfg["safe_threshold"], cfg["safe_dof_threshold"], cfg["safe_nk_n"], cfg["safe_nk_k"],
            cfg["safe_pratio_p"], cfg["zeros_are_disclosive"], cfg["safe_round_base"]) == (10, 10, 2, 0.9, 0.1,
                                                                                           True, 5)


def test_the_environments_configuration_is_used_when_acro_is_installed(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "acro"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('hierarchy must not import acro')\n")
    (pkg / "default.yaml").write_text(DEFAULT_YAML.replace("safe_threshold: 10", "safe_threshold: 15"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path, source = checking.environment_config_path()
    assert path == pkg / "default.yaml" and "installed acro" in source
    assert checking.acro_config()["safe_threshold"] == 15


@pytest.mark.parametrize(("change", "words"), [
    ({"safe_threshold": "ten"}, ["safe_threshold", "whole number"]),
    ({"safe_nk_k": 1.5}, ["safe_nk_k", "share"]),
    ({"zeros_are_disclosive": "maybe"}, ["zeros_are_disclosive", "true or false"]),
    ({"federated": "true"}, ["federated"]),
])
def test_a_bad_configuration_is_refused_naming_file_and_key(tmp_path, change, words):
    with pytest.raises(HierarchyError) as err:
        _config(tmp_path, **change)
    assert all(w in str(err.value) for w in words) and ".yaml" in str(err.value)


def test_a_missing_key_is_refused_with_acros_default(tmp_path):
    path = tmp_path / "acro.yaml"
    path.write_text("\n".join(ln for ln in DEFAULT_YAML.splitlines() if not ln.startswith("safe_pratio_p")))
    with pytest.raises(HierarchyError, match=r"acro.yaml.*'safe_pratio_p' is missing.*0.1"):
        checking.acro_config(path)


# ---------------------------------------------------------------------------- ACRO's checks


def test_a_small_cell_and_a_zero_fail_with_acros_reasons(tmp_path):
    cfg = _config(tmp_path)
    out = checking.check_observed_table(_table({"A": [50, 3, 0, 80], "B": [40, 30, 25, 60],
                                                "C": [45, 35, 30, 70]}), cfg)
    assert out["outcome"].loc["A", "2"] == "MinimumThresholdCheck; "
    assert out["outcome"].loc["A", "3"] == "PresenceOfZeroCheck; MinimumThresholdCheck; "
    assert out["sdc"]["summary"]["PresenceOfZeroCheck"] == 1
    assert out["sdc"]["cells"]["MinimumThresholdCheck"] == [[0, 1], [0, 2]]
    assert np.isnan(out["published"].loc["A", "2"]) and np.isnan(out["published"].loc["A", "3"])
    published = out["published"].to_numpy()
    assert np.all(np.isnan(published) | (published % 5 == 0))  # the others rounded to the base


def test_zeros_not_disclosive_changes_the_reason_not_the_threshold(tmp_path):
    """As in ACRO 1.0.2: a zero is still below the frequency threshold."""
    cfg = _config(tmp_path, zeros_are_disclosive="False")
    out = checking.check_observed_table(_table({"A": [50, 30, 0, 80], "B": [40, 30, 25, 60]}), cfg)
    assert out["outcome"].loc["A", "3"] == "MinimumThresholdCheck; "


def test_threshold_20_in_the_yaml_changes_what_is_suppressed(tmp_path):
    table = _table({"A": [50, 15, 12, 80], "B": [40, 30, 25, 60], "C": [45, 35, 30, 70]})
    at10 = checking.check_observed_table(table, _config(tmp_path))
    at20 = checking.check_observed_table(table, _config(tmp_path, safe_threshold=20))
    assert at10["outcome"].loc["A", "2"] == "ok" and np.isfinite(at10["published"].loc["A", "2"])
    assert at20["outcome"].loc["A", "2"] == "MinimumThresholdCheck; "
    assert at20["outcome"].loc["A", "3"] == "MinimumThresholdCheck; "
    assert np.isnan(at20["published"].loc["A", "2"])


def test_dominance_follows_acros_nk_and_p_ratio_rules(tmp_path):
    counts = pd.DataFrame({"x": [100.0, 100.0, 100.0, 30.0]}, index=list("abcd"))
    cells = np.empty((4, 1), dtype=object)
    cells[:, 0] = [np.array([95.0, 3, 2]), np.array([40.0, 30, 30]), np.array([60.0, 31, 9]),
                   np.array([30.0])]
    masks = checking.table_checks(counts, _config(tmp_path), contributions=pd.DataFrame(cells, index=counts.index,
                                                                                        columns=["x"]))
    # a: top 2 = 98% >= 90% and (100 - 98) / 95 < 0.10; b: neither; c: top 2 = 91% only;
    # d: one neighbourhood is the whole cell
    assert masks["NKCheck"]["x"].tolist() == [True, False, True, True]
    assert masks["PPercentCheck"]["x"].tolist() == [True, False, False, True]
    looser = checking.table_checks(counts, _config(tmp_path, safe_nk_k=0.95),
                                   contributions=pd.DataFrame(cells, index=counts.index, columns=["x"]))
    assert looser["NKCheck"]["x"].tolist() == [True, False, False, True]


def test_secondary_suppression_holds_on_top_of_acros(tmp_path):
    """A lone suppressed cell in a row would follow from its margin: a second one goes too."""
    out = checking.check_observed_table(_table({"A": [50, 3, 40, 80], "B": [40, 30, 25, 60],
                                                "C": [45, 35, 30, 70]}), _config(tmp_path))
    sup = out["suppressed"].to_numpy()
    assert sup.sum() >= 4 and out["sdc"]["summary"][checking.SECONDARY] >= 3
    assert checking.SECONDARY in "".join(out["outcome"].to_numpy().ravel())
    _assert_not_derivable(out["published"], sup, base=5)


def _assert_not_derivable(published: pd.DataFrame, suppressed: np.ndarray, *, base: int) -> None:
    """No suppressed cell follows from the published ones and the margins (exactly or to one number)."""
    cells = published.mask(pd.DataFrame(suppressed, index=published.index, columns=published.columns), 0.0)
    lines, _, _ = checking._margin_lines(cells)  # structurally empty cells stay NaN: not cells
    exists = cells.notna().to_numpy()
    values, mask = cells.to_numpy()[exists], suppressed[exists]
    a = disclosure.linear_lines(len(values), lines)
    assert mask.any() and not disclosure.derivable(a, mask).any()
    assert not disclosure.pinned(values, mask, lines, rounding=base).any()


# ---------------------------------------------------------------------------- per-neighbourhood outputs


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"neighbourhood": ["E01000001", "E01000002"], "rate": [1.0, 2.0]}),
    pd.DataFrame({"area": ["E01000002"], "rate": [2.0]}),
    pd.DataFrame({"rate": [1.0, 2.0]}, index=pd.Index(["E01000001", "E01000002"], name="area")),
])
def test_an_output_with_per_neighbourhood_values_is_refused(frame):
    records: list = []
    with pytest.raises(HierarchyError, match="per-neighbourhood|names 1 neighbourhood|names 2 neighbourhood"):
        checking.register_model_output(records, "bad", {"bad.csv": frame}, "comment",
                                       codes=["E01000001", "E01000002"])
    assert records == []
    with pytest.raises(HierarchyError, match="per-neighbourhood|neighbourhood"):
        checking.register_model_output(records, "bad_figure", {"bad.png": b"png"}, "comment",
                                       codes=["E01000001", "E01000002"], data=frame)


def test_a_blocked_extension_is_refused(tmp_path):
    records: list = []
    checking.register_model_output(records, "fig", {"fig.svg": b"<svg/>"}, "c", codes=[])
    with pytest.raises(HierarchyError, match="blocked"):
        checking.write_records(records, tmp_path / "out", _config(tmp_path))
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_is_not_written_over(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(HierarchyError, match="nothing is written over"):
        checking.write_records([], tmp_path / "out", _config(tmp_path))
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


# ---------------------------------------------------------------------------- the folder of a fit


@pytest.fixture(scope="module")
def folders(shared_fit, tmp_path_factory):
    shared = shared_fit
    root = tmp_path_factory.mktemp("checking")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checking.write_checking_folder(shared["fit"], root / "report_for_checking", data=shared["data"],
                                       n_draws=50)
        idata = estimands.as_idata(shared["fit"])
        observed = estimands.observed_counts(idata, shared["data"]).astype(float)
    # plant a zero: a cell of several neighbourhoods with no referrals at all
    la = idata.constant_data["la_of"].to_numpy().astype(str)
    dec = estimands.neighbourhood_deciles(idata)
    cells = pd.DataFrame({"la": la, "dec": dec}).value_counts()
    zero_la, zero_dec = next((a, d) for (a, d), n in cells.items() if n >= 3 and
                             not (a == shared["planted"]["la"] and d == shared["planted"]["decile"]))
    observed[(la == zero_la) & (dec == zero_dec)] = 0
    cfg = checking.acro_config()
    checking.write_records(checking.observed_records(idata, observed, cfg), root / "zero", cfg)
    return {"root": root, "out": root / "report_for_checking", "zero_out": root / "zero",
            "zero": (zero_la, str(zero_dec)), "idata": idata, **shared}


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["results"]


@SHARED_FIT
def test_the_planted_small_cell_is_suppressed_with_acros_reason(folders):
    res = _results(folders["out"])["la_deciles"]
    la, decile = folders["planted"]["la"], str(folders["planted"]["decile"])
    assert "MinimumThresholdCheck" in res["outcome"][decile][la]
    table = pd.read_csv(folders["out"] / "la_deciles_0.csv", index_col=0, dtype={"la": str})
    assert np.isnan(table.loc[la, decile])
    rates = pd.read_csv(folders["out"] / "la_deciles_1.csv", index_col=0)
    assert np.isnan(rates.loc[la, decile])
    row, col = list(table.index).index(la), list(table.columns).index(decile)
    assert [row, col] in res["files"][0]["sdc"]["cells"]["MinimumThresholdCheck"]
    assert res["status"] == "review" and "Suppression automatically applied" in res["exception"]
    for name in os.listdir(folders["out"]):  # the planted count appears nowhere as a rate either
        if name.endswith(".csv"):
            text = (folders["out"] / name).read_text()
            bad = 1e4 * PLANTED / folders["planted"]["children"]
            assert f"{bad:.2f}" not in text, name


@SHARED_FIT
def test_a_planted_zero_is_suppressed_with_acros_reason(folders):
    res = _results(folders["zero_out"])["la_deciles"]
    la, decile = folders["zero"]
    assert res["outcome"][decile][la].startswith("PresenceOfZeroCheck; MinimumThresholdCheck; ")
    table = pd.read_csv(folders["zero_out"] / "la_deciles_0.csv", index_col=0)
    assert np.isnan(table.loc[la, decile])


@SHARED_FIT
def test_published_counts_follow_the_rules_and_secondary_suppression_holds(folders):
    out = folders["out"]
    table = pd.read_csv(out / "la_deciles_0.csv", index_col=0)
    res = _results(out)["la_deciles"]
    outcome = pd.DataFrame(res["outcome"]).loc[table.index, table.columns]
    suppressed = ((outcome != "ok") & (outcome != checking.EMPTY)).to_numpy()
    vals = table.to_numpy()
    assert np.all(np.isnan(vals[suppressed]))
    shown = vals[~suppressed & ~np.isnan(vals)]
    assert np.all((shown >= 10) & (shown % 5 == 0))
    _assert_not_derivable(table, suppressed, base=5)
    deciles = pd.read_csv(out / "deciles_0.csv", index_col=0)
    assert np.allclose(deciles["observed_count"].to_numpy(), table.loc["All", [str(d) for d in range(1, 11)]]
                       .to_numpy(), equal_nan=True)


@SHARED_FIT
def test_model_outputs_carry_a_generated_justification(folders):
    results = _results(folders["out"])
    custom = {k: v for k, v in results.items() if v["type"] == "custom"}
    assert {"estimands", "la_gradients", "figure_rate_curves", "figure_deciles"} <= set(custom)
    n_la = len(set(folders["idata"].constant_data["la_of"].to_numpy()))
    shows_observed = {"figure_deciles", "figure_count_distribution", "figure_la_deciles", "report_page"}
    public = {f"figure_{o.name}" for o in registry.FIGURES if o.basis == registry.PUBLIC}
    assert {"figure_map_deprivation"} <= set(custom) & public  # the public maps are registered too
    for uid, rec in custom.items():
        comment = rec["comments"][0]
        if uid in public:  # published statistics on public boundaries: nothing of the fit to describe
            assert comment.startswith(checking.PUBLIC_OUTPUT) or checking.PUBLIC_OUTPUT in comment, uid
            assert "No observed count is shown" in comment and rec["status"] == "review", uid
            continue
        assert "Residual degrees of freedom" in comment and f"in {n_la} LAs" in comment, uid
        assert "referral ~" in comment, uid
        if uid in shows_observed:  # published observed values beside model quantities: said so
            assert "published" in comment and "No observed count is shown" not in comment, uid
        else:
            assert "No observed count is shown" in comment and "Basis: " in comment, uid
        assert rec["status"] == "review" and rec["files"] and rec["command"] == "custom"


@SHARED_FIT
def test_no_registered_output_holds_a_per_neighbourhood_value(folders):
    codes = set(estimands._codes(folders["idata"]))
    for name in os.listdir(folders["out"]):
        if name.endswith(".csv"):
            frame = pd.read_csv(folders["out"] / name, dtype=str)
            labels = set(frame.to_numpy().ravel()) | set(frame.columns)
            assert not labels & codes, name
            assert not checking.per_neighbourhood_reason(frame, list(codes)), name


@SHARED_FIT
def test_the_folder_has_acros_layout_and_checksums(folders):
    import hashlib

    out = folders["out"]
    doc = json.loads((out / "results.json").read_text())
    assert doc["version"] == checking.ACRO_VERSION and doc["tool"]["name"] == "ACRO"
    keys = {"uid", "status", "type", "properties", "files", "outcome", "command", "summary", "timestamp",
            "comments", "exception", "fair"}
    for uid, rec in doc["results"].items():
        assert set(rec) == keys and rec["uid"] == uid and rec["files"]
        for f in rec["files"]:
            digest = hashlib.sha256((out / f["name"]).read_bytes()).hexdigest()
            assert (out / "checksums" / f"{f['name']}.txt").read_text() == digest
    config = json.loads((out / "config.json").read_text())
    assert config["safe_threshold"] == 10 and config["suppress"] is True


@SHARED_FIT
def test_without_observed_data_only_model_outputs_are_registered(folders, tmp_path):
    import arviz as az

    from hierarchy.results.fitfile import load_fit

    full = load_fit(folders["fit"])
    bare = az.InferenceData(**{g: full[g] for g in full.groups() if g != "observed_data"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checking.write_checking_folder(bare, tmp_path / "out", n_draws=20)
    results = _results(tmp_path / "out")
    assert results and all(r["type"] == "custom" for r in results.values())
    assert "figure_la_deciles" not in results and "estimands" in results
    text = checking.describe_folder(tmp_path / "out")
    assert "| estimands | custom | review | estimands.csv |" in text


def test_the_wheel_ships_acros_default_rules(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        assert "hierarchy/reporting/acro_default.yaml" in zf.namelist()


# ---------------------------------------------------------------------------- ACRO's own loader


def _acro_python() -> str:
    """A Python with ``acro`` installed (a separate venv: acro pins pandas <= 2.3.3), or skip.

    ``$HIERARCHY_ACRO_PYTHON`` set (CI sets it: ``make acro``) and not importing acro fails the test.
    """
    given = os.environ.get("HIERARCHY_ACRO_PYTHON")
    for candidate in (given, "/tmp/acro-venv/bin/python"):
        if candidate and Path(candidate).exists():
            ok = subprocess.run([candidate, "-c", "import acro.record"], capture_output=True, timeout=120)
            if ok.returncode == 0:
                return candidate
    if given:
        pytest.fail(f"HIERARCHY_ACRO_PYTHON={given} does not import acro: run `make acro`")
    pytest.skip("no Python with acro installed: `make acro` (a venv in /tmp/acro-venv) or set "
                "HIERARCHY_ACRO_PYTHON")


LOADER = """
import json, sys
from acro.record import load_records
records = load_records(sys.argv[1])
out = {}
for key in records.get_keys():
    r = records.get(key)
    out[key] = {"status": r.status, "type": r.output_type, "outcome_shape": list(r.outcome.shape),
                "outputs": [list(o.shape) if hasattr(o, "shape") else o for o in r.output],
                "comments": r.comments}
print(json.dumps(out))
"""

ACRO_CHECKS = """
import json, sys
import pandas as pd
from acro import ACRO
rows = pd.read_csv(sys.argv[1], dtype={"la": str, "decile": str})
session = ACRO(suppress=False)
children = rows.loc[rows.index.repeat(rows["count"].astype(int))].reset_index(drop=True)
deciles = sorted(rows["decile"].unique())
freq = session.crosstab(children["la"], pd.Categorical(children["decile"], categories=deciles))
sums = session.crosstab(rows["la"], rows["decile"], values=rows["count"], aggfunc="sum")
out = {k: session.results.get(k).outcome.to_json() for k in session.results.get_keys()}
print(json.dumps(out))
"""


@SHARED_FIT  # not slow: the shared fit is built for the fast suite anyway (CI builds it once)
def test_acros_own_loader_reads_the_folder(folders):
    python = _acro_python()
    proc = subprocess.run([python, "-c", LOADER, str(folders["out"])], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(_results(folders["out"]))
    # the wide counts and rates the checkers review, and the report's own la_deciles.csv (the registry puts every
    # file the report writes into the checking folder)
    assert loaded["la_deciles"]["type"] == "table" and len(loaded["la_deciles"]["outputs"]) == 3
    assert loaded["estimands"]["type"] == "custom" and "Residual degrees of freedom" in \
        loaded["estimands"]["comments"][0]


@SHARED_FIT
def test_our_cells_fail_where_acros_own_checks_fail(folders, tmp_path):
    """ACRO itself on the same cells: a frequency table of the children (threshold, zeros) and a sum over
    the neighbourhoods (dominance) flag the cells hierarchy flags (cells with neighbourhoods)."""
    python = _acro_python()
    idata = folders["idata"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = estimands.observed_counts(idata, folders["data"])
    rows = pd.DataFrame({"la": idata.constant_data["la_of"].to_numpy().astype(str),
                         "decile": estimands.neighbourhood_deciles(idata).astype(str), "count": observed})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    proc = subprocess.run([python, "-c", ACRO_CHECKS, str(tmp_path / "rows.csv")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    acro_out = json.loads(proc.stdout.strip().splitlines()[-1])
    freq, sums = (pd.DataFrame(json.loads(acro_out[k])) for k in ("output_0", "output_1"))
    ours = pd.DataFrame(_results(folders["out"])["la_deciles"]["outcome"])
    for la in freq.index:
        for d in freq.columns:
            mine = ours.loc[str(la), str(d)]
            if mine == checking.EMPTY:
                continue
            for check in ("MinimumThresholdCheck", "PresenceOfZeroCheck"):
                assert (check in freq.loc[la, d]) == (check in mine), (la, d, check)
            for check in ("NKCheck", "PPercentCheck"):
                assert (check in sums.loc[la, d]) == (check in mine), (la, d, check)

"""The notebooks run top to bottom, small (``HIERARCHY_FAST=1``), and show what they claim.

Each ``notebooks/NN_*.py`` (jupytext percent format, the source of truth) is converted with
jupytext and executed with nbclient in a fresh ``python3`` kernel (this interpreter's ipykernel),
from a temporary working directory; the notebooks find the checkout themselves and write only under
``$HIERARCHY_NOTEBOOK_OUT``. One output folder is shared by the module so that a fit made by one
notebook is reused by the next (each notebook refits when the saved fit does not match its data,
model, priors and settings, so any one of them also runs alone). Beyond "no error output", every test
parses the key lines the notebook prints and counts its figures.

All tests are in one xdist group: they run one after another in a single worker, beside the rest of
the suite. About 2 minutes on 2 cores with a cold JAX compilation cache, 1 minute with a warm one
(the fits of notebooks 02 and 04 are most of it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("jupytext")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.helpers import NOTEBOOKS, NUMBER, execute, lines_with, notebooks_with_tests  # noqa: E402

pytestmark = pytest.mark.xdist_group("notebooks")


@pytest.fixture(scope="module")
def notebook_out(tmp_path_factory) -> Path:
    """Output folder shared by the notebooks of this module (data, fits, reports)."""
    return tmp_path_factory.mktemp("notebook_out")


def test_01_reference_and_validation(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("01_reference_and_validation", notebook_out, tmp_path, monkeypatch)
    assert lines_with(text, "geography: synthetic(n_la=30")  # the fast run says which geography
    assert "GENERATED stand-in" in text
    (planted,) = lines_with(text, "planted faults:")
    n_planted, n_found = map(int, re.findall(r"\d+", planted))
    assert n_planted >= 12 and n_found == n_planted
    assert "MISSED" not in text
    assert "exit code without --drop-invalid: 1" in text and "exit code with --drop-invalid: 0" in text
    (rows,) = lines_with(text, "rejected rows:")
    assert int(re.findall(r"\d+", rows)[0]) > 0
    assert "split_invalid refused" in text
    assert len(images) >= 1
    assert "notebook 01 checks passed" in text
    assert (notebook_out / "01_reference_and_validation" / "rejects.csv").is_file()


@pytest.mark.slow  # notebooks 02, 04 and 05 (05 reads 02's fit), ~160 s of one worker: make test-slow (CI runs it)
def test_02_fitting_the_gradient(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("02_fitting_the_gradient", notebook_out, tmp_path, monkeypatch)
    diag = {m[0]: m[1:] for m in re.findall(
        rf"^diagnostics\[(\w+)\]: status=(ok|warn) rhat_max={NUMBER} ess_bulk_min={NUMBER} "
        rf"divergences=(\d+) bfmi_min={NUMBER}", text, flags=re.M)}
    assert {"gradient_nb", "inverse_intervention_nb_log", "non_centred"} <= set(diag), text[-3000:]
    # what 2 chains x 200 draws allow (the notebook asserts the same): centred fits R-hat < 1.1, bulk
    # ESS >= 40 (a tenth of the draws) for every parameter, E-BFMI >= 0.3, divergences < 1%; the
    # non-centred comparison fit may mix worse, but not fail outright
    for name, (_status, rhat, ess, div, bfmi) in diag.items():
        if name == "non_centred":
            assert float(rhat) < 1.5 and float(ess) >= 10, (name, diag[name])
        else:
            assert float(rhat) < 1.1 and float(ess) >= 40, (name, diag[name])
            assert float(bfmi) >= 0.3 and int(div) < 4, (name, diag[name])
    assert "parameterisation (auto) for this data: centred" in text
    assert "parameterisation (auto) with a hundredth of the counts: non_centred" in text
    assert len(images) >= 3  # trace, rank and the centred / non-centred comparison
    assert "notebook 02 checks passed" in text


def test_03_inverse_intervention(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("03_inverse_intervention", notebook_out, tmp_path, monkeypatch)
    rows = re.findall(rf"^headline: (10 points less|mean|10 points more) mean={NUMBER} lower={NUMBER} "
                      rf"upper={NUMBER} truth={NUMBER}", text, flags=re.M)
    assert [r[0] for r in rows] == ["10 points less", "mean", "10 points more"]
    for _level, mean, lower, upper, truth in rows:
        assert float(lower) < float(mean) < float(upper)
        assert 1.0 < float(truth) < 3.0
    means = [float(r[1]) for r in rows]
    assert means[0] > means[1] > means[2]  # steeper in less deprived LAs
    (w_line,) = lines_with(text, "max |child-weighted mean of w| within an LA:")
    assert float(w_line.split(":")[1]) < 1e-9
    assert len(images) >= 3  # contrast, rate curves, LA gradients
    assert "notebook 03 checks passed" in text


@pytest.mark.slow  # notebooks 02, 04 and 05 (05 reads 02's fit), ~160 s of one worker: make test-slow (CI runs it)
def test_04_comparing_priors(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("04_comparing_priors", notebook_out, tmp_path, monkeypatch)
    share = {m[0]: float(m[1]) for m in re.findall(rf"^impossible share\[(\w+)\]: {NUMBER}", text, flags=re.M)}
    assert {"weakly_informative", "vague", "informative_cwip", "regularising"} <= set(share)
    assert share["vague"] > 0.05 > share["weakly_informative"]
    post = re.findall(rf"^posterior\[(\w+)\] (10 points less|mean|10 points more): mean={NUMBER} "
                      rf"lower={NUMBER} upper={NUMBER}", text, flags=re.M)
    assert len({p[0] for p in post}) >= 2 and len(post) == 3 * len({p[0] for p in post})
    assert all(float(lo) < float(m) < float(hi) for _s, _lv, m, lo, hi in post)
    assert len(images) >= 2  # prior predictive and forest plot
    assert "notebook 04 checks passed" in text


@pytest.mark.slow  # notebooks 02, 04 and 05 (05 reads 02's fit), ~160 s of one worker: make test-slow (CI runs it)
def test_05_fit_to_report(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("05_fit_to_report", notebook_out, tmp_path, monkeypatch)
    (rep,) = lines_with(text, "report: ")
    index = Path(rep.split("report: ", 1)[1].strip())
    assert index.name == "index.html" and index.is_file()
    assert (index.parent / "report.md").is_file() and any((index.parent / "figures").glob("*.png"))
    assert "below 10 are suppressed" in index.read_text(encoding="utf-8")
    assert "refused:" in text  # loading the fit with the wrong model is refused
    (cells,) = lines_with(text, "la_deciles cells:")
    n_cells, n_suppressed, n_small = map(int, re.findall(r"\d+", cells.split(":", 1)[1])[:3])
    assert n_cells > 0 and n_small > 0 and n_suppressed >= n_small  # plus secondary suppression
    assert len(images) >= 1
    assert "notebook 05 checks passed" in text


@pytest.mark.slow  # one stacked four-stage x age-band fit: run by make test-slow (CI runs it)
def test_06_stages_and_subgroups(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("06_stages_and_subgroups", notebook_out, tmp_path, monkeypatch)
    cells = re.search(r"subgroups: (\d+) stage x age cells, truth inside the 90% interval in (\d+)", text)
    assert cells and int(cells.group(1)) == 16 and int(cells.group(2)) >= 12, text[-2000:]
    assert "notebook 06 checks passed" in text
    assert len(images) >= 1  # the stage x age forest plot


@pytest.mark.slow  # three short fits (headline, ethnic groups, LA conditions) of the replication (issue 15)
@pytest.mark.long
def test_07_replicating_the_findings(notebook_out, tmp_path, monkeypatch):
    text, images, _ = execute("07_replicating_the_findings", notebook_out, tmp_path, monkeypatch)
    rows = re.search(r"replication: (\d+) rows, truth inside the 90% interval in (\d+)", text)
    assert rows and int(rows.group(2)) >= 0.75 * int(rows.group(1)), text[-2000:]
    assert "notebook 07 checks passed" in text
    assert len(images) >= 1  # the forest plot


def test_every_notebook_is_tested():
    """Every notebook has a ``test_NN_name`` function somewhere under tests/ (notebook 08 has its own
    file: a long child-level path)."""
    assert {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")} == notebooks_with_tests()

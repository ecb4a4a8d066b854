"""Reports of a saved fit: summary command, report folder, browser rendering and figure panels.

Uses the session's shared fit (``test_estimands.shared_fit``). The report is written by the
``hierarchy report`` command in a fresh Python process, so that it works on a fit loaded from
disk and nothing leaks in from the test process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from test_estimands import SHARED_FIT, shared_fit

from hierarchy import cli
from hierarchy.reporting import figures, report
from hierarchy.results import estimands

HEADLINE = ["10 points less", "mean", "10 points more"]
pytestmark = SHARED_FIT  # one worker makes and uses the shared fit


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return shared_fit(tmp_path_factory)


@pytest.fixture(scope="module")
def cli_report(shared, tmp_path_factory):
    """Report folder written by ``hierarchy report`` in a fresh process."""
    out = tmp_path_factory.mktemp("cli_report")
    proc = subprocess.run([sys.executable, "-m", "hierarchy.cli", "report", str(shared["fit"]),
                           "--out", str(out), "--threshold", "10", "--rounding", "5", "--prob", "0.9"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert "report written to" in proc.stdout
    return out


@pytest.fixture(scope="module")
def figs(shared):
    idata = estimands.as_idata(shared["fit"])
    tables = report.estimand_tables(idata, truth=shared["truth"], n_draws=100)
    return tables, report.report_figures(idata, tables)


# ---------------------------------------------------------------------------- summary command


def test_summary_json_has_the_headline_estimands(shared, capsys):
    assert cli.main(["summary", str(shared["fit"]), "--format", "json", "--prob", "0.8"]) == 0
    out = json.loads(capsys.readouterr().out)
    head = out["headline"]
    assert [h["la_level"] for h in head] == HEADLINE
    assert all(h["scale"] == "per 10 points" and h["prob"] == 0.8 for h in head)
    assert all(h["lower"] < h["mean"] < h["upper"] for h in head)
    assert 1.3 < head[1]["mean"] < 2.0
    params = {p["parameter"] for p in out["parameters"]}
    assert {"intercept", "gradient", "la_deprivation", "cross_level", "la_sd[intercept]",
            "la_sd[gradient]", "la_corr[intercept,gradient]", "dispersion"} == params
    assert out["diagnostics"]["verdict"].split(":")[0] in ("OK", "WARN")


def test_summary_markdown_table_and_csv(shared, capsys):
    assert cli.main(["summary", str(shared["fit"]), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "## Headline estimands (90% equal-tailed intervals)" in md and "## Diagnostics" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| gradient_score |")]
    assert [r.split("|")[2].strip() for r in rows] == HEADLINE
    assert "| la_coef" not in md and "| la_raw" not in md
    assert cli.main(["summary", str(shared["fit"]), "--format", "csv"]) == 0
    frame = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert set(frame["kind"]) == {"parameter", "estimand", "diagnostics"}
    assert cli.main(["summary", str(shared["fit"])]) == 0
    assert "headline estimands" in capsys.readouterr().out


# ---------------------------------------------------------------------------- report folder


def test_report_folder_has_every_output(cli_report):
    names = {p.name for p in cli_report.iterdir()}
    assert {"index.html", "report.md", "summary.csv", "estimands.csv", "la_gradients.csv", "deciles.csv",
            "inverse_intervention.csv", "count_distribution.csv", "la_deciles.csv"} <= names
    md = (cli_report / "report.md").read_text()
    for heading in ("## Diagnostics", "## Provenance", "## Disclosure control", "## Headline estimands",
                    "## Hyperparameters (ArviZ summary)", "## Figures"):
        assert heading in md
    assert "below 10 are suppressed" in md and "nearest 5" in md
    for item in ("data", "model", "priors", "sampler", "versions", "created"):
        assert f"| {item} |" in md
    for png in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (cli_report / png).stat().st_size > 1000
    est = pd.read_csv(cli_report / "estimands.csv")
    assert est["scale"].notna().all()


def test_html_is_self_contained(cli_report):
    html = (cli_report / "index.html").read_text()
    assert html.count("<img ") >= 7
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", html))
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<link" not in html and "<script" not in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_report_loads_every_image_in_headless_chromium(cli_report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    probe = ("<script>window.addEventListener('load', () => {const im = [...document.images];"
             "document.body.dataset.imagesTotal = im.length;"
             "document.body.dataset.imagesLoaded = im.filter(i => i.complete && i.naturalWidth > 0)"
             ".length;});</script>")
    page = tmp_path / "index.html"
    page.write_text((cli_report / "index.html").read_text().replace("</body>", probe + "</body>"))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    total = re.search(r'data-images-total="(\d+)"', proc.stdout)
    loaded = re.search(r'data-images-loaded="(\d+)"', proc.stdout)
    assert total and loaded, proc.stderr[-2000:]
    assert int(total.group(1)) == (cli_report / "index.html").read_text().count("<img ") >= 7
    assert loaded.group(1) == total.group(1)


def test_report_shows_the_truth_beside_the_estimates(shared, tmp_path):
    idata = estimands.as_idata(shared["fit"])
    index = report.write_report(idata, tmp_path, truth=shared["truth"], prob=0.99, n_draws=50)
    assert index == tmp_path / "index.html"
    est = pd.read_csv(tmp_path / "estimands.csv")
    head = est[est["scale"] == "per 10 points"]
    assert list(head["truth"]) == pytest.approx([2.33, 1.62, 1.39])
    assert head["covered"].all()
    assert "truth" in pd.read_csv(tmp_path / "la_gradients.csv").columns
    assert "truth_expected_rate" in pd.read_csv(tmp_path / "deciles.csv").columns
    md = (tmp_path / "report.md").read_text()
    assert "| truth | covered |" in md and "99%" in md


# ---------------------------------------------------------------------------- figures


def _labels(ax) -> str:
    return " ".join([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])


def test_rate_curve_figure_has_one_line_per_la_level(figs):
    _, f = figs
    fig, data = f["rate_curves"][1:]
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_yscale() == "log"
    labels = [ln.get_label() for ln in ax.lines]
    assert len(labels) == 3 and all(lv in lb for lv, lb in zip(HEADLINE, labels, strict=True))
    assert "per 10,000 children" in ax.get_ylabel() and "deprivation" in ax.get_xlabel() and ax.get_title()
    assert len(ax.collections) == 3  # the bands
    assert set(data["la_level"]) == set(HEADLINE)


def test_other_figures_have_their_panels(figs):
    tables, f = figs
    fig, data = f["la_gradients"][1:]
    assert len(fig.axes) == 2  # caterpillar + colour bar
    assert "per 10 points" in fig.axes[0].get_xlabel() and len(data) == len(tables["la_gradients"])
    fig, _ = f["inverse_intervention"][1:]
    assert len(fig.axes) == 1 and "rate ratio" in fig.axes[0].get_ylabel()
    fig, data = f["deciles"][1:]
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and "decile" in ax.get_xlabel() and "per 10,000" in ax.get_ylabel()
    assert {"predicted_mean", "observed_rate"} <= set(data.columns) and len(data) == 10
    fig, data = f["count_distribution"][1:]
    ax = fig.axes[0]
    assert "number of neighbourhoods" in ax.get_ylabel() and len(ax.patches) == len(data)
    fig, data = f["la_deciles"][1:]
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == data["la"].nunique() == 60
    fig, post = f["rank"][1:]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == list(post.data_vars) and "la_sd[gradient]" in titles
    for name, (caption, fig, _data) in f.items():
        assert caption and all(_labels(ax).strip() for ax in fig.axes if ax.get_visible()), name


def test_count_check_draws_skewed_bins_whose_mean_is_outside_the_interval():
    """A bin that is empty in most draws has mean > 0 but a 90% interval of [0, 0]."""
    bins = pd.DataFrame({"bin": ["0", "1-4"], "predicted_mean": [0.4, 12.0], "predicted_lower": [0.0, 9.0],
                         "predicted_upper": [0.0, 15.0], "prob": [0.9, 0.9]})
    fig, data = figures.plot_count_ppc(bins)
    ax = fig.axes[0]
    segments = ax.collections[0].get_segments()
    assert [tuple(s[:, 1]) for s in segments] == [(0.0, 0.0), (9.0, 15.0)]
    assert list(ax.lines[0].get_ydata()) == [0.4, 12.0]

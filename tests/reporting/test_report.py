"""Reports of a saved fit: summary command, report folder, browser rendering and figure panels.

Uses the session's shared fit (the ``shared_fit`` fixture, conftest.py). The report is written by the
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

import numpy as np
import pandas as pd
import pytest

from hierarchy import cli, published
from hierarchy.reporting import figures, report
from hierarchy.results import estimands
from tests.helpers import SHARED_FIT

HEADLINE = ["10 points less", "mean", "10 points more"]
pytestmark = SHARED_FIT  # one worker makes and uses the shared fit


@pytest.fixture(scope="module")
def shared(shared_fit):
    return shared_fit


@pytest.fixture(scope="module")
def cli_report(shared, tmp_path_factory):
    """Report folder written by ``hierarchy report`` in a fresh process."""
    out = tmp_path_factory.mktemp("cli_report")
    proc = subprocess.run([sys.executable, "-m", "hierarchy.cli", "report", str(shared["fit"]),
                           "--data", str(shared["data"]),  # its truth file beside it: census year 2019
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
    return tables, report.report_figures(idata, tables, year=published.data_year(shared["data"]))


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
    assert set(frame["kind"]) == {"parameter", "estimand", "heterogeneity", "diagnostics"}
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


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
PROBE = ("<script>window.__errors = [];"
         "window.addEventListener('error', e => window.__errors.push(String(e.message || e.target.src)), true);"
         "const _err = console.error; console.error = (...a) => {window.__errors.push(a.join(' ')); _err(...a)};"
         "window.addEventListener('load', () => {const im = [...document.images], r = {};"
         "r.imagesTotal = im.length; r.imagesLoaded = im.filter(i => i.complete && i.naturalWidth > 0).length;"
         "r.errors = window.__errors.length;"
         "const f = document.getElementById('findings'), t = document.querySelector('table');"
         "if (f) {r.findingsTop = Math.round(f.getBoundingClientRect().top);"
         "r.findingsBottom = Math.round(f.getBoundingClientRect().bottom);}"
         "if (t) r.tableTop = Math.round(t.getBoundingClientRect().top);"
         "r.viewport = window.innerWidth + 'x' + window.innerHeight;"
         "r.overflowX = document.documentElement.scrollWidth > window.innerWidth + 1;"
         "parent.postMessage(r, '*');});</script>")
FRAME = ("<!DOCTYPE html><html><head><style>body{{margin:0}}iframe{{border:0;display:block}}</style></head>"
         "<body><iframe src='{src}' width='{w}' height='{h}'></iframe><script>"
         "window.addEventListener('message', e => Object.assign(document.body.dataset, e.data));"
         "</script></body></html>")
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


def browse(page, tmp_path, size: tuple[int, int], *, probe: str = PROBE,
           expect: str = "images-total") -> tuple[dict[str, str], bytes]:
    """Load ``page`` in headless Chromium in a frame of ``size`` CSS pixels: the probe's results
    and a screenshot of that frame.

    The page is shown in an iframe of exactly that size (headless Chromium will not make a window
    narrower than 500 pixels; a frame is a viewport of its own, media queries included). The probe
    (put at the top of the page's ``<head>``) counts images loaded, JavaScript, resource and console
    errors, and measures where the findings block and the first table are.
    """
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    width, height = size
    probed = page.parent / f".probed_{page.name}"  # beside the page: its relative links resolve
    probed.write_text(page.read_text().replace("<head>", "<head>" + probe, 1))
    frame = page.parent / f".frame_{width}.html"
    frame.write_text(FRAME.format(src=probed.name, w=width, h=height))
    flags = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
             f"--window-size={max(width, 500)},{height}"]
    try:
        dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", frame.as_uri()],
                             capture_output=True, text=True, timeout=120)
        shot = tmp_path / f"shot_{width}.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--virtual-time-budget=10000", frame.as_uri()],
                       capture_output=True, timeout=120)
    finally:
        probed.unlink()
        frame.unlink()
    body = dom.stdout.split("<body", 1)[-1].split(">", 1)[0]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    assert expect in attrs, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    return attrs, shot.read_bytes()


@pytest.mark.parametrize("device", list(WIDTHS))
def test_report_opens_on_its_findings_in_headless_chromium(cli_report, tmp_path, device):
    """Every image loads, no errors, and the first screen shows the findings, above every table."""
    import matplotlib.image

    width, height = WIDTHS[device]
    attrs, png = browse(cli_report / "index.html", tmp_path, (width, height))
    html = (cli_report / "index.html").read_text()
    assert int(attrs["images-total"]) == html.count("<img ") >= 8
    assert attrs["images-loaded"] == attrs["images-total"] and attrs["errors"] == "0"
    assert attrs["viewport"].startswith(str(width))
    assert 0 < int(attrs["findings-top"]) < height  # the findings start on the first screen
    assert int(attrs["findings-bottom"]) <= int(attrs["table-top"])  # and come before any table
    assert attrs["overflow-x"] == "false"  # nothing wider than a phone screen but the tables' own scroll
    shot = matplotlib.image.imread(__import__("io").BytesIO(png))
    assert shot.shape[:2] == (height, max(width, 500))
    assert shot[:, :width, :3].std() > 0.05  # a page, not a blank


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
    # no data given: the census year is the one the fit recorded from its data (the truth file's 2019)
    assert json.loads(idata.posterior.attrs["hierarchy"])["data_year"] == 2019
    assert "Published figures shown are for referral in 2018-19" in md


# ---------------------------------------------------------------------------- figures


def _labels(ax) -> str:
    return " ".join([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])


def test_rate_curve_figure_has_one_line_per_la_level(figs):
    _, f = figs
    fig, data = f["rate_curves"][1:]
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_yscale() == "log"
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]  # not the dashed parts
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


# ---------------------------------------------------------------------------- findings and layout

CHANGE = r"(\d+(?:\.\d+)?)% (higher|lower)"
SENTENCE = re.compile(rf"rate {CHANGE} \((\d+)% interval (\d+(?:\.\d+)?)%(?: (higher|lower))? to "
                      rf"(\d+(?:\.\d+)?)%(?: (higher|lower))?\)")


def parse_change(text: str) -> tuple[float, float, float, float]:
    """(mean, lower, upper) as rate multipliers from a findings sentence, and half its last digit."""
    m = SENTENCE.search(text)
    assert m, text
    sign = {"higher": 1, "lower": -1}
    mean = 1 + sign[m[2]] * float(m[1]) / 100
    lower = 1 + sign[m[5] or m[2]] * float(m[4]) / 100
    upper = 1 + sign[m[7] or m[2]] * float(m[6]) / 100
    digits = len(m[1].partition(".")[2])
    lower, upper = sorted((lower, upper))  # "10% lower (90% interval 5% to 15%)" names the near end first
    return mean, lower, upper, 0.5 * 10 ** -digits / 100 + 1e-12


def _findings(md: str) -> list[str]:
    block = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    return [ln[2:] for ln in block.splitlines() if ln.startswith("- ")]


def test_findings_sentences_carry_the_estimand_tables_numbers(cli_report):
    md = (cli_report / "report.md").read_text()
    sentences = _findings(md)
    est = pd.read_csv(cli_report / "estimands.csv")
    head = est[(est["estimand"] == "gradient_score") & (est["scale"] == "per 10 points")].set_index("la_level")
    opening = {"mean": "In a local authority of average deprivation",
               "10 points less": "In a local authority 10 points less deprived",
               "10 points more": "In a local authority 10 points more deprived"}
    for level, start in opening.items():
        [text] = [t for t in sentences if t.startswith(start)]
        *values, tol = parse_change(text)
        assert values == pytest.approx(list(head.loc[level, ["mean", "lower", "upper"]]), abs=tol), text
        assert "is associated with" in text and f"{head.loc[level, 'la_deprivation_pct']:.1f}% income" in text
    assert "published for 2018-19: 62% higher" in sentences[0]  # the data's year is the published one
    inv = pd.read_csv(cli_report / "inverse_intervention.csv")
    [text] = [t for t in sentences if t.startswith("For neighbourhoods of the same deprivation")]
    x = float(re.search(r"deprivation \((\d+\.\d)% income", text)[1])
    *values, tol = parse_change(text)
    rows = inv[inv["neighbourhood_deprivation_pct"].round(1) == x]  # the CSV's percents (issue 34 item 10)
    assert any(values == pytest.approx(list(r), abs=tol) for r in rows[["mean", "lower", "upper"]].to_numpy())
    assert f"{(inv['lower'] > 1).sum()} of the {len(inv)}" in text
    la = pd.read_csv(cli_report / "la_gradients.csv")
    [text] = [t for t in sentences if t.startswith("Gradient scores")]
    lo, hi, n = re.search(r"range from (\d\.\d\d) to (\d\.\d\d) over the (\d+)", text).groups()
    assert (float(lo), float(hi), int(n)) == (round(la["mean"].min(), 2), round(la["mean"].max(), 2), len(la))
    assert f"; {(la['lower'] > 1).sum()} of them" in text
    share = est[est["estimand"] == "between_la_share"].iloc[0]
    [text] = [t for t in sentences if "lies between local authorities" in t]
    m, lo, hi = (float(v) / 100 for v in re.match(r"(\d+)% \(90% interval (\d+)% to (\d+)%\)", text).groups())
    assert [m, lo, hi] == pytest.approx(list(share[["mean", "lower", "upper"]]), abs=0.005)
    for text in sentences:
        assert not re.search(r"\bcaus|\bleads? to\b|\bdrives?\b|\beffect of\b|\bbecause\b", text), text


def test_report_reads_findings_figures_then_tables(cli_report):
    md = (cli_report / "report.md").read_text()
    html = (cli_report / "index.html").read_text()
    assert md.index("Not fit for reporting") < md.index("## Findings") or md.index("Fit checked") < md.index(
        "## Findings")
    first_figure = md.index("![gradient_curve](figures/gradient_curve.png)")
    assert md.index("## Findings") < first_figure < md.index("\n| ") < md.index("## Diagnostics")
    assert html.index("id='findings'") < html.index("<figure") < html.index("<table")
    assert "referral ~ w * z + (1 + w | la) + offset(log(exposure))" in md  # the model as its formula
    assert "referral ~ w * z + (1 + w | la) + offset(log(exposure))" in html
    captions = re.findall(r"^\*Figure \d+\. (.+)\*$", md, re.M)
    assert len(captions) == html.count("<figure") >= 8 and all("\n" not in c for c in captions)
    assert md.index("gradient_curve.png") < md.index("la_gradients.png") < md.index("deciles.png") \
        < md.index("inverse_intervention.png")
    # published figures beside the estimate they describe only: the headline table's column
    assert md.count("| published |") == 1
    headline = md.split("## Headline estimands", 1)[1].split("\n## ", 1)[0]
    assert "| published |" in headline and "| 2.33 |" in headline
    # long tables short, the full CSV named; the 1.6412-style digits gone
    assert "12 of 60 rows shown (every row in la_gradients.csv)" in md
    rows = [ln for ln in headline.splitlines() if ln.startswith("| gradient_score | mean |")]
    assert re.search(r"\| 1\.\d\d \| 0\.\d+ \| 1\.\d\d \| 1\.\d\d \|", rows[0]), rows
    assert "@media print" in html and "<script" not in html


def test_decimals_follow_the_interval_width():
    assert [report.decimals_for(w) for w in (0.1, 0.05, 0.9, 3.0, 300.0)] == [2, 3, 2, 1, 0]
    frame = pd.DataFrame({"estimand": ["g", "g"], "mean": [1.64123, 412.3456], "sd": [0.0312, 12.34],
                          "lower": [1.5912, 390.1], "upper": [1.6923, 431.7], "prob": [0.9, 0.9]})
    text = report.rounded(frame)
    assert list(text["mean"]) == ["1.64", "412"] and list(text["lower"]) == ["1.59", "390"]
    assert list(text["sd"]) == ["0.031", "12"] and list(text["prob"]) == ["0.90", "0.90"]


def _row(**kw):
    return {"prob": 0.9, "sd": 0.01, **kw}


def test_findings_cover_stages_moderators_and_reversed_or_uncertain_gradients():
    """Hand-made tables: the wording follows the sign and says when an interval spans no change."""
    est = pd.DataFrame([
        _row(estimand="gradient_score", la_level="mean", la_deprivation=0.15, scale="per 10 points",
             mean=0.9, lower=0.85, upper=0.95),
        _row(estimand="moderated_gradient_score", subgroup="rural=1", scale="per 10 points",
             mean=1.05, lower=0.97, upper=1.12),
        _row(estimand="between_la_share", scale="proportion", mean=0.2, lower=0.15, upper=0.25)])
    sub = pd.DataFrame([_row(stage="referral", mean=1.6, lower=1.5, upper=1.7),
                        _row(stage="s47", mean=1.9, lower=1.7, upper=2.1)])
    esc = pd.DataFrame([_row(step="s47 / referral", mean=1.19, lower=1.05, upper=1.33, p_steeper=0.99)])
    con = pd.DataFrame([{"contrast": "rural=1 vs rural=0", "mean": 1.3, "lower": 1.1, "upper": 1.5,
                         "p_greater_than_1": 0.98}])
    tables = {"estimands": est, "subgroup_gradients": sub, "escalation": esc, "moderator_contrasts": con}
    found = report.findings(tables, outcome=["s47", "cp_plan"], prob=0.9)
    texts = [f.text for f in found]
    assert "section 47 enquiry rate 10% lower (90% interval 5% to 15%)" in texts[0]
    assert "published" not in " ".join(texts)  # not a referral fit: no published figure anywhere
    assert parse_change(texts[0])[:3] == pytest.approx((0.9, 0.85, 0.95))
    [mod] = [t for t in texts if t.startswith("Where rural=1")]
    assert "5% higher (90% interval 3% lower to 12% higher)" in mod
    assert parse_change(mod)[:3] == pytest.approx((1.05, 0.97, 1.12))
    assert any(t.startswith("At the section 47 enquiry stage") and "90% higher" in t for t in texts)
    assert any("1.19 (90% interval 1.05 to 1.33) times the gradient at the referral stage" in t for t in texts)
    assert any("rural=1 is 1.30 (90% interval 1.10 to 1.50) times" in t for t in texts)
    assert {f.anchor for f in found} == {"estimands", "subgroups", "escalation", "moderators"}


def test_comparison_pages_share_the_report_template(tmp_path):
    """write_pages (compare-priors, compare-models): findings first, then figures, then tables,
    with the report's stylesheet; loads in Chromium with every image."""
    from hierarchy.reporting import page

    fig, _ = figures.plot_contrast(pd.DataFrame({"x": [0.1, 0.2], "mean": [1.2, 1.4], "lower": [1.1, 1.2],
                                                 "upper": [1.3, 1.6], "prob": [0.9, 0.9]}))
    table = pd.DataFrame({"model": ["a", "b"], "elpd": ["-10.0", "-12.5"]})
    sections = [("Findings", report.bullets(["a is preferred."]), None),
                ("PSIS-LOO comparison", [("p", "elpd_loo: higher is better. More text.")], table, "loo"),
                ("Warnings", report.bullets(["unreliable: k > 0.7"]), None)]
    report.write_pages(tmp_path, "Model comparison", sections, {"loo": figures.to_png(fig)})
    html, md = (tmp_path / "index.html").read_text(), (tmp_path / "index.md").read_text()
    assert page.CSS in html
    assert html.index("id='findings'") < html.index("<figure") < html.index("<table")
    assert md.index("## Findings") < md.index("![loo](loo.png)") < md.index("| model |")
    assert "*Figure 1. PSIS-LOO comparison. elpd_loo: higher is better.*" in md
    assert "<li class=warn>unreliable" in html
    if _chromium():
        attrs, _png = browse(tmp_path / "index.html", tmp_path, WIDTHS["phone"])
        assert attrs["images-loaded"] == attrs["images-total"] == "1" and attrs["errors"] == "0"


def test_figures_use_the_colour_blind_safe_palette(figs):
    from matplotlib.colors import to_hex

    safe = {c.lower() for c in figures.OKABE_ITO.values()} | {"#999999"}
    assert {c.lower() for c in figures.LEVEL_COLOURS.values()} <= safe
    _, f = figs
    for name in ("gradient_curve", "rate_curves", "inverse_intervention", "deciles"):
        fig = f[name][1]
        colours = {to_hex(ln.get_color()) for ax in fig.axes for ln in ax.lines if ln.get_linestyle() != ":"}
        assert colours and colours <= safe, (name, colours)
    fig, data = f["gradient_curve"][1:]
    pub = data[data["source"] == "published"]
    assert list(pub["mean"]) == [2.33, 1.62, 1.39]
    assert "gradient score" in fig.axes[0].get_ylabel() and "LA deprivation" in fig.axes[0].get_xlabel()


# ---------------------------------------------------------------------------- extrapolation (issue 23 item 6)


def _data_ranges(data_path) -> tuple[pd.Series, pd.DataFrame]:
    """LA deprivation (child-weighted mean) and the rows, from the data file itself."""
    table = pd.read_parquet(data_path)
    weighted = (table["deprivation"] * table["exposure"]).groupby(table["la"]).sum()
    X = weighted / table.groupby("la")["exposure"].sum()
    return X, table.assign(X=table["la"].map(X))


def test_curves_flag_exactly_where_they_leave_the_data(shared, figs):
    """The gradient curve is flagged outside the fitted LAs' deprivation range; each rate curve outside
    the 1st-99th percentile of neighbourhood deprivation in LAs within 5 points of its level; the
    contrast outside either level's range. Ranges recomputed here from the data file."""
    tables, f = figs
    X, rows = _data_ranges(shared["data"])
    curve = f["gradient_curve"][2]
    curve = curve[curve["source"] == "posterior"]
    assert curve["la_deprivation"].min() == pytest.approx(X.min()) and curve["la_deprivation"].max() >= X.max()
    assert list(curve["extrapolated"]) == list((curve["la_deprivation"] < X.min() - 1e-9)
                                               | (curve["la_deprivation"] > X.max() + 1e-9))
    ranges = {}
    for level, part in tables["rate_curves"].groupby("la_level"):
        near = rows[(rows["X"] - part["la_deprivation"].iloc[0]).abs() <= 0.05 + 1e-12]
        lo, hi = np.quantile(near["deprivation"], [0.01, 0.99])
        ranges[level] = (lo, hi)
        assert list(part["extrapolated"]) == list((part["x"] < lo - 1e-9) | (part["x"] > hi + 1e-9)), level
    assert tables["rate_curves"]["extrapolated"].any()  # this small table: the affluent LAs stop near 27%
    inv = tables["inverse_intervention"]
    (lo1, hi1), (lo2, hi2) = ranges["10 points less"], ranges["10 points more"]
    assert list(inv["extrapolated"]) == list((inv["x"] < max(lo1, lo2) - 1e-9) | (inv["x"] > min(hi1, hi2) + 1e-9))
    assert not inv["extrapolated"].all()
    # drawn dashed beyond, and said in the legend
    for name in ("rate_curves", "inverse_intervention"):
        ax = f[name][1].axes[0]
        assert any(ln.get_linestyle() == "--" for ln in ax.lines), name
        assert any("dashed: beyond" in t.get_text() for t in ax.get_legend().get_texts()), name


def test_ratio_axes_are_logarithmic(figs):
    _, f = figs
    assert f["gradient_curve"][1].axes[0].get_yscale() == "log"
    assert f["inverse_intervention"][1].axes[0].get_yscale() == "log"
    assert f["la_gradients"][1].axes[0].get_xscale() == "log"
    assert f["rate_curves"][1].axes[0].get_yscale() == "log"
    ax = f["gradient_curve"][1].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "1.5" in labels and "2" in labels and not any("^" in t for t in labels)  # plain numbers, no powers


def test_a_curve_without_extrapolation_has_no_dashed_part():
    contrast = pd.DataFrame({"x": [0.1, 0.2, 0.3], "mean": [1.2, 1.4, 1.6], "lower": [1.1, 1.2, 1.3],
                             "upper": [1.3, 1.6, 1.9], "prob": [0.9] * 3, "extrapolated": [False] * 3})
    ax = figures.plot_contrast(contrast)[0].axes[0]
    assert not any(ln.get_linestyle() == "--" for ln in ax.lines)
    ax = figures.plot_contrast(contrast.assign(extrapolated=[False, False, True]))[0].axes[0]
    [dashed] = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert list(dashed.get_xdata()[~np.isnan(dashed.get_ydata())]) == [0.2, 0.3]  # joins at the last point inside

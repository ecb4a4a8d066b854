"""Disclosure control: unit rules, and a planted small cell that no output may reveal.

The shared fit's data give one LA exactly 3 referrals in one national decile
(``test_estimands.shared_fit``). The leak test writes a full report and then looks for the 3,
and for any rate computed from it, in every CSV, the Markdown, the HTML and the data behind every
figure (the data frames the figure functions return and the lines they draw).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from test_estimands import PLANTED, SHARED_FIT, shared_fit

from hierarchy import disclosure, estimands, report
from hierarchy.errors import HierarchyError

OBSERVED_COUNTS = ("observed_count", "observed_neighbourhoods")


# ---------------------------------------------------------------------------- rules


def test_counts_below_threshold_are_suppressed_others_rounded():
    got = disclosure.disclose_counts([0, 3, 9, 10, 12, 13, 22, 23, 1234, np.nan])
    want = [np.nan, np.nan, np.nan, 10, 10, 15, 20, 25, 1235, np.nan]
    np.testing.assert_array_equal(got, want)


def test_rounding_goes_half_up_and_can_be_switched_off():
    np.testing.assert_array_equal(disclosure.round_counts([10, 14, 6], 4), [12, 16, 8])
    np.testing.assert_array_equal(disclosure.disclose_counts([1, 7], threshold=0, rounding=1), [1, 7])
    np.testing.assert_array_equal(disclosure.disclose_counts([4, 11], threshold=5, rounding=0),
                                  [np.nan, 11])


def test_rates_come_from_rounded_counts_and_are_suppressed_with_them():
    rates = disclosure.disclose_rates([13, 3, 20], [1000, 1000, 0])
    assert rates[0] == pytest.approx(150.0)  # 15 (rounded) per 1,000, not 13
    assert np.isnan(rates[1]) and np.isnan(rates[2])


def test_frames_and_text_mark_suppressed_cells():
    frame = pd.DataFrame({"la": ["A", "B"], "children": [500.0, 800.0], "observed_count": [3, 41]})
    out = disclosure.disclose_frame(frame, counts=["observed_count"],
                                    rates={"observed_rate": ("observed_count", "children")})
    assert np.isnan(out.loc[0, "observed_count"]) and np.isnan(out.loc[0, "observed_rate"])
    assert out.loc[1, "observed_count"] == 40 and out.loc[1, "observed_rate"] == pytest.approx(500.0)
    text = disclosure.mark_suppressed(out, {"observed_count": "{:,.0f}", "observed_rate": "{:,.1f}"})
    assert list(text["observed_count"]) == ["[c]", "40"]
    assert list(text["observed_rate"]) == ["[c]", "500.0"]
    assert frame.loc[0, "observed_count"] == 3  # input untouched


@pytest.mark.parametrize("bad", [(-1, 5), (10, 2.5), (True, 5)])
def test_bad_rules_are_refused(bad):
    with pytest.raises(HierarchyError):
        disclosure.disclose_counts([5], threshold=bad[0], rounding=bad[1])


def test_rules_text_states_the_rules_in_force():
    text = disclosure.rules_text(threshold=11, rounding=4)
    assert "below 11" in text and "nearest 4" in text and "[c]" in text


# ---------------------------------------------------------------------------- the planted cell


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    shared = shared_fit(tmp_path_factory)
    idata = estimands.as_idata(shared["fit"])
    out = tmp_path_factory.mktemp("disclosure_report")
    report.write_report(idata, out, data=shared["data"], truth=shared["truth"])
    tables = report.estimand_tables(idata, data=shared["data"])
    figs = report.report_figures(idata, tables)
    return {"out": out, "idata": idata, "figs": figs, **shared["planted"]}


def _forbidden_rates(children: float) -> list[float]:
    """The planted count as a rate per 10,000, raw and rounded to 5 (neither may appear)."""
    return [1e4 * PLANTED / children, 1e4 * 5 / children]


@SHARED_FIT  # the worker that makes the shared fit (with its planted cell) and uses it
def test_the_planted_cell_is_real(planted_report):
    p = planted_report
    idata = p["idata"]
    obs = estimands.observed_counts(idata)
    cell = (idata.constant_data["la_of"].to_numpy() == p["la"]) & \
        (estimands.neighbourhood_deciles(idata) == p["decile"])
    assert obs[cell].sum() == PLANTED and cell.sum() >= 1


def _check_observed_columns(frame: pd.DataFrame, where: str) -> None:
    """Every published observed count is suppressed or a multiple of 5 >= 10; rates match them."""
    for col in OBSERVED_COUNTS:
        if col in frame:
            vals = pd.to_numeric(frame[col].replace("[c]", np.nan))
            ok = vals.isna() | ((vals >= 10) & (vals % 5 == 0))
            assert ok.all(), (where, col, frame[~ok])
    if "observed_rate" in frame and "children" in frame:
        rate = pd.to_numeric(frame["observed_rate"].replace("[c]", np.nan))
        implied = rate * frame["children"].astype(float) / 1e4
        ok = rate.isna() | ((implied.round() >= 10) & (np.isclose(implied % 5, 0, atol=1e-3)
                                                         | np.isclose(implied % 5, 5, atol=1e-3)))
        assert ok.all(), (where, frame[~ok])


def _numbers(frame: pd.DataFrame) -> np.ndarray:
    vals = frame.apply(lambda c: pd.to_numeric(c, errors="coerce")).to_numpy(dtype=float).ravel()
    return vals[np.isfinite(vals)]


@SHARED_FIT  # the worker that makes the shared fit (with its planted cell) and uses it
def test_csv_tables_never_reveal_the_planted_cell(planted_report):
    p = planted_report
    csvs = sorted(p["out"].glob("*.csv"))
    assert {c.name for c in csvs} >= {"summary.csv", "estimands.csv", "la_gradients.csv", "deciles.csv",
                                      "la_deciles.csv", "count_distribution.csv"}
    for path in csvs:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        _check_observed_columns(frame, path.name)
        for rate in _forbidden_rates(p["children"]):
            assert not np.isclose(_numbers(frame), rate, rtol=1e-4).any(), path.name
    cells = pd.read_csv(p["out"] / "la_deciles.csv", dtype=str, keep_default_na=False)
    row = cells[(cells["la"] == p["la"]) & (cells["decile"] == str(p["decile"]))]
    assert len(row) == 1
    assert row.iloc[0]["observed_count"] == "[c]" and row.iloc[0]["observed_rate"] == "[c]"


def _text_outputs(out) -> dict[str, str]:
    html = (out / "index.html").read_text()
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    return {"report.md": (out / "report.md").read_text(), "index.html": html}


@SHARED_FIT  # the worker that makes the shared fit (with its planted cell) and uses it
def test_markdown_and_html_never_reveal_the_planted_cell(planted_report):
    p = planted_report
    for name, text in _text_outputs(p["out"]).items():
        for rate in _forbidden_rates(p["children"]):
            for fmt in ("{:.1f}", "{:.2f}", "{:.4f}", "{:,.1f}"):
                shown = fmt.format(rate)
                assert not re.search(rf"(?<![\d,.]){re.escape(shown)}(?!\d)", text), (name, shown)
        assert "[c]" in text
    # the LA x decile table: the planted cell's column says [c]
    lines = [ln for ln in _text_outputs(p["out"])["report.md"].splitlines() if ln.startswith(f"| {p['la']} ")]
    header = next(ln for ln in (p["out"] / "report.md").read_text().splitlines() if "| decile 1 |" in ln)
    cols = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert cells[cols.index(f"decile {p['decile']}")] == "[c]"
    html = _text_outputs(p["out"])["index.html"]
    row = re.findall(rf"<tr>\s*<td>{p['la']}</td>(.*?)</tr>", html, re.S)[-1]
    tds = re.findall(r"<td>(.*?)</td>", row)
    assert tds[cols.index(f"decile {p['decile']}") - 1] == "[c]"


@SHARED_FIT  # the worker that makes the shared fit (with its planted cell) and uses it
def test_figure_data_never_reveal_the_planted_cell(planted_report):
    p = planted_report
    forbidden = _forbidden_rates(p["children"])
    for name, (_caption, fig, data) in p["figs"].items():
        if isinstance(data, pd.DataFrame):
            _check_observed_columns(data, name)
            assert not np.isclose(_numbers(data), forbidden[0], rtol=1e-4).any(), name
            assert not np.isclose(_numbers(data), forbidden[1], rtol=1e-4).any(), name
        for ax in fig.axes:
            for line in ax.lines:
                y = np.asarray(line.get_ydata(), dtype=float)
                assert not np.isclose(y[np.isfinite(y)][:, None], forbidden, rtol=1e-4).any(), name
    ppc = p["figs"]["count_distribution"][1]
    heights = [bar.get_height() for bar in ppc.axes[0].patches]  # observed bins: suppressed drawn empty
    assert heights and all(h == 0 or h >= 10 for h in heights)
    la_data = p["figs"]["la_deciles"][2]
    cell = la_data[(la_data["la"] == p["la"]) & (la_data["decile"] == p["decile"])]
    assert len(cell) == 1 and np.isnan(cell["observed_rate"].iloc[0])

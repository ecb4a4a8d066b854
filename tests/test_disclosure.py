"""Disclosure control: unit rules, and a planted small cell that no output may reveal.

The shared fit's data give one LA exactly 3 referrals in one national decile
(the ``shared_fit`` fixture, conftest.py). The leak test writes a full report and then looks for the 3,
and for any rate computed from it, in every CSV, the Markdown, the HTML and the data behind every
figure (the data frames the figure functions return and the lines they draw).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hierarchy import disclosure
from hierarchy.errors import HierarchyError
from hierarchy.reporting import report
from hierarchy.results import estimands
from tests.helpers import PLANTED, SHARED_FIT

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
def planted_report(shared_fit, tmp_path_factory):
    shared = shared_fit
    idata = estimands.as_idata(shared["fit"])
    out = tmp_path_factory.mktemp("disclosure_report")
    report.write_report(idata, out, data=shared["data"], truth=shared["truth"])
    tables = report.estimand_tables(idata, data=shared["data"])
    figs = report.report_figures(idata, tables)
    return {"out": out, "idata": idata, "figs": figs, "shared": shared, **shared["planted"]}


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


# ---------------------------------------------------------------------------- differencing


def _attack(values: np.ndarray, lines: list[tuple[int, list[int]]]) -> dict[int, tuple[float, float]]:
    """An attacker's bounds on each suppressed (NaN) cell from the published cells and totals.

    Every relation ``values[total] == sum(values[members])`` holds exactly (rounding 1), counts are
    >= 0; each suppressed cell is minimised and maximised by linear programming.
    """
    from scipy.optimize import linprog

    n = len(values)
    a = np.zeros((len(lines), n))
    for i, (t, members) in enumerate(lines):
        a[i, members] = 1.0
        a[i, t] -= 1.0
    bounds = [(0, None) if np.isnan(v) else (v, v) for v in values]
    out = {}
    for k in np.flatnonzero(np.isnan(values)):
        c = np.zeros(n)
        c[k] = 1
        lo = linprog(c, A_eq=a, b_eq=np.zeros(len(a)), bounds=bounds).fun
        hi = linprog(-c, A_eq=a, b_eq=np.zeros(len(a)), bounds=bounds)
        out[int(k)] = (lo, np.inf if hi.status == 3 else -hi.fun)
    return out


def _derived(bounds: dict[int, tuple[float, float]]) -> list[int]:
    """Cells pinned to a single whole number."""
    return [k for k, (lo, hi) in bounds.items() if np.ceil(lo - 1e-6) >= np.floor(hi + 1e-6)]


def test_issue_example_the_la_total_minus_its_other_deciles_gives_the_cell():
    """LA total 209, deciles 4 (suppressed), 100, 105: 209 - 205 = 4 without secondary suppression."""
    values = np.array([np.nan, 100.0, 105.0, 209.0])
    lines = [(3, [0, 1, 2])]
    assert _derived(_attack(values, lines)) == [0]  # the primary suppression alone leaks
    mask = disclosure.secondary_suppression(values, lines, rounding=1, totals=[3])
    assert mask.tolist() == [True, True, False, False]  # the smaller other decile goes too
    assert _derived(_attack(np.where(mask, np.nan, values), lines)) == []


def _random_table(rng: np.random.Generator, n_la: int = 8) -> tuple[np.ndarray, list, list, int]:
    """Published LA x decile counts with LA totals and decile totals (rounding 1, threshold 10)."""
    counts = rng.choice([0, 1, 3, 5, 8, 12, 20, 40, 90], size=(n_la, 10))
    present = rng.random((n_la, 10)) < 0.7  # LAs without neighbourhoods in some deciles
    counts = np.where(present, counts, 0)
    cells, index = [], {}
    for i in range(n_la):
        for d in range(10):
            if present[i, d]:
                index[i, d] = len(cells)
                cells.append(counts[i, d])
    la_tot = [len(cells) + i for i in range(n_la)]
    cells += list(counts.sum(1))
    dec_tot = [len(cells) + d for d in range(10)]
    cells += list(counts.sum(0))
    lines = [(la_tot[i], [index[i, d] for d in range(10) if present[i, d]]) for i in range(n_la)]
    lines += [(dec_tot[d], [index[i, d] for i in range(n_la) if present[i, d]]) for d in range(10)]
    lines = [(t, m) for t, m in lines if m]
    published = disclosure.disclose_counts(cells, threshold=10, rounding=1)
    return published, lines, la_tot + dec_tot, len(cells)


def test_no_suppressed_cell_can_be_derived_after_secondary_suppression():
    rng = np.random.default_rng(19)
    leaked_before = 0
    for _ in range(6):
        values, lines, totals, _n = _random_table(rng, n_la=6)
        leaked_before += len(_derived(_attack(values, lines)))
        mask = disclosure.secondary_suppression(values, lines, rounding=1, totals=totals)
        assert (mask >= np.isnan(values)).all()  # primary suppression kept
        assert _derived(_attack(np.where(mask, np.nan, values), lines)) == []
        assert mask.mean() < 0.9  # not everything
    assert leaked_before > 0  # primary suppression alone leaks in these tables


@SHARED_FIT
def test_report_tables_resist_differencing_and_weak_rules_are_loud(planted_report, tmp_path):
    """The report's LA x decile and national decile tables, published unrounded (by explicit
    choice): no suppressed cell follows from the others and the totals."""
    shared = shared_fit_paths(planted_report)
    with pytest.raises(HierarchyError, match="--allow-below-default-rules"):
        report.write_report(shared["fit"], tmp_path / "weak", data=shared["data"], rounding=1)
    assert not (tmp_path / "weak").exists()
    out = report.write_report(shared["fit"], tmp_path / "weak", data=shared["data"], rounding=1,
                              allow_below_default_rules=True).parent
    md = (out / "report.md").read_text()
    assert md.index("NOT FOR PUBLICATION") < md.index("## Diagnostics")
    html = (out / "index.html").read_text()
    assert html.index("NOT FOR PUBLICATION") < html.index("<h2>Diagnostics</h2>")
    assert (out / "NOT_FOR_PUBLICATION.txt").exists()
    la = pd.read_csv(out / "la_deciles.csv", dtype=str, keep_default_na=False)
    dec = pd.read_csv(out / "deciles.csv", dtype=str, keep_default_na=False)
    values = np.concatenate([pd.to_numeric(la["observed_count"].replace("[c]", np.nan)).to_numpy(float),
                             pd.to_numeric(dec["observed_count"].replace("[c]", np.nan)).to_numpy(float)])
    lines = [(int(p.index[p["decile"] == "all"][0]), list(p.index[p["decile"] != "all"]))
             for _, p in la.groupby("la")]
    lines += [(len(la) + j, list(la.index[la["decile"] == d])) for j, d in enumerate(dec["decile"])]
    assert np.isnan(values).any()
    assert _derived(_attack(values, lines)) == []
    dist = pd.read_csv(out / "count_distribution.csv", dtype=str, keep_default_na=False)
    bins = pd.to_numeric(dist["observed_neighbourhoods"].replace("[c]", np.nan)).to_numpy(float)
    n_rows = len(estimands.observed_counts(planted_report["idata"]))
    assert _derived(_attack(np.append(bins, n_rows), [(len(bins), list(range(len(bins))))])) == []


def shared_fit_paths(planted_report) -> dict:
    """Paths of the session's shared fit (fit, data)."""
    return planted_report["shared"]

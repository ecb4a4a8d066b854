"""Deprivation shares in one unit everywhere (issue 34 item 10): LA deprivation was 0.243 in one table
and 24.3% in another. The rule (``hierarchy.reporting.text.DEPRIVATION``): on the page and in printed
tables a percent with one decimal; in CSV and JSON files percent at full precision, in a column whose
name ends ``_pct``. A small fit's report and ``hierarchy summary`` are walked for any column that
breaks it."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

from hierarchy import cli
from hierarchy.reporting import report
from hierarchy.reporting.text import DEPRIVATION, csv_bytes, display, pct
from tests.helpers import SHARED_FIT

PERCENT = re.compile(r"^\d{1,3}\.\d%$")


def _is_deprivation(column: str) -> bool:
    return "deprivation" in column.lower() or column in DEPRIVATION


def _markdown_tables(md: str) -> list[pd.DataFrame]:
    """Every Markdown table of a page, as strings."""
    out, rows = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            out.append(pd.DataFrame([r for r in rows[2:] if len(r) == len(rows[0])], columns=rows[0]))
            rows = []
    return out


def test_the_rule_on_a_made_up_table():
    frame = pd.DataFrame({"la": ["A", "B"], "la_deprivation": [0.243, 0.1], "x": [0.05, float("nan")],
                          "mean": [1.5, 1.6]})
    back = pd.read_csv(io.BytesIO(csv_bytes(frame)))
    assert list(back.columns) == ["la", "la_deprivation_pct", "neighbourhood_deprivation_pct", "mean"]
    assert back["la_deprivation_pct"].tolist() == pytest.approx([24.3, 10.0])
    shown = display(frame)
    assert shown["la_deprivation"].tolist() == ["24.3%", "10.0%"] and shown["x"].tolist() == ["5.0%", ""]
    assert pct(0.2431) == "24.3%" and pct(None) == ""


@pytest.fixture(scope="module")
def written(shared_fit, tmp_path_factory):
    out = tmp_path_factory.mktemp("deprivation_units")
    report.write_report(shared_fit["fit"], out, data=shared_fit["data"])
    return out


@SHARED_FIT
def test_no_deprivation_column_of_a_report_is_ambiguous(written):
    """Every CSV: a deprivation column is named ``*_pct`` and holds percents (some above 1, none above
    100); every table on the page: its deprivation cells are percents with one decimal."""
    seen = set()
    for path in sorted(written.glob("*.csv")):
        frame = pd.read_csv(path)
        for col in filter(_is_deprivation, frame.columns):
            assert col.endswith("_pct"), f"{path.name}: column {col!r} does not say its unit"
            values = pd.to_numeric(frame[col], errors="coerce").dropna()
            assert len(values) and values.between(0, 100).all() and values.max() > 1, (path.name, col)
            seen.add(col)
    assert {"la_deprivation_pct", "neighbourhood_deprivation_pct", "deprivation_min_pct"} <= seen
    md = (written / "report.md").read_text()
    shown = 0
    for table in _markdown_tables(md):
        for col in filter(_is_deprivation, table.columns):
            cells = [c for c in table[col] if c not in ("", "–")]
            assert all(PERCENT.match(c) for c in cells), (col, cells[:5])
            shown += len(cells)
    assert shown > 20
    assert re.search(r"\| mean LA deprivation \(X_mean\) \| \d{1,3}\.\d% \|", md)


@SHARED_FIT
def test_summary_follows_the_same_rule(shared_fit, capsys):
    for fmt in ("csv", "json", "markdown"):
        assert cli.main(["summary", str(shared_fit["fit"]), "--format", fmt]) == 0
        text = capsys.readouterr().out
        if fmt == "csv":
            frame = pd.read_csv(io.StringIO(text))
            assert "la_deprivation_pct" in frame and "la_deprivation" not in frame
        elif fmt == "json":
            head = json.loads(text)["headline"]
            assert all("la_deprivation" not in r and r["la_deprivation_pct"] > 1 for r in head)
        else:
            [table] = [t for t in _markdown_tables(text) if "la_deprivation" in t.columns]
            assert all(PERCENT.match(c) for c in table["la_deprivation"])

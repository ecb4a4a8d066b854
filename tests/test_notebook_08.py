"""Notebook 08 (child-level extract -> aggregate -> fit -> summary; durations, re-entry, sums) runs
top to bottom with ``HIERARCHY_FAST=1`` and shows what it claims. Four small fits: slow."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("jupytext")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.helpers import NUMBER, execute, lines_with  # noqa: E402  (same runner as the other notebooks)

pytestmark = [pytest.mark.xdist_group("notebooks"), pytest.mark.slow, pytest.mark.long]


def test_08_child_level_extracts(tmp_path, monkeypatch):
    out = tmp_path / "out"
    text, _images, _ = execute("08_child_level_extracts", out, tmp_path, monkeypatch)
    assert "aggregated referrals equal the simulated counts in every neighbourhood: True" in text
    def values(prefix: str) -> dict[str, float]:
        (line,) = lines_with(text, prefix)
        return {k: float(v) for k, v in re.findall(rf"(\w+)={NUMBER}", line)}

    ref = values("referral gradient score at mean LA deprivation:")
    assert ref["lower"] - 0.1 < ref["truth"] < ref["upper"] + 0.1 and ref["lower"] < ref["mean"] < ref["upper"]
    hr = values("closure hazard ratio per 10 points of w:")
    assert hr["lower"] - 0.03 < hr["truth"] < hr["upper"] + 0.03
    re_entry = values("re-entry within six years, typical LA:")
    assert 0.25 < re_entry["estimate"] < 0.5 and abs(re_entry["estimate"] - re_entry["truth"]) < 0.1
    assert "cannot leave" not in text and "notebook 08 checks passed" in text
    assert (out / "08_child_level_extracts" / "sums.nc").is_file()

"""Notebook 09 (intersectional strata, MAIHDA: two fits of ethnicity x sex x age-band strata) runs top to
bottom with ``HIERARCHY_FAST=1`` and shows what it claims. Two small fits: slow."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("jupytext")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.helpers import NUMBER, execute, lines_with  # noqa: E402  (same runner as the other notebooks)

pytestmark = [pytest.mark.xdist_group("notebooks"), pytest.mark.slow]


def test_09_intersectional_maihda(tmp_path, monkeypatch):
    text, images, _ = execute("09_intersectional_maihda", tmp_path / "out", tmp_path, monkeypatch)
    assert lines_with(text, "geography: synthetic(n_la=30")
    pcv = re.findall(rf"^stratum_pcv\[null -> main/(intercept|gradient)\]: mean={NUMBER} lower={NUMBER} "
                     rf"upper={NUMBER}", text, flags=re.M)
    assert {p[0] for p in pcv} == {"intercept", "gradient"}, text[-3000:]
    assert all(0 < float(p[1]) < 1 and float(p[2]) <= float(p[1]) <= float(p[3]) for p in pcv)
    planted = re.findall(r"^planted: (\S+) (intercept|gradient) .* p_direction=(\S+) flagged=(\w+)", text,
                         flags=re.M)
    # Black/male/10-15's rate, Asian/female/0-4's rate and gradient
    assert len(planted) == 3 and all(p[3] == "True" and float(p[2]) > 0.95 for p in planted), planted
    assert len(images) >= 1  # the stratum gradient forest plot
    assert "notebook 09 checks passed" in text

"""Log-axis ticks whose labels do not collide (issue 34 item 10), checked on the drawn figure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hierarchy.reporting import figures

LIMITS = [(0.5, 50), (0.9, 3.0), (1.1, 2.4), (0.8, 1.3), (0.2, 8.0), (1, 1000), (50, 3000), (0.05, 200)]


@pytest.mark.parametrize(("lo", "hi"), LIMITS)
@pytest.mark.parametrize("which", ["x", "y"])
def test_log_axis_tick_labels_never_overlap(lo, hi, which):
    fig, ax = figures.new_figure(size=(3.2, 2.4))  # small, as on a phone
    ax = ax[0, 0]
    ax.plot([lo, hi], [lo, hi])
    ax.set_xlim(lo, hi) if which == "x" else ax.set_ylim(lo, hi)
    figures.log_axis(ax, which)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axis = ax.xaxis if which == "x" else ax.yaxis
    labels = [t.label1 for t in axis.get_major_ticks() if t.label1.get_visible() and t.label1.get_text()
              and (lo <= t.get_loc() <= hi)]
    assert len(labels) >= 3, [lbl.get_text() for lbl in labels]
    boxes = [lbl.get_window_extent(renderer) for lbl in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), [lbl.get_text() for lbl in labels]


def test_round_ticks_are_kept_first_and_neighbours_are_spaced():
    ticks = [t for t in figures.RATIO_TICKS if 0.5 <= t <= 50]
    kept = figures.spaced_ticks(ticks, 0.5, 50)
    assert kept == [0.5, 1, 2, 5, 10, 20, 50]
    gaps = np.diff(np.log10(kept))
    assert gaps.min() >= np.log10(100) / figures.MAX_LOG_TICKS - 1e-12

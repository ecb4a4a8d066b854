"""write_model_comparison writes every CSV through the atomic writer: a write that fails leaves the file as it
was (no half file, no temporary file beside it)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from hierarchy.results import compare_models as cm


def _result() -> cm.ModelComparison:
    table = pd.DataFrame({"model": ["a", "b"], "rank": [0, 1], "elpd_la": [-100.0, -103.0], "se": [5.0, 5.0],
                          "elpd_diff": [0.0, 3.0], "dse": [0.0, 1.0], "p_la": [4.0, 5.0], "weight": [0.9, 0.1],
                          "k_bad": [0, 1], "k_threshold": [0.7, 0.7], "cv": ["la", "la"], "fit": ["a.nc", "b.nc"]})
    pareto = pd.DataFrame({"model": ["a", "b"], "good": [20, 19], "bad": [0, 1], "very_bad": [0, 0],
                           "max_k": [0.4, 0.8], "k_threshold": [0.7, 0.7], "handled": ["", "refit"]})
    worst = pd.DataFrame({"model": ["b"], "unit": [3], "la": ["E06000003"], "k": [0.8], "method": ["refit"]})
    la_cv = pd.DataFrame({"model": ["a", "b"], "la": ["E06000001", "E06000001"], "k": [0.1, 0.2],
                          "left_out": ["PSIS", "PSIS"], "fold": [0, 0], "elpd": [-5.0, -5.5]})
    refits = pd.DataFrame({"model": ["b"], "fold": [0], "las": ["E06000003"], "train_rows": [100],
                           "train_data_hash": ["abc"], "status": ["fitted"]})
    return cm.ModelComparison(table=table, pareto=pareto, worst=worst, loo={}, warnings=[], findings=["a best"],
                              cv="la", cv_note="leave-one-LA-out", la_cv=la_cv, refits=refits)


NAMES = ("loo_compare.csv", "pareto_k.csv", "pareto_k_worst.csv", "la_cv.csv", "refits.csv")


@pytest.mark.parametrize("failing", NAMES)
def test_a_failed_csv_write_leaves_no_half_file(tmp_path, monkeypatch, failing):
    result = _result()
    cm.write_model_comparison(result, tmp_path)
    before = {n: (tmp_path / n).read_text() for n in NAMES}
    assert "elpd" not in before["la_cv.csv"].splitlines()[0].split(",")  # an LA's ELPD never leaves
    to_csv = pd.DataFrame.to_csv

    def half_then_fail(self, path=None, *args, **kwargs):
        if path is not None and failing in str(path):
            with open(path, "w") as f:
                f.write("model,ha")  # half a file, then the disk fills
            raise OSError("No space left on device")
        return to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    changed = _result()
    changed.table["elpd_la"] -= 1.0
    with pytest.raises(OSError, match="No space"):
        cm.write_model_comparison(changed, tmp_path)
    assert (tmp_path / failing).read_text() == before[failing]  # the earlier file, whole
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left
    for n in NAMES[:NAMES.index(failing)]:  # those written before the failure are the new ones, whole
        assert pd.read_csv(tmp_path / n).shape == pd.read_csv(io.StringIO(before[n])).shape

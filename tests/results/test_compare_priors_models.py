"""compare-priors on a model without LA-level terms (issue 33, item 9).

``compare-priors --model gradient_poisson`` fitted every prior set and then stopped with
``KeyError: 'la_level'``: the headline gradient of a model without LA-level terms is the same at
every LA deprivation level, so its draws have no ``la_level`` dim.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hierarchy import cli
from hierarchy.data import reference, simulate


@pytest.mark.slow  # two short fits in worker processes (~2-5 min on two shared cores)
def test_compare_priors_runs_on_a_model_without_la_level_terms(tmp_path, capsys):
    geo = reference.synthetic_geography(6, seed=4, lsoa_per_la=12)
    table, _ = simulate.simulate(geo, seed=6)
    data = tmp_path / "tiny.csv"
    table.to_csv(data, index=False)
    out = tmp_path / "cp"
    code = cli.main(["compare-priors", "--data", str(data), "--model", "gradient_poisson", "--priors",
                     "weakly_informative", "vague", "--out", str(out), "--fits-dir", str(tmp_path / "fits"),
                     "--chains", "1", "--tune", "100", "--draws", "100", "--workers", "1",
                     "--prior-draws", "50", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    est = pd.read_csv(out / "posterior_estimands.csv")
    # every prior set has the three LA levels, and the one gradient of the typical LA at each of them
    for _name, part in est.groupby("prior_set"):
        assert list(part["la_level"]) == ["10 points less", "mean", "10 points more"]
        assert np.ptp(part["mean"]) == 0 and np.ptp(part["sd"]) == 0
        assert np.diff(part["la_deprivation"]).round(6).tolist() == [0.1, 0.1]
        assert 1 < part["mean"].iloc[0] < 4  # a gradient score per 10 points, in the field's range
    assert set(est["prior_set"]) == {"weakly_informative", "vague"}
    sens = pd.read_csv(out / "sensitivity.csv")
    assert (sens["parameter"] == "gradient score (every LA level)").sum() == 2  # once per prior set
    assert not sens["parameter"].str.contains(r"gradient score \(mean\)").any()
    movement = pd.read_csv(out / "movement.csv")
    assert len(movement) == 3 and np.ptp(movement["movement"]) == 0
    assert "fits reused: 0, fitted now: 2" in captured.out

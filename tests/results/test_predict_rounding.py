"""predict --counts writes readable numbers: 524, not 523.9999999999999, and no 13-decimal rates
(issue 34 item 10). No fit needed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierarchy.results.predict import DECIMALS, rounded_predictions, write_predictions


def test_predictions_are_written_rounded_and_inputs_left_as_given(tmp_path):
    frame = pd.DataFrame({"prediction": ["observed", "new LA"], "deprivation": [0.123456789, 0.35],
                          "exposure": [524.0, 400.0],
                          "rate_mean": [523.9999999999999, 812.3456789012345], "rate_sd": [12.3456789, 1.0],
                          "rate_median": [520.1234567, 800.0], "rate_lower": [480.987654321, 700.0],
                          "rate_upper": [560.55555555, 900.0], "prob": [0.9, 0.9],
                          "count_mean": [27.456789, 32.5], "count_lower": [20.0, 25.0],
                          "count_upper": [35.0, 41.0],
                          "note": ["", ""]})
    path = tmp_path / "pred.csv"
    write_predictions(frame, path)
    text = path.read_text()
    assert "523.9999999999999" not in text and "812.3456789" not in text
    back = pd.read_csv(path)
    for col, places in DECIMALS.items():
        assert np.allclose(back[col], frame[col].round(places)), col
    assert back["count_lower"].dtype.kind == "i" and "20.0" not in text.splitlines()[1]
    assert back["deprivation"].iloc[0] == 0.123456789  # an input: as given
    assert back["rate_mean"].iloc[0] == 524.0
    assert rounded_predictions(frame.drop(columns=["count_mean", "count_lower", "count_upper"])).shape[1] == 10

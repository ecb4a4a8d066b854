"""Every shipped model can be fitted, saved and reported (issue 19 section 5: ``report`` crashed
with ``KeyError: 'la_level'`` on ``gradient_poisson`` and ``gradient_nb``, which have no LA
deprivation term). Tiny fits (2 chains x (30 + 30) draws): this checks the pipeline, not the
estimates. ``gradient_poisson`` (one of the two that crashed) runs in the fast suite on 2 x 30 draws
from the prior in the shapes NUTS gives (``tests.helpers.prior_draws``; NUTS fits it in
test_cli_paths.py::test_fit_with_columns_float32_include_data_and_vectorized_chains), the others, fitted,
are marked slow: each fit is mostly compilation (~20 s quiet, 45-100 s on a busy 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierarchy.data.table import data_hash
from hierarchy.inference.sampling import fit
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.reporting import report
from hierarchy.results import fitfile
from tests.helpers import every_column_table, prior_draws, table_for

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (ROOT / "models").glob("*.toml")
                if not p.stem.startswith("panel_"))  # LA-panel model files: tests/likelihood/test_panel_model.py
FAST = {"gradient_poisson"}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def table():
    return every_column_table()  # every column any shipped model reads


LONG = [pytest.mark.slow, pytest.mark.long]


@pytest.mark.parametrize("path", [p if p.stem in FAST else pytest.param(p, marks=LONG) for p in MODELS],
                         ids=lambda p: p.stem)
def test_every_shipped_model_reports(path, table, tmp_path):
    spec, priors = load_spec(path), load_priors(ROOT / "priors/weakly_informative.toml")
    table = table_for(spec, table)
    design = build_design(table, spec)
    draws = (prior_draws(spec, priors, design, chains=2, draws=30, seed=0) if path.stem in FAST
             else fit(spec, priors, design, chains=2, tune=30, draws=30, seed=0, progress=False))
    idata = fitfile.build_idata(draws, spec, priors, design, data_hash=data_hash(table, **spec.hashed_columns))
    saved = fitfile.save_fit(idata, tmp_path / f"{spec.name}.nc")
    index = report.write_report(saved, tmp_path / "report", data=table, n_draws=20)
    html = index.read_text()
    assert "Headline estimands" in html and "Disclosure control" in html
    assert (tmp_path / "report" / "estimands.csv").exists() and (tmp_path / "report" / "la_deciles.csv").exists()
    assert "gradient_score" in (tmp_path / "report" / "estimands.csv").read_text()
    text = report.summary_text(saved, fmt="csv")
    assert "estimand,gradient_score[" in text  # the headline row of the summary CSV

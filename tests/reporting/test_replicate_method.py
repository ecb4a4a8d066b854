"""``hierarchy replicate --method laplace`` (issue 29 item 1): each analysis fitted alone by the Laplace mode,
an analysis whose model the mode refuses fitted by NUTS with the reason in the log. The fitting is stubbed."""

from __future__ import annotations

import pytest

from hierarchy.cli import build_parser
from hierarchy.data import findings, reference
from hierarchy.errors import HierarchyError
from hierarchy.inference import laplace
from hierarchy.reporting.replicate import ANALYSES
from hierarchy.reporting.replicate_fits import fit_all

PICK = ("referral", "s47", "ethnicity")


@pytest.fixture(scope="module")
def tables():
    geo = reference.synthetic_geography(4, seed=0, lsoa_per_la=6)
    return findings.simulate_findings(geo, year=2019, seed=0)[0]


def _fit_all(tables, monkeypatch, method):
    calls, said = [], []
    refuse = "ethnicity_strata_nb"
    monkeypatch.setattr(laplace, "refusal", lambda spec, design, layout=None: "a reason" if spec.name == refuse
                        else None)

    def stub(spec, table, **kw):
        calls.append((spec.name, kw.get("method")))
        return spec.name

    fits, _ = fit_all([a for a in ANALYSES if a.name in PICK], tables, chains=2, tune=5, draws=5, fit_fn=stub,
                      say=said.append, method=method)
    return fits, calls, said


def test_laplace_fits_each_analysis_alone_and_a_refused_one_by_nuts(tables, monkeypatch):
    fits, calls, said = _fit_all(tables, monkeypatch, "laplace")
    assert sorted(calls) == [("ethnicity_strata_nb", "nuts"), ("inverse_intervention_nb_log", "laplace"),
                             ("inverse_intervention_nb_log_s47", "laplace")]
    assert set(fits) == set(PICK)
    assert "ethnicity: method laplace refused (a reason); fitting it with NUTS" in said


def test_nuts_passes_no_method_and_an_unknown_method_is_refused(tables, monkeypatch):
    _, calls, said = _fit_all(tables, monkeypatch, "nuts")
    assert {m for _, m in calls} == {None} and not [s for s in said if "refused" in s]
    with pytest.raises(HierarchyError, match="unknown method 'lapalce'; choose nuts or laplace"):
        _fit_all(tables, monkeypatch, "lapalce")


def test_the_command_takes_method():
    args = build_parser().parse_args(["replicate", "--out", "x", "--fast", "--method", "laplace"])
    assert args.method == "laplace"
    assert build_parser().parse_args(["replicate", "--out", "x"]).method == "nuts"

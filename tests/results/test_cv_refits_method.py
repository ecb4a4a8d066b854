"""CV refits (``compare-models --cv la / la-kfold``) by the fit's own method, or the one asked for
(issue 29 item 1): a Laplace fit is refitted by the Laplace mode, and a model the Laplace mode refuses
is refitted with NUTS, saying why. The fitting itself is stubbed: what is checked is what it is asked."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hierarchy.data import reference, simulate
from hierarchy.errors import HierarchyError
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import ModelSpec, load_spec
from hierarchy.results import cv_refits

ROOT = Path(__file__).resolve().parents[2]


class _Asked(Exception):
    """Raised by the stubbed sampler with what it was asked."""


def _refit_asks(monkeypatch, spec, sampler: dict, **kw) -> dict:
    from hierarchy.inference import sampling
    from hierarchy.results import fit as fit_mod
    from hierarchy.results import fitfile

    table, _ = simulate.simulate(reference.synthetic_geography(4, seed=1, lsoa_per_la=6), seed=1)
    priors = load_priors(ROOT / "priors/weakly_informative.toml")
    prov = {"model_hash": "m", "priors_hash": "p", "sampler": {"chains": 2, "tune": 10, "draws": 10, **sampler}}
    monkeypatch.setattr(fit_mod, "as_fit", lambda _i: SimpleNamespace(spec=spec, priors=priors))
    monkeypatch.setattr(fitfile, "provenance", lambda _i: prov)

    def asked(_spec, _priors, _design, **settings):
        raise _Asked(settings)

    monkeypatch.setattr(sampling, "fit", asked)
    with pytest.raises(_Asked) as err:
        cv_refits.fit_without(object(), table, [str(table["la"].iloc[0])], **kw)
    return err.value.args[0]


def test_a_refit_uses_the_fit_s_method_or_the_one_asked_for(monkeypatch):
    spec = load_spec(ROOT / "models/gradient_poisson.toml")
    assert _refit_asks(monkeypatch, spec, {})["method"] == "nuts"  # a fit made before the method existed
    assert _refit_asks(monkeypatch, spec, {"method": "laplace"})["method"] == "laplace"
    assert _refit_asks(monkeypatch, spec, {"method": "laplace"}, method="nuts")["method"] == "nuts"
    assert _refit_asks(monkeypatch, spec, {"method": "nuts"}, method="laplace")["method"] == "laplace"


def test_a_model_the_laplace_mode_refuses_is_refitted_with_nuts_saying_why(monkeypatch):
    spec = ModelSpec.from_dict({"name": "pln", "family": "poisson_lognormal"})
    said = []
    assert _refit_asks(monkeypatch, spec, {"method": "laplace"}, log=said.append, label="m")["method"] == "nuts"
    assert said[0].startswith("m: method laplace refused for the refits (") and "refitting with NUTS" in said[0]
    with pytest.raises(HierarchyError, match="refit method 'inla' is not known"):
        _refit_asks(monkeypatch, spec, {}, method="inla")

"""The one Fit object (issue 28 item 3): read once, reads like the InferenceData, stages and data as Fits."""

from __future__ import annotations

import pickle

import pytest

from hierarchy.errors import HierarchyError
from hierarchy.results import estimands
from hierarchy.results.fit import Fit, as_fit, idata_of
from tests.helpers import SHARED_FIT


@SHARED_FIT
def test_a_fit_is_read_once_and_reads_like_its_inference_data(shared_fit):
    fit = as_fit(shared_fit["fit"])
    assert isinstance(fit, Fit) and as_fit(fit) is fit and fit.path == shared_fit["fit"]
    assert fit.spec.name == fit.provenance["model_spec"]["name"] and fit.priors.name
    assert fit.posterior is fit.idata.posterior and "constant_data" in fit.groups()
    assert fit.design["X_mean"] > 0 and fit.stage() is fit and fit.full is fit
    assert idata_of(fit) is fit.idata
    with pytest.raises(HierarchyError, match="not one of the fit's stages"):
        fit.stage("s47")
    same = pickle.loads(pickle.dumps(fit))  # dask workers receive fits
    assert same.spec == fit.spec and same.posterior.sizes == fit.posterior.sizes
    a = estimands.headline_table(fit)  # a Fit and a path give the same estimands
    b = estimands.headline_table(shared_fit["fit"])
    assert a["mean"].tolist() == b["mean"].tolist()

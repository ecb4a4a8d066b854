"""Shared fixtures. The real England data are read at run time from ../shared/data/england (or
$HIERARCHY_REFERENCE_DIR); tests that need them skip only when the folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from hierarchy import reference

NO_REFERENCE = ("England reference data not found (../shared/data/england beside the checkout or "
                "$HIERARCHY_REFERENCE_DIR); real-geography checks need it")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference folder, or skip when it is absent."""
    folder = reference.find_reference_dir()
    if folder is None:
        pytest.skip(NO_REFERENCE)
    return folder


@pytest.fixture(scope="session")
def reference_geography(reference_dir: Path) -> reference.Geography:
    """The real England geography (parsed once per session)."""
    return reference.load_reference(reference_dir)


@pytest.fixture(scope="session")
def small_geography() -> reference.Geography:
    """A small generated geography (12 LAs of ~30 neighbourhoods) for fast tests."""
    return reference.synthetic_geography(12, seed=7, lsoa_per_la=30)

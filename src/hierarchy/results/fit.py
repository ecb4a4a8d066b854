"""One object for a saved fit: the InferenceData with its model, priors and provenance read once.

Every results function takes a :class:`Fit`, an InferenceData or a path and turns it into a
:class:`Fit` with :func:`as_fit`, which reads and checks the provenance once (a path is loaded and
its seal, groups and constants checked by :func:`hierarchy.results.fitfile.load_fit`). A Fit reads
like the InferenceData it wraps (``fit.posterior``, ``fit.constant_data``, ``fit.groups()``), so code
written for a bare InferenceData keeps working, and hands ``fit.idata`` to ArviZ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.results import fitfile


@dataclass(frozen=True, eq=False)
class Fit:
    """A fit as read once: the InferenceData, its model spec, prior set and provenance.

    Parameters
    ----------
    idata : arviz.InferenceData
    spec, priors : ModelSpec, PriorSet
        As stored in the provenance.
    provenance : dict
        The stored provenance (:func:`hierarchy.results.fitfile.provenance`).
    path : Path, optional
        The file it was read from.
    """

    idata: Any
    spec: ModelSpec
    priors: PriorSet
    provenance: dict[str, Any] = field(repr=False)
    path: Path | None = None
    whole: Fit | None = field(default=None, repr=False)  # a stage's fit of all stages (None: this is it)

    def __getattr__(self, name: str) -> Any:  # read like the InferenceData (posterior, constant_data...)
        if name.startswith("_") or name in ("idata", "spec", "priors", "provenance", "path", "whole"):
            raise AttributeError(name)  # not yet set (unpickling): never recurse
        return getattr(self.idata, name)

    def __getitem__(self, group: str) -> Any:
        return self.idata[group]

    @property
    def design(self) -> dict[str, Any]:
        """The design constants the estimands use (``X_mean``, ``x_mean``, ...)."""
        return self.provenance["design"]

    @property
    def column_map(self) -> dict[str, str] | None:
        """The column map the fitted table was read with."""
        return self.provenance.get("column_map")

    @cached_property
    def stages(self) -> dict[str, Fit]:
        """Each stage of a stacked-stages fit as an ordinary single-stage fit (one entry otherwise)."""
        from hierarchy.results.estimands import stage_view

        if not self.spec.stacked:
            return {self.spec.stages[0]: self}
        return {s: _wrap(stage_view(self.idata, s), self.path, whole=self) for s in self.spec.stages}

    @property
    def full(self) -> Fit:
        """The fit of all stages (itself unless this is one stage of a stacked fit)."""
        return self.whole or self

    def stage(self, stage: str | None = None) -> Fit:
        """One stage as a single-stage fit (default: the first), with a message naming the stages."""
        from hierarchy.errors import HierarchyError
        from hierarchy.language.priors import did_you_mean

        stages = self.full.stages
        if stage is not None and stage not in stages:
            raise HierarchyError(f"stage '{stage}' is not one of the fit's stages ({', '.join(stages)})"
                                 f"{did_you_mean(stage, list(stages))}")
        return stages[stage or self.full.spec.stages[0]]

    def with_data(self, data: Any, *, columns: Any = None) -> Fit:
        """This fit with its private row inputs re-read from the data (in memory only; never save it)."""
        return _wrap(fitfile.with_row_data(self.idata, data, columns=columns), self.path)


def _wrap(idata: Any, path: Path | None = None, *, whole: Fit | None = None) -> Fit:
    spec, priors = fitfile.fit_spec(idata)
    return Fit(idata=idata, spec=spec, priors=priors, provenance=fitfile.provenance(idata), path=path,
               whole=whole)


def as_fit(fit: Any) -> Fit:
    """A :class:`Fit` from a Fit (itself), an InferenceData, or a fit file's path (loaded and checked)."""
    if isinstance(fit, Fit):
        return fit
    if isinstance(fit, (str, os.PathLike)):
        return _wrap(fitfile.load_fit(fit), Path(fit))
    return _wrap(fit)


def idata_of(fit: Any) -> Any:
    """The bare InferenceData of a Fit (for ArviZ), or the object itself."""
    return fit.idata if isinstance(fit, Fit) else fit

"""The replication's fits (:mod:`hierarchy.reporting.replicate`): one model file per analysis, fitted
alone (:func:`fit_analysis`) or, where designs agree in everything the model function closes over, several in
one compiled program (:func:`batch_refusal`, :func:`batch_groups`, :func:`fit_analyses_batched`;
:func:`hierarchy.inference.batch.fit_batch`: side by side on an accelerator, in turn on CPU); :func:`fit_all`
fits every analysis asked for."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import shipped
from hierarchy.errors import HierarchyError

DEFAULT_PRIORS = "weakly_informative"  # a shipped prior set (hierarchy.shipped)


@dataclass(frozen=True)
class Analysis:
    """One fit: a scenario's table, a model file, and optionally a replaced outcome / row filter."""

    name: str
    scenario: str
    model: str
    outcome: str | None = None
    needs_positive: str | None = None  # keep rows where this column > 0 (an exposure that is a count)


# ------------------------------------------------------------------------------------------- fitting


def analysis_spec(a: Analysis):
    """The model spec of an analysis (its model file, the outcome replaced where it says so)."""
    from hierarchy.language.spec import load_spec

    path = shipped.resolve(a.model, "models")
    if not path.exists():
        raise HierarchyError(f"analysis '{a.name}': model file {path} not found")
    spec = load_spec(path)
    if a.outcome:
        spec = replace(spec, outcome=a.outcome, name=f"{spec.name}_{a.outcome}")
    return spec


def analysis_table(a: Analysis, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The rows an analysis fits (rows whose count exposure is 0 have no exposure and are left out)."""
    t = tables[a.scenario]
    if a.needs_positive:
        t = t[t[a.needs_positive] > 0].reset_index(drop=True)
    return t


def fit_analysis(spec, table: pd.DataFrame, *, priors=None, chains: int = 2, tune: int = 300,
                 draws: int = 300, seed: int = 0, float32: bool = False, method: str = "nuts"):
    """Fit ``spec`` to ``table`` with NumPyro NUTS (``method="laplace"``: NUTS over the hyperparameters of the
    embedded Laplace mode); the InferenceData the estimands read."""
    from hierarchy.data import table as data_mod
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.results.fitfile import build_idata

    pset = priors if priors is not None else load_priors(shipped.resolve(DEFAULT_PRIORS, "priors"))
    design = build_design(table, spec)
    draws_ = fit(spec, pset, design, chains=chains, tune=tune, draws=draws, seed=seed, float32=float32,
                 method=method)
    return build_idata(draws_, spec, pset, design, data_hash=data_mod.data_hash(table, **spec.hashed_columns),
                       data_source=f"simulated:{spec.name}")


# ------------------------------------------------------------------------------------------- batched fits


def _same(a: Any, b: Any) -> bool:
    """Whether two design values are equal: arrays element-wise (NaN equal to NaN), containers and
    dataclasses item by item."""
    import dataclasses

    if a is b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # strings and objects have no NaN
            return bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def batch_refusal(spec, design, spec0, design0, *, other: str | None = None) -> str | None:
    """Why a fit of ``spec`` to ``design`` cannot share one compiled program with a fit of ``spec0`` to
    ``design0`` (None: it can); ``other`` names the second fit in the reason (default ``spec0.name``).

    :func:`hierarchy.likelihood.jaxmodel.model_fn` closes over the spec and the design: everything but
    the counts. So the two may differ only in the outcome's name and its counts ``y``; their rows,
    LAs, centring constants, covariates and the LA-effect parameterisation that ``auto`` chooses from
    the counts (:func:`hierarchy.language.design.centring`) must agree.
    """
    import dataclasses

    from hierarchy.language.design import centring, describe_centring, stratum_level_weights
    from hierarchy.likelihood.model import la_effect_labels

    other = other or spec0.name
    a, b = spec.to_dict(), spec0.to_dict()
    keys = sorted(k for k in set(a) | set(b) if k not in ("name", "outcome") and a.get(k) != b.get(k))
    if keys:
        return f"its model differs from {other}'s in {', '.join(keys)}"
    if len(design.y) != len(design0.y):
        return f"it fits {len(design.y):,} rows, {other} {len(design0.y):,}"
    fields = [f.name for f in dataclasses.fields(design) if f.name not in ("y", "stage_names")
              and not _same(getattr(design, f.name), getattr(design0, f.name))]
    if len(design.stage_names) != len(design0.stage_names):
        fields.append("stage_names")
    if fields:
        return f"its design differs from {other}'s in {', '.join(fields)}"
    c, c0 = centring(spec, design), centring(spec0, design0)
    if not _same(c, c0):
        labels = la_effect_labels(spec)
        return (f"its LA effects are parameterised {describe_centring(c, labels)}, {other}'s "
                f"{describe_centring(c0, labels)} (chosen from the counts)")
    if not _same(stratum_level_weights(spec, design), stratum_level_weights(spec0, design0)):
        return f"its LA effects are drawn at other stratum weights than {other}'s (from the counts)"
    return None


def batch_groups(fits: dict[str, tuple[Any, Any]]) -> tuple[list[list[str]], dict[str, str]]:
    """Group fits that can share one compiled program (:func:`batch_refusal`).

    Parameters
    ----------
    fits : dict
        Name -> ``(spec, design)``, in fitting order.

    Returns
    -------
    (list of list of str, dict of str to str)
        The groups in order (each fit joins the first group whose first fit it agrees with), and for
        each fit that starts a group after the first, why it could not join the first group.
    """
    groups: list[list[str]] = []
    why: dict[str, str] = {}
    for name, (spec, design) in fits.items():
        for g in groups:
            if batch_refusal(spec, design, *fits[g[0]], other=g[0]) is None:
                g.append(name)
                break
        else:
            if groups:
                lead = groups[0][0]
                why[name] = f"{name} not batched with {lead}: " + str(batch_refusal(
                    spec, design, *fits[lead], other=lead))
            groups.append([name])
    return groups, why


def fit_analyses_batched(specs: dict[str, Any], tables: dict[str, pd.DataFrame], *, priors=None,
                         chains: int = 2, tune: int = 300, draws: int = 300, seed: int = 0,
                         float32: bool = False, vectorize: bool | None = None) -> dict[str, Any]:
    """Fit analyses whose designs agree (:func:`batch_refusal`) in one compiled program.

    The model function is the first analysis' and each fit's counts its own
    (:func:`hierarchy.inference.batch.fit_jobs`: side by side on an accelerator, in turn on CPU);
    each fit's InferenceData is built as :func:`fit_analysis` builds it, from its own spec and design,
    with ``batch`` (the batch's size) and ``batched_with`` in its sampler settings.

    Parameters
    ----------
    specs, tables : dict
        Analysis name -> model spec and -> the table it fits.
    priors, chains, tune, draws, seed, float32
        As :func:`fit_analysis`.
    vectorize : bool, optional
        :func:`~hierarchy.inference.batch.fit_batch`'s (default: side by side on an accelerator only).

    Returns
    -------
    dict of str to arviz.InferenceData

    Raises
    ------
    HierarchyError
        When a design disagrees with the first (the reason from :func:`batch_refusal`).
    """
    from hierarchy.data import table as data_mod
    from hierarchy.inference.batch import fit_jobs
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.results.fitfile import build_idata

    pset = priors if priors is not None else load_priors(shipped.resolve(DEFAULT_PRIORS, "priors"))
    names = list(specs)
    designs = {n: build_design(tables[n], specs[n]) for n in names}
    first = names[0]
    for n in names[1:]:
        why = batch_refusal(specs[n], designs[n], specs[first], designs[first], other=first)
        if why:
            raise HierarchyError(f"analysis '{n}' cannot be fitted in one batch with '{first}': {why}; "
                                 "fit it alone (batched=False)")
    _, per_fit = fit_jobs([(specs[n], pset, designs[n]) for n in names], chains=chains, tune=tune, draws=draws,
                          seed=seed, float32=float32, vectorize=vectorize, batched_with=names)
    return {n: build_idata(d, specs[n], pset, designs[n],
                           data_hash=data_mod.data_hash(tables[n], **specs[n].hashed_columns),
                           data_source=f"simulated:{specs[n].name}") for n, d in zip(names, per_fit, strict=True)}


def fit_all(analyses: list[Analysis], tables: dict[str, pd.DataFrame], *, chains: int, tune: int, draws: int,
            seed: int = 0, float32: bool = False, fit_fn: Callable[..., Any] | None = None,
            batched: bool = True, refit: bool = False, say: Callable[[str], None] = lambda s: None,
            method: str = "nuts") -> tuple[dict[str, Any], dict[str, float]]:
    """Fit every analysis: those whose designs agree in one batch each (``batched`` and the default
    ``fit_fn``; :func:`batch_groups`), the others alone with ``fit_fn`` (default :func:`fit_analysis`).

    ``method="laplace"`` fits each analysis alone by the embedded Laplace mode (no batches: a batch runs NUTS
    on every parameter); an analysis outside its regime is fitted by NUTS, with the reason in the log
    (:func:`hierarchy.inference.laplace.refusal`).

    A fit of a batch that misses the convergence bar (its diagnostics' status is not ``ok``) is kept, with
    a line in the log: a fit alone would run the same sampler for the same draws (the replication's fits do
    not sample on), so a second try only costs time (measured at ``--fast``: 508 s with refits against
    259 s without, every fit missing the bar either way). ``refit=True`` refits such a fit alone anyway.
    Returns the InferenceData and the seconds of each analysis (a batch's time shared equally among
    its fits, plus any refit).
    """
    from hierarchy.language.design import build_design
    from hierarchy.results.fitfile import provenance

    specs = {a.name: analysis_spec(a) for a in analyses}
    rows = {a.name: analysis_table(a, tables) for a in analyses}
    kw = dict(chains=chains, tune=tune, draws=draws, seed=seed, float32=float32)
    alone = fit_fn or fit_analysis
    methods = _methods(specs, rows, method, say)

    def kw_of(n: str) -> dict:  # a fit alone: its method only where Laplace was asked (fit_fn may not take one)
        return {**kw, "method": methods[n]} if method == "laplace" else kw

    if batched and fit_fn is None and method == "nuts":
        groups, why = batch_groups({n: (s, build_design(rows[n], s)) for n, s in specs.items()})
        for reason in why.values():
            say(reason)
    else:
        groups = [[n] for n in specs]
    fits, timings = {}, {}
    for group in groups:
        t = time.perf_counter()
        if len(group) == 1:
            [n] = group
            fits[n] = alone(specs[n], rows[n], **kw_of(n))
            timings[n] = time.perf_counter() - t
            say(f"fitted {n} ({len(rows[n]):,} rows) in {timings[n]:.0f} s")
            continue
        fits.update(fit_analyses_batched({n: specs[n] for n in group}, {n: rows[n] for n in group}, **kw))
        share = (time.perf_counter() - t) / len(group)
        say(f"fitted {', '.join(group)} ({len(rows[group[0]]):,} rows each) in one batch in "
            f"{share * len(group):.0f} s")
        for n in group:
            timings[n] = share
            d = provenance(fits[n])["diagnostics"]
            if d["status"] != "ok" and not refit:
                say(f"{n}: the batched fit missed the convergence bar ({'; '.join(d['reasons'])}); kept (a fit "
                    "alone would run the same draws)")
            if refit and d["status"] != "ok":
                say(f"{n}: the batched fit missed the convergence bar ({'; '.join(d['reasons'])}); "
                    "refitting it alone")
                t = time.perf_counter()
                fits[n] = alone(specs[n], rows[n], **kw_of(n))
                timings[n] += time.perf_counter() - t
                say(f"fitted {n} alone in {time.perf_counter() - t:.0f} s")
    return fits, timings


def _methods(specs: dict[str, Any], rows: dict[str, pd.DataFrame], method: str,
             say: Callable[[str], None]) -> dict[str, str]:
    """Each analysis's method: ``method``, or NUTS where the Laplace mode refuses its model (said once each)."""
    if method not in ("nuts", "laplace"):
        raise HierarchyError(f"replicate: unknown method {method!r}; choose nuts or laplace")
    if method == "nuts":
        return {n: "nuts" for n in specs}
    from hierarchy.inference.laplace import refusal
    from hierarchy.language.design import build_design

    out = {}
    for n, spec in specs.items():
        why = refusal(spec, build_design(rows[n], spec))
        if why:
            say(f"{n}: method laplace refused ({why}); fitting it with NUTS")
        out[n] = "nuts" if why else "laplace"
    return out

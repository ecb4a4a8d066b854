"""End-to-end jobs built from the stage modules: fit from files, and the demo main job."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hierarchy import paths, published, shipped
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import CHAINS, DRAWS, PANEL_TARGET_ACCEPT, TUNE, default_max_draws

DEFAULT_MODEL = shipped.DEFAULT_MODEL
DEFAULT_PRIORS = shipped.DEFAULT_PRIORS


def fit_files(*, data, model, priors, out, columns=None, sampler: str = "numpyro",
              chains: int | None = None, tune: int | None = None, draws: int | None = None, seed: int = 0,
              include_data: bool = False, progress: bool = True,
              chain_method: str = "parallel", float32: bool = False, log=None,
              include_log_likelihood: bool = False, max_draws: int | None = None,
              prior_overrides: list[str] | tuple[str, ...] = (), target_accept: float | None = None,
              method: str = "nuts", geography: str | Path | None = None) -> str:
    """Validate ``data``, fit ``model`` under ``priors`` and save the fit to ``out``.

    ``model`` and ``priors`` are files or shipped names (:func:`hierarchy.shipped.resolve`).
    ``out`` is checked before any work: it may not be an input, and an existing file there is
    replaced only if it is a fit (callers that must not replace fits check first, as
    ``hierarchy fit`` does without ``--force``). ``log`` (e.g. ``print``) gets a few plain
    progress lines. The fit file holds no observed counts and no pointwise log-likelihood unless
    ``include_data`` / ``include_log_likelihood`` ask for them (either makes it disclosive).
    ``prior_overrides`` are brms-style changes of single priors (``'w:rural=normal(0, 0.05)'``,
    :func:`hierarchy.language.priors.with_prior_overrides`). Returns a short text summary (path, timings,
    diagnostics).
    """
    say = log or (lambda _msg: None)
    model, priors = shipped.resolve(model, "models"), shipped.resolve(priors, "priors")
    paths.check_output(out, kind="fit", inputs=[data, model, priors, columns], replace=True)
    from hierarchy.inference.sampling import use_host_devices, with_defaults

    chains, tune, draws, target_accept = with_defaults(sampler, chains, tune, draws, target_accept)
    if sampler != "chees":  # chees runs its many chains in one program, not one device each
        use_host_devices(max(chains, 1))  # before JAX starts
    from hierarchy.inference.sampling import fit
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.results.fitfile import save_fit

    t0 = time.perf_counter()
    spec, pset = load_spec(model), load_priors(priors)
    if prior_overrides:
        from hierarchy.language.priors import with_prior_overrides

        pset = with_prior_overrides(pset, list(prior_overrides))
    prep = _prepare(data, spec, columns, geography, say)
    why = None
    if method == "laplace":  # outside its regime: NUTS, with the reason on screen
        from hierarchy.inference.laplace import refusal

        why = refusal(spec, prep.design)
        if why:
            say(f"method laplace refused ({why}); fitting with NUTS")
            method = "nuts"
    say(f"fitting {spec.name} / {pset.name} to {len(prep.table):,} rows: {chains} chains x ({tune} warm-up "
        f"+ {draws} draws), {sampler}{' + Laplace' if method == 'laplace' else ''}")
    draws_ = fit(spec, pset, prep.design, sampler=sampler, chains=chains, tune=tune, draws=draws,
                 seed=seed, chain_method=chain_method, progress=progress, float32=float32,
                 max_draws=max_draws, target_accept=target_accept, method=method)
    if why:  # a rerun asking for laplace finds this fit again (hierarchy.inference.sweep.fit_key)
        draws_.settings.update(method_requested="laplace", method_refused=why)
    idata = _idata(draws_, spec, pset, prep, data=data, include_data=include_data,
                   include_log_likelihood=include_log_likelihood, geography=geography)
    say(f"sampling finished ({time.perf_counter() - t0:.0f} s since the start); saving {out}")
    save_fit(idata, out)
    return _summary(idata, draws_, spec, pset, out=out, model=model, asked=(sampler, chains, tune, draws),
                    wall=time.perf_counter() - t0, include_data=include_data,
                    include_log_likelihood=include_log_likelihood)


@dataclass(frozen=True)
class _Prepared:
    """A validated table and its design, shared by the fits of one data file and model."""

    table: Any
    cmap: Any
    design: Any


def _prepare(data, spec, columns, geography, say: Callable[[str], None]) -> _Prepared:
    """Read and validate ``data`` for ``spec`` (and the neighbourhood graph of a spatial term) into a design."""
    from hierarchy.data import table as data_mod
    from hierarchy.language.design import build_design

    cmap = data_mod.load_column_map(columns) if columns else None
    table = data_mod.load(data, columns=cmap, **spec.data_columns)  # any count / stratum column the model names
    for stage in spec.stages:
        if stage in table.columns and not (table[stage] > 0).any():
            raise HierarchyError(f"{data}: every {stage} count is 0; {spec.name} cannot be fitted "
                                 "(check the count column and the extract)")
    graph = None
    if getattr(spec, "spatial", None):  # car(neighbourhood): the map given, else the default one
        from hierarchy.data import geography as geo

        graph = geo.table_graph(table, geography)
        say(f"neighbourhood graph: {geo.describe(graph)}")
    elif geography is not None:
        raise HierarchyError(f"--geography is the map of a spatial term; {spec.name} has none "
                             "(add + car(neighbourhood) to its formula)")
    return _Prepared(table=table, cmap=cmap, design=build_design(table, spec, graph=graph))


def _idata(draws_, spec, pset, prep: _Prepared, *, data, include_data: bool, include_log_likelihood: bool,
           geography):
    """The fit file's InferenceData of ``draws_`` (:func:`hierarchy.results.fitfile.build_idata`)."""
    from hierarchy.data import table as data_mod
    from hierarchy.results.fitfile import build_idata

    table, cmap = prep.table, prep.cmap
    return build_idata(draws_, spec, pset, prep.design,
                       data_hash=data_mod.data_hash(table, **spec.hashed_columns), data_source=str(data),
                       data_year=published.data_year(data, table), include_data=include_data,
                       include_log_likelihood=include_log_likelihood, rows_hash=data_mod.rows_hash(table, spec),
                       column_map=None if cmap is None else cmap.canonical_to_user(), geography=geography)


def _summary(idata, draws_, spec, pset, *, out, model, asked: tuple, wall: float, include_data: bool,
             include_log_likelihood: bool) -> str:
    """The text a fit prints: path, model, timings, diagnostics and what to try, disclosure."""
    from hierarchy.inference.diagnostics import advice, format_diagnostics

    sampler, chains, tune, draws = asked
    t = draws_.timings
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    diag = format_diagnostics(prov["diagnostics"])
    tips = advice(prov["diagnostics"], idata.posterior, model=str(model))
    if tips:
        diag += "\nwhat to try:\n" + "\n".join(f"  - {t}" for t in tips)
    if not prov["shareable"]:
        why = [*(["it holds the observed counts (--include-data)"] if include_data else []),
               *(["it holds the pointwise log-likelihood (--include-log-likelihood)"]
                 if include_log_likelihood else []), *prov["disclosure_risks"]]
        diag += "\nwarning: this fit file is DISCLOSIVE, keep it inside: " + "; ".join(why)
    return (f"fit saved to {out}: {spec.name} / {pset.name} / {sampler}, "
            f"{chains} chains x ({tune} tune + {draws_.settings['draws']} draws"
            f"{_sampled_on(draws_.settings['draws'], draws, prov['diagnostics'])})\n"
            f"model: {spec.formula_text} ({spec.family})\n"
            f"wall {wall:.1f} s (sampler {t['total']:.1f} s: {_timing_parts(t)})\n{diag}")


def _timing_parts(t: dict) -> str:
    """The sampler's time split as its path records it (NUTS: warm-up and sampling; chees: compile, then
    warm-up and sampling in one program)."""
    if "warmup_and_sampling" in t:
        return (f"compile {t.get('compile', float('nan')):.1f} s, "
                f"warm-up and sampling {t['warmup_and_sampling']:.1f} s")
    return f"warmup incl. compile {t.get('warmup', float('nan')):.1f} s, sampling {t.get('sampling', 0):.1f} s"


def _sampled_on(done: int, asked: int, diag: dict) -> str:
    """The fit line's note on sampling past --draws: converged, or stopped at the cap without the bar."""
    if done <= asked:
        return ""
    if diag.get("status") == "ok":
        return ", sampled on until converged"
    return f", sampled on to {done} draws (the cap, --max-draws) without meeting the bar"


@dataclass(frozen=True)
class PriorFit:
    """What :func:`fit_prior_files` did for one prior set.

    Attributes
    ----------
    out : pathlib.Path
        The fit file written.
    summary : str
        The fit's text summary, as :func:`fit_files` gives it.
    batch : int
        How many prior sets shared its compiled program (1: fitted alone).
    note : str
        Why it was fitted alone ("" when it was batched).
    """

    out: Path
    summary: str
    batch: int = 1
    note: str = ""


def batch_refusal(sampler: str, method: str) -> str | None:
    """Why fits with ``sampler`` and ``method`` cannot share one compiled program (None: they can)."""
    if sampler != "numpyro":
        return f"sampler {sampler}: fits batched in one program run NumPyro NUTS"
    if method != "nuts":
        return f"method {method}: fits batched in one program run NUTS on every parameter"
    return None


def fit_prior_files(*, data, model, priors: Sequence, outs: Sequence, columns=None, sampler: str = "numpyro",
                    chains: int | None = None, tune: int | None = None, draws: int | None = None, seed: int = 0,
                    include_data: bool = False, float32: bool = False, include_log_likelihood: bool = False,
                    max_draws: int | None = None, target_accept: float | None = None, method: str = "nuts",
                    geography: str | Path | None = None, chain_method: str = "sequential",
                    vectorize: bool | None = None, log: Callable[[str], None] | None = None) -> list[PriorFit]:
    """Fit ``model`` to ``data`` under each prior set of ``priors``, those of one structure in one program.

    Prior sets that differ only in numbers (:func:`hierarchy.language.priors.group_by_structure`) are
    fitted together by :func:`hierarchy.inference.batch.fit_batch` (one table read, one design, one
    compiled program whose data carry each set's numbers: in turn on CPU, side by side on an
    accelerator). Each fit is written to its ``outs`` entry as :func:`fit_files` writes it, with its own
    prior set in its provenance (the same content key as :func:`fit_files` would record) and the batch
    in its sampler settings (``batch``, ``batch_prior_sets``). A fit of a batch that misses the
    convergence bar is refitted alone by :func:`fit_files` when ``max_draws`` lets that sample on (a
    batch cannot: each fit would stop at another length); without it a fit alone would run the same
    draws, so the batch's fit is kept, with a note. A set of a structure of its own, samplers other
    than NumPyro and ``method="laplace"`` are fitted one by one. ``log`` is told which and why.

    Parameters
    ----------
    data, model, columns, geography
        As for :func:`fit_files`.
    priors, outs : sequence
        Prior set files or shipped names, and the fit file of each (distinct).
    sampler, chains, tune, draws, seed, include_data, float32, include_log_likelihood, max_draws, \
target_accept, method, chain_method
        As for :func:`fit_files` (``chain_method`` only for fits made alone).
    vectorize : bool, optional
        :func:`~hierarchy.inference.batch.fit_batch`'s (default: side by side on an accelerator only).
    log : callable, optional
        Progress lines (e.g. ``print``).

    Returns
    -------
    list of PriorFit
        One per prior set, in order.
    """
    say = log or (lambda _msg: None)
    if len(priors) != len(outs):
        raise HierarchyError(f"{len(priors)} prior set(s) for {len(outs)} fit file(s): give one file per set")
    if len({Path(o).resolve() for o in outs}) != len(outs):
        raise HierarchyError(f"two prior sets would write the same fit file ({', '.join(map(str, outs))})")
    model, prior_paths = shipped.resolve(model, "models"), [shipped.resolve(p, "priors") for p in priors]
    for out in outs:
        paths.check_output(out, kind="fit", inputs=[data, model, *prior_paths, columns], replace=True)
    from hierarchy.inference.sampling import use_host_devices, with_defaults
    from hierarchy.language.priors import group_by_structure, load_priors, structure_difference
    from hierarchy.language.spec import load_spec

    chains, tune, draws, target_accept = with_defaults(sampler, chains, tune, draws, target_accept)
    if sampler != "chees":
        use_host_devices(max(chains, 1))  # before JAX starts: the fits made alone run their chains in parallel
    spec, psets = load_spec(model), [load_priors(p) for p in prior_paths]
    single = dict(data=data, model=model, columns=columns, sampler=sampler, chains=chains, tune=tune,
                  draws=draws, seed=seed, include_data=include_data, float32=float32,
                  include_log_likelihood=include_log_likelihood, max_draws=max_draws,
                  target_accept=target_accept, method=method, geography=geography,
                  chain_method=chain_method, progress=False, log=log)

    def alone(i: int, why: str) -> PriorFit:
        if why:
            say(f"{psets[i].name}: fitted alone ({why})")
        summary = fit_files(priors=prior_paths[i], out=outs[i], **single)
        return PriorFit(out=Path(outs[i]), summary=summary, note=why)

    refused = batch_refusal(sampler, method)
    groups = [[i] for i in range(len(psets))] if refused else group_by_structure(psets)
    batches = [g for g in groups if len(g) > 1]
    prep = _prepare(data, spec, columns, geography, say) if batches else None
    done: dict[int, PriorFit] = {}
    for group in groups:
        if len(group) > 1:
            done |= _fit_prior_batch(spec, psets, group, prep, outs=outs, model=model, data=data, seed=seed,
                                     asked=(sampler, chains, tune, draws), target_accept=target_accept,
                                     float32=float32, include=(include_data, include_log_likelihood),
                                     geography=geography, vectorize=vectorize, say=say,
                                     sample_on=(max_draws or draws) > draws, refit=alone)
            continue
        i = group[0]
        ref = next((b[0] for b in batches), next((j for j in range(len(psets)) if j != i), None))
        why = refused or (structure_difference(psets[i], psets[ref]) if ref is not None else "")
        done[i] = alone(i, why if len(psets) > 1 else "")
    return [done[i] for i in range(len(psets))]


def _fit_prior_batch(spec, psets: list, group: list[int], prep: _Prepared, *, outs: Sequence, model, data,
                     seed: int, asked: tuple, target_accept: float, float32: bool, include: tuple[bool, bool],
                     geography, vectorize: bool | None, say: Callable[[str], None], sample_on: bool,
                     refit: Callable[[int, str], PriorFit]) -> dict[int, PriorFit]:
    """Fit the prior sets ``psets[i]``, ``i`` in ``group`` (one structure), in one program and write each
    fit (:func:`fit_prior_files`); a fit that misses the convergence bar is handed to ``refit`` when
    ``sample_on`` (a fit alone may sample on), else kept with a note."""
    import jax
    import jax.numpy as jnp

    from hierarchy.inference.batch import fit_jobs
    from hierarchy.results.fitfile import save_fit

    t0 = time.perf_counter()
    sampler, chains, tune, draws = asked
    sets = [psets[i] for i in group]
    names = [p.name for p in sets]
    say(f"fitting {spec.name} under {len(sets)} prior sets in one program ({', '.join(names)}) to "
        f"{len(prep.table):,} rows: {chains} chains x ({tune} warm-up + {draws} draws) each, NumPyro NUTS")
    res, per_fit = fit_jobs([(spec, p, prep.design) for p in sets], chains=chains, tune=tune, draws=draws,
                            seed=seed, keys=jnp.stack([jax.random.PRNGKey(seed)] * len(sets)),
                            target_accept=target_accept, float32=float32, vectorize=vectorize,
                            batch_prior_sets=names)
    say(f"{len(sets)} fits done in {res.timings['compile'] + res.timings['run']:.0f} s "
        f"({res.timings['compile']:.0f} s compiling)")
    out: dict[int, PriorFit] = {}
    for d, i in zip(per_fit, group, strict=True):
        d.timings["total"] = d.timings["compile"] + d.timings["warmup_and_sampling"]
        idata = _idata(d, spec, psets[i], prep, data=data, include_data=include[0],
                       include_log_likelihood=include[1], geography=geography)
        diag = json.loads(idata.posterior.attrs["hierarchy"])["diagnostics"]
        missed = "" if diag.get("status") == "ok" else (
            f"its fit in a batch of {len(sets)} missed the convergence bar "
            f"({'; '.join(diag.get('reasons', [])) or diag.get('status')})")
        if missed and sample_on:
            out[i] = refit(i, f"{missed}; refitted alone, sampling on up to --max-draws")
            continue
        if missed:
            say(f"{psets[i].name}: {missed}; kept (a fit alone would run the same draws: --max-draws lets it "
                "sample on)")
        save_fit(idata, outs[i])
        text = _summary(idata, d, spec, psets[i], out=outs[i], model=model, asked=asked,
                        wall=time.perf_counter() - t0, include_data=include[0], include_log_likelihood=include[1])
        out[i] = PriorFit(out=Path(outs[i]), batch=len(sets), note=missed,
                          summary=f"{text}\nfitted in one program with {len(sets) - 1} other prior set(s): "
                                  f"{', '.join(n for n in names if n != psets[i].name)}")
    return out


def fit_sums_files(*, sums, public, model, priors, out, columns=None, chains: int = CHAINS, tune: int = TUNE,
                   draws: int = DRAWS, seed: int = 0, progress: bool = True) -> str:
    """``hierarchy fit --sufficient SUMS --data PUBLIC``: fit from LA-level sums
    (:mod:`hierarchy.inference.sufficient`) and save a normal fit file.

    The fit file is what :func:`fit_files` writes (:func:`hierarchy.results.fitfile.build_idata`),
    so ``summary`` and ``report`` read it. Its data hash combines the sums' hash and the public table's;
    ``data_source`` names both files and the sampler settings say ``likelihood = "sufficient_sums"``.
    No pointwise log-likelihood is stored: the neighbourhood counts are not there to compute it.
    """
    from hierarchy.config import config_hash
    from hierarchy.data import table as data_mod
    from hierarchy.inference.diagnostics import format_diagnostics
    from hierarchy.inference.sufficient import (
        check_exact,
        read_sums,
        sample_sufficient,
        sums_hash,
        sums_model_hash,
    )
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.results.fitfile import build_idata, save_fit

    model, priors = shipped.resolve(model, "models"), shipped.resolve(priors, "priors")
    paths.check_output(out, kind="fit", inputs=[sums, public, model, priors, columns], replace=True)
    spec, pset = load_spec(model), load_priors(priors)
    check_exact(spec)
    table = read_sums(sums)
    written_for = sums_model_hash(sums)
    if written_for is not None and written_for != spec.hash():
        raise HierarchyError(f"{sums} was exported for a model with hash {written_for}, not {spec.name} "
                             f"({spec.hash()}): fit it with the model it was exported for")
    cmap = data_mod.load_column_map(columns) if columns else None
    pub = data_mod.read_table(public, columns=cmap)
    stages = [s for s in spec.stages if s in pub.columns]
    if stages:
        raise HierarchyError(f"{public} has the count column(s) {', '.join(stages)}: the public table for a "
                             "sums fit holds no counts (drop them; the counts are in the sums)")
    pub_clean = data_mod.clean(pub, strata=spec.strata)
    draws_, design = sample_sufficient(table, pub_clean, spec, pset, chains=chains, tune=tune, draws=draws,
                                       seed=seed, progress=progress)
    draws_.settings["sums_file"] = str(sums)
    dhash = config_hash([sums_hash(table), data_mod.data_hash(pub_clean, **{**spec.hashed_columns, "counts": ()})])
    idata = build_idata(draws_, spec, pset, design, data_hash=dhash,
                        data_source=f"sufficient sums {sums} with public table {public}",
                        column_map=None if cmap is None else cmap.canonical_to_user())
    if "log_likelihood" in idata.groups():  # built from pseudo-counts: meaningless for a sums fit
        del idata.log_likelihood
    save_fit(idata, out)
    diag = format_diagnostics(json.loads(idata.posterior.attrs["hierarchy"])["diagnostics"])
    return (f"fit saved to {out}: {spec.name} / {pset.name} from sufficient sums {sums}, "
            f"{chains} chains x ({tune} tune + {draws} draws), {draws_.timings['total']:.1f} s\n{diag}")


def is_panel_table(path) -> bool:
    """True when ``path`` is an LA panel written by ``hierarchy panel build`` (Parquet with its metadata)."""
    try:
        import pyarrow.parquet as pq

        return b"hierarchy_panel" in (pq.read_schema(path).metadata or {})
    except Exception:  # not Parquet, unreadable: not a panel
        return False


def panel_outputs(out, measures: Sequence[str]) -> dict[str, Path]:
    """The fit file of each measure: ``out`` for one measure, ``OUT_STEM.MEASURE.nc`` beside it for several."""
    out = Path(out)
    if len(measures) == 1:
        return {measures[0]: out}
    return {m: out.with_name(f"{out.stem}.{m}{out.suffix}") for m in measures}


def _panel_inputs(data, model, measures: Sequence[str] | None):
    """The panel spec, the panel and the measures to fit; wrong inputs are one line naming file and fix."""
    from hierarchy.data.panel import read_panel
    from hierarchy.likelihood.panel_model import load_panel_spec

    spec = load_panel_spec(model)
    if not is_panel_table(data):
        raise HierarchyError(f"{data} is not an LA panel: {spec.name} ({model}) is a panel model, fitted to the "
                             "LA x year panel of `hierarchy panel build --out panel.parquet` (--synthetic for the "
                             "generated stand-in); a neighbourhood table goes with a neighbourhood model "
                             f"(--model {DEFAULT_MODEL})")
    panel = read_panel(data)
    wanted = list(measures or spec.measures)
    if bad := [m for m in wanted if m not in spec.measures]:
        raise HierarchyError(f"--measure {', '.join(bad)}: {spec.name} ({model}) fits {', '.join(spec.measures)}; "
                             "give some of those, or another model")
    la = panel.table[panel.table["level"] == "LA"]
    present = set(la["measure"])
    if lacking := [m for m in wanted if m not in present]:
        have = [m for m in spec.measures if m in present]
        fix = (f"fit the ones it has with {' '.join(f'--measure {m}' for m in have)}" if have else
               "fit it to a panel that has them")
        raise HierarchyError(f"{data} has no LA rows of measure {', '.join(lacking)} (column 'measure' has "
                             f"{', '.join(sorted(present))}): {fix}, or build the real panel (hierarchy panel "
                             "build)")
    return spec, panel, wanted


def fit_panel_files(*, data, model, out, measures: Sequence[str] | None = None, chains: int | None = None,
                    tune: int | None = None, draws: int | None = None, max_draws: int | None = None,
                    seed: int = 0, target_accept: float | None = None, include_data: bool = False,
                    replace: bool = False, progress: bool = False,
                    log: Callable[[str], None] | None = None) -> str:
    """Fit the measures of a panel model file to an LA panel and write one fit file per measure.

    Each measure is fitted by :func:`hierarchy.inference.sampling.fit_panels`, with its defaults for what
    is left None (4 chains, 1,000 warm-up and 1,000 draws, target acceptance 0.9), sampling on to the
    convergence bar (a ``WARN:`` naming the parameter otherwise), and written by
    :func:`hierarchy.results.panel_fitfile.build_panel_idata` through the atomic writer, to ``out`` (one
    measure) or ``OUT_STEM.MEASURE.nc`` (several; :func:`panel_outputs`). Every output is checked before any
    work (``replace``: ``--force``). Returns what was written, one line per measure.
    """
    from hierarchy.inference.sampling import fit_panels
    from hierarchy.likelihood.panel_model import panel_design
    from hierarchy.results.fitfile import save_fit
    from hierarchy.results.panel_fitfile import build_panel_idata

    say = log or (lambda _msg: None)
    model = shipped.resolve(model, "models")
    spec, panel, wanted = _panel_inputs(data, model, measures)
    outs = panel_outputs(out, wanted)
    for path in outs.values():
        paths.check_output(path, kind="fit", inputs=[data, model], replace=replace)
        if path.exists():  # check_output allowed it: replace, and a fit
            say(f"replacing the fit {path} (--force)")
    draws = draws or DRAWS
    asked = dict(chains=chains or CHAINS, tune=TUNE if tune is None else tune, draws=draws,
                 max_draws=max_draws or default_max_draws(draws),
                 target_accept=target_accept or PANEL_TARGET_ACCEPT)
    designs = [panel_design(panel.table, m, spec) for m in wanted]
    say(f"fitting {spec.name} to {data} ({panel.source}): {', '.join(wanted)}; NumPyro NUTS, sampling on to "
        "the convergence bar")
    fits = fit_panels(designs, spec, seed=seed, progress=progress, **asked)
    lines = []
    for fit in fits:
        m = fit.design.measure
        settings = {"sampler": "numpyro", **asked, "seed": seed, "chain_method": "sequential",
                    "draws_done": fit.diagnostics.get("draws"),
                    "continuations": fit.diagnostics.get("continuations")}
        idata = build_panel_idata(fit, chains=settings["chains"], model_path=model, data_path=data,
                                  data_source=panel.source, sampler=settings, include_data=include_data)
        save_fit(idata, outs[m])
        lines.append(_panel_line(outs[m], fit, idata))
        say(lines[-1])
    return "\n".join(lines)


def _panel_line(path: Path, fit, idata) -> str:
    """One line per panel fit written: file, measure, formula, draws, verdict, disclosure."""
    prov = json.loads(idata.posterior.attrs["hierarchy"])
    d = fit.diagnostics
    verdict = "converged" if d["status"] == "ok" else d.get("warning", d["status"])
    share = ("shareable" if prov["shareable"] else
             "DISCLOSIVE, keep it inside: " + "; ".join(prov["disclosure_risks"]))
    return (f"wrote {path}: {fit.design.measure} ({prov['formula']}), {len(fit.design.units)} LAs x "
            f"{len(fit.design.years)} years, {d['draws']} draws per chain in {fit.seconds:.0f} s, {verdict} "
            f"(max R-hat {d['max_rhat']:.3f}, min ESS {d['min_ess']:.0f}); {share}")


def demo(*, out: Path, fit: Path, reference_dir=None, synthetic: bool = False,
         fast: bool = False, progress: bool = True, for_checking: bool = False) -> int:
    """Main job: simulate national data, validate it, fit the default model, write a report.

    The demo replaces its own earlier outputs (a fit at ``fit``, the simulated table in ``out``)
    and says so; it never replaces a file that is not of the kind it writes, and writes its report
    only into a folder that is new, empty or an earlier report (:func:`hierarchy.paths.mark_folder`).
    """
    from hierarchy.data import reference, simulate

    data_path = out / "national_2019.parquet"
    paths.check_output_folder(out)
    outputs = ((data_path, "parquet"), (data_path.with_suffix(".truth.json"), "json"), (fit, "fit"))
    for path, kind in outputs:
        paths.check_output(path, kind=kind, replace=True, option="demo output")
    report_dir = paths.check_output_folder(out / "report", option="demo output", owned=True)
    foreign = paths.foreign_files(report_dir)
    checking = out / "report_for_checking"
    if for_checking and checking.exists() and any(checking.iterdir()) and not (checking / "results.json").exists():
        raise HierarchyError(f"demo output {checking} exists and is not an ACRO results folder: move it "
                             "away")
    for path, _kind in outputs:
        if path.exists():
            print(f"replacing {path} (an earlier demo's)")
    out.mkdir(parents=True, exist_ok=True)
    geo = reference.get_geography(reference_dir, synthetic=synthetic or fast,
                                  n_la=20 if fast else 151, seed=0)
    print(f"geography: {geo.source}")
    table, truth = simulate.simulate(geo, year=2019, seed=0)
    simulate.write(table, truth, data_path)
    print(f"simulated {len(table):,} neighbourhoods in {table['la'].nunique()} LAs -> {data_path}")
    # sampled on until the convergence bar is met (bench/RESULTS.md: ~1,000 draws per chain nationally)
    kw = (dict(chains=2, tune=300, draws=300, max_draws=1500) if fast
          else dict(chains=CHAINS, tune=500, draws=DRAWS, max_draws=default_max_draws(DRAWS)))
    print(f"the demo keeps its simulated counts in {fit} (--include-data) so the report can show observed "
          "against predicted from the fit alone: it is marked DISCLOSIVE, as expected for simulated data; fits "
          "of your own data leave the counts out (shareable)")
    print(fit_files(data=data_path, model=DEFAULT_MODEL, priors=DEFAULT_PRIORS, out=fit,
                    include_data=True, progress=progress, log=print, **kw))
    try:
        from hierarchy.reporting import report
    except ImportError:  # the report stage lands separately
        return 0
    if for_checking and checking.exists():
        import shutil

        print(f"replacing {checking} (an earlier demo's)")
        shutil.rmtree(checking)
    try:
        path = report.write_report(fit, report_dir, data=data_path, truth=truth,
                                   for_checking=checking if for_checking else None)
    finally:
        paths.mark_folder(report_dir, foreign, command="demo")
    print(f"report: {path}")
    if for_checking:
        from hierarchy.reporting.checking import describe_folder

        print(f"results folder for the output checkers: {checking}\n{describe_folder(checking)}")
    return 0

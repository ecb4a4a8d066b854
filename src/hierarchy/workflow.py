"""End-to-end jobs built from the stage modules: fit from files, and the demo main job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hierarchy import paths, published, shipped
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import CHAINS, DRAWS, TUNE, default_max_draws

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
    from hierarchy.data import table as data_mod
    from hierarchy.inference.diagnostics import advice, format_diagnostics
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.results.fitfile import build_idata, save_fit

    t0 = time.perf_counter()
    spec, pset = load_spec(model), load_priors(priors)
    if prior_overrides:
        from hierarchy.language.priors import with_prior_overrides

        pset = with_prior_overrides(pset, list(prior_overrides))
    cmap = data_mod.load_column_map(columns) if columns else None
    named = spec.data_columns  # any count / stratum column the model names
    table = data_mod.load(data, columns=cmap, **named)
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
    design = build_design(table, spec, graph=graph)
    if method == "laplace":  # outside its regime: NUTS, with the reason on screen
        from hierarchy.inference.laplace import refusal

        why = refusal(spec, design)
        if why:
            say(f"method laplace refused ({why}); fitting with NUTS")
            method = "nuts"
    say(f"fitting {spec.name} / {pset.name} to {len(table):,} rows: {chains} chains x ({tune} warm-up "
        f"+ {draws} draws), {sampler}{' + Laplace' if method == 'laplace' else ''}")
    draws_ = fit(spec, pset, design, sampler=sampler, chains=chains, tune=tune, draws=draws,
                 seed=seed, chain_method=chain_method, progress=progress, float32=float32,
                 max_draws=max_draws, target_accept=target_accept, method=method)
    idata = build_idata(draws_, spec, pset, design, data_hash=data_mod.data_hash(table, **spec.hashed_columns),
                        data_source=str(data), data_year=published.data_year(data, table),
                        include_data=include_data,
                        include_log_likelihood=include_log_likelihood, rows_hash=data_mod.rows_hash(table, spec),
                        column_map=None if cmap is None else cmap.canonical_to_user(), geography=geography)
    say(f"sampling finished ({time.perf_counter() - t0:.0f} s since the start); saving {out}")
    save_fit(idata, out)
    wall = time.perf_counter() - t0
    t = draws_.timings
    prov = __import__("json").loads(idata.posterior.attrs["hierarchy"])
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

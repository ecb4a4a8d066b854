"""Command-line interface: one thin sub-command per pipeline stage.

Each handler parses arguments and calls the plain function API of one module; heavy modules
(PyMC, JAX) are imported inside the handler so that ``hierarchy validate`` starts quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from hierarchy import paths, shipped
from hierarchy.errors import DataValidationError, HierarchyError

ATOMIC = {"validate", "simulate", "fit", "fits", "summary", "sbc", "predict", "check"}
"""Commands whose every output is written whole or not at all (an interrupt leaves nothing)."""

FOLDER_FORCE_HELP = ("write into a folder holding files this program did not write (never over one "
                     "of them: a file there that could be overwritten is still refused)")
FOLDER_KINDS = ("folder", "owned", "empty")
"""Output kinds that are folders: a working folder (writable, not a file), a folder of pages and
tables (new, empty or ours: :func:`hierarchy.paths.check_output_folder` ``owned``), a new or empty
folder (an ACRO results folder). File kinds are :data:`hierarchy.paths.SUFFIXES`."""


def _io(sp: argparse.ArgumentParser, *, inputs: tuple[str, ...] = (),
        outputs: tuple[tuple[str, ...], ...] = (), replaces_own: bool = False) -> None:
    """Declare the paths a sub-command reads and writes, for :func:`check_outputs`.

    Parameters
    ----------
    sp
        The sub-command's parser.
    inputs
        Destinations (``args`` attributes) of the options naming files or folders it reads.
    outputs
        ``(dest, kind)`` for each option naming something it writes, ``kind`` a file kind of
        :data:`hierarchy.paths.SUFFIXES` or one of :data:`FOLDER_KINDS`; ``(dest, kind, suffix)`` for a
        file written beside it (``args.dest`` with ``suffix`` for its ending).
    replaces_own
        The command replaces its own earlier outputs without ``--force`` (the demo).
    """
    sp.set_defaults(inputs=inputs, outputs=outputs, replaces_own=replaces_own)


def _input_paths(args: argparse.Namespace) -> list:
    """The paths the command reads: its declared inputs, shipped model / prior names resolved."""
    found = []
    for dest in getattr(args, "inputs", ()):
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and dest in ("model", "priors"):
                try:
                    item = shipped.resolve(item, dest if dest == "priors" else "models")
                except HierarchyError:  # the command says what is wrong with it
                    pass
            found.append(item)
    return found


def check_outputs(args: argparse.Namespace) -> list[tuple[Path, set[str]]]:
    """Check every output a sub-command declared (:func:`_io`) before it does any work.

    Each file goes through :func:`hierarchy.paths.check_output` (the ending matches the format
    written, an existing file needs ``--force`` and is replaced only by one of its kind, the folder
    is writable, it is no input), each folder through :func:`hierarchy.paths.check_output_folder`;
    two outputs may not name the same path.

    Returns
    -------
    list of (pathlib.Path, set of str)
        The folders of pages and tables with the files in them that are not ours, for
        :func:`hierarchy.paths.mark_folder` once the command has run.
    """
    inputs = _input_paths(args)
    replace = bool(getattr(args, "force", False) or getattr(args, "replaces_own", False))
    seen: dict[Path, str] = {}
    claims = []
    for dest, kind, *beside in getattr(args, "outputs", ()):
        value = getattr(args, dest, None)
        if value is None:
            continue
        path, option = Path(value), "--" + dest.replace("_", "-")
        if beside:
            path, option = path.with_suffix(beside[0]), f"the {beside[0]} file beside {option}"
        if kind in FOLDER_KINDS:
            paths.check_output_folder(path, inputs=inputs, option=option, owned=kind == "owned",
                                      empty=kind == "empty", replace=replace)
            if kind == "owned":
                claims.append((path, paths.foreign_files(path)))
        else:
            paths.check_output(path, kind=kind, inputs=inputs, replace=replace, option=option)
        for other, name in seen.items():
            if paths.same_file(path, other):
                raise HierarchyError(f"{option} and {name} name the same path {path}; give two names")
        seen[path] = option
    return claims


def _progress_bars(quiet: bool) -> bool:
    """Progress bars only on a terminal: to a log they are thousands of carriage-return lines."""
    return not quiet and sys.stderr.isatty()


def _probability(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability strictly between 0 and 1 "
                                         "(e.g. 0.9 for 90% intervals)")
    return value


def _positive(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        return value
    parse.__name__ = "integer"
    return parse


def _sampler(text: str) -> str:
    """``--sampler``: an offered sampler, or argparse's one-line error saying why not (a removed one)."""
    from hierarchy.config import did_you_mean
    from hierarchy.inference.sampling import REMOVED_SAMPLERS, SAMPLERS, check_sampler

    if text not in SAMPLERS and text not in REMOVED_SAMPLERS:
        raise argparse.ArgumentTypeError(f"invalid choice: '{text}'{did_you_mean(text, SAMPLERS)} (choose from "
                                         f"{', '.join(SAMPLERS)})")
    try:
        return check_sampler(text)
    except HierarchyError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _validate(args: argparse.Namespace) -> int:
    from hierarchy.data import reference
    from hierarchy.data import table as data

    if args.kept is not None and args.drop_invalid is None:
        raise HierarchyError("--kept writes the rows that pass when rows are dropped: give "
                             "--drop-invalid REJECTS.csv too")
    named = dict(counts=tuple(n for n in args.counts.split(",") if n),
                 strata=tuple(n for n in args.strata.split(",") if n))
    if args.model is not None:  # the columns the model reads: counts, strata, row keys, its exposure
        from hierarchy.language.spec import load_spec

        spec = data.model_columns(load_spec(shipped.resolve(args.model, "models")))
        named = {**spec, **{k: tuple(dict.fromkeys([*spec[k], *named[k]])) for k in named}}
    geo = reference.maybe_reference(args.reference_dir)
    columns = data.load_column_map(args.columns) if args.columns else None
    table = data.read_table(args.data, columns=columns)
    report = data.validate(table, source=str(args.data), reference=geo, model=args.model, **named)
    print(report.format())
    if not args.drop_invalid:
        return 0 if report.ok else 1
    kept, rejected = data.split_invalid(table, report)
    data.write_rejected(rejected, args.drop_invalid)
    print(f"wrote {len(rejected)} rejected rows with reasons to {args.drop_invalid}; "
          f"{len(kept)} rows pass")
    if kept.empty:
        print("error: no row passes: there is nothing to fit", file=sys.stderr)
        return 1
    # the rows that pass, checked again as a table of their own (an LA may now be too small)
    kept_report = data.validate(kept, source=f"{args.data} (the {len(kept)} rows that pass)",
                                reference=geo, model=args.model, **named)
    seen = {(p.level, p.column, p.message) for p in report.problems}
    kept_report.problems = [p for p in kept_report.problems if (p.level, p.column, p.message) not in seen]
    if kept_report.problems:
        print("new problems once the rejected rows are dropped:\n" + kept_report.format())
    if not kept_report.ok:
        print("error: the rows that pass still fail as a table; nothing kept was written",
              file=sys.stderr)
        return 1
    if args.kept is None:
        print("to fit the rows that pass, write them with --kept KEPT.csv (or .parquet)")
        return 0
    data.write_table(data.clean(kept, **named), args.kept)
    mapped = " with canonical column names (fit it without --columns)" if columns else ""
    print(f"wrote the {len(kept)} rows that pass to {args.kept}{mapped}")
    return 0


def _sd_mix(text: str) -> tuple[float, float]:
    """``SD,MIX`` of ``simulate --spatial``: an SD >= 0 and a share in [0, 1]."""
    try:
        sd, mix = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SD,MIX such as 0.3,0.7, got {text!r}") from None
    if not (sd >= 0 and 0 <= mix <= 1):
        raise argparse.ArgumentTypeError(f"SD must be >= 0 and MIX in [0, 1], got {text!r}")
    return sd, mix


def _simulate(args: argparse.Namespace) -> int:
    from hierarchy.data import reference, simulate

    geo = reference.get_geography(args.reference_dir, synthetic=args.synthetic,
                                  n_la=args.n_la, seed=args.seed)
    strata = tuple(s for s in (args.strata or "").split(",") if s)
    if args.years is None:
        if args.gradient_trend is not None:
            raise HierarchyError("--gradient-trend changes the gradient from year to year: give the years "
                                 "with --years (e.g. --years 2013-2025 --gradient-trend 1.02)")
        table, truth = simulate.simulate(geo, year=2019 if args.year is None else args.year, strata=strata,
                                         seed=args.seed, la_conditions=args.la_conditions, spatial=args.spatial)
    else:
        if args.spatial is not None:
            raise HierarchyError("--spatial is for one year (--year): drop --years or --spatial")
        table, truth = simulate.simulate_years(geo, simulate.parse_years(args.years), strata=strata,
                                               seed=args.seed, la_conditions=args.la_conditions,
                                               gradient_trend=1.0 if args.gradient_trend is None
                                               else args.gradient_trend)
    truth_path = simulate.write(table, truth, args.out)
    years = f" x {table['year'].nunique()} years" if "year" in table else ""
    print(f"wrote {len(table):,} rows in {table['la'].nunique()} LAs{years} to {args.out}; truth: {truth_path}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from hierarchy import workflow
    from hierarchy.inference.sampling import default_max_draws, enable_compilation_cache, use_host_devices

    model, priors = shipped.resolve(args.model, "models"), shipped.resolve(args.priors, "priors")
    if args.out.exists():  # check_outputs allowed it: --force, and a fit
        print(f"replacing the fit {args.out} (--force)")
    if args.sufficient is not None:  # the export that leaves the children behind (issue 17)
        if args.sampler != "numpyro" or args.float32:
            raise HierarchyError("--sufficient fits with NumPyro in float64: drop --sampler/--float32")
        use_host_devices(max(args.chains, 1))
        enable_compilation_cache()
        print(workflow.fit_sums_files(sums=args.sufficient, public=args.data, model=model, priors=priors,
                                        out=args.out, columns=args.columns, chains=args.chains, tune=args.tune,
                                        draws=args.draws, seed=args.seed, progress=_progress_bars(args.quiet)))
        return 0
    enable_compilation_cache()  # process-wide JAX setting: switched on by the command, not the library

    result = workflow.fit_files(
        data=args.data, model=model, priors=priors, columns=args.columns,
        sampler=args.sampler, chains=args.chains, tune=args.tune, draws=args.draws,
        seed=args.seed, out=args.out, include_data=args.include_data,
        progress=_progress_bars(args.quiet), log=None if args.quiet else print,
        chain_method=args.chain_method, float32=args.float32,
        max_draws=args.max_draws or (default_max_draws(args.draws) if args.sampler == "numpyro" else None),
        include_log_likelihood=args.include_log_likelihood, prior_overrides=args.prior,
        target_accept=args.target_accept, method=args.method, geography=args.geography,
    )
    print(result)
    return 0


def _fits(args: argparse.Namespace) -> int:
    from hierarchy.results import fitfile

    if args.folder.exists() and not args.folder.is_dir():
        raise HierarchyError(f"{args.folder} is a file; hierarchy fits lists the fits in a folder")
    print(fitfile.list_fits(args.folder))
    removed = paths.clean_stale_temps(args.folder, folder=True)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by interrupted writes: "
              f"{', '.join(p.name for p in removed)}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from hierarchy.results import signing

    pub = signing.generate_key(args.out, replace=args.force)
    print(f"wrote the private key {args.out} (readable by you only: it stays inside) and the public key {pub} "
          "(give it to those who check your fits)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from hierarchy.results import fitfile, signing

    paths.check_output(signing.signature_path(args.fit), kind="signature", inputs=[args.fit, args.key],
                       replace=args.force, option="the signature beside the fit")
    prov = fitfile.provenance(fitfile.load_fit(args.fit))  # sign only a fit that passes every check
    print(f"signed {args.fit}: {signing.sign_fit(args.fit, args.key)}")
    if not prov["shareable"]:
        print("warning: this fit is DISCLOSIVE (a signature proves who made it, not that it may leave): "
              + "; ".join(prov["disclosure_risks"] or ["it holds data or the pointwise log-likelihood"]))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from hierarchy.results import fitfile, signing

    signing.verify_fit(args.fit, args.key)
    fitfile.load_fit(args.fit)
    print(f"{args.fit}: signature verified with {args.key}; seal, groups and constants check out")
    return 0


def _rope(text: str) -> tuple[float, float]:
    from hierarchy.results.heterogeneity import parse_rope

    try:
        return parse_rope(text)
    except HierarchyError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _summary(args: argparse.Namespace) -> int:
    from hierarchy.reporting import report

    print(report.summary_text(args.fit, fmt=args.format, prob=args.prob, rope=args.rope, null=args.null))
    return 0


def _report(args: argparse.Namespace) -> int:
    from hierarchy import published
    from hierarchy.reporting import report

    if args.acro_config and not args.for_checking:
        raise HierarchyError("--acro-config is the configuration of --for-checking DIR: give both")
    if args.columns and not args.data:
        raise HierarchyError("--columns is the column map of --data TABLE: give both")
    data, year = None, None
    if args.data:
        data, note = report.read_data(args.fit, args.data, columns=args.columns)
        print(f"columns of {args.data}: {note}")
        year = published.data_year(args.data, data)
    truth = None
    if args.data and args.data.with_suffix(".truth.json").is_file():  # a simulated table's known truth
        import json

        truth_path = args.data.with_suffix(".truth.json")
        try:
            truth = json.loads(truth_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HierarchyError(f"{truth_path}: not a readable truth file ({err}); move it away to report "
                                 "without the truth") from None
        print(f"using the simulator's truth beside the table: {truth_path} (shown beside the estimates)")
    path = report.write_report(args.fit, args.out, data=data, year=year, threshold=args.threshold,
                               truth=truth,
                               rounding=args.rounding, prob=args.prob,
                               allow_below_default_rules=args.allow_below_default_rules,
                               for_checking=args.for_checking, acro_config=args.acro_config,
                               geography=args.geography, inside_maps=args.inside_maps)
    print(f"report written to {path}")
    if args.for_checking:  # the same outputs, under the same suppression, as the report folder
        from hierarchy.reporting.checking import describe_folder

        print(f"results folder for the output checkers: {args.for_checking}\n{describe_folder(args.for_checking)}")
    return 0


def _replicate(args: argparse.Namespace) -> int:
    from hierarchy.reporting import replicate

    return replicate.main(args)


def _demo(args: argparse.Namespace) -> int:
    if getattr(args, "real", False):
        return _demo_real(args)
    from hierarchy import workflow
    from hierarchy.inference.sampling import enable_compilation_cache

    enable_compilation_cache()

    return workflow.demo(out=Path(args.out), fit=Path(args.fit), reference_dir=args.reference_dir,
                         synthetic=args.synthetic, fast=args.fast, progress=_progress_bars(False),
                         for_checking=args.for_checking)


def _compare_priors(args: argparse.Namespace) -> int:
    import contextlib

    from hierarchy.inference import cluster
    from hierarchy.results import compare

    model = shipped.resolve(args.model, "models")
    priors = [shipped.resolve(p, "priors") for p in args.priors]
    # a given scheduler is connected to here; unset, the sweep reads $HIERARCHY_DASK_SCHEDULER or
    # starts a local cluster only if some fit is missing
    with (cluster.connect(args.scheduler) if args.scheduler else contextlib.nullcontext()) as client:
        result = compare.compare_priors(
            args.data, model, priors, args.out, fits_dir=args.fits_dir, chains=args.chains,
            tune=args.tune, draws=args.draws, seed=args.seed, workers=args.workers, executor=client,
            prior_draws_n=args.prior_draws, prob=args.prob, refit=args.refit, columns=args.columns,
            prior_only=args.prior_only, log=None if args.quiet else print)
    print("\n".join(f"- {line}" for line in result.findings))
    print(f"fits reused: {len(result.reused)}, fitted now: {len(result.fitted)}")
    print(f"pages: {result.html} and {result.markdown}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from hierarchy.inference.grid import run_grid

    result = run_grid(args.grid, args.out, scheduler=args.scheduler, workers=args.workers,
                      refit=args.refit, log=None if args.quiet else print)
    table = result.table()
    counts = table["status"].value_counts()
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in ("fitted", "skipped", "failed")))
    for _, row in table[table["status"] == "failed"].iterrows():
        print(f"failed: {Path(row['out']).name}: {row['error']}", file=sys.stderr)
    return 1 if len(result.failures) else 0


def _compare_models(args: argparse.Namespace) -> int:
    from hierarchy.results import compare

    fits_dir = args.out / "cv_fits" if args.out and args.cv != "rows" else None
    result = compare.compare_models(args.fits, names=args.names, data=args.data, columns=args.columns,
                                    cv=args.cv, folds=args.folds, max_refits=args.max_refits, seed=args.seed,
                                    fits_dir=fits_dir, log=None if args.quiet else print)
    print(result.format())
    if args.out:
        print(f"\npage: {compare.write_model_comparison(result, args.out)}")
    return 0


def _sbc(args: argparse.Namespace) -> int:
    import jax
    import pandas as pd

    from hierarchy.data import reference, simulate
    from hierarchy.data import table as data
    from hierarchy.inference.sbc import sbc
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    model, priors_path = shipped.resolve(args.model, "models"), shipped.resolve(args.priors, "priors")
    jax.config.update("jax_enable_x64", True)
    spec, priors = load_spec(model), load_priors(priors_path)
    if args.data:  # the user's geography and exposures; their counts are not used
        table = data.read_table(args.data, columns=data.load_column_map(args.columns) if args.columns else None)
        print(f"columns of {args.data}: " + (f"column map {args.columns}" if args.columns else
                                             "canonical column names (no --columns)"))
    else:
        geo = reference.synthetic_geography(args.las, seed=args.seed, lsoa_per_la=args.lsoa_per_la)
        strata = tuple("age" if s == "age_band" else s for s in spec.strata)
        table = simulate.simulate(geo, seed=args.seed, strata=strata)[0]
    result = sbc(spec, priors, build_design(table, spec), replicates=args.replicates, warmup=args.warmup,
                 draws=args.draws, thin=args.thin, seed=args.seed)
    uniform = result.uniformity()
    print(f"SBC of {spec.name} under {priors.name}: {args.replicates} replicates, ranks out of "
          f"{result.n_post} draws; divergent transitions in {int((result.divergences > 0).sum())} "
          f"replicates\n{uniform.to_string(float_format=lambda v: f'{v:.3f}')}")
    if args.out:
        with paths.atomic_path(args.out) as tmp:
            pd.DataFrame(result.ranks).to_csv(tmp, index_label="replicate")
        print(f"ranks written to {args.out}")
    bad = uniform.index[uniform["p_value"] < args.alpha].tolist()
    if bad:
        print(f"not uniform at p < {args.alpha}: {', '.join(bad)}")
    return 1 if bad else 0


# --------------------------------------------------------------------------- DfE LA panel (issue 16)


def _panel(args: argparse.Namespace) -> int:
    from hierarchy.data import panel

    built = panel.get_panel(args.reference_dir, synthetic=args.synthetic, seed=args.seed)
    panel.write_panel(built, args.out)
    print(built.describe())
    print(f"wrote {len(built.table):,} rows to {args.out}")
    return 0


def _demo_real(args: argparse.Namespace) -> int:
    from hierarchy.inference.sampling import enable_compilation_cache
    from hierarchy.reporting import panel_report

    out = Path(args.out)
    paths.check_output(out / "panel.parquet", kind="parquet", replace=True, option="demo output")
    report_dir = paths.check_output_folder(out / "panel_report", option="demo output", owned=True)
    foreign = paths.foreign_files(report_dir)
    enable_compilation_cache()
    try:
        panel_report.demo_real(out, reference_dir=args.reference_dir, synthetic=args.synthetic, fast=args.fast)
    finally:
        paths.mark_folder(report_dir, foreign, command="demo --real")
    return 0


def _panel_parser(sub) -> None:
    sp = sub.add_parser("panel", help="the DfE LA x year panel 2013-2025 (real or a generated stand-in)")
    psub = sp.add_subparsers(dest="panel_command", required=True, help="what to do with the panel")
    b = psub.add_parser("build", help="build the LA x year x measure panel from the reference folder")
    b.add_argument("--reference-dir", type=Path, default=None,
                   help="folder with the England reference data (default: $HIERARCHY_REFERENCE_DIR or "
                        "../shared/data/england); without one, a generated stand-in")
    b.add_argument("--synthetic", action="store_true", help="write the generated stand-in panel")
    b.add_argument("--seed", type=int, default=0, help="seed of the generated stand-in (default: %(default)s)")
    b.add_argument("--out", type=Path, required=True, help="PANEL.parquet")
    b.add_argument("--force", action="store_true", help="replace an existing panel file (only a Parquet file)")
    b.set_defaults(func=_panel)
    _io(b, inputs=("reference_dir",), outputs=(("out", "parquet"),))


# --------------------------------------------------------------------------- predict and check (issue 23)


def _predict(args: argparse.Namespace) -> int:
    from hierarchy.results import predict

    frame = predict.predict(args.fit, args.newdata, prob=args.prob, counts=args.counts, draws=args.draws,
                            stage=args.stage, columns=args.columns, seed=args.seed)
    predict.write_predictions(frame, args.out)
    kinds = frame["prediction"].value_counts()
    print(f"columns of {args.newdata}: {frame.attrs['column_map']}")
    print(f"predicted {len(frame)} row(s) of {frame.attrs['stage']} ("
          + ", ".join(f"{n} {k}" for k, n in kinds.items())
          + f") from {frame.attrs['draws']} posterior draws: rates {frame['scale'].iloc[0]} with "
            f"{args.prob:.0%} intervals")
    print(f"predictions written to {args.out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from hierarchy.check import check_model

    print(check_model(args.model, args.priors, data=args.data, columns=args.columns,
                      draws=args.prior_draws, seed=args.seed).format())
    return 0


def _predict_check_parsers(sub, model_help: str, priors_help: str, columns_help: str, force_help: str) -> None:
    sp = sub.add_parser("predict", help="expected rates per 10,000 (with intervals) for observed, hypothetical "
                                        "or new-LA neighbourhoods from a fit",
                        epilog="newdata columns: neighbourhood (a fitted code: its fitted rate), or la + "
                               "deprivation (a hypothetical neighbourhood; an LA the fit lacks also needs "
                               "la_deprivation), plus the model's other terms; see hierarchy.results.predict")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--newdata", type=Path, required=True, help="the rows to predict (.csv or .parquet)")
    sp.add_argument("--columns", type=Path, help=columns_help + "; default: the map recorded in the fit, "
                                                                "when the file uses its names")
    sp.add_argument("--out", type=Path, required=True, help="the predictions to write (.csv)")
    sp.add_argument("--prob", type=_probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--counts", action="store_true",
                    help="also predictive counts (hypothetical rows then need exposure)")
    sp.add_argument("--draws", type=_count(1), default=None, help="posterior draws to use (default: all)")
    sp.add_argument("--stage", help="stage of a stacked-stages fit (default: the first)")
    sp.add_argument("--seed", type=int, default=0, help="seed of new-LA effects and predictive counts")
    sp.add_argument("--force", action="store_true", help=force_help)
    sp.set_defaults(func=_predict)
    _io(sp, inputs=("fit", "newdata", "columns"), outputs=(("out", "csv"),))

    sp = sub.add_parser("check", help="validate a model (and prior set) without fitting: formula, "
                                      "parameters with their priors, prior predictive line")
    sp.add_argument("model", help=model_help.replace(" (default: %(default)s)", ""))
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help)
    sp.add_argument("--data", type=Path, help="a table: check the model's columns and summarise the prior "
                                              "predictive (counts are not read)")
    sp.add_argument("--columns", type=Path, help=columns_help)
    sp.add_argument("--prior-draws", type=_count(1), default=200,
                    help="prior predictive draws (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.set_defaults(func=_check)
    _io(sp, inputs=("model", "priors", "data", "columns"))


# --------------------------------------------------------------------------- child-level extracts (issue 17)


def _extract_geography(args: argparse.Namespace):
    from hierarchy.data import reference

    if args.synthetic:
        return reference.synthetic_geography(args.n_la, seed=args.geo_seed, lsoa_per_la=args.lsoa_per_la)
    return reference.get_geography(args.reference_dir)


def _read_checked_extract(args: argparse.Namespace, geo, required=None):
    import pandas as pd

    from hierarchy.data import extract

    raw = extract.read_extract(args.extract, args.columns)
    end = pd.Timestamp(args.extract_end) if args.extract_end else None
    report = extract.validate_extract(raw, source=str(args.extract), lsoa_codes=geo.lsoa["lsoa"],
                                      lsoa_la=dict(zip(geo.lsoa["lsoa"], geo.lsoa["la"], strict=True)),
                                      extract_end=end, required=required or extract.REQUIRED_FIELDS)
    print(report.format())
    if not report.ok:
        raise HierarchyError(f"{args.extract} has errors (listed above); nothing was written")
    return raw, extract.parse_extract(raw), end or extract.default_extract_end(raw)


def _aggregate(args: argparse.Namespace) -> int:
    from hierarchy.data import aggregate

    geo = _extract_geography(args)
    _, records, end = _read_checked_extract(args, geo)
    year = args.year or int(end.year if end.month < 4 else end.year + 1)
    strata = tuple(s for s in args.strata.split(",") if s)
    result = aggregate.aggregate(records, geo, year=year, strata=strata, age=args.age, pop_file=args.population)
    for r in result.excluded.itertuples():
        print(f"warning: {r.events} {r.stage} events not counted: {r.reason}")
    aggregate.write_table(result.table, args.out)
    n_la = result.table["la"].nunique()
    print(f"wrote {len(result.table):,} rows (census year {year}, {n_la} LAs) to {args.out}")
    return 0


def _durations(args: argparse.Namespace) -> int:
    import pandas as pd

    from hierarchy.data import extract
    from hierarchy.data import table as data
    from hierarchy.results import durations

    reentry = args.spell == "reentry"
    if reentry and args.start:
        raise HierarchyError("--spell reentry builds its spells from care episodes; --start/--end are for "
                             "other spells")
    if bool(args.start) != bool(args.end):
        raise HierarchyError("give --start and --end together (the date fields a spell runs between)")
    geo = _extract_geography(args)
    _, records, end = _read_checked_extract(args, geo, extract.CARE_REQUIRED_FIELDS if reentry else None)
    try:
        cuts = (tuple(int(c) for c in args.cuts.split(",")) if args.cuts else
                durations.REENTRY_CUTS_DAYS if reentry else durations.CUTS_DAYS)
    except ValueError:
        raise HierarchyError(f"--cuts {args.cuts}: give whole days separated by commas, e.g. 0,91,182,365"
                             ) from None
    durations.band_labels(cuts)  # checks the cut points
    default_since = pd.Timestamp(end.year - 6, 4, 1) if reentry else pd.Timestamp(end.year - 1, 4, 1)
    since = pd.Timestamp(args.since) if args.since else default_since
    if reentry:
        sp = durations.reentry_spells(records, since=since, extract_end=end)
        what = "returns home -> next care start"
    else:
        start_col, end_col = (args.start, args.end) if args.start else durations.SPELLS[args.spell]
        sp = durations.spells(records, start_col, end_col, since=since, extract_end=end)
        what = f"{start_col} -> {end_col}"
    if sp.empty:
        raise HierarchyError(f"no spells ({what}) start on or after {since.date()}: check --since and the extract")
    table = durations.model_table(sp, geo, cuts)
    data.write_table(table, args.out)  # stays inside: neighbourhood-level events
    fit = durations.fit_piecewise(durations.person_time(sp, geo, cuts))
    within = 6 * 365 if reentry else 91
    est = durations.estimands(sp, geo, threshold=args.threshold, within_days=within)
    print(f"{len(sp):,} spells {what} from {since.date()}, censored at {end.date()}; table: {args.out} "
          f"(fit it: hierarchy fit --data {args.out} --model "
          f"{'care_reentry' if reentry else args.spell + '_duration'}_poisson --priors time_to_event)")
    print("maximum-likelihood check, hazard per child-year by band: "
          + ", ".join(f"{h * durations.YEAR_DAYS:.3f}" for h in fit["hazard"])
          + f"; log hazard ratio per 10 points of w: {fit['log_gradient']:.3f} (se {fit['se'][-1]:.3f})")
    print(est.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.estimands:
        data.write_table(est, args.estimands)
    return 0


def _simulate_extract(args: argparse.Namespace) -> int:
    import json

    from hierarchy.data import childsim

    geo = _extract_geography(args)
    ext, table, truth = childsim.simulate_extract(geo, year=args.year, seed=args.seed)
    truth_path = args.out.with_suffix(".truth.json")
    with paths.atomic_path(args.out.with_suffix(".counts.parquet")) as tmp:
        table.to_parquet(tmp, index=False)
    with paths.atomic_path(truth_path) as tmp:
        tmp.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    with paths.atomic_path(args.out) as tmp:
        ext.to_csv(tmp, index=False)
    print(f"wrote {len(ext):,} episodes of {truth['child_level']['children']:,} children to {args.out}; "
          f"truth: {truth_path}")
    return 0


def _export_sufficient(args: argparse.Namespace) -> int:
    from hierarchy.data import table as data
    from hierarchy.inference import sufficient
    from hierarchy.language.spec import load_spec

    model = shipped.resolve(args.model, "models")
    spec = load_spec(model)
    table = data.load(args.table, columns=args.columns, counts=spec.stages, strata=spec.strata)
    sums = sufficient.sufficient_sums(table, spec, threshold=args.threshold,
                                      allow_below_default_rules=args.allow_below_default_rules)
    sufficient.write_sums(sums, args.out, spec=spec, threshold=args.threshold,
                          allow_overlap=args.allow_overlapping_exports)
    print(f"wrote {len(sums)} LA x stage x stratum sums (each behind >= {args.threshold} children) to {args.out}")
    return 0


def _fit_sufficient(args: argparse.Namespace) -> int:
    """Same as ``hierarchy fit --sufficient SUMS --data PUBLIC``: a normal fit file."""
    from hierarchy import workflow
    from hierarchy.inference.sampling import enable_compilation_cache, use_host_devices

    model, priors = shipped.resolve(args.model, "models"), shipped.resolve(args.priors, "priors")
    use_host_devices(max(args.chains, 1))
    enable_compilation_cache()
    print(workflow.fit_sums_files(sums=args.sums, public=args.public, model=model, priors=priors,
                                    out=args.out, chains=args.chains, tune=args.tune, draws=args.draws,
                                    seed=args.seed, progress=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hierarchy`` argument parser (every option has a line of help)."""
    p = argparse.ArgumentParser(prog="hierarchy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    shipped_models = ", ".join(shipped.names("models"))
    shipped_priors = ", ".join(shipped.names("priors"))
    model_help = f"model file, or a shipped model's name: {shipped_models} (default: %(default)s)"
    priors_help = f"prior set file, or a shipped set's name: {shipped_priors} (default: %(default)s)"
    columns_help = "TOML column map from your column names to the canonical ones " \
                   "(examples/columns_example.toml)"
    seed_help = "random seed (default: %(default)s)"
    force_help = "replace an existing output file of the same kind (never an input or a foreign file)"

    def ref_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--reference-dir", type=Path, default=None,
                        help="folder with the England reference data (default: "
                             "$HIERARCHY_REFERENCE_DIR or ../shared/data/england)")

    def sampling_opts(sp: argparse.ArgumentParser, tune: int = 1000) -> None:
        sp.add_argument("--chains", type=_count(1), default=4, help="MCMC chains (default: %(default)s)")
        sp.add_argument("--tune", type=_count(0), default=tune,
                        help="warm-up iterations per chain, discarded (default: %(default)s)")
        sp.add_argument("--draws", type=_count(1), default=1000,
                        help="posterior draws kept per chain (default: %(default)s)")
        sp.add_argument("--seed", type=int, default=0, help=seed_help)

    sp = sub.add_parser("validate", help="check a neighbourhood table and report every problem")
    sp.add_argument("data", type=Path, help="the table: .csv or .parquet")
    sp.add_argument("--columns", type=Path, help=columns_help)
    sp.add_argument("--counts", default="", metavar="COL,...",
                    help="further count columns to check, e.g. events (a durations table needs no stage column)")
    sp.add_argument("--strata", default="", metavar="COL,...",
                    help="further stratum columns (part of the row key), e.g. band")
    sp.add_argument("--model", metavar="MODEL",
                    help="check the table for this model (a model file or a shipped name, as fit --model "
                         "takes it): its counts, strata and row keys, and its exposure (e.g. referral of "
                         "offset(log(referral))) above 0 in every row, so --drop-invalid drops the rows it "
                         "cannot fit")
    sp.add_argument("--drop-invalid", type=Path, metavar="REJECTS.csv",
                    help="write the rows that fail, with reasons, here (exit 0 when the rest pass)")
    sp.add_argument("--kept", type=Path, metavar="KEPT.csv",
                    help="with --drop-invalid: write the rows that pass here (.csv or .parquet), "
                         "ready for hierarchy fit --data")
    sp.add_argument("--force", action="store_true", help=force_help)
    ref_opts(sp)
    sp.set_defaults(func=_validate)
    _io(sp, inputs=("data", "columns", "reference_dir", "model"),
        outputs=(("drop_invalid", "csv"), ("kept", "table")))

    sp = sub.add_parser("simulate", help="simulate national neighbourhood counts with known truth")
    when = sp.add_mutually_exclusive_group()
    when.add_argument("--year", type=int, default=None, help="year of the calibration targets (default: 2019)")
    when.add_argument("--years", metavar="YEARS",
                      help="several years, e.g. 2013-2025 or 2019,2020: neighbourhood x year rows with a year "
                           "column, each year calibrated to its DfE LA totals (LA effects persist)")
    sp.add_argument("--gradient-trend", type=_positive, default=None, metavar="RATIO",
                    help="with --years: every gradient score multiplied by RATIO per year after 2019 "
                         "(default 1: flat)")
    sp.add_argument("--strata", default="", help="comma list from: age,sex,ethnicity")
    sp.add_argument("--spatial", type=_sd_mix, default=None, metavar="SD,MIX",
                    help="add a BYM2 neighbourhood field (SD of the effects, MIX its spatially structured "
                         "share) on the LSOA map (a lattice for a generated geography), in place of the "
                         "overdispersion (Poisson counts given the field: the truth of gradient_bym2_poisson); "
                         "its values go in the truth file")
    sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
    sp.add_argument("--n-la", type=_count(2), default=151, help="LAs in a generated geography")
    sp.add_argument("--la-conditions", action="store_true",
                    help="LA gradients steeper in more rural LAs (truth for models/la_conditions_nb.toml)")
    sp.add_argument("--seed", type=int, default=0, help=seed_help)
    sp.add_argument("--out", type=Path, required=True,
                    help="the table to write (.parquet); the truth goes beside it as .truth.json")
    sp.add_argument("--force", action="store_true", help=force_help)
    ref_opts(sp)
    sp.set_defaults(func=_simulate)
    _io(sp, inputs=("reference_dir",), outputs=(("out", "parquet"), ("out", "json", ".truth.json")))

    sp = sub.add_parser("fit", help="fit a model file under a prior file and save the posterior",
                        description="Fit a model file under a prior file and save the posterior. By "
                                    "default the fit file is shareable: parameter draws, diagnostics, "
                                    "provenance and the public inputs (deprivation, children, LA), "
                                    "sealed by a content hash; no observed counts and no pointwise "
                                    "log-likelihood (from which the counts can be rebuilt). "
                                    "--include-data and --include-log-likelihood add them and make "
                                    "the file disclosive.")
    sp.add_argument("--data", type=Path, required=True, help="the neighbourhood table (.csv or .parquet)")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help)
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help)
    sp.add_argument("--columns", type=Path, help=columns_help)
    sp.add_argument("--sampler", default="numpyro", type=_sampler, metavar="{numpyro,nutpie,pymc}",
                    help="NUTS implementation: NumPyro, nutpie or PyMC, each checked against NumPyro on "
                         "simulated data (pathfinder, advi and blackjax are no longer offered: they missed "
                         "NUTS or failed) (default: %(default)s)")
    sampling_opts(sp, tune=500)  # bench/RESULTS.md: 500 warm-up iterations adapt the national fits
    sp.add_argument("--max-draws", type=_count(1), default=None, metavar="N",
                    help="numpyro: while R-hat > 1.01 or an ESS < 400, the chains go on from where they "
                         "stopped for as many draws as the bar needs, up to N per chain (default: 3 x "
                         "--draws; --max-draws equal to --draws turns it off)")
    sp.add_argument("--chain-method", default="parallel", choices=["parallel", "sequential",
                                                                    "vectorized"],
                    help="numpyro: chains on separate cores, one after another, or vectorised "
                         "(GPU) (default: %(default)s)")
    sp.add_argument("--float32", action="store_true",
                    help="per-row arithmetic in float32, the density and sampler in float64 (about 2x "
                         "faster; bench/RESULTS.md checks the estimates agree)")
    sp.add_argument("--include-data", action="store_true",
                    help="store the observed counts in the fit file (off by default; DISCLOSIVE: "
                         "such a file must not leave the secure environment)")
    sp.add_argument("--include-log-likelihood", action="store_true",
                    help="store the pointwise log-likelihood (off by default; DISCLOSIVE: with the "
                         "posterior it gives back every observed count exactly). Not needed for LOO: "
                         "compare-models --data recomputes it from the data")
    sp.add_argument("--prior", action="append", default=[], metavar="TERM=DIST",
                    help="change one prior of the prior set, brms-style, e.g. 'w:rural=normal(0, 0.05)' or "
                         "'la_sd=exponential(5)'; repeatable")
    sp.add_argument("--method", default="nuts", choices=["nuts", "laplace"],
                    help="laplace (experimental): marginalise each LA's group effects (LA level, stacked "
                         "stages, strata, (1 | la:year)) by an embedded Laplace approximation, sample the "
                         "hyperparameters with NUTS and draw the effects given each draw; MSOA effects and "
                         "Poisson-lognormal rows fall back to NUTS, saying why. Accurate (means within 0.1 "
                         "NUTS SD) and mixes better per draw, but today ~2x slower per effective draw than "
                         "NUTS (bench/RESULTS.md)")
    sp.add_argument("--target-accept", type=_probability, default=0.8,
                    help="NUTS target acceptance rate; raise it (e.g. 0.95) when a fit reports divergences "
                         "(default: %(default)s)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    sp.add_argument("--sufficient", type=Path, metavar="SUMS.csv",
                    help="fit a Poisson model from LA-level sums (hierarchy export-sufficient); --data is then "
                         "the public table (neighbourhood, la, deprivation, exposure, strata; no counts)")
    sp.add_argument("--out", type=Path, required=True, help="the fit file to write (.nc)")
    sp.add_argument("--force", action="store_true", help="replace an existing fit file (only a fit)")
    sp.set_defaults(func=_fit)
    sp.add_argument("--geography", type=Path, metavar="FILE",
                    help="the neighbourhood map of a spatial term (car(neighbourhood)): a boundary file "
                         "(GeoJSON, .geojson.gz, GeoPackage, shapefile) or an edge list (from,to); default: "
                         "the reference folder's 2011 LSOA map, or the simulator's lattice for generated data")
    _io(sp, inputs=("data", "model", "priors", "columns", "sufficient", "geography"), outputs=(("out", "fit"),))

    sp = sub.add_parser("fits", help="list saved fits")
    sp.add_argument("folder", type=Path, nargs="?", default=Path("fits"),
                    help="folder of .nc fit files (default: %(default)s)")
    sp.set_defaults(func=_fits)
    _io(sp, inputs=("folder",))

    sp = sub.add_parser("keygen", help="make an Ed25519 key pair for signing fit files (NAME.key, NAME.pub)")
    sp.add_argument("--out", type=Path, required=True, help="the private key to write (NAME.key)")
    sp.add_argument("--force", action="store_true", help="replace an existing key pair (fits signed with it "
                                                         "then no longer verify)")
    sp.set_defaults(func=_keygen)
    _io(sp, outputs=(("out", "key"), ("out", "public_key", ".pub")))

    sp = sub.add_parser("sign", help="sign a fit file (FIT.nc.sig beside it) with a private key: proves it "
                                     "unchanged to anyone holding the public key")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--key", type=Path, required=True, help="the private key (NAME.key, from hierarchy keygen)")
    sp.add_argument("--force", action="store_true", help="replace an existing signature")
    sp.set_defaults(func=_sign)
    _io(sp, inputs=("fit", "key"))  # writes FIT.nc.sig, checked by _sign before it signs

    sp = sub.add_parser("verify", help="check a fit file's signature (FIT.nc.sig) with the public key")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--key", type=Path, required=True, help="the public key (NAME.pub)")
    sp.set_defaults(func=_verify)
    _io(sp, inputs=("fit", "key"))

    sp = sub.add_parser("summary", help="ArviZ summary and headline estimands of a fit")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--format", default="table", choices=["table", "csv", "markdown", "json"],
                    help="output format (default: %(default)s)")
    sp.add_argument("--prob", type=_probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--rope", type=_rope, default=None, metavar="LO,HI",
                    help="region of practical equivalence for gradient ratios and contrasts, e.g. 0.95,1.05: "
                         "P(inside) makes 'no difference' a finding with a number")
    sp.add_argument("--null", type=Path, default=None,
                    help="a simpler nested fit of the same data: adds the PCV (share of LA variance explained)")
    sp.set_defaults(func=_summary)
    _io(sp, inputs=("fit", "null"))

    sp = sub.add_parser("report", help="HTML/Markdown/CSV report of a fit")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--out", type=Path, required=True, help="folder for the report (created if missing)")
    sp.add_argument("--data", type=Path, help="the fitted table, for observed-vs-predicted panels and the census "
                                               "year of the published figures shown (its year column, or the "
                                               "simulator's truth file beside it)")
    sp.add_argument("--columns", type=Path, help=columns_help + " of --data; default: the map recorded in the "
                                                 "fit (hierarchy fit --columns)")
    sp.add_argument("--threshold", type=_count(0), default=10,
                    help="suppress observed counts below this (default 10)")
    sp.add_argument("--rounding", type=_count(0), default=5,
                    help="round published observed counts to a multiple of this (default 5)")
    sp.add_argument("--allow-below-default-rules", action="store_true",
                    help="needed for a threshold below 10 or a rounding base below 5: the report "
                         "then says at its top that it is NOT safe to publish under the default rules")
    sp.add_argument("--prob", type=_probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--for-checking", type=Path, metavar="DIR",
                    help="also write an ACRO results folder (results.json, outputs, checksums) for the "
                         "output checkers (SACRO-Viewer) in this new folder")
    sp.add_argument("--acro-config", type=Path, metavar="YAML",
                    help="the environment's ACRO configuration (default: an installed acro's "
                         "default.yaml, else ACRO's defaults)")
    sp.add_argument("--geography", type=Path, metavar="FILE",
                    help="neighbourhood boundaries for the maps (GeoJSON, .geojson.gz, GeoPackage, shapefile); "
                         "default: the reference folder's 2011 LSOA map, or a lattice for generated data")
    sp.add_argument("--inside-maps", action="store_true",
                    help="also write maps derived from neighbourhood counts (fitted neighbourhood rates) to "
                         "OUT/inside_only/; they stay inside the secure environment")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_report)
    _io(sp, inputs=("fit", "data", "columns", "acro_config", "geography"),
        outputs=(("out", "owned"), ("for_checking", "empty")))

    def scheduler_opt(sp: argparse.ArgumentParser, extra: str = "") -> None:
        sp.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler address (tcp://host:8786) or scheduler file to run the fits "
                             "on (default: $HIERARCHY_DASK_SCHEDULER, else a local cluster of worker "
                             f"processes){extra}")

    sp = sub.add_parser("sweep", help="fit every combination of a grid of data x models x priors x "
                                      "settings, on Dask; a rerun skips finished fits",
                        epilog='grid file, e.g.: data = "d.parquet"  model = ["gradient_nb", "gradient_poisson"]  '
                               'priors = ["weakly_informative", "vague"]  [settings] chains = 4  seed = [0, 1] '
                               '(README, "Sweeps"); exit status 1 when a fit failed')
    sp.add_argument("grid", type=Path, help="grid file (TOML)")
    sp.add_argument("--out", type=Path, required=True, help="folder for the fits and sweep.csv")
    scheduler_opt(sp, "; 'synchronous': one fit after another in this process")
    sp.add_argument("--workers", type=int, default=None,
                    help="worker processes of a local cluster (default: min(fits, cores))")
    sp.add_argument("--refit", action="store_true", help="fit even when a finished fit is there")
    sp.add_argument("--quiet", action="store_true", help="no progress messages")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_sweep)
    _io(sp, inputs=("grid",), outputs=(("out", "owned"),))

    sp = sub.add_parser("compare-priors", help="prior predictive checks, fits, estimands and "
                                               "power-scaling sensitivity under several prior sets")
    sp.add_argument("--data", type=Path, required=True, help="the neighbourhood table (.csv or .parquet)")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help)
    sp.add_argument("--priors", nargs="+", required=True, metavar="PRIORS",
                    help=f"prior set files, or names of shipped sets: {shipped_priors}")
    sp.add_argument("--out", type=Path, required=True, help="folder for the HTML/Markdown pages and CSVs")
    sp.add_argument("--fits-dir", type=Path, default=Path("fits"),
                    help="fits are reused from here when model, priors and data match, and saved here")
    sp.add_argument("--columns", type=Path, help=columns_help)
    sampling_opts(sp)
    sp.add_argument("--workers", type=_count(1), default=None,
                    help="parallel fitting processes (default: min(fits, cores))")
    scheduler_opt(sp)
    sp.add_argument("--prior-draws", type=_count(1), default=1000, help="prior predictive draws per set")
    sp.add_argument("--prob", type=_probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--refit", action="store_true", help="fit even when a matching fit exists")
    sp.add_argument("--prior-only", action="store_true",
                    help="prior predictive checks only: no fits, no posterior comparison")
    sp.add_argument("--quiet", action="store_true", help="no progress messages")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_compare_priors)
    _io(sp, inputs=("data", "model", "priors", "columns"), outputs=(("out", "owned"), ("fits_dir", "folder")))

    sp = sub.add_parser("compare-models", help="cross-validated comparison of saved fits of the same data "
                                               "(PSIS-LOO by neighbourhood, leave-one-LA-out, K-fold by LA)",
                        epilog="examples: hierarchy compare-models fits/national_nb.nc "
                               "fits/national_nb_log.nc --data out/national_2019.parquet --out out/loo; "
                               "a new LA: ... --cv la (or --cv la-kfold --folds 10)")
    sp.add_argument("fits", type=Path, nargs="+", help="two or more fit files (.nc) of the same data")
    sp.add_argument("--names", nargs="+", help="labels of the fits (default: model names)")
    sp.add_argument("--out", type=Path, help="folder for CSV tables and HTML/Markdown pages")
    sp.add_argument("--data", type=Path,
                    help="the table the fits were made from: the pointwise log-likelihood is "
                         "recomputed from it (fit files hold none by default)")
    sp.add_argument("--columns", type=Path, help="TOML column map of --data")
    sp.add_argument("--cv", choices=("rows", "la", "la-kfold"), default="rows",
                    help="rows (default): PSIS-LOO over neighbourhood rows, how well a left-out "
                         "neighbourhood of a seen LA is predicted; la: leave-one-LA-out, how well a new LA "
                         "is predicted (PSIS on each LA's summed log-likelihood; LAs whose Pareto k is "
                         "above min(1 - 1/log10(draws), 0.7) are refitted exactly, within --max-refits); "
                         "la-kfold: K-fold by LA, one refit per fold. The number of refits and their likely "
                         "time are printed before the first starts. Refits need --data and are saved in "
                         "OUT/cv_fits and reused")
    sp.add_argument("--folds", type=int, default=10, help="folds of K-fold by LA (default 10)")
    sp.add_argument("--max-refits", type=int, default=10, metavar="N",
                    help="budget: at most N refits per model (default 10), each about as long as the "
                         "model's own fit. --cv la refits the LAs whose Pareto k is above the threshold one "
                         "by one when there are at most N of them; when there are more, K-fold by LA with "
                         "min(--folds, N) folds replaces PSIS for every LA (N refits, each LA left out once "
                         "by a coarser split); with N below 2 (0: PSIS only) those LAs keep PSIS and are "
                         "flagged. Exact leave-one-LA-out of every LA would need N at least the LA count. "
                         "--cv la-kfold is refused when --folds is above N")
    sp.add_argument("--seed", type=int, default=0, help="seed of the assignment of LAs to folds")
    sp.add_argument("--quiet", action="store_true", help="no progress messages")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_compare_models)
    _io(sp, inputs=("fits", "data", "columns"), outputs=(("out", "owned"),))

    sp = sub.add_parser("sbc", help="simulation-based calibration of a model under a prior set",
                        epilog="exit status 1 when some parameter's ranks are not uniform")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help)
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help)
    sp.add_argument("--data", type=Path, help="take LAs, deprivation and exposures from this table "
                                              "(default: a small generated geography)")
    sp.add_argument("--columns", type=Path, help=columns_help)
    sp.add_argument("--las", type=_count(2), default=8, help="LAs in the generated geography")
    sp.add_argument("--lsoa-per-la", type=_positive, default=15.0,
                    help="mean neighbourhoods per LA in the generated geography (default: %(default)s)")
    sp.add_argument("--replicates", type=_count(1), default=100,
                    help="simulated data sets, each fitted once (default: %(default)s)")
    sp.add_argument("--warmup", type=_count(1), default=250, help="warm-up iterations per replicate")
    sp.add_argument("--draws", type=_count(1), default=200, help="posterior draws per replicate")
    sp.add_argument("--thin", type=_count(1), default=2, help="keep every n-th draw for the ranks")
    sp.add_argument("--alpha", type=_probability, default=0.001, help="chi-square level per parameter")
    sp.add_argument("--seed", type=int, default=0, help=seed_help)
    sp.add_argument("--out", type=Path, help="CSV of the ranks, one row per replicate")
    sp.add_argument("--force", action="store_true", help=force_help)
    sp.set_defaults(func=_sbc)
    _io(sp, inputs=("model", "priors", "data", "columns"), outputs=(("out", "csv"),))

    sp = sub.add_parser("demo", help="main job: simulate, validate, fit and report")
    sp.add_argument("--out", type=Path, default=Path("out"),
                    help="folder for the data and the report (default: %(default)s)")
    sp.add_argument("--fit", type=Path, default=Path("fits/demo.nc"),
                    help="the fit file; the demo's own is replaced (default: %(default)s)")
    sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
    sp.add_argument("--fast", action="store_true", help="small data and short chains")
    sp.add_argument("--for-checking", action="store_true",
                    help="also write OUT/report_for_checking, an ACRO results folder for output checkers")
    sp.add_argument("--real", action="store_true", help="the DfE LA panel: build it, fit models/panel_*.toml "
                                                        "and write OUT/panel_report/ (issue 16)")
    ref_opts(sp)
    sp.set_defaults(func=_demo)
    _io(sp, inputs=("reference_dir",), outputs=(("out", "folder"), ("fit", "fit")), replaces_own=True)
    _child_level_parsers(sub, ref_opts)
    _predict_check_parsers(sub, model_help, priors_help, columns_help, force_help)
    _panel_parser(sub)
    sp = sub.add_parser("replicate", help="every published finding simulated with a known truth, fitted and "
                        "tabulated (truth, posterior, 90%% interval, covered): index.html, replication.md/.csv")
    sp.add_argument("--out", type=Path, required=True, help="output folder (new, empty or an earlier page)")
    sp.add_argument("--fast", action="store_true", help="small generated geography and short chains")
    sp.add_argument("--synthetic", action="store_true", help="a generated geography of --n-la LAs")
    sp.add_argument("--n-la", type=int, default=151, help="LAs in a generated geography")
    sp.add_argument("--analyses", default="", help="comma list of analyses to fit (default all)")
    sp.add_argument("--tables", action="store_true", help="also write the simulated tables to OUT/data/")
    for opt in ("--chains", "--tune", "--draws"):
        sp.add_argument(opt, type=int, help="override the sampler setting of --fast / the full run")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--year", type=int, default=2019,
                    help="DfE year the LA totals are calibrated to (default: %(default)s)")
    ref_opts(sp)
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_replicate)
    _io(sp, inputs=("reference_dir",), outputs=(("out", "owned"),))
    return p


def _child_level_parsers(sub, ref_opts) -> None:
    """Sub-commands for child-level extracts (issue 17): aggregate, durations, simulate-extract,
    export-sufficient, fit-sufficient."""
    def geo_opts(sp: argparse.ArgumentParser) -> None:
        ref_opts(sp)
        sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
        sp.add_argument("--n-la", type=int, default=151, help="LAs of a generated geography (default: 151)")
        sp.add_argument("--lsoa-per-la", type=float, default=161.0,
                        help="mean neighbourhoods per LA of a generated geography (default: %(default)s)")
        sp.add_argument("--geo-seed", type=int, default=0, help="seed of the generated geography")

    def extract_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("extract", type=Path, help="child-level CIN extract (CSV or Parquet, DfE field names)")
        sp.add_argument("--columns", type=Path, help="TOML [fields] map: DfE field -> your column name")
        sp.add_argument("--extract-end", help="last day the extract covers (default: 31 March of the "
                                              "census year of the latest referral)")
        geo_opts(sp)

    sp = sub.add_parser("aggregate", help="child-level CIN extract -> neighbourhood x stratum table of one year")
    extract_opts(sp)
    sp.add_argument("--out", type=Path, required=True, help="TABLE.parquet")
    sp.add_argument("--year", type=int, help="census year (ending 31 March YEAR; default: the extract's last)")
    sp.add_argument("--strata", default="age_band,sex", help="comma list from age_band,sex,ethnicity,need")
    sp.add_argument("--age", default="band", choices=["band", "single"], help="age bands or single years")
    sp.add_argument("--population", type=Path, help="populations: neighbourhood, strata..., exposure")
    sp.add_argument("--force", action="store_true", help="replace an existing table (only a Parquet file)")
    sp.set_defaults(func=_aggregate)
    _io(sp, inputs=("extract", "columns", "population", "reference_dir"), outputs=(("out", "parquet"),))

    sp = sub.add_parser("durations", help="time to closure (or re-entry) as a piecewise-exponential table")
    extract_opts(sp)
    sp.add_argument("--spell", default="cin", choices=["cin", "cpp", "reentry"],
                    help="CIN episodes, CP plans, or re-entry to care after a return home (a looked-after "
                         "extract: CLAstartDate, CLAendDate, ReasonEpisodeCeased)")
    sp.add_argument("--cuts", help="band edges in days, e.g. 0,91,182,365 (default: that; re-entry 0,182,365,730)")
    sp.add_argument("--start", help="start date field (with --end: any spell, e.g. a return home)")
    sp.add_argument("--end", help="end date field (e.g. the next care start, for re-entry)")
    sp.add_argument("--since", help="spells starting on or after this date (default: 1 April of the last year; "
                                    "re-entry: six years before that)")
    sp.add_argument("--out", type=Path, required=True,
                    help="neighbourhood x band table (CSV or Parquet) for hierarchy fit; stays inside")
    sp.add_argument("--estimands", type=Path, help="CSV of disclosure-controlled Kaplan-Meier estimands")
    sp.add_argument("--threshold", type=int, default=10,
                    help="suppress groups behind fewer spells or events (default: %(default)s)")
    sp.add_argument("--force", action="store_true", help="replace existing output files")
    sp.set_defaults(func=_durations)
    _io(sp, inputs=("extract", "columns", "reference_dir"), outputs=(("out", "table"), ("estimands", "csv")))

    sp = sub.add_parser("simulate-extract", help="synthetic child-level CIN extract with a known truth")
    geo_opts(sp)
    sp.add_argument("--year", type=int, default=2019, help="census year to simulate (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--out", type=Path, required=True, help="EXTRACT.csv (+ .truth.json, .counts.parquet)")
    sp.add_argument("--force", action="store_true", help="replace existing output files of the same kind")
    sp.set_defaults(func=_simulate_extract)
    _io(sp, inputs=("reference_dir",), outputs=(("out", "csv"), ("out", "json", ".truth.json"),
                                                 ("out", "parquet", ".counts.parquet")))

    sp = sub.add_parser("export-sufficient", help="LA-level sums of a Poisson model, disclosure-checked")
    sp.add_argument("table", type=Path, help="validated neighbourhood table (CSV or Parquet)")
    sp.add_argument("--model", default="gradient_poisson",
                    help="a Poisson model file or shipped name (default: %(default)s)")
    sp.add_argument("--columns", type=Path, help="TOML column map for the table")
    sp.add_argument("--threshold", type=int, default=10, help="refuse any sum behind fewer children")
    sp.add_argument("--out", type=Path, required=True,
                    help="SUMS.csv to write (an existing file is never replaced without --force)")
    sp.add_argument("--force", action="store_true", help="replace an existing sums file (only a CSV)")
    sp.add_argument("--allow-below-default-rules", action="store_true",
                    help="needed for a threshold below 10: such sums may identify children and must stay "
                         "inside the secure environment")
    sp.add_argument("--allow-overlapping-exports", action="store_true",
                    help="write sums even when they differ from an export recorded in the output folder's "
                         "hierarchy_exports.json by fewer than the threshold's children (warns and logs it): "
                         "the two files may not leave the secure environment together")
    sp.set_defaults(func=_export_sufficient)
    _io(sp, inputs=("table", "model", "columns"), outputs=(("out", "csv"),))

    sp = sub.add_parser("fit-sufficient", help="fit a Poisson model from exported sums and the public table")
    sp.add_argument("sums", type=Path, help="SUMS.csv written by export-sufficient")
    sp.add_argument("--public", type=Path, required=True, help="table with neighbourhood, la, deprivation, "
                                                               "exposure (and strata); counts not needed")
    sp.add_argument("--model", default="gradient_poisson",
                    help="the Poisson model the sums were exported for: a file or a shipped name "
                         "(default: %(default)s)")
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS,
                    help="prior set file, or a shipped set's name (default: %(default)s)")
    sp.add_argument("--chains", type=int, default=4, help="chains (default: %(default)s)")
    sp.add_argument("--tune", type=int, default=500, help="warm-up draws per chain (default: %(default)s)")
    sp.add_argument("--draws", type=int, default=500, help="draws per chain (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--out", type=Path, required=True, help="the fit file to write (.nc), as hierarchy fit writes")
    sp.add_argument("--force", action="store_true", help="replace an existing fit file (only a fit)")
    sp.set_defaults(func=_fit_sufficient)
    _io(sp, inputs=("sums", "public", "model", "priors"), outputs=(("out", "fit"),))


def _once(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that shows each message text once (a table loaded twice in one command,
    e.g. by the demo's fit and then its report, warns about its small LAs once, not twice)."""
    said: set[str] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        if str(message) not in said:
            said.add(str(message))
            show(message, category, filename, lineno, file, line)
    return show_once


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hierarchy`` console script.

    Problems the user can fix are one ``error:`` line on stderr and exit status 2 (never a
    traceback); Ctrl-C exits 130.
    """
    args = build_parser().parse_args(argv)
    # data warnings read as messages, not as source lines
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"
    try:
        claims = check_outputs(args)  # every output, before any work
        try:
            with warnings.catch_warnings():  # one command says each warning once
                warnings.showwarning = _once(warnings.showwarning)
                return args.func(args)
        finally:
            for folder, foreign in claims:  # what the command wrote there is ours from now on
                with contextlib.suppress(OSError):
                    paths.mark_folder(folder, foreign, command=args.command)
    except HierarchyError as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, DataValidationError) and err.report.errors and all(
                p.n_rows for p in err.report.errors):
            print(f"to set the failing rows aside: {err.report.drop_command()}, then fit kept.csv",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = "nothing written" if args.command in ATOMIC else "outputs may be incomplete"
        print(f"\ninterrupted, {done}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (| head)
        sys.stdout = open(os.devnull, "w")  # no second error when Python flushes at exit
        return 1
    except OSError as err:  # a file the checks could not foresee (disk full, permissions changed)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Command-line interface: one thin sub-command per pipeline stage.

Each handler parses arguments and calls the plain function API of one module; heavy modules
(PyMC, JAX) are imported inside the handler so that ``hierarchy validate`` starts quickly.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from hierarchy.errors import HierarchyError


def _validate(args: argparse.Namespace) -> int:
    from hierarchy import data, reference

    geo = reference.maybe_reference(args.reference_dir)
    columns = data.load_column_map(args.columns) if args.columns else None
    table = data.read_table(args.data, columns=columns)
    report = data.validate(table, source=str(args.data), reference=geo)
    print(report.format())
    if args.drop_invalid:
        kept, rejected = data.split_invalid(table, report)
        data.write_rejected(rejected, args.drop_invalid)
        print(f"wrote {len(rejected)} rejected rows with reasons to {args.drop_invalid}; "
              f"{len(kept)} rows pass")
        return 0
    return 0 if report.ok else 1


def _simulate(args: argparse.Namespace) -> int:
    from hierarchy import reference, simulate

    geo = reference.get_geography(args.reference_dir, synthetic=args.synthetic,
                                  n_la=args.n_la, seed=args.seed)
    strata = tuple(s for s in (args.strata or "").split(",") if s)
    table, truth = simulate.simulate(geo, year=args.year, strata=strata, seed=args.seed,
                                     la_conditions=args.la_conditions)
    truth_path = simulate.write(table, truth, args.out)
    print(f"wrote {len(table):,} rows in {table['la'].nunique()} LAs to {args.out}; truth: {truth_path}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from hierarchy import workflow
    from hierarchy.sampling import enable_compilation_cache

    enable_compilation_cache()  # process-wide JAX setting: switched on by the command, not the library

    result = workflow.fit_files(
        data=args.data, model=args.model, priors=args.priors, columns=args.columns,
        sampler=args.sampler, chains=args.chains, tune=args.tune, draws=args.draws,
        seed=args.seed, out=args.out, include_data=args.include_data, progress=not args.quiet,
        chain_method=args.chain_method, float32=args.float32,
    )
    print(result)
    return 0


def _fits(args: argparse.Namespace) -> int:
    from hierarchy import fitfile

    print(fitfile.list_fits(args.folder))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from hierarchy import report

    print(report.summary_text(args.fit, fmt=args.format, prob=args.prob))
    return 0


def _report(args: argparse.Namespace) -> int:
    from hierarchy import report

    path = report.write_report(args.fit, args.out, data=args.data, threshold=args.threshold,
                               rounding=args.rounding, prob=args.prob)
    print(f"report written to {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hierarchy import workflow
    from hierarchy.sampling import enable_compilation_cache

    enable_compilation_cache()

    return workflow.demo(out=Path(args.out), fit=Path(args.fit), reference_dir=args.reference_dir,
                         synthetic=args.synthetic, fast=args.fast)


def _compare_priors(args: argparse.Namespace) -> int:
    from hierarchy import compare

    result = compare.compare_priors(
        args.data, args.model, args.priors, args.out, fits_dir=args.fits_dir, chains=args.chains,
        tune=args.tune, draws=args.draws, seed=args.seed, workers=args.workers,
        prior_draws_n=args.prior_draws, prob=args.prob, refit=args.refit, columns=args.columns,
        prior_only=args.prior_only, log=None if args.quiet else print)
    print("\n".join(f"- {line}" for line in result.findings))
    print(f"fits reused: {len(result.reused)}, fitted now: {len(result.fitted)}")
    print(f"pages: {result.html} and {result.markdown}")
    return 0


def _compare_models(args: argparse.Namespace) -> int:
    from hierarchy import compare

    result = compare.compare_models(args.fits, names=args.names)
    print(result.format())
    if args.out:
        print(f"\npage: {compare.write_model_comparison(result, args.out)}")
    return 0


def _sbc(args: argparse.Namespace) -> int:
    import jax
    import pandas as pd

    from hierarchy import data, reference, simulate
    from hierarchy.design import build_design
    from hierarchy.priors import load_priors
    from hierarchy.sbc import sbc
    from hierarchy.spec import load_spec

    jax.config.update("jax_enable_x64", True)
    spec, priors = load_spec(args.model), load_priors(args.priors)
    if args.data:  # the user's geography and exposures; their counts are not used
        table = data.read_table(args.data, columns=data.load_column_map(args.columns) if args.columns else None)
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(result.ranks).to_csv(args.out, index_label="replicate")
        print(f"ranks written to {args.out}")
    bad = uniform.index[uniform["p_value"] < args.alpha].tolist()
    if bad:
        print(f"not uniform at p < {args.alpha}: {', '.join(bad)}")
    return 1 if bad else 0


# --------------------------------------------------------------------------- child-level extracts (issue 17)


def _extract_geography(args: argparse.Namespace):
    from hierarchy import reference

    if args.synthetic:
        return reference.synthetic_geography(args.n_la, seed=args.geo_seed, lsoa_per_la=args.lsoa_per_la)
    return reference.get_geography(args.reference_dir)


def _read_checked_extract(args: argparse.Namespace, geo):
    import pandas as pd

    from hierarchy import extract

    if Path(args.out).resolve() == Path(args.extract).resolve():
        raise HierarchyError(f"--out {args.out} is the extract itself; name another file")
    raw = extract.read_extract(args.extract, args.columns)
    end = pd.Timestamp(args.extract_end) if args.extract_end else None
    report = extract.validate_extract(raw, source=str(args.extract), lsoa_codes=geo.lsoa["lsoa"],
                                      lsoa_la=dict(zip(geo.lsoa["lsoa"], geo.lsoa["la"], strict=True)),
                                      extract_end=end)
    print(report.format())
    if not report.ok:
        raise HierarchyError(f"{args.extract} has errors (listed above); nothing was written")
    return raw, extract.parse_extract(raw), end or extract.default_extract_end(raw)


def _aggregate(args: argparse.Namespace) -> int:
    from hierarchy import aggregate

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

    from hierarchy import durations

    geo = _extract_geography(args)
    _, records, end = _read_checked_extract(args, geo)
    start_col, end_col = (args.start, args.end) if args.start else durations.SPELLS[args.spell]
    since = pd.Timestamp(args.since) if args.since else pd.Timestamp(end.year - 1, 4, 1)
    sp = durations.spells(records, start_col, end_col, since=since, extract_end=end)
    table = durations.person_time(sp, geo)
    fit = durations.fit_piecewise(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)  # stays inside: neighbourhood-level events
    est = durations.estimands(sp, geo, threshold=args.threshold)
    print(f"{len(sp):,} spells {start_col} -> {end_col} from {since.date()}, censored at {end.date()}; "
          f"table: {args.out}")
    print("hazard per day by band: " + ", ".join(f"{h:.5f}" for h in fit["hazard"])
          + f"; log gradient per 10 points of w: {fit['log_gradient']:.3f} (se {fit['se'][-1]:.3f})")
    print(est.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.estimands:
        est.to_csv(args.estimands, index=False)
    return 0


def _simulate_extract(args: argparse.Namespace) -> int:
    import json

    from hierarchy import childsim

    geo = _extract_geography(args)
    ext, table, truth = childsim.simulate_extract(geo, year=args.year, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ext.to_csv(args.out, index=False)
    truth_path = args.out.with_suffix(".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    table.to_parquet(args.out.with_suffix(".counts.parquet"), index=False)
    print(f"wrote {len(ext):,} episodes of {truth['child_level']['children']:,} children to {args.out}; "
          f"truth: {truth_path}")
    return 0


def _export_sufficient(args: argparse.Namespace) -> int:
    from hierarchy import data, sufficient
    from hierarchy.spec import load_spec

    spec = load_spec(args.model)
    table = data.load(args.table, columns=args.columns)
    sums = sufficient.sufficient_sums(table, spec, threshold=args.threshold)
    sufficient.write_sums(sums, args.out, spec=spec, threshold=args.threshold)
    print(f"wrote {len(sums)} LA x stage x stratum sums (each behind >= {args.threshold} children) to {args.out}")
    return 0


def _fit_sufficient(args: argparse.Namespace) -> int:
    import arviz as az

    from hierarchy import data, sufficient
    from hierarchy.priors import load_priors
    from hierarchy.spec import load_spec

    spec, priors = load_spec(args.model), load_priors(args.priors)
    public = data.read_table(args.public)
    draws = sufficient.fit_sufficient(sufficient.read_sums(args.sums), public, spec, priors, chains=args.chains,
                                      tune=args.tune, draws=args.draws, seed=args.seed)
    idata = az.from_dict(posterior=draws)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(args.out)
    print(az.summary(idata, var_names=[v for v in ("intercept", "gradient", "la_sd") if v in draws]))
    print(f"posterior written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hierarchy`` argument parser."""
    p = argparse.ArgumentParser(prog="hierarchy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def ref_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--reference-dir", type=Path, default=None,
                        help="folder with the England reference data (default: "
                             "$HIERARCHY_REFERENCE_DIR or ../shared/data/england)")

    sp = sub.add_parser("validate", help="check a neighbourhood table and report every problem")
    sp.add_argument("data", type=Path)
    sp.add_argument("--columns", type=Path, help="TOML column map (your names -> canonical)")
    sp.add_argument("--drop-invalid", type=Path, metavar="REJECTS.csv",
                    help="write rejected rows with reasons here instead of failing")
    ref_opts(sp)
    sp.set_defaults(func=_validate)

    sp = sub.add_parser("simulate", help="simulate national neighbourhood counts with known truth")
    sp.add_argument("--year", type=int, default=2019)
    sp.add_argument("--strata", default="", help="comma list from: age,sex")
    sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
    sp.add_argument("--n-la", type=int, default=151, help="LAs in a generated geography")
    sp.add_argument("--la-conditions", action="store_true",
                    help="LA gradients steeper in more rural LAs (truth for models/la_conditions_nb.toml)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", type=Path, required=True)
    ref_opts(sp)
    sp.set_defaults(func=_simulate)

    sp = sub.add_parser("fit", help="fit a model file under a prior file and save the posterior")
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--model", type=Path, default=Path("models/inverse_intervention_nb_log.toml"))
    sp.add_argument("--priors", type=Path, default=Path("priors/weakly_informative.toml"))
    sp.add_argument("--columns", type=Path)
    sp.add_argument("--sampler", default="numpyro",
                    choices=["numpyro", "nutpie", "pymc", "blackjax", "pathfinder", "advi"])
    sp.add_argument("--chains", type=int, default=4)
    sp.add_argument("--tune", type=int, default=1000)
    sp.add_argument("--draws", type=int, default=1000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--chain-method", default="parallel", choices=["parallel", "sequential",
                                                                    "vectorized"])
    sp.add_argument("--float32", action="store_true",
                    help="per-row arithmetic in float32, the density and sampler in float64 (about 2x "
                         "faster; bench/RESULTS.md checks the estimates agree)")
    sp.add_argument("--include-data", action="store_true",
                    help="store the observed counts in the fit file (off by default)")
    sp.add_argument("--quiet", action="store_true")
    sp.add_argument("--out", type=Path, required=True)
    sp.set_defaults(func=_fit)

    sp = sub.add_parser("fits", help="list saved fits")
    sp.add_argument("folder", type=Path, nargs="?", default=Path("fits"))
    sp.set_defaults(func=_fits)

    sp = sub.add_parser("summary", help="ArviZ summary and headline estimands of a fit")
    sp.add_argument("fit", type=Path)
    sp.add_argument("--format", default="table", choices=["table", "csv", "markdown", "json"])
    sp.add_argument("--prob", type=float, default=0.9)
    sp.set_defaults(func=_summary)

    sp = sub.add_parser("report", help="HTML/Markdown/CSV report of a fit")
    sp.add_argument("fit", type=Path)
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--data", type=Path, help="observed data for observed-vs-predicted panels")
    sp.add_argument("--threshold", type=int, default=10, help="suppress counts below this")
    sp.add_argument("--rounding", type=int, default=5, help="round published counts to this")
    sp.add_argument("--prob", type=float, default=0.9)
    sp.set_defaults(func=_report)

    sp = sub.add_parser("compare-priors", help="prior predictive checks, fits, estimands and "
                                               "power-scaling sensitivity under several prior sets")
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--model", type=Path, default=Path("models/inverse_intervention_nb_log.toml"))
    sp.add_argument("--priors", nargs="+", required=True, metavar="PRIORS",
                    help="prior set files, or names of sets in priors/ (e.g. weakly_informative vague)")
    sp.add_argument("--out", type=Path, required=True, help="folder for the HTML/Markdown pages and CSVs")
    sp.add_argument("--fits-dir", type=Path, default=Path("fits"),
                    help="fits are reused from here when model, priors and data match, and saved here")
    sp.add_argument("--columns", type=Path)
    sp.add_argument("--chains", type=int, default=4)
    sp.add_argument("--tune", type=int, default=1000)
    sp.add_argument("--draws", type=int, default=1000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel fitting processes (default: min(fits, cores))")
    sp.add_argument("--prior-draws", type=int, default=1000, help="prior predictive draws per set")
    sp.add_argument("--prob", type=float, default=0.9)
    sp.add_argument("--refit", action="store_true", help="fit even when a matching fit exists")
    sp.add_argument("--prior-only", action="store_true",
                    help="prior predictive checks only: no fits, no posterior comparison")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=_compare_priors)

    sp = sub.add_parser("compare-models", help="PSIS-LOO comparison of saved fits of the same data",
                        epilog="example: hierarchy compare-models fits/national_nb.nc "
                               "fits/national_nb_log.nc --out out/loo")
    sp.add_argument("fits", type=Path, nargs="+")
    sp.add_argument("--names", nargs="+", help="labels of the fits (default: model names)")
    sp.add_argument("--out", type=Path, help="folder for CSV tables and HTML/Markdown pages")
    sp.set_defaults(func=_compare_models)

    sp = sub.add_parser("sbc", help="simulation-based calibration of a model under a prior set",
                        epilog="exit status 1 when some parameter's ranks are not uniform")
    sp.add_argument("--model", type=Path, default=Path("models/inverse_intervention_nb_log.toml"))
    sp.add_argument("--priors", type=Path, default=Path("priors/weakly_informative.toml"))
    sp.add_argument("--data", type=Path, help="take LAs, deprivation and exposures from this table "
                                              "(default: a small generated geography)")
    sp.add_argument("--columns", type=Path)
    sp.add_argument("--las", type=int, default=8, help="LAs in the generated geography")
    sp.add_argument("--lsoa-per-la", type=float, default=15.0)
    sp.add_argument("--replicates", type=int, default=100)
    sp.add_argument("--warmup", type=int, default=250)
    sp.add_argument("--draws", type=int, default=200)
    sp.add_argument("--thin", type=int, default=2)
    sp.add_argument("--alpha", type=float, default=0.001, help="chi-square level per parameter")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", type=Path, help="CSV of the ranks, one row per replicate")
    sp.set_defaults(func=_sbc)

    sp = sub.add_parser("demo", help="main job: simulate, validate, fit and report")
    sp.add_argument("--out", default="out")
    sp.add_argument("--fit", default="fits/demo.nc")
    sp.add_argument("--synthetic", action="store_true")
    sp.add_argument("--fast", action="store_true", help="small data and short chains")
    ref_opts(sp)
    sp.set_defaults(func=_demo)
    _child_level_parsers(sub, ref_opts)
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
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--year", type=int, default=2019)
    ref_opts(sp)
    sp.set_defaults(func=lambda a: __import__("hierarchy.replicate", fromlist=["main"]).main(a))
    return p


def _child_level_parsers(sub, ref_opts) -> None:
    """Sub-commands for child-level extracts (issue 17): aggregate, durations, simulate-extract,
    export-sufficient, fit-sufficient."""
    def geo_opts(sp: argparse.ArgumentParser) -> None:
        ref_opts(sp)
        sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
        sp.add_argument("--n-la", type=int, default=151)
        sp.add_argument("--lsoa-per-la", type=float, default=161.0)
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
    sp.set_defaults(func=_aggregate)

    sp = sub.add_parser("durations", help="time to closure (or re-entry) as a piecewise-exponential table")
    extract_opts(sp)
    sp.add_argument("--spell", default="cin", choices=["cin", "cpp"], help="CIN episodes or CP plans")
    sp.add_argument("--start", help="start date field (with --end: any spell, e.g. a return home)")
    sp.add_argument("--end", help="end date field (e.g. the next care start, for re-entry)")
    sp.add_argument("--since", help="spells starting on or after this date (default: 1 April of the last year)")
    sp.add_argument("--out", type=Path, required=True, help="neighbourhood x band table (CSV; stays inside)")
    sp.add_argument("--estimands", type=Path, help="CSV of disclosure-controlled estimands")
    sp.add_argument("--threshold", type=int, default=10)
    sp.set_defaults(func=_durations)

    sp = sub.add_parser("simulate-extract", help="synthetic child-level CIN extract with a known truth")
    geo_opts(sp)
    sp.add_argument("--year", type=int, default=2019)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", type=Path, required=True, help="EXTRACT.csv (+ .truth.json, .counts.parquet)")
    sp.set_defaults(func=_simulate_extract)

    sp = sub.add_parser("export-sufficient", help="LA-level sums of a Poisson model, disclosure-checked")
    sp.add_argument("table", type=Path)
    sp.add_argument("--model", type=Path, default=Path("models/gradient_poisson.toml"))
    sp.add_argument("--columns", type=Path)
    sp.add_argument("--threshold", type=int, default=10, help="refuse any sum behind fewer children")
    sp.add_argument("--out", type=Path, required=True)
    sp.set_defaults(func=_export_sufficient)

    sp = sub.add_parser("fit-sufficient", help="fit a Poisson model from exported sums and the public table")
    sp.add_argument("sums", type=Path)
    sp.add_argument("--public", type=Path, required=True, help="table with neighbourhood, la, deprivation, "
                                                               "exposure (and strata); counts not needed")
    sp.add_argument("--model", type=Path, default=Path("models/gradient_poisson.toml"))
    sp.add_argument("--priors", type=Path, default=Path("priors/weakly_informative.toml"))
    sp.add_argument("--chains", type=int, default=4)
    sp.add_argument("--tune", type=int, default=500)
    sp.add_argument("--draws", type=int, default=500)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", type=Path, required=True, help="posterior (netCDF)")
    sp.set_defaults(func=_fit_sufficient)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hierarchy`` console script."""
    args = build_parser().parse_args(argv)
    # data warnings read as messages, not as source lines
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"
    try:
        return args.func(args)
    except HierarchyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

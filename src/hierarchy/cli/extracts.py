"""Sub-commands for child-level extracts (issue 17): ``aggregate``, ``durations``, ``simulate-extract``,
``export-sufficient`` and ``fit-sufficient``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hierarchy import paths, shipped
from hierarchy.cli.options import declare_io, ref_opts
from hierarchy.errors import HierarchyError


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



def add_extracts(sub) -> None:
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
    declare_io(sp, inputs=("extract", "columns", "population", "reference_dir"), outputs=(("out", "parquet"),))

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
    declare_io(sp, inputs=("extract", "columns", "reference_dir"),
               outputs=(("out", "table"), ("estimands", "csv")))

    sp = sub.add_parser("simulate-extract", help="synthetic child-level CIN extract with a known truth")
    geo_opts(sp)
    sp.add_argument("--year", type=int, default=2019, help="census year to simulate (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--out", type=Path, required=True, help="EXTRACT.csv (+ .truth.json, .counts.parquet)")
    sp.add_argument("--force", action="store_true", help="replace existing output files of the same kind")
    sp.set_defaults(func=_simulate_extract)
    declare_io(sp, inputs=("reference_dir",), outputs=(("out", "csv"), ("out", "json", ".truth.json"),
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
    declare_io(sp, inputs=("table", "model", "columns"), outputs=(("out", "csv"),))

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
    declare_io(sp, inputs=("sums", "public", "model", "priors"), outputs=(("out", "fit"),))

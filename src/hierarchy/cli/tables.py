"""Sub-commands on neighbourhood tables: ``validate``, ``simulate`` and ``panel build``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hierarchy import shipped
from hierarchy.cli.options import (
    COLUMNS_HELP,
    FORCE_HELP,
    SEED_HELP,
    count,
    declare_io,
    positive,
    ref_opts,
)
from hierarchy.errors import HierarchyError


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



def add_validate(sub) -> None:
    """``hierarchy validate``."""
    sp = sub.add_parser("validate", help="check a neighbourhood table and report every problem")
    sp.add_argument("data", type=Path, help="the table: .csv or .parquet")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP)
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
    sp.add_argument("--force", action="store_true", help=FORCE_HELP)
    ref_opts(sp)
    sp.set_defaults(func=_validate)
    declare_io(sp, inputs=("data", "columns", "reference_dir", "model"),
        outputs=(("drop_invalid", "csv"), ("kept", "table")))


def add_simulate(sub) -> None:
    """``hierarchy simulate``."""
    sp = sub.add_parser("simulate", help="simulate national neighbourhood counts with known truth")
    when = sp.add_mutually_exclusive_group()
    when.add_argument("--year", type=int, default=None, help="year of the calibration targets (default: 2019)")
    when.add_argument("--years", metavar="YEARS",
                      help="several years, e.g. 2013-2025 or 2019,2020: neighbourhood x year rows with a year "
                           "column, each year calibrated to its DfE LA totals (LA effects persist)")
    sp.add_argument("--gradient-trend", type=positive, default=None, metavar="RATIO",
                    help="with --years: every gradient score multiplied by RATIO per year after 2019 "
                         "(default 1: flat)")
    sp.add_argument("--strata", default="", help="comma list from: age,sex,ethnicity")
    sp.add_argument("--spatial", type=_sd_mix, default=None, metavar="SD,MIX",
                    help="add a BYM2 neighbourhood field (SD of the effects, MIX its spatially structured "
                         "share) on the LSOA map (a lattice for a generated geography), in place of the "
                         "overdispersion (Poisson counts given the field: the truth of gradient_bym2_poisson); "
                         "its values go in the truth file")
    sp.add_argument("--synthetic", action="store_true", help="use a generated geography")
    sp.add_argument("--n-la", type=count(2), default=151, help="LAs in a generated geography")
    sp.add_argument("--la-conditions", action="store_true",
                    help="LA gradients steeper in more rural LAs (truth for models/la_conditions_nb.toml)")
    sp.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    sp.add_argument("--out", type=Path, required=True,
                    help="the table to write (.parquet); the truth goes beside it as .truth.json")
    sp.add_argument("--force", action="store_true", help=FORCE_HELP)
    ref_opts(sp)
    sp.set_defaults(func=_simulate)
    declare_io(sp, inputs=("reference_dir",), outputs=(("out", "parquet"), ("out", "json", ".truth.json")))


def _panel(args: argparse.Namespace) -> int:
    from hierarchy.data import panel

    built = panel.get_panel(args.reference_dir, synthetic=args.synthetic, seed=args.seed)
    panel.write_panel(built, args.out)
    print(built.describe())
    print(f"wrote {len(built.table):,} rows to {args.out}")
    return 0



def add_panel(sub) -> None:
    """``hierarchy panel build``."""
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
    declare_io(b, inputs=("reference_dir",), outputs=(("out", "parquet"),))


# --------------------------------------------------------------------------- predict and check (issue 23)

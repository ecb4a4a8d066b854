"""Sub-commands that read fits for people: ``summary``, ``report``, ``demo`` and ``replicate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hierarchy import paths
from hierarchy.cli.options import (
    COLUMNS_HELP,
    FOLDER_FORCE_HELP,
    count,
    declare_io,
    probability,
    progress_bars,
    ref_opts,
    rope,
)
from hierarchy.errors import HierarchyError


def _summary(args: argparse.Namespace) -> int:
    from hierarchy.reporting import report
    from hierarchy.results import panel_fitfile

    if panel_fitfile.is_panel_fit(args.fit):  # hierarchy fit --model panel_*: its parameter table
        print(panel_fitfile.summary_text(args.fit, prob=args.prob, fmt=args.format))
        return 0
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
                         synthetic=args.synthetic, fast=args.fast, progress=progress_bars(False),
                         for_checking=args.for_checking)


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


def add_summary_report(sub) -> None:
    """``hierarchy summary`` and ``report``."""
    sp = sub.add_parser("summary", help="ArviZ summary and headline estimands of a fit")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--format", default="table", choices=["table", "csv", "markdown", "json"],
                    help="output format (default: %(default)s)")
    sp.add_argument("--prob", type=probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--rope", type=rope, default=None, metavar="LO,HI",
                    help="region of practical equivalence for gradient ratios and contrasts, e.g. 0.95,1.05: "
                         "P(inside) makes 'no difference' a finding with a number")
    sp.add_argument("--null", type=Path, default=None,
                    help="a simpler nested fit of the same data: adds the PCV (share of LA variance explained)")
    sp.set_defaults(func=_summary)
    declare_io(sp, inputs=("fit", "null"))

    sp = sub.add_parser("report", help="HTML/Markdown/CSV report of a fit")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--out", type=Path, required=True, help="folder for the report (created if missing)")
    sp.add_argument("--data", type=Path, help="the fitted table, for observed-vs-predicted panels and the census "
                                               "year of the published figures shown (its year column, or the "
                                               "simulator's truth file beside it)")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP + " of --data; default: the map recorded in the "
                                                 "fit (hierarchy fit --columns)")
    sp.add_argument("--threshold", type=count(0), default=10,
                    help="suppress observed counts below this (default 10)")
    sp.add_argument("--rounding", type=count(0), default=5,
                    help="round published observed counts to a multiple of this (default 5)")
    sp.add_argument("--allow-below-default-rules", action="store_true",
                    help="needed for a threshold below 10 or a rounding base below 5: the report "
                         "then says at its top that it is NOT safe to publish under the default rules")
    sp.add_argument("--prob", type=probability, default=0.9,
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
    declare_io(sp, inputs=("fit", "data", "columns", "acro_config", "geography"),
        outputs=(("out", "owned"), ("for_checking", "empty")))


def add_demo(sub) -> None:
    """``hierarchy demo``."""
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
    declare_io(sp, inputs=("reference_dir",), outputs=(("out", "folder"), ("fit", "fit")), replaces_own=True)


def add_replicate(sub) -> None:
    """``hierarchy replicate``."""
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
    sp.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                    help="fit the analyses whose designs agree (the stage outcomes of one table, where their LA "
                         "effects are parameterised alike) in one compiled program each (default; in turn on CPU, "
                         "side by side on an accelerator); --no-batched fits each alone")
    sp.add_argument("--method", default="nuts", choices=["nuts", "laplace"],
                    help="nuts (default): every parameter by NUTS, analyses of one design batched; laplace: each "
                         "analysis alone by the embedded Laplace mode (models outside its regime by NUTS, said "
                         "in the log)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--year", type=int, default=2019,
                    help="DfE year the LA totals are calibrated to (default: %(default)s)")
    ref_opts(sp)
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_replicate)
    declare_io(sp, inputs=("reference_dir",), outputs=(("out", "owned"),))

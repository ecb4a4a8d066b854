"""Sub-commands that fit many times: ``sweep``, ``compare-priors``, ``compare-models`` and ``sbc``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hierarchy import paths, shipped
from hierarchy.cli.options import (
    COLUMNS_HELP,
    FOLDER_FORCE_HELP,
    FORCE_HELP,
    SEED_HELP,
    count,
    declare_io,
    model_help,
    positive,
    priors_help,
    probability,
    sampling_opts,
    scheduler_opt,
)


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
            prior_only=args.prior_only, batched=args.batched, method=args.method,
            log=None if args.quiet else print)
    print("\n".join(f"- {line}" for line in result.findings))
    print(f"fits reused: {len(result.reused)}, fitted now: {len(result.fitted)}")
    print(f"pages: {result.html} and {result.markdown}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from hierarchy.inference.grid import run_grid

    result = run_grid(args.grid, args.out, scheduler=args.scheduler, workers=args.workers,
                      refit=args.refit, batched=args.batched, log=None if args.quiet else print)
    table = result.table()
    counts = table["status"].value_counts()
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in ("fitted", "skipped", "failed")))
    for _, row in table[table["status"] == "failed"].iterrows():
        print(f"failed: {Path(row['out']).name}: {row['error']}", file=sys.stderr)
    return 1 if len(result.failures) else 0


def _compare_models(args: argparse.Namespace) -> int:
    from hierarchy.results import compare

    saved = args.out and args.cv != "rows" and not args.batched
    result = compare.compare_models(args.fits, names=args.names, data=args.data, columns=args.columns,
                                    cv=args.cv, folds=args.folds, max_refits=args.max_refits, seed=args.seed,
                                    fits_dir=args.out / "cv_fits" if saved else None, batched=args.batched,
                                    log=None if args.quiet else print)
    print(result.format())
    if args.out:
        print(f"\npage: {compare.write_model_comparison(result, args.out)}")
    return 0


def _sbc(args: argparse.Namespace) -> int:
    import jax
    import pandas as pd

    from hierarchy.data import reference, simulate
    from hierarchy.data import table as data
    from hierarchy.inference.sbc import check_method, sbc
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
    design = build_design(table, spec)
    check_method(spec, design, args.method, chains=args.chains)  # refused before anything is said or fitted
    how = "" if args.method == "nuts" else f" by the Laplace method ({args.chains} chain(s) per replicate)"
    print(f"fitting {args.replicates} replicates{how}")
    result = sbc(spec, priors, design, replicates=args.replicates, warmup=args.warmup,
                 draws=args.draws, thin=args.thin, seed=args.seed, method=args.method, chains=args.chains)
    uniform = result.uniformity()
    print(f"SBC of {spec.name} under {priors.name}{how}: {args.replicates} replicates, ranks out of "
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



def add_sweep(sub) -> None:
    """``hierarchy sweep``."""
    sp = sub.add_parser("sweep", help="fit every combination of a grid of data x models x priors x "
                                      "settings, on Dask; a rerun skips finished fits",
                        epilog='grid file, e.g.: data = "d.parquet"  model = ["gradient_nb", "gradient_poisson"]  '
                               'priors = ["weakly_informative", "vague"]  [settings] chains = 4  seed = [0, 1] '
                               'method = ["nuts", "laplace"] (README, "Sweeps"); exit status 1 when a fit failed')
    sp.add_argument("grid", type=Path, help="grid file (TOML)")
    sp.add_argument("--out", type=Path, required=True, help="folder for the fits and sweep.csv")
    scheduler_opt(sp, "; 'synchronous': one fit after another in this process")
    sp.add_argument("--workers", type=int, default=None,
                    help="worker processes of a local cluster (default: min(fits, cores))")
    sp.add_argument("--refit", action="store_true", help="fit even when a finished fit is there")
    sp.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                    help="run the fits that differ only in a prior set of one structure (same distributions, "
                         "other numbers) in one compiled program (default; in turn on CPU, side by side on an "
                         "accelerator; other samplers than numpyro, method laplace and prior sets of another "
                         "structure fit one by one, the reason in sweep.csv's note); --no-batched runs one fit "
                         "per job")
    sp.add_argument("--quiet", action="store_true", help="no progress messages")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_sweep)
    declare_io(sp, inputs=("grid",), outputs=(("out", "owned"),))


def add_compare(sub) -> None:
    """``hierarchy compare-priors`` and ``compare-models``."""
    sp = sub.add_parser("compare-priors", help="prior predictive checks, fits, estimands and "
                                               "power-scaling sensitivity under several prior sets")
    sp.add_argument("--data", type=Path, required=True, help="the neighbourhood table (.csv or .parquet)")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help())
    sp.add_argument("--priors", nargs="+", required=True, metavar="PRIORS",
                    help=f"prior set files, or names of shipped sets: {', '.join(shipped.names('priors'))}")
    sp.add_argument("--out", type=Path, required=True, help="folder for the HTML/Markdown pages and CSVs")
    sp.add_argument("--fits-dir", type=Path, default=Path("fits"),
                    help="fits are reused from here when model, priors and data match, and saved here")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP)
    sampling_opts(sp)
    sp.add_argument("--workers", type=count(1), default=None,
                    help="parallel fitting processes (default: min(fits, cores))")
    scheduler_opt(sp)
    sp.add_argument("--prior-draws", type=count(1), default=1000, help="prior predictive draws per set")
    sp.add_argument("--prob", type=probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--refit", action="store_true", help="fit even when a matching fit exists")
    sp.add_argument("--prior-only", action="store_true",
                    help="prior predictive checks only: no fits, no posterior comparison")
    sp.add_argument("--method", default="nuts", choices=["nuts", "laplace"],
                    help="how new fits are made: nuts (default), or laplace (experimental): each LA's group "
                         "effects marginalised by an embedded Laplace approximation, NUTS on the "
                         "hyperparameters, one fit at a time (never batched); a model outside its regime is "
                         "fitted with NUTS, saying why. Only saved fits of this method are reused; the Fits "
                         "table says which method each fit used")
    sp.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                    help="run the fits of prior sets of one structure (same distributions, other numbers) in "
                         "one compiled program (default; in turn on CPU, side by side on an accelerator; other "
                         "prior sets fit one by one, with the reason); --no-batched fits one prior set per job")
    sp.add_argument("--quiet", action="store_true", help="no progress messages")
    sp.add_argument("--force", action="store_true", help=FOLDER_FORCE_HELP)
    sp.set_defaults(func=_compare_priors)
    declare_io(sp, inputs=("data", "model", "priors", "columns"),
               outputs=(("out", "owned"), ("fits_dir", "folder")))

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
                         "time are printed before the first starts. Refits need --data")
    sp.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                    help="run each model's refits in one compiled program (default; folds in turn on CPU, "
                         "side by side on an accelerator; nutpie/PyMC, Laplace and BYM2 fits refit fold by "
                         "fold); --no-batched refits one fit per fold and saves each in OUT/cv_fits, reused "
                         "by the next run")
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
    declare_io(sp, inputs=("fits", "data", "columns"), outputs=(("out", "owned"),))


def add_sbc(sub) -> None:
    """``hierarchy sbc``."""
    sp = sub.add_parser("sbc", help="simulation-based calibration of a model under a prior set",
                        epilog="exit status 1 when some parameter's ranks are not uniform")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help())
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help())
    sp.add_argument("--data", type=Path, help="take LAs, deprivation and exposures from this table "
                                              "(default: a small generated geography)")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP)
    sp.add_argument("--las", type=count(2), default=8, help="LAs in the generated geography")
    sp.add_argument("--lsoa-per-la", type=positive, default=15.0,
                    help="mean neighbourhoods per LA in the generated geography (default: %(default)s)")
    sp.add_argument("--replicates", type=count(1), default=100,
                    help="simulated data sets, each fitted once (default: %(default)s)")
    sp.add_argument("--warmup", type=count(1), default=250, help="warm-up iterations per replicate")
    sp.add_argument("--draws", type=count(1), default=200, help="posterior draws per replicate")
    sp.add_argument("--thin", type=count(1), default=2, help="keep every n-th draw for the ranks")
    sp.add_argument("--alpha", type=probability, default=0.001, help="chi-square level per parameter")
    sp.add_argument("--method", default="nuts", choices=["nuts", "laplace"],
                    help="nuts (default): every replicate refitted by NUTS, all in one compiled program; laplace "
                         "(experimental): each replicate refitted by the embedded Laplace mode (LA effects "
                         "marginalised, NUTS on the hyperparameters), one after another, compiled once for all "
                         "(the first replicate compiles); refused for models outside its regime")
    sp.add_argument("--chains", type=count(1), default=1,
                    help="chains per replicate, their thinned draws pooled for the ranks (default 1; more only "
                         "with --method laplace)")
    sp.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    sp.add_argument("--out", type=Path, help="CSV of the ranks, one row per replicate")
    sp.add_argument("--force", action="store_true", help=FORCE_HELP)
    sp.set_defaults(func=_sbc)
    declare_io(sp, inputs=("model", "priors", "data", "columns"), outputs=(("out", "csv"),))

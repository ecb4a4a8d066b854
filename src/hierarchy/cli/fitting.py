"""Sub-commands that make and keep fits: ``fit``, ``fits``, ``keygen``, ``sign`` and ``verify``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hierarchy import paths, shipped
from hierarchy.cli.options import (
    COLUMNS_HELP,
    count,
    declare_io,
    model_help,
    priors_help,
    probability,
    progress_bars,
    sampler,
    sampler_defaults,
    sampling_opts,
)
from hierarchy.errors import HierarchyError

FIT_TUNE = 500  # bench/RESULTS.md: 500 warm-up iterations adapt the national fits


def _fit(args: argparse.Namespace) -> int:
    from hierarchy import workflow
    from hierarchy.inference.sampling import default_max_draws, enable_compilation_cache, use_host_devices
    from hierarchy.likelihood.panel_model import is_panel_model

    model = shipped.resolve(args.model, "models")
    if is_panel_model(model):
        return _fit_panel(args, model)
    if args.measure:
        raise HierarchyError(f"--measure picks measures of a panel model (models/panel_*.toml); {model} is a "
                             "neighbourhood model: drop --measure")
    if workflow.is_panel_table(args.data):
        raise HierarchyError(f"{args.data} is an LA panel (hierarchy panel build) and {model} a neighbourhood "
                             "model: fit the panel with a panel model (--model panel_stages_nb, or another "
                             "models/panel_*.toml), or give a neighbourhood table")
    priors = shipped.resolve(args.priors, "priors")
    if args.out.exists():  # check_outputs allowed it: --force, and a fit
        print(f"replacing the fit {args.out} (--force)")
    if args.sufficient is not None:  # the export that leaves the children behind (issue 17)
        sampler_defaults(args, FIT_TUNE)
        if args.sampler != "numpyro" or args.float32:
            raise HierarchyError("--sufficient fits with NumPyro in float64: drop --sampler/--float32")
        use_host_devices(max(args.chains, 1))
        enable_compilation_cache()
        print(workflow.fit_sums_files(sums=args.sufficient, public=args.data, model=model, priors=priors,
                                        out=args.out, columns=args.columns, chains=args.chains, tune=args.tune,
                                        draws=args.draws, seed=args.seed, progress=progress_bars(args.quiet)))
        return 0
    enable_compilation_cache()  # process-wide JAX setting: switched on by the command, not the library
    sampler_defaults(args, FIT_TUNE)
    result = workflow.fit_files(
        data=args.data, model=model, priors=priors, columns=args.columns,
        sampler=args.sampler, chains=args.chains, tune=args.tune, draws=args.draws,
        seed=args.seed, out=args.out, include_data=args.include_data,
        progress=progress_bars(args.quiet), log=None if args.quiet else print,
        chain_method=args.chain_method, float32=args.float32,
        max_draws=args.max_draws or (default_max_draws(args.draws) if args.sampler == "numpyro" else None),
        include_log_likelihood=args.include_log_likelihood, prior_overrides=args.prior,
        target_accept=args.target_accept, method=args.method, geography=args.geography,
    )
    print(result)
    return 0


PANEL_REFUSED = (  # (option, is it set, why a panel fit does not take it)
    ("--sufficient", lambda a: a.sufficient is not None, "sums fits are neighbourhood fits"),
    ("--columns", lambda a: a.columns is not None, "the panel has fixed columns (hierarchy panel build)"),
    ("--geography", lambda a: a.geography is not None, "panel models have no spatial term"),
    ("--priors", lambda a: a.priors != shipped.DEFAULT_PRIORS,
     "panel models carry their priors (hierarchy.likelihood.panel_model)"),
    ("--prior", lambda a: bool(a.prior), "panel models carry their priors (hierarchy.likelihood.panel_model)"),
    ("--sampler", lambda a: a.sampler != "numpyro", "panel fits run NumPyro NUTS"),
    ("--method", lambda a: a.method != "nuts", "panel fits run NUTS on every parameter"),
    ("--float32", lambda a: a.float32, "panel fits run in float64"),
    ("--chain-method", lambda a: a.chain_method == "vectorized", "panel chains run one after another"),
    ("--include-log-likelihood", lambda a: a.include_log_likelihood, "panel fits store no log-likelihood"),
)


def _fit_panel(args: argparse.Namespace, model: Path) -> int:
    """``hierarchy fit`` of a panel model: a fit file per measure (:func:`hierarchy.workflow.fit_panel_files`)."""
    from hierarchy import workflow
    from hierarchy.inference.sampling import enable_compilation_cache

    for option, given, why in PANEL_REFUSED:
        if given(args):
            raise HierarchyError(f"{option} does not apply to the panel model {model} ({why}): drop {option}")
    enable_compilation_cache()
    written = workflow.fit_panel_files(
        data=args.data, model=model, out=args.out, measures=args.measure, chains=args.chains, tune=args.tune,
        draws=args.draws, max_draws=args.max_draws, seed=args.seed, target_accept=args.target_accept,
        include_data=args.include_data, replace=args.force, progress=progress_bars(args.quiet),
        log=None if args.quiet else print)
    if args.quiet:  # the lines were not said as the fits were written: say what was written
        print(written)
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



def add_fit(sub) -> None:
    """``hierarchy fit``."""
    sp = sub.add_parser("fit", help="fit a model file under a prior file and save the posterior",
                        description="Fit a model file under a prior file and save the posterior. By "
                                    "default the fit file is shareable: parameter draws, diagnostics, "
                                    "provenance and the public inputs (deprivation, children, LA), "
                                    "sealed by a content hash; no observed counts and no pointwise "
                                    "log-likelihood (from which the counts can be rebuilt). "
                                    "--include-data and --include-log-likelihood add them and make "
                                    "the file disclosive.")
    sp.add_argument("--data", type=Path, required=True,
                    help="the neighbourhood table (.csv or .parquet); for a panel model (models/panel_*.toml), "
                         "the LA panel of hierarchy panel build")
    sp.add_argument("--measure", action="append", default=[], metavar="MEASURE",
                    help="panel models: fit only this measure of the model file (repeatable; default: all). A "
                         "panel fit writes --out for one measure, OUT_STEM.MEASURE.nc beside it for several")
    sp.add_argument("--model", default=shipped.DEFAULT_MODEL, help=model_help())
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help())
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP)
    sp.add_argument("--sampler", default="numpyro", type=sampler, metavar="{numpyro,nutpie,pymc,chees}",
                    help="NUTS implementation: NumPyro, nutpie or PyMC, each checked against NumPyro on "
                         "simulated data; or chees: 128 chains (--chains 16-1,024, a multiple of 8) sharing "
                         "one adapted, jittered trajectory length (ChEES-HMC), judged by nested R-hat and "
                         "ESS, for GPUs (pathfinder, advi and blackjax are no longer offered: they missed "
                         "NUTS or failed) (default: %(default)s)")
    sampling_opts(sp, tune=FIT_TUNE, chees=True)
    sp.add_argument("--max-draws", type=count(1), default=None, metavar="N",
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
    sp.add_argument("--target-accept", type=probability, default=None,
                    help="NUTS target acceptance rate; raise it (e.g. 0.95) when a fit reports divergences "
                         "(default: 0.8; chees: 0.651, the chains' harmonic-mean acceptance)")
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
    declare_io(sp, inputs=("data", "model", "priors", "columns", "sufficient", "geography"),
               outputs=(("out", "fit"),))


def add_keeping(sub) -> None:
    """``hierarchy fits``, ``keygen``, ``sign`` and ``verify``."""
    sp = sub.add_parser("fits", help="list saved fits")
    sp.add_argument("folder", type=Path, nargs="?", default=Path("fits"),
                    help="folder of .nc fit files (default: %(default)s)")
    sp.set_defaults(func=_fits)
    declare_io(sp, inputs=("folder",))

    sp = sub.add_parser("keygen", help="make an Ed25519 key pair for signing fit files (NAME.key, NAME.pub)")
    sp.add_argument("--out", type=Path, required=True, help="the private key to write (NAME.key)")
    sp.add_argument("--force", action="store_true", help="replace an existing key pair (fits signed with it "
                                                         "then no longer verify)")
    sp.set_defaults(func=_keygen)
    declare_io(sp, outputs=(("out", "key"), ("out", "public_key", ".pub")))

    sp = sub.add_parser("sign", help="sign a fit file (FIT.nc.sig beside it) with a private key: proves it "
                                     "unchanged to anyone holding the public key")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--key", type=Path, required=True, help="the private key (NAME.key, from hierarchy keygen)")
    sp.add_argument("--force", action="store_true", help="replace an existing signature")
    sp.set_defaults(func=_sign)
    declare_io(sp, inputs=("fit", "key"))  # writes FIT.nc.sig, checked by _sign before it signs

    sp = sub.add_parser("verify", help="check a fit file's signature (FIT.nc.sig) with the public key")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--key", type=Path, required=True, help="the public key (NAME.pub)")
    sp.set_defaults(func=_verify)
    declare_io(sp, inputs=("fit", "key"))

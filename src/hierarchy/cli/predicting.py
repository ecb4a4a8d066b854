"""Sub-commands ``predict`` (rates from a fit for new rows) and ``check`` (a model without fitting)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hierarchy import shipped
from hierarchy.cli.options import (
    COLUMNS_HELP,
    FORCE_HELP,
    count,
    declare_io,
    model_help,
    priors_help,
    probability,
)


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
                      draws=args.prior_draws, seed=args.seed, ml=args.ml, fit=args.fit).format())
    return 0


def add_predict_check(sub) -> None:
    """``hierarchy predict`` and ``check``."""
    sp = sub.add_parser("predict", help="expected rates per 10,000 (with intervals) for observed, hypothetical "
                                        "or new-LA neighbourhoods from a fit",
                        epilog="newdata columns: neighbourhood (a fitted code: its fitted rate), or la + "
                               "deprivation (a hypothetical neighbourhood; an LA the fit lacks also needs "
                               "la_deprivation), plus the model's other terms; see hierarchy.results.predict")
    sp.add_argument("fit", type=Path, help="a fit file (.nc)")
    sp.add_argument("--newdata", type=Path, required=True, help="the rows to predict (.csv or .parquet)")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP + "; default: the map recorded in the fit, "
                                                                "when the file uses its names")
    sp.add_argument("--out", type=Path, required=True, help="the predictions to write (.csv)")
    sp.add_argument("--prob", type=probability, default=0.9,
                    help="probability of the intervals, between 0 and 1 (default: %(default)s)")
    sp.add_argument("--counts", action="store_true",
                    help="also predictive counts (hypothetical rows then need exposure)")
    sp.add_argument("--draws", type=count(1), default=None, help="posterior draws to use (default: all)")
    sp.add_argument("--stage", help="stage of a stacked-stages fit (default: the first)")
    sp.add_argument("--seed", type=int, default=0, help="seed of new-LA effects and predictive counts")
    sp.add_argument("--force", action="store_true", help=FORCE_HELP)
    sp.set_defaults(func=_predict)
    declare_io(sp, inputs=("fit", "newdata", "columns"), outputs=(("out", "csv"),))

    sp = sub.add_parser("check", help="validate a model (and prior set) without fitting: formula, "
                                      "parameters with their priors, prior predictive line")
    sp.add_argument("model", help=model_help().replace(" (default: %(default)s)", ""))
    sp.add_argument("--priors", default=shipped.DEFAULT_PRIORS, help=priors_help())
    sp.add_argument("--data", type=Path, help="a table: check the model's columns and summarise the prior "
                                              "predictive (counts are not read)")
    sp.add_argument("--columns", type=Path, help=COLUMNS_HELP)
    sp.add_argument("--prior-draws", type=count(1), default=200,
                    help="prior predictive draws (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sp.add_argument("--ml", action="store_true", help="also fit --data by Laplace maximum likelihood (the LA "
                                                      "effects integrated out, as glmmTMB; reads the counts) "
                                                      "and print the estimates with standard errors")
    sp.add_argument("--fit", type=Path, help="with --ml: a fit file of this model and data; its posterior mean "
                                             "and SD are printed beside the estimates")
    sp.set_defaults(func=_check)
    declare_io(sp, inputs=("model", "priors", "data", "columns", "fit"))


# --------------------------------------------------------------------------- child-level extracts (issue 17)


"""Command-line interface: one thin sub-command per pipeline stage.

Each handler parses arguments and calls the plain function API of one module; heavy modules
(PyMC, JAX) are imported inside the handler so that ``hierarchy validate`` starts quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable

from hierarchy import paths
from hierarchy.cli import comparing, extracts, fitting, predicting, reports, tables
from hierarchy.cli.options import FOLDER_FORCE_HELP, FOLDER_KINDS, check_outputs, declare_io
from hierarchy.errors import DataValidationError, HierarchyError

__all__ = ["ATOMIC", "FOLDER_FORCE_HELP", "FOLDER_KINDS", "build_parser", "check_outputs", "declare_io", "main"]

ATOMIC = {"validate", "simulate", "fit", "fits", "summary", "sbc", "predict", "check"}
"""Commands whose every output is written whole or not at all (an interrupt leaves nothing)."""



def build_parser() -> argparse.ArgumentParser:
    """Return the ``hierarchy`` argument parser (every option has a line of help); one small parser per job,
    each beside its handler."""
    p = argparse.ArgumentParser(prog="hierarchy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (tables.add_validate, tables.add_simulate, fitting.add_fit, fitting.add_keeping,
                reports.add_summary_report, comparing.add_sweep, comparing.add_compare, comparing.add_sbc,
                reports.add_demo, extracts.add_extracts, predicting.add_predict_check, tables.add_panel,
                reports.add_replicate):
        add(sub)
    return p


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


"""What every sub-command shares: the paths it declares and checks before any work, argument
types with one-line errors, and the options several commands take."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from hierarchy import paths, shipped
from hierarchy.errors import HierarchyError

FOLDER_FORCE_HELP = ("write into a folder holding files this program did not write (never over one "
                     "of them: a file there that could be overwritten is still refused)")
FOLDER_KINDS = ("folder", "owned", "empty")
"""Output kinds that are folders: a working folder (writable, not a file), a folder of pages and
tables (new, empty or ours: :func:`hierarchy.paths.check_output_folder` ``owned``), a new or empty
folder (an ACRO results folder). File kinds are :data:`hierarchy.paths.SUFFIXES`."""

COLUMNS_HELP = ("TOML column map from your column names to the canonical ones "
                "(examples/columns_example.toml)")
SEED_HELP = "random seed (default: %(default)s)"
FORCE_HELP = "replace an existing output file of the same kind (never an input or a foreign file)"


def model_help() -> str:
    """Help of ``--model``: a file or one of the shipped models, named."""
    return f"model file, or a shipped model's name: {', '.join(shipped.names('models'))} (default: %(default)s)"


def priors_help() -> str:
    """Help of ``--priors``: a file or one of the shipped prior sets, named."""
    return f"prior set file, or a shipped set's name: {', '.join(shipped.names('priors'))} (default: %(default)s)"


def ref_opts(sp: argparse.ArgumentParser) -> None:
    """``--reference-dir``."""
    sp.add_argument("--reference-dir", type=Path, default=None,
                    help="folder with the England reference data (default: "
                         "$HIERARCHY_REFERENCE_DIR or ../shared/data/england)")



def sampling_opts(sp: argparse.ArgumentParser, tune: int = 1000, *, chees: bool = False) -> None:
    """``--chains``, ``--tune``, ``--draws`` and ``--seed`` of a command that samples; with ``chees``
    the first three default to None, filled per sampler by :func:`sampler_defaults`."""
    def default(nuts: int, many: int) -> dict:
        if not chees or nuts == many:
            return {"default": None if chees else nuts, "help_default": f"{nuts}"}
        return {"default": None, "help_default": f"{nuts}, or {many} with --sampler chees"}

    for name, kind, nuts, many, what in (
            ("--chains", count(1), 4, 128, "MCMC chains"),
            ("--tune", count(0), tune, 500, "warm-up iterations per chain, discarded"),
            ("--draws", count(1), 1000, 100, "posterior draws kept per chain")):
        d = default(nuts, many)
        sp.add_argument(name, type=kind, default=d["default"], help=f"{what} (default: {d['help_default']})")
    sp.add_argument("--seed", type=int, default=0, help=SEED_HELP)


def sampler_defaults(args: argparse.Namespace, tune: int) -> None:
    """Fill ``--chains``/``--tune``/``--draws``/``--target-accept`` left out with the sampler's defaults
    (:func:`hierarchy.inference.sampling.with_defaults`; NUTS warms up for ``tune``)."""
    from hierarchy.inference.sampling import with_defaults

    if args.sampler != "chees" and args.tune is None:
        args.tune = tune
    args.chains, args.tune, args.draws, args.target_accept = with_defaults(
        args.sampler, args.chains, args.tune, args.draws, args.target_accept)


def scheduler_opt(sp: argparse.ArgumentParser, extra: str = "") -> None:
    """``--scheduler``: the Dask scheduler the fits run on."""
    sp.add_argument("--scheduler", metavar="ADDRESS",
                    help="Dask scheduler address (tcp://host:8786) or scheduler file to run the fits "
                         "on (default: $HIERARCHY_DASK_SCHEDULER, else a local cluster of worker "
                         f"processes){extra}")


def declare_io(sp: argparse.ArgumentParser, *, inputs: tuple[str, ...] = (),
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


def input_paths(args: argparse.Namespace) -> list:
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
    """Check every output a sub-command declared (:func:`declare_io`) before it does any work.

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
    inputs = input_paths(args)
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


def progress_bars(quiet: bool) -> bool:
    """Progress bars only on a terminal: to a log they are thousands of carriage-return lines."""
    return not quiet and sys.stderr.isatty()


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (``--prob``, ``--alpha``)."""
    value = number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability strictly between 0 and 1 "
                                         "(e.g. 0.9 for 90% intervals)")
    return value


def positive(text: str) -> float:
    """A finite number above 0."""
    value = number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def count(minimum: int) -> Callable[[str], int]:
    """An argument type: an integer of at least ``minimum`` (argparse calls it an 'integer')."""
    def parse(text: str) -> int:
        value = number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        return value
    parse.__name__ = "integer"
    return parse


def sampler(text: str) -> str:
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


def number(text: str, kind: type) -> float:
    """``text`` as ``kind`` (int or float, finite), or argparse's one-line error."""
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value



def rope(text: str) -> tuple[float, float]:
    """``--rope LO,HI``: :func:`hierarchy.results.heterogeneity.parse_rope`, as an argparse error."""
    from hierarchy.results.heterogeneity import parse_rope

    try:
        return parse_rope(text)
    except HierarchyError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


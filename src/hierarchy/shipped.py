"""The shipped model and prior set files, found by name wherever the package is installed.

The checkout's top-level ``models/`` and ``priors/`` folders are the source of truth; the wheel
carries copies as package data (``hierarchy/shipped_models``, ``hierarchy/shipped_priors``;
``pyproject.toml`` maps the folders). :func:`resolve` turns ``--model`` and ``--priors`` values
into files: an existing file as given, otherwise the name of a shipped file (``vague``,
``vague.toml`` or ``priors/vague.toml``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hierarchy.config import did_you_mean
from hierarchy.errors import HierarchyError

KINDS = {"models": "model", "priors": "prior set"}
DEFAULT_MODEL = "inverse_intervention_nb_log"
DEFAULT_PRIORS = "weakly_informative"


def shipped_dir(kind: str) -> Path | None:
    """The folder of shipped ``kind`` files (``"models"`` or ``"priors"``), or None.

    The installed package data first, then the checkout beside the source (``src/../models``).
    """
    packaged = Path(__file__).resolve().parent / f"shipped_{kind}"  # in an installed wheel
    if packaged.is_dir() and any(packaged.glob("*.toml")):
        return packaged
    checkout = Path(__file__).resolve().parents[2] / kind
    return checkout if checkout.is_dir() else None


def names(kind: str) -> list[str]:
    """Names of the shipped ``kind`` files."""
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.toml")) if folder else []


def resolve(value: str | os.PathLike, kind: str) -> Path:
    """The file a ``--model`` / ``--priors`` value names.

    Parameters
    ----------
    value
        A file path, or the name of a shipped file with or without ``.toml`` (and with or without
        a leading ``models/`` or ``priors/``).
    kind
        ``"models"`` or ``"priors"``.

    Returns
    -------
    pathlib.Path
        A readable UTF-8 text file.

    Raises
    ------
    HierarchyError
        When the value is a folder, not text, or neither a file nor a shipped name (the message
        lists the shipped names and the closest one).
    """
    what = KINDS[kind]
    path = Path(value)
    if path.is_dir():
        raise HierarchyError(f"{what} {str(value)!r} is a folder; give a .toml file or one of the "
                             f"shipped names: {', '.join(names(kind))}")
    if not path.exists():
        name = path.name[:-5] if path.name.endswith(".toml") else path.name
        plain = path.parent in (Path("."), Path(kind))  # 'vague', 'priors/vague.toml'
        folder = shipped_dir(kind)
        if plain and folder is not None and (folder / f"{name}.toml").is_file():
            path = folder / f"{name}.toml"
        else:
            known = names(kind)
            raise HierarchyError(f"{what} {str(value)!r}: no such file, and not a shipped "
                                 f"{what}{did_you_mean(name, known)} (shipped: "
                                 f"{', '.join(known) or 'none found'})")
    return check_text_file(path, what)


def check_text_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable UTF-8 text file, else a :class:`HierarchyError` saying why."""
    if not path.is_file():
        raise HierarchyError(f"{what} {path} is not a regular file")
    try:
        path.read_bytes().decode("utf-8")
    except PermissionError:
        raise HierarchyError(f"{what} {path}: permission denied") from None
    except UnicodeDecodeError:
        raise HierarchyError(f"{what} {path} is not a text file (TOML is UTF-8 text); is it the "
                             "right file?") from None
    return path

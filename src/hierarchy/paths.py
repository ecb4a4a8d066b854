"""Output paths: checked before any work starts, written atomically, never over an input.

Every command that writes a file calls :func:`check_output` (or :func:`check_output_folder`) on
each output before it reads data or samples, so a bad ``--out`` costs nothing, and writes through
:func:`atomic_path`: a temporary file ``.NAME.tmp-PID`` beside the target, renamed over it when
complete. A process killed mid-write (``kill -9``) leaves its temporary file behind;
:func:`clean_stale_temps` removes such leftovers of the target once their process is gone.

The rules, in order:

* an output may not be one of the command's inputs (same file, by any spelling or link);
* its name must end in a suffix the command writes (a fit is ``.nc``, a table ``.csv`` or
  ``.parquet``): the format follows the name, or the name is refused;
* it may not be a folder, lie under a file, or lie in a folder that cannot be written;
* an existing file is replaced only when ``replace`` is true (``--force``) and the file is of the
  kind the command writes (a fit file is replaced only by a fit: a netCDF without hierarchy
  provenance, or a text file named ``.nc``, is never replaced).

A folder of pages and tables (``report --out``, ``compare-models --out``, ...) must be new, empty
or ours: the files this program wrote there are listed in :data:`FOLDER_MARKER` inside it
(:func:`mark_folder`). A folder holding other files is refused without ``replace``; with it, it is
still refused when one of those files could be one the command writes (:data:`WRITTEN_SUFFIXES`),
so a file that is not ours is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from hierarchy.errors import HierarchyError

TMP_PATTERNS = (re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$"),  # atomic_path, fitfile
                re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$"))  # simulate.write
"""Names of the temporary files our writers leave when killed: ``.NAME.tmp-PID``, ``.NAME.PID.tmp``."""

SUFFIXES = {"fit": (".nc",), "table": (".csv", ".parquet"), "csv": (".csv",),
            "parquet": (".parquet",), "json": (".json",), "key": (".key",), "public_key": (".pub",),
            "signature": (".sig",)}
"""File kinds and the name endings each accepts."""

_WHAT = {"fit": "a fit file", "table": "a table", "csv": "a CSV file", "parquet": "a Parquet file",
         "json": "a JSON file", "key": "a private key", "public_key": "a public key", "signature": "a signature"}


def check_output(path: str | os.PathLike, *, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
                 replace: bool = False, option: str = "--out") -> Path:
    """Check that ``path`` may be written as a file of ``kind``, before any work starts.

    Parameters
    ----------
    path
        The output file.
    kind
        One of :data:`SUFFIXES` (``"fit"``, ``"table"``, ``"csv"``, ``"parquet"``, ``"json"``).
    inputs
        Files the command reads (``None`` entries are ignored); the output may not be one of them.
    replace
        Allow replacing an existing file of the same kind (the ``--force`` option).
    option
        The option that named ``path``, for messages.

    Returns
    -------
    pathlib.Path
        ``path``; stale temporary files of earlier, killed writes to it have been removed.

    Raises
    ------
    HierarchyError
        Naming the path, the rule it breaks and the fix.
    """
    path = Path(path)
    allowed = SUFFIXES[kind]
    if path.is_dir():
        raise HierarchyError(f"{option} {path} is a folder; give a file name inside it, e.g. "
                             f"{path / ('out' + allowed[0])}")
    if path.suffix.lower() not in allowed:
        raise HierarchyError(f"{option} {path}: {_WHAT[kind]} is written as "
                             f"{' or '.join(allowed)}; name it with that ending (the format "
                             f"follows the name)")
    _check_not_input(path, inputs, option)
    _check_parent(path, option)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise HierarchyError(f"{option} {path} exists and is not a regular file; choose "
                                 "another name")
        if kind == "fit" and not is_fit_file(path):
            raise HierarchyError(f"{option} {path} exists and is not a hierarchy fit file; it is "
                                 "never replaced. Choose another name, or move the file away")
        if kind != "fit" and not _same_format(path):
            raise HierarchyError(f"{option} {path} exists and is not a {path.suffix} file this "
                                 "program writes; it is never replaced. Choose another name")
        if not replace:
            raise HierarchyError(f"{option} {path} already exists; pass --force to replace it, "
                                 "or choose another name")
    clean_stale_temps(path)
    return path


FOLDER_MARKER = ".hierarchy-outputs.json"
"""Inside an output folder: the files this program wrote there (:func:`mark_folder`)."""

WRITTEN_SUFFIXES = frozenset({".csv", ".html", ".md", ".png", ".svg", ".json", ".txt", ".nc",
                              ".parquet", ".yaml"})
"""Endings of the files our folder outputs hold: a file that is not ours with one of them could be
overwritten, so its folder is refused even with ``--force``."""


def check_output_folder(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                        option: str = "--out", owned: bool = False, empty: bool = False,
                        replace: bool = False) -> Path:
    """Check that ``path`` can be (or is) a writable folder and is none of ``inputs``.

    Parameters
    ----------
    path
        The output folder (created later if missing).
    inputs
        Files the command reads; the folder may not be one of them.
    option
        The option that named ``path``, for messages.
    owned
        A folder of pages and tables: it must be new, empty or hold only files this program wrote
        (:func:`foreign_files`); with ``replace`` (``--force``) other files are allowed beside it
        unless one could be overwritten (:data:`WRITTEN_SUFFIXES`).
    empty
        The folder must be new or empty (an ACRO results folder: nothing is written over).
    replace
        The ``--force`` option.

    Raises
    ------
    HierarchyError
        Naming the folder, the rule it breaks and the fix.
    """
    path = Path(path)
    _check_not_input(path, inputs, option)
    if path.exists() and not path.is_dir():
        raise HierarchyError(f"{option} {path} is a file, not a folder; give a folder name "
                             "(it is created if missing)")
    if not path.is_dir():
        _check_parent(path, option)
        return path
    if not os.access(path, os.W_OK | os.X_OK):
        raise HierarchyError(f"{option} {path}: the folder is not writable (permission denied); "
                             "choose a folder you can write to")
    if empty and any(path.iterdir()):
        raise HierarchyError(f"{option} {path} exists and is not empty; give a new or empty folder "
                             "(nothing is written over)")
    if owned:
        _check_owned(path, option, replace)
    return path


def _check_owned(path: Path, option: str, replace: bool) -> None:
    foreign = sorted(foreign_files(path))
    if not foreign:
        return
    named = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if not replace:
        raise HierarchyError(f"{option} {path} holds {len(foreign)} file(s) this program did not "
                             f"write ({named}); give a new or empty folder, or pass --force to write "
                             "beside them (a file that could be overwritten is still refused)")
    clash = [f for f in foreign if Path(f).suffix.lower() in WRITTEN_SUFFIXES]
    if clash:
        raise HierarchyError(f"{option} {path} holds {', '.join(clash[:3])}, which this program did not "
                             "write and could overwrite; it is never replaced, even with --force. Move "
                             "it away or give a new or empty folder")


def _folder_files(path: Path) -> set[str]:
    """Files under ``path`` (relative, ``/``-separated), without the marker and our temporary files."""
    out = set()
    for item in path.rglob("*"):
        if item.name == FOLDER_MARKER or any(t.match(item.name) for t in TMP_PATTERNS):
            continue
        if item.is_file() or item.is_symlink():
            out.add(item.relative_to(path).as_posix())
    return out


def _marked(path: Path) -> set[str]:
    """The files the marker of folder ``path`` says we wrote (none when it is missing or unreadable)."""
    try:
        listed = json.loads((path / FOLDER_MARKER).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in listed if isinstance(f, str)}


def foreign_files(path: str | os.PathLike) -> set[str]:
    """Files in folder ``path`` (relative paths) that are not ours; none when the folder is missing.

    Ours: the files its marker lists, and fit files with hierarchy provenance (:func:`is_fit_file`:
    a cache of refits, ``cv_fits/``, written by the library without a marker), which only a fit
    ever replaces.
    """
    path = Path(path)
    if not path.is_dir():
        return set()
    unlisted = _folder_files(path) - _marked(path)
    return {f for f in unlisted if not (f.lower().endswith(".nc") and is_fit_file(path / f))}


def mark_folder(path: str | os.PathLike, foreign: Iterable[str], *, command: str = "") -> None:
    """Record in ``path``'s marker that every file now in it, except ``foreign`` (the files that
    were not ours before the command ran, :func:`foreign_files`), was written by this program."""
    path = Path(path)
    if not path.is_dir():
        return
    ours = sorted(_folder_files(path) - set(foreign))
    text = json.dumps({"written_by": f"hierarchy {command}".strip(), "files": ours}, indent=1)
    with atomic_path(path / FOLDER_MARKER) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _check_not_input(path: Path, inputs: Iterable[str | os.PathLike | None], option: str) -> None:
    for item in inputs:
        if item is None:
            continue
        if same_file(path, Path(item)):
            raise HierarchyError(f"{option} {path} is the input file {item}; it is never "
                                 "written over. Choose another name")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are the same file (by any spelling or link)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            break
        parent = parent.parent
    if not parent.is_dir():
        raise HierarchyError(f"{option} {path}: {parent} is a file, not a folder, so nothing can "
                             "be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HierarchyError(f"{option} {path}: cannot write in {parent} (permission denied); "
                             "choose a folder you can write to")


def is_fit_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a netCDF file with hierarchy provenance (a fit this program wrote)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                return False
        import h5py

        with h5py.File(path, "r") as h5:
            return "posterior" in h5 and "hierarchy" in h5["posterior"].attrs
    except Exception:  # unreadable, truncated, not HDF5: not ours
        return False


def _same_format(path: Path) -> bool:
    """True when an existing file's bytes match the format its name says (so it can be ours)."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if suffix == ".parquet":
        return head[:4] == b"PAR1"
    if suffix in (".key", ".pub"):  # a PEM key this program writes (hierarchy keygen)
        kind = b"PRIVATE" if suffix == ".key" else b"PUBLIC"
        return head.startswith(b"-----BEGIN " + kind + b" KEY-----")
    if suffix == ".sig":  # a signature this program writes: one line of 128 hex digits
        text = head.strip()
        return len(text) == 128 and all(c in b"0123456789abcdef" for c in text)
    if suffix in (".csv", ".json"):
        if b"\x00" in head:
            return False
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:  # a multi-byte character cut at 4096 bytes is fine
            return err.start >= len(head) - 3
        return True
    return False


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temporary files left beside ``path`` by our writers whose process is gone."""
    path = Path(path)
    return [p for p in stale_temps_in(path.parent) if _target_name(p) == path.name]


def stale_temps_in(folder: str | os.PathLike) -> list[Path]:
    """Every temporary file of our writers in ``folder`` whose process is gone."""
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(".*") if _target_name(p) is not None)


def _target_name(candidate: Path) -> str | None:
    """The target a stale temporary file was for, or None if it is not one (or still being written)."""
    for pattern in TMP_PATTERNS:
        m = pattern.match(candidate.name)
        if m and candidate.is_file() and not candidate.is_symlink() and not pid_alive(int(m["pid"])):
            return m["name"]
    return None


def clean_stale_temps(path: str | os.PathLike, *, folder: bool = False) -> list[Path]:
    """Remove the temporary files of earlier, killed writes to ``path`` (every target in it when
    ``folder``); return what was removed."""
    removed = []
    for tmp in stale_temps_in(path) if folder else stale_temps(path):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On any exception (``KeyboardInterrupt`` included) the temporary file is removed and ``path``
    is left as it was. The parent folder is created if missing.

    Examples
    --------
    >>> with atomic_path("fits/x.nc") as tmp:  # doctest: +SKIP
    ...     idata.to_netcdf(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

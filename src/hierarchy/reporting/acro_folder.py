"""The ACRO results folder (format 1.0.2) that output checkers open in the SACRO-Viewer.

:func:`write_records` writes checked records as such a folder (the output files, ``results.json``,
``checksums/`` and ``config.json``, in ACRO's order), atomically; :func:`check_folder` refuses a
folder that is not new before any work starts, and :func:`describe_folder` says what a checker sees
in one. What goes in the records (the checks, the suppression, the comments) is
:mod:`hierarchy.reporting.checking`'s.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from hierarchy.errors import HierarchyError

ACRO_VERSION = "1.0.2"
"""The ACRO results format written (``acro.record.load_records`` requires its version exactly)."""
TOOL = {"@type": "SoftwareApplication", "name": "ACRO", "url": "https://github.com/AI-SDC/ACRO",
        "version": ACRO_VERSION}

__all__ = ["ACRO_VERSION", "TOOL", "check_folder", "describe_folder", "write_records"]


def _write_results(records: list[dict[str, Any]], folder: Path, config: dict[str, Any]) -> None:
    """Write the records' files, ``results.json``, ``checksums/`` and ``config.json`` (ACRO's order)."""
    now = datetime.datetime.now().isoformat()
    results: dict[str, Any] = {}
    for rec in records:
        names = []
        for i, frame in enumerate(rec.get("frames", [])):
            names.append(f"{rec['uid']}_{i}.csv")
            (folder / names[-1]).write_text(frame.to_csv(), encoding="utf-8")
        for name, content in rec.get("files_out", {}).items():
            blocked = [str(e).lower() for e in config.get("blocked_extensions") or []]
            if Path(name).suffix.lower() in blocked:
                raise HierarchyError(f"output file {name}: its extension is blocked by the ACRO "
                                     f"configuration ({config.get('config_source')})")
            names.append(name)
            if isinstance(content, pd.DataFrame):
                content.to_csv(folder / name, index=False)
            else:
                (folder / name).write_bytes(content)
        results[rec["uid"]] = {
            "uid": rec["uid"], "status": rec["status"], "type": rec["type"], "properties": rec["properties"],
            "files": [{"name": n, "sdc": rec["sdc"]} for n in names],
            "outcome": json.loads(rec["outcome"].to_json()), "command": rec["command"],
            "summary": rec["summary"], "timestamp": now, "comments": rec["comments"],
            "exception": rec["exception"], "fair": rec["fair"]}
    (folder / "results.json").write_text(json.dumps({"version": ACRO_VERSION, "tool": TOOL,
                                                     "results": results}, indent=4), encoding="utf-8")
    sums = folder / "checksums"
    sums.mkdir()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        (sums / f"{path.name}.txt").write_text(hashlib.sha256(path.read_bytes()).hexdigest(), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({**config, "suppress": True}, indent=4, default=str),
                                        encoding="utf-8")


def write_records(records: list[dict[str, Any]], out_dir: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write an ACRO results folder atomically (built beside it, then renamed into place).

    Refuses an existing ``out_dir`` that is not empty, as ACRO's ``finalise`` does.
    """
    out = check_folder(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_results(records, tmp, config)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_folder(out_dir: str | os.PathLike) -> Path:
    """Refuse an ``out_dir`` that exists and is not an empty folder (before any work starts)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HierarchyError(f"{out}: exists and is not an empty folder; choose a new folder for the "
                             "results to check (nothing is written over)")
    return out


def describe_folder(out_dir: str | os.PathLike) -> str:
    """What a checker sees in a results folder: one line per output (type, status, reasons), as text.

    Parameters
    ----------
    out_dir : str or os.PathLike
        A folder written by :func:`hierarchy.reporting.checking.write_checking_folder`.

    Returns
    -------
    str
        A Markdown table.
    """
    doc = json.loads((Path(out_dir) / "results.json").read_text(encoding="utf-8"))
    lines = ["| output | type | status | files | reasons (cells) |", "|---|---|---|---|---|"]
    for uid, rec in doc["results"].items():
        sdc = rec["files"][0].get("sdc") or {}
        reasons = ", ".join(f"{k} {v}" for k, v in (sdc.get("summary") or {}).items() if v)
        if rec["type"] == "custom":
            reasons = "custom output: comment for the checker" + ("; MinimumDoFCheck fail"
                                                                  if rec["status"] == "fail" else "")
        names = ", ".join(f["name"] for f in rec["files"])
        lines.append(f"| {uid} | {rec['type']} | {rec['status']} | {names} | {reasons or 'none'} |")
    return "\n".join(lines) + "\n"

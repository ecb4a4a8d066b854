"""Configuration files: reading TOML with messages naming file and line, hashing canonical
configurations, and suggesting the name a user meant."""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hierarchy.errors import SpecError


def did_you_mean(word: str, options: Iterable[str], *, cutoff: float = 0.5,
                 template: str = " (did you mean '{}'?)") -> str:
    """``template`` filled with the option closest to ``word``, or ``""`` when none is close.

    Parameters
    ----------
    word : str
        What the user wrote.
    options : iterable of str
        The valid names.
    cutoff : float
        Similarity cutoff of :func:`difflib.get_close_matches`.
    template : str
        The hint, ``{}`` standing for the match (default ``" (did you mean 'x'?)"``).
    """
    options = list(options)
    folded: dict[str, str] = {}
    for o in options:  # compared casefolded without punctuation ('re_referral' ~ 'Re-referrals'), shown as given
        folded.setdefault(_fold(o), o)
    close = difflib.get_close_matches(_fold(word), list(folded), n=1, cutoff=cutoff)
    return template.format(folded[close[0]]) if close else ""


def _fold(name: str) -> str:
    """``name`` casefolded with everything but letters and digits removed."""
    return "".join(ch for ch in str(name).casefold() if ch.isalnum())


def config_hash(obj: Any) -> str:
    """16-hex SHA-256 of the canonical (sorted, compact) JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning syntax errors into a message naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None

"""Set-up files agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    listed = {_name(line.strip()[2:]) for line in (ROOT / "environment.yml").read_text().splitlines()
              if line.strip().startswith("- ") and not line.strip().startswith("- -")
              and not line.strip().endswith(":")}
    assert listed - {"python", "pip"} == wanted


def test_arviz_is_pinned_below_the_refactor_and_no_arviz_plots():
    """arviz-plots 0.8 (pulled in by bambi) breaks ``import arviz`` under matplotlib 3.11."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("arviz") and "<0.24" in d for d in deps)
    assert not any(_name(d) in ("arviz-plots", "bambi") for d in deps)

"""Set-up files agree with each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
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


# ------------------------------------------------------------------------------ shipped model and prior files


def test_wheel_ships_the_top_level_models_and_priors(wheel):
    with zipfile.ZipFile(wheel) as zf:
        for kind in ("models", "priors"):
            packed = {Path(n).name: zf.read(n) for n in zf.namelist()
                      if n.startswith(f"hierarchy/shipped_{kind}/") and n.endswith(".toml")}
            assert packed == {p.name: p.read_bytes() for p in (ROOT / kind).glob("*.toml")}


def test_installed_command_finds_the_shipped_files_anywhere(wheel, tmp_path):
    """pip install into a fresh venv; run from a folder with no models/ or priors/."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, timeout=300, env=clean)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("from hierarchy import shipped\n"
            "for value, kind in (('vague', 'priors'), (shipped.DEFAULT_PRIORS, 'priors'),\n"
            "                    (shipped.DEFAULT_MODEL, 'models'), ('gradient_poisson.toml', 'models')):\n"
            "    print(shipped.resolve(value, kind))\n")
    proc = subprocess.run([str(venv / "bin/python"), "-c", code], cwd=elsewhere, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    found = [Path(line) for line in proc.stdout.splitlines()]
    assert [p.name for p in found] == ["vague.toml", "weakly_informative.toml",
                                       "inverse_intervention_nb_log.toml", "gradient_poisson.toml"]
    assert all(p.is_file() and venv in p.parents for p in found)
    helped = subprocess.run([str(venv / "bin/hierarchy"), "fit", "--help"], cwd=elsewhere, capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0 and "inverse_intervention_nb_log" in helped.stdout

"""The READMEs' code works: every ```python block imports what it names, every dotted name
``hierarchy.x.y`` in backticks resolves, and every file path in backticks exists (issue 34 item 10)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "notebooks" / "README.md"]
OPTIONAL = {"dask_jobqueue"}  # the [slurm] extra: its import is checked only when installed


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _resolve(dotted: str) -> object:
    """The module or attribute a dotted name names (ImportError/AttributeError when none)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_parse_and_import_what_they_name(readme):
    for block in _python_blocks(readme.read_text()):
        tree = ast.parse(block)  # a SyntaxError names the block
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.module.split(".")[0] in OPTIONAL and importlib.util.find_spec(node.module) is None:
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{readme.name}: {node.module} has no {alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dotted_names_and_paths_in_backticks_exist(readme):
    text = readme.read_text()
    spans = re.findall(r"`([^`\n]+)`", text)
    names = {m for s in spans for m in re.findall(r"\bhierarchy(?:\.[A-Za-z_]\w*)+", s)}
    assert names, "no hierarchy.* names found: the pattern is wrong"
    bad = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            bad.append(f"{name} ({type(e).__name__})")
    paths = {s for s in spans if re.fullmatch(r"[\w./-]+\.(?:py|toml|md|csv|yaml)", s) and "/" in s}
    base = readme.parent
    missing = [p for p in sorted(paths) if not ((base / p).exists() or (ROOT / p).exists()
                                                or (ROOT / "src" / p).exists() or p.startswith(("out/", "fits/")))]
    assert not bad and not missing, f"{readme.name}: names that do not resolve: {bad}; paths missing: {missing}"

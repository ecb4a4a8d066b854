"""The package layout shows the data flow: each layer imports only from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import hierarchy

ORDER = ("data", "language", "likelihood", "inference", "results", "reporting")
ROOT = Path(hierarchy.__file__).parent
KNOWN_UPWARD = {  # the comparison drivers still write their own pages; next: move them into reporting
    "results/compare_models.py imports hierarchy.reporting.report",
    "results/compare_priors.py imports hierarchy.reporting.figures",
    "results/compare_priors.py imports hierarchy.reporting.report",
}


def _imports(path: Path) -> list[str]:
    """Modules of the package that ``path`` imports (``hierarchy.x.y``), at any depth of the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hierarchy"):
            parts = node.module.split(".")
            if len(parts) == 2 and parts[1] in ORDER:  # from hierarchy.layer import module
                out += [f"{node.module}.{a.name}" for a in node.names]
            elif len(parts) == 1:  # from hierarchy import module
                out += [f"hierarchy.{a.name}" for a in node.names]
            else:
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("hierarchy")]
    return out


def test_every_module_sits_in_a_layer_or_serves_them_all():
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ORDER)


def test_layers_import_only_downward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2:
            continue
        here = ORDER.index(rel[0])
        for module in _imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in ORDER and ORDER.index(parts[1]) > here:
                upward.append(f"{'/'.join(rel)} imports {module}")
    assert set(upward) <= KNOWN_UPWARD, "\n".join(sorted(set(upward) - KNOWN_UPWARD))
    assert set(upward) == KNOWN_UPWARD, f"no longer upward, remove from KNOWN_UPWARD: {KNOWN_UPWARD - set(upward)}"


def test_shared_modules_import_no_layer():
    """errors, config, paths, shipped, published, disclosure and compiled serve every layer, so they import
    none (cli, workflow, check and notebook drive the layers and may import any)."""
    for name in ("errors", "config", "paths", "shipped", "published", "disclosure", "compiled"):
        layered = [m for m in _imports(ROOT / f"{name}.py") if len(m.split(".")) > 1 and m.split(".")[1] in ORDER]
        assert not layered, (name, layered)

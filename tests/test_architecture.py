"""The package layout shows the data flow: each layer imports only from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import hierarchy

ORDER = ("data", "language", "likelihood", "inference", "results", "reporting")
DRIVERS = ("cli",)  # packages that drive the layers (one module per job); no layer imports them
ROOT = Path(hierarchy.__file__).parent
KNOWN_UPWARD = {  # the comparison drivers still write their own pages; next: move them into reporting
    "results/compare_models.py imports hierarchy.reporting.report",
    "results/prior_pages.py imports hierarchy.reporting.figures",
    "results/prior_pages.py imports hierarchy.reporting.report",
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
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {*ORDER, *DRIVERS}


def test_layers_import_only_downward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2 or rel[0] in DRIVERS:
            continue
        here = ORDER.index(rel[0])
        for module in _imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in ORDER and ORDER.index(parts[1]) > here:
                upward.append(f"{'/'.join(rel)} imports {module}")
    assert set(upward) <= KNOWN_UPWARD, "\n".join(sorted(set(upward) - KNOWN_UPWARD))
    assert set(upward) == KNOWN_UPWARD, f"no longer upward, remove from KNOWN_UPWARD: {KNOWN_UPWARD - set(upward)}"


def test_no_layer_imports_the_cli():
    """The CLI drives the layers (one small parser per job, hierarchy.cli); a layer never imports it."""
    found = [f"{path.relative_to(ROOT)} imports {module}" for path in sorted(ROOT.rglob("*.py"))
             if path.relative_to(ROOT).parts[0] in ORDER
             for module in _imports(path) if module.split(".")[:2] == ["hierarchy", "cli"]]
    assert not found, found


def test_shared_modules_import_no_layer():
    """errors, config, paths, shipped, published, disclosure and compiled serve every layer, so they import
    none (cli, workflow, check and notebook drive the layers and may import any)."""
    for name in ("errors", "config", "paths", "shipped", "published", "disclosure", "compiled"):
        layered = [m for m in _imports(ROOT / f"{name}.py") if len(m.split(".")) > 1 and m.split(".")[1] in ORDER]
        assert not layered, (name, layered)


def test_parameter_names_are_listed_once():
    """Every list of the model's parameter names is a view of hierarchy.likelihood.parameters: no module keeps
    a literal tuple or list naming four or more of its variables."""
    from hierarchy.likelihood.parameters import BY_NAME

    lists = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "parameters.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                named = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in BY_NAME]
                if len(named) >= 4:
                    lists.append(f"{path.relative_to(ROOT)}:{node.lineno} {named}")
    assert not lists, "\n".join(lists)


def test_the_parameter_table_gives_the_lists_the_layers_read():
    from hierarchy.inference.diagnostics import LATENT
    from hierarchy.likelihood import parameters
    from hierarchy.likelihood.model import HYPERPARAMETERS, STAGE_VARS
    from hierarchy.likelihood.predictor import ROW_PARAMS

    assert HYPERPARAMETERS[:4] == ("intercept", "gradient", "la_deprivation", "cross_level")
    assert set(STAGE_VARS) == {"intercept", "gradient", "la_deprivation", "cross_level", "dispersion", "zi"}
    assert "la_coef" not in LATENT and {"la_raw", "eps_raw", "msoa_raw"} <= set(LATENT)
    assert {"la_coef", "row_coef", "eps_raw", "dispersion"} <= set(ROW_PARAMS) and "la_sd" not in ROW_PARAMS
    assert parameters.names(role="per_row") == ("eps_raw", "spatial_phi", "spatial_phi_free", "spatial_theta")
    groups = parameters.prior_groups()
    assert groups["la_cov_gradient"] == "la_covariates" and "la_corr" not in groups


def test_a_fit_is_read_once_through_the_fit_object():
    """Issue 28: results and reporting take a Fit (hierarchy.results.fit.as_fit), not a bare idata re-parsed at
    every step: the stored spec is parsed at no more than three places (the Fit itself and fitfile's own)."""
    sites = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(ROOT.rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "fit_spec(" in line and "def fit_spec" not in line]
    assert len(sites) <= 3, sites
    assert all(s.startswith(("results/fitfile.py", "results/fit.py")) for s in sites), sites


MAX_FUNCTION_LINES = 100


def _long_functions(root: Path, limit: int) -> dict[str, int]:
    """Every function (or method, at any depth) under ``root`` longer than ``limit`` lines, by
    ``path::name``, with its length (``end_lineno - lineno + 1``, decorators not counted)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out[f"{path.relative_to(root).as_posix()}::{node.name}"] = length
    return out


def test_no_function_over_100_lines(tmp_path):
    """Issue 28: one job per function: none in src/ over 100 lines (ruff's C901, max 15, bounds branching)."""
    (tmp_path / "m.py").write_text("def ok():\n" + "    x = 1\n" * 99 + "\n\ndef long():\n" + "    x = 1\n" * 100
                                   + "\n\nclass C:\n    def method(self):\n" + "        x = 1\n" * 100)
    assert _long_functions(tmp_path, MAX_FUNCTION_LINES) == {"m.py::long": 101, "m.py::method": 101}
    over = _long_functions(ROOT, MAX_FUNCTION_LINES)
    assert not over, "split into named steps: " + ", ".join(f"{k} ({n} lines)" for k, n in sorted(over.items()))

"""``jaxmodel.model_fn`` against another commit's (issue 28: the model split into named builders, unchanged).

For every shipped neighbourhood model (``models/*.toml`` less the LA-panel ``panel_*`` ones, which use
another model function) on a small simulated table (:func:`tests.helpers.every_column_table` shaped by
:func:`tests.helpers.table_for`, the every-model report test's builders), the working tree's
:func:`hierarchy.likelihood.jaxmodel.model_fn` and the one in ``--ref`` (``git show
REF:src/hierarchy/likelihood/jaxmodel.py``, loaded as a separate module over the same package) are
compared in several variants (float64 and float32 rows, ``gather`` on and off, ``fold_groups`` off,
prior numbers carried in the data, ``expose``):

- the trace: the same sites (name, type, shape) in the same order;
- at ``--points`` points drawn from the reference model's prior: ``numpyro.infer.util.log_density`` and its
  gradient with respect to every sampled value equal to ``--rtol`` (1e-12) relative, and with ``expose``
  every deterministic site equal.

    python bench/model_fn_identity.py                      # every model against HEAD
    python bench/model_fn_identity.py --ref ecf3fd0 --models stages_nb gradient_poisson
    python bench/model_fn_identity.py --ref-file /tmp/jaxmodel.py    # against any copy of the module

Exit status 1 when any model differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.helpers: the shared data builders
    sys.path.insert(0, str(ROOT))

PRIORS = ROOT / "priors" / "weakly_informative.toml"
VARIANTS = (  # name, row dtype, model_fn keywords, prior numbers in the data
    ("f64", "float64", dict(gather=True), False),
    ("f32", "float32", dict(gather=True), False),
    ("f64 onehot", "float64", dict(gather=False), False),
    ("f32 onehot", "float32", dict(gather=False), False),
    ("f64 unfolded", "float64", dict(gather=True, fold_groups=False), False),
    ("f64 prior data", "float64", dict(gather=True), True),
    ("expose", "float64", dict(gather=True, expose=True), False),
    ("expose onehot", "float32", dict(gather=False, expose=True), False),
)


def reference_module(ref: str, ref_file: Path | None = None):
    """``src/hierarchy/likelihood/jaxmodel.py`` at commit ``ref`` (or the file ``ref_file``), imported as
    ``jaxmodel_ref``."""
    text = ref_file.read_text() if ref_file else subprocess.run(
        ["git", "show", f"{ref}:src/hierarchy/likelihood/jaxmodel.py"], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "jaxmodel_ref.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("jaxmodel_ref", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _sites(model, data: dict, key) -> list[tuple[str, str, tuple]]:
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(model, key)).get_trace(data)
    return [(k, s["type"], tuple(np.shape(s["value"]))) for k, s in tr.items()]


def _rel(a, b) -> float:
    """Largest relative difference of two arrays (0 where both are equal, NaN and inf included)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return 0.0
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return float(np.max(np.where(same, 0.0, np.abs(a - b) / scale)))


def compare(new, old, data: dict, points: int, expose: bool) -> tuple[str, float, str]:
    """Sites in order, then the log density and its gradient (or the exposed sites) at ``points`` prior
    draws: a difference (empty when none), the largest relative difference, and a note (an error that both
    models' gradients raise alike, empty when none)."""
    import jax
    from numpyro import handlers

    mine, theirs = _sites(new, data, jax.random.PRNGKey(0)), _sites(old, data, jax.random.PRNGKey(0))
    if mine != theirs:
        k = next((k for k, (x, y) in enumerate(zip(mine, theirs, strict=False)) if x != y),
                 min(len(mine), len(theirs)))
        return (f"sites differ from site {k}: ref {theirs[k:k + 3]}, new {mine[k:k + 3]} "
                f"({len(theirs)} against {len(mine)} sites)"), float("inf"), ""
    worst, note = 0.0, ""
    for i in range(points):
        tr = handlers.trace(handlers.seed(old, jax.random.PRNGKey(100 + i))).get_trace(data)
        params = {k: s["value"] for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
        if expose:
            got = [handlers.trace(handlers.substitute(m, data=params)).get_trace(data) for m in (new, old)]
            for k, s in got[1].items():
                if s["type"] == "deterministic":
                    worst = max(worst, _rel(got[0][k]["value"], s["value"]))
            continue
        (v_new, g_new), (v_old, g_old) = (_value_and_grad(m, data, params) for m in (new, old))
        if isinstance(g_old, str) or isinstance(g_new, str):  # an error: the same one from both is identity
            if g_new != g_old:
                return f"errors differ at point {i}: ref {g_old}; new {g_new}", float("inf"), ""
            worst, note = max(worst, _rel(v_new, v_old)), f"both alike: {g_old}"
            continue
        if not np.isfinite(float(v_old)):
            return f"log density not finite at point {i}: {float(v_old)}", float("inf"), ""
        worst = max([worst, _rel(v_new, v_old)] + [_rel(g_new[k], g_old[k]) for k in g_old])
    return "", worst, note


def _value_and_grad(model, data: dict, params: dict):
    """The log density at ``params`` and its gradient, or in place of the gradient the error it raised."""
    import jax
    from numpyro.infer.util import log_density

    value = log_density(model, (data,), {}, params)[0]
    try:
        return value, jax.grad(lambda p: log_density(model, (data,), {}, p)[0])(params)
    except Exception as e:  # noqa: BLE001 (reported, and compared with the reference's)
        return value, f"gradient raises {type(e).__name__}: {str(e).splitlines()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--ref-file", type=Path, help="compare with this file instead of --ref's")
    parser.add_argument("--models", nargs="*", help="model names (default: every shipped non-panel model)")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-12)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.likelihood import jaxmodel
    from tests.helpers import every_column_table, table_for

    old_module = reference_module(args.ref, args.ref_file)
    paths = sorted(p for p in (ROOT / "models").glob("*.toml") if not p.stem.startswith("panel_"))
    if args.models:
        paths = [p for p in paths if p.stem in args.models]
        if missing := set(args.models) - {p.stem for p in paths}:
            parser.error(f"no such non-panel model in models/: {sorted(missing)}")
    priors, table = load_priors(PRIORS), every_column_table()
    failed = []
    print(f"model_fn of the working tree against {args.ref_file or args.ref}: {len(paths)} models x "
          f"{len(VARIANTS)} variants, {args.points} points, rtol {args.rtol:g}")
    for path in paths:
        start = time.perf_counter()
        spec = load_spec(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            design = build_design(table_for(spec, table), spec)
        layout = jaxmodel.make_layout(design)
        worst, problems, notes = 0.0, [], []
        for name, dtype, kw, prior_data in VARIANTS:
            data = jaxmodel.model_data(layout, dtype=getattr(jnp, dtype))
            if prior_data:
                data = jaxmodel.with_prior_values(data, priors)
            new = jaxmodel.model_fn(spec, priors, design, layout, **kw)
            old = old_module.model_fn(spec, priors, design, layout, **kw)
            problem, rel, note = compare(new, old, data, args.points, kw.get("expose", False))
            worst = max(worst, rel)
            notes += [f"{name}: {note}"] if note else []
            if problem or rel > args.rtol:
                problems.append(f"{name}: {problem or f'relative difference {rel:.3g}'}")
        verdict = "ok" if not problems else "DIFFERS"
        print(f"{spec.name:32s} {verdict:8s} max rel diff {worst:.3g}  ({time.perf_counter() - start:.0f} s)")
        for p in problems + notes:
            print("    " + p)
        if problems:
            failed.append(spec.name)
    print(f"{len(paths) - len(failed)} of {len(paths)} models identical"
          + (f"; differ: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

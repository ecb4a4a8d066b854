"""GPU checks for issue 18: the machine, and one log-density gradient by each chunk layout.

For the national (32,844 rows), stacked (525,484) and multi-year (426,972) designs it times one
value-and-gradient of the log density as ``fit(float32=True)`` runs it (float32 rows, float64
parameters), with the chunks reaching their LA terms by indexing (``gather=True``: a scatter-add in
the gradient) and by one-hot products (``gather=False``, the default off CPU). It also says whether the
gradient holds a scatter, and the largest (the LKJ Cholesky's 2 x 2 ones are harmless).

    python bench/gpu_checks.py --data-cache .gpu/data     # data sets from bench_scale.py --simulate-only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def largest_scatter(hlo: str) -> str:
    """The scatter with the most updates in an HLO program, as ``N into f64[151,2]``, or ``none``.

    The gradient of indexing is a scatter-add with one update per index: per chunk or per row is
    what jaxlib 0.10.2 makes slow on GPU; per LA (the 151-row LA parameter matrices) or smaller is not.
    """
    import re

    shape = dict(re.findall(r"(\S+) = (\w+\[[\d,]*\])", hlo))
    best = (0, "none")
    for out, idx in re.findall(r"= (\w+\[[\d,]*\])\{[^}]*\} scatter\([^,]+, ([^,]+),", hlo):
        dims = [int(v) for v in shape.get(idx, "x[1]").split("[")[1].rstrip("]").split(",") if v]
        best = max(best, (dims[0] if dims else 1, out))
    return "none" if best[1] == "none" else f"{best[0]} updates into {best[1]}"


def gradient(kind: str, cache: Path | None, gather: bool) -> tuple[float, str]:
    """Median ms of one value-and-gradient, and the largest scatter in its program."""
    from bench_national import gradient_ms
    from bench_scale import MODELS, dataset

    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec

    table, _ = dataset(kind, {"default": 11}.get(kind, 0), None, cache)
    spec = load_spec(ROOT / "models" / f"{MODELS[kind]}.toml")
    seen = []
    ms = gradient_ms(spec, load_priors(ROOT / "priors/weakly_informative.toml"), build_design(table, spec),
                     reps=5, calls=50, gather=gather, inspect=lambda hlo: seen.append(largest_scatter(hlo)))
    return ms, seen[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-cache", type=Path, default=None)
    p.add_argument("--kinds", default="default,stacked,years")
    args = p.parse_args()
    import jax
    import numpyro

    jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, backend {jax.default_backend()}, "
          f"devices {jax.devices()}")
    print("kind | layout | ms per value-and-gradient | largest scatter in the gradient")
    for kind in args.kinds.split(","):
        for gather in (False, True):
            ms, scatter = gradient(kind, args.data_cache, gather)
            print(f"{kind} | {'indexing' if gather else 'one-hot'} | {ms:.3f} | {scatter}", flush=True)


if __name__ == "__main__":
    main()

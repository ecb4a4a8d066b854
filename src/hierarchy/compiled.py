"""Keep a long-running process inside the kernel's limit on memory maps.

Every XLA CPU program is loaded into memory maps of its own, and JAX keeps the programs of every
function it has compiled. NumPyro traces a new model function on every fit, so a process that fits
many times (k-fold refits, SBC replicates, a sweep's worker, a test session) gains about 3,500 maps
per fit and never reuses them; at Linux's default ``vm.max_map_count`` of 65,530 the next compile
dies with a segmentation fault after about 18 fits. :func:`release_compiled_programs`, called before
every fit, drops JAX's in-memory caches once the process holds a quarter of its allowance. The
persistent compilation cache on disk is untouched, so a program needed again is read back, not
compiled.
"""

from __future__ import annotations

from pathlib import Path

MAPS = Path("/proc/self/maps")
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")
SHARE = 0.25  # release once the process holds this share of the kernel's allowance


def map_count() -> int | None:
    """Memory maps this process holds, or None where the system does not say (not Linux)."""
    try:
        with MAPS.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def map_allowance() -> int | None:
    """The kernel's per-process limit on memory maps (``vm.max_map_count``), or None if unknown."""
    try:
        return int(MAX_MAP_COUNT.read_text())
    except (OSError, ValueError):
        return None


def release_compiled_programs(*, force: bool = False) -> bool:
    """Drop JAX's compiled programs if this process nears its memory-map limit (or ``force``).

    Returns whether they were dropped. Functions compiled before are compiled (or read from the
    persistent cache) again on their next call.
    """
    if not force:
        held, allowed = map_count(), map_allowance()
        if held is None or allowed is None or held < SHARE * allowed:
            return False
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    return True

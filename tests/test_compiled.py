"""A process that compiles many programs gives their memory maps back before the kernel's limit."""

from __future__ import annotations

import sys

import pytest

from hierarchy import compiled

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory maps are read from /proc")


def _compile_programs(n: int) -> list:
    import jax
    import jax.numpy as jnp

    outs = []
    for k in range(n):  # a new function each time, as NumPyro's new model function on every fit
        f = jax.jit(lambda x, k=k: jnp.sin(x) * k + jnp.cumsum(x) ** 2)
        outs.append(f(jnp.arange(10.0 + k)))
    return outs


def test_compiled_programs_hold_maps_until_released():
    compiled.release_compiled_programs(force=True)
    before = compiled.map_count()
    _compile_programs(40)
    grown = compiled.map_count()
    assert grown > before + 40, (before, grown)  # each program holds maps of its own
    assert compiled.release_compiled_programs(force=True)
    assert compiled.map_count() < grown - 40


def test_release_waits_for_a_quarter_of_the_allowance(monkeypatch):
    held = compiled.map_count()
    monkeypatch.setattr(compiled, "map_allowance", lambda: 8 * held)
    assert not compiled.release_compiled_programs()  # an eighth: nothing dropped
    monkeypatch.setattr(compiled, "map_allowance", lambda: 2 * held)
    assert compiled.release_compiled_programs()  # a half: dropped
    monkeypatch.setattr(compiled, "map_allowance", lambda: None)
    assert not compiled.release_compiled_programs()  # unknown limit: left alone


@pytest.mark.slow
def test_repeated_fits_stay_within_the_allowance(monkeypatch):
    """Without the release every fit would add ~3,500 maps; with it the process stays near its share."""
    from hierarchy.data import reference, simulate
    from hierarchy.inference.sampling import fit
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.shipped import resolve

    geo = reference.synthetic_geography(6, seed=1, lsoa_per_la=8)
    table, _ = simulate.simulate(geo, year=2019, seed=2)
    spec = load_spec(resolve("gradient_nb", "models"))
    priors = load_priors(resolve("weakly_informative", "priors"))
    design = build_design(table, spec)
    compiled.release_compiled_programs(force=True)
    ceiling = compiled.map_count() + 1000
    monkeypatch.setattr(compiled, "map_allowance", lambda: int(ceiling / compiled.SHARE))
    counts = []
    for seed in range(2):
        fit(spec, priors, design, chains=1, tune=10, draws=10, seed=seed)
        counts.append(compiled.map_count())
    one_fit = counts[0] - (ceiling - 1000)
    assert one_fit > 1000, counts  # a fit alone crosses the ceiling ...
    assert max(counts) < ceiling + 1.5 * one_fit, counts  # ... and what piles up is dropped at the next

"""Issue 33 item 5: each shipped model's shareable verdict against an attempt to rebuild counts from its draws.

The attack is independent of :mod:`hierarchy.results.rowdata`: it differentiates the model's own linear
predictor with respect to every stored parameter. By the score identity a parameter's draws reveal
``sum_i (d eta_i / d theta) y_i``; where that derivative is an indicator (an LA's intercept, a stratum
level, a group level, a 0/1 covariate) the draws give the total count of the rows it touches, and where it
touches one row, that row's count. The attack "succeeds" when such a total is below the threshold (but
not 0) or a touched row stands alone. For every shipped model whose columns the simulator makes, on its
simulated table and on the same table with one such set of rows planted small, the fit's verdict must be
"disclosive" whenever the attack succeeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierarchy.errors import HierarchyError
from hierarchy.language.design import build_design
from hierarchy.language.priors import load_priors
from hierarchy.language.spec import load_spec
from hierarchy.likelihood import parameters
from hierarchy.likelihood.predictor import ROW_PARAMS, design_rows, group_params, linear_predictor
from hierarchy.results.rowdata import effect_group_risks, term_risks
from tests.helpers import every_column_table, table_for

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (ROOT / "models").glob("*.toml") if not p.stem.startswith("panel_"))
THRESHOLD = 10


@pytest.fixture(scope="module")
def table():
    return every_column_table()


def _revealed(spec, design) -> list[np.ndarray]:
    """Row sets whose total count the stored draws reveal (indicator columns of d eta / d theta)."""
    import jax
    import jax.numpy as jnp

    from hierarchy.results.compare_priors import prior_draws

    jax.config.update("jax_enable_x64", True)
    draws = prior_draws(spec, load_priors(ROOT / "priors/weakly_informative.toml"), design, draws=1)
    stored = [k for k in (*ROW_PARAMS, *group_params(design.group_names))
              if k in draws and k not in (*parameters.names(role="per_row"), "dispersion", "obs_sd")
              and not k.endswith("_sd")]
    wanted = (*ROW_PARAMS, *group_params(design.group_names))
    fixed = {k: jnp.asarray(v[0]) for k, v in draws.items() if k in wanted}
    rows = design_rows(design)
    sets = []
    for k in stored:
        jac = jax.jacfwd(lambda v, k=k: linear_predictor(rows, {**fixed, k: v}, jnp))(fixed[k])
        jac = np.asarray(jac).reshape(len(design.y), -1)
        for col in jac.T:
            nz = np.abs(col) > 1e-12
            if nz.any() and np.ptp(col[nz]) < 1e-9 * max(1.0, np.abs(col[nz]).max()):  # an indicator
                sets.append(nz)
    return sets


def _attack(sets: list[np.ndarray], y: np.ndarray) -> bool:
    for nz in sets:
        total = y[nz].sum()
        if (nz.sum() == 1 and total > 0) or 0 < total < THRESHOLD:
            return True
    return False


def _verdict_disclosive(spec, design) -> bool:
    names = ("la_coef", "msoa_raw", *(f"{g}_raw" for g in design.group_names))
    return bool(effect_group_risks(spec, design, names) + term_risks(spec, design))


@pytest.mark.slow
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_the_verdict_of_every_model_matches_an_attack_on_its_draws(path, table):
    spec = load_spec(path)
    table = table_for(spec, table)
    try:
        design = build_design(table, spec)
    except HierarchyError as err:  # a column the simulator does not make (events, band, year ...)
        pytest.skip(f"{spec.name}: {str(err)[:80]}")
    sets = _revealed(spec, design)
    assert sets, "every model reveals some totals (its LA intercepts)"
    y = design.y.astype(float)
    assert _attack(sets, y) == _verdict_disclosive(spec, design) or _verdict_disclosive(spec, design)
    # plant: the smallest revealed row set with more than one row gets 3 counts in one row, 0 elsewhere
    sizes = [int(s.sum()) for s in sets]
    pick = min((i for i, n in enumerate(sizes) if n > 1 and not sets[i].all()), key=lambda i: sizes[i])
    planted = table.copy()
    rows = np.flatnonzero(sets[pick] & (design.stage_index == 0))
    ids = np.asarray(design.row_ids)[rows]
    key = planted["neighbourhood"].astype(str)
    for c in [c for c in ("age_band", "sex") if c in planted]:
        key = key + "|" + planted[c].astype(str)
    hit = key.isin({i.rsplit("|", 0)[0] for i in ids}).to_numpy()
    if not hit.any():  # row ids carry only the strata the model reads
        base = planted["neighbourhood"].astype(str).to_numpy()
        hit = np.isin(base, [i.split("|", 1)[0] for i in ids])
    for stage in spec.stages:
        planted.loc[hit, stage] = 0
        planted.loc[np.flatnonzero(hit)[0], stage] = 3
    design2 = build_design(planted, spec)
    assert _attack(_revealed(spec, design2), design2.y.astype(float))
    assert _verdict_disclosive(spec, design2), f"{spec.name}: the attack rebuilds a total, the fit says shareable"

"""Panel fits sample on to the convergence bar (issue 29 item 4): no draw counts in the model files, the
sample-on loop that ``fit`` and the panel share, and a panel fit that misses the bar continues and then
ends with a WARN naming the parameter."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from hierarchy.errors import SpecError
from hierarchy.likelihood import panel_model as pm

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_shipped_panel_models_carry_no_draw_counts():
    for path in sorted(MODELS.glob("panel_*.toml")):
        text = path.read_text()
        assert "[sampling]" not in text and "draws" not in text, path
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an old [sampling] table would warn
            pm.load_panel_spec(path)


def test_an_old_sampling_table_is_ignored_with_a_warning_and_anything_else_refused(tmp_path):
    base = (MODELS / "panel_stages_nb.toml").read_text()
    old = tmp_path / "old.toml"
    old.write_text(base + "\n[sampling]\nchains = 2\nwarmup = 300\ndraws = 300\n")
    with pytest.warns(FutureWarning, match=r"old.toml: \[sampling\] \(chains = 2, warmup = 300, draws = 300\) "
                                           r"is ignored.*delete the \[sampling\] table"):
        spec = pm.load_panel_spec(old)
    assert spec == pm.load_panel_spec(MODELS / "panel_stages_nb.toml")  # same model, same fit
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "\n[sampling]\ndraws = 300\nthin = 2\n")
    with pytest.raises(SpecError, match=r"bad.toml: \[sampling\] \['thin'\] not understood; delete"):
        pm.load_panel_spec(bad)


class _FakeMCMC:
    """Stands in for numpyro's MCMC: independent normal draws, one block per ``run``."""

    def __init__(self, chains: int, draws: int, seed: int = 0):
        self.rng, self.chains, self.num_samples = np.random.default_rng(seed), chains, draws
        self.post_warmup_state, self.runs = None, 0
        self._block = None
        self.run(None)

    @property
    def last_state(self):
        return type("State", (), {"rng_key": self.runs})()

    def run(self, key, *args, extra_fields=()):
        self.runs += 1
        n = self.num_samples
        draws = {"a": self.rng.normal(size=(self.chains, n)), "b": self.rng.normal(size=(self.chains, n, 3))}
        self._block = (draws, {"diverging": np.zeros((self.chains, n), bool)})

    def get_samples(self, group_by_chain=True):
        return self._block[0]

    def get_extra_fields(self, group_by_chain=True):
        return self._block[1]


def test_sample_on_goes_on_to_the_bar_in_one_sized_block_and_stops_at_the_cap():
    from hierarchy.inference.sampling import meets_bar, sample_on

    mcmc = _FakeMCMC(chains=2, draws=100)
    samples, extra, added = sample_on(mcmc, (), max_draws=5000)
    n = samples["a"].shape[1]
    assert len(added) >= 1 and n == 100 + sum(added) and 200 <= n <= 600, added  # ~1.2 x 400 / 2 chains
    assert samples["b"].shape == (2, n, 3) and extra["diverging"].shape == (2, n)
    assert meets_bar(samples, extra) and mcmc.runs == 1 + len(added)
    capped = _FakeMCMC(chains=2, draws=100)
    samples, _, added = sample_on(capped, (), max_draws=150)
    assert added == [50] and samples["a"].shape == (2, 150)  # the cap holds, the bar missed
    done = _FakeMCMC(chains=2, draws=2000)
    assert sample_on(done, (), max_draws=6000)[2] == [] and done.runs == 1  # met: no more runs


@pytest.mark.slow  # one small panel compile and fit: ~30-60 s on 2 shared cores
def test_a_panel_fit_short_of_the_bar_samples_on_then_warns_naming_the_parameter():
    from hierarchy.data import panel
    from hierarchy.inference.sampling import fit_panels

    p = panel.synthetic_panel(n_la=8, years=(2019, 2020, 2021, 2022), seed=1)
    spec = pm.load_panel_spec(MODELS / "panel_stages_nb.toml")
    designs = [pm.panel_design(p.table, m, spec) for m in ("referrals", "s47")]
    with pytest.warns(UserWarning, match=r"WARN: panel_stages_nb referrals: not converged after \d+ draws per "
                                         r"chain \(max_draws 120\): .*ESS \d+ < 400 \(\w+\)") as record:
        fits = fit_panels(designs, spec, chains=2, tune=100, draws=50, max_draws=120, seed=2)
    for f in fits:
        d = f.diagnostics
        assert d["continuations"] >= 1 and 50 < d["draws"] <= 120, d  # it went on past the first block
        assert f.draws["alpha"].shape == (2 * d["draws"],)
        assert d["status"] == "warn" and d["min_ess"] < 400 and d["ess_tail_worst"] in f.draws | {"corr_uv": 0}
        assert d["warning"].startswith(f"WARN: panel_stages_nb {f.design.measure}: not converged")
    assert sum("WARN: panel_stages_nb" in str(w.message) for w in record) == 2
    # the second measure warmed up afresh (a continuation does not carry over to the next measure)
    assert abs(fits[1].draws["alpha"].mean() - fits[0].draws["alpha"].mean()) > 0.5

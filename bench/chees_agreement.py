"""The many-chain sampler (``--sampler chees``) against NumPyro NUTS on every shipped model (issue 30).

For each shipped model (or ``--models a b c``): a small simulated data set suited to the model
(:func:`tests.helpers.every_column_table` shaped by :func:`tests.helpers.table_for`, the builders the
every-model report test uses, on 20 LAs x 10 neighbourhoods x age x sex, two years for a model that
reads ``year``), one NUTS fit (4 chains) and one chees fit (128 chains by default), each judged by its own
gate (R-hat / nested R-hat, ESS >= 400, no divergences: :func:`hierarchy.inference.diagnostics.diagnose`).
Then the headline estimands (the gradient scores ``hierarchy report`` leads with, at mean LA
deprivation and 10 points less / more; each stage of a stacked model) and every hyperparameter:
the chees mean less the NUTS mean in NUTS posterior SDs, the SD ratio, and pass/fail.

The bars. Means: within 0.1 NUTS posterior SD (the issue's), unless ``Z_MC`` (3.5) Monte Carlo errors
of the difference exceed 0.1, when the bar is those 3.5 errors (``3.5 x sqrt(MCSE_nuts^2 + MCSE_chees^2)
/ SD_nuts``, each MCSE from that fit's own bulk ESS); the table says which bar applied (``0.10`` or
``MC``). SD ratio: within ``exp(+-max(log 1.2, 3.5 se))``, ``se`` the standard error of the log SD
ratio, ``sqrt((kurtosis - 1) / 4 x (1/ESS_nuts + 1/ESS_chees))`` (``1/(2 ESS)`` a fit for a normal
posterior, more for a heavy-tailed one such as an LA SD near 0).
A model passes when both fits meet their gates and every quantity meets both bars.

LA-panel models (``panel_*.toml``) are fitted by ``hierarchy fit`` with NUTS only; ``--sampler chees``
does not apply to them, and models chees refuses are listed with the reason.

    python bench/chees_agreement.py                                  # every shipped model
    python bench/chees_agreement.py --models gradient_poisson stages_nb --chains 64
    python bench/chees_agreement.py --out /tmp/chees.md              # the table, also written to a file
    python bench/chees_agreement.py --method laplace                 # the Laplace mode against NUTS instead

``--method laplace`` (issue 29 item 2) compares the embedded Laplace mode (``fit --method laplace``: NUTS
over the hyperparameters, 4 chains x (500 + 1000)) with the same NUTS reference and the same bars; the models
the Laplace mode refuses are listed with its reason.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.helpers: the shared data builders
    sys.path.insert(0, str(ROOT))

PRIORS = ROOT / "priors" / "weakly_informative.toml"
MEAN_BAR = 0.1
"""The issue's bar: chees means within 0.1 NUTS posterior SD."""
SD_RATIO_BAR = 1.2
Z_MC = 3.5
"""Monte Carlo multiplier of the bars: ~1 in 2,000 quantities fails by chance alone."""
NUTS = dict(chains=4, tune=1000, draws=1000, chain_method="sequential", target_accept=0.95)
"""The reference: 4 x (1000 + 1000) at 0.95 (small data sets of 6 LAs make funnels; 0.8 diverged)."""
CHEES = dict(chains=128)
LAPLACE = dict(chains=4, tune=500, draws=1000, chain_method="sequential", method="laplace")
FLOAT64 = {"stages_age_nb": "compared with float64 rows on 2026-12-07: with float32 rows and 128 chains its "
                            "step size collapsed to 6e-6, because XLA on CPU summed float32 rows cast to float64 "
                            "wrongly when vmapped past 2**14 chunk sums (fixed the same day in "
                            "families._rows.total; chees now checks float32 against float64 before sampling)"}
"""Models whose chees fit runs with float64 rows (every other model: float32, the GPU setting), and why."""
N_LA, LSOA_PER_LA = 20, 10
"""The data sets' size: 20 LAs of 10 neighbourhoods (x age x sex for the stratified models)."""
PANEL = "LA-panel model: fitted by `hierarchy fit` with NUTS only; --sampler chees does not apply"


@dataclass
class Row:
    """One compared quantity."""

    name: str
    kind: str  # "headline", "hyper" or "la" (an LA effect)
    nuts_mean: float
    nuts_sd: float
    gap: float  # |chees mean - NUTS mean| / NUTS SD
    ratio: float  # chees SD / NUTS SD
    mean_bar: float
    bar_kind: str  # "0.10" or "MC"
    ratio_bar: float

    @property
    def ok(self) -> bool:
        return self.gap <= self.mean_bar and 1 / self.ratio_bar <= self.ratio <= self.ratio_bar


@dataclass
class Result:
    """One model's comparison (``reason`` set when it was not compared)."""

    model: str
    rows: list[Row] = field(default_factory=list)
    reason: str = ""
    nuts_status: str = ""
    chees_status: str = ""  # the compared fit's gate: chees, or the Laplace mode (``against``)
    times: dict[str, float] = field(default_factory=dict)
    against: str = "chees"

    @property
    def converged(self) -> bool:
        return self.nuts_status == "ok" and self.chees_status == "ok"

    @property
    def ok(self) -> bool:
        return not self.reason and self.converged and all(r.ok for r in self.rows)

    def misses(self) -> list[str]:
        """What failed, one line each."""
        gates = (("NUTS", self.nuts_status), (self.against, self.chees_status))
        out = [f"{s} gate: {v}" for s, v in gates if v != "ok"]
        return out + [f"{r.name}: {r.gap:.3f} NUTS SD (bar {r.mean_bar:.3f}, {r.bar_kind}), SD ratio {r.ratio:.3f}"
                      for r in self.rows if not r.ok]


def shipped_models(names: list[str] | None = None) -> list[str]:
    """Names of the shipped models (``models/*.toml``), or ``names`` checked against them."""
    known = sorted(p.stem for p in (ROOT / "models").glob("*.toml"))
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return list(names)


def every_column(n_la: int = N_LA, lsoa_per_la: int = LSOA_PER_LA):
    """:func:`tests.helpers.every_column_table` on ``n_la`` LAs of ``lsoa_per_la`` neighbourhoods (its
    default 6 LAs are too few for the LA SDs, whose funnels then stop NUTS: the default model's reference
    had R-hat 1.58 and 839 divergences at target 0.95)."""
    from tests.helpers import every_column_table

    return every_column_table(n_la=n_la, lsoa_per_la=lsoa_per_la)


def data_for(model: str, n_la: int = N_LA, lsoa_per_la: int = LSOA_PER_LA):
    """``(spec, priors, table, design)``: the model's small simulated data set."""
    from hierarchy.language.design import build_design
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from tests.helpers import table_for

    spec = load_spec(ROOT / "models" / f"{model}.toml")
    table = table_for(spec, every_column(n_la, lsoa_per_la))
    return spec, load_priors(PRIORS), table, build_design(table, spec)


def _scalars(ds) -> dict[str, np.ndarray]:
    """Every scalar element of ``ds`` (chain, draw, ...) as ``name[i,j]`` -> (chain, draw) draws."""
    out = {}
    for name, da in ds.data_vars.items():
        values = np.asarray(da.values, dtype=float)
        for index in np.ndindex(values.shape[2:]):
            label = f"{name}[{','.join(map(str, index))}]" if index else name
            out[label] = values[(slice(None), slice(None), *index)]
    return out


def quantities(idata) -> dict[str, tuple[str, np.ndarray]]:
    """The compared quantities of a fit: headline gradient scores (each stage of a stacked model) and
    what :func:`~hierarchy.inference.diagnostics.diagnose` judges: hyperparameters (LA correlations above
    the diagonal) and LA effects. Returns ``name -> (kind, (chain, draw) draws)``."""
    from hierarchy.inference.diagnostics import LATENT
    from hierarchy.results import estimands
    from hierarchy.results.fit import as_fit

    spec = as_fit(idata).spec
    out: dict[str, tuple[str, np.ndarray]] = {}
    for stage in (spec.stages if spec.stacked else [None]):
        view = estimands.stage_view(idata, stage) if stage else idata
        head = estimands.headline_gradients(view)
        extra = [d for d in head.dims if d not in ("chain", "draw")]
        head = head.transpose("chain", "draw", *extra)
        labels = [str(v) for v in head[extra[0]].values] if extra else [""]  # no LA term: one level
        values = np.asarray(head.values, float).reshape(*head.shape[:2], -1)
        for i, level in enumerate(labels):
            key = ",".join(k for k in (stage, level) if k)
            out[f"gradient_score[{key}]" if key else "gradient_score"] = ("headline", values[..., i])
    post = idata.posterior
    post = post[[v for v in post.data_vars if v not in LATENT and v != "la_coef_flat"]]
    for name, draws in _scalars(post).items():
        if name.startswith("la_corr["):
            i, j = (int(k) for k in name[8:-1].split(",")[-2:])
            if i >= j:
                continue
        if np.ptp(draws) > 0:  # constants (fixed values) have nothing to compare
            out[name] = ("la" if name.startswith("la_coef[") else "hyper", draws)
    return out


def _ess(x: np.ndarray) -> float:
    import arviz as az

    return float(az.ess(x[None] if x.ndim == 1 else x, method="bulk"))


def _kurtosis(x: np.ndarray) -> float:
    """Kurtosis (3 for a normal): the sample SD's relative variance is ``(kurtosis - 1) / (4 n)``."""
    d = x.ravel() - x.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def compare(ref: dict[str, tuple[str, np.ndarray]], got: dict[str, tuple[str, np.ndarray]]) -> list[Row]:
    """One :class:`Row` per quantity in both fits: the gap in NUTS SDs, the SD ratio and their bars."""
    rows = []
    for name, (kind, r) in ref.items():
        if name not in got:
            continue
        g = got[name][1]
        sd_r, sd_g = float(r.std()), float(g.std())
        ess_r, ess_g = _ess(r), _ess(g)
        mc = np.sqrt(sd_r**2 / ess_r + sd_g**2 / ess_g) / sd_r
        mean_bar = max(MEAN_BAR, Z_MC * mc)
        se_log_ratio = np.sqrt((_kurtosis(r) - 1) / 4 * (1 / ess_r + 1 / ess_g))  # 1/(2 ESS) each if normal
        rows.append(Row(name, kind, float(r.mean()), sd_r, abs(float(g.mean()) - float(r.mean())) / sd_r,
                        sd_g / sd_r, mean_bar, "0.10" if mean_bar == MEAN_BAR else "MC",
                        float(np.exp(max(np.log(SD_RATIO_BAR), Z_MC * se_log_ratio)))))
    return rows


def refusal(model: str, spec=None, design=None, against: str = "chees") -> str:
    """Why ``model`` is not compared ("" when it is): a panel model, or one ``--sampler chees`` (or the
    Laplace mode, ``against="laplace"``) refuses."""
    if model.startswith("panel_"):
        return PANEL
    from hierarchy.inference import chees, laplace

    why = getattr(laplace if against == "laplace" else chees, "refusal", None)
    return (why(spec, design) or "") if why and spec is not None else ""


def _fit_idata(spec, priors, design, cache: Path | None = None, **kw):
    """The fit as InferenceData, its diagnostics and wall time; read from / written to ``cache`` if given."""
    import arviz as az

    from hierarchy.inference.sampling import fit
    from hierarchy.paths import atomic_path
    from hierarchy.results import fitfile

    if cache is not None and cache.exists():
        idata = az.from_netcdf(cache)
        return idata, fitfile.provenance(idata)["diagnostics"], float(idata.posterior.attrs["bench_wall_s"])
    t = time.perf_counter()
    draws = fit(spec, priors, design, **kw)
    wall = time.perf_counter() - t
    idata = fitfile.build_idata(draws, spec, priors, design, data_hash="bench", data_source="bench",
                                column_map={})
    if cache is not None:
        idata.posterior.attrs["bench_wall_s"] = wall
        with atomic_path(cache) as tmp:
            idata.to_netcdf(str(tmp))
    return idata, fitfile.provenance(idata)["diagnostics"], wall


def _status(d: dict) -> str:
    return "ok" if d["status"] == "ok" else "; ".join(d["reasons"])


def run_model(model: str, *, nuts: dict | None = None, chees: dict | None = None, seed: int = 1,
              cache: Path | None = None, against: str = "chees") -> Result:
    """Fit ``model`` with NUTS and with chees on its small data set and compare them (the fits kept in
    the folder ``cache``, and read from it when there, if given: a bench's scratch, not fit files)."""
    res = Result(model, against=against)
    if model.startswith("panel_"):
        res.reason = PANEL
        return res
    spec, priors, _, design = data_for(model)
    res.reason = refusal(model, spec, design, against)
    if res.reason:
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        nuts, chees = {**NUTS, **(nuts or {})}, {**CHEES, **(chees or {})}
        tag = f"{model}_s{seed}_la{N_LA}"
        ref, d_ref, res.times["nuts"] = _fit_idata(
            spec, priors, design, cache and cache / f"{tag}_nuts{nuts['draws']}_ta{nuts['target_accept']}.nc",
            seed=seed, **nuts)
        if against == "laplace":
            got, d_got, res.times["chees"] = _fit_idata(
                spec, priors, design, cache and cache / f"{tag}_laplace{LAPLACE['chains']}.nc", seed=seed + 1,
                **LAPLACE)
        else:
            f32 = model not in FLOAT64
            got, d_got, res.times["chees"] = _fit_idata(
                spec, priors, design, cache and cache / f"{tag}_chees{chees['chains']}{'' if f32 else '_f64'}.nc",
                sampler="chees", seed=seed + 1, float32=f32, **chees)
    res.nuts_status, res.chees_status = _status(d_ref), _status(d_got)
    res.rows = compare(quantities(ref), quantities(got))
    return res


def _verdict(res: Result) -> str:
    if res.reason:
        return "not compared"
    agree = all(r.ok for r in res.rows)
    if res.converged:
        return "pass" if agree else "FAIL"
    return "agree; gate warns" if agree else "FAIL; gate warns"


def _gate(status: str) -> str:
    """A gate's status, short: ``ok`` or its reasons abbreviated."""
    return status.replace(" divergent transitions", " div").replace("nested R-hat", "nR")[:60]


def markdown(results: list[Result]) -> str:
    """The summary table (one row a model), then the misses and the models not compared."""
    other = results[0].against if results else "chees"
    lines = [f"| model | verdict | NUTS gate | {other} gate | quantities | worst mean gap (NUTS SD) | its bar | "
             f"SD ratio range | NUTS s | {other} s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        if res.reason:
            continue
        worst = max(res.rows, key=lambda r: r.gap / r.mean_bar)
        ratios = [r.ratio for r in res.rows]
        lines.append(f"| {res.model} | {_verdict(res)} | {_gate(res.nuts_status)} | {_gate(res.chees_status)} | "
                     f"{len(res.rows)} | {worst.gap:.3f} ({worst.name}) | "
                     f"{worst.mean_bar:.3f} ({worst.bar_kind}) | {min(ratios):.2f}-{max(ratios):.2f} | "
                     f"{res.times['nuts']:.0f} | {res.times['chees']:.0f} |")
    misses = [f"- {res.model}: {m}" for res in results if not res.reason for m in res.misses()]
    if misses:
        lines += ["", "Misses:", *misses]
    skipped = [f"- {res.model}: {res.reason}" for res in results if res.reason]
    if skipped:
        lines += ["", "Not compared:", *skipped]
    return "\n".join(lines)


def detail(res: Result) -> str:
    """Every compared quantity of one model, one line each."""
    head = f"{res.model}: {_verdict(res)} (NUTS {res.nuts_status}; {res.against} {res.chees_status}; " \
           f"NUTS {res.times.get('nuts', 0):.0f} s, {res.against} {res.times.get('chees', 0):.0f} s)"
    return "\n".join([head] + [f"  {r.name:<40} {r.kind:<8} NUTS {r.nuts_mean:9.4f} +- {r.nuts_sd:7.4f}  "
                               f"gap {r.gap:.3f} / {r.mean_bar:.3f} ({r.bar_kind})  SD ratio {r.ratio:.3f} "
                               f"(bar {r.ratio_bar:.2f}) {'ok' if r.ok else 'MISS'}" for r in res.rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="shipped model names (default: all)")
    ap.add_argument("--chains", type=int, default=CHEES["chains"], help="chees chains (default 128)")
    ap.add_argument("--nuts-draws", type=int, default=NUTS["draws"], help="NUTS draws per chain (default 1000)")
    ap.add_argument("--method", choices=["chees", "laplace"], default="chees",
                    help="what is compared with NUTS: --sampler chees (default) or fit --method laplace")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    ap.add_argument("--cache", type=Path, help="keep the fits in this folder and reuse them (scratch)")
    args = ap.parse_args(argv)
    from hierarchy.inference.sampling import enable_compilation_cache

    enable_compilation_cache()
    results = []
    for model in shipped_models(args.models):
        try:
            res = run_model(model, nuts={"draws": args.nuts_draws}, chees={"chains": args.chains}, seed=args.seed,
                            cache=args.cache, against=args.method)
        except Exception as err:  # noqa: BLE001  (one model's error is a row of the table, not the end)
            traceback.print_exc()
            res = Result(model, reason=f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                         against=args.method)
        results.append(res)
        print(detail(res) if not res.reason else f"{model}: not compared ({res.reason})", flush=True)
    table = markdown(results)
    print("\n" + table)
    if args.out:
        from hierarchy.paths import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(table + "\n")
    return 0 if all(r.ok or (r.reason and not r.reason.startswith("error")) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

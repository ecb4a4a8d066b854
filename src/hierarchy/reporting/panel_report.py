"""The real-data job: build the DfE LA panel, fit the shipped panel models, write a report.

``hierarchy demo --real`` (``make demo-real``) calls :func:`demo_real`. Output folder: ``index.html``,
PNG figures, and CSV tables (England estimands, LA estimands, the England-total check, the classical
check by Laplace maximum likelihood (:func:`ml_check`), the suppression count, the cells each likelihood
treatment covered). Observed LA figures
behind fewer than ``threshold`` (default 10) children or cases are not shown; model estimates are.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hierarchy.data.panel import CONVERSIONS, Panel, get_panel, write_panel
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import fit_panels
from hierarchy.likelihood.panel_model import (
    PanelDesign,
    PanelFit,
    PanelSpec,
    cell_treatment,
    england_totals,
    estimands,
    la_estimands,
    load_panel_spec,
    model_args,
    panel_design,
    panel_model_fn,
    panel_shape,
)
from hierarchy.paths import atomic_path

if TYPE_CHECKING:
    from hierarchy.inference.ml import MLResult

__all__ = ["demo_real", "fit_specs", "ml_check", "ml_panel", "write_panel_report"]

LABELS = {
    "referrals": "referrals", "cin_at31": "children in need (31 March)", "s47": "section 47 enquiries",
    "icpc": "initial child protection conferences", "cpp_start": "child protection plans started",
    "cpp_at31": "child protection plans (31 March)", "cla_at31": "children looked after (31 March)",
    "s47_per_referral": "s47 enquiries per 100 referrals", "icpc_per_s47": "conferences per 100 s47",
    "cpp_per_icpc": "plans per 100 conferences", "cpp_per_referral": "plans per 100 referrals",
    "rereferral_per_referral": "re-referrals per 100 referrals",
    "nfa_per_referral": "no further action per 100 referrals",
    "not_in_need_per_referral": "assessed not in need per 100 referrals",
    "subsequent_per_cpp": "second or later plans per 100 plans",
}


def fit_specs(panel: Panel, spec_paths: list[Path], *, fast: bool = False, seed: int = 0,
              log=print) -> dict[str, dict[str, PanelFit]]:
    """Fit every measure of every spec; a (measure, spec) pair met twice is fitted once.

    Returns ``{spec name: {measure: PanelFit}}``.
    """
    out: dict[str, dict[str, PanelFit]] = {}
    done: dict[str, PanelFit] = {}
    for path in spec_paths:
        spec = load_panel_spec(path)
        settings = dict(tune=200, draws=200) if fast else {}
        present = set(panel.table["measure"])
        measures = [m for m in spec.measures if m in present]
        todo = [m for m in measures if spec.key(m) not in done]
        start = time.perf_counter()
        fits = fit_panels([panel_design(panel.table, m, spec) for m in todo], spec, seed=seed, **settings)
        for m, f in zip(todo, fits, strict=False):
            done[spec.key(m)] = f
        out[spec.name] = {m: done[spec.key(m)] for m in measures}
        log(f"{spec.name}: {len(todo)} fits in {time.perf_counter() - start:.0f} s "
            f"({', '.join(f'{f.design.measure} {f.seconds:.0f} s' for f in fits)})")
    return out


# --------------------------------------------------------------------------------------------
# figures


def _england_trend(fits: dict[str, PanelFit], path: Path) -> None:
    import matplotlib.pyplot as plt

    n = len(fits)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (m, f) in zip(axes.flat, fits.items(), strict=False):
        d = f.design
        e = d.exposure.reshape(len(d.units), len(d.years))
        ok = np.isfinite(e)
        rate = np.exp(f.log_rate()) * np.where(ok, e, 0)[None]
        eng = d.rate_scale * rate.sum(axis=1) / np.where(ok, e, 0).sum(axis=0)[None]
        lo, mid, hi = np.quantile(eng, [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(d.years, lo, hi, alpha=0.3, label="model, 90% interval")
        ax.plot(d.years, mid, label="model")
        pub = d.rate_scale * d.england.to_numpy(float) / d.england_exposure.to_numpy(float)
        ax.plot(d.years, pub, "ko", ms=3, label="DfE published England")
        ax.set_title(LABELS.get(m, m), fontsize=9)
        ax.set_ylabel("per 10,000 children" if d.rate_scale == 10_000 else "per 100", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _gradient_by_year(fits: dict[str, PanelFit], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, f in fits.items():
        if "b_dep" not in f.draws:
            continue
        r = np.exp(f.draws["b_dep"][:, None] + f.draws.get("b_dep_t", 0 * f.draws["b_dep"])[:, None]
                   * f.design.t[None])
        lo, mid, hi = np.quantile(r, [0.05, 0.5, 0.95], axis=0)
        ax.plot(f.design.years, mid, label=LABELS.get(m, m))
        ax.fill_between(f.design.years, lo, hi, alpha=0.12)
    ax.axhline(1, color="grey", lw=0.5)
    ax.set_ylabel("rate ratio per 10 points of LA income deprivation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _conversion_vs_deprivation(fits: dict[str, PanelFit], path: Path, threshold: int) -> None:
    import matplotlib.pyplot as plt

    n = len(fits)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (m, f) in zip(axes.flat, fits.items(), strict=False):
        d = f.design
        c = d.count.reshape(len(d.units), len(d.years))
        e = d.exposure.reshape(len(d.units), len(d.years))
        dep = d.dep_mean + 0.1 * d.z
        for k, colour in ((0, "tab:blue"), (len(d.years) - 1, "tab:red")):
            show = np.isfinite(c[:, k]) & (c[:, k] >= threshold) & np.isfinite(e[:, k])
            ax.scatter(100 * dep[show], d.rate_scale * c[show, k] / e[show, k], s=6, color=colour, alpha=0.5)
            grid = np.linspace(dep.min(), dep.max(), 30)
            zg = (grid - d.dep_mean) / 0.1
            bdt = f.draws.get("b_dep_t", np.zeros_like(f.draws["alpha"]))
            bt = f.draws.get("b_t", np.zeros_like(f.draws["alpha"]))
            eta = (f.draws["alpha"][:, None] + f.draws["b_dep"][:, None] * zg[None]
                   + (bt + bdt * zg[None].T).T * d.t[k] + f.g()[:, k][:, None])
            lo, mid, hi = np.quantile(d.rate_scale * np.exp(eta), [0.05, 0.5, 0.95], axis=0)
            ax.plot(100 * grid, mid, color=colour, label=str(int(d.years[k])))
            ax.fill_between(100 * grid, lo, hi, color=colour, alpha=0.15)
        ax.set_title(LABELS.get(m, m), fontsize=9)
        ax.set_xlabel("LA income deprivation (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def _neighbour_trends(fit: PanelFit, path: Path) -> None:
    """Each LA's fitted rate over the years against its statistical neighbours' (small multiples)."""
    import matplotlib.pyplot as plt

    d = fit.design
    mean = d.rate_scale * np.exp(fit.log_rate()).mean(axis=0)     # units x years
    n = len(d.units)
    cols = 10
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.35 * rows), sharex=True, sharey=True,
                             squeeze=False)
    index = {u: i for i, u in enumerate(d.units)}
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for nb in d.neighbours.get(d.units[i], []):
            ax.plot(d.years, mean[index[nb]], color="0.75", lw=0.6)
        ax.plot(d.years, mean[i], color="tab:red", lw=1.2)
        ax.set_title(str(d.unit_names[i])[:24], fontsize=6)
        ax.tick_params(labelsize=5)
    fig.suptitle(f"{LABELS.get(d.measure, d.measure)} per 10,000 children, fitted: each LA (red) and its "
                 "DfE statistical neighbours (grey)", fontsize=9)
    # fixed margins: tight_layout over ~150 small axes took minutes
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.02, top=1 - 0.5 / fig.get_figheight(), wspace=0.12,
                        hspace=0.5)
    _save(fig, path, dpi=80)


def _save(fig, path: Path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------------
# report


def _ratio_of(fits_a: PanelFit, fits_b: PanelFit, prob: float = 0.9) -> tuple[float, float, float]:
    """exp(b_dep_a - b_dep_b): independent posteriors, draws paired by index."""
    n = min(len(fits_a.draws["b_dep"]), len(fits_b.draws["b_dep"]))
    r = np.exp(fits_a.draws["b_dep"][:n] - fits_b.draws["b_dep"][:n])
    lo, hi = np.quantile(r, [(1 - prob) / 2, (1 + prob) / 2])
    return float(r.mean()), float(lo), float(hi)


def _headlines(all_fits: dict[str, dict[str, PanelFit]], est: pd.DataFrame) -> list[str]:
    fits = {m: f for group in all_fits.values() for m, f in group.items()}
    out = []

    def row(measure, name, year=None):
        r = est[(est["measure"] == measure) & (est["estimand"] == name)]
        r = r[r["year"].isna()] if year is None else r[r["year"] == year]
        return r.iloc[0] if len(r) else None

    def fmt(r, digits=2):
        return f"{r['mean']:.{digits}f} ({r['lower']:.{digits}f} to {r['upper']:.{digits}f})"

    for m in ("referrals", "s47", "cpp_start", "cla_at31"):
        if m in fits:
            f = fits[m]
            y0, y1 = int(f.design.years[0]), int(f.design.years[-1])
            a, b = row(m, "ratio per 10 points of LA deprivation", y0), row(m, "ratio per 10 points of LA "
                                                                              "deprivation", y1)
            if a is not None:
                out.append(f"{LABELS[m]}: rate ratio per 10 points of LA income deprivation {fmt(a)} in {y0}, "
                           f"{fmt(b)} in {y1}.")
    if "s47" in fits and "referrals" in fits:
        r = _ratio_of(fits["s47"], fits["referrals"])
        out.append(f"The s47 rate rises {r[0]:.2f} ({r[1]:.2f} to {r[2]:.2f}) times as steeply with LA "
                   "deprivation as the referral rate (ratio of the two rate ratios per 10 points).")
    for m in ("s47_per_referral", "cpp_per_referral"):
        if m in fits:
            f = fits[m]
            y0, y1 = int(f.design.years[0]), int(f.design.years[-1])
            a, b = row(m, "England rate", y0), row(m, "England rate", y1)
            c = row(m, f"England change {y0}-{y1}")
            if a is not None and c is not None:
                out.append(f"{LABELS[m]}, England: {fmt(a, 1)} in {y0}, {fmt(b, 1)} in {y1}; ratio {fmt(c)}.")
    for m in ("rereferral_per_referral", "subsequent_per_cpp", "s47_per_referral", "nfa_per_referral"):
        if m in fits:
            r = row(m, "ratio per 10 points of LA deprivation", 2019)
            if r is not None:
                out.append(f"{LABELS[m]}: ratio per 10 points of LA deprivation in 2019 {fmt(r)} "
                           "(below 1: higher in less deprived LAs).")
    return out


def _table_html(df: pd.DataFrame, floatfmt: str = "{:.3g}") -> str:
    return df.to_html(index=False, float_format=lambda v: floatfmt.format(v), border=0, na_rep="")


def ml_panel(design: PanelDesign, spec: PanelSpec) -> MLResult:
    """Laplace maximum likelihood of a panel model of one measure (:func:`hierarchy.inference.ml.laplace_ml`).

    The centred model with the LA effects (``uv`` or ``u``) integrated out; the fixed effects, LA SDs
    and correlation, NB dispersion and year effects estimated, as glmmTMB fits
    ``y ~ t + year + dep + dep:t + (1 + t | la) + offset(log E)`` (year effects fixed, on the model's
    basis: no level, no trend). Censored cells are in the likelihood as in the Bayesian fit. Reported
    besides the sites: ``phi``, ``corr_uv`` and ``g`` (year effects per year).
    """
    from hierarchy.inference.ml import laplace_ml

    d = design
    if not d.observed.any():
        raise HierarchyError(f"{d.measure}: no unit x year cell has both a published count and a positive "
                             "exposure, so there is nothing to fit; check the panel's counts and exposures")
    shape = (True, *panel_shape(d, spec)[1:])  # centred: the LA effects are the latent sites
    args = model_args(d)
    basis = np.asarray(args[8])
    terms = spec.terms
    hyper = ["alpha", *(["b_dep"] if "dep" in terms else []), *(f"b_{x}" for x in d.x_names),
             *(["b_t"] if "t" in terms else []), *(["b_dep_t"] if "dep:t" in terms else []), "sd_u",
             *(["sd_v", "L_corr"] if spec.la_trend else []), *(["g_raw"] if "year" in terms else []),
             *(["inv_sqrt_phi"] if spec.family == "nb" else [])]
    reported = {}
    if spec.family == "nb":
        reported["phi"] = lambda v: 1.0 / v["inv_sqrt_phi"] ** 2
    if spec.la_trend:
        reported["corr_uv"] = lambda v: v["L_corr"][1, 0]
    if "year" in terms:
        reported["g"] = lambda v: basis @ v["g_raw"]
    return laplace_ml(panel_model_fn(spec, shape), *args, latent=["uv"] if spec.la_trend else ["u"], hyper=hyper,
                      unused=["sd_g"] if "year" in terms else [], reported=reported)


def _posterior(fit: PanelFit, name: str) -> np.ndarray | None:
    """Draws x values of a reported quantity (None if the fit has none)."""
    if name == "corr_uv" and "L_corr" in fit.draws:
        return fit.draws["L_corr"][:, 1, 0][:, None]
    if name == "g":
        return fit.g()
    return fit.draws[name].reshape(len(fit.draws[name]), -1) if name in fit.draws else None


def ml_check(fit: PanelFit) -> pd.DataFrame:
    """The posterior beside Laplace maximum likelihood of the same model (:func:`ml_panel`).

    One row per fixed effect, SD, correlation, dispersion and year effect: ``posterior_mean``,
    ``posterior_sd``, ``ml`` and ``ml_se`` (Hessian of the Laplace marginal, delta method to this scale),
    ``z = (ml - mean) / sd`` and ``within_2sd``; ``note`` says if the optimum was not reached.
    """
    res = ml_panel(fit.design, fit.spec)
    d = fit.design
    show = [n for n in res.estimates if n not in ("L_corr", "inv_sqrt_phi", "g_raw")]
    rows = []
    for name in show:
        est, se = np.ravel(res.estimates[name]), np.ravel(res.se[name])
        draws = _posterior(fit, name)
        for k in range(len(est)):
            label = f"g[{int(d.years[k])}]" if name == "g" else name
            m = float(draws[:, k].mean()) if draws is not None else np.nan
            sd = float(draws[:, k].std()) if draws is not None else np.nan
            rows.append({"measure": d.measure, "parameter": label, "posterior_mean": m, "posterior_sd": sd,
                         "ml": float(est[k]), "ml_se": float(se[k]),
                         "z": (float(est[k]) - m) / sd if sd > 0 else np.nan})
    out = pd.DataFrame(rows)
    out["within_2sd"] = (out["z"].abs() <= 2).astype(object).where(out["z"].notna())  # no posterior: NaN
    out["note"] = "" if res.converged else f"not converged: {res.message}"
    out.attrs["method"] = (f"Laplace maximum likelihood, {'NB2' if fit.spec.family == 'nb' else 'Poisson'}, "
                           "LA effects integrated out, year effects fixed; censored cells in the likelihood; "
                           f"{res.seconds:.0f} s")
    return out


def _ml_rows(fit) -> pd.DataFrame:
    """:func:`ml_check`, or one row saying why it could not be computed (the report goes on)."""
    try:
        return ml_check(fit)
    except (HierarchyError, ValueError, np.linalg.LinAlgError) as err:
        return pd.DataFrame([{"measure": fit.design.measure, "parameter": "(none)", "within_2sd": np.nan,
                              "note": f"maximum likelihood fit not possible: {err}"}])


def _cell_treatments(fits: dict[str, PanelFit]) -> pd.DataFrame:
    """Unit x year cells per measure and treatment, wide: observed, censored, left out."""
    if not fits:
        return pd.DataFrame(columns=["measure", "observed", "censored", "left out"])
    long = pd.concat([cell_treatment(f.design) for f in fits.values()], ignore_index=True)
    wide = long.pivot(index="measure", columns="treatment", values="cells").reset_index()
    return wide[["measure", "observed", "censored", "left out"]]


def _treatment_html(cells: pd.DataFrame) -> str:
    """The sentence and table saying how many cells each likelihood treatment covered."""
    total = {k: int(cells[k].sum()) for k in ("observed", "censored", "left out")}
    return ("<p>Cells in the likelihood (unit x year, over the fitted measures): "
            f"{total['observed']:,} with a published count; {total['censored']:,} that DfE suppressed as 'c' "
            "(1 to 5), kept as interval-censored (the probability of a count between the bounds); "
            f"{total['left out']:,} left out (other markers such as 'x' not available or 'u' low "
            "reliability, or no exposure) and predicted. Per measure: cell_treatment.csv.</p>"
            + _table_html(cells, "{:,.0f}"))


def write_panel_report(panel: Panel, all_fits: dict[str, dict[str, PanelFit]], out: Path, *,
                       threshold: int = 10, prob: float = 0.9, seconds: dict | None = None) -> Path:
    """Write ``index.html``, figures and CSV tables for fitted panel models into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fits = {m: f for group in all_fits.values() for m, f in group.items()}
    est = pd.concat([estimands(f, prob=prob) for f in fits.values()], ignore_index=True)
    totals = pd.concat([england_totals(f, prob=prob) for f in fits.values()], ignore_index=True)
    ml = [_ml_rows(f) for f in fits.values()]
    method = ml[0].attrs.get("method", "") if ml else ""
    ml = pd.concat(ml, ignore_index=True)
    las = pd.concat([la_estimands(f, prob=prob) for f in fits.values()], ignore_index=True)
    diag = pd.DataFrame([{"measure": m, "model": f.spec.name, "family": f.spec.family,
                          "parameterisation": "centred" if f.centred else "non-centred",
                          "seconds": round(f.seconds, 1), **f.diagnostics} for m, f in fits.items()])
    cells = _cell_treatments(fits)
    for name, df in (("estimands", est), ("england_totals", totals), ("ml_check", ml),
                     ("la_estimands", las), ("diagnostics", diag), ("suppressed", panel.suppressed),
                     ("cell_treatment", cells)):
        _write_csv(df, out / f"{name}.csv")

    rate_fits = {m: f for m, f in fits.items() if m not in CONVERSIONS}
    conv_fits = {m: f for m, f in fits.items() if m in CONVERSIONS}
    figures = []
    if rate_fits:
        _england_trend(rate_fits, out / "england_trend_rates.png")
        _gradient_by_year(rate_fits, out / "deprivation_ratio_by_year.png")
        figures += [("England rates: model beside DfE's published figure", "england_trend_rates.png"),
                    ("Rate ratio per 10 points of LA deprivation, by year", "deprivation_ratio_by_year.png")]
    if conv_fits:
        _england_trend(conv_fits, out / "england_trend_conversions.png")
        _conversion_vs_deprivation(conv_fits, out / "conversion_vs_deprivation.png", threshold)
        figures += [("Conversions, England: model beside DfE's published figure", "england_trend_conversions.png"),
                    ("Conversion against LA deprivation, first and last year (points: LAs with at least "
                     f"{threshold} cases)", "conversion_vs_deprivation.png")]
    if "referrals" in fits:
        _neighbour_trends(fits["referrals"], out / "la_trends_vs_neighbours.png")
        figures.append(("Each LA's referral rate against its statistical neighbours",
                        "la_trends_vs_neighbours.png"))
    map_figures, map_notes = _maps(panel, las, out)
    figures += map_figures

    check = totals[totals["exposure_complete"]]
    worst = check["diff_pct"].abs().max() if len(check) else float("nan")
    n_ok = int(ml["within_2sd"].eq(True).sum())
    n_checked = int(ml["within_2sd"].notna().sum())
    left = ml.groupby("measure")["note"].first()
    left = "; ".join(f"{m}: {v}" for m, v in left.items() if isinstance(v, str) and v)
    key = est[est["year"].isna() | est["year"].isin([int(est["year"].min()), 2019, int(est["year"].max())])]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>DfE LA panel: real findings</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;font-size:12px}"
        "img{max-width:100%}</style></head><body>",
        "<h1>Children's social care by local authority, England 2013-2025: real findings</h1>",
        f"<p>Data: {html.escape(panel.source)}. " + html.escape(panel.describe()).replace("\n", "<br>") + "</p>",
        "<p>Models: " + ", ".join(sorted(all_fits)) + f" (NumPyro NUTS). Intervals are {int(prob * 100)}% "
        f"posterior intervals. Observed LA figures behind fewer than {threshold} cases are not shown.</p>",
        _treatment_html(cells),
        "<h2>Headline findings</h2><ul>" + "".join(f"<li>{html.escape(h)}</li>" for h in _headlines(all_fits, est))
        + "</ul>",
        "<h2>Checks</h2>",
        f"<p>England totals: the model's predicted England count (every LA's fitted count, suppressed cells "
        f"predicted) against DfE's published England figure: largest difference {worst:.2f}% over "
        f"{len(check)} year x measure cells with complete exposures (target 1%). 'model_mean' leaves out "
        "the LA-year effects of the negative binomial (its gamma mixing), so it is the model's expectation "
        "for a new year of the same LA.</p>",
        _table_html(totals, "{:.6g}"),
        f"<p>Classical check, the same model by maximum likelihood ({html.escape(method)}; as glmmTMB fits "
        f"it): {n_ok} of {n_checked} estimates within 2 posterior SDs of the posterior mean."
        + (f" Notes: {html.escape(left)}." if left else "") + "</p>",
        _table_html(ml, "{:.4f}"),
        "<h2>Figures</h2>",
    ]
    for caption, file in figures:
        parts.append(f"<h3>{html.escape(caption)}</h3><img src='{file}'>")
    parts += [f"<p>{html.escape(note)}</p>" for note in map_notes]
    parts += ["<h2>Estimands (England)</h2>", _table_html(key, "{:.3f}"),
              "<p>All years: estimands.csv; every LA: la_estimands.csv.</p>",
              "<h2>Fits</h2>", _table_html(diag, "{:.4g}")]
    if seconds:
        parts.append("<p>Wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "</p>")
    parts.append("</body></html>")
    path = out / "index.html"
    _write_text("\n".join(parts), path)
    return path


MAP_CAPTIONS = {
    "map_referral_rate": "Map: each LA's modelled referral rate per 10,000 children in the last year (posterior "
                         "mean; darker: higher)",
    "map_dfe_rate": "Map: DfE's published referral rate per 10,000 children (darker: higher; grey: not published)",
    "map_deprivation": "Map: income deprivation of each neighbourhood (IoD2019; darker: more deprived), LA "
                       "borders in white",
}


def _maps(panel: Panel, las: pd.DataFrame, out: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """LA maps of the panel (public DfE-based estimates and public data only): ``(caption, file)`` pairs
    written into ``out``, and the notes of maps not drawn."""
    from hierarchy.reporting import maps

    if not panel.source.startswith("reference:"):
        return [], ["No maps: the generated stand-in panel has no real LAs to map."]
    ref = las[las["measure"] == "referrals"]
    la_maps = {}
    if len(ref):
        year = int(ref["last_year"].iloc[0])
        la_maps["map_referral_rate"] = (
            pd.Series(ref["rate_last"].to_numpy(dtype=float), index=ref["unit"].astype(str)),
            f"Modelled referral rate per 10,000 children, {year} (posterior mean)",
            "referrals per 10,000 children aged 0-17 (model)")
    drawn = maps.panel_maps(la_maps, year=int(ref["last_year"].iloc[0]) if len(ref) else None)
    written = []
    for name, (png, _plotted) in drawn.public.items():
        _write_bytes(png, out / f"{name}.png")
        written.append((MAP_CAPTIONS[name], f"{name}.png"))
    return written, list(drawn.notes)


def _write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def demo_real(out: Path, *, reference_dir: Path | None = None, models: list[Path] | None = None,
              synthetic: bool = False, fast: bool = False, seed: int = 0) -> Path:
    """Build the panel, fit the shipped panel models and write the report; returns the report path.

    Writes ``out/panel.parquet`` and ``out/panel_report/``. Without the reference folder (or with
    ``synthetic``) it runs on the generated stand-in panel and says so.
    """
    out = Path(out)
    times = {}
    start = time.perf_counter()
    panel = get_panel(reference_dir, synthetic=synthetic, seed=seed)
    write_panel(panel, out / "panel.parquet")
    times["panel build"] = time.perf_counter() - start
    print(panel.describe())
    if models is None:
        root = Path(__file__).resolve().parents[3] / "models"
        models = sorted(root.glob("panel_*.toml")) or sorted(Path("models").glob("panel_*.toml"))
    if not models:
        from hierarchy.errors import HierarchyError
        raise HierarchyError("no models/panel_*.toml found; run from the project folder")
    start = time.perf_counter()
    all_fits = fit_specs(panel, models, fast=fast, seed=seed)
    times["fits"] = time.perf_counter() - start
    start = time.perf_counter()
    path = write_panel_report(panel, all_fits, out / "panel_report", seconds=times)
    times["report"] = time.perf_counter() - start
    print(f"report written to {path} (panel {times['panel build']:.0f} s, fits {times['fits']:.0f} s, "
          f"report {times['report']:.0f} s)")
    return path

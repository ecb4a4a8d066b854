"""Report figures: matplotlib on the Agg canvas, no pyplot state.

Each ``plot_*`` function takes a tidy table from :mod:`hierarchy.results.estimands` (or a posterior
Dataset) and returns ``(figure, data)``: the :class:`matplotlib.figure.Figure` and exactly the
data it plotted. Observed counts and rates in those tables are already disclosure-controlled
(suppressed cells are NaN and are simply not drawn); the functions never see raw counts.

Figures do not extrapolate silently: where a curve's table has an ``extrapolated`` column
(:mod:`hierarchy.results.estimands`), the part beyond the data is drawn dashed, without its band,
and labelled. Ratio axes (gradient scores, rate ratios) are logarithmic (:func:`ratio_axis`), so
that 0.5 and 2 sit equally far from 1.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
"""The Okabe-Ito palette: distinguishable with every common colour-vision deficiency. Every
categorical colour of the figures comes from it; continuous scales use viridis."""
LEVEL_COLOURS = {"10 points less": OKABE_ITO["blue"], "mean": OKABE_ITO["black"],
                 "10 points more": OKABE_ITO["vermillion"]}
PREDICTED = OKABE_ITO["blue"]
OBSERVED = OKABE_ITO["vermillion"]
REFERENCE = OKABE_ITO["reddish purple"]
GREY = "#999999"


def new_figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (7.0, 4.5)
               ) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on an Agg canvas and its axes (2-d array)."""
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def to_png(fig: Figure, *, dpi: int = 150) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 30,
               50, 75, 100, 200, 500, 1000)


RATE_TICKS = tuple(m * 10.0 ** k for k in range(-1, 7) for m in (1, 2, 5))


def log_axis(ax, which: str = "y", ticks: tuple[float, ...] = RATIO_TICKS) -> None:
    """A log axis with plain-number ticks (``1.5``, ``2,000``; no powers of ten).

    Call after the data are drawn: ticks are chosen from ``ticks`` inside the axis limits (at
    least three, else evenly spaced on the log scale, two significant digits).
    """
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    chosen = spaced_ticks([t for t in ticks if lo <= t <= hi], lo, hi)
    if len(chosen) < 3:
        chosen = spaced_ticks(sorted({float(f"{v:.2g}") for v in np.geomspace(lo, hi, 6)[1:-1]} | set(chosen)),
                              lo, hi)
    axis.set_major_locator(FixedLocator(chosen))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}"))
    axis.set_minor_locator(NullLocator())


MAX_LOG_TICKS = 7
"""Most ticks on a log axis: neighbours are then at least 1/7 of the axis apart and their labels do not meet."""


def spaced_ticks(ticks: list[float], lo: float, hi: float, *, most: int = MAX_LOG_TICKS) -> list[float]:
    """Ticks from ``ticks`` at least ``1 / most`` of the log axis ``lo``-``hi`` apart (labels that do not
    collide), round ones first: 1, 2 and 5 times a power of ten, then the others (1.5, 2.5, 0.75...)."""
    if not ticks or not (0 < lo < hi):
        return list(ticks)
    gap = (np.log10(hi) - np.log10(lo)) / most

    def roundness(t: float) -> int:
        m = t / 10.0 ** np.floor(np.log10(t) + 1e-9)
        return 0 if np.isclose(m, 1) else 1 if np.isclose(m, [2, 5]).any() else 2

    kept: list[float] = []
    for t in sorted(ticks, key=lambda v: (roundness(v), v)):
        if all(abs(np.log10(t) - np.log10(k)) >= gap * (1 - 1e-9) for k in kept):
            kept.append(t)
    return sorted(kept)


def ratio_axis(ax, which: str = "y") -> None:
    """Put a ratio (gradient score, rate ratio) on a log axis (:func:`log_axis`, :data:`RATIO_TICKS`)."""
    log_axis(ax, which, RATIO_TICKS)


def _flags(frame: pd.DataFrame) -> np.ndarray:
    """The ``extrapolated`` column as booleans (all False when the table has none)."""
    if "extrapolated" not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame["extrapolated"].astype(bool).to_numpy()


def _legend(ax, dashed: str | None, *, colour: str = PREDICTED, title: str | None = None) -> None:
    """The axes' legend, with a line saying what the dashed (extrapolated) parts are when there are any."""
    handles, _ = ax.get_legend_handles_labels()
    if dashed:
        handles.append(Line2D([], [], color=colour, ls="--", alpha=0.7, label=dashed))
    ax.legend(handles=handles, title=title, fontsize="small")


def curve_with_extrapolation(ax, x, mean, lower, upper, extrapolated, *, colour: str, label: str,
                             lw: float = 1.5, band: bool = True, zorder: int = 3) -> bool:
    """A curve solid (with its band) over the data, dashed (no band) beyond; True if any part is beyond.

    The dashed part starts at the last point inside, so the two parts join.
    """
    x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    ext = np.asarray(extrapolated, dtype=bool)
    inside = ~ext
    beyond = ext | np.r_[ext[1:], False] | np.r_[False, ext[:-1]]
    ax.plot(x, np.where(inside, mean, np.nan), color=colour, lw=lw, label=label, zorder=zorder)
    if band:
        ax.fill_between(x, lower, upper, where=inside, color=colour, alpha=0.2, lw=0, interpolate=False)
    if ext.any():
        ax.plot(x, np.where(beyond, mean, np.nan), color=colour, lw=lw, ls="--", alpha=0.7, zorder=zorder)
    return bool(ext.any())


def _rate_label(outcome: str) -> str:
    return f"{outcome.replace('_', ' ')} rate per 10,000 children"


def _percent_axis(ax, label: str) -> None:
    ax.set_xlabel(label)
    ax.xaxis.set_major_formatter(_percent_tick)


def _percent_tick(v: float, _pos: int | None = None) -> str:
    """A deprivation share on an axis: whole percents as ``20%``, others with one decimal (``12.5%``)."""
    p = 100 * v
    return f"{p:.0f}%" if abs(p - round(p)) < 1e-6 else f"{p:.1f}%"


def plot_rate_curves(curves: pd.DataFrame, *, outcome: str = "referral") -> tuple[Figure, pd.DataFrame]:
    """Predicted rate against neighbourhood deprivation in typical LAs at three deprivation levels.

    Parameters
    ----------
    curves : pandas.DataFrame
        :func:`hierarchy.results.estimands.summarise` of :func:`~hierarchy.results.estimands.typical_rates`:
        ``la_level``, ``la_deprivation``, ``x``, ``mean``, ``lower``, ``upper``, ``prob``.
    outcome : str
        Stage name for the axis label.

    Returns
    -------
    (Figure, pandas.DataFrame)
        One line (posterior mean) and band (interval) per LA level.
    """
    fig, ax = new_figure()
    ax = ax[0, 0]
    prob = float(curves["prob"].iloc[0])
    beyond = False
    for level, part in curves.groupby("la_level", sort=False):
        colour = LEVEL_COLOURS.get(str(level), GREY)
        X = float(part["la_deprivation"].iloc[0])
        beyond |= curve_with_extrapolation(ax, part["x"], part["mean"], part["lower"], part["upper"],
                                           _flags(part), colour=colour, label=f"LA {level} ({100 * X:.1f}%)")
    ax.set_yscale("log")
    inside = curves[~_flags(curves)]
    if len(inside):  # the axis fits the curves over the data; dashed parts beyond may leave it
        ax.set_ylim(inside["lower"].min() / 1.5, inside["upper"].max() * 1.5)
    log_axis(ax, "y", RATE_TICKS)
    _percent_axis(ax, "neighbourhood income deprivation")
    ax.set_ylabel(_rate_label(outcome))
    ax.set_title(f"Typical LA: predicted rate by neighbourhood deprivation ({prob:.0%} bands)")
    _legend(ax, "dashed: beyond the neighbourhood deprivation\nseen in LAs of that level" if beyond else None,
            colour=GREY, title="LA deprivation")
    return fig, curves


def plot_gradient_curve(curve: pd.DataFrame, la_table: pd.DataFrame | None = None, *,
                        x_mean: float | None = None, published: dict[str, float] | None = None,
                        published_label: str = "published gradient scores") -> tuple[Figure, pd.DataFrame]:
    """Typical-LA gradient score against LA deprivation, with each LA's estimate and published points.

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`hierarchy.results.estimands.summarise` of :func:`hierarchy.results.estimands.gradient_curve`
        (``la_deprivation``, ``mean``, ``lower``, ``upper``, ``prob`` and ``extrapolated``: drawn dashed).
    la_table : pandas.DataFrame, optional
        Summary of the LA gradient scores (``la_deprivation``, ``mean``), drawn as dots.
    x_mean : float, optional
        Mean LA deprivation: the published points sit at it and 10 points either side.
    published : dict, optional
        Published gradient scores keyed ``10 points less`` / ``mean`` / ``10 points more``, only
        those that describe this fit (:mod:`hierarchy.published`); None or empty: no points.
    published_label : str
        Legend entry of the published points (what and when).

    Returns
    -------
    (Figure, pandas.DataFrame)
        The curve, with ``published`` rows appended (``source`` column says which).
    """
    from hierarchy.results.estimands import LA_LEVELS

    fig, ax = new_figure()
    ax = ax[0, 0]
    prob = float(curve["prob"].iloc[0])
    if la_table is not None:
        ax.scatter(la_table["la_deprivation"], la_table["mean"], s=10, color=GREY, alpha=0.7, lw=0,
                   label="each LA (posterior mean)", zorder=2)
    beyond = curve_with_extrapolation(ax, curve["la_deprivation"], curve["mean"], curve["lower"], curve["upper"],
                                      _flags(curve), colour=PREDICTED, label=f"typical LA ({prob:.0%} band)",
                                      lw=2)
    data = curve.assign(source="posterior")
    if published and x_mean is not None:
        pts = pd.DataFrame([{"la_deprivation": x_mean + LA_LEVELS[k], "mean": v, "source": "published"}
                            for k, v in published.items() if k in LA_LEVELS])
        ax.plot(pts["la_deprivation"], pts["mean"], "D", color=OBSERVED, ms=7, zorder=4, label=published_label)
        data = pd.concat([data, pts], ignore_index=True)
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    ratio_axis(ax, "y")
    _percent_axis(ax, "LA deprivation (child-weighted mean income deprivation)")
    ax.set_ylabel("gradient score (rate multiplier per 10 points, log scale)")
    ax.set_title("Neighbourhood gradient by LA deprivation")
    _legend(ax, "dashed: beyond the fitted LAs' deprivation range" if beyond else None)
    return fig, data


def plot_la_gradients(la_table: pd.DataFrame, *, typical: float | None = None
                      ) -> tuple[Figure, pd.DataFrame]:
    """Caterpillar plot of LA-specific gradient scores (per 10 points), coloured by LA deprivation.

    Parameters
    ----------
    la_table : pandas.DataFrame
        Summary of :func:`~hierarchy.results.estimands.la_gradients` (``la``, ``la_deprivation``,
        ``mean``, ``lower``, ``upper``, ``prob``, ``scale``).
    typical : float, optional
        Typical-LA gradient at mean LA deprivation, drawn as a reference line.
    """
    data = la_table.sort_values("mean").reset_index(drop=True)
    n = len(data)
    fig, ax = new_figure(size=(7.0, min(12.0, max(3.5, 0.16 * n + 1.5))))
    ax = ax[0, 0]
    pos = np.arange(n)
    ax.hlines(pos, data["lower"], data["upper"], color=GREY, lw=1.2)
    pts = ax.scatter(data["mean"], pos, c=100 * data["la_deprivation"], cmap="viridis", s=14, zorder=3)
    fig.colorbar(pts, ax=ax, label="LA deprivation (%)")
    ax.axvline(1.0, color="black", lw=0.6, ls=":")
    if typical is not None:
        ax.axvline(typical, color=REFERENCE, lw=1, ls="--", label=f"typical LA at mean ({typical:.2f})")
        ax.legend(fontsize="small", loc="lower right")
    ratio_axis(ax, "x")
    if n <= 60:
        ax.set_yticks(pos, data["la"].astype(str), fontsize=6)
    else:
        ax.set_yticks([])
    ax.set_ylabel("local authority (sorted)")
    ax.set_xlabel(f"gradient score ({data['scale'].iloc[0]}): rate multiplier, log scale")
    ax.set_title(f"LA gradient scores with {float(data['prob'].iloc[0]):.0%} intervals")
    return fig, data


def plot_contrast(contrast: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Inverse-intervention contrast: rate ratio (less / more deprived LA) against x, on a log axis.

    Parameters
    ----------
    contrast : pandas.DataFrame
        Summary of :func:`~hierarchy.results.estimands.inverse_intervention` (``x``, ``mean``,
        ``lower``, ``upper``, ``prob``; ``extrapolated`` drawn dashed).
    """
    fig, ax = new_figure()
    ax = ax[0, 0]
    prob = float(contrast["prob"].iloc[0])
    beyond = curve_with_extrapolation(ax, contrast["x"], contrast["mean"], contrast["lower"], contrast["upper"],
                                      _flags(contrast), colour=PREDICTED,
                                      label=f"posterior mean and {prob:.0%} interval")
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    inside = contrast[~_flags(contrast)]
    if len(inside):
        ax.set_ylim(min(inside["lower"].min(), 1.0) / 1.25, max(inside["upper"].max(), 1.0) * 1.25)
    ratio_axis(ax, "y")
    _percent_axis(ax, "neighbourhood income deprivation (same in both LAs)")
    ax.set_ylabel("rate ratio, LA 10 points less / more deprived")
    ax.set_title("Inverse intervention: same neighbourhood, different LA")
    _legend(ax, "dashed: beyond the neighbourhood deprivation\nseen in LAs of both levels" if beyond else None)
    return fig, contrast


def plot_deciles(deciles: pd.DataFrame, *, outcome: str = "referral") -> tuple[Figure, pd.DataFrame]:
    """Observed (disclosure-controlled) and posterior predictive rates by national decile.

    Parameters
    ----------
    deciles : pandas.DataFrame
        :func:`~hierarchy.results.estimands.decile_table` output.
    """
    cols = ["decile", "predicted_mean", "predicted_lower", "predicted_upper", "prob"]
    data = deciles[[c for c in [*cols, "observed_rate"] if c in deciles]].copy()
    fig, ax = new_figure()
    ax = ax[0, 0]
    err = [data["predicted_mean"] - data["predicted_lower"], data["predicted_upper"] - data["predicted_mean"]]
    ax.errorbar(data["decile"], data["predicted_mean"], yerr=err, fmt="o", color=PREDICTED, capsize=3,
                label=f"posterior predictive ({float(data['prob'].iloc[0]):.0%})")
    if "observed_rate" in data:
        ax.plot(data["decile"], data["observed_rate"], "D", color=OBSERVED, ms=6, zorder=5,
                label="observed (disclosure-controlled)")
    log_axis(ax, "y", RATE_TICKS)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("national decile of neighbourhood income deprivation (1 = least deprived)")
    ax.set_ylabel(_rate_label(outcome))
    ax.set_title("Observed and predicted rates by deprivation decile")
    ax.legend(fontsize="small")
    return fig, data


def plot_count_ppc(bins: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Posterior predictive check of the distribution of neighbourhood counts.

    Parameters
    ----------
    bins : pandas.DataFrame
        :func:`~hierarchy.results.estimands.count_distribution` output; observed bins below the
        threshold are NaN and drawn as absent bars.
    """
    fig, ax = new_figure()
    ax = ax[0, 0]
    pos = np.arange(len(bins))
    if "observed_neighbourhoods" in bins:
        ax.bar(pos, bins["observed_neighbourhoods"].fillna(0.0), color=OBSERVED, alpha=0.5,
               label="observed (disclosure-controlled)")
    # interval and mean drawn apart: in a skewed bin the mean can lie outside the interval
    ax.vlines(pos, bins["predicted_lower"], bins["predicted_upper"], color=PREDICTED,
              label=f"posterior predictive {float(bins['prob'].iloc[0]):.0%} interval")
    ax.plot(pos, bins["predicted_mean"], "o", color=PREDICTED, label="posterior predictive mean")
    ax.set_xticks(pos, bins["bin"], rotation=45, ha="right")
    ax.set_xlabel("count per neighbourhood row")
    ax.set_ylabel("number of neighbourhoods")
    ax.set_title("Posterior predictive check: distribution of counts")
    ax.legend(fontsize="small")
    return fig, bins


def plot_la_deciles(la_deciles: pd.DataFrame, *, outcome: str = "referral") -> tuple[Figure, pd.DataFrame]:
    """Observed rate by national decile, one line per LA (disclosure-controlled; gaps suppressed).

    Parameters
    ----------
    la_deciles : pandas.DataFrame
        :func:`~hierarchy.results.estimands.la_decile_table` output.
    """
    data = la_deciles[la_deciles["decile"] != "all"].assign(
        decile=lambda d: d["decile"].astype(int))[["la", "la_deprivation", "decile", "observed_rate"]]
    fig, ax = new_figure()
    ax = ax[0, 0]
    X = 100 * data.groupby("la")["la_deprivation"].first()
    norm, cmap = Normalize(X.min(), X.max()), colormaps["viridis"]
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="LA deprivation (%)")
    for la, part in data.groupby("la"):
        part = part.set_index("decile").reindex(range(1, 11))
        ax.plot(part.index, part["observed_rate"], "-o", ms=2, lw=0.8, color=cmap(norm(X[la])), alpha=0.7)
    log_axis(ax, "y", RATE_TICKS)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("national decile of neighbourhood income deprivation (1 = least deprived)")
    ax.set_ylabel(f"observed {_rate_label(outcome)}")
    ax.set_title("Observed rates by decile in each LA (small cells suppressed)")
    return fig, data.reset_index(drop=True)


def plot_subgroups(table: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Forest plot of gradient scores by stage (panels) and stratum (rows), truth as crosses."""
    stages = list(dict.fromkeys(table["stage"])) if "stage" in table else [None]
    fig = Figure(figsize=(3.2 * len(stages) + 1, 0.45 * (len(table) // len(stages)) + 1.6))
    axes = fig.subplots(1, len(stages), sharey=True, squeeze=False)[0]
    for ax, stage in zip(axes, stages, strict=True):
        part = table if stage is None else table[table["stage"] == stage]
        labels = list(part["stratum"]) if "stratum" in part else ["all"]
        y = np.arange(len(part))[::-1]
        ax.errorbar(part["mean"], y, xerr=[part["mean"] - part["lower"], part["upper"] - part["mean"]],
                    fmt="o", color=PREDICTED, capsize=3, label="posterior")
        if "truth" in part:
            ax.plot(part["truth"], y, "x", color=OBSERVED, label="truth")
        ax.set_yticks(y, labels)
        ax.axvline(1.0, color="0.7", lw=0.8)
        ratio_axis(ax, "x")
        ax.set_title(stage or "gradient score")
        ax.set_xlabel("gradient score (per 10 points, log scale)")
    axes[0].legend(loc="lower right", fontsize=8)
    return fig, table


def plot_year_gradients(table: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Gradient score of a typical LA by year at mean LA deprivation and 10 points less / more, with
    intervals (log scale)."""
    fig, axes = new_figure(size=(7.0, 4.0))
    ax = axes[0, 0]
    levels = list(dict.fromkeys(table["la_level"]))
    years = list(dict.fromkeys(table["year"]))
    x = np.arange(len(years), dtype=float)
    for k, level in enumerate(levels):
        part = table[table["la_level"] == level].set_index("year").loc[years]
        shift = (k - (len(levels) - 1) / 2) * 0.12
        ax.errorbar(x + shift, part["mean"], yerr=[part["mean"] - part["lower"], part["upper"] - part["mean"]],
                    fmt="o-", lw=1, ms=4, capsize=2, color=LEVEL_COLOURS.get(str(level), GREY),
                    label=f"LA {level}")
    ax.set_xticks(x, [str(y) for y in years], rotation=45 if len(years) > 6 else 0)
    ratio_axis(ax, "y")
    ax.set_xlabel("year")
    ax.set_ylabel("gradient score (per 10 points, log scale)")
    ax.legend(fontsize=8)
    return fig, table


def plot_rank(posterior: xr.Dataset) -> tuple[Figure, xr.Dataset]:
    """Rank plots (``arviz.plot_rank``) of scalar hyperparameters, one panel each.

    Parameters
    ----------
    posterior : xarray.Dataset
        Scalar variables with dims ``chain, draw`` (see :func:`hierarchy.reporting.report.hyperparameters`).
    """
    import arviz as az

    names = list(posterior.data_vars)
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = new_figure(nrows, ncols, size=(3.2 * ncols, 2.4 * nrows))
    flat = axes.ravel()
    az.plot_rank(posterior, var_names=names, ax=flat[:len(names)])
    for ax in flat[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Rank plots of hyperparameters (uniform ranks = chains agree)")
    return fig, posterior

"""Report figures: matplotlib on the Agg canvas, no pyplot state.

Each ``plot_*`` function takes a tidy table from :mod:`hierarchy.results.estimands` (or a posterior
Dataset) and returns ``(figure, data)``: the :class:`matplotlib.figure.Figure` and exactly the
data it plotted. Observed counts and rates in those tables are already disclosure-controlled
(suppressed cells are NaN and are simply not drawn); the functions never see raw counts.
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


def _rate_label(outcome: str) -> str:
    return f"{outcome.replace('_', ' ')} rate per 10,000 children"


def _percent_axis(ax, label: str) -> None:
    ax.set_xlabel(label)
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")


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
    for level, part in curves.groupby("la_level", sort=False):
        colour = LEVEL_COLOURS.get(str(level), None)
        X = float(part["la_deprivation"].iloc[0])
        ax.plot(part["x"], part["mean"], color=colour, label=f"LA {level} ({100 * X:.1f}%)")
        ax.fill_between(part["x"], part["lower"], part["upper"], color=colour, alpha=0.2, lw=0)
    ax.set_yscale("log")
    _percent_axis(ax, "neighbourhood income deprivation")
    ax.set_ylabel(_rate_label(outcome))
    ax.set_title(f"Typical LA: predicted rate by neighbourhood deprivation ({prob:.0%} bands)")
    ax.legend(title="LA deprivation", fontsize="small")
    return fig, curves


def plot_gradient_curve(curve: pd.DataFrame, la_table: pd.DataFrame | None = None, *,
                        x_mean: float | None = None, published: dict[str, float] | None = None
                        ) -> tuple[Figure, pd.DataFrame]:
    """Typical-LA gradient score against LA deprivation, with each LA's estimate and published points.

    Parameters
    ----------
    curve : pandas.DataFrame
        Summary (``la_deprivation``, ``mean``, ``lower``, ``upper``, ``prob``) of
        :func:`hierarchy.reporting.report.gradient_curve`.
    la_table : pandas.DataFrame, optional
        Summary of the LA gradient scores (``la_deprivation``, ``mean``), drawn as dots.
    x_mean : float, optional
        Mean LA deprivation: the published points sit at it and 10 points either side.
    published : dict, optional
        Published gradient scores keyed ``10 points less`` / ``mean`` / ``10 points more``.

    Returns
    -------
    (Figure, pandas.DataFrame)
        The curve, with ``published`` rows appended (``source`` column says which).
    """
    fig, ax = new_figure()
    ax = ax[0, 0]
    prob = float(curve["prob"].iloc[0])
    if la_table is not None:
        ax.scatter(la_table["la_deprivation"], la_table["mean"], s=10, color=GREY, alpha=0.7, lw=0,
                   label="each LA (posterior mean)", zorder=2)
    ax.plot(curve["la_deprivation"], curve["mean"], color=PREDICTED, lw=2, label="typical LA", zorder=3)
    ax.fill_between(curve["la_deprivation"], curve["lower"], curve["upper"], color=PREDICTED, alpha=0.2,
                    lw=0, label=f"{prob:.0%} interval")
    data = curve.assign(source="posterior")
    if published and x_mean is not None:
        from hierarchy.results.estimands import LA_LEVELS

        pts = pd.DataFrame([{"la_deprivation": x_mean + LA_LEVELS[k], "mean": v, "source": "published"}
                            for k, v in published.items() if k in LA_LEVELS])
        ax.plot(pts["la_deprivation"], pts["mean"], "D", color=OBSERVED, ms=7, zorder=4,
                label="published referral gradients (2018-19)")
        data = pd.concat([data, pts], ignore_index=True)
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    _percent_axis(ax, "LA deprivation (child-weighted mean income deprivation)")
    ax.set_ylabel("gradient score (rate multiplier per 10 points)")
    ax.set_title("Neighbourhood gradient by LA deprivation")
    ax.legend(fontsize="small")
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
    if n <= 60:
        ax.set_yticks(pos, data["la"].astype(str), fontsize=6)
    else:
        ax.set_yticks([])
    ax.set_ylabel("local authority (sorted)")
    ax.set_xlabel(f"gradient score ({data['scale'].iloc[0]}): rate multiplier")
    ax.set_title(f"LA gradient scores with {float(data['prob'].iloc[0]):.0%} intervals")
    return fig, data


def plot_contrast(contrast: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Inverse-intervention contrast: rate ratio (less / more deprived LA) against x.

    Parameters
    ----------
    contrast : pandas.DataFrame
        Summary of :func:`~hierarchy.results.estimands.inverse_intervention` (``x``, ``mean``,
        ``lower``, ``upper``, ``prob``).
    """
    fig, ax = new_figure()
    ax = ax[0, 0]
    ax.plot(contrast["x"], contrast["mean"], color=PREDICTED, label="posterior mean")
    ax.fill_between(contrast["x"], contrast["lower"], contrast["upper"], color=PREDICTED, alpha=0.2,
                    lw=0, label=f"{float(contrast['prob'].iloc[0]):.0%} interval")
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    _percent_axis(ax, "neighbourhood income deprivation (same in both LAs)")
    ax.set_ylabel("rate ratio: LA 10 points less / 10 points more deprived")
    ax.set_title("Inverse intervention: same neighbourhood, different LA")
    ax.legend(fontsize="small")
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
    ax.set_yscale("log")
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
    ax.set_yscale("log")
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
        ax.set_title(stage or "gradient score")
        ax.set_xlabel("gradient score (per 10 points)")
    axes[0].legend(loc="lower right", fontsize=8)
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

"""Output checking as UK secure environments do it: an ACRO results folder for the output checkers.

Secure research environments check every output with ACRO (SACRO project, Python ``acro``) and review
it in the SACRO-Viewer. :func:`write_checking_folder` writes such a folder (``results.json``,
``config.json``, the output files and ``checksums/``) in ACRO 1.0.2's format, without importing
``acro`` (it pins pandas <= 2.3.3; this project runs pandas 3):

* **observed tables** (LA x national decile with margins, rates by decile, the count distribution)
  are checked cell by cell with ACRO's checks for a frequency table (``RequiredZeroCheck``,
  ``PresenceOfZeroCheck``, ``PresenceOfLinkedTableCheck``, ``MinimumThresholdCheck``) and its
  dominance checks (``NKCheck``, ``PPercentCheck``) over the neighbourhoods that make up each cell,
  with the values of the environment's ACRO configuration (:func:`acro_config`), never constants
  here. Failing cells are suppressed (ACRO's ``suppress`` mitigation), the others rounded to
  ``safe_round_base``, and secondary suppression (:func:`hierarchy.disclosure.secondary_suppression`)
  then protects the suppressed cells from differencing against the published margins
  (reason ``SecondarySuppression``);
* **model outputs** (estimand tables and figures: posterior quantities) are registered as ACRO
  custom outputs with a generated comment a checker can judge (model, neighbourhoods and LAs behind
  each quantity, residual degrees of freedom against ``safe_dof_threshold``, no observed count shown);
  an output holding a per-neighbourhood value is refused (:func:`register_model_output`).

The folder is written from the report's outputs computed once (:func:`write_outputs`,
:func:`hierarchy.reporting.report.build_outputs`): every output of the registry
(:mod:`hierarchy.reporting.registry`) the report publishes is here as the very file the report writes,
the page included, and the observed tables carry the one suppression both show
(:mod:`hierarchy.reporting.suppression`). The folder itself (its files, ``results.json``, checksums,
written atomically, and what a checker sees in it) is :mod:`hierarchy.reporting.acro_folder`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import disclosure
from hierarchy.errors import HierarchyError
from hierarchy.reporting.acro_folder import ACRO_VERSION as ACRO_VERSION
from hierarchy.reporting.acro_folder import TOOL as TOOL
from hierarchy.reporting.acro_folder import check_folder, write_records
from hierarchy.reporting.acro_folder import describe_folder as describe_folder

FREQUENCY_CHECKS = ("RequiredZeroCheck", "PresenceOfZeroCheck", "PresenceOfLinkedTableCheck",
                    "MinimumThresholdCheck")
"""ACRO's checks of a frequency table (statbarn ``Frequencies``), in ACRO's order."""
DOMINANCE_CHECKS = ("NKCheck", "PPercentCheck")
"""ACRO's dominance checks (risk ``Dominance``), run over the neighbourhoods in each cell."""
SECONDARY = "SecondarySuppression"
"""Reason of a cell suppressed only to protect another from differencing against the margins."""
EMPTY = "empty: no neighbourhoods in this cell"
SHIPPED_CONFIG = Path(__file__).with_name("acro_default.yaml")
CONFIG_KEYS = {"safe_threshold": "int", "safe_dof_threshold": "int", "safe_nk_n": "int",
               "safe_nk_k": "share", "safe_pratio_p": "float", "zeros_are_disclosive": "bool",
               "safe_round_base": "int"}
"""ACRO configuration keys the checks read, and their kind."""
MODEL_OUTPUT = "Model output: posterior quantities, not observed counts."
NO_COUNTS = "No observed count is shown, and no quantity of a single neighbourhood."
PUBLIC_OUTPUT = ("Public data only (published statistics on public boundaries): no quantity of this study's "
                 "data.")
"""The closing sentence of a model output's comment (observed values in figures are the published ones)."""
PER_NEIGHBOURHOOD_COLUMNS = ("neighbourhood", "lsoa", "lsoa_code", "row", "row_id")


# ---------------------------------------------------------------------------- configuration


def environment_config_path() -> tuple[Path, str]:
    """The ACRO configuration of this environment and where it came from.

    The ``default.yaml`` of an installed ``acro`` package (the file an environment's system managers
    edit) when one is found (located without importing it), otherwise the copy of ACRO's defaults
    shipped with hierarchy.
    """
    spec = importlib.util.find_spec("acro")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "default.yaml"
            if path.is_file():
                return path, "the installed acro package's default.yaml"
    return SHIPPED_CONFIG, "ACRO's default rules shipped with hierarchy (no acro installed)"


def acro_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and check an ACRO configuration YAML.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The environment's ACRO YAML; default :func:`environment_config_path`.

    Returns
    -------
    dict
        The YAML's values, plus ``config_source`` (the file read).

    Raises
    ------
    HierarchyError
        A missing or unreadable file, or a key the checks need that is missing or out of range
        (naming the file, the key and the fix).
    """
    import yaml

    source = "given with --acro-config" if path is not None else None
    if path is None:
        path, source = environment_config_path()
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise HierarchyError(f"{path}: cannot read the ACRO configuration ({err.strerror}); give the "
                             "environment's ACRO YAML (acro's default.yaml) with --acro-config") from None
    except yaml.YAMLError as err:
        raise HierarchyError(f"{path}: not valid YAML ({err}); fix the file or give another") from None
    if not isinstance(config, dict):
        raise HierarchyError(f"{path}: an ACRO configuration is a mapping of keys (safe_threshold: 10, "
                             "...); this file holds none")
    for key, kind in CONFIG_KEYS.items():
        if key not in config:
            raise HierarchyError(f"{path}: ACRO configuration key {key!r} is missing; add it (ACRO's "
                                 f"default: {_shipped_value(key)})")
        v = config[key]
        ok = {"bool": isinstance(v, bool),
              "int": isinstance(v, int) and not isinstance(v, bool) and v >= (1 if key != "safe_threshold"
                                                                              and key != "safe_dof_threshold"
                                                                              else 0),
              "share": isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1,
              "float": isinstance(v, int | float) and not isinstance(v, bool) and v >= 0}[kind]
        if not ok:
            want = {"bool": "true or false", "int": "a whole number" + (" >= 1" if key not in
                                                                        ("safe_threshold",
                                                                         "safe_dof_threshold") else " >= 0"),
                    "share": "a share in (0, 1]", "float": "a number >= 0"}[kind]
            raise HierarchyError(f"{path}: ACRO configuration key {key!r} must be {want}, got {v!r}")
    if config.get("federated"):
        raise HierarchyError(f"{path}: federated: true asks ACRO for evidence for a trusted aggregator, "
                             "which hierarchy does not write; set federated: false")
    return {**config, "config_source": f"{path} ({source})"}


def _shipped_value(key: str) -> Any:
    import yaml

    return yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8")).get(key)


# ---------------------------------------------------------------------------- cell checks


def _top_sum(values: Sequence[float], n: int) -> float:
    return float(np.sort(np.asarray(values, dtype=float))[::-1][:n].sum())


def table_checks(counts: pd.DataFrame, config: dict[str, Any], *,
                 contributions: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """ACRO's cell checks of a frequency table, with the configuration's values.

    Parameters
    ----------
    counts : pandas.DataFrame
        Cell frequencies (units behind each cell); NaN marks a structurally empty cell (no
        neighbourhoods), which no check flags.
    config : dict
        An ACRO configuration (:func:`acro_config`).
    contributions : pandas.DataFrame, optional
        Same shape; each cell a sequence of the non-negative contributions (one per neighbourhood)
        that sum to its count. Runs :data:`DOMINANCE_CHECKS` as ACRO does on a sum: ``NKCheck`` fails
        when the largest ``safe_nk_n`` make up ``safe_nk_k`` or more of the cell;
        ``PPercentCheck`` fails when (total - two largest) / largest < ``safe_pratio_p`` (and, as
        in ACRO, when the largest is 0).

    Returns
    -------
    dict of str to pandas.DataFrame
        Boolean mask per check (True: the cell fails), in ACRO's order.
    """
    c = counts.astype(float)
    cell = c.notna()
    none = pd.DataFrame(False, index=c.index, columns=c.columns)
    masks = {"RequiredZeroCheck": none.copy(),
             "PresenceOfZeroCheck": (c == 0) & cell if config["zeros_are_disclosive"] else none.copy(),
             "PresenceOfLinkedTableCheck": none.copy(),
             "MinimumThresholdCheck": (c < config["safe_threshold"]) & cell}
    if contributions is not None:
        n, k, p = int(config["safe_nk_n"]), float(config["safe_nk_k"]), float(config["safe_pratio_p"])
        nk, pr = none.copy(), none.copy()
        for i in range(c.shape[0]):
            for j in range(c.shape[1]):
                if not cell.iat[i, j]:
                    continue
                vals = np.asarray(contributions.iat[i, j], dtype=float)
                total = float(vals.sum())
                nk.iat[i, j] = total > 0 and _top_sum(vals, n) / total >= k
                top1 = _top_sum(vals, 1)
                rest = total - _top_sum(vals, 2)
                pr.iat[i, j] = (rest if top1 == 0 else rest / top1) < p
        masks["NKCheck"], masks["PPercentCheck"] = nk, pr
    return masks


def outcome_frame(masks: dict[str, pd.DataFrame], counts: pd.DataFrame) -> pd.DataFrame:
    """ACRO's per-cell outcome: the failing checks' names (``"MinimumThresholdCheck; "``) or ``"ok"``.

    Structurally empty cells (NaN counts) read :data:`EMPTY`.
    """
    out = pd.DataFrame("", index=counts.index, columns=counts.columns, dtype=object)
    for name, mask in masks.items():
        out = out + np.where(mask.to_numpy(dtype=bool), name + "; ", "")
    out = out.where(out != "", "ok")
    return out.where(counts.notna(), EMPTY)


def sdc_dict(masks: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """ACRO's ``sdc`` of a table file: cells failing each check (count and [row, column] positions)."""
    out: dict[str, Any] = {"summary": {}, "cells": {}}
    for name, mask in masks.items():
        m = mask.to_numpy(dtype=bool)
        out["summary"][name] = int(m.sum())
        out["cells"][name] = [[int(r), int(c)] for r, c in zip(*np.nonzero(m), strict=True)]
    return out


# ---------------------------------------------------------------------------- observed tables


def _cell_contributions(frame: pd.DataFrame, index: Sequence[str], columns: Sequence[str], *,
                        row_key: str, col_key: str, total: str = "All") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and per-neighbourhood contributions of a rows x columns table with margins.

    ``frame`` has one row per neighbourhood (``row_key``, ``col_key``, ``count``); a cell with no
    neighbourhood is NaN (structurally empty).
    """
    idx, cols = [*index, total], [*columns, total]
    counts = pd.DataFrame(np.nan, index=idx, columns=cols)
    cells = np.empty((len(idx), len(cols)), dtype=object)
    groups = {(str(r), str(c)): g["count"].to_numpy(float)
              for (r, c), g in frame.groupby([row_key, col_key], sort=False)}
    for i, r in enumerate(idx):
        for j, c in enumerate(cols):
            if r == total and c == total:
                vals = frame["count"].to_numpy(float)
            elif r == total:
                vals = frame.loc[frame[col_key].astype(str) == c, "count"].to_numpy(float)
            elif c == total:
                vals = frame.loc[frame[row_key].astype(str) == r, "count"].to_numpy(float)
            else:
                vals = groups.get((r, c), np.array([]))
            if len(vals):
                counts.iat[i, j] = vals.sum()
                cells[i, j] = vals
    return counts, pd.DataFrame(cells, index=idx, columns=cols)


def _margin_lines(counts: pd.DataFrame) -> tuple[list[tuple[int, list[int]]], list[int], np.ndarray]:
    """Additive relations of a table with an ``All`` row and column, over its non-empty cells."""
    shape = counts.shape
    exists = counts.notna().to_numpy()
    pos = -np.ones(shape, dtype=int)
    pos[exists] = np.arange(exists.sum())
    lines = []
    for i in range(shape[0]):  # each row's total is the sum of its cells
        members = [int(pos[i, j]) for j in range(shape[1] - 1) if exists[i, j]]
        if exists[i, -1] and members:
            lines.append((int(pos[i, -1]), members))
    for j in range(shape[1]):  # each column's total is the sum of its cells
        members = [int(pos[i, j]) for i in range(shape[0] - 1) if exists[i, j]]
        if exists[-1, j] and members:
            lines.append((int(pos[-1, j]), members))
    totals = sorted({t for t, _ in lines})
    return lines, totals, pos


def check_observed_table(counts: pd.DataFrame, config: dict[str, Any], *,
                         contributions: pd.DataFrame | None = None, margins: bool = True,
                         public_total: float | None = None) -> dict[str, Any]:
    """Check a table of observed counts with ACRO's rules, suppress, round and protect its margins.

    Parameters
    ----------
    counts : pandas.DataFrame
        Raw cell counts; with ``margins`` the last row and column are the totals (``All``).
        NaN: a structurally empty cell.
    config : dict
        ACRO configuration (:func:`acro_config`).
    contributions : pandas.DataFrame, optional
        Per-neighbourhood contributions of each cell, for the dominance checks.
    margins : bool
        Whether the last row and column are totals (secondary suppression over both).
    public_total : float, optional
        Without margins: the table's total, which is public (e.g. the number of rows fitted); the
        cells are protected against differencing from it.

    Returns
    -------
    dict
        ``published`` (rounded counts, NaN where suppressed), ``masks`` (per check, with
        :data:`SECONDARY`), ``outcome`` and ``sdc`` (ACRO's), ``suppressed`` (boolean frame).
    """
    masks = table_checks(counts, config, contributions=contributions)
    primary = np.logical_or.reduce([m.to_numpy(bool) for m in masks.values()])
    base = int(config["safe_round_base"])
    rounded = pd.DataFrame(disclosure.round_counts(counts.to_numpy(float), base), index=counts.index,
                           columns=counts.columns)
    exists = counts.notna().to_numpy()
    if margins:
        lines, totals, pos = _margin_lines(counts)
        values = rounded.to_numpy(float)[exists].copy()
        values[primary[exists]] = np.nan
        flat = disclosure.secondary_suppression(values, lines, rounding=base, totals=totals)
        final = np.zeros(counts.shape, dtype=bool)
        final[exists] = flat
    else:
        values = rounded.to_numpy(float)[:, 0].copy()
        values[primary[:, 0]] = np.nan
        if public_total is not None and exists[:, 0].all():
            k = len(values)
            flat = disclosure.secondary_suppression(np.append(values, float(public_total)),
                                                    [(k, list(range(k)))], rounding=base, totals=[k],
                                                    public=[k])[:k]
        else:
            flat = ~np.isfinite(values)
        final = flat[:, None]
    final &= exists
    secondary = final & ~primary
    masks[SECONDARY] = pd.DataFrame(secondary, index=counts.index, columns=counts.columns)
    published = rounded.mask(pd.DataFrame(final | ~exists, index=counts.index, columns=counts.columns))
    return {"published": published, "masks": masks, "outcome": outcome_frame(masks, counts),
            "sdc": sdc_dict(masks), "suppressed": pd.DataFrame(final, index=counts.index,
                                                                columns=counts.columns)}


def _summary(masks: dict[str, pd.DataFrame], analysis: str) -> str:
    lines = [f"{analysis} : "]
    for name, mask in masks.items():
        n = int(mask.to_numpy(bool).sum())
        if name == "PresenceOfLinkedTableCheck":
            lines.append(f" {name}: secondary suppression applied against the published margins "
                         "(see SecondarySuppression); a manual review against other outputs is "
                         "recommended.")
        elif n:
            what = "suppressed to protect other cells" if name == SECONDARY else "suppressed"
            lines.append(f" {name}: fail - {n} cells {what}.")
    return "\n".join(lines) + "\n"


def _fair(masks: dict[str, pd.DataFrame], dependent: str, independent: list[str]) -> dict[str, Any]:
    checks = [c for c in masks if c != SECONDARY]
    risks = ["ClassDisclosure", "Differencing", "LowCount"] + (["Dominance"] if "NKCheck" in masks else [])
    return {"context": "https://w3id.org/statbarnsdc#", "statbarn": "Frequencies", "risks": risks,
            "checks_needed": checks, "common_mitigations": ["Suppression"],
            "check_status": {c: "fail" if masks[c].to_numpy(bool).any() else "pass" for c in checks},
            "dependent": dependent, "independent": independent}


def _table_record(uid: str, frames: list[pd.DataFrame], checked: dict[str, Any], config: dict[str, Any],
                  *, command: str, dependent: str, independent: list[str], comment: str) -> dict[str, Any]:
    base = int(config["safe_round_base"])
    return {"uid": uid, "status": "review", "type": "table",
            "properties": {"method": "crosstab", "mitigation": "suppress", "round_base": base},
            "frames": frames, "sdc": checked["sdc"], "outcome": checked["outcome"], "command": command,
            "summary": _summary(checked["masks"], "FrequencyTable"), "comments": [comment],
            "exception": (f"Suppression automatically applied where needed (ACRO's checks with "
                          f"safe_threshold {config['safe_threshold']}, zeros_are_disclosive "
                          f"{config['zeros_are_disclosive']}, n-k {config['safe_nk_n']}/"
                          f"{config['safe_nk_k']}, p-ratio {config['safe_pratio_p']}), then secondary "
                          f"suppression against the published margins; other counts rounded to the "
                          f"nearest {base}, and rates computed from the rounded counts"),
            "fair": _fair(checked["masks"], dependent, independent)}


def observed_records(idata, observed: np.ndarray, config: dict[str, Any]) -> list[dict[str, Any]]:
    """ACRO table records of the observed tables of a fit: LA x decile, deciles, count distribution.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit (a stage view of a stacked fit).
    observed : numpy.ndarray
        Raw observed counts of the fitted rows (:func:`hierarchy.results.estimands.observed_counts`).
    config : dict
        ACRO configuration.

    Returns
    -------
    list of dict
        Records (``frames``: the published tables written as ``{uid}_{i}.csv``).
    """
    from hierarchy.results import estimands
    from hierarchy.results.fit import as_fit

    spec = as_fit(idata).spec
    cd = idata.constant_data
    rows = pd.DataFrame({"code": estimands._codes(idata), "la": cd["la_of"].to_numpy().astype(str),
                         "decile": estimands.neighbourhood_deciles(idata).astype(str),
                         "children": np.rint(cd["exposure"].to_numpy()),
                         "count": np.asarray(observed, dtype=float)})
    hoods = rows.groupby("code", sort=False).agg(la=("la", "first"), decile=("decile", "first"),
                                                 children=("children", "sum"), count=("count", "sum"))
    las = sorted(hoods["la"].unique())
    deciles = [str(d) for d in range(1, 11)]
    counts, contrib = _cell_contributions(hoods, las, deciles, row_key="la", col_key="decile")
    checked = check_observed_table(counts, config, contributions=contrib)
    children = _cell_contributions(hoods.assign(count=hoods["children"]), las, deciles, row_key="la",
                                   col_key="decile")[0]
    rates = (1e4 * checked["published"] / children).round(2)
    counts.index.name = rates.index.name = "la"
    n_hoods, n_la = len(hoods), len(las)
    outcome = str(spec.outcome)
    nb = (f"Units: {outcome} counts (children) per cell, from {n_hoods} neighbourhoods in {n_la} LAs; "
          "deciles are national deciles of neighbourhood income deprivation (public). Dominance "
          "(NKCheck, PPercentCheck) is checked over the neighbourhoods that make up each cell, so no "
          "cell stands for one or two neighbourhoods. Children (denominators) are public population "
          "estimates.")
    pub = checked["published"].rename_axis("la")
    la_rec = _table_record(
        "la_deciles", [pub, rates.rename_axis("la")], checked, config,
        command=f"hierarchy report --for-checking: observed {outcome} by LA x national decile with "
                "margins (file 0: counts; file 1: rates per 10,000 children from the published counts)",
        dependent=outcome, independent=["la", "decile"], comment=nb)
    # the national deciles are the All row of the LA x decile table: same cells, same suppression
    dec_checked = {
        "masks": {k: m.loc[["All"], deciles].T.rename(columns={"All": outcome}) for k, m in
                  checked["masks"].items()},
        "outcome": checked["outcome"].loc[["All"], deciles].T.rename(columns={"All": outcome})}
    dec_checked["sdc"] = sdc_dict(dec_checked["masks"])
    dec_counts = checked["published"].loc[["All"], deciles].T.rename(columns={"All": outcome})
    dec_rates = (1e4 * dec_counts / children.loc[["All"], deciles].T.rename(columns={"All": outcome}))
    dec_table = pd.DataFrame({"observed_count": dec_counts[outcome], "observed_rate": dec_rates[outcome].round(2)})
    dec_table.index.name = "decile"
    dec_checked["outcome"] = pd.DataFrame({"observed_count": dec_checked["outcome"][outcome],
                                           "observed_rate": dec_checked["outcome"][outcome]})
    dec_checked["masks"] = {k: pd.DataFrame({"observed_count": m[outcome], "observed_rate": m[outcome]})
                            for k, m in dec_checked["masks"].items()}
    dec_checked["sdc"] = sdc_dict(dec_checked["masks"])
    dec_rec = _table_record(
        "deciles", [dec_table], dec_checked, config,
        command=f"hierarchy report --for-checking: observed {outcome} and rate per 10,000 children by "
                "national decile (the All row of la_deciles, suppressed alike)",
        dependent=outcome, independent=["decile"], comment=nb)
    # count distribution: neighbourhood rows per count bin; the number of rows is public
    edges = np.asarray(estimands.COUNT_EDGES, dtype=float)
    obs = np.asarray(observed, dtype=float)
    labels = [estimands._bin_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    bins = pd.DataFrame({"rows": [float(((obs >= lo) & (obs < hi)).sum())
                                  for lo, hi in zip(edges[:-1], edges[1:], strict=True)]}, index=labels)
    bins.index.name = "count_bin"
    ones = np.empty((len(labels), 1), dtype=object)
    for i, v in enumerate(bins["rows"]):
        ones[i, 0] = np.ones(int(v))
    ones = pd.DataFrame(ones, index=labels, columns=["rows"])
    dist_checked = check_observed_table(bins, config, contributions=ones, margins=False,
                                        public_total=float(len(obs)))
    dist_rec = _table_record(
        "count_distribution", [dist_checked["published"]], dist_checked, config,
        command=f"hierarchy report --for-checking: number of fitted rows per {outcome} count bin "
                f"(the {len(obs)} rows in all are public)",
        dependent="rows", independent=["count_bin"],
        comment=f"Units: fitted rows (neighbourhoods, or neighbourhood x stratum) per bin of their "
                f"{outcome} count; each row counts once.")
    return [la_rec, dec_rec, dist_rec]


def published_for_report(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The published observed tables of :func:`observed_records`, keyed by uid (first file)."""
    return {r["uid"]: r["frames"][0] for r in records if r["type"] == "table"}


# ---------------------------------------------------------------------------- model outputs


def per_neighbourhood_reason(frame: pd.DataFrame, codes: Sequence[str]) -> str:
    """Why a table holds per-neighbourhood values ('' when it does not).

    A column or index named like a neighbourhood identifier, or any label equal to a fitted
    neighbourhood's code (or row id), makes it per-neighbourhood.
    """
    names = [str(c).lower() for c in frame.columns] + [str(n).lower() for n in frame.index.names if n]
    hit = [n for n in names if n in PER_NEIGHBOURHOOD_COLUMNS]
    if hit:
        return f"it has a per-neighbourhood column {hit[0]!r}"
    known = {str(c) for c in codes} | {str(c).split("|", 1)[0] for c in codes}
    labels = set(map(str, frame.index))
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            labels |= set(map(str, frame[col].dropna()))
    found = sorted(labels & known)
    if found:
        return f"it names {len(found)} neighbourhood(s) (e.g. {found[0]!r})"
    return ""


def register_model_output(records: list[dict[str, Any]], uid: str, files: dict[str, Any], comment: str,
                          *, codes: Sequence[str], data: pd.DataFrame | None = None,
                          status: str = "review") -> None:
    """Append an ACRO custom output (a model table or figure) to ``records``, or refuse it.

    Parameters
    ----------
    records : list of dict
        Records so far (appended to).
    uid : str
        Output name.
    files : dict
        ``{file name: pandas.DataFrame (written as CSV) or bytes (written as is)}``.
    comment : str
        The justification a checker reads.
    codes : sequence of str
        The fitted neighbourhood codes (row ids).
    data : pandas.DataFrame, optional
        The data behind a figure, checked like a table.
    status : str
        ACRO status (``"review"``; ``"fail"`` when a check such as the degrees of freedom fails).

    Raises
    ------
    HierarchyError
        When a table, or a figure's data, holds per-neighbourhood values.
    """
    frames = [f for f in files.values() if isinstance(f, pd.DataFrame)] + ([data] if data is not None else [])
    for frame in frames:
        reason = per_neighbourhood_reason(frame, codes)
        if reason:
            raise HierarchyError(f"output {uid!r} is not registered for checking: {reason}. Outputs may "
                                 "not show per-neighbourhood quantities; aggregate them (by LA, decile "
                                 "or stratum) first")
    if any(str(u["uid"]) == uid for u in records):
        raise HierarchyError(f"output {uid!r} is registered twice")
    records.append({"uid": uid, "status": status, "type": "custom", "properties": {}, "files_out": files,
                    "sdc": {}, "outcome": pd.DataFrame(), "command": "custom", "summary": status,
                    "comments": [comment], "exception": "", "fair": {}})


def residual_dof(idata) -> tuple[int, int, int]:
    """Observations, parameters and residual degrees of freedom of a fit.

    Parameters are counted as every element of every posterior variable per draw (derived ones
    included, so the count errs high and the degrees of freedom low).
    """
    post = idata.posterior
    n_par = int(sum(np.prod([s for d, s in post[v].sizes.items() if d not in ("chain", "draw")])
                    for v in post.data_vars))
    n_obs = int(idata.constant_data.sizes["neighbourhood"])
    return n_obs, n_par, n_obs - n_par


def _basis(idata, config: dict[str, Any]) -> tuple[str, str]:
    """The common part of every model output's comment, and the ACRO status its DoF gives."""
    from hierarchy.results import estimands
    from hierarchy.results.fit import as_fit
    from hierarchy.results.fitfile import provenance

    held = as_fit(idata)
    spec, priors = held.spec, held.priors
    prov = provenance(idata)
    n_obs, n_par, dof = residual_dof(idata)
    hoods = len(set(estimands._codes(idata)))
    n_la = int(idata.posterior.sizes.get("la", len(set(idata.constant_data["la_of"].to_numpy()))))
    threshold = int(config["safe_dof_threshold"])
    verdict = "pass" if dof >= threshold else "fail"
    text = (f"Model {spec.name} "
            f"({spec.family}): {spec.formula_text}; priors {priors.name}; fit {prov.get('config_hash', '')}. "
            f"Fitted to {n_obs} rows from {hoods} neighbourhoods in {n_la} LAs. Residual degrees of "
            f"freedom {dof} = {n_obs} observations - {n_par} parameters (every posterior element counted; "
            f"MinimumDoFCheck with safe_dof_threshold {threshold}: {verdict}).")
    return text, verdict


def _sizes(idata) -> dict[str, Any]:
    """Neighbourhoods and LAs behind a fit, for :func:`hierarchy.reporting.registry.rests_on_text`."""
    from hierarchy.results import estimands

    la_of = idata.constant_data["la_of"].to_numpy().astype(str)
    hoods = pd.Series(estimands._codes(idata)).groupby(la_of).nunique()
    return {"n_hoods": int(hoods.sum()), "n_la": len(hoods), "fewest": int(hoods.min()),
            "median": int(hoods.median())}


def model_records(outputs: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    """ACRO custom records of a report's registered outputs, each with its generated comment.

    Every registered table and figure of ``outputs`` (:func:`hierarchy.reporting.report.build_outputs`)
    is registered with the exact file the report writes; a table resting only on observed counts is
    instead added to its checked table record (:func:`observed_records`). The page itself (findings,
    diagnostics, provenance, priors) is registered last as ``report_page``.

    Parameters
    ----------
    outputs : hierarchy.reporting.report.ReportOutputs
    config : dict
        ACRO configuration.
    """
    from hierarchy.reporting import page as pagemod
    from hierarchy.reporting import registry
    from hierarchy.results import estimands

    idata = outputs.idata
    fit_text, verdict = _basis(idata, config)
    codes = list(estimands._codes(idata)) + list(idata.constant_data["neighbourhood"].to_numpy().astype(str))
    sizes = _sizes(idata)
    status = "review" if verdict == "pass" else "fail"
    records: list[dict[str, Any]] = []
    checked = {r["uid"] for r in outputs.records}
    for out in outputs.entries:
        note = registry.rests_on_text(out, sizes)
        model_only = out.basis in (registry.MODEL, registry.DRAWS) or out.observed not in checked
        basis = (f"{PUBLIC_OUTPUT} {NO_COUNTS}" if out.basis == registry.PUBLIC
                 else f"{MODEL_OUTPUT} {fit_text} {NO_COUNTS}" if model_only
                 else f"{fit_text} The observed values shown are those published.")
        if out.kind == "table":
            if out.name in checked:
                continue  # its file is in the checked table record of its observed counts
            register_model_output(records, out.uid, {out.file: outputs.csv[out.name]}, f"{basis} {note}",
                                  codes=codes, data=outputs.tables[out.name], status=status)
        else:
            caption, png, plotted = outputs.figures[out.name]
            register_model_output(records, out.uid, {f"{out.uid}.png": png}, f"{caption} {basis} {note}",
                                  codes=codes, data=plotted if isinstance(plotted, pd.DataFrame) else None,
                                  status=status)
    shown = ", ".join(o.file for o in outputs.entries)
    register_model_output(
        records, "report_page",
        {"report.md": pagemod.render_markdown(outputs.page).encode("utf-8"),
         "index.html": pagemod.render_html(outputs.page).encode("utf-8")},
        f"The report page as published: the registered outputs above ({shown}), findings sentences computed "
        "from the model tables, and the fit's diagnostics, provenance and prior settings (no data). "
        f"{fit_text}", codes=codes, status=status)
    return records


def _table_files(records: list[dict[str, Any]], outputs: Any) -> list[dict[str, Any]]:
    """The observed table records with the report's own file of each table added (as published)."""
    out = []
    for rec in records:
        name = rec["uid"]
        files = {f"{name}.csv": outputs.csv[name]} if name in outputs.csv else {}
        out.append({**rec, "files_out": {**rec.get("files_out", {}), **files}})
    return out


# ---------------------------------------------------------------------------- the folder


def write_outputs(outputs: Any, out_dir: str | os.PathLike) -> Path:
    """Write the ACRO results folder of a report's outputs, computed once
    (:func:`hierarchy.reporting.report.build_outputs`): the same files and suppression as the report.

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    from hierarchy.reporting import registry

    registry.registered([o.name for o in outputs.entries if o.kind == "table"],
                        [o.name for o in outputs.entries if o.kind == "figure"])
    config = outputs.rules
    records = _table_files(list(outputs.records), outputs) + model_records(outputs, config)
    return write_records(records, out_dir, config)


def write_checking_folder(fit: Any, out_dir: str | os.PathLike, *, data: Any = None,
                          config: str | os.PathLike | None = None, prob: float = 0.9,
                          n_draws: int = 200, threshold: int = 10, rounding: int = 5) -> Path:
    """Write an ACRO results folder of a fit's report for the output checkers (SACRO-Viewer).

    The outputs are those :func:`hierarchy.reporting.report.write_report` writes with the same
    arguments (:func:`hierarchy.reporting.report.build_outputs`): one suppression, one registry.

    Parameters
    ----------
    fit : str, os.PathLike or arviz.InferenceData
        A fit file (seal checked) or a loaded fit.
    out_dir : str or os.PathLike
        New folder (refused when it exists and is not empty).
    data : str, os.PathLike or pandas.DataFrame, optional
        The fitted table (its hash must match the fit's), for the observed tables; without it
        (and without observed data in the fit) only model outputs are registered.
    config : str or os.PathLike, optional
        The environment's ACRO YAML; default :func:`environment_config_path`.
    prob : float
        Interval probability of the model tables.
    n_draws : int
        Posterior draws for the posterior predictive tables.
    threshold, rounding : int
        The report's disclosure rules, where stricter than the configuration's.

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    from hierarchy.reporting import report

    check_folder(out_dir)
    outputs = report.build_outputs(fit, data=data, prob=prob, n_draws=n_draws, threshold=threshold,
                                   rounding=rounding, acro_config=config)
    return write_outputs(outputs, out_dir)

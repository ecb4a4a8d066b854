"""An export that leaves the children behind: LA-level sufficient sums of a Poisson model.

For a Poisson model whose neighbourhood terms are public (deprivation, populations, geography),
the log-likelihood is ``sum_i y_i eta_i - sum_i mu_i - sum_i log y_i!``. The middle term needs
only public data; the last does not depend on the parameters; and with the workbench's linear
predictor ``eta_i = log E_i + a_{la,stage} + o_stratum + (b_{la,stage} + g_stratum) w_i`` the first
is ``sum_c [n_c (a + o) + t_c (b + g)]`` over cells c = LA x stage x stratum, with
``n_c = sum y_i`` and ``t_c = sum y_i w_i`` over the cell's rows (``w`` is public). So the
posterior given the sums and the public table is *exactly* the posterior given the counts.

This holds for ``family = "poisson"`` with no MSOA random intercept, no neighbourhood-level terms
(``rural``, ``w:rural``) and no other group terms (``(1 | ethnicity)``). It does **not** hold for the
negative binomial (its likelihood needs ``lgamma(y_i + phi)`` row by row), for the
Poisson-lognormal or for any neighbourhood-level random effect (each needs its own row's count).
The exposure must be public (the children column ``exposure``): a model whose offset is a count
(``offset(log(s47))``) would need that count in the public table, and is refused.

:func:`sufficient_sums` computes the sums and refuses a cell behind fewer children than the
disclosure threshold (zeros included); :func:`write_sums` writes them atomically and keeps the
output folder's export log (:data:`EXPORT_LOG`); :func:`fit_sufficient` fits the same NumPyro model
outside from the sums and the public table, after :func:`read_sums` and :func:`public_design`
have checked that the sums could come from a table of these children.

What may not leave together
---------------------------
Each sums file passes the threshold on its own, but two sums files made from overlapping tables
(all neighbourhoods, and all but one; or a table before and after a correction) differ by the
counts of the rows that differ. Two exports whose sums for any LA x stage (x stratum) cell differ
by fewer than the threshold's children, or whose rows differ while the sums do not, may not
both leave. :func:`write_sums` compares each new export with every export recorded in the log of
its output folder and refuses such a pair (or, with ``allow_overlap=True``, warns and records the
override). Exports written to different folders, or combinations of three or more exports, are not
checked: keep all exports of a project in one folder and clear them with the output checkers
together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from hierarchy.compiled import release_compiled_programs
from hierarchy.disclosure import THRESHOLD, public_column
from hierarchy.errors import HierarchyError
from hierarchy.inference.sampling import Draws
from hierarchy.language.design import Design, build_design
from hierarchy.language.priors import PriorSet
from hierarchy.language.spec import ModelSpec
from hierarchy.paths import atomic_path

SUM_COLUMNS = ("la", "stage", "stratum", "n", "sum_yw")
EXPORT_LOG = "hierarchy_exports.json"
"""The running log of exports, kept in each output folder by :func:`write_sums`."""
MAX_EVENTS_PER_EXPOSURE = 1000.0
"""Plausibility bound of a sums fit for outcomes that are not stage counts of children (events per
unit of exposure, e.g. closures per child-year at risk): a cell above it cannot come from a table."""


def check_exact(spec: ModelSpec) -> None:
    """Raise unless the sums are sufficient for ``spec`` and every column it reads is public.

    Sufficient: Poisson, no MSOA random intercept, no neighbourhood-level terms, no group terms other
    than the LA. Public: the exposure is the children column and the other columns the model reads
    are public (:func:`hierarchy.disclosure.public_column`), since the public table must carry them.
    """
    if spec.family != "poisson":
        raise HierarchyError(f"model '{spec.name}' is {spec.family}: LA-level sums are sufficient only for "
                             "a Poisson model (the negative binomial and Poisson-lognormal likelihoods need "
                             "every neighbourhood's count); use a Poisson model such as "
                             "models/gradient_poisson.toml")
    if getattr(spec, "spatial", None):
        raise HierarchyError(f"model '{spec.name}' has a spatial term (car(neighbourhood)): its likelihood needs "
                             "every neighbourhood's count, which LA sums do not give; drop the term to export")
    if spec.msoa.random_intercept:
        raise HierarchyError(f"model '{spec.name}' has an MSOA random intercept: its likelihood needs "
                             "counts per MSOA, which LA sums do not give; drop [msoa] for the export")
    if spec.exposure != "exposure":
        raise HierarchyError(f"model '{spec.name}' uses {spec.exposure!r} as its exposure (offset): the exposure "
                             "of an exported model must be public (children, the 'exposure' column), and a "
                             "count as exposure would have to travel in the public table; use "
                             "offset(log(exposure))")
    if spec.row_terms or [g for g, _ in spec.groups if g != "la"]:
        terms = [*spec.row_terms, *(f"(1 | {g})" for g, _ in spec.groups if g != "la")]
        raise HierarchyError(f"model '{spec.name}' has the term(s) {', '.join(terms)}: LA x stage x stratum sums "
                             "are not sufficient for neighbourhood-level or other group terms (each needs its "
                             "own sum of counts); drop them, or use strata (C(...)) for a categorical term")
    measure = [spec.la_deprivation.measure] if spec.la_deprivation.measure != "mean" else []
    private = [c for c in (*spec.strata, *spec.la.covariates, *measure) if not public_column(c)]
    if private:
        raise HierarchyError(f"model '{spec.name}' reads the column(s) {', '.join(private)}, which are not public "
                             "(codes, geography, deprivation, children, stratum labels, la_* measures): the "
                             "public table of a sums fit may hold only public columns")


def _check_threshold(threshold: int, allow_below_default_rules: bool) -> None:
    if isinstance(threshold, bool) or not float(threshold).is_integer() or threshold < 0:
        raise HierarchyError(f"--threshold must be a whole number >= 0, got {threshold!r}")
    if threshold < THRESHOLD and not allow_below_default_rules:
        raise HierarchyError(f"threshold {threshold} is below the default {THRESHOLD}: sums behind fewer children "
                             "may identify them. If these sums stay inside the secure environment, say so "
                             "explicitly with --allow-below-default-rules (allow_below_default_rules=True)")


def sufficient_sums(table: pd.DataFrame, spec: ModelSpec, *, threshold: int = THRESHOLD,
                    allow_below_default_rules: bool = False) -> pd.DataFrame:
    """Per LA x stage x stratum: ``n`` (sum of counts) and ``sum_yw`` (sum of count x w).

    ``sums.attrs["export"]`` records what the sums were made from (the table's hash, each cell's and
    each LA's rows) for the export log of :func:`write_sums`. Two exports from overlapping tables may
    not leave together: see the module docstring.

    Raises
    ------
    HierarchyError
        If the model is not one for which the sums are sufficient or reads a column that is not public,
        the threshold is below the default without ``allow_below_default_rules``, or any cell has fewer
        than ``threshold`` children behind it (zero included): coarsen the strata or pool LAs.
    """
    from hierarchy.data.table import data_hash

    _check_threshold(threshold, allow_below_default_rules)
    check_exact(spec)
    design = build_design(table, spec)
    sums = _sums(design, threshold=threshold)
    sums.attrs["export"] = {"table_hash": data_hash(table, **spec.hashed_columns), **_rows_of(design, sums)}
    return sums


def _sums(design: Design, *, threshold: int) -> pd.DataFrame:
    y = design.y.astype(float)
    frame = pd.DataFrame({"la": design.la_codes[design.la_index],
                          "stage": np.asarray(design.stage_names)[design.stage_index],
                          "stratum": np.asarray(design.stratum_names, dtype=object)[design.stratum_index],
                          "n": y, "sum_yw": y * design.w})
    sums = frame.groupby(["la", "stage", "stratum"], sort=True, observed=True)[["n", "sum_yw"]].sum().reset_index()
    sums["n"] = sums["n"].astype(np.int64)
    small = sums[sums["n"] < threshold]
    if len(small):
        ex = ", ".join(f"{r.la}/{r.stage}/{r.stratum}: {r.n}" for r in small.head(3).itertuples())
        raise HierarchyError(f"{len(small)} of {len(sums)} LA x stage x stratum sums rest on fewer than "
                             f"{threshold} children (e.g. {ex}); they cannot leave the secure environment. "
                             "Fix: use fewer strata, pool small LAs, or drop the stage")
    return sums


def _rows_of(design: Design, sums: pd.DataFrame) -> dict:
    """Each cell's rows and each LA x stage's neighbourhoods: count and 16-hex hash (for the export log)."""
    from hierarchy.config import config_hash

    ids = pd.Series(design.row_ids.astype(str))
    frame = pd.DataFrame({"la": design.la_codes[design.la_index],
                          "stage": np.asarray(design.stage_names)[design.stage_index],
                          "stratum": np.asarray(design.stratum_names, dtype=object)[design.stratum_index],
                          "row": ids, "neighbourhood": ids.str.split("|", n=1).str[0], "n": design.y})
    cells = [[la, st, sr, int(g["n"].sum()), len(g), config_hash(sorted(g["row"]))]
             for (la, st, sr), g in frame.groupby(["la", "stage", "stratum"], sort=True)]
    las = [[la, st, int(g["n"].sum()), int(g["neighbourhood"].nunique()),
            config_hash(sorted(set(g["neighbourhood"])))]
           for (la, st), g in frame.groupby(["la", "stage"], sort=True)]
    return {"cells": cells, "las": las}


def write_sums(sums: pd.DataFrame, out: str | os.PathLike, *, spec: ModelSpec, threshold: int,
               allow_overlap: bool = False, log: str | os.PathLike | None = None) -> Path:
    """Write the sums as CSV atomically, with a comment header naming the model and threshold.

    Before writing, the export is compared with every export recorded in the output folder's
    :data:`EXPORT_LOG` (or ``log``): if the sums of any LA x stage (x stratum) cell differ from a recorded
    export's by fewer than ``threshold`` children (or its rows differ while its sum does not), the two
    files together give away the counts of the rows that differ, and the export is refused. With
    ``allow_overlap=True`` (``--allow-overlapping-exports``) it is written with a warning, and the log
    records the override: the two files may not leave the secure environment together. The log entry
    (model, threshold, table hash, each cell's sum and rows) is written atomically before the sums.

    Raises
    ------
    HierarchyError
        On a differencing conflict (without ``allow_overlap``) or an unreadable log.
    """
    import warnings

    out = Path(out)
    log_path = Path(log) if log is not None else out.parent / EXPORT_LOG
    entry = _log_entry(sums, out, spec=spec, threshold=threshold)
    records = read_export_log(log_path)
    conflicts = differencing_conflicts(entry, records, threshold=threshold)
    if conflicts and not allow_overlap:
        raise HierarchyError(f"{conflicts[0]}{f' (and {len(conflicts) - 1} more)' if len(conflicts) > 1 else ''}"
                             f"; the two files together give away those counts (log: {log_path}). Export from "
                             "the same table as before, or keep only one of the two; to write it anyway for use "
                             "inside, pass --allow-overlapping-exports (they may not leave together)")
    if conflicts:
        warnings.warn(f"{conflicts[0]}: written because overlapping exports were allowed; the two files may "
                      "not leave the secure environment together", stacklevel=2)
        entry["overlap_allowed"] = conflicts
    _write_log(log_path, [*records, entry])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(f"# sufficient sums for model {spec.name} (hash {spec.hash()}); every n >= {threshold}\n")
        sums[list(SUM_COLUMNS)].to_csv(fh, index=False, float_format="%.10g")
    return out


# ------------------------------------------------------------------------------------------ the export log


def _log_entry(sums: pd.DataFrame, out: Path, *, spec: ModelSpec, threshold: int) -> dict:
    from datetime import UTC, datetime

    made = sums.attrs.get("export") or {}
    cells = made.get("cells") or [[r.la, r.stage, r.stratum, int(r.n), None, None] for r in sums.itertuples()]
    las = made.get("las")
    if las is None:
        tot = sums.groupby(["la", "stage"], sort=True)["n"].sum()
        las = [[la, st, int(n), None, None] for (la, st), n in tot.items()]
    return {"file": str(out.resolve()), "written": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": spec.name, "model_hash": spec.hash(), "threshold": int(threshold),
            "table_hash": made.get("table_hash"), "sums_hash": sums_hash(sums), "cells": cells, "las": las}


def read_export_log(path: str | os.PathLike) -> list[dict]:
    """The exports recorded in an export log ([] if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        records = data["exports"]
        if not isinstance(records, list) or not all(isinstance(r, dict) and "cells" in r for r in records):
            raise ValueError("'exports' is not a list of exports")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HierarchyError(f"export log {path} cannot be read ({err}): it records what earlier exports from "
                             "this folder were made from; restore it from backup (never delete it to get an "
                             "export through), or write the export to a new folder") from None
    return records


def _write_log(path: Path, records: list[dict]) -> None:
    text = json.dumps({"format": "hierarchy export log", "version": 1, "exports": records}, indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def differencing_conflicts(entry: dict, records: list[dict], *, threshold: int) -> list[str]:
    """One line per recorded export that ``entry`` may not leave with (the first differing cell).

    Cells are compared as LA x stage x stratum (when both have the cell) and as LA x stage totals; a
    pair conflicts where its rows or sums differ and the sums differ by fewer than the threshold.
    """
    out = []
    for k, rec in enumerate(records, start=1):
        limit = max(int(threshold), int(rec.get("threshold") or 0))
        hit = (_first_conflict(entry["cells"], rec["cells"], 3, limit)
               or _first_conflict(entry.get("las") or [], rec.get("las") or [], 2, limit))
        if hit:
            out.append(f"these sums and export {k} in the log ({rec.get('file')}, {rec.get('written')}) {hit}, "
                       f"fewer than {limit} children apart")
    return out


def _first_conflict(new: list, old: list, nkey: int, limit: int) -> str | None:
    before = {tuple(c[:nkey]): c[nkey:] for c in old}
    for c in new:
        key = tuple(c[:nkey])
        if key not in before:
            continue
        (n1, rows1, hash1), (n0, rows0, hash0) = c[nkey:nkey + 3], before[key][:3]
        rows_differ = hash1 is not None and hash0 is not None and hash1 != hash0
        if (rows_differ or n1 != n0) and abs(n1 - n0) < limit:
            what = f"{rows0} vs {rows1} rows" if rows_differ else "the same rows"
            return f"differ in {'/'.join(map(str, key))} ({what}, n {n0} vs {n1})"
    return None


# ------------------------------------------------------------------------------------- reading the sums back


def read_sums(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sums file written by :func:`write_sums`, and check it could come from a table.

    Every ``n`` must be a whole number at least the file's own threshold (its header's "every n >= T";
    :data:`~hierarchy.disclosure.THRESHOLD` without a header), every ``sum_yw`` finite, and no cell
    repeated. Errors name the file, column and line.
    """
    import re

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        sums = pd.read_csv(path, comment="#", dtype={"la": str, "stage": str, "stratum": str})
    except (OSError, ValueError) as err:
        raise HierarchyError(f"cannot read sums file {path}: {err}") from None
    missing = [c for c in SUM_COLUMNS if c not in sums.columns]
    if missing:
        raise HierarchyError(f"{path} lacks column(s) {', '.join(missing)}: "
                             "write it with hierarchy export-sufficient")
    sums["stratum"] = sums["stratum"].fillna("")
    data_lines = [i + 1 for i, t in enumerate(lines) if t.strip() and not t.lstrip().startswith("#")][1:]
    line = (np.asarray(data_lines) if len(data_lines) == len(sums) else np.arange(len(sums)) + 2)
    m = re.search(r"every n >= (\d+)", lines[0] if lines else "")
    floor = int(m.group(1)) if m else THRESHOLD
    _check_sums(sums, path, line, floor)
    return sums


def _check_sums(sums: pd.DataFrame, path, line: np.ndarray, floor: int) -> None:
    def refuse(col: str, bad: np.ndarray, what: str) -> None:
        i = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"{path}, column {col}, line {line[i]} (and {int(bad.sum()) - 1} more): {what} "
                             f"(got {sums[col].iloc[i]!r}); no table of children gives this: re-export the "
                             "sums with hierarchy export-sufficient, never edit them")

    for col in ("la", "stage"):
        bad = sums[col].isna().to_numpy()
        if bad.any():
            refuse(col, bad, f"{col} is empty")
    n = pd.to_numeric(sums["n"], errors="coerce").to_numpy(dtype=float)
    t = pd.to_numeric(sums["sum_yw"], errors="coerce").to_numpy(dtype=float)
    checks = (("n", ~np.isfinite(n), "n must be a number"),
              ("n", np.isfinite(n) & (n < 0), "n is a count of children and cannot be negative"),
              ("n", np.isfinite(n) & (n != np.round(n)), "n is a count of children and must be a whole number"),
              ("n", np.isfinite(n) & (n < floor), f"n is below the file's own threshold ({floor})"),
              ("sum_yw", ~np.isfinite(t), "sum_yw must be a finite number"))
    for col, bad, what in checks:
        if bad.any():
            refuse(col, bad, what)
    dup = sums.duplicated(["la", "stage", "stratum"], keep="first").to_numpy()
    if dup.any():
        refuse("la", dup, "the LA x stage x stratum cell appears twice")
    sums["n"] = n.astype(np.int64)
    sums["sum_yw"] = t
    sums.attrs.update(source=str(path), line=[int(v) for v in line])


def public_design(public: pd.DataFrame, sums: pd.DataFrame, spec: ModelSpec) -> tuple[Design, np.ndarray]:
    """Design from the public table, and the sums as arrays (n, t) indexed (la, stage, stratum).

    The design's counts are pseudo-counts (each cell's ``n`` spread over its rows by exposure, rounded
    so that they add up to ``n`` exactly) used only to choose the parameterisation; the likelihood uses
    the sums.
    """
    check_exact(spec)
    table = public.copy()
    for s in spec.stages:
        table[s] = 0
    design = build_design(table, spec)
    la = pd.Index(design.la_codes)
    stage = pd.Index(design.stage_names)
    stratum = pd.Index(np.asarray(design.stratum_names, dtype=object).astype(str))
    idx = (la.get_indexer(sums["la"].astype(str)), stage.get_indexer(sums["stage"].astype(str)),
           stratum.get_indexer(sums["stratum"].astype(str)))
    for what, i, col in zip(("LA", "stage", "stratum"), idx, ("la", "stage", "stratum"), strict=True):
        if (i < 0).any():
            raise HierarchyError(f"the sums name {what} {sums[col][i < 0].iloc[0]!r}, which the public table "
                                 "and model do not have: use the table and model the sums were made from")
    arr = np.zeros((2, len(la), len(stage), len(stratum)))
    have = np.zeros(arr.shape[1:], dtype=bool)
    have[idx] = True
    used = np.zeros_like(have)
    used[design.la_index, design.stage_index, design.stratum_index] = True
    if (used & ~have).any():
        j, s_, k = (a[0] for a in np.nonzero(used & ~have))
        raise HierarchyError(f"{int((used & ~have).sum())} LA x stage x stratum cells of the public table have no "
                             f"sum (e.g. {la[j]}/{stage[s_]}/{stratum[k]}): the public table must cover the same "
                             "LAs and strata as the table the sums were exported from")
    arr[0][idx] = sums["n"].to_numpy(dtype=float)
    arr[1][idx] = sums["sum_yw"].to_numpy(dtype=float)
    expo = np.exp(design.log_exposure)
    cell = (design.la_index * len(stage) + design.stage_index) * len(stratum) + design.stratum_index
    _check_plausible(sums, np.ravel_multi_index(idx, arr.shape[1:]), cell, design)
    share = _tilted_shares(expo, design.w, cell, arr[0].reshape(-1), arr[1].reshape(-1))
    pseudo = _apportion(arr[0].reshape(-1), cell, share)
    from dataclasses import replace

    return replace(design, y=pseudo), arr


def _check_plausible(sums: pd.DataFrame, where: np.ndarray, cell: np.ndarray, design: Design) -> None:
    """Refuse sums that no table of the public table's children gives: a sum for a cell without rows,
    more events than the cell's exposure allows, or a ``sum_yw`` outside ``[n min w, n max w]``."""
    from hierarchy import STAGES

    size = int(max(cell.max(initial=0), where.max(initial=0))) + 1
    expo = np.bincount(cell, np.exp(design.log_exposure), minlength=size)
    w_lo, w_hi = np.full(size, np.inf), np.full(size, -np.inf)
    np.minimum.at(w_lo, cell, design.w)
    np.maximum.at(w_hi, cell, design.w)
    n, t = sums["n"].to_numpy(dtype=float), sums["sum_yw"].to_numpy(dtype=float)
    bound = np.where(sums["stage"].isin(STAGES), 1.0, MAX_EVENTS_PER_EXPOSURE)
    e, lo, hi = expo[where], w_lo[where], w_hi[where]
    tol = 1e-6 * (1.0 + n * np.where(e > 0, np.maximum(np.abs(lo), np.abs(hi)), 0.0))
    source, lines = sums.attrs.get("source", "the sums"), sums.attrs.get("line") or list(range(2, len(sums) + 2))
    checks = (("n", (e <= 0) & (n > 0), "n > 0 for a cell where the public table has no rows (no children)"),
              ("n", (e > 0) & (n > bound * e), "n is more than the cell's exposure allows "
               "(children for a stage count, at most 1 each; else at most "
               f"{MAX_EVENTS_PER_EXPOSURE:g} events per unit of exposure)"),
              ("sum_yw", (e > 0) & ((t < n * lo - tol) | (t > n * hi + tol)),
               "sum_yw is outside [n x min w, n x max w] over the cell's rows of the public table"))
    for col, bad, what in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            r = sums.iloc[i]
            cell_name = f"{r['la']}/{r['stage']}/{r['stratum']}"
            raise HierarchyError(f"{source}, column {col}, line {lines[i]} ({cell_name}: n {r['n']}, "
                                 f"sum_yw {r['sum_yw']:.6g}, exposure {e[i]:.6g}; "
                                 f"{int(bad.sum())} such cells): {what}. Sums and public table do not come from "
                                 "one table: use the public table the sums were exported from")


def _tilted_shares(expo: np.ndarray, w: np.ndarray, cell: np.ndarray, n: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each row's share of its cell's count: ``expo exp(b w)`` normalised in the cell, with ``b`` per cell
    chosen so that the shares reproduce the cell's ``sum y w`` (``t``): each cell's Poisson fit of
    ``y ~ offset + a + b w``, solved from its sums alone (Newton on ``b``, whose score is monotone).
    Pseudo-counts so apportioned carry the within-LA gradient the sums show, which the choice of
    parameterisation reads (:func:`hierarchy.language.design.la_effect_spread`)."""
    size = len(n)
    target = np.divide(t, n, out=np.zeros(size), where=n > 0)
    lo = np.full(size, np.inf)
    hi = np.full(size, -np.inf)
    np.minimum.at(lo, cell, w)
    np.maximum.at(hi, cell, w)
    target = np.clip(target, lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))  # inside the cell's range of w
    rows = np.maximum(np.bincount(cell, minlength=size), 1)

    def tilt(b):  # expo exp(b w), b w taken about its cell mean (no overflow)
        z = b[cell] * w
        return expo * np.exp(np.clip(z - (np.bincount(cell, z, minlength=size) / rows)[cell], -50, 50))

    b = np.zeros(size)
    for _ in range(50):
        q = tilt(b)
        tot = np.bincount(cell, q, minlength=size)
        m1 = np.bincount(cell, q * w, minlength=size) / np.maximum(tot, 1e-300)
        m2 = np.bincount(cell, q * w * w, minlength=size) / np.maximum(tot, 1e-300)
        var = np.maximum(m2 - m1**2, 1e-12)
        step = np.clip((target - m1) / var, -5, 5)
        b = np.where((n > 0) & (hi > lo), b + step, 0.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    q = tilt(b)
    return q / np.bincount(cell, q, minlength=size)[cell]


def _apportion(n: np.ndarray, cell: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Whole numbers per row that add up to ``n[cell]`` in every cell, in proportion to ``share``
    (largest remainders)."""
    raw = n[cell] * share
    low = np.floor(raw)
    short = np.rint(n - np.bincount(cell, low, minlength=len(n))).astype(np.int64)
    order = np.lexsort((low - raw, cell))  # by cell, then the largest remainder first
    ranked = cell[order]
    rank = np.empty(len(cell), dtype=np.int64)
    rank[order] = np.arange(len(cell)) - np.searchsorted(ranked, ranked)
    return (low + (rank < short[cell])).astype(np.int64)


def sufficient_model(spec: ModelSpec, priors: PriorSet, design: Design, arr: np.ndarray):
    """NumPyro model: the workbench's model on zero counts plus the sums' term ``sum n (a+o) + t (b+g)``."""
    import jax.numpy as jnp
    import numpyro
    from numpyro import handlers

    from hierarchy.likelihood.jaxmodel import make_layout, model_data, model_fn, with_counts

    layout = with_counts(make_layout(design), np.zeros(len(design.y), dtype=np.int64), design.stage_index)
    inner = model_fn(spec, priors, design, layout)
    data = model_data(layout)
    n, t = jnp.asarray(arr[0]), jnp.asarray(arr[1])

    def model():
        with handlers.trace() as tr:
            inner(data)
        coef = tr["la_coef"]["value"]
        if coef.ndim == 2:
            coef = coef[:, None, :]
        a = coef[..., 0][:, :, None]
        b = coef[..., 1][:, :, None] if coef.shape[-1] == 2 else 0.0
        if "stratum_intercept_offset" in tr:
            a = a + jnp.concatenate([jnp.zeros(1), tr["stratum_intercept_offset"]["value"]])
            if "stratum_gradient_offset" in tr:
                b = b + jnp.concatenate([jnp.zeros(1), tr["stratum_gradient_offset"]["value"]])
        numpyro.factor("sufficient_sums", jnp.sum(n * a + t * b))

    return model


def fit_sufficient(sums: pd.DataFrame, public: pd.DataFrame, spec: ModelSpec, priors: PriorSet, *,
                   chains: int = 4, tune: int = 500, draws: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """Posterior draws (chains x draws x ...) of the model fitted from the sums and the public table."""
    draws_, _ = sample_sufficient(sums, public, spec, priors, chains=chains, tune=tune, draws=draws, seed=seed)
    return draws_.posterior


def sample_sufficient(sums: pd.DataFrame, public: pd.DataFrame, spec: ModelSpec, priors: PriorSet, *,
                      chains: int = 4, tune: int = 500, draws: int = 500, seed: int = 0,
                      progress: bool = False) -> tuple[Draws, Design]:
    """NUTS on the sums' likelihood: :class:`~hierarchy.inference.sampling.Draws` as ``hierarchy fit`` makes them,
    and the public design (its counts are pseudo-counts: see :func:`public_design`)."""
    import time

    import jax
    from numpyro.infer import MCMC, NUTS

    from hierarchy.inference.sampling import MAX_TREE_DEPTH
    from hierarchy.language.design import centring, describe_centring
    from hierarchy.likelihood.model import la_effect_labels

    jax.config.update("jax_enable_x64", True)
    release_compiled_programs()
    design, arr = public_design(public, sums, spec)
    chain_method = "parallel" if jax.local_device_count() >= chains else "sequential"
    mcmc = MCMC(NUTS(sufficient_model(spec, priors, design, arr), max_tree_depth=MAX_TREE_DEPTH),
                num_warmup=tune, num_samples=draws, num_chains=chains, chain_method=chain_method,
                progress_bar=progress)
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps", "energy"))
    samples = mcmc.get_samples(group_by_chain=True)
    ex = mcmc.get_extra_fields(group_by_chain=True)
    steps = np.asarray(ex["num_steps"])
    stats = {"diverging": np.asarray(ex["diverging"]), "energy": np.asarray(ex["energy"]), "n_steps": steps,
             "tree_depth": np.floor(np.log2(steps + 1)).astype(int)}
    settings = dict(sampler="numpyro", chains=chains, tune=tune, draws=draws, seed=seed,
                    chain_method=chain_method, chain_method_used=chain_method, target_accept=0.8, float32=False,
                    max_tree_depth=MAX_TREE_DEPTH, likelihood="sufficient_sums",
                    parameterisation=describe_centring(centring(spec, design), la_effect_labels(spec)))
    total = time.perf_counter() - t
    return Draws(posterior={k: np.asarray(v) for k, v in samples.items()}, stats=stats, settings=settings,
                 timings={"sampling": total, "total": total}), design


def sums_hash(sums: pd.DataFrame) -> str:
    """16-hex hash of the sums (cells in sorted order, values as written)."""
    from hierarchy.config import config_hash

    cells = sums[list(SUM_COLUMNS)].sort_values(["la", "stage", "stratum"]).astype(str).to_numpy().tolist()
    return config_hash({"sums": cells})


def sums_model_hash(path: str | os.PathLike) -> str | None:
    """The model hash :func:`write_sums` wrote in the file's first line (None if absent)."""
    import re

    with open(path, "rb") as fh:
        m = re.search(r"\(hash ([0-9a-f]{16})\)", fh.readline().decode("utf-8", errors="replace"))
    return m.group(1) if m else None

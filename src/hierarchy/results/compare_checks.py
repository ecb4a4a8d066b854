"""Whether saved fits can be compared by cross-validation (:mod:`hierarchy.results.compare_models`).

The fits must be of the same rows, outcome and exposure (:func:`check_same_data`, naming what differs),
cover the same neighbourhood rows (:func:`check_comparable`) and have a pointwise log-likelihood, stored
or recomputed from the table (:func:`load_table`, :func:`with_log_likelihood`); a spatial fit without one
cannot be compared by LOO at all (:func:`loo_impossible`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierarchy.errors import FitFileError, HierarchyError

__all__ = ["ROWS_PARTS", "check_comparable", "check_same_data", "load_table", "loo_impossible", "model_names",
           "recorded_map", "with_log_likelihood"]


ROWS_PARTS = {"rows": "rows (neighbourhoods, strata, LAs)", "outcome": "outcome counts", "exposure": "exposure"}
"""The parts of ``provenance["rows_hash"]`` (:func:`hierarchy.data.table.rows_hash`) and what each is."""


def check_same_data(paths: list[Path], provs: list[dict]) -> None:
    """Refuse fits of different rows, outcomes or exposures (naming which); a model that reads more
    columns of the same table (``+ rural + w:rural``) is comparable. Fits without ``rows_hash``
    (made before it was recorded) must have the same data hash."""
    if len({p["data_hash"] for p in provs}) > 1:
        hashes = [p.get("rows_hash") for p in provs]
        if all(isinstance(h, dict) for h in hashes):
            differ = [part for part in ROWS_PARTS if len({h.get(part) for h in hashes}) > 1]
            if not differ:
                return
            what = " and ".join(ROWS_PARTS[d] for d in differ)
            listing = "; ".join(f"{path} ({', '.join(f'{d} {h.get(d)}' for d in differ)}, from "
                                f"{p.get('data_source') or '?'})"
                                for path, p, h in zip(paths, provs, hashes, strict=True))
            raise HierarchyError(f"cannot compare these fits: their {what} differ. LOO compares how well each "
                                 "model predicts the same counts of the same neighbourhoods. Got "
                                 f"{listing}. Refit the models on one table with one outcome and exposure.")
        listing = "; ".join(f"{path} (data hash {p['data_hash']}, from {p.get('data_source') or '?'})"
                            for path, p in zip(paths, provs, strict=True))
        old = [str(path) for path, h in zip(paths, hashes, strict=True) if not isinstance(h, dict)]
        raise HierarchyError("cannot compare fits of different data: LOO compares how well each "
                             "model predicts the same neighbourhoods, so all fits must come from "
                             f"the same table. Got {listing}. {', '.join(old)} record(s) no hash of the rows, "
                             "outcome and exposure alone (fitted before it was recorded), so a model that reads "
                             "more columns of the same table looks like other data: refit them on one table.")
    if len({p["model_spec"]["outcome"] for p in provs}) > 1:
        listing = "; ".join(f"{path} models '{p['model_spec']['outcome']}'"
                            for path, p in zip(paths, provs, strict=True))
        raise HierarchyError("cannot compare fits of different outcomes: their log likelihoods "
                             f"are of different counts and are not comparable ({listing}).")


def check_comparable(paths: list[Path], idatas: list, provs: list[dict]) -> None:
    """Refuse fits without a log-likelihood or of other rows."""
    rows0 = None
    for path, i in zip(paths, idatas, strict=True):
        if "log_likelihood" not in i.groups():
            raise FitFileError(f"{path} has no log_likelihood group; pass the data to recompute it")
        rows = i.log_likelihood["neighbourhood"].to_numpy()
        if rows0 is None:
            rows0 = rows
        elif not np.array_equal(rows, rows0):
            raise HierarchyError(f"{path} has different neighbourhood rows from {paths[0]}; "
                                 "fits must cover the same rows in the same order")


def loo_impossible(names: Sequence[str], idatas: list) -> str:
    """Why no cross-validation can be done (one line), or "" when it can: a spatial fit (BYM2) holds no
    per-neighbourhood effects, so its pointwise log-likelihood cannot be recomputed from the file."""
    from hierarchy.results.fit import as_fit

    spatial = [n for n, i in zip(names, idatas, strict=True)
               if as_fit(i).spec.spatial and "log_likelihood" not in i.groups()]
    if not spatial:
        return ""
    return (f"none: LOO not computed, as {', '.join(spatial)} has a BYM2 term (car(neighbourhood)) whose "
            "per-neighbourhood effects a fit file does not keep, so its pointwise log-likelihood cannot be "
            "recomputed; the models are compared on their headline estimands only")


def load_table(data: Any, columns: Any, provs: list[dict], paths: list[Path]) -> pd.DataFrame:
    """The data table in canonical columns, validated with every column the models name; without
    ``columns``, with the column map recorded in the fits (as ``report`` and ``predict`` do) when the
    file has the user's names."""
    if isinstance(data, pd.DataFrame):
        return data
    from hierarchy.data import table as data_mod
    from hierarchy.language.spec import ModelSpec

    specs = [ModelSpec.from_dict(p["model_spec"]) for p in provs]
    named = {k: tuple(dict.fromkeys(c for s in specs for c in s.data_columns[k]))
             for k in ("counts", "strata", "keys")}
    cmap = data_mod.load_column_map(columns) if columns else recorded_map(data, provs, paths)
    return data_mod.load(data, columns=cmap, **named)


def recorded_map(data: Any, provs: list[dict], paths: list[Path]):
    """The column map the fits recorded, if they agree and the file has the user's names, else None."""
    from hierarchy.data import table as data_mod

    maps = [p.get("column_map") or {} for p in provs]
    merged: dict[str, str] = {}
    for path, m in zip(paths, maps, strict=True):
        clash = [c for c, u in m.items() if merged.get(c, u) != u]
        if clash:
            raise HierarchyError(f"{path} recorded another column map than the other fits (for "
                                 f"{', '.join(clash)}): pass the table's map with --columns MAP.toml")
        merged.update(m)
    header = set(map(str, data_mod.read_table(data).columns))
    if not merged or set(merged) <= header:
        return None
    return data_mod.ColumnMap(columns=merged, path=Path(f"the column map recorded in {paths[0]}"))


def with_log_likelihood(paths: list[Path], idatas: list, table: pd.DataFrame | None) -> list:
    """Each fit with its pointwise log-likelihood: stored, or recomputed from ``table``."""
    from hierarchy.results.fitfile import add_log_likelihood

    lacking = [p for p, i in zip(paths, idatas, strict=True) if "log_likelihood" not in i.groups()]
    if not lacking:
        return idatas
    if table is None:
        raise HierarchyError(
            f"{', '.join(map(str, lacking))} hold(s) no pointwise log-likelihood: fit files leave it "
            "out by default because with the posterior it gives back every observed count. LOO "
            "needs it: pass the table the fits were made from, where the data are "
            "(hierarchy compare-models FIT FIT ... --data TABLE [--columns MAP.toml]); it is "
            "recomputed in memory and not saved. (Or refit with --include-log-likelihood, which "
            "makes the fit files disclosive.)")
    return [add_log_likelihood(i, table) for i in idatas]


def model_names(provs: list[dict], paths: list[Path]) -> list[str]:
    names = [p["model_spec"]["name"] for p in provs]
    if len(set(names)) < len(names):
        names = [f"{p['model_spec']['name']} / {p['priors']['name']}" for p in provs]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names

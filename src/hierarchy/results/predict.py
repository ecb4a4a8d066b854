"""Predictions from a saved fit: expected rates per 10,000 children, with intervals, for any neighbourhood.

Each row of ``newdata`` is one of three kinds:

* **observed neighbourhood**: its ``neighbourhood`` code is one the fit was made from. The
  prediction is the fitted posterior of its rate (its LA's effects, its own deprivation, terms and
  groups, as stored in the fit). Other columns given for it must agree with the fit.
* **hypothetical neighbourhood** in a fitted LA: ``la`` is a fitted LA and ``deprivation`` (a
  proportion) is given, with the columns of any other terms the formula uses (strata, ``rural``,
  grouping columns...). Levels of a grouping column the fit has not seen get effects drawn from
  that group's fitted spread.
* **new LA**: ``la`` is a code the fit lacks; its LA deprivation must be given (column
  ``la_deprivation``, or the spec's LA measure column) with any LA covariates. Its LA effects are
  drawn, draw by draw, from the fitted LA-level distribution (mean at its LA deprivation, covariance
  from ``la_sd`` and ``la_corr``; :mod:`hierarchy.likelihood.model`), so its interval carries the between-LA
  spread.

Everything goes through the one linear predictor (:mod:`hierarchy.likelihood.predictor`): for each
posterior draw, ``rate = 10,000 exp(eta - log exposure)``. With ``counts=True`` each draw also
gets a predictive count (the family's draw around ``exposure x rate``: Poisson, negative binomial,
zero-inflated NB), for which
hypothetical rows need the model's exposure column. Rates are per 10,000 of the model's exposure
(children; referrals for ``re_referrals_nb``). Outputs never carry observed counts (only
predictions; an exposure that is itself a count is not echoed), and the fit file is only read.

Stacked-stage fits predict one stage (``stage=``, default the first). Poisson-lognormal row effects
and MSOA effects are not stored per row in fit files: they are drawn afresh from their fitted SDs
(an MSOA the fit knows keeps its own effect when the ``msoa`` column names it), and the ``note``
column says so.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import STRATA
from hierarchy.errors import HierarchyError
from hierarchy.language.design import w_of, z_of
from hierarchy.language.priors import did_you_mean
from hierarchy.likelihood import families
from hierarchy.results.fit import Fit, as_fit

KINDS = ("observed neighbourhood", "hypothetical neighbourhood", "new LA")
PER_10K = "per 10,000 children"
_TOL = 1e-6
LA_TOLERANCE = 0.005
"""An LA deprivation given for a fitted LA may differ from the fitted one by this much (rounding)."""


def _open(fit: Any, stage: str | None) -> Fit:
    """The fit of the stage predictions are for (its ``full`` is the fit of all stages)."""
    return as_fit(fit).stage(stage)


# ---------------------------------------------------------------------------- reading newdata


def read_newdata(newdata: Any, *, columns: Any = None, fit_map: dict[str, str] | None = None
                 ) -> tuple[pd.DataFrame, str, str]:
    """The rows to predict, in canonical column names, with a note of the column map used.

    Parameters
    ----------
    newdata : path or pandas.DataFrame
        CSV or Parquet file, or a table.
    columns : path or ColumnMap, optional
        Column map of the file (``hierarchy validate --columns``). Without it, the map recorded in
        the fit is used when the file has the user's names of its columns.
    fit_map : dict, optional
        The fit's recorded map (canonical -> user name).

    Returns
    -------
    table, source, map_note
    """
    from hierarchy.data import table as data_mod

    if isinstance(newdata, pd.DataFrame):
        table, source = newdata.copy(), newdata.attrs.get("source", "<newdata table>")
        mapping = None
        if columns is not None:
            cmap = columns if isinstance(columns, data_mod.ColumnMap) else data_mod.load_column_map(columns)
            mapping = cmap.canonical_to_user()
            note = f"column map {cmap.path}"
        elif fit_map and _uses_map(table, fit_map):
            mapping, note = fit_map, "the column map recorded in the fit"
        else:
            note = "canonical column names (no column map)"
        if mapping:
            table = table.rename(columns={u: c for c, u in mapping.items() if u in table.columns})
            table.attrs["column_map"] = mapping
        table.index = pd.RangeIndex(1, len(table) + 1)
        return table, str(source), note
    source = str(newdata)
    if columns is not None:
        cmap = columns if isinstance(columns, data_mod.ColumnMap) else data_mod.load_column_map(columns)
        note = f"column map {cmap.path}"
    else:
        head = data_mod.read_table(newdata)
        if fit_map and _uses_map(head, fit_map):
            cmap = data_mod.ColumnMap(columns=dict(fit_map), path=None)
            note = "the column map recorded in the fit"
        else:
            cmap, note = None, "canonical column names (no column map)"
    table = data_mod.read_table(newdata, columns=cmap)
    return table, source, note


def _uses_map(table: pd.DataFrame, mapping: dict[str, str]) -> bool:
    """Whether ``table`` has some mapped user column (that is not already a canonical name)."""
    return any(u in table.columns and u != c for c, u in mapping.items())


def _where(table: pd.DataFrame, mask: np.ndarray) -> str:
    """``line 3`` / ``lines 3, 7`` (CSV line numbers) or ``rows ...`` of the rows in ``mask``."""
    label = "line" if table.attrs.get("row_label") == "line" else "row"
    label += "s" if np.sum(mask) > 1 else ""
    idx = [str(i) for i in table.index[np.asarray(mask)][:5]]
    more = f" ({int(np.sum(mask))} in all)" if np.sum(mask) > 5 else ""
    return f"{label} {', '.join(idx)}{more}"


def _numbers(table: pd.DataFrame, col: str, rows: np.ndarray, source: str, *, why: str,
             lower: float | None = None, upper: float | None = None, strict_lower: bool = False) -> np.ndarray:
    """Column ``col`` as floats on ``rows`` (NaN elsewhere); refuse missing or bad values there."""
    if col not in table.columns:
        raise HierarchyError(f"{source}: column '{col}' is needed {why} but the file has none "
                             f"(has: {', '.join(map(str, table.columns))})"
                             f"{did_you_mean(col, list(map(str, table.columns)))}; add it, or map your "
                             "column to it with --columns")
    raw = table[col]
    text = raw.astype(str).str.replace(",", "", regex=False).str.strip() if raw.dtype == object else raw
    v = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = rows & ~np.isfinite(v)
    if lower is not None:
        bad |= rows & np.isfinite(v) & ((v <= lower) if strict_lower else (v < lower))
    if upper is not None:
        bad |= rows & np.isfinite(v) & (v > upper)
    if bad.any():
        rng = "" if lower is None else (f" above {lower:g}" if strict_lower else f" of at least {lower:g}")
        rng += "" if upper is None else f" and at most {upper:g}"
        raise HierarchyError(f"{source}: column '{col}' must hold a number{rng} {why}; "
                             f"{_where(table, bad)} {'do' if bad.sum() > 1 else 'does'} not: fix them")
    return np.where(rows, v, np.nan)


def _text(table: pd.DataFrame, col: str) -> np.ndarray:
    """Column as stripped strings, '' where missing."""
    if col not in table.columns:
        return np.full(len(table), "", dtype=object)
    s = table[col]
    return np.array(["" if pd.isna(v) else str(v).strip() for v in s], dtype=object)


# ---------------------------------------------------------------------------- the predictor's rows


def _la_measure(spec) -> str:
    return "la_deprivation" if spec.la_deprivation.measure == "mean" else spec.la_deprivation.measure


def _observed_index(f: Fit, table: pd.DataFrame, codes: np.ndarray, source: str) -> np.ndarray:
    """Fitted row of each row whose code the fit has (-1 for the others)."""
    ids = f.idata.constant_data["neighbourhood"].to_numpy().astype(str)
    code_of = np.array([s.split("|", 1)[0] for s in ids])
    by_code: dict[str, list[int]] = {}
    for i, c in enumerate(code_of):
        by_code.setdefault(c, []).append(i)
    pick = np.full(len(table), -1)
    group_cols = [c for c in f.spec.group_columns if c != "la"]  # as hierarchy.language.design
    extra = [c for c in (*STRATA, *f.spec.strata, *group_cols) if c in table.columns]
    extra = list(dict.fromkeys(extra))
    id_pos = {s: i for i, s in enumerate(ids)}
    for r, code in enumerate(codes):
        if code not in by_code:
            continue
        rows = by_code[code]
        if len(rows) == 1:
            pick[r] = rows[0]
            continue
        want = "|".join([code, *(str(table[c].iloc[r]).strip() for c in extra)])
        if want not in id_pos:
            examples = ", ".join(ids[rows[:3]])
            pickers = ", ".join(dict.fromkeys([*f.spec.strata, *(g for g, _ in f.spec.groups)])) or "strata"
            raise HierarchyError(
                f"{source}: neighbourhood {code} ({_where(table, np.arange(len(table)) == r)}) has "
                f"{len(rows)} rows in the fit (strata or groups, e.g. {examples}); give the columns that "
                f"pick one ({pickers})"
                " with the fitted values")
        pick[r] = id_pos[want]
    return pick


def _check_agrees(table: pd.DataFrame, col: str, fitted: np.ndarray, obs: np.ndarray, source: str,
                  *, numeric: bool) -> None:
    """Refuse a column given for observed neighbourhoods that disagrees with the fit."""
    if col not in table.columns or not obs.any():
        return
    given = _text(table, col)
    has = obs & (given != "")
    if numeric:
        v = pd.to_numeric(pd.Series(given), errors="coerce").to_numpy(dtype=float)
        bad = has & ~(np.abs(v - fitted) <= _TOL * np.maximum(1.0, np.abs(fitted)))
    else:
        bad = has & (given != fitted.astype(str))
    if bad.any():
        raise HierarchyError(f"{source}: {_where(table, bad)}: a neighbourhood the fit has, with "
                             f"'{col}' different from the fitted value; to predict a changed or hypothetical "
                             "neighbourhood, leave its neighbourhood code empty (or give a new code)")


def _build_rows(f: Fit, table: pd.DataFrame, source: str, *, counts: bool, rng: np.random.Generator,
                flat: Any, pick: np.ndarray) -> tuple[dict, dict, pd.DataFrame]:
    """Row arrays for the predictor, extra per-draw parameters (new LAs, new levels) and the output's
    descriptive columns."""
    spec, idata, des = f.spec, f, f.design
    cd, post = idata.constant_data, idata.posterior
    n = len(table)
    if n == 0:
        raise HierarchyError(f"{source}: has no rows to predict")
    codes = _text(table, "neighbourhood")
    fit_row = _observed_index(f, table, codes, source)
    obs = fit_row >= 0
    hyp = ~obs
    las = _text(table, "la")
    fitted_las = post["la"].to_numpy().astype(str)
    la_pos = {c: i for i, c in enumerate(fitted_las)}
    nobody = hyp & (las == "")
    if nobody.any():
        hint = ("" if "neighbourhood" not in table.columns else
                "; codes the fit lacks are predicted as hypothetical neighbourhoods, so they need 'la'")
        unknown = [c for c in codes[nobody] if c][:3]
        known = [c for c in np.unique([s.split("|", 1)[0] for s in cd["neighbourhood"].to_numpy().astype(str)])]
        near = did_you_mean(unknown[0], known, cutoff=0.8) if unknown else ""
        raise HierarchyError(f"{source}: {_where(table, nobody)}: no 'la' and no neighbourhood code the "
                             f"fit has{' (' + ', '.join(unknown) + ')' if unknown else ''}{near}{hint}; "
                             "give each row a fitted neighbourhood code, or an LA code with deprivation")
    new_la = hyp & np.array([c not in la_pos for c in las])
    # observed rows: the fitted arrays
    from hierarchy.results.estimands import fit_rows

    fr = fit_rows(idata)
    fitted_x = cd["deprivation"].to_numpy()
    safe = np.where(obs, fit_row, 0)
    _check_agrees(table, "la", cd["la_of"].to_numpy().astype(str)[safe], obs, source, numeric=False)
    _check_agrees(table, "deprivation", fitted_x[safe], obs, source, numeric=True)
    x = _numbers(table, "deprivation", hyp, source, why="for hypothetical neighbourhoods and new LAs "
                 "(the neighbourhood's income-deprivation rate, a proportion)", lower=0.0, upper=1.0) \
        if hyp.any() else np.full(n, np.nan)
    x = np.where(obs, fitted_x[safe], x)
    X = _la_deprivation_of_rows(f, table, source, las, obs, hyp, new_la, safe, fr)
    z = z_of(np.where(np.isfinite(X), X, des["X_mean"]), des["X_mean"], spec)
    w = w_of(x, X, des["x_mean"], spec)
    w = np.where(obs, fr["w"][safe], w)
    # LA index: fitted LAs, then the new ones in order of appearance
    new_codes = list(dict.fromkeys(las[new_la]))
    la_index = np.where(obs, fr["la_index"][safe], 0)
    for i in np.flatnonzero(hyp):
        la_index[i] = la_pos[las[i]] if las[i] in la_pos else len(fitted_las) + new_codes.index(las[i])
    extra: dict[str, np.ndarray] = {}
    notes = [[] for _ in range(n)]
    if new_codes:
        extra["la_coef"] = _new_la_coef(f, table, las, X, new_la, new_codes, source, flat, pick, rng)
        for i in np.flatnonzero(new_la):
            notes[i].append("LA effects drawn from the fitted LA-level distribution")
    stratum_index = _stratum_index(f, table, source, obs, hyp, safe, fr)
    # neighbourhood-level terms
    row_X = fr.get("row_X")
    if spec.row_terms:
        values = {"w": w, "z": z}
        for c in spec.row_columns:
            values[c] = _numbers(table, c, hyp, source, why=f"for hypothetical rows (the formula's term(s) "
                                 f"{', '.join(t for t in spec.row_terms if c in t.split(':'))})") \
                if hyp.any() else np.zeros(n)
        hx = np.column_stack([np.prod([values[c] for c in t.split(":")], axis=0) for t in spec.row_terms])
        row_X = np.where(obs[:, None], row_X[safe], np.nan_to_num(hx))
    groups = _group_indices(f, table, source, las, obs, hyp, safe, fr, flat, rng, extra, notes)
    group_cols = [c for c in spec.group_columns if c != "la"]
    # exposure (counts only)
    # exp(log 524) is 523.9999999999999: the fitted exposure back to the digits it was given with
    expo = np.round(np.exp(np.where(obs, fr["log_exposure"][safe], 0.0)), 6)
    if counts and hyp.any():
        e = _numbers(table, spec.exposure, hyp, source, why="for predictive counts of hypothetical rows "
                     f"(the model's exposure: {_exposure_words(spec)})", lower=0.0, strict_lower=True)
        expo = np.where(hyp, e, expo)
    rows = {"la_index": la_index.astype(np.int64), "stage_index": np.zeros(n, dtype=np.int64),
            "stratum_index": stratum_index.astype(np.int64), "log_exposure": np.zeros(n), "w": w,
            "row_X": row_X, "groups": tuple(groups)}
    _unstored_effects(f, table, flat, rng, rows, extra, notes)
    kind = np.where(obs, KINDS[0], np.where(new_la, KINDS[2], KINDS[1]))
    shown = {"neighbourhood": codes, "la": np.where(obs, cd["la_of"].to_numpy().astype(str)[safe], las),
             "deprivation": x, "la_deprivation": X}
    for c in (*spec.strata, *spec.row_columns, *group_cols, *spec.la.covariates):
        if c in table.columns and c not in shown:
            shown[c] = table[c].to_numpy()
    if counts and spec.exposure == "exposure":  # children; another exposure (referrals) is a count: not shown
        shown["exposure"] = expo
    out = pd.DataFrame({"prediction": kind, **shown})
    out["note"] = ["; ".join(dict.fromkeys(x_)) for x_ in notes]
    out.attrs["exposure"] = expo
    return rows, extra, out


def _la_deprivation_of_rows(f: Fit, table, source, las, obs, hyp, new_la, safe, fr) -> np.ndarray:
    """LA deprivation of each row: fitted LAs from the fit (a value given for one must agree), new LAs
    from the file (one value per LA)."""
    spec, cd, post, n = f.spec, f.constant_data, f.posterior, len(table)
    X_fit = cd["la_deprivation"].sel(la=post["la"]).to_numpy()
    la_pos = {c: i for i, c in enumerate(post["la"].to_numpy().astype(str))}
    measure = _la_measure(spec)
    X = np.full(n, np.nan)
    known_la = ~new_la
    X[known_la & hyp] = X_fit[[la_pos[c] for c in las[known_la & hyp]]]
    X[obs] = X_fit[fr["la_index"][safe[obs]]]
    given_col = measure if measure in table.columns else "la_deprivation"
    if given_col in table.columns:  # an LA deprivation given for a fitted LA must be the fitted one
        given = pd.to_numeric(pd.Series(_text(table, given_col)), errors="coerce").to_numpy(dtype=float)
        off = ~new_la & np.isfinite(given) & ~(np.abs(given - X) <= LA_TOLERANCE)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            which = las[i] or "the named neighbourhood's"
            raise HierarchyError(f"{source}: {_where(table, off)}: '{given_col}' given for a fitted LA ({which}: "
                                 f"fitted {X[i]:.4g}, given {given[i]:.4g}); leave it empty for fitted LAs, or "
                                 "give a new LA code to predict an LA at another deprivation")
    if new_la.any():
        col = measure if measure in table.columns or "la_deprivation" not in table.columns else "la_deprivation"
        positive = spec.la_deprivation.transform == "log"
        X[new_la] = _numbers(table, col, new_la, source,
                             why=f"for LAs the fit lacks ({_few(sorted(set(las[new_la])))}: their LA "
                                 "deprivation, as the fit's LA deprivation was measured)",
                             lower=0.0, strict_lower=positive, upper=1.0 if measure == "la_deprivation" else None
                             )[new_la]
        _same_within(table, las, X, new_la, col, source)
    return X


def _stratum_index(f: Fit, table, source, obs, hyp, safe, fr) -> np.ndarray:
    """Each row's stratum (0: the reference level): fitted rows' from the fit, hypothetical rows' from
    their strata columns (a stratum the fit lacks is refused)."""
    spec, cd, post, n = f.spec, f.constant_data, f.posterior, len(table)
    stratum_index = np.where(obs, fr["stratum_index"][safe], 0)
    if spec.strata and hyp.any():
        missing = [c for c in spec.strata if c not in table.columns]
        if missing:
            raise HierarchyError(f"{source}: the model has strata {', '.join(spec.strata)}; hypothetical rows "
                                 f"need column(s) {', '.join(missing)}")
        labels = np.array(["/".join(str(table[c].iloc[i]).strip() for c in spec.strata) for i in range(n)])
        names = list(dict.fromkeys(cd["stratum"].to_numpy().astype(str)))
        levels = ["__reference__", *(post["stratum"].to_numpy().astype(str) if "stratum" in post.coords else [])]
        bad = hyp & np.array([lab not in names for lab in labels])
        if bad.any():
            raise HierarchyError(f"{source}: {_where(table, bad)}: a stratum ({labels[bad][0]}) the fit "
                                 f"lacks; fitted strata ({'/'.join(spec.strata)}): {', '.join(names)}")
        k = pd.Index(levels).get_indexer(labels)
        stratum_index = np.where(hyp, np.where(k < 0, 0, k), stratum_index)
    return stratum_index


def _group_indices(f: Fit, table, source, las, obs, hyp, safe, fr, flat, rng, extra, notes) -> list:
    """``(group, level index)`` of each grouping term: fitted levels, or new levels whose effects are drawn
    from the group's spread (their raw draws appended to ``extra``; ``notes`` say so)."""
    spec, post = f.spec, f.posterior
    groups = []
    for (g, _slope), (_, fitted_idx) in zip(spec.groups, fr["groups"], strict=True):
        levels = post[g].to_numpy().astype(str)
        pos = {v: i for i, v in enumerate(levels)}
        idx = np.where(obs, fitted_idx[safe], 0)
        if hyp.any():
            lacking = [c for c in g.split(":") if c not in table.columns]
            if lacking:
                raise HierarchyError(f"{source}: the model has group effects (1 | {g}); hypothetical rows need "
                                     f"column(s) {', '.join(lacking)} (a level the fit lacks gets an effect drawn "
                                     "from the group's fitted SD)")
            parts = [las if c == "la" else _text(table, c) for c in g.split(":")]
            vals = np.array(["/".join(v) for v in zip(*parts, strict=True)], dtype=object)  # a:b: each combination
            new_levels = list(dict.fromkeys(v for v, h in zip(vals, hyp, strict=True) if h and v not in pos))
            for i in np.flatnonzero(hyp):
                if vals[i] in pos:
                    idx[i] = pos[vals[i]]
                else:
                    idx[i] = len(levels) + new_levels.index(vals[i])
                    notes[i].append(f"{g} level {vals[i]!r} not in the fit: effect drawn from its SD")
            if new_levels:
                raw = flat[f"{g}_raw"].transpose("sample", ...).to_numpy()
                fresh = rng.standard_normal((raw.shape[0], len(new_levels), *raw.shape[2:]))
                extra[f"{g}_raw"] = np.concatenate([raw, fresh], axis=1)
        groups.append((g, idx))
    return groups


def _unstored_effects(f: Fit, table, flat, rng, rows, extra, notes) -> None:
    """Effects fits do not store per row, drawn afresh into ``extra`` (and their indices into ``rows``): MSOA
    effects (a fitted MSOA named in ``msoa`` keeps its own) and the family's row effects (Poisson-lognormal)."""
    spec, post, n = f.spec, f.posterior, len(table)
    if spec.msoa.random_intercept:
        msoas = post["msoa"].to_numpy().astype(str) if "msoa" in post.coords else np.array([])
        mpos = {v: i for i, v in enumerate(msoas)}
        given = _text(table, "msoa")
        msoa_index = np.array([mpos.get(v, len(msoas) + i) for i, v in enumerate(given)])
        raw = flat["msoa_raw"].transpose("sample", ...).to_numpy() if "msoa_raw" in flat else \
            np.zeros((flat.sizes["sample"], 0))
        extra["msoa_raw"] = np.concatenate([raw, rng.standard_normal((raw.shape[0], n))], axis=1)
        rows["msoa_index"] = msoa_index
        for i, v in enumerate(given):
            if v not in mpos:
                notes[i].append("MSOA effect drawn from its SD (no fitted msoa given)")
    fresh = families.get(spec.family).draw_row_sites(rng, (flat.sizes["sample"], n))  # per-row effects
    if fresh:
        rows["row_index"] = np.arange(n)
        extra |= fresh
        for i in range(n):
            notes[i].append("row effect drawn from obs_sd (not stored in fits)")


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _exposure_words(spec) -> str:
    return "children in the row" if spec.exposure == "exposure" else f"the {spec.exposure} count"


def scale_label(spec) -> str:
    """The unit of predicted rates: per 10,000 children, or per 10,000 of the model's exposure
    (``re_referrals_nb``: re-referrals per 10,000 referrals)."""
    return PER_10K if spec.exposure == "exposure" else f"per 10,000 {spec.exposure}"


def _same_within(table, las, values, mask, col, source) -> None:
    """Refuse an LA-level value that differs between rows of the same new LA."""
    frame = pd.DataFrame({"la": las[mask], "v": values[mask]})
    spread = frame.groupby("la")["v"].agg(lambda s: s.max() - s.min())
    bad = spread[spread > _TOL]
    if len(bad):
        rows = mask & np.isin(las, bad.index.to_numpy())
        raise HierarchyError(f"{source}: '{col}' differs between rows of the same LA ({bad.index[0]}; "
                             f"{_where(table, rows)}); give one value per LA")


# ---------------------------------------------------------------------------- new LAs


def _new_la_coef(f: Fit, table, las, X, new_la, new_codes, source, flat, pick, rng) -> np.ndarray:
    """Posterior ``la_coef`` draws with the new LAs' effects appended, ``(S, n_la + n_new, coef)``.

    Each draw's new-LA effects are drawn from that draw's LA-level distribution.
    """
    spec, full_spec, des = f.spec, f.full.spec, f.design
    full_post = f.full.posterior.stack(sample=("chain", "draw")).isel(sample=pick)
    S = flat.sizes["sample"]
    first = {c: np.flatnonzero((las == c) & new_la)[0] for c in new_codes}
    Xn = np.array([X[first[c]] for c in new_codes])
    zn = z_of(Xn, des["X_mean"], spec)

    def get(name, default=0.0):
        if name not in flat:
            return np.full(S, default)
        return flat[name].transpose("sample", ...).to_numpy()

    mean_a = get("intercept")[:, None] + get("la_deprivation")[:, None] * zn[None, :]
    parts = [mean_a]
    if spec.la.covariates:
        cov = np.column_stack([
            _numbers(table, c, new_la, source, why="for LAs the fit lacks (an LA covariate of the model)")
            for c in spec.la.covariates])
        cov = np.array([cov[first[c]] for c in new_codes])
        cov = (cov - np.asarray(des["la_cov_center"])) / np.asarray(des["la_cov_scale"])
        if "la_cov_intercept" in flat:
            parts[0] = parts[0] + get("la_cov_intercept") @ cov.T
    if "gradient" in spec.coefs:
        mean_b = get("gradient")[:, None] + get("cross_level")[:, None] * zn[None, :]
        if spec.la.covariates and "la_cov_gradient" in flat:
            mean_b = mean_b + get("la_cov_gradient") @ cov.T
        parts.append(mean_b)
    mean = np.stack(parts, axis=-1)  # (S, new, coef)
    ncoef = len(spec.coefs)
    if not full_spec.stacked:
        sd = get("la_sd").reshape(S, ncoef)
        corr = get("la_corr").reshape(S, ncoef, ncoef) if ncoef > 1 else np.ones((S, 1, 1))
        cov_m = sd[:, :, None] * corr * sd[:, None, :]
    elif not full_spec.anchored:
        labels = [f"{s}:{c}" for s in full_spec.stages for c in full_spec.coefs]
        pick = [labels.index(f"{f.spec.outcome}:{c}") for c in spec.coefs]
        sd = full_post["la_sd"].transpose("sample", ...).to_numpy()[:, pick]
        corr = full_post["la_corr"].transpose("sample", ...).to_numpy()[:, pick][:, :, pick]
        cov_m = sd[:, :, None] * corr * sd[:, None, :]
    else:
        sd0 = full_post["la_sd"].transpose("sample", ...).to_numpy()
        corr0 = full_post["la_corr"].transpose("sample", ...).to_numpy() if ncoef > 1 else np.ones((S, 1, 1))
        cov_m = sd0[:, :, None] * corr0 * sd0[:, None, :]
        s = full_spec.stages.index(f.spec.outcome)
        if s > 0:  # e_s = m_s + loading_s * u + d_s:  cov = L cov_0 L + diag(stage_sd^2)
            load = full_post["la_loading"].transpose("sample", ...).to_numpy()[:, s - 1]
            ssd = full_post["la_stage_sd"].transpose("sample", ...).to_numpy()[:, s - 1]
            cov_m = load[:, :, None] * cov_m * load[:, None, :] + np.eye(ncoef)[None] * (ssd**2)[:, :, None]
    chol = np.linalg.cholesky(cov_m + 1e-12 * np.eye(ncoef)[None])
    eps = rng.standard_normal((S, len(new_codes), ncoef))
    new = mean + np.einsum("sij,snj->sni", chol, eps)
    fitted = flat["la_coef"].transpose("sample", "la", ...).to_numpy()
    return np.concatenate([fitted, new], axis=1)


# ---------------------------------------------------------------------------- predict


def predict(fit: Any, newdata: Any, *, prob: float = 0.9, counts: bool = False, draws: int | None = None,
            stage: str | None = None, columns: Any = None, seed: int = 0,
            return_draws: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Expected rates per 10,000 children, with equal-tailed intervals, for the rows of ``newdata``.

    Parameters
    ----------
    fit : path or arviz.InferenceData
        A fit file (``hierarchy fit``).
    newdata : path or pandas.DataFrame
        The rows to predict (see the module docstring for the three kinds and their columns).
    prob : float
        Interval probability, in (0, 1).
    counts : bool
        Also predictive counts (``count_mean``, ``count_lower``, ``count_upper``): the family's draws
        (Poisson, NB, zero-inflated NB) around ``exposure x rate``; hypothetical rows need ``exposure``.
    draws : int, optional
        Use this many posterior draws, evenly spaced over the chains (default: all).
    stage : str, optional
        The stage of a stacked-stages fit (default: the first).
    columns : path or ColumnMap, optional
        Column map of ``newdata``; default: the map recorded in the fit when the file uses its names.
    seed : int
        Seed of the draws of new LAs' effects, new group levels and predictive counts.
    return_draws : bool
        Also return the rate draws, ``(draws, rows)`` per 10,000.

    Returns
    -------
    pandas.DataFrame
        One row per input row: ``prediction`` (kind), ``neighbourhood``, ``la``, ``deprivation``,
        ``la_deprivation`` (as used), the model's other input columns, ``rate_mean``, ``rate_sd``,
        ``rate_median``, ``rate_lower``, ``rate_upper``, ``prob``, ``scale`` (and the count columns),
        ``note``. ``attrs``: ``column_map`` (which map was used), ``stage``, ``draws``.

    Raises
    ------
    HierarchyError
        Naming the file, column and rows of bad input, and the fix.
    """
    from hierarchy.likelihood.predictor import ROW_PARAMS, group_params, predictor_draws
    from hierarchy.results.ppc import family_draws

    if not 0 < prob < 1:
        raise HierarchyError(f"prob must be in (0, 1), got {prob}")
    if draws is not None and draws < 1:
        raise HierarchyError(f"draws must be at least 1, got {draws}")
    f = _open(fit, stage)
    table, source, map_note = read_newdata(newdata, columns=columns, fit_map=f.column_map)
    post = f.idata.posterior
    flat = post.stack(sample=("chain", "draw"))
    total = flat.sizes["sample"]
    pick = np.arange(total) if draws is None or draws >= total else \
        np.unique(np.linspace(0, total - 1, draws).round().astype(int))
    flat = flat.isel(sample=pick)
    rng = np.random.default_rng(seed)
    rows, extra, out = _build_rows(f, table, source, counts=counts, rng=rng, flat=flat, pick=pick)
    fam = families.get(f.spec.family)
    skip = {"msoa_raw", "eps_raw", *fam.likelihood_params}  # the likelihood's parameters: counts only
    keys = [k for k in (*ROW_PARAMS, *group_params(g for g, _ in f.spec.groups)) if k in flat and k not in skip]
    arrays = {k: flat[k].transpose("sample", ...).to_numpy() for k in keys}
    arrays.update(extra)
    eta = predictor_draws(rows, arrays)  # log rate per child (no exposure)
    rate = 1e4 * np.exp(eta)
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    out["rate_mean"] = rate.mean(0)
    out["rate_sd"] = rate.std(0, ddof=1) if len(rate) > 1 else np.nan
    out["rate_median"] = np.median(rate, 0)
    out["rate_lower"], out["rate_upper"] = np.quantile(rate, [lo, hi], axis=0)
    out["prob"], out["scale"] = prob, scale_label(f.spec)
    if counts:
        mu = np.exp(eta) * out.attrs["exposure"][None, :]
        y = fam.draw(rng, mu, family_draws(flat, fam, slice(None), rows["stage_index"]))
        out["count_mean"] = y.mean(0)
        out["count_lower"], out["count_upper"] = np.quantile(y, [lo, hi], axis=0, method="inverted_cdf")
    out = out[[c for c in out.columns if c != "note"] + ["note"]]
    out.attrs = {"column_map": map_note, "stage": f.spec.outcome, "draws": int(len(rate)), "source": source}
    mapping = table.attrs.get("column_map")
    if mapping:  # the user's own names back on the input columns
        out = out.rename(columns={c: u for c, u in mapping.items() if c in out.columns and u not in out.columns})
    return (out, rate) if return_draws else out


DECIMALS = {"rate_mean": 2, "rate_sd": 2, "rate_median": 2, "rate_lower": 2, "rate_upper": 2,
            "count_mean": 1, "count_lower": 0, "count_upper": 0}
"""Decimals of the predicted columns as written (rates per 10,000 to 0.01, counts to 0.1 and whole)."""


def rounded_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """A :func:`predict` table with its predicted columns rounded to :data:`DECIMALS` (counts' interval
    ends as whole numbers); the input columns are left as given."""
    out = frame.copy()
    for col, places in DECIMALS.items():
        if col in out.columns:
            out[col] = out[col].round(places)
            if places == 0 and out[col].notna().all():
                out[col] = out[col].astype("int64")
    return out


def write_predictions(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a :func:`predict` table as CSV, atomically, rounded by :func:`rounded_predictions`."""
    from hierarchy.paths import atomic_path

    with atomic_path(path) as tmp:
        rounded_predictions(frame).to_csv(tmp, index=False)

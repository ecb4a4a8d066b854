"""The one suppression of a report's observed tables, shown alike in the report and the checking folder.

Observed counts (LA x national decile with its margins, rates by decile, the count distribution)
are checked once with the output checkers' rules (ACRO's cell checks: threshold, zeros, n-k and
p-ratio dominance over the neighbourhoods in each cell; :func:`hierarchy.reporting.checking.observed_records`),
suppressed, rounded and protected against differencing from the published margins. The report's
tables and figures and the checking folder's files are all made from that one result, before
anything is written.

The rules (:func:`rules`) are the environment's ACRO configuration with the report's threshold and
rounding where those are stricter; rules below the configuration's are used only when the user chose
them explicitly (``allow_below_default_rules``: a report not for publication, which has no checking
folder).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from hierarchy import disclosure
from hierarchy.reporting import checking
from hierarchy.results import estimands

OBSERVED_COLUMNS = ("observed_count", "observed_rate", "observed_neighbourhoods")


def rules(threshold: int = 10, rounding: int = 5, *, config: str | os.PathLike | dict | None = None,
          allow_below_default_rules: bool = False) -> dict[str, Any]:
    """The one set of suppression rules of a report: an ACRO configuration dict.

    Parameters
    ----------
    threshold, rounding : int
        The report's disclosure rules (``--threshold``, ``--rounding``).
    config : str, os.PathLike or dict, optional
        The environment's ACRO YAML (or a configuration already read); default
        :func:`hierarchy.reporting.checking.environment_config_path`.
    allow_below_default_rules : bool
        Use ``threshold`` and ``rounding`` as given even where they are below the configuration's.

    Returns
    -------
    dict
        The configuration with ``safe_threshold`` and ``safe_round_base`` set to the rules applied.
    """
    disclosure.check_rules(threshold, rounding)
    cfg = config if isinstance(config, dict) else checking.acro_config(config)
    base = max(int(rounding), 1)
    if not allow_below_default_rules:
        threshold, base = max(threshold, int(cfg["safe_threshold"])), max(base, int(cfg["safe_round_base"]))
    return {**cfg, "safe_threshold": int(threshold), "safe_round_base": base}


def rules_text(rules: dict[str, Any]) -> str:
    """One paragraph stating the rules applied (for the report's disclosure section)."""
    return (f"{disclosure.rules_text(threshold=rules['safe_threshold'], rounding=rules['safe_round_base'])} "
            f"Observed cells are also suppressed when zero ({rules['zeros_are_disclosive']}: zeros are "
            f"{'disclosive' if rules['zeros_are_disclosive'] else 'not disclosive'}) or dominated by one or two "
            f"neighbourhoods (n-k rule: the largest {rules['safe_nk_n']} hold {rules['safe_nk_k']:.0%} or "
            f"more; p-ratio {rules['safe_pratio_p']}), and secondary cells are suppressed so that none can be "
            f"derived from the margins: the same suppression as the output-checking folder "
            f"(rules from {rules.get('config_source', 'the ACRO configuration')}).")


def suppress_observed(idata, tables: dict[str, pd.DataFrame], observed: np.ndarray,
                      rules: dict[str, Any]) -> list[dict[str, Any]]:
    """Check and suppress the observed tables once; put the published values into ``tables`` (in place).

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit (a stage view of a stacked fit).
    tables : dict of pandas.DataFrame
        Report tables holding raw observed columns (``deciles``, ``count_distribution``,
        ``la_deciles``), in memory only.
    observed : numpy.ndarray
        Raw observed counts of the fitted rows.
    rules : dict
        :func:`rules`.

    Returns
    -------
    list of dict
        The checking folder's table records (:func:`hierarchy.reporting.checking.observed_records`).
    """
    records = checking.observed_records(idata, observed, rules)
    published = checking.published_for_report(records)
    for name in ("deciles", "la_deciles"):  # a count used as exposure is a count here too (rates follow below)
        tables[name] = estimands.with_private_denominator(idata, tables[name], threshold=rules["safe_threshold"],
                                                          rounding=rules["safe_round_base"])
    dec = tables["deciles"]
    dec["observed_count"] = published["deciles"]["observed_count"].to_numpy()
    dec["observed_rate"] = 1e4 * dec["observed_count"] / dec["children"]
    dist = tables["count_distribution"]
    dist["observed_neighbourhoods"] = published["count_distribution"]["rows"].to_numpy()
    la = tables["la_deciles"]
    wide = published["la_deciles"]
    counts = [wide.loc[str(a), "All" if str(d) == "all" else str(d)]
              for a, d in zip(la["la"], la["decile"], strict=True)]
    la["observed_count"] = np.asarray(counts, dtype=float)
    la["observed_rate"] = 1e4 * la["observed_count"] / la["children"]
    return records


def suppressed_cells(tables: dict[str, pd.DataFrame]) -> set[tuple[str, str]]:
    """The (LA, decile) cells suppressed in a report's ``la_deciles`` and ``deciles`` tables
    (LA ``All`` for the national deciles, decile ``All`` for the LA totals), for comparison with
    the checking folder's."""
    out = set()
    la = tables.get("la_deciles")
    if la is not None:
        gone = la[la["observed_count"].isna()]
        out |= {(str(a), "All" if str(d) == "all" else str(d)) for a, d in zip(gone["la"], gone["decile"],
                                                                                strict=True)}
    dec = tables.get("deciles")
    if dec is not None and "observed_count" in dec:
        out |= {("All", str(d)) for d in dec.loc[dec["observed_count"].isna(), "decile"]}
    return out

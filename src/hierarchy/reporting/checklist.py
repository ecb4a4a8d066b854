"""The reporting checklist appended to every report (BARG, Kruschke 2021; WAMBS, Depaoli & van de Schoot 2017).

One :class:`Item` per thing a reviewer asks of a Bayesian analysis: the model in formula and in
words, every prior with its justification, the prior predictive check, convergence, the posterior
predictive check, prior sensitivity (power scaling), software versions and the data hash. Each is
either shown on the page (``anchor``: the id of the section that shows it) or not run (``command``:
the command that would run it). :func:`items` builds the list from the fit's provenance and the
page's sections; :func:`section` makes it the page's last section. The checklist holds no counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hierarchy.errors import HierarchyError
from hierarchy.reporting import page

__all__ = ["ANCHOR", "Item", "items", "section"]

ANCHOR = "reporting-checklist"
"""Id of the checklist section on the page."""


@dataclass(frozen=True)
class Item:
    """One checklist entry: shown at ``anchor`` on the page, or not run (``command`` would run it)."""

    name: str
    detail: str
    anchor: str | None = None
    command: str | None = None

    @property
    def status(self) -> str:
        """``"shown"`` or ``"not run"``."""
        return "shown" if self.anchor else "not run"


def _prior_text(spec: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v:g}" for k, v in spec.items() if k not in ("dist", "justification"))
    return f"{spec['dist']}({params})"


def _unused_groups(parameters: Iterable[str] | None) -> set[str]:
    """Prior groups whose every parameter is known and absent from ``parameters`` (None: none known)."""
    if parameters is None:
        return set()
    from hierarchy.likelihood.parameters import prior_groups

    have = set(parameters)
    known = {**prior_groups(), "la_corr": "la_corr"}
    return set(known.values()) - {g for p, g in known.items() if p in have}


def prior_items(priors: dict[str, Any], parameters: Iterable[str] | None = None) -> list[Item]:
    """One item per prior of the fit's stored prior set, with its justification.

    A prior's own ``justification`` (if the set file gives one) comes first, else the set's
    ``description``; a set with neither says so. With the fit's ``parameters`` (posterior
    variable names), a group whose parameters the fit lacks (``msoa_sd`` of a model without MSOAs)
    is left out; groups whose parameters are not known by name (``stage_effects``) always stay.
    Per-term priors (``[terms."w:rural"]``) are not in the page's Priors table, so the checklist
    itself shows them.
    """
    name, description = priors.get("name", "?"), str(priors.get("description") or "").strip()
    unused = _unused_groups(parameters)
    groups = [(k, v, "priors") for k, v in priors.items()
              if isinstance(v, dict) and "dist" in v and k not in unused]
    groups += [(f"terms.{t}", v, ANCHOR) for t, v in (priors.get("terms") or {}).items() if isinstance(v, dict)]
    out = []
    for group, spec, where in groups:
        own = str(spec.get("justification") or "").strip()
        why = own or (f"prior set {name}: {description}" if description else f"no justification given in {name}")
        out.append(Item(f"prior: {group}", f"{_prior_text(spec)}; justification: {why}", anchor=where))
    return out


def _convergence(diag: dict[str, Any]) -> str:
    parts = [f"verdict {diag.get('status', '?')}"]
    for key, label, fmt in (("rhat_max", "max R-hat", "{:.3f}"), ("ess_bulk_min", "min bulk ESS", "{:.0f}"),
                            ("ess_tail_min", "min tail ESS", "{:.0f}"), ("divergences", "divergences", "{}")):
        if diag.get(key) is not None:
            parts.append(f"{label} {fmt.format(diag[key])}")
    return ("; ".join(parts) + " over every sampled parameter (every reported quantity is computed from "
            "these draws); per hyperparameter in the ArviZ summary (r_hat, ess_bulk, ess_tail)")


def items(prov: dict[str, Any], diag: dict[str, Any], sections: Iterable[page.Section], *,
          formula: str, parameters: Iterable[str] | None = None) -> list[Item]:
    """The checklist of a report page.

    Parameters
    ----------
    prov : dict
        The fit's provenance (:func:`hierarchy.results.fitfile.provenance`).
    diag : dict
        The checked diagnostics shown on the page.
    sections : iterable of hierarchy.reporting.page.Section
        The page's sections: an item is shown only where a section shows it.
    formula : str
        The model's formula as the page states it.
    parameters : iterable of str, optional
        The fit's posterior variables: priors of groups the fit does not use are left out.

    Returns
    -------
    list of Item

    Raises
    ------
    HierarchyError
        A shown item points at a section the page lacks (a bug in the report, not in the input).
    """
    anchors = {s.anchor for s in sections} | {ANCHOR}
    model, priors = prov["model_spec"]["name"], prov["priors"]["name"]
    data = prov.get("data_source") or "TABLE"
    words = str(prov["model_spec"].get("description") or "").strip() or "no description given in the model file"
    ppc = "count-check" in anchors
    out = [
        Item("model (formula and in words)", f"{formula}; {words}", anchor="provenance"),
        *prior_items(prov["priors"], parameters),
        Item("prior predictive summary", "not run by hierarchy report",
             command=f"hierarchy check {model} --priors {priors} --data {data}"),
        Item("convergence", _convergence(diag), anchor="diagnostics"),
        Item("convergence per hyperparameter", "r_hat, ess_bulk and ess_tail columns", anchor="summary"),
        Item("posterior predictive check", "rates by decile and counts per neighbourhood, predicted vs observed"
             if ppc else "not run: the fit does not store the exposure counts",
             anchor="count-check" if ppc else None,
             command=None if ppc else f"hierarchy report FIT --data {data} --out FOLDER"),
        Item("prior sensitivity (power scaling)", "not run by hierarchy report",
             command=f"hierarchy compare-priors --data {data} --model {model} --priors {priors} --out FOLDER"),
        Item("software versions", ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()) or "?",
             anchor="provenance"),
        Item("data hash", f"{prov.get('data_hash', '?')} ({data})", anchor="provenance"),
    ]
    missing = [f"{i.name} (#{i.anchor})" for i in out if i.anchor and i.anchor not in anchors]
    if missing:
        raise HierarchyError(f"reporting checklist points at sections the page lacks: {', '.join(missing)}")
    return out


def section(checklist: list[Item], sections: Iterable[page.Section]) -> page.Section:
    """The checklist as the page's appendix section (a text table: item, status, where, detail)."""
    titles = {s.anchor: s.title for s in sections} | {ANCHOR: "Reporting checklist"}
    where = {i.anchor: f"{titles[i.anchor]} (#{i.anchor})" for i in checklist if i.anchor}
    rows = [(i.name, i.status, where[i.anchor] if i.anchor else f"run: {i.command}", i.detail) for i in checklist]
    return page.Section("Reporting checklist", ANCHOR, (
        "Bayesian analysis reporting guidelines (BARG; Kruschke 2021) and WAMBS: each item links to the "
        "section that shows it (its anchor after #) or was not run, with the command that would run it. "
        "Priors: those of the set that the model uses.",),
        table=pd.DataFrame(rows, columns=["item", "status", "where", "detail"]), text_table=True,
        links=tuple((text, anchor) for anchor, text in where.items()))

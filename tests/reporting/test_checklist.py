"""The reporting checklist appendix (BARG / WAMBS) of every report.

Uses the session's shared fit (the ``shared_fit`` fixture, conftest.py): no new fit.
"""

from __future__ import annotations

import shlex

import pytest

from hierarchy import cli
from hierarchy.errors import HierarchyError
from hierarchy.reporting import checklist, page, report
from hierarchy.results.fitfile import provenance
from tests.helpers import SHARED_FIT

pytestmark = SHARED_FIT

BARG = ("model (formula and in words)", "prior predictive summary", "convergence",
        "prior sensitivity (power scaling)", "software versions", "data hash")


@pytest.fixture(scope="module")
def built(shared_fit):
    """The report's outputs (nothing written), the checklist items and the page as HTML and Markdown."""
    out = report.build_outputs(shared_fit["fit"], data=shared_fit["data"], n_draws=50)
    prov = provenance(out.idata)
    sections = out.page.sections
    assert sections[-1].anchor == checklist.ANCHOR  # the appendix is the page's last section
    items = checklist.items(prov, report._load_checked(shared_fit["fit"])[1], sections[:-1],
                            formula=prov.get("formula") or "?", parameters=out.idata.posterior.data_vars)
    return out, prov, items, page.render_html(out.page), page.render_markdown(out.page)


def test_every_barg_item_is_linked_to_the_page_or_says_not_run_with_a_command(built):
    out, prov, items, html, md = built
    names = [i.name for i in items]
    assert set(BARG) <= set(names)
    shown = {n.removeprefix("prior: ") for n in names if n.startswith("prior: ")}
    # the NB model's priors are listed; those of parts it lacks (MSOAs, covariates, strata) are not
    assert {"intercept", "gradient", "la_deprivation", "cross_level", "la_sd", "la_corr", "dispersion"} <= shown
    assert not shown & {"msoa_sd", "obs_sd", "la_covariates", "stratum_effects", "la_loading", "la_stage_sd"}
    assert out.page.sections[-1].table["item"].tolist() == names  # the page shows the same list
    parser = cli.build_parser()
    for item in items:
        if item.status == "shown":
            assert item.command is None
            assert f"<section id='{item.anchor}'" in html, item
            assert f"<a href='#{item.anchor}'>" in html.split("id='reporting-checklist'")[1], item
        else:
            assert item.status == "not run" and item.anchor is None, item
            args = shlex.split(item.command)
            assert args[0] == "hierarchy"
            parser.parse_args(args[1:])  # a command the CLI accepts (SystemExit otherwise)
    status = {i.name: i.status for i in items}
    assert status["prior predictive summary"] == status["prior sensitivity (power scaling)"] == "not run"
    assert status["posterior predictive check"] == "shown"  # the table was given: deciles and count checks


def test_the_appendix_shows_each_item_with_its_justification_convergence_and_hashes(built):
    out, prov, items, html, md = built
    table = out.page.sections[-1].table
    assert list(table["item"]) == [i.name for i in items]
    assert "## Reporting checklist" in md and "id='reporting-checklist'" in html
    for item, where in zip(items, table["where"], strict=True):
        assert where.endswith(f"(#{item.anchor})") if item.anchor else where == f"run: {item.command}"
    description = prov["priors"]["description"]
    assert description and all(description in i.detail for i in items if i.name.startswith("prior: "))
    diag = report._load_checked(out.idata)[1]
    conv = next(i.detail for i in items if i.name == "convergence")
    assert f"max R-hat {diag['rhat_max']:.3f}" in conv and f"divergences {diag['divergences']}" in conv
    assert prov["data_hash"] in next(i.detail for i in items if i.name == "data hash")
    versions = next(i.detail for i in items if i.name == "software versions")
    assert all(f"{k} {v}" in versions for k, v in prov["versions"].items()) and prov["versions"]


def test_prior_justification_own_then_set_description_then_says_none():
    base = {"name": "mine", "gradient": {"dist": "Normal", "mu": 0.3, "sigma": 0.3},
            "la_sd": {"dist": "HalfNormal", "sigma": 0.5, "justification": "LA SDs of past studies"},
            "terms": {"w:rural": {"dist": "Normal", "mu": 0.0, "sigma": 0.2}}}
    bare = {i.name: i for i in checklist.prior_items(base)}
    assert bare["prior: gradient"].detail == ("Normal(mu=0.3, sigma=0.3); "
                                              "justification: no justification given in mine")
    assert bare["prior: la_sd"].detail.endswith("justification: LA SDs of past studies")
    assert bare["prior: terms.w:rural"].anchor == checklist.ANCHOR  # not in the Priors table: shown here
    described = {i.name: i for i in checklist.prior_items({**base, "description": "Weak."})}
    used = {i.name for i in checklist.prior_items(base, parameters=["gradient", "la_coef"])}
    assert used == {"prior: gradient", "prior: terms.w:rural"}  # la_sd: its parameter is not in the fit
    assert described["prior: gradient"].detail.endswith("justification: prior set mine: Weak.")


def test_an_item_pointing_at_a_missing_section_is_refused():
    prov = {"model_spec": {"name": "m"}, "priors": {"name": "p"}, "data_hash": "abc", "versions": {}}
    with pytest.raises(HierarchyError, match="diagnostics"):
        checklist.items(prov, {"status": "ok"}, [page.Section("Provenance", "provenance")], formula="y ~ x")


def test_each_shown_item_is_a_link_to_its_section_in_html_and_markdown():
    """Issue 32 item 5: the 'where' cell is an in-page link, not only text naming the anchor."""
    prov = {"model_spec": {"name": "m", "description": "rates by deprivation"},
            "priors": {"name": "p", "gradient": {"dist": "Normal", "mu": 0.3, "sigma": 0.3},
                       "terms": {"w:rural": {"dist": "Normal", "mu": 0.0, "sigma": 0.2}}},
            "data_hash": "abc", "versions": {"jax": "0.4"}, "data_source": "t.csv"}
    sections = [page.Section("Provenance & hashes", "provenance"), page.Section("Priors", "priors"),
                page.Section("Diagnostics", "diagnostics"), page.Section("Posterior summary", "summary")]
    items = checklist.items(prov, {"status": "ok", "rhat_max": 1.001}, sections, formula="y ~ w")
    appendix = checklist.section(items, sections)
    doc = page.Page("T", sections=(*sections, appendix))
    html, md = page.render_html(doc), page.render_markdown(doc)
    table_html = html.split("id='reporting-checklist'")[1]
    for item in items:
        if item.anchor:
            assert f"<a href='#{item.anchor}'>" in table_html, item
            assert f"<section id='{item.anchor}'" in html
    assert "<a href='#provenance'>Provenance &amp; hashes (#provenance)</a>" in table_html
    heading_slugs = {page.slug(s.title) for s in doc.sections}
    md_links = [part.split(")")[0] for part in md.split("](#")[1:]]
    assert md_links and set(md_links) <= heading_slugs  # every Markdown link lands on a heading
    assert "[Diagnostics (#diagnostics)](#diagnostics)" in md
    not_run = [i for i in items if i.status == "not run"]
    assert not_run and all(f"run: {i.command}" in md and i.command.startswith("hierarchy ") for i in not_run)

"""One page template for the report, the comparison pages and any other page the workbench writes.

A page is plain data (:class:`Page`): a title, an optional warning banner and status line, the
findings as short sentences (each may link to a table), figures with one-line captions, then
appendix sections of tables. :func:`render_html` writes it as one self-contained HTML file
(figures embedded, a print stylesheet so the browser's "Save as PDF" gives a clean document);
:func:`render_markdown` writes the same content as plain Markdown (pipe tables, figures as PNG
files beside it) that pastes into a word processor or a Quarto document. :func:`write_page`
writes both, atomically.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hierarchy.paths import atomic_path

__all__ = ["CSS", "Finding", "PageFigure", "Page", "Section", "markdown_table", "render_html",
           "render_markdown", "slug", "write_page"]

CSS = """
:root{--ink:#1a1a1a;--muted:#555;--rule:#d0d0d0;--ok:#e8f1fa;--okline:#0072B2;--warn:#fdf0e6;
--warnline:#D55E00}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;margin:1.5rem auto;
padding:0 1rem;color:var(--ink);line-height:1.45;overflow-wrap:break-word}
h1{font-size:1.6rem;margin:.2em 0 .4em}
h2{font-size:1.25rem;margin-top:2em;border-bottom:1px solid var(--rule)}
h3{font-size:1.05rem}
.status{border-left:6px solid var(--okline);background:var(--ok);padding:.5em .8em;margin:.8em 0}
.status.warn,.banner{border-left:6px solid var(--warnline);background:var(--warn)}
.banner{padding:.6em .8em;font-weight:bold}
.findings{font-size:1.05rem;border:1px solid var(--rule);border-radius:4px;padding:.4em 1.2em;margin:1em 0}
.findings h2{margin-top:.4em}
.findings ul{padding-left:1.2em}.findings li{margin:.35em 0}.findings a{font-size:.85em;white-space:nowrap}
.meta{color:var(--muted);font-size:.9em}code{font-size:.95em;overflow-wrap:anywhere}
figure{margin:1.2em 0;page-break-inside:avoid;break-inside:avoid}
figure img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:.92em;margin-top:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0 .6em;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid var(--rule);padding:2px 8px;text-align:right;vertical-align:top}
th{background:#f2f2f2}td:first-child,th:first-child,table.text td,table.text th{text-align:left}
.tablewrap{overflow-x:auto}.more{font-size:.85em;color:var(--muted)}
li.warn{color:#a63a00;font-weight:bold}
@media (max-width:40rem){body{font-size:15px;padding:0 .6rem}table{font-size:.78em}
.findings{padding:.2em .6em;font-size:1rem}}
@media screen and (max-width:40rem){h1{font-size:1.3rem}
figure{overflow-x:auto}figure img{max-width:none;width:36rem}}
@media print{
body{max-width:none;margin:0;font-size:10pt;color:#000}a{color:#000;text-decoration:none}
.findings a{display:none}h2{page-break-after:avoid;break-after:avoid}
section.appendix-start{page-break-before:always;break-before:page}
.tablewrap{overflow:visible}table{page-break-inside:auto}tr{page-break-inside:avoid}
thead{display:table-header-group}figure img{max-width:16cm}
.status,.banner,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""
"""The one stylesheet of every page: screen, phone width and print. On a phone the title is smaller
and breaks only between words and after ``_`` or ``/`` (:func:`_breakable`), and figures keep a width at
which their text is readable (36rem: 11 px for 10 pt text drawn at 150 dpi) and scroll sideways."""


@dataclass(frozen=True)
class Finding:
    """One sentence of the findings block; ``anchor`` is the id of the table it comes from."""

    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class PageFigure:
    """A figure: file stem, one-line caption saying what to read from it, PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """An appendix section: heading, paragraphs, bullet items, a text table and its full CSV.

    ``table`` is a frame of strings (already rounded); ``shown_rows`` and ``total_rows`` say
    that a long table was shortened (the CSV ``csv`` holds every row). ``links`` pairs a cell's
    text with the id of the section it points at: that cell becomes an in-page link (HTML
    ``#id``, Markdown ``#slug-of-the-title``).
    """

    title: str
    anchor: str
    paragraphs: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = None
    csv: str | None = None
    total_rows: int | None = None
    text_table: bool = False
    warn_words: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Page:
    """Everything a page shows, in the order it shows it."""

    title: str
    status: str | None = None
    status_ok: bool = True
    banner: str | None = None
    intro: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    figures: tuple[PageFigure, ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)
    figure_dir: str = "figures"


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (GitHub, Pandoc and Quarto read it) of a frame of strings."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = [cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |"
                              for row in frame.itertuples(index=False)])


def slug(title: str) -> str:
    """The identifier Pandoc, Quarto and GitHub give a Markdown heading (for in-page links)."""
    text = re.sub(r"[^\w\s-]", "", title.lower())
    return re.sub(r"\s+", "-", text.strip())


def _shortened(section: Section) -> str | None:
    if section.table is None or section.total_rows is None or section.total_rows <= len(section.table):
        return None
    where = f" (every row in {section.csv})" if section.csv else ""
    return f"{len(section.table)} of {section.total_rows:,} rows shown{where}."


def _cell(text: str) -> str:
    """A cell's text as :meth:`pandas.DataFrame.to_html` escapes it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _linked_html(table: str, links: tuple[tuple[str, str], ...]) -> str:
    for text, anchor in links:
        table = table.replace(f"<td>{_cell(text)}</td>",
                              f"<td><a href='#{html.escape(anchor)}'>{_cell(text)}</a></td>")
    return table


def _linked_markdown(table: pd.DataFrame, links: tuple[tuple[str, str], ...], slugs: dict[str, str]
                     ) -> pd.DataFrame:
    target = {text: slugs[anchor] for text, anchor in links if anchor in slugs}
    return table.map(lambda v: f"[{v}](#{target[v]})" if isinstance(v, str) and v in target else v) \
        if target else table


def _breakable(text: str) -> str:
    """Escaped text with line-break opportunities after ``_`` and ``/`` (model names, paths), so that a
    narrow screen breaks a title there instead of inside a word."""
    return re.sub(r"([_/])", r"\1<wbr>", html.escape(text))


def render_html(page: Page) -> str:
    """The page as one self-contained HTML document (figures embedded as base64 PNG)."""
    e = html.escape
    out = [f"<h1>{_breakable(page.title)}</h1>"]
    if page.banner:
        out.append(f"<p class='banner' role='alert'>{e(page.banner)}</p>")
    if page.status:
        out.append(f"<p class='status{'' if page.status_ok else ' warn'}' id='status'>{e(page.status)}</p>")
    out += [f"<p class='meta'>{e(t)}</p>" for t in page.intro]
    if page.findings:
        items = "".join(f"<li>{e(f.text)}" + (f" <a href='#{e(f.anchor)}'>[table]</a>" if f.anchor else "")
                        + "</li>" for f in page.findings)
        out.append(f"<section class='findings' id='findings'><h2>Findings</h2><ul>{items}</ul></section>")
    if page.figures:
        out.append("<h2 id='figures'>Figures</h2>")
        for i, fig in enumerate(page.figures, 1):
            b64 = base64.b64encode(fig.png).decode("ascii")
            out.append(f"<figure id='fig-{e(fig.name)}'><img alt='Figure {i}: {e(fig.caption)}' "
                       f"src='data:image/png;base64,{b64}'><figcaption><strong>Figure {i}.</strong> "
                       f"{e(fig.caption)}</figcaption></figure>")
    first = True
    for s in page.sections:
        cls = " class='appendix-start'" if first and (page.findings or page.figures) else ""
        first = False
        out.append(f"<section id='{e(s.anchor)}'{cls}><h2>{e(s.title)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        if s.items:
            out.append("<ul>" + "".join(
                f"<li{' class=warn' if any(w in t for w in s.warn_words) else ''}>{e(t)}</li>"
                for t in s.items) + "</ul>")
        if s.table is not None:
            table = s.table.to_html(index=False, escape=True, border=0, na_rep="",
                                    classes="text" if s.text_table else None)
            out.append(f"<div class='tablewrap'>{_linked_html(table, s.links)}</div>")
            note = _shortened(s)
            if note:
                link = f" <a href='{e(s.csv)}'>{e(s.csv)}</a>" if s.csv else ""
                out.append(f"<p class='more'>{e(note)}{link}</p>")
        elif s.csv:
            out.append(f"<p class='more'>Table: <a href='{e(s.csv)}'>{e(s.csv)}</a></p>")
        out.append("</section>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{e(page.title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(out) + "\n</body></html>\n")


def render_markdown(page: Page) -> str:
    """The page as plain Markdown: headings, bullet findings, figures as PNG files, pipe tables."""
    out = [f"# {page.title}"]
    if page.banner:
        out.append(f"> **{page.banner}**")
    if page.status:
        out.append(f"**{page.status}**")
    out += list(page.intro)
    slugs = {s.anchor: slug(s.title) for s in page.sections}
    if page.findings:
        out += ["## Findings", "\n".join(
            f"- {f.text}" + (f" ([table](#{slugs[f.anchor]}))" if f.anchor in slugs else "")
            for f in page.findings)]
    if page.figures:
        out.append("## Figures")
        prefix = f"{page.figure_dir}/" if page.figure_dir else ""
        for i, fig in enumerate(page.figures, 1):
            out.append(f"![{fig.name}]({prefix}{fig.name}.png)\n\n*Figure {i}. {fig.caption}*")
    for s in page.sections:
        out.append(f"## {s.title}")
        out += list(s.paragraphs)
        if s.items:
            out.append("\n".join(f"- {t}" for t in s.items))
        if s.table is not None:
            out.append(markdown_table(_linked_markdown(s.table, s.links, slugs)))
            note = _shortened(s)
            if note:
                out.append(f"*{note}*")
        elif s.csv:
            out.append(f"Table: [{s.csv}]({s.csv})")
    return "\n\n".join(out) + "\n"


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_page(page: Page, out: str | os.PathLike, *, html_name: str = "index.html",
               md_name: str = "index.md") -> Path:
    """Write the page's HTML and Markdown (and the figure PNGs the Markdown links to) into ``out``.

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    out = Path(out)
    fig_dir = out / page.figure_dir if page.figure_dir else out
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fig in page.figures:
        _atomic_write(fig_dir / f"{fig.name}.png", fig.png)
    _atomic_write(out / md_name, render_markdown(page).encode("utf-8"))
    _atomic_write(out / html_name, render_html(page).encode("utf-8"))
    return out / html_name

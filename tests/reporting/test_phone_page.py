"""At phone width the page title breaks between words, not inside one, and figure text stays readable
(issue 34 item 10), measured in headless Chromium."""

from __future__ import annotations

import io

from hierarchy.reporting import figures, page

PHONE = (390, 844)
PROBE = ("<script>window.addEventListener('load', () => {const r = {}, h = document.querySelector('h1');"
         "const parts = [];"  # every text piece of the title (between <wbr>s): lines each one spans
         "for (const node of h.childNodes) { if (node.nodeType !== 3) continue;"
         "  const re = /\\S+/g; let m; while ((m = re.exec(node.data))) {"
         "    const rg = document.createRange(); rg.setStart(node, m.index);"
         "    rg.setEnd(node, m.index + m[0].length);"
         "    const tops = new Set([...rg.getClientRects()].map(x => Math.round(x.top)));"
         "    if (tops.size > 1) parts.push(m[0]); } }"
         "r.brokenWords = parts.join(' ') || 'none';"
         "r.titleLines = Math.round(h.getBoundingClientRect().height"
         "  / parseFloat(getComputedStyle(h).lineHeight));"
         "const im = [...document.images];"
         "r.scales = im.map(i => (i.clientWidth / i.naturalWidth).toFixed(3)).join(',');"
         "r.overflowX = document.documentElement.scrollWidth > window.innerWidth + 1;"
         "parent.postMessage(r, '*');});</script>")


def _browse(html: str, folder, size) -> dict[str, str]:
    """The probe's results for ``html`` in headless Chromium (the report test's frame and runner)."""
    from tests.reporting.test_report import browse

    path = folder / "p.html"
    path.write_text(html)
    return browse(path, folder, size, probe=PROBE, expect="broken-words")[0]


def _figure() -> page.PageFigure:
    fig, ax = figures.new_figure()
    ax[0, 0].plot([1, 2, 3], [2, 1, 3])
    ax[0, 0].set_title("Typical LA: predicted rate by neighbourhood deprivation")
    return page.PageFigure("f", "a caption", figures.to_png(fig))


def test_title_breaks_between_words_and_figures_stay_readable_on_a_phone(tmp_path):
    doc = page.Page("Social-gradient report: inverse_intervention_nb_log / weakly_informative",
                    figures=(_figure(),), sections=(page.Section("Notes", "notes", ("text",)),))
    attrs = _browse(page.render_html(doc), tmp_path, PHONE)
    assert attrs["broken-words"] == "none"  # each piece between <wbr>s on one line
    assert int(attrs["title-lines"]) <= 3
    # 10 pt figure text drawn at 150 dpi is 20.8 px: shown at >= 0.53 of its size it is >= 11 px
    assert all(float(s) >= 0.53 for s in attrs["scales"].split(",")), attrs["scales"]
    assert attrs["overflow-x"] == "false"  # the figure scrolls inside itself, the page does not


def test_png_is_drawn_at_the_size_the_scale_assumes():
    import matplotlib.image

    png = _figure().png
    assert matplotlib.image.imread(io.BytesIO(png)).shape[1] == 1050  # 7 in x 150 dpi

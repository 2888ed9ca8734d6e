"""A tiny HTML page builder: escaped text, tables, embedded figures, no JavaScript.

The page is one self-contained file: styles inline, images as ``data:`` URIs, no external
reference of any kind, so it can be mailed, archived, or opened offline. Each level-2 heading
opens a ``<section>`` with a unique ``id``; the table of contents links to every one of them.
The styles keep the page readable on a phone (390 px wide): grids wrap, tables scroll
horizontally inside their own wrapper, long words break, so the page itself never scrolls
sideways.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Page", "data_uri", "esc", "figure_png", "table_html"]

_CSS = """
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;
margin:0 auto;padding:1em;color:#1d2327;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.4em}h4{margin:.6em 0 .3em}
.scroll{overflow-x:auto;max-width:100%;margin:.8em 0}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #d0d4d8;padding:.25em .6em;text-align:right;overflow-wrap:normal}
th{background:#f3f5f7}td.l,th.l{text-align:left;min-width:9em}
figure{margin:1em 0}figcaption{font-size:.85em;color:#444;margin-top:.3em}
img{max-width:100%;height:auto}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.note.warning{background:#fdecea;border-left-color:#d93025}
.muted{color:#666;font-size:.85em}code{background:#f3f5f7;padding:0 .2em}
nav ol{columns:2 16em;padding-left:1.4em}
.findings{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.2em 1em 1em}
.findings h2{margin-top:.6em}.findings ul{padding-left:1.2em}.findings li{margin:.35em 0}
.question{font-size:1.05em}
.check{list-style:none;margin-left:-1.2em}
.mark{display:inline-block;min-width:4.2em;font-weight:600;font-size:.85em;padding:0 .3em;
border-radius:3px;margin-right:.4em;text-align:center}
.mark.pass{background:#dff3e3;color:#1a7f37}.mark.warn{background:#fff1c2;color:#8a5a00}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,16rem),1fr));gap:.8em;margin:1em 0}
.sample{margin:0;padding:.4em;border:1px solid #e1e4e8;border-radius:4px;background:#fafbfc;min-width:0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.3em}
.pair img{display:block;width:100%;height:auto;aspect-ratio:1;object-fit:contain;background:#eee}
.pair img.map{image-rendering:pixelated}
.sidebyside{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,20rem),1fr));gap:1em}
.sidebyside .grid{grid-template-columns:repeat(auto-fill,minmax(min(100%,14rem),1fr))}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1em;padding:0;margin:.4em 0;list-style:none;font-size:.85em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em;border:1px solid #999}
"""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table_html(
    rows: Iterable[Sequence[Any]], header: Sequence[str], *, digits: int = 2, left: int = 1
) -> str:
    """An HTML table in a horizontally scrolling wrapper; the first ``left`` columns are
    left-aligned (labels)."""
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        out += [
            f'<td class="{"l" if i < left else ""}">{esc(_fmt(v, digits))}</td>'
            for i, v in enumerate(row)
        ]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def figure_png(fig: Any, *, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:48].rstrip("-") or "section"


@dataclass
class _Section:
    id: str
    title: str
    parts: list[str] = field(default_factory=list)
    cls: str = ""


class Page:
    """Accumulates sections of a report and renders one HTML document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._intro: list[str] = []
        self._sections: list[_Section] = []
        self._ids: set[str] = {"contents"}

    # ----------------------------------------------------------------- structure
    def unique_id(self, text: str) -> str:
        """A new element id made from ``text`` (suffixed until unique in the page)."""
        base = _slug(text)
        anchor, n = base, 1
        while anchor in self._ids:
            n += 1
            anchor = f"{base}-{n}"
        self._ids.add(anchor)
        return anchor

    def section(self, title: str, *, anchor: str | None = None, cls: str = "") -> str:
        """Open a new ``<section>`` (listed in the table of contents); return its id."""
        if anchor is None:
            anchor = self.unique_id(title)
        else:
            self._ids.add(anchor)
        self._sections.append(_Section(anchor, title, cls=cls))
        return anchor

    @property
    def _parts(self) -> list[str]:
        return self._sections[-1].parts if self._sections else self._intro

    @property
    def section_ids(self) -> list[str]:
        return [s.id for s in self._sections]

    def heading(self, text: str, level: int = 2) -> str:
        """Level 2 opens a section; deeper levels add a heading with an id; return the id."""
        if level <= 2:
            return self.section(text)
        anchor = self.unique_id(text)
        self._parts.append(f'<h{level} id="{anchor}">{esc(text)}</h{level}>')
        return anchor

    # ----------------------------------------------------------------- content
    def raw(self, markup: str) -> None:
        """Append markup built by the caller (which escapes what it embeds)."""
        self._parts.append(markup)

    def paragraph(self, text: str, *, cls: str | None = None) -> None:
        attr = f' class="{cls}"' if cls else ""
        self._parts.append(f"<p{attr}>{esc(text)}</p>")

    def note(self, text: str, *, warning: bool = False) -> None:
        cls = "note warning" if warning else "note"
        self._parts.append(f'<div class="{cls}">{esc(text)}</div>')

    def bullets(self, items: Iterable[str]) -> None:
        self._parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")

    def table(self, rows: Iterable[Sequence[Any]], header: Sequence[str], **kw: Any) -> None:
        self._parts.append(table_html(rows, header, **kw))

    def image(
        self, data: bytes, caption: str = "", *, alt: str = "", mime: str = "image/png"
    ) -> None:
        """A figure: the image, then its caption below it."""
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        alt = alt or caption or "figure"
        self._parts.append(
            f'<figure><img alt="{esc(alt)}" src="{data_uri(data, mime)}">{cap}</figure>'
        )

    def figure(self, fig: Any, caption: str = "", *, alt: str = "") -> None:
        self.image(figure_png(fig), caption, alt=alt)

    # ----------------------------------------------------------------- output
    def render(self) -> str:
        toc = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a></li>' for s in self._sections)
        nav = f'<nav id="contents" aria-label="Contents"><strong>Contents</strong><ol>{toc}</ol></nav>'
        body = []
        for n, s in enumerate(self._sections):
            cls = f' class="{s.cls}"' if s.cls else ""
            body.append(
                f'<section id="{s.id}"{cls}><h2>{esc(s.title)}</h2>'
                + "\n".join(s.parts)
                + "</section>"
            )
            if n == 0:  # the table of contents after the first section: the findings
                body.append(nav)
        if not self._sections:
            body.append(nav)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(self.title)}</h1>"
            + "\n".join(self._intro)
            + "</header>\n"
            + "\n".join(body)
            + "</body></html>\n"
        )

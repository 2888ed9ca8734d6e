"""A tiny HTML page builder: escaped text, tables, embedded PNG figures, no JavaScript.

The page is one self-contained file: styles inline, images as ``data:`` URIs, no external
reference of any kind, so it can be mailed, archived, or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Page", "figure_png", "table_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d2327;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.4em}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #d0d4d8;padding:.25em .6em;text-align:right}
th{background:#f3f5f7}td.l,th.l{text-align:left}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.note.warning{background:#fdecea;border-left-color:#d93025}.muted{color:#666;font-size:.85em}nav ul{columns:2}code{background:#f3f5f7;padding:0 .2em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def table_html(
    rows: Sequence[Sequence[Any]], header: Sequence[str], *, digits: int = 2, left: int = 1
) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (labels)."""
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        out += [
            f'<td class="{"l" if i < left else ""}">{_esc(_fmt(v, digits))}</td>'
            for i, v in enumerate(row)
        ]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


class Page:
    """Accumulates sections of a report and renders one HTML document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._body: list[str] = []
        self._toc: list[tuple[str, str]] = []

    def heading(self, text: str, level: int = 2) -> None:
        anchor = f"s{len(self._toc) + 1}"
        if level == 2:
            self._toc.append((anchor, text))
        self._body.append(f'<h{level} id="{anchor}">{_esc(text)}</h{level}>')

    def paragraph(self, text: str, *, cls: str | None = None) -> None:
        attr = f' class="{cls}"' if cls else ""
        self._body.append(f"<p{attr}>{_esc(text)}</p>")

    def note(self, text: str) -> None:
        self._body.append(f'<div class="note">{_esc(text)}</div>')

    def bullets(self, items: Iterable[str]) -> None:
        self._body.append("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>")

    def table(self, rows: Sequence[Sequence[Any]], header: Sequence[str], **kw: Any) -> None:
        self._body.append(table_html(rows, header, **kw))

    def image(self, png: bytes, caption: str = "", *, alt: str = "") -> None:
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        self._body.append(
            f'<figure><img alt="{_esc(alt or caption)}" src="data:image/png;base64,{data}">{cap}</figure>'
        )

    def figure(self, fig: Any, caption: str = "") -> None:
        self.image(figure_png(fig), caption)

    def render(self) -> str:
        toc = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t in self._toc)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_esc(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(self.title)}</h1><nav><ul>{toc}</ul></nav>"
            + "\n".join(self._body)
            + "</body></html>\n"
        )

"""Turning an artifact's visualizations into something a page can show.

Visualizations are untrusted input (anyone who can write an artifact, or an
imported stream, chose their bytes). Markdown is rendered with raw HTML
disabled and unsafe link schemes refused; csv becomes an escaped table; json
is pretty-printed text; images and html are never inlined into a page: they
are served from their own URL with a ``sandbox`` content security policy, and
html is shown in an ``<iframe sandbox>``, so its scripts run, if at all, in
an opaque origin that cannot reach the dashboard.
"""

from __future__ import annotations

import csv
import io
import json
from html import escape
from typing import Any

MAX_ROWS = 200
MAX_TEXT = 200_000
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".bmp": "image/bmp",
}


def image_type(name: str, data: bytes) -> str:
    """The image's MIME type, from its magic bytes, else its name."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    dot = name.rfind(".")
    return (
        IMAGE_TYPES.get(name[dot:].lower(), "application/octet-stream")
        if dot >= 0
        else ("application/octet-stream")
    )


def _text(data: bytes) -> str:
    return data[:MAX_TEXT].decode("utf-8", "replace")


def markdown_html(text: str) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return str(md.render(text))


def csv_table(text: str) -> tuple[list[str], list[list[str]], bool]:
    """Header, up to ``MAX_ROWS`` rows, and whether rows were left out."""
    reader = csv.reader(io.StringIO(text))
    rows: list[list[str]] = []
    cut = False
    for row in reader:
        if len(rows) > MAX_ROWS:
            cut = True
            break
        rows.append(row)
    if not rows:
        return [], [], False
    return rows[0], rows[1:], cut


def describe(name: str, kind: str, data: bytes) -> dict[str, Any]:
    """What a page needs for one visualization; ``_html`` is safe, escaped HTML."""
    out: dict[str, Any] = {"name": name, "kind": kind, "size": len(data)}
    if kind == "markdown":
        out["_html"] = markdown_html(_text(data))
    elif kind == "csv":
        header, rows, cut = csv_table(_text(data))
        head = "".join(f"<th>{escape(c)}</th>" for c in header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        more = f'<p class="note">first {MAX_ROWS} rows shown</p>' if cut else ""
        out["_html"] = (
            f'<table class="csv"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'
        )
    elif kind == "json":
        try:
            text = json.dumps(json.loads(data), indent=2, sort_keys=True)[:MAX_TEXT]
        except ValueError:
            text = _text(data)
        out["_html"] = f'<pre class="json">{escape(text, quote=False)}</pre>'
    elif kind == "image":
        out["mime"] = image_type(name, data)
    elif kind != "html":
        out["_html"] = f"<pre>{escape(_text(data))}</pre>"
    return out

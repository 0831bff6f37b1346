"""Visualizations are untrusted: what the dashboard makes of each kind."""

from __future__ import annotations

import pytest

pytest.importorskip("markdown_it")

from engine.ui.visuals import MAX_ROWS, describe, image_type


def test_markdown_has_no_raw_html_or_script_links() -> None:
    html = describe("m.md", "markdown", b"# T\n\n[x](javascript:alert(1)) <img src=x onerror=y>")[
        "_html"
    ]
    assert "<h1>T</h1>" in html
    assert "<img" not in html and 'href="javascript:' not in html


def test_csv_is_an_escaped_table_cut_at_max_rows() -> None:
    rows = "\n".join(f"{i},<b>{i}</b>" for i in range(MAX_ROWS + 50))
    out = describe("t.csv", "csv", f"n,html\n{rows}".encode())["_html"]
    assert out.count("<tr>") == MAX_ROWS + 1 and "<b>" not in out and "first 200 rows" in out


def test_json_pretty_or_text_and_images_by_magic() -> None:
    assert '"a": 1' in describe("j.json", "json", b'{"a":1}')["_html"]
    assert "&lt;not json" in describe("j.json", "json", b"<not json")["_html"]
    assert image_type("x.bin", b"\x89PNG....") == "image/png"
    assert image_type("x.jpg", b"??") == "image/jpeg"
    assert image_type("x", b"??") == "application/octet-stream"
    assert "_html" not in describe("p.html", "html", b"<script>")

"""Every ```python block in README.md and docs/*.md runs (blocks of one file share a namespace).

Fragments that are not meant to run use another fence label (```text, ```pycon).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Docs whose blocks need servers: their own tests run them against real ones.
ON_SERVERS = {"shared.md": "tests/test_shared_store.py runs them on PostgreSQL and S3"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_snippets_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if doc.name in ON_SERVERS:
        pytest.skip(ON_SERVERS[doc.name])
    blocks = BLOCK.findall(doc.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{doc.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARTLEDGER_STORE", str(tmp_path / "store"))
    namespace: dict[str, object] = {"__name__": f"doc_{doc.stem}"}
    import engine.api

    monkeypatch.setattr(engine.api, "_default", None)
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{doc.name}[block {i}]", "exec"), namespace)
    finally:
        default = engine.api._default
        if default is not None:
            default.close()

"""engine/'s layer rules (pyproject's import-linter contracts) hold, and no
engine module imports another in a cycle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import-linter's command, run by the interpreter running the tests (its script
# may not be on PATH, e.g. in a virtualenv that is not activated).
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
]


def test_import_linter_contracts_are_kept() -> None:
    result = subprocess.run(
        [*LINT_IMPORTS, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_lint_imports_catches_an_upward_import(tmp_path: Path) -> None:
    """The contracts can fail: a storage module importing the store breaks them."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "engine", copy / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "materializers", copy / "materializers", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "engine" / "storage" / "upward.py"
    bad.write_text("from engine.store import Store\n")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [*LINT_IMPORTS, "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode != 0
    assert "engine.storage.upward -> engine.store" in result.stdout

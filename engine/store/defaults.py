"""Where a store is when no path is given."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = ".artledger"


def default_path() -> Path:
    """``$ARTLEDGER_STORE``, else ``./.artledger``."""
    return Path(os.environ.get("ARTLEDGER_STORE") or DEFAULT_DIR)

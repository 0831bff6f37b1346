"""Optional dependencies: import them, or say which extra installs them."""

from __future__ import annotations

import importlib
from typing import Any


def require(module: str, extra: str) -> Any:
    """Import ``module``, or raise an ``ImportError`` naming the extra that installs
    it (``pip install 'artledger[EXTRA]'``). Materializer modules call it at import,
    so a store holding their artifacts, opened where the library is missing, says
    what to install (the registry puts this message in its ``MaterializerError``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed, and this artifact needs it: install it with "
            f"`pip install 'artledger[{extra}]'` (or `pip install {module}`)."
        ) from exc

"""Scenario 9: peers (ZenML, MLflow) when installed, side by side."""

from __future__ import annotations

import importlib.util
from typing import Any

from bench.common import Context, Result

TITLE = "Optional peers"
ABOUT = (
    "The same small pipeline and a 100 MiB save_artifact through ZenML and MLflow, when they "
    "are installed in this environment."
)
PARAMS: dict[str, dict[str, Any]] = {"tiny": {}, "small": {}, "full": {}}


def run(ctx: Context) -> Result:
    res = Result("peers", TITLE, ABOUT)
    missing = [m for m in ("zenml", "mlflow") if importlib.util.find_spec(m) is None]
    if missing:
        res.skipped = (
            f"{' and '.join(missing)} not installed here; install them into this environment "
            "to compare. Figures measured earlier on this machine are in shared/PEERS.md "
            "(ZenML: import 1.2 s, 75 ms per executed step, 39 ms per cached step, 100 MiB "
            "save_artifact ~274 MiB/s, small save_artifact 21 ms)."
        )
    else:
        res.skipped = "peer runners are not implemented yet."
    return res

"""artledger's benchmark harness: ``python -m bench --size tiny|small|full``.

Each scenario module measures artledger and the tools people use instead in
the same run, and reports ratios (medians of repeats). ``tests/test_bench.py``
runs every scenario at ``tiny`` size so the harness cannot rot.
"""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    "core": "bench.core",
    "large_arrays": "bench.large_arrays",
    "small_artifacts": "bench.small_artifacts",
    "versioned": "bench.versioned",
    "pipelines": "bench.pipelines",
    "history": "bench.history",
    "concurrency": "bench.concurrency",
    "materializers": "bench.materializer_io",
    "transfer": "bench.transfer",
    "peers": "bench.peers",
    "models": "bench.models",
    "dataframes": "bench.dataframes",
    "shared": "bench.shared",
    "codecs": "bench.codecs",
}
"""Scenario name -> module (each has TITLE, ABOUT, PARAMS and run(ctx))."""

REPEATS = {"tiny": 1, "small": 3, "full": 5}

"""``python -m bench --size tiny|small|full --out bench/results/ [--only SCENARIO ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import SCENARIOS
from bench.common import SIZES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--only", nargs="+", choices=list(SCENARIOS), metavar="SCENARIO")
    args = ap.parse_args(argv)
    from bench.runner import run_all

    doc = run_all(args.size, args.out, args.only, argv)
    failed = [s["name"] for s in doc["scenarios"] if s["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

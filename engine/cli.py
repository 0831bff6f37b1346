"""The ``artledger`` command."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from engine.errors import ArtledgerError
from engine.store import Store


def _demo(store: Store) -> None:
    rng = np.random.default_rng(0)
    big = rng.random(1 << 20)
    for _ in range(2):
        store.save_artifact(big, "demo.features")
    store.save_artifact({"lr": 0.01, "epochs": 3}, "demo.config")
    for a in store.list_artifacts():
        print(f"{a.name}:{a.version}  {a.size} bytes  {a.content_hash}")
    st = store.stats()
    print(f"events {st['events']}  logical {st['logical_bytes']}  stored {st['stored_bytes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="artledger")
    parser.add_argument("--store", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo")
    sub.add_parser("stats")
    sub.add_parser("log")
    args = parser.parse_args(argv)
    try:
        with Store.open(args.store) as store:
            if args.command == "demo":
                _demo(store)
            elif args.command == "stats":
                for k, v in store.stats().items():
                    print(f"{k}: {v}")
            else:
                for e in store.events():
                    print(e.seq, e.type, e.data.get("name", ""))
    except ArtledgerError as e:
        print(f"artledger: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

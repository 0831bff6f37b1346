"""Scenario 8: containers through the materializers against pickle + file."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import (
    Context,
    MiB,
    Result,
    Row,
    median_time,
    new_path,
    pickle_load,
    pickle_save,
)

TITLE = "Materializers"
ABOUT = (
    "A list of 1,000 small float64 arrays and a dict of 10 large ones, saved with "
    "`save_artifact` (element by element, each array as its own .npy; fresh store per "
    "repeat) and loaded back, against pickle (protocol 5) to a file + fsync, and "
    "pickle.load, in the same run."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"small_n": 100, "small_len": 128, "big_mib": 1},
    "small": {"small_n": 1000, "small_len": 128, "big_mib": 8},
    "full": {"small_n": 1000, "small_len": 128, "big_mib": 32},
}


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("materializers", TITLE, ABOUT)
    rng = np.random.default_rng(5)
    cases = {
        f"list of {p['small_n']:,} arrays of {p['small_len']} float64": [
            rng.random(p["small_len"]) for _ in range(p["small_n"])
        ],
        f"dict of 10 arrays of {p['big_mib']} MiB": {
            f"layer{i}": rng.random(p["big_mib"] * MiB // 8) for i in range(10)
        },
    }
    with ctx.tempdir("mat") as tmp:
        for label, obj in cases.items():
            ctx.log(f"materializers: {label}")
            stores: list[Any] = []

            def fresh(stores: list[Any] = stores) -> Any:
                if stores:
                    stores[-1].close()
                stores.append(Store.open(tmp / f"s{len(stores)}"))
                return stores[-1]

            save = median_time(lambda s, o=obj: s.save_artifact(o, "obj"), ctx.repeats, fresh)
            psave = median_time(
                lambda _, o=obj: pickle_save(o, new_path(tmp, "o.pkl")), ctx.repeats
            )
            pickle_save(obj, tmp / "o.pkl")  # the file the load baseline reads
            s = stores[-1]
            back = s.load_artifact("obj")
            assert type(back) is type(obj) and len(back) == len(obj)
            load = median_time(lambda _, s=s: s.load_artifact("obj"), ctx.repeats)
            pload = median_time(lambda _: pickle_load(tmp / "o.pkl"), ctx.repeats)
            res.add(Row(f"{label}: save", save * 1e3, "ms", psave * 1e3, "pickle+fsync"))
            res.add(Row(f"{label}: load", load * 1e3, "ms", pload * 1e3, "pickle.load"))
            s.close()
    res.notes.append("Loads are from the page cache.")
    return res

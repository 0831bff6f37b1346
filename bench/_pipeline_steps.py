"""Trivial steps and pipelines for the pipeline scenario (imported only when
``engine.step``/``engine.pipeline`` exist)."""

from __future__ import annotations

import time

from engine import pipeline, step


def inc_plain(x: int) -> int:
    """The same work as ``inc``, for the joblib.Memory baseline."""
    return x + 1


@step
def start(n: int = 0) -> int:
    return n


@step
def inc(x: int) -> int:
    return x + 1


@step
def leaf(x: int, k: int = 0) -> int:
    return x + k


def work_plain(x: int, ms: float = 50.0) -> int:
    """The same work as ``work``, called directly (the 50 ms step's baseline)."""
    time.sleep(ms / 1000)
    return x + 1


@step
def work(x: int, ms: float = 50.0) -> int:
    time.sleep(ms / 1000)
    return x + 1


@pipeline(name="bench_chain")
def chain(n: int = 0, length: int = 10) -> None:
    x = start(n=n)
    for _ in range(length - 1):
        x = inc(x)


@pipeline(name="bench_fanout")
def fanout(n: int = 0, width: int = 10) -> None:
    x = start(n=n)
    for k in range(width - 1):
        leaf(x, k=k)


@pipeline(name="bench_work")
def work_chain(n: int = 0, length: int = 10, ms: float = 50.0) -> None:
    x = start(n=n)
    for _ in range(length):
        x = work(x, ms=ms)

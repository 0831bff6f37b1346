"""Trivial steps and pipelines for the pipeline scenario (imported only when
``engine.step``/``engine.pipeline`` exist)."""

from __future__ import annotations

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

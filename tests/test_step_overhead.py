"""The shortcuts on a step's path give exactly what the general code gives.

A cache key's body is encoded without the general canonical encoder, a key is
computed once per components object, and a miss compares the key fields
instead of hashing both sides: each must agree with the general path
(Hypothesis, over the shapes the runner builds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.pipelines.cache_key import KeyComponents, explain_difference
from engine.pipelines.canonical import canonical, canonical_flat, digest

texts = st.text(max_size=12)
str_maps = st.dictionaries(texts, texts, max_size=4)
scalars = st.one_of(st.none(), texts, st.integers(-(2**70), 2**70))
bodies = st.dictionaries(texts, st.one_of(scalars, str_maps, st.lists(st.integers(), max_size=2)))


@given(bodies)
def test_the_flat_encoding_is_the_canonical_one(body: dict[str, Any]) -> None:
    assert canonical_flat(body) == canonical(body)


components = st.builds(
    KeyComponents,
    code=st.sampled_from(["c1", "c2"]),
    code_recipe=st.just({}),
    parameters=st.dictionaries(st.sampled_from("ab"), st.sampled_from(["p", "q"]), max_size=2),
    parameter_values=st.just({}),
    inputs=st.dictionaries(st.sampled_from("xy"), st.sampled_from(["h1", "h2"]), max_size=2),
    outputs=st.dictionaries(st.sampled_from(["output"]), st.sampled_from(["m1", "m2"])),
    cache_version=st.sampled_from([None, "1", "2"]),
)


def _general_key(c: KeyComponents) -> str:
    body = canonical(
        {
            "code": c.code,
            "parameters": c.parameters,
            "inputs": c.inputs,
            "outputs": c.outputs,
            "cache_version": c.cache_version,
            "format_version": c.format_version,
        }
    )
    return digest(b"artledger.cache_key", body)


@given(components, components)
def test_key_shortcuts_agree_with_the_general_key(a: KeyComponents, b: KeyComponents) -> None:
    assert a.key() == _general_key(a)
    assert a.key() == a.key()  # computed once, then kept
    assert a.same_key(b) == (_general_key(a) == _general_key(b))
    assert (explain_difference(a, b, "s") == []) == (_general_key(a) == _general_key(b))
    changed = dataclasses.replace(a, inputs={**a.inputs, "z": "new"})
    assert changed.key() == _general_key(changed) != a.key()
    for inputs in (b.inputs, {}, {"z": "new"}):  # the runner's path: shared encoded fields
        step = a.with_inputs(dict(inputs))
        assert step == dataclasses.replace(a, inputs=dict(inputs))
        assert step.key() == _general_key(step)

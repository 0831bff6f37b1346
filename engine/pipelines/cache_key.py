"""A step's cache key, its components, and why two keys differ.

A step's cache key is xxh3-128 over a canonical msgpack of its code fingerprint,
its parameters, the content hashes of its inputs, its outputs' materializer
identities, its ``cache_version`` and :data:`CACHE_FORMAT_VERSION`
(:class:`KeyComponents`). Every step run records its components, so a miss can
be explained field by field (:func:`explain_difference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import InvalidArgumentError
from engine.pipelines.canonical import (
    INT_MAX,
    INT_MIN,
    canonical,
    canonical_flat,
    digest,
    flat_dict,
    flat_pairs,
    pack,
    short_repr,
)
from engine.pipelines.fingerprint import CELL_PREFIX, CodeFingerprint, code_fingerprint

__all__ = [
    "CACHE_FORMAT_VERSION",
    "KeyComponents",
    "ParameterRepr",
    "explain_difference",
]

CACHE_FORMAT_VERSION = 1
"""Bump when anything that feeds a cache key changes meaning; old keys then miss."""
_RECORD_VERSION = 1
_VALUE_DISPLAY_LIMIT = 256  # packed bytes above which parameter_values keeps a short repr


class ParameterRepr(str):
    """A parameter shown by its (shortened) repr because its value is big or not plain."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _is_plain(value: Any, depth: int = 0) -> bool:
    t = type(value)
    if value is None or t in (bool, float, str, bytes):
        return True
    if t is int:
        return bool(INT_MIN <= value <= INT_MAX)
    if depth > 8:
        return False
    if t is list:
        return all(_is_plain(x, depth + 1) for x in value)
    if t is dict:
        return all(type(k) is str and _is_plain(x, depth + 1) for k, x in value.items())
    return False


def _display_value(value: Any) -> Any:
    if _is_plain(value) and len(pack(value)) <= _VALUE_DISPLAY_LIMIT:
        return value
    return ParameterRepr(short_repr(value))


@dataclasses.dataclass(frozen=True)
class KeyComponents:
    """Everything a step's cache key is made of, kept so a miss can be explained.

    :meth:`key` hashes all fields except ``parameter_values`` (shown in
    explanations only) and ``code_recipe`` (a record; ``code`` covers it).
    """

    code: str
    code_recipe: dict[str, str]
    parameters: dict[str, str]
    parameter_values: dict[str, Any]
    inputs: dict[str, str]
    outputs: dict[str, str]
    cache_version: str | None
    format_version: int = CACHE_FORMAT_VERSION
    code_root: str = ""  # recipe key of the step itself; "" means the recipe's first key
    # output -> the materializer that saved it (known once the step ran; not in the key)
    saved_with: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls,
        func: Callable[..., Any],
        *,
        step_name: str,
        parameters: Mapping[str, Any],
        inputs: Mapping[str, str],
        outputs: Mapping[str, str],
        cache_version: str | int | None = None,
        fingerprint: CodeFingerprint | None = None,
    ) -> KeyComponents:
        """Build the components of ``func``'s cache key; unencodable parameters raise.
        ``fingerprint``: ``code_fingerprint(func)`` when the caller has it already."""
        if fingerprint is None:
            fingerprint = code_fingerprint(func)
        return cls(
            code=fingerprint.digest,
            code_recipe=dict(fingerprint.recipe),
            parameters={
                name: digest(canonical(value, name, step=step_name))
                for name, value in parameters.items()
            },
            parameter_values={name: _display_value(v) for name, v in parameters.items()},
            inputs=dict(inputs),
            outputs=dict(outputs),
            cache_version=None if cache_version is None else str(cache_version),
            code_root=fingerprint.root,
        )

    def key(self) -> str:
        """The cache key: xxh3-128 hex over the canonical encoding of the components
        (computed once per instance: the fields are immutable by contract)."""
        cached: str | None = self.__dict__.get("_key")
        if cached is None:
            cached = self._compute_key()
            object.__setattr__(self, "_key", cached)
        return cached

    def same_key(self, other: KeyComponents) -> bool:
        """``self.key() == other.key()`` without hashing: the key's fields are
        equal (str maps and str/None/int scalars encode canonically one way)."""
        return (
            self.code == other.code
            and self.parameters == other.parameters
            and self.inputs == other.inputs
            and self.outputs == other.outputs
            and self.cache_version == other.cache_version
            and type(self.format_version) is type(other.format_version)
            and self.format_version == other.format_version
        )

    def with_inputs(self, inputs: dict[str, str]) -> KeyComponents:
        """These components with ``inputs`` (content hashes); the key's other
        fields are encoded once, on the first such copy, and shared."""
        fixed = self.__dict__.get("_fixed")
        if fixed is None:
            fixed = flat_pairs(self._key_fields(include_inputs=False))
            object.__setattr__(self, "_fixed", fixed)
        out = dataclasses.replace(self, inputs=inputs)
        object.__setattr__(out, "_fixed", fixed)
        return out

    def _key_fields(self, include_inputs: bool = True) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "code": self.code,
            "parameters": self.parameters,
            "outputs": self.outputs,
            "cache_version": self.cache_version,
            "format_version": self.format_version,
        }
        if include_inputs:
            fields["inputs"] = self.inputs
        return fields

    def _compute_key(self) -> str:
        fixed = self.__dict__.get("_fixed")
        inputs = None if fixed is None else flat_pairs({"inputs": self.inputs})
        if fixed is not None and inputs is not None:
            body = flat_dict(fixed + inputs)
        else:
            body = canonical_flat(self._key_fields())
        return digest(b"artledger.cache_key", body)

    def to_record(self) -> dict[str, Any]:
        """A msgpack-able dict (the ``step.*`` events store it); see :meth:`from_record`."""
        return {
            "v": _RECORD_VERSION,
            "code": self.code,
            "code_root": self.code_root,
            "code_recipe": dict(self.code_recipe),
            "parameters": dict(self.parameters),
            "parameter_values": {
                k: str(v) if isinstance(v, ParameterRepr) else v
                for k, v in self.parameter_values.items()
            },
            "parameter_reprs": [
                k for k, v in self.parameter_values.items() if isinstance(v, ParameterRepr)
            ],
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "cache_version": self.cache_version,
            "format_version": self.format_version,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> KeyComponents:
        """Rebuild components from :meth:`to_record` output (after a msgpack round trip)."""
        if not isinstance(record, Mapping) or record.get("v") != _RECORD_VERSION:
            version = record.get("v") if isinstance(record, Mapping) else None
            raise InvalidArgumentError(
                f"cache key record has version {version!r}; this artledger reads version "
                f"{_RECORD_VERSION}: upgrade artledger or rebuild the store"
            )
        reprs = set(_field(record, "parameter_reprs", list))
        values = _field(record, "parameter_values", dict)
        cache_version = record.get("cache_version")
        if cache_version is not None and not isinstance(cache_version, str):
            raise InvalidArgumentError("cache key record field `cache_version` must be a str")
        return cls(
            code=_field(record, "code", str),
            code_recipe=_str_map(record, "code_recipe"),
            parameters=_str_map(record, "parameters"),
            parameter_values={k: ParameterRepr(v) if k in reprs else v for k, v in values.items()},
            inputs=_str_map(record, "inputs"),
            outputs=_str_map(record, "outputs"),
            cache_version=cache_version,
            format_version=_field(record, "format_version", int),
            code_root=_field(record, "code_root", str),
            saved_with=_str_map(record, "materializers") if "materializers" in record else {},
        )


def _field(record: Mapping[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if not isinstance(value, kind):
        raise InvalidArgumentError(
            f"cache key record field `{name}` must be a {kind.__name__}, got {short_repr(value)}"
        )
    return value


def _str_map(record: Mapping[str, Any], name: str) -> dict[str, str]:
    value = _field(record, name, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgumentError(f"cache key record field `{name}` must map str to str")
    return dict(value)


# --------------------------------------------------------------------------- explain


def _show(value: Any) -> str:
    return short_repr(value)


def _code_label(key: str) -> str:
    return key.partition(":")[2].partition("#")[0]


def _root_key(components: KeyComponents) -> str | None:
    if components.code_root:
        return components.code_root
    return next(iter(components.code_recipe), None)


def _paired(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(label, before, after) per recipe entry; a key missing on one side pairs by label
    (the same function or constant in a renamed module)."""
    unmatched = {k: v for k, v in old.items() if k not in new}
    pairs: list[tuple[str, str | None, str | None]] = []
    for key, value in new.items():
        label = _code_label(key)
        before = old.get(key)
        if key not in old:
            moved = next((k for k in unmatched if _code_label(k) == label), None)
            before = unmatched.pop(moved) if moved is not None else None
        pairs.append((label, before, value))
    return pairs + [(_code_label(k), v, None) for k, v in unmatched.items()]


def _change(before: str | None, after: str | None) -> str:
    return "added" if before is None else "removed" if after is None else "changed"


def _code_reasons(old: KeyComponents, new: KeyComponents, step_name: str) -> list[str]:
    if old.code == new.code:
        return []
    old_root, new_root = _root_key(old), _root_key(new)
    step_changed = f"code of step {step_name}() changed"
    if old_root not in old.code_recipe or new_root not in new.code_recipe:
        return [step_changed]  # recipes were not kept
    reasons: list[str] = []
    if old.code_recipe[old_root] != new.code_recipe[new_root]:
        reasons.append(step_changed)

    def split(recipe: dict[str, str], root: str, data: bool) -> dict[str, str]:
        return {k: v for k, v in recipe.items() if k != root and (":" in v) == data}

    code = _paired(split(old.code_recipe, old_root, False), split(new.code_recipe, new_root, False))
    reasons += [f"code of {label}() {_change(b, a)}" for label, b, a in code if b != a]
    data = _paired(split(old.code_recipe, old_root, True), split(new.code_recipe, new_root, True))
    for label, before, after in data:
        if before == after:
            continue
        if (after or before or "").startswith(CELL_PREFIX):
            owner, _, var = label.rpartition(".")
            reasons.append(f"closure variable {var} of {owner}() {_change(before, after)}")
        else:
            reasons.append(f"module constant {label} {_change(before, after)}")
    return reasons or [step_changed]


def explain_difference(old: KeyComponents | None, new: KeyComponents, step_name: str) -> list[str]:
    """Why ``new`` misses the cache of ``old``, most important first; [] when keys are equal."""
    if old is None:
        return ["no earlier run"]
    if old.same_key(new):
        return []
    reasons: list[str] = []
    for name, value in new.parameters.items():
        if name not in old.parameters:
            reasons.append(f"parameter {name}: added")
        elif old.parameters[name] != value:
            if name in old.parameter_values and name in new.parameter_values:
                before, after = old.parameter_values[name], new.parameter_values[name]
                reasons.append(f"parameter {name}: {_show(before)} -> {_show(after)}")
            else:
                reasons.append(f"parameter {name}: changed")
    reasons += [f"parameter {n}: removed" for n in old.parameters if n not in new.parameters]
    for name, value in new.inputs.items():
        if name not in old.inputs:
            reasons.append(f"input {name}: added")
        elif old.inputs[name] != value:
            reasons.append(f"input {name}: new content")
    reasons += [f"input {n}: removed" for n in old.inputs if n not in new.inputs]
    reasons += _code_reasons(old, new, step_name)
    for name, value in new.outputs.items():
        if name not in old.outputs:
            reasons.append(f"output {name}: added")
        elif old.outputs[name] != value:
            before = old.saved_with.get(name, old.outputs[name])
            reasons.append(f"output {name}: materializer changed ({before} -> {value})")
    reasons += [f"output {n}: removed" for n in old.outputs if n not in new.outputs]
    if old.cache_version != new.cache_version:
        reasons.append(f"cache_version: {old.cache_version!r} -> {new.cache_version!r}")
    if old.format_version != new.format_version:
        reasons.append("cache format version changed")
    return reasons or ["cache key changed"]

"""torch tensors and modules as safetensors files, never pickle.

* ``torch.Tensor`` (and ``nn.Parameter``) -> ``tensor.safetensors`` holding
  one tensor named ``tensor``; ``requires_grad`` and the device it was on are
  in the file's ``__metadata__``. It loads on the CPU.
* ``nn.Module`` -> ``model.safetensors``: its ``state_dict()`` (parameters and
  buffers, in order), with the module's class (``"module:QualName"``) and its
  ``training`` flag in ``__metadata__``. Loading imports the class (the
  registry's rules for untrusted artifacts apply), builds it with no
  arguments and ``load_state_dict(strict=True)``. A module whose constructor
  needs arguments cannot be rebuilt that way: this materializer declines it
  (``can_handle_type``), so it falls back to the signed pickle with the usual
  warning (save ``dict(model.state_dict())`` instead).
* ``model.state_dict()`` (an ``OrderedDict`` whose keys are ``str`` and whose
  values are all plain tensors; the registry picks this materializer by value,
  see :func:`materializers.registry.materializer_for_value`) ->
  ``state_dict.safetensors``, the tensors in order; the dict's ``_metadata``
  (the module versions ``load_state_dict`` reads) is kept in ``__metadata__``.
  It loads as an ``OrderedDict`` of CPU tensors. Other ``OrderedDict`` values
  are not this materializer's (they fall back to the signed pickle).
* A ``dict`` of tensors (``dict(model.state_dict())``) is a container of
  tensors: each is its own ``.safetensors`` file (the built-in container
  materializer).

Tensors are streamed: written from their memory (copied only when not
contiguous or not on the CPU) and read straight into freshly allocated
tensors. Sparse, quantized and complex tensors are refused.

This module imports torch; the registry imports it only when a torch type is
looked up.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final

from engine.errors import MaterializerError

try:
    import torch
except ImportError as exc:  # a store holding tensors opened without torch
    raise MaterializerError(
        f"Loading or saving torch tensors and modules needs torch ({exc}): "
        "pip install 'artledger[torch]'."
    ) from exc

from materializers import registry, safetensors_io
from materializers.base import BaseMaterializer

TENSOR_FILE: Final = "tensor.safetensors"
MODEL_FILE: Final = "model.safetensors"
STATE_DICT_FILE: Final = "state_dict.safetensors"
VERSIONS_KEY: Final = "state_dict_metadata"
PREVIEW_MAX_ROWS: Final = 200

_CODES: Final[dict[torch.dtype, str]] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
):
    if hasattr(torch, _name):
        _CODES[getattr(torch, _name)] = _code
_DTYPES: Final = {code: dtype for dtype, code in _CODES.items()}
_CONTAINERS: Final = (
    torch.nn.Sequential,
    torch.nn.ModuleList,
    torch.nn.ModuleDict,
    torch.nn.ParameterList,
    torch.nn.ParameterDict,
)


def _as_entry(name: str, tensor: torch.Tensor) -> safetensors_io.Tensor:
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise MaterializerError(
            f"tensor {name!r} is {tensor.layout} (quantized: {tensor.is_quantized}); "
            "safetensors holds dense tensors: save tensor.to_dense() (or dequantize()) instead."
        )
    code = _CODES.get(tensor.dtype)
    if code is None:
        raise MaterializerError(
            f"tensor {name!r} has dtype {tensor.dtype}, which safetensors lacks"
        )
    dense = tensor.detach().to("cpu").contiguous()
    raw = dense.reshape(-1).view(torch.uint8).numpy()
    return safetensors_io.Tensor(name, code, tuple(dense.shape), raw.data)


def _tensors(state: Mapping[str, torch.Tensor]) -> Iterator[safetensors_io.Tensor]:
    for name, tensor in state.items():
        yield _as_entry(name, tensor)


def _read(
    materializer: BaseMaterializer, file: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with materializer.open(file, "rb") as f:
        entries, metadata = safetensors_io.read_header(f, file)
        out: dict[str, torch.Tensor] = {}
        for e in entries:
            if e.dtype not in _DTYPES:
                raise MaterializerError(f"{file}: this torch has no dtype {e.dtype}")
            out[e.name] = torch.empty(e.shape, dtype=_DTYPES[e.dtype])

        def target(e: safetensors_io.TensorEntry) -> memoryview:
            view: memoryview = out[e.name].reshape(-1).view(torch.uint8).numpy().data
            return view

        safetensors_io.read_data(f, entries, target, file)
    return out, metadata


def _build(cls: Any, topic: str) -> Any:
    try:
        return cls()
    except TypeError as exc:
        raise MaterializerError(
            f"Cannot rebuild `{topic}`: {cls.__qualname__}() failed ({exc}). artledger "
            "rebuilds a module by calling its class with no arguments, then "
            "load_state_dict(); give its __init__ defaults, or save and load "
            "dict(model.state_dict()) and build the module yourself."
        ) from exc


def _on_meta(cls: Any) -> Any:
    """``cls()`` built on the meta device (no memory, no initialisation), or None
    when the stored state alone cannot make it whole: construction fails there,
    a parameter is shared (tied weights would come apart) or a buffer is not
    persistent (it is not in the state_dict)."""
    try:
        with torch.device("meta"):
            module = cls()
    except Exception:
        return None
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers()]
    kept = module.state_dict(keep_vars=True)
    if len({id(t) for _, t in tensors}) != len(tensors) or {n for n, _ in tensors} != set(kept):
        return None
    return module


class TensorMaterializer(BaseMaterializer):
    """``torch.Tensor`` and ``nn.Parameter`` as a one-tensor safetensors file."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (torch.Tensor,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "model"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Plain tensors and parameters; other subclasses would lose their type."""
        return data_type in (torch.Tensor, torch.nn.Parameter)

    def save(self, data: Any) -> None:
        metadata = {"requires_grad": str(bool(data.requires_grad)), "device": str(data.device)}
        with self.open(TENSOR_FILE, "wb") as f:
            safetensors_io.write(f, [_as_entry("tensor", data)], metadata)

    def load(self, data_type: type) -> Any:
        tensors, metadata = _read(self, TENSOR_FILE)
        if set(tensors) != {"tensor"}:
            raise MaterializerError(f"{TENSOR_FILE} holds {sorted(tensors)}, not one 'tensor'")
        tensor = tensors["tensor"]
        requires_grad = metadata.get("requires_grad") == "True"
        if isinstance(data_type, type) and issubclass(data_type, torch.nn.Parameter):
            return torch.nn.Parameter(tensor, requires_grad=requires_grad)
        return tensor.requires_grad_(requires_grad) if tensor.is_floating_point() else tensor

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "shape": list(data.shape),
            "dtype": str(data.dtype).removeprefix("torch."),
            "device": str(data.device),
            "requires_grad": bool(data.requires_grad),
            "numel": int(data.numel()),
            "bytes": int(data.numel() * data.element_size()),
        }
        if data.numel() and data.dtype != torch.bool and not data.is_complex():
            try:
                with torch.no_grad():
                    low, high = torch.aminmax(data.detach())
                    mean = torch.mean(data.detach(), dtype=torch.float64)
            except (RuntimeError, TypeError):  # a dtype without these kernels (float8)
                return meta
            meta.update(min=float(low), max=float(high), mean=float(mean))
        return meta

    def save_visualizations(self, data: Any) -> dict[str, str]:
        meta = self.metadata if self.metadata is not None else self.extract_metadata(data)
        lines = ["# torch.Tensor", "", "| property | value |", "| --- | --- |"]
        lines += [f"| {k} | `{v}` |" for k, v in meta.items()]
        head = data.detach().to("cpu").reshape(-1)[:10].tolist()
        with self.open("summary.md", "w") as f:
            f.write("\n".join(lines) + f"\n\nFirst values: `{head}`\n")
        return {"summary.md": "markdown"}


class ModuleMaterializer(BaseMaterializer):
    """``nn.Module``: its state_dict as safetensors plus its class path."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (torch.nn.Module,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "model"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Modules whose class can be called with no arguments, the way
        :meth:`load` rebuilds them; for the rest the registry keeps looking
        (and falls back to the signed pickle, with its warning). torch's own
        containers (``Sequential``, ``ModuleList``, ...) are built from their
        arguments, and classes defined inside functions cannot be imported by
        name: both are declined too."""
        if data_type in _CONTAINERS or "<locals>" in data_type.__qualname__:
            return False
        try:
            signature = inspect.signature(data_type)
        except (TypeError, ValueError):
            return False
        return all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            for p in signature.parameters.values()
        )

    def save(self, data: Any) -> None:
        metadata = {"class": registry.topic_of(type(data)), "training": str(bool(data.training))}
        state = data.state_dict()
        with self.open(MODEL_FILE, "wb") as f:
            safetensors_io.write(f, _tensors(state), metadata)

    def load(self, data_type: type) -> Any:
        state, metadata = _read(self, MODEL_FILE)
        topic = metadata.get("class", "")
        cls: Any = data_type
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            cls = registry.import_topic(topic)  # raises, naming the class and the fix
        module = _on_meta(cls)
        try:
            if module is not None:  # no random initialisation: the stored tensors become its own
                module.load_state_dict(state, strict=True, assign=True)
            else:
                module = _build(cls, topic)
                module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise MaterializerError(
                f"The stored state_dict does not fit a fresh `{topic}`: {exc}"
            ) from exc
        module.train(metadata.get("training") == "True")
        return module

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        params = list(data.parameters())
        state = data.state_dict()
        return {
            "class": registry.identity(type(data)),
            "parameters": int(sum(p.numel() for p in params)),
            "trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
            "tensors": len(state),
            "bytes": int(sum(t.numel() * t.element_size() for t in state.values())),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
            "training": bool(data.training),
            "children": {name: type(child).__qualname__ for name, child in data.named_children()},
        }

    def save_visualizations(self, data: Any) -> dict[str, str]:
        meta = self.metadata if self.metadata is not None else self.extract_metadata(data)
        lines = [f"# `{meta['class']}`", "", "```text", repr(data)[:20_000], "```", ""]
        lines += ["| tensor | shape | dtype |", "| --- | --- | --- |"]
        for i, (name, t) in enumerate(data.state_dict().items()):
            if i == PREVIEW_MAX_ROWS:
                lines.append(f"| ... | {meta['tensors'] - i} more | |")
                break
            lines.append(f"| {name} | `{list(t.shape)}` | {str(t.dtype).removeprefix('torch.')} |")
        with self.open("summary.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        return {"summary.md": "markdown"}


class StateDictMaterializer(BaseMaterializer):
    """``module.state_dict()``: an ``OrderedDict`` of tensors as one safetensors file.

    Registered for no type: the registry chooses it by value
    (:func:`materializers.registry.materializer_for_value`), because a plain
    ``OrderedDict`` must keep falling back to the signed pickle."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = ()
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "model"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        return data_type is OrderedDict

    def save(self, data: Any) -> None:
        metadata: dict[str, str] = {}
        versions = getattr(data, "_metadata", None)
        if versions is not None:
            # Not plain data: left out, and load_state_dict assumes current versions.
            with contextlib.suppress(TypeError, ValueError):
                metadata[VERSIONS_KEY] = json.dumps(versions)
        with self.open(STATE_DICT_FILE, "wb") as f:
            safetensors_io.write(f, _tensors(data), metadata)

    def load(self, data_type: type) -> Any:
        tensors, metadata = _read(self, STATE_DICT_FILE)
        state: OrderedDict[str, torch.Tensor] = OrderedDict(tensors)
        if VERSIONS_KEY in metadata:
            try:
                state._metadata = json.loads(metadata[VERSIONS_KEY])  # type: ignore[attr-defined]
            except ValueError as exc:
                raise MaterializerError(f"{STATE_DICT_FILE}: bad {VERSIONS_KEY}: {exc}") from exc
        return state

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {
            "tensors": len(data),
            "parameters": int(sum(t.numel() for t in data.values())),
            "bytes": int(sum(t.numel() * t.element_size() for t in data.values())),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in data.values()}),
        }

    def save_visualizations(self, data: Any) -> dict[str, str]:
        lines = ["# state_dict", "", "| tensor | shape | dtype |", "| --- | --- | --- |"]
        for i, (name, t) in enumerate(data.items()):
            if i == PREVIEW_MAX_ROWS:
                lines.append(f"| ... | {len(data) - i} more | |")
                break
            lines.append(f"| {name} | `{list(t.shape)}` | {str(t.dtype).removeprefix('torch.')} |")
        with self.open("summary.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        return {"summary.md": "markdown"}

"""pydantic models (v2) as their fields, without pickle.

A model is saved as a dict of its field values (and its extra values, for
``extra="allow"`` models) through the built-in materializer: plain values in
``data.msgpack``, others (arrays, datetimes, nested models) each with their own
materializer under ``elements/<i>/``. The names of the fields that were set
explicitly are kept in the state. Loading validates the fields again through
the class recorded as the artifact's data type (``model_validate``, by field
name), then restores which fields were set. Private attributes are not kept.

Imported only when a pydantic model is saved or loaded (extra ``pydantic``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.errors import MaterializerError
from materializers import registry
from materializers.base import BaseMaterializer
from materializers.builtins import BuiltinsMaterializer

try:
    import pydantic
    from pydantic_core import PydanticSerializationError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"{e}. Loading pydantic models needs pydantic: pip install 'artledger[pydantic]'"
    ) from e


class PydanticMaterializer(BaseMaterializer):
    """A ``pydantic.BaseModel`` instance by its class and field values."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (pydantic.BaseModel,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Model classes importable by name (one defined in a function, or a
        generic model's parametrized class, is not)."""
        name = data_type.__qualname__
        return "<locals>" not in name and "[" not in name

    def save(self, data: Any) -> None:
        values = {name: getattr(data, name) for name in type(data).model_fields}
        extra = data.model_extra or {}
        BuiltinsMaterializer(self.files).save({"fields": values, "extra": dict(extra)})
        self.files.state["fields_set"] = sorted(data.model_fields_set)

    def load(self, data_type: type) -> Any:
        if not (isinstance(data_type, type) and issubclass(data_type, pydantic.BaseModel)):
            raise MaterializerError(
                f"PydanticMaterializer loads pydantic models; the artifact names `{data_type!r}`."
            )
        stored = BuiltinsMaterializer(self.files).load(dict)
        values: Any = {**stored["extra"], **stored["fields"]}
        if issubclass(data_type, pydantic.RootModel):
            values = stored["fields"]["root"]  # a root model validates its root value
        try:
            obj = data_type.model_validate(values, by_name=True, by_alias=False)
        except pydantic.ValidationError as e:
            raise MaterializerError(
                f"The saved fields no longer validate as `{registry.identity(data_type)}` "
                f"(the class changed since it was saved): {e}"
            ) from e
        fields_set = self.files.state.get("fields_set")
        if fields_set is not None:
            object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
        return obj

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {
            "class": registry.identity(type(data)),
            "fields": list(type(data).model_fields),
        }

    def save_visualizations(self, data: Any) -> dict[str, str]:
        try:
            text = data.model_dump_json(indent=2)
        except (PydanticSerializationError, ValueError, TypeError):
            return {}
        with self.open("model.json", "w") as f:
            f.write(text)
        return {"model.json": "json"}

# ruff: noqa: PTH118 -- written as ZenML materializers are, with os.path.join
"""A ZenML materializer ported as it is: ``__init__(uri, artifact_store)``,
``self.artifact_store.open(os.path.join(self.uri, ...))``, ``save_visualizations``
returning ``{full path: VisualizationType}``, and the ``__main__`` warning."""

from __future__ import annotations

import enum
import os
from typing import Any

import pytest

from engine import MaterializerError, Store
from materializers import BaseMaterializer


class Vocabulary:
    def __init__(self, words: list[str]) -> None:
        self.words = words


class VisualizationType(str, enum.Enum):  # as zenml.enums has it
    HTML = "html"
    MARKDOWN = "markdown"


class VocabMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Vocabulary,)
    ASSOCIATED_ARTIFACT_TYPE = "data"

    def __init__(self, uri: Any, artifact_store: Any = None) -> None:
        super().__init__(uri, artifact_store)

    def save(self, data: Vocabulary) -> None:
        self.artifact_store.makedirs(os.path.join(self.uri, "vocab"))
        with self.artifact_store.open(os.path.join(self.uri, "vocab", "words.txt"), "w") as f:
            f.write("\n".join(data.words))

    def load(self, data_type: type) -> Vocabulary:
        path = os.path.join(self.uri, "vocab", "words.txt")
        assert self.artifact_store.exists(path)
        assert self.artifact_store.listdir(os.path.join(self.uri, "vocab")) == ["words.txt"]
        with self.artifact_store.open(path, "r") as f:
            return Vocabulary(f.read().split("\n"))

    def save_visualizations(self, data: Vocabulary) -> dict[str, Any]:
        html = os.path.join(self.uri, "words.html")
        with self.artifact_store.open(html, "w") as f:
            f.write("<ul>" + "".join(f"<li>{w}</li>" for w in data.words) + "</ul>")
        md = os.path.join(self.uri, "notes", "count.md")
        with self.artifact_store.open(md, "w") as f:
            f.write(f"{len(data.words)} words")
        return {html: VisualizationType.HTML, md: VisualizationType.MARKDOWN}


def test_a_zenml_materializer_ports_unchanged(store: Store) -> None:
    art = store.save_artifact(Vocabulary(["a", "b"]), "vocab")
    assert art.materializer.endswith("VocabMaterializer")
    assert art.files == ["vocab/words.txt"]
    assert store.load_artifact("vocab").words == ["a", "b"]
    assert sorted((n, k) for n, k, _ in art.visualizations) == [
        ("notes/count.md", "markdown"),
        ("words.html", "html"),
    ]
    assert {n: b for n, _, b in art.visualizations}["notes/count.md"] == b"2 words"


def test_keyword_init_and_paths_outside_are_refused(store: Store) -> None:
    class Keyword(BaseMaterializer):
        SKIP_REGISTRATION = True

        def __init__(self, uri: Any, artifact_store: Any = None) -> None:
            super().__init__(uri=uri, artifact_store=artifact_store)

        def save(self, data: Any) -> None:
            self.artifact_store.open(os.path.join(self.uri, "..", "escape.txt"), "w")

    with pytest.raises(MaterializerError, match="outside this artifact's directory"):
        store.save_artifact(Vocabulary([]), "bad", materializer=Keyword)


def test_a_materializer_defined_in_main_warns() -> None:
    with pytest.warns(UserWarning, match="defined in __main__.*another one cannot import it"):
        type(
            "ScriptMaterializer",
            (BaseMaterializer,),
            {"__module__": "__main__", "SKIP_REGISTRATION": True},
        )

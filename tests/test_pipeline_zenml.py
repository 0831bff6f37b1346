"""What a ZenML user reaches for, through the public API: stored artifacts as
step inputs, loads inside a step, the step context, ArtifactConfig, named tuple
outputs, the output type check, and the materializer that is recorded."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Optional, Union

import numpy as np
import pytest

import engine
from engine import ArtifactConfig, PipelineError, Store, pipeline, step
from materializers import BaseMaterializer
from materializers.registry import temporary_registrations

# --------------------------------------------------------------------------- 1: inputs


@step
def total(data: list[int]) -> int:
    return sum(data)


@pipeline
def summing(data: Any) -> None:
    total(data=data)


def _upstream_ids(store: Store, art: engine.ArtifactVersion) -> set[str]:
    return set(store.lineage(art, direction="upstream").nodes)


def test_external_artifact_is_an_input_and_a_new_version_reruns(store: Store) -> None:
    v1 = engine.save_artifact(list(range(3)), "data", store=store)
    first = store.run(summing, data=engine.external("data"))
    assert first.steps["total"].output.load() == 3
    assert first.steps["total"].inputs == {"data": v1}
    v2 = engine.save_artifact(list(range(100)), "data", store=store)
    second = store.run(summing, data=engine.external("data"))
    sr = second.steps["total"]
    assert sr.status == "completed"
    assert sr.output.load() == 4950
    assert store.explain(sr) == ["input data: new content"]
    assert sr.inputs == {"data": v2}
    assert v2.id in _upstream_ids(store, sr.output)
    assert v1.id not in _upstream_ids(store, sr.output)
    assert sr.id in [c.id for c in store.consumers(v2)]
    # the same version again: a hit; a version pinned by number or object: its content
    assert store.run(summing, data=engine.external("data")).steps["total"].status == "cached"
    pinned = store.run(summing, data=engine.external("data", version=1)).steps["total"]
    assert pinned.status == "cached" and pinned.output.load() == 3
    assert store.run(summing, data=v2).steps["total"].output.load() == 4950
    assert store.run(summing, data=engine.external(v1)).steps["total"].output.load() == 3


def test_an_artifact_version_passed_to_a_step_inside_the_pipeline(store: Store) -> None:
    art = engine.save_artifact([1, 2], "numbers", store=store)

    @pipeline
    def fixed() -> None:
        total(data=art)

    run = store.run(fixed)
    assert run.steps["total"].output.load() == 3
    assert run.steps["total"].inputs["data"] == art
    assert run.params == {}
    with engine.api.use_store(store):
        called = summing(data=art)  # through a pipeline parameter, on the active store
    assert called.params == {"data": "external('numbers', version=1)"}
    assert called.steps["total"].status == "cached"


def test_external_artifact_errors_come_before_the_run(store: Store) -> None:
    with pytest.raises(engine.ArtifactNotFoundError, match="no artifact named 'nothing'"):
        store.run(summing, data=engine.external("nothing"))
    art = engine.save_artifact([1], "gone", store=store)
    store.delete_artifact(art)
    with pytest.raises(PipelineError, match="was deleted"):
        store.run(summing, data=art)
    with pytest.raises(PipelineError, match="inside a container"):
        store.run(summing, data=[engine.external("gone")])
    assert store.list_runs() == []
    with pytest.raises(engine.InvalidArgumentError):
        engine.external("")


@step
def loads_inside() -> int:
    return sum(engine.load_artifact("data"))


@pipeline
def loading() -> None:
    loads_inside()


def test_a_load_inside_a_step_is_an_input_and_invalidates_the_cache(store: Store) -> None:
    v1 = engine.save_artifact(list(range(3)), "data", store=store)
    with engine.api.use_store(store):
        first = loading()
    sr = first.steps["loads_inside"]
    assert sr.output.load() == 3
    assert sr.inputs == {"data": v1}
    assert v1.id in _upstream_ids(store, sr.output)
    again = store.run(loading).steps["loads_inside"]
    assert again.status == "cached" and again.inputs == {"data": v1}
    v2 = engine.save_artifact(list(range(100)), "data", store=store)
    with engine.api.use_store(store):
        second = loading().steps["loads_inside"]
    assert second.status == "completed"
    assert second.output.load() == 4950  # not the stale 3
    assert store.explain(second) == ["loaded artifact data: data:1 -> data:2"]
    assert second.inputs == {"data": v2}
    assert v2.id in _upstream_ids(store, second.output)
    # the same content saved again as a new version still hits
    engine.save_artifact(list(range(100)), "data", store=store)
    assert store.run(loading).steps["loads_inside"].status == "cached"
    store.rebuild()  # the record of loads is folded from the log
    assert store.get_step_run(second.id).inputs == {"data": v2}


def test_a_pinned_load_stays_cached_and_a_moved_tag_reruns(store: Store) -> None:
    @step
    def pinned() -> int:
        return len(engine.load_artifact("cfg", version=1))

    @step
    def tagged() -> int:
        (art,) = engine.active_store().list_artifacts("cfg", tag="prod")[-1:]
        return len(art.load())

    @pipeline
    def p() -> None:
        pinned()
        tagged()

    engine.save_artifact([1], "cfg", store=store)
    engine.save_artifact([1, 2], "cfg", tags=["prod"], store=store)
    with engine.api.use_store(store):
        assert p().steps["tagged"].output.load() == 2
        engine.save_artifact([1, 2, 3], "cfg", store=store)  # newer, untagged
        run = p()
    assert run.steps["pinned"].status == "cached"
    assert run.steps["tagged"].status == "completed"  # cfg:2 was the newest: conservative
    store.tag(store.get_artifact("cfg", 3), "prod")
    with engine.api.use_store(store):
        run = p()
    assert run.steps["tagged"].output.load() == 3
    assert run.steps["pinned"].status == "cached"


# --------------------------------------------------------------------------- 2: context


def test_step_context_names_the_step_and_records_metadata_and_tags(store: Store) -> None:
    seen: dict[str, Any] = {}

    @step
    def train(n: int = 3) -> Annotated[np.ndarray, "model"]:
        ctx = engine.get_step_context()
        seen.update(step=ctx.step_name, inv=ctx.invocation, run=ctx.run_id, pipe=ctx.pipeline_name)
        assert ctx.pipeline is training and ctx.output_names == ("model",)
        ctx.log_metadata({"epochs": n, "loss": np.float32(0.5)})
        ctx.log_metadata({"accuracy": 0.9}, infer_artifact=True)
        ctx.add_tags(["candidate"])
        ctx.add_tags("latest", output="model")
        return np.zeros(n)

    @pipeline
    def training() -> None:
        train()

    run = store.run(training)
    sr = run.steps["train"]
    assert seen == {"step": "train", "inv": "train", "run": run.id, "pipe": "training"}
    assert sr.metadata == {"epochs": 3, "loss": 0.5}
    model = sr.output
    assert model.metadata["accuracy"] == 0.9
    assert model.tags == ["candidate", "latest"]
    assert store.list_artifacts(tag="candidate") == [model]
    store.rebuild()
    assert store.get_step_run(sr.id).metadata == {"epochs": 3, "loss": 0.5}
    assert store.run(training).steps["train"].status == "cached"


def test_step_context_errors(store: Store) -> None:
    with pytest.raises(PipelineError, match="only inside a step"):
        engine.get_step_context()

    @step
    def two() -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        engine.get_step_context().add_tags(["x"])
        return 1, 2

    @step
    def meta() -> int:
        engine.get_step_context().log_metadata({"seen": True})
        raise ValueError("boom")

    @pipeline
    def p() -> None:
        two()

    @pipeline
    def q() -> None:
        meta()

    with pytest.raises(PipelineError, match="2 outputs; add_tags"):
        store.run(p)
    with pytest.raises(ValueError, match="boom"):
        store.run(q)
    (failed,) = [r for r in store.list_runs() if r.pipeline == "q"]
    assert failed.steps["meta"].metadata == {"seen": True}


def test_artifact_config_in_the_return_annotation(store: Store) -> None:
    @step
    def train() -> Annotated[
        list[int],
        ArtifactConfig(
            name="model",
            tags=["prod"],
            artifact_type="model",
            run_metadata={"lr": 0.1},
        ),
    ]:
        return [1, 2]

    @step
    def short() -> Annotated[int, ArtifactConfig("x")]:
        return 7

    @step
    def labelled() -> Annotated[int, ArtifactConfig(name="release", version="v1.0")]:
        return 1

    @pipeline
    def p() -> None:
        train()
        short()
        labelled()

    run = store.run(p)
    model = run.steps["train"].outputs["model"]
    assert (model.name, model.artifact_type, model.tags) == ("model", "model", ["prod"])
    assert model.metadata["lr"] == 0.1
    assert run.steps["short"].outputs["x"].name == "x"
    assert engine.load_artifact("x", store=store) == 7
    assert store.get_artifact("release", "v1.0").load() == 1
    assert store.run(p).steps["labelled"].status == "cached"
    with pytest.raises(engine.InvalidArgumentError):
        ArtifactConfig(name="")


# --------------------------------------------------------------------------- 3: tuples


def test_named_tuple_outputs_are_named_artifacts(store: Store) -> None:
    @step
    def split(
        n: int = 10,
    ) -> tuple[Annotated[list[int], "train_set"], Annotated[list[int], "test_set"]]:
        data = list(range(n))
        return data[:8], data[8:]

    @pipeline
    def p() -> None:
        split()

    run = store.run(p)
    assert set(run.steps["split"].outputs) == {"train_set", "test_set"}
    assert engine.load_artifact("train_set", store=store) == list(range(8))
    assert engine.load_artifact("test_set", store=store) == [8, 9]


# --------------------------------------------------------------------------- 4: type check


def test_an_output_of_the_wrong_type_fails_the_step(store: Store) -> None:
    @step
    def features() -> np.ndarray:
        return {"not": "an array"}  # type: ignore[return-value]

    @pipeline
    def p() -> None:
        features()

    message = "step features: output 'output' is annotated numpy.ndarray but the step returned dict"
    with pytest.raises(PipelineError, match=message):
        store.run(p)
    (run,) = store.list_runs()
    assert run.status == "failed" and run.steps["features"].status == "failed"
    assert store.list_artifacts() == []


def test_the_type_check_accepts_what_the_annotation_allows(store: Store) -> None:
    @step
    def many() -> tuple[  # typing's own spellings on purpose
        Any, Optional[int], Union[str, int], list[int], float, int, dict[str, Any], object  # noqa: UP007, UP045
    ]:
        return None, None, 3, [1], 1, np.int64(2), {}, "anything"  # type: ignore[return-value]

    @step
    def wrong_generic() -> list[int]:
        return (1, 2)  # type: ignore[return-value]

    @pipeline
    def ok() -> None:
        many()

    @pipeline
    def bad() -> None:
        wrong_generic()

    assert store.run(ok).status == "completed"
    with pytest.raises(PipelineError, match=r"annotated list\[int\] but the step returned tuple"):
        store.run(bad)


# --------------------------------------------------------------------------- 5: materializers


class Vocab:
    def __init__(self, words: list[str]) -> None:
        self.words = words


class Base:
    pass


class Leaf(Base):
    pass


def _vocab_materializer() -> type[BaseMaterializer]:
    class VocabMaterializer(BaseMaterializer):
        ASSOCIATED_TYPES = (Vocab,)

        def save(self, data: Vocab) -> None:
            with self.open("words.txt", "w") as f:
                f.write("\n".join(data.words))

        def load(self, data_type: type) -> Vocab:
            with self.open("words.txt") as f:
                return Vocab(f.read().split("\n"))

    return VocabMaterializer


@step
def vocab() -> Vocab:
    return Vocab(["a", "b"])


@step
def unannotated():  # type: ignore[no-untyped-def]
    return Vocab(["c"])


@pipeline
def vocabulary() -> None:
    vocab()
    unannotated()


def test_a_materializer_registered_after_a_run_invalidates_its_cache(store: Store) -> None:
    with temporary_registrations():
        with pytest.warns(UserWarning, match="No materializer for type `Vocab`") as caught:
            first = store.run(vocabulary).steps["vocab"]
        assert caught[0].filename == __file__  # points at the step's definition
        assert caught[0].lineno == vocab.func.__code__.co_firstlineno
        assert first.output.materializer.endswith(":CloudpickleMaterializer")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a cached run saves nothing: no warning
            assert store.run(vocabulary).steps["vocab"].status == "cached"
        cls = _vocab_materializer()
        run = store.run(vocabulary)
        ident = f"{cls.__module__}:{cls.__qualname__}"
        change = (
            "output output: materializer changed (materializers.cloudpickle_materializer:"
            f"CloudpickleMaterializer@1 -> {ident}@1)"
        )
        for sr in run.steps.values():  # annotated Vocab, and a type known only at run time
            assert sr.status == "completed"
            assert sr.output.materializer == ident
            assert store.explain(sr) == [change]
            assert sr.components is not None
            assert sr.components["materializers"] == {"output": f"{ident}@1"}
        rerun = store.run(vocabulary)
        assert {s.status for s in rerun.steps.values()} == {"cached"}
        assert run.steps["vocab"].output.load().words == ["a", "b"]


def test_the_recorded_materializer_is_the_one_that_saved_the_bytes(store: Store) -> None:
    @step(enable_cache=False)
    def leaf() -> Base:
        return Leaf()

    @pipeline
    def p() -> None:
        leaf()

    with temporary_registrations():

        class LeafMaterializer(BaseMaterializer):
            ASSOCIATED_TYPES = (Leaf,)

            def save(self, data: Leaf) -> None:
                with self.open("leaf.txt", "w") as f:
                    f.write("leaf")

            def load(self, data_type: type) -> Leaf:
                return Leaf()

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Base has no materializer: nothing is warned
            sr = store.run(p).steps["leaf"]
        ident = f"{LeafMaterializer.__module__}:{LeafMaterializer.__qualname__}"
        assert sr.output.materializer == ident
        assert sr.components is not None
        assert sr.components["outputs"] == {"output": "auto"}
        assert sr.components["materializers"] == {"output": f"{ident}@1"}


def test_inside_a_step_the_active_store_is_the_run_s(store: Store) -> None:
    v1 = engine.save_artifact([5], "data", store=store)
    run = store.run(loading)  # no use_store: load_artifact inside reads the run's store
    assert run.steps["loads_inside"].output.load() == 5
    assert run.steps["loads_inside"].inputs == {"data": v1}


class Flaky:
    pass


def test_a_failed_metadata_extraction_warns_at_the_step(store: Store) -> None:
    @step
    def flaky() -> Flaky:
        return Flaky()

    @pipeline
    def p() -> None:
        flaky()

    with temporary_registrations():

        class FlakyMaterializer(BaseMaterializer):
            ASSOCIATED_TYPES = (Flaky,)

            def save(self, data: Flaky) -> None:
                with self.open("f.txt", "w") as f:
                    f.write("")

            def load(self, data_type: type) -> Flaky:
                return Flaky()

            def extract_metadata(self, data: Flaky) -> dict[str, Any]:
                raise RuntimeError("no stats")

        with pytest.warns(UserWarning, match="extract_metadata failed") as caught:
            store.run(p)
        assert caught[0].filename == __file__
        assert caught[0].lineno == flaky.func.__code__.co_firstlineno
        assert "step flaky:" in str(caught[0].message)


# --------------------------------------------------------------------------- the port


def test_a_ported_zenml_training_pipeline(store: Store) -> None:
    """The five-step port: pandas preprocessing, a named tuple split, a scikit-learn
    model annotated with a mixin nothing is registered for, metrics in the context."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("skops")
    from sklearn.base import ClassifierMixin
    from sklearn.linear_model import LogisticRegression

    @step
    def preprocess(raw: pd.DataFrame) -> pd.DataFrame:
        return raw.assign(y=(raw["x"] > raw["x"].median()).astype(int))

    @step
    def split(
        df: pd.DataFrame,
    ) -> tuple[Annotated[pd.DataFrame, "train_set"], Annotated[pd.DataFrame, "test_set"]]:
        return df.iloc[::2], df.iloc[1::2]

    @step
    def fit(
        train_set: pd.DataFrame,
    ) -> Annotated[
        ClassifierMixin, ArtifactConfig(name="clf", tags=["candidate"], artifact_type="model")
    ]:
        return LogisticRegression().fit(train_set[["x"]], train_set["y"])

    @step
    def evaluate(clf: ClassifierMixin, test_set: pd.DataFrame) -> float:
        accuracy = float(clf.score(test_set[["x"]], test_set["y"]))
        engine.get_step_context().log_metadata({"accuracy": accuracy})
        return accuracy

    @step
    def wrong(df: pd.DataFrame) -> pd.DataFrame:
        return df.to_dict()  # type: ignore[no-any-return]

    @pipeline
    def training(raw: Any) -> None:
        train_set, test_set = split(preprocess(raw=raw))
        evaluate(fit(train_set), test_set)

    @pipeline
    def broken(raw: Any) -> None:
        wrong(raw)

    raw = engine.save_artifact(pd.DataFrame({"x": range(40)}), "raw", store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing falls back to cloudpickle
        run = store.run(training, raw=raw)
    fit_run = run.steps["fit"]
    clf = fit_run.outputs["clf"]
    assert clf.materializer == "materializers.sklearn:SklearnMaterializer"
    assert fit_run.components is not None
    assert fit_run.components["outputs"] == {"clf": "auto"}
    assert fit_run.components["materializers"]["clf"].startswith(clf.materializer + "@")
    assert (clf.artifact_type, clf.tags) == ("model", ["candidate"])
    assert len(engine.load_artifact("train_set", store=store)) == 20
    assert run.steps["evaluate"].metadata["accuracy"] == run.steps["evaluate"].output.load()
    assert raw.id in _upstream_ids(store, run.steps["evaluate"].output)
    assert {s.status for s in store.run(training, raw=raw).steps.values()} == {"cached"}
    with pytest.raises(
        PipelineError, match=r"'output' is annotated pandas\.DataFrame but the step returned dict"
    ):
        store.run(broken, raw=raw)

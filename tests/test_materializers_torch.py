"""torch tensors and modules through safetensors and the real store.

Skipped where torch is not importable (it is not in the ``test`` extra: too
large for CI); the safetensors format itself is tested with numpy in
tests/test_materializers_safetensors.py either way.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import safetensors.torch as stt  # noqa: E402

from engine import Store  # noqa: E402
from engine.errors import MaterializerError  # noqa: E402
from materializers import BaseMaterializer, materializer_for, registry  # noqa: E402
from materializers.cloudpickle_materializer import CloudpickleMaterializer  # noqa: E402
from materializers.torch import (  # noqa: E402
    ModuleMaterializer,
    StateDictMaterializer,
    TensorMaterializer,
)


class Net(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(4, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.l2 = torch.nn.Linear(8, 2)

    def forward(self, x: Any) -> Any:
        return self.l2(torch.relu(self.bn(self.l1(x))))


class Tied(torch.nn.Module):  # type: ignore[misc]
    """Shared weights and a buffer outside the state_dict: rebuilt the slow way."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(6, 3)
        self.head = torch.nn.Linear(3, 6, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)

    def forward(self, ids: Any) -> Any:
        return self.head(self.embed(ids) * self.scale)


class NeedsArgs(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, 1)


def _tensors() -> list[Any]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 4, generator=g),
        torch.randn(5, generator=g, dtype=torch.float64).requires_grad_(True),
        torch.randn(2, 3, generator=g).to(torch.bfloat16),
        torch.randn(2, 2, generator=g).half(),
        torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),  # not contiguous
        torch.tensor(True),  # 0-d
        torch.zeros(0, 3, dtype=torch.uint8),
        torch.nn.Parameter(torch.ones(2, 2)),
    ]


@pytest.mark.parametrize("index", range(len(_tensors())))
def test_tensor_roundtrip(store: Store, index: int) -> None:
    t = _tensors()[index]
    assert materializer_for(type(t)) is TensorMaterializer  # no fallback warning
    art = store.save_artifact(t, "t")
    got = art.load()
    assert type(got) is type(t)
    assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t.detach())
    assert got.requires_grad == t.requires_grad
    assert art.artifact_type == "model"
    assert [f[0] for f in art.record()["files"]] == ["tensor.safetensors"]
    meta = art.metadata
    assert meta["shape"] == list(t.shape) and meta["dtype"] == str(t.dtype).split(".")[1]
    assert [(n, k) for n, k, _ in art.visualizations] == [("summary.md", "markdown")]


def test_tensor_file_is_plain_safetensors(tmp_path: Path) -> None:
    t = torch.randn(3, 3).to(torch.bfloat16)
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(t, "t")
        [path] = s.get_artifact("t").export_files(tmp_path / "out")
    assert torch.equal(stt.load_file(path)["tensor"], t)


def test_module_roundtrip_predicts_the_same(store: Store) -> None:
    torch.manual_seed(1)
    net = Net()
    net(torch.randn(16, 4))  # moves the batch-norm running statistics
    net.eval()
    assert materializer_for(Net) is ModuleMaterializer
    art = store.save_artifact(net, "net")
    got = art.load()
    x = torch.randn(5, 4)
    assert type(got) is Net and not got.training
    assert [p.requires_grad for p in got.parameters()] == [True] * len(list(net.parameters()))
    assert all(t.device.type == "cpu" for t in got.state_dict().values())
    assert torch.equal(got(x), net(x))
    for key, value in net.state_dict().items():
        assert torch.equal(got.state_dict()[key], value)
    assert art.artifact_type == "model"
    meta = art.metadata
    assert meta["class"] == f"{Net.__module__}:Net"
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())
    assert meta["tensors"] == len(net.state_dict()) and meta["training"] is False
    assert meta["children"] == {"l1": "Linear", "bn": "BatchNorm1d", "l2": "Linear"}
    summary = art.visualizations[0][2].decode()
    assert "| l1.weight | `[8, 4]` | float32 |" in summary


def test_tied_weights_and_non_persistent_buffers(store: Store) -> None:
    torch.manual_seed(2)
    model = Tied()
    got = store.save_artifact(model, "tied").load()
    assert got.head.weight is got.embed.weight
    ids = torch.tensor([0, 3, 5])
    assert torch.equal(got(ids), model(ids))


def test_dict_of_tensors_is_safetensors_files(store: Store) -> None:
    state = dict(Net().state_dict())
    art = store.save_artifact(state, "sd")
    got = art.load()
    assert list(got) == list(state)
    assert all(torch.equal(got[k], v) for k, v in state.items())
    names = [f[0] for f in art.record()["files"]]
    assert names and all(n.endswith((".safetensors", ".msgpack")) for n in names)


def test_module_that_needs_arguments_says_how(store: Store) -> None:
    with pytest.warns(UserWarning, match="No materializer for type `NeedsArgs`"):
        materializer_for(NeedsArgs)  # declined: it could not be rebuilt
    for declined in (torch.nn.Sequential, torch.nn.ModuleList):
        with pytest.warns(UserWarning, match="No materializer"):
            materializer_for(declined)
    store.save_artifact(NeedsArgs(3), "m", materializer=ModuleMaterializer)
    with pytest.raises(MaterializerError, match="no arguments"):
        store.load_artifact("m")


def test_sparse_tensor_is_refused(store: Store) -> None:
    with pytest.raises(MaterializerError, match="sparse"):
        store.save_artifact(torch.eye(3).to_sparse(), "s")


def test_export_import_stays_trusted(tmp_path: Path) -> None:
    net, t = Net().eval(), torch.randn(4)
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(net, "net")
        src.save_artifact(t, "t")
        src.export(tmp_path / "s.alx")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "s.alx", into=dst)
        assert dst.get_artifact("net").record().get("untrusted")
        assert torch.equal(dst.load_artifact("t"), t)
        x = torch.randn(3, 4)
        assert torch.equal(dst.load_artifact("net")(x), net(x))


def test_missing_torch_names_the_extra(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(torch.ones(2), "t")
    code = f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import engine
        with engine.Store.open({str(tmp_path / "s")!r}) as s:
            try:
                s.load_artifact("t")
            except engine.MaterializerError as e:
                print(e)
        """
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'artledger[torch]'" in out.stdout


def test_state_dict_is_one_safetensors_file(store: Store, tmp_path: Path) -> None:
    torch.manual_seed(4)
    net = Net().eval()
    state = net.state_dict()
    assert type(state) is OrderedDict
    assert registry.materializer_for_value(state) is StateDictMaterializer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cloudpickle warning
        art = store.save_artifact(state, "sd")
    assert art.artifact_type == "model"
    assert "state_dict.safetensors" in [f[0] for f in art.record()["files"]]
    got = art.load()
    assert type(got) is OrderedDict and list(got) == list(state)
    assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in state.items())
    assert got._metadata == state._metadata  # the versions load_state_dict reads
    fresh = Net().eval()
    fresh.load_state_dict(got)
    x = torch.randn(3, 4)
    assert torch.equal(fresh(x), net(x))
    assert art.metadata["tensors"] == len(state)
    assert art.metadata["bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    assert "| l1.weight | `[8, 4]` | float32 |" in art.visualizations[0][2].decode()
    paths = store.get_artifact("sd").export_files(tmp_path / "out")
    [path] = [p for p in paths if Path(p).name == "state_dict.safetensors"]
    assert list(stt.load_file(path)) == list(state)


def test_state_dict_inside_a_container(store: Store) -> None:
    state = Net().state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = store.save_artifact({"model": state, "step": 3}, "ckpt").load()
    assert got["step"] == 3 and type(got["model"]) is OrderedDict
    assert all(torch.equal(got["model"][k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "value",
    [
        OrderedDict(),
        OrderedDict(a=torch.ones(2), b=1),
        OrderedDict([(1, torch.ones(2))]),
        OrderedDict(w=torch.nn.Parameter(torch.ones(2))),  # state_dict(keep_vars=True)
    ],
    ids=["empty", "mixed", "int-key", "parameter"],
)
def test_other_ordered_dicts_still_fall_back(store: Store, value: Any) -> None:
    with pytest.warns(UserWarning, match="No materializer for type `OrderedDict`"):
        assert registry.materializer_for_value(value) is CloudpickleMaterializer
    with pytest.warns(UserWarning, match="No materializer for type `OrderedDict`"):
        store.save_artifact(value, "od")
    with pytest.warns(UserWarning, match="No materializer for type `OrderedDict`"):
        assert materializer_for(OrderedDict) is CloudpickleMaterializer


def test_user_materializer_for_ordered_dict_wins() -> None:
    with registry.temporary_registrations():

        class Mine(BaseMaterializer):
            ASSOCIATED_TYPES = (OrderedDict,)

        assert registry.materializer_for_value(Net().state_dict()) is Mine


def test_choosing_by_value_does_not_import_torch() -> None:
    code = """
        import sys, warnings
        from collections import OrderedDict
        from materializers import registry
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            cls = registry.materializer_for_value(OrderedDict(a=1))
        assert cls.__name__ == "CloudpickleMaterializer", cls
        assert "torch" not in sys.modules
        """
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr

"""Loading by tag and by ``latest`` (API and CLI), and trusting imported
artifact versions after the fact (``store.trust``, ``artledger trust``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import ArtifactNotFoundError, InvalidArgumentError, Store
from engine.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore:No materializer for type:UserWarning")


def cli(store: Path, capsys: pytest.CaptureFixture[str], *args: str, rc: int = 0) -> str:
    capsys.readouterr()
    code = main(["--store", str(store), *args])
    out, err = capsys.readouterr()
    assert code == rc, (args, out, err)
    return out + err


# -- by tag and latest --------------------------------------------------------------------


def test_load_by_tag_and_latest(store: Store) -> None:
    store.save_artifact({"v": 1}, "model", tags=["prod"])
    store.save_artifact({"v": 2}, "model", tags=["staging"])
    store.save_artifact({"v": 3}, "model")
    assert engine.load_artifact("model", tag="prod", store=store) == {"v": 1}
    assert store.get_artifact("model", tag="staging").version == 2
    assert store.load_artifact("model", "latest") == {"v": 3}
    # The tag moves: the newest version carrying it wins.
    store.tag(store.get_artifact("model", 3), "prod")
    assert store.load_artifact("model", tag="prod") == {"v": 3}
    with engine.use_store(store):
        assert engine.load_artifact("model", tag="prod") == {"v": 3}
    with pytest.raises(ArtifactNotFoundError, match=r"tagged 'nope'.*'prod', 'staging'"):
        store.get_artifact("model", tag="nope")
    with pytest.raises(ArtifactNotFoundError, match="no artifact named 'other'"):
        store.get_artifact("other", tag="prod")
    with pytest.raises(InvalidArgumentError, match="not both"):
        store.get_artifact("model", 1, tag="prod")


def test_a_version_labelled_latest_is_still_found(store: Store) -> None:
    store.save_artifact(1, "x", version="latest")
    store.save_artifact(2, "x")
    assert store.load_artifact("x", "latest") == 1
    assert store.load_artifact("x") == 2


def test_load_errors_name_the_store_searched(tmp_path: Path) -> None:
    with (
        Store.open(tmp_path / "here") as s,
        pytest.raises(ArtifactNotFoundError, match=r"searched the store at .*here"),
    ):
        engine.load_artifact("missing", store=s)


def test_cli_takes_latest_and_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store"
    with Store.open(path) as s:
        s.save_artifact(1, "model", tags=["prod"])
        s.save_artifact(2, "model")
        s.save_artifact(3, "odd@name")
    assert json.loads(cli(path, capsys, "artifact", "model@prod", "--json"))["version"] == 1
    assert json.loads(cli(path, capsys, "artifact", "model:latest", "--json"))["version"] == 2
    assert json.loads(cli(path, capsys, "artifact", "odd@name", "--json"))["version"] == 1
    assert "model:1" in cli(path, capsys, "lineage", "model@prod")
    err = cli(path, capsys, "artifact", "model@nope", rc=1)
    assert "tagged 'nope'" in err


# -- trust after import -------------------------------------------------------------------


class Thing:
    """Stored with cloudpickle (no materializer knows it)."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """A store that imported, without --trust-pickles, one pickle and two arrays."""
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(Thing(7), "thing")
        src.save_artifact(np.arange(5), "numbers")
        src.save_artifact(np.ones(3), "ones")
        src.export(tmp_path / "all.alx")
    report = Store.import_(tmp_path / "all.alx", into=tmp_path / "dst")
    assert report.untrusted == 3 and report.untrusted_pickles == 1
    return tmp_path / "dst"


def test_trust_signs_again_and_is_an_event(imported: Path, tmp_path: Path) -> None:
    with Store.open(imported) as dst:
        art = dst.get_artifact("thing")
        assert not art.trusted
        with pytest.raises(engine.UntrustedArtifactError):
            art.load()
        before = dst.head
        trusted = dst.trust(art)
        assert trusted.trusted and trusted.load().value == 7
        assert [e.type for e in dst.events(before + 1)] == ["artifact.trusted"]
        assert dst.trust(trusted) == trusted and dst.head == before + 1  # nothing to do
        # History: untrusted before the event, trusted after a rebuild.
        assert not dst.as_of(before).get_artifact("thing").trusted
        dst.rebuild()
        assert dst.get_artifact("thing").trusted and dst.load_artifact("thing").value == 7
        assert dst.verify().ok
        # A trust event exported to another store vouches for nothing there.
        dst.export(tmp_path / "again.alx")
    report = Store.import_(tmp_path / "again.alx", into=tmp_path / "third")
    assert report.untrusted_pickles == 1
    with Store.open(tmp_path / "third") as third:
        assert not third.get_artifact("thing").trusted
        with pytest.raises(engine.UntrustedArtifactError):
            third.load_artifact("thing")


def test_trust_refuses_deleted_versions(imported: Path) -> None:
    with Store.open(imported) as dst:
        art = dst.get_artifact("thing")
        dst.delete_artifact(art)
        with pytest.raises(ArtifactNotFoundError, match="deleted"):
            dst.trust(art)


def test_cli_import_message_and_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(np.arange(5), "numbers")
        src.save_artifact(np.ones(3), "ones")
        src.export(tmp_path / "arrays.alx")
        src.save_artifact(Thing(1), "thing")
        src.save_artifact(Thing(2), "thing2")
        src.export(tmp_path / "all.alx")
    out = cli(tmp_path / "arrays", capsys, "import", str(tmp_path / "arrays.alx"))
    assert "pickles" not in out  # arrays only: nothing refuses to load
    dst = tmp_path / "dst"
    out = cli(dst, capsys, "import", str(tmp_path / "all.alx"))
    assert "2 artifact versions hold pickles" in out and "artledger trust" in out
    out = cli(dst, capsys, "trust", "thing")
    assert "trusted thing:1 (1 pickles signed again)" in out
    done = json.loads(cli(dst, capsys, "trust", "--all-imported", "--json"))
    assert sorted(d["name"] for d in done) == ["numbers", "ones", "thing2"]
    assert "nothing to do" in cli(dst, capsys, "trust", "--all-imported")
    assert "give NAME" in cli(dst, capsys, "trust", rc=2)
    with Store.open(dst) as s:
        assert s.load_artifact("thing2").value == 2

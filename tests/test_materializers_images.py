"""Pillow images and matplotlib figures through the real store, without pickle."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from engine import Store

REPO = Path(__file__).resolve().parents[1]


def _gradient(mode: str) -> Image.Image:
    rgb = np.zeros((12, 20, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(20, dtype=np.uint8) * 12
    rgb[..., 1] = np.arange(12, dtype=np.uint8)[:, None] * 20
    base = Image.fromarray(rgb)
    if mode == "PA":
        return base.convert("P").convert("PA")
    if mode == "I;16":
        return Image.fromarray((np.arange(240, dtype=np.uint16) * 250).reshape(12, 20))
    return base.convert(mode)


def _pixels(image: Image.Image) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(image)


@pytest.mark.parametrize(
    ("mode", "stored"),
    [
        ("RGB", "image.png"),
        ("RGBA", "image.png"),
        ("L", "image.png"),
        ("LA", "image.png"),
        ("1", "image.png"),
        ("P", "image.png"),
        ("I;16", "image.png"),
        ("I", "pixels.bin"),
        ("F", "pixels.bin"),
        ("CMYK", "pixels.bin"),
        ("YCbCr", "pixels.bin"),
        ("PA", "pixels.bin"),
    ],
)
def test_images_roundtrip_losslessly(store: Store, mode: str, stored: str) -> None:
    image = _gradient(mode)
    art = store.save_artifact(image, "img")
    assert art.materializer == "materializers.images:PillowMaterializer"
    assert art.files == [stored]
    back = art.load()
    assert isinstance(back, Image.Image)
    assert back.mode == image.mode and back.size == image.size == (20, 12)
    np.testing.assert_array_equal(_pixels(back), _pixels(image))
    assert back.getpalette() == image.getpalette()
    meta = art.metadata
    assert meta["mode"] == mode and meta["image_size"] == [20, 12]
    assert meta["width"] == 20 and meta["height"] == 12
    assert meta["bands"] == list(image.getbands())
    (name, kind, data), *rest = art.visualizations
    assert (name, kind, rest) == ("image.png", "image", [])
    shown = Image.open(io.BytesIO(data))
    assert shown.format == "PNG" and shown.size == (20, 12)
    if stored == "image.png":  # the image is its own visualization
        np.testing.assert_array_equal(_pixels(shown), _pixels(image))


def test_png_artifact_is_a_plain_png(store: Store, tmp_path: Path) -> None:
    image = _gradient("RGB")
    art = store.save_artifact(image, "img")
    [path] = art.export_files(tmp_path / "out")
    # The visualization is the same PNG (encoded once).
    assert art.visualizations == [("image.png", "image", path.read_bytes())]
    with Image.open(path) as opened:
        assert opened.format == "PNG"
        np.testing.assert_array_equal(_pixels(opened), _pixels(image))
    # Same pixels, same content: it deduplicates.
    assert store.save_artifact(image.copy(), "again").content_hash == art.content_hash


def test_an_image_opened_from_a_jpeg_loads_as_its_pixels(store: Store) -> None:
    buf = io.BytesIO()
    _gradient("RGB").save(buf, format="JPEG")
    opened = Image.open(io.BytesIO(buf.getvalue()))
    opened.load()
    art = store.save_artifact(opened, "photo")
    assert art.metadata["format"] == "JPEG"
    back = art.load()
    np.testing.assert_array_equal(_pixels(back), _pixels(opened))


def _figure() -> Figure:
    fig = Figure(figsize=(3, 2), dpi=40)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [2, 0, 1])
    ax.set_title("loss")
    fig.suptitle("training")
    return fig


def test_figure_saves_png_and_loads_as_the_png_image(store: Store) -> None:
    fig = _figure()
    art = store.save_artifact(fig, "fig")
    assert art.materializer == "materializers.figures:FigureMaterializer"
    assert art.files == ["figure.png"]
    back = art.load()
    assert isinstance(back, Image.Image) and back.mode == "RGBA" and back.size == (120, 80)
    assert art.metadata["size_inches"] == [3.0, 2.0] and art.metadata["dpi"] == 40.0
    assert art.metadata["pixels"] == [120, 80] and art.metadata["axes"] == 1
    assert art.metadata["titles"] == ["training", "loss"]
    vis = {name: (kind, data) for name, kind, data in art.visualizations}
    assert set(vis) == {"figure.png", "figure.svg"}
    assert vis["figure.png"][0] == vis["figure.svg"][0] == "image"
    with Image.open(io.BytesIO(vis["figure.png"][1])) as png:
        np.testing.assert_array_equal(_pixels(png), _pixels(back))
    assert b"<svg" in vis["figure.svg"][1] and b"loss" in vis["figure.svg"][1]
    # The figure's own canvas is left as it was.
    assert fig.canvas.figure is fig


def test_a_pyplot_figure_is_saved_too(store: Store) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1), dpi=30)
    try:
        ax.imshow(np.eye(3))
        art = store.save_artifact(fig, "pyplot")
        assert art.load().size == (30, 30)
    finally:
        plt.close(fig)


def test_export_import_keeps_images_loadable(tmp_path: Path) -> None:
    image = _gradient("RGBA")
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(image, "img")
        src.save_artifact(_figure(), "fig")
        src.export(tmp_path / "stream")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "stream", into=dst)
        np.testing.assert_array_equal(_pixels(dst.load_artifact("img")), _pixels(image))
        assert dst.load_artifact("fig").size == (120, 80)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fresh_process_imports_pillow_only_to_load_an_image(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(_gradient("L"), "img")
    done = _run(
        """
        import sys
        from engine import Store
        with Store.open("s") as s:
            art = s.get_artifact("img")
            print("before", "PIL" in sys.modules, "matplotlib" in sys.modules)
            print("loaded", art.load().size)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "before False False" in done.stdout and "loaded (20, 12)" in done.stdout


def test_missing_pillow_names_the_extra(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(_gradient("L"), "img")
        s.save_artifact(_figure(), "fig")
    done = _run(
        """
        import sys
        sys.modules["PIL"] = None  # as if Pillow were not installed
        from engine import Store, MaterializerError
        with Store.open("s") as s:
            for name in ("img", "fig"):
                try:
                    s.load_artifact(name)
                except MaterializerError as e:
                    print(name, "artledger[images]" in str(e))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "img True" in done.stdout and "fig True" in done.stdout

"""Pillow images as lossless PNG.

* An image in a mode PNG keeps exactly (``1``, ``L``, ``LA``, ``P``, ``RGB``,
  ``RGBA``, ``I;16``) -> ``image.png``, written by Pillow (the palette and
  transparency of ``P`` images included).
* Any other mode (``I``, ``F``, ``CMYK``, ``YCbCr``, ``PA``, ...) ->
  ``pixels.bin``, the raw pixel bytes, with mode, size and palette in the
  state: still lossless, and still no pickle.
* Loaded back as a ``PIL.Image.Image`` with the same mode, size and pixels
  (an image opened from a JPEG file loads as a plain image of its pixels).
  Only the PNG decoder is used, under Pillow's decompression-bomb limit
  (``Image.MAX_IMAGE_PIXELS``): raise it to load a larger PNG.
* Metadata: ``mode``, ``image_size`` ([width, height]; ``size`` is the
  store's byte count), ``width``, ``height``,
  ``bands`` and the ``format`` it was read from, if any. The image is its own
  visualization (``image.png``; other modes converted to RGB(A) for display).

Imported only when an image is saved or loaded (extra ``images``).
"""

from __future__ import annotations

import io
import threading
import weakref
from typing import Any, ClassVar, Final

from engine.errors import MaterializerError
from materializers.base import BaseMaterializer

try:
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"{e}. Loading images needs Pillow: pip install 'artledger[images]'") from e

PNG_FILE: Final = "image.png"
RAW_FILE: Final = "pixels.bin"
PNG_MODES: Final = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


def read_png(data: bytes, name: str) -> Image.Image:
    """A fully loaded image from PNG bytes; a ``MaterializerError`` if they are not one."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as opened:
            opened.load()
            image = opened.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MaterializerError(f"{name} is not a valid PNG file: {e}") from e
    return image


_last_saved = threading.local()


def remember(obj: Any, payload: bytes) -> None:
    """Keep the PNG just written for ``obj`` so that the engine's call to
    ``save_visualizations`` for the same object (next, on this thread) reuses
    it instead of encoding the image again."""
    _last_saved.entry = (weakref.ref(obj), payload)


def recall(obj: Any) -> bytes | None:
    """The PNG :func:`remember` kept for this very object, once; else None."""
    entry = getattr(_last_saved, "entry", None)
    _last_saved.entry = None
    if entry is not None and entry[0]() is obj:
        payload: bytes = entry[1]
        return payload
    return None


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class PillowMaterializer(BaseMaterializer):
    """``PIL.Image.Image`` (and Pillow's own file subclasses) as PNG."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (Image.Image,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Pillow's own image classes (a user subclass may carry more state)."""
        return data_type.__module__.split(".")[0] == "PIL"

    def save(self, data: Any) -> None:
        recall(None)  # forget an earlier image's PNG
        if data.mode in PNG_MODES:
            payload = png_bytes(data)
            with self.open(PNG_FILE, "wb") as f:
                f.write(payload)
            remember(data, payload)
            return
        state: dict[str, Any] = {"mode": data.mode, "size": list(data.size)}
        if data.palette is not None and data.mode in ("P", "PA"):
            palette_mode = data.palette.mode
            state["palette"] = [palette_mode, bytes(data.getpalette(palette_mode) or [])]
        with self.open(RAW_FILE, "wb") as f:
            f.write(data.tobytes())
        self.files.state.update(state)

    def load(self, data_type: type) -> Any:
        names = self.files.names()
        if PNG_FILE in names:
            with self.open(PNG_FILE, "rb") as f:
                return read_png(f.read(), PNG_FILE)
        if RAW_FILE not in names:
            raise MaterializerError(f"image artifact has neither {PNG_FILE} nor {RAW_FILE}.")
        state = self.files.state
        try:
            mode, (width, height) = str(state["mode"]), state["size"]
            with self.open(RAW_FILE, "rb") as f:
                image = Image.frombytes(mode, (width, height), f.read())
            if "palette" in state:
                palette_mode, palette = state["palette"]
                image.putpalette(palette, palette_mode)
        except (KeyError, TypeError, ValueError) as e:
            raise MaterializerError(f"{RAW_FILE} cannot be read as an image: {e}") from e
        return image

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        width, height = data.size
        meta: dict[str, Any] = {
            "mode": data.mode,
            "image_size": [width, height],
            "width": width,
            "height": height,
            "bands": list(data.getbands()),
        }
        if data.format:
            meta["format"] = data.format
        return meta

    def save_visualizations(self, data: Any) -> dict[str, str]:
        payload = recall(data)
        if payload is None:
            image = data
            if data.mode not in PNG_MODES:
                image = data.convert("RGBA" if "A" in data.getbands() else "RGB")
            payload = png_bytes(image)
        with self.open("image.png", "wb") as f:
            f.write(payload)
        return {"image.png": "image"}

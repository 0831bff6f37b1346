"""matplotlib figures as PNG, with PNG and SVG visualizations.

A ``matplotlib.figure.Figure`` is not data a process can rebuild (its artists
hold callbacks, transforms and a canvas), so it is stored as what it shows:

* saved: ``figure.png``, rendered with ``savefig`` at the figure's own dpi
  (the Agg renderer; no display is needed);
* **loaded back as the PNG image data: a ``PIL.Image.Image``** (RGBA), not as
  a ``Figure``. Show it with ``plt.imshow(image)`` or ``image.show()``;
* metadata: ``size_inches``, ``dpi``, ``pixels`` ([width, height]), ``axes``
  (their count) and the non-empty ``titles`` (the figure's suptitle and each
  axes' title);
* visualizations: ``figure.png`` (the same image) and ``figure.svg``.

Imported only when a figure is saved or loaded (extra ``images``, which
brings matplotlib and Pillow).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar, Final

from materializers.base import BaseMaterializer

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    from materializers.images import read_png, recall, remember
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"{e}. Figures need matplotlib and Pillow: pip install 'artledger[images]'"
    ) from e

PNG_FILE: Final = "figure.png"
SVG_FILE: Final = "figure.svg"


def _render(figure: Figure, canvas_type: Any, fmt: str) -> bytes:
    """``figure`` as ``fmt`` bytes, drawn on a fresh canvas of ``canvas_type``
    (the figure's own canvas, e.g. an interactive backend's, is put back)."""
    buf = io.BytesIO()
    original = figure.canvas
    try:
        canvas_type(figure).print_figure(buf, format=fmt, dpi=figure.dpi)
    finally:
        figure.set_canvas(original)
    return buf.getvalue()


class FigureMaterializer(BaseMaterializer):
    """``matplotlib.figure.Figure`` saved as PNG; loads as a ``PIL.Image.Image``."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (Figure,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    def save(self, data: Any) -> None:
        recall(None)  # forget an earlier object's PNG
        payload = _render(data, FigureCanvasAgg, "png")
        with self.open(PNG_FILE, "wb") as f:
            f.write(payload)
        remember(data, payload)

    def load(self, data_type: type) -> Any:
        """The saved PNG as a ``PIL.Image.Image`` (see the module docs)."""
        with self.open(PNG_FILE, "rb") as f:
            return read_png(f.read(), PNG_FILE)

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        width, height = (float(x) for x in data.get_size_inches())
        dpi = float(data.dpi)
        suptitle = getattr(data, "_suptitle", None)
        titles = [suptitle.get_text()] if suptitle is not None else []
        titles += [ax.get_title() for ax in data.axes]
        return {
            "size_inches": [width, height],
            "dpi": dpi,
            "pixels": [round(width * dpi), round(height * dpi)],
            "axes": len(data.axes),
            "titles": [t for t in titles if t],
        }

    def save_visualizations(self, data: Any) -> dict[str, str]:
        payload = recall(data) or _render(data, FigureCanvasAgg, "png")
        with self.open(PNG_FILE, "wb") as f:
            f.write(payload)
        with self.open(SVG_FILE, "wb") as f:
            f.write(_render(data, FigureCanvasSVG, "svg"))
        return {PNG_FILE: "image", SVG_FILE: "image"}

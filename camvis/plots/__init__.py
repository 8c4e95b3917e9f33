"""Every figure camvis draws (matplotlib only, Agg backend, PNG written atomically).

The Agg backend is chosen here, once, before any submodule imports pyplot: figures are drawn on
login and compute nodes without a display.
"""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from camvis.figure_formats import FORMATS, parse_formats  # noqa: E402, F401 - camvis.plots' own names too
from camvis.io import write_bytes  # noqa: E402

# camvis2's annotation colours: green in front of the visibility limit, magenta behind it.
VISIBLE_COLOUR = (0.0, 0.8, 0.0)
NONVISIBLE_COLOUR = (0.85, 0.0, 0.85)
# indexed by label: 0 non-visible, 1 visible
LABEL_COLOURS = np.array([NONVISIBLE_COLOUR, VISIBLE_COLOUR])
# Okabe & Ito's colour-blind-safe pair for figures meant for a paper: blue visible, vermillion non-visible.
CB_VISIBLE, CB_NONVISIBLE = (0.0, 0.447, 0.698), (0.835, 0.369, 0.0)
CB_LABEL_COLOURS = np.array([CB_NONVISIBLE, CB_VISIBLE])
CB_SCORE_CMAP = "cividis"  # sequential, colour-blind safe and monotone in lightness (prints in grey)

PAPER_DPI = 200


def save_figure(fig: Figure, path: str | Path, formats: tuple[str, ...] = ("png",), dpi: int = PAPER_DPI,
                bbox_inches: str | None = "tight") -> list[Path]:
    """Write `fig` once per format beside `path` (its suffix replaced), each atomically, then close it.
    PDF and SVG are vector (text stays text); `dpi` sets the PNG's resolution."""
    path = Path(path)
    written = []
    try:
        for fmt in formats:
            data = BytesIO()
            # zlib level 3 instead of PIL's 6: a third less CPU to encode, files about a quarter bigger
            extra = {"pil_kwargs": {"compress_level": 3}} if fmt == "png" else {}
            fig.savefig(data, format=fmt, dpi=dpi, bbox_inches=bbox_inches, **extra)
            target = path.with_suffix(f".{fmt}")
            write_bytes(target, data.getbuffer())
            written.append(target)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
    return written


def save_png(fig: Figure, path: str | Path, dpi: int = 110, bbox_inches: str | None = "tight") -> Path:
    """Write `fig` as a PNG atomically, then close it (even when savefig raises).
    bbox_inches=None keeps the figure's own size and margins. Drawn in memory first, so a
    full disk is a DiskFullError that knows the PNG's size."""
    path = Path(path)
    try:
        png = BytesIO()
        fig.savefig(png, format="png", dpi=dpi, bbox_inches=bbox_inches)
        write_bytes(path, png.getbuffer())
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # not imported here: plots.aggregate draws bare Figures
        if pyplot is not None:  # only pyplot keeps figures alive; without it loaded, no figure is its
            pyplot.close(fig)
    return path

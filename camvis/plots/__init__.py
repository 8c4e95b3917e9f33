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

from camvis.io import write_bytes  # noqa: E402

# camvis2's annotation colours: green in front of the visibility limit, magenta behind it.
VISIBLE_COLOUR = (0.0, 0.8, 0.0)
NONVISIBLE_COLOUR = (0.85, 0.0, 0.85)
# indexed by label: 0 non-visible, 1 visible
LABEL_COLOURS = np.array([NONVISIBLE_COLOUR, VISIBLE_COLOUR])


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

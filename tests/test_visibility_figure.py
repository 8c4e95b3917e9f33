"""camvis-aggregate's visibility figure: formats, the grid's panel order, intervals and flags drawn."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image

from camvis.plots import parse_formats
from camvis.plots.prediction import draw_visibility, visibility_figure


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """points and summary as camvis.results.aggregate_visibility makes them: 2 groups x 2 folds x 3 images."""
    rows = []
    for g, factor in (("zeta", 0.5), ("alpha", 1.2)):
        for fold in (1, 2):
            for k, flag in enumerate(("ok", "uncertain", "poor_fit")):
                true = 500.0 * (k + 1) * fold
                pred = true * factor
                rows.append({"group": g, "fold": fold, "image": f"i{k}", "predicted_visibility_m": pred,
                             "true_visibility_m": true, "visibility_low_m": pred / 1.5,
                             "visibility_high_m": math.inf if flag == "poor_fit" else pred * 1.5, "flag": flag})
    points = pd.DataFrame(rows)
    summary = pd.DataFrame([{"group": g, "fold": "all", "median_signed_log10_error": math.log10(f)}
                            for g, f in (("zeta", 0.5), ("alpha", 1.2))])
    return points, summary


def test_panels_in_grid_order_with_intervals_and_flags_marked() -> None:
    points, summary = frames()
    fig = draw_visibility(points, summary, "exp", order=["zeta", "alpha"])  # the grid's order, not sorted
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["zeta\nbias -0.30 (x0.5)", "alpha\nbias +0.08 (x1.2)"]
    ax = fig.axes[0]
    bars = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert sum(len(b.get_segments()) for b in bars) == 6  # one interval per image, an infinite end clipped
    assert all(np.isfinite(seg).all() for b in bars for seg in b.get_segments())
    markers = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    hollow = [c for c in markers if len(c.get_facecolor()) == 0 or c.get_facecolor()[0][3] == 0]
    assert len(markers) == 2 * 3 and len(hollow) == 2  # per fold: ok, uncertain (hollow), flagged
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert {"ok", "uncertain", "flagged", "per-image interval", "fold 1", "fold 2"} <= set(texts)


def test_formats_at_200_dpi(tmp_path) -> None:
    points, summary = frames()
    written = visibility_figure(points, summary, tmp_path / "visibility.png", "exp", formats=parse_formats("png,pdf,svg"))
    assert [p.name for p in written] == ["visibility.png", "visibility.pdf", "visibility.svg"]
    assert written[1].read_bytes()[:5] == b"%PDF-" and b"<svg" in written[2].read_bytes()[:1000]
    with Image.open(written[0]) as img:
        assert round(img.info["dpi"][0]) == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visibility.pdf", "visibility.png", "visibility.svg"]

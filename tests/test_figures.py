"""The paper figures: checked by their artists (points, boxes, brackets, legend, colour bar), not only by file."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from camvis.plots import parse_formats
from camvis.plots.aggregate import BOX_MIN_FOLDS, draw_metric, metric_figure
from camvis.plots.evaluation import draw_image_map


def frames(groups: dict[str, float], folds: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """per_fold, summary and comparisons frames as camvis-aggregate makes them."""
    rng = np.random.default_rng(seed)
    rows = [{"group": g, "fold": k, "view": f"cam{k}_1", "job": f"{g}_fold{k}", "acc": level + rng.normal(0, 0.01),
             "acc_ci_low": level - 0.03, "acc_ci_high": level + 0.03}
            for g, level in groups.items() for k in range(1, folds + 1)]  # fmt: skip
    per_fold = pd.DataFrame(rows)
    means = per_fold.groupby("group")["acc"].mean()
    summary = pd.DataFrame([{"group": g, "metric": "acc", "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}
                            for g, m in means.items()])
    names = list(groups)
    comparisons = pd.DataFrame([{"metric": "acc", "group_a": a, "group_b": b,
                                 "p_holm": 0.0004 if abs(groups[a] - groups[b]) > 0.05 else 0.4}
                                for i, a in enumerate(names) for b in names[i + 1:]])  # fmt: skip
    return per_fold, summary, comparisons


def legend_texts(fig: matplotlib.figure.Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_strip_points_mean_and_interval_in_grid_order_without_boxes_below_8_folds() -> None:
    per_fold, summary, comparisons = frames({"cat": 0.80, "align": 0.70, "base": 0.79}, folds=3)
    fig = draw_metric(per_fold, summary, "acc", "exp", comparisons=comparisons, confidence=0.9,
                      order=["cat", "align", "base"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "align", "base"]  # the grid's, not sorted
    points = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    assert len(points) == 1 and len(points[0].get_offsets()) == 9  # one strip point per job
    assert np.allclose(points[0].get_edgecolor()[:, :3], 0)  # outlined in black
    assert not ax.patches and not [c for c in ax.collections if c.get_label() == "boxes"]  # 3 folds: no boxes
    texts = legend_texts(fig)
    assert texts[:3] == ["fold 1 (cam1_1)", "fold 2 (cam2_1)", "fold 3 (cam3_1)"]
    assert "mean over folds,\n90% interval over folds" in texts and "test images only" in texts
    assert any("corrected t-test" in t and "Holm" in t for t in texts)
    # align differs from both others (p_holm 0.0004): two brackets with three stars, cat-base none
    assert sorted(t.get_text() for t in ax.texts) == ["***", "***"]


def test_boxes_from_8_folds_and_no_bracket_without_a_significant_pair() -> None:
    per_fold, summary, comparisons = frames({"cat": 0.80, "align": 0.79}, folds=BOX_MIN_FOLDS)
    fig = draw_metric(per_fold, summary, "acc", comparisons=comparisons)
    ax = fig.axes[0]
    boxes = [c for c in ax.collections if c.get_label() == "boxes"]
    assert len(boxes) == 1 and len(boxes[0].get_paths()) == 2  # one box per group
    d = per_fold[per_fold.group == "align"]["acc"].to_numpy()  # sorted: align first
    q1, q3 = np.percentile(d, [25, 75])
    assert np.allclose(sorted(set(boxes[0].get_paths()[0].vertices[:, 1].round(12))), [q1, q3])  # matplotlib's quartiles
    assert not ax.texts and "box: quartiles over folds" in legend_texts(fig)
    assert any(t.startswith("no pair differs at p < 0.05") for t in legend_texts(fig))


def test_formats_and_200_dpi(tmp_path) -> None:
    per_fold, summary, comparisons = frames({"cat": 0.8, "align": 0.7}, folds=2)
    written = metric_figure(per_fold, summary, "acc", tmp_path / "acc.png", comparisons=comparisons,
                            formats=parse_formats("png,pdf,svg"))
    assert [p.name for p in written] == ["acc.png", "acc.pdf", "acc.svg"]
    assert written[1].read_bytes()[:5] == b"%PDF-" and b"<svg" in written[2].read_bytes()[:1000]
    with Image.open(written[0]) as img:
        assert round(img.info["dpi"][0]) == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.pdf", "acc.png", "acc.svg"]  # no temporaries


@pytest.mark.parametrize("text", ["gif", "png,,jpeg", ""])
def test_bad_formats(text: str) -> None:
    with pytest.raises(ValueError, match="png, pdf, svg"):
        parse_formats(text)


def test_image_map_is_colour_blind_safe_outlined_and_labelled() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    rows, cols = rng.uniform(0, 32, 20), rng.uniform(0, 48, 20)
    fig = draw_image_map(image, rows, cols, rng.integers(0, 2, 20), rng.uniform(0, 1, 20),
                         title="e/cat_fold1: img — predicted V 1,000 m (ok), true V 1,200 m")
    truth, prediction = fig.axes[:2]  # then the colour bar's axes
    assert prediction.collections[0].get_cmap().name == "cividis"
    for ax in (truth, prediction):
        assert np.allclose(ax.collections[0].get_edgecolor()[:, :3], 0)  # black outlines
    bar = next(ax for ax in fig.axes if ax.get_ylabel() == "predicted p(visible)")
    assert bar is not None
    assert [t.get_text() for t in truth.get_legend().get_texts()] == ["visible", "non-visible"]
    assert "cat_fold1" in fig._suptitle.get_text() and "true V 1,200 m" in fig._suptitle.get_text()
    matplotlib.pyplot.close(fig)

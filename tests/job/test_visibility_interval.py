"""The per-image visibility interval (a bootstrap over the image's patches, refitting the crossing) on
synthetic images whose true visibility is known, and the `uncertain` flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camvis.job import visibility


def synthetic_image(rng: np.random.Generator, true_v: float, patches: int = 400, width: float = 0.3) -> tuple:
    """Patch depths (log-uniform, 10 m..100 km) and 0/1 scores drawn from a model whose p(visible) falls
    through 0.5 at `true_v` over about `width` decades: what the scores of an unbiased model look like."""
    depth = 10 ** rng.uniform(1, 5, patches)
    p = 1 / (1 + np.exp(-3 * (math.log10(true_v) - np.log10(depth)) / width))
    return depth, (rng.random(patches) < p).astype(float)


def test_the_batched_refit_equals_the_single_fit_on_repeated_patches():
    rng = np.random.default_rng(3)
    depth, scores = synthetic_image(rng, 2000.0, patches=120)
    x = np.log10(depth)
    start = visibility.fit_logistic(x, scores)
    counts = np.stack([np.ones(120), rng.integers(0, 4, 120), np.r_[np.zeros(60), np.ones(60) * 2]])
    a, b = visibility.fit_logistic_weighted(x, scores, counts, start)
    for k, c in enumerate(counts.astype(int)):
        expected = visibility.fit_logistic(np.repeat(x, c), np.repeat(scores, c))
        assert (a[k], b[k]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("patches, width", [(400, 0.3), (150, 0.5)])
def test_intervals_cover_the_true_visibility_at_about_their_level(patches: int, width: float):
    rng = np.random.default_rng(7)
    truths = 10 ** rng.uniform(2.3, 4.3, 120)  # 200 m .. 20 km: inside the patches' depths
    fits = [visibility.estimate(*synthetic_image(rng, v, patches, width), seed=i) for i, v in enumerate(truths)]
    inside = np.array([f.low_m <= v <= f.high_m for f, v in zip(fits, truths)])
    assert all(f.low_m <= f.visibility_m <= f.high_m for f in fits if f.flag in ("ok", "uncertain"))
    # nominal 90 %; 120 images: a binomial 90 % would lie in [0.84, 0.95] 95 % of the time
    assert 0.8 <= inside.mean() <= 0.97, inside.mean()
    low, high = np.array([f.low_m for f in fits]), np.array([f.high_m for f in fits])
    assert visibility.coverage(low, high, truths) == (pytest.approx(inside.mean()), 120)


def test_an_image_whose_patches_do_not_pin_v_down_is_uncertain_not_ok():
    """A good fit (near patches visible, far ones not) whose crossing rests on the 6 patches between."""
    rng = np.random.default_rng(0)
    depth = np.r_[10 ** rng.uniform(1, 2, 60), 10 ** rng.uniform(2.2, 3.8, 6), 10 ** rng.uniform(4, 5, 60)]
    scores = (rng.random(depth.size) < 1 / (1 + np.exp(-2 * (3.0 - np.log10(depth))))).astype(float)
    fit = visibility.estimate(depth, scores, seed=0)
    assert fit.quality >= visibility.POOR_FIT_R2  # the fit alone would say ok
    assert fit.flag == "uncertain" and fit.high_m > visibility.UNCERTAIN_FACTOR * fit.low_m
    sharp = visibility.estimate(*synthetic_image(rng, 1000.0, 400, 0.1), seed=0)
    assert sharp.flag == "ok" and sharp.high_m <= visibility.UNCERTAIN_FACTOR * sharp.low_m
    again = visibility.estimate(depth, scores, seed=0)  # seeded: the same patches give the same interval
    assert (again.low_m, again.high_m) == (fit.low_m, fit.high_m)


def test_one_sided_images_get_half_open_intervals_and_rows_carry_them():
    depth = np.array([20.0, 200.0, 2000.0])
    beyond = visibility.estimate(depth, np.array([0.9, 0.8, 0.6]))
    assert (beyond.low_m, beyond.high_m) == (2000.0, math.inf)
    below = visibility.estimate(depth, np.array([0.4, 0.2, 0.1]))
    assert (below.low_m, below.high_m) == (0.0, 20.0)
    rows = visibility.visibility_table({0: beyond, 1: below}, ["x", "y"], {0: "v", 1: "v"}, {"x": 5000.0, "y": 100.0})
    assert [r["in_interval"] for r in rows] == [1.0, 0.0]
    assert rows[0]["signed_log10_error"] == pytest.approx(math.log10(2000 / 5000))
    assert list(rows[0]) == visibility.CSV_COLUMNS
    summary = visibility.image_summary(rows)
    assert summary["interval_coverage"] == 0.5
    assert summary["median_signed_log10_error"] == pytest.approx(np.median([math.log10(0.4), math.log10(0.2)]))
    assert visibility.interval_columns(None) == {"visibility_low_m": pytest.approx(math.nan, nan_ok=True),
                                                 "visibility_high_m": pytest.approx(math.nan, nan_ok=True)}

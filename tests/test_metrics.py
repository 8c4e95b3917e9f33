"""Metrics against hand-worked cases, the bootstrap against a per-resample loop, the visibility fit."""

import math

import mpmath
import numpy as np
import pytest

import torch
import torch.nn.functional as F

from camvis import metrics
from camvis.job import visibility

# labels [1, 1, 1, 0], predictions [1, 0, 1, 0]: tn 1, fp 0, fn 1, tp 2
LABELS = np.array([1, 1, 1, 0])
SCORES = np.array([0.9, 0.2, 0.7, 0.1])


def test_confusion_rows_are_truth_columns_prediction():
    assert metrics.confusion(SCORES, LABELS).tolist() == [[1, 0], [1, 2]]


def test_threshold_half_counts_as_not_visible_as_camvis2s_round():
    scores = np.array([0.5, 0.5000001, 0.4999], dtype=np.float32)
    assert metrics.confusion(scores, np.array([1, 1, 1])).tolist() == [[0, 0], [2, 1]]
    # camvis2 predicts torch.round(sigmoid(logit)): half to even, so 0.5 -> 0
    assert torch.round(torch.from_numpy(scores)).tolist() == [0.0, 1.0, 0.0]
    assert metrics.scores(np.full(4, 0.5), np.array([0, 0, 1, 1]))["acc"] == 0.5  # all called not visible


def test_balanced_accuracy_is_mean_per_class_recall():
    assert metrics.balanced_accuracy(SCORES, LABELS) == pytest.approx((1 + 2 / 3) / 2)


def test_macro_f1_is_mean_of_both_class_f1():
    f1_visible = 2 * 2 / (2 * 2 + 0 + 1)  # 2 tp / (2 tp + fp + fn)
    f1_nonvisible = 2 * 1 / (2 * 1 + 1 + 0)  # class 0: tp = tn = 1, fp = fn = 1, fn = fp = 0
    assert metrics.macro_f1(SCORES, LABELS) == pytest.approx((f1_visible + f1_nonvisible) / 2)


def test_loss_is_mean_binary_cross_entropy():
    expected = -np.mean([math.log(0.9), math.log(0.2), math.log(0.7), math.log(0.9)])
    assert metrics.bce_loss(SCORES, LABELS) == pytest.approx(expected)
    got = metrics.scores(SCORES, LABELS)
    assert got == pytest.approx({"loss": expected, "acc": 5 / 6, "f1": (0.8 + 2 / 3) / 2})


def test_loss_is_not_clipped():
    assert metrics.bce_loss(np.array([0.0, 1.0]), np.array([1, 0])) == math.inf
    # the case: logits [30, -30, 20] all wrong; a clip at 1e-7 gave 10.75
    x, y = np.array([30.0, -30.0, 20.0]), np.array([0, 1, 0])
    exact = (80 + 2 * math.log1p(math.exp(-30)) + math.log1p(math.exp(-20))) / 3  # ~26.67, each term log(1 + e^|x|)
    assert metrics.scores(1 / (1 + np.exp(-x)), y, logits=x)["loss"] == pytest.approx(exact, rel=1e-15)


def test_loss_from_logits_equals_torch_bce_with_logits_to_float64_rounding():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 8, 5000), [-800.0, -40.0, -1e-9, 0.0, 1e-9, 40.0, 800.0]])
    y = (rng.random(x.size) < 0.5).astype(np.uint8)
    ref = F.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(y).double(), reduction="none")
    ours = metrics.per_sample_bce(x, y, logits=True)
    # torch takes log(1 + e^x) where this takes log1p: they differ by float64 rounding of terms of size 1
    np.testing.assert_allclose(ours, ref.numpy(), rtol=4e-16, atol=1e-14)
    with mpmath.workdps(60):
        exact = [float(mpmath.log1p(mpmath.exp(mpmath.mpf(v))) - v * int(t)) for v, t in zip(x[:200], y[:200])]
    np.testing.assert_allclose(ours[:200], exact, rtol=4e-16)  # and it is the exactly rounded value
    with np.errstate(over="ignore"):  # e^-x overflows for the most negative logits: p is then exactly 0
        p = 1 / (1 + np.exp(-x))
    mean = F.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(y).double()).item()
    assert metrics.scores(p, y, logits=x)["loss"] == pytest.approx(mean, rel=1e-14)
    assert metrics.bootstrap(p, y, n=2, logits=x)["loss"] == pytest.approx(
        metrics.bootstrap(p, y, n=2, logits=x.astype(np.float32).astype(np.float64))["loss"], rel=1e-6)


def test_logits_of_another_shape_are_rejected():
    with pytest.raises(ValueError, match="logits and scores differ"):
        metrics.scores(np.zeros(3), np.zeros(3), logits=np.zeros(2))


def test_loss_from_logits_matches_direct_formula_and_stays_finite():
    x = np.array([-3.0, -0.5, 0.0, 2.0, 4.0])
    y = np.array([0, 1, 1, 0, 1])
    p = 1 / (1 + np.exp(-x))
    direct = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(metrics.per_sample_bce(x, y, logits=True), direct, rtol=1e-12)
    assert metrics.bce_loss(np.array([100.0, -100.0]), np.array([0, 1]), logits=True) == pytest.approx(100.0)


def test_absent_class_is_left_out_of_the_means():
    # only visible patches, one predicted non-visible: recall of class 1 = 1/2, class 0 has none;
    # F1 of class 0 is 0 (a false prediction of it), F1 of class 1 = 2/3
    assert metrics.scores(np.array([0.9, 0.1]), np.array([1, 1]))["acc"] == pytest.approx(0.5)
    assert metrics.macro_f1(np.array([0.9, 0.1]), np.array([1, 1])) == pytest.approx(1 / 3)
    # all right and one class only: class 0 has no F1 at all, so macro F1 is class 1's
    assert metrics.macro_f1(np.array([0.9, 0.8]), np.array([1, 1])) == 1.0


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.scores(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        metrics.scores(np.zeros(0), np.zeros(0))


def _random_case(n: int = 37, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.6).astype(np.uint8)
    scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1).astype(np.float32)
    return scores, labels


def test_bootstrap_equals_a_per_resample_loop():
    scores, labels = _random_case()
    n = 50
    got = metrics.bootstrap(scores, labels, n=n, seed=7)
    idx = np.random.default_rng(7).integers(0, len(scores), size=(n, len(scores)), dtype=np.int32)
    for r in range(n):
        ref = metrics.scores(scores[idx[r]], labels[idx[r]])
        for name in metrics.METRICS:
            assert got[name][r] == pytest.approx(ref[name], rel=1e-12), (name, r)
    assert all(got[name].shape == (n,) for name in metrics.METRICS)


def test_bootstrap_is_seeded_and_independent_of_chunking():
    scores, labels = _random_case(200)
    a = metrics.bootstrap(scores, labels, n=64, seed=1)
    b = metrics.bootstrap(scores, labels, n=64, seed=1, chunk_elements=450)  # 2 rows per chunk
    c = metrics.bootstrap(scores, labels, n=64, seed=2)
    for name in metrics.METRICS:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
        assert np.unique(a[name]).size > 1  # resamples really differ


def test_bootstrap_of_zero_resamples_is_empty_and_has_no_interval():
    scores, labels = _random_case()
    boot = metrics.bootstrap(scores, labels, n=0)
    assert boot["acc"].shape == (0,)
    assert all(math.isnan(v) for v in metrics.percentile_ci(boot["acc"], 0.95))


def test_percentile_ci_is_equal_tailed():
    assert metrics.percentile_ci(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    lo, hi = metrics.percentile_ci(np.arange(101.0), 0.9)
    assert type(lo) is float and type(hi) is float  # 1-D, no axis: two floats (scores.json)
    with pytest.raises(ValueError):
        metrics.percentile_ci(np.arange(3.0), 1.5)
    with pytest.raises(ValueError):
        metrics.percentile_ci(np.ones((3, 2)), 0.0, axis=0)


def test_percentile_ci_along_an_axis_is_per_column():
    boots = np.random.default_rng(3).normal(size=(500, 3))  # (resamples, metrics), as camvis-aggregate
    lo, hi = metrics.percentile_ci(boots, 0.9, axis=0)
    assert lo.shape == hi.shape == (3,)
    for k in range(3):
        assert (lo[k], hi[k]) == metrics.percentile_ci(boots[:, k], 0.9)
        alpha = (1 - 0.9) / 2  # camvis-aggregate's former own interval: the same values
        assert (lo[k], hi[k]) == tuple(np.quantile(boots[:, k], [alpha, 1 - alpha]))
    lo_t, hi_t = metrics.percentile_ci(boots.T, 0.9, axis=1)
    assert np.array_equal(lo_t, lo) and np.array_equal(hi_t, hi)
    empty_lo, empty_hi = metrics.percentile_ci(np.empty((0, 3)), 0.9, axis=0)
    assert empty_lo.shape == empty_hi.shape == (3,) and np.isnan(empty_lo).all() and np.isnan(empty_hi).all()


# --------------------------------------------------------------------------- visibility


def _logistic_scores(depth: np.ndarray, v: float, slope: float) -> np.ndarray:
    return 1 / (1 + np.exp(-slope * (math.log10(v) - np.log10(depth))))


@pytest.mark.parametrize("true_v, slope", [(300.0, 6.0), (3000.0, 3.0), (20000.0, 2.0)])
def test_fit_recovers_a_known_visibility(true_v, slope):
    rng = np.random.default_rng(0)
    depth = 10 ** rng.uniform(1, 5, 400)
    fit = visibility.estimate(depth, _logistic_scores(depth, true_v, slope))
    assert fit.flag == "ok"
    assert abs(math.log10(fit.visibility_m / true_v)) < 0.01
    assert fit.b == pytest.approx(slope, rel=0.1)
    noisy = np.clip(_logistic_scores(depth, true_v, slope) + rng.normal(0, 0.1, depth.size), 0, 1)
    assert abs(math.log10(visibility.estimate(depth, noisy).visibility_m / true_v)) < 0.1


def test_fit_of_perfectly_separated_scores_lands_in_the_gap():
    depth = np.concatenate([np.linspace(10, 900, 50), np.linspace(1100, 90000, 50)])
    fit = visibility.estimate(depth, (depth < 1000).astype(float))
    assert fit.flag == "ok" and 900 < fit.visibility_m < 1100 and math.isfinite(fit.b)


def test_degenerate_fits_report_the_bound_and_a_flag():
    depth = np.array([20.0, 200.0, 2000.0])
    all_visible = visibility.estimate(depth, np.array([0.9, 0.8, 0.6]))
    assert (all_visible.flag, all_visible.visibility_m) == ("beyond_max", 2000.0)
    none_visible = visibility.estimate(depth, np.array([0.4, 0.2, 0.1]))
    assert (none_visible.flag, none_visible.visibility_m) == ("below_min", 20.0)
    inverted = visibility.estimate(depth, np.array([0.1, 0.5, 0.9]))
    assert inverted.flag == "inverted" and math.isnan(inverted.visibility_m)


def test_images_are_fitted_separately_and_errors_summarized():
    rng = np.random.default_rng(1)
    depth = 10 ** rng.uniform(1, 5, 600)
    image = np.repeat([4, 1, 2], 200)
    truth = {1: 100.0, 2: 1000.0, 4: 10000.0}
    scores = np.concatenate([_logistic_scores(depth[image == i], truth[i], 4.0) for i in (4, 1, 2)])
    fits = visibility.estimate_images(image, depth, scores)
    assert sorted(fits) == [1, 2, 4]
    for i, v in truth.items():
        assert abs(math.log10(fits[i].visibility_m / v)) < 0.02
    names = [f"img{i}" for i in range(5)]
    rows = visibility.visibility_table(fits, names, {1: "a", 2: "a", 4: "b"}, {"img1": 100.0, "img4": 20000.0})
    assert [r["image"] for r in rows] == ["img1", "img2", "img4"]
    assert math.isnan(rows[1]["true_visibility_m"]) and math.isnan(rows[1]["abs_log10_error"])
    assert rows[2]["abs_log10_error"] == pytest.approx(math.log10(2), abs=0.02)
    summary = visibility.image_summary(rows)
    assert summary["n_images"] == 3 and summary["n_scored"] == 2
    assert summary["median_abs_log10_error"] == pytest.approx(np.median([rows[0]["abs_log10_error"],
                                                                         rows[2]["abs_log10_error"]]))


def test_true_visibility_prefers_the_store_attribute():
    attrs = {"visibility_m": [150.0, None], "provenance": {"raw_dir": "/nonexistent"}}
    assert visibility.true_visibility(("a", "b"), attrs) == {"a": 150.0}
    assert visibility.true_visibility(("a", "b"), {"visibility_m": [None, None]}) is None

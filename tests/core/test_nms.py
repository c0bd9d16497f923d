"""slidewin.core.nms against a deliberately naive greedy NMS: parity, properties, boundary, validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidewin.core.nms import _run as run_nms
from slidewin.core.nms import batched_nms, nms, validate_boxes
from slidewin.core.soft_nms import _soft_nms, soft_nms

THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


@pytest.fixture(autouse=True, params=["numpy", "kernel"])
def nms_path(request, monkeypatch):
    """Every NMS test runs on both paths: the NumPy loop (small inputs while numba is not loaded)
    and the numba kernel. Both must give the naive reference's indices."""
    import slidewin.core.nms as module

    run = module._run
    monkeypatch.setattr(module, "_run", lambda *args: run(*args, path=request.param))
    return request.param
assert_equal = np.testing.assert_array_equal


# --- the reference: textbook greedy NMS, no pruning, no numba ----------------------------------


def ious_with(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one float64 box (4,) with (K, 4) boxes, the same expression as the kernel."""
    iw = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = iw * ih
    overlap = (iw > 0) & (ih > 0) & (inter > 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = np.where(overlap, area + areas - inter, 1.0)
    return np.where(overlap, inter / union, 0.0)


def reference_nms(xyxy, scores, iou_threshold: float) -> np.ndarray:
    """Walk boxes by (score desc, index asc); keep one unless a kept box has IoU > threshold."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if not kept or (ious_with(boxes[i], boxes[kept]) <= iou_threshold).all():
            kept.append(i)
    return np.array(kept, dtype=np.int64)


def reference_batched_nms(xyxy, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """Reference NMS per class, merged by (score desc, index asc)."""
    kept = []
    for c in np.unique(class_ids):
        members = np.flatnonzero(class_ids == c)
        kept.extend(members[reference_nms(xyxy[members], scores[members], iou_threshold)])
    return np.array(sorted(kept, key=lambda i: (-float(scores[i]), i)), dtype=np.int64)


# --- generators -----------------------------------------------------------------------------------


@st.composite
def box_sets(draw, max_n: int = 40):
    """(xyxy float64 (N, 4), scores float64 (N,)): valid boxes with duplicates and score ties.

    Small integer grids make exact duplicates and IoUs exactly at a threshold likely; float
    boxes spread sizes over ~12 octaves so several size bands are in play.
    """
    n = draw(st.integers(0, max_n))
    if draw(st.booleans()):
        corner, size = st.integers(0, 24).map(float), st.integers(1, 12).map(float)
    else:
        corner = st.floats(0, 100, allow_nan=False, width=32)
        size = st.floats(1 / 64, 64, allow_nan=False, width=32)
    rows = draw(st.lists(st.tuples(corner, corner, size, size), min_size=n, max_size=n))
    xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in rows], dtype=np.float64).reshape(-1, 4)
    if n:
        copies = draw(st.lists(st.integers(0, n - 1), max_size=n // 2))
        xyxy = np.concatenate([xyxy, xyxy[copies]])  # exact duplicates
    tie_scores = st.sampled_from([0.0, 0.25, 0.5, 1.0])
    score = tie_scores if draw(st.booleans()) else st.floats(0, 1, allow_nan=False)
    scores = np.array(draw(st.lists(score, min_size=len(xyxy), max_size=len(xyxy))), np.float64)
    return xyxy, scores


thresholds = st.sampled_from(THRESHOLDS) | st.floats(0, 1, allow_nan=False)
hypothesis_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def random_boxes(rng: np.random.Generator, n: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (xyxy float32 (n, 4), scores float32 (n,)) for one named layout."""
    if layout == "clustered":
        centres = rng.uniform(0, 1000, (20, 2))[rng.integers(0, 20, n)] + rng.normal(0, 15, (n, 2))
    else:
        centres = rng.uniform(0, 1000, (n, 2))
    if layout == "log-sizes":
        wh = np.exp(rng.uniform(np.log(1), np.log(1000), (n, 2)))
    else:
        wh = rng.uniform(10, 100, (n, 2))
    if layout == "near-duplicates":  # a few boxes, each jittered by ~1e-4 of its size
        base = rng.integers(0, max(n // 10, 1), n)
        centres, wh = centres[base], wh[base] * (1 + rng.normal(0, 1e-4, (n, 2)))
    if layout == "far-from-origin":
        centres = centres + 1e6
    xyxy = np.concatenate([centres - wh / 2, centres + wh / 2], axis=1).astype(np.float32)
    scores = rng.integers(0, 50, n).astype(np.float32) / 50  # many ties
    return xyxy, scores


# --- properties -----------------------------------------------------------------------------------


def assert_valid_nms_output(xyxy, scores, class_ids, keep, iou_threshold):
    """Unique, by (score desc, index asc); every suppressed box has a same-class kept suppressor
    ranked before it; no two kept boxes of one class overlap above the threshold."""
    assert keep.dtype == np.int64
    assert len(np.unique(keep)) == len(keep)
    rank_keys = [(-float(scores[i]), int(i)) for i in keep]
    assert rank_keys == sorted(rank_keys)
    boxes = np.asarray(xyxy, np.float64)
    kept = set(keep.tolist())
    for j in range(len(boxes)):
        same = [i for i in keep if class_ids[i] == class_ids[j] and i != j]
        ious = ious_with(boxes[j], boxes[same]) if same else np.zeros(0)
        if j in kept:
            assert (ious <= iou_threshold).all()
        else:
            earlier = np.array([(-float(scores[i]), i) < (-float(scores[j]), j) for i in same], bool)
            assert (ious[earlier] > iou_threshold).any(), f"box {j} dropped without a suppressor"


@hypothesis_settings
@given(box_sets(), thresholds)
def test_nms_equals_reference(boxes, iou_threshold):
    xyxy, scores = boxes
    keep = nms(xyxy, scores, iou_threshold)
    assert_equal(keep, reference_nms(xyxy, scores, iou_threshold))
    assert_valid_nms_output(xyxy, scores, np.zeros(len(scores), int), keep, iou_threshold)


@hypothesis_settings
@given(box_sets(), thresholds, st.data())
def test_batched_nms_equals_reference_per_class(boxes, iou_threshold, data):
    xyxy, scores = boxes
    labels = data.draw(st.sampled_from([[0, 1, 2], [-7, 3, 1000]]))  # ids need not be contiguous
    n = len(xyxy)
    class_ids = np.array(data.draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)), np.int64)
    keep = batched_nms(xyxy, scores, class_ids, iou_threshold)
    assert_equal(keep, reference_batched_nms(xyxy, scores, class_ids, iou_threshold))
    assert_valid_nms_output(xyxy, scores, class_ids, keep, iou_threshold)


# --- the threshold boundary -----------------------------------------------------------------------


def shift_at_threshold(
    x: float, width: float, iou_threshold: float, other_width: float | None = None
) -> tuple[float, float]:
    """Adjacent float64 x1 values (lo, hi) for a box ``other_width`` wide (default ``width``)
    sliding right out of ``[x, 0, x + width, 10]``: IoU > threshold at lo, <= threshold at hi
    (bisection on the reference's own IoU). Its start, one box inside the other at the shared
    edge, must overlap above the threshold."""
    other_width = width if other_width is None else other_width
    box = np.array([x, 0.0, x + width, 10.0])

    def iou(x1: float) -> float:
        return float(ious_with(box, np.array([[x1, 0.0, x1 + other_width, 10.0]]))[0])

    lo, hi = x + max(width - other_width, 0.0), x + width
    while np.nextafter(lo, hi) < hi:
        mid = lo + (hi - lo) / 2
        if mid in (lo, hi):
            mid = np.nextafter(lo, hi)
        lo, hi = (mid, hi) if iou(mid) > iou_threshold else (lo, mid)
    assert iou(lo) > iou_threshold >= iou(hi)
    return lo, hi


@pytest.mark.parametrize("iou_threshold", [0.1, 0.3, 0.45, 0.5, 0.7, 0.9, 0.99])
@pytest.mark.parametrize("width", [10.0, 33.3])
@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("crowded", [False, True])
def test_pair_just_above_threshold_is_suppressed_just_below_is_kept(iou_threshold, width, axis, crowded):
    lo, hi = shift_at_threshold(0.0, width, iou_threshold)
    # A crowd of higher-scored, non-overlapping boxes of the same size makes the kernel look the
    # suppressor up through its grid cells rather than by walking every kept box of the band.
    n_crowd = 100 if crowded else 0
    corners = [(1000 + 3 * width * (k % 10), 1000 + 30 * (k // 10)) for k in range(n_crowd)]
    crowd = [[x, y, x + width, y + 10] for x, y in corners]
    scores = np.array([0.9, 0.8] + [1.0] * n_crowd)
    crowd_ids = list(range(2, 2 + n_crowd))
    for dx, pair_kept in [(lo, [0]), (hi, [0, 1])]:  # lo: IoU just above, hi: just at or below
        xyxy = np.array([[0.0, 0.0, width, 10.0], [dx, 0.0, dx + width, 10.0]] + crowd).reshape(-1, 4)
        if axis == "y":
            xyxy = np.ascontiguousarray(xyxy[:, [1, 0, 3, 2]])
        expected = crowd_ids + pair_kept
        assert_equal(nms(xyxy, scores, iou_threshold), expected)
        assert_equal(batched_nms(xyxy, scores, np.full(len(xyxy), 3), iou_threshold), expected)
        other_class = np.array([3, 4] + [3] * n_crowd)
        assert_equal(batched_nms(xyxy, scores, other_class, iou_threshold), crowd_ids + [0, 1])
        swapped = xyxy.copy()
        swapped[[0, 1]] = swapped[[1, 0]]  # the shifted box ranked first
        assert_equal(nms(swapped, scores, iou_threshold), expected)


@pytest.mark.parametrize("iou_threshold", [0.05, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_many_boundary_pairs_at_random_positions(iou_threshold, axis):
    # Pairs of all sizes at random places, equal or one up to 1/threshold times wider, either one
    # ranked first, and shifted to just above or just below the threshold: the kernel's size
    # bands and centre cells must never hide a suppressor.
    rng = np.random.default_rng(11)
    xyxy, scores, expected = [], [], []
    for k in range(240):
        x, width, y = float(rng.uniform(0, 1e4)), float(rng.uniform(2, 80)), 20.0 * k
        narrower = rng.uniform(iou_threshold, 1.0) ** 0.9  # keeps IoU at full overlap > threshold
        ratio = [1.0, narrower, 1 / narrower][k % 3]
        other_width = width * ratio
        shift = shift_at_threshold(x, width, iou_threshold, other_width)[k % 2]
        xyxy += [[x, y, x + width, y + 10], [shift, y, shift + other_width, y + 10]]
        first = 2 * k + (k // 6) % 2  # the box ranked first within its pair
        scores += [1.0 - k / 1000 - 0.5 * (i != first) for i in (2 * k, 2 * k + 1)]
        expected += [first] + ([4 * k + 1 - first] if k % 2 else [])
    xyxy, scores = np.array(xyxy), np.array(scores)
    if axis == "y":
        xyxy = np.ascontiguousarray(xyxy[:, [1, 0, 3, 2]])
    expected = sorted(expected, key=lambda i: -scores[i])
    assert_equal(reference_nms(xyxy, scores, iou_threshold), expected)
    assert_equal(nms(xyxy, scores, iou_threshold), expected)


@pytest.mark.parametrize(
    ("xyxy", "iou_threshold"),
    [
        ([[0, 0, 4, 1], [0, 0, 2, 1]], 0.5),  # IoU 2/4
        ([[0, 0, 2, 1], [1, 0, 3, 1]], 1 / 3),  # IoU 1/3
        ([[0, 0, 2, 2], [1, 1, 3, 3]], 1 / 7),  # IoU 1/7
        ([[0, 0, 1, 1], [1, 0, 2, 1]], 0.0),  # touching edges: IoU 0
        ([[0, 0, 5, 5], [0, 0, 5, 5]], 1.0),  # identical boxes: IoU 1
    ],
)
def test_iou_equal_to_threshold_is_kept(xyxy, iou_threshold):
    assert_equal(nms(np.array(xyxy, float), np.array([0.5, 0.4]), iou_threshold), [0, 1])


# --- seeded parity at realistic sizes -------------------------------------------------------------


@pytest.mark.parametrize(
    "layout", ["uniform", "clustered", "log-sizes", "near-duplicates", "far-from-origin"]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeded_parity_with_reference(layout, seed):
    rng = np.random.default_rng(seed)
    xyxy, scores = random_boxes(rng, 1000, layout)
    class_ids = rng.integers(0, 3, len(scores))
    thresholds = [0.3, 0.5, 0.7] if layout != "near-duplicates" else [0.5, 0.99, 0.9999]
    for iou_threshold in thresholds:
        assert_equal(nms(xyxy, scores, iou_threshold), reference_nms(xyxy, scores, iou_threshold))
    assert_equal(
        batched_nms(xyxy, scores, class_ids, 0.5), reference_batched_nms(xyxy, scores, class_ids, 0.5)
    )


def test_agrees_with_cv2_nmsboxes_away_from_the_threshold():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    for iou_threshold in [0.3, 0.5, 0.7]:
        corners = rng.integers(0, 300, (400, 2))
        xyxy = np.concatenate([corners, corners + rng.integers(5, 60, (400, 2))], axis=1).astype(np.float64)
        scores = (rng.integers(1, 40, 400) / 40).astype(np.float32)  # ties: cv2's sort is stable too
        # cv2 computes IoU as 1 - float32(1 - IoU), so it may differ within rounding of the
        # threshold: drop any box that has such a pair before comparing.
        near = [j for j in range(len(xyxy)) if (abs(ious_with(xyxy[j], xyxy) - iou_threshold) < 1e-4).any()]
        xyxy, scores = np.delete(xyxy, near, axis=0), np.delete(scores, near)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        # score_threshold must be >= 0 and cv2 keeps scores > it: all scores here are >= 1/40.
        expected = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou_threshold)).ravel()
        assert_equal(nms(xyxy, scores, iou_threshold), expected)


# --- small cases, dtypes, degenerate boxes, validation --------------------------------------------


def test_empty_input_returns_empty_int64():
    for keep in [
        nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5),
        batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5),
    ]:
        assert keep.dtype == np.int64 and keep.shape == (0,)


def test_single_box_is_kept():
    xyxy, scores = np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([0.1])
    assert_equal(nms(xyxy, scores, 0.5), [0])
    assert_equal(batched_nms(xyxy, scores, np.array([9]), 0.5), [0])


def test_hand_computed_case():
    xyxy = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10], [51, 50, 61, 60]], float
    )
    scores = np.array([0.8, 0.9, 0.7, 0.9, 0.1])
    # ranks: 1 and 3 tie at 0.9 (1 first); 3 overlaps 1 (IoU 81/119), 0 duplicates 3; 4 overlaps 2.
    assert_equal(nms(xyxy, scores, 0.5), [1, 2])
    assert_equal(nms(xyxy, scores, 0.7), [1, 3, 2])
    assert_equal(batched_nms(xyxy, scores, np.array([0, 0, 0, 1, 0]), 0.5), [1, 3, 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_inputs(dtype):
    xyxy, scores = random_boxes(np.random.default_rng(3), 300, "uniform")
    xyxy, scores = xyxy.astype(dtype), scores.astype(dtype)
    keep = nms(xyxy, scores, 0.5)
    assert_equal(keep, reference_nms(xyxy, scores, 0.5))
    assert_equal(nms(np.asfortranarray(xyxy), scores, 0.5), keep)  # layout-agnostic


def test_degenerate_boxes_are_kept_without_warnings():
    points, box, lines = [[5, 5, 5, 5], [5, 5, 5, 5]], [[0, 0, 10, 10]], [[0, 5, 10, 5], [3, 0, 3, 10]]
    xyxy = np.array(points + box + lines + box + [[0, 0, 0, 0]], float)
    scores = np.array([0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = nms(xyxy, scores, 0.0)
        assert_equal(keep, [0, 1, 2, 3, 4, 6])  # only the real duplicate goes
        assert_equal(nms(np.zeros((3, 4)), np.ones(3), 0.5), [0, 1, 2])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nms(np.zeros((3, 3)), np.zeros(3), 0.5), r"xyxy must have shape \(N, 4\), got \(3, 3\)"),
        (lambda: nms(np.zeros(4), np.zeros(1), 0.5), r"xyxy must have shape \(N, 4\), got \(4,\)"),
        (
            lambda: nms(np.zeros((3, 4)), np.zeros(2), 0.5),
            r"scores must have shape \(3,\) to match xyxy, got \(2,\)",
        ),
        (lambda: nms(np.zeros((3, 4)), np.zeros((3, 1)), 0.5), r"scores must have shape \(3,\)"),
        (lambda: nms(np.zeros((1, 4)), np.zeros(1), 1.5), r"iou_threshold must lie in \[0, 1\], got 1.5"),
        (lambda: nms(np.zeros((1, 4)), np.zeros(1), -0.1), r"iou_threshold must lie in \[0, 1\]"),
        (lambda: nms(np.zeros((1, 4)), np.zeros(1), float("nan")), r"iou_threshold must lie in \[0, 1\]"),
        (lambda: nms(np.array([[0, 0, np.nan, 1]]), np.zeros(1), 0.5), "xyxy must be finite"),
        (lambda: nms(np.array([[0, 0, 1, 1]]), np.array([np.inf]), 0.5), "scores must be finite"),
        (lambda: nms(np.array([[2, 0, 1, 1]]), np.zeros(1), 0.5), "x1 <= x2 and y1 <= y2"),
        (lambda: nms(np.array([[0, 0, 1, 1]]), np.array(["a"]), 0.5), "scores must have a float or integer"),
        (
            lambda: batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2, int), 0.5),
            r"class_ids must have shape \(3,\) to match xyxy, got \(2,\)",
        ),
        (lambda: batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(3), 0.5), "class_ids must have an integer"),
    ],
)
def test_invalid_input_raises_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# --- soft-NMS against a deliberately naive reference ----------------------------------------------


def reference_soft_nms(xyxy, scores, class_ids, sigma=0.5, score_threshold=0.001, method="gaussian",
                       iou_threshold=0.3):
    """Bodla et al.'s loop per class: take the highest current score (ties: lower index), keep it,
    decay every remaining box of its class, drop those below the threshold. No pruning."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    current = np.asarray(scores, dtype=np.float64).copy()
    kept = []
    for c in np.unique(class_ids):
        remaining = [i for i in np.flatnonzero(class_ids == c) if current[i] >= score_threshold]
        while remaining:
            best = min(remaining, key=lambda i: (-current[i], i))
            kept.append((best, current[best]))
            remaining.remove(best)
            if not remaining:
                break
            ious = ious_with(boxes[best], boxes[remaining])
            for i, iou in zip(remaining, ious.tolist()):
                if method == "gaussian":
                    w = math.exp(-(iou * iou) / sigma)
                else:
                    w = 1.0 - iou if iou > iou_threshold else 1.0
                current[i] = current[i] * w
            remaining = [i for i in remaining if current[i] >= score_threshold]
    kept.sort(key=lambda t: (-t[1], t[0]))
    return np.array([k for k, _ in kept], np.int64), np.array([s for _, s in kept], np.float64)


SOFT_PATHS = ["auto", "grid", "pass"]  # chosen per class, forced grid + heap, forced passes


@pytest.mark.parametrize("layout", ["uniform", "clustered", "log-sizes", "near-duplicates"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("method", "sigma"), [("gaussian", 0.5), ("gaussian", 0.1), ("gaussian", 2.0),
                                               ("linear", 0.5)])
def test_soft_nms_equals_reference(layout, seed, method, sigma):
    rng = np.random.default_rng(seed)
    xyxy, scores = random_boxes(rng, 300, layout)
    scores = scores + rng.uniform(0, 0.01, len(scores)).astype(np.float32) * (seed == 1)  # ties or not
    class_ids = rng.integers(0, 3, len(scores))
    want_idx, want_scores = reference_soft_nms(xyxy, scores, class_ids, sigma, 0.01, method, 0.5)
    for path in SOFT_PATHS:
        idx, new_scores = _soft_nms(xyxy, scores, class_ids, sigma, 0.01, method, 0.5, path)
        assert idx.dtype == np.int64 and new_scores.dtype == np.float64
        assert_equal(idx, want_idx)
        np.testing.assert_allclose(new_scores, want_scores, rtol=0, atol=1e-6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(box_sets(), st.sampled_from([0.05, 0.5, 3.0]), st.sampled_from([0.0, 0.001, 0.3]), st.data())
def test_soft_nms_equals_reference_on_ties_duplicates_and_degenerate_boxes(boxes, sigma, floor, data):
    xyxy, scores = boxes
    class_ids = np.array(data.draw(st.lists(st.sampled_from([-7, 3, 1000]), min_size=len(scores),
                                            max_size=len(scores))), np.int64)
    want_idx, want_scores = reference_soft_nms(xyxy, scores, class_ids, sigma, floor)
    for path in SOFT_PATHS:
        idx, new_scores = _soft_nms(xyxy, scores, class_ids, sigma, floor, "gaussian", 0.3, path)
        assert_equal(idx, want_idx)
        np.testing.assert_allclose(new_scores, want_scores, rtol=0, atol=1e-6)


def test_soft_nms_hand_computed_decay_is_class_aware():
    # Boxes 0 and 1 overlap at IoU 50 / 150 = 1/3; box 2 duplicates box 0 in another class.
    xyxy = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    idx, new = soft_nms(xyxy, scores, np.array([0, 0, 1]), sigma=0.5)
    assert_equal(idx, [0, 2, 1])
    np.testing.assert_allclose(new, [0.9, 0.7, 0.8 * np.exp(-(1 / 9) / 0.5)])
    idx, new = soft_nms(xyxy, scores, None, sigma=0.5)  # one class: the duplicate decays too,
    assert_equal(idx, [0, 1, 2])                         # by box 0 (IoU 1) and then by box 1
    np.testing.assert_allclose(new[2], 0.7 * np.exp(-1 / 0.5) * np.exp(-(1 / 9) / 0.5))


def test_soft_nms_empty_input():
    for class_ids in (None, np.zeros(0, np.int64)):
        idx, new = soft_nms(np.zeros((0, 4)), np.zeros(0), class_ids)
        assert idx.dtype == np.int64 and idx.shape == (0,)
        assert new.dtype == np.float64 and new.shape == (0,)


def test_soft_nms_drops_scores_below_the_threshold():
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.05])  # box 2 starts below the threshold
    idx, new = soft_nms(xyxy, scores, sigma=0.5, score_threshold=0.1)
    assert_equal(idx, [0, 1])  # the duplicate decays to 0.8 * exp(-1 / 0.5) = 0.108
    np.testing.assert_allclose(new, [0.9, 0.8 * np.exp(-2)])
    idx, _ = soft_nms(xyxy, scores, sigma=0.4, score_threshold=0.1)
    assert_equal(idx, [0])     # 0.8 * exp(-1 / 0.4) = 0.066


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_with_sigma_to_zero_is_hard_nms(seed):
    # On an integer grid every positive IoU is >= 1 / 287, so exp(-iou**2 / 1e-9) underflows to
    # 0: any overlap with a kept box drops a box, and kept boxes keep their scores.
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 60, (400, 2))
    xyxy = np.concatenate([corners, corners + rng.integers(1, 13, (400, 2))], axis=1).astype(np.float64)
    scores = rng.uniform(0.01, 1, 400)
    class_ids = rng.integers(0, 2, 400)
    for path in SOFT_PATHS:
        idx, new = _soft_nms(xyxy, scores, class_ids, 1e-9, 0.001, "gaussian", 0.3, path)
        assert_equal(idx, batched_nms(xyxy, scores, class_ids, 0.0))
        assert_equal(new, scores[idx])


def test_linear_soft_nms_decays_only_above_its_threshold():
    # IoU 2/3 with box 0 (above 0.5): 0.8 * (1 - 2/3); IoU 1/3 (below): unchanged; duplicate: 0.
    xyxy = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [5, 0, 15, 10], [0, 0, 10, 10]], float)
    idx, new = soft_nms(xyxy, np.array([0.9, 0.8, 0.7, 0.6]), method="linear", iou_threshold=0.5)
    assert_equal(idx, [0, 2, 1])
    # 1 decays to 0.8 / 3 = 0.267 by box 0, then by box 2 (IoU 7/13 > 0.5) to 0.267 * 6/13.
    np.testing.assert_allclose(new, [0.9, 0.7, 0.8 / 3 * 6 / 13])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0}, "sigma must be a positive number, got 0.0"),
        ({"sigma": float("nan")}, "sigma must be a positive number"),
        ({"score_threshold": -1.0}, "score_threshold must be a number >= 0, got -1.0"),
        ({"method": "hard"}, "method must be 'gaussian' or 'linear', got 'hard'"),
        ({"class_ids": np.zeros(2, int)}, r"class_ids must have shape \(3,\) to match xyxy, got \(2,\)"),
        ({"class_ids": np.zeros(3)}, "class_ids must have an integer"),
    ],
)
def test_soft_nms_invalid_input_raises_one_line_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        soft_nms(np.zeros((3, 4)), np.zeros(3), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("n", [1, 50, 800, 3000])
def test_numpy_path_equals_the_kernel_index_for_index(n):
    """The one-photo path (NumPy, numba not loaded) returns what the kernel returns, on windows
    of a real-size image and on random boxes at many thresholds."""
    rng = np.random.default_rng(n)
    for layout in ("uniform", "clustered", "near-duplicates"):
        xyxy, scores = random_boxes(rng, n, layout)
        classes = rng.integers(0, 5, n)
        coords, s = validate_boxes(xyxy, scores, 0.5)
        _, groups = np.unique(classes, return_inverse=True)
        for t in (0.0, 0.3, 0.5, 0.7, 1.0):
            assert_equal(run_nms(coords, s, groups.ravel(), t, path="numpy"),
                         run_nms(coords, s, groups.ravel(), t, path="kernel"))

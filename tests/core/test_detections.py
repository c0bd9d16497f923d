import numpy as np
import pytest

from slidewin.core.detections import Detections


def make(n=3):
    xyxy = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]], np.float64)[:n]
    return Detections(xyxy, np.array([0.9, 0.5, 0.7])[:n], np.array([0, 1, 1])[:n], ("cat", "dog"))


def test_dtypes_are_normalised():
    d = make()
    assert d.xyxy.dtype == np.float32 and d.scores.dtype == np.float32 and d.class_ids.dtype == np.int64
    assert len(d) == 3 and not d.is_empty


def test_empty_has_all_fields_with_right_dtypes():
    d = Detections.empty(("cat",))
    assert d.xyxy.shape == (0, 4) and d.scores.shape == (0,) and d.class_ids.shape == (0,)
    assert d.xyxy.dtype == np.float32 and d.class_ids.dtype == np.int64 and d.is_empty
    assert d.to_records() == []
    # a zero-length slice of a real result is the same thing
    assert make()[np.zeros(3, bool)].xyxy.shape == (0, 4)


def test_indexing_with_mask_slice_and_indices_returns_detections():
    d = make()
    assert d[d.scores > 0.6].label_names == ["cat", "dog"]
    assert len(d[1:]) == 2
    assert d[np.array([2, 0])].scores.tolist() == pytest.approx([0.7, 0.9])
    assert len(d[[0]]) == 1  # an int gives one Box (tests/core/test_detections_api.py)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(xyxy=np.zeros((2, 3)), scores=np.zeros(2), class_ids=np.zeros(2)), r"xyxy must have shape \(N, 4\), got \(2, 3\)"),
        (dict(xyxy=np.zeros((2, 4)), scores=np.zeros(3), class_ids=np.zeros(2)), r"scores must have shape \(2,\)"),
        (dict(xyxy=np.zeros((2, 4)), scores=np.zeros(2), class_ids=np.zeros(1)), r"class_ids must have shape \(2,\)"),
        (dict(xyxy=np.zeros((1, 4)), scores=np.zeros(1), class_ids=np.array([5]), labels=("a",)), r"class_ids must lie in \[0, 1\)"),
    ],
)
def test_validation_states_expected_and_actual(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Detections(**kwargs)


def test_sorted_and_records():
    d = make().sorted()
    assert d.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    rec = d.to_records()[0]
    assert rec == {"xyxy": [0.0, 0.0, 10.0, 10.0], "score": 0.9, "class_id": 0, "label": "cat"}


def test_concatenate():
    d = Detections.concatenate([make(1), make(2)[1:]])
    assert len(d) == 2 and d.labels == ("cat", "dog")
    assert len(Detections.concatenate([], labels=("x",))) == 0

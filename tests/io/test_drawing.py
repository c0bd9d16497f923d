"""Pictures: a fixed palette by class id, labels inside the image and off each other, titles
that fit their panel."""

from __future__ import annotations

import json
import os
from itertools import combinations

import cv2
import numpy as np
import pytest
from conftest import COCO_MINI

from slidewin.core.detections import Detections
from slidewin.io.drawing import (FONT, PALETTE, Style, color_for, draw_detections, fit_text, layout_labels,
                                 text_color_on, title_bar)
from slidewin.io.images import load_image


def coco_photo(image_id: int) -> tuple[np.ndarray, Detections]:
    """A coco-mini photo and its ground-truth boxes as detections (COCO's 80 names as labels)."""
    data = json.loads((COCO_MINI / "instances.json").read_text())
    names = tuple(c["name"] for c in data["categories"])
    index = {c["id"]: names.index(c["name"]) for c in data["categories"]}
    anns = [a for a in data["annotations"] if a["image_id"] == image_id]
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    scores = np.random.default_rng(0).uniform(0.3, 0.99, len(anns))
    image = load_image(COCO_MINI / "images" / f"{image_id:012d}.jpg")
    return image, Detections(xyxy, scores, [index[a["category_id"]] for a in anns], names)


def lab(rgb) -> np.ndarray:
    """CIELAB (L in 0-100) of RGB colours, for colour differences as the eye sees them."""
    out = cv2.cvtColor(np.uint8([list(rgb)]), cv2.COLOR_RGB2LAB).astype(float)[0]
    out[:, 0] *= 100 / 255
    out[:, 1:] -= 128
    return out


def assert_inside_and_apart(spots, hw):
    h, w = hw
    for s in spots:
        x1, y1, x2, y2 = s.rect
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (s.text, s.rect, hw)
    for a, b in combinations(spots, 2):
        overlap = a.rect[0] < b.rect[2] and b.rect[0] < a.rect[2] and a.rect[1] < b.rect[3] and b.rect[1] < a.rect[3]
        assert not overlap, (a, b)


def test_the_palette_is_fixed_by_class_id_and_distinct():
    n = len(PALETTE)
    assert n == 80 and len(set(PALETTE)) == n  # one colour per COCO category
    assert [color_for(i) for i in range(n)] == list(PALETTE)
    colours = lab(PALETTE)
    # Neighbouring ids (and the wrap from the last to the first) are far apart ...
    assert min(np.linalg.norm(colours[i] - colours[(i + 1) % n]) for i in range(n)) > 30
    # ... and no two of the 80 share or nearly share a colour: Delta E 2.3 is the least difference
    # seen side by side; 15 is that of the closest pair of Kelly's 20 colours of maximum contrast,
    # the set the palette starts from, so the 60 added colours bring no closer pair.
    assert min(np.linalg.norm(a - b) for a, b in combinations(colours, 2)) >= 15


def test_classes_seen_together_get_distinct_colours():
    from slidewin.core.targets import COCO_GROUPS, load_groups

    coco = [c["name"] for c in json.loads((COCO_MINI / "instances.json").read_text())["categories"]]
    groups = list(load_groups(COCO_GROUPS))  # the class ids of --classes coco on an ImageNet model
    assert len(coco) == 80 and len(groups) <= 80
    # COCO's order (Faster R-CNN): Kelly's 20 repeated gave person and dining table one yellow;
    # the groups' order: hashed names gave cat and laptop, dog and keyboard, tv and train one hue.
    for names, pairs in ((coco, [("person", "dining table"), ("person", "chair"), ("car", "traffic light")]),
                         (groups, [("cat", "laptop"), ("dog", "keyboard"), ("tv", "train"), ("cup", "dining table")])):
        for a, b in pairs:
            colours = lab([color_for(names.index(a)), color_for(names.index(b))])
            assert np.linalg.norm(colours[0] - colours[1]) >= 15, (a, b)


def test_ids_past_the_palette_differ_from_those_80_to_320_apart():
    colours = lab([color_for(i) for i in range(5 * len(PALETTE))])
    n = len(PALETTE)
    for i in range(n):
        rounds = colours[i::n]  # id i, i + 80, ..., i + 320
        assert min(np.linalg.norm(a - b) for a, b in combinations(rounds, 2)) >= 8, i
    assert color_for(400) == color_for(80)  # the rounds repeat after four
    assert min(np.linalg.norm(colours[i] - colours[i + 1]) for i in range(len(colours) - 1)) > 12


def test_label_text_is_black_on_light_and_white_on_dark():
    assert text_color_on((243, 195, 0)) == (0, 0, 0) and text_color_on((43, 61, 38)) == (255, 255, 255)


def test_a_crowded_photo_keeps_every_label_inside_and_apart(tmp_path):
    image, dets = coco_photo(790)  # 33 boxes: bottles, forks, cups and people around a table
    assert len(dets) == 33
    spots = layout_labels(dets, image.shape[:2])
    assert sorted(s.index for s in spots) == list(range(len(dets)))
    assert_inside_and_apart(spots, image.shape[:2])
    drawn = draw_detections(image, dets)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and (drawn != image).any()
    # each label's background is its class colour (a pixel of its padding)
    for s in spots:
        assert tuple(drawn[s.rect[1] + 1, s.rect[0] + 1]) == color_for(dets.class_ids[s.index])
    if os.environ.get("SLIDEWIN_SAVE_DRAWINGS"):  # to look at: SLIDEWIN_SAVE_DRAWINGS=1 pytest ...
        cv2.imwrite(str(tmp_path / "790.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))


def test_the_strongest_box_gets_its_label_above_it():
    image, dets = coco_photo(40961)  # a flock of sheep, boxes overlapping
    spots = layout_labels(dets, image.shape[:2])
    best = spots[0]
    assert best.index == int(np.argmax(dets.scores))
    x1, y1 = (int(round(v)) for v in dets.xyxy[best.index][:2])
    assert best.rect[3] == max(y1, best.rect[3] - best.rect[1])  # its bottom touches the box's top
    assert_inside_and_apart(spots, image.shape[:2])


def test_many_boxes_at_the_right_edge_stay_inside_and_apart():
    hw = (300, 400)
    xyxy = np.tile([[330, 5, 400, 60]], (12, 1)) + np.arange(12)[:, None] * [0, 3, 0, 3]
    dets = Detections(xyxy, np.linspace(0.4, 0.95, 12), np.arange(12) % 5,
                      ("bus", "traffic light", "fire hydrant", "motorcycle", "cell phone"))
    spots = layout_labels(dets, hw)
    assert_inside_and_apart(spots, hw)
    assert all(s.rect[2] <= 400 for s in spots)  # "bus 0.95" is never cut at the right edge


def test_labels_of_boxes_at_the_top_and_bottom_edges_stay_inside():
    hw = (120, 200)
    dets = Detections([[0, 0, 200, 120], [10, 0, 60, 30], [120, 90, 200, 120]], [0.9, 0.8, 0.7], [0, 1, 2],
                      ("person", "cat", "dog"))
    assert_inside_and_apart(layout_labels(dets, hw), hw)


def test_labels_without_scores():
    image, dets = coco_photo(40961)
    spots = layout_labels(dets, image.shape[:2], show_scores=False)
    assert {s.text for s in spots} == {"sheep", "person"}


def test_drawing_leaves_the_input_alone_and_draws_nothing_for_no_boxes():
    image = np.full((50, 60, 3), 90, np.uint8)
    out = draw_detections(image, Detections.empty(("cat",)))
    assert (out == image).all() and out is not image
    draw_detections(image, Detections([[5, 5, 40, 40]], [0.5], [0], ("cat",)))
    assert (image == 90).all()


def test_sizes_follow_the_image():
    small, large = Style.for_image((300, 400)), Style.for_image((3000, 4000))
    assert large.thickness > small.thickness and large.font_scale > small.font_scale


@pytest.mark.parametrize("width", [120, 300, 700])
def test_titles_fit_their_panel(width):
    title = "efficientnet-lite0 windows (dense): 12 detections, 0.48 s"
    lines, scale = fit_text(title, width - 16, 0.7, min_scale=0.45)
    assert all(cv2.getTextSize(line, FONT, scale, 1)[0][0] <= width - 16 for line in lines)
    bar = title_bar(width, title, 28)
    assert bar.shape[1] == width and bar.shape[0] >= 28 and bar.dtype == np.uint8
    assert (bar[:, -4:] == 30).all()  # nothing written into the right margin: the text was not cut off
    if width == 120:
        assert len(lines) > 1 and bar.shape[0] > 28  # wrapped: the bar grows
    if width == 700:
        assert lines == [title] and bar.shape[0] == 28


def test_a_title_too_long_for_one_line_wraps_and_keeps_its_words():
    lines, scale = fit_text("a b c d e f g h i j k l m n o p", 60, 0.7, min_scale=0.5)
    assert len(lines) > 1 and scale == 0.5
    assert " ".join(lines).replace("..", "").split() == "a b c d e f g h i j k l m n o p".split()[:len(" ".join(lines).split())]


def test_side_by_side_panels_line_up_with_titles_that_fit():
    from slidewin.apps.compare import _titled

    panels = [np.zeros((200, 160, 3), np.uint8), np.zeros((200, 400, 3), np.uint8)]
    titled = _titled(panels, ["faster-rcnn-resnet50-fpn-v2: 9 detections, 2.31 s", "short"])
    assert titled[0].shape[0] == titled[1].shape[0] > 200
    assert [t.shape[1] for t in titled] == [160, 400]


def test_more_labels_than_the_image_has_room_for_stay_inside():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (2000, 2))
    dets = Detections(np.hstack([xy, xy + rng.uniform(5, 100, (2000, 2))]).clip(0, 320), rng.uniform(0, 1, 2000),
                      rng.integers(0, 80, 2000), tuple(f"class {i}" for i in range(80)))
    spots = layout_labels(dets, (240, 320))
    assert len(spots) == 2000
    assert all(0 <= s.rect[0] and s.rect[2] <= 320 and 0 <= s.rect[1] and s.rect[3] <= 240 for s in spots)
    # the strongest labels still got free places
    assert_inside_and_apart(spots[:10], (240, 320))

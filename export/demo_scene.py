"""Regenerate ``slidewin/data/demo_scene.jpg``, the demo's sample image.

Two real photos bundled with scikit-image (``chelsea``, a cat, and ``coffee``, a cup of espresso;
both CC0) pasted into a larger synthetic scene. Run: ``python -m slidewin_export.demo_scene``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Where each photo lands in the 1024x640 scene, as xyxy (also the ground truth used in tests).
CAT_BOX = (40, 150, 490, 450)
CUP_BOX = (620, 250, 920, 450)
SCENE_HW = (640, 1024)


def synthetic_background(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A plain wall-and-table scene: two soft gradients and mild noise, uint8 RGB."""
    h, w = hw
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, h)[:, None, None]
    wall = np.array([205, 198, 185]) * (1 - 0.25 * yy)
    table = np.array([120, 88, 60]) * (1.1 - 0.3 * yy)
    img = np.where(yy < 0.62, wall, table) * np.ones((1, w, 1))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(scene: np.ndarray, photo: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = box
    scene[y1:y2, x1:x2] = cv2.resize(photo, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)


def make_demo_scene() -> np.ndarray:
    from skimage import data

    scene = synthetic_background(SCENE_HW)
    paste(scene, data.chelsea(), CAT_BOX)
    paste(scene, data.coffee(), CUP_BOX)
    return scene


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "slidewin" / "data" / "demo_scene.jpg"
    cv2.imwrite(str(out), cv2.cvtColor(make_demo_scene(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {out}")

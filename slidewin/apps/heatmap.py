"""Where the classifier sees each class: the dense probability map of the top target classes.

A classifier's dense form (`slidewin.runtime.dense`) gives, in one pass over a pyramid level,
every window's class probabilities: one cell per window position, ``stride`` level pixels apart.
The targets' scores of those cells (`Targets.score`: a group's members summed) are the level's
*heat*. `target_heat` computes it for every level of the detector's window grid, tile by tile
as dense mode does, and keeps the targets to show: all of them when there are at most
`SHOW_ALL_UP_TO` (``--classes cat,dog``), else the `TOP` with the highest peak. `Heat.rows`
turns it into image pixels: each level's map is interpolated at the image's pixels (a cell's
value sits at its window's centre) and the levels are combined by their maximum, so the heat
says how strongly the best-fitting window around a pixel shows the class.
`slidewin.io.heatmap.draw_heatmap` blends it over the photo.

Memory is what dense mode needs (one level, in tiles) plus the levels' cell maps of the targets
(a few MB for a photo); over `HELD_BYTES` of maps for every target, a first pass finds the
peaks and a second keeps only the targets shown. Pictures are made a band of rows at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidewin.errors import SlidewinError

#: Targets shown when there are many (an ImageNet model's 1,000 labels, --classes coco): the
#: ones with the highest peak score.
TOP = 3
#: Targets shown all, in their order, when there are at most this many (the user named them).
SHOW_ALL_UP_TO = 6
#: The cell maps of every target are held over all levels up to this size; above it (huge
#: images, small windows, 1,000 targets) the peaks are found in a first pass.
HELD_BYTES = 256 << 20
#: Past a level's outermost window centres its heat fades as a Gaussian of sigma window / FADE.
FADE = 3


@dataclass(frozen=True)
class LevelHeat:
    """One pyramid level's heat and where its cells lie in the image.

    Attributes:
        scores: float32 (rows, cols, T) target scores of the level's windows.
        x_map: (a, b): image column ``x`` (pixel centre) lies at cell column ``a * x + b``.
        y_map: (a, b): the same for rows.
        x_fade: (first, last, sigma): the image columns of the first and last window centres, and
            how fast the heat fades past them (Gaussian, ``sigma`` pixels: a third of the window).
        y_fade: the same for rows.
    """

    scores: np.ndarray
    x_map: tuple[float, float]
    y_map: tuple[float, float]
    x_fade: tuple[float, float, float]
    y_fade: tuple[float, float, float]


@dataclass(frozen=True)
class Heat:
    """The heat of the targets shown, per level.

    Attributes:
        image_hw: the image's (height, width).
        class_ids: the targets shown, as class ids of the detector's `Detections` (their colours).
        names: their names.
        peaks: float32 (T,) the highest score of each over all windows.
        levels: one `LevelHeat` per pyramid level.
    """

    image_hw: tuple[int, int]
    class_ids: tuple[int, ...]
    names: tuple[str, ...]
    peaks: np.ndarray
    levels: list[LevelHeat]

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """float32 (y1 - y0, W, T): the heat at image rows ``[y0, y1)``, the maximum over the levels
        of each level's map interpolated (bilinear, edge cells extended) at those pixels."""
        w = self.image_hw[1]
        out = np.zeros((y1 - y0, w, len(self.names)), np.float32)
        for level in self.levels:
            scores = level.scores
            for axis in (0, 1):  # one cell along an axis: two equal ones, to interpolate between
                if scores.shape[axis] == 1:
                    scores = np.repeat(scores, 2, axis=axis)
            i0, fy = _lerp_index(np.arange(y0, y1), level.y_map, scores.shape[0])
            j0, fx = _lerp_index(np.arange(w), level.x_map, scores.shape[1])
            lo, hi = int(i0.min()), int(i0.max()) + 2  # only the cell rows these image rows need
            band = scores[lo:hi]
            across = band[:, j0] * (1 - fx)[None, :, None] + band[:, j0 + 1] * fx[None, :, None]
            fade = (_fade(np.arange(y0, y1), level.y_fade)[:, None, None] *
                    _fade(np.arange(w), level.x_fade)[None, :, None])
            here = across[i0 - lo] * ((1 - fy)[:, None, None] * fade) + across[i0 + 1 - lo] * (fy[:, None, None] * fade)
            np.maximum(out, here, out=out)
        return out


def _fade(pixels: np.ndarray, fade: tuple[float, float, float]) -> np.ndarray:
    """float32 weights of pixel positions: 1 between the first and last window centre, a Gaussian
    of the distance past them."""
    first, last, sigma = fade
    d = np.maximum(np.maximum(first - pixels, pixels - last), 0)
    return np.exp(-0.5 * (d / sigma) ** 2).astype(np.float32)


def _lerp_index(pixels: np.ndarray, ab: tuple[float, float], cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For pixel positions, the cell before each (int64; at the last cell, the one before it) and
    the weight of the cell after it (float32 in [0, 1]); the edge cells extend past the edges.
    ``cells`` >= 2."""
    u = np.clip(ab[0] * pixels.astype(np.float64) + ab[1], 0, cells - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), cells - 2)
    return i0, (u - i0).astype(np.float32)


def heat_form(detector, model: str | Path | None = None):
    """The classifier's dense form a heat map needs: the detector's own when it runs one, else
    opened from its classifier.

    Raises:
        SlidewinError: the detector is not a classifier's (a region-proposal model), or the
            classifier has no dense form (e.g. a vision transformer): one line naming the model.
    """
    from slidewin.runtime.dense import DenseClassifier
    from slidewin.runtime.dense_graph import UnsupportedGraph

    classifier = getattr(detector, "classifier", None)
    path = model or getattr(classifier, "path", None)
    if classifier is None or not hasattr(detector, "targets"):
        raise SlidewinError(f"--heatmap draws a classifier's dense probability map; {detector.meta.architecture} "
                            "is a region-proposal model, which has none", path)
    dense = getattr(detector, "dense", None)
    if dense is not None:
        return dense
    try:
        config = getattr(detector, "config", None)
        tile = getattr(getattr(config, "scoring", None), "dense_tile", getattr(config, "dense_tile", _default_tile()))
        return DenseClassifier(classifier, max_tile=tile)
    except UnsupportedGraph as e:
        raise no_dense_form(classifier.meta.architecture, e, path) from None


def no_dense_form(architecture: str, error, path) -> SlidewinError:
    """The one-line refusal of --heatmap for a classifier without a dense form."""
    return SlidewinError(f"--heatmap needs the classifier's dense form, which {architecture} has not "
                         f"({error.problem})", path)


def _default_tile() -> int:
    from slidewin.pipeline.config import DEFAULT_MAX_TILE

    return DEFAULT_MAX_TILE


def check_heat_model(model: str | Path, device: str = "auto") -> None:
    """Refuse, before any detector is opened (whose ``auto`` mode would say why it runs patch mode
    first), a model that cannot give a heat map: one line naming it (see `heat_form`)."""
    from slidewin.core.contract import ModelKind
    from slidewin.runtime.classifier import Classifier
    from slidewin.runtime.dense import DenseClassifier
    from slidewin.runtime.dense_graph import UnsupportedGraph
    from slidewin.runtime.sessions import SessionSettings, model_info

    info, session = model_info(model, SessionSettings(device=device))
    meta = info.meta(model)
    if meta.kind is not ModelKind.CLASSIFIER:
        raise SlidewinError(f"--heatmap draws a classifier's dense probability map; {meta.architecture} is a "
                            f"{meta.kind.value} model, which has none", model)
    try:
        DenseClassifier(Classifier(model, device, session=session, info=info), max_tile=_default_tile())
    except UnsupportedGraph as e:
        raise no_dense_form(meta.architecture, e, model) from None


def target_heat(detector, image: np.ndarray, config=None, top: int = TOP, show_all_up_to: int = SHOW_ALL_UP_TO,
                held_bytes: int = HELD_BYTES, dense=None) -> Heat:
    """The heat of a classifier detector's targets over an image.

    Args:
        detector: a `ClassifierDetector` (any regions and scorer: the heat always comes from the
            dense form, over the window grid of ``config``).
        image: uint8 RGB (H, W, 3).
        config: the window settings: a `DetectorConfig` whose regions are the window grid, or a
            `WindowGridConfig` (default: the detector's own when it slides windows, else the
            defaults). The grid steps by the network's stride on aligned levels, as dense mode does.
        top: how many targets to show when there are more than ``show_all_up_to``.
        show_all_up_to: show every target when there are at most this many.
        held_bytes: hold every target's maps up to this many bytes, else find the peaks first.
        dense: the dense form (default `heat_form`).

    Returns:
        `Heat`.

    Raises:
        SlidewinError: as `heat_form`; a plan over the detector's limits, as detection does.
    """
    from slidewin.pipeline.detector import ClassifierDetector
    from slidewin.pipeline.regions import WindowGrid
    from slidewin.pipeline.scorers import DenseScorer

    dense = dense or heat_form(detector)
    g = _grid_settings(config if config is not None else getattr(detector, "config", None))
    grid = WindowGrid(detector.classifier.input_hw, g.windows_hw, dense.stride, g.scale, g.max_levels, True,
                      g.reference_side)
    # A detector of these parts checks the plan against the limits detection has.
    levels = ClassifierDetector(grid, DenseScorer(dense), detector.targets).plan(image.shape[:2])
    targets = detector.targets
    n = len(targets.names)
    cells = sum(level.num_windows for level in levels)
    if n <= show_all_up_to:
        chosen = None
    elif cells * n * 4 <= held_bytes:
        maps = list(_level_scores(image, levels, dense, targets, None))
        peaks = _peaks(maps, n)
        chosen = _top(peaks, top)
        maps = [m[..., chosen] for m in maps]
    else:
        chosen = _top(_peaks(_level_scores(image, levels, dense, targets, None), n), top)
    if chosen is None or cells * n * 4 > held_bytes:
        maps = list(_level_scores(image, levels, dense, targets, chosen))
    ids = np.arange(n) if chosen is None else chosen
    h, w = image.shape[:2]
    in_h, in_w = detector.classifier.input_hw
    out = []
    for level, scores in zip(levels, maps):
        fx, fy = level.scale_xy
        out.append(LevelHeat(np.ascontiguousarray(scores, np.float32),
                             _cell_map(fx, int(level.xs[0]), in_w, dense.stride),
                             _cell_map(fy, int(level.ys[0]), in_h, dense.stride),
                             _centres(fx, level.xs, in_w), _centres(fy, level.ys, in_h)))
    return Heat((h, w), tuple(int(i) for i in ids), tuple(targets.names[i] for i in ids),
                _peaks(maps, len(ids)), out)


def _grid_settings(config):
    """The window-grid settings of a config (``windows_hw``, ``scale``, ``max_levels``,
    ``reference_side``): the config's own or its regions', when they are the window grid; the
    defaults otherwise (selective search has no grid)."""
    from slidewin.pipeline import config as settings

    for candidate in (config, getattr(config, "regions", None)):
        if all(hasattr(candidate, name) for name in ("windows_hw", "scale", "max_levels", "reference_side")):
            return candidate
    return getattr(settings, "WindowGridConfig", settings.DetectorConfig)()


def _cell_map(scale: float, first: int, window: int, stride: int) -> tuple[float, float]:
    """(a, b) with image pixel ``x`` (its centre, ``x + 0.5``) at cell ``a * x + b``: the pixel lies
    at ``(x + 0.5) * scale`` on the level, cell ``c``'s window centre at ``first + c * stride + window / 2``."""
    return scale / stride, (0.5 * scale - first - window / 2) / stride


def _centres(scale: float, starts: np.ndarray, window: int) -> tuple[float, float, float]:
    """(first, last, sigma): the image pixels of a level's first and last window centres, and a
    third of the window's size in image pixels."""
    return ((int(starts[0]) + window / 2) / scale - 0.5, (int(starts[-1]) + window / 2) / scale - 0.5,
            window / scale / FADE)


def _level_scores(image, levels, dense, targets, chosen):
    """Each level's float32 (rows, cols, T) target scores (``chosen``: only those targets), tile by tile."""
    from slidewin.pipeline.windows import resize_level

    for level in levels:
        resized = resize_level(image, level)
        width = len(targets.names) if chosen is None else len(chosen)
        out = np.empty((len(level.ys), len(level.xs), width), np.float32)
        for rows, cols, probs in dense.iter_tiles(resized):
            r, c = probs.shape[:2]
            scores = targets.score(probs.reshape(r * c, -1))
            if chosen is not None:
                scores = scores[:, chosen]
            out[rows, cols] = scores.reshape(r, c, width)
        yield out


def _peaks(maps, n: int) -> np.ndarray:
    peaks = np.zeros(n, np.float32)
    for m in maps:
        if m.size:
            np.maximum(peaks, m.reshape(-1, n).max(axis=0), out=peaks)
    return peaks


def _top(peaks: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` targets with the highest peak, highest first (ties: the lower id)."""
    return np.argsort(-peaks, kind="stable")[:k]


def write_heatmap(path: str | Path, detector, image: np.ndarray, config=None) -> Heat:
    """Compute the heat of the detector's targets over the image and write it, blended over the
    photo (`slidewin.io.heatmap.draw_heatmap`), to ``path``. Returns the `Heat`."""
    from slidewin.io.heatmap import draw_heatmap
    from slidewin.io.images import save_image

    heat = target_heat(detector, image, config)
    save_image(path, draw_heatmap(image, heat))
    return heat


def check_heatmap_request(path: str | Path, inputs: list, out_dir, model: str | Path, device: str = "auto") -> None:
    """Refuse, before any work, ``--heatmap PATH`` where it cannot be made, in one line: a suffix
    no image is written as, several inputs, a folder, ``--out-dir``, stdin or a video (it is drawn
    for one image file), or a model that has no dense form (`check_heat_model`)."""
    import cv2

    from slidewin.apps.folder.inputs import is_folder_input

    if str(path) == "-":
        raise SlidewinError("--heatmap writes an image file: give its path (.png or .jpg), not -")
    suffix = Path(path).suffix.lower() or ".jpg"  # what `save_image` writes
    if not cv2.haveImageWriter(f"x{suffix}"):
        raise SlidewinError(f"--heatmap cannot write an image with suffix {suffix!r} (use .png or .jpg)", path)

    if out_dir is not None or len(inputs) != 1 or str(inputs[0]) == "-" or is_folder_input(inputs[0]):
        raise SlidewinError("--heatmap is drawn for one image file: give one image, without --out-dir")
    try:
        from slidewin.apps.video import is_video
    except ImportError:  # no video support: nothing to tell apart
        is_video = None
    if is_video is not None and Path(inputs[0]).is_file() and is_video(inputs[0]):
        raise SlidewinError("--heatmap is drawn for one image file, not a video", inputs[0])
    check_heat_model(model, device)

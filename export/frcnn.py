"""torchvision Faster R-CNN (ResNet50-FPN v2) -> slidewin region-proposal ONNX model, via torch.onnx.

The graph takes one fixed square canvas, uint8 RGB NHWC ``image`` ``[1, C, C, 3]`` (the runtime
letterboxes each photo into it, see `slidewin.runtime.region`), and returns ``boxes`` float32 ``[K, 4]``
xyxy in canvas pixels, ``scores`` float32 ``[K]`` and ``labels`` int64 ``[K]`` (torchvision's
COCO category ids, indices into its 91-entry list with ``__background__`` and ``N/A``).
torchvision's own normalisation, box decoding and NMS are inside the graph; its resize is too,
but ``min_size = max_size = canvas`` makes it an identity, so the canvas passes through as it is.
Fixed size and batch 1 are on purpose: the form torchvision's detection models export reliably.

``box_score_thresh`` stays at torchvision's 0.05: the graph returns every detection above 0.05
(at most 100 per image), and the runtime's ``min_score`` (default 0.5) filters after that, so one
exported file serves any threshold from 0.05 up, including COCO AP evaluation, which wants the
low-scoring tail.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from slidewin.errors import MissingDependencyError, SlidewinError
from slidewin.core.contract import (INPUT_NAME, REGION_OUTPUTS, Key, LabelSet, ModelKind, ModelMeta, Precision, Weights,
                                    write_metadata)
from slidewin.io.hashing import sha256_of
# The letterbox colour (ImageNet's mean: what torchvision's zero padding after normalisation
# amounts to) is the runtime's; the metadata records it so the runtime reads it from the file.
from slidewin.runtime.region import DEFAULT_PAD_RGB as PAD_RGB

from ._common import TRACE_SEED, ExportReport, import_torch, progress, random_images, save_verified, version_of
from .graph import describe_io

ARCHITECTURE = "fasterrcnn_resnet50_fpn_v2"
COCO_WEIGHTS_FILE = "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
DEFAULT_CANVAS = 800
BOX_SCORE_THRESH = 0.05
DETECTIONS_PER_IMAGE = 100
OUTPUT_NAMES = REGION_OUTPUTS

# Parity tolerances between torch and ONNX Runtime (CPU, fp32). Measured on random weights (the
# only ones offline here), 100 detections per image, canvases 320 and 800, 7 images: max |Δbox|
# 5.4e-3 px, max |Δscore| 9.4e-6. The limits leave ~20x and ~10x headroom for trained weights and
# still catch a half-pixel shift or a wrong normalisation. An NMS decision can flip between the
# two when a box pair sits at the IoU threshold (seen once: IoU 0.5004 on astronaut, where
# torchvision's class-offset trick puts coordinates near 35000 and float32 rounding decides);
# a flip leaves up to 2 detections without a partner (the box kept on one side only, and the one
# it pushes out of the top 100). max(2, 2%) unmatched are allowed, more fail.
BOX_ATOL_PX = 0.1
SCORE_ATOL = 1e-4
MAX_UNMATCHED_FRACTION = 0.02


@dataclass(frozen=True)
class FrcnnExportReport(ExportReport):
    """`ExportReport` of a detector: ``max_abs_diff`` is max |Δscore|; boxes are compared in pixels.

    Attributes:
        max_box_diff_px: max |Δ coordinate| between matched torch and ONNX Runtime boxes.
        detections: detections compared (torch's count, summed over the parity images).
        unmatched: of those, ones without a partner on the other side (NMS decisions at the edge).
    """

    max_box_diff_px: float = 0.0
    detections: int = 0
    unmatched: int = 0

    def summary(self) -> str:
        m = self.meta
        return (
            f"wrote {self.path} ({self.path.stat().st_size / 2**20:.1f} MiB) in {self.seconds:.1f} s: "
            f"{m.architecture}, {len(m.labels)} classes ({m.label_set}), weights {m.weights}, canvas "
            f"{m.input_hw[0]}x{m.input_hw[1]}, parity on {self.parity_images} images: {self.detections} "
            f"detections, max |Δbox| = {self.max_box_diff_px:.3g} px, max |Δscore| = {self.max_abs_diff:.3g}, "
            f"{self.unmatched} unmatched"
        )


# ---------------------------------------------------------------- parity (NumPy only)

@dataclass(frozen=True)
class DetectionParity:
    detections: int
    unmatched: int
    max_box_diff_px: float
    max_score_diff: float


def match_detections(ref: tuple[np.ndarray, np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray, np.ndarray],
                     box_atol: float = BOX_ATOL_PX, score_atol: float = SCORE_ATOL) -> DetectionParity:
    """Pair each reference detection with the closest unused one of the same label.

    A pair counts when every coordinate is within ``box_atol`` pixels and the score within
    ``score_atol``; a reference detection without such a partner is unmatched, and so is every
    left-over detection of ``got``.

    Args:
        ref, got: (boxes float (K, 4), scores float (K,), labels int (K,)), e.g. torch and ONNX Runtime.

    Returns:
        Counts and the largest differences over the matched pairs.
    """
    rb, rs, rl = (np.asarray(a, np.float64) for a in ref)
    gb, gs, gl = (np.asarray(a, np.float64) for a in got)
    used = np.zeros(len(gb), bool)
    max_box = max_score = 0.0
    unmatched = 0
    for i in range(len(rb)):
        cand = np.flatnonzero(~used & (gl == rl[i]))
        if len(cand):
            dbox = np.abs(gb[cand] - rb[i]).max(axis=1)
            j = cand[np.argmin(dbox)]
            db, ds = float(dbox.min()), abs(float(gs[j] - rs[i]))
            if db <= box_atol and ds <= score_atol:
                used[j] = True
                max_box, max_score = max(max_box, db), max(max_score, ds)
                continue
        unmatched += 1
    return DetectionParity(len(rb), unmatched + int((~used).sum()), max_box, max_score)


def check_detection_parity(pairs: list[tuple[tuple, tuple]], path: Path, box_atol: float = BOX_ATOL_PX,
                           score_atol: float = SCORE_ATOL,
                           max_unmatched_fraction: float = MAX_UNMATCHED_FRACTION) -> DetectionParity:
    """Compare (torch, ONNX Runtime) outputs image by image; print ``parity: ...``; raise on failure.

    Fails when nothing was compared at all, or when more than ``max_unmatched_fraction`` of the
    detections (at least 2, one flipped NMS decision) have no partner within ``box_atol`` px and
    ``score_atol``.
    """
    results = [match_detections(r, g, box_atol, score_atol) for r, g in pairs]
    total = DetectionParity(
        detections=sum(r.detections for r in results),
        unmatched=sum(r.unmatched for r in results),
        max_box_diff_px=max((r.max_box_diff_px for r in results), default=0.0),
        max_score_diff=max((r.max_score_diff for r in results), default=0.0),
    )
    counts = ", ".join(f"{len(r[1])}/{len(g[1])}" for r, g in pairs)
    progress(f"parity: detections torch/ORT per image {counts}; max |Δbox| = {total.max_box_diff_px:.3g} px, "
             f"max |Δscore| = {total.max_score_diff:.3g}, unmatched {total.unmatched} "
             f"(limits {box_atol:g} px, {score_atol:g}, {max_unmatched_fraction:.0%})")
    if total.detections == 0:
        raise SlidewinError("parity check failed: torch found no detections on the parity images, nothing to compare", path)
    allowed = max(2, int(max_unmatched_fraction * total.detections))
    if total.unmatched > allowed:
        got = sum(len(g[1]) for _, g in pairs)
        raise SlidewinError(
            f"parity check failed: {total.unmatched} detections of torch's {total.detections} and ORT's {got} have "
            f"no partner within {box_atol:g} px and {score_atol:g} in score (at most {allowed} allowed)", path)
    return total


# ---------------------------------------------------------------- torch side

def _import_torchvision():
    torch = import_torch()
    try:
        import torchvision
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, fasterrcnn_resnet50_fpn_v2
    except ImportError:
        raise MissingDependencyError("exporting Faster R-CNN needs torchvision: pip install 'slidewin[export]'") from None
    return torch, torchvision, FasterRCNN_ResNet50_FPN_V2_Weights, fasterrcnn_resnet50_fpn_v2


def coco_categories() -> tuple[str, ...]:
    """torchvision's 91 COCO category names (index = label id), read offline from the package."""
    _, _, weights_enum, _ = _import_torchvision()
    return tuple(weights_enum.COCO_V1.meta["categories"])


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


def _coco_state_dict(torch, weights_enum) -> dict:
    """torchvision's COCO weights from the torch hub cache, downloading them when missing."""
    where = Path(torch.hub.get_dir()) / "checkpoints"
    with contextlib.suppress(ValueError):
        where = "~" / where.relative_to(Path.home())
    try:
        return weights_enum.COCO_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError without internet, hash mismatch, truncated file
        raise SlidewinError(
            f"Faster R-CNN COCO weights are not available: getting {COCO_WEIGHTS_FILE} failed ({_one_line(e)}); "
            f"download it from {weights_enum.COCO_V1.url} into {where}/ or pass --weights PATH"
        ) from None


def _file_state_dict(torch, path: Path) -> dict:
    if not path.is_file():
        raise SlidewinError("weights file not found (expected coco, none, or a state_dict .pth file)", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SlidewinError(f"cannot read weights: {_one_line(e)}", path) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # torchvision reference-script checkpoints
        state = state["model"]
    if not isinstance(state, dict):
        raise SlidewinError(f"not a state_dict (found {type(state).__name__})", path)
    return state


def build_frcnn(weights: str, canvas: int = DEFAULT_CANVAS, seed: int = 0):
    """The eval-mode wrapped torch model and its weights origin.

    Args:
        weights: ``coco``, ``none`` (random init from ``seed``) or a state_dict ``.pth`` path.
        canvas: the square input size (multiple of 32).
        seed: torch seed for ``none``.

    Returns:
        (module taking uint8 ``[1, canvas, canvas, 3]`` and returning (boxes, scores, labels),
        weights origin for the metadata).
    """
    torch, _, weights_enum, builder = _import_torchvision()
    if weights == "none":
        progress(f"building {ARCHITECTURE} with random weights (seed {seed})")
        torch.manual_seed(seed)  # reproducible, so a test can rebuild the same network
    kwargs = dict(weights=None, weights_backbone=None, num_classes=91, min_size=canvas, max_size=canvas,
                  box_score_thresh=BOX_SCORE_THRESH, box_detections_per_img=DETECTIONS_PER_IMAGE)
    model = builder(**kwargs)
    if weights == "none":
        origin = Weights.RANDOM
    else:
        if weights == Weights.COCO:
            progress(f"loading torchvision's COCO weights ({COCO_WEIGHTS_FILE})")
            state, origin, source = _coco_state_dict(torch, weights_enum), Weights.COCO, COCO_WEIGHTS_FILE
        else:
            path = Path(weights).expanduser()
            progress(f"loading weights from {path}")
            state, origin, source = _file_state_dict(torch, path), sha256_of(path), str(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise SlidewinError(f"not a {ARCHITECTURE} state_dict with 91 COCO classes: {_one_line(e)}", source) from None
    model.eval()

    class CanvasDetector(torch.nn.Module):
        """uint8 RGB NHWC [1, H, W, 3] -> (boxes [K, 4], scores [K], labels [K]) on the canvas."""

        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, image):
            x = image[0].permute(2, 0, 1).float() / 255.0
            out = self.detector([x])[0]
            return out["boxes"], out["scores"], out["labels"]

    return CanvasDetector(model).eval(), origin


def torch_detections(model, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The framework's answer for one uint8 ``[1, H, W, 3]`` canvas: (boxes, scores, labels) as NumPy."""
    import torch

    with torch.inference_mode():
        return tuple(t.numpy() for t in model(torch.from_numpy(np.ascontiguousarray(canvas))))


def onnx_detections(model_path: Path, canvases: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """ONNX Runtime on the CPU, one canvas at a time."""
    from slidewin.runtime.sessions import CPU, open_session

    sess = open_session(model_path, CPU)
    return [tuple(sess.run(list(OUTPUT_NAMES), {INPUT_NAME: c})) for c in canvases]


def parity_canvases(canvas: int) -> list[np.ndarray]:
    """uint8 ``[1, canvas, canvas, 3]`` inputs not used for tracing: a structured synthetic scene
    (shapes on a wall-and-table background) and scikit-image's ``coffee`` photo letterboxed the
    way the runtime does it (when scikit-image is installed)."""
    import cv2

    from slidewin.runtime.region import letterbox_image

    from .demo_scene import synthetic_background

    hw = (canvas, canvas)
    scene = synthetic_background((480, 640), seed=11)
    cv2.rectangle(scene, (60, 220), (250, 420), (200, 40, 40), -1)
    cv2.circle(scene, (420, 180), 90, (30, 120, 210), -1)
    cv2.rectangle(scene, (330, 300), (600, 360), (20, 20, 20), -1)
    cv2.line(scene, (0, 470), (640, 300), (250, 250, 250), 6)
    out = [letterbox_image(scene, hw, PAD_RGB)[0][None]]
    with contextlib.suppress(ImportError):
        import skimage.data

        out.append(letterbox_image(skimage.data.coffee(), hw, PAD_RGB)[0][None])
    return out


def export_frcnn(weights: str, out: Path, canvas: int = DEFAULT_CANVAS, opset: int = 17, seed: int = 0) -> FrcnnExportReport:
    """Export torchvision's Faster R-CNN ResNet50-FPN v2 to a slidewin region-proposal model and verify it.

    Args:
        weights: ``coco`` (torchvision's COCO weights from the torch hub cache, downloaded when
            missing), ``none`` (random init from ``seed``; recorded as weights "random") or a path
            to a ``state_dict`` ``.pth`` of this architecture with 91 COCO classes.
        out: the ONNX file to write (atomically; an existing file is replaced only on success).
        canvas: square input size in pixels, a multiple of 32 (default 800, torchvision's
            ``min_size``).
        opset: ONNX opset for ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``).
        seed: random-init seed for ``weights="none"``.

    Returns:
        FrcnnExportReport with the parity figures between ONNX Runtime and torch.

    Raises:
        SlidewinError: weights unavailable or unreadable, a bad canvas, a failed export or parity check.
        MissingDependencyError: torch or torchvision is not installed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if canvas % 32 or not 128 <= canvas <= 2048:
        raise SlidewinError(f"canvas must be a multiple of 32 between 128 and 2048, got {canvas}")
    progress("importing torch and torchvision")
    torch = _import_torchvision()[0]
    model, origin = build_frcnn(str(weights), canvas, seed)
    labels = coco_categories()

    progress(f"exporting with torch.onnx (opset {opset}, canvas {canvas}x{canvas}, batch 1)")
    trace = torch.from_numpy(random_images(1, (canvas, canvas), TRACE_SEED))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # Tracing torchvision's detection code emits dozens of TracerWarnings about Python
            # values it records as constants; they are expected for a fixed-size export.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (trace,), buf, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: "detections"} for name in OUTPUT_NAMES},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as e:
        raise SlidewinError(f"torch.onnx.export failed: {_one_line(e)}", out) from None
    final = onnx.load_from_string(buf.getvalue())

    meta = ModelMeta(
        kind=ModelKind.REGION_PROPOSAL,
        input_hw=(canvas, canvas),
        labels=labels,
        label_set=LabelSet.COCO.value,
        weights=origin,
        architecture=ARCHITECTURE,
        source_framework=f"torch {version_of('torch')}, torchvision {version_of('torchvision')}",
        precision=Precision.FP32.value,
        extra={Key.LETTERBOX: "center", Key.LETTERBOX_PAD_RGB: ",".join(map(str, PAD_RGB)),
               Key.BOX_SCORE_THRESH: str(BOX_SCORE_THRESH), Key.DETECTIONS_PER_IMAGE: str(DETECTIONS_PER_IMAGE),
               # what the ROI head scores per image: the RPN's post-NMS top-N at test time
               Key.RPN_PROPOSALS: str(model.detector.rpn._post_nms_top_n["testing"])},
    )
    write_metadata(final, meta)
    onnx.checker.check_model(final)

    canvases = parity_canvases(canvas)
    progress(f"parity: torch on {len(canvases)} images not used for tracing")
    ref = [torch_detections(model, c) for c in canvases]

    def verify(path: Path):
        progress("parity: ONNX Runtime on the same images")
        return check_detection_parity(list(zip(ref, onnx_detections(path, canvases))), out)

    parity = save_verified(final, out, verify)
    progress(describe_io(final))
    return FrcnnExportReport(
        out, meta, parity.max_score_diff, time.perf_counter() - t0, len(canvases),
        max_box_diff_px=parity.max_box_diff_px, detections=parity.detections, unmatched=parity.unmatched,
    )

"""The CLI's options, derived from the library: choices from its enums, defaults from its config.

Detector flags default to None ("not given"), so that each command applies only what the user
set on top of its own base settings (`DetectorConfig()` for ``detect``, a recipe for
``evaluate``, the demo's picture settings); help texts show the library's defaults.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from slidewin.core.merge import Merge
from slidewin.errors import SlidewinError
from slidewin.pipeline.config import DEFAULT_WINDOWS, MAX_BATCH_SIZE, REFERENCE_SIDE, DetectorConfig, Mode
from slidewin.proposals.detector import ProposalConfig
from slidewin.proposals.generators import ProposalMethod
from slidewin.proposals.scoring import ProposalScoring
from slidewin.runtime.sessions import Device

DEFAULTS = DetectorConfig()
PROPOSAL_DEFAULTS = ProposalConfig()


def choices(enum) -> list[str]:
    """The values of an enum, for argparse ``choices``."""
    return [e.value for e in enum]


def count(minimum: int):
    """argparse type: a whole number >= minimum; ``400_000_000`` and ``400,000,000`` are fine."""
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def number(text: str) -> float:
    """argparse type: a finite number (``inf`` and ``nan`` are mistakes, not limits; ranges are
    `DetectorConfig`'s to check, so that the library refuses the same values)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _window_sizes(text: str) -> list[tuple[int, int]]:
    """``224`` or ``200x150`` (width x height), comma-separated -> [(h, w), ...]."""
    out = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        try:
            out.append((int(h or w), int(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"window must look like 224 or 200x150, got {part!r}") from None
    return out


class _WindowAction(argparse.Action):
    """``--window`` sizes accumulate in ``args.window``; ``--window input`` sets ``args.input_window``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values.strip().lower() == "input":
            namespace.input_window = True
        else:
            try:
                sizes = _window_sizes(values)
            except argparse.ArgumentTypeError as e:
                parser.error(f"argument --window: {e}")
            namespace.window = (namespace.window or []) + sizes
        if namespace.input_window and namespace.window:
            parser.error("argument --window: 'input' cannot be combined with window sizes")


def _sizes_text(windows) -> str:
    return ",".join(f"{w}x{h}" for h, w in windows)


def add_detector_args(p: argparse.ArgumentParser, classes_default: str | None = None,
                      min_score_default: float = DEFAULTS.min_score,
                      proposals_default: ProposalMethod = ProposalMethod.WINDOWS) -> None:
    """The sliding-window flags shared by ``detect``, ``compare`` and ``evaluate``."""
    g = p.add_argument_group("detector")
    g.add_argument("--mode", choices=choices(Mode), default=None,
                   help="patch: classify every window crop; dense: one fully-convolutional pass per pyramid "
                        "level, same windows at the network stride (15-25x faster, better AP on COCO); "
                        f"auto: dense when the classifier can be rewritten, else patch (default {DEFAULTS.mode.value})")
    g.add_argument("--window", action=_WindowAction, default=None, metavar="WxH",
                   help="window size(s) in image pixels, e.g. 224 or 200x150 (repeat or comma-separate for "
                        "several; 'input' = the classifier's input size; default "
                        f"{_sizes_text(DEFAULT_WINDOWS)}, chosen on COCO photos)")
    g.add_argument("--reference-side", type=count(0), default=None, metavar="PX",
                   help=f"window sizes are pixels of an image up to PX on its longer side; larger images get them "
                        f"scaled in proportion (default {REFERENCE_SIDE} for the default windows; --window sizes "
                        "are absolute unless this is given; 0 = absolute)")
    g.add_argument("--stride", type=number, default=None,
                   help=f"step between windows, in classifier-input pixels (default {DEFAULTS.step:g}, the "
                        "network stride)")
    g.add_argument("--scale", type=number, default=None,
                   help=f"pyramid factor between levels (default {DEFAULTS.scale:g})")
    g.add_argument("--max-levels", type=count(1), default=None, help="at most this many pyramid levels")
    g.add_argument("--min-score", type=number, default=None,
                   help=f"minimum class score to keep a window (default {min_score_default:g})")
    g.add_argument("--iou", type=number, default=None,
                   help=f"NMS IoU threshold (default {DEFAULTS.iou:g} for windows, {PROPOSAL_DEFAULTS.iou:g} for "
                        "proposals, which fit objects: neighbours overlap more)")
    g.add_argument("--merge", choices=choices(Merge), default=None,
                   help=f"how overlapping windows become one box (default {DEFAULTS.merge.value}): nms, class-aware "
                        "NMS; soft-nms, Gaussian score decay; nested also drops boxes lying inside a stronger "
                        "one (the demo's choice: cleaner pictures, lower AP); vote averages each kept box with "
                        "those it suppressed")
    g.add_argument("--classes", default=classes_default,
                   help="what to detect: label indices (281), ranges (281-285), label names, group names "
                        f"(cat) or 'coco' for every COCO group (default: {classes_default or 'every label'})")
    g.add_argument("--batch-size", type=count(1), default=None,
                   help=f"windows per inference call in patch mode (default {DEFAULTS.batch_size}, at most "
                        f"{MAX_BATCH_SIZE})")
    g.add_argument("--dense-tile", type=count(0), default=None, metavar="PX",
                   help="dense mode: run pyramid levels of more than PX x PX pixels in tiles of at most that "
                        f"many (default {DEFAULTS.dense_tile}; 0 never tiles): bounds memory, same results, "
                        "more time")
    add_proposal_args(p, proposals_default)
    p.set_defaults(window=None, input_window=False)
    add_device_arg(p)


def add_proposal_args(p: argparse.ArgumentParser, proposals_default: ProposalMethod) -> None:
    """The region-proposal flags shared by ``detect``, ``compare`` and ``evaluate``."""
    g = p.add_argument_group("proposals (instead of windows: R-CNN without training)")
    g.add_argument("--proposals", choices=choices(ProposalMethod), default=proposals_default.value,
                   help="where candidate boxes come from: windows (the sliding-window grid), or selective "
                        "search (boxes that fit objects, scored by the classifier): selective-search-fast "
                        "(~2,000 boxes, ~2.5 s a 640 px photo), selective-search-single (~400 boxes, 0.4 s), "
                        f"selective-search (the full method, slowest) (default {proposals_default.value})")
    g.add_argument("--proposal-scoring", choices=choices(ProposalScoring), default=None,
                   help="pooled: average the dense feature map over each box and apply the classifier's head "
                        "(shared convolutions); crops: classify each box cut out (one pass per box) "
                        f"(default {PROPOSAL_DEFAULTS.scoring.value})")
    g.add_argument("--max-proposals", type=count(1), default=None, metavar="N",
                   help=f"score at most the N best-ranked proposals (default {PROPOSAL_DEFAULTS.max_proposals})")
    g.add_argument("--min-proposal-size", type=number, default=None, metavar="PX",
                   help=f"drop proposals narrower or shorter than PX pixels (default {PROPOSAL_DEFAULTS.min_size:g})")
    g.add_argument("--context", type=number, default=None,
                   help="grow each proposal by this fraction of its size on every side before scoring "
                        f"(default {PROPOSAL_DEFAULTS.context:g})")
    g.add_argument("--contrast", type=number, default=None, metavar="POWER",
                   help="pooled scoring: multiply each box's score by (1 - the score of the ring around it) "
                        "** POWER, which demotes parts of objects; 0 turns it off "
                        f"(default {PROPOSAL_DEFAULTS.contrast:g}, ring {PROPOSAL_DEFAULTS.ring:g} of the box a side)")


def source(text: str):
    """argparse type of an input: a local path, or a URI kept as written (Path would fold its ``//``)."""
    from slidewin.apps.folder.engines import is_uri

    return text if is_uri(text) else Path(text)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray cluster's flags (None: not given, so the local engine can refuse them)."""
    from slidewin.apps.folder.engines import Engine, RayOptions

    ray = RayOptions()
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=choices(Engine), default=Engine.LOCAL.value,
                   help="folder runs: local (this process, default) or ray (the actors of a Ray cluster: same "
                        "results.jsonl, resume and errors; needs the ray extra)")
    g.add_argument("--address", default=None,
                   help="--engine ray: the cluster to join, e.g. 10.0.0.5:6379, or auto for the one `ray start` made on "
                        "this machine (default: RAY_ADDRESS, else a new cluster on this machine for this run)")
    g.add_argument("--workers", type=count(1), default=None,
                   help="--engine ray: actors, each holding one detector (default: as many as the cluster's CPUs, or "
                        "GPUs, hold)")
    g.add_argument("--cpus-per-worker", type=count(1), default=None, metavar="C",
                   help="--engine ray: CPUs each actor reserves, and its ONNX Runtime threads (default "
                        f"{ray.cpus_per_worker})")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="--engine ray: GPUs each actor reserves (0.5: two share one); actors with a GPU run on CUDA "
                        f"(default {ray.gpus_per_worker:g})")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=choices(Device), default=Device.AUTO.value,
                   help="execution device: auto (CUDA when usable, else CPU), cpu, cuda, or tensorrt "
                        "(CUDA with TensorRT engines, cached) (default auto)")


def add_convert_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convert", action="store_true",
                   help="convert grayscale, alpha and 16-bit images to 8-bit RGB instead of refusing them")


#: Flags that map one-to-one onto `DetectorConfig` fields.
_FIELDS = {"stride": "step", "scale": "scale", "max_levels": "max_levels", "min_score": "min_score",
           "iou": "iou", "batch_size": "batch_size", "mode": "mode", "merge": "merge", "dense_tile": "dense_tile"}


def config_overrides(args) -> dict:
    """The `DetectorConfig` fields the user set explicitly."""
    out = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    if args.input_window:
        out["windows_hw"] = None
    elif args.window:
        out["windows_hw"] = tuple(args.window)
    given_windows = args.input_window or bool(args.window)
    if args.reference_side is not None:
        out["reference_side"] = args.reference_side or None
    elif given_windows:
        out["reference_side"] = None  # --window sizes are absolute pixels unless --reference-side says
    return out


#: Flags that map one-to-one onto `ProposalConfig` fields.
_PROPOSAL_FIELDS = {"proposal_scoring": "scoring", "max_proposals": "max_proposals",
                    "min_proposal_size": "min_size", "context": "context", "contrast": "contrast",
                    "min_score": "min_score",
                    "iou": "iou", "merge": "merge", "batch_size": "batch_size"}


def proposal_overrides(args) -> dict:
    """The `ProposalConfig` fields the user set explicitly (``method`` always)."""
    out = {field: getattr(args, flag) for flag, field in _PROPOSAL_FIELDS.items() if getattr(args, flag) is not None}
    return {"method": args.proposals, **out}


#: Every detector flag that has a place in only some detectors: the part of the detector it sets
#: (regions, scoring or merge) and the choices it applies to: ``grid`` (``--proposals windows``,
#: scored in patch or dense mode), ``search`` (selective search, either box scorer), or only one
#: box scorer, ``pooled`` or ``crops``. ``--min-score``, ``--classes`` (scoring), ``--iou`` and
#: ``--merge`` (merge) apply to every classifier detector.
FLAG_PARTS = {
    "window": ("--window", "regions", {"grid"}),
    "input_window": ("--window", "regions", {"grid"}),
    "reference_side": ("--reference-side", "regions", {"grid"}),
    "stride": ("--stride", "regions", {"grid"}),
    "scale": ("--scale", "regions", {"grid"}),
    "max_levels": ("--max-levels", "regions", {"grid"}),
    "max_proposals": ("--max-proposals", "regions", {"search"}),
    "min_proposal_size": ("--min-proposal-size", "regions", {"search"}),
    "mode": ("--mode", "scoring", {"grid"}),
    "dense_tile": ("--dense-tile", "scoring", {"grid"}),
    "batch_size": ("--batch-size", "scoring", {"grid", "crops"}),
    "proposal_scoring": ("--proposal-scoring", "scoring", {"search"}),
    "context": ("--context", "scoring", {"search"}),
    "contrast": ("--contrast", "scoring", {"pooled"}),
}


def used_choices(args, base: ProposalConfig = PROPOSAL_DEFAULTS, windows_too: bool = False) -> set[str]:
    """What the flags' detectors are made of (see `FLAG_PARTS`): ``grid``, or ``search`` and its
    scorer (``pooled``, ``crops``); ``windows_too``: a window-grid detector runs as well (``compare``)."""
    if args.proposals == ProposalMethod.WINDOWS:
        return {"grid"}
    scoring = ProposalScoring(args.proposal_scoring or base.scoring)
    return {"search", scoring.value} | ({"grid"} if windows_too else set())


def check_flags(args, base: ProposalConfig = PROPOSAL_DEFAULTS, windows_too: bool = False) -> None:
    """Refuse, in one line, explicitly given flags that the chosen detector would not use (never
    ignore them): e.g. ``--stride`` with selective search, ``--contrast`` with crops scoring."""
    used = used_choices(args, base, windows_too)
    unused = []
    for dest, (flag, _part, applies) in FLAG_PARTS.items():
        given = getattr(args, dest, None)
        not_given = given is None or given is False or given == []  # 0 is given (--dense-tile 0)
        if not not_given and not applies & used and flag not in unused:
            unused.append(flag)
    if not unused:
        return
    one = len(unused) == 1
    they, sets = ("it", "sets") if one else ("they", "set")
    if "search" not in used:
        chosen, why = "--proposals windows", f"{they} {sets} selective search and its scoring, not the window grid"
    elif all(FLAG_PARTS[d][2] == {"grid"} for d in FLAG_PARTS if FLAG_PARTS[d][0] in unused):
        chosen, why = f"--proposals {args.proposals}", f"{they} {sets} the window grid and its patch or dense scoring"
    else:
        scorer = (used & {"pooled", "crops"}).pop()
        chosen, why = f"--proposal-scoring {scorer}", f"{they} {sets} another scorer"
    raise SlidewinError(f"{', '.join(unused)} {'does' if one else 'do'} not apply to {chosen} ({why}): "
                        f"leave {they} out")


def proposal_config(args, base: ProposalConfig = PROPOSAL_DEFAULTS, windows_too: bool = False) -> ProposalConfig | None:
    """The proposal settings, or None for ``--proposals windows`` (the sliding-window detector),
    after refusing the flags the chosen detectors would not use (`check_flags`; ``windows_too``:
    a window-grid detector runs as well)."""
    check_flags(args, base, windows_too)
    if args.proposals == ProposalMethod.WINDOWS:
        return None
    try:
        return replace(base, **proposal_overrides(args))
    except ValueError as e:
        raise SlidewinError(str(e)) from None


def detector_config(args, base: DetectorConfig = DEFAULTS) -> DetectorConfig:
    """``base`` with the user's explicit flags applied; one-line SlidewinError when they conflict."""
    try:
        return replace(base, **config_overrides(args))
    except ValueError as e:
        raise SlidewinError(str(e)) from None

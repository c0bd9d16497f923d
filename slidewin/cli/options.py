"""The CLI's options, derived from the library: choices from its enums, defaults from its config.

Detector flags default to None ("not given"), so that each command applies only what the user
set on top of its own base settings (a preset for ``detect`` and ``demo``, a recipe for
``evaluate``, `DetectorConfig()` for ``compare``); help texts show the library's defaults. Each
flag sets one setting of one part of the `DetectorConfig` (`FLAGS`, read from the config's own
`FIELDS`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from slidewin.core.merge import Merge
from slidewin.errors import SlidewinError
from slidewin.pipeline.config import (DEFAULT_WINDOWS, FIELDS, MAX_BATCH_SIZE, REFERENCE_SIDE, DetectorConfig, Mode,
                                      Preset, ProposalConfig, ProposalMethod, ProposalScoring, Scorer, preset)
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
                      min_score_default: float = DEFAULTS.scoring.min_score,
                      proposals_default: ProposalMethod = ProposalMethod.WINDOWS,
                      preset_default: Preset | str | None = None) -> None:
    """The detector flags shared by ``detect``, ``compare`` and ``evaluate``; with ``preset_default``
    also ``--preset``, and ``--classes`` defaults to the model's own choice (`default_classes`)."""
    g = p.add_argument_group("detector")
    if preset_default is not None:
        add_preset_arg(g, preset_default)

    def _by_preset(setting: str, default) -> str:
        """A default, or the presets' when the command has --preset (`FIELDS` names the setting)."""
        text = lambda v: f"{getattr(v, 'value', v):g}" if isinstance(v, float) else str(getattr(v, "value", v))
        if preset_default is None:
            return text(default)
        part, field = FIELDS[setting]
        values = {p: getattr(getattr(preset(p), part), field) for p in Preset}
        return ", ".join(f"{text(v)} with --preset {p.value}" for p, v in values.items())
    g.add_argument("--mode", choices=choices(Mode), default=None,
                   help="patch: classify every window crop; dense: one fully-convolutional pass per pyramid "
                        "level, same windows at the network stride (15-25x faster, better AP on COCO); "
                        f"auto: dense when the classifier can be rewritten, else patch (default {DEFAULTS.scoring.scorer.value})")
    g.add_argument("--window", action=_WindowAction, default=None, metavar="WxH",
                   help="window size(s) in image pixels, e.g. 224 or 200x150 (repeat or comma-separate for "
                        "several; 'input' = the classifier's input size; default "
                        f"{_sizes_text(DEFAULT_WINDOWS)}, chosen on COCO photos)")
    g.add_argument("--reference-side", type=count(0), default=None, metavar="PX",
                   help=f"window sizes are pixels of an image up to PX on its longer side; larger images get them "
                        f"scaled in proportion (default {REFERENCE_SIDE} for the default windows; --window sizes "
                        "are absolute unless this is given; 0 = absolute)")
    g.add_argument("--stride", type=number, default=None,
                   help=f"step between windows, in classifier-input pixels (default {DEFAULTS.regions.step:g}, the "
                        "network stride)")
    g.add_argument("--scale", type=number, default=None,
                   help=f"pyramid factor between levels (default {DEFAULTS.regions.scale:g})")
    g.add_argument("--max-levels", type=count(1), default=None, help="at most this many pyramid levels")
    g.add_argument("--min-score", type=number, default=None,
                   help=f"minimum class score to keep a window (default {_by_preset('min_score', min_score_default)})")
    g.add_argument("--iou", type=number, default=None,
                   help=f"NMS IoU threshold (default {DEFAULTS.merge.iou:g} for windows, {PROPOSAL_DEFAULTS.merge.iou:g} for "
                        "proposals, which fit objects: neighbours overlap more)")
    g.add_argument("--merge", choices=choices(Merge), default=None,
                   help=f"how overlapping windows become one box (default {_by_preset('kind', DEFAULTS.merge.kind)}): "
                        "nms, class-aware "
                        "NMS; soft-nms, Gaussian score decay; nested also drops boxes lying inside a stronger "
                        "one (the demo's choice: cleaner pictures, lower AP); vote averages each kept box with "
                        "those it suppressed")
    by_model = ("the COCO groups (coco) for an ImageNet-1k model, whose other labels (nematode, freight car) "
                "rarely fit a photo; every label for any other model")
    g.add_argument("--classes", default=classes_default,
                   help="what to detect: label indices (281), ranges (281-285), label names, group names "
                        "(cat) or 'coco' for every COCO group (default: "
                        f"{by_model if preset_default is not None else classes_default or 'every label'})")
    g.add_argument("--batch-size", type=count(1), default=None,
                   help=f"windows per inference call in patch mode (default {DEFAULTS.scoring.batch_size}, at most "
                        f"{MAX_BATCH_SIZE})")
    g.add_argument("--dense-tile", type=count(0), default=None, metavar="PX",
                   help="dense mode: run pyramid levels of more than PX x PX pixels in tiles of at most that "
                        f"many (default {DEFAULTS.scoring.dense_tile}; 0 never tiles): bounds memory, same results, "
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
                        f"(default {PROPOSAL_DEFAULTS.scorer.value})")
    g.add_argument("--max-proposals", type=count(1), default=None, metavar="N",
                   help=f"score at most the N best-ranked proposals (default {PROPOSAL_DEFAULTS.regions.max_proposals})")
    g.add_argument("--min-proposal-size", type=number, default=None, metavar="PX",
                   help=f"drop proposals narrower or shorter than PX pixels (default {PROPOSAL_DEFAULTS.regions.min_size:g})")
    g.add_argument("--context", type=number, default=None,
                   help="grow each proposal by this fraction of its size on every side before scoring "
                        f"(default {PROPOSAL_DEFAULTS.scoring.context:g})")
    g.add_argument("--contrast", type=number, default=None, metavar="POWER",
                   help="pooled scoring: multiply each box's score by (1 - the score of the ring around it) "
                        "** POWER, which demotes parts of objects; 0 turns it off "
                        f"(default {PROPOSAL_DEFAULTS.scoring.contrast:g}, ring {PROPOSAL_DEFAULTS.scoring.ring:g} of the box a side)")


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


#: The choices a flag can apply to: ``grid`` (``--proposals windows``, scored in patch or dense
#: mode), ``search`` (selective search, either box scorer), or one box scorer, ``pooled`` or ``crops``.
EVERY = frozenset({"grid", "search"})
GRID, SEARCH = frozenset({"grid"}), frozenset({"search"})

#: Every detector flag: (the flag, the setting it sets, by its name in `FIELDS`, which names the
#: part: regions, scoring or merge; the choices it applies to). ``--classes`` chooses the targets
#: the scoring part scores, and applies to every classifier detector.
FLAGS = {
    "window": ("--window", "windows_hw", GRID),
    "input_window": ("--window", "windows_hw", GRID),
    "reference_side": ("--reference-side", "reference_side", GRID),
    "stride": ("--stride", "step", GRID),
    "scale": ("--scale", "scale", GRID),
    "max_levels": ("--max-levels", "max_levels", GRID),
    "max_proposals": ("--max-proposals", "max_proposals", SEARCH),
    "min_proposal_size": ("--min-proposal-size", "min_size", SEARCH),
    "mode": ("--mode", "mode", GRID),
    "dense_tile": ("--dense-tile", "dense_tile", GRID),
    "batch_size": ("--batch-size", "batch_size", frozenset({"grid", "crops"})),
    "proposal_scoring": ("--proposal-scoring", "scorer", SEARCH),
    "context": ("--context", "context", SEARCH),
    "contrast": ("--contrast", "contrast", frozenset({"pooled"})),
    "min_score": ("--min-score", "min_score", EVERY),
    "iou": ("--iou", "iou", EVERY),
    "merge": ("--merge", "kind", EVERY),
}

#: Every flag that has a place in only some detectors: the flag, the part of the detector it sets
#: (regions, scoring or merge, from the config's `FIELDS`) and the choices it applies to.
FLAG_PARTS = {dest: (flag, FIELDS[setting][0], applies) for dest, (flag, setting, applies) in FLAGS.items()
              if applies != EVERY}


def _given(value) -> bool:
    return not (value is None or value is False or value == [])  # 0 is given (--dense-tile 0)


def given_flags(args) -> list[str]:
    """The detector flags given explicitly, in `FLAGS` order (``--window`` once)."""
    out: list[str] = []
    for dest, (flag, _setting, _applies) in FLAGS.items():
        if _given(getattr(args, dest, None)) and flag not in out:
            out.append(flag)
    return out


def _window_overrides(args) -> dict:
    out = {}
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


def settings_given(args, applies: frozenset) -> dict:
    """The settings (by their names in `FIELDS`) the user set explicitly with the flags that apply
    to these choices (``grid`` or ``search``)."""
    out = {setting: getattr(args, dest) for dest, (_flag, setting, on) in FLAGS.items()
           if dest not in ("window", "input_window", "reference_side") and on & applies
           and getattr(args, dest, None) is not None}
    if "grid" in applies:
        out |= _window_overrides(args)
    return out


def config_overrides(args) -> dict:
    """The window-grid detector's settings the user set explicitly (by their names in `FIELDS`,
    for `DetectorConfig.updated`)."""
    return settings_given(args, GRID)


def proposal_overrides(args) -> dict:
    """The selective-search detector's settings the user set explicitly (``method`` always)."""
    return {"method": args.proposals, **settings_given(args, SEARCH | {"pooled", "crops"})}


def used_choices(args, base: DetectorConfig = PROPOSAL_DEFAULTS, windows_too: bool = False) -> set[str]:
    """What the flags' detectors are made of (see `FLAG_PARTS`): ``grid``, or ``search`` and its
    scorer (``pooled``, ``crops``; ``base``'s where --proposal-scoring is not given);
    ``windows_too``: a window-grid detector runs as well (``compare``)."""
    if args.proposals == ProposalMethod.WINDOWS:
        return {"grid"}
    scorer = args.proposal_scoring or (base.scorer if base.searches else Scorer.POOLED)
    return {"search", Scorer(scorer).value} | ({"grid"} if windows_too else set())


def check_flags(args, base: DetectorConfig = PROPOSAL_DEFAULTS, windows_too: bool = False) -> None:
    """Refuse, in one line, explicitly given flags that the chosen detector would not use (never
    ignore them): e.g. ``--stride`` with selective search, ``--contrast`` with crops scoring."""
    used = used_choices(args, base, windows_too)
    unused = []
    for dest, (flag, _part, applies) in FLAG_PARTS.items():
        if _given(getattr(args, dest, None)) and not applies & used and flag not in unused:
            unused.append(flag)
    if not unused:
        return
    one = len(unused) == 1
    they, sets = ("it", "sets") if one else ("they", "set")
    if "search" not in used:
        chosen, why = "--proposals windows", f"{they} {sets} selective search and its scoring, not the window grid"
    elif all(FLAG_PARTS[d][2] == GRID for d in FLAG_PARTS if FLAG_PARTS[d][0] in unused):
        chosen, why = f"--proposals {args.proposals}", f"{they} {sets} the window grid and its patch or dense scoring"
    else:
        scorer = (used & {"pooled", "crops"}).pop()
        chosen, why = f"--proposal-scoring {scorer}", f"{they} {sets} another scorer"
    raise SlidewinError(f"{', '.join(unused)} {'does' if one else 'do'} not apply to {chosen} ({why}): "
                        f"leave {they} out")


def _updated(base: DetectorConfig, settings: dict) -> DetectorConfig:
    try:
        return base.updated(**settings)
    except ValueError as e:
        raise SlidewinError(str(e)) from None


def preset_name(args) -> Preset | None:
    """The preset a command runs: ``--preset`` as given, else ``display`` (one image, a folder run,
    a video alike: one photo gives the same boxes however it is passed); None for a command
    without ``--preset``. Results meant for an AP evaluator ask for ``--preset ap``."""
    if not hasattr(args, "preset"):
        return None
    return Preset(args.preset) if args.preset is not None else Preset.DISPLAY


def _preset(args, method) -> DetectorConfig | None:
    """The preset's settings for these regions, when the command has ``--preset``."""
    name = preset_name(args)
    return None if name is None else preset(name, method)


def proposal_config(args, base: DetectorConfig | None = None, windows_too: bool = False) -> DetectorConfig | None:
    """The selective-search detector's settings, or None for ``--proposals windows`` (the window
    grid), after refusing the flags the chosen detectors would not use (`check_flags`;
    ``windows_too``: a window-grid detector runs as well). ``base``: the settings the flags
    change (default: the command's ``--preset``, else `ProposalConfig` of ``--proposals``)."""
    if base is None:
        base = _preset(args, args.proposals) or (PROPOSAL_DEFAULTS if args.proposals == ProposalMethod.WINDOWS
                                                 else ProposalConfig(method=args.proposals))
    check_flags(args, base, windows_too)
    if args.proposals == ProposalMethod.WINDOWS:
        return None
    return _updated(base, proposal_overrides(args))


def detector_config(args, base: DetectorConfig | None = None) -> DetectorConfig:
    """``base`` (a window-grid config; default: the command's ``--preset``, else `DetectorConfig()`)
    with the user's explicit flags applied; one-line SlidewinError when they conflict."""
    return _updated(base or _preset(args, ProposalMethod.WINDOWS) or DEFAULTS, config_overrides(args))


def detect_config(args) -> DetectorConfig:
    """``detect``'s settings: the ``--preset``'s for the chosen regions (``--proposals``), with every
    flag given explicitly applied on top, after refusing the flags those parts would not use."""
    return proposal_config(args) or detector_config(args)


def preset_line(args) -> str:
    """``preset display`` (``, changed by --min-score, --merge`` when detector flags were given):
    what the header of ``detect`` says about its settings."""
    given = given_flags(args)
    return f"preset {preset_name(args).value}" + (f", changed by {', '.join(given)}" if given else "")


def add_preset_arg(p, default: Preset) -> None:
    """``--preset display|ap``: the settings flags change, for a picture or for COCO AP."""
    from slidewin.pipeline.config import PRESET_HELP

    default = Preset(default)
    p.add_argument("--preset", choices=choices(Preset), default=None,
                   help=f"{PRESET_HELP.replace('%', '%%')} (default {default.value}; use ap for results you will score with an AP evaluator, "
                        "as evaluate does); every detector flag given changes the preset's "
                        "value")

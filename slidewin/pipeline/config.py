"""`DetectorConfig`: one classifier detector's settings, in the three parts of the detector.

- ``regions``: where the classifier looks: `WindowGridConfig` (the sliding-window grid) or
  `SelectiveSearchConfig` (boxes that fit objects);
- ``scoring``: `ScoringConfig`: which scorer gives the regions class probabilities (patch or dense
  for the grid's plan; crops or pooled for any boxes), and which scores are kept;
- ``merge``: `MergeConfig` (`slidewin.core.merge`): how overlapping candidates become one box.

Every setting belongs to exactly one part (`FIELDS`, which also names each CLI flag's field), and
`DetectorConfig.record` keeps only the settings the chosen parts use (what ``run.json`` records).
The defaults are the recipe chosen on coco-dev (README, "How slidewin's recipe got there"); the
CLI takes its defaults from here, and its presets (``--preset display|ap``) from `preset`.

For short code, a setting may be given by its name alone, and goes to its part:
``DetectorConfig(mode="dense", min_score=0.8, merge="nested")`` is
``DetectorConfig(scoring=ScoringConfig(scorer="dense", min_score=0.8), merge=MergeConfig("nested"))``
(the flat names of the two configs slidewin had before, `ProposalConfig` included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from slidewin.core.merge import SOFT_SIGMA, Merge, MergeConfig
from slidewin.proposals.generators import ProposalMethod
from slidewin.proposals.scoring import ProposalScoring

DEFAULT_MAX_TILE = 3072  # --dense-tile: dense passes hold at most this ** 2 pixels (why 3072: slidewin.runtime.dense)


class Mode(StrEnum):
    """How the windows of the grid are classified (the plan scorers).

    ``patch`` crops every window and classifies the crops in batches; ``dense`` runs the
    classifier's fully-convolutional rewrite once per pyramid level (same windows, step = the
    network stride); ``auto`` is dense when the classifier can be rewritten and the settings
    allow it (step = the network stride), patch otherwise. Dense measured 15-25x faster than
    patch mode and 2.7x its AP50 on coco-dev (README).
    """

    AUTO = "auto"
    PATCH = "patch"
    DENSE = "dense"


class Scorer(StrEnum):
    """Which scorer gives the regions class probabilities (`ScoringConfig.scorer`).

    ``auto``, ``patch`` and ``dense`` score the windows of the grid's plan (see `Mode`); ``crops``
    and ``pooled`` score any boxes (see `ProposalScoring`). ``auto`` with selective search is
    ``pooled``.
    """

    AUTO = "auto"
    PATCH = "patch"
    DENSE = "dense"
    CROPS = "crops"
    POOLED = "pooled"


class Scoring(StrEnum):
    """How window probabilities become target scores (see `Targets`): `ScoringConfig.rule`."""

    GROUP_SUM = "group-sum"  # every target scores the sum of its members' probabilities
    TOP1 = "top1"            # the tutorial's: only the top-1 label scores, for its own target


#: Window sizes (height, width) chosen on coco-dev with EfficientNet-Lite0 (README, ablation):
#: the tutorial's 200x150 landscape ROI, its portrait twin, and a 100x75 window (classified 2x
#: upsampled) for the many small objects of everyday photos.
DEFAULT_WINDOWS = ((150, 200), (200, 150), (75, 100))
#: Window sizes are pixels of an image up to this long side; larger images get them scaled up.
REFERENCE_SIDE = 1024
#: Patch-mode batches beyond this only cost memory: the network's activations grow with the
#: batch (tens of MB per 224 px window), throughput does not (bench_throughput: flat from 16).
MAX_BATCH_SIZE = 1024
#: The merge's IoU by regions: proposals fit objects, so neighbouring ones overlap more than windows.
GRID_IOU, SEARCH_IOU = 0.5, 0.7


class NetworkStride(float):
    """The default step: "the network's stride". It is 32 px where a number is needed (patch mode,
    printing it), and a detector that runs dense (``auto`` or ``dense``) steps by the stride its
    classifier's dense form has (16 for a network that downsamples 16 times). A step the user sets
    is a plain float and is kept as it is."""

    def __repr__(self) -> str:
        return "NetworkStride(32.0)"


#: The default `WindowGridConfig.step`.
DEFAULT_STEP = NetworkStride(32.0)


@dataclass(frozen=True)
class WindowGridConfig:
    """Regions: the sliding-window grid over an image pyramid (`slidewin.pipeline.regions.WindowGrid`).

    Attributes:
        windows_hw: window sizes (height, width) in original-image pixels at the first level
            (default `DEFAULT_WINDOWS`; None: one window of the classifier's input size).
        step: distance between windows in classifier-input pixels, or (step_y, step_x);
            default `DEFAULT_STEP`: the network's stride in dense mode, 32 in patch mode.
        scale: pyramid factor between levels.
        max_levels: at most this many pyramid levels per window size.
        align: round level sizes so windows tile them exactly (see `plan_levels`); dense mode
            needs it, and with it both modes evaluate the same windows.
        reference_side: window sizes are pixels of an image whose longer side is at most this;
            on a larger image they are scaled by ``long_side / reference_side``, so a 12 MP photo
            is searched at the same relative scales, in about the same number of windows, as a
            1024 px one (absolute windows tuned on 640 px photos would make its first level
            ~60 MP and its smallest window a sliver). None: absolute pixels at any size.
    """

    windows_hw: tuple[tuple[int, int], ...] | None = DEFAULT_WINDOWS
    step: float | tuple[float, float] = DEFAULT_STEP
    scale: float = 1.5
    max_levels: int | None = None
    align: bool = True
    reference_side: int | None = REFERENCE_SIDE

    def __post_init__(self):
        if self.windows_hw is not None:
            object.__setattr__(self, "windows_hw", tuple(tuple(hw) for hw in self.windows_hw))
        if self.windows_hw is not None and not self.windows_hw or any(h < 8 or w < 8 for h, w in self.windows_hw or ()):
            raise ValueError(f"window sizes must be at least 8x8, got {self.windows_hw}")
        steps = self.step if isinstance(self.step, tuple) else (self.step,)
        if not all(math.isfinite(v) for v in (*steps, self.scale)):
            raise ValueError("step and scale must be finite numbers")
        if not all(st > 0 for st in steps) or not self.scale > 1:
            raise ValueError("step must be > 0 and scale > 1")
        if self.align and any(st != int(st) for st in steps):
            raise ValueError(f"the step (--stride) must be a whole number of pixels, got {self.step}")
        if self.max_levels is not None and self.max_levels < 1:
            raise ValueError(f"max_levels must be at least 1, got {self.max_levels}")
        if self.reference_side is not None and self.reference_side < 1:
            raise ValueError(f"reference_side must be a positive number of pixels or None, got {self.reference_side}")


@dataclass(frozen=True)
class SelectiveSearchConfig:
    """Regions: selective-search proposals, cleaned (`slidewin.proposals.generators.SelectiveSearch`).

    Attributes:
        method: a selective-search mode (``selective-search-fast``, ``-single`` or the full one).
        min_size: proposals narrower or shorter than this many pixels are dropped.
        max_proposals: at most this many proposals, in the generator's rank order.
    """

    method: ProposalMethod = ProposalMethod.SELECTIVE_SEARCH_FAST
    min_size: float = 16.0
    max_proposals: int = 2000

    def __post_init__(self):
        object.__setattr__(self, "method", ProposalMethod(self.method))
        if self.method is ProposalMethod.WINDOWS:
            raise ValueError("the window grid is WindowGridConfig, not a selective-search method")
        if not (self.min_size >= 0 and self.max_proposals >= 1):
            raise ValueError("min_size must be >= 0 and max_proposals >= 1")


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring: the scorer that gives the regions class probabilities, and the scores kept.

    Attributes:
        scorer: see `Scorer` (default ``auto``: dense or patch for the grid, pooled for selective search).
        min_score: keep (region, target) pairs scoring at least this.
        rule: group sums (slidewin) or the tutorial's top-1 label (see `Scoring`).
        batch_size: regions per inference call (``patch`` and ``crops``).
        dense_tile: ``dense`` runs levels of more than ``dense_tile ** 2`` pixels in tiles of at
            most that many (same results, bounded memory, more time); 0 never tiles.
        context: ``crops`` and ``pooled``: boxes grow by this fraction of their size on each side
            before scoring.
        max_scale, level_factor: ``pooled``: the feature pyramid's largest scale and the factor
            between its levels.
        fit: ``pooled`` takes each box at the level where its side is this fraction of the
            classifier's input side.
        ring, contrast: ``pooled`` also scores the ring between each box and the box grown by
            ``ring`` of its size a side, and multiplies the box's score by
            ``(1 - ring score) ** contrast`` (0: off), which demotes parts of objects. ``crops``
            has no ring: it would cost another network pass per box.
    """

    scorer: Scorer = Scorer.AUTO
    min_score: float = 0.5
    rule: Scoring = Scoring.GROUP_SUM
    batch_size: int = 16
    dense_tile: int = DEFAULT_MAX_TILE
    context: float = 0.0
    max_scale: float = 3.0
    level_factor: float = 1.5
    fit: float = 0.7
    ring: float = 0.5
    contrast: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "scorer", Scorer(self.scorer))
        object.__setattr__(self, "rule", Scoring(self.rule))
        numbers = (self.min_score, self.context, self.max_scale, self.level_factor, self.fit, self.ring, self.contrast)
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("min_score and the scorer's settings must be finite numbers")
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must lie in [0, 1], got {self.min_score}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size (--batch-size) must lie in [1, {MAX_BATCH_SIZE}], got {self.batch_size} "
                             "(larger batches only cost memory)")
        if self.dense_tile < 0:
            raise ValueError(f"dense_tile must be >= 0, got {self.dense_tile}")
        if not 0 <= self.context <= 2:
            raise ValueError(f"context must lie in [0, 2], got {self.context}")
        if not (self.max_scale > 0 and self.level_factor > 1 and self.fit > 0):
            raise ValueError("max_scale and fit must be > 0 and level_factor > 1")
        if not (0 <= self.ring <= 2 and self.contrast >= 0):
            raise ValueError("ring must lie in [0, 2] and contrast be >= 0")

    @property
    def scores_plan(self) -> bool:
        """Whether the scorer scores the windows of a plan (``auto``, ``patch``, ``dense``)."""
        return self.scorer in (Scorer.AUTO, Scorer.PATCH, Scorer.DENSE)

    @property
    def uses_ring(self) -> bool:
        """True when scores are contrasted with the ring around each box: pooled scoring (``auto``
        too, which is pooled for selective search) with a ring and a contrast."""
        return self.scorer in (Scorer.POOLED, Scorer.AUTO) and self.ring > 0 and self.contrast > 0


#: Every setting by its flat name: (part, field of that part's config). ``mode`` and the
#: proposal ``scoring`` (crops, pooled) both choose the scorer; the old ``scoring`` of the window
#: detector (group-sum, top1) is the rule (`_flat_scoring` tells them apart by value).
FIELDS = {
    **{f.name: ("regions", f.name) for f in fields(WindowGridConfig)},
    **{f.name: ("regions", f.name) for f in fields(SelectiveSearchConfig)},
    **{f.name: ("scoring", f.name) for f in fields(ScoringConfig)},
    "mode": ("scoring", "scorer"),
    "iou": ("merge", "iou"), "ios": ("merge", "ios"), "soft_sigma": ("merge", "soft_sigma"),
    "class_agnostic": ("merge", "class_agnostic"), "kind": ("merge", "kind"),
}
_GRID_FIELDS = {f.name for f in fields(WindowGridConfig)}
_SEARCH_FIELDS = {f.name for f in fields(SelectiveSearchConfig)}


def _flat_scoring(value) -> tuple[str, str]:
    """The part field a flat ``scoring`` value sets: the scorer (crops, pooled) or the rule."""
    return ("scoring", "scorer") if str(getattr(value, "value", value)) in {s.value for s in ProposalScoring} else ("scoring", "rule")


@dataclass(frozen=True, init=False)
class DetectorConfig:
    """A classifier detector's settings, in its three parts.

    Args:
        regions: `WindowGridConfig` (default) or `SelectiveSearchConfig`.
        scoring: `ScoringConfig`.
        merge: `MergeConfig` (default: class-aware NMS at IoU 0.5 for the grid, 0.7 for selective
            search, whose boxes fit objects and overlap their neighbours more; a merge at one of
            these defaults follows the regions when `updated` changes them).
        **settings: single settings by name, applied to their part (see `FIELDS` and the module
            docstring): ``DetectorConfig(min_score=0.8, merge="nested")``. ``method`` chooses
            selective search (``windows``: the grid), ``merge`` given as a `Merge` sets its kind.

    A scorer of the grid's plan (``patch``, ``dense``) with selective-search regions is refused
    (ValueError), as is dense scoring on unaligned levels.

    To change settings of a config, use `updated` (``config.updated(merge="nested")`` changes the
    merge's kind and keeps its IoU). ``dataclasses.replace`` works with flat names too, but
    ``merge`` and ``scoring`` there name whole parts: ``replace(config, merge="nested")`` makes a new
    `MergeConfig` of that kind, with the defaults for its other settings.
    """

    regions: WindowGridConfig | SelectiveSearchConfig
    scoring: ScoringConfig
    merge: MergeConfig

    def __init__(self, regions: WindowGridConfig | SelectiveSearchConfig | None = None,
                 scoring: ScoringConfig | None = None, merge: MergeConfig | Merge | str | None = None, **settings):
        if merge is not None and not isinstance(merge, MergeConfig):
            settings["kind"], merge = merge, None
        if scoring is not None and not isinstance(scoring, ScoringConfig):
            settings[_flat_scoring(scoring)[1]], scoring = scoring, None
        regions, scoring, merge = _apply(regions, scoring, merge, settings)
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "scoring", scoring)
        object.__setattr__(self, "merge", merge)
        self._check()

    def _check(self) -> None:
        s, r = self.scoring, self.regions
        if not isinstance(r, (WindowGridConfig, SelectiveSearchConfig)):
            raise ValueError(f"regions must be a WindowGridConfig or a SelectiveSearchConfig, got {type(r).__name__}")
        if self.searches and s.scorer in (Scorer.PATCH, Scorer.DENSE):
            raise ValueError(f"{s.scorer} scoring scores the windows of the grid's plan, and selective search gives "
                             "boxes: score them with crops or pooled")
        if self.scorer is Scorer.DENSE and not r.align:
            raise ValueError("dense mode needs aligned levels (align=True)")

    @property
    def searches(self) -> bool:
        """Whether the regions are selective search (not the window grid)."""
        return isinstance(self.regions, SelectiveSearchConfig)

    @property
    def scorer(self) -> Scorer:
        """The scorer, ``auto`` resolved where the regions decide it (selective search: pooled);
        ``auto`` on the grid stays ``auto`` (dense or patch: the model decides, see `Mode`)."""
        s = self.scoring.scorer
        return Scorer.POOLED if s is Scorer.AUTO and self.searches else s

    def updated(self, **settings) -> DetectorConfig:
        """This config with settings changed by their flat names (see `FIELDS`), or whole parts
        (``regions=``, ``scoring=``, ``merge=``)."""
        regions = settings.pop("regions", self.regions)
        scoring, merge = settings.pop("scoring", self.scoring), settings.pop("merge", self.merge)
        if not isinstance(scoring, ScoringConfig):
            settings[_flat_scoring(scoring)[1]], scoring = scoring, self.scoring
        if not isinstance(merge, MergeConfig):
            settings["kind"], merge = merge, self.merge
        return DetectorConfig(regions, scoring, merge, **settings)

    def record(self) -> dict[str, dict]:
        """The settings the chosen parts use, part by part (``regions``, ``scoring``, ``merge``):
        what a folder run's ``run.json`` records. Only the scorer's own settings are kept (the
        grid's scorer as ``mode``, a box scorer as ``scoring``), and of the merge those its kind
        uses (``ios`` for the nested merges, ``soft_sigma`` for soft-NMS, ``class_agnostic``
        when set)."""
        r, s, m = self.regions, self.scoring, self.merge
        regions = {f.name: getattr(r, f.name) for f in fields(r)}
        if s.scores_plan:
            scoring = {"mode": s.scorer, "batch_size": s.batch_size, "dense_tile": s.dense_tile,
                       "min_score": s.min_score, "scoring": s.rule}
        else:
            scoring = {"scoring": self.scorer, "context": s.context, "min_score": s.min_score}
            scoring |= ({"max_scale": s.max_scale, "level_factor": s.level_factor, "fit": s.fit, "ring": s.ring,
                         "contrast": s.contrast} if self.scorer is Scorer.POOLED else {"batch_size": s.batch_size})
            if s.rule is not Scoring.GROUP_SUM:
                scoring["rule"] = s.rule
        merge = {"merge": m.kind, "iou": m.iou}
        if m.kind in (Merge.NESTED, Merge.NESTED_VOTE):
            merge["ios"] = m.ios
        if m.kind is Merge.SOFT:
            merge["soft_sigma"] = m.soft_sigma
        if m.class_agnostic:
            merge["class_agnostic"] = True
        return {"regions": regions, "scoring": scoring, "merge": merge}

    def flat(self) -> dict:
        """`record` as one dict (the names of the three parts never collide within one config)."""
        return {k: v for part in self.record().values() for k, v in part.items()}


def _apply(regions, scoring, merge, settings: dict):
    """The three parts with ``settings`` (flat names, see `FIELDS`) applied; ValueError for a name
    no part has, or a setting of the other kind of regions."""
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise TypeError(f"DetectorConfig has no setting {', '.join(map(repr, unknown))}")
    changes: dict[str, dict] = {"regions": {}, "scoring": {}, "merge": {}}
    for name, value in settings.items():
        part, field = FIELDS[name]
        changes[part][field] = value
    r = changes["regions"]
    before = regions
    method = r.pop("method", None)
    if method is not None and ProposalMethod(method) is ProposalMethod.WINDOWS:
        regions = regions if isinstance(regions, WindowGridConfig) else WindowGridConfig()
    elif method is not None:
        base = regions if isinstance(regions, SelectiveSearchConfig) else SelectiveSearchConfig()
        regions = replace(base, method=method)
    regions = regions or WindowGridConfig()
    own = _GRID_FIELDS if isinstance(regions, WindowGridConfig) else _SEARCH_FIELDS
    other = sorted(set(r) - own)
    if other:
        kind = "the window grid" if isinstance(regions, WindowGridConfig) else "selective search"
        raise ValueError(f"{', '.join(other)} {'does' if len(other) == 1 else 'do'} not apply to {kind}")
    regions = replace(regions, **r) if r else regions
    scoring = replace(scoring or ScoringConfig(), **changes["scoring"])
    if merge is None:
        merge = MergeConfig(iou=_default_iou(regions))
    elif before is not None and type(before) is not type(regions) and merge.iou == _default_iou(before):
        merge = replace(merge, iou=_default_iou(regions))  # the IoU follows the regions unless it was set
    merge = replace(merge, **changes["merge"]) if changes["merge"] else merge
    return regions, scoring, merge


def _default_iou(regions) -> float:
    return SEARCH_IOU if isinstance(regions, SelectiveSearchConfig) else GRID_IOU


def ProposalConfig(**settings) -> DetectorConfig:  # noqa: N802 - the old class's name, kept for its callers
    """The settings of a classifier scoring selective-search proposals: a `DetectorConfig` whose
    regions are `SelectiveSearchConfig` (``method="windows"``: the grid), scored by ``pooled``
    unless ``scoring="crops"``, merged at IoU 0.7; other settings by their flat names.

    Kept for code written against the separate proposal config slidewin had: new code writes
    ``DetectorConfig(regions=SelectiveSearchConfig(...), ...)``."""
    method = settings.pop("method", ProposalMethod.SELECTIVE_SEARCH_FAST)
    regions = SelectiveSearchConfig() if ProposalMethod(method) is not ProposalMethod.WINDOWS else WindowGridConfig()
    settings.setdefault("scoring", ProposalScoring.POOLED)
    settings.setdefault("iou", SEARCH_IOU)
    return DetectorConfig(regions, method=method, **settings)



class Preset(StrEnum):
    """Settings made for one use (``--preset``): see `preset`."""

    DISPLAY = "display"  # a picture to look at: one box per object (detect's default)
    AP = "ap"            # COCO AP: the library's defaults, the recipe evaluate starts from


def preset(name: Preset | str, method: ProposalMethod | str = ProposalMethod.WINDOWS) -> DetectorConfig:
    """The settings of a preset for the chosen regions (``method``: ``windows`` for the grid, else
    a selective-search mode).

    ``ap`` is `DetectorConfig()` (the grid) or `ProposalConfig` (selective search): the recipe
    chosen for COCO AP on coco-dev. ``display`` keeps the regions and scorer and keeps only
    confident boxes, merging a box that lies mostly inside a stronger box of its class (a window on
    a cat's face and one on the cat): tuned on coco-dev so that one object gets one box
    (benchmarks/quality/tune_display.py, docs/quality.md).
    """
    search = ProposalMethod(method) is not ProposalMethod.WINDOWS
    base = ProposalConfig(method=method) if search else DetectorConfig()
    if Preset(name) is Preset.AP:
        return base
    return base.updated(**(_DISPLAY_SEARCH if search else _DISPLAY_GRID))


#: The display preset's changes to ``ap``, for the grid and for selective search, chosen on coco-dev
#: with benchmarks/quality/tune_display.py (docs/quality.md, "The display preset"): a box lying 40%
#: inside a stronger one of its class is merged into it, which leaves 4% of the objects found with
#: two boxes (windows; 0% for proposals) where ap leaves 74% (86%).
_DISPLAY_GRID = {"min_score": 0.7, "kind": Merge.NESTED, "iou": 0.3, "ios": 0.4}
_DISPLAY_SEARCH = {"min_score": 0.8, "kind": Merge.NESTED, "ios": 0.4}


def _described(changes: dict) -> str:
    """``score >= 0.7, nested merge at IoU 0.3 and 40% inside a stronger box of its class``."""
    text = f"score >= {changes['min_score']:g}, {Merge(changes['kind']).value} merge"
    if "iou" in changes:
        text += f" at IoU {changes['iou']:g}"
    if "ios" in changes:
        text += f"{' and' if 'iou' in changes else ' at'} {changes['ios']:.0%} inside a stronger box of its class"
    return text


def preset_summary(name: Preset | str, method: ProposalMethod | str = ProposalMethod.WINDOWS) -> str:
    """What a preset changes from ``ap``, in words (``score >= 0.8, nested merge``)."""
    if Preset(name) is Preset.AP:
        return "the defaults"
    return _described(_DISPLAY_SEARCH if ProposalMethod(method) is not ProposalMethod.WINDOWS else _DISPLAY_GRID)


#: What ``--help`` says about the presets.
PRESET_HELP = (f"display: a picture to look at, one box per object: {_described(_DISPLAY_GRID)} (with --proposals: "
               f"{_described(_DISPLAY_SEARCH)}); ap: the settings COCO AP is measured with (more boxes, lower scores)")

__all__ = ["DEFAULT_MAX_TILE", "DEFAULT_STEP", "DEFAULT_WINDOWS", "FIELDS", "MAX_BATCH_SIZE", "REFERENCE_SIDE",
           "DetectorConfig", "Merge", "MergeConfig", "Mode", "NetworkStride", "Preset", "ProposalConfig", "ProposalMethod",
           "ProposalScoring", "Scorer", "Scoring", "ScoringConfig", "SelectiveSearchConfig", "WindowGridConfig",
           "SOFT_SIGMA", "preset", "preset_summary"]

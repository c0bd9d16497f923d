"""Regions, the first part of a `ClassifierDetector`: where the classifier looks.

Two kinds, one small interface (``unit``, ``stages``, ``gives_plan``, ``boxes(image)``):

- `WindowGrid`: the sliding-window grid. It gives a pyramid *plan* (`plan`: levels whose windows
  tile them), which the plan scorers (`PatchScorer`, `DenseScorer`) need, and also the plan's
  windows as boxes (`boxes`), which any box scorer takes. It is the one window planner.
- `SelectiveSearch` (`slidewin.proposals.generators`): boxes that fit objects, cleaned (clipped,
  minimum side, no duplicates, at most ``max_proposals``); no plan.
"""

from __future__ import annotations

import numpy as np

from slidewin.core.detector import Unit
from slidewin.core.geometry import Level, plan_levels, scale_windows
from slidewin.pipeline.config import DEFAULT_STEP, DEFAULT_WINDOWS, REFERENCE_SIDE
from slidewin.proposals.generators import ProposalMethod, SelectiveSearch

__all__ = ["ProposalMethod", "SelectiveSearch", "WindowGrid"]


class WindowGrid:
    """The window grid over an image pyramid.

    Args:
        input_hw: the classifier's input size (height, width): every window is resized to it.
        windows_hw: window sizes (height, width) in image pixels at the first level (None: one
            window of the input size).
        step: distance between windows in classifier-input pixels, or (step_y, step_x).
        scale: pyramid factor between levels.
        max_levels: at most this many levels per window size.
        align: round level sizes so windows tile them exactly (dense scoring needs it).
        reference_side: window sizes are pixels of an image up to this long side (see
            `slidewin.core.geometry.scale_windows`); None: absolute.
    """

    unit = Unit.WINDOWS
    stages = ()  # planning costs nothing measurable: no stage of its own
    gives_plan = True

    def __init__(self, input_hw: tuple[int, int], windows_hw=DEFAULT_WINDOWS, step=DEFAULT_STEP,
                 scale: float = 1.5, max_levels: int | None = None, align: bool = True,
                 reference_side: int | None = REFERENCE_SIDE):
        self.input_hw = tuple(input_hw)
        self.windows_hw, self.step, self.scale = windows_hw, step, scale
        self.max_levels, self.align, self.reference_side = max_levels, align, reference_side

    @classmethod
    def from_config(cls, config, input_hw: tuple[int, int], step=None) -> WindowGrid:
        """The grid of a `WindowGridConfig`, or of a `DetectorConfig`'s regions (the default grid
        where those are not the grid); ``step``: the step in use, default the config's."""
        from slidewin.pipeline.config import WindowGridConfig

        grid = getattr(config, "regions", config)
        grid = grid if isinstance(grid, WindowGridConfig) else WindowGridConfig()
        return cls(input_hw, grid.windows_hw, grid.step if step is None else step, grid.scale,
                   grid.max_levels, grid.align, grid.reference_side)

    def windows_for(self, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The window sizes (height, width) in this image's pixels (see ``reference_side``)."""
        return scale_windows(list(self.windows_hw or (self.input_hw,)), image_hw, self.reference_side)

    def plan(self, image_hw: tuple[int, int]) -> list[Level]:
        """The pyramid levels for an image of this size (window size, then level)."""
        return plan_levels(image_hw, self.input_hw, self.windows_for(image_hw), self.step, self.scale,
                           self.max_levels, self.align)

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Every window of the plan as float32 (K, 4) xyxy in image pixels, in plan order (window
        size, level, row-major): the windows a plan scorer scores, for a box scorer."""
        from slidewin.pipeline.windows import level_boxes

        hw = image.shape[:2]
        levels = self.plan(hw)
        if not levels:
            return np.zeros((0, 4), np.float32)
        return np.concatenate([level_boxes(level, self.input_hw, hw) for level in levels])

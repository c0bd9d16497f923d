"""Classifier detectors from parts, read in data-flow order:

- `regions`: where the classifier looks (`WindowGrid`, the one window planner; `SelectiveSearch`);
- `scorers`: class probabilities for them (`PatchScorer`, `DenseScorer` for a plan; `CropScorer`,
  `PooledScorer` for any boxes);
- `slidewin.core.merge`: one box per object (`MergeConfig`, ``detections.merged(cfg)``);
- `detector`: `ClassifierDetector(regions, scorer, targets, merge)`, the one classifier detector;
- `sliding`, `proposal`: the parts a `DetectorConfig` or a `ProposalConfig` names
  (`SlidingWindowDetector`, `ProposalDetector`);
- `factory`: `build_detector`, the composition root (also `FasterRCNNDetector` for region-proposal
  models), and `settings_parts`, the settings of the parts in use.
"""

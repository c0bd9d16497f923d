"""Classifier detectors from parts, read in data-flow order:

- `regions`: where the classifier looks (`WindowGrid`, the one window planner; `SelectiveSearch`);
- `scorers`: class probabilities for them (`PatchScorer`, `DenseScorer` for a plan; `CropScorer`,
  `PooledScorer` for any boxes);
- `slidewin.core.merge`: one box per object (`MergeConfig`, ``detections.merged(cfg)``);
- `detector`: `ClassifierDetector(regions, scorer, targets, merge)`, the one classifier detector;
- `config`: `DetectorConfig`, the settings in the same three parts (regions, scoring, merge), and
  the CLI's presets; `parts`: the regions and scorer a config names, for one classifier;
- `sliding`, `proposal`: `SlidingWindowDetector` and `ProposalDetector`, the names a classifier
  detector built from a config had;
- `factory`: `build_detector`, the composition root (also `FasterRCNNDetector` for region-proposal
  models), and `settings_parts`, the settings of the parts in use.
"""

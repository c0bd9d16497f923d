"""One `DetectorConfig` in three parts (regions, scoring, merge): every setting lives in one part,
settings given by name reach their part, settings of the other regions are refused, and `record`
keeps only what the chosen parts use."""

from __future__ import annotations

import dataclasses

import pytest

from slidewin.core.merge import Merge, MergeConfig
from slidewin.pipeline.config import (FIELDS, DetectorConfig, Preset, ProposalConfig, Scorer, Scoring, ScoringConfig,
                                      SelectiveSearchConfig, WindowGridConfig, preset)

PARTS = {"regions": (WindowGridConfig, SelectiveSearchConfig), "scoring": (ScoringConfig,), "merge": (MergeConfig,)}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_setting_names_a_field_of_one_part(name):
    part, field = FIELDS[name]
    owners = [cls for cls in PARTS[part] if field in {f.name for f in dataclasses.fields(cls)}]
    assert len(owners) == 1, (name, part, field)


#: flat settings -> (part, field, value the part must then hold)
BY_NAME = [
    ({"mode": "dense"}, "scoring", "scorer", Scorer.DENSE),
    ({"scoring": "top1"}, "scoring", "rule", Scoring.TOP1),           # the window detector's old "scoring"
    ({"scoring": "crops", "method": "selective-search-single"}, "scoring", "scorer", Scorer.CROPS),  # ProposalConfig's
    ({"min_score": 0.8}, "scoring", "min_score", 0.8),
    ({"merge": "nested"}, "merge", "kind", Merge.NESTED),
    ({"iou": 0.3}, "merge", "iou", 0.3),
    ({"step": 16.0}, "regions", "step", 16.0),
    ({"windows_hw": ((96, 128),)}, "regions", "windows_hw", ((96, 128),)),
    ({"method": "selective-search-single", "max_proposals": 50}, "regions", "max_proposals", 50),
]


@pytest.mark.parametrize("settings, part, field, value", BY_NAME)
def test_a_setting_given_by_name_reaches_its_part(settings, part, field, value):
    config = DetectorConfig(**settings)
    assert getattr(getattr(config, part), field) == value
    assert DetectorConfig().updated(**settings) == config
    assert dataclasses.replace(DetectorConfig(), **settings) == config   # what code written for flat configs does


def test_the_parts_and_their_defaults():
    grid = DetectorConfig()
    assert isinstance(grid.regions, WindowGridConfig) and grid.scoring == ScoringConfig()
    assert grid.merge == MergeConfig(Merge.NMS, 0.5) and grid.scorer is Scorer.AUTO
    search = DetectorConfig(regions=SelectiveSearchConfig())
    assert search.merge.iou == 0.7 and search.scorer is Scorer.POOLED      # proposals fit objects: neighbours overlap more
    assert ProposalConfig(method="selective-search-single", scoring="crops", min_score=0.3) == DetectorConfig(
        SelectiveSearchConfig("selective-search-single"), ScoringConfig(Scorer.CROPS, min_score=0.3), MergeConfig(iou=0.7))


@pytest.mark.parametrize("settings, words", [
    ({"method": "selective-search-fast", "step": 16}, "step does not apply to selective search"),
    ({"method": "selective-search-fast", "mode": "dense"}, "dense scoring scores the windows of the grid"),
    ({"mode": "dense", "align": False}, "aligned"),
    ({"min_score": 1.5}, "min_score"),
    ({"iou": 0}, "iou"),
    ({"max_proposals": 0, "method": "selective-search-fast"}, "max_proposals"),
])
def test_settings_that_do_not_fit_are_refused_in_one_line(settings, words):
    with pytest.raises(ValueError) as e:
        DetectorConfig(**settings)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="no setting 'strides'"):
        DetectorConfig(strides=16)


@pytest.mark.parametrize("config, regions, scoring, merge", [
    (DetectorConfig(), {"windows_hw", "step", "scale", "max_levels", "align", "reference_side"},
     {"mode", "batch_size", "dense_tile", "min_score", "scoring"}, {"merge", "iou"}),
    (DetectorConfig(merge="nested"), None, None, {"merge", "iou", "ios"}),
    (DetectorConfig(merge=MergeConfig(Merge.SOFT, class_agnostic=True)), None, None,
     {"merge", "iou", "soft_sigma", "class_agnostic"}),
    (ProposalConfig(), {"method", "min_size", "max_proposals"},
     {"scoring", "context", "min_score", "max_scale", "level_factor", "fit", "ring", "contrast"}, {"merge", "iou"}),
    (ProposalConfig(scoring="crops"), None, {"scoring", "context", "min_score", "batch_size"}, None),
    (DetectorConfig(scoring=ScoringConfig(Scorer.CROPS)), {"windows_hw", "step", "scale", "max_levels", "align",
                                                           "reference_side"}, {"scoring", "context", "min_score",
                                                                               "batch_size"}, None),
])
def test_record_keeps_only_what_the_parts_use(config, regions, scoring, merge):
    record = config.record()
    assert list(record) == ["regions", "scoring", "merge"]
    for part, want in (("regions", regions), ("scoring", scoring), ("merge", merge)):
        if want is not None:
            assert set(record[part]) == want, part
    assert config.flat() == {k: v for part in record.values() for k, v in part.items()}


@pytest.mark.parametrize("method", ["windows", "selective-search-fast", "selective-search-single"])
def test_presets_keep_the_regions_and_scorer_and_differ_in_what_is_kept_and_merged(method):
    ap, display = preset(Preset.AP, method), preset("display", method)
    assert ap == (DetectorConfig() if method == "windows" else ProposalConfig(method=method))
    assert display.regions == ap.regions and display.scorer == ap.scorer
    assert display.scoring.min_score > ap.scoring.min_score          # confident boxes only
    assert display != ap and dataclasses.replace(display.scoring, min_score=ap.scoring.min_score) == ap.scoring

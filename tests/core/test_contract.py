"""The model contract lives in one module: exporters and runtime use its names, never their own."""

import re
from pathlib import Path

import pytest

from slidewin.errors import ModelError
from slidewin.core.contract import (PROBABILITIES, PROBABILITY_MAP, Key, LabelSet, ModelKind, ModelMeta, Precision,
                                    Weights)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "slidewin" / "core" / "contract.py"


def _distinctive() -> set[str]:
    """Contract strings that mean nothing else: metadata keys, output names, label sets."""
    common = {Key.KIND, Key.LABELS, Key.WEIGHTS, Key.PRECISION, Key.DENSE, Key.ARCHITECTURE, Key.CALIBRATION,
              Key.QUANTIZATION, Key.LETTERBOX}  # also everyday words in other contexts
    return ({k.value for k in Key} - {k.value for k in common}) | {PROBABILITIES, PROBABILITY_MAP,
                                                                    LabelSet.IMAGENET_1K.value}


#: A line that spells a contract word for another meaning (the user's word "probabilities" in
#: ``export onnx --outputs``, timm's own ``input_size`` key) says so at its end.
_HOMONYM = "# not the contract's name"


def test_no_contract_string_is_spelled_outside_the_contract_module():
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, sorted(_distinctive()))))
    found = []
    for folder in ("slidewin", "export"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == CONTRACT:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.rstrip().endswith(_HOMONYM):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_meta_round_trips_through_props():
    meta = ModelMeta(ModelKind.CLASSIFIER, (224, 224), ("a", "b"), LabelSet.CUSTOM, Weights.RANDOM, "t", "t",
                     precision=Precision.INT8, feature_stride=32, extra={Key.RPN_PROPOSALS: "7", "mine": "x"})
    back = ModelMeta.from_props(meta.to_props())
    assert back == ModelMeta(ModelKind.CLASSIFIER, (224, 224), ("a", "b"), "custom", "random", "t", "t",
                             precision="int8", feature_stride=32, extra={"rpn_proposals": "7", "mine": "x"})
    assert back.is_random and back.get(Key.RPN_PROPOSALS) == "7"
    assert meta.to_props()[Key.RPN_PROPOSALS.value] == "7"


@pytest.mark.parametrize("drop, needle", [(Key.KIND, "lacks kind"), (Key.LABELS, "lacks labels")])
def test_missing_keys_are_named(drop, needle):
    props = ModelMeta(ModelKind.CLASSIFIER, (8, 8), ("a",), "custom", "random", "t", "t").to_props()
    del props[drop.value]
    with pytest.raises(ModelError, match=needle):
        ModelMeta.from_props(props)


def test_the_old_location_still_imports_for_users_code():
    from slidewin.core import contract
    from slidewin.runtime import model_meta

    assert all(getattr(model_meta, name) is getattr(contract, name) for name in contract.__all__)

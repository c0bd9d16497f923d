"""Property and fuzz tests: whatever bytes a file holds, loading it ends in an image or one ImageError,
and a folder run records every file; every malformed model is one line naming the problem."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from slidewin.apps.folder.run import SOME_FAILED_EXIT
from slidewin.cli import main
from slidewin.errors import ImageError
from slidewin.io.formats import read_header
from slidewin.io.images import DEFAULT_MAX_PIXELS, decode_image, load_image


def encoded(ext: str, shape=(24, 32, 3), dtype=np.uint8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    img = cv2.GaussianBlur(rng.integers(0, hi, shape).astype(dtype), (0, 0), 2)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


VALID = {ext: encoded(ext) for ext in (".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm")}
VALID[".png16"] = encoded(".png", dtype=np.uint16)
VALID[".gray.png"] = encoded(".png", shape=(24, 32))
MAGIC = [b"", b"\xff\xd8", b"\xff\xd8\xff\xc0\x00\x11\x08", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
         b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"II*\x00", b"MM\x00*",
         b"GIF89a", b"P6\n", b"P5 3 3 255\n"]


def check_decode(data: bytes, convert: bool) -> None:
    try:
        img = decode_image(data, "fuzz.bin", convert=convert)
    except ImageError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith("fuzz.bin: ") and len(msg) < 400, msg
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.flags.c_contiguous


# --- bytes -> image or ImageError ------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=600), convert=st.booleans())
@example(prefix=b"\xff\xd8", body=b"\xff\xd9", convert=False)
@example(prefix=b"\x89PNG\r\n\x1a\n", body=b"", convert=True)
def test_random_bytes_are_an_image_or_one_image_error(prefix, body, convert):
    check_decode(prefix + body, convert)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(VALID)), cut=st.floats(0, 1), convert=st.booleans())
def test_truncated_images_are_an_image_or_one_image_error(kind, cut, convert):
    data = VALID[kind]
    check_decode(data[: int(len(data) * cut)], convert)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(VALID)), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                             min_size=1, max_size=8))
def test_corrupted_images_are_an_image_or_one_image_error(kind, flips):
    data = bytearray(VALID[kind])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    check_decode(bytes(data), True)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_encodings_load(kind):
    img = decode_image(VALID[kind], kind, convert=True)
    assert img.shape == (24, 32, 3)
    header = read_header(VALID[kind])
    assert (header.width, header.height) == (32, 24)


# --- decompression bombs: refused from the header, before decoding ---------------------------

def _bomb(kind: str) -> bytes:
    big = 60000
    if kind == "png":
        d = VALID[".png"]
        return d[:16] + struct.pack(">II", big, big) + d[24:]
    if kind == "jpeg":
        d = bytearray(VALID[".jpg"])
        i = d.index(b"\xff\xc0")
        d[i + 5:i + 9] = struct.pack(">HH", big, big)
        return bytes(d)
    if kind == "bmp":
        d = VALID[".bmp"]
        return d[:18] + struct.pack("<ii", big, big) + d[26:]
    if kind == "gif":
        return b"GIF89a" + struct.pack("<HH", big, big) + b"\x00" * 40
    if kind == "webp":
        return b"RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00" + b"\x00" * 4 + (big - 1).to_bytes(3, "little") * 2
    if kind == "tiff":
        d = bytearray(VALID[".tiff"])
        e = "<" if d[:2] == b"II" else ">"
        off = struct.unpack(e + "I", d[4:8])[0]
        for k in range(struct.unpack(e + "H", d[off:off + 2])[0]):
            p = off + 2 + 12 * k
            tag, typ = struct.unpack(e + "HH", d[p:p + 4])
            if tag in (256, 257):
                d[p + 8:p + 12] = struct.pack(e + "HH", 65535, 0) if typ == 3 else struct.pack(e + "I", big)
        return bytes(d)
    if kind == "pnm":
        return f"P6\n# a comment\n{big} {big}\n255\n".encode() + b"\x00" * 64
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["png", "jpeg", "bmp", "gif", "webp", "tiff", "pnm"])
def test_enormous_declared_dimensions_are_refused_before_decoding(kind):
    assert read_header(_bomb(kind)).pixels > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageError, match=r"image too large: \d+x\d+ = [\d,]+ pixels exceeds --max-pixels"):
        decode_image(_bomb(kind), f"bomb.{kind}")


# --- odd but valid images --------------------------------------------------------------------

def test_wrong_extension_is_judged_by_content(tmp_path):
    png_named_jpg = tmp_path / "photo.jpg"
    png_named_jpg.write_bytes(VALID[".png"])
    assert load_image(png_named_jpg).shape == (24, 32, 3)
    text_named_png = tmp_path / "readme.png"
    text_named_png.write_text("# README\nnot an image\n")
    with pytest.raises(ImageError, match="readme.png: not an image"):
        load_image(text_named_png)


def test_one_by_one_image_loads_and_runs(tmp_path, capsys, tiny_model):
    p = tmp_path / "dot.png"
    cv2.imwrite(str(p), np.full((1, 1, 3), 200, np.uint8))
    assert load_image(p).shape == (1, 1, 3)
    model = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    assert main(["detect", str(p), "--model", str(model), "--json", str(tmp_path / "d.json")]) == 0
    record = json.loads((tmp_path / "d.json").read_text())
    assert (record["width"], record["height"]) == (1, 1)
    for d in record["detections"]:
        assert d["xyxy"] == [0.0, 0.0, 1.0, 1.0]
    capsys.readouterr()


@pytest.mark.parametrize("case, shape, refusal", [
    ("gray", (20, 30), "grayscale"),
    ("gray16", (20, 30), "16-bit and grayscale"),
    ("rgb16", (20, 30, 3), "16-bit"),
    ("rgba", (20, 30, 4), "alpha"),
    ("rgba16", (20, 30, 4), "16-bit and has an alpha channel"),
])
@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_gray_alpha_and_16_bit_are_refused_or_converted(tmp_path, case, shape, refusal, ext):
    dtype = np.uint16 if "16" in case else np.uint8
    p = tmp_path / f"{case}{ext}"
    assert cv2.imwrite(str(p), np.full(shape, 1000 if dtype == np.uint16 else 100, dtype))
    with pytest.raises(ImageError, match=refusal):
        load_image(p)
    img = load_image(p, convert=True)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8


def test_palette_and_gray_alpha_pngs(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for mode in ("P", "LA"):
        buf = io.BytesIO()
        Image.new(mode, (9, 7)).save(buf, "PNG")
        assert decode_image(buf.getvalue(), f"{mode}.png", convert=True).shape == (7, 9, 3)


def test_cmyk_jpeg_loads_as_rgb():
    Image = pytest.importorskip("PIL.Image", reason="PIL builds the CMYK JPEG (OpenCV cannot write one)")
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # pure red in CMYK
    img = decode_image(buf.getvalue(), "cmyk.jpg")
    assert img.shape == (30, 40, 3)
    r, g, b = img.reshape(-1, 3).mean(0)
    assert r > 200 and g < 40 and b < 40, (r, g, b)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_like_pil(orientation):
    Image = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)      # a red block top-left and a green one bottom-right
    rgb[20:, 35:] = (0, 255, 0)
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=98, exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    got = decode_image(buf.getvalue(), f"o{orientation}.jpg")
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 4


# --- models ----------------------------------------------------------------------------------

def _with_props(path: Path, tiny_model, shape=("N", 32, 32, 3), **props) -> Path:
    tiny_model(path, list(shape))
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key in props:
            p.value = props.pop(p.key)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


MODEL_CASES = [
    pytest.param("labels-not-json", lambda p, tm: _with_props(p, tm, labels='["a", "b"'), "malformed metadata", id="labels-not-json"),
    pytest.param("labels-not-a-list", lambda p, tm: _with_props(p, tm, labels='{"a": 1}'), "malformed metadata", id="labels-not-a-list"),
    pytest.param("input-size-garbage", lambda p, tm: _with_props(p, tm, input_size="big"), "malformed metadata", id="input-size-garbage"),
    pytest.param("feature-stride-garbage", lambda p, tm: _with_props(p, tm, feature_stride="x"), "malformed metadata", id="feature-stride-garbage"),
    pytest.param("unknown-kind", lambda p, tm: _with_props(p, tm, kind="segmenter"), "unknown model kind 'segmenter'", id="unknown-kind"),
    pytest.param("label-count", lambda p, tm: _with_props(p, tm, labels='["a", "b", "c"]'), "outputs 4 classes but its metadata lists 3", id="label-count"),
    pytest.param("wrong-kind-graph", lambda p, tm: _with_props(p, tm, kind="region-proposal"), "lack boxes", id="wrong-kind-graph"),
    pytest.param("size-mismatch", lambda p, tm: _with_props(p, tm, input_size="64x64"), "input is 32x32 but metadata says 64x64", id="size-mismatch"),
    pytest.param("float64-input", lambda p, tiny_model: tiny_model(p, ["N", 32, 32, 3], elem=TensorProto.DOUBLE), "expected uint8 or float", id="float64-input"),
    pytest.param("truncated-onnx", lambda p, tiny_model: p.write_bytes(tiny_model(p, ["N", 32, 32, 3]).read_bytes()[:300]), "cannot load model", id="truncated-onnx"),
    pytest.param("empty-file", lambda p, _: p.write_bytes(b""), "empty model file", id="empty-file"),
    pytest.param("a-directory", lambda p, _: p.mkdir(), "is a directory", id="a-directory"),
    pytest.param("zero-input-size", lambda p, tm: _with_props(p, tm, shape=("N", "H", "W", 3), input_size="0x0"),
                 "input_size", id="zero-input-size"),
]


@pytest.mark.parametrize("case, make, needle", MODEL_CASES)
def test_malformed_models_are_one_line(tmp_path, capsys, case, make, needle, tiny_model):
    """Each as one image and as a folder run: one line naming the file, exit code 4 (model error)."""
    p = tmp_path / f"{case}.onnx"
    make(p, tiny_model)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.full((40, 40, 3), 50, np.uint8))
    for argv in (["detect", str(img)], ["detect", str(img.parent), "--out-dir", str(tmp_path / "out")]):
        code = main([*argv, "--model", str(p)])
        err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
        assert code == 4 and len(err) == 1 and str(p) in err[0] and needle in err[0], (code, err)


# --- a folder of anything --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
    return tiny_model(tmp_path_factory.mktemp("fuzz-model") / "tiny.onnx", ["N", 32, 32, 3])


payloads = st.one_of(
    st.sampled_from(sorted(VALID)).map(lambda k: VALID[k]),
    st.tuples(st.sampled_from(sorted(VALID)), st.floats(0, 1)).map(lambda t: VALID[t[0]][: int(len(VALID[t[0]]) * t[1])]),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=200)).map(lambda t: t[0] + t[1]),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.sampled_from([".jpg", ".PNG", ".bmp", ".webp", ".tif"]), payloads),
                      min_size=1, max_size=6))
def test_folder_run_records_every_file_whatever_it_holds(tiny, tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("fuzz-in")
    expect_error = {}
    for i, (ext, data) in enumerate(files):
        p = folder / f"sub{i % 2}" / f"f{i}{ext}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        try:
            decode_image(data, p)
            expect_error[p.name] = False
        except ImageError:
            expect_error[p.name] = True
    out = tmp_path_factory.mktemp("fuzz-out")
    code = main(["detect", str(folder), "--model", str(tiny), "--out-dir", str(out), "--window", "48"])
    lines = (out / "results.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert sorted(Path(r["image"]).name for r in recs) == sorted(expect_error)
    assert {Path(r["image"]).name: "error" in r for r in recs} == expect_error
    assert code == (SOME_FAILED_EXIT if any(expect_error.values()) else 0)

"""Hostile input (issue 12): special files, bombs, corrupt and odd images, all generated here.

Bombs are a few hundred bytes. Every command-line case runs ``slidewin detect`` in a subprocess
under an address-space limit (RLIMIT_AS) and a timeout, so a regression fails instead of eating
the machine or hanging CI, and asserts the exit code, exactly one line on stderr naming the file
and the problem, and no traceback.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.errors import ImageError
from slidewin.io.formats import GENERIC_PIXELS_PER_BYTE, ImageFormat, read_header, sniff
from slidewin.io.images import decode_image, load_image

#: Address space for a subprocess: ORT, numba and OpenCV map ~1.5 GB at start; decoding any of
#: the bombs here would need far more.
MEMORY_LIMIT = 3 << 30
TIMEOUT = 120


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
    return tiny_model(tmp_path_factory.mktemp("hostile-model") / "tiny.onnx", ["N", 32, 32, 3])


def run_limited(*argv, cwd=None) -> subprocess.CompletedProcess:
    """``python -m slidewin.cli ARGV`` under MEMORY_LIMIT and TIMEOUT."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "slidewin.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=TIMEOUT, preexec_fn=limit, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess, code: int, *needles) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("note:")]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def jpeg(hw=(64, 80), seed=0, quality=90) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (*hw, 3), dtype=np.uint8), (0, 0), 2)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def with_jpeg_size(data: bytes, w: int, h: int) -> bytes:
    d = bytearray(data)
    i = d.index(b"\xff\xc0")
    d[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(d)


# --- special files: refused by stat, never opened or read ----------------------------------

def test_dev_zero_is_refused_unread(tiny):
    proc = run_limited("detect", "/dev/zero", "--model", tiny)
    one_error_line(proc, 3, "/dev/zero", "character device")


def test_fifo_is_refused_without_blocking(tmp_path, tiny):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    proc = run_limited("detect", fifo, "--model", tiny)
    one_error_line(proc, 3, fifo, "FIFO")
    with pytest.raises(ImageError, match="FIFO"):
        load_image(fifo)


def test_sparse_file_with_refused_header_is_not_read(tmp_path, tiny):
    """2 GB on disk (sparse), a PNG header claiming 100000 x 100000: refused from the first bytes."""
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    path = tmp_path / "big.png"
    with open(path, "wb") as f:
        f.write(png[:16] + struct.pack(">II", 100000, 100000) + png[24:])
        f.truncate(2 << 30)
    proc = run_limited("detect", path, "--model", tiny)
    one_error_line(proc, 3, path, "too large: 100000x100000")


def test_file_far_bigger_than_its_image_is_refused_unread(tmp_path):
    path = tmp_path / "small-image-big-file.jpg"
    with open(path, "wb") as f:
        f.write(jpeg((16, 16)))
        f.truncate(200 << 20)
    with pytest.raises(ImageError, match="far more than a 16x16 JPEG image needs"):
        load_image(path)


# --- bombs: every readable format's size is checked before decoding ------------------------

def _jp2_blank() -> bytes:
    ok, buf = cv2.imencode(".jp2", np.zeros((2000, 2000, 3), np.uint8))
    assert ok
    return buf.tobytes()


BOMBS = {
    # format named by a wrong suffix: judged by content
    "jp2-named-jpg": ("blank.jpg", lambda: _jp2_blank(), "too large: 2000x2000"),
    "pam": ("big.pam", lambda: b"P7\nWIDTH 20000\nHEIGHT 20000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"
            + b"\x00" * 64, "too large: 20000x20000"),
    "pnm-long-comment": ("big.ppm", lambda: b"P6\n#" + b"x" * 5000 + b"\n15000 15000\n255\n" + b"\x00" * 64,
                         "too large: 15000x15000"),
    # libjpeg skips the two stray bytes with a warning and decodes 15000 x 15000
    "jpeg-garbage-before-sof": ("garbage.jpg", lambda: (lambda d, i: d[:i] + b"\x00\x00" + d[i:])(
        *(lambda d: (d, d.index(b"\xff\xc0")))(with_jpeg_size(jpeg((16, 16)), 15000, 15000))),
        "corrupt JPEG header"),
    "gif-frame-past-screen": ("frame.gif", lambda: b"GIF89a" + struct.pack("<HH", 10, 10) + b"\x00\x00\x00"
                              + b"\x2c" + struct.pack("<HHHH", 0, 0, 30000, 30000) + b"\x00" * 40,
                              "too large: 30000x30000"),
    "avif-ispe": ("big.avif", lambda: _avif(40000, 30000), "too large: 40000x30000"),
}


def _avif(w: int, h: int) -> bytes:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    ispe = box(b"ispe", b"\x00" * 4 + struct.pack(">II", w, h))
    meta = box(b"meta", b"\x00" * 4 + box(b"iprp", box(b"ipco", ispe)))
    return box(b"ftyp", b"avif\x00\x00\x00\x00avifmif1") + meta + b"\x00" * 64


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_bombs_are_refused_from_the_header(tmp_path, tiny, case):
    name, make, needle = BOMBS[case]
    path = tmp_path / name
    path.write_bytes(make())
    proc = run_limited("detect", path, "--model", tiny, "--max-pixels", "1,000,000")
    one_error_line(proc, 3, path, needle)


def test_header_claiming_more_pixels_than_the_file_can_hold_is_refused(tmp_path, tiny):
    """A 641-byte-class JPEG whose frame header says 12000 x 12000 (under --max-pixels)."""
    data = with_jpeg_size(jpeg((16, 16), quality=50), 12000, 12000)
    assert len(data) < 1000
    path = tmp_path / "claims.jpg"
    path.write_bytes(data)
    proc = run_limited("detect", path, "--model", tiny)
    one_error_line(proc, 3, path, "header claims 12000x12000", "corrupt or a decompression bomb")


def test_jpeg2000_size_comes_from_its_codestream_and_bounds_apply():
    blank = _jp2_blank()
    header = read_header(blank)
    assert header.format is ImageFormat.JPEG2000 and (header.width, header.height) == (2000, 2000)
    assert header.max_pixels_per_byte == GENERIC_PIXELS_PER_BYTE
    codestream = blank[blank.index(b"\xff\x4f\xff\x51"):]
    assert (read_header(codestream).width, read_header(codestream).height) == (2000, 2000)


@pytest.mark.parametrize("data, fmt", [
    (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10 +X 10\n", "Radiance HDR"),
    (b"PF\n10 10\n-1\n" + b"\x00" * 1200, "PFM"),
    (b"\x59\xa6\x6a\x95" + b"\x00" * 60, "Sun raster"),
])
def test_formats_slidewin_cannot_check_are_refused(data, fmt):
    with pytest.raises(ImageError, match=f"unsupported image format \\({fmt}\\)"):
        decode_image(data, "x.jpg")


# --- corrupt JPEGs are errors; trailers after the end marker are fine ------------------------

def test_half_a_photo_with_an_end_marker_is_corrupt(tmp_path, tiny):
    data = jpeg((240, 320))
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    proc = run_limited("detect", path, "--model", tiny, "--window", "64")
    one_error_line(proc, 3, path, "corrupt JPEG image", "premature end of data segment")


def test_folder_run_records_corrupt_jpegs_as_failures(tmp_path, tiny):
    data = jpeg((240, 320))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "half.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    (tmp_path / "in" / "good.jpg").write_bytes(data)
    proc = run_limited("detect", tmp_path / "in", "--model", tiny, "--out-dir", tmp_path / "out", "--window", "64")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    records = {Path(r["image"]).name: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").open())}
    assert "premature end" in records["half.jpg"]["error"] and "error" not in records["good.jpg"]
    assert "Corrupt JPEG" not in proc.stderr.replace(records["half.jpg"]["error"], "")  # no unlabelled noise


def test_jpeg_with_a_trailer_after_the_end_marker_loads(tmp_path):
    data = jpeg((48, 64))
    path = tmp_path / "phone.jpg"
    path.write_bytes(data + b"\x00\x00PHONE-TRAILER" * 100)
    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(load_image(path), want)


def test_cut_jpeg_is_still_truncated(tmp_path):
    data = jpeg((48, 64))
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[:-40], "cut.jpg")


# --- decoder noise: attached to its file ------------------------------------------------------

def _png_with_bad_ancillary_crc() -> bytes:
    png = cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))[1].tobytes()
    chunk = b"tEXt" + b"Comment\x00hello"
    return png[:33] + struct.pack(">I", len(chunk) - 4) + chunk + b"\x00\x00\x00\x00" + png[33:]


def test_harmless_decoder_warnings_become_notes_naming_the_file(tmp_path, capfd):
    notes = []
    img = decode_image(_png_with_bad_ancillary_crc(), "odd.png", notes=notes)
    assert img.shape == (20, 30, 3)
    assert notes and "CRC" in notes[0]
    assert capfd.readouterr().err == ""  # nothing unlabelled reached the terminal


def test_corrupt_png_data_names_the_decoder_message(capfd):
    png = bytearray(cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1])
    i = png.index(b"IDAT")
    length = struct.unpack(">I", png[i - 4:i])[0]
    png[i + 4 + 20] ^= 0xFF
    png[i + 4 + length:i + 8 + length] = struct.pack(">I", zlib.crc32(bytes(png[i:i + 4 + length])))
    with pytest.raises(ImageError, match="corrupt PNG image"):
        decode_image(bytes(png), "bad.png")
    assert capfd.readouterr().err == ""


# --- EXIF orientation, for every format that carries it ---------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_for_every_format(fmt, orientation):
    Image = pytest.importorskip("PIL.Image")
    from PIL import ImageOps

    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)
    rgb[20:, 35:] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    options = {"tiffinfo": {0x0112: orientation}} if fmt == "TIFF" else {"exif": exif.tobytes()}
    Image.fromarray(rgb).save(buf, fmt, **options, **({"lossless": True} if fmt == "WEBP" else {}))
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    got = decode_image(buf.getvalue(), f"o{orientation}.{fmt.lower()}")
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 4


# --- formats: sniffed from content, each readable one decodes ---------------------------------

@pytest.mark.parametrize("ext", [".jp2", ".pam", ".gif", ".avif"])
def test_more_formats_load_with_their_size_checked(tmp_path, ext):
    img = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8), (0, 0), 2)
    if ext == ".gif":
        Image = pytest.importorskip("PIL.Image")
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "GIF")
        data = buf.getvalue()
    else:
        if not cv2.haveImageWriter(ext):
            pytest.skip(f"this OpenCV cannot write {ext}")
        data = cv2.imencode(ext, img)[1].tobytes()
    header = read_header(data)
    assert (header.width, header.height) == (64, 48) and sniff(data) is header.format
    path = tmp_path / f"x{ext}"
    path.write_bytes(data)
    assert load_image(path).shape == (48, 64, 3)

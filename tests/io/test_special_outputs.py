"""Outputs that are not regular files: written through (devices, FIFOs), never replaced; anything
else that is not a regular file is refused in one line. Device nodes are made with mknod in a
temporary folder, never the real /dev."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.cli import main


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.jpg"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), np.uint8), (0, 0), 3))
    return path


@pytest.fixture
def tiny(tmp_path, tiny_model) -> Path:
    return tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])


def _node(path: Path, kind: int, major: int, minor: int) -> Path:
    try:
        os.mknod(path, kind | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("mknod needs root (CI runs as root)")
    return path


def test_json_through_a_fifo_is_written_through(tiny, image, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["detect", str(image), "--model", str(tiny), "--json", str(fifo)]) == 0
    reader.join(30)
    assert json.loads(got[0])["width"] == 160
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not list(tmp_path.glob(".fifo.*")), "a temporary file was left beside the FIFO"


def test_json_to_a_character_device_keeps_the_device(tiny, image, tmp_path, capsys):
    null = _node(tmp_path / "null", stat.S_IFCHR, 1, 3)
    os.chmod(tmp_path, 0o555)  # a non-writable folder, as /dev is for a user: the check makes no test file there
    try:
        assert main(["detect", str(image), "--model", str(tiny), "--json", str(null)]) == 0
    finally:
        os.chmod(tmp_path, 0o755)
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert "detection" in capsys.readouterr().err  # the report goes to stderr, as for --json -


def test_a_link_to_a_device_stays_a_link(tiny, image, tmp_path, capsys):
    null = _node(tmp_path / "null", stat.S_IFCHR, 1, 3)
    link = tmp_path / "stdout"
    link.symlink_to(null)
    assert main(["compare", str(image), "--model", str(tiny), "--proposals", "windows", "--classes", "all",
                 "--json", str(link)]) == 0
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)


def test_other_special_files_are_refused_in_one_line(tiny, image, tmp_path, capsys):
    block = _node(tmp_path / "blk", stat.S_IFBLK, 7, 0)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for target, kind in ((block, "a block device"), (sock_path, "a socket")):
            code = main(["detect", str(image), "--model", str(tiny), "--json", str(target)])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and kind in err[0] and str(target) in err[0], err
    finally:
        sock.close()
    assert stat.S_ISBLK(os.lstat(block).st_mode)

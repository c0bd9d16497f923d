"""An exception as one line: `one_line` for what slidewin prints, `first_line` for a library's
error quoted inside slidewin's own (slidewin.errors)."""

from slidewin.errors import ModelError, first_line, one_line


class _Loud(Exception):
    """A library error with pages of detail after its first line (ONNX Runtime, onnx, pyarrow)."""


def test_a_library_error_is_quoted_by_its_first_line():
    e = _Loud("\n  [ONNXRuntimeError] : 10 : INVALID_GRAPH : bad node\nStacktrace:\n  frame 1\n")
    assert first_line(e) == "[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad node"
    assert first_line(_Loud("x" * 500)) == "x" * 200 and first_line(_Loud("x" * 500), limit=None) == "x" * 500
    assert first_line(_Loud("")) == "_Loud" and first_line(_Loud("  \n"), default="invalid") == "invalid"


def test_one_line_keeps_the_first_line_whatever_the_error():
    assert one_line(ModelError("bad metadata\nmore", "m.onnx")) == "m.onnx: bad metadata"
    assert one_line(ModelError("bad metadata", "m.onnx"), with_path=False) == "bad metadata"
    assert one_line(_Loud("boom\nstack")) == "internal error: _Loud: boom"
    assert one_line(_Loud()) == "internal error: _Loud"

"""slidewin.core is the bottom layer: results, geometry and the model contract, with no runtime.

Each check runs in a fresh interpreter: this test process has long since imported everything.
"""

import subprocess
import sys

import pytest

#: What a module of slidewin.core must never load: the runtime (ONNX Runtime), image I/O
#: (OpenCV), graph surgery (onnx), the CLI's optional export package and training frameworks.
HEAVY = ("onnxruntime", "cv2", "onnx", "slidewin_export", "tensorflow", "torch", "ray")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_slidewin_core_loads_no_onnxruntime_and_no_cv2():
    assert _loaded_after("import slidewin.core") == []


@pytest.mark.parametrize("module", ["boxes", "contract", "detections", "detector", "geometry", "merge", "nms",
                                    "preprocessing", "targets"])
def test_each_core_module_loads_nothing_heavy(module):
    assert _loaded_after(f"import slidewin.core.{module}") == []


def test_the_detector_config_loads_no_runtime_for_its_defaults():
    # DEFAULT_MAX_TILE lives with the config; runtime.dense reads it from there, not the reverse
    assert "onnxruntime" not in _loaded_after("import slidewin.pipeline.config")
    assert "onnxruntime" in _loaded_after("from slidewin.pipeline.config import DEFAULT_MAX_TILE\n"
                                          "from slidewin.runtime.dense import DEFAULT_MAX_TILE as D\n"
                                          "assert D == DEFAULT_MAX_TILE")

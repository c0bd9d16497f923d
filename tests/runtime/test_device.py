"""Execution providers and the IO-binding path (tested on the CPU device; CUDA when present)."""

import numpy as np
import pytest

from slidewin.runtime.classifier import Classifier, DeviceBinding
from slidewin.runtime.sessions import cuda_usable, providers_for


def test_providers_fall_back_to_cpu_quietly(capfd):
    if cuda_usable():
        pytest.skip("a CUDA GPU is present: the fallback is not exercised here")
    assert providers_for("auto") == ["CPUExecutionProvider"]
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    from slidewin.errors import ModelError

    with pytest.raises(ModelError, match="no usable CUDA GPU"):
        providers_for("cuda")
    assert capfd.readouterr().err == ""          # no red CUDA error spam


def test_io_binding_matches_plain_run_and_reuses_buffers(effnet_onnx):
    clf = Classifier(effnet_onnx, device="cpu")
    rng = np.random.default_rng(0)
    binder = DeviceBinding(clf, "cpu")
    for n in (4, 4, 3):
        batch = rng.integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
        np.testing.assert_allclose(binder.run(batch), clf.predict(batch), atol=1e-6)
    assert len(binder._buffers) == 2            # one pair of device buffers per batch shape


@pytest.mark.skipif(not cuda_usable(), reason="no CUDA GPU on this machine (CUDA path runs on GPU hosts only)")
def test_cuda_session_uses_io_binding_and_agrees_with_cpu(effnet_onnx):
    gpu = Classifier(effnet_onnx, device="cuda")
    cpu = Classifier(effnet_onnx, device="cpu")
    assert "CUDAExecutionProvider" in gpu.providers and gpu._binder is not None
    batch = np.random.default_rng(1).integers(0, 255, (8, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(gpu.predict(batch), cpu.predict(batch), atol=1e-3)

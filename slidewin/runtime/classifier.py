"""`Classifier`: a self-describing ONNX image classifier on ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slidewin.errors import ModelError
from slidewin.core.contract import Key, ModelKind, ModelMeta
from slidewin.runtime.sessions import (Device, ModelInfo, SessionSettings, check_finite, check_image_input,
                                       model_info, open_session, read_meta)


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    probability: float


class Classifier:
    """Runs a slidewin classifier: uint8 RGB NHWC batches in, class probabilities out.

    Args:
        path: ONNX file written by ``slidewin export``.
        device: see `Device`: ``auto`` (CUDA when usable, else CPU), ``cpu``, ``cuda``, ``tensorrt``.
        threads: ORT intra-op threads (default: physical cores).
        session: an already open session of ``path``, made with the same device and threads
            (skips opening it again).
        info: the `ModelInfo` of ``path`` when already read (`model_info`).

    The session is opened when first needed: a model file read before and unchanged since
    (`model_info`) gives its metadata without one, and a detector that runs only the dense form
    (`slidewin.runtime.dense`) never needs it.

    Attributes:
        settings: the session settings; the classifier's dense form is opened with them too.
    """

    def __init__(self, path: str | Path, device: Device | str = Device.AUTO, threads: int | None = None,
                 session=None, info: ModelInfo | None = None):
        self.path = Path(path)
        self.settings = SessionSettings(device=device, threads=threads)
        if info is None:
            info, session = (ModelInfo.of(session), session) if session is not None else \
                model_info(self.path, self.settings)
        self._session = session
        self.meta: ModelMeta = info.meta(self.path)
        if self.meta.kind is not ModelKind.CLASSIFIER:
            raise ModelError(f"is a {self.meta.kind.value} model, not a classifier", self.path)
        if self.meta.extra.get(Key.DENSE) == "true":
            raise ModelError("is the dense form slidewin cached for a classifier: give the classifier itself "
                             "(the same name without .dense)", self.path)
        self.input_name, self.input_dtype = check_image_input(info.inputs, self.meta, self.path)
        self.output_name = info.outputs[0].name
        n_out = info.outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.meta.labels):
            raise ModelError(f"model outputs {n_out} classes but its metadata lists {len(self.meta.labels)} labels",
                             self.path)

    @property
    def session(self):
        """The ONNX Runtime session, opened on first use."""
        if self._session is None:
            session = open_session(self.path, self.settings)
            if read_meta(session, self.path) != self.meta:
                raise ModelError("the model file changed while slidewin was using it", self.path)
            self._session = session
        return self._session

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.meta.input_hw

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch.

        Args:
            batch: uint8 (B, H, W, 3) RGB at the model's input size.

        Returns:
            float32 (B, num_labels).
        """
        if batch.dtype != self.input_dtype:
            batch = batch.astype(self.input_dtype)
        if self._binder is not None:
            return check_finite(self._binder.run(batch), self.path)
        return check_finite(self.session.run([self.output_name], {self.input_name: batch})[0], self.path)

    @property
    def _binder(self):
        """IO binding on CUDA: the uint8 batch is uploaded into a reused device buffer (4x fewer
        bytes than float32) and the output lands in a reused device buffer; None on the CPU,
        where plain ``run`` already avoids copies."""
        if "_binder_obj" not in self.__dict__:
            cuda = "CUDAExecutionProvider" in self.providers or "TensorrtExecutionProvider" in self.providers
            self._binder_obj = DeviceBinding(self, "cuda") if cuda else None
        return self._binder_obj

    def classify(self, image, top_k: int = 5, *, bgr: bool | None = None, channels: str | None = None,
                 convert: bool = False) -> list[Prediction]:
        """Top-k labels for a whole image (resized to the input size, as Keras' load_img does).

        Args:
            image: uint8 RGB (H, W, 3), or anything `slidewin.io.images.as_rgb` takes: a path,
                a PIL image, a BGR array with ``bgr=True`` or ``channels="bgr"``.
            top_k: how many labels, best first.
            bgr, channels, convert: see `as_rgb`.
        """
        from slidewin.io.images import as_rgb

        image = as_rgb(image, bgr=bgr, channels=channels, convert=convert)
        h, w = self.input_hw
        x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)[None]
        probs = self.predict(x)[0]
        top = np.argsort(-probs, kind="stable")[:top_k]
        return [Prediction(int(i), self.labels[i], float(probs[i])) for i in top]


class DeviceBinding:
    """ONNX Runtime IO binding with device buffers reused across calls of the same batch size.

    Args:
        classifier: the classifier whose session to bind.
        device: "cuda" (or "cpu", which behaves the same and lets the path be tested anywhere).
    """

    def __init__(self, classifier: Classifier, device: str = "cuda"):
        import onnxruntime as ort

        self._ort = ort
        self.session = classifier.session
        self.input_name = classifier.input_name
        self.output_name = classifier.output_name
        self.num_labels = len(classifier.labels)
        self.device = device
        self.binding = self.session.io_binding()
        self._buffers: dict[tuple, tuple] = {}

    def _buffers_for(self, shape: tuple[int, ...], dtype) -> tuple:
        key = (shape, np.dtype(dtype).str)
        if key not in self._buffers:
            ort = self._ort
            inp = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0)
            out = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], self.num_labels], np.float32, self.device, 0)
            self._buffers[key] = (inp, out)
        return self._buffers[key]

    def run(self, batch: np.ndarray) -> np.ndarray:
        inp, out = self._buffers_for(batch.shape, batch.dtype)
        inp.update_inplace(np.ascontiguousarray(batch))
        self.binding.bind_ortvalue_input(self.input_name, inp)
        self.binding.bind_ortvalue_output(self.output_name, out)
        self.session.run_with_iobinding(self.binding)
        return out.numpy()

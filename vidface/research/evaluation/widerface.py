"""WIDER FACE evaluation, as the official toolbox computes it.

Per image, predictions are matched to ground truth at IoU 0.5 in score
order; a prediction that hits a box outside the subset's keep-list is
neither a true nor a false positive, and such boxes are not counted as
faces to find. Scores are normalised over the whole set, the PR curve is
read at 1,000 thresholds, and AP is the VOC area under its envelope.
Only ``val-eval`` is read here; the easy/medium/hard keep-lists come from
the official ``.mat`` files (1-based indices into each image's boxes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ...structures import box_iou
from ..datasets import WiderImage, data_root, read_wider_gt, require

SUBSETS = ("easy", "medium", "hard")
THRESHOLDS = 1000


def load_keep_lists(names: list[str], mat_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{subset: {image name: 1-based kept box indices}}`` for the given ``<event>/<file>.jpg`` names."""
    from scipy.io import loadmat

    wanted = set(names)
    keep: dict[str, dict[str, np.ndarray]] = {}
    for subset in SUBSETS:
        mat = loadmat(str(require(mat_dir / f"wider_{subset}_val.mat", "WIDER keep-list")))
        lists = {}
        for event_index, event in enumerate(mat["event_list"]):
            event_name = str(event[0][0])
            files = mat["file_list"][event_index][0]
            gts = mat["gt_list"][event_index][0]
            for file_entry, gt_entry in zip(files, gts):
                name = f"{event_name}/{file_entry[0][0]}.jpg"
                if name in wanted:
                    lists[name] = np.asarray(gt_entry[0], dtype=np.int64).reshape(-1)
        keep[subset] = lists
    return keep


def image_eval(predictions: np.ndarray, truth: np.ndarray, kept: np.ndarray, iou_threshold: float = 0.5):
    """One image: ``predictions (P, 5)`` xyxy+score sorted by score desc, ``truth (G, 4)`` xyxy, ``kept (G,)`` bool.

    Returns ``(recalled, proposal)``: faces recalled after each prediction, and
    ``+1`` for a counted prediction, ``-1`` for one that hit an ignored box.
    """
    recalled_after = np.zeros(len(predictions))
    proposal = np.ones(len(predictions))
    state = np.zeros(len(truth))  # 0 unseen, 1 recalled, -1 ignored and hit
    overlaps = box_iou(predictions[:, :4], truth)
    for index in range(len(predictions)):
        best = int(overlaps[index].argmax())
        if overlaps[index, best] >= iou_threshold:
            if not kept[best]:
                state[best] = -1
                proposal[index] = -1
            elif state[best] == 0:
                state[best] = 1
        recalled_after[index] = (state == 1).sum()
    return recalled_after, proposal


def image_pr(scores: np.ndarray, proposal: np.ndarray, recalled_after: np.ndarray) -> np.ndarray:
    """``(THRESHOLDS, 2)``: counted proposals and recalled faces at each score threshold.

    ``scores`` must be sorted in descending order (as :func:`evaluate_predictions` does).
    """
    thresholds = 1 - (np.arange(THRESHOLDS) + 1) / THRESHOLDS
    above = (scores[None, :] >= thresholds[:, None]).sum(axis=1)
    counted = np.cumsum(proposal == 1)
    info = np.zeros((THRESHOLDS, 2))
    has = above > 0
    info[has, 0] = counted[above[has] - 1]
    info[has, 1] = recalled_after[above[has] - 1]
    return info


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    for index in range(len(precision) - 1, 0, -1):
        precision[index - 1] = max(precision[index - 1], precision[index])
    changes = np.where(recall[1:] != recall[:-1])[0]
    return float(((recall[changes + 1] - recall[changes]) * precision[changes + 1]).sum())


@dataclass
class OperatingPoint:
    """What a user sees at one raw score threshold (the detector's calibrated ``det_conf``).

    false_positives_per_image: boxes that overlap no labelled face (IoU < ``min_iou`` with every
        box of the image, invalid and tiny ones included), per image.
    hard_recall: share of the hard keep-list's faces (every counted face) found at IoU 0.5.
    """

    score: float
    false_positives_per_image: float
    hard_recall: float


@dataclass
class WiderReport:
    ap: dict[str, float]
    curves: dict[str, np.ndarray]
    images: int
    operating: OperatingPoint | None = None


def operating_point(predictions: dict[str, np.ndarray], images: list[WiderImage],
                    keep: dict[str, dict[str, np.ndarray]], score: float, min_iou: float = 0.3) -> OperatingPoint:
    """False positives per image and recall of ``{name: (P, 5) xyxy+score}`` predictions at ``score``."""
    false_positives, found, faces = 0, 0, 0
    for image in images:
        predicted = predictions.get(image.name, np.zeros((0, 5)))
        predicted = predicted[predicted[:, 4] >= score]
        kept = keep["hard"].get(image.name, np.zeros(0, np.int64))
        kept = kept[(kept >= 1) & (kept <= len(image.boxes))] - 1
        faces += len(kept)
        if not len(predicted):
            continue
        if not len(image.boxes):
            false_positives += len(predicted)
            continue
        overlaps = box_iou(predicted[:, :4], image.boxes)
        false_positives += int((overlaps.max(axis=1) < min_iou).sum())
        found += int((overlaps[:, kept].max(axis=0, initial=0.0) >= 0.5).sum())
    return OperatingPoint(score, false_positives / max(len(images), 1), found / max(faces, 1))


def evaluate_predictions(predictions: dict[str, np.ndarray], images: list[WiderImage],
                         keep: dict[str, dict[str, np.ndarray]], operating_score: float | None = None) -> WiderReport:
    """AP per subset from ``{name: (P, 5) xyxy+score}`` predictions (and the :class:`OperatingPoint`
    at ``operating_score``, raw scores, when given)."""
    all_scores = np.concatenate([p[:, 4] for p in predictions.values() if len(p)] or [np.zeros(0)])
    low, high = (all_scores.min(), all_scores.max()) if len(all_scores) else (0.0, 1.0)
    span = max(high - low, 1e-12)
    aps, curves = {}, {}
    for subset in SUBSETS:
        totals = np.zeros((THRESHOLDS, 2))
        faces = 0
        for image in images:
            kept_indices = keep[subset].get(image.name, np.zeros(0, np.int64))
            faces += len(kept_indices)
            predicted = predictions.get(image.name, np.zeros((0, 5)))
            if len(image.boxes) == 0 or len(predicted) == 0:
                continue
            predicted = predicted[np.argsort(-predicted[:, 4], kind="stable")].astype(np.float64)
            predicted[:, 4] = (predicted[:, 4] - low) / span
            kept = np.zeros(len(image.boxes), bool)
            kept[kept_indices[(kept_indices >= 1) & (kept_indices <= len(kept))] - 1] = True
            recalled_after, proposal = image_eval(predicted, image.boxes, kept)
            totals += image_pr(predicted[:, 4], proposal, recalled_after)
        precision = np.divide(totals[:, 1], totals[:, 0], out=np.zeros(THRESHOLDS), where=totals[:, 0] > 0)
        recall = totals[:, 1] / max(faces, 1)
        aps[subset] = voc_ap(recall, precision)
        curves[subset] = np.stack([precision, recall], axis=1)
    operating = None if operating_score is None else operating_point(predictions, images, keep, operating_score)
    return WiderReport(aps, curves, len(images), operating)


def val_eval_images(root: Path | None = None) -> list[WiderImage]:
    wider = (root or data_root()) / "widerface" / "val-eval"
    return read_wider_gt(wider / "wider_face_bbx_gt.txt", wider / "images")


def evaluate_detector(detect: Callable[[np.ndarray], np.ndarray], root: Path | None = None,
                      limit: int | None = None, progress=None, operating_score: float | None = None) -> WiderReport:
    """Run ``detect(image) -> (P, 5) xyxy+score`` on val-eval and score it."""
    images = val_eval_images(root)[:limit] if limit else val_eval_images(root)
    keep = load_keep_lists([i.name for i in images], (root or data_root()) / "widerface" / "eval-mat")
    predictions = {}
    for index, image in enumerate(images):
        picture = cv2.imread(str(image.path))
        predictions[image.name] = np.asarray(detect(picture), np.float64).reshape(-1, 5)
        if progress:
            progress(index + 1, len(images))
    return evaluate_predictions(predictions, images, keep, operating_score)


def landmark_nme(ours: Callable, teacher: Callable, root: Path | None = None, limit: int | None = None,
                 min_iou: float = 0.5) -> tuple[float, int]:
    """Mean landmark error of ``ours`` against ``teacher`` on the val-eval faces both find.

    Normalised by the square root of the teacher box area (a common face-size
    normaliser). Returns ``(nme, faces compared)``.
    """
    images = val_eval_images(root)[:limit] if limit else val_eval_images(root)
    errors = []
    for image in images:
        picture = cv2.imread(str(image.path))
        our_boxes, our_points = ours(picture)
        their_boxes, their_points = teacher(picture)
        if len(our_boxes) == 0 or len(their_boxes) == 0:
            continue
        iou = box_iou(their_boxes, our_boxes)
        for index in range(len(their_boxes)):
            best = int(iou[index].argmax())
            if iou[index, best] < min_iou or our_points[best] is None:
                continue
            size = np.sqrt(np.prod(their_boxes[index, 2:] - their_boxes[index, :2]))
            errors.append(np.linalg.norm(our_points[best] - their_points[index], axis=1).mean() / max(size, 1e-6))
    return (float(np.mean(errors)) if errors else float("nan")), len(errors)

"""LFW verification, the standard 10-fold protocol.

Pairs are consecutive images of ``lfw_112x112.bin``; fold k holds pairs
``600k .. 600k+599``. For each fold the threshold that maximises accuracy
on the other nine folds is applied to it. Also reported: the best threshold
on all pairs with its F1, ROC AUC, and TAR at FAR = 1e-2 and 1e-3.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..datasets import data_root, require
from ...errors import DataError


class _NoCodeUnpickler(pickle.Unpickler):
    """Reads plain lists, bytes and bools; refuses any class or function (no code can run)."""

    def find_class(self, module: str, name: str):
        raise DataError(f"LFW file refers to {module}.{name}; only plain data is accepted")


def load_lfw_bin(path: Path | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """``(images, same)``: 12,000 aligned BGR 112x112 crops and 6,000 booleans."""
    path = require(path or data_root() / "lfw" / "lfw_112x112.bin", "LFW verification file")
    with open(path, "rb") as handle:
        blobs, same = _NoCodeUnpickler(handle, encoding="bytes").load()
    images = [cv2.imdecode(np.frombuffer(bytes(b), np.uint8), cv2.IMREAD_COLOR) for b in blobs]
    if any(image is None for image in images) or len(images) != 2 * len(same):
        raise DataError(f"{path} is not an insightface-style verification file")
    return images, np.asarray(same, bool)


@dataclass
class VerificationReport:
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    best_threshold: float
    best_f1: float
    roc_auc: float
    tar_at_far_1e2: float
    tar_at_far_1e3: float

    def as_dict(self) -> dict:
        return asdict(self)


def _accuracy_at(similarity: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((similarity >= threshold) == same).mean())


def _best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    candidates = np.unique(similarity)
    midpoints = np.concatenate([[candidates[0] - 1e-6], (candidates[1:] + candidates[:-1]) / 2, [candidates[-1] + 1e-6]])
    # accuracy for every candidate threshold at once, via sorting
    order = np.argsort(similarity)
    sorted_sim, sorted_same = similarity[order], same[order]
    positives_below = np.concatenate([[0], np.cumsum(sorted_same)])
    negatives_below = np.concatenate([[0], np.cumsum(~sorted_same)])
    cut = np.searchsorted(sorted_sim, midpoints, side="left")
    correct = (negatives_below[cut]) + (same.sum() - positives_below[cut])
    return float(midpoints[int(np.argmax(correct))])


def roc_auc(similarity: np.ndarray, same: np.ndarray) -> float:
    """Probability that a same pair scores above a different pair (ties count half)."""
    ranks = np.empty(len(similarity))
    order = np.argsort(similarity, kind="mergesort")
    ranks[order] = np.arange(1, len(similarity) + 1)
    for value in np.unique(similarity[np.diff(np.sort(similarity), prepend=np.nan) == 0]):
        tied = similarity == value
        ranks[tied] = ranks[tied].mean()
    positives, negatives = same.sum(), (~same).sum()
    return float((ranks[same].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tar_at_far(similarity: np.ndarray, same: np.ndarray, far: float) -> float:
    """True accept rate at the threshold that lets through at most ``far`` of the different pairs."""
    negatives = np.sort(similarity[~same])[::-1]
    allowed = int(np.floor(far * len(negatives)))
    threshold = negatives[allowed] if allowed < len(negatives) else -np.inf
    return float((similarity[same] > threshold).mean())


def verification_report(similarity: np.ndarray, same: np.ndarray, folds: int = 10) -> VerificationReport:
    """Score pair similarities with the k-fold protocol."""
    similarity = np.asarray(similarity, np.float64)
    same = np.asarray(same, bool)
    fold_of = np.arange(len(same)) * folds // len(same)
    accuracies = []
    for fold in range(folds):
        test = fold_of == fold
        threshold = _best_threshold(similarity[~test], same[~test])
        accuracies.append(_accuracy_at(similarity[test], same[test], threshold))
    best = _best_threshold(similarity, same)
    predicted = similarity >= best
    true_positive = float((predicted & same).sum())
    f1 = 2 * true_positive / max(1.0, predicted.sum() + same.sum())
    return VerificationReport(
        accuracy_mean=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
        fold_accuracies=[round(a, 4) for a in accuracies], best_threshold=best, best_f1=f1,
        roc_auc=roc_auc(similarity, same), tar_at_far_1e2=tar_at_far(similarity, same, 1e-2),
        tar_at_far_1e3=tar_at_far(similarity, same, 1e-3),
    )


def evaluate_lfw(embed: Callable[[list[np.ndarray]], np.ndarray], images=None, same=None, flip: bool = False,
                 batch: int = 256) -> VerificationReport:
    """Embed LFW with ``embed`` (aligned BGR crops -> unit vectors) and score it.

    flip: add the embedding of the mirrored crop before comparing.
    """
    if images is None:
        images, same = load_lfw_bin()
    vectors = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        vector = embed(chunk)
        if flip:
            vector = vector + embed([np.ascontiguousarray(image[:, ::-1]) for image in chunk])
        vectors.append(vector)
    embeddings = np.concatenate(vectors)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    similarity = (embeddings[0::2] * embeddings[1::2]).sum(axis=1)
    return verification_report(similarity, same)

"""Can a face-quality score tell the detector's false faces from real ones? (issue 14, item 2)

Measured on the WIDER training images only: every detection of the shipped
detector (video settings, calibrated threshold) is a real face when it is a
human box or a confident teacher face, and false otherwise
(:func:`~vidface.research.train.widerface_data.false_faces`, the rule that mined
the hard negatives). Each candidate cue is judged by the share of false faces it
rejects when its threshold costs a fixed share of the real ones (1 %, 0.5 %):
a filter that removes a hand at the price of one face in a hundred must remove
many hands to be worth it.

Cues: the detector's score; the landmark geometry (how far the five points are
from the ArcFace template after the best similarity fit, in template eye
distances: eyes above nose above mouth corners and their spacing, whatever the
roll); the box's height over width; the embedder's feature norm before
normalisation, raw and centred; and a linear face/non-face head on the unit
embedding, fitted and scored in two folds split by image so no image is scored by
a head that saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...align import ARCFACE_TEMPLATE, align_face, estimate_similarity

#: the template's eye distance (112-px crop) in pixels, the unit of :func:`landmark_residual`
TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0]))
#: shares of real faces a filter may cost, as fractions
TRUE_LOSSES = (0.01, 0.005)
#: each cue is reported for the faces at least this high (px): tiny faces are the detector's business,
#: large false ones what a user sees
MIN_HEIGHTS = (0.0, 32.0)


@dataclass
class QualitySample:
    """One row per detection on the training images.

    false: ``bool (N,)`` the detection is no known face; image: ``int (N,)`` which image;
    height, width: ``float (N,)`` box size in pixels; score: ``float (N,)`` detector score;
    residual: ``float (N,)`` :func:`landmark_residual`, NaN without landmarks;
    raw: ``float32 (N, D)`` the embedder's output before centring and normalisation.
    """

    false: np.ndarray
    image: np.ndarray
    height: np.ndarray
    width: np.ndarray
    score: np.ndarray
    residual: np.ndarray
    raw: np.ndarray


def landmark_residual(landmarks: np.ndarray) -> float:
    """RMS distance of five ``(5, 2)`` landmarks from the ArcFace template after the best similarity fit,
    in template eye distances (0: a face-shaped layout at any position, size and roll)."""
    points = np.asarray(landmarks, np.float64)
    matrix = estimate_similarity(points, ARCFACE_TEMPLATE).astype(np.float64)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((mapped - ARCFACE_TEMPLATE) ** 2).sum(axis=1).mean()) / TEMPLATE_EYE_DISTANCE)


def gather_detections(records, detector, embedder, teacher, read_image) -> QualitySample:
    """Detect (the detector's own video settings), label and embed every face of ``records``.

    records: WIDER training images (``.path``, ``.boxes``); teacher: called on a
    BGR image, its ``.boxes`` count as real faces; read_image: path -> BGR image or None.
    """
    from ..train.widerface_data import false_faces

    columns: dict[str, list] = {name: [] for name in ("false", "image", "height", "width", "score", "residual", "raw")}
    for index, record in enumerate(records):
        image = read_image(record.path)
        if image is None:
            continue
        found = detector([image])[0]
        if not found:
            continue
        faces = np.concatenate([record.boxes.reshape(-1, 4), teacher(image).boxes.reshape(-1, 4)]).astype(np.float32)
        boxes = np.stack([face.box for face in found]).astype(np.float32)
        columns["false"].extend(false_faces(boxes, faces))
        columns["image"].extend([index] * len(found))
        columns["height"].extend(boxes[:, 3] - boxes[:, 1])
        columns["width"].extend(boxes[:, 2] - boxes[:, 0])
        columns["score"].extend(face.score for face in found)
        columns["residual"].extend(np.nan if face.landmarks is None else landmark_residual(face.landmarks)
                                   for face in found)
        columns["raw"].extend(embedder.raw([align_face(image, face.landmarks, face.box) for face in found]))
    raw = np.asarray(columns.pop("raw"), np.float32) if columns["false"] else np.zeros((0, 0), np.float32)
    return QualitySample(false=np.asarray(columns["false"], bool), image=np.asarray(columns["image"], int),
                         height=np.asarray(columns["height"], float), width=np.asarray(columns["width"], float),
                         score=np.asarray(columns["score"], float), residual=np.asarray(columns["residual"], float),
                         raw=raw)


def rejected_share(true_values: np.ndarray, false_values: np.ndarray, true_loss: float) -> float:
    """The share of ``false_values`` beyond the threshold that rejects ``true_loss`` of ``true_values``,
    on whichever side (low or high) rejects more of them; NaNs are never rejected."""
    real = true_values[np.isfinite(true_values)]
    false = false_values[np.isfinite(false_values)]
    if len(real) == 0 or len(false_values) == 0:
        return float("nan")
    low, high = np.quantile(real, true_loss), np.quantile(real, 1.0 - true_loss)
    return float(max((false < low).sum(), (false > high).sum()) / len(false_values))


def out_of_fold_face_head(features: np.ndarray, false: np.ndarray, groups: np.ndarray, folds: int = 2,
                          l2: float = 1e-3) -> np.ndarray:
    """``float (N,)`` "not a face" logits of a class-balanced logistic regression on ``features (N, F)``,
    each row scored by a head fitted on the other folds (folds by ``groups``, here the image)."""
    import torch

    logits = np.zeros(len(features))
    for fold in range(folds):
        held = groups % folds == fold
        x = torch.tensor(features[~held], dtype=torch.float32)
        y = torch.tensor(false[~held], dtype=torch.float32)
        if len(y) == 0 or y.sum() == 0 or y.sum() == len(y):
            continue
        weight = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=300)
        balance = (1 - y.mean()) / y.mean()

        def closure():
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y, pos_weight=balance)
            loss = loss + l2 * (weight ** 2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        with torch.no_grad():
            logits[held] = (torch.tensor(features[held], dtype=torch.float32) @ weight + bias).numpy()
    return logits


def quality_cues(sample: QualitySample, centre: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every candidate cue, one value per detection."""
    from ...embed import unit_embeddings

    centre = None if centre is None else np.asarray(centre, np.float32)
    centred = sample.raw if centre is None else sample.raw - centre
    return {
        "detector score": sample.score,
        "landmark geometry": sample.residual,
        "box height / width": sample.height / np.maximum(sample.width, 1e-6),
        "feature norm": np.linalg.norm(sample.raw, axis=1),
        "centred feature norm": np.linalg.norm(centred, axis=1),
        "linear head on the embedding": out_of_fold_face_head(unit_embeddings(sample.raw, centre), sample.false,
                                                              sample.image),
    }


def quality_report(sample: QualitySample, centre: np.ndarray | None) -> list[dict]:
    """Per cue and minimum height: real and false faces, and the share of false ones rejected at each
    of :data:`TRUE_LOSSES`."""
    rows = []
    for name, values in quality_cues(sample, centre).items():
        for min_height in MIN_HEIGHTS:
            band = sample.height >= min_height
            real, false = values[band & ~sample.false], values[band & sample.false]
            rows.append({"cue": name, "min_height": min_height, "real": int(len(real)), "false": int(len(false)),
                         **{f"rejected_at_{loss:.3f}": rejected_share(real, false, loss) for loss in TRUE_LOSSES}})
    return rows

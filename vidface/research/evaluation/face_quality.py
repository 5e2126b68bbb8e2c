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
normalisation, raw and centred; and linear face/non-face heads, one on the unit
embedding and one on the embedder's mid-level features (the channel means of its
stage-6 output, where the network still sees "is this a face" before it learns
"whose face"), each fitted and scored in two folds split by image so no image is
scored by a head that saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...align import ARCFACE_TEMPLATE, align_face, estimate_similarity
from ...embed import FACE_HEAD_STAGE

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
    raw: ``float32 (N, D)`` the embedder's output before centring and normalisation;
    mid: ``float32 (N, F)`` the embedder's mid-level features (:func:`stage_features`), ``F`` 0 when not taken.
    """

    false: np.ndarray
    image: np.ndarray
    height: np.ndarray
    width: np.ndarray
    score: np.ndarray
    residual: np.ndarray
    raw: np.ndarray
    mid: np.ndarray


def pooled_samples(samples: list[QualitySample]) -> QualitySample:
    """The detections of several :class:`QualitySample` of the same images (for example two detectors' weights)
    as one; ``image`` keeps each image's index, so folds by image still keep an image's detections together."""
    if len(samples) == 1:
        return samples[0]
    fields = ("false", "image", "height", "width", "score", "residual", "raw", "mid")
    nonempty = [sample for sample in samples if len(sample.false)] or samples[:1]
    return QualitySample(**{name: np.concatenate([getattr(sample, name) for sample in nonempty]) for name in fields})


def stage_features(net, config, crops: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """``float32 (N, C)``: the channel means of the embedder network ``net``'s stage
    :data:`~vidface.embed.FACE_HEAD_STAGE` (:meth:`~vidface.embed_net.EmbedderNet.stage_output`, what the
    stored face/non-face head reads) for ``N`` aligned BGR crops."""
    import torch

    from ...embed import crops_to_batch

    outputs = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(crops_to_batch(crops[start : start + batch_size], config))
            outputs.append(net.stage_output(batch).mean(dim=(2, 3)).numpy())
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros((0, 0), np.float32)


def landmark_residual(landmarks: np.ndarray) -> float:
    """RMS distance of five ``(5, 2)`` landmarks from the ArcFace template after the best similarity fit,
    in template eye distances (0: a face-shaped layout at any position, size and roll)."""
    points = np.asarray(landmarks, np.float64)
    matrix = estimate_similarity(points, ARCFACE_TEMPLATE).astype(np.float64)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((mapped - ARCFACE_TEMPLATE) ** 2).sum(axis=1).mean()) / TEMPLATE_EYE_DISTANCE)


def gather_detections(records, detector, embedder, teacher, read_image, mid_features=None) -> QualitySample:
    """Detect (the detector's own video settings), label and embed every face of ``records``.

    records: WIDER training images (``.path``, ``.boxes``); teacher: called on a
    BGR image, its ``.boxes`` count as real faces; read_image: path -> BGR image or None;
    mid_features: aligned crops -> ``(N, F)`` mid-level features (for example :func:`stage_features`), or None.
    """
    from ..train.widerface_data import false_faces

    columns: dict[str, list] = {name: [] for name in
                                ("false", "image", "height", "width", "score", "residual", "raw", "mid")}
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
        crops = [align_face(image, face.landmarks, face.box) for face in found]
        columns["raw"].extend(embedder.raw(crops))
        columns["mid"].extend(mid_features(crops) if mid_features is not None else np.zeros((len(crops), 0)))
    raw = np.asarray(columns.pop("raw"), np.float32) if columns["false"] else np.zeros((0, 0), np.float32)
    mid = np.asarray(columns.pop("mid"), np.float32).reshape(len(raw), -1)
    return QualitySample(false=np.asarray(columns["false"], bool), image=np.asarray(columns["image"], int),
                         height=np.asarray(columns["height"], float), width=np.asarray(columns["width"], float),
                         score=np.asarray(columns["score"], float), residual=np.asarray(columns["residual"], float),
                         raw=raw, mid=mid)


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
                          l2: float = 1e-3, standardise: bool = False) -> np.ndarray:
    """``float (N,)`` "not a face" logits of a class-balanced logistic regression on ``features (N, F)``,
    each row scored by a head fitted on the other folds (folds by ``groups``, here the image);
    ``standardise``: each feature scaled by the fitting folds' mean and spread first."""
    logits = np.zeros(len(features))
    for fold in range(folds):
        held = groups % folds == fold
        labels = false[~held]
        if len(labels) == 0 or labels.sum() == 0 or labels.sum() == len(labels):
            continue
        weight, bias = fit_face_head(features[~held], labels, l2=l2, standardise=standardise)
        logits[held] = features[held] @ weight + bias
    return logits


def fit_face_head(features: np.ndarray, false: np.ndarray, l2: float = 1e-3,
                  standardise: bool = False) -> tuple[np.ndarray, float]:
    """``(weights (F,), bias)`` of a class-balanced logistic regression of ``false`` on ``features (N, F)``,
    applied to the features as they are (a standardisation, if asked for, is folded into them)."""
    import torch

    shift, scale = np.zeros(features.shape[1]), np.ones(features.shape[1])
    if standardise:
        shift, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = torch.tensor((features - shift) / scale, dtype=torch.float32)
    y = torch.tensor(false, dtype=torch.float32)
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
    scaled = weight.detach().numpy().astype(np.float64) / scale
    return scaled, float(bias.detach().numpy()[0] - scaled @ shift)


def calibrated_non_face_head(sample: QualitySample, min_height: float, true_loss: float) -> list[float]:
    """The stage-feature face/non-face head fitted on every detection of ``sample``, its bias moved so that
    ``true_loss`` of the real faces at least ``min_height`` tall score above 0: weights, then the bias
    (:attr:`vidface.embed.EmbedderConfig.non_face_head`)."""
    weight, bias = fit_face_head(sample.mid, sample.false, standardise=True)
    judged = ~sample.false & (sample.height >= min_height)
    if not judged.any():
        raise ValueError(f"no real face of at least {min_height:g} px to calibrate the face/non-face head on")
    logits = sample.mid[judged] @ weight + bias
    return [float(w) for w in weight] + [bias - float(np.quantile(logits, 1.0 - true_loss))]


def quality_cues(sample: QualitySample, centre: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every candidate cue, one value per detection."""
    from ...embed import unit_embeddings

    centre = None if centre is None else np.asarray(centre, np.float32)
    centred = sample.raw if centre is None else sample.raw - centre
    cues = {
        "detector score": sample.score,
        "landmark geometry": sample.residual,
        "box height / width": sample.height / np.maximum(sample.width, 1e-6),
        "feature norm": np.linalg.norm(sample.raw, axis=1),
        "centred feature norm": np.linalg.norm(centred, axis=1),
        "linear head on the embedding": out_of_fold_face_head(unit_embeddings(sample.raw, centre), sample.false,
                                                              sample.image),
    }
    if sample.mid.shape[1]:
        cues[f"linear head on the embedder's stage-{FACE_HEAD_STAGE} features"] = out_of_fold_face_head(
            sample.mid, sample.false, sample.image, standardise=True)
    return cues


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

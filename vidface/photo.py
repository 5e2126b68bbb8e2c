"""Single photos: detect and name faces, or embed one face (``vidface detect`` / ``vidface embed``)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .align import ALIGNED_SIZE, align_face
from .detect import detect_photo
from .draw import draw_faces
from .errors import InputError, OutputError
from .files import write_atomically
from .gallery import largest_face
from .structures import Face


def annotate_photo(image: np.ndarray, models, gallery, threshold: float) -> tuple[list[dict], np.ndarray]:
    """Faces of ``image`` as JSON-ready dicts, and a copy of the image with them drawn. ``equalised``
    in each: found only in the contrast-equalised copy of a dark photo (see :func:`detect_photo`)."""
    detections, equalised = detect_photo(models.detector, image)
    faces = [Face(d) for d in detections]
    crops = [align_face(image, d.landmarks, d.box) for d in detections]
    embeddings = models.embedder(crops)
    matches = gallery.match(embeddings, threshold) if gallery is not None and len(crops) else [None] * len(faces)
    records = []
    for face, match in zip(faces, matches):
        face.match = match
        face.label = match.identity if match else None
        face.label_similarity = match.similarity if match else 0.0
        face.display_id = face.label or "unknown"
        detection = face.detection
        records.append({
            "box": [round(float(v), 1) for v in detection.box],
            "score": round(detection.score, 4),
            "landmarks": None if detection.landmarks is None else [[round(float(v), 1) for v in point] for point in detection.landmarks],
            "identity": face.label,
            "similarity": None if match is None else round(match.similarity, 4),
            "equalised": equalised,
        })
    drawn = draw_faces(image.copy(), faces, landmarks=True)
    return records, drawn


def embed_image(image: np.ndarray, models) -> np.ndarray:
    """Embedding of an aligned 112x112 crop as is, or of the largest face of a photo."""
    if image.shape[:2] == (ALIGNED_SIZE, ALIGNED_SIZE):
        return models.embedder([image])[0]
    return embed_largest_face(image, models)


def embed_largest_face(image: np.ndarray, models) -> np.ndarray:
    """``(D,)`` unit embedding of the largest face of a photo; :class:`InputError` when it has none."""
    face = largest_face(detect_photo(models.detector, image)[0])
    if face is None:
        raise InputError("no face found in the photo")
    return models.embedder([align_face(image, face.landmarks, face.box)])[0]


def embed_person(images: list[np.ndarray], models) -> np.ndarray:
    """``(D,)`` unit mean embedding of the largest face of each of several photos of one person:
    what a track averages over its frames, so the match threshold means the same for it."""
    total = np.sum([embed_largest_face(image, models) for image in images], axis=0)
    return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)


def search_gallery(vector: np.ndarray, models, gallery, top: int = 8) -> list[dict]:
    """The ``top`` gallery people most like a face (``(D,)`` unit embedding): person, best-photo similarity,
    that photo."""
    best, _ = gallery.person_similarity(vector[None])
    usable = [p for p in gallery.photos if p.status == "ok"]
    photo_scores = gallery.embeddings @ vector
    rows = []
    for person in np.argsort(-best[0])[:top]:
        rows_of_person = np.flatnonzero(gallery.owners == person)
        best_row = rows_of_person[np.argmax(photo_scores[rows_of_person])]
        photo_path = _photo_of_row(gallery, usable, int(best_row))
        rows.append({"person": gallery.names[person], "similarity": round(float(best[0, person]), 4),
                     "best_photo": photo_path})
    return rows


def _photo_of_row(gallery, usable, row: int) -> str:
    """The path of the photo behind embedding row ``row`` (rows are grouped by person, photos in folder order)."""
    person = gallery.names[int(gallery.owners[row])]
    index = row - int(np.flatnonzero(gallery.owners == gallery.owners[row])[0])
    photos = [p for p in usable if p.person == person]
    return str(photos[index].path) if index < len(photos) else ""


def write_image_atomic(image: np.ndarray, path: Path) -> Path:
    def write(temporary: str) -> None:
        if not cv2.imwrite(temporary, image):
            raise OutputError(f"cannot write image {path} (unknown extension?)")

    return write_atomically(path, write)


def save_vector(vector: np.ndarray, path: Path) -> Path:
    """Save as ``.npy`` (no pickle) or ``.json``."""
    if path.suffix.lower() == ".json":
        return write_atomically(path, lambda t: Path(t).write_text(json.dumps([float(v) for v in vector])))
    if path.suffix.lower() == ".npy":
        return write_atomically(path, lambda t: np.save(t, np.asarray(vector, np.float32), allow_pickle=False))
    raise OutputError(f"--output must end in .npy or .json: {path}")

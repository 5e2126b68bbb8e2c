"""Plain records that flow between pipeline stages.

Coordinates are always in pixels of the decoded (rotation-corrected) input
frame, x to the right and y downwards; boxes are ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One decoded video frame.

    image: ``uint8`` array of shape ``(H, W, 3)``, BGR, already rotated upright.
    index: 0-based position of the frame in decode order.
    time_s: presentation time in seconds from the start of the stream.
    """

    image: np.ndarray
    index: int
    time_s: float


@dataclass
class Detection:
    """One face found by the detector in one frame.

    box: ``float32 (4,)`` ``[x1, y1, x2, y2]`` in pixels.
    score: detector confidence in ``[0, 1]``.
    landmarks: ``float32 (5, 2)`` pixel positions of left eye, right eye, nose,
        left mouth corner, right mouth corner (left/right as seen in the image),
        or ``None`` when the detector gave none.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass
class Match:
    """The gallery's answer for one embedding.

    identity: best person's name, or ``None`` when below the match threshold.
    similarity: cosine similarity to that best person, in ``[-1, 1]``.
    best_name: best person's name regardless of the threshold (``None`` for an
        empty gallery).
    """

    identity: str | None
    similarity: float
    best_name: str | None = None


@dataclass
class Face:
    """A detection with what the later stages learned about it.

    embedding: ``float32 (D,)`` L2-normalised, or ``None`` on frames where the
        face was carried by the tracker instead of being embedded.
    match: gallery match of this embedding (``None`` when not embedded).
    track_id: integer id assigned by the tracker (``-1`` before tracking).
    label: name shown for this face (track-level decision), ``None`` if unknown.
    display_id: ``label`` or a stable ``unknown-N`` name.
    non_face: the embedder's "not a face" logit for this crop (above 0: not a face), ``None`` when
        not embedded or the embedder has no face/non-face head.
    """

    detection: Detection
    embedding: np.ndarray | None = None
    non_face: float | None = None
    match: Match | None = None
    track_id: int = -1
    label: str | None = None
    display_id: str = ""
    label_similarity: float = 0.0


@dataclass
class FrameResult:
    """Everything known about one frame after tracking.

    detected: ``True`` when the detector ran on this frame, ``False`` when the
        faces were carried over from earlier frames (``--frame-skip``).
    """

    frame: Frame
    faces: list[Face] = field(default_factory=list)
    detected: bool = True


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes, shape ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def greedy_matches(overlap: np.ndarray, least: float) -> list[tuple[int, int]]:
    """One-to-one ``(row, column)`` pairs of an ``(N, M)`` overlap matrix (e.g. :func:`box_iou`), best pair
    first, each row and column used once, none under ``least``."""
    pairs, used_rows, used_columns = [], set(), set()
    for flat in np.argsort(-overlap, axis=None):
        row, column = np.unravel_index(flat, overlap.shape)
        if overlap[row, column] < least:
            break
        if row in used_rows or column in used_columns:
            continue
        used_rows.add(row)
        used_columns.add(column)
        pairs.append((int(row), int(column)))
    return pairs

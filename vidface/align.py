"""Five-point face alignment to the ArcFace 112x112 template.

A similarity transform (rotation, uniform scale, translation) maps the five
detected landmarks onto the template in the least-squares sense (Umeyama,
1991); the face is then warped with it. Faces without landmarks fall back to
a square crop around the box, scaled so that the face fills the crop as the
template would.
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 112

#: Pixel positions in the 112x112 aligned crop of left eye, right eye, nose
#: tip, left mouth corner, right mouth corner (image left/right), as used by
#: insightface's ArcFace models.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

#: Share of the aligned crop's side that a detector box of the face covers;
#: used when a face has no landmarks.
BOX_TO_CROP_RATIO = 0.78


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform taking points ``src`` onto ``dst``.

    src, dst: ``(N, 2)`` point sets, N >= 2.
    Returns the ``(2, 3)`` float32 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N,2) point sets with N>=2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    reflection_fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection_fix[1, 1] = -1.0
    rotation = u @ reflection_fix @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = (singular * np.diag(reflection_fix)).sum() / src_var if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    matrix = np.empty((2, 3), dtype=np.float32)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = translation
    return matrix


def landmark_transform(landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The ``(2, 3)`` matrix mapping image pixels to the aligned crop of side ``size``."""
    template = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)
    return estimate_similarity(landmarks, template)


def box_transform(box: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The ``(2, 3)`` matrix of a square crop centred on ``box`` (no landmarks)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) / BOX_TO_CROP_RATIO
    scale = size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array(
        [[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]],
        dtype=np.float32,
    )


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray | None,
    box: np.ndarray | None = None,
    size: int = ALIGNED_SIZE,
) -> np.ndarray:
    """Warp one face of ``image`` (``(H, W, 3)`` uint8) to a ``(size, size, 3)`` crop.

    Uses the five ``landmarks`` (``(5, 2)`` pixels) when given and plausible,
    else a square crop around ``box``.
    """
    if landmarks is not None and _landmarks_usable(landmarks):
        matrix = landmark_transform(landmarks, size)
    elif box is not None:
        matrix = box_transform(box, size)
    else:
        raise ValueError("align_face needs landmarks or a box")
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def _landmarks_usable(landmarks: np.ndarray) -> bool:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return False
    eye_distance = np.linalg.norm(points[1] - points[0])
    return eye_distance > 1.0

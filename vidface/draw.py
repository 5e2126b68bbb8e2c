"""Drawing faces on frames with OpenCV (no fonts to download)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from .structures import Face

UNKNOWN_COLOUR = (60, 60, 220)  # BGR red
LANDMARK_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def identity_colour(name: str | None) -> tuple[int, int, int]:
    """A stable, bright BGR colour per name; unknown faces are red."""
    if not name:
        return UNKNOWN_COLOUR
    digest = hashlib.md5(name.encode()).digest()
    hue = digest[0] * 180 // 256
    hsv = np.uint8([[[hue, 200, 235]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_faces(image: np.ndarray, faces: list[Face], landmarks: bool = False) -> np.ndarray:
    """Draw box, name and match similarity of each face onto ``image`` (in place) and return it."""
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 360))
    font_scale = max(0.4, min(height, width) / 1000)
    for face in faces:
        colour = identity_colour(face.label)
        x1, y1, x2, y2 = (int(round(v)) for v in face.detection.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = face.display_id or "face"
        if face.label is not None:
            text = f"{text} {face.label_similarity:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
        top = y1 - text_h - baseline - 4
        if top < 0:
            top = min(y2 + 2, height - text_h - baseline - 4)
        cv2.rectangle(image, (x1, top), (x1 + text_w + 4, top + text_h + baseline + 4), colour, -1)
        cv2.putText(image, text, (x1 + 2, top + text_h + 2), FONT, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
        if landmarks and face.detection.landmarks is not None:
            for point, point_colour in zip(face.detection.landmarks, LANDMARK_COLOURS):
                cv2.circle(image, (int(point[0]), int(point[1])), thickness + 1, point_colour, -1)
    return image


def draw_fps(image: np.ndarray, fps: float | None) -> np.ndarray:
    """Frames-per-second counter in the top-left corner (``--`` while not yet measured)."""
    text = "  -- fps" if fps is None else f"{fps:5.1f} fps"
    cv2.putText(image, text, (10, 30), FONT, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image, text, (10, 30), FONT, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return image

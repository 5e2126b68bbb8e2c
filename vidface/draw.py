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


#: redaction styles (``--redact-style``)
REDACT_STYLES = ("blur", "pixelate")


def redact_boxes(image: np.ndarray, boxes: list[np.ndarray], style: str = "blur", margin: float = 0.25) -> np.ndarray:
    """Cover each ``[x1, y1, x2, y2]`` box of ``image`` (in place), grown by ``margin`` of its size on each side.

    blur: a Gaussian blur wide enough that no feature survives (sigma a third of
    the box); pixelate: blocks of an eighth of the box, each painted with its
    mean colour (at most 8 x 8 blocks across a face).
    """
    if style not in REDACT_STYLES:
        raise ValueError(f"unknown redaction style {style!r}")
    height, width = image.shape[:2]
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(np.floor(x1 - grow_x))), max(0, int(np.floor(y1 - grow_y)))
        right, bottom = min(width, int(np.ceil(x2 + grow_x))), min(height, int(np.ceil(y2 + grow_y)))
        if right - left < 2 or bottom - top < 2:
            continue
        region = image[top:bottom, left:right]
        if style == "blur":
            sigma = max(region.shape[:2]) / 3
            covered = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
            # a blur keeps the mean: make sure no pixel comes out as it went in
            covered = np.where(covered == region, covered ^ 1, covered)
        else:
            blocks = (max(1, region.shape[1] // max(2, region.shape[1] // 8)),
                      max(1, region.shape[0] // max(2, region.shape[0] // 8)))
            small = cv2.resize(region, blocks, interpolation=cv2.INTER_AREA)
            covered = cv2.resize(small, region.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            covered = np.where(covered == region, covered ^ 1, covered)
        image[top:bottom, left:right] = covered
    return image

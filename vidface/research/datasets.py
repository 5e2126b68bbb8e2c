"""Readers for the research data sets used to train and evaluate vidface.

The data is never part of the project: it is looked up in ``$VIDFACE_DATA``,
else in ``../shared/data`` beside the repository checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def data_root() -> Path:
    """The folder holding ``widerface/``, ``lfw/``, ``faces/``, ``videofaceid/``..."""
    env = os.environ.get("VIDFACE_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found at {path} (set VIDFACE_DATA to the data folder)")
    return path


@dataclass
class WiderImage:
    """One WIDER FACE image and its annotation.

    path: image file.
    name: ``<event>/<file>.jpg`` as in the official lists.
    boxes: ``float32 (N, 4)`` ``[x1, y1, x2, y2]`` pixels.
    invalid: ``bool (N,)`` WIDER's ``invalid`` flag per box.
    """

    path: Path
    name: str
    boxes: np.ndarray
    invalid: np.ndarray


def read_wider_gt(gt_file: Path, images_dir: Path) -> list[WiderImage]:
    """Parse the official ``wider_face_bbx_gt.txt`` format.

    Each record is a name line, a count line, then ``max(count, 1)`` lines of
    ``x y w h blur expression illumination invalid occlusion pose``.
    """
    lines = require(gt_file, "WIDER FACE ground truth").read_text().split("\n")
    images: list[WiderImage] = []
    position = 0
    while position < len(lines):
        name = lines[position].strip()
        if not name:
            position += 1
            continue
        try:
            count = int(lines[position + 1])
        except (IndexError, ValueError) as error:
            raise DataError(f"{gt_file}: bad count after {name!r}") from error
        rows = lines[position + 2 : position + 2 + max(count, 1)]
        values = np.array([[float(v) for v in row.split()[:8]] for row in rows[:count]], dtype=np.float32)
        values = values.reshape(-1, 8)
        boxes = values[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        images.append(WiderImage(images_dir / name, name, boxes, values[:, 7] > 0))
        position += 2 + max(count, 1)
    return images


def read_yolo_labelled(images_dir: Path, labels_dir: Path) -> list[WiderImage]:
    """Images with YOLO labels ``cls cx cy w h [keypoints...]`` (normalised) beside them; keypoints are ignored."""
    import cv2

    images: list[WiderImage] = []
    for image_path in sorted(require(images_dir, "image folder").glob("*.jpg")):
        label_path = labels_dir / (image_path.stem + ".txt")
        rows = np.loadtxt(label_path, ndmin=2, dtype=np.float32) if label_path.exists() else np.zeros((0, 5))
        rows = rows[:, :5] if rows.size else np.zeros((0, 5), np.float32)
        height, width = cv2.imread(str(image_path)).shape[:2]
        cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        images.append(WiderImage(image_path, image_path.name, boxes, np.zeros(len(boxes), bool)))
    return images

"""WIDER FACE -> ultralytics YOLO-pose data set with teacher landmarks.

Human boxes are kept as they are; five landmarks come from a teacher detector
matched to each box by IoU. A box with no confident teacher match keeps its
box and gets landmarks marked not visible (``v = 0``), so it still teaches
the box head but not the keypoint head. Boxes flagged ``invalid`` in WIDER are
dropped. Where the human labels are thin, the teacher's confident faces that
overlap no human box at all (invalid ones included) can be added as extra
positives (``extra_score``). Only the training splits are read
(``train-subset``, ``val-train``); ``val-eval`` is never touched here.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...files import write_text_atomic
from ...structures import box_iou, greedy_matches
from ..datasets import WiderImage, data_root, read_wider_gt, read_yolo_labelled

#: Keypoint order flipped left<->right under a horizontal flip.
FLIP_INDEX = [1, 0, 2, 4, 3]


@dataclass
class PoseLabel:
    """Labels of one image: ``boxes (N, 4)`` xyxy px, ``landmarks (N, 5, 2)`` px, ``visible (N,)`` bool."""

    boxes: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    #: how many of the rows are the teacher's extra positives (the last ones)
    extra: int = 0


#: a teacher face counts as unlabelled when it overlaps every human box by less than this IoU
UNLABELLED_IOU = 0.1


def training_images(root: Path | None = None) -> list[WiderImage]:
    """The WIDER images we may train on: ``train-subset`` then ``val-train``."""
    wider = (root or data_root()) / "widerface"
    train = read_yolo_labelled(wider / "train-subset" / "images", wider / "train-subset" / "labels")
    val_train = read_wider_gt(wider / "val-train" / "wider_face_bbx_gt.txt", wider / "val-train" / "images")
    return train + val_train


def label_image(image: np.ndarray, record: WiderImage, teacher, min_face: float, match_iou: float,
                extra_score: float | None = None) -> PoseLabel:
    """Human boxes with the teacher's landmarks; with ``extra_score``, also the teacher's faces scored at
    least that which no human box (valid or not) overlaps, of ``min_face`` pixels or more."""
    keep = ~record.invalid
    boxes = record.boxes[keep]
    sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    boxes = boxes[sizes >= min_face]
    landmarks = np.zeros((len(boxes), 5, 2), np.float32)
    visible = np.zeros(len(boxes), bool)
    taught = teacher(image)
    if len(boxes) and len(taught.boxes):
        for truth_index, teacher_index in greedy_matches(box_iou(boxes, taught.boxes), match_iou):
            landmarks[truth_index] = taught.landmarks[teacher_index]
            visible[truth_index] = True
    if extra_score is None or len(taught.boxes) == 0:
        return PoseLabel(boxes, landmarks, visible)
    unlabelled = np.ones(len(taught.boxes), bool)
    if len(record.boxes):
        unlabelled = box_iou(taught.boxes, record.boxes).max(axis=1) < UNLABELLED_IOU
    sides = np.minimum(taught.boxes[:, 2] - taught.boxes[:, 0], taught.boxes[:, 3] - taught.boxes[:, 1])
    extra = unlabelled & (taught.scores >= extra_score) & (sides >= min_face)
    return PoseLabel(np.concatenate([boxes, taught.boxes[extra]]).astype(np.float32),
                     np.concatenate([landmarks, taught.landmarks[extra]]).astype(np.float32),
                     np.concatenate([visible, np.ones(int(extra.sum()), bool)]), int(extra.sum()))


def pose_label_lines(label: PoseLabel, width: int, height: int) -> list[str]:
    """YOLO-pose rows ``0 cx cy w h (x y v)x5``, all normalised to ``[0, 1]``."""
    lines = []
    for box, points, visible in zip(label.boxes, label.landmarks, label.visible):
        x1, y1, x2, y2 = np.clip(box, 0, [width, height, width, height])
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        inside = visible and (points[:, 0] >= 0).all() and (points[:, 0] < width).all()
        inside = inside and (points[:, 1] >= 0).all() and (points[:, 1] < height).all()
        for x, y in points:
            values += [x / width, y / height, 2.0] if inside else [0.0, 0.0, 0.0]
        lines.append("0 " + " ".join(f"{v:.6f}" for v in values))
    return lines


def read_pose_label(label_path: Path, width: int, height: int) -> PoseLabel:
    """Parse the rows :func:`pose_label_lines` wrote back into pixels."""
    text = label_path.read_text() if label_path.exists() else ""
    rows = np.array([line.split() for line in text.splitlines() if line.strip()], np.float32).reshape(-1, 20)
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    points = rows[:, 5:].reshape(-1, 5, 3)
    landmarks = (points[:, :, :2] * np.array([width, height], np.float32)).astype(np.float32)
    return PoseLabel(boxes, landmarks, (points[:, :, 2] > 0).all(axis=1))


def build_pose_dataset(
    out_dir: Path,
    teacher,
    holdout: int = 50,
    min_face: float = 4.0,
    match_iou: float = 0.5,
    seed: int = 0,
    root: Path | None = None,
    extra_score: float | None = None,
) -> Path:
    """Write the data set under ``out_dir`` and return its ``data.yaml``.

    holdout: images of ``val-train`` set aside as the trainer's own validation
    split (for checkpoint selection); WIDER's ``val-eval`` stays untouched.
    extra_score: add the teacher's unlabelled faces scored at least this to the
    training split (never to the hold-out, which stays human-labelled).
    """
    records = training_images(root)
    val_train = [r for r in records if "/" in r.name]
    random.Random(seed).shuffle(val_train)
    held_out = {r.name for r in val_train[:holdout]}
    stats = {"images": 0, "faces": 0, "faces_with_landmarks": 0, "teacher_positives": 0}
    for split in ("train", "val"):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
    for record in records:
        image = cv2.imread(str(record.path))
        if image is None:
            continue
        split = "val" if record.name in held_out else "train"
        label = label_image(image, record, teacher, min_face, match_iou, extra_score if split == "train" else None)
        stats["teacher_positives"] += label.extra
        stem = record.name.replace("/", "__").rsplit(".", 1)[0]
        link = out_dir / "images" / split / f"{stem}.jpg"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(record.path.resolve())
        height, width = image.shape[:2]
        lines = pose_label_lines(label, width, height)
        (out_dir / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        stats["images"] += 1
        stats["faces"] += len(lines)
        stats["faces_with_landmarks"] += int(sum(1 for line in lines if not line.endswith(" 0.000000")))
    yaml_path = out_dir / "data.yaml"
    yaml_path.write_text(
        f"path: {out_dir.resolve()}\ntrain: images/train\nval: images/val\n"
        f"kpt_shape: [5, 3]\nflip_idx: {FLIP_INDEX}\nnames:\n  0: face\n"
    )
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return yaml_path


def draw_label_preview(dataset_dir: Path, out_png: Path, count: int = 6, seed: int = 0) -> Path:
    """Draw boxes and landmarks of a few labelled images into one PNG, to check the labels by eye."""
    images = sorted((dataset_dir / "images" / "train").glob("*.jpg"))
    chosen = random.Random(seed).sample(images, min(count, len(images)))
    tiles = []
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255)]
    for image_path in chosen:
        image = cv2.imread(str(image_path))
        height, width = image.shape[:2]
        label = read_pose_label(dataset_dir / "labels" / "train" / (image_path.stem + ".txt"), width, height)
        for box, points, visible in zip(label.boxes, label.landmarks, label.visible):
            cv2.rectangle(image, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (0, 255, 0), 1)
            if visible:
                for (x, y), colour in zip(points, colours):
                    cv2.circle(image, (int(x), int(y)), 2, colour, -1)
        tiles.append(cv2.resize(image, (640, 480)))
    while len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + 2]) for i in range(0, len(tiles), 2)]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.vstack(rows))
    return out_png


def build_face_crops(dataset_dir: Path, out_dir: Path, min_size: float = 40.0) -> dict:
    """Cut ArcFace-aligned 112x112 crops of the labelled faces of a pose data set (distillation faces).

    Only faces whose short side is at least ``min_size`` pixels and whose five
    teacher landmarks are all present are kept; smaller faces carry too little
    detail to teach an embedder. Reads only the training data set, never val-eval.
    """
    from ...align import align_face

    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"images": 0, "faces": 0}
    for split in ("train", "val"):
        for image_path in sorted((dataset_dir / "images" / split).glob("*.jpg")):
            image = cv2.imread(str(image_path))
            if image is None:
                continue
            height, width = image.shape[:2]
            label = read_pose_label(dataset_dir / "labels" / split / (image_path.stem + ".txt"), width, height)
            sizes = np.minimum(label.boxes[:, 2] - label.boxes[:, 0], label.boxes[:, 3] - label.boxes[:, 1])
            stats["images"] += 1
            for index in np.flatnonzero(label.visible & (sizes >= min_size)):
                crop = align_face(image, label.landmarks[index], label.boxes[index])
                cv2.imwrite(str(out_dir / f"{image_path.stem}__{index}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                stats["faces"] += 1
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


#: a detection is a false face when it overlaps every known face (human or teacher) by less than this IoU ...
FALSE_FACE_IOU = 0.1
#: ... and covers at most this share of any of them, nor lies this much inside one (a loose box on a real face)
FALSE_FACE_COVER = 0.3
NEGATIVES_SPLIT = "train-negatives"


@dataclass
class HardNegative:
    """One false face the detector finds on a training image, and the background crop made around it.

    box: ``float32 (4,)`` xyxy pixels of the false face in the source image;
    crop: ``(x1, y1, x2, y2)`` ints of the square crop cut around it.
    """

    source: str
    score: float
    box: np.ndarray
    crop: tuple[int, int, int, int]


def false_faces(detections: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``bool (D,)``: which of ``(D, 4)`` detected boxes are none of the ``(F, 4)`` known faces."""
    if len(detections) == 0 or len(faces) == 0:
        return np.ones(len(detections), bool)
    x1 = np.maximum(detections[:, None, 0], faces[None, :, 0])
    y1 = np.maximum(detections[:, None, 1], faces[None, :, 1])
    x2 = np.minimum(detections[:, None, 2], faces[None, :, 2])
    y2 = np.minimum(detections[:, None, 3], faces[None, :, 3])
    overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)

    def areas(boxes):
        return np.clip(boxes[:, 2] - boxes[:, 0], 1e-6, None) * np.clip(boxes[:, 3] - boxes[:, 1], 1e-6, None)

    own, theirs = areas(detections)[:, None], areas(faces)[None, :]
    iou = overlap / (own + theirs - overlap)
    cover = np.maximum(overlap / own, overlap / theirs)
    return (iou < FALSE_FACE_IOU).all(axis=1) & (cover <= FALSE_FACE_COVER).all(axis=1)


def background_crop(image: np.ndarray, box: np.ndarray, faces: np.ndarray, context: float, min_side: int
                    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A square of ``context`` times the box's long side (at least ``min_side`` px) around ``box``, moved
    inside the image, with every known face in it painted over in the letterbox grey, so the crop has no
    face to learn and only the false one to reject."""
    height, width = image.shape[:2]
    side = int(min(max(min_side, context * max(box[2] - box[0], box[3] - box[1])), width, height))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x1 = int(np.clip(round(cx - side / 2), 0, width - side))
    y1 = int(np.clip(round(cy - side / 2), 0, height - side))
    crop = image[y1: y1 + side, x1: x1 + side].copy()
    for fx1, fy1, fx2, fy2 in faces:
        pad_x, pad_y = 0.1 * (fx2 - fx1), 0.1 * (fy2 - fy1)
        left, top = int(max(fx1 - pad_x - x1, 0)), int(max(fy1 - pad_y - y1, 0))
        right, bottom = int(min(fx2 + pad_x - x1, side)), int(min(fy2 + pad_y - y1, side))
        if right > left and bottom > top:
            crop[top:bottom, left:right] = 114
    return crop, (x1, y1, x1 + side, y1 + side)


def mine_hard_negatives(dataset_dir: Path, detector, teacher, context: float = 3.0, min_side: int = 320,
                        root: Path | None = None) -> dict:
    """Add background crops around the detector's false faces on the training split to the data set.

    detector: called as ``detector([image], closeups=False)`` (the runtime's
    :class:`~vidface.detect.FaceDetector`); teacher: a confident face
    detector (its faces are real faces the human labels may have missed).
    A detection is false when it is none of the human boxes (invalid and tiny
    ones included) nor the teacher's faces (:func:`false_faces`). The crops go
    to ``images/train-negatives`` with empty label files (ultralytics'
    background images), and ``data.yaml`` trains on both folders. Only
    training images are read; the trainer's hold-out and WIDER's val-eval
    are never touched. Returns counts, and writes them to ``negatives.json``.
    """
    records = {r.name.replace("/", "__").rsplit(".", 1)[0]: r for r in training_images(root)}
    train_stems = sorted(p.stem for p in (dataset_dir / "images" / "train").glob("*.jpg"))
    images_out = dataset_dir / "images" / NEGATIVES_SPLIT
    labels_out = dataset_dir / "labels" / NEGATIVES_SPLIT
    for folder in (images_out, labels_out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    mined: list[HardNegative] = []
    detections_seen = false_seen = 0
    for stem in train_stems:
        record = records[stem]
        image = cv2.imread(str(record.path))
        if image is None:
            continue
        found = detector([image], closeups=False)[0]
        detections_seen += len(found)
        if not found:
            continue
        taught = teacher(image)
        faces = np.concatenate([record.boxes.reshape(-1, 4), taught.boxes.reshape(-1, 4)]).astype(np.float32)
        boxes = np.stack([face.box for face in found]).astype(np.float32)
        squares: list[tuple[int, int, int, int]] = []
        for index in np.flatnonzero(false_faces(boxes, faces)):
            false_seen += 1
            x1, y1, x2, y2 = boxes[index]
            if any(sx1 <= x1 and sy1 <= y1 and x2 <= sx2 and y2 <= sy2 for sx1, sy1, sx2, sy2 in squares):
                continue
            crop, square = background_crop(image, boxes[index], faces, context, min_side)
            squares.append(square)
            name = f"{stem}__negative{len(mined)}"
            cv2.imwrite(str(images_out / f"{name}.jpg"), crop)
            (labels_out / f"{name}.txt").write_text("")
            mined.append(HardNegative(stem, float(found[index].score), boxes[index], square))
    yaml_path = dataset_dir / "data.yaml"
    lines = [line for line in yaml_path.read_text().splitlines() if not line.startswith("train:")]
    lines.insert(1, f"train: [images/train, images/{NEGATIVES_SPLIT}]")
    yaml_path.write_text("\n".join(lines) + "\n")
    stats = {"training_images": len(train_stems), "detections": detections_seen, "false_faces": false_seen,
             "crops": len(mined), "source_images": len({m.source for m in mined}),
             "negatives": [{"source": m.source, "score": round(m.score, 3),
                            "box": [round(float(v), 1) for v in m.box], "crop": list(m.crop)} for m in mined]}
    (dataset_dir / "negatives.json").write_text(json.dumps(stats, indent=1))
    return stats


def draw_negatives_preview(dataset_dir: Path, out_png: Path, count: int = 48, tile: int = 128) -> Path:
    """A mosaic of mined background crops with the false face boxed, to look at what the detector took for one."""
    stats = json.loads((dataset_dir / "negatives.json").read_text())
    tiles = []
    for number, negative in enumerate(stats["negatives"][:count]):
        crop = cv2.imread(str(dataset_dir / "images" / NEGATIVES_SPLIT / f"{negative['source']}__negative{number}.jpg"))
        x1, y1 = negative["crop"][:2]
        scale = tile / crop.shape[0]
        box = [(negative["box"][0] - x1) * scale, (negative["box"][1] - y1) * scale,
               (negative["box"][2] - x1) * scale, (negative["box"][3] - y1) * scale]
        crop = cv2.resize(crop, (tile, tile))
        cv2.rectangle(crop, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), (0, 0, 255), 1)
        tiles.append(crop)
    while len(tiles) % 8:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.vstack([np.hstack(tiles[i: i + 8]) for i in range(0, len(tiles), 8)]))
    return out_png


BALANCED_LIST = "train-balanced.txt"


def write_event_balanced_split(dataset_dir: Path, repeat: int = 2) -> Path:
    """Write ``data-balanced.yaml``: the training split with each ``val-train`` image listed ``repeat`` times.

    The official-train subset covers three of WIDER's 61 events (parade, handshaking, demonstration:
    about 1,000 of the 1,450 training images); ``val-train`` images, the only ones of the other 58
    events, are named ``<event>__<image>``. Listing them ``repeat`` times weighs the events more
    evenly without adding any image. The hard negatives (if mined) are listed once, the hold-out is
    unchanged. Returns the new yaml's path.
    """
    images = sorted((dataset_dir / "images" / "train").glob("*.jpg"))
    negatives = sorted((dataset_dir / "images" / NEGATIVES_SPLIT).glob("*.jpg"))
    listed = []
    for image in images:
        listed += [f"./images/train/{image.name}"] * (repeat if "__" in image.stem else 1)
    listed += [f"./images/{NEGATIVES_SPLIT}/{image.name}" for image in negatives]
    write_text_atomic("\n".join(listed) + "\n", dataset_dir / BALANCED_LIST)
    lines = [line for line in (dataset_dir / "data.yaml").read_text().splitlines() if not line.startswith("train:")]
    lines.insert(1, f"train: {BALANCED_LIST}")
    return write_text_atomic("\n".join(lines) + "\n", dataset_dir / "data-balanced.yaml")

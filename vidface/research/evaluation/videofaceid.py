"""End-to-end evaluation on real clips with per-frame truth (``videofaceid``).

For every annotated face in every frame: was a face found there (IoU >= 0.3
with one of ours, one-to-one), was it given the right name (the truth's
name, or no name for ``Unknown``) or a wrong one (someone else's name: worse
than ``unknown``), and of the found unknown faces, how many
were correctly left unnamed. Only one unknown face per frame is annotated,
so extra unnamed faces are not errors; a face we *named* where the truth
has nobody is counted as a false name, and every box of ours that matches
no truth box (a hand, an ear, or a background face nobody annotated) as a
box without truth.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ...structures import box_iou, greedy_matches
from ..datasets import data_root, require

UNKNOWN = "Unknown"
MIN_IOU = 0.3


def clip_truth(path: Path) -> dict[int, list[tuple[str, np.ndarray]]]:
    """``{frame: [(identity, box xyxy)]}`` from a truth file."""
    truth = json.loads(Path(path).read_text())
    frames: dict[int, list] = {}
    for track in truth["tracks"]:
        for frame, box in track["boxes_xyxy"].items():
            frames.setdefault(int(frame), []).append((track["identity"], np.array(box, np.float32)))
    return frames


def score_clip(truth: dict[int, list], document: dict) -> dict:
    """Counts for one clip from its truth and our track log."""
    ours: dict[int, list] = {}
    for track in document["tracks"]:
        for detection in track["detections"]:
            ours.setdefault(detection["frame"], []).append((track["identity"], np.array(detection["box"], np.float32)))
    counts = {"truth_boxes": 0, "found": 0, "named_right": 0, "named_wrong": 0, "unknown_found": 0,
              "unknown_rejected": 0, "false_names": 0, "boxes_without_truth": 0}
    for frame in sorted(set(truth) | set(ours)):
        faces, predicted = truth.get(frame, []), ours.get(frame, [])
        counts["truth_boxes"] += len(faces)
        if not predicted:
            continue
        if not faces:
            counts["boxes_without_truth"] += len(predicted)
            continue
        iou = box_iou(np.stack([b for _, b in faces]), np.stack([b for _, b in predicted]))
        matches = greedy_matches(iou, MIN_IOU)
        used_ours = {p for _, p in matches}
        for t, p in matches:
            truth_name, our_name = faces[t][0], predicted[p][0]
            counts["found"] += 1
            counts["named_wrong"] += our_name is not None and our_name != truth_name
            if truth_name == UNKNOWN:
                counts["unknown_found"] += 1
                counts["unknown_rejected"] += our_name is None
                counts["named_right"] += our_name is None
            else:
                counts["named_right"] += our_name == truth_name
        counts["false_names"] += sum(1 for p, (name, _) in enumerate(predicted) if p not in used_ours and name)
        counts["boxes_without_truth"] += len(predicted) - len(used_ours)
    return counts


def _rates(name: str, counts: dict) -> dict:
    total = max(counts["truth_boxes"], 1)
    return {
        "clip": name,
        **counts,
        "found": counts["found"] / total,
        "found_count": counts["found"],
        "named_right": counts["named_right"] / total,
        "named_wrong": counts["named_wrong"] / total,
        "unknown_rejected": counts["unknown_rejected"] / counts["unknown_found"] if counts["unknown_found"] else None,
    }


def evaluate_clips(settings, root: Path | None = None) -> dict:
    """Annotate every clip (log only) and score it; returns per-clip rows and a total row."""
    from ...gallery import build_gallery
    from ...pipeline import Models, annotate

    base = require((root or data_root()) / "videofaceid", "videofaceid clips")
    models = Models.load(settings)
    gallery = build_gallery(base / "gallery", models.detector, models.embedder)
    rows, total = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for clip in sorted((base / "clips").glob("*.mp4")):
            truth_file = base / "truth" / f"{clip.stem}.json"
            if not truth_file.exists():
                continue
            result = annotate(clip, gallery, None, Path(scratch) / f"{clip.stem}.json", settings, models)
            counts = score_clip(clip_truth(truth_file), result.document)
            rows.append(_rates(clip.stem, counts))
            total = counts if total is None else {k: total[k] + counts[k] for k in counts}
    return {"clips": rows, "total": _rates("all clips", total), "threshold": models.threshold(settings)}


def gallery_open_set_scores(settings, gallery_dir: Path | None = None):
    """Leave-one-out open-set scores of a gallery's photos (default gallery: videofaceid's),
    embedded as the pipeline embeds them; see :mod:`vidface.evaluation.open_set`."""
    from ...gallery import build_gallery
    from ...pipeline import Models
    from .open_set import open_set_scores

    models = Models.load(settings)
    gallery_dir = gallery_dir or require(data_root() / "videofaceid" / "gallery", "videofaceid gallery")
    gallery = build_gallery(gallery_dir, models.detector, models.embedder)
    return open_set_scores(gallery.embeddings, gallery.owners), gallery

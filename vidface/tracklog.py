"""The JSON track log: who appears when, where, and how sure we are.

Schema 1 (documented in the README)::

    {"schema": 1, "vidface_version": str,
     "input": {"path", "width", "height", "fps", "frames", "duration_s", "truncated"},
     "gallery": {"path", "identities": [str]},
     "settings": {...},
     "tracks": [{"track_id", "identity": str | null, "display_id", "score", "closest": str | null,
                 "first_frame", "last_frame", "start_s", "end_s",
                 "detections": [{"frame", "t", "box": [x1, y1, x2, y2], "score",
                                 "landmarks": [[x, y] x5] | null, "similarity": float | null}]}]}

Boxes and landmarks are input pixels; times are seconds. ``detections``
holds the frames the detector ran on; ``first_frame``..``last_frame`` is
the span the face is shown, which with ``--frame-skip`` includes the frames
it was carried over.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .structures import FrameResult

SCHEMA = 1


def _round(values, digits: int = 1) -> list:
    return [round(float(v), digits) for v in values]


class TrackLog:
    """Collects per-frame results and turns them into the schema-1 document."""

    def __init__(self, input_info: dict[str, Any], gallery_info: dict[str, Any], settings: dict[str, Any]):
        self.input_info = input_info
        self.gallery_info = gallery_info
        self.settings = settings
        self._tracks: dict[int, dict[str, Any]] = {}

    def add(self, result: FrameResult) -> None:
        frame = result.frame
        for face in result.faces:
            record = self._tracks.setdefault(face.track_id, {
                "track_id": face.track_id, "first_frame": frame.index, "start_s": frame.time_s, "detections": [],
            })
            record["last_frame"], record["end_s"] = frame.index, frame.time_s
            if not result.detected:
                continue
            detection = face.detection
            record["detections"].append({
                "frame": frame.index,
                "t": round(frame.time_s, 4),
                "box": _round(detection.box),
                "score": round(detection.score, 4),
                "landmarks": None if detection.landmarks is None else [_round(p) for p in detection.landmarks],
                "similarity": None if face.match is None else round(face.match.similarity, 4),
            })

    def document(self, tracker) -> dict[str, Any]:
        """The finished log; identities are the trackers' final decisions."""
        tracks = []
        for track_id, record in sorted(self._tracks.items(), key=lambda item: (item[1]["first_frame"], item[0])):
            if not record["detections"] or not tracker.confirmed(track_id):
                continue
            track = tracker.tracks[track_id]
            tracks.append({
                "track_id": track_id,
                "identity": track.label,
                "display_id": track.display_id,
                "score": round(track.label_similarity, 4),
                "closest": track.closest,
                "first_frame": record["first_frame"],
                "last_frame": record["last_frame"],
                "start_s": round(record["start_s"], 4),
                "end_s": round(record["end_s"], 4),
                "detections": record["detections"],
            })
        return {
            "schema": SCHEMA,
            "vidface_version": __version__,
            "input": self.input_info,
            "gallery": self.gallery_info,
            "settings": self.settings,
            "tracks": tracks,
        }


def summarize(document: dict[str, Any], frame_duration_s: float = 0.0) -> list[dict[str, Any]]:
    """One row per person seen: tracks, first and last appearance, time on screen, and ``score``: the
    track score the person was named by (over several tracks, their mean weighted by detections;
    ``None`` without a gallery)."""
    rows: dict[str, dict[str, Any]] = {}
    for track in document["tracks"]:
        name = track["display_id"]
        row = rows.setdefault(name, {"identity": name, "known": track["identity"] is not None, "tracks": 0,
                                     "from_s": track["start_s"], "to_s": track["end_s"], "seconds": 0.0,
                                     "weighted": 0.0, "weight": 0})
        row["tracks"] += 1
        row["from_s"] = min(row["from_s"], track["start_s"])
        row["to_s"] = max(row["to_s"], track["end_s"])
        row["seconds"] += track["end_s"] - track["start_s"] + frame_duration_s
        if track["closest"] is not None:
            weight = max(1, len(track["detections"]))
            row["weighted"] += track["score"] * weight
            row["weight"] += weight
    summary = []
    for row in rows.values():
        weighted, weight = row.pop("weighted"), row.pop("weight")
        row["score"] = round(weighted / weight, 4) if weight else None
        row["seconds"] = round(row["seconds"], 3)
        summary.append(row)
    return sorted(summary, key=lambda r: (not r["known"], r["from_s"]))

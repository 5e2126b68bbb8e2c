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
                "named_after": track.named_after,
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


def appearances(document: dict[str, Any], frame_duration_s: float = 0.0) -> dict[str, list[tuple[float, float]]]:
    """``{display_id: [(start_s, end_s), ...]}``: when each person is on screen, overlapping spans merged."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for track in document["tracks"]:
        # milliseconds: what subtitles can say, and a track that ends as the next begins then touches it
        span = (round(track["start_s"], 3), round(track["end_s"] + frame_duration_s, 3))
        spans.setdefault(track["display_id"], []).append(span)
    merged = {}
    for name, intervals in spans.items():
        out: list[tuple[float, float]] = []
        for start, end in sorted(intervals):
            if out and start <= out[-1][1] + 1e-6:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        merged[name] = out
    return merged


def subtitle_cues(document: dict[str, Any], frame_duration_s: float = 0.0) -> list[tuple[float, float, list[str]]]:
    """``(start_s, end_s, names)`` cues: who is on screen in each span; a cue changes when someone comes or goes.

    Named people come first (in order of appearance), then unknown ones.
    """
    spans = appearances(document, frame_duration_s)
    known = {t["display_id"] for t in document["tracks"] if t["identity"] is not None}
    first_seen = {name: intervals[0][0] for name, intervals in spans.items()}
    order = sorted(spans, key=lambda name: (name not in known, first_seen[name], name))
    edges = sorted({edge for intervals in spans.values() for span in intervals for edge in span})
    cues: list[tuple[float, float, list[str]]] = []
    for start, end in zip(edges, edges[1:]):
        middle = (start + end) / 2
        names = [name for name in order if any(a <= middle < b for a, b in spans[name])]
        if not names:
            continue
        if cues and cues[-1][2] == names and abs(cues[-1][1] - start) < 1e-6:
            cues[-1] = (cues[-1][0], end, names)
        else:
            cues.append((start, end, names))
    return cues


def _timestamp(seconds: float, decimal: str) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"


def webvtt(cues: list[tuple[float, float, list[str]]]) -> str:
    """WebVTT text of the cues (browsers and players show it over the video)."""
    blocks = ["WEBVTT\n"]
    for number, (start, end, names) in enumerate(cues, start=1):
        blocks.append(f"{number}\n{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{', '.join(names)}\n")
    return "\n".join(blocks)


def srt(cues: list[tuple[float, float, list[str]]]) -> str:
    """SubRip text of the cues."""
    return "\n".join(f"{number}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{', '.join(names)}\n"
                     for number, (start, end, names) in enumerate(cues, start=1))


def frame_duration_of(document: dict[str, Any]) -> float:
    """Seconds one frame of the log's video is shown (0 when its frame rate is unknown)."""
    fps = (document.get("input") or {}).get("fps")
    return 1.0 / fps if fps else 0.0


def video_appearances(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Who is in one log's video: per person (``name``: a gallery name or ``unknown-N``), ``known``,
    first and last appearance, seconds on screen, ``score`` (see :func:`summarize`) and the ``spans``
    ``[[start_s, end_s], ...]`` on screen. Small: it is what a batch manifest keeps for the people index."""
    duration = frame_duration_of(document)
    spans = appearances(document, duration)
    return [{"name": row["identity"], "known": row["known"], "from_s": row["from_s"], "to_s": row["to_s"],
             "seconds": row["seconds"], "score": row["score"],
             "spans": [[start, end] for start, end in spans.get(row["identity"], [])]}
            for row in summarize(document, duration)]


def people_index(videos: list[tuple[str, str | None, list[dict[str, Any]]]],
                 recurring: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """Who appears in which video, over many videos (``(log path, video path, video_appearances)``):
    per named person every video they are in, with their spans on screen; the strangers
    (``unknown-N``, numbered per video) video by video, each with ``recurring``: the
    ``stranger-K`` they are in other videos too (``recurring``, keyed by ``(log path,
    unknown-N)``), or ``None``; and ``recurring_strangers``: those, person by person,
    like the named people. People by name, videos by log path."""
    recurring = recurring or {}
    people: dict[str, list[dict[str, Any]]] = {}
    strangers: list[dict[str, Any]] = []
    for log_path, video, rows in sorted(videos, key=lambda entry: entry[0]):
        for row in rows:
            entry = {"video": video, "log": log_path, **{k: row[k] for k in ("from_s", "to_s", "seconds", "score",
                                                                               "spans")}}
            if row["known"]:
                people.setdefault(row["name"], []).append(entry)
            else:
                strangers.append({"display_id": row["name"], "recurring": recurring.get((log_path, row["name"])),
                                  **entry})
    return {
        "schema": SCHEMA,
        "videos": len(videos),
        "people": _people_rows(people),
        "unknown": strangers,
        "recurring_strangers": _people_rows(_grouped(strangers)),
    }


def _grouped(strangers: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in strangers:
        if entry["recurring"]:
            groups.setdefault(entry["recurring"], []).append(entry)
    return groups


def _people_rows(people: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A row per person: the videos they are in, their seconds on screen, and each appearance."""
    return [{"name": name, "videos": len(entries), "seconds": round(sum(e["seconds"] for e in entries), 3),
             "appearances": entries} for name, entries in sorted(people.items(), key=lambda item: _natural(item[0]))]


def _natural(name: str) -> tuple:
    """Sort key that puts stranger-2 before stranger-10 (names without a number sort as themselves)."""
    stem, _, number = name.rpartition("-")
    return (stem, int(number), "") if number.isdigit() else (name, -1, name)


def people_csv(index: dict[str, Any]) -> str:
    """:func:`people_index` as CSV, a row per person per video (spreadsheets, newsroom tools)."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["name", "known", "video", "log", "from_s", "to_s", "seconds", "score", "spans", "recurring"])
    rows = [(person["name"], True, entry) for person in index["people"] for entry in person["appearances"]]
    rows += [(entry["display_id"], False, entry) for entry in index["unknown"]]
    for name, known, entry in rows:
        spans = " ".join(f"{start:.2f}-{end:.2f}" for start, end in entry["spans"])
        writer.writerow([name, "yes" if known else "no", entry["video"], entry["log"], f"{entry['from_s']:.2f}",
                         f"{entry['to_s']:.2f}", f"{entry['seconds']:.2f}",
                         "" if entry["score"] is None else f"{entry['score']:.4f}", spans, entry.get("recurring") or ""])
    return text.getvalue()

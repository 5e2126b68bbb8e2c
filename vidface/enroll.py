"""Teach the gallery a face from a video: photos of one logged track, cut from the video.

A reviewer reads a track log (or its HTML report), sees ``unknown-3`` and knows
who it is. :func:`enroll_track` cuts that track's best-seen faces out of the
video into the gallery folder of the person, so every later run names them;
:func:`enroll_recurring_strangers` does it for a batch's ``stranger-K`` from every
video they are in.
The photos are chosen from across the track (a face seen from several sides
and in several lights matches better than one good frame five times), each a
square around the face with room for the detector to see a portrait.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GalleryError, InputError, OutputError, UsageError
from .photo import write_image_atomic

#: photos cut per enrolment unless asked otherwise
ENROLL_PHOTOS = 5
#: faces under this box height (pixels) are passed over while the track has larger ones
MIN_FACE_HEIGHT = 40
#: the side of a photo, in face-box sizes: the face in the middle, with its head and some background
PHOTO_CONTEXT = 2.0


@dataclass
class EnrollResult:
    """What :func:`enroll_track` did.

    folder: the person's gallery folder; written: photos new in it;
    existing: photos an earlier enrolment of the same frames had already written (left as they were);
    frames: the video frames (0-based decode order, as in the log) the photos come from.
    """

    person: str
    folder: Path
    video: Path
    written: list[Path]
    existing: list[Path]
    frames: list[int]


def read_track_log(path: Path) -> dict:
    """A schema-1 track log written by ``vidface annotate``; :class:`InputError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"track log not found: {path}" if not path.exists() else f"not a file: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a readable track log ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != 1 or not isinstance(document.get("tracks"), list):
        raise InputError(f"{path} is not a vidface track log (schema 1)")
    return document


def select_tracks(document: dict, wanted: list[str], log_path: Path) -> list[dict]:
    """The tracks a user named: by ``display_id`` (``unknown-3``), gallery name, or track number."""
    chosen = []
    for name in wanted:
        found = [track for track in document["tracks"]
                 if name in (track.get("display_id"), track.get("identity"), str(track.get("track_id")))]
        if not found:
            ids = sorted({str(track.get("display_id")) for track in document["tracks"]})
            raise UsageError(f"no track {name!r} in {log_path}; it has: {', '.join(ids) or 'no tracks'}")
        chosen.extend(track for track in found if track not in chosen)
    return chosen


def check_person_name(name: str) -> str:
    """A gallery folder name: one path component, visible, printable."""
    name = name.strip()
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
            or any(not character.isprintable() for character in name)):
        raise UsageError(f"--as {name!r}: a person's name must be a plain folder name (no '/', not hidden)")
    return name


def person_for(tracks: list[dict], person: str | None) -> str:
    """``--as`` if given, else the one gallery name the tracks already carry."""
    if person is not None:
        return check_person_name(person)
    names = {track.get("identity") for track in tracks}
    if len(names) == 1 and None not in names:
        return check_person_name(names.pop())
    what = ", ".join(sorted(str(track.get("display_id")) for track in tracks))
    raise UsageError(f"say who {what} is with --as NAME")


def choose_detections(detections: list[dict], count: int) -> list[dict]:
    """Up to ``count`` detections spread over the track: the track split into ``count`` runs of
    frames, from each its best face (detector score times box height); small faces only when
    the track has nothing larger."""
    usable = [d for d in detections if d.get("box") and len(d["box"]) == 4 and d["box"][3] > d["box"][1]]
    large = [d for d in usable if d["box"][3] - d["box"][1] >= MIN_FACE_HEIGHT]
    pool = sorted(large or usable, key=lambda d: d["frame"])
    runs = [run for run in np.array_split(np.arange(len(pool)), min(count, len(pool))) if len(run)] if pool else []
    quality = [pool[i].get("score", 0.0) * (pool[i]["box"][3] - pool[i]["box"][1]) for i in range(len(pool))]
    return [pool[max(run, key=lambda i: quality[i])] for run in runs]


def photo_region(box, width: int, height: int, context: float = PHOTO_CONTEXT) -> tuple[int, int, int, int]:
    """The square (``x1, y1, x2, y2`` in whole pixels, inside the frame) centred on a face box,
    ``context`` times its larger side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = context * max(x2 - x1, y2 - y1)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = max(0, math.floor(centre_x - side / 2)), max(0, math.floor(centre_y - side / 2))
    right, bottom = min(width, math.ceil(centre_x + side / 2)), min(height, math.ceil(centre_y + side / 2))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def video_of_log(document: dict, log_path: Path, video: Path | None) -> Path:
    """The video a log was made from: ``video`` if given, else the log's input path (as written,
    then next to the log)."""
    if video is not None:
        return Path(video)
    recorded = (document.get("input") or {}).get("path")
    if not recorded:
        raise InputError(f"{log_path} does not say which video it comes from; give it with --video")
    for candidate in (Path(recorded), Path(log_path).parent / Path(recorded).name):
        if candidate.is_file():
            return candidate
    raise InputError(f"the log's video {recorded} is not found; give it with --video")


@dataclass
class _Cut:
    """Photos of one video cut and checked, not yet written."""

    result: EnrollResult
    photos: dict[Path, np.ndarray]


def _cut_track_photos(log_path: Path, tracks: list[str], gallery: Path, person: str | None, video: Path | None,
                      photos: int) -> _Cut:
    """Everything of an enrolment but the writing: any error is raised before a photo exists."""
    from .io import VideoReader, probe_video

    if photos < 1:
        raise UsageError(f"--photos {photos}: at least 1")
    document = read_track_log(log_path)
    try:
        chosen_tracks = select_tracks(document, tracks, Path(log_path))
        name = person_for(chosen_tracks, person)
        detections = choose_detections([d for track in chosen_tracks for d in track.get("detections", [])], photos)
        detections = [{**d, "frame": int(d["frame"]), "box": [float(v) for v in d["box"]]} for d in detections]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{log_path} is not a well-formed track log ({type(error).__name__}: {error})") from None
    if not detections:
        raise InputError(f"{', '.join(tracks)}: the log has no face box to cut a photo from")
    source = video_of_log(document, Path(log_path), video)
    info = probe_video(source)
    logged = document.get("input") or {}
    if (logged.get("width"), logged.get("height")) not in ((None, None), (info.width, info.height)):
        raise InputError(f"{source} is not the video of {log_path} (the log's is {logged.get('width')}x"
                         f"{logged.get('height')}, this one {info.width}x{info.height}); give it with --video")
    gallery = Path(gallery)
    if gallery.exists() and not gallery.is_dir():
        raise GalleryError(f"gallery must be a folder with one sub-folder per person: {gallery}")
    folder = gallery / name
    if folder.exists() and not folder.is_dir():
        raise GalleryError(f"{folder} is a file, not a person's folder")
    by_frame = {}
    for detection in detections:  # tracks that share a name may both have a face in one frame: one photo
        by_frame.setdefault(detection["frame"], detection)
    frames = sorted(by_frame)
    targets = {index: folder / f"{source.stem}-{index:06d}.jpg" for index in frames}
    existing = [targets[index] for index in frames if targets[index].exists()]
    wanted = {index: by_frame[index] for index in frames if not targets[index].exists()}
    cut: dict[int, np.ndarray] = {}
    if wanted:
        with VideoReader(source) as reader:
            for frame in reader:
                if frame.index in wanted:
                    height, width = frame.image.shape[:2]
                    left, top, right, bottom = photo_region(wanted[frame.index]["box"], width, height)
                    cut[frame.index] = np.ascontiguousarray(frame.image[top:bottom, left:right])
                    if len(cut) == len(wanted):
                        break
    missing = sorted(set(wanted) - set(cut))
    if missing:  # checked before anything is written: a wrong video adds no photo
        raise InputError(f"{source} ended before frame {missing[0]} of the log; is it the log's video?")
    result = EnrollResult(person=name, folder=folder, video=source, written=[], existing=existing, frames=frames)
    return _Cut(result, {targets[index]: photo for index, photo in sorted(cut.items())})


def _write(cut: _Cut) -> EnrollResult:
    for target, photo in cut.photos.items():
        try:
            cut.result.written.append(write_image_atomic(photo, target))
        except OSError as error:
            raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    return cut.result


def enroll_track(log_path: Path, tracks: list[str], gallery: Path, person: str | None = None,
                 video: Path | None = None, photos: int = ENROLL_PHOTOS) -> EnrollResult:
    """Cut up to ``photos`` faces of the logged ``tracks`` from their video into ``gallery/person``.

    Photos are named ``<video stem>-<frame>.jpg``: enrolling the same frames again
    writes nothing (safe to repeat), and the video itself is only read.
    """
    return _write(_cut_track_photos(log_path, tracks, gallery, person, video, photos))


def is_people_index(document: dict) -> bool:
    """Whether a JSON document is a batch's ``people.json`` (rather than one video's track log)."""
    return isinstance(document, dict) and "recurring_strangers" in document and "tracks" not in document


def enroll_recurring_strangers(index_path: Path, strangers: list[str], gallery: Path, person: str | None,
                               photos: int = ENROLL_PHOTOS) -> list[EnrollResult]:
    """Enrol ``stranger-K`` of a batch's ``people.json`` from every video they were seen in.

    The ``photos`` of each stranger are shared out over their videos, the longest
    appearance first (one video shows a face in one light; several show the
    person's range). Every video's photos are cut and checked before any is written.
    """
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{index_path} is not a readable people index ({error})") from None
    return _enroll_from_index(index, index_path, strangers, gallery, person, photos)


def _enroll_from_index(index: dict, index_path: Path, strangers: list[str], gallery: Path, person: str | None,
                       photos: int) -> list[EnrollResult]:
    """:func:`enroll_recurring_strangers` on the index already read from ``index_path``."""
    if photos < 1:
        raise UsageError(f"--photos {photos}: at least 1")
    if person is None:
        raise UsageError(f"say who {', '.join(strangers)} is with --as NAME")
    check_person_name(person)
    groups = {group.get("name"): group for group in index.get("recurring_strangers") or []}
    plan = []
    for stranger in strangers:
        if stranger not in groups:
            raise UsageError(f"no recurring stranger {stranger!r} in {index_path}; it has: "
                             f"{', '.join(sorted(map(str, groups))) or 'none'} (a stranger of one video: "
                             "enroll from that video's log)")
        try:
            unknown_of = {entry["log"]: entry["display_id"] for entry in index.get("unknown") or []
                          if entry.get("recurring") == stranger}
            appearances = sorted(groups[stranger]["appearances"], key=lambda a: (-float(a["seconds"]), a["log"]))
            shares = [len(range(i, photos, len(appearances))) for i in range(len(appearances))]
            plan += [(index_path.parent / a["log"], unknown_of[a["log"]], a.get("video"), share)
                     for a, share in zip(appearances, shares) if share]
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"{index_path} is not a well-formed people index ({type(error).__name__}: "
                             f"{error})") from None
    cuts = []
    for log, display_id, video, share in plan:
        video = Path(video) if video and Path(video).is_file() else None  # else found beside the log
        cuts.append(_cut_track_photos(log, [display_id], gallery, person, video, share))
    taken: set[Path] = set()
    for cut in cuts:  # two videos of one name in different folders would cut photos of one name
        cut.photos = {target: photo for target, photo in cut.photos.items() if target not in taken}
        taken.update(cut.photos)
    return [_write(cut) for cut in cuts]


def enroll(log_or_index: Path, tracks: list[str], gallery: Path, person: str | None = None,
           video: Path | None = None, photos: int = ENROLL_PHOTOS) -> list[EnrollResult]:
    """``vidface gallery enroll``: from one video's track log (:func:`enroll_track`), or from a
    batch's ``people.json`` (:func:`enroll_recurring_strangers`)."""
    path = Path(log_or_index)
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            document = None  # read_track_log words the error
        if document is not None and is_people_index(document):
            if video is not None:
                raise UsageError("--video goes with one video's track log; a people index knows its videos")
            return _enroll_from_index(document, path, tracks, gallery, person, photos)
    return [enroll_track(path, tracks, gallery, person, video, photos)]

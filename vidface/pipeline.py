"""The annotate pipeline: decode -> detect -> align -> embed -> match -> track -> draw -> encode.

Everything streams: frames are decoded ahead in a thread, detected in
batches, faces of a whole batch are embedded together, and a short
look-ahead of frames (bounded) waits before drawing so that a new track's
name is already decided on its first drawn frame.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .align import align_face
from .datasets import REPO_ROOT
from .device import resolve_device
from .draw import draw_faces
from .errors import InputError, OutputError
from .io import AnnotatedVideoWriter, VideoInfo, VideoReader, probe_video
from .structures import Face, FrameResult
from .track import Tracker, TrackerSettings
from .files import write_json_atomic
from .tracklog import TrackLog, summarize


def weights_dir() -> Path:
    return Path(os.environ.get("VIDFACE_WEIGHTS", REPO_ROOT / "weights"))


def default_detector() -> Path:
    return weights_dir() / "yolov8n-face.safetensors"


def default_embedder() -> Path:
    return weights_dir() / "effb0-arcface.safetensors"


@dataclass
class AnnotateSettings:
    """User-facing knobs of a run (the CLI options of ``vidface annotate``).

    det_conf: ``None`` takes the detector's calibrated score threshold.
    match_threshold: ``None`` takes the embedder's recommended threshold.
    frame_skip: run the detector on every ``frame_skip + 1``-th frame and
        carry tracks over the frames between.
    min_face: faces smaller than this (pixels, shorter box side) are ignored.
    closeups: add the detector's close-up pass (see :class:`vidface.detect.FaceDetector`).
    flip_embed: embed each face and its mirror image and average the two
        (see :class:`vidface.embed.FaceEmbedder`); the stored ``match_threshold``
        is calibrated this way.
    """

    device: str = "auto"
    batch_size: int = 8
    imgsz: int = 640
    det_conf: float | None = None
    match_threshold: float | None = None
    frame_skip: int = 0
    min_face: float = 12.0
    closeups: bool = True
    flip_embed: bool = True
    write_video: bool = True
    draw_landmarks: bool = False
    detector: Path = field(default_factory=default_detector)
    embedder: Path = field(default_factory=default_embedder)

    def for_log(self, models: "Models") -> dict:
        """The settings as run: thresholds left to the models are filled in with the models' values."""
        values = asdict(self)
        values["detector"], values["embedder"] = str(self.detector), str(self.embedder)
        values["det_conf"] = float(models.detector.conf)
        values["match_threshold"] = models.threshold(self)
        return values


@dataclass
class Models:
    """The loaded networks, shared by every file of a batch or a live session."""

    detector: object
    embedder: object
    device: str

    @classmethod
    def load(cls, settings: AnnotateSettings) -> "Models":
        from .detect import FaceDetector
        from .embed import FaceEmbedder

        device = resolve_device(settings.device)
        detector = FaceDetector(Path(settings.detector), device, imgsz=settings.imgsz, conf=settings.det_conf,
                                closeups=settings.closeups)
        embedder = FaceEmbedder(Path(settings.embedder), device, flip=settings.flip_embed)
        return cls(detector, embedder, str(device))

    def threshold(self, settings: AnnotateSettings) -> float:
        if settings.match_threshold is not None:
            return settings.match_threshold
        return float(self.embedder.config.match_threshold)


@dataclass
class StageTimes:
    """Seconds spent per stage (wall clock, this thread)."""

    decode_wait: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    track_draw: float = 0.0
    encode: float = 0.0


@dataclass
class AnnotateResult:
    """What a run produced: outputs, counts, the log document and its summary rows."""

    video_path: Path | None
    log_path: Path | None
    info: VideoInfo
    frames: int
    seconds: float
    truncated: bool
    warning: str | None
    document: dict
    summary: list[dict]
    times: StageTimes


def default_outputs(input_path: Path) -> tuple[Path, Path]:
    stem = input_path.with_suffix("")
    return stem.with_name(stem.name + ".vidface.mp4"), stem.with_name(stem.name + ".vidface.json")


def check_output(path: Path, input_path: Path, overwrite: bool) -> None:
    """Refuse to clobber the input, an existing output (unless ``overwrite``), or an unwritable folder."""
    path = Path(path)
    if path.resolve() == Path(input_path).resolve():
        raise OutputError(f"output {path} would overwrite the input")
    if path.exists() and not overwrite:
        raise OutputError(f"output exists: {path} (use --overwrite to replace it)")
    if path.is_dir():
        raise OutputError(f"output is a folder: {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder is not writable: {parent}")


def resolve_outputs(input_path: Path, video_out: Path | None, log_out: Path | None, write_video: bool,
                    overwrite: bool) -> tuple[Path | None, Path]:
    """The output paths of a run (defaults beside the input), checked before any work starts."""
    default_video, default_log = default_outputs(Path(input_path))
    video_out = Path(video_out) if video_out else (default_video if write_video else None)
    log_out = Path(log_out) if log_out else default_log
    for path in (video_out, log_out):
        if path is not None:
            check_output(path, input_path, overwrite)
    return video_out, log_out


class FrameProcessor:
    """Detects, embeds, matches and tracks batches of frames; shared by files, batch and webcam."""

    def __init__(self, models: Models, gallery, threshold: float, settings: AnnotateSettings, fps: float,
                 tracker_settings: TrackerSettings | None = None):
        self.models = models
        self.gallery = gallery
        self.threshold = threshold
        self.settings = settings
        self.tracker = Tracker(gallery, threshold, fps, tracker_settings)
        self.times = StageTimes()
        self._last_detected = -1
        self._frames_seen = 0

    def wants_detection(self) -> bool:
        """Whether the next frame given to :meth:`process` will be a detected one."""
        return self._frames_seen % (self.settings.frame_skip + 1) == 0

    def process(self, frames: list) -> list[FrameResult]:
        """Results for consecutive ``frames``, in order; every ``frame_skip + 1``-th is detected."""
        step = self.settings.frame_skip + 1
        detect_mask = [(self._frames_seen + i) % step == 0 for i in range(len(frames))]
        self._frames_seen += len(frames)
        to_detect = [f for f, wanted in zip(frames, detect_mask) if wanted]
        started = time.perf_counter()
        detections = self.models.detector([f.image for f in to_detect]) if to_detect else []
        self.times.detect += time.perf_counter() - started

        started = time.perf_counter()
        per_frame_faces = []
        crops = []
        for frame, found in zip(to_detect, detections):
            faces = [Face(d) for d in found if min(d.width, d.height) >= self.settings.min_face]
            for face in faces:
                crops.append(align_face(frame.image, face.detection.landmarks, face.detection.box))
            per_frame_faces.append(faces)
        embeddings = self.models.embedder(crops) if crops else np.zeros((0, 1), np.float32)
        all_faces = [face for faces in per_frame_faces for face in faces]
        matches = self.gallery.match(embeddings, self.threshold) if self.gallery is not None and crops else []
        for index, face in enumerate(all_faces):
            face.embedding = embeddings[index]
            face.match = matches[index] if matches else None
        self.times.embed += time.perf_counter() - started

        started = time.perf_counter()
        results = []
        detected_iter = iter(per_frame_faces)
        for frame, wanted in zip(frames, detect_mask):
            if wanted:
                faces = self.tracker.update(frame.index, next(detected_iter))
                self._last_detected = frame.index
            else:
                faces = self.tracker.carry(frame.index, self._last_detected)
            results.append(FrameResult(frame, faces, detected=wanted))
        self.times.track_draw += time.perf_counter() - started
        return results

    def render(self, result: FrameResult) -> np.ndarray:
        """Draw the confirmed faces of ``result`` with their current track-level names."""
        started = time.perf_counter()
        shown = [self.tracker.describe(face) for face in result.faces if self.tracker.confirmed(face.track_id)]
        image = draw_faces(result.frame.image, shown, landmarks=self.settings.draw_landmarks)
        self.times.track_draw += time.perf_counter() - started
        return image


def gallery_log_info(gallery, path: Path | None) -> dict:
    return {"path": str(path) if path else None, "identities": list(gallery.names) if gallery is not None else []}


def annotate(
    input_path: Path,
    gallery=None,
    video_out: Path | None = None,
    log_out: Path | None = None,
    settings: AnnotateSettings | None = None,
    models: Models | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    gallery_path: Path | None = None,
) -> AnnotateResult:
    """Annotate one video file; returns what was written. See :class:`AnnotateSettings`.

    gallery: a built :class:`vidface.gallery.Gallery` (or ``None``: everyone is unknown).
    progress: called as ``progress(frames_done, frames_expected)`` after each batch.
    """
    settings = settings or AnnotateSettings()
    input_path = Path(input_path)
    info = probe_video(input_path)
    video_out, log_out = resolve_outputs(input_path, video_out, log_out, settings.write_video, overwrite)
    models = models or Models.load(settings)
    threshold = models.threshold(settings)
    processor = FrameProcessor(models, gallery, threshold, settings, info.fps)
    log = TrackLog(info.as_log(), gallery_log_info(gallery, gallery_path or getattr(gallery, "folder", None)),
                   settings.for_log(models))
    writer = AnnotatedVideoWriter(video_out, info.fps, info.width, info.height) if video_out else None
    lookahead: deque[FrameResult] = deque()
    delay = min(64, max(8, 2 * (settings.frame_skip + 1)))
    frames_done = 0
    started = time.perf_counter()

    def emit(result: FrameResult) -> None:
        if writer is not None:
            image = processor.render(result)
            encode_started = time.perf_counter()
            writer.write(image)
            processor.times.encode += time.perf_counter() - encode_started

    reader = VideoReader(input_path, queue_size=max(16, 2 * settings.batch_size))
    try:
        chunk = []
        wait_started = time.perf_counter()
        for frame in reader:
            processor.times.decode_wait += time.perf_counter() - wait_started
            chunk.append(frame)
            if len(chunk) >= settings.batch_size:
                for result in processor.process(chunk):
                    log.add(result)
                    lookahead.append(result)
                    while len(lookahead) > delay:
                        emit(lookahead.popleft())
                frames_done += len(chunk)
                chunk = []
                if progress:
                    progress(frames_done, info.frames)
            wait_started = time.perf_counter()
        for result in processor.process(chunk) if chunk else []:
            log.add(result)
            lookahead.append(result)
        frames_done += len(chunk)
        while lookahead:
            emit(lookahead.popleft())
        if progress:
            progress(frames_done, info.frames)
        if frames_done == 0:
            raise InputError(f"no frame could be decoded from {input_path}" + (f": {reader.error}" if reader.error else ""))
        document = log.document(processor.tracker)
        document["input"].update(frames_decoded=frames_done, truncated=reader.truncated)
        if writer is not None:
            encode_started = time.perf_counter()
            writer.finish(input_path if info.has_audio else None)
            processor.times.encode += time.perf_counter() - encode_started
        write_json_atomic(document, log_out)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reader.close()
    return AnnotateResult(
        video_path=video_out, log_path=log_out, info=info, frames=frames_done,
        seconds=time.perf_counter() - started, truncated=reader.truncated, warning=reader.error,
        document=document, summary=summarize(document, 1.0 / info.fps if info.fps else 0.0), times=processor.times,
    )

"""The pipeline: decode -> detect -> align -> embed -> match -> track -> draw -> encode.

One streaming frame loop (:func:`run_frames`) serves every mode: a source
of frames (a file, a camera) goes through a :class:`FrameProcessor`
(batched detect/align/embed, shot cuts, tracking and naming) and each result
is handed, in order, to the mode's sinks (video writer, track log, window,
progress). ``annotate``, ``batch`` and ``bench`` feed it a file;
``webcam`` a live source. Frames are decoded ahead in a thread, detected in
batches, faces of a whole batch are embedded together, and a short
look-ahead of frames (bounded) waits before the sinks see them so that a new
track's name is already decided on its first drawn frame.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from .align import align_face
from .device import resolve_device
from .draw import draw_faces, redact_boxes
from .errors import InputError, OutputError, UsageError
from .io import AnnotatedVideoWriter, VideoInfo, VideoReader, probe_video
from .structures import Face, FrameResult
from .track import ShotCutDetector, Tracker, TrackerSettings
from .files import publish_together, staging_path, write_atomically, write_json_atomic, write_text_atomic
from .report import ThumbnailSink, report_html
from .tracklog import TrackLog, srt, subtitle_cues, summarize, webvtt


#: the checkout (or installed tree) holding ``vidface/`` and ``weights/``
REPO_ROOT = Path(__file__).resolve().parent.parent


def weights_dir() -> Path:
    return Path(os.environ.get("VIDFACE_WEIGHTS", REPO_ROOT / "weights"))


def default_detector() -> Path:
    return weights_dir() / "yolov8n-face.safetensors"


def default_embedder() -> Path:
    return weights_dir() / "effb0-arcface.safetensors"


#: a tracked face this tall (share of the frame's height) keeps the close-up pass on every detector
#: pass: on the videofaceid clips the faces only that pass found were 30-60 % of the frame's height
LARGE_FACE = 0.25
#: frames per detector batch when the user gives none (see ``AnnotateSettings.batch_size``)
GPU_BATCH_SIZE = 8
CPU_BATCH_SIZE = 2


@dataclass
class AnnotateSettings:
    """User-facing knobs of a run (the CLI options of ``vidface annotate``).

    batch_size: frames per detector batch; ``None``: :data:`GPU_BATCH_SIZE` on a GPU,
        :data:`CPU_BATCH_SIZE` on the CPU (larger batches gain nothing there and cost memory).
    det_conf: ``None`` takes the detector's calibrated score threshold.
    match_threshold: ``None`` takes the embedder's recommended threshold.
    link_threshold: ``None`` takes the embedder's stored one (tracks of a video named
        after one another, :class:`vidface.track.Tracker`); a value above 1 turns it off (no
        two tracks' cosine similarity reaches it).
    frame_skip: run the detector on every ``frame_skip + 1``-th frame and
        carry tracks over the frames between.
    min_face: faces smaller than this (pixels, shorter box side) are ignored.
    closeups: add the detector's close-up pass (see :class:`vidface.detect.FaceDetector`).
    closeup_every: with ``closeups``, run that pass on the first detector pass of each shot,
        then every ``closeup_every``-th pass, and on every pass while a tracked face is
        large (:data:`LARGE_FACE`); 1: on every pass.
    flip_embed: embed each face and its mirror image and average the two
        (see :class:`vidface.embed.FaceEmbedder`); the stored ``match_threshold``
        is calibrated this way.
    """

    device: str = "auto"
    batch_size: int | None = None
    imgsz: int = 640
    det_conf: float | None = None
    #: a weak detection, scoring from this up to ``det_conf``, may continue a named track seen in the
    #: previous detector pass where it predicts the face, never start one (ByteTrack's low-score
    #: association, :meth:`vidface.track.Tracker.update`; ultralytics' ``track_low_thresh``); at or
    #: above ``det_conf``: off
    track_conf: float = 0.1
    match_threshold: float | None = None
    link_threshold: float | None = None
    frame_skip: int = 0
    #: embed a tracked face on every ``embed_every``-th detector pass only (1: every pass); between,
    #: a face that stays where its confirmed track predicts it is joined on position
    #: (:meth:`vidface.track.Tracker.needs_embedding`)
    embed_every: int = 5
    min_face: float = 12.0
    closeups: bool = True
    closeup_every: int = 1
    flip_embed: bool = True
    write_video: bool = True
    draw_landmarks: bool = False
    #: video encoder, a key of :data:`vidface.io.CODECS`
    codec: str = "h264"
    #: inference engine (:data:`vidface.onnx_runtime.BACKENDS`): ``"torch"``, ``"onnx"`` (ONNX Runtime),
    #: ``"openvino"``, ``"openvino-bf16"``, ``"openvino-int8"`` (the last four CPU only), or
    #: ``"auto"``: the first of :data:`AUTO_ENGINES` this CPU runs, PyTorch on a GPU
    backend: str = "auto"
    #: cover faces in the output video: ``None``, ``"unknown"`` (everyone not named) or ``"all"``
    redact: str | None = None
    #: how: ``"blur"`` or ``"pixelate"`` (:func:`vidface.draw.redact_boxes`)
    redact_style: str = "blur"
    #: also write WebVTT and SRT subtitles naming who is on screen (beside the log)
    subtitles: bool = False
    #: also write the one-file HTML report: timeline, screen time, best face per person (beside the log)
    report: bool = False
    detector: Path = field(default_factory=default_detector)
    embedder: Path = field(default_factory=default_embedder)

    def resolved(self, models: "Models") -> "AnnotateSettings":
        """These settings with what was left to the models filled in: the one place where a run's
        ``det_conf``, ``match_threshold``, ``link_threshold``, ``batch_size`` and the engine ``auto`` chose
        (``backend``) are decided; every stage reads them from here."""
        batch_size = self.batch_size or (GPU_BATCH_SIZE if models.device.startswith("cuda") else CPU_BATCH_SIZE)
        link = self.link_threshold
        if link is None:
            link = getattr(getattr(models.embedder, "config", None), "link_threshold", None)
        return replace(self, det_conf=float(models.detector.conf), match_threshold=models.threshold(self),
                       link_threshold=link, batch_size=batch_size,
                       backend=getattr(models.detector, "backend", self.backend))

    def for_log(self) -> dict:
        """The settings as JSON values (call on :meth:`resolved` settings: the thresholds as run)."""
        values = asdict(self)
        values["detector"], values["embedder"] = str(self.detector), str(self.embedder)
        return values


def resolve_backend(name: str, device) -> str:
    """``auto`` -> the fastest engine measured on a CPU (``vidface eval backends``, ``vidface bench``) whose
    answers hold, that is installed and that this CPU computes natively (bf16); PyTorch on a GPU or when
    none is installed."""
    from .onnx_runtime import BACKENDS, ENGINE_PACKAGES, cpu_computes_bf16, engine_available

    def runs_here(engine: str) -> bool:
        if not engine_available(engine):
            return False
        return cpu_computes_bf16() if engine == "openvino-bf16" else True

    if name == "auto":
        if str(device) != "cpu":
            return "torch"
        return next((engine for engine in AUTO_ENGINES if runs_here(engine)), "torch")
    if name not in BACKENDS:
        raise UsageError(f"--backend {name!r}: choose auto, {', '.join(BACKENDS)}")
    if not engine_available(name):
        raise UsageError(f"--backend {name} is not installed: pip install {ENGINE_PACKAGES[name]}")
    return name


#: CPU engines in the order ``--backend auto`` tries them (fastest first, as measured); bf16 only on CPUs
#: that compute it (AVX-512 BF16, AMX), where it keeps every videofaceid, LFW and WIDER figure. Not the
#: int8 detector (``openvino-int8``, 1.1 times f32 end to end on a CPU with VNNI): for the 640-px weights of
#: 2026-12-04 its WIDER AP falls by 1.0 / 0.6 / 0.3 points, beyond the half point an engine may cost
#: (README, "Engines and speed")
AUTO_ENGINES = ("openvino-bf16", "openvino", "onnx")


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
        backend = resolve_backend(settings.backend, device)
        detector = FaceDetector(Path(settings.detector), device, imgsz=settings.imgsz, conf=settings.det_conf,
                                closeups=settings.closeups, backend=backend)
        embedder = FaceEmbedder(Path(settings.embedder), device, flip=settings.flip_embed, backend=backend)
        return cls(detector, embedder, str(device))

    def threshold(self, settings: AnnotateSettings) -> float:
        if settings.match_threshold is not None:
            return settings.match_threshold
        return float(self.embedder.config.match_threshold)


@dataclass
class StageTimes:
    """Seconds spent per stage (wall clock, this thread), and how many faces were embedded
    (``--embed-every`` leaves some out)."""

    decode_wait: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    track_draw: float = 0.0
    encode: float = 0.0  # waiting for the encoder thread, and the audio mux at the end
    faces_embedded: int = 0


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
    if not parent.is_dir():
        raise OutputError(f"output folder is a file: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder is not writable: {parent}")
    try:  # a real write: permissions say yes to root everywhere, read-only and special file systems say no
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise OutputError(f"cannot write in {parent}: {error.strerror or error}") from None


@dataclass
class OutputPaths:
    """Where one input's outputs go (``None``: not written). Subtitles and the report sit beside the log."""

    video: Path | None
    log: Path
    subtitles: tuple[Path, Path] | None = None
    report: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.video, self.log, *(self.subtitles or ()), self.report) if p is not None]


def resolve_outputs(input_path: Path, video_out: Path | None, log_out: Path | None, write_video: bool,
                    overwrite: bool, subtitles: bool = False, report: bool = False) -> OutputPaths:
    """The output paths of a run (defaults beside the input), every one checked before any work starts."""
    default_video, default_log = default_outputs(Path(input_path))
    video_out = Path(video_out) if video_out else (default_video if write_video else None)
    log_out = Path(log_out) if log_out else default_log
    paths = OutputPaths(video_out, log_out, (log_out.with_suffix(".vtt"), log_out.with_suffix(".srt"))
                        if subtitles else None, log_out.with_suffix(".html") if report else None)
    for path in paths.all():
        check_output(path, input_path, overwrite)
    return paths


class FrameProcessor:
    """Detects, embeds, matches and tracks batches of frames; shared by every mode.

    Every frame is checked for a hard shot cut (which closes all tracks and is
    always detected, restarting the ``frame_skip`` cadence); every
    ``frame_skip + 1``-th frame of a shot is detected, the others carry the
    tracks over.
    """

    def __init__(self, models: Models, gallery, settings: AnnotateSettings,
                 tracker_settings: TrackerSettings | None = None):
        if settings.match_threshold is None or settings.det_conf is None:
            settings = settings.resolved(models)
        self.models = models
        self.gallery = gallery
        self.threshold = settings.match_threshold
        self.settings = settings
        judged = getattr(models.embedder, "judges_faces", False)
        tracker_settings = replace(tracker_settings or TrackerSettings(), embed_every=settings.embed_every,
                                   non_face_min_height=models.embedder.config.non_face_min_height if judged else None)
        self.tracker = Tracker(gallery, self.threshold, tracker_settings, link_threshold=settings.link_threshold)
        self.cuts = ShotCutDetector()
        self.times = StageTimes()
        self._last_detected = -1
        self._cadence = 0
        self._passes_since_closeup: int | None = None

    def process(self, frames: list) -> list[FrameResult]:
        """Results for consecutive ``frames``, in order."""
        step = self.settings.frame_skip + 1
        started = time.perf_counter()
        cut_flags, detect_mask = [], []
        for frame in frames:
            cut = self.cuts.is_cut(frame.image)
            if cut:
                self._cadence = 0
            detect_mask.append(self._cadence % step == 0)
            cut_flags.append(cut)
            self._cadence += 1
        detected_frames = [(f, cut) for f, wanted, cut in zip(frames, detect_mask, cut_flags) if wanted]
        closeups = self._closeup_flags(detected_frames)
        self.times.track_draw += time.perf_counter() - started
        started = time.perf_counter()
        images = [frame.image for frame, _ in detected_frames]
        detections = (self.models.detector(images, closeups=closeups, min_score=self.settings.track_conf)
                      if images else [])
        self.times.detect += time.perf_counter() - started

        started = time.perf_counter()
        per_frame_faces, per_frame_weak, to_embed, crops = [], [], [], []
        cut_in_batch = False
        for passes_ahead, ((frame, cut), found) in enumerate(zip(detected_frames, detections), start=1):
            cut_in_batch = cut_in_batch or cut
            sized = [d for d in found if min(d.width, d.height) >= self.settings.min_face]
            faces = [Face(d) for d in sized if d.score > self.settings.det_conf]
            per_frame_weak.append([Face(d) for d in sized if d.score <= self.settings.det_conf])
            if cut_in_batch or not faces:
                needed = [True] * len(faces)
            else:
                needed = self.tracker.needs_embedding(frame.index, np.stack([f.detection.box for f in faces]),
                                                      passes_ahead)
            for face, wanted in zip(faces, needed):
                if wanted:
                    to_embed.append(face)
                    crops.append(align_face(frame.image, face.detection.landmarks, face.detection.box))
            per_frame_faces.append(faces)
        embeddings, non_face = self.models.embedder.embed_and_judge(crops) if crops else (None, None)
        self.times.faces_embedded += len(crops)
        matches = self.gallery.match(embeddings, self.threshold) if self.gallery is not None and crops else []
        for index, face in enumerate(to_embed):
            face.embedding = embeddings[index]
            face.match = matches[index] if matches else None
            face.non_face = None if non_face is None else float(non_face[index])
        self.times.embed += time.perf_counter() - started

        started = time.perf_counter()
        results = []
        detected_iter = iter(zip(per_frame_faces, per_frame_weak))
        for frame, wanted, cut in zip(frames, detect_mask, cut_flags):
            if cut:
                self.tracker.cut()
            if wanted:
                faces = self.tracker.update(frame.index, *next(detected_iter))
                self._last_detected = frame.index
            else:
                faces = self.tracker.carry(frame.index, self._last_detected)
            results.append(FrameResult(frame, faces, detected=wanted))
        self.times.track_draw += time.perf_counter() - started
        return results

    def _closeup_flags(self, detected_frames: list) -> list[bool]:
        """Which of these ``(frame, cut)`` detector passes also run the close-up pass (``closeup_every``)."""
        every = self.settings.closeup_every
        if not self.settings.closeups or every <= 1:
            return [self.settings.closeups] * len(detected_frames)
        flags = []
        for frame, cut in detected_frames:
            due = (cut or self._passes_since_closeup is None or self._passes_since_closeup + 1 >= every
                   or self.tracker.has_large_face(frame.image.shape[0], LARGE_FACE))
            self._passes_since_closeup = 0 if due else self._passes_since_closeup + 1
            flags.append(due)
        return flags

    def finish(self) -> None:
        """The stream ended: tracks seen in its last detector pass are kept, however short."""
        self.tracker.finish()

    def render(self, result: FrameResult) -> np.ndarray:
        """Draw the confirmed faces of ``result`` with their track's identity as decided now (after
        covering the faces ``settings.redact`` asks to hide)."""
        started = time.perf_counter()
        image = result.frame.image
        if self.settings.redact:
            image = redact_boxes(image, self.boxes_to_redact(result), self.settings.redact_style)
        shown = [self.tracker.describe(face) for face in result.faces if self.tracker.confirmed(face.track_id)]
        image = draw_faces(image, shown, landmarks=self.settings.draw_landmarks)
        self.times.track_draw += time.perf_counter() - started
        return image

    def boxes_to_redact(self, result: FrameResult) -> list[np.ndarray]:
        """Boxes to cover on ``result``'s frame: its faces, and the faces of tracks the detector missed here
        but saw before and after (interpolated), whose track is unnamed (or all, with ``redact="all"``)."""
        everyone = self.settings.redact == "all"

        def hidden(track_id: int) -> bool:
            track = self.tracker.tracks.get(track_id)
            return everyone or track is None or track.label is None

        boxes = [face.detection.box for face in result.faces if hidden(face.track_id)]
        present = {face.track_id for face in result.faces}
        for track in self.tracker.seen_around(result.frame.index):
            if track.track_id not in present and hidden(track.track_id):
                box = track.box_between_detections(result.frame.index)
                if box is not None:
                    boxes.append(box)
        return boxes


class Sink(Protocol):
    """Where results go: each gets every frame's result in order, then ``close`` (or ``abort``)."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class VideoSink:
    """Draws each result and encodes it; ``close`` adds the source's audio and renames into place."""

    def __init__(self, processor: FrameProcessor, writer: AnnotatedVideoWriter, audio_source: Path | None = None,
                 real_time: bool = False):
        self.processor, self.writer, self.audio_source = processor, writer, audio_source
        self.real_time = real_time

    def write(self, result: FrameResult) -> None:
        image = self.processor.render(result)
        started = time.perf_counter()
        self.writer.write(image, result.frame.time_s if self.real_time else None)
        self.processor.times.encode += time.perf_counter() - started

    def close(self) -> None:
        started = time.perf_counter()
        self.writer.finish(self.audio_source)
        self.processor.times.encode += time.perf_counter() - started

    def abort(self) -> None:
        self.writer.abort()


class LogSink:
    """Collects the track log; ``document`` is ready after ``close``."""

    def __init__(self, log: TrackLog, tracker: Tracker):
        self.log, self.tracker = log, tracker
        self.document: dict | None = None

    def write(self, result: FrameResult) -> None:
        self.log.add(result)

    def close(self) -> None:
        self.document = self.log.document(self.tracker)

    def abort(self) -> None:
        pass


def run_frames(frames: Iterable, processor: FrameProcessor, sinks: list, batch_size: int = 8, lookahead: int = 0,
               on_batch: Callable[[int], bool | None] | None = None, interruptible: bool = False) -> int:
    """The frame loop of every mode: ``frames`` -> ``processor`` -> each sink, in order.

    ``lookahead`` results wait before the sinks see them (names settle on a
    track's first frames); ``on_batch(frames_done)`` is called after each
    batch and stops the loop when it returns ``False``. Sinks are closed when
    the frames end (or the loop is stopped; with ``interruptible``, also on
    Ctrl-C, the way a live session ends), aborted on any error. Returns the
    number of frames processed.
    """
    waiting: deque[FrameResult] = deque()
    done = 0

    def hand_over(results: list[FrameResult], keep: int) -> None:
        waiting.extend(results)
        while len(waiting) > keep:
            result = waiting.popleft()
            for sink in sinks:
                sink.write(result)

    try:
        chunk = []
        try:
            wait_started = time.perf_counter()
            for frame in frames:
                processor.times.decode_wait += time.perf_counter() - wait_started
                chunk.append(frame)
                if len(chunk) >= batch_size:
                    hand_over(processor.process(chunk), lookahead)
                    done += len(chunk)
                    chunk = []
                    if on_batch is not None and on_batch(done) is False:
                        break
                wait_started = time.perf_counter()
        except KeyboardInterrupt:
            if not interruptible:
                raise
            chunk = []
        if chunk:
            hand_over(processor.process(chunk), lookahead)
            done += len(chunk)
            if on_batch is not None:
                on_batch(done)
        processor.finish()
        hand_over([], 0)
        if done:
            for sink in sinks:
                sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return done


def companion_documents(paths: OutputPaths, document: dict, thumbnails, info: VideoInfo) -> dict[Path, str]:
    """The text outputs made from the finished log: subtitles and the HTML report, by path."""
    texts: dict[Path, str] = {}
    frame_duration = 1.0 / info.fps if info.fps else 0.0
    if paths.subtitles:
        cues = subtitle_cues(document, frame_duration)
        texts[paths.subtitles[0]], texts[paths.subtitles[1]] = webvtt(cues), srt(cues)
    if paths.report:
        texts[paths.report] = report_html(document, thumbnails.jpegs() if thumbnails else {}, Path(info.path).name,
                                          paths.log)
    return texts


def write_people_embeddings(document: dict, tracker: Tracker, path: Path) -> Path:
    """Each person's mean embedding in ``document`` (a gallery name or ``unknown-N``: their tracks
    pooled), as an npz without pickled objects: ``ids`` ``(P,)`` strings, ``known`` ``(P,)`` bools,
    ``embeddings`` ``float32 (P, D)`` unit vectors, ``faces`` ``(P,)`` how many faces each averages.
    What lets a batch tell that a stranger of one video is a stranger of another, and lets
    ``vidface search --archive`` find a face in videos annotated long ago."""
    tracks_of: dict[str, list[int]] = {}
    known: dict[str, bool] = {}
    for track in document["tracks"]:
        tracks_of.setdefault(track["display_id"], []).append(track["track_id"])
        known[track["display_id"]] = track["identity"] is not None
    pooled = {name: tracker.pooled_embedding(ids) for name, ids in tracks_of.items()}
    ids = [name for name in tracks_of if pooled[name][0] is not None]
    dim = pooled[ids[0]][0].shape[0] if ids else 0
    embeddings = np.array([pooled[name][0] for name in ids], np.float32).reshape(len(ids), dim)
    return write_atomically(path, lambda temporary: np.savez(
        temporary, ids=np.array(ids, dtype=str), known=np.array([known[name] for name in ids], bool),
        embeddings=embeddings, faces=np.array([pooled[name][1] for name in ids], np.int64)))


@dataclass
class PersonEmbedding:
    """One person's pooled embedding in one video (see :func:`write_people_embeddings`).

    embedding: ``float32 (D,)`` unit vector; faces: how many faces it averages.
    """

    known: bool
    embedding: np.ndarray
    faces: int


def read_people_embeddings(path: Path) -> dict[str, PersonEmbedding]:
    """What :func:`write_people_embeddings` wrote, by display id (``{}`` when missing or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {str(name): PersonEmbedding(bool(known), vector, int(faces))
                    for name, known, vector, faces in zip(data["ids"], data["known"], data["embeddings"],
                                                          data["faces"])}
    except (OSError, ValueError, KeyError):
        return {}


#: the most frames, and decoded bytes, one processing batch holds (its frames wait in memory until it is processed)
MAX_FRAMES_PER_BATCH = 32
MAX_BATCH_BYTES = 256 * 2**20


def frames_per_batch(settings: AnnotateSettings, frame_bytes: int = 0) -> int:
    """Frames read per processing batch of a file whose decoded frames take ``frame_bytes`` each: enough
    for ``batch_size`` detector passes when ``frame_skip`` leaves frames out (a lone frame uses two CPU
    cores far worse than two: 36 against 23 ms a frame on the 2-core CPU of 2026-12-03), within
    :data:`MAX_FRAMES_PER_BATCH` and :data:`MAX_BATCH_BYTES`, never fewer than ``batch_size``."""
    most = MAX_FRAMES_PER_BATCH if frame_bytes <= 0 else min(MAX_FRAMES_PER_BATCH, MAX_BATCH_BYTES // frame_bytes)
    return max(settings.batch_size, min(most, settings.batch_size * (settings.frame_skip + 1)))


def lookahead_frames(settings: AnnotateSettings) -> int:
    """Frames that wait before drawing: a new track's name settles first; with redaction, also long enough
    to see a face again after the detector missed it (its box is interpolated over the gap)."""
    frames = max(8, 2 * (settings.frame_skip + 1))
    if settings.redact:
        frames = max(frames, 4 * (settings.frame_skip + 1))
    return min(64, frames)


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
    manifest: tuple[Path, Callable[["AnnotateResult"], dict]] | None = None,
    embeddings_out: Path | None = None,
) -> AnnotateResult:
    """Annotate one video file; returns what was written. See :class:`AnnotateSettings`.

    gallery: a built :class:`vidface.gallery.Gallery` (or ``None``: everyone is unknown).
    progress: called as ``progress(frames_done, frames_expected)`` after each batch.
    manifest: ``(path, make)``: a JSON document ``make(result)`` written with the
        outputs and published last, after them (``vidface batch``'s done-file).
    embeddings_out: also write each person's mean embedding here, published
        with the other outputs (see :func:`write_people_embeddings`).
    The outputs are written under hidden names and renamed into place together
    at the end: a failure leaves the previous outputs, if any, untouched.
    """
    settings = settings or AnnotateSettings()
    input_path = Path(input_path)
    info = probe_video(input_path)
    paths = resolve_outputs(input_path, video_out, log_out, settings.write_video, overwrite, settings.subtitles,
                            settings.report)
    video_out, log_out = paths.video, paths.log
    models = models or Models.load(settings)
    settings = settings.resolved(models)
    processor = FrameProcessor(models, gallery, settings)
    log = LogSink(TrackLog(info.as_log(), gallery_log_info(gallery, gallery_path or getattr(gallery, "folder", None)),
                           settings.for_log()), processor.tracker)
    thumbnails = ThumbnailSink() if settings.report else None
    sinks: list = [log] + ([thumbnails] if thumbnails else [])
    staged_video = staging_path(video_out) if video_out else None
    staged_log = staging_path(log_out)
    if video_out:
        writer = AnnotatedVideoWriter(staged_video, info.fps, info.width, info.height, codec=settings.codec)
        sinks.append(VideoSink(processor, writer, input_path if info.has_audio else None))
    started = time.perf_counter()

    def on_batch(done: int) -> None:
        if progress:
            progress(done, info.frames)

    chunk = frames_per_batch(settings, info.width * info.height * 3)
    reader = VideoReader(input_path, queue_size=max(8, 2 * settings.batch_size))
    try:
        frames_done = run_frames(reader, processor, sinks, chunk, lookahead=lookahead_frames(settings),
                                 on_batch=on_batch)
        if frames_done == 0:
            raise InputError(f"no frame could be decoded from {input_path}" + (f": {reader.error}" if reader.error else ""))
        document = log.document
        document["input"].update(frames_decoded=frames_done, truncated=reader.truncated)
        result = AnnotateResult(
            video_path=video_out, log_path=log_out, info=info, frames=frames_done,
            seconds=time.perf_counter() - started, truncated=reader.truncated, warning=reader.error,
            document=document, summary=summarize(document, 1.0 / info.fps if info.fps else 0.0),
            times=processor.times,
        )
        staged = [(staged_video, video_out)] * bool(video_out) + [(staged_log, log_out)]
        companions = companion_documents(paths, document, thumbnails, info)
        try:
            for final, text in companions.items():
                write_text_atomic(text, staging_path(final))
                staged.append((staging_path(final), final))
            write_json_atomic(document, staged_log)
            if embeddings_out is not None:
                write_people_embeddings(document, processor.tracker, staging_path(embeddings_out))
                staged.append((staging_path(embeddings_out), embeddings_out))
            if manifest is not None:
                staged_manifest = staging_path(manifest[0])
                write_json_atomic(manifest[1](result), staged_manifest)
                staged.append((staged_manifest, manifest[0]))
            publish_together(staged)
        except OSError as error:
            raise OutputError(f"cannot write the outputs of {input_path}: {error.strerror or error}") from None
    finally:
        reader.close()
        leftovers = [staged_video, staged_log, *(staging_path(p) for p in paths.all())]
        extras = [staging_path(extra) for extra in (manifest[0] if manifest else None, embeddings_out) if extra]
        for path in leftovers + extras:
            if path is not None:
                path.unlink(missing_ok=True)
    return result

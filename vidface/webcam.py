"""``vidface webcam``: live recognition from a camera, a stream or a file.

Latency comes first: the reader keeps only the newest frame, so when
processing is slower than the camera, stale frames are dropped instead of
queued and the picture never lags behind reality. With ``frame_skip`` the
detector runs on every ``N+1``-th processed frame; tracks (and their names)
are carried over the frames between. ``q``/Esc in the window, Ctrl-C, or
the end of a file source stop the session; the recording and the log are
finished either way.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .draw import draw_fps
from .errors import InputError, OutputError
from .io import AnnotatedVideoWriter, VideoReader
from .pipeline import FrameProcessor, Models, gallery_log_info
from .files import write_json_atomic
from .tracklog import TrackLog, summarize

WINDOW = "vidface"


@dataclass
class WebcamResult:
    frames_shown: int
    frames_dropped: int
    seconds: float
    record_path: Path | None
    log_path: Path | None
    summary: list[dict]


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def parse_source(camera: int, source: str | None) -> int | str:
    if source is None:
        return camera
    if source.isdigit():
        return int(source)
    if "://" not in source and not Path(source).exists():
        raise InputError(f"source not found: {source}")
    return source


class RateMeter:
    """Frames per second from a real clock, over the last ``window_s`` seconds (``None`` until two frames)."""

    def __init__(self, window_s: float = 2.0, clock=time.perf_counter):
        self.window_s, self.clock = window_s, clock
        self._times: deque[float] = deque()

    def tick(self) -> float | None:
        now = self.clock()
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2 or now <= self._times[0]:
            return None
        return (len(self._times) - 1) / (now - self._times[0])


class LiveSink:
    """A live session's output: each result drawn once, the measured FPS on it, recorded with its real
    time since the session began (variable frame rate), and shown in a window."""

    def __init__(self, processor: FrameProcessor, record: Path | None, fps: float, display: bool,
                 codec: str = "h264", clock=time.perf_counter):
        self.processor, self.record, self.fps, self.display = processor, record, fps, display
        self.codec, self.clock = codec, clock
        self.meter = RateMeter(clock=clock)
        self.writer: AnnotatedVideoWriter | None = None
        self.started: float | None = None
        self.shown = 0
        self.quit_requested = False

    def write(self, result) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        image = self.processor.render(result)
        draw_fps(image, self.meter.tick())
        if self.record is not None:
            if self.writer is None:
                height, width = image.shape[:2]
                self.writer = AnnotatedVideoWriter(Path(self.record), self.fps, width, height, codec=self.codec)
            self.writer.write(image, now - self.started)
        self.shown += 1
        if self.display:
            import cv2

            cv2.imshow(WINDOW, image)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self.quit_requested = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.finish(None)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def run_webcam(source: int | str, gallery, settings, models: Models | None = None, record: Path | None = None,
               log: Path | None = None, display: bool = True, max_seconds: float | None = None,
               overwrite: bool = False) -> WebcamResult:
    """Run a live session until the user quits, the source ends, or ``max_seconds`` pass."""
    from .pipeline import LogSink, check_output, run_frames

    if display and not display_available():
        raise InputError("no display available for the live window (use --no-display to record/log only)")
    for path in (record, log):
        if path is not None:
            check_output(Path(path), Path(os.devnull), overwrite)
    models = models or Models.load(settings)
    settings = settings.resolved(models)
    is_file = isinstance(source, str) and "://" not in source
    reader = VideoReader(Path(source) if is_file else source, latest_only=True,
                         backend="auto" if is_file else "cv2")
    fps = reader.info.fps if reader.info else 30.0
    processor = FrameProcessor(models, gallery, settings)
    width, height = (reader.info.width, reader.info.height) if reader.info else (None, None)
    info = {"path": str(source), "width": width, "height": height, "fps": round(fps, 4),
            "frames": None, "duration_s": None, "live": True}
    log_sink = LogSink(TrackLog(info, gallery_log_info(gallery, getattr(gallery, "folder", None)),
                                settings.for_log()), processor.tracker)
    live = LiveSink(processor, record, fps, display, codec=settings.codec)
    started = time.perf_counter()

    def keep_going(_done: int) -> bool:
        out_of_time = max_seconds is not None and time.perf_counter() - started >= max_seconds
        return not (live.quit_requested or out_of_time)

    try:
        # Ctrl-C is the normal way to stop a headless session: it ends the session, keeping the recording
        run_frames(reader, processor, [log_sink, live], batch_size=1, lookahead=0, on_batch=keep_going,
                   interruptible=True)
    finally:
        reader.close()
        if display:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001 - a window that never opened
                pass
    if live.shown == 0:
        raise InputError(f"no frame could be read from {source}" + (f": {reader.error}" if reader.error else ""))
    document = log_sink.document
    document["input"]["frames"] = live.shown
    document["input"]["frames_dropped"] = reader.frames_dropped
    if log is not None:
        try:
            write_json_atomic(document, Path(log))
        except OSError as error:
            raise OutputError(f"cannot write log {log}: {error}") from None
    return WebcamResult(live.shown, reader.frames_dropped, time.perf_counter() - started, record, log,
                        summarize(document))

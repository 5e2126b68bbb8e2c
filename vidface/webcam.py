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


def run_webcam(source: int | str, gallery, settings, models: Models | None = None, record: Path | None = None,
               log: Path | None = None, display: bool = True, max_seconds: float | None = None,
               overwrite: bool = False) -> WebcamResult:
    """Run a live session until the user quits, the source ends, or ``max_seconds`` pass."""
    from .pipeline import check_output

    if display and not display_available():
        raise InputError("no display available for the live window (use --no-display to record/log only)")
    for path in (record, log):
        if path is not None:
            check_output(Path(path), Path(os.devnull), overwrite)
    models = models or Models.load(settings)
    threshold = models.threshold(settings)
    is_file = isinstance(source, str) and "://" not in source
    reader = VideoReader(Path(source) if is_file else source, latest_only=True,
                         backend="auto" if is_file else "cv2")
    fps = reader.info.fps if reader.info else 30.0
    processor = FrameProcessor(models, gallery, threshold, settings, fps)
    track_log = None
    writer = None
    started = time.perf_counter()
    shown = 0
    recent: list[float] = []
    try:
        import cv2

        for frame in reader:
            if track_log is None:
                height, width = frame.image.shape[:2]
                info = {"path": str(source), "width": width, "height": height, "fps": round(fps, 4),
                        "frames": None, "duration_s": None, "live": True}
                track_log = TrackLog(info, gallery_log_info(gallery, getattr(gallery, "folder", None)),
                                     settings.for_log(models))
                if record is not None:
                    writer = AnnotatedVideoWriter(Path(record), fps, width, height)
            result = processor.process([frame])[0]
            track_log.add(result)
            image = processor.render(result)
            now = time.perf_counter()
            recent = [t for t in recent if now - t < 1.0] + [now]
            draw_fps(image, len(recent) / max(now - recent[0], 1e-3) if len(recent) > 1 else 0.0)
            if writer is not None:
                writer.write(image)
            shown += 1
            if display:
                cv2.imshow(WINDOW, image)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if max_seconds is not None and now - started >= max_seconds:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop a headless session
    finally:
        reader.close()
        if display:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001 - a window that never opened
                pass
    if shown == 0:
        if writer is not None:
            writer.abort()
        raise InputError(f"no frame could be read from {source}" + (f": {reader.error}" if reader.error else ""))
    if writer is not None:
        writer.finish(None)
    document = track_log.document(processor.tracker)
    document["input"]["frames"] = shown
    document["input"]["frames_dropped"] = reader.frames_dropped
    if log is not None:
        try:
            write_json_atomic(document, Path(log))
        except OSError as error:
            raise OutputError(f"cannot write log {log}: {error}") from None
    return WebcamResult(shown, reader.frames_dropped, time.perf_counter() - started, record, log,
                        summarize(document))

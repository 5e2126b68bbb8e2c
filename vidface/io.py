"""Video in and out: threaded decoding, annotated encoding with the audio kept.

Decoding runs in a background thread that fills a bounded queue, so the
detector never waits on the decoder and memory stays bounded however long
the video is. PyAV is used first (real timestamps, rotation metadata); the
``cv2.VideoCapture`` fallback covers sources PyAV cannot open (cameras).
Encoding goes through PyAV (H.264 by libx264 by default: plays in browsers,
about the input's size) into a hidden temporary file, each frame stamped
with its own time (a live session's variable frame rate is kept); the
original audio is then remuxed beside it and the result renamed to the
final name, so a killed run never leaves a half-written output.
"""

from __future__ import annotations

import functools
import heapq
import os
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import InputError, OutputError
from .structures import Frame

_END = object()


@dataclass(frozen=True)
class VideoInfo:
    """What is known of a video before decoding it.

    width, height: pixels of the upright (rotation-corrected) frames.
    fps: average frame rate; frames: frame count from the container (0 when
    unknown); duration_s: seconds; rotation: degrees of the display matrix.
    """

    path: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    rotation: int = 0
    has_audio: bool = False
    codec: str = ""
    backend: str = "pyav"

    def as_log(self) -> dict:
        return {"path": self.path, "width": self.width, "height": self.height, "fps": round(self.fps, 4),
                "frames": self.frames, "duration_s": round(self.duration_s, 4)}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a video: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"input is not readable: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"input is empty (0 bytes): {path}")


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` and read its video stream's properties; :class:`InputError` if it is not a video.

    PyAV is tried first; a file it cannot open is tried with ``cv2.VideoCapture``.
    """
    path = Path(path)
    _check_file(path)
    stat = path.stat()
    # one run probes its input up to three times (the CLI's check, the run, the reader): once per file version
    return _probe_file(str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _probe_file(path_text: str, _mtime_ns: int, _size: int, _inode: int) -> VideoInfo:
    path = Path(path_text)
    try:
        return _probe_pyav(path)
    except _StillImage as error:
        raise InputError(str(error)) from None
    except InputError as error:
        fallback = _probe_cv2(path)
        if fallback is None:
            raise error
        return fallback


class _StillImage(InputError):
    """A photo where a video was expected: OpenCV would open it as a one-frame video; PyAV knows better."""


def _probe_cv2(path: Path) -> VideoInfo | None:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None
        ok, image = capture.read()
        if not ok or image is None:
            return None
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        height, width = image.shape[:2]
        return VideoInfo(str(path), width, height, fps, frames, frames / fps if fps else 0.0, backend="cv2")
    finally:
        capture.release()


def _probe_pyav(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"no video stream in {path}")
            if container.format.name == "image2" or container.format.name.endswith("_pipe"):
                raise _StillImage(f"{path} is a still image, not a video (for photos: vidface detect)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            fps = float(rate) if rate else 30.0
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1e6
            frames = int(stream.frames or round(duration * fps))
            width, height = stream.codec_context.width, stream.codec_context.height
            rotation = 0
            try:
                first = next(container.decode(stream))
                rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
                width, height = first.width, first.height
            except StopIteration:
                raise InputError(f"video has no decodable frame: {path}") from None
            except av.error.FFmpegError as error:
                raise InputError(f"cannot decode {path}: {error}") from None
            if rotation in (90, 270):
                width, height = height, width
            return VideoInfo(str(path), width, height, fps, frames, duration, rotation,
                             bool(container.streams.audio), stream.codec_context.name)
    except av.error.FFmpegError as error:
        raise InputError(f"not a readable video: {path} ({error.strerror or error})") from None


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    if rotation == 90:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(image, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    return image


class VideoReader:
    """Iterates :class:`Frame` objects decoded in a background thread.

    source: a file path, a URL, or an ``int`` camera index (cv2 only).
    queue_size: frames decoded ahead; bounds memory.
    latest_only: keep only the newest frame (live use: stale frames are
        dropped, never queued); with a file, frames are also paced at the
        file's frame rate, as a camera would deliver them.
    After iteration, ``truncated`` says whether decoding stopped on an error
    (``error`` says which) and ``frames_read`` how many frames came out.
    """

    def __init__(self, source: Path | str | int, queue_size: int = 16, backend: str = "auto",
                 latest_only: bool = False):
        self.source = source
        self.latest_only = latest_only
        self._queue: queue.Queue = queue.Queue(maxsize=1 if latest_only else max(1, queue_size))
        self._stop = threading.Event()
        self.truncated = False
        self.error: str | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.backend = backend
        self.info: VideoInfo | None = None
        if not isinstance(source, int) and backend != "cv2" and Path(source).exists():
            self.info = probe_video(Path(source))
            self.backend = self.info.backend
        elif not isinstance(source, int) and backend != "cv2":
            self.backend = "pyav"  # a URL: PyAV streams it
        if isinstance(source, int) or self.backend == "cv2":
            self._capture = self._open_cv2(source if isinstance(source, int) else str(source))
            self.backend = "cv2"
        self._thread = threading.Thread(target=self._run, name="vidface-decode", daemon=True)
        self._thread.start()

    @staticmethod
    def _open_cv2(source) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            what = f"camera {source}" if isinstance(source, int) else str(source)
            raise InputError(f"cannot open {what}")
        return capture

    def _put(self, item) -> bool:
        if self.latest_only and item is not _END:
            try:
                self._queue.get_nowait()
                self.frames_dropped += 1
            except queue.Empty:
                pass
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pace(self, started: float, time_s: float) -> None:
        if self.latest_only and not isinstance(self.source, int):
            delay = started + time_s - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _run(self) -> None:
        try:
            if self.backend == "cv2":
                self._run_cv2()
            else:
                self._run_pyav()
        except Exception as error:  # surfaced to the consumer, never lost in the thread
            self.truncated, self.error = True, str(error) or type(error).__name__
        finally:
            self._put(_END)

    def _run_pyav(self) -> None:
        import av

        rotation = self.info.rotation if self.info else 0
        started = time.monotonic()
        with av.open(str(self.source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
            fps = self.info.fps if self.info else 30.0
            try:
                for frame in container.decode(stream):
                    if self._stop.is_set():
                        return
                    seconds = frame.time
                    if origin is None:
                        origin = seconds or 0.0
                    time_s = (seconds - origin) if seconds is not None else self.frames_read / fps
                    image = _upright(frame.to_ndarray(format="bgr24"), rotation)
                    self._pace(started, time_s)
                    if not self._put(Frame(image, self.frames_read, max(0.0, time_s))):
                        return
                    self.frames_read += 1
            except av.error.FFmpegError as error:
                self.truncated, self.error = True, f"decoding stopped after frame {self.frames_read}: {error}"
        if self.info and self.info.frames and self.frames_read < 0.98 * self.info.frames - 1 and not self.truncated:
            self.truncated = True
            self.error = f"only {self.frames_read} of {self.info.frames} frames could be decoded"

    def _run_cv2(self) -> None:
        capture = self._capture
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                ok, image = capture.read()
                if not ok:
                    break
                position = capture.get(cv2.CAP_PROP_POS_MSEC)
                time_s = position / 1000 if position and position > 0 else self.frames_read / fps
                if isinstance(self.source, int):
                    time_s = time.monotonic() - started
                self._pace(started, time_s)
                if not self._put(Frame(image, self.frames_read, time_s)):
                    return
                self.frames_read += 1
        finally:
            capture.release()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def temporary_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name beside ``path`` for writing before the final rename."""
    return path.with_name(f".{path.stem}.vidface-{tag}-{os.getpid()}{path.suffix}")


#: ``--codec`` choices: name -> (PyAV encoder, encoder options). H.264: x264's ``veryfast`` with its
#: quickest sub-pixel motion refinement (``subme=1``), which took a third off the encoder's CPU time on
#: a 720p clip (15.8 -> 10.8 ms a frame on 2 cores) for 6 % more bytes and 0.2 dB less PSNR, still
#: less than half the input's size; encoding shares the CPU with detection
CODECS = {
    "h264": ("libx264", {"crf": "23", "preset": "veryfast", "x264-params": "subme=1"}),
    "h264-nvenc": ("h264_nvenc", {"preset": "p4", "cq": "23"}),
    "mpeg4": ("mpeg4", {"qscale": "3"}),
}
#: the timestamps written are in these units (seconds)
_TIME_BASE = Fraction(1, 90000)
#: frames waiting for the encoder thread; bounds memory when encoding is the slow stage
ENCODE_QUEUE = 4


class AnnotatedVideoWriter:
    """Encodes frames with PyAV into a hidden file; :meth:`finish` adds the audio and renames into place.

    codec: a key of :data:`CODECS`. Frames carry their own times when given
    (``write(image, time_s)``), else ``index / fps``. Odd frame sizes are
    padded by one pixel (4:2:0 chroma needs even sizes). background: encode in
    a thread of its own (FFmpeg works without the GIL), so encoding overlaps
    detection; ``write`` waits only when :data:`ENCODE_QUEUE` frames are pending,
    and an encoder error is raised by the next ``write`` or by ``finish``. The
    images written must not be changed afterwards.
    """

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str = "h264",
                 background: bool = True):
        import av

        if codec not in CODECS:
            raise OutputError(f"unknown codec {codec!r} (choose from {', '.join(CODECS)})")
        self.path = Path(path)
        self.fps, self.size = float(fps) if fps and fps > 0 else 30.0, (width, height)
        self.codec = codec
        self._video_only = temporary_sibling(self.path, "video")
        encoder, options = CODECS[codec]
        try:
            self._container = av.open(str(self._video_only), "w", format="mp4")
            self._stream = self._container.add_stream(encoder, rate=Fraction(self.fps).limit_denominator(1001),
                                                      options=dict(options))
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.time_base = _TIME_BASE
            self._stream.codec_context.time_base = _TIME_BASE
        except (av.error.FFmpegError, OSError, ValueError) as error:
            self._video_only.unlink(missing_ok=True)
            raise OutputError(f"cannot write video to {self.path.parent} ({codec}: {error})") from None
        self.frames_written = 0
        self._last_pts = -1
        self._error: BaseException | None = None
        self._aborted = False
        self._pending: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._pending = queue.Queue(maxsize=ENCODE_QUEUE)
            self._thread = threading.Thread(target=self._encode_pending, name="vidface-encode", daemon=True)
            self._thread.start()

    def write(self, image: np.ndarray, time_s: float | None = None) -> None:
        self._raise_encoder_error()
        if self._pending is None:
            self._encode_or_fail(image, time_s)
        else:
            self._pending.put((image, time_s))

    def _encode_or_fail(self, image: np.ndarray, time_s: float | None) -> None:
        try:
            self._encode(image, time_s)
        except OSError as error:  # PyAV's errors are OSErrors: the disk is full or the file went away
            raise OutputError(f"cannot write video {self.path}: {error.strerror or error}") from None

    def _encode_pending(self) -> None:
        """The encoder thread: frames in order until the ``None`` that :meth:`_drain` sends."""
        while (item := self._pending.get()) is not None:
            if self._error is None and not self._aborted:
                try:
                    self._encode_or_fail(*item)
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    self._error = error

    def _raise_encoder_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _drain(self) -> None:
        """Wait for the encoder thread to finish what is pending, then stop it."""
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join()
            self._thread = None

    def _encode(self, image: np.ndarray, time_s: float | None) -> None:
        import av

        if image.shape[1::-1] != self.size:
            image = cv2.resize(image, self.size)
        if image.shape[1] % 2 or image.shape[0] % 2:
            image = cv2.copyMakeBorder(image, 0, image.shape[0] % 2, 0, image.shape[1] % 2, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        seconds = self.frames_written / self.fps if time_s is None else time_s
        pts = max(int(round(seconds / _TIME_BASE)), self._last_pts + 1)  # strictly increasing
        frame.pts, frame.time_base, self._last_pts = pts, _TIME_BASE, pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def finish(self, audio_source: Path | None = None) -> Path:
        """Close the video, mux in ``audio_source``'s first audio stream, and rename into place."""
        self._drain()
        self._raise_encoder_error()
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except OSError as error:
            raise OutputError(f"cannot write video {self.path}: {error.strerror or error}") from None
        muxed = temporary_sibling(self.path, "mux")
        try:
            if audio_source is None or not mux_audio(self._video_only, Path(audio_source), muxed):
                _faststart_copy(self._video_only, muxed)
            os.replace(muxed, self.path)
            self._video_only.unlink(missing_ok=True)
        finally:
            muxed.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        self._aborted = True
        self._drain()
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - a container that failed half-way is thrown away anyway
            pass
        self._video_only.unlink(missing_ok=True)
        temporary_sibling(self.path, "mux").unlink(missing_ok=True)


def _faststart_copy(source: Path, output: Path) -> None:
    """Remux ``source`` with its index first (``+faststart``): players start before the whole file arrives."""
    import av

    with av.open(str(source)) as inp, av.open(str(output), "w", format=_container_format(output),
                                              options={"movflags": "+faststart"}) as out:
        stream_in = inp.streams.video[0]
        stream = out.add_stream_from_template(stream_in)
        for packet in inp.demux(stream_in):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)


def _packets_by_time(container, stream, shift_s: float = 0.0) -> Iterator[tuple[float, int, object]]:
    """Packets of ``stream`` with their time in seconds, delayed by ``shift_s``."""
    shift = int(round(shift_s / stream.time_base)) if shift_s else 0
    for order, packet in enumerate(container.demux(stream)):
        if packet.dts is None:
            continue
        if shift:
            packet.dts += shift
            if packet.pts is not None:
                packet.pts += shift
        yield float(packet.dts * packet.time_base), order, packet


def _start_s(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def mux_audio(video_only: Path, audio_source: Path, output: Path) -> bool:
    """Copy ``video_only``'s video and ``audio_source``'s first audio stream into ``output``.

    Packets are interleaved by time, so memory stays small. Audio the
    output container cannot hold as is gets re-encoded to AAC. Returns
    ``False`` when the source has no audio.
    """
    import av

    with av.open(str(audio_source)) as audio_in:
        if not audio_in.streams.audio:
            return False
    try:
        _mux(video_only, audio_source, output, transcode=False)
    except (av.error.FFmpegError, ValueError):
        output.unlink(missing_ok=True)
        _mux(video_only, audio_source, output, transcode=True)
    return True


def _mux(video_only: Path, audio_source: Path, output: Path, transcode: bool) -> None:
    import av

    with av.open(str(video_only)) as video_in, av.open(str(audio_source)) as audio_in, \
            av.open(str(output), "w", format=_container_format(output), options=_MOV_OPTIONS.get(
                _container_format(output), {})) as out:
        video_stream_in = video_in.streams.video[0]
        audio_stream_in = audio_in.streams.audio[0]
        video_stream = out.add_stream_from_template(video_stream_in)
        if transcode:
            audio_stream = out.add_stream("aac", rate=audio_stream_in.codec_context.sample_rate or 48000)
        else:
            audio_stream = out.add_stream_from_template(audio_stream_in)
        # The re-encoded video starts at 0 and the audio keeps its timestamps: delay the video by the
        # source video's start so the two stay in sync.
        video_start = _start_s(audio_in.streams.video[0]) if audio_in.streams.video else 0.0
        merged = heapq.merge(
            ((t, 0, o, p) for t, o, p in _packets_by_time(video_in, video_stream_in, max(video_start, 0.0))),
            ((t, 1, o, p) for t, o, p in _packets_by_time(audio_in, audio_stream_in)),
        )
        for _, kind, _, packet in merged:
            if kind == 0:
                packet.stream = video_stream
                out.mux(packet)
            elif transcode:
                for frame in packet.decode():
                    frame.pts = None
                    for encoded in audio_stream.encode(frame):
                        out.mux(encoded)
            else:
                packet.stream = audio_stream
                out.mux(packet)
        if transcode:
            for encoded in audio_stream.encode(None):
                out.mux(encoded)


_MOV_OPTIONS = {"mp4": {"movflags": "+faststart"}, "mov": {"movflags": "+faststart"}}


def _container_format(path: Path) -> str:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(path.suffix.lower(), "mp4")

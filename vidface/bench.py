"""``vidface bench``: throughput of each stage and of the whole pipeline on one clip.

A benchmark, not a test: it prints figures (``--json`` for machines) and
asserts nothing. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from .io import VideoReader, probe_video


def decode_only(path: Path) -> tuple[int, float]:
    """Frames and seconds to decode ``path`` with nothing else running."""
    started = time.perf_counter()
    with VideoReader(path) as reader:
        frames = sum(1 for _ in reader)
    return frames, time.perf_counter() - started


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(path: Path, gallery_folder: Path | None, settings) -> dict:
    """Decode alone, then load the models (start-up) and run the full annotate pipeline with per-stage timers."""
    from .gallery import build_gallery
    from .onnx_runtime import default_threads
    from .pipeline import Models, annotate

    path = Path(path)
    info = probe_video(path)
    decoded, decode_seconds = decode_only(path)
    started = time.perf_counter()
    models = Models.load(settings)
    gallery = build_gallery(gallery_folder, models.detector, models.embedder) if gallery_folder else None
    startup = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        result = annotate(path, gallery, Path(scratch) / "bench.mp4" if settings.write_video else None,
                          Path(scratch) / "bench.json", settings, models)
    times = result.times
    frames = result.frames
    faces = sum(len(track["detections"]) for track in result.document["tracks"])
    detected_frames = -(-frames // (settings.frame_skip + 1))

    def stage(name: str, seconds: float, count: int = frames) -> dict:
        return {"stage": name, "seconds": round(seconds, 3), "fps": round(count / seconds, 1) if seconds > 0 else None}

    decode_fps = decoded / decode_seconds if decode_seconds else float("inf")
    end_to_end_fps = frames / result.seconds if result.seconds else float("inf")
    return {
        "input": str(path),
        "width": info.width,
        "height": info.height,
        "frames": frames,
        "faces_per_frame": round(faces / max(detected_frames, 1), 3),
        "faces_embedded": times.faces_embedded,
        "faces_detected": faces,
        "device": models.device,
        "threads": default_threads(),
        "settings": settings.resolved(models).for_log(),
        "startup_s": round(startup, 3),
        "stages": [
            stage("decode (alone)", decode_seconds, decoded),
            stage("detect", times.detect),
            stage("align+embed", times.embed),
            stage("cuts+track+draw", times.track_draw),
            stage("waiting for the encoder thread (+audio)", times.encode),
            stage("end to end", result.seconds),
        ],
        "end_to_end_fps": round(end_to_end_fps, 2),
        "decode_fps": round(decode_fps, 1),
        "slowdown_vs_decode": round(decode_fps / end_to_end_fps, 2) if end_to_end_fps else None,
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }

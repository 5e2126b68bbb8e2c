"""``vidface bench``: throughput of each stage and of the whole pipeline on one clip."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .io import VideoReader


def decode_only(path: Path) -> tuple[int, float]:
    """Frames and seconds to decode ``path`` with nothing else running."""
    started = time.perf_counter()
    with VideoReader(path) as reader:
        frames = sum(1 for _ in reader)
    return frames, time.perf_counter() - started


def run_bench(path: Path, gallery_folder: Path | None, settings) -> dict:
    """Run decode alone, then the full annotate pipeline with per-stage timers."""
    from .gallery import build_gallery
    from .pipeline import Models, annotate

    path = Path(path)
    decoded, decode_seconds = decode_only(path)
    models = Models.load(settings)
    gallery = build_gallery(gallery_folder, models.detector, models.embedder) if gallery_folder else None
    with tempfile.TemporaryDirectory() as scratch:
        result = annotate(path, gallery, Path(scratch) / "bench.mp4", Path(scratch) / "bench.json", settings, models)
    times = result.times
    frames = result.frames

    def row(stage: str, seconds: float) -> tuple[str, float, float]:
        return stage, seconds, frames / seconds if seconds > 0 else float("inf")

    return {
        "frames": frames,
        "device": models.device,
        "rows": [
            ("decode (alone)", decode_seconds, decoded / decode_seconds if decode_seconds else float("inf")),
            row("detect", times.detect),
            row("align+embed", times.embed),
            row("track+draw", times.track_draw),
            row("encode (+audio)", times.encode),
            row("end to end", result.seconds),
        ],
    }

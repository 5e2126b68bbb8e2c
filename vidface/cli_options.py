"""Command-line options shared by the user commands and ``vidface eval``, declared once.

The default thresholds are printed as numbers: they are read from the
shipped weights' metadata (no model is loaded to show ``--help``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import typer


def _weights_dir() -> Path:
    import os

    return Path(os.environ.get("VIDFACE_WEIGHTS", Path(__file__).resolve().parent.parent / "weights"))


def stored_det_conf() -> str:
    """The shipped detector's calibrated score threshold, read from its safetensors header."""
    try:
        with open(_weights_dir() / "yolov8n-face.safetensors", "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            metadata = json.loads(handle.read(length)).get("__metadata__", {})
        return f"{float(metadata['det_conf']):.3f}"
    except (OSError, ValueError, KeyError, struct.error):
        return "the detector's calibrated value"


def stored_match_threshold() -> str:
    """The shipped embedder's recommended match threshold, from its JSON config."""
    try:
        config = json.loads((_weights_dir() / "effb0-arcface.json").read_text())
        return f"{float(config['match_threshold']):.3f}"
    except (OSError, ValueError, KeyError):
        return "the embedder's recommended value"


DeviceOption = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
DetectorOption = typer.Option(None, "--detector", metavar="WEIGHTS",
                              help="detector weights (.safetensors)  [default: weights/yolov8n-face]")
EmbedderOption = typer.Option(None, "--embedder", metavar="WEIGHTS",
                              help="embedder weights (.safetensors + .json)  [default: weights/effb0-arcface]")
FlipOption = typer.Option(True, "--flip-embed/--no-flip-embed",
                          help="embed each face and its mirror image (steadier names, embedding twice the work)")
CloseupsOption = typer.Option(True, "--closeups/--no-closeups",
                              help="also look for faces that fill much of the frame (a second, small detector pass)")
DetConfOption = typer.Option(None, "--det-conf", min=0.0, max=1.0, metavar="SCORE",
                             help=f"minimum face score  [default: {stored_det_conf()}, calibrated for the detector]")
TrackConfOption = typer.Option(None, "--track-conf", min=0.0, max=1.0, metavar="SCORE",
                               help="a weaker detection, down to this score, continues a named face's track where "
                                    "it is predicted (never starts one); --det-conf or above: off  [default: 0.1]")
MatchThresholdOption = typer.Option(
    None, "--match-threshold", min=-1.0, max=1.0, metavar="COSINE",
    help=f"similarity a face needs to be named  [default: {stored_match_threshold()}, calibrated for the embedder]")
BatchSizeOption = typer.Option(None, "--batch-size", min=1, metavar="FRAMES", show_default=False,
                               help="frames per detector batch  [default: 8 on a GPU, 2 on the CPU]")
ImgszOption = typer.Option(640, "--imgsz", min=32, metavar="PX", help="detector input size (long side, pixels)")
FrameSkipOption = typer.Option(0, "--frame-skip", min=0, metavar="N",
                               help="detect every N+1-th frame, carry the tracks over the frames between")
#: (the defaults of these two live in :class:`vidface.pipeline.AnnotateSettings`)
EmbedEveryOption = typer.Option(None, "--embed-every", min=1, metavar="PASSES", show_default=False,
                                help="embed a tracked face every PASSES detector passes; between, a face that stays "
                                     "where its track predicts it keeps the track (1: embed every face)  [default: 5]")
CloseupEveryOption = typer.Option(None, "--closeup-every", min=1, metavar="PASSES", show_default=False,
                                  help="run the close-up pass on each shot's first detector pass, then every PASSES "
                                       "passes, and on every pass while a tracked face is large  [default: 1]")
OverwriteOption = typer.Option(False, "--overwrite", help="replace existing outputs")
QuietOption = typer.Option(False, "--quiet", "-q", help="no progress or summary (errors are still printed)")
JsonOption = typer.Option(False, "--json", help="print the result as JSON on stdout (human text goes to stderr)")
CodecOption = typer.Option("h264", "--codec", metavar="CODEC",
                           help="video encoder: h264 (plays everywhere), h264-nvenc (NVIDIA GPU) or mpeg4")
GalleryOption = typer.Option(None, "--gallery", "-g", metavar="DIR", help="gallery folder (one sub-folder per person)")
RedactOption = typer.Option(None, "--redact", metavar="WHO",
                            help="cover faces in the video: 'unknown' (everyone not in the gallery) or 'all'; "
                                 "the log still records them")
RedactStyleOption = typer.Option("blur", "--redact-style", metavar="STYLE", help="blur or pixelate")
SubtitlesOption = typer.Option(False, "--subtitles",
                               help="also write WebVTT and SRT subtitles naming who is on screen (beside the log)")
ReportOption = typer.Option(False, "--report", help="also write a one-file HTML report beside the log: a timeline, "
                                                    "screen time and the best face of each person")


def check_redaction(redact: str | None, style: str) -> None:
    """Refuse a ``--redact`` or ``--redact-style`` value that means nothing (exit code 2)."""
    from .draw import REDACT_STYLES
    from .errors import UsageError

    if redact not in (None, "unknown", "all"):
        raise UsageError(f"--redact {redact!r}: choose unknown or all")
    if style not in REDACT_STYLES:
        raise UsageError(f"--redact-style {style!r}: choose {' or '.join(REDACT_STYLES)}")
BackendOption = typer.Option("auto", "--backend", metavar="ENGINE",
                             help="inference engine: torch, onnx (ONNX Runtime), openvino, openvino-bf16 (faster "
                                  "on CPUs with BF16), openvino-int8 (the detector's shipped int8 network; all CPU "
                                  "only but torch; faster on CPUs with VNNI, at a point of WIDER AP) or auto (on a CPU "
                                  "OpenVINO: bf16 where the CPU has it, else f32; ONNX Runtime without OpenVINO; "
                                  "PyTorch on a GPU)")

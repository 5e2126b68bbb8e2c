"""Bad inputs, one per case we know of, through the real ``vidface`` process.

For each: exactly one line on stderr, the documented exit code, no
traceback, nothing left behind, and every input byte for byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_video

EXIT = {"usage": 2, "input": 3, "gallery": 4, "weights": 5, "output": 6, "device": 7}


@pytest.fixture(scope="module")
def world(tmp_path_factory, random_models):
    """Good and bad inputs side by side, made once for the whole module."""
    root = tmp_path_factory.mktemp("world")
    detector, embedder = random_models
    make_video(root / "good.mp4", frames=6)
    make_video(root / "nomoov.mp4", frames=30)  # moov at the end: cutting the tail loses it
    data = (root / "nomoov.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "nomoov.mp4").unlink()
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n")
    (root / "folder.mp4").mkdir()
    _audio_only(root / "audio.m4a")
    import cv2
    import numpy as np

    cv2.imwrite(str(root / "photo.jpg"), np.full((40, 60, 3), 128, np.uint8))
    (root / "notimage.jpg").write_text("text with a photo's name")
    (root / "gallery_empty").mkdir()
    (root / "gallery_file").write_text("a file")
    (root / "gallery_noface" / "Ann").mkdir(parents=True)
    cv2.imwrite(str(root / "gallery_noface" / "Ann" / "blank.png"), np.full((64, 64, 3), 90, np.uint8))
    (root / "weights_text.safetensors").write_text("not weights")
    (root / "weights_text.json").write_text("{}")
    raw = detector.read_bytes()
    (root / "detector_cut.safetensors").write_bytes(raw[: len(raw) // 3])
    (root / "embedder_noconfig.safetensors").write_bytes(embedder.read_bytes())
    (root / "existing.vidface.mp4").write_bytes(b"an earlier result")
    (root / "a_file").write_text("a file, not a folder")
    (root / "out_folder").mkdir()
    (root / "logged.json").write_text(json.dumps({"schema": 1, "input": {"path": str(root / "good.mp4")}, "tracks": [
        {"track_id": 1, "identity": None, "display_id": "unknown-1",
         "detections": [{"frame": 0, "box": [10.0, 40.0, 50.0, 80.0], "score": 0.9}]}]}))
    (root / "people.json").write_text(json.dumps({"schema": 1, "videos": 2, "people": [], "recurring_strangers": [
        {"name": "stranger-1", "videos": 2, "seconds": 2.0, "appearances": [
            {"video": str(root / "good.mp4"), "log": "logged.json", "seconds": 1.0},
            {"video": str(root / "gone.mp4"), "log": "gone.json", "seconds": 1.0}]}],
        "unknown": [{"display_id": "unknown-1", "recurring": "stranger-1", "log": "logged.json"},
                    {"display_id": "unknown-1", "recurring": "stranger-1", "log": "gone.json"}]}))
    return root


def _audio_only(path: Path) -> None:
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, index * 1600, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


GOOD = "{good}"
MODELS = ["--detector", "{detector}", "--embedder", "{embedder}", "--device", "cpu", "--imgsz", "64", "--quiet"]
CASES = [
    # videos
    ("missing video", ["annotate", "{root}/missing.mp4", *MODELS], "input"),
    ("video is a folder", ["annotate", "{root}/folder.mp4", *MODELS], "input"),
    ("empty video", ["annotate", "{root}/empty.mp4", *MODELS], "input"),
    ("text as video", ["annotate", "{root}/text.mp4", *MODELS], "input"),
    ("truncated video without index", ["annotate", "{root}/truncated.mp4", *MODELS], "input"),
    ("audio-only file", ["annotate", "{root}/audio.m4a", *MODELS], "input"),
    ("a photo given as video", ["annotate", "{root}/photo.jpg", *MODELS], "input"),
    ("bench on text", ["bench", "{root}/text.mp4", "--detector", "{detector}", "--embedder", "{embedder}",
                       "--device", "cpu"], "input"),
    # photos
    ("missing photo", ["detect", "{root}/missing.jpg", *MODELS[:-1]], "input"),
    ("text as photo", ["detect", "{root}/notimage.jpg", *MODELS[:-1]], "input"),
    ("folder as photo", ["detect", "{root}/folder.mp4", *MODELS[:-1]], "input"),
    ("embed text", ["embed", "{root}/notimage.jpg", "--detector", "{detector}", "--embedder", "{embedder}"], "input"),
    # galleries
    ("missing gallery", ["annotate", GOOD, "--gallery", "{root}/nogallery", *MODELS], "gallery"),
    ("empty gallery", ["annotate", GOOD, "--gallery", "{root}/gallery_empty", *MODELS], "gallery"),
    ("gallery is a file", ["annotate", GOOD, "--gallery", "{root}/gallery_file", *MODELS], "gallery"),
    ("person without a usable photo", ["annotate", GOOD, "--gallery", "{root}/gallery_noface", *MODELS], "gallery"),
    ("gallery show of a file", ["gallery", "show", "{root}/gallery_file", "--detector", "{detector}",
                                "--embedder", "{embedder}"], "gallery"),
    # weights
    ("detector missing", ["annotate", GOOD, *MODELS, "--detector", "{root}/none.safetensors"], "weights"),
    ("detector not weights", ["annotate", GOOD, *MODELS, "--detector", "{root}/weights_text.safetensors"], "weights"),
    ("detector cut short", ["annotate", GOOD, *MODELS, "--detector", "{root}/detector_cut.safetensors"], "weights"),
    ("embedder missing", ["annotate", GOOD, *MODELS, "--embedder", "{root}/none.safetensors"], "weights"),
    ("embedder not weights", ["annotate", GOOD, *MODELS, "--embedder", "{root}/weights_text.safetensors"], "weights"),
    ("embedder without its config", ["annotate", GOOD, *MODELS, "--embedder", "{root}/embedder_noconfig.safetensors"],
     "weights"),
    # output paths
    ("output exists", ["annotate", GOOD, "-o", "{root}/existing.vidface.mp4", *MODELS], "output"),
    ("output in a read-only place", ["annotate", GOOD, "-o", "/proc/vidface-out.mp4", *MODELS], "output"),
    ("log's parent is a file", ["annotate", GOOD, "--log", "{root}/a_file/x.json", "--overwrite", *MODELS], "output"),
    ("output is a folder", ["annotate", GOOD, "-o", "{root}/out_folder", "--overwrite", *MODELS], "output"),
    ("output is the input", ["annotate", GOOD, "-o", GOOD, "--overwrite", *MODELS], "output"),
    ("batch out-dir is a file", ["batch", GOOD, "--out-dir", "{root}/a_file", *MODELS], "output"),
    ("batch out-dir read-only", ["batch", GOOD, "--out-dir", "/proc/vidface-out", *MODELS], "output"),
    ("photo output exists", ["detect", "{root}/photo.jpg", "-o", "{root}/existing.vidface.mp4", *MODELS[:-1]],
     "output"),
    # options
    ("imgsz zero", ["annotate", GOOD, *MODELS, "--imgsz", "0"], "usage"),
    ("threshold out of range", ["webcam", "--match-threshold", "5", "--no-display", *MODELS[:-1]], "usage"),
    ("negative frame skip", ["annotate", GOOD, "--frame-skip", "-1", *MODELS], "usage"),
    ("unknown device name", ["annotate", GOOD, *MODELS, "--device", "tpu"], "usage"),
    ("unknown codec", ["annotate", GOOD, "--codec", "divx", *MODELS], "usage"),
    ("unknown option", ["annotate", GOOD, "--colour", "red", *MODELS], "usage"),
    ("a flag given a value", ["annotate", GOOD, *MODELS[:-1], "--quiet", "true"], "usage"),
    # devices and sources
    ("absent camera", ["webcam", "--camera", "7", "--no-display", *MODELS[:-1]], "input"),
    ("webcam source not a video", ["webcam", "--source", "{root}/notimage.jpg", "--no-display", *MODELS[:-1]],
     "input"),
    ("webcam source missing", ["webcam", "--source", "{root}/gone.mp4", "--no-display", *MODELS[:-1]], "input"),
    # enrolling a logged track into a gallery
    ("enroll from a missing log", ["gallery", "enroll", "{root}/gone.json", "-t", "unknown-1", "--as", "Jo",
                                   "-g", "{root}/gallery_enrolled"], "input"),
    ("enroll from a text file", ["gallery", "enroll", "{root}/notimage.jpg", "-t", "unknown-1", "--as", "Jo",
                                 "-g", "{root}/gallery_enrolled"], "input"),
    ("enroll a track the log lacks", ["gallery", "enroll", "{root}/logged.json", "-t", "unknown-5", "--as", "Jo",
                                      "-g", "{root}/gallery_enrolled"], "usage"),
    ("enroll a stranger without a name", ["gallery", "enroll", "{root}/logged.json", "-t", "unknown-1",
                                          "-g", "{root}/gallery_enrolled"], "usage"),
    ("enroll into a file", ["gallery", "enroll", "{root}/logged.json", "-t", "unknown-1", "--as", "Jo",
                            "-g", "{root}/gallery_file"], "gallery"),
    ("enroll from another video", ["gallery", "enroll", "{root}/logged.json", "-t", "unknown-1", "--as", "Jo",
                                   "--video", "{root}/text.mp4", "-g", "{root}/gallery_enrolled"], "input"),
    ("enroll a stranger the index lacks", ["gallery", "enroll", "{root}/people.json", "-t", "stranger-4", "--as",
                                           "Jo", "-g", "{root}/gallery_enrolled"], "usage"),
    ("enroll a stranger whose video is gone", ["gallery", "enroll", "{root}/people.json", "-t", "stranger-1",
                                               "--as", "Jo", "-g", "{root}/gallery_enrolled"], "input"),
    ("search nothing", ["search", "{root}/photo.jpg", *MODELS[:6]], "usage"),
    ("search a missing archive", ["search", "{root}/photo.jpg", "--archive", "{root}/no_archive", *MODELS[:6]],
     "input"),
    ("search a folder that is no archive", ["search", "{root}/photo.jpg", "--archive", "{root}/out_folder",
                                            *MODELS[:6]], "input"),
    ("batch finds nothing", ["batch", "{root}/gallery_empty", "--out-dir", "{root}/out_folder", *MODELS], "input"),
]
if not torch.cuda.is_available():
    CASES.append(("CUDA absent", ["annotate", GOOD, *MODELS, "--device", "cuda"], "device"))


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (folders marked as such)."""
    state = {}
    for path in sorted(root.rglob("*")):
        state[str(path.relative_to(root))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.mark.parametrize("name,args,kind", CASES, ids=[case[0] for case in CASES])
def test_bad_input_gives_one_line_and_its_exit_code(world, random_models, name, args, kind):
    detector, embedder = random_models
    values = {"root": world, "good": world / "good.mp4", "detector": detector, "embedder": embedder}
    command = [sys.executable, "-m", "vidface", *[arg.format(**values) for arg in args]]
    before = _snapshot(world)
    environment = {**os.environ, "VIDFACE_CACHE": str(world.parent / f"cache-{name.replace(' ', '-')}")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment,
                            stdin=subprocess.DEVNULL)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vidface: error: "), lines[0]
    assert result.returncode == EXIT[kind], (result.returncode, result.stderr)
    assert _snapshot(world) == before, "an input changed or something was left behind"

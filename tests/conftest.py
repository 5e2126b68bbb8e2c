"""Shared fixtures: small models with random weights, synthetic videos, fake stages.

Random-weight models exercise the real loading and inference code paths
(plumbing); tests that need faces found and named use the shipped weights
and the real clips in ``../shared/data`` and skip when either is absent.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidface.research.datasets import data_root
from vidface.embed import file_fingerprint, update_embedder_config
from vidface.pipeline import default_detector, default_embedder
from vidface.structures import Detection


def make_video(path: Path, frames: int = 12, size: tuple[int, int] = (160, 120), fps: int = 10,
               audio: bool = True, codec: str = "mpeg4", faststart: bool = False) -> Path:
    """Write a small test video: a moving bright square on a gradient, with a sine tone."""
    import av

    width, height = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        samples_per_frame = 16000 // fps
        if frames == 0:
            container.start_encoding()  # header only: a video without a single frame
        for index in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            x = 10 + index * 4
            image[40:80, x : x + 40] = 255
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in video.encode(frame):
                container.mux(packet)
            if sound is not None:
                t = (np.arange(samples_per_frame) + index * samples_per_frame) / 16000
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
                audio_frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                audio_frame.sample_rate = 16000
                audio_frame.pts = index * samples_per_frame
                audio_frame.time_base = Fraction(1, 16000)
                for packet in sound.encode(audio_frame):
                    container.mux(packet)
        for stream in [video] + ([sound] if sound is not None else []):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def set_display_rotation_clockwise_90(path: Path) -> Path:
    """Rewrite the first track's MP4 matrix the way phones mark a portrait recording.

    The ``tkhd`` matrix ``[0 1 0; -1 0 0; height 0 1]`` tells players to turn the
    stored frames 90 degrees clockwise (FFmpeg reports it as rotation -90).
    """
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    version = data[box + 4]
    matrix = box + 8 + (32 if version == 1 else 20) + 16
    height = struct.unpack(">I", data[matrix + 40 : matrix + 44])[0] >> 16
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, height << 16, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def random_models(tmp_path_factory) -> tuple[Path, Path]:
    """A detector and an embedder in vidface's formats, with random weights."""
    from vidface.detect import save_detector
    from vidface.embed import EmbedderConfig
    from vidface.embed_net import EmbedderNet, save_embedder
    from vidface.offline import ultralytics_offline

    ultralytics_offline()
    from ultralytics.nn.tasks import PoseModel
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    detector = save_detector(PoseModel(cfg="yolov8n-pose.yaml", nc=1, data_kpt_shape=(5, 3), verbose=False),
                             folder / "detector.safetensors")
    config = EmbedderConfig()
    embedder = save_embedder(EmbedderNet(config), config, folder / "embedder.safetensors")
    return detector, embedder


@pytest.fixture(scope="session")
def shipped_weights() -> tuple[Path, Path]:
    detector, embedder = default_detector(), default_embedder()
    if not (detector.exists() and embedder.exists()):
        pytest.skip("shipped weights not present in weights/")
    return detector, embedder


def embedder_variant(source: Path, weights: Path, **config) -> Path:
    """A copy of the embedder ``source`` (weights and JSON) at ``weights``, with these config fields changed."""
    import shutil

    shutil.copy(source, weights)
    shutil.copy(source.with_suffix(".json"), weights.with_suffix(".json"))
    if config:
        update_embedder_config(weights, **config)
    return weights


def shared(*parts: str) -> Path:
    path = data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    return make_video(tmp_path / "tiny.mp4")


class CentreDetector:
    """Stands in for the detector: one face in the middle of any image that is not blank."""

    def __init__(self, weights_path: Path):
        self.weights_path, self.settings_key, self.conf = weights_path, "centre", 0.5
        self.photo_settings_key = "centre"
        self.calls = 0

    def __call__(self, images, closeups=None, min_score=None):
        self.calls += len(images)
        results = []
        for image in images:
            height, width = image.shape[:2]
            if image.max() == image.min():
                results.append([])
                continue
            box = np.array([width * 0.25, height * 0.25, width * 0.75, height * 0.75], np.float32)
            results.append([Detection(box, 0.9, None)])
        return results


class ColourEmbedder:
    """Stands in for the embedder: the unit vector of a crop's mean colour (plus a constant)."""

    dim = 4
    flip = False

    def __init__(self, weights_path: Path):
        self.weights_path = weights_path

    @property
    def fingerprint(self) -> str:
        return file_fingerprint(self.weights_path)

    def __call__(self, crops):
        vectors = np.array([np.append(c.reshape(-1, 3).mean(axis=0), 20.0) for c in crops], np.float32).reshape(-1, 4)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_and_judge(self, crops):
        return self(crops), None


@pytest.fixture
def fake_stages(tmp_path):
    weights = tmp_path / "fake.bin"
    weights.write_bytes(b"fake model")
    return CentreDetector(weights), ColourEmbedder(weights)


@pytest.fixture(scope="session")
def _session_graphs(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-graphs")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, _session_graphs, monkeypatch):
    """A fresh cache folder per test (outside its tmp_path), sharing only the exported ONNX graphs:
    they are keyed by the weights' content, and exporting them again in every test would only cost time."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "onnx").symlink_to(_session_graphs, target_is_directory=True)
    monkeypatch.setenv("VIDFACE_CACHE", str(cache))

"""The annotate loop with stand-in detector and embedder: tracks, names, frame-skip, log schema."""

import json

import cv2
import numpy as np
import pytest

from conftest import make_video
from vidface.gallery import build_gallery
from vidface.io import VideoReader
from vidface.pipeline import AnnotateSettings, Models, annotate


@pytest.fixture
def setup(tmp_path, fake_stages):
    detector, embedder = fake_stages
    video = make_video(tmp_path / "clip.mp4", frames=20, fps=10)
    with VideoReader(video) as reader:
        first = next(iter(reader)).image
    (tmp_path / "gallery" / "Square").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "gallery" / "Square" / "still.png"), first)
    (tmp_path / "gallery" / "Blue").mkdir()
    cv2.imwrite(str(tmp_path / "gallery" / "Blue" / "b.png"), np.dstack([np.full((60, 60), 250, np.uint8),
                                                                          np.zeros((60, 60), np.uint8),
                                                                          np.zeros((60, 60), np.uint8)]) + 1)
    models = Models(detector, embedder, "cpu")
    gallery = build_gallery(tmp_path / "gallery", detector, embedder)
    return video, models, gallery


def test_every_frame_is_logged_under_one_named_track(setup, tmp_path):
    video, models, gallery = setup
    settings = AnnotateSettings(match_threshold=0.99, batch_size=3)
    result = annotate(video, gallery, tmp_path / "out.mp4", tmp_path / "out.json", settings, models)
    log = json.loads((tmp_path / "out.json").read_text())
    assert log == result.document
    assert log["gallery"]["identities"] == ["Blue", "Square"]
    assert len(log["tracks"]) == 1
    track = log["tracks"][0]
    assert track["identity"] == "Square" and track["display_id"] == "Square" and track["score"] >= 0.99
    assert [d["frame"] for d in track["detections"]] == list(range(20))
    assert track["first_frame"] == 0 and track["last_frame"] == 19
    assert track["start_s"] == 0.0 and track["end_s"] == pytest.approx(1.9)
    detection = track["detections"][5]
    assert detection["box"] == [40.0, 30.0, 120.0, 90.0]  # the stand-in's centre box, in input pixels
    assert detection["t"] == pytest.approx(0.5) and detection["landmarks"] is None
    assert result.summary[0]["identity"] == "Square" and result.summary[0]["seconds"] == pytest.approx(2.0)
    with VideoReader(tmp_path / "out.mp4") as reader:
        assert sum(1 for _ in reader) == 20


def test_frame_skip_detects_every_n_plus_one_frames_and_carries_between(setup, tmp_path):
    video, models, gallery = setup
    settings = AnnotateSettings(match_threshold=0.99, frame_skip=3, batch_size=4)
    calls = models.detector.calls
    result = annotate(video, gallery, None, tmp_path / "out.json", settings, models)
    assert models.detector.calls - calls == 5  # frames 0, 4, 8, 12, 16
    track = result.document["tracks"][0]
    assert [d["frame"] for d in track["detections"]] == [0, 4, 8, 12, 16]
    assert track["last_frame"] == 19, "carried over the frames after the last detection"
    assert track["identity"] == "Square"


def test_stranger_is_unknown_with_a_stable_id(setup, tmp_path):
    video, models, gallery = setup
    settings = AnnotateSettings(match_threshold=1.01)  # nobody can reach it
    result = annotate(video, gallery, None, tmp_path / "out.json", settings, models)
    tracks = result.document["tracks"]
    assert [(t["identity"], t["display_id"]) for t in tracks] == [(None, "unknown-1")]
    assert tracks[0]["closest"] == "Square", "the near miss is still reported"
    assert result.summary[0]["known"] is False

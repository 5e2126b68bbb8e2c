"""vidface webcam driven by a file source, headless."""

import json

import av
import pytest

from conftest import make_video
from vidface.errors import InputError
from vidface.pipeline import AnnotateSettings, Models
from vidface.webcam import run_webcam


@pytest.fixture
def settings(random_models):
    detector, embedder = random_models
    return AnnotateSettings(device="cpu", imgsz=64, frame_skip=5, detector=detector, embedder=embedder)


def test_headless_session_records_and_logs(tmp_path, settings):
    source = make_video(tmp_path / "cam.mp4", frames=60, fps=30)
    record, log = tmp_path / "rec.mp4", tmp_path / "live.json"
    result = run_webcam(str(source), None, settings, record=record, log=log, display=False)
    assert result.frames_shown >= 10
    assert result.frames_shown + result.frames_dropped <= 60
    assert av.open(str(record)).streams.video[0].frames == result.frames_shown
    document = json.loads(log.read_text())
    assert document["schema"] == 1 and document["input"]["live"] is True
    assert document["input"]["frames"] == result.frames_shown
    assert document["settings"]["frame_skip"] == 5


def test_max_seconds_stops_a_session(tmp_path, settings):
    source = make_video(tmp_path / "cam.mp4", frames=150, fps=30)  # a 5 s source, paced in real time
    result = run_webcam(str(source), None, settings, display=False, max_seconds=1.0)
    assert result.frames_shown + result.frames_dropped < 150, "stopped before the source ended"


class SlowCentreDetector:
    """The stand-in centre detector, taking ``delay`` seconds per call (a busy CPU)."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay
        self.weights_path, self.settings_key, self.conf = inner.weights_path, "slow", 0.5

    def __call__(self, images, closeups=None, min_score=None):
        import time

        time.sleep(self.delay)
        return self.inner(images)


def test_slow_detection_keeps_the_tracks_and_records_real_time(tmp_path, fake_stages):
    detector, embedder = fake_stages
    models = Models(SlowCentreDetector(detector, 0.25), embedder, "cpu")
    source = make_video(tmp_path / "cam.mp4", frames=45, fps=30)  # 1.5 s
    settings = AnnotateSettings(frame_skip=1, match_threshold=0.9)
    record, log = tmp_path / "rec.mp4", tmp_path / "live.json"
    result = run_webcam(str(source), None, settings, models=models, record=record, log=log, display=False)
    document = json.loads(log.read_text())
    assert result.frames_dropped > 0, "the detector is slower than the source"
    assert len(document["tracks"]) == 1, "one face all along: one track, not expired between passes"
    with av.open(str(record)) as container:
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]
    assert len(times) == result.frames_shown
    # the recording spans the session (frames at their real times), not frames / 30 fps
    assert times[-1] >= 0.5 * result.seconds
    assert times[-1] > 1.5 * (result.frames_shown - 1) / 30


def test_rate_meter_reads_a_real_clock():
    from vidface.webcam import RateMeter

    now = [0.0]
    meter = RateMeter(window_s=2.0, clock=lambda: now[0])
    readings = []
    for _ in range(10):
        readings.append(meter.tick())
        now[0] += 0.5  # two frames a second
    assert readings[0] is None
    assert all(abs(r - 2.0) < 1e-9 for r in readings[1:])


def test_frame_skip_runs_detector_on_every_sixth_frame(tmp_path, settings, monkeypatch):
    models = Models.load(settings)
    seen = []
    original = models.detector.__class__.__call__

    def counting(self, images, closeups=None, min_score=None):
        seen.append(len(images))
        return original(self, images, closeups, min_score)

    monkeypatch.setattr(models.detector.__class__, "__call__", counting)
    source = make_video(tmp_path / "cam.mp4", frames=40, fps=30)
    result = run_webcam(str(source), None, settings, models=models, display=False)
    assert sum(seen) == -(-result.frames_shown // 6)


def test_no_display_without_flag_is_a_clean_error(tmp_path, settings, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    source = make_video(tmp_path / "cam.mp4", frames=5)
    with pytest.raises(InputError, match="--no-display"):
        run_webcam(str(source), None, settings, display=True)


def test_missing_camera_is_a_clean_error(settings):
    with pytest.raises(InputError, match="camera"):
        run_webcam(97, None, settings, display=False)

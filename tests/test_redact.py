"""--redact: faces covered on every frame of their track, with the detector's gaps filled in."""

import numpy as np
import pytest

from conftest import make_video
from vidface.io import VideoReader
from vidface.pipeline import AnnotateSettings, FrameProcessor, LogSink, Models, run_frames
from vidface.tracklog import TrackLog


class GappyDetector:
    """The stand-in centre detector, blind on some frames (counted in calls, one image a call)."""

    def __init__(self, inner, blind_calls):
        self.inner, self.blind, self.calls = inner, set(blind_calls), 0
        self.weights_path, self.settings_key, self.conf = inner.weights_path, "gappy", 0.5

    def __call__(self, images, closeups=None, min_score=None):
        results = []
        for image in images:
            results.append([] if self.calls in self.blind else self.inner([image])[0])
            self.calls += 1
        return results


def render_all(video, models, settings):
    """Every frame's original and rendered image, through the real frame loop."""
    with VideoReader(video) as reader:
        frames = list(reader)
    originals = [frame.image.copy() for frame in frames]
    processor = FrameProcessor(models, None, settings.resolved(models))
    rendered = {}

    class Capture:
        def write(self, result):
            rendered[result.frame.index] = processor.render(result).copy()

        def close(self):
            pass

        def abort(self):
            pass

    log = LogSink(TrackLog({}, {}, {}), processor.tracker)
    run_frames(iter(frames), processor, [log, Capture()], batch_size=1, lookahead=8)
    return originals, rendered, log.document


@pytest.mark.parametrize("style", ["blur", "pixelate"])
def test_every_pixel_of_a_strangers_face_is_covered_on_every_frame_of_its_track(tmp_path, fake_stages, style):
    detector, embedder = fake_stages
    models = Models(GappyDetector(detector, blind_calls={6, 7}), embedder, "cpu")
    video = make_video(tmp_path / "clip.mp4", frames=16, fps=10)
    settings = AnnotateSettings(match_threshold=1.01, redact="unknown", redact_style=style, batch_size=1)
    originals, rendered, document = render_all(video, models, settings)
    (track,) = document["tracks"]
    detected = [d["frame"] for d in track["detections"]]
    assert 6 not in detected and 7 not in detected, "the detector missed frames 6 and 7"
    x1, y1, x2, y2 = (int(v) for v in track["detections"][0]["box"])
    for index in range(track["first_frame"], track["last_frame"] + 1):
        changed = np.any(rendered[index][y1:y2, x1:x2] != originals[index][y1:y2, x1:x2], axis=2)
        assert changed.all(), f"frame {index}: {np.count_nonzero(~changed)} pixels of the face left as they were"


def test_named_people_stay_visible_with_redact_unknown(tmp_path, fake_stages):
    detector, embedder = fake_stages
    models = Models(detector, embedder, "cpu")
    video = make_video(tmp_path / "clip.mp4", frames=10, fps=10)
    settings = AnnotateSettings(match_threshold=-1.0, redact="unknown", batch_size=2)
    from vidface.gallery import Gallery

    with VideoReader(video) as reader:
        frames = list(reader)
    originals = [frame.image.copy() for frame in frames]
    vector = embedder([frames[0].image[30:90, 40:120]])[0]
    gallery = Gallery(None, ["Square"], vector[None], np.array([0]))
    processor = FrameProcessor(models, gallery, settings.resolved(models))
    results = [r for chunk in range(0, 10, 2) for r in processor.process(frames[chunk:chunk + 2])]
    assert processor.boxes_to_redact(results[5]) == []
    inner = processor.render(results[5])[40:80, 50:110]  # inside the box, away from its outline and label
    assert np.array_equal(inner, originals[5][40:80, 50:110])
    everyone = FrameProcessor(models, gallery, AnnotateSettings(match_threshold=-1.0, redact="all").resolved(models))
    assert len(everyone.boxes_to_redact(everyone.process(frames[:2])[1])) == 1


def test_subtitles_name_who_is_on_screen_per_span():
    from vidface.tracklog import srt, subtitle_cues, webvtt

    document = {"tracks": [
        {"track_id": 1, "identity": "Ann", "display_id": "Ann", "start_s": 0.0, "end_s": 2.0},
        {"track_id": 2, "identity": None, "display_id": "unknown-1", "start_s": 1.0, "end_s": 3.0},
        {"track_id": 3, "identity": "Ann", "display_id": "Ann", "start_s": 5.0, "end_s": 61.5},
    ]}
    cues = subtitle_cues(document, frame_duration_s=0.0)
    assert cues == [(0.0, 1.0, ["Ann"]), (1.0, 2.0, ["Ann", "unknown-1"]), (2.0, 3.0, ["unknown-1"]),
                    (5.0, 61.5, ["Ann"])]
    vtt = webvtt(cues)
    assert vtt.startswith("WEBVTT\n") and "00:00:01.000 --> 00:00:02.000\nAnn, unknown-1" in vtt
    assert "00:00:05,000 --> 00:01:01,500\nAnn" in srt(cues)


def test_annotate_writes_subtitles_and_a_report_with_the_outputs(tmp_path, fake_stages):
    from vidface.pipeline import annotate

    detector, embedder = fake_stages
    models = Models(detector, embedder, "cpu")
    video = make_video(tmp_path / "clip.mp4", frames=12, fps=10)
    settings = AnnotateSettings(match_threshold=1.01, subtitles=True, report=True, redact="unknown")
    annotate(video, None, tmp_path / "clip.vidface.mp4", tmp_path / "clip.vidface.json", settings, models)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != "fake.bin")
    assert names == ["clip.mp4", "clip.vidface.html", "clip.vidface.json", "clip.vidface.mp4", "clip.vidface.srt",
                     "clip.vidface.vtt"]
    vtt = (tmp_path / "clip.vidface.vtt").read_text()
    assert "00:00:00.000 --> 00:00:01.200\nunknown-1" in vtt
    page = (tmp_path / "clip.vidface.html").read_text()
    assert page.count('class="bar"') == 1 and "data:image/jpeg;base64," in page and "unknown-1" in page
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert f"vidface gallery enroll {tmp_path / 'clip.vidface.json'} -t unknown-1" in page, "how to name the stranger"


def test_the_report_renders_in_a_headless_browser(tmp_path, fake_stages):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    from vidface.pipeline import annotate

    detector, embedder = fake_stages
    video = make_video(tmp_path / "clip.mp4", frames=12, fps=10)
    annotate(video, None, None, tmp_path / "clip.json", AnnotateSettings(match_threshold=1.01, report=True,
                                                                         write_video=False),
             Models(detector, embedder, "cpu"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900"]
    page = (tmp_path / "clip.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert "Who appears when: clip.mp4" in dom and dom.count('class="bar"') == 1
    assert "<td class=\"name\">unknown-1</td>" in dom
    subprocess.run([*flags, f"--screenshot={tmp_path / 'page.png'}", page], capture_output=True, timeout=120)
    import cv2

    shot = cv2.imread(str(tmp_path / "page.png"))
    assert shot is not None and shot.shape[:2] == (900, 1000)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50, "the page drew text, bars and a thumbnail"

"""The annotate loop with stand-in detector and embedder: tracks, names, frame-skip, log schema."""

import json
from dataclasses import replace

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


def test_with_frame_skip_each_detector_batch_still_holds_batch_size_frames(setup, tmp_path):
    from vidface.pipeline import MAX_BATCH_BYTES, MAX_FRAMES_PER_BATCH, frames_per_batch

    video, models, gallery = setup
    inner, sizes = models.detector, []

    def recording(images, closeups=None, min_score=None):
        sizes.append(len(images))
        return inner(images, closeups, min_score)

    detector = type("BatchRecorder", (), {"__call__": staticmethod(recording), "conf": inner.conf,
                                          "weights_path": inner.weights_path})()
    settings = AnnotateSettings(match_threshold=0.99, frame_skip=3, batch_size=2, write_video=False)
    annotate(video, gallery, None, tmp_path / "out.json", settings, Models(detector, models.embedder, "cpu"))
    assert sizes == [2, 2, 1]  # frames 0+4, 8+12, 16 of 20; not five lone frames
    assert frames_per_batch(AnnotateSettings(batch_size=2, frame_skip=100)) == MAX_FRAMES_PER_BATCH
    assert frames_per_batch(AnnotateSettings(batch_size=8)) == 8
    uhd = 3840 * 2160 * 3  # 24.9 MB a decoded frame: memory, not the frame count, bounds the batch
    assert frames_per_batch(AnnotateSettings(batch_size=2, frame_skip=100), uhd) == 10
    assert frames_per_batch(AnnotateSettings(batch_size=2, frame_skip=100), 10 * MAX_BATCH_BYTES) == 2


def test_embed_every_few_passes_embeds_fewer_faces_and_keeps_the_name(setup, tmp_path):
    video, models, gallery = setup

    class CountingEmbedder:
        def __init__(self, inner):
            self.inner, self.crops = inner, 0
            self.dim, self.flip, self.weights_path = inner.dim, inner.flip, inner.weights_path

        def embed_and_judge(self, crops):
            self.crops += len(crops)
            return self.inner.embed_and_judge(crops)

    counting = CountingEmbedder(models.embedder)
    settings = AnnotateSettings(match_threshold=0.99, batch_size=3, embed_every=4)
    result = annotate(video, gallery, None, tmp_path / "out.json", settings, Models(models.detector, counting, "cpu"))
    track, = result.document["tracks"]
    assert track["identity"] == "Square" and len(track["detections"]) == 20
    embedded = [d["frame"] for d in track["detections"] if d["similarity"] is not None]
    assert counting.crops == len(embedded) < 10, embedded
    assert embedded[:2] == [0, 1], "a new track is embedded until it is confirmed"


def test_stranger_is_unknown_with_a_stable_id(setup, tmp_path):
    video, models, gallery = setup
    settings = AnnotateSettings(match_threshold=1.01)  # nobody can reach it
    result = annotate(video, gallery, None, tmp_path / "out.json", settings, models)
    tracks = result.document["tracks"]
    assert [(t["identity"], t["display_id"]) for t in tracks] == [(None, "unknown-1")]
    assert tracks[0]["closest"] == "Square", "the near miss is still reported"
    assert result.summary[0]["known"] is False


def write_two_shot_clip(path, frames_per_shot=10, size=(160, 120), fps=10):
    """Two shots of one still scene each, different in colour: a hard cut at ``frames_per_shot``."""
    import av

    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(2 * frames_per_shot):
            image = np.zeros((height, width, 3), np.uint8)
            image[:] = (200, 60, 20) if index < frames_per_shot else (20, 90, 220)
            image[30:90, 40:120] = (240, 240, 240) if index < frames_per_shot else (30, 200, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("frame_skip, embed_every", [(0, 1), (3, 1), (0, 4)])
def test_no_track_and_no_name_crosses_a_shot_cut(setup, tmp_path, frame_skip, embed_every):
    _, models, gallery = setup
    clip = write_two_shot_clip(tmp_path / "cut.mp4")
    settings = AnnotateSettings(match_threshold=-1.0, frame_skip=frame_skip, embed_every=embed_every,
                                batch_size=4)  # everyone is named
    result = annotate(clip, gallery, tmp_path / "cut.vidface.mp4", tmp_path / "cut.json", settings, models)
    tracks = result.document["tracks"]
    assert len(tracks) == 2
    assert all(t["last_frame"] < 10 or t["first_frame"] >= 10 for t in tracks), "a track crosses the cut"
    assert tracks[1]["first_frame"] == 10, "the first frame of a new shot is detected"
    assert all(t["identity"] is not None for t in tracks), "each shot's first face is embedded and named"
    # both faces sit in the same box; only the cut tells them apart, and each gets its own name decision
    assert tracks[0]["track_id"] != tracks[1]["track_id"]


def test_a_one_frame_video_keeps_its_face(setup, tmp_path):
    _, models, gallery = setup
    clip = make_video(tmp_path / "one.mp4", frames=1, fps=10)
    result = annotate(clip, gallery, None, tmp_path / "one.json", AnnotateSettings(match_threshold=0.99), models)
    tracks = result.document["tracks"]
    assert len(tracks) == 1 and len(tracks[0]["detections"]) == 1
    assert result.summary and result.summary[0]["identity"] == tracks[0]["display_id"]


def test_the_log_is_the_same_with_and_without_video(setup, tmp_path):
    video, models, gallery = setup
    settings = AnnotateSettings(match_threshold=1.01, frame_skip=1)
    with_video = annotate(video, gallery, tmp_path / "a.mp4", tmp_path / "a.json", settings, models).document
    settings = AnnotateSettings(match_threshold=1.01, frame_skip=1, write_video=False)
    without = annotate(video, gallery, None, tmp_path / "b.json", settings, models).document
    without["settings"]["write_video"] = True
    assert with_video == without
    assert {t["display_id"] for t in without["tracks"]} == {"unknown-1"}


def test_outputs_land_together_or_not_at_all(setup, tmp_path):
    from vidface.errors import OutputError

    video, models, gallery = setup
    old_video, old_log = tmp_path / "out.mp4", tmp_path / "out.json"
    old_video.write_bytes(b"old video")
    old_log.write_text("old log")
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(OutputError):
        annotate(video, gallery, old_video, tmp_path / "file" / "log.json", AnnotateSettings(match_threshold=0.9), models,
                 overwrite=True)
    assert old_video.read_bytes() == b"old video" and old_log.read_text() == "old log"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_annotated_video_is_h264_with_the_input_frames(setup, tmp_path):
    import av

    video, models, gallery = setup
    annotate(video, gallery, tmp_path / "out.mp4", tmp_path / "out.json", AnnotateSettings(match_threshold=0.9), models)
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(video=0)) == 20
        assert container.streams.audio, "the input's audio is kept"


class RecordingDetector:
    """One face of ``height`` (share of the frame) in the middle of each image; records the close-up flags."""

    def __init__(self, inner, height):
        self.inner, self.height, self.flags = inner, height, []
        self.weights_path, self.conf, self.calls = inner.weights_path, inner.conf, 0
        self.settings_key = self.photo_settings_key = f"recording-{height}"

    def __call__(self, images, closeups=None, min_score=None):
        from vidface.structures import Detection

        self.flags += [closeups] * len(images) if isinstance(closeups, bool) else list(closeups)
        found = []
        for image in images:
            h, w = image.shape[:2]
            half = self.height * h / 2
            found.append([Detection(np.array([w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half], np.float32),
                                    0.9, None)])
        return found


# the first batch (4 frames) is planned before any track exists; then a large face keeps the pass on
@pytest.mark.parametrize("height, expected", [(0.1, [True, False, False] * 6 + [True, False]),
                                              (0.5, [True, False, False, True] + [True] * 16)])
def test_the_closeup_pass_runs_every_few_passes_unless_a_face_is_large(setup, tmp_path, height, expected):
    video, models, gallery = setup
    detector = RecordingDetector(models.detector, height)
    settings = AnnotateSettings(match_threshold=0.99, batch_size=4, closeup_every=3, write_video=False)
    annotate(video, gallery, None, tmp_path / "out.json", settings, Models(detector, models.embedder, "cpu"))
    assert detector.flags == expected


def test_the_closeup_pass_runs_on_the_first_pass_of_each_shot(setup, tmp_path):
    _, models, gallery = setup
    detector = RecordingDetector(models.detector, 0.1)
    clip = write_two_shot_clip(tmp_path / "cut.mp4")
    settings = AnnotateSettings(match_threshold=0.99, batch_size=4, closeup_every=4, write_video=False)
    annotate(clip, gallery, None, tmp_path / "out.json", settings, Models(detector, models.embedder, "cpu"))
    assert [index for index, flag in enumerate(detector.flags) if flag] == [0, 4, 8, 10, 14, 18]
    every_pass = RecordingDetector(models.detector, 0.1)
    annotate(clip, gallery, None, tmp_path / "every.json", AnnotateSettings(match_threshold=0.99, write_video=False),
             Models(every_pass, models.embedder, "cpu"))
    assert every_pass.flags == [True] * 20


def test_a_face_the_embedder_calls_no_face_is_neither_drawn_nor_logged(setup, tmp_path):
    from types import SimpleNamespace

    video, models, gallery = setup

    class JudgingEmbedder:
        """The stand-in embedder, with a face/non-face logit for every crop."""

        judges_faces = True

        def __init__(self, inner, logit, min_height):
            self.inner, self.logit = inner, logit
            self.dim, self.flip, self.weights_path = inner.dim, inner.flip, inner.weights_path
            self.config = SimpleNamespace(non_face_min_height=min_height)

        def embed_and_judge(self, crops):
            return self.inner(crops), np.full(len(crops), self.logit, np.float32)

    settings = AnnotateSettings(match_threshold=0.99, batch_size=3, write_video=False)

    def tracks(logit, min_height=0.0):
        judged = Models(models.detector, JudgingEmbedder(models.embedder, logit, min_height), "cpu")
        out = tmp_path / f"judged{logit}{min_height}.json"
        return annotate(video, gallery, None, out, settings, judged).document["tracks"]

    assert tracks(-1.0) == annotate(video, gallery, None, tmp_path / "plain.json", settings, models).document["tracks"]
    assert tracks(1.0) == []
    assert [t["identity"] for t in tracks(1.0, min_height=10_000)] == ["Square"], "taller than any box: not judged"


class DippingDetector:
    """The stand-in's centre face, scoring 0.2 (under its threshold 0.5) on frames 8-10: what the
    detector returns depends on the ``min_score`` it is asked for."""

    def __init__(self, inner):
        self.inner, self.weights_path, self.conf = inner, inner.weights_path, inner.conf
        self.settings_key = self.photo_settings_key = "dipping"
        self.frame, self.asked = 0, set()

    def __call__(self, images, closeups=None, min_score=None):
        found = self.inner(images, closeups)
        self.asked.add(min_score)
        least = self.conf if min_score is None else min_score
        for faces in found:
            faces[:] = [replace(f, score=0.2) if 8 <= self.frame <= 10 else f for f in faces]
            faces[:] = [f for f in faces if f.score > least]
            self.frame += 1
        return found


@pytest.mark.parametrize("track_conf, frames", [(0.1, list(range(20))), (0.5, list(range(8)) + list(range(11, 20)))])
def test_a_named_face_the_detector_half_loses_stays_logged_down_to_track_conf(setup, tmp_path, track_conf, frames):
    video, models, gallery = setup
    detector = DippingDetector(models.detector)
    settings = AnnotateSettings(match_threshold=0.99, batch_size=4, write_video=False, track_conf=track_conf)
    result = annotate(video, gallery, None, tmp_path / "out.json", settings, Models(detector, models.embedder, "cpu"))
    assert detector.asked == {track_conf}
    tracks = result.document["tracks"]
    assert [t["identity"] for t in tracks] == ["Square"]
    assert [d["frame"] for d in tracks[0]["detections"]] == frames
    assert {d["score"] for d in tracks[0]["detections"] if 8 <= d["frame"] <= 10} <= {0.2}

"""vidface gallery enroll: a logged track's faces cut from its video into the gallery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_video
from test_cli import one_error_line, run_cli
from vidface.enroll import choose_detections, enroll_track, photo_region
from vidface.errors import GalleryError, InputError, UsageError
from vidface.io import VideoReader

FRAMES = 12


def square_box(index: int) -> list[float]:
    """Where ``make_video`` draws its bright square in frame ``index``."""
    x = 10 + index * 4
    return [float(x), 40.0, float(x + 40), 80.0]


def write_log(path: Path, video: Path, frames: range = range(FRAMES), width: int = 160, height: int = 120) -> Path:
    detections = [{"frame": i, "t": i / 10, "box": square_box(i), "score": 0.9, "landmarks": None,
                   "similarity": 0.3} for i in frames]
    document = {"schema": 1, "input": {"path": str(video), "width": width, "height": height, "frames": FRAMES},
                "tracks": [{"track_id": 4, "identity": None, "display_id": "unknown-1", "score": 0.3,
                            "closest": None, "first_frame": frames[0], "last_frame": frames[-1],
                            "detections": detections},
                           {"track_id": 7, "identity": "Ann", "display_id": "Ann", "score": 0.8, "closest": "Ann",
                            "first_frame": 0, "last_frame": 0,
                            "detections": [{"frame": 0, "box": [100.0, 10.0, 140.0, 50.0], "score": 0.8}]}]}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def clip(tmp_path):
    video = make_video(tmp_path / "clip.mp4", frames=FRAMES)
    return video, write_log(tmp_path / "clip.vidface.json", video)


def decoded_frames(video: Path) -> list[np.ndarray]:
    with VideoReader(video) as reader:
        return [frame.image for frame in reader]


def test_photos_are_spread_over_the_track_and_prefer_large_sure_faces():
    detections = [{"frame": i, "box": [0, 0, 50, 50], "score": 0.5} for i in range(10)]
    detections[2]["score"] = 0.9  # the best of the first half
    detections[7]["box"] = [0, 0, 60, 60]  # the largest of the second half
    detections.append({"frame": 10, "box": [0, 0, 20, 20], "score": 1.0})  # too small while large ones exist
    chosen = choose_detections(detections, 2)
    assert [d["frame"] for d in chosen] == [2, 7]
    assert len(choose_detections(detections, 50)) == 10, "one photo per usable face at most"
    small_only = [{"frame": 0, "box": [0, 0, 20, 20], "score": 0.5}]
    assert choose_detections(small_only, 3) == small_only, "small faces when there is nothing larger"


def test_photo_region_is_a_square_around_the_face_inside_the_frame():
    assert photo_region([40, 40, 60, 60], 200, 100) == (30, 30, 70, 70)
    assert photo_region([0, 0, 20, 40], 200, 100) == (0, 0, 50, 60)  # clipped at the top-left corner
    left, top, right, bottom = photo_region([150, 50, 199, 99], 200, 100)
    assert right == 200 and bottom == 100 and left < 150 and top < 50


def test_enroll_cuts_the_tracks_faces_and_is_safe_to_repeat(tmp_path, clip):
    video, log = clip
    before = video.read_bytes(), log.read_bytes()
    result = enroll_track(log, ["unknown-1"], tmp_path / "gallery", person="Jane Doe", photos=3)
    assert result.folder == tmp_path / "gallery" / "Jane Doe"
    assert len(result.written) == 3 and result.existing == []
    assert result.frames[0] <= 3 and result.frames[-1] >= 8, "photos from the start and the end of the track"
    frames = decoded_frames(video)
    for index, path in zip(result.frames, result.written):
        assert path.name == f"clip-{index:06d}.jpg"
        left, top, right, bottom = photo_region(square_box(index), 160, 120)
        photo = cv2.imread(str(path))
        assert photo.shape == (bottom - top, right - left, 3)
        expected = frames[index][top:bottom, left:right].astype(float)
        assert np.abs(photo.astype(float) - expected).mean() < 4, "the photo is that frame's face, JPEG aside"
    again = enroll_track(log, ["unknown-1"], tmp_path / "gallery", person="Jane Doe", photos=3)
    assert again.written == [] and sorted(again.existing) == sorted(result.written)
    assert (video.read_bytes(), log.read_bytes()) == before, "the video and the log are only read"


def test_a_named_track_enrolls_under_its_own_name_and_by_number(tmp_path, clip):
    _, log = clip
    assert enroll_track(log, ["Ann"], tmp_path / "g").folder == tmp_path / "g" / "Ann"
    assert enroll_track(log, ["4"], tmp_path / "g", person="Jane", photos=1).folder == tmp_path / "g" / "Jane"


def test_the_log_may_sit_beside_its_video_elsewhere(tmp_path, clip):
    video, _ = clip
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(video, moved / video.name)
    log = write_log(moved / "clip.vidface.json", Path("/nowhere") / video.name)
    assert len(enroll_track(log, ["unknown-1"], tmp_path / "g", person="Jane", photos=2).written) == 2


@pytest.mark.parametrize("case", ["other size", "shorter video"])
def test_a_video_that_is_not_the_logs_adds_no_photo(tmp_path, clip, case):
    _, log = clip
    if case == "other size":
        other = make_video(tmp_path / "other.mp4", frames=FRAMES, size=(128, 96))
    else:
        other = make_video(tmp_path / "other.mp4", frames=4)
    with pytest.raises(InputError):
        enroll_track(log, ["unknown-1"], tmp_path / "gallery", person="Jane", video=other, photos=3)
    assert not (tmp_path / "gallery").exists()


def test_bad_requests_are_clean_errors(tmp_path, clip, capsys):
    video, log = clip
    with pytest.raises(UsageError, match="unknown-1, Ann|Ann, unknown-1"):
        enroll_track(log, ["unknown-9"], tmp_path / "g", person="Jane")
    with pytest.raises(UsageError, match="--as"):
        enroll_track(log, ["unknown-1"], tmp_path / "g")
    for name in ("", "..", ".hidden", "a/b"):
        with pytest.raises(UsageError):
            enroll_track(log, ["unknown-1"], tmp_path / "g", person=name)
    (tmp_path / "file").write_text("a file")
    with pytest.raises(GalleryError):
        enroll_track(log, ["unknown-1"], tmp_path / "file", person="Jane")
    (tmp_path / "broken.json").write_text(json.dumps({"schema": 1, "tracks": [
        {"display_id": "unknown-1", "identity": None, "detections": [{"box": [1, 2, "x", 40], "frame": 0}]}]}))
    with pytest.raises(InputError, match="well-formed"):
        enroll_track(tmp_path / "broken.json", ["unknown-1"], tmp_path / "g", person="Jane")
    (tmp_path / "not-a-log.json").write_text('{"tracks": 3}')
    cases = [(["--track", "unknown-1", "--as", "Jane"], tmp_path / "missing.json", InputError),
             (["--track", "unknown-1", "--as", "Jane"], tmp_path / "not-a-log.json", InputError),
             (["--track", "nobody", "--as", "Jane"], log, UsageError),
             (["--track", "unknown-1"], log, UsageError)]
    for options, path, error in cases:
        code, _, err = run_cli(capsys, "gallery", "enroll", path, *options, "--gallery", tmp_path / "g")
        assert code == error.exit_code, err
        one_error_line(err)
    assert not (tmp_path / "g").exists()
    code, out, err = run_cli(capsys, "gallery", "enroll", log, "-t", "unknown-1", "--as", "Jane",
                             "--gallery", tmp_path / "g", "--photos", "2")
    assert code == 0, err
    assert "2 new photos of Jane" in out and len(list((tmp_path / "g" / "Jane").glob("*.jpg"))) == 2


def test_an_enrolled_stranger_is_named_on_the_next_run(shipped_weights, tmp_path):
    """The workflow end to end: Grace Hopper is unknown with only Eileen Collins in the gallery;
    enrolled from the log, the next run names her."""
    from vidface.gallery import build_gallery
    from vidface.pipeline import AnnotateSettings, Models, annotate

    samples = Path(__file__).resolve().parent.parent / "samples"
    gallery = tmp_path / "gallery"
    shutil.copytree(samples / "gallery" / "Eileen Collins", gallery / "Eileen Collins")
    detector, embedder = shipped_weights
    settings = AnnotateSettings(device="cpu", detector=detector, embedder=embedder, write_video=False)
    models = Models.load(settings)
    video = tmp_path / "demo.mp4"
    shutil.copy(samples / "demo.mp4", video)
    first = annotate(video, build_gallery(gallery, models.detector, models.embedder), None,
                     tmp_path / "first.json", settings, models)
    strangers = [t["display_id"] for t in first.document["tracks"] if t["identity"] is None]
    assert strangers, "Grace Hopper is not in the gallery yet"
    result = enroll_track(tmp_path / "first.json", strangers[:1], gallery, person="Grace Hopper")
    assert len(result.written) >= 3
    second = annotate(video, build_gallery(gallery, models.detector, models.embedder), None,
                      tmp_path / "second.json", settings, models)
    names = sorted(t["identity"] for t in second.document["tracks"])
    assert names == ["Eileen Collins", "Grace Hopper"], names


def test_a_recurring_stranger_enrolls_from_every_video_of_a_batch(tmp_path, fake_stages, capsys):
    """From a batch's people.json, stranger-K's photos come from each video they were seen in."""
    from vidface.batch import INDEX_NAME, run_batch
    from vidface.pipeline import AnnotateSettings, Models

    detector, embedder = fake_stages
    inputs = tmp_path / "in"
    (inputs / "later").mkdir(parents=True)
    make_video(inputs / "a.mp4", frames=24, fps=10)
    make_video(inputs / "later" / "b.mp4", frames=16, fps=10)
    out = tmp_path / "out"
    run_batch([str(inputs)], out, None, AnnotateSettings(match_threshold=0.99, write_video=False), recursive=True,
              models=Models(detector, embedder, "cpu"))
    index_path = out / INDEX_NAME
    assert json.loads(index_path.read_text())["recurring_strangers"][0]["name"] == "stranger-1"

    gallery = tmp_path / "gallery"
    code, printed, err = run_cli(capsys, "gallery", "enroll", index_path, "-t", "stranger-1", "--as", "Jo",
                                 "-g", gallery, "--photos", "5")
    assert code == 0, err
    photos = sorted(p.name for p in (gallery / "Jo").iterdir())
    assert len(photos) == 5
    assert sum(name.startswith("a-") for name in photos) == 3, "the longer appearance gives the odd photo"
    assert sum(name.startswith("b-") for name in photos) == 2
    assert "3 new photos of Jo" in printed and "2 new photos of Jo" in printed
    a_frames = decoded_frames(inputs / "a.mp4")
    first = sorted((gallery / "Jo").glob("a-*.jpg"))[0]
    index = int(first.stem.split("-")[1])
    logged = json.loads((out / "a.vidface.json").read_text())["tracks"][0]["detections"]
    box = next(d["box"] for d in logged if d["frame"] == index)
    left, top, right, bottom = photo_region(box, 160, 120)
    photo = cv2.imread(str(first))
    assert photo.shape[:2] == (bottom - top, right - left)
    assert np.abs(photo.astype(int) - a_frames[index][top:bottom, left:right].astype(int)).mean() < 8

    code, printed, _ = run_cli(capsys, "gallery", "enroll", index_path, "-t", "stranger-1", "--as", "Jo",
                               "-g", gallery, "--photos", "5")
    assert code == 0 and "0 new photos" in printed and len(list((gallery / "Jo").iterdir())) == 5

    for options, error in [(["-t", "stranger-9", "--as", "Jo"], UsageError),
                           (["-t", "unknown-1", "--as", "Jo"], UsageError),
                           (["-t", "stranger-1"], UsageError),
                           (["-t", "stranger-1", "--as", "Jo", "--video", str(inputs / "a.mp4")], UsageError)]:
        code, _, err = run_cli(capsys, "gallery", "enroll", index_path, *options, "-g", tmp_path / "other")
        assert code == error.exit_code, err
        one_error_line(err)
    (inputs / "later" / "b.mp4").unlink()  # one video gone: nothing is written for any of them
    code, _, err = run_cli(capsys, "gallery", "enroll", index_path, "-t", "stranger-1", "--as", "Jo",
                           "-g", tmp_path / "other")
    assert code == InputError.exit_code and "not found" in err
    assert not (tmp_path / "other").exists()

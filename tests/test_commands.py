"""detect, embed, gallery and bench commands with real (random-weight) models."""

import json

import cv2
import numpy as np
import pytest

from conftest import make_video
from test_cli import one_error_line, run_cli
from vidface.errors import InputError, OutputError


@pytest.fixture
def model_args(random_models):
    detector, embedder = random_models
    return ["--detector", detector, "--embedder", embedder, "--device", "cpu"]


def test_embed_an_aligned_crop_prints_a_unit_vector(tmp_path, capsys, model_args):
    crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    code, out, err = run_cli(capsys, "embed", tmp_path / "crop.png", *model_args)
    assert code == 0, err
    vector = np.array(json.loads(out))
    assert vector.shape == (512,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    code, _, err = run_cli(capsys, "embed", tmp_path / "crop.png", "-o", tmp_path / "v.npy", *model_args)
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "v.npy", allow_pickle=False), vector, atol=1e-5)
    code, _, err = run_cli(capsys, "embed", tmp_path / "crop.png", "-o", tmp_path / "v.txt", *model_args)
    assert code == OutputError.exit_code


def test_embed_photo_without_face_is_a_clean_error(tmp_path, capsys, model_args):
    cv2.imwrite(str(tmp_path / "wall.jpg"), np.full((300, 400, 3), 128, np.uint8))
    code, _, err = run_cli(capsys, "embed", tmp_path / "wall.jpg", *model_args)
    assert code == InputError.exit_code and "no face" in one_error_line(err)


def test_detect_writes_annotated_copy_and_json(tmp_path, capsys, model_args):
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    before = photo.read_bytes()
    code, out, err = run_cli(capsys, "detect", photo, "--det-conf", "0.0001", *model_args)
    assert code == 0, err
    report = json.loads(out)
    assert report["output"].endswith("p.vidface.jpg") and isinstance(report["faces"], list)
    assert cv2.imread(report["output"]).shape == (200, 300, 3)
    assert photo.read_bytes() == before


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_detect_bad_photo(tmp_path, capsys, model_args, content):
    photo = tmp_path / "p.jpg"
    if content is not None:
        photo.write_bytes(content)
    code, _, err = run_cli(capsys, "detect", photo, *model_args)
    assert code == InputError.exit_code and str(photo) in one_error_line(err)


def test_gallery_show_lists_problems(tmp_path, capsys, model_args):
    (tmp_path / "g" / "Ann").mkdir(parents=True)
    (tmp_path / "g" / "Ann" / "bad.jpg").write_bytes(b"broken")
    cv2.imwrite(str(tmp_path / "g" / "Ann" / "grey.jpg"), np.full((50, 50, 3), 90, np.uint8))
    code, out, err = run_cli(capsys, "gallery", "show", tmp_path / "g", *model_args)
    assert code == 0, err
    assert "Ann" in out and "bad.jpg (unreadable)" in out and "grey.jpg (no-face)" in out


def test_bench_prints_every_stage(tmp_path, capsys, model_args):
    video = make_video(tmp_path / "v.mp4", frames=10)
    code, out, err = run_cli(capsys, "bench", video, "--imgsz", "64", *model_args)
    assert code == 0, err
    for stage in ("decode", "detect", "align+embed", "track+draw", "encode", "end to end"):
        assert stage in out
    assert list(tmp_path.iterdir()) == [video]


def test_the_runtime_never_imports_the_research_package():
    import subprocess
    import sys

    code = ("import sys, vidface.pipeline, vidface.webcam, vidface.batch, vidface.bench, vidface.photo, "
            "vidface.gallery, vidface.track, vidface.tracklog, vidface.draw, vidface.io; "
            "print(sorted(m for m in sys.modules if m.startswith('vidface.research')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_search_lists_the_gallery_people_most_like_a_photo(shipped_weights):
    import json
    import subprocess
    import sys
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "samples" / "gallery"
    photo = samples / "Grace Hopper" / "02.jpg"
    result = subprocess.run([sys.executable, "-m", "vidface", "search", str(photo), "--gallery", str(samples),
                             "--top", "5", "--json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    people = report["people"]
    assert [p["person"] for p in people] == ["Grace Hopper", "Eileen Collins"], "two people, best first"
    assert people[0]["similarity"] > 0.99 and Path(people[0]["best_photo"]).name == "02.jpg", "the photo itself"
    assert people[0]["similarity"] > people[1]["similarity"]
    table = subprocess.run([sys.executable, "-m", "vidface", "search", str(photo), "--gallery", str(samples),
                            "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0 and "Grace Hopper" in table.stdout and "would be named" in table.stdout


def test_search_finds_a_person_in_an_archive_of_annotated_videos(shipped_weights, tmp_path):
    """Photos of Grace Hopper find her in the demo, annotated by a batch that had no gallery at all."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "samples"
    archive = tmp_path / "archive"
    run = subprocess.run([sys.executable, "-m", "vidface", "batch", str(samples / "demo.mp4"), "--out-dir",
                          str(archive), "--no-video", "--device", "cpu", "--quiet"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    photos = sorted(str(p) for p in (samples / "gallery" / "Grace Hopper").iterdir())
    result = subprocess.run([sys.executable, "-m", "vidface", "search", *photos, "--archive", str(archive),
                             "--json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    found = report["appearances"]
    assert report["videos_not_searched"] == 0 and len(found) == 2, "the demo's two strangers, most alike first"
    assert found[0]["similarity"] >= report["match_threshold"] > found[1]["similarity"]
    assert not found[0]["known"] and found[0]["video"] == str(samples / "demo.mp4") and found[0]["spans"]
    log = json.loads((archive / "demo.vidface.json").read_text())
    hopper = [t for t in log["tracks"] if t["display_id"] == found[0]["name"]]
    assert hopper and hopper[0]["closest"] is None, "named by nothing but the photos: no gallery in that run"

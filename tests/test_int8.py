"""The int8 detector: shipped for exactly the shipped weights, finding what the f32 network finds,
never used with other weights, and made again by ``vidface train quantise-detector``."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed")

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def copy_with_int8(weights: Path, folder: Path) -> Path:
    """The detector weights and their int8 network, copied into ``folder``."""
    from vidface.detect import INT8_SUFFIX

    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".xml", ".bin", ".json"):
        shutil.copy(weights.with_name(weights.stem + INT8_SUFFIX + suffix), folder / (weights.stem + INT8_SUFFIX + suffix))
    return Path(shutil.copy(weights, folder / weights.name))


def test_the_shipped_int8_detector_was_made_from_the_shipped_weights(shipped_weights):
    from vidface.detect import quantised_graph_for

    assert quantised_graph_for(shipped_weights[0]) is not None, (
        "weights/yolov8n-face.safetensors changed without its int8 network: run "
        "`vidface train quantise-detector` (after calibrate-detector)")


def test_the_int8_detector_finds_the_faces_the_f32_network_finds(shipped_weights):
    from vidface.detect import FaceDetector
    from vidface.structures import box_iou

    photos = sorted(SAMPLES.glob("gallery/*/*.jpg"))
    assert photos, "the sample gallery is part of the repository"
    exact = FaceDetector(shipped_weights[0], "cpu", closeups=True, backend="openvino")
    int8 = FaceDetector(shipped_weights[0], "cpu", closeups=True, backend="openvino-int8")
    assert int8.graph.suffix == ".xml" and int8.conf == exact.conf, "the threshold is the weights' own"
    compared = 0
    for photo in photos:
        image = cv2.imread(str(photo))
        ours, theirs = exact([image])[0], int8([image], min_score=exact.conf - 0.1)[0]
        for face in ours:
            assert theirs, f"{photo.name}: the int8 network found nothing"
            overlap = box_iou(face.box[None], np.stack([f.box for f in theirs]))[0]
            match = theirs[int(overlap.argmax())]
            assert overlap.max() >= 0.7 and abs(match.score - face.score) < 0.08, photo.name
            compared += 1
    assert compared >= len(photos)


def test_int8_network_of_other_weights_is_never_used(shipped_weights, tmp_path):
    from vidface.detect import FaceDetector, quantised_graph_for, update_detector_metadata
    from vidface.errors import ModelError

    broken = copy_with_int8(shipped_weights[0], tmp_path / "broken")
    assert quantised_graph_for(broken) is not None
    broken.with_name(broken.stem + "-int8.json").write_text("{not json")
    assert quantised_graph_for(broken) is None
    weights = copy_with_int8(shipped_weights[0], tmp_path / "retrained")
    assert quantised_graph_for(weights) is not None
    update_detector_metadata(weights, det_conf=0.3)  # new weights (here: a new threshold), the old int8 network
    assert quantised_graph_for(weights) is None
    with pytest.raises(ModelError, match="quantise-detector"):
        FaceDetector(weights, "cpu", backend="openvino-int8")


def test_asking_for_int8_without_its_network_is_one_line_and_the_model_exit_code(random_models, tmp_path):
    video = tmp_path / "in.mp4"
    shutil.copy(SAMPLES / "demo.mp4", video)
    run = subprocess.run([sys.executable, "-m", "vidface", "annotate", str(video), "--gallery", str(SAMPLES / "gallery"),
                          "--detector", str(random_models[0]), "--backend", "openvino-int8", "--device", "cpu",
                          "--output", str(tmp_path / "out.mp4")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 5, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "quantise-detector" in lines[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_quantise_detector_makes_a_network_for_exactly_these_weights(random_models, tmp_path):
    pytest.importorskip("nncf", reason="NNCF (the training extra) is not installed")
    from vidface.detect import FaceDetector, quantised_graph_for, update_detector_metadata
    from vidface.embed import file_fingerprint
    from vidface.research.train.quantise import quantise_detector

    weights = Path(shutil.copy(random_models[0], tmp_path / "detector.safetensors"))
    rng = np.random.default_rng(0)
    images = []
    for index in range(3):
        images.append(tmp_path / f"train{index}.jpg")
        cv2.imwrite(str(images[-1]), rng.integers(0, 255, (240 + 40 * index, 320, 3), dtype=np.uint8))
    graph, record = quantise_detector(weights, images, imgsz=320)
    assert graph == tmp_path / "detector-int8.xml" and graph.with_suffix(".bin").is_file()
    assert json.loads(graph.with_suffix(".json").read_text()) == record
    assert record["source_fingerprint"] == file_fingerprint(weights) and record["calibration"]["inputs"] == 6
    assert quantised_graph_for(weights) == graph
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left behind"
    int8 = FaceDetector(weights, "cpu", imgsz=320, conf=0.0001, backend="openvino-int8")
    exact = FaceDetector(weights, "cpu", imgsz=320, conf=0.0001, backend="openvino")
    canvas = exact._letterbox([cv2.imread(str(images[0]))], 320)[0]
    assert int8._forward(canvas).shape == exact._forward(canvas).shape
    update_detector_metadata(weights, det_conf=0.4)
    assert quantised_graph_for(weights) is None, "weights changed after quantising"


def test_photos_are_looked_at_in_f32_so_int8_and_f32_runs_share_a_gallery(shipped_weights, tmp_path, monkeypatch):
    from vidface.detect import FaceDetector, photo_detector
    from vidface.embed import FaceEmbedder
    from vidface.gallery import build_gallery

    monkeypatch.setenv("VIDFACE_CACHE", str(tmp_path / "cache"))
    int8 = FaceDetector(shipped_weights[0], "cpu", closeups=True, backend="openvino-int8")
    exact = FaceDetector(shipped_weights[0], "cpu", closeups=True, backend="openvino")
    assert photo_detector(int8).backend == "openvino" and photo_detector(int8) is photo_detector(int8)
    assert photo_detector(exact) is exact
    looked_at = []
    detect = FaceDetector.__call__

    def counted(self, images, *args, **kwargs):
        looked_at.append(self.backend)
        return detect(self, images, *args, **kwargs)

    monkeypatch.setattr(FaceDetector, "__call__", counted)
    embedder = FaceEmbedder(shipped_weights[1], "cpu", flip=True, backend="openvino-int8")
    first = build_gallery(SAMPLES / "gallery", int8, embedder)
    assert looked_at and set(looked_at) == {"openvino"}, "the int8 run looked at its photos in f32"
    looked_at.clear()
    second = build_gallery(SAMPLES / "gallery", exact, FaceEmbedder(shipped_weights[1], "cpu", flip=True,
                                                                      backend="openvino"))
    assert looked_at == [], "the f32 run reused the int8 run's gallery"
    assert first.names == second.names and np.array_equal(first.embeddings, second.embeddings)


def test_a_damaged_int8_network_is_a_model_error_not_a_traceback(shipped_weights, tmp_path):
    from vidface.detect import FaceDetector, quantised_graph_for
    from vidface.errors import ModelError

    weights = copy_with_int8(shipped_weights[0], tmp_path / "damaged")
    graph = quantised_graph_for(weights)
    graph.write_text(graph.read_text()[: 5000])  # cut short, as an interrupted copy leaves it
    with pytest.raises(ModelError, match="OpenVINO cannot load"):
        FaceDetector(weights, "cpu", backend="openvino-int8")

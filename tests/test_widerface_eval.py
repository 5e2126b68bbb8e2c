"""The WIDER FACE evaluator on cases whose answer is known."""

import numpy as np
import pytest
from conftest import embedder_variant

from vidface.research.datasets import WiderImage
from vidface.research.evaluation.widerface import evaluate_predictions, image_eval, voc_ap


def synthetic(count=30, seed=0):
    rng = np.random.default_rng(seed)
    images, keep = [], {"easy": {}, "medium": {}, "hard": {}}
    for index in range(count):
        n = rng.integers(1, 6)
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(20, 80, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        name = f"0--Event/{index}.jpg"
        images.append(WiderImage(None, name, boxes, np.zeros(n, bool)))
        for subset in keep:
            keep[subset][name] = np.arange(1, n + 1)
    return images, keep


def test_perfect_predictions_score_ap_one():
    images, keep = synthetic()
    predictions = {i.name: np.concatenate([i.boxes, np.full((len(i.boxes), 1), 0.9)], axis=1) for i in images}
    report = evaluate_predictions(predictions, images, keep)
    for subset in ("easy", "medium", "hard"):
        assert report.ap[subset] == pytest.approx(1.0, abs=1e-3)


def test_shifted_boxes_fall_off_with_the_shift():
    images, keep = synthetic()
    aps = []
    for shift in (0.0, 0.1, 0.25, 0.6):
        predictions = {}
        for image in images:
            width = image.boxes[:, 2:3] - image.boxes[:, 0:1]
            moved = image.boxes + np.concatenate([width, np.zeros_like(width)] * 2, axis=1) * shift
            predictions[image.name] = np.concatenate([moved, np.full((len(moved), 1), 0.9)], axis=1)
        aps.append(evaluate_predictions(predictions, images, keep).ap["easy"])
    assert aps[0] == pytest.approx(1.0, abs=1e-3)
    assert aps[1] == pytest.approx(1.0, abs=1e-3)  # IoU 0.82 still matches at 0.5
    assert aps[3] == pytest.approx(0.0, abs=1e-6)  # IoU 0.25: no match
    assert aps[0] >= aps[1] >= aps[2] >= aps[3]


def test_missing_half_the_faces_halves_recall_and_ap():
    images, keep = synthetic(count=200, seed=1)
    predictions = {}
    for index, image in enumerate(images):
        kept = image.boxes[: (len(image.boxes) + 1) // 2] if index % 2 else image.boxes[:0]
        predictions[image.name] = np.concatenate([kept, np.full((len(kept), 1), 0.9)], axis=1)
    found = sum(len(p) for p in predictions.values())
    total = sum(len(i.boxes) for i in images)
    ap = evaluate_predictions(predictions, images, keep).ap["hard"]
    assert ap == pytest.approx(found / total, abs=0.01)


def test_ignored_boxes_neither_count_nor_penalise():
    image = WiderImage(None, "0--E/a.jpg", np.array([[0, 0, 50, 50], [100, 100, 150, 150]], np.float32), np.zeros(2, bool))
    keep = {s: {"0--E/a.jpg": np.array([1])} for s in ("easy", "medium", "hard")}
    both = np.array([[0, 0, 50, 50, 0.9], [100, 100, 150, 150, 0.95]])
    assert evaluate_predictions({"0--E/a.jpg": both}, [image], keep).ap["easy"] == pytest.approx(1.0, abs=1e-3)
    recalled, proposal = image_eval(both[[1, 0]], image.boxes, np.array([True, False]))
    assert list(proposal) == [-1, 1]  # the hit on the ignored box is not counted
    assert list(recalled) == [0, 1]


def test_false_positives_above_true_ones_lower_ap():
    images, keep = synthetic(count=50, seed=2)
    predictions = {}
    for image in images:
        true = np.concatenate([image.boxes, np.full((len(image.boxes), 1), 0.5)], axis=1)
        false = np.array([[900, 900, 950, 950, 0.99]])
        predictions[image.name] = np.concatenate([false, true])
    ap = evaluate_predictions(predictions, images, keep).ap["easy"]
    assert 0.3 < ap < 0.9


def test_voc_ap_of_a_step_curve():
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.5])) == pytest.approx(0.75)


def test_operating_point_counts_boxes_on_no_face_and_recall_at_the_score():
    images, keep = synthetic(count=40, seed=3)
    predictions = {}
    for index, image in enumerate(images):
        true = np.concatenate([image.boxes, np.full((len(image.boxes), 1), 0.8)], axis=1)
        weak_duplicates = true[:1] + np.array([[2, 2, 2, 2, -0.6]])  # on a face, below the score: ignored
        hand = np.array([[900, 900, 950, 950, 0.7 if index % 4 == 0 else 0.2]])  # above it in one image in four
        predictions[image.name] = np.concatenate([true[: len(true) - index % 2], weak_duplicates, hand])
    point = evaluate_predictions(predictions, images, keep, operating_score=0.5).operating
    assert point.false_positives_per_image == pytest.approx(0.25)
    missed = sum(index % 2 for index in range(len(images)))
    assert point.hard_recall == pytest.approx(1 - missed / sum(len(i.boxes) for i in images))
    assert evaluate_predictions(predictions, images, keep).operating is None


def test_the_non_face_filter_drops_only_the_faces_its_head_judges(random_models, tmp_path, monkeypatch):
    import vidface.detect
    from vidface.align import ARCFACE_TEMPLATE
    from vidface.research.cli import _detector_fn
    from vidface.structures import Detection

    class TwoFaces:
        """A 60-px face and a 20-px one in any image."""

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, images, closeups=None):
            big = Detection(np.array([10, 10, 60, 70], np.float32), 0.9,
                            (ARCFACE_TEMPLATE * 50 / 112 + 10).astype(np.float32))
            small = Detection(np.array([100, 100, 116, 120], np.float32), 0.5,
                              (ARCFACE_TEMPLATE * 16 / 112 + 100).astype(np.float32))
            return [[big, small] for _ in images]

    monkeypatch.setattr(vidface.detect, "FaceDetector", TwoFaces)
    image = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    plain = _detector_fn(str(random_models[0]), 640, 0.01, "onnx")(image)
    assert plain.shape == (2, 5)

    def judged_by(bias):
        weights = embedder_variant(random_models[1], tmp_path / f"judge{bias}.safetensors",
                                   non_face_head=[0.0] * 192 + [bias])
        return _detector_fn(str(random_models[0]), 640, 0.01, "onnx", judge=weights)(image)

    assert np.array_equal(judged_by(-1.0), plain)
    kept = judged_by(1.0)
    assert kept.shape == (1, 5) and kept[0, 3] - kept[0, 1] < 32, "only the small face, too small to judge"
    import typer

    with pytest.raises(typer.BadParameter, match="no face/non-face head"):
        _detector_fn(str(random_models[0]), 640, 0.01, "onnx", judge=random_models[1])


def test_the_evaluated_detector_runs_its_close_up_pass_when_asked(random_models, monkeypatch):
    import vidface.detect
    from vidface.research.cli import _detector_fn

    made = []

    class Recorder:
        def __init__(self, *args, closeups=False, **kwargs):
            made.append(closeups)

        def __call__(self, images, closeups=None):
            return [[] for _ in images]

    monkeypatch.setattr(vidface.detect, "FaceDetector", Recorder)
    for closeups in (False, True):
        _detector_fn(str(random_models[0]), 640, 0.01, "onnx", closeups=closeups)
    assert made == [False, True]


def test_a_checkpoint_without_a_calibrated_threshold_is_evaluated_without_an_operating_point(random_models, tmp_path):
    import json
    import subprocess
    import sys

    from conftest import shared

    shared("widerface", "val-eval")
    report = tmp_path / "wider.json"
    run = subprocess.run([sys.executable, "-m", "vidface", "eval", "widerface", "--model", str(random_models[0]),
                          "--limit", "2", "--backend", "onnx", "--json", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(report.read_text())
    assert set(result["ap"]) == {"easy", "medium", "hard"} and "operating" not in result

"""LFW verification metrics, the videofaceid clip scorer and the track-log summary on known cases."""

import io
import pickle

import numpy as np
import pytest

from vidface.errors import DataError
from vidface.evaluation.lfw import _NoCodeUnpickler, roc_auc, tar_at_far, verification_report
from vidface.evaluation.videofaceid import recommend_threshold, score_clip
from vidface.tracklog import summarize


def test_perfectly_separated_pairs():
    same = np.tile([True, False], 300)
    similarity = np.where(same, 0.8, 0.1) + np.random.default_rng(0).uniform(-0.05, 0.05, 600)
    report = verification_report(similarity, same)
    assert report.accuracy_mean == 1.0 and report.accuracy_std == 0.0
    assert 0.15 < report.best_threshold < 0.75
    assert report.roc_auc == 1.0 and report.tar_at_far_1e3 == 1.0 and report.best_f1 == 1.0


def test_random_scores_are_at_chance():
    rng = np.random.default_rng(1)
    same = rng.random(6000) < 0.5
    report = verification_report(rng.random(6000), same)
    assert 0.45 < report.accuracy_mean < 0.55
    assert 0.47 < report.roc_auc < 0.53


def test_threshold_is_chosen_on_other_folds():
    # fold 0 alone has its positives lower than everyone's negatives: it must be scored with the others' threshold
    same = np.tile([True, False], 3000)
    similarity = np.where(same, 0.9, 0.1)
    similarity[:600] = np.where(same[:600], 0.05, 0.0)
    report = verification_report(similarity, same)
    assert report.fold_accuracies[0] == 0.5
    assert report.fold_accuracies[1:] == [1.0] * 9


def test_auc_and_tar_at_far_on_a_known_case():
    similarity = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    same = np.array([True, False, True, False, True, False])
    assert roc_auc(similarity, same) == pytest.approx(6 / 9)
    assert tar_at_far(similarity, same, 0.0) == pytest.approx(1 / 3)


def test_lfw_reader_refuses_pickled_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(DataError):
        _NoCodeUnpickler(io.BytesIO(pickle.dumps(Evil())), encoding="bytes").load()
    plain = pickle.dumps(([b"\xff\xd8", b"\xff\xd8"], [True]))
    assert _NoCodeUnpickler(io.BytesIO(plain), encoding="bytes").load() == ([b"\xff\xd8", b"\xff\xd8"], [True])


def log_with(tracks):
    return {"tracks": [{"identity": name, "display_id": name or "unknown-1", "start_s": 0, "end_s": 1,
                        "detections": [{"frame": f, "box": box, "similarity": 0.5} for f, box in frames]}
                       for name, frames in tracks]}


def test_score_clip_counts_found_named_and_rejected():
    truth = {0: [("Ann", np.array([0, 0, 100, 100])), ("Unknown", np.array([200, 0, 300, 100]))],
             1: [("Ann", np.array([0, 0, 100, 100]))],
             2: [("Ann", np.array([0, 0, 100, 100]))]}
    document = log_with([
        ("Ann", [(0, [5, 5, 105, 105]), (1, [0, 0, 100, 100])]),
        (None, [(0, [210, 0, 310, 100])]),
        ("Bob", [(2, [0, 0, 100, 100]), (1, [500, 500, 550, 550])]),
    ])
    counts = score_clip(truth, document)
    assert counts["truth_boxes"] == 4 and counts["found"] == 4
    assert counts["named_right"] == 3  # Ann, Ann, the unknown; frame 2 was called Bob
    assert counts["unknown_found"] == 1 and counts["unknown_rejected"] == 1
    assert counts["false_names"] == 1  # Bob named where nobody is annotated


def test_low_overlap_is_not_found():
    truth = {0: [("Ann", np.array([0, 0, 100, 100]))]}
    counts = score_clip(truth, log_with([("Ann", [(0, [80, 80, 180, 180])])]))
    assert counts["found"] == 0 and counts["named_right"] == 0


def test_recommended_threshold_caps_false_accepts():
    different = np.linspace(-0.2, 0.5, 1000)
    threshold = recommend_threshold(np.array([0.9]), different, 0.01)
    assert (different >= threshold).mean() <= 0.01
    assert (different >= threshold - 0.002).mean() > 0.005


def test_summary_merges_tracks_of_one_person():
    document = {"tracks": [
        {"identity": "Ann", "display_id": "Ann", "start_s": 1.0, "end_s": 2.0,
         "detections": [{"similarity": 0.6}, {"similarity": 0.8}]},
        {"identity": None, "display_id": "unknown-1", "start_s": 0.5, "end_s": 0.7, "detections": [{"similarity": 0.1}]},
        {"identity": "Ann", "display_id": "Ann", "start_s": 4.0, "end_s": 5.0, "detections": [{"similarity": 0.7}]},
    ]}
    rows = summarize(document)
    assert [r["identity"] for r in rows] == ["Ann", "unknown-1"]
    assert rows[0]["tracks"] == 2 and rows[0]["from_s"] == 1.0 and rows[0]["to_s"] == 5.0
    assert rows[0]["seconds"] == pytest.approx(2.0) and rows[0]["mean_similarity"] == pytest.approx(0.7)


def test_stored_threshold_becomes_the_default_match_threshold(random_models, tmp_path):
    import shutil

    import pytest

    from vidface.embed import update_embedder_config
    from vidface.pipeline import AnnotateSettings, Models

    weights = tmp_path / "e.safetensors"
    shutil.copyfile(random_models[1], weights)
    shutil.copyfile(random_models[1].with_suffix(".json"), weights.with_suffix(".json"))
    update_embedder_config(weights, match_threshold=0.37)
    settings = AnnotateSettings(device="cpu", detector=random_models[0], embedder=weights)
    models = Models.load(settings)
    assert models.threshold(settings) == 0.37
    assert models.threshold(AnnotateSettings(match_threshold=0.5)) == 0.5
    logged = settings.for_log(models)
    assert logged["match_threshold"] == 0.37 and logged["det_conf"] == models.detector.conf
    with pytest.raises(ValueError):
        update_embedder_config(weights, match_treshold=0.3)

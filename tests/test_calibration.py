"""Choosing the detector's default score threshold on held-out images."""

import numpy as np
import pytest

from vidface.research.evaluation.calibration import best_f1_threshold, match_in_score_order


def boxes_at(*corners, size=40.0):
    return np.array([[x, y, x + size, y + size] for x, y in corners], np.float64)


def test_threshold_falls_between_the_true_faces_and_the_false_ones():
    truth = boxes_at((0, 0), (100, 0), (200, 0))
    hits = np.c_[truth, [0.9, 0.8, 0.7]]
    misses = np.c_[boxes_at((0, 300), (100, 300)), [0.4, 0.3]]
    result = best_f1_threshold([np.vstack([misses, hits])], [truth])
    assert result.threshold == pytest.approx(0.7)
    assert (result.f1, result.precision, result.recall, result.faces) == (1.0, 1.0, 1.0, 3)


def test_a_confident_false_positive_is_worth_keeping_when_recall_pays_for_it():
    truth = boxes_at((0, 0), (100, 0), (200, 0), (300, 0))
    predictions = np.c_[np.vstack([boxes_at((0, 300)), truth]), [0.95, 0.9, 0.6, 0.5, 0.2]]
    result = best_f1_threshold([predictions], [truth])
    # at 0.2: 4 of 5 right, all faces found -> F1 0.889, better than stopping at 0.9 (0.33)
    assert result.threshold == pytest.approx(0.2)
    assert result.f1 == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_duplicates_of_one_face_count_once_and_the_second_is_false():
    truth = boxes_at((0, 0))
    predicted = np.c_[boxes_at((0, 0), (2, 2)), [0.9, 0.8]]
    assert match_in_score_order(predicted, truth, np.zeros(1, bool)).tolist() == [1, 0]


def test_faces_too_small_for_the_pipeline_are_ignored_not_missed():
    truth = np.vstack([boxes_at((0, 0)), boxes_at((300, 300), size=8)])
    predictions = np.c_[np.vstack([boxes_at((0, 0)), boxes_at((300, 300), size=8), boxes_at((500, 500), size=6)]),
                        [0.9, 0.95, 0.99]]
    result = best_f1_threshold([predictions], [truth], min_face=12)
    assert result.faces == 1
    assert (result.precision, result.recall, result.threshold) == (1.0, 1.0, pytest.approx(0.9))


def test_ties_are_not_split():
    truth = boxes_at((0, 0), (100, 0))
    predictions = np.c_[np.vstack([truth, boxes_at((0, 300))]), [0.9, 0.5, 0.5]]
    result = best_f1_threshold([predictions], [truth])
    # a threshold of 0.5 keeps both boxes scored 0.5; the curve is read after both
    assert result.threshold == pytest.approx(0.5) and result.precision == pytest.approx(2 / 3)


def test_calibrated_threshold_becomes_the_detectors_default(random_models, tmp_path):
    import shutil

    from vidface.detect import FaceDetector, update_detector_metadata

    weights = tmp_path / "d.safetensors"
    shutil.copyfile(random_models[0], weights)
    assert FaceDetector(weights).conf == 0.5
    update_detector_metadata(weights, det_conf=0.31)
    assert FaceDetector(weights).conf == pytest.approx(0.31)
    assert FaceDetector(weights, conf=0.7).conf == 0.7, "an explicit --det-conf wins"


def test_link_threshold_is_the_most_alike_pair_of_different_peoples_tracks():
    from vidface.research.evaluation.open_set import link_threshold

    rng = np.random.default_rng(0)
    people = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 0, 1.0]], np.float32)  # 0 and 1: 0.8 alike
    owners = np.repeat(np.arange(3), 8)
    embeddings = people[owners] + rng.normal(0, 0.01, (24, 3)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert link_threshold(embeddings, owners, track_size=4) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="two people"):
        link_threshold(embeddings[:8], owners[:8], track_size=4)


def test_photo_check_threshold_is_the_chosen_quantile_of_each_photos_best_own_match():
    from vidface.research.evaluation.open_set import impostor_photo_scores, photo_check_threshold

    rng = np.random.default_rng(0)
    centres = np.eye(6, dtype=np.float32)
    owners = np.repeat(np.arange(6), 5)
    embeddings = centres[owners] + rng.normal(0, 0.3, (30, 6)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    best_own = np.array([similarity[row, owners == owners[row]].max() for row in range(30)])
    # galleries as large as each person's crops: every draw takes them all, so the answer is exact
    assert photo_check_threshold(embeddings, owners, photos_per_person=5, share=0.0) == pytest.approx(best_own.min())
    assert photo_check_threshold(embeddings, owners, photos_per_person=5, share=0.5) == pytest.approx(
        np.median(best_own), abs=1e-6)
    impostors = impostor_photo_scores(embeddings, owners, photos_per_person=5)
    threshold = photo_check_threshold(embeddings, owners, photos_per_person=5, share=0.05)
    assert impostors.shape == (30,) and (impostors < threshold).mean() > 0.8, "people 90 degrees apart are told apart"
    with pytest.raises(ValueError, match="two crops"):
        photo_check_threshold(embeddings[::5], owners[::5])

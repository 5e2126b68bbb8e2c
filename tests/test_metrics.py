"""LFW verification metrics, the videofaceid clip scorer and the track-log summary on known cases."""

import io
import pickle

import numpy as np
import pytest

from vidface.errors import DataError
from vidface.research.evaluation.lfw import _NoCodeUnpickler, roc_auc, tar_at_far, verification_report
from vidface.research.evaluation.open_set import choose_threshold, open_set_scores
from vidface.research.evaluation.videofaceid import score_clip
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
    assert counts["named_wrong"] == 1  # frame 2: Bob for Ann
    assert counts["unknown_found"] == 1 and counts["unknown_rejected"] == 1
    assert counts["false_names"] == 1  # Bob named where nobody is annotated
    assert counts["boxes_without_truth"] == 1
    more = log_with([("Ann", [(0, [5, 5, 105, 105])]), (None, [(7, [0, 0, 40, 40]), (0, [400, 0, 450, 50])])])
    assert score_clip(truth, more)["boxes_without_truth"] == 2, "a box beside the truth, a box in an empty frame"


def test_a_named_stranger_is_a_wrong_name_and_not_rejected():
    truth = {0: [("Unknown", np.array([0, 0, 100, 100]))], 1: [("Ann", np.array([0, 0, 100, 100]))]}
    counts = score_clip(truth, log_with([("Ann", [(0, [0, 0, 100, 100])]), (None, [(1, [0, 0, 100, 100])])]))
    assert counts["found"] == 2 and counts["named_right"] == 0
    assert counts["named_wrong"] == 1, "a known person left unknown is a miss, not a wrong name"
    assert counts["unknown_found"] == 1 and counts["unknown_rejected"] == 0


def test_low_overlap_is_not_found():
    truth = {0: [("Ann", np.array([0, 0, 100, 100]))]}
    counts = score_clip(truth, log_with([("Ann", [(0, [80, 80, 180, 180])])]))
    assert counts["found"] == 0 and counts["named_right"] == 0


def clustered_gallery(people: int, photos: int, spread: float, seed: int = 0, dim: int = 64):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    rows = np.repeat(centres, photos, axis=0) + spread * rng.normal(size=(people * photos, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), np.repeat(np.arange(people), photos)


def test_open_set_scores_play_the_matcher_leave_one_out():
    embeddings, owners = clustered_gallery(people=4, photos=3, spread=0.3)
    scores = open_set_scores(embeddings, owners)
    assert len(scores.known_top) == len(scores.unknown_top) == 12
    similarity = embeddings @ embeddings.T
    # photo 0 (person 0) as a stranger: the best of every other person's photos
    assert scores.unknown_top[0] == pytest.approx(similarity[0, 3:].max())
    # as a known face: the best over the gallery without itself
    assert scores.known_top[0] == pytest.approx(similarity[0, 1:].max())
    assert scores.known_right.all(), "tight clusters: the own person is always on top"


def test_threshold_separates_tight_clusters_completely():
    scores = open_set_scores(*clustered_gallery(people=5, photos=4, spread=0.3))
    threshold = choose_threshold(scores)
    assert scores.named_right(threshold) == 1.0
    assert scores.unknown_rejected(threshold) == 1.0
    assert scores.unknown_top.max() < threshold <= scores.known_top.min() + 1e-3


def test_stranger_top_score_sets_a_higher_threshold_than_pairs_suggest():
    embeddings, owners = clustered_gallery(people=12, photos=6, spread=1.2, seed=3)
    scores = open_set_scores(embeddings, owners)
    similarity = embeddings @ embeddings.T
    different = similarity[owners[:, None] != owners[None, :]]
    threshold = choose_threshold(scores, max_unknown_named=0.05)
    assert 1 - scores.unknown_rejected(threshold) <= 0.05
    # 5 % of strangers named is a far stricter bar than 5 % of different-person pairs
    assert threshold > np.quantile(different, 0.95)
    assert 1 - scores.unknown_rejected(threshold - 0.01) > 0.05 or threshold == scores.unknown_top.min()


def test_balanced_threshold_beats_every_other_candidate():
    scores = open_set_scores(*clustered_gallery(people=8, photos=5, spread=1.0, seed=1))
    threshold = choose_threshold(scores)
    balanced = scores.named_right(threshold) + scores.unknown_rejected(threshold)
    for candidate in np.linspace(-1, 1, 401):
        assert scores.named_right(candidate) + scores.unknown_rejected(candidate) <= balanced + 1e-9


def test_open_set_threshold_needs_two_people():
    scores = open_set_scores(*clustered_gallery(people=1, photos=3, spread=0.3))
    with pytest.raises(ValueError):
        choose_threshold(scores)


def test_summary_merges_tracks_of_one_person_and_reports_their_track_score():
    document = {"tracks": [
        {"identity": "Ann", "display_id": "Ann", "start_s": 1.0, "end_s": 2.0, "score": 0.75, "closest": "Ann",
         "detections": [{"similarity": 0.6}, {"similarity": 0.8}, {"similarity": 0.7}]},
        {"identity": None, "display_id": "unknown-1", "start_s": 0.5, "end_s": 0.7, "score": 0.2, "closest": "Ann",
         "detections": [{"similarity": 0.1}]},
        {"identity": "Ann", "display_id": "Ann", "start_s": 4.0, "end_s": 5.0, "score": 0.71, "closest": "Ann",
         "detections": [{"similarity": 0.7}]},
    ]}
    rows = summarize(document)
    assert [r["identity"] for r in rows] == ["Ann", "unknown-1"]
    assert rows[0]["tracks"] == 2 and rows[0]["from_s"] == 1.0 and rows[0]["to_s"] == 5.0
    assert rows[0]["seconds"] == pytest.approx(2.0)
    # the score the person was named by (tracks weighted by detections), not a mean of single frames
    assert rows[0]["score"] == pytest.approx((0.75 * 3 + 0.71) / 4)
    assert rows[1]["score"] == pytest.approx(0.2)
    no_gallery = {"tracks": [dict(document["tracks"][1], closest=None, score=0.0)]}
    assert summarize(no_gallery)[0]["score"] is None


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
    logged = settings.resolved(models).for_log()
    assert logged["match_threshold"] == 0.37 and logged["det_conf"] == models.detector.conf
    with pytest.raises(ValueError):
        update_embedder_config(weights, match_treshold=0.3)


def test_peer_ratios_are_medians_over_pairs_of_runs():
    from vidface.research.evaluation.peers import ProcessCost, median_ratios

    def pair(peer_wall, our_wall):
        return [ProcessCost("insightface", peer_wall, 2.0, 200.0, {}), ProcessCost("vidface", our_wall, 1.0, 400.0, {})]

    ratios = median_ratios([pair(4.0, 3.0), pair(3.0, 3.0), pair(5.0, 2.0)])  # 0.75, 1.0, 0.4
    assert ratios == {"wall_s": 0.75, "cpu_s": 0.5, "peak_mb": 2.0}


def test_greedy_matches_pair_the_best_overlaps_first_each_box_once():
    from vidface.structures import greedy_matches

    overlap = np.array([[0.9, 0.8, 0.0],
                        [0.85, 0.2, 0.0],
                        [0.0, 0.0, 0.25]])
    # (0, 0) first; row 1 then can only take column 1 (0.2, under 0.3); row 2's 0.25 is under 0.3 too
    assert greedy_matches(overlap, 0.3) == [(0, 0)]
    assert greedy_matches(overlap, 0.1) == [(0, 0), (2, 2), (1, 1)]
    assert greedy_matches(np.zeros((0, 3)), 0.3) == []

"""The face-quality study's measures (issue 14, item 2): geometry, rejection shares, the out-of-fold head."""

import numpy as np
from types import SimpleNamespace

from vidface.align import ARCFACE_TEMPLATE
from vidface.embed import FACE_HEAD_STAGE
from vidface.research.evaluation.face_quality import (gather_detections, landmark_residual,
                                                       out_of_fold_face_head, quality_report, rejected_share,
                                                       stage_features)
from vidface.structures import Detection


def test_landmark_residual_is_zero_for_the_template_at_any_position_size_and_roll():
    angle = np.deg2rad(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE @ rotation.T * 3.7 + np.array([410.0, 95.0])
    assert landmark_residual(ARCFACE_TEMPLATE) < 1e-6
    assert landmark_residual(moved) < 1e-5


def test_landmark_residual_grows_when_the_layout_is_not_a_face():
    upside_down = ARCFACE_TEMPLATE[[3, 4, 2, 0, 1]]  # mouth corners where the eyes belong
    line = np.stack([np.linspace(0, 100, 5), np.zeros(5)], axis=1)
    assert landmark_residual(upside_down) > 0.3
    assert landmark_residual(line) > 0.3
    nudged = ARCFACE_TEMPLATE.copy()
    nudged[2] += [4.0, 0.0]
    assert 0 < landmark_residual(nudged) < landmark_residual(upside_down)


def test_rejected_share_counts_false_values_past_the_real_quantile_on_the_better_side():
    real = np.arange(1000, dtype=float)  # 1 % of them below 9.99, 1 % above 989.01
    low_false = np.array([1.0, 2.0, 500.0, 600.0])
    high_false = np.array([995.0, 999.0, 2000.0, 5.0, 400.0])
    assert rejected_share(real, low_false, 0.01) == 0.5
    assert rejected_share(real, high_false, 0.01) == 0.6
    with_missing = np.array([np.nan, 1.0])
    assert rejected_share(real, with_missing, 0.01) == 0.5  # a NaN is never rejected, but counts


def test_the_face_head_scores_each_image_with_a_head_that_never_saw_it():
    rng = np.random.default_rng(0)
    count = 400
    false = rng.random(count) < 0.2
    groups = np.arange(count) // 4
    separable = rng.normal(size=(count, 6)) + np.where(false[:, None], 3.0, 0.0) * np.eye(6)[0]
    logits = out_of_fold_face_head(separable, false, groups)
    assert logits[false].mean() > logits[~false].mean() + 2
    assert rejected_share(logits[~false], logits[false], 0.01) > 0.5
    noise = rng.normal(size=(count, 6))
    held_out = out_of_fold_face_head(noise, false, groups)
    assert rejected_share(held_out[~false], held_out[false], 0.01) < 0.2  # no leak from a row into its own score


class TwoFacesDetector:
    """Finds a face-shaped box at the top left and a hand-like one at the bottom right of any image."""

    def __call__(self, images, closeups=None):
        face = Detection(np.array([10, 10, 50, 60], np.float32), 0.9,
                         (ARCFACE_TEMPLATE * 40 / 112 + 10).astype(np.float32))
        hand = Detection(np.array([100, 100, 140, 150], np.float32), 0.4,
                         np.array([[100, 140], [140, 140], [120, 120], [105, 102], [135, 102]], np.float32))
        return [[face, hand] for _ in images]


class MeanColourEmbedder:
    def raw(self, crops):
        return np.stack([crop.reshape(-1, 3).mean(axis=0) + 1.0 for crop in crops]).astype(np.float32)


def test_gather_labels_a_detection_false_only_where_no_known_face_is():
    records = [SimpleNamespace(path=f"image{i}", boxes=np.array([[8, 8, 52, 62]], np.float32)) for i in range(6)]
    teacher = lambda image: SimpleNamespace(boxes=np.zeros((0, 4), np.float32))  # noqa: E731
    images = {f"image{i}": np.full((200, 200, 3), 20 * i, np.uint8) for i in range(5)}  # image5 is unreadable
    sample = gather_detections(records, TwoFacesDetector(), MeanColourEmbedder(), teacher, images.get)
    assert sample.false.tolist() == [False, True] * 5
    assert sample.image.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert sample.raw.shape == (10, 3)
    assert np.all(sample.residual[~sample.false] < 1e-3) and np.all(sample.residual[sample.false] > 0.3)
    rows = quality_report(sample, centre=None)
    geometry = next(r for r in rows if r["cue"] == "landmark geometry" and r["min_height"] == 0)
    assert (geometry["real"], geometry["false"]) == (5, 5)
    assert geometry["rejected_at_0.010"] == 1.0  # every upside-down layout is past the real faces' 99th percentile
    assert {r["cue"] for r in rows} >= {"detector score", "feature norm", "linear head on the embedding"}


def test_standardising_lets_the_head_use_a_feature_of_any_scale():
    rng = np.random.default_rng(1)
    count = 400
    false = rng.random(count) < 0.2
    groups = np.arange(count) // 4
    features = rng.normal(size=(count, 4))
    features[:, 0] = (features[:, 0] + np.where(false, 3.0, 0.0)) * 1e-4  # the signal, in a tiny unit
    features[:, 1:] *= 1e3
    plain = out_of_fold_face_head(features, false, groups)
    scaled = out_of_fold_face_head(features, false, groups, standardise=True)
    assert rejected_share(scaled[~false], scaled[false], 0.01) > 0.5
    assert rejected_share(scaled[~false], scaled[false], 0.01) > rejected_share(plain[~false], plain[false], 0.01)


def test_stage_features_are_channel_means_of_the_embedder_stage(random_models):
    from vidface.embed_net import load_embedder_net

    net, config = load_embedder_net(random_models[1])
    net.eval()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    features = stage_features(net, config, crops, batch_size=2)
    assert features.shape == (3, 192)  # EfficientNet-B0's stage 6
    scale = np.abs(features).max()
    assert scale > 0
    assert np.abs(stage_features(net, config, crops[1:2]) - features[1:2]).max() < 1e-4 * scale  # batch-independent
    assert np.abs(features[0] - features[1]).max() > 1e-2 * scale
    assert stage_features(net, config, []).shape[0] == 0


def test_mid_level_features_add_their_own_head_to_the_report():
    records = [SimpleNamespace(path=f"image{i}", boxes=np.array([[8, 8, 52, 62]], np.float32)) for i in range(8)]
    teacher = lambda image: SimpleNamespace(boxes=np.zeros((0, 4), np.float32))  # noqa: E731
    images = {f"image{i}": np.full((200, 200, 3), 20 * i, np.uint8) for i in range(8)}
    sample = gather_detections(records, TwoFacesDetector(), MeanColourEmbedder(), teacher, images.get,
                               mid_features=lambda crops: np.stack([c.reshape(-1, 3).std(axis=0) for c in crops]))
    assert sample.mid.shape == (16, 3)
    cues = {r["cue"] for r in quality_report(sample, centre=None)}
    assert f"linear head on the embedder's stage-{FACE_HEAD_STAGE} features" in cues
    without = gather_detections(records, TwoFacesDetector(), MeanColourEmbedder(), teacher, images.get)
    assert without.mid.shape == (16, 0)
    assert not any("stage" in r["cue"] for r in quality_report(without, centre=None))


def test_the_stored_head_costs_the_asked_share_of_the_real_faces_it_judges():
    from vidface.research.evaluation.face_quality import QualitySample, calibrated_non_face_head

    rng = np.random.default_rng(2)
    count = 2000
    false = rng.random(count) < 0.2
    height = rng.uniform(10, 100, count)
    mid = rng.normal(size=(count, 5)) * [1, 10, 100, 1, 1] + np.where(false[:, None], 2.0, 0.0) * np.eye(5)[0]
    sample = QualitySample(false=false, image=np.arange(count), height=height, width=height, score=np.ones(count),
                           residual=np.zeros(count), raw=np.zeros((count, 4), np.float32), mid=mid)
    head = np.asarray(calibrated_non_face_head(sample, min_height=32.0, true_loss=0.01))
    assert head.shape == (6,)
    logits = mid @ head[:-1] + head[-1]
    judged = height >= 32.0
    assert abs((logits[judged & ~false] > 0).mean() - 0.01) < 0.003
    assert (logits[judged & false] > 0).mean() > 0.2  # the head still catches false faces at that cost


def test_two_detectors_detections_pool_into_one_sample_with_each_image_kept_together():
    from vidface.research.evaluation.face_quality import pooled_samples

    records = [SimpleNamespace(path=f"image{i}", boxes=np.array([[8, 8, 52, 62]], np.float32)) for i in range(3)]
    teacher = lambda image: SimpleNamespace(boxes=np.zeros((0, 4), np.float32))  # noqa: E731
    images = {f"image{i}": np.full((200, 200, 3), 30 * i, np.uint8) for i in range(3)}
    first = gather_detections(records, TwoFacesDetector(), MeanColourEmbedder(), teacher, images.get)
    second = gather_detections(records, TwoFacesDetector(), MeanColourEmbedder(), teacher, images.get)
    second.score = second.score * 0.5  # tell the second detector's rows apart
    pooled = pooled_samples([first, second])
    assert len(pooled.false) == len(first.false) + len(second.false) == 12
    assert pooled.false.tolist() == first.false.tolist() + second.false.tolist()
    assert pooled.score.tolist() == first.score.tolist() + second.score.tolist()
    assert pooled.raw.shape == (12, 3) and pooled.mid.shape[0] == 12
    assert pooled.image.tolist() == [0, 0, 1, 1, 2, 2] * 2  # an image's detections share its index: one fold
    assert pooled_samples([first]) is first

"""Training building blocks: ArcFace margin, augmentation, teacher-labelled YOLO-pose rows."""

import math
import random

import numpy as np
import pytest
import torch

from vidface.research.evaluation.teachers import TeacherOutput
from vidface.research.datasets import WiderImage
from vidface.research.train.embedder import ArcFaceHead, EmbedderTrainConfig, augment
from vidface.research.train.widerface_data import FLIP_INDEX, PoseLabel, label_image, pose_label_lines


def head_with_angle(theta, margin=0.5, easy=False):
    head = ArcFaceHead(2, 2, scale=1.0, margin=margin, easy_margin=easy)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    embedding = torch.tensor([[math.cos(theta), math.sin(theta)]])
    return head(embedding, torch.tensor([0]))[0]


def test_margin_is_added_to_the_true_class_angle():
    logits = head_with_angle(0.3)
    assert logits[0].item() == pytest.approx(math.cos(0.3 + 0.5), abs=1e-5)
    assert logits[1].item() == pytest.approx(math.cos(math.pi / 2 - 0.3), abs=1e-5)  # other class untouched


def test_fallback_keeps_logit_monotonic_past_pi_minus_m():
    margin = 0.5
    thetas = np.linspace(0.1, math.pi - 0.05, 200)
    logits = [head_with_angle(t, margin)[0].item() for t in thetas]
    assert all(a >= b - 1e-6 for a, b in zip(logits, logits[1:])), "target logit must fall as the angle grows"
    beyond = math.pi - 0.2
    assert head_with_angle(beyond, margin)[0].item() == pytest.approx(
        math.cos(beyond) - math.sin(math.pi - margin) * margin, abs=1e-5)


def test_easy_margin_applies_only_when_cosine_is_positive():
    assert head_with_angle(2.0, easy=True)[0].item() == pytest.approx(math.cos(2.0), abs=1e-5)
    assert head_with_angle(0.4, easy=True)[0].item() == pytest.approx(math.cos(0.9), abs=1e-5)


def test_augment_keeps_shape_and_changes_pixels():
    crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    config = EmbedderTrainConfig()
    outputs = [augment(crop, config, random.Random(seed)) for seed in range(10)]
    assert all(o.shape == (112, 112, 3) and o.dtype == np.uint8 for o in outputs)
    assert sum(not np.array_equal(o, crop) for o in outputs) >= 8


def test_pose_rows_keep_every_box_and_mark_unlabelled_landmarks_invisible():
    label = PoseLabel(
        boxes=np.array([[10, 20, 50, 80], [100, 100, 120, 130]], np.float32),
        landmarks=np.array([[[20, 40], [40, 40], [30, 55], [22, 65], [38, 65]], np.zeros((5, 2))], np.float32),
        visible=np.array([True, False]),
    )
    rows = [list(map(float, line.split())) for line in pose_label_lines(label, 200, 200)]
    assert len(rows) == 2 and all(len(r) == 20 for r in rows)
    assert rows[0][1:5] == pytest.approx([0.15, 0.25, 0.2, 0.3])
    assert rows[0][5:8] == pytest.approx([0.1, 0.2, 2.0])
    assert rows[1][5:] == [0.0] * 15
    assert FLIP_INDEX == [1, 0, 2, 4, 3]
    outside = PoseLabel(np.array([[10, 250, 50, 290]], np.float32), np.zeros((1, 5, 2), np.float32), np.array([False]))
    assert pose_label_lines(outside, 200, 200) == []


def test_teacher_landmarks_go_to_the_best_overlapping_truth_box():
    record = WiderImage(None, "x.jpg", np.array([[0, 0, 40, 40], [100, 0, 140, 40], [0, 0, 2, 2]], np.float32),
                        np.array([False, False, False]))
    points = np.arange(20, dtype=np.float32).reshape(2, 5, 2)

    def teacher(image):
        return TeacherOutput(np.array([[101, 1, 141, 41], [300, 300, 340, 340]], np.float32),
                             np.array([0.9, 0.9], np.float32), points)

    label = label_image(np.zeros((200, 400, 3), np.uint8), record, teacher, min_face=4, match_iou=0.5)
    assert len(label.boxes) == 2, "the 2-pixel box is dropped"
    assert list(label.visible) == [False, True]
    np.testing.assert_array_equal(label.landmarks[1], points[0])


def test_teacher_faces_no_human_box_overlaps_become_extra_positives():
    record = WiderImage(None, "x.jpg", np.array([[0, 0, 40, 40], [200, 0, 240, 40]], np.float32),
                        np.array([False, True]))
    points = np.arange(40, dtype=np.float32).reshape(4, 5, 2)
    taught = TeacherOutput(np.array([[1, 1, 41, 41],        # the human face: its landmarks, not an extra box
                                     [205, 2, 242, 40],     # an invalid human box: never an extra positive
                                     [300, 100, 340, 140],  # unlabelled and confident: an extra positive
                                     [100, 100, 140, 140]], np.float32),  # unlabelled but unsure: left out
                           np.array([0.95, 0.95, 0.9, 0.7], np.float32), points)
    label = label_image(np.zeros((200, 400, 3), np.uint8), record, lambda image: taught, 4, 0.5, extra_score=0.8)
    assert label.extra == 1
    np.testing.assert_array_equal(label.boxes, [[0, 0, 40, 40], [300, 100, 340, 140]])
    assert list(label.visible) == [True, True]
    np.testing.assert_array_equal(label.landmarks[1], points[2])
    plain = label_image(np.zeros((200, 400, 3), np.uint8), record, lambda image: taught, 4, 0.5)
    assert plain.extra == 0 and len(plain.boxes) == 1


def test_invalid_boxes_are_dropped():
    record = WiderImage(None, "x.jpg", np.array([[0, 0, 40, 40], [100, 0, 140, 40]], np.float32), np.array([True, False]))
    empty = TeacherOutput(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    label = label_image(np.zeros((50, 200, 3), np.uint8), record, lambda image: empty, 4, 0.5)
    np.testing.assert_array_equal(label.boxes, [[100, 0, 140, 40]])


def test_centred_teacher_vectors_spread_over_the_sphere():
    from vidface.research.train.embedder import centre_teacher

    rng = np.random.default_rng(0)
    axis = np.ones(16) / 4.0
    narrow = axis + 0.15 * rng.normal(size=(200, 16))  # all within a narrow cone, like dlib's
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)
    before = (narrow @ narrow.T)[np.triu_indices(200, 1)].mean()
    centred = centre_teacher(narrow)
    after = (centred @ centred.T)[np.triu_indices(200, 1)].mean()
    assert before > 0.7 and abs(after) < 0.05
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, rtol=1e-5)


def test_stored_centre_is_subtracted_before_normalising(random_models, tmp_path):
    import shutil

    import cv2

    from vidface.embed import FaceEmbedder
    from vidface.research.train.embedder import store_embedding_centre

    weights = tmp_path / "e.safetensors"
    shutil.copyfile(random_models[1], weights)
    shutil.copyfile(random_models[1].with_suffix(".json"), weights.with_suffix(".json"))
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(6)]
    paths = []
    for index, crop in enumerate(crops):
        paths.append(tmp_path / f"{index}.jpg")
        cv2.imwrite(str(paths[-1]), crop, [cv2.IMWRITE_JPEG_QUALITY, 100])
    before = FaceEmbedder(weights)
    centre = store_embedding_centre(weights, paths)
    after = FaceEmbedder(weights)
    decoded = [cv2.imread(str(p)) for p in paths]
    np.testing.assert_allclose(centre, before.raw(decoded).mean(axis=0), rtol=1e-4, atol=1e-4)
    expected = before.raw(decoded) - centre
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(after(decoded), expected, atol=1e-4)
    assert abs(after(decoded).sum(axis=0)).max() < abs(before(decoded).sum(axis=0)).max()
    assert after.fingerprint != before.fingerprint, "gallery caches must be rebuilt when the centre changes"


def test_face_crops_keep_big_faces_with_all_landmarks(tmp_path):
    import cv2

    from vidface.research.train.widerface_data import build_face_crops, pose_label_lines, read_pose_label

    image = np.full((200, 300, 3), 128, np.uint8)
    boxes = np.array([[20, 20, 120, 140], [200, 20, 220, 44], [150, 100, 250, 190]], np.float32)
    eyes_nose_mouth = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    landmarks = np.stack([b[:2] + eyes_nose_mouth * (b[2:] - b[:2]) for b in boxes])
    label = PoseLabel(boxes, landmarks, np.array([True, True, False]))
    for folder in ("images/train", "labels/train", "images/val", "labels/val"):
        (tmp_path / "set" / folder).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "set/images/train/a.jpg"), image)
    (tmp_path / "set/labels/train/a.txt").write_text("\n".join(pose_label_lines(label, 300, 200)) + "\n")
    cv2.imwrite(str(tmp_path / "set/images/train/empty.jpg"), image)
    (tmp_path / "set/labels/train/empty.txt").write_text("")

    parsed = read_pose_label(tmp_path / "set/labels/train/a.txt", 300, 200)
    np.testing.assert_allclose(parsed.boxes, boxes, atol=0.01)
    np.testing.assert_allclose(parsed.landmarks[:2], landmarks[:2], atol=0.01)
    assert parsed.visible.tolist() == [True, True, False]

    stats = build_face_crops(tmp_path / "set", tmp_path / "crops", min_size=40)
    crops = sorted((tmp_path / "crops").glob("*.jpg"))
    # the second face is too small, the third has no landmarks
    assert stats == {"images": 2, "faces": 1} and [c.name for c in crops] == ["a__0.jpg"]
    assert cv2.imread(str(crops[0])).shape == (112, 112, 3)


def test_relational_loss_is_zero_only_when_student_shares_the_teachers_geometry():
    from vidface.research.train.embedder import centre_teacher, relational_loss

    rng = np.random.default_rng(1)
    teacher = torch.from_numpy(centre_teacher(rng.normal(size=(32, 8)).astype(np.float32)))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    # any rotation, scale or shared offset of the teacher's vectors keeps every pairwise cosine
    same_geometry = 3.0 * teacher @ torch.from_numpy(rotation.astype(np.float32)) + 5.0
    unrelated = torch.from_numpy(rng.normal(size=(32, 8)).astype(np.float32))
    assert relational_loss(same_geometry, teacher).item() < 1e-3
    assert relational_loss(unrelated, teacher).item() > 0.05


def test_a_colour_cast_tints_the_channels_apart():
    crop = np.full((112, 112, 3), 120, np.uint8)
    still = dict(flip_p=0, jitter_p=0, blur_p=0, jpeg_p=0, occlusion_p=0, affine_p=0)
    assert np.array_equal(augment(crop, EmbedderTrainConfig(**still), random.Random(0)), crop)
    tinted = [augment(crop, EmbedderTrainConfig(colour_cast_p=1.0, **still), random.Random(seed)) for seed in range(5)]
    for image in tinted:
        means = image.reshape(-1, 3).mean(axis=0)
        assert np.ptp(means) > 1 and (np.abs(means - 120) <= 0.25 * 120 + 1).all()


def test_a_run_trains_on_crops_normalised_as_the_runtime_normalises_them_and_ships_the_setting(tmp_path):
    import cv2

    from vidface.embed import EmbedderConfig, crops_to_batch
    from vidface.research.train.embedder import FaceCropDataset, embedder_config_for

    rng = np.random.default_rng(4)
    lit = rng.integers(60, 200, (112, 112, 3), dtype=np.uint8)
    dark = (lit * 0.35).astype(np.uint8)
    paths = [tmp_path / "lit.png", tmp_path / "dark.png"]
    cv2.imwrite(str(paths[0]), lit)
    cv2.imwrite(str(paths[1]), dark)
    still = dict(flip_p=0, jitter_p=0, blur_p=0, jpeg_p=0, occlusion_p=0, affine_p=0)
    config = EmbedderTrainConfig(crop_normalisation="luminance", **still)
    embed_config = embedder_config_for(config)
    assert embed_config.crop_normalisation == "luminance"
    dataset = FaceCropDataset(paths, [0, 0], np.zeros((2, 4), np.float32), config, embed_config)
    (lit_tensor, _, _), (dark_tensor, _, _) = dataset[0], dataset[1]
    assert (lit_tensor - dark_tensor).abs().mean() < 0.05  # the network sees both on the same terms
    torch.testing.assert_close(lit_tensor, torch.from_numpy(crops_to_batch([lit], embed_config)[0]))
    plain = FaceCropDataset(paths, [0, 0], np.zeros((2, 4), np.float32), EmbedderTrainConfig(**still), EmbedderConfig())
    assert (plain[0][0] - plain[1][0]).abs().mean() > 0.5
    with pytest.raises(ValueError, match="crop_normalisation"):
        embedder_config_for(EmbedderTrainConfig(crop_normalisation="clahe"))


def test_preloaded_crops_give_the_same_samples_as_reading_files(tmp_path):
    import cv2

    from vidface.embed import EmbedderConfig
    from vidface.research.train.embedder import FaceCropDataset

    rng = np.random.default_rng(2)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    no_augmentation = dict(flip_p=0, jitter_p=0, blur_p=0, jpeg_p=0, occlusion_p=0, affine_p=0)
    teacher = rng.normal(size=(3, 4)).astype(np.float32)
    from_files = FaceCropDataset(paths, [0, 1, -1], teacher, EmbedderTrainConfig(**no_augmentation), EmbedderConfig())
    preloaded = FaceCropDataset(paths, [0, 1, -1], teacher, EmbedderTrainConfig(preload=True, **no_augmentation),
                                EmbedderConfig())
    for index in range(3):
        (a, label_a, teacher_a), (b, label_b, teacher_b) = from_files[index], preloaded[index]
        assert label_a == label_b and torch.equal(teacher_a, teacher_b)
        torch.testing.assert_close(a, b)
    assert preloaded.crops.shape == (3, 112, 112, 3)


def test_training_faces_pack_into_parts_that_fit_a_device_call(tmp_path, monkeypatch):
    import zipfile

    import cv2

    from vidface.research.train.embedder import EmbedderTrainConfig, pack_training_faces

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for person in range(6):
        for index in range(3):
            path = root / "faces" / "people" / f"p{person}" / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    (root / "faces" / "crowd").mkdir()
    for index in range(4):
        cv2.imwrite(str(root / "faces" / "crowd" / f"{index}.webp"), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache" / "teacher").mkdir(parents=True)
    np.savez(tmp_path / "cache" / "teacher" / "t.npz", names=np.array(["x"]), embeddings=np.zeros((1, 128)))
    config = EmbedderTrainConfig(labelled_sets=["faces/people"], unlabelled_sets=["faces/crowd"],
                                 teacher_cache="cache/teacher/t.npz", calibration_set="faces/people")
    limit = 200_000
    parts = pack_training_faces(config, tmp_path / "out", limit, root=root)
    assert len(parts) > 1 and all(part.stat().st_size <= limit for part in parts)
    names = [name for part in parts for name in zipfile.ZipFile(part).namelist()]
    assert len(names) == len(set(names)) == 6 * 3 + 4 + 1
    assert "faces/people/p3/2.jpg" in names and "faces/crowd/1.webp" in names and "cache/teacher/t.npz" in names
    unpacked = tmp_path / "unpacked"
    for part in parts:
        zipfile.ZipFile(part).extractall(unpacked)
    assert (unpacked / "faces/people/p3/2.jpg").read_bytes() == (root / "faces/people/p3/2.jpg").read_bytes()
    with np.load(unpacked / "cache/teacher/t.npz", allow_pickle=False) as teacher:
        assert teacher["names"].tolist() == ["x"] and teacher["embeddings"].shape == (1, 128)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    import json

    import cv2

    from vidface.research.train.embedder import EmbedderTrainConfig, train_embedder

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    names = []
    for person in range(2):
        for index in range(3):
            path = root / "faces" / "people" / f"p{person}" / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
            names.append(f"people/p{person}/{index}.jpg")
    for index in range(3):  # faces aligned as the pipeline aligns them: the shipped centre is their mean output
        path = root / "faces" / "as-run" / f"{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])
    teacher = tmp_path / "teacher.npz"
    vectors = rng.normal(size=(len(names), 128)).astype(np.float32)
    np.savez(teacher, names=np.array(names), embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    monkeypatch.setenv("VIDFACE_DATA", str(root))
    config = EmbedderTrainConfig(labelled_sets=["faces/people"], unlabelled_sets=[], teacher_cache=str(teacher),
                                 epochs=2, batch_size=3, eval_every=0, workers=0, threads=1, warmup_epochs=0.5,
                                 arcface_weight=1.0, preload=True, channels_last=True, crop_normalisation="luminance",
                                 centre_set="faces/as-run")
    run = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill_after_first_epoch(line):
        if line.startswith("{") and json.loads(line)["epoch"] == 1:
            raise Killed  # the checkpoint of epoch 1 is on disk: the process dies here

    with pytest.raises(Killed):
        train_embedder(config, run, log=kill_after_first_epoch)
    first = torch.load(run / "last.ckpt", weights_only=True)
    assert first["epoch"] == 1 and first["optimizer"]["state"], "optimizer state is saved with the weights"
    with pytest.raises(FileExistsError, match="--resume"):
        train_embedder(config, run, log=lambda line: None)
    lines = []
    train_embedder(config, run, resume=True, log=lines.append)
    assert lines[0] == f"resumed from {run / 'last.ckpt'} at epoch 1"
    assert [json.loads(line)["epoch"] for line in lines if line.startswith("{")] == [2], "only the missing epoch"
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 2
    shipped = json.loads((run / "embedder.json").read_text())
    assert (run / "embedder.safetensors").exists() and shipped["centre"]
    assert shipped["crop_normalisation"] == "luminance", "the runtime prepares crops as the run trained on them"
    from vidface.embed import FaceEmbedder

    as_run = [cv2.imread(str(path)) for path in sorted((root / "faces" / "as-run").iterdir())]
    np.testing.assert_allclose(shipped["centre"], FaceEmbedder(run / "embedder.safetensors").raw(as_run).mean(axis=0),
                               rtol=1e-4, atol=1e-4)

    from dataclasses import replace

    lines = []
    train_embedder(replace(config, head_init="centroids", epochs=1), tmp_path / "next", init=run / "last.ckpt",
                   log=lines.append)
    assert lines[:2] == [f"initialised from {run / 'last.ckpt'} (trained 2 epochs there)",
                         "ArcFace head started from the centroids of 2 people"]

    lines = []
    train_embedder(replace(config, epochs=1), tmp_path / "from-shipped", init=run / "embedder.safetensors",
                   log=lines.append)
    assert lines[0] == (f"initialised from {run / 'embedder.safetensors'} "
                        "(network only; distillation projector fitted by least squares)")
    assert torch.load(tmp_path / "from-shipped" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_arcface_head_can_start_from_each_persons_mean_embedding(tmp_path):
    import cv2

    from vidface.embed import EmbedderConfig
    from vidface.embed_net import EmbedderNet, crops_to_tensor
    from vidface.research.train.embedder import FaceCropDataset, class_centroids

    rng = np.random.default_rng(3)
    paths, labels = [], [0, 0, 1, -1, 1, 1]
    for index in range(len(labels)):
        paths.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    embed_config = EmbedderConfig(embedding_size=16)
    dataset = FaceCropDataset(paths, labels, np.zeros((len(labels), 4), np.float32), EmbedderTrainConfig(),
                              embed_config)
    torch.manual_seed(0)
    net = EmbedderNet(embed_config).train()
    centroids = class_centroids(net, dataset, classes=2, device=torch.device("cpu"), batch_size=4)
    assert net.training, "the network is handed back in training mode"
    net.eval()
    with torch.no_grad():
        each = torch.nn.functional.normalize(
            net(crops_to_tensor([cv2.imread(str(p)) for p in paths], embed_config)), dim=1)
    for person in (0, 1):
        members = [i for i, label in enumerate(labels) if label == person]
        expected = torch.nn.functional.normalize(each[members].mean(dim=0), dim=0)
        torch.testing.assert_close(centroids[person], expected, atol=1e-4, rtol=1e-4)


def test_false_faces_are_detections_on_no_human_or_teacher_face():
    from vidface.research.train.widerface_data import false_faces

    faces = np.array([[100, 100, 140, 150], [300, 40, 310, 52]], np.float32)
    detections = np.array([
        [102, 98, 141, 152],   # the first face, boxed well
        [290, 30, 330, 70],    # a loose box around the tiny second face: not a false face either
        [10, 200, 50, 240],    # nothing there: a hand, an ear
        [135, 140, 175, 190],  # touches the first face's corner only
    ], np.float32)
    assert false_faces(detections, faces).tolist() == [False, False, True, True]
    assert false_faces(detections, np.zeros((0, 4), np.float32)).all()


def test_background_crop_keeps_the_false_face_and_paints_real_faces_out():
    from vidface.research.train.widerface_data import background_crop

    image = np.full((300, 400, 3), 200, np.uint8)
    false_box = np.array([370, 10, 390, 40], np.float32)  # near the corner: the square must move inside
    face = np.array([330, 50, 360, 80], np.float32)
    crop, (x1, y1, x2, y2) = background_crop(image, false_box, face[None], context=3.0, min_side=96)
    assert crop.shape == (96, 96, 3) and (x2 - x1, y2 - y1) == (96, 96)
    assert 0 <= x1 and x2 <= 400 and 0 <= y1 and y2 <= 300
    assert x1 <= 370 and 390 <= x2 and y1 <= 10 and 40 <= y2, "the false face stays in the crop"
    assert (crop[int(65 - y1), int(345 - x1)] == 114).all(), "the real face is painted grey"
    assert (crop[int(25 - y1), int(380 - x1)] == 200).all(), "the false face is left as it is"


def test_mined_negatives_join_the_training_split_as_background_images(tmp_path, monkeypatch):
    import cv2
    import json

    from vidface.research.train import widerface_data
    from vidface.structures import Detection

    dataset = tmp_path / "pose"
    (dataset / "images" / "train").mkdir(parents=True)
    (dataset / "images" / "val").mkdir(parents=True)
    (dataset / "data.yaml").write_text("path: x\ntrain: images/train\nval: images/val\nnames:\n  0: face\n")
    records = []
    for name in ("0--Parade/a.jpg", "0--Parade/b.jpg", "1--Held/out.jpg"):
        path = tmp_path / "wider" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((240, 320, 3), 90, np.uint8))
        records.append(WiderImage(path, name, np.array([[40, 40, 80, 90]], np.float32), np.array([False])))
    for record in records[:2]:  # the third is the trainer's hold-out: never mined
        (dataset / "images" / "train" / (record.name.replace("/", "__")[:-4] + ".jpg")).write_bytes(b"")
    monkeypatch.setattr(widerface_data, "training_images", lambda root=None: records)
    seen = []

    def detector(images, closeups=None):
        seen.append(closeups)
        return [[Detection(np.array([41, 41, 80, 88], np.float32), 0.9),
                 Detection(np.array([200, 150, 230, 190], np.float32), 0.6),
                 Detection(np.array([205, 160, 215, 170], np.float32), 0.5)]]  # inside the first crop: no new one

    def no_teacher(image):
        return TeacherOutput(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    stats = widerface_data.mine_hard_negatives(dataset, detector, no_teacher, min_side=96)
    assert seen == [False, False], "the main pass only, on the two training images"
    assert stats["false_faces"] == 4 and stats["crops"] == 2 and stats["source_images"] == 2
    crops = sorted((dataset / "images" / "train-negatives").glob("*.jpg"))
    labels = sorted((dataset / "labels" / "train-negatives").glob("*.txt"))
    assert len(crops) == 2 and [p.stem for p in labels] == [p.stem for p in crops]
    assert all(p.read_text() == "" for p in labels), "background images: nothing to find"
    assert "train: [images/train, images/train-negatives]" in (dataset / "data.yaml").read_text()
    assert json.loads((dataset / "negatives.json").read_text())["negatives"][0]["score"] == 0.6
    widerface_data.mine_hard_negatives(dataset, detector, no_teacher, min_side=96)  # replaces, never piles up
    assert len(list((dataset / "images" / "train-negatives").glob("*.jpg"))) == 2
    assert (dataset / "data.yaml").read_text().count("train:") == 1
    assert widerface_data.draw_negatives_preview(dataset, tmp_path / "preview.png").exists()


def test_event_balanced_split_lists_val_train_images_twice_and_resolves_as_ultralytics_reads_it(tmp_path):
    from pathlib import Path
    from types import SimpleNamespace

    import cv2

    from vidface.offline import load_ultralytics
    from vidface.research.train import widerface_data

    dataset = tmp_path / "pose"
    names = {"train": ["0_Parade_a", "2_Demonstration_b", "35--Basketball__c"], "train-negatives": ["0_Parade_a__negative0"],
             "val": ["12--Group__held"]}
    for split, stems in names.items():
        for folder, suffix in (("images", ".jpg"), ("labels", ".txt")):
            (dataset / folder / split).mkdir(parents=True)
        for stem in stems:
            cv2.imwrite(str(dataset / "images" / split / f"{stem}.jpg"), np.zeros((8, 8, 3), np.uint8))
            (dataset / "labels" / split / f"{stem}.txt").write_text("")
    (dataset / "data.yaml").write_text(f"path: {dataset}\ntrain: [images/train, images/train-negatives]\n"
                                       "val: images/val\nnames:\n  0: face\n")
    balanced = widerface_data.write_event_balanced_split(dataset, repeat=2)
    text = balanced.read_text()
    assert text.count("train:") == 1 and "val: images/val" in text and "names:" in text
    load_ultralytics()
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import img2label_paths

    listed = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0),
                                       str(dataset / widerface_data.BALANCED_LIST))
    stems = sorted(Path(f).stem for f in listed)
    assert stems == sorted(["0_Parade_a", "2_Demonstration_b", "35--Basketball__c", "35--Basketball__c",
                            "0_Parade_a__negative0"]), "val-train (event folder in the name) twice, the rest once"
    assert all(Path(f).exists() for f in listed) and all(Path(f).exists() for f in img2label_paths(listed))
    assert not any("held" in f for f in listed), "the hold-out never trains"


def test_a_schedule_can_start_from_shipped_weights_with_a_fitted_projector(tmp_path):
    import cv2

    from vidface.embed import EmbedderConfig
    from vidface.embed_net import EmbedderNet, crops_to_tensor, save_embedder
    from vidface.research.train.embedder import FaceCropDataset, Student, start_from_shipped_weights

    rng = np.random.default_rng(5)
    embed_config = EmbedderConfig(embedding_size=16)
    torch.manual_seed(1)
    shipped = EmbedderNet(embed_config).eval()
    save_embedder(shipped, embed_config, tmp_path / "shipped.safetensors")
    crops = rng.integers(0, 255, (48, 112, 112, 3), dtype=np.uint8)
    paths = []
    for index, crop in enumerate(crops):
        paths.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(paths[-1]), crop)
    with torch.no_grad():
        embeddings = shipped(crops_to_tensor(list(crops), embed_config)).numpy().astype(np.float64)
    # a teacher that is an exact affine map of the shipped network's embeddings: the fit must find it
    mapping, offset = rng.normal(size=(16, 8)), rng.normal(size=8)
    teacher = (embeddings @ mapping + offset).astype(np.float32)
    config = EmbedderTrainConfig(embedding_size=16, seed=3)
    dataset = FaceCropDataset(paths, [-1] * len(paths), teacher, config, embed_config)
    torch.manual_seed(2)
    student = Student.build(config, embed_config, 1, teacher.shape[1], torch.device("cpu"))
    student.train()
    fitted_cosine = start_from_shipped_weights(student, tmp_path / "shipped.safetensors", dataset)

    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(student.net.state_dict()[key], value)
    assert student.net.training, "the network is handed back in training mode"
    assert fitted_cosine > 0.999
    student.net.eval()
    with torch.no_grad():
        projected = student.projector(student.net(crops_to_tensor(list(crops), embed_config)))
    cosine = torch.nn.functional.cosine_similarity(projected, torch.from_numpy(teacher)).min()
    assert cosine > 0.999, "the projector maps the embeddings onto the teacher's vectors"


def test_teacher_vectors_are_the_same_from_one_or_several_processes(tmp_path):
    pytest.importorskip("dlib", reason="the dlib teacher needs the train extra (dlib-bin)")
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("the dlib teacher needs face-recognition-models (the train extra)")
    import cv2

    from vidface.research.train.dlib_teacher import teacher_cache

    rng = np.random.default_rng(7)
    paths = []
    for index in range(6):
        paths.append(tmp_path / "crops" / f"{index}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    names, alone = teacher_cache(paths, tmp_path, tmp_path / "one.npz", processes=1, batch=4)
    _, shared = teacher_cache(paths, tmp_path, tmp_path / "two.npz", processes=2, batch=4)
    assert names == [f"crops/{index}.png" for index in range(6)]
    np.testing.assert_allclose(shared, alone, atol=1e-6)
    with np.load(tmp_path / "two.npz", allow_pickle=False) as cached:
        assert sorted(cached["names"].tolist()) == sorted(names), "every vector is cached"


def test_a_soup_is_the_mean_of_its_embedders_weights(tmp_path):
    from safetensors.torch import load_file

    from vidface.embed import EmbedderConfig
    from vidface.embed_net import EmbedderNet, save_embedder
    from vidface.research.train.embedder import average_embedders

    config = EmbedderConfig()
    sources = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = EmbedderNet(config)
        for buffer_name, buffer in net.named_buffers():
            if buffer_name.endswith("num_batches_tracked"):
                buffer.fill_(10 * (seed + 1))
            elif buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # batch-norm statistics differ too
        sources.append(save_embedder(net, config, tmp_path / f"fine-tune-{seed}.safetensors"))
    soup = average_embedders(sources, tmp_path / "soup" / "embedder.safetensors")

    averaged, states = load_file(str(soup)), [load_file(str(source)) for source in sources]
    assert averaged.keys() == states[0].keys()
    for name, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(state[name] for state in states) / 3)
        else:
            assert torch.equal(value, states[0][name])  # the first source's step counters
    assert not torch.equal(averaged["features.0.0.weight"], states[0]["features.0.0.weight"])
    assert soup.with_suffix(".json").is_file()

    other = EmbedderConfig(embedding_size=128)
    mismatched = save_embedder(EmbedderNet(other), other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not the same network"):
        average_embedders([sources[0], mismatched], tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="at least two"):
        average_embedders(sources[:1], tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_missing_training_set_is_a_data_error_that_names_how_to_make_it(tmp_path, monkeypatch):
    from vidface.errors import DataError
    from vidface.research.train.embedder import training_crops

    monkeypatch.chdir(tmp_path)
    config = EmbedderTrainConfig(labelled_sets=[], unlabelled_sets=["cache/faces-wider"])
    with pytest.raises(DataError, match="vidface data wider-crops"):
        training_crops(config, root=tmp_path)


def test_detector_training_computes_on_every_cpu_it_is_given():
    """ultralytics sets PyTorch to one thread fewer than the CPUs when it picks the CPU (one thread on 2 cores)."""
    pytest.importorskip("ultralytics")
    from vidface.offline import load_ultralytics
    from vidface.research.train.detector import use_cpu_threads

    load_ultralytics()
    from ultralytics.utils import torch_utils

    before, numbers = torch.get_num_threads(), torch_utils.NUM_THREADS
    try:
        for threads in (1, 2):
            use_cpu_threads(threads)
            torch_utils.select_device("cpu", verbose=False)
            assert torch.get_num_threads() == threads
    finally:
        torch_utils.NUM_THREADS = numbers
        torch.set_num_threads(before)


def test_a_chosen_starting_rate_names_the_optimizer_that_honours_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vidface.research import cli
    from vidface.research.train import detector

    recipes = []
    monkeypatch.setattr(detector, "train_detector", lambda data, run, recipe, **kwargs: recipes.append(recipe) or run)
    runner = CliRunner()
    common = ["detector", "--data", str(tmp_path / "data.yaml"), "--run", str(tmp_path / "run"), "--epochs", "8"]
    assert runner.invoke(cli.train_app, common).exit_code == 0
    assert runner.invoke(cli.train_app, common + ["--lr0", "0.001", "--warmup-epochs", "1"]).exit_code == 0
    automatic, chosen = recipes
    assert automatic.optimizer == "auto", "ultralytics' own choice unless a rate is given"
    assert (chosen.optimizer, chosen.lr0, chosen.warmup_epochs, chosen.epochs) == ("AdamW", 0.001, 1.0, 8)


def test_the_centre_set_is_checked_before_training_and_none_means_the_training_crops(tmp_path):
    from vidface.errors import DataError
    from vidface.research.train.embedder import EmbedderTrainConfig, centre_crops

    training = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    assert centre_crops(EmbedderTrainConfig(centre_set=None), training, root=tmp_path) == training
    with pytest.raises(DataError, match="nowhere"):
        centre_crops(EmbedderTrainConfig(centre_set="faces/nowhere"), training, root=tmp_path)
    (tmp_path / "faces" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="no aligned crops"):
        centre_crops(EmbedderTrainConfig(centre_set="faces/empty"), training, root=tmp_path)

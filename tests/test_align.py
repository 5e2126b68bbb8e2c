import cv2
import numpy as np
import pytest

from vidface.align import ARCFACE_TEMPLATE, align_face, box_transform, estimate_similarity, landmark_transform


def similarity_matrix(angle_deg, scale, tx, ty):
    angle = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(angle), -scale * np.sin(angle), tx],
                     [scale * np.sin(angle), scale * np.cos(angle), ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (30, 2.5, 10, -4), (-75, 0.3, 200, 90), (180, 1.7, -3, 3)])
def test_estimate_similarity_recovers_exact_transform(angle, scale, tx, ty):
    truth = similarity_matrix(angle, scale, tx, ty)
    source = np.random.default_rng(0).uniform(0, 300, (5, 2))
    target = source @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(estimate_similarity(source, target), truth, atol=1e-4)


def test_estimate_similarity_never_reflects():
    source = ARCFACE_TEMPLATE.copy()
    mirrored = source * [-1, 1]
    matrix = estimate_similarity(source, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_landmarks_land_on_template_after_alignment():
    truth = similarity_matrix(20, 3.0, 400, 150)
    landmarks = ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2]
    matrix = landmark_transform(landmarks)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)


def test_align_face_undoes_rotation_of_a_drawn_face():
    crop = np.zeros((112, 112, 3), np.uint8)
    for x, y in ARCFACE_TEMPLATE:
        cv2.circle(crop, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    truth = similarity_matrix(35, 2.0, 150, 40)
    big = cv2.warpAffine(crop, truth, (500, 400))
    landmarks = ARCFACE_TEMPLATE @ truth[:, :2].T + truth[:, 2]
    aligned = align_face(big, landmarks)
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert aligned[int(round(y)), int(round(x))].max() > 150


def test_box_fallback_centres_face_and_keeps_aspect():
    matrix = box_transform(np.array([100, 50, 178, 128]))
    centre = matrix @ np.array([139, 89, 1.0])
    np.testing.assert_allclose(centre, [56, 56], atol=1e-4)
    assert matrix[0, 0] == pytest.approx(matrix[1, 1])
    image = np.full((300, 300, 3), 7, np.uint8)
    assert align_face(image, None, np.array([100, 50, 178, 128])).shape == (112, 112, 3)


def test_unusable_landmarks_fall_back_to_box():
    image = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    box = np.array([50, 50, 150, 150], np.float32)
    degenerate = np.full((5, 2), 100.0, np.float32)
    np.testing.assert_array_equal(align_face(image, degenerate, box), align_face(image, None, box))
    with pytest.raises(ValueError):
        align_face(image, None, None)

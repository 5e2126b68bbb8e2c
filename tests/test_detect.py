"""The detector's own pre- and post-processing: letterbox geometry and the close-up pass."""

import numpy as np
import pytest
import torch

from vidface.detect import CLOSEUP_FILL, CLOSEUP_IMGSZ, FaceDetector


class BrightSquareNetwork(torch.nn.Module):
    """Stands in for YOLOv8-pose: one 'face' around the bright pixels of each canvas, as raw head
    output ``(B, 4 + 1 + 15, 1)`` (centre x, centre y, width, height, score, 5 landmarks)."""

    def forward(self, batch):
        rows = []
        for canvas in batch:
            ys, xs = torch.nonzero(canvas.mean(0) > 0.9, as_tuple=True)
            x1, y1, x2, y2 = xs.min().float(), ys.min().float(), xs.max().float() + 1, ys.max().float() + 1
            points = [(x1 + (x2 - x1) * u, y1 + (y2 - y1) * v, 1.0)
                      for u, v in ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))]
            rows.append(torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.9,
                                      *[c for point in points for c in point]]).view(-1, 1))
        return torch.stack(rows)


@pytest.fixture
def detector(random_models):
    detector = FaceDetector(random_models[0], "cpu", imgsz=640, conf=0.5)
    detector.model = BrightSquareNetwork()
    return detector


def square_image(box, size=(480, 640)):
    image = np.zeros((*size, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def test_shrunk_letterbox_puts_the_image_in_the_middle(detector):
    image = np.zeros((100, 200, 3), np.uint8)
    image[40, 150] = 255
    batch, scales, offsets = detector._letterbox([image], CLOSEUP_IMGSZ, CLOSEUP_FILL)
    assert scales[0] == pytest.approx(CLOSEUP_IMGSZ * CLOSEUP_FILL / 200)
    (x, y), canvas = offsets[0], batch[0]
    assert (x, y) == (80, 40), "the shrunk 160 x 80 image framed by half its size on each side"
    assert canvas.shape[1:] == (160, 320)
    assert canvas[:, y + round(40 * scales[0]), x + round(150 * scales[0])].min() > 0.3 * 255
    assert (canvas[:, :y] == 114).all() and (canvas[:, :, :x] == 114).all()


@pytest.mark.parametrize("box", [(100, 80, 300, 300), (0, 0, 640, 480), (500, 400, 600, 470)])
def test_both_passes_map_back_to_image_pixels_and_merge_into_one_face(detector, box):
    image = square_image(box)
    single = detector([image])[0]
    detector.closeups = True
    merged = detector([image])[0]
    assert len(single) == 1 and len(merged) == 1
    # the shrunk pass sees the image at a quarter of the size: a few pixels of rounding
    tolerance = 2 * 640 / (CLOSEUP_IMGSZ * CLOSEUP_FILL)
    np.testing.assert_allclose(merged[0].box, box, atol=tolerance)
    np.testing.assert_allclose(single[0].box, box, atol=2)
    x1, y1, x2, y2 = box
    assert merged[0].landmarks[2] == pytest.approx([x1 + 0.5 * (x2 - x1), y1 + 0.6 * (y2 - y1)], abs=tolerance)


class SmallFacesOnly(BrightSquareNetwork):
    """Finds a square only when it is at most 100 px on the canvas, like a network that saw small faces."""

    def forward(self, batch):
        out = super().forward(batch)
        out[:, 4] = torch.where(out[:, 2].maximum(out[:, 3]) <= 100, out[:, 4], torch.zeros_like(out[:, 4]))
        return out


def test_close_up_pass_finds_faces_the_full_size_pass_misses(detector):
    detector.model = SmallFacesOnly()
    image = square_image((170, 90, 470, 390))
    assert detector([image])[0] == []
    detector.closeups = True
    found = detector([image])[0]
    assert len(found) == 1 and found[0].score == pytest.approx(0.9)


def test_close_up_pass_can_be_chosen_per_image(detector):
    detector.model = SmallFacesOnly()
    close_up, small = square_image((170, 90, 470, 390)), square_image((10, 10, 60, 60))
    found = detector([close_up, close_up, small], closeups=[True, False, np.bool_(False)])
    assert [len(faces) for faces in found] == [1, 0, 1]
    with pytest.raises(ValueError, match="2 close-up flags for 3 images"):
        detector([close_up, close_up, small], closeups=[True, False])


class DimSquare(BrightSquareNetwork):
    """Scores its square 0.3: under the detector's threshold (0.5)."""

    def forward(self, batch):
        out = super().forward(batch)
        out[:, 4] = 0.3
        return out


def test_min_score_adds_the_weak_detections_and_never_raises_the_threshold(detector):
    image = square_image((100, 80, 300, 300))
    detector.model = DimSquare()
    assert detector([image])[0] == [] and detector([image], min_score=0.6)[0] == []
    weak = detector([image], min_score=0.1)[0]
    assert len(weak) == 1 and weak[0].score == pytest.approx(0.3)
    detector.closeups = True  # both passes honour it
    assert len(detector([image], min_score=0.1)[0]) == 1
    detector.model = BrightSquareNetwork()
    assert [f.score for f in detector([image], min_score=0.1)[0]] == [f.score for f in detector([image])[0]]


def test_cache_key_changes_with_the_close_up_pass(detector):
    single = detector.settings_key
    detector.closeups = True
    assert detector.settings_key != single


def test_one_box_per_face_drops_nested_and_overlapping_boxes():
    from vidface.detect import one_box_per_face

    rows = np.array([
        [100, 100, 200, 220, 0.9],  # a face
        [120, 130, 170, 180, 0.95],  # nested in it: of the two, the better scored stays
        [105, 100, 205, 220, 0.6],  # the same face again, shifted: plain NMS
        [300, 100, 380, 190, 0.8],  # another face
        [360, 90, 440, 180, 0.7],  # a neighbour overlapping the other face a little: kept
    ], np.float32)
    kept = one_box_per_face(rows, iou=0.45)
    assert kept[:, 4].tolist() == pytest.approx([0.95, 0.8, 0.7])
    assert len(one_box_per_face(rows[:1], iou=0.45)) == 1 and len(one_box_per_face(rows[:0], iou=0.45)) == 0

import numpy as np

from vidface.gallery import Gallery
from vidface.structures import Detection, Face, Match
from vidface.track import Tracker, TrackerSettings


def unit(vector):
    vector = np.asarray(vector, np.float32)
    return vector / np.linalg.norm(vector)


ANN, BOB, STRANGER = unit([1, 0, 0, 0]), unit([0, 1, 0, 0]), unit([0, 0, 1, 0])


def gallery():
    return Gallery(folder=None, names=["Ann", "Bob"], embeddings=np.stack([ANN, BOB]), owners=np.array([0, 1]))


def face(box, embedding, score=0.9):
    return Face(Detection(np.array(box, np.float32), score, None), embedding=embedding)


def noisy(base, rng, noise):
    return unit(base + rng.normal(0, noise, 4))


def run(tracker, frames):
    """frames: list of lists of faces; returns display ids per frame."""
    shown = []
    for index, faces in enumerate(frames):
        tracker.update(index, faces)
        shown.append([tracker.describe(f).display_id for f in faces])
    return shown


def test_label_does_not_flicker_when_single_frames_look_like_someone_else():
    rng = np.random.default_rng(0)
    tracker = Tracker(gallery(), threshold=0.5, fps=30)
    frames = []
    for index in range(60):
        embedding = BOB if index % 7 == 3 else noisy(ANN, rng, 0.2)  # every 7th frame is misleading
        frames.append([face([100 + index, 100, 200 + index, 200], embedding)])
    shown = run(tracker, frames)
    assert all(ids == ["Ann"] for ids in shown[1:]), shown
    assert len(tracker.tracks) == 1


def test_two_people_keep_their_tracks_and_names_when_crossing():
    tracker = Tracker(gallery(), threshold=0.5, fps=30)
    frames = []
    for index in range(40):
        left = face([10 + 8 * index, 100, 110 + 8 * index, 200], ANN)
        right = face([330 - 8 * index, 100, 430 - 8 * index, 200], BOB)
        frames.append([left, right])
    shown = run(tracker, frames)
    assert all(ids == ["Ann", "Bob"] for ids in shown)
    assert len(tracker.tracks) == 2


def test_unknown_people_get_stable_ids_and_are_recognised_on_return():
    stranger2 = unit([0, 0, 0, 1])
    tracker = Tracker(gallery(), threshold=0.5, fps=10, settings=TrackerSettings(max_age_s=0.5))
    frames = [[face([0, 0, 50, 50], STRANGER), face([200, 0, 250, 50], stranger2)] for _ in range(10)]
    frames += [[] for _ in range(20)]  # both leave; their tracks are closed
    frames += [[face([300, 300, 350, 350], STRANGER)] for _ in range(5)]  # the first comes back elsewhere
    shown = run(tracker, frames)
    assert shown[0] == ["unknown-1", "unknown-2"]
    assert shown[-1] == ["unknown-1"]
    assert len(tracker.tracks) == 3, "a new track, but the same unknown id"


def test_fast_move_without_overlap_is_joined_by_embedding():
    tracker = Tracker(gallery(), threshold=0.5, fps=30)
    run(tracker, [[face([100, 100, 150, 150], ANN)], [face([160, 100, 210, 150], ANN)]])
    assert len(tracker.tracks) == 1


def test_carry_moves_tracks_by_their_velocity_on_skipped_frames():
    tracker = Tracker(gallery(), threshold=0.5, fps=30)
    tracker.update(0, [face([0, 0, 10, 10], ANN)])
    tracker.update(2, [face([4, 0, 14, 10], ANN)])
    carried = tracker.carry(3, last_detected_frame=2)
    assert len(carried) == 1
    assert carried[0].track_id == 1
    assert carried[0].detection.box[0] > 4  # moved on in the direction of travel
    assert tracker.carry(3, last_detected_frame=0) == []  # only tracks seen on the last detected frame


def test_min_hits_confirms_tracks():
    tracker = Tracker(gallery(), threshold=0.5, fps=30, settings=TrackerSettings(min_hits=3))
    tracker.update(0, [face([0, 0, 10, 10], ANN)])
    assert not tracker.confirmed(1)
    tracker.update(1, [face([0, 0, 10, 10], ANN)])
    tracker.update(2, [face([0, 0, 10, 10], ANN)])
    assert tracker.confirmed(1)


def test_tracking_without_gallery_gives_unknown_ids():
    tracker = Tracker(None, threshold=0.5, fps=30)
    shown = run(tracker, [[face([0, 0, 10, 10], ANN)]])
    assert shown == [["unknown-1"]]
    assert Match(None, 0.0).identity is None

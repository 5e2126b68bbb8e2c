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
    """frames: list of lists of faces; returns the display ids of the confirmed faces per frame."""
    shown = []
    for index, faces in enumerate(frames):
        tracker.update(index, faces)
        shown.append([tracker.describe(f).display_id for f in faces if tracker.confirmed(f.track_id)])
    return shown


def test_label_does_not_flicker_when_single_frames_look_like_someone_else():
    rng = np.random.default_rng(0)
    tracker = Tracker(gallery(), threshold=0.5)
    frames = []
    for index in range(60):
        # every 7th frame is misleading: closer to Bob than to Ann, though still Ann's face
        embedding = unit(0.5 * ANN + BOB) if index % 7 == 3 else noisy(ANN, rng, 0.2)
        frames.append([face([100 + index, 100, 200 + index, 200], embedding)])
    shown = run(tracker, frames)
    assert all(ids == ["Ann"] for ids in shown[1:]), shown
    assert len(tracker.tracks) == 1


def test_a_face_that_is_someone_else_starts_a_new_track_in_the_same_place():
    """A cut the detector of cuts missed, or a person stepping in front: the boxes overlap, the faces differ."""
    tracker = Tracker(gallery(), threshold=0.5)
    frames = [[face([100, 100, 200, 200], ANN)] for _ in range(10)] + \
             [[face([102, 100, 202, 200], BOB)] for _ in range(10)]
    shown = run(tracker, frames)
    assert shown[9] == ["Ann"] and shown[-1] == ["Bob"]
    assert all("Ann" not in ids for ids in shown[10:])
    assert len(tracker.tracks) == 2


def test_a_cut_closes_every_track_and_no_name_crosses_it():
    tracker = Tracker(gallery(), threshold=0.5)
    run(tracker, [[face([100, 100, 200, 200], ANN)] for _ in range(5)])
    tracker.cut()
    after = face([100, 100, 200, 200], noisy(ANN, np.random.default_rng(1), 0.05))
    tracker.update(5, [after])
    assert after.track_id != 1
    assert tracker.live == [after.track_id]


def test_a_face_seen_once_before_the_end_or_a_cut_is_kept():
    tracker = Tracker(gallery(), threshold=0.5)
    only = face([0, 0, 50, 50], ANN)
    tracker.update(0, [only])
    assert not tracker.confirmed(only.track_id)
    tracker.finish()
    assert tracker.confirmed(only.track_id) and tracker.tracks[only.track_id].display_id == "Ann"
    early = face([0, 0, 50, 50], STRANGER)
    tracker.update(1, [face([300, 300, 350, 350], BOB)])
    tracker.update(2, [early])
    tracker.update(3, [])  # a pass that misses it: a flicker, not the end of its shot
    tracker.cut()
    assert not tracker.confirmed(early.track_id)


def test_track_ages_count_detector_passes_not_frames():
    tracker = Tracker(gallery(), threshold=0.5, settings=TrackerSettings(max_missed_passes=3))
    tracker.update(0, [face([0, 0, 50, 50], ANN)])
    tracker.update(1000, [face([0, 0, 50, 50], ANN)])  # a slow live source: frames 1..999 were dropped
    assert len(tracker.tracks) == 1
    for index in range(4):
        tracker.update(1001 + index, [])
    tracker.update(1005, [face([0, 0, 50, 50], ANN)])
    assert len(tracker.tracks) == 2, "missed by more passes than allowed: a new track"


def test_look_alike_strangers_on_screen_together_get_two_ids():
    tracker = Tracker(gallery(), threshold=0.5)
    twin = unit(STRANGER + 0.05 * BOB)
    shown = run(tracker, [[face([0, 0, 50, 50], STRANGER), face([200, 0, 250, 50], twin)] for _ in range(3)])
    assert shown[-1] == ["unknown-1", "unknown-2"]


def test_two_people_keep_their_tracks_and_names_when_crossing():
    tracker = Tracker(gallery(), threshold=0.5)
    frames = []
    for index in range(40):
        left = face([10 + 8 * index, 100, 110 + 8 * index, 200], ANN)
        right = face([330 - 8 * index, 100, 430 - 8 * index, 200], BOB)
        frames.append([left, right])
    shown = run(tracker, frames)
    assert all(ids == ["Ann", "Bob"] for ids in shown[1:])
    assert len(tracker.tracks) == 2


def test_unknown_people_get_stable_ids_and_are_recognised_on_return():
    stranger2 = unit([0, 0, 0, 1])
    tracker = Tracker(gallery(), threshold=0.5, settings=TrackerSettings(max_missed_passes=5))
    frames = [[face([0, 0, 50, 50], STRANGER), face([200, 0, 250, 50], stranger2)] for _ in range(10)]
    frames += [[] for _ in range(20)]  # both leave; their tracks are closed
    frames += [[face([300, 300, 350, 350], STRANGER)] for _ in range(5)]  # the first comes back elsewhere
    shown = run(tracker, frames)
    assert shown[1] == ["unknown-1", "unknown-2"]
    assert shown[-1] == ["unknown-1"]
    assert len(tracker.tracks) == 3, "a new track, but the same unknown id"


def test_fast_move_without_overlap_is_joined_by_embedding():
    tracker = Tracker(gallery(), threshold=0.5)
    run(tracker, [[face([100, 100, 150, 150], ANN)], [face([160, 100, 210, 150], ANN)]])
    assert len(tracker.tracks) == 1


def test_carry_moves_tracks_by_their_velocity_on_skipped_frames():
    tracker = Tracker(gallery(), threshold=0.5)
    tracker.update(0, [face([0, 0, 10, 10], ANN)])
    tracker.update(2, [face([4, 0, 14, 10], ANN)])
    carried = tracker.carry(3, last_detected_frame=2)
    assert len(carried) == 1
    assert carried[0].track_id == 1
    assert carried[0].detection.box[0] > 4  # moved on in the direction of travel
    assert tracker.carry(3, last_detected_frame=0) == []  # only tracks seen on the last detected frame


def test_min_hits_confirms_tracks():
    tracker = Tracker(gallery(), threshold=0.5, settings=TrackerSettings(min_hits=3))
    tracker.update(0, [face([0, 0, 10, 10], ANN)])
    assert not tracker.confirmed(1)
    tracker.update(1, [face([0, 0, 10, 10], ANN)])
    tracker.update(2, [face([0, 0, 10, 10], ANN)])
    assert tracker.confirmed(1)


def test_tracking_without_gallery_gives_unknown_ids():
    tracker = Tracker(None, threshold=0.5)
    shown = run(tracker, [[face([0, 0, 10, 10], ANN)], [face([0, 0, 10, 10], ANN)]])
    assert shown == [[], ["unknown-1"]]
    assert Match(None, 0.0).identity is None


def run_with_planner(tracker, frames):
    """Like :func:`run`, but a face gets its embedding only when the tracker asks for it; returns
    the shown ids per frame and which faces were embedded."""
    shown, embedded = [], []
    for index, faces in enumerate(frames):
        needed = tracker.needs_embedding(index, np.stack([f.detection.box for f in faces]))
        for face, wanted in zip(faces, needed):
            face.embedding = face.embedding if wanted else None
        embedded.append(list(needed))
        tracker.update(index, faces)
        shown.append([tracker.describe(f).display_id for f in faces if tracker.confirmed(f.track_id)])
    return shown, embedded


def test_a_tracked_face_is_embedded_every_few_passes_and_keeps_its_name():
    tracker = Tracker(gallery(), threshold=0.5, settings=TrackerSettings(embed_every=3))
    frames = [[face([100 + 2 * i, 100, 200 + 2 * i, 200], ANN)] for i in range(11)]
    shown, embedded = run_with_planner(tracker, frames)
    # passes 1-2 confirm the track; then one pass in three is embedded
    assert [e[0] for e in embedded] == [True, True, False, False, True, False, False, True, False, False, True]
    assert all(ids == ["Ann"] for ids in shown[1:]) and len(tracker.tracks) == 1


def test_every_face_is_embedded_when_position_alone_could_mix_people_up():
    settings = TrackerSettings(embed_every=5)
    tracker = Tracker(gallery(), threshold=0.5, settings=settings)
    run(tracker, [[face([100, 100, 200, 200], ANN)] for _ in range(3)])
    boxes = np.array([[100, 100, 200, 200], [130, 100, 230, 200]], np.float32)  # someone steps in beside Ann
    assert tracker.needs_embedding(3, boxes).tolist() == [True, True]
    moved = np.array([[400, 100, 500, 200]], np.float32)  # far from where the track predicts her
    assert tracker.needs_embedding(3, moved).tolist() == [True]
    assert tracker.needs_embedding(3, boxes[:1]).tolist() == [False]
    every_pass = Tracker(gallery(), threshold=0.5)
    run(every_pass, [[face([100, 100, 200, 200], ANN)] for _ in range(3)])
    assert every_pass.needs_embedding(3, boxes[:1]).tolist() == [True]


def test_a_track_its_gallery_match_leaves_unnamed_takes_the_name_of_its_look_alike_in_the_video():
    """After a cut the same person from a harder angle: their own score is short of the threshold,
    but they match the track already named in this video; a stranger who merely comes closest to
    that person in the gallery does not."""
    harder = unit(0.45 * ANN + 0.2 * STRANGER + 0.3 * BOB)  # 0.79 to Ann: short of 0.9
    assert 0.7 < float(harder @ ANN) < 0.9
    tracker = Tracker(gallery(), threshold=0.9, link_threshold=0.7)
    shown = run(tracker, [[face([100, 100, 200, 200], ANN)] for _ in range(5)])
    assert shown[-1] == ["Ann"]
    tracker.cut()
    later = run(tracker, [[face([300, 100, 400, 200], harder)] for _ in range(5)])
    assert later[-1] == ["Ann"], later
    second = tracker.tracks[max(tracker.tracks)]
    assert second.named_after == 1 and second.label_similarity < 0.9, "its own score is kept, and why it is named"

    tracker.cut()  # someone else whose closest gallery person is Ann, but unlike Ann's track here
    other = unit(0.5 * ANN + 0.8 * STRANGER)
    assert Tracker(gallery(), 0.9).gallery.match(other[None], 0.9)[0].best_name == "Ann"
    stranger = run(tracker, [[face([300, 100, 400, 200], other)] for _ in range(5)])
    assert stranger[-1][0].startswith("unknown-")
    assert tracker.tracks[max(tracker.tracks)].named_after is None

    off = Tracker(gallery(), threshold=0.9)  # without a link threshold nothing is named after anything
    run(off, [[face([100, 100, 200, 200], ANN)] for _ in range(5)])
    off.cut()
    assert run(off, [[face([300, 100, 400, 200], harder)] for _ in range(5)])[-1][0].startswith("unknown-")


def test_a_track_named_after_another_names_no_third():
    def towards_stranger(degrees):
        return unit([np.cos(np.deg2rad(degrees)), 0, np.sin(np.deg2rad(degrees)), 0])

    step, further = towards_stranger(30), towards_stranger(60)  # each 0.87 like the one before, 0.5 to Ann
    tracker = Tracker(gallery(), threshold=0.9, link_threshold=0.85)
    run(tracker, [[face([100, 100, 200, 200], ANN)] for _ in range(5)])
    tracker.cut()
    assert run(tracker, [[face([100, 100, 200, 200], step)] for _ in range(5)])[-1] == ["Ann"]
    tracker.cut()
    last = run(tracker, [[face([100, 100, 200, 200], further)] for _ in range(5)])
    assert last[-1][0].startswith("unknown-"), "no chain of look-alikes"
    assert tracker.tracks[max(tracker.tracks)].closest == "Ann"


def judged(box, embedding, non_face):
    found = face(box, embedding)
    found.non_face = non_face
    return found


def test_a_track_its_crops_call_no_face_is_neither_shown_nor_kept_at_the_end():
    tracker = Tracker(gallery(), threshold=0.5, settings=TrackerSettings(non_face_min_height=32.0))
    hand = [[judged([300, 300, 360, 370], STRANGER, 2.0 + 0.1 * i),
             judged([100, 100, 200, 200], ANN, -3.0)] for i in range(6)]
    shown = run(tracker, hand)
    tracker.finish()
    assert all(ids == ["Ann"] for ids in shown[1:]), shown
    hand_track = hand[0][0].track_id
    assert not tracker.confirmed(hand_track) and tracker.confirmed(hand[0][1].track_id)


def test_the_non_face_rule_spares_small_faces_and_follows_the_tracks_own_mean():
    settings = TrackerSettings(non_face_min_height=32.0)
    small = Tracker(gallery(), threshold=0.5, settings=settings)
    run(small, [[judged([10, 10, 30, 30], ANN, 5.0)] for _ in range(3)])  # 20 px tall: the detector's business
    assert small.confirmed(1)
    revised = Tracker(gallery(), threshold=0.5, settings=settings)
    shown = run(revised, [[judged([100, 100, 200, 200], ANN, logit)] for logit in (1.0, 0.5, -2.0, -2.0)])
    assert shown == [[], [], ["Ann"], ["Ann"]]  # mean 1.0, 0.75, -0.17: confirmed once its own faces say face
    off = Tracker(gallery(), threshold=0.5)  # no rule: every track is a face
    assert run(off, [[judged([100, 100, 200, 200], ANN, 9.0)] for _ in range(2)])[-1] == ["Ann"]


def weak(box, score=0.2):
    """A detection under the detector's threshold: never embedded."""
    return Face(Detection(np.array(box, np.float32), score, None))


def test_a_named_face_whose_score_dips_keeps_its_track_on_weak_detections():
    tracker = Tracker(gallery(), threshold=0.5)
    for index in range(5):
        tracker.update(index, [face([100 + index, 100, 200 + index, 200], ANN)])
    kept = tracker.update(5, [], [weak([105, 100, 205, 200]), weak([400, 400, 450, 450])])
    assert [f.track_id for f in kept] == [1]  # the one where Ann's track predicts her; the other is dropped
    assert tracker.describe(kept[0]).display_id == "Ann" and tracker.tracks[1].last_frame == 5
    assert len(tracker.tracks) == 1  # a weak detection never starts a track
    assert tracker.update(6, [face([106, 100, 206, 200], ANN)])[0].track_id == 1


def test_weak_detections_continue_neither_unnamed_tracks_nor_a_track_for_long():
    stranger = Tracker(gallery(), threshold=0.5)
    for index in range(5):
        stranger.update(index, [face([100, 100, 200, 200], STRANGER)])
    assert stranger.update(5, [], [weak([100, 100, 200, 200])]) == []  # a hand or an ear the detector half-believes
    settings = TrackerSettings(max_weak_passes=3)
    named = Tracker(gallery(), threshold=0.5, settings=settings)
    for index in range(5):
        named.update(index, [face([100, 100, 200, 200], ANN)])
    carried = [len(named.update(index, [], [weak([100, 100, 200, 200])])) for index in range(5, 10)]
    assert carried == [1, 1, 1, 0, 0]  # then the track has to be found again with confidence
    far = Tracker(gallery(), threshold=0.5)
    for index in range(5):
        far.update(index, [face([100, 100, 200, 200], ANN)])
    assert far.update(5, [], [weak([150, 100, 250, 200])]) == []  # IoU 0.33 < weak_min_iou


def test_a_confident_face_takes_the_track_before_a_weak_one():
    tracker = Tracker(gallery(), threshold=0.5)
    for index in range(5):
        tracker.update(index, [face([100, 100, 200, 200], ANN)])
    confident = face([102, 100, 202, 200], ANN)
    shown = tracker.update(5, [confident], [weak([100, 100, 200, 200])])
    assert shown == [confident] and tracker.tracks[1].weak_passes == 0

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidface.errors import GalleryError
from vidface.gallery import Gallery, build_gallery, list_gallery


def unit(*values):
    vector = np.array(values, np.float32)
    return vector / np.linalg.norm(vector)


def test_match_takes_best_photo_per_person_and_applies_threshold():
    gallery = Gallery(folder=None, names=["ann", "bob"],
                      embeddings=np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0.6, 0.8, 0)]),
                      owners=np.array([0, 1, 0]))
    best, mean = gallery.person_similarity(np.stack([unit(0.6, 0.8, 0)]))
    assert best[0, 0] == pytest.approx(1.0) and best[0, 1] == pytest.approx(0.8)
    assert mean[0, 0] == pytest.approx((0.6 + 1.0) / 2)
    matches = gallery.match(np.stack([unit(0.6, 0.8, 0), unit(0, 0, 1), unit(0.1, 1, 0)]), threshold=0.5)
    assert [m.identity for m in matches] == ["ann", None, "bob"]
    assert matches[1].best_name is not None and matches[1].similarity < 0.5


def write_photo(path, colour, blank=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((64, 64, 3), colour, np.uint8)
    if not blank:
        image[16:48, 16:48] = np.array(colour) // 2 + 40
    cv2.imwrite(str(path), image)


def test_build_gallery_reports_problem_photos_and_caches(tmp_path, fake_stages):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    write_photo(tmp_path / "g/Ann/2.png", (190, 40, 30))
    write_photo(tmp_path / "g/Ann/empty.jpg", (90, 90, 90), blank=True)
    (tmp_path / "g/Ann/broken.jpg").write_bytes(b"not a jpeg")
    write_photo(tmp_path / "g/Bob/1.jpg", (30, 30, 200))
    (tmp_path / "g/Bob/notes.txt").write_text("ignored: not a photo")
    gallery = build_gallery(tmp_path / "g", detector, embedder)
    assert gallery.names == ["Ann", "Bob"]
    assert len(gallery.embeddings) == 3
    problems = {p.path.name: p.status for p in gallery.problems}
    assert problems == {"empty.jpg": "no-face", "broken.jpg": "unreadable"}
    calls = detector.calls
    again = build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls, "second build must come from the cache"
    np.testing.assert_allclose(again.embeddings, gallery.embeddings)
    write_photo(tmp_path / "g/Bob/2.jpg", (20, 60, 210))
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 1, "only the new photo is embedded"


def test_cache_is_invalidated_when_a_model_changes(tmp_path, fake_stages):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    build_gallery(tmp_path / "g", detector, embedder)
    calls = detector.calls
    embedder.weights_path.write_bytes(b"retrained model")
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 1


def test_cache_is_invalidated_when_the_engine_computes_in_another_precision(tmp_path, fake_stages):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    build_gallery(tmp_path / "g", detector, embedder)
    calls = detector.calls
    embedder.backend = "openvino"  # f32 like the stand-ins: same answers, the cache holds
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls
    embedder.backend = "openvino-bf16"
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 1
    embedder.backend = "openvino-int8"  # its embedder computes in f32: the bf16 cache is replaced, then holds
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 2
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 2
    detector.backend = "openvino-int8"  # a stand-in detector computing in int8 (vidface's own looks at photos in f32)
    build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls + 3


def test_cache_file_holds_no_pickled_objects(tmp_path, fake_stages, monkeypatch):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    build_gallery(tmp_path / "g", detector, embedder)
    caches = list(Path(os.environ["VIDFACE_CACHE"]).rglob("*.npz"))
    assert len(caches) == 1
    with np.load(caches[0], allow_pickle=False) as data:
        assert {"hashes", "embeddings", "model_key"} <= set(data.files)


def test_person_without_usable_photo_is_an_error_naming_the_folder(tmp_path, fake_stages):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    write_photo(tmp_path / "g/Zed/blank.jpg", (50, 50, 50), blank=True)
    with pytest.raises(GalleryError, match="Zed"):
        build_gallery(tmp_path / "g", detector, embedder)
    lenient = build_gallery(tmp_path / "g", detector, embedder, strict=False)
    assert lenient.names == ["Ann"]


@pytest.mark.parametrize("layout", ["missing", "file", "empty"])
def test_bad_gallery_folders(tmp_path, layout):
    target = tmp_path / "g"
    if layout == "file":
        target.write_text("x")
    elif layout == "empty":
        target.mkdir()
    with pytest.raises(GalleryError):
        list_gallery(target)


class CloseupOnlyDetector:
    """Finds the face only when the close-up pass runs (a portrait the main pass misses)."""

    def __init__(self, inner):
        self.inner, self.weights_path = inner, inner.weights_path
        self.settings_key, self.photo_settings_key, self.closeups = "single", "closeups", False

    def __call__(self, images, closeups=None):
        found = self.inner(images)
        return found if (self.closeups if closeups is None else closeups) else [[] for _ in images]


def test_gallery_photos_always_get_the_closeup_pass(tmp_path, fake_stages):
    """A gallery that works must not fail because the videos are run with --no-closeups."""
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    write_photo(tmp_path / "g/Bob/1.jpg", (30, 30, 200))
    gallery = build_gallery(tmp_path / "g", CloseupOnlyDetector(detector), embedder)
    assert gallery.names == ["Ann", "Bob"]


def test_a_person_whose_photos_cannot_be_read_is_told_so(tmp_path, fake_stages):
    detector, embedder = fake_stages
    write_photo(tmp_path / "g/Ann/1.jpg", (200, 30, 30))
    (tmp_path / "g/Bob").mkdir(parents=True)
    (tmp_path / "g/Bob/1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(GalleryError, match="none of its photos could be read"):
        build_gallery(tmp_path / "g", detector, embedder)
    write_photo(tmp_path / "g/Bob/2.jpg", (90, 90, 90), blank=True)
    with pytest.raises(GalleryError, match="no face found"):
        build_gallery(tmp_path / "g", detector, embedder)


class PatchDetector:
    """Finds a face at each patch of a photo that :meth:`patches` marks (at least 100 pixels, narrower
    than the photo), in no particular order; counts the images it is given."""

    key = "patches"

    def __init__(self, weights_path):
        self.weights_path, self.settings_key, self.photo_settings_key = weights_path, self.key, self.key
        self.calls = 0

    def patches(self, image) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images, closeups=None):
        from vidface.structures import Detection

        self.calls += len(images)
        found = []
        for image in images:
            count, _, stats, _ = cv2.connectedComponentsWithStats(self.patches(image).astype(np.uint8))
            found.append([Detection(np.array([x, y, x + w, y + h], np.float32), 0.9, None)
                          for x, y, w, h, area in stats[1:count] if area >= 100 and w < image.shape[1]])
        return found


class TwoSquaresDetector(PatchDetector):
    """Finds a face at each coloured square of a photo (see ``write_group_photo``)."""

    key = "squares"

    def patches(self, image):
        return (image != image[0, 0]).any(axis=2)


def write_group_photo(path, squares):
    """A grey photo with one filled square per ``(x, y, size, colour)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((200, 300, 3), 128, np.uint8)
    for x, y, size, colour in squares:
        image[y:y + size, x:x + size] = colour
    cv2.imwrite(str(path), image)


def test_in_a_photo_of_several_people_the_person_is_the_face_like_their_other_photos(tmp_path, fake_stages):
    """A talk-show still: the guest's face is larger than the host's, whose gallery folder it is."""
    _, embedder = fake_stages
    detector = TwoSquaresDetector(embedder.weights_path)
    host, guest = (30, 30, 220), (220, 60, 30)
    write_group_photo(tmp_path / "g/Host/alone.png", [(100, 50, 60, host)])
    write_group_photo(tmp_path / "g/Host/with-guest.png", [(20, 40, 90, guest), (200, 60, 50, host)])
    write_group_photo(tmp_path / "g/Solo/group.png", [(20, 40, 90, guest), (200, 60, 50, host)])
    gallery = build_gallery(tmp_path / "g", detector, embedder)
    photos = {(p.person, p.path.name): p for p in gallery.photos}
    chosen = photos["Host", "with-guest.png"]
    assert chosen.faces == 2 and chosen.chosen_by == "like the other photos"
    assert chosen.box == [200.0, 60.0, 250.0, 110.0], "the host's smaller face, not the guest's larger one"
    host_rows = gallery.embeddings[gallery.owners == gallery.names.index("Host")]
    assert host_rows[0] @ host_rows[1] > 0.99, "both of the host's rows are the host"
    alone = photos["Solo", "group.png"]
    assert alone.chosen_by == "largest face" and alone.box == [20.0, 40.0, 110.0, 130.0]
    assert photos["Host", "alone.png"].chosen_by == "only face"
    calls = detector.calls
    again = build_gallery(tmp_path / "g", detector, embedder)
    assert detector.calls == calls, "every face of every photo comes back from the cache"
    assert [(p.box, p.chosen_by) for p in again.photos] == [(p.box, p.chosen_by) for p in gallery.photos]
    np.testing.assert_allclose(again.embeddings, gallery.embeddings)


def test_strangers_link_across_videos_only_when_every_member_looks_alike():
    from vidface.gallery import link_strangers

    def unit(*values):
        vector = np.array(values, np.float32)
        return vector / np.linalg.norm(vector)

    angle = np.deg2rad(25)  # cos 25 degrees = 0.906: neighbours in the chain link, its two ends (0.643) do not
    chain = [unit(1, 0, 0), unit(np.cos(angle), np.sin(angle), 0), unit(np.cos(2 * angle), np.sin(2 * angle), 0)]
    other = unit(0, 0, 1)
    groups = link_strangers(np.stack(chain + [other, chain[0], other]), np.array(["a", "b", "c", "d", "e", "e"]), 0.8)
    assert groups[0] == groups[1] != groups[2], "complete linkage: the chain's far end starts a group of its own"
    assert groups[2] not in (groups[3],)
    assert groups[4] == groups[0], "the same face in a later video joins its group"
    assert groups[5] == groups[3], "a stranger of video e joins d's look-alike"
    assert list(groups[:4]) == [0, 0, 1, 2], "groups numbered in the order they are first seen"

    same_video = link_strangers(np.stack([chain[0], chain[0]]), np.array(["a", "a"]), 0.8)
    assert same_video[0] != same_video[1], "two strangers the tracker kept apart in one video stay apart"
    assert link_strangers(np.zeros((0, 3), np.float32), np.array([]), 0.8).shape == (0,)


class BrightPatchDetector(PatchDetector):
    """Finds a face at each patch whose grey level reaches 50: it misses dim faces, as a real detector
    misses the faces of a night-time film still."""

    key = "bright"

    def patches(self, image):
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) >= 50


def dim_photo(background: int, face: int, height: int) -> np.ndarray:
    """A 200 × 300 photo of one ``face``-grey patch ``height`` pixels tall on ``background``, with sensor noise."""
    image = np.full((200, 300, 3), background, np.int16)
    image[40:40 + height, 100:100 + height] = face
    noise = np.random.default_rng(0).integers(-4, 5, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_a_dark_photo_is_looked_at_again_with_its_contrast_equalised(tmp_path):
    from vidface.detect import detect_photo

    detector = BrightPatchDetector(tmp_path / "weights")
    faces, equalised = detect_photo(detector, dim_photo(12, 45, 100))
    assert equalised and len(faces) == 1 and detector.calls == 2
    assert faces[0].box.tolist() == pytest.approx([100, 40, 200, 140], abs=3), "boxes are the photo's own pixels"
    small, equalised = detect_photo(detector, dim_photo(12, 45, 30))
    assert small == [] and not equalised, "a second look keeps only a portrait's subject, not small things"
    detector.calls = 0
    bright = dim_photo(120, 45, 100)
    assert detect_photo(detector, bright) == ([], False) and detector.calls == 1, "a photo that is not dark is looked at once"
    found = dim_photo(12, 90, 100)
    faces, equalised = detect_photo(detector, found)
    assert len(faces) == 1 and not equalised and detector.calls == 2, "what the first look finds is kept as found"


def test_a_dark_gallery_photo_is_usable_and_says_how_its_face_was_found(tmp_path, fake_stages):
    _, embedder = fake_stages
    detector = BrightPatchDetector(embedder.weights_path)
    (tmp_path / "g/Ann").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "g/Ann/night.png"), dim_photo(12, 45, 100))
    cv2.imwrite(str(tmp_path / "g/Ann/day.png"), dim_photo(40, 200, 100))
    for attempt in ("computed", "cached"):
        gallery = build_gallery(tmp_path / "g", detector, embedder, cache_dir=tmp_path / "cache")
        photos = {p.path.name: p for p in gallery.photos}
        assert photos["night.png"].status == "ok" and photos["night.png"].equalised, attempt
        assert not photos["day.png"].equalised, attempt
        assert len(gallery.embeddings) == 2, attempt
    assert detector.calls == 3, "the second build read both photos from the cache"


def test_a_photo_unlike_its_persons_other_photos_is_reported_with_its_best_similarity(tmp_path, fake_stages):
    from vidface.gallery import scan_gallery, unlike_their_person

    detector, embedder = fake_stages
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        write_photo(tmp_path / f"g/Ann/{name}", (200, 30, 30))
    write_photo(tmp_path / "g/Ann/filed-wrongly.jpg", (30, 30, 200))
    write_photo(tmp_path / "g/Bob/only.jpg", (30, 200, 30))
    photos, vectors = scan_gallery(tmp_path / "g", detector, embedder)
    ann = np.stack(vectors["Ann"])
    expected = float(np.max(ann[:3] @ ann[3]))  # the wrongly filed photo's best match among Ann's others
    unlike = unlike_their_person(photos, vectors, threshold=0.99)
    assert [(photo.person, photo.path.name) for photo, _ in unlike] == [("Ann", "filed-wrongly.jpg")]
    assert unlike[0][1] == pytest.approx(expected) and expected < 0.99
    assert unlike_their_person(photos, vectors, threshold=None) == []
    assert unlike_their_person(photos, vectors, threshold=1.5)[-1][0].person == "Ann", \
        "Bob's only photo has nothing to be compared with"
    assert len(unlike_their_person(photos, vectors, threshold=1.5)) == 4
    built = build_gallery(tmp_path / "g", detector, embedder)
    assert [(photo.path, best) for photo, best in unlike_their_person(built.photos, built.vectors_by_person(), 0.99)] \
        == [(photo.path, best) for photo, best in unlike], "a built gallery gives annotate the same report"


def test_a_face_found_in_a_dark_photos_equalised_copy_says_so_in_detects_answer(tmp_path, fake_stages):
    from types import SimpleNamespace

    from vidface.photo import annotate_photo

    _, embedder = fake_stages
    models = SimpleNamespace(detector=BrightPatchDetector(embedder.weights_path), embedder=embedder)
    dark, _ = annotate_photo(dim_photo(12, 45, 100), models, None, 0.5)
    plain, _ = annotate_photo(dim_photo(40, 200, 100), models, None, 0.5)
    assert [face["equalised"] for face in dark] == [True] and [face["equalised"] for face in plain] == [False]
    assert dark[0]["box"] == pytest.approx([100, 40, 200, 140], abs=3)


def test_a_model_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    import hashlib
    import os

    from vidface import embed

    model = tmp_path / "model.bin"
    model.write_bytes(b"a" * 1000)
    hashed, sha256 = [], hashlib.sha256
    monkeypatch.setattr(embed.hashlib, "sha256", lambda: hashed.append(1) or sha256())
    first = embed.file_fingerprint(model)
    assert embed.file_fingerprint(model) == first and len(hashed) == 1
    model.write_bytes(b"b" * 1000)  # same size, new content
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert embed.file_fingerprint(model) != first and len(hashed) == 2

"""The gallery: known people and their face embeddings, and open-set matching.

A gallery folder has one sub-folder per person, named after them, holding
photos. A photo with one face shows its person; in a photo with several, the
person is the face most like the faces in their other photos (a talk-show
still where the guest's face is larger than the host's), and the largest face
only when nothing else tells (see :func:`choose_subjects`). The faces of each
photo are cached, keyed by the photo's content hash, and the whole cache by
the models' fingerprints, so editing the gallery or changing a model
recomputes exactly what changed. The cache is an npz file without pickled
objects.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .align import align_face
from .detect import detect_photo
from .errors import GalleryError
from .files import write_atomically
from .structures import Match

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CACHE_VERSION = "3"
#: Faces embedded per photo, largest first: enough for a group photo's subject to be among them.
MAX_FACES_PER_PHOTO = 8


@dataclass
class GalleryPhoto:
    """One photo of the gallery and what became of it.

    status: ``ok``, ``no-face`` or ``unreadable``; faces: faces detected in it;
    box: ``[x1, y1, x2, y2]`` pixels of the face used (``ok`` only);
    chosen_by: why that face: ``only face``, ``like the other photos``,
    ``largest face, like the other photos`` or ``largest face`` (``ok`` only).
    equalised: its faces were found only in its contrast-equalised copy (a
    dark photo, see :func:`vidface.detect.detect_photo`).
    """

    person: str
    path: Path
    status: str
    faces: int = 0
    box: list[float] | None = None
    chosen_by: str = ""
    equalised: bool = False


@dataclass
class PhotoFaces:
    """What the detector and embedder made of one photo.

    status: ``ok``, ``no-face`` or ``unreadable``; detected: faces found;
    boxes: ``float32 (F, 4)`` pixels and embeddings: ``float32 (F, D)`` unit
    vectors of the ``F = min(detected, MAX_FACES_PER_PHOTO)`` largest, largest first.
    equalised: found only in the photo's contrast-equalised copy.
    """

    status: str
    detected: int
    boxes: np.ndarray
    embeddings: np.ndarray
    equalised: bool = False


@dataclass
class Gallery:
    """Embeddings of the usable photos, grouped by person.

    names: the P people, sorted. embeddings: ``float32 (M, D)`` unit vectors,
    grouped by person in the order of ``names``. owners: ``int (M,)`` index
    into ``names`` for each row. photos: every photo considered.
    """

    folder: Path
    names: list[str]
    embeddings: np.ndarray
    owners: np.ndarray
    photos: list[GalleryPhoto] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = np.argsort(self.owners, kind="stable")
        self.embeddings = np.asarray(self.embeddings, np.float32)[order]
        self.owners = np.asarray(self.owners, np.int64)[order]
        self._starts = np.searchsorted(self.owners, np.arange(len(self.names)))

    def person_similarity(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of ``(N, D)`` embeddings to each person: ``(best photo, mean of photos)``, both ``(N, P)``."""
        embeddings = np.asarray(embeddings, np.float32).reshape(-1, self.embeddings.shape[1] if len(self.embeddings) else 0)
        if len(self.names) == 0 or len(embeddings) == 0:
            empty = np.zeros((len(embeddings), len(self.names)), np.float32)
            return empty, empty
        similarity = embeddings @ self.embeddings.T
        best = np.maximum.reduceat(similarity, self._starts, axis=1)
        counts = np.bincount(self.owners, minlength=len(self.names)).astype(np.float32)
        mean = np.add.reduceat(similarity, self._starts, axis=1) / counts
        return best, mean

    def match(self, embeddings: np.ndarray, threshold: float) -> list[Match]:
        """Open-set answer per embedding: the best person if their best-photo similarity reaches ``threshold``."""
        best, _ = self.person_similarity(embeddings)
        matches = []
        for row in best:
            if len(row) == 0:
                matches.append(Match(None, 0.0, None))
                continue
            person = int(np.argmax(row))
            similarity = float(row[person])
            name = self.names[person]
            matches.append(Match(name if similarity >= threshold else None, similarity, name))
        return matches

    def vectors_by_person(self) -> dict[str, list[np.ndarray]]:
        """``{person: [(D,) unit embedding of each usable photo, in folder order]}``, as :func:`scan_gallery` gives."""
        return {name: list(self.embeddings[self.owners == index]) for index, name in enumerate(self.names)}

    @property
    def problems(self) -> list[GalleryPhoto]:
        return [photo for photo in self.photos if photo.status != "ok"]


#: Faces a stranger's mean embedding must average before it is linked to strangers of other videos:
#: on the people held out of the embedder's training, means of 4 faces of one person meet the match
#: threshold 97.6 % of the time and of 2 faces 76 %, and a few faces are most often not a face at all.
MIN_FACES_TO_LINK = 4


def link_strangers(embeddings: np.ndarray, videos: np.ndarray, threshold: float) -> np.ndarray:
    """Which strangers of different videos are one person: a group number per stranger, ``(N,)``.

    embeddings: ``(N, D)`` unit mean embeddings of the strangers' tracks, in the
    order they were seen (earlier groups keep their numbers when more come).
    videos: ``(N,)`` the video each came from. Complete linkage: a stranger
    joins the group whose *least* similar member is most similar to it, and
    only when that reaches ``threshold`` (the match threshold), so a chain of
    look-alikes never fuses people who do not look alike. Two strangers of
    one video stay apart: the tracker already kept them apart there.
    """
    embeddings = np.asarray(embeddings, np.float32)
    videos = np.asarray(videos)
    groups = np.full(len(videos), -1, np.int64)
    count = 0
    for index in range(len(videos)):
        if index:
            least = np.full(count, np.inf, np.float32)
            np.minimum.at(least, groups[:index], embeddings[:index] @ embeddings[index])
            least[np.unique(groups[:index][videos[:index] == videos[index]])] = -np.inf
            best = int(np.argmax(least))
            if least[best] >= threshold:
                groups[index] = best
                continue
        groups[index], count = count, count + 1
    return groups


def list_gallery(folder: Path) -> dict[str, list[Path]]:
    """``{person: [photo paths]}`` of a gallery folder; raises :class:`GalleryError` when there is none."""
    folder = Path(folder)
    if not folder.exists():
        raise GalleryError(f"gallery folder not found: {folder}")
    if not folder.is_dir():
        raise GalleryError(f"gallery must be a folder with one sub-folder per person: {folder}")
    people = {}
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in person_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        people[person_dir.name] = photos
    if not people:
        raise GalleryError(f"gallery {folder} has no person sub-folders (expected {folder}/<Name>/<photo>.jpg)")
    return people


def default_cache_dir() -> Path:
    if os.environ.get("VIDFACE_CACHE"):
        return Path(os.environ["VIDFACE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidface"


def _content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_file(folder: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "galleries" / f"{folder.name or 'gallery'}-{key}.npz"


def _read_cache(path: Path, model_key: str) -> dict[str, PhotoFaces]:
    """``{content hash: faces}`` from a cache written with the same models."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_key"]) != model_key:
                return {}
            photo_of_face, boxes, embeddings = data["photo_of_face"], data["boxes"], data["embeddings"]
            return {
                str(digest): PhotoFaces(str(status), int(detected), boxes[photo_of_face == index],
                                        embeddings[photo_of_face == index], bool(equalised))
                for index, (digest, status, detected, equalised)
                in enumerate(zip(data["hashes"], data["status"], data["detected"], data["equalised"]))
            }
    except (OSError, ValueError, KeyError):
        return {}  # a damaged or older cache is rebuilt, never trusted


def _write_cache(path: Path, model_key: str, entries: dict[str, PhotoFaces], dim: int) -> None:
    hashes = sorted(entries)
    photos = [entries[digest] for digest in hashes]
    write_atomically(path, lambda temporary: np.savez(
        temporary,
        model_key=np.array(model_key),
        hashes=np.array(hashes, dtype="U64"),
        status=np.array([photo.status for photo in photos], dtype="U16"),
        detected=np.array([photo.detected for photo in photos], dtype=np.int64),
        equalised=np.array([photo.equalised for photo in photos], dtype=bool),
        photo_of_face=np.repeat(np.arange(len(photos)), [len(photo.boxes) for photo in photos]).astype(np.int64),
        boxes=np.concatenate([photo.boxes.reshape(-1, 4) for photo in photos] or [np.zeros((0, 4))]).astype(np.float32),
        embeddings=np.concatenate([photo.embeddings.reshape(-1, dim) for photo in photos]
                                  or [np.zeros((0, dim))]).astype(np.float32),
    ))


def largest_face(detections):
    return max(detections, key=lambda d: d.area) if detections else None


def scan_gallery(folder: Path, detector, embedder, cache_dir: Path | None = None,
                 use_cache: bool = True) -> tuple[list[GalleryPhoto], dict[str, list[np.ndarray]]]:
    """Detect, align and embed the subject of every photo (cached): ``(photos, {person: [vectors]})``."""
    folder = Path(folder)
    people = list_gallery(folder)
    from .detect import photo_detector
    from .embed import file_fingerprint
    from .onnx_runtime import engine_precision

    detector = photo_detector(detector)  # f32 where the video is detected in int8
    model_key = "|".join([
        CACHE_VERSION,
        file_fingerprint(detector.weights_path), detector.photo_settings_key,
        embedder.fingerprint,
        # bf16 moves boxes and embeddings a little: a gallery is embedded as the run embeds its faces
        engine_precision(getattr(detector, "backend", "torch"), detector=True),
        engine_precision(getattr(embedder, "backend", "torch")),
    ])
    cache_path = _cache_file(folder, cache_dir or default_cache_dir())
    cached = _read_cache(cache_path, model_key) if use_cache else {}
    entries: dict[str, PhotoFaces] = {}
    photos: list[GalleryPhoto] = []
    vectors: dict[str, list[np.ndarray]] = {}
    for person, paths in people.items():
        scanned: list[tuple[Path, PhotoFaces]] = []
        for path in paths:
            try:
                digest = _content_hash(path)
            except OSError:
                scanned.append((path, _nothing("unreadable", embedder.dim)))
                continue
            if digest not in cached:
                cached[digest] = _detect_and_embed(path, detector, embedder)
            entries[digest] = cached[digest]
            scanned.append((path, cached[digest]))
        vectors[person] = []
        choices = choose_subjects([faces.embeddings for _, faces in scanned])
        for (path, faces), (subject, chosen_by) in zip(scanned, choices):
            if subject is None:
                photos.append(GalleryPhoto(person, path, faces.status, faces.detected))
                continue
            photos.append(GalleryPhoto(person, path, "ok", faces.detected, faces.boxes[subject].tolist(), chosen_by,
                                       faces.equalised))
            vectors[person].append(faces.embeddings[subject])
    if use_cache and entries:
        try:
            _write_cache(cache_path, model_key, entries, embedder.dim)
        except OSError:
            pass  # an unwritable cache only costs time
    return photos, vectors


def build_gallery(folder: Path, detector, embedder, cache_dir: Path | None = None, use_cache: bool = True,
                  strict: bool = True) -> Gallery:
    """The gallery of ``folder`` (see :func:`scan_gallery`).

    strict: raise :class:`GalleryError` naming the folder of a person with no
    usable photo; otherwise such a person is left out.
    """
    folder = Path(folder)
    photos, vectors = scan_gallery(folder, detector, embedder, cache_dir, use_cache)
    names, rows, owners = [], [], []
    for person, person_vectors in vectors.items():
        if not person_vectors:
            if strict:
                statuses = {p.status for p in photos if p.person == person}
                why = ("it has no photo" if not statuses else "none of its photos could be read"
                       if statuses == {"unreadable"} else "no face found in its photos")
                raise GalleryError(f"gallery person {person!r} has no usable photo: {why} ({folder / person})")
            continue
        names.append(person)
        rows.extend(person_vectors)
        owners.extend([len(names) - 1] * len(person_vectors))
    if not names:
        raise GalleryError(f"gallery {folder} has no usable photo")
    return Gallery(folder, names, np.stack(rows), np.array(owners), photos)


def unlike_their_person(photos: list[GalleryPhoto], vectors: dict[str, list[np.ndarray]],
                        threshold: float | None) -> list[tuple[GalleryPhoto, float]]:
    """The usable photos (of :func:`scan_gallery`'s answer) whose best similarity to their person's other
    usable photos is below ``threshold`` (the embedder's ``photo_check_threshold``), with that similarity:
    another person filed there, or a face too dark, small or turned to be of use. A person's only photo
    has nothing to be compared with; ``None`` checks nothing."""
    if threshold is None:
        return []
    unlike = []
    for person, person_vectors in vectors.items():
        if len(person_vectors) < 2:
            continue
        usable = [photo for photo in photos if photo.person == person and photo.status == "ok"]
        best_of = best_other_similarity(np.stack(person_vectors))
        unlike += [(photo, float(best)) for photo, best in zip(usable, best_of) if best < threshold]
    return unlike


def best_other_similarity(vectors: np.ndarray) -> np.ndarray:
    """``(M,)``: for each of one person's ``(M, D)`` unit embeddings (``M >= 2``), its best cosine similarity
    to the others: what the photo check compares with ``photo_check_threshold``, and what calibrates it."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


def choose_subjects(photo_faces: list[np.ndarray]) -> list[tuple[int | None, str]]:
    """Which face of each of one person's photos shows that person: ``(index or None, why)`` per photo.

    photo_faces: per photo, ``(F, D)`` unit embeddings of its faces, largest
    first. A photo with one face is that face. In a photo with several, each
    face scores the mean, over the person's other photos that have a face, of
    its best similarity to any face there; the highest wins. With no other
    photo to compare with, the largest face is taken.
    """
    choices: list[tuple[int | None, str]] = []
    for index, faces in enumerate(photo_faces):
        if len(faces) == 0:
            choices.append((None, ""))
            continue
        if len(faces) == 1:
            choices.append((0, "only face"))
            continue
        others = [other for position, other in enumerate(photo_faces) if position != index and len(other)]
        if not others:
            choices.append((0, "largest face"))
            continue
        likeness = np.mean([(faces @ other.T).max(axis=1) for other in others], axis=0)
        best = int(np.argmax(likeness))
        choices.append((best, "largest face, like the other photos" if best == 0 else "like the other photos"))
    return choices


def _nothing(status: str, dim: int, detected: int = 0) -> PhotoFaces:
    return PhotoFaces(status, detected, np.zeros((0, 4), np.float32), np.zeros((0, dim), np.float32))


def _detect_and_embed(path: Path, detector, embedder) -> PhotoFaces:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return _nothing("unreadable", embedder.dim)
    detections, equalised = detect_photo(detector, image)
    if not detections:
        return _nothing("no-face", embedder.dim)
    kept = sorted(detections, key=lambda d: d.area, reverse=True)[:MAX_FACES_PER_PHOTO]
    crops = [align_face(image, face.landmarks, face.box) for face in kept]
    return PhotoFaces("ok", len(detections), np.stack([face.box for face in kept]).astype(np.float32),
                      np.asarray(embedder(crops), np.float32), equalised)

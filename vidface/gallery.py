"""The gallery: known people and their face embeddings, and open-set matching.

A gallery folder has one sub-folder per person, named after them, holding
photos. In each photo the subject is the largest face. Embeddings are cached
per photo, keyed by the photo's content hash, and the whole cache by the
models' fingerprints, so editing the gallery or changing a model recomputes
exactly what changed. The cache is an npz file without pickled objects.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .align import align_face
from .errors import GalleryError
from .files import write_atomically
from .structures import Match

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CACHE_VERSION = "1"


@dataclass
class GalleryPhoto:
    """One photo of the gallery and what became of it.

    status: ``ok``, ``no-face`` or ``unreadable``; faces: faces detected in it;
    box: ``[x1, y1, x2, y2]`` pixels of the face used (``ok`` only).
    """

    person: str
    path: Path
    status: str
    faces: int = 0
    box: list[float] | None = None


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

    @property
    def problems(self) -> list[GalleryPhoto]:
        return [photo for photo in self.photos if photo.status != "ok"]


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


def _read_cache(path: Path, model_key: str) -> dict[str, tuple[str, int, np.ndarray, np.ndarray]]:
    """``{content hash: (status, faces, box, embedding)}`` from a cache written with the same models."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_key"]) != model_key:
                return {}
            return {
                str(h): (str(s), int(n), b, e)
                for h, s, n, b, e in zip(data["hashes"], data["status"], data["faces"], data["boxes"], data["embeddings"])
            }
    except (OSError, ValueError, KeyError):
        return {}  # a damaged cache is rebuilt, never trusted


def _write_cache(path: Path, model_key: str, entries: dict, dim: int) -> None:
    hashes = sorted(entries)
    write_atomically(path, lambda temporary: np.savez(
        temporary,
        model_key=np.array(model_key),
        hashes=np.array(hashes, dtype="U64"),
        status=np.array([entries[h][0] for h in hashes], dtype="U16"),
        faces=np.array([entries[h][1] for h in hashes], dtype=np.int64),
        boxes=np.array([entries[h][2] for h in hashes], dtype=np.float32).reshape(-1, 4),
        embeddings=np.array([entries[h][3] for h in hashes], dtype=np.float32).reshape(-1, dim),
    ))


def largest_face(detections):
    return max(detections, key=lambda d: d.area) if detections else None


def scan_gallery(folder: Path, detector, embedder, cache_dir: Path | None = None,
                 use_cache: bool = True) -> tuple[list[GalleryPhoto], dict[str, list[np.ndarray]]]:
    """Detect, align and embed the subject of every photo (cached): ``(photos, {person: [vectors]})``."""
    folder = Path(folder)
    people = list_gallery(folder)
    from .embed import file_fingerprint

    model_key = "|".join([
        CACHE_VERSION,
        file_fingerprint(detector.weights_path), detector.photo_settings_key,
        embedder.fingerprint,
    ])
    cache_path = _cache_file(folder, cache_dir or default_cache_dir())
    cached = _read_cache(cache_path, model_key) if use_cache else {}
    entries: dict[str, tuple] = {}
    photos: list[GalleryPhoto] = []
    vectors: dict[str, list[np.ndarray]] = {}
    for person, paths in people.items():
        vectors[person] = []
        for path in paths:
            try:
                digest = _content_hash(path)
            except OSError:
                photos.append(GalleryPhoto(person, path, "unreadable"))
                continue
            if digest not in cached:
                cached[digest] = _embed_photo(path, detector, embedder)
            status, faces, box, vector = cached[digest]
            entries[digest] = cached[digest]
            photos.append(GalleryPhoto(person, path, status, faces, box.tolist() if status == "ok" else None))
            if status == "ok":
                vectors[person].append(vector)
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


def _embed_photo(path: Path, detector, embedder) -> tuple[str, int, np.ndarray, np.ndarray]:
    empty_box, empty_vector = np.zeros(4, np.float32), np.zeros(embedder.dim, np.float32)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return "unreadable", 0, empty_box, empty_vector
    detections = detector([image], closeups=True)[0]  # a portrait is a close-up, whatever the video needs
    face = largest_face(detections)
    if face is None:
        return "no-face", 0, empty_box, empty_vector
    crop = align_face(image, face.landmarks, face.box)
    return "ok", len(detections), face.box.astype(np.float32), embedder([crop])[0]

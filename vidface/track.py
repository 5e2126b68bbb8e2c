"""Tracking: follow faces across frames and name each track, not each frame.

Detections are joined to live tracks greedily by a score that adds the box
overlap (IoU with the track's constant-velocity prediction) and the cosine
similarity of the face embedding to the track's mean embedding, so a face
that moved fast or was missed for a moment is still recognised as the same
track. A track's name comes from its mean embedding over all its detections,
which changes slowly: one bad frame cannot flip a label. People not in the
gallery get ``unknown-N`` ids; a new unknown track that looks like an earlier
unknown one (same threshold as for the gallery) gets that earlier id back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .datasets import box_iou
from .structures import Detection, Face


@dataclass
class TrackerSettings:
    """Association and life-cycle rules.

    min_iou: least overlap for a pair to be joined on position alone.
    min_reid_similarity: least embedding similarity to join a pair that does
        not overlap (a fast move, a missed detection).
    max_reid_distance: such a pair's centres may be at most this many box
        sizes apart.
    embedding_weight: weight of the embedding similarity in the join score.
    max_age_s: a track not seen for this long (seconds) is closed.
    min_hits: detections a track needs before it is shown and logged.
    """

    min_iou: float = 0.2
    min_reid_similarity: float = 0.5
    max_reid_distance: float = 2.0
    embedding_weight: float = 0.5
    max_age_s: float = 1.0
    min_hits: int = 2


@dataclass
class Track:
    """One face followed through the video.

    box: ``(4,)`` last xyxy box in pixels; velocity: ``(4,)`` pixels per frame.
    embedding_sum: ``(D,)`` score-weighted sum of the track's unit embeddings.
    label: the gallery name decided for the track, ``None`` if unknown.
    label_similarity: similarity of the mean embedding to that name (or to
        the closest person, when unknown).
    closest: the gallery person closest to the mean embedding, named or not.
    """

    track_id: int
    box: np.ndarray
    landmarks: np.ndarray | None
    score: float
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    hits: int = 1
    embedding_sum: np.ndarray | None = None
    label: str | None = None
    label_similarity: float = 0.0
    closest: str | None = None
    unknown_id: str | None = None

    def predicted_box(self, frame_index: int) -> np.ndarray:
        return self.box + self.velocity * (frame_index - self.last_frame)

    @property
    def mean_embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None:
            return None
        norm = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / norm if norm > 0 else None

    @property
    def display_id(self) -> str:
        return self.label or self.unknown_id or f"track-{self.track_id}"


class Tracker:
    """Assigns track ids and track-level names to the faces of successive frames.

    gallery: a :class:`vidface.gallery.Gallery` (or ``None`` for tracking only).
    threshold: open-set match threshold (cosine similarity).
    fps: frames per second, to turn ``max_age_s`` into frames.
    """

    def __init__(self, gallery, threshold: float, fps: float = 30.0, settings: TrackerSettings | None = None):
        self.gallery = gallery
        self.threshold = threshold
        self.settings = settings or TrackerSettings()
        self.max_age_frames = max(1, int(round(self.settings.max_age_s * max(fps, 1.0))))
        self.tracks: dict[int, Track] = {}
        self.live: list[int] = []
        self._next_id = 1
        self._unknown_centroids: dict[str, np.ndarray | None] = {}

    # -- association -----------------------------------------------------------------
    def update(self, frame_index: int, faces: list[Face]) -> list[Face]:
        """Join this detected frame's faces to tracks; sets ``track_id`` on every face."""
        self.live = [t for t in self.live if frame_index - self.tracks[t].last_frame <= self.max_age_frames]
        candidates = [self.tracks[t] for t in self.live]
        pairs = self._pair_scores(frame_index, candidates, faces)
        used_tracks, used_faces = set(), set()
        for score, track_index, face_index in sorted(pairs, key=lambda p: -p[0]):
            if track_index in used_tracks or face_index in used_faces:
                continue
            used_tracks.add(track_index)
            used_faces.add(face_index)
            self._extend(candidates[track_index], frame_index, faces[face_index])
        for face_index, face in enumerate(faces):
            if face_index not in used_faces:
                self._start(frame_index, face)
        for face in faces:
            self._decide_label(self.tracks[face.track_id])
        return faces

    def _pair_scores(self, frame_index: int, tracks: list[Track], faces: list[Face]) -> list[tuple[float, int, int]]:
        if not tracks or not faces:
            return []
        predicted = np.stack([t.predicted_box(frame_index) for t in tracks])
        boxes = np.stack([f.detection.box for f in faces])
        iou = box_iou(predicted, boxes)
        similarity = np.zeros_like(iou)
        for i, track in enumerate(tracks):
            mean = track.mean_embedding
            if mean is None:
                continue
            for j, face in enumerate(faces):
                if face.embedding is not None:
                    similarity[i, j] = float(mean @ face.embedding)
        centres_t = (predicted[:, :2] + predicted[:, 2:]) / 2
        centres_f = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = np.maximum(predicted[:, 2:] - predicted[:, :2], 1).max(axis=1)
        distance = np.linalg.norm(centres_t[:, None] - centres_f[None], axis=2) / sizes[:, None]
        rules = self.settings
        pairs = []
        for i in range(len(tracks)):
            for j in range(len(faces)):
                by_position = iou[i, j] >= rules.min_iou
                by_face = similarity[i, j] >= rules.min_reid_similarity and distance[i, j] <= rules.max_reid_distance
                if by_position or by_face:
                    pairs.append((iou[i, j] + rules.embedding_weight * similarity[i, j], i, j))
        return pairs

    def _start(self, frame_index: int, face: Face) -> None:
        detection = face.detection
        track = Track(self._next_id, detection.box.copy(), detection.landmarks, detection.score, frame_index, frame_index)
        self._next_id += 1
        self._add_evidence(track, face)
        self.tracks[track.track_id] = track
        self.live.append(track.track_id)
        face.track_id = track.track_id

    def _extend(self, track: Track, frame_index: int, face: Face) -> None:
        detection = face.detection
        elapsed = max(1, frame_index - track.last_frame)
        motion = (detection.box - track.box) / elapsed
        track.velocity = 0.5 * track.velocity + 0.5 * motion
        track.box = detection.box.copy()
        track.landmarks = detection.landmarks
        track.score = detection.score
        track.last_frame = frame_index
        track.hits += 1
        self._add_evidence(track, face)
        face.track_id = track.track_id

    @staticmethod
    def _add_evidence(track: Track, face: Face) -> None:
        if face.embedding is None:
            return
        weighted = face.embedding * max(face.detection.score, 0.05)
        track.embedding_sum = weighted if track.embedding_sum is None else track.embedding_sum + weighted

    # -- identity ---------------------------------------------------------------------
    def _decide_label(self, track: Track) -> None:
        mean = track.mean_embedding
        if mean is None or self.gallery is None:
            return
        match = self.gallery.match(mean[None], self.threshold)[0]
        track.label, track.label_similarity, track.closest = match.identity, match.similarity, match.best_name
        if track.label is not None:
            track.unknown_id = None

    def confirmed(self, track_id: int) -> bool:
        return self.tracks[track_id].hits >= self.settings.min_hits

    def unknown_id(self, track: Track) -> str:
        """The ``unknown-N`` id of an unnamed track, given on first use and kept."""
        if track.unknown_id is None:
            mean = track.mean_embedding
            in_use = {self.tracks[t].unknown_id for t in self.live if t != track.track_id}
            best, best_similarity = None, self.threshold
            if mean is not None:
                for unknown, centroid in self._unknown_centroids.items():
                    if centroid is None:
                        continue
                    similarity = float(centroid @ mean)
                    if unknown not in in_use and similarity >= best_similarity:
                        best, best_similarity = unknown, similarity
            track.unknown_id = best or f"unknown-{len(self._unknown_centroids) + 1}"
        if track.mean_embedding is not None or track.unknown_id not in self._unknown_centroids:
            self._unknown_centroids[track.unknown_id] = track.mean_embedding
        return track.unknown_id

    def describe(self, face: Face) -> Face:
        """Fill a face's track-level ``label``, ``display_id`` and ``label_similarity`` as known now."""
        track = self.tracks.get(face.track_id)
        if track is None:
            return face
        face.label = track.label
        face.label_similarity = track.label_similarity
        face.display_id = track.label or self.unknown_id(track)
        return face

    # -- carrying tracks over frames without detection -------------------------------
    def carry(self, frame_index: int, last_detected_frame: int) -> list[Face]:
        """Faces for a frame the detector skipped: tracks seen on the last detected frame, moved by their velocity."""
        faces = []
        for track_id in self.live:
            track = self.tracks[track_id]
            if track.last_frame != last_detected_frame:
                continue
            box = track.predicted_box(frame_index).astype(np.float32)
            shift = (box[:2] + box[2:]) / 2 - (track.box[:2] + track.box[2:]) / 2
            landmarks = None if track.landmarks is None else (track.landmarks + shift).astype(np.float32)
            faces.append(Face(Detection(box, track.score, landmarks), track_id=track_id))
        return faces

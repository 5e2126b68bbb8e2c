"""dlib's ResNet face embedding (CC0), the distillation teacher and LFW baseline.

dlib wants its own 150x150 chips cut from its 5-point shape predictor, not
the ArcFace template: :meth:`DlibTeacher.embed_aligned` runs the predictor
on an ArcFace-aligned 112x112 crop (enlarged 2x) and cuts the chip from it.
Needs the optional packages ``dlib-bin`` and ``face-recognition-models``.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from ...errors import ModelError
from ...files import write_atomically

#: Where the face in an ArcFace 112x112 crop lies, as a box for dlib's predictor.
_TEMPLATE_FACE_BOX = (18, 30, 94, 108)
_UPSCALE = 2


def _model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the dlib teacher needs: pip install dlib-bin face-recognition-models")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibTeacher:
    """128-d dlib face descriptors of aligned 112x112 BGR crops."""

    name = "dlib-resnet"
    dim = 128

    def __init__(self, jitter: int = 0):
        try:
            import dlib
        except ImportError as error:
            raise ModelError("the dlib teacher needs: pip install dlib-bin face-recognition-models") from error
        models = _model_dir()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.jitter = jitter

    def chip(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """dlib's 150x150 RGB chip of an aligned crop."""
        rgb = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2RGB)
        big = cv2.resize(rgb, None, fx=_UPSCALE, fy=_UPSCALE, interpolation=cv2.INTER_CUBIC)
        x1, y1, x2, y2 = (v * _UPSCALE for v in _TEMPLATE_FACE_BOX)
        shape = self._predictor(big, self._dlib.rectangle(x1, y1, x2, y2))
        return self._dlib.get_face_chip(big, shape, size=150, padding=0.25)

    def embed_aligned(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, 128)`` float32 L2-normalised descriptors of ``N`` aligned BGR crops."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        chips = [self.chip(crop) for crop in crops]
        vectors = np.array(self._encoder.compute_face_descriptor(chips, self.jitter), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


#: the teacher of a worker process of :func:`teacher_cache`, loaded once per process
_worker_teacher: DlibTeacher | None = None


def _load_worker_teacher() -> None:
    global _worker_teacher
    _worker_teacher = DlibTeacher()


def _embed_files(paths: list[Path], teacher: DlibTeacher | None = None) -> np.ndarray:
    """Teacher vectors of the crops read from ``paths``, by ``teacher`` or this worker process's own."""
    return (teacher or _worker_teacher).embed_aligned([cv2.imread(str(p)) for p in paths])


def teacher_cache(image_paths: list[Path], root: Path, cache_file: Path, teacher: DlibTeacher | None = None,
                  batch: int = 64, processes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Teacher embeddings of every image, computed once and kept in a pickle-free npz.

    The cache is keyed by each image's path relative to ``root`` (or the path
    as given, for images outside it); images already in a previous cache are
    not recomputed. dlib embeds on one core: ``processes`` (default: every
    core, one when a ``teacher`` is given) share the missing images.
    """
    names = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in image_paths]
    known: dict[str, np.ndarray] = {}
    if cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as cached:
            known = dict(zip(cached["names"].tolist(), cached["embeddings"]))
    missing = [(n, p) for n, p in zip(names, image_paths) if n not in known]
    if missing:
        from tqdm import tqdm

        import multiprocessing

        processes = processes or (1 if teacher is not None else os.cpu_count() or 1)
        chunks = [missing[start : start + batch] for start in range(0, len(missing), batch)]
        chunk_paths = [[p for _, p in chunk] for chunk in chunks]
        with (multiprocessing.get_context("spawn").Pool(processes, _load_worker_teacher) if processes > 1
              else nullcontext()) as pool:
            if pool is not None:
                results = pool.imap(_embed_files, chunk_paths)
            else:
                teacher = teacher or DlibTeacher()
                results = (_embed_files(paths, teacher) for paths in chunk_paths)
            for chunk, vectors in tqdm(zip(chunks, results), total=len(chunks), desc="dlib teacher", unit="batch"):
                known.update((name, vector) for (name, _), vector in zip(chunk, vectors))
        all_names = sorted(known)
        write_atomically(cache_file, lambda temporary: np.savez(
            temporary, names=np.array(all_names), embeddings=np.stack([known[n] for n in all_names])))
    return names, np.stack([known[n] for n in names])

"""Which inference engine is fastest on this CPU, and does its answer hold? (``vidface eval backends``)

The same frames of a clip go through the detector and the same face crops
through the embedder under each engine: PyTorch eager, ONNX Runtime fp32,
ONNX Runtime int8 (static quantisation, calibrated on training images:
WIDER training images for the detector, training face crops for the
embedder; never on evaluation data) and OpenVINO (f32, bf16, int8 on those
same quantised graphs, and ``openvino-int8``: the detector's shipped int8
network with the f32 embedder) when it is installed.
Speed is frames (or crops) per second after a warm-up; agreement is against
PyTorch: the share of its faces found again (IoU >= 0.5) and the cosine of
each embedding to PyTorch's. A benchmark: run it on an idle machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...structures import box_iou


@dataclass
class EngineRow:
    engine: str
    detect_fps: float | None
    embed_crops_per_s: float | None
    faces_agree: float | None
    embedding_cosine_min: float | None
    note: str = ""


def _frames(video: Path, count: int) -> list[np.ndarray]:
    from ...io import VideoReader

    images = []
    with VideoReader(video) as reader:
        for frame in reader:
            images.append(frame.image)
            if len(images) >= count:
                break
    return images


def compare_engines(video: Path, settings, frames: int = 96, calibration_images: list[Path] = (),
                    calibration_crops: np.ndarray | None = None, log=print, repeat: int = 1) -> list[EngineRow]:
    """Time and check every available engine on ``frames`` frames of ``video`` (see the module docstring);
    ``repeat`` rounds over all engines, speeds are the medians of the rounds."""
    from ...align import align_face
    from ...detect import FaceDetector
    from ...embed import FaceEmbedder, crops_to_batch
    from ...onnx_runtime import OnnxRunner, OpenVinoRunner

    images = _frames(video, frames)
    batch_size = settings.batch_size or 2
    torch_detector = FaceDetector(settings.detector, "cpu", imgsz=settings.imgsz, closeups=settings.closeups,
                                  backend="torch")
    torch_embedder = FaceEmbedder(settings.embedder, "cpu", flip=settings.flip_embed, backend="torch")

    def run_detector(detector):
        found = []
        detector(images[:8])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            found += detector(images[start : start + batch_size])
        return found, len(images) / (time.perf_counter() - started)

    reference_faces, _ = run_detector(torch_detector)
    crops = [align_face(image, face.landmarks, face.box) for image, faces in zip(images, reference_faces)
             for face in faces]
    if not crops:
        raise ValueError(f"no face found in the first {frames} frames of {video}")

    def run_embedder(embedder):
        embedder(crops[:8])
        started = time.perf_counter()
        vectors = embedder(crops)
        return vectors, len(crops) / (time.perf_counter() - started)

    reference_vectors, _ = run_embedder(torch_embedder)

    def agreement(found) -> float:
        matched = total = 0
        for ours, theirs in zip(reference_faces, found):
            total += len(ours)
            if ours and theirs:
                iou = box_iou(np.stack([f.box for f in ours]), np.stack([f.box for f in theirs]))
                matched += int((iou.max(axis=1) >= 0.5).sum())
        return matched / max(total, 1)

    # one detector and one embedder on the exported graphs; each engine swaps in the runners it times
    graph_detector = FaceDetector(settings.detector, "cpu", imgsz=settings.imgsz, closeups=settings.closeups,
                                  backend="onnx")
    graph_embedder = FaceEmbedder(settings.embedder, "cpu", flip=settings.flip_embed, backend="onnx")
    detector_graph, embedder_graph = graph_detector.graph, graph_embedder.graph
    engines = [("pytorch eager", None, None, ""), ("onnxruntime fp32", graph_detector._onnx, graph_embedder._onnx, "")]
    int8_graphs = None
    if calibration_images and calibration_crops is not None:
        import cv2

        from ..train.quantise import detector_calibration_batches, quantised_graph

        detector_batches = detector_calibration_batches(torch_detector, [cv2.imread(str(p)) for p in calibration_images])
        embedder_batches = [crops_to_batch(calibration_crops[i : i + 32], torch_embedder.config)
                            for i in range(0, len(calibration_crops), 32)]
        int8_graphs = tuple(quantised_graph(graph, batches, graph.with_name(f"{graph.stem}-{name}-int8.onnx"))
                            for graph, batches, name in ((detector_graph, detector_batches, "detector"),
                                                         (embedder_graph, embedder_batches, "embedder")))
        int8_note = f"calibrated on {len(calibration_images)} WIDER training images, {len(calibration_crops)} crops"
        engines.append(("onnxruntime int8 (static)", OnnxRunner(int8_graphs[0]), OnnxRunner(int8_graphs[1]),
                        int8_note))
    import importlib.util

    missing = []
    if importlib.util.find_spec("openvino") is None:
        missing.append(EngineRow("openvino", None, None, None, None, "not installed"))
    else:
        from ...detect import PASS_NETWORKS, quantised_graph_for

        engines.append(("openvino f32", OpenVinoRunner(detector_graph, networks=PASS_NETWORKS),
                        OpenVinoRunner(embedder_graph), ""))
        engines.append(("openvino bf16", OpenVinoRunner(detector_graph, precision="bf16", networks=PASS_NETWORKS),
                        OpenVinoRunner(embedder_graph, precision="bf16"), "OpenVINO's own choice on a CPU with BF16"))
        if int8_graphs is not None:  # OpenVINO runs a QDQ graph's convolutions in int8 (VNNI where the CPU has it)
            engines.append(("openvino int8 (the same QDQ graphs)",
                            OpenVinoRunner(int8_graphs[0], networks=PASS_NETWORKS), OpenVinoRunner(int8_graphs[1]),
                            int8_note))
        shipped = quantised_graph_for(settings.detector)
        if shipped is not None:
            engines.append(("openvino-int8 (shipped NNCF detector, f32 embedder)",
                            OpenVinoRunner(shipped, networks=PASS_NETWORKS), OpenVinoRunner(embedder_graph),
                            "--backend openvino-int8"))

    # every engine once per round, the rounds one after the other: a machine that slows down for a while
    # slows every engine's figure of that round, and the medians leave such rounds out
    speeds: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in engines}
    checks: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, detector_runner, embedder_runner, _note in engines:
            if detector_runner is None:
                detector, embedder = torch_detector, torch_embedder
            else:
                graph_detector._onnx, graph_embedder._onnx = detector_runner, embedder_runner
                detector, embedder = graph_detector, graph_embedder
            found, fps = run_detector(detector)
            vectors, cps = run_embedder(embedder)
            speeds[name].append((fps, cps))
            if name not in checks:
                checks[name] = (agreement(found), float((vectors * reference_vectors).sum(axis=1).min()))
                log(f"{name}: detect {fps:.1f} frames/s, embed {cps:.1f} crops/s, faces agree {checks[name][0]:.3f}, "
                    f"embedding cosine >= {checks[name][1]:.4f}")
    rows = []
    for name, _detector, _embedder, note in engines:
        detect_fps, embed_cps = (np.array(values) for values in zip(*speeds[name]))
        spread = (f"; detect {detect_fps.min():.1f}-{detect_fps.max():.1f} over {repeat} rounds" if repeat > 1 else "")
        rows.append(EngineRow(name, round(float(np.median(detect_fps)), 1), round(float(np.median(embed_cps)), 1),
                              round(checks[name][0], 4), round(checks[name][1], 4), (note + spread).lstrip("; ")))
    rows += missing
    return rows

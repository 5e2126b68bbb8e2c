"""int8 networks by static post-training quantisation, calibrated on training data only.

``vidface train quantise-detector`` makes the detector's shipped int8 network
(``weights/yolov8n-face-int8.xml`` and ``.bin``, run by ``--backend openvino-int8``
and by ``auto`` on CPUs without BF16) with NNCF, OpenVINO's own quantiser, which
places the quantisation where OpenVINO's CPU kernels execute it. ``vidface eval
backends`` quantises both networks with ONNX Runtime instead (a QDQ graph either
engine runs) to compare the engines. OpenVINO runs that QDQ graph about as fast,
but it moved the detector's scores by +0.06 on average on held-out training
images (ONNX Runtime running the same graph: -0.01; NNCF's network in OpenVINO:
-0.008), which tripled the false boxes at the calibrated threshold.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...errors import ModelError
from ...files import write_atomically, write_json_atomic


class _Calibration:
    """ONNX Runtime's calibration reader over a list of ready input arrays."""

    def __init__(self, batches: list[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}


#: the layers int8 pays for; the rest (the detector's box decoding, its concatenation of pixel
#: coordinates with 0-1 scores under one scale) stays float: quantising every node found no face
QUANTISED_OPS = ("Conv", "MatMul", "Gemm")


def quantised_graph(graph: Path, batches: list[np.ndarray], destination: Path) -> Path:
    """Write the static int8 (QDQ, per-channel weights) version of ``graph``'s convolutions and matrix
    products, calibrated on ``batches`` (min-max ranges), to ``destination`` (atomically); the detector's
    distribution-focal decoding (``dfl``) stays float."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="vidface-quantise-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        decoding = [node.name for node in onnx.load(str(prepared)).graph.node if "/dfl/" in node.name]

        def quantise(temporary: str) -> None:
            quantize_static(str(prepared), temporary, _Calibration(batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=decoding)

        return write_atomically(destination, quantise)


def detector_calibration_batches(detector, images: list[np.ndarray]) -> list[np.ndarray]:
    """The canvases ``detector`` feeds its network for ``images`` (BGR): each image as the main pass and
    as the close-up pass letterbox it, ``float32 (1, 3, H, W)`` in 0-1 (both passes run the int8 network)."""
    from ...detect import CLOSEUP_FILL, CLOSEUP_IMGSZ

    batches = []
    for image in images:
        for imgsz, fill in ((detector.imgsz, 1.0), (CLOSEUP_IMGSZ, CLOSEUP_FILL)):
            canvas = detector._letterbox([image], imgsz, fill)[0]
            batches.append(canvas.astype(np.float32) / np.float32(255.0))
    return batches


#: detector nodes NNCF leaves float: the whole head (``model.22``): its convolutions, the box decoding
#: and the concatenation of pixel coordinates with 0-1 scores; the backbone and the neck go to int8.
#: Compared on 200 held-out training images (train-subset images not calibrated on; f32's faces at the
#: threshold that int8 lost, by height, and boxes f32 did not have): with the head's 3x3 convolutions in
#: int8 too, 21 of 25 faces of 96 px or more were lost (scores down by 0.36); with only its stride-8 ones
#: in int8, 3 of 25 and 12 of 192 of 32-96 px, as with the whole head in f32 (3 and 11), and 69 boxes
#: against 66, at 1.3 times the f32 network's speed against 1.1, but on the videofaceid clips a hand
#: took a gallery name for 43 frames (README, "Engines and speed"). With only the 1x1 output convolutions
#: and the distribution-focal decoding left float, a third of all faces had no int8 box at IoU 0.5.
DETECTOR_FLOAT_SCOPE = r".*/model\.22/"  # NNCF matches from a name's start


def quantise_detector(weights: Path, image_paths: list[Path], destination: Path | None = None,
                      imgsz: int = 640) -> tuple[Path, dict]:
    """Quantise the detector ``weights`` (safetensors) to its int8 network with NNCF (preset ``mixed``:
    symmetric int8 weights, asymmetric activations; :data:`DETECTOR_FLOAT_SCOPE` left float), calibrated
    on ``image_paths`` (training images) as both detector passes see them, and record beside it
    (``.json``) the fingerprint of the weights it was made from: :func:`vidface.detect.quantised_graph_for`
    uses it only while they match. Returns the network's ``.xml`` path and that record."""
    import os
    import tempfile

    import cv2
    import openvino as ov

    from ...detect import INT8_SUFFIX, FaceDetector
    from ...embed import file_fingerprint

    os.environ.setdefault("NNCF_CI", "1")  # NNCF's usage telemetry off: nothing here may reach the network
    try:
        import nncf
    except ImportError:
        raise ModelError("quantising the detector needs NNCF: pip install -e '.[train]' (or pip install nncf)") from None

    weights = Path(weights)
    destination = Path(destination) if destination else weights.with_name(weights.stem + INT8_SUFFIX + ".xml")
    images = [image for image in (cv2.imread(str(path)) for path in image_paths) if image is not None]
    if not images:
        raise ValueError("no readable calibration image")
    started = time.perf_counter()
    detector = FaceDetector(weights, "cpu", imgsz=imgsz, backend="onnx")  # exports the f32 graph
    batches = detector_calibration_batches(detector, images)
    network = nncf.quantize(ov.Core().read_model(str(detector.graph)), nncf.Dataset(batches),
                            preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches),
                            ignored_scope=nncf.IgnoredScope(patterns=[DETECTOR_FLOAT_SCOPE]))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantise-", dir=destination.parent) as folder:
        staged = Path(folder) / destination.name
        ov.save_model(network, str(staged), compress_to_fp16=False)  # the float layers stay f32
        for suffix in (".bin", ".xml"):  # the graph last: it names the tensors file
            os.replace(staged.with_suffix(suffix), destination.with_suffix(suffix))
    record = {"source": weights.name, "source_fingerprint": file_fingerprint(weights),
              "calibration": {"images": len(images), "inputs": len(batches),
                              "canvases": f"main pass at {detector.imgsz} and close-up pass",
                              "method": f"NNCF {nncf.__version__} post-training quantisation, preset mixed "
                                        "(symmetric int8 weights, asymmetric activations)",
                              "float_scope": DETECTOR_FLOAT_SCOPE},
              "minutes": round((time.perf_counter() - started) / 60, 2)}
    write_json_atomic(record, destination.with_suffix(".json"))
    return destination, record

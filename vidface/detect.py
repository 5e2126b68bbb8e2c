"""Face detection: YOLOv8n-pose with one class and five landmarks.

The network is ultralytics' ``PoseModel``; vidface stores it as safetensors
(weights plus the model YAML in the file's metadata), so loading runs no
pickled code. Prediction is our own batched letterbox -> forward -> NMS ->
un-letterbox loop, so many video frames go through the GPU at once. With
``backend`` ``onnx`` or ``openvino`` the network is an ONNX graph exported once
from the weights, and detection runs without PyTorch or ultralytics; with
``openvino-int8`` it is the int8 network shipped beside the weights (made from
them by ``vidface train quantise-detector``, see :func:`quantised_graph_for`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .errors import ModelError
from .files import write_atomically
from .offline import ultralytics_offline
from .structures import Detection

FORMAT = "vidface-yolo-pose/1"
STRIDE = 32
#: A landmark whose predicted visibility is below this is treated as missing.
LANDMARK_MIN_VISIBILITY = 0.3
#: Face score threshold for weights that carry no calibrated one.
DEFAULT_CONF = 0.5
#: Candidates kept for NMS per image, best first (as ultralytics' ``max_nms``).
MAX_NMS_CANDIDATES = 30000
#: The close-up pass: canvas long side (pixels) and the share of it the image fills.
CLOSEUP_IMGSZ = 320
CLOSEUP_FILL = 0.5
#: the close-up pass keeps only faces at least this share of the image's height: smaller ones are
#: the main pass's to find (shrunk four times they are a few pixels, and what it finds there is
#: mostly not a face)
CLOSEUP_MIN_HEIGHT = 0.2
#: A photo darker than this (mean grey level, 0-255) in which nothing is found is looked at again with
#: its contrast equalised; chosen on WIDER training images (5.9 % of them are darker; see detect_photo)
PHOTO_DARK_LEVEL = 60
#: the int8 network of ``weights/NAME.safetensors`` is ``weights/NAME{INT8_SUFFIX}.xml`` and ``.bin``
#: (OpenVINO's model format: a graph and its tensors, no code), with a ``.json`` beside them naming the
#: fingerprint of the weights it was quantised from
INT8_SUFFIX = "-int8"
#: compiled copies of the network an OpenVINO detector keeps: one for the main pass's canvas, one for
#: the rest (the close-up pass's; see ``networks`` of :class:`vidface.onnx_runtime.OpenVinoRunner`)
PASS_NETWORKS = 2


def save_detector(model, path: Path, imgsz: int = 640, extra: dict | None = None) -> Path:
    """Write an ultralytics ``PoseModel`` as fp16 safetensors with its YAML in the metadata."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().cpu()
             for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "yaml": json.dumps(model.yaml),
        "kpt_shape": json.dumps(list(model.kpt_shape)),
        "names": json.dumps({0: "face"}),
        "imgsz": str(imgsz),
    }
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    return write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def read_detector_metadata(path: Path) -> dict:
    """The metadata of a vidface detector file, after checking it is one (no torch needed)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"detector weights not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"detector weights {path} are not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{path} is not a vidface detector (format {metadata.get('format')!r}, want {FORMAT!r})")
    return metadata


def load_pose_model(path: Path) -> tuple:
    """Build the network from the file's YAML and load its weights; returns ``(model, metadata)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    metadata = read_detector_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"detector weights {path} are not a readable safetensors file ({error})") from None
    ultralytics_offline()
    from ultralytics.nn.tasks import PoseModel

    kpt_shape = tuple(json.loads(metadata["kpt_shape"]))
    model = PoseModel(cfg=json.loads(metadata["yaml"]), nc=1, data_kpt_shape=kpt_shape, verbose=False)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise ModelError(f"detector weights {path} do not fit the network in its metadata: {error}") from None
    return model, metadata


def suppress(prediction: np.ndarray, conf: float, iou: float, max_det: int) -> list[np.ndarray]:
    """The network's raw output ``(B, 4 + 1 + 15, A)`` (centre-size boxes, face score, 5 × (x, y, visibility)
    per anchor) -> per image, rows ``(K, 6 + 15)`` (``x1 y1 x2 y2``, score, class 0, landmarks) with score
    above ``conf``, greedy NMS at IoU ``iou``, best first, at most ``max_det``.

    OpenCV's ``NMSBoxes`` keeps the same boxes as ultralytics' (torchvision's) NMS.
    """
    results = []
    for anchors in np.asarray(prediction, np.float32):
        rows = anchors.T
        rows = rows[rows[:, 4] > conf]
        rows = rows[np.argsort(-rows[:, 4], kind="stable")[:MAX_NMS_CANDIDATES]]
        if len(rows) == 0:
            results.append(np.zeros((0, 21), np.float32))
            continue
        corners = np.concatenate([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], axis=1)
        top_left_size = np.concatenate([corners[:, :2], rows[:, 2:4]], axis=1)
        kept = np.asarray(cv2.dnn.NMSBoxes(top_left_size.tolist(), rows[:, 4].tolist(), 0.0, iou), int).reshape(-1)
        kept = kept[:max_det]
        results.append(np.concatenate([corners[kept], rows[kept, 4:5], np.zeros((len(kept), 1), np.float32),
                                       rows[kept, 5:]], axis=1).astype(np.float32))
    return results


class FaceDetector:
    """Finds faces and their five landmarks in batches of BGR images.

    imgsz: the long side images are resized to before detection (pixels).
    conf: minimum face score (``None``: the threshold calibrated for these weights,
        stored in their metadata by ``vidface train calibrate-detector``); iou: NMS overlap threshold.
    closeups: also look at each image shrunk to a quarter of its ``imgsz`` size
        (``CLOSEUP_IMGSZ`` canvas, image in its middle half), and merge both passes
        by NMS. The network learnt from WIDER FACE, where faces are small, and misses
        faces that fill much of the picture (portraits, close-ups); shrunk, they
        look like what it knows; of its faces only those at least ``CLOSEUP_MIN_HEIGHT``
        of the image's height are kept. Costs about half more detector time (a small
        canvas uses the CPU less well).
    """

    def __init__(self, weights: Path, device="cpu", imgsz: int = 640,
                 conf: float | None = None, iou: float = 0.45, max_det: int = 300, half: bool | None = None,
                 closeups: bool = False, backend: str = "torch"):
        self.weights_path = Path(weights)
        self.metadata = read_detector_metadata(self.weights_path)
        if conf is None:
            conf = float(self.metadata.get("det_conf", DEFAULT_CONF))
        self.backend = backend
        # self.graph: the ONNX file the CPU engines run (None with PyTorch)
        self._onnx, self.model, self.graph = None, None, None
        if backend == "openvino-int8":
            from .onnx_runtime import require_cpu, runner_for

            require_cpu(backend, device)
            self.graph = quantised_graph_for(self.weights_path)
            if self.graph is None:
                raise ModelError(f"no int8 network made from {self.weights_path} (make it with `vidface train "
                                 f"quantise-detector {self.weights_path}`, or choose another --backend)")
            # the layers left float (the head) run in f32 (engine_precision): bf16 would round pixel coordinates
            self._onnx = runner_for(backend, self.graph, networks=PASS_NETWORKS)
            self.device, self.half = "cpu", False
        elif backend != "torch":
            from .embed import file_fingerprint
            from .onnx_runtime import graph_runner

            self._onnx, self.graph = graph_runner(backend, device, f"detector:{file_fingerprint(self.weights_path)}",
                                                  self._network_for_export, {0: "batch", 2: "height", 3: "width"},
                                                  networks=PASS_NETWORKS)
            self.device, self.half = "cpu", False
        else:
            import torch

            model, _ = load_pose_model(self.weights_path)
            self.device = torch.device(device)
            self.half = (self.device.type == "cuda") if half is None else half
            model = model.fuse().eval().to(self.device)
            self.model = model.half() if self.half else model.float()
        self.imgsz = int(math.ceil(imgsz / STRIDE) * STRIDE)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.closeups = closeups
        self._photo_detector = None  # see photo_detector

    def _network_for_export(self) -> tuple:
        """``(module, example input)`` for :func:`~vidface.onnx_runtime.cached_graph`: the fused network,
        returning only its predictions (ultralytics' eval mode returns ``(predictions, extras)``)."""
        import torch

        class Predictions(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, images):
                output = self.model(images)
                return output[0] if isinstance(output, (list, tuple)) else output

        model, _ = load_pose_model(self.weights_path)
        return Predictions(model.fuse().eval().float()), torch.zeros(1, 3, 320, 320)

    @property
    def settings_key(self) -> str:
        """What, besides the weights, changes this detector's answers (for caches)."""
        return f"{self.imgsz}:{self.conf}:{self.iou}:{'closeups' if self.closeups else 'single'}"

    @property
    def photo_settings_key(self) -> str:
        """:attr:`settings_key` for photos, which always get the close-up pass (``closeups=True``)."""
        return f"{self.imgsz}:{self.conf}:{self.iou}:closeups:dark{PHOTO_DARK_LEVEL}"

    def _letterbox(self, images: list[np.ndarray], imgsz: int, fill: float = 1.0
                   ) -> tuple[np.ndarray, list[float], list[tuple[int, int]]]:
        """Resize each image so its long side is ``imgsz * fill`` and paste it on one shared canvas.

        With ``fill`` 1 the image sits top-left; below 1 it sits in the middle of a
        frame ``1 / fill`` times its size. Returns the batch (``uint8 (B, 3, H, W)`` RGB),
        each image's scale and its ``(x, y)`` offset on the canvas in pixels.
        """
        scales, resized, offsets = [], [], []
        for image in images:
            height, width = image.shape[:2]
            scale = imgsz * fill / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation) if scale != 1 else image
            resized.append(image)
            scales.append(scale)
            offsets.append((round(image.shape[1] * (1 / fill - 1) / 2), round(image.shape[0] * (1 / fill - 1) / 2)))
        canvas_h = max(r.shape[0] + 2 * y for r, (_, y) in zip(resized, offsets))
        canvas_w = max(r.shape[1] + 2 * x for r, (x, _) in zip(resized, offsets))
        canvas_h, canvas_w = (int(math.ceil(v / STRIDE) * STRIDE) for v in (canvas_h, canvas_w))
        batch = np.full((len(images), canvas_h, canvas_w, 3), 114, np.uint8)
        for slot, image, (x, y) in zip(batch, resized, offsets):
            slot[y: y + image.shape[0], x: x + image.shape[1]] = image
        batch = np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2))  # BGR HWC -> RGB CHW
        return batch, scales, offsets

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, 3, H, W)`` canvas -> the network's raw output ``float32 (B, 20, A)``."""
        if self._onnx is not None:
            return self._onnx(batch.astype(np.float32) / np.float32(255.0))
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self.device, non_blocking=True)
            tensor = (tensor.half() if self.half else tensor.float()) / 255.0
            prediction = self.model(tensor)
            prediction = prediction[0] if isinstance(prediction, (list, tuple)) else prediction
            return prediction.float().cpu().numpy()

    def _predict(self, images: list[np.ndarray], imgsz: int, fill: float, min_score: float) -> list[np.ndarray]:
        """One pass: per image, NMS-ed rows ``(K, 6 + 15)`` (box, score, class, 5 × (x, y, visibility))
        scoring above ``min_score``, best first, in the image's own pixel coordinates."""
        batch, scales, offsets = self._letterbox(images, imgsz, fill)
        kept = suppress(self._forward(batch), min_score, self.iou, self.max_det)
        results = []
        for rows, scale, (x, y) in zip(kept, scales, offsets):
            rows[:, [0, 2]] = (rows[:, [0, 2]] - x) / scale
            rows[:, [1, 3]] = (rows[:, [1, 3]] - y) / scale
            rows[:, 6::3] = (rows[:, 6::3] - x) / scale
            rows[:, 7::3] = (rows[:, 7::3] - y) / scale
            results.append(rows)
        return results

    def _merge(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Both passes' rows for one image, best first, one box per face (see :func:`one_box_per_face`)."""
        return one_box_per_face(np.concatenate([first, second]), self.iou)[: self.max_det]

    def __call__(self, images: list[np.ndarray], closeups: bool | Sequence[bool] | None = None,
                 min_score: float | None = None) -> list[list[Detection]]:
        """Detections for each image of ``images`` (BGR ``uint8 (H, W, 3)``), best first.

        closeups: run the close-up pass for this call whatever the detector's own
        setting (photos: a portrait is a close-up), or one flag per image.
        min_score: also return the detections scoring between this and :attr:`conf` (the tracker
        continues its tracks on them, see :meth:`vidface.track.Tracker.update`); ``None``: ``conf``.
        """
        if not images:
            return []
        min_score = self.conf if min_score is None else min(min_score, self.conf)
        passes = self._predict(images, self.imgsz, 1.0, min_score)
        if closeups is None:
            closeups = self.closeups
        flags = [bool(closeups)] * len(images) if isinstance(closeups, (bool, np.bool_)) else [bool(c) for c in closeups]
        if len(flags) != len(images):
            raise ValueError(f"{len(flags)} close-up flags for {len(images)} images")
        shrunk_for = [index for index, flag in enumerate(flags) if flag]
        shrunk = {}
        if shrunk_for:
            found = self._predict([images[i] for i in shrunk_for], CLOSEUP_IMGSZ, CLOSEUP_FILL, min_score)
            for index, rows in zip(shrunk_for, found):
                shrunk[index] = rows[rows[:, 3] - rows[:, 1] >= CLOSEUP_MIN_HEIGHT * images[index].shape[0]]
        passes = [self._merge(rows, shrunk[index]) if index in shrunk else one_box_per_face(rows, self.iou)
                  for index, rows in enumerate(passes)]
        results = []
        for rows, image in zip(passes, images):
            height, width = image.shape[:2]
            faces = []
            for row in rows:
                box = np.clip(row[:4], 0, [width, height, width, height]).astype(np.float32)
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    continue
                points = row[6:].reshape(-1, 3)
                landmarks = None
                if len(points) == 5 and (points[:, 2] >= LANDMARK_MIN_VISIBILITY).all():
                    landmarks = points[:, :2].astype(np.float32)
                faces.append(Detection(box=box, score=float(row[4]), landmarks=landmarks))
            results.append(faces)
        return results


#: a box that lies this much (intersection over its own area) inside a better one is the same face
NESTED_OVERLAP = 0.7


def one_box_per_face(rows: np.ndarray, iou: float, nested: float = NESTED_OVERLAP) -> np.ndarray:
    """Greedy suppression over rows ``(K, >= 5)`` (``x1 y1 x2 y2 score ...``), best score first.

    A box is dropped when it overlaps a kept one by IoU ``>= iou`` (plain NMS) or
    when ``>= nested`` of the smaller box lies inside the kept one: a face found
    again, smaller, inside its own box (an eye-and-nose box, or the close-up and
    main passes disagreeing on its extent) is not a second face.
    """
    if len(rows) < 2:
        return rows
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    boxes = rows[:, :4].astype(np.float64)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    for index in range(len(rows)):
        if keep:
            kept = boxes[keep]
            width = np.clip(np.minimum(kept[:, 2], boxes[index, 2]) - np.maximum(kept[:, 0], boxes[index, 0]), 0, None)
            height = np.clip(np.minimum(kept[:, 3], boxes[index, 3]) - np.maximum(kept[:, 1], boxes[index, 1]), 0, None)
            overlap = width * height
            union = areas[keep] + areas[index] - overlap
            smaller = np.minimum(areas[keep], areas[index])
            if np.any(overlap >= iou * np.maximum(union, 1e-9)) or np.any(overlap >= nested * np.maximum(smaller, 1e-9)):
                continue
        keep.append(index)
    return rows[keep]


def photo_detector(detector):
    """The detector photos go through: ``detector`` itself, or where it runs the int8 network, the same
    weights and settings in f32 (made once, on the first photo). A gallery is embedded once and cached,
    so it need not carry a quantisation error into every later match, and f32 and int8 runs share it."""
    if not isinstance(detector, FaceDetector) or detector.backend != "openvino-int8":
        return detector
    if detector._photo_detector is None:
        detector._photo_detector = FaceDetector(detector.weights_path, "cpu", imgsz=detector.imgsz, conf=detector.conf,
                                                iou=detector.iou, max_det=detector.max_det,
                                                closeups=detector.closeups, backend="openvino")
    return detector._photo_detector


def detect_photo(detector, image: np.ndarray) -> tuple[list[Detection], bool]:
    """Faces of a photo (BGR ``uint8 (H, W, 3)``), best first, with the close-up pass (a portrait is a
    close-up), and whether they were found only in its contrast-equalised copy.

    A dark still (a night scene from a film) can hide a clear face from the detector. When nothing is
    found in a photo darker than :data:`PHOTO_DARK_LEVEL`, its lightness is equalised (CLAHE) and it is
    looked at again; of what that finds only faces of at least :data:`CLOSEUP_MIN_HEIGHT` of the photo's
    height are kept, a portrait's subject rather than what equalising makes of shadows. Boxes and
    landmarks are the photo's own (equalising moves no pixel), so faces are aligned from the photo as it
    is. On WIDER training photos with a face of at least a fifth of their height, darkened to a fifth of
    their brightness, the largest face was found in 119 of 275 and 160 with the second look; on the 387
    hard-negative training crops (their real faces painted out) it added no face to the 118 with none,
    and 14 to the 277 with none once darkened to a third. An int8 detector looks in f32
    (:func:`photo_detector`).
    """
    detector = photo_detector(detector)
    found = detector([image], closeups=True)[0]
    if found or float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean()) >= PHOTO_DARK_LEVEL:
        return found, False
    minimum_height = CLOSEUP_MIN_HEIGHT * image.shape[0]
    found = [face for face in detector([equalise_contrast(image)], closeups=True)[0]
             if face.height >= minimum_height]
    return found, bool(found)


def equalise_contrast(image: np.ndarray) -> np.ndarray:
    """BGR ``uint8`` image with its lightness equalised tile by tile (CLAHE on the L of Lab, OpenCV's
    usual 2.0 clip and 8 × 8 tiles); colours and geometry unchanged."""
    lightness, a, b = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2LAB))
    lightness = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lightness)
    return cv2.cvtColor(cv2.merge([lightness, a, b]), cv2.COLOR_LAB2BGR)


def export_checkpoint(checkpoint: Path, destination: Path, imgsz: int = 640, extra: dict | None = None) -> Path:
    """Convert a checkpoint that ``vidface train detector`` wrote (ultralytics format) to vidface's safetensors.

    Only for checkpoints this project trained itself: ultralytics' format is a pickle.
    """
    ultralytics_offline()
    from ultralytics import YOLO

    model = YOLO(str(checkpoint)).model
    if getattr(model, "kpt_shape", None) != [5, 3] and tuple(getattr(model, "kpt_shape", ())) != (5, 3):
        raise ModelError(f"{checkpoint} is not a 5-landmark face model (kpt_shape {getattr(model, 'kpt_shape', None)})")
    return save_detector(model.float(), destination, imgsz=imgsz, extra=extra)


def quantised_graph_for(weights: Path) -> Path | None:
    """The int8 network quantised from exactly these detector weights (``NAME-int8.xml`` and ``.bin``
    beside them, the ``.json`` naming their fingerprint), or ``None``: none there, or made from other
    weights (new weights need ``vidface train quantise-detector`` again)."""
    weights = Path(weights)
    graph = weights.with_name(weights.stem + INT8_SUFFIX + ".xml")
    try:
        source = json.loads(graph.with_suffix(".json").read_text()).get("source_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    from .embed import file_fingerprint

    complete = graph.is_file() and graph.with_suffix(".bin").is_file() and weights.is_file()
    return graph if complete and source == file_fingerprint(weights) else None


def update_detector_metadata(path: Path, **values) -> Path:
    """Rewrite a detector file with extra metadata (for example its calibrated ``det_conf``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    state = load_file(str(path))
    metadata.update({key: str(value) for key, value in values.items()})
    return write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))

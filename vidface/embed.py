"""Face embedding: EfficientNet-B0 features + embedding head, L2-normalised.

Input: aligned 112x112 BGR crops (see :mod:`vidface.align`). The 4x4x1280
feature map is reduced by a global depthwise convolution (as in
MobileFaceNet's GDC, which keeps where on the face a feature was seen),
then BN -> dropout -> linear -> BN gives the embedding.
Weights are safetensors with a JSON config beside them (``<name>.json``).
The network itself lives in :mod:`vidface.embed_net`; this module needs no
PyTorch when it runs on ONNX Runtime or OpenVINO (an ONNX graph exported once
from the weights and cached), which keeps a CPU run small.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .align import ALIGNED_SIZE, ARCFACE_TEMPLATE
from .errors import ModelError
from .files import write_atomically

FORMAT = "vidface-embedder/1"
#: the EfficientNet-B0 stage whose channel means the face/non-face head reads (192 channels, 4 x 4 at
#: 112 px): deep enough to see a face, before the layers that learn whose face it is
FACE_HEAD_STAGE = 6


@dataclass
class EmbedderConfig:
    """What a weights file needs beside it to be used correctly."""

    arch: str = "efficientnet_b0"
    input_size: int = ALIGNED_SIZE
    embedding_size: int = 512
    dropout: float = 0.2
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    color_order: str = "RGB"
    template: list[list[float]] = field(default_factory=lambda: ARCFACE_TEMPLATE.tolist())
    #: open-set threshold on cosine similarity recommended for these weights (``--match-threshold``)
    match_threshold: float = 0.4
    #: similarity of two tracks' mean embeddings at and above which they are one person (calibrated on
    #: people held out of training: above the most alike pair of different people's 4-face tracks);
    #: ``None``: tracks are never named after one another (see :class:`vidface.track.Tracker`)
    link_threshold: float | None = None
    #: a gallery photo whose best similarity to its person's other photos is below this is reported as
    #: unlike them (another person filed there, or a face too dark or turned to be of use); calibrated on
    #: people held out of training; ``None``: no such report
    photo_check_threshold: float | None = None
    #: mean raw embedding of the training crops, ``D`` floats subtracted before L2 normalisation;
    #: a constant component shared by all faces would otherwise inflate every cosine similarity
    centre: list[float] | None = None
    #: the face/non-face head: weights for the ``C`` channel means of the network's stage
    #: :data:`FACE_HEAD_STAGE`, then a bias; a track whose mean logit is above 0 is not a face (its
    #: threshold folded into the bias, calibrated on WIDER training images: ``vidface eval face-quality
    #: --store``); ``None``: no such judgement
    non_face_head: list[float] | None = None
    #: the head judges only faces at least this tall (pixels): below it, telling a face from a hand is
    #: the detector's business
    non_face_min_height: float = 32.0
    #: ``"luminance"``: each crop's brightness and contrast are set to :data:`CROP_LUMINANCE` (mean, spread
    #: of its grey levels) before the network sees it, so a dark or washed-out film still meets the gallery
    #: on the same terms as a lit portrait; ``None``: crops as they come
    crop_normalisation: str | None = None
    format: str = FORMAT


def config_path_for(weights: Path) -> Path:
    return weights.with_suffix(".json")


def update_embedder_config(weights: Path, **values) -> Path:
    """Change fields of the JSON config beside ``weights`` (for example ``match_threshold`` or ``centre``)."""
    config_file = config_path_for(Path(weights))
    config = json.loads(config_file.read_text())
    unknown = set(values) - set(EmbedderConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"not embedder config fields: {sorted(unknown)}")
    config.update(values)
    return write_atomically(config_file, lambda temporary: Path(temporary).write_text(json.dumps(config, indent=2) + "\n"))


def read_embedder_config(weights: Path) -> EmbedderConfig:
    """The JSON config beside ``weights``, after checking both files are what they claim (no torch needed)."""
    from safetensors import SafetensorError, safe_open

    weights = Path(weights)
    if not weights.is_file():
        raise ModelError(f"embedder weights not found: {weights}")
    config_file = config_path_for(weights)
    if not config_file.is_file():
        raise ModelError(f"embedder config not found: {config_file} (it must sit beside the weights)")
    try:
        config = EmbedderConfig(**json.loads(config_file.read_text()))
    except (ValueError, TypeError) as error:
        raise ModelError(f"embedder config {config_file} is malformed: {error}") from None
    if config.format != FORMAT:
        raise ModelError(f"{config_file} is not a vidface embedder config (format {config.format!r})")
    if config.crop_normalisation not in CROP_NORMALISATIONS:
        raise ModelError(f"{config_file}: unknown crop_normalisation {config.crop_normalisation!r} "
                         f"(known: {', '.join(str(n) for n in CROP_NORMALISATIONS)})")
    try:
        with safe_open(str(weights), framework="numpy") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"embedder weights {weights} are not a readable safetensors file ({error})") from None
    return config


#: grey-level mean and standard deviation (0-255) a crop is given under ``crop_normalisation="luminance"``
CROP_LUMINANCE = (128.0, 50.0)
CROP_NORMALISATIONS = (None, "luminance")


def normalise_luminance(batch: np.ndarray) -> np.ndarray:
    """``uint8 (N, S, S, 3)`` crops -> ``float32`` crops whose grey levels (channel mean) have the mean and
    spread of :data:`CROP_LUMINANCE`: one shift and gain per crop for all three channels, so the
    differences between channels scale with the contrast; clipped to 0-255."""
    pixels = batch.astype(np.float32)
    grey = pixels.mean(axis=3)
    mean = grey.mean(axis=(1, 2))[:, None, None, None]
    gain = CROP_LUMINANCE[1] / np.maximum(grey.std(axis=(1, 2)), 1.0)[:, None, None, None]
    return np.clip((pixels - mean) * gain + CROP_LUMINANCE[0], 0.0, 255.0)


def crops_to_batch(crops: list[np.ndarray] | np.ndarray, config: EmbedderConfig) -> np.ndarray:
    """Aligned BGR ``uint8 (N, S, S, 3)`` crops -> normalised ``float32 (N, 3, S, S)``."""
    batch = np.asarray(crops, dtype=np.uint8).reshape(-1, config.input_size, config.input_size, 3)
    if config.crop_normalisation == "luminance":
        batch = normalise_luminance(batch)
    if config.color_order == "RGB":
        batch = batch[..., ::-1]
    scale = 1.0 / (255.0 * np.asarray(config.std, np.float32))
    shift = -np.asarray(config.mean, np.float32) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) * scale[None, :, None, None] \
        + shift[None, :, None, None]


class FaceEmbedder:
    """Turns aligned crops into L2-normalised embeddings, in batches.

    flip: also embed the mirrored crop and average both (a little slower, a
    little more robust). backend: ``torch`` runs :class:`~vidface.embed_net.EmbedderNet`
    on ``device``; ``onnx`` / ``openvino`` run its exported graph on the CPU without PyTorch.
    """

    def __init__(self, weights: Path, device="cpu", batch_size: int = 64,
                 half: bool | None = None, flip: bool = False, backend: str = "torch"):
        self.weights_path = Path(weights)
        self.config = read_embedder_config(self.weights_path)
        self.backend = backend
        self.batch_size = batch_size
        self.flip = flip
        self.dim = self.config.embedding_size
        #: whether the network also reports how unlike a face each crop is (:meth:`embed_and_judge`)
        self.judges_faces = self.config.non_face_head is not None
        self._non_face_head = np.asarray(self.config.non_face_head, np.float64) if self.judges_faces else None
        self._centre = None
        if self.config.centre is not None:
            if len(self.config.centre) != self.dim:
                raise ModelError(f"embedder config {config_path_for(self.weights_path)}: centre has "
                                 f"{len(self.config.centre)} values, embeddings have {self.dim}")
            self._centre = np.asarray(self.config.centre, np.float32)
        # self.graph: the ONNX file the CPU engines run (None with PyTorch)
        self._onnx, self.net, self.graph = None, None, None
        if backend != "torch":
            from .onnx_runtime import graph_runner

            size = self.config.input_size

            def network():
                import torch

                from .embed_net import JudgingEmbedder, load_embedder_net

                net = load_embedder_net(self.weights_path)[0].eval().float()
                return (JudgingEmbedder(net) if self.judges_faces else net), torch.zeros(2, 3, size, size)

            graph_key = f"embedder:{file_fingerprint(self.weights_path)}" + (":judging" if self.judges_faces else "")
            self._onnx, self.graph = graph_runner(backend, device, graph_key, network, {0: "batch"})
            self.device, self.half = "cpu", False
        else:
            import torch

            from .embed_net import load_embedder_net

            net, _ = load_embedder_net(self.weights_path)
            self.device = torch.device(device)
            self.half = (self.device.type == "cuda") if half is None else half
            # channels-last suits EfficientNet's depthwise convolutions (about a third faster on CPU)
            net = net.eval().to(self.device, memory_format=torch.channels_last)
            self.net = net.half() if self.half else net

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights and their config (both change what the embeddings are)."""
        digest = hashlib.sha256(file_fingerprint(self.weights_path).encode())
        digest.update(json.dumps(asdict(self.config), sort_keys=True).encode())
        digest.update(str(self.flip).encode())
        return digest.hexdigest()[:16]

    def raw(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 network outputs, neither centred nor normalised."""
        return self._outputs(crops)[:, : self.dim]

    def embed_and_judge(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, D)`` float32 unit vectors and ``(N,)`` "not a face" logits (above 0: not a face, see
        :attr:`EmbedderConfig.non_face_head`), or ``None`` for the logits when these weights have no such head."""
        outputs = self._outputs(crops)
        vectors = unit_embeddings(outputs[:, : self.dim], self._centre)
        if not self.judges_faces:
            return vectors, None
        if not len(outputs):
            return vectors, np.zeros(0, np.float32)
        head = self._non_face_head
        stage = outputs[:, self.dim :].astype(np.float64)
        if stage.shape[1] != len(head) - 1:
            raise ModelError(f"embedder config {config_path_for(self.weights_path)}: non_face_head has "
                             f"{len(head) - 1} weights, the network's stage {FACE_HEAD_STAGE} {stage.shape[1]} channels")
        return vectors, (stage @ head[:-1] + head[-1]).astype(np.float32)

    def _outputs(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` raw embeddings, followed by the stage's ``C`` channel means when :attr:`judges_faces`."""
        outputs = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops_to_batch(crops[start : start + self.batch_size], self.config)
            if self.flip:  # the crops and their mirror images in one batch
                both = self._forward(np.concatenate([batch, batch[..., ::-1]]))
                vectors = (both[: len(batch)] + both[len(batch):]) / 2
            else:
                vectors = self._forward(batch)
            outputs.append(vectors)
        return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros((0, self.dim), np.float32)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S)`` float32 -> ``(B, D)`` float32 (``(B, D + C)`` when :attr:`judges_faces`)."""
        if self._onnx is not None:
            return np.asarray(self._onnx(np.ascontiguousarray(batch)), np.float32)
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, memory_format=torch.channels_last)
            tensor = tensor.half() if self.half else tensor
            output = self.net.embed_and_stage(tensor) if self.judges_faces else self.net(tensor)
            return output.float().cpu().numpy()

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 unit vectors for ``N`` aligned BGR crops."""
        return self.embed_and_judge(crops)[0]


def unit_embeddings(raw: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """``(N, D)`` raw network outputs -> float32 unit vectors, after subtracting ``centre`` (``(D,)``) if given."""
    vectors = raw if centre is None else raw - centre
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-30)).astype(np.float32)


def file_fingerprint(path: Path) -> str:
    """Short content hash of a model file, used to key caches. Hashed once per version of the file (its
    inode, size and modification time): loading a run's models asks for the same file's several times."""
    path = Path(path)
    status = path.stat()
    version = (str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns)
    if version not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[version] = digest.hexdigest()[:16]
    return _FINGERPRINTS[version]


_FINGERPRINTS: dict[tuple, str] = {}

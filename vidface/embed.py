"""Face embedding: EfficientNet-B0 features + embedding head, L2-normalised.

Input: aligned 112x112 BGR crops (see :mod:`vidface.align`). The 4x4x1280
feature map is reduced by a global depthwise convolution (as in
MobileFaceNet's GDC, which keeps where on the face a feature was seen),
then BN -> dropout -> linear -> BN gives the embedding.
Weights are safetensors with a JSON config beside them (``<name>.json``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .align import ALIGNED_SIZE, ARCFACE_TEMPLATE
from .errors import ModelError
from .files import write_atomically

FORMAT = "vidface-embedder/1"


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
    #: mean raw embedding of the training crops, ``D`` floats subtracted before L2 normalisation;
    #: a constant component shared by all faces would otherwise inflate every cosine similarity
    centre: list[float] | None = None
    format: str = FORMAT


class EmbedderNet(nn.Module):
    """``(B, 3, 112, 112)`` normalised RGB -> ``(B, D)`` embedding (not yet L2-normalised)."""

    def __init__(self, config: EmbedderConfig):
        super().__init__()
        from torchvision.models import efficientnet_b0

        if config.arch != "efficientnet_b0":
            raise ModelError(f"unknown embedder architecture {config.arch!r}")
        self.features = efficientnet_b0(weights=None).features
        channels = 1280
        spatial = -(-config.input_size // 32)  # ceil: 112 px -> 4x4 feature map
        self.pool = nn.Sequential(
            nn.Conv2d(channels, channels, spatial, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(channels, config.embedding_size, bias=False),
            nn.BatchNorm1d(config.embedding_size),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(images)))


def config_path_for(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_embedder(net: EmbedderNet, config: EmbedderConfig, weights: Path) -> Path:
    """Write ``weights`` (safetensors) and its JSON config atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    write_atomically(weights, lambda temporary: save_file(state, temporary, metadata={"format": FORMAT}))
    write_atomically(config_path_for(weights),
                     lambda temporary: Path(temporary).write_text(json.dumps(asdict(config), indent=2) + "\n"))
    return weights


def update_embedder_config(weights: Path, **values) -> Path:
    """Change fields of the JSON config beside ``weights`` (for example ``match_threshold`` or ``centre``)."""
    config_file = config_path_for(Path(weights))
    config = json.loads(config_file.read_text())
    unknown = set(values) - set(EmbedderConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"not embedder config fields: {sorted(unknown)}")
    config.update(values)
    return write_atomically(config_file, lambda temporary: Path(temporary).write_text(json.dumps(config, indent=2) + "\n"))


def load_embedder_net(weights: Path) -> tuple[EmbedderNet, EmbedderConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"embedder weights {weights} are not a readable safetensors file ({error})") from None
    net = EmbedderNet(config)
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as error:
        raise ModelError(f"embedder weights {weights} do not fit {config.arch}: {error}") from None
    return net, config


def crops_to_tensor(crops: list[np.ndarray] | np.ndarray, config: EmbedderConfig) -> torch.Tensor:
    """Aligned BGR ``uint8 (N, S, S, 3)`` crops -> normalised float ``(N, 3, S, S)``."""
    batch = np.ascontiguousarray(np.asarray(crops, dtype=np.uint8).reshape(-1, config.input_size, config.input_size, 3))
    if config.color_order == "RGB":
        batch = batch[..., ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float().div_(255.0)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (tensor - mean) / std


class FaceEmbedder:
    """Turns aligned crops into L2-normalised embeddings, in batches.

    flip: also embed the mirrored crop and average both (a little slower, a
    little more robust).
    """

    def __init__(self, weights: Path, device: torch.device | str = "cpu", batch_size: int = 64,
                 half: bool | None = None, flip: bool = False, backend: str = "torch"):
        net, self.config = load_embedder_net(Path(weights))
        self.device = torch.device(device)
        self.half = (self.device.type == "cuda") if half is None else half
        # channels-last suits EfficientNet's depthwise convolutions (about a third faster on CPU)
        net = net.eval().to(self.device, memory_format=torch.channels_last)
        self.net = net.half() if self.half else net
        self.backend = backend
        self._onnx = None
        if backend in ("onnx", "openvino"):
            from .onnx_runtime import cached_graph, runner_for

            if self.device.type != "cpu":
                raise ModelError(f"--backend {backend} runs on the CPU; use --device cpu (or --backend torch on a GPU)")
            size = self.config.input_size
            graph = cached_graph(net.float(), torch.zeros(2, 3, size, size),
                                 f"embedder:{file_fingerprint(Path(weights))}", {0: "batch"})
            self._onnx = runner_for(backend, graph)
        self.batch_size = batch_size
        self.flip = flip
        self.weights_path = Path(weights)
        self.dim = self.config.embedding_size
        self._centre = None
        if self.config.centre is not None:
            if len(self.config.centre) != self.dim:
                raise ModelError(f"embedder config {config_path_for(self.weights_path)}: centre has "
                                 f"{len(self.config.centre)} values, embeddings have {self.dim}")
            self._centre = torch.tensor(self.config.centre, dtype=torch.float32, device=self.device)

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights and their config (both change what the embeddings are)."""
        digest = hashlib.sha256(file_fingerprint(self.weights_path).encode())
        digest.update(json.dumps(asdict(self.config), sort_keys=True).encode())
        digest.update(str(self.flip).encode())
        return digest.hexdigest()[:16]

    @torch.inference_mode()
    def raw(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 network outputs, neither centred nor normalised."""
        outputs = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(crops), self.batch_size):
            tensor = crops_to_tensor(crops[start : start + self.batch_size], self.config)
            tensor = tensor.to(self.device, memory_format=torch.channels_last)
            tensor = tensor.half() if self.half else tensor
            if self.flip:  # the crops and their mirror images in one batch
                both = self._forward(torch.cat([tensor, torch.flip(tensor, dims=[3])]))
                vectors = (both[: len(tensor)] + both[len(tensor):]) / 2
            else:
                vectors = self._forward(tensor)
            outputs.append(vectors.cpu().numpy())
        return np.concatenate(outputs).astype(np.float32)

    def _forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(tensor.contiguous().numpy()))
        return self.net(tensor).float()

    @torch.inference_mode()
    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, D)`` float32 unit vectors for ``N`` aligned BGR crops."""
        vectors = torch.from_numpy(self.raw(crops))
        if self._centre is not None:
            vectors = vectors - self._centre.cpu()
        return nn.functional.normalize(vectors, dim=1, eps=1e-30).numpy()


def file_fingerprint(path: Path) -> str:
    """Short content hash of a model file, used to key caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]

"""The embedder's network in PyTorch: for training, exporting, and the ``--backend torch`` path.

The runtime (:mod:`vidface.embed`) imports this only when it runs PyTorch or
exports an ONNX graph, so ONNX Runtime and OpenVINO runs never load torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .embed import FACE_HEAD_STAGE, FORMAT, EmbedderConfig, config_path_for, crops_to_batch, read_embedder_config
from .errors import ModelError
from .files import write_atomically


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

    def stage_output(self, images: torch.Tensor, stage: int = FACE_HEAD_STAGE) -> torch.Tensor:
        """``(B, C, h, w)``: the output of ``features[stage]`` (what the face/non-face head reads the channel
        means of)."""
        return self.features[: stage + 1](images)

    def embed_and_stage(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, D + C)``: the embedding, then the channel means of :meth:`stage_output`, in one pass."""
        hidden = self.stage_output(images)
        embedding = self.head(self.pool(self.features[FACE_HEAD_STAGE + 1 :](hidden)))
        return torch.cat([embedding, hidden.mean(dim=(2, 3))], dim=1)


class JudgingEmbedder(nn.Module):
    """:meth:`EmbedderNet.embed_and_stage` as a module's forward, for exporting one graph with both."""

    def __init__(self, net: EmbedderNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed_and_stage(images)


def save_embedder(net: EmbedderNet, config: EmbedderConfig, weights: Path) -> Path:
    """Write ``weights`` (safetensors) and its JSON config atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    write_atomically(weights, lambda temporary: save_file(state, temporary, metadata={"format": FORMAT}))
    write_atomically(config_path_for(weights),
                     lambda temporary: Path(temporary).write_text(json.dumps(asdict(config), indent=2) + "\n"))
    return weights


def load_embedder_net(weights: Path) -> tuple["EmbedderNet", EmbedderConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(weights)
    config = read_embedder_config(weights)
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
    """Aligned BGR ``uint8 (N, S, S, 3)`` crops -> normalised float ``(N, 3, S, S)`` (see :func:`crops_to_batch`)."""
    return torch.from_numpy(crops_to_batch(crops, config))

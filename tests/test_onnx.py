"""ONNX Runtime gives the PyTorch answers: same boxes, same embeddings; the graph is exported once."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package")


def test_embedder_onnx_matches_torch(random_models):
    from vidface.embed import FaceEmbedder

    crops = list(np.random.default_rng(0).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8))
    reference = FaceEmbedder(random_models[1], "cpu", flip=True)(crops)
    onnx = FaceEmbedder(random_models[1], "cpu", flip=True, backend="onnx")
    assert np.abs(onnx(crops) - reference).max() < 1e-4
    assert np.abs(onnx(crops[:1]) - reference[:1]).max() < 1e-4, "any batch size"


def test_detector_onnx_matches_torch_on_any_canvas(random_models, tmp_path, monkeypatch):
    from vidface.detect import FaceDetector

    monkeypatch.setenv("VIDFACE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), rng.integers(0, 255, (480, 480, 3), dtype=np.uint8)]
    torch_detector = FaceDetector(random_models[0], "cpu", imgsz=320, conf=0.0001, closeups=True)
    onnx_detector = FaceDetector(random_models[0], "cpu", imgsz=320, conf=0.0001, closeups=True, backend="onnx")
    graphs = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    import torch

    for image in images:  # the network's raw output on canvases of different shapes, before thresholds and NMS
        tensor, _, _ = torch_detector._letterbox([image], 320)
        with torch.inference_mode():
            ours = torch_detector.model(tensor)[0].numpy()
        theirs = onnx_detector._onnx(tensor.numpy())
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-2 * max(1.0, np.abs(ours).max() / 100)
    with torch.inference_mode():
        assert len(onnx_detector(images)) == 2
    FaceDetector(random_models[0], "cpu", imgsz=320, backend="onnx")
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx")) == graphs and len(graphs) == 1, "exported once"


def test_openvino_reads_the_same_graph(random_models):
    pytest.importorskip("openvino", reason="OpenVINO is optional")
    from vidface.embed import FaceEmbedder

    crops = list(np.random.default_rng(2).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8))
    reference = FaceEmbedder(random_models[1], "cpu")(crops)
    # OpenVINO may compute in bfloat16 on CPUs that have it: the same direction, not the same bits
    cosine = (FaceEmbedder(random_models[1], "cpu", backend="openvino")(crops) * reference).sum(axis=1)
    assert cosine.min() > 0.999


def test_auto_engine_is_pytorch_on_a_gpu_and_an_unknown_engine_is_bad_usage():
    from vidface.errors import UsageError
    from vidface.pipeline import resolve_backend

    assert resolve_backend("auto", "cuda:0") == "torch"
    assert resolve_backend("auto", "cpu") in ("onnx", "openvino", "torch")
    with pytest.raises(UsageError):
        resolve_backend("tensorrt", "cpu")

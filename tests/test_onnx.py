"""ONNX Runtime and OpenVINO give the PyTorch answers (same boxes, same embeddings), the graph is exported
once, and a run on them never loads PyTorch or ultralytics."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import embedder_variant

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package")


def test_embedder_onnx_matches_torch(random_models):
    from vidface.embed import FaceEmbedder

    crops = list(np.random.default_rng(0).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8))
    reference = FaceEmbedder(random_models[1], "cpu", flip=True, backend="torch")(crops)
    onnx = FaceEmbedder(random_models[1], "cpu", flip=True, backend="onnx")
    assert np.abs(onnx(crops) - reference).max() < 1e-4
    assert np.abs(onnx(crops[:1]) - reference[:1]).max() < 1e-4, "any batch size"


def test_detector_onnx_matches_torch_on_any_canvas(random_models):
    from vidface.detect import FaceDetector

    graphs_folder = os.path.join(os.environ["VIDFACE_CACHE"], "onnx")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), rng.integers(0, 255, (480, 480, 3), dtype=np.uint8)]
    torch_detector = FaceDetector(random_models[0], "cpu", imgsz=320, conf=0.0001, closeups=True, backend="torch")
    onnx_detector = FaceDetector(random_models[0], "cpu", imgsz=320, conf=0.0001, closeups=True, backend="onnx")
    graphs = sorted(os.listdir(graphs_folder))
    for image in images:  # the network's raw output on canvases of different shapes, before thresholds and NMS
        batch, _, _ = torch_detector._letterbox([image], 320)
        ours, theirs = torch_detector._forward(batch), onnx_detector._forward(batch)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-2 * max(1.0, np.abs(ours).max() / 100)
    assert len(onnx_detector(images)) == 2
    FaceDetector(random_models[0], "cpu", imgsz=320, backend="onnx")
    assert sorted(os.listdir(graphs_folder)) == graphs and any(name.endswith(".onnx") for name in graphs), \
        "exported once"


def test_our_nms_keeps_what_ultralytics_keeps():
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from vidface.detect import suppress

    rng = np.random.default_rng(3)
    for _ in range(20):
        anchors = 400
        centres = rng.uniform(0, 640, (2, 2, anchors))
        sizes = rng.uniform(4, 120, (2, 2, anchors))
        scores = rng.uniform(0, 1, (2, 1, anchors))
        points = rng.uniform(0, 640, (2, 15, anchors))
        prediction = np.concatenate([centres, sizes, scores, points], axis=1).astype(np.float32)
        theirs = non_max_suppression(torch.from_numpy(prediction), 0.3, 0.45, nc=1, max_det=300)
        for ours, reference in zip(suppress(prediction, 0.3, 0.45, 300), theirs):
            assert ours.shape == reference.shape
            assert np.allclose(ours, reference.numpy(), atol=1e-3)


def test_openvino_reads_the_same_graph(random_models):
    pytest.importorskip("openvino", reason="OpenVINO is optional")
    from vidface.embed import FaceEmbedder

    crops = list(np.random.default_rng(2).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8))
    reference = FaceEmbedder(random_models[1], "cpu", backend="torch")(crops)
    # in f32, not the bfloat16 OpenVINO would pick on CPUs that have it
    assert np.abs(FaceEmbedder(random_models[1], "cpu", backend="openvino")(crops) - reference).max() < 1e-4
    # asked for bfloat16 (where the CPU has it): the same directions, not the same bits
    cosine = (FaceEmbedder(random_models[1], "cpu", backend="openvino-bf16")(crops) * reference).sum(axis=1)
    assert cosine.min() > 0.99


def test_openvino_keeps_its_compiled_networks_in_the_cache_and_loads_them_again(random_models):
    pytest.importorskip("openvino", reason="OpenVINO is optional")
    from vidface.embed import FaceEmbedder
    from vidface.gallery import default_cache_dir

    crops = list(np.random.default_rng(3).integers(0, 255, (2, 112, 112, 3), dtype=np.uint8))
    first = FaceEmbedder(random_models[1], "cpu", backend="openvino")(crops)
    blobs = sorted((default_cache_dir() / "openvino").glob("*"))
    assert blobs, "the compiled network is kept"
    again = FaceEmbedder(random_models[1], "cpu", backend="openvino")(crops)
    assert sorted((default_cache_dir() / "openvino").glob("*")) == blobs  # loaded, not compiled again
    assert np.array_equal(first, again)


def test_an_openvino_detector_runs_each_pass_on_its_own_compiled_network_with_the_same_answers(random_models):
    pytest.importorskip("openvino", reason="OpenVINO is optional")
    from vidface.detect import FaceDetector
    from vidface.onnx_runtime import OpenVinoRunner

    detector = FaceDetector(random_models[0], "cpu", imgsz=320, conf=0.0, closeups=True, backend="openvino")
    rng = np.random.default_rng(4)
    main_canvas, closeup_canvas, odd_canvas = (rng.random(shape, dtype=np.float32)
                                               for shape in ((2, 3, 192, 320), (2, 3, 96, 160), (1, 3, 64, 64)))
    one = OpenVinoRunner(detector.graph)  # a single network for every shape
    for canvas in (main_canvas, closeup_canvas, main_canvas, odd_canvas, closeup_canvas):
        assert np.array_equal(detector._onnx(canvas), one(canvas))
    # the first shape has a network of its own, every other shape shares the second
    assert len(detector._onnx._networks) == 2 and len(one._networks) == 1
    assert detector._onnx._network_for(main_canvas.shape) is not detector._onnx._network_for(closeup_canvas.shape)
    assert detector._onnx._network_for(odd_canvas.shape) is detector._onnx._network_for(closeup_canvas.shape)


def test_a_cpu_engine_run_never_loads_pytorch(random_models, tmp_path):
    from vidface.pipeline import AnnotateSettings, Models

    detector, embedder = random_models
    Models.load(AnnotateSettings(device="cpu", backend="onnx", detector=detector, embedder=embedder))  # exports
    script = (
        "import json, sys\n"
        "from vidface.pipeline import AnnotateSettings, Models\n"
        f"models = Models.load(AnnotateSettings(device='cpu', backend='onnx', detector={str(detector)!r}, "
        f"embedder={str(embedder)!r}))\n"
        "import numpy as np\n"
        "faces = models.detector([np.zeros((120, 160, 3), np.uint8)])\n"
        "vectors = models.embedder([np.zeros((112, 112, 3), np.uint8)])\n"
        "print(json.dumps({'loaded': sorted(m for m in ('torch', 'ultralytics') if m in sys.modules),"
        " 'dim': int(vectors.shape[1])}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=os.environ.copy(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "dim": 512}


def test_auto_engine_is_pytorch_on_a_gpu_and_an_unknown_engine_is_bad_usage():
    from vidface.errors import UsageError
    from vidface.pipeline import AUTO_ENGINES, resolve_backend

    assert resolve_backend("auto", "cuda:0") == "torch"
    assert resolve_backend("auto", "cpu") in (*AUTO_ENGINES, "torch")
    assert resolve_backend("openvino-bf16", "cpu") == "openvino-bf16"
    with pytest.raises(UsageError):
        resolve_backend("tensorrt", "cpu")


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_takes_bf16_on_a_cpu_that_computes_it_else_f32_and_never_the_int8_detector(
        monkeypatch, shipped_weights, has_bf16):
    from vidface import onnx_runtime
    from vidface.detect import quantised_graph_for
    from vidface.pipeline import resolve_backend

    if not onnx_runtime.engine_available("openvino"):
        pytest.skip("OpenVINO not installed")
    monkeypatch.setattr(onnx_runtime, "_CPU_BF16", has_bf16)
    assert quantised_graph_for(shipped_weights[0]) is not None, "the shipped int8 network is there to be passed over"
    assert resolve_backend("auto", "cpu") == ("openvino-bf16" if has_bf16 else "openvino")
    assert resolve_backend("openvino-int8", "cpu") == "openvino-int8"  # a named engine is taken as asked


@pytest.mark.parametrize("has_bf16", [True, False])
def test_commands_that_build_data_or_calibrate_compute_in_f32_whatever_the_cpu(monkeypatch, shipped_weights, has_bf16):
    from vidface import onnx_runtime
    from vidface.pipeline import Models
    from vidface.research.cli import _f32_settings

    monkeypatch.setattr(onnx_runtime, "_CPU_BF16", has_bf16)
    models = Models.load(_f32_settings(detector=shipped_weights[0], embedder=shipped_weights[1]))
    assert onnx_runtime.engine_precision(models.detector.backend, detector=True) == "f32"
    assert onnx_runtime.engine_precision(models.embedder.backend) == "f32"


def test_batch_size_left_to_the_device_is_small_on_the_cpu(random_models):
    from vidface.pipeline import CPU_BATCH_SIZE, AnnotateSettings, Models

    detector, embedder = random_models
    settings = AnnotateSettings(device="cpu", backend="torch", detector=detector, embedder=embedder)
    models = Models.load(settings)
    assert settings.resolved(models).batch_size == CPU_BATCH_SIZE
    assert AnnotateSettings(batch_size=5, detector=detector, embedder=embedder).resolved(models).batch_size == 5


def test_int8_keeps_scores_beside_pixel_coordinates(tmp_path):
    """The detector's output joins pixel coordinates (hundreds) and 0-1 scores; only convolutions and
    matrix products go to int8, so the scores survive the shared output."""
    import torch

    from vidface.onnx_runtime import OnnxRunner
    from vidface.research.train.quantise import quantised_graph

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, images):
            features = self.conv(images).mean(dim=(2, 3))
            return torch.cat([features[:, :2] * 300 + 320, torch.sigmoid(features[:, 2:])], dim=1)

    graph = tmp_path / "head.onnx"
    example = torch.rand(1, 3, 16, 16)
    torch.onnx.export(Head().eval(), example, str(graph), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(8)]
    quantised = quantised_graph(graph, batches, tmp_path / "head-int8.onnx")
    assert quantised == tmp_path / "head-int8.onnx" and quantised.exists()
    probe = rng.random((4, 3, 16, 16), dtype=np.float32)
    exact, approximate = OnnxRunner(graph)(probe), OnnxRunner(quantised)(probe)
    assert np.abs(approximate[:, 2:] - exact[:, 2:]).max() < 0.05
    assert np.abs(approximate[:, :2] - exact[:, :2]).max() < 0.05 * np.abs(exact[:, :2]).max()


def test_an_embedder_with_a_face_head_judges_each_crop_in_the_same_pass(random_models, tmp_path):
    import torch

    from vidface.embed import FaceEmbedder, crops_to_batch, update_embedder_config
    from vidface.embed_net import load_embedder_net

    weights = embedder_variant(random_models[1], tmp_path / "judging.safetensors")
    rng = np.random.default_rng(0)
    crops = list(rng.integers(0, 255, (5, 112, 112, 3), dtype=np.uint8))
    net, config = load_embedder_net(weights)
    with torch.inference_mode():
        stage = net.eval().embed_and_stage(torch.from_numpy(crops_to_batch(crops, config)))[:, 512:].numpy()
    assert stage.shape == (5, 192)
    # weights in the unit of these (random) features, so that every logit depends on them
    head = np.append(rng.normal(size=192) / np.abs(stage).max(), 0.5)
    expected = stage.astype(np.float64) @ head[:-1] + head[-1]
    assert np.ptp(expected) > 0.5
    update_embedder_config(weights, non_face_head=head.tolist())
    plain = FaceEmbedder(random_models[1], "cpu", backend="torch")
    assert plain.embed_and_judge(crops)[1] is None
    for backend in ("torch", "onnx"):
        embedder = FaceEmbedder(weights, "cpu", backend=backend)
        vectors, logits = embedder.embed_and_judge(crops)
        assert np.abs(vectors - plain(crops)).max() < 1e-4, "the head changes no embedding"
        assert np.abs(logits - expected).max() < 0.02 * np.ptp(expected), backend
        assert embedder.embed_and_judge([])[1].shape == (0,)


def test_luminance_normalisation_meets_dark_and_lit_copies_of_a_face_on_equal_terms(random_models, tmp_path):
    """A darkened copy of a crop is fed to the network as the crop itself (up to rounding), its colours kept."""
    from vidface.embed import CROP_LUMINANCE, EmbedderConfig, FaceEmbedder, crops_to_batch, normalise_luminance

    rng = np.random.default_rng(3)
    shade = rng.uniform(70, 190, (2, 112, 112, 1))
    lit = np.clip(shade + np.array([-12.0, 0.0, 15.0]) + rng.normal(0, 4, (2, 112, 112, 3)), 0, 255).astype(np.uint8)
    dark = (lit.astype(np.float32) * 0.35 + 5).round().astype(np.uint8)
    normalised = normalise_luminance(np.concatenate([lit, dark]))
    grey = normalised.mean(axis=3)
    assert np.allclose(grey.mean(axis=(1, 2)), CROP_LUMINANCE[0], atol=1.5)
    assert np.allclose(grey.std(axis=(1, 2)), CROP_LUMINANCE[1], atol=1.5)
    assert np.abs(normalised[:2] - normalised[2:]).mean() < 2.0
    blue = normalised[0, ..., 0] - normalised[0, ..., 2]
    original_blue = lit[0, ..., 0].astype(np.float32) - lit[0, ..., 2]
    assert np.corrcoef(blue.ravel(), original_blue.ravel())[0, 1] > 0.99, "colour kept"

    plain = EmbedderConfig()
    assert not np.allclose(crops_to_batch(lit, plain), crops_to_batch(dark, plain), atol=0.1)
    weights = embedder_variant(random_models[1], tmp_path / "normalising.safetensors", crop_normalisation="luminance")
    embedder = FaceEmbedder(weights, "cpu", backend="torch")
    cosine = (embedder(list(lit)) * embedder(list(dark))).sum(axis=1)
    assert cosine.min() > 0.98
    assert FaceEmbedder(random_models[1], "cpu", backend="torch").fingerprint != embedder.fingerprint


def test_an_unknown_crop_normalisation_is_a_model_error(random_models, tmp_path):
    from vidface.embed import read_embedder_config
    from vidface.errors import ModelError

    weights = embedder_variant(random_models[1], tmp_path / "odd.safetensors", crop_normalisation="sepia")
    with pytest.raises(ModelError, match="crop_normalisation 'sepia'"):
        read_embedder_config(weights)


def test_eval_backends_times_every_engine_in_rounds_and_checks_it_against_pytorch(shipped_weights):
    from pathlib import Path

    from vidface.pipeline import AnnotateSettings
    from vidface.research.evaluation.backends import compare_engines

    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    settings = AnnotateSettings(device="cpu", detector=shipped_weights[0], embedder=shipped_weights[1])
    lines = []
    rows = compare_engines(Path(__file__).resolve().parents[1] / "samples" / "demo.mp4", settings, frames=8,
                           log=lines.append, repeat=2)
    by_name = {row.engine: row for row in rows}
    assert {"pytorch eager", "onnxruntime fp32", "openvino f32",
            "openvino-int8 (shipped NNCF detector, f32 embedder)"} <= set(by_name)
    assert len(lines) == len(rows), "each engine is checked once, in the first round"
    for name in ("onnxruntime fp32", "openvino f32"):
        assert by_name[name].faces_agree == 1.0 and by_name[name].embedding_cosine_min > 0.999
    shipped = by_name["openvino-int8 (shipped NNCF detector, f32 embedder)"]
    assert shipped.faces_agree >= 0.9 and shipped.embedding_cosine_min > 0.99, "int8 detector, f32 embedder"
    assert all(row.detect_fps > 0 and row.embed_crops_per_s > 0 for row in rows)
    assert all("over 2 rounds" in row.note for row in rows)

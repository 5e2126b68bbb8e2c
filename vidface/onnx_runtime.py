"""ONNX Runtime and OpenVINO inference on the CPU for the detector and the embedder.

Our safetensors weights stay the source of truth: the ONNX graph is
exported from them at first use and cached under the cache folder, keyed by
the weights' fingerprint (new weights, new graph; nothing stale). The
exported graph takes any batch size and, for the detector, any canvas size.
Once a graph is cached, running it needs neither PyTorch nor ultralytics: only
the export imports them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ModelError
from .files import write_atomically

#: bump when the export itself changes (opset, wrapper), so old cached graphs are not reused
EXPORT_VERSION = "2"
#: inference engines; all but ``torch`` run an exported ONNX graph on the CPU. ``openvino-bf16`` lets
#: OpenVINO compute in bfloat16 (about twice as fast on CPUs with AVX-512 BF16 or AMX; a few detections
#: near the score threshold come out differently, see ``OpenVinoRunner``)
BACKENDS = ("torch", "onnx", "openvino", "openvino-bf16")
#: the Python package each engine needs
ENGINE_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}


def engine_available(name: str) -> bool:
    """Whether the package behind an engine is installed."""
    import importlib.util

    return importlib.util.find_spec(ENGINE_PACKAGES[name]) is not None


def runner_for(engine: str, graph: Path):
    """The CPU runner of ``graph`` for ``engine`` (any of :data:`BACKENDS` but ``torch``)."""
    if engine.startswith("openvino"):
        return OpenVinoRunner(graph, precision="bf16" if engine == "openvino-bf16" else "f32")
    return OnnxRunner(graph)


def default_threads() -> int:
    """Threads for a CPU engine: PyTorch's setting when it is loaded (``--threads`` sets it), else the CPUs we may use."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cached_graph(key: str, network: Callable[[], tuple], dynamic: dict[int, str]) -> Path:
    """The ONNX file for ``key`` (input ``input``, output ``output``), exported once.

    ``network()`` returns ``(torch module, example input)``; it is called (and
    PyTorch imported) only when the graph is not cached yet.
    """
    from .gallery import default_cache_dir

    digest = hashlib.sha256(f"{EXPORT_VERSION}:{key}".encode()).hexdigest()[:20]
    path = default_cache_dir() / "onnx" / f"{digest}.onnx"
    if path.is_file():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    net, example = network()

    def export(temporary: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), temporary, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": dynamic, "output": {0: "batch"}}, opset_version=17,
                              dynamo=False)

    try:
        write_atomically(path, export)
    except (ImportError, RuntimeError, torch.onnx.OnnxExporterError) as error:
        raise ModelError(f"cannot export the model to ONNX ({error}); use --backend torch") from None
    return path


def graph_runner(engine: str, device, key: str, network: Callable[[], tuple], dynamic: dict[int, str]) -> tuple:
    """``(runner, graph path)`` for a network run on ``engine``: the graph cached for ``key`` (exported by
    ``network()`` at first use, see :func:`cached_graph`). These engines run on the CPU only."""
    if str(device) != "cpu":
        raise ModelError(f"--backend {engine} runs on the CPU; use --device cpu (or --backend torch on a GPU)")
    graph = cached_graph(key, network, dynamic)
    return runner_for(engine, graph), graph


class OnnxRunner:
    """An ONNX Runtime session on the CPU: ``runner(array) -> array``."""

    def __init__(self, graph: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


class OpenVinoRunner:
    """An OpenVINO CPU model with :class:`OnnxRunner`'s interface (it reads the same ONNX graph).

    precision: OpenVINO's inference precision; on CPUs with AVX-512 BF16 or AMX it
    would otherwise pick bfloat16, which moved a few detections near the score
    threshold (videofaceid found 99.7 -> 99.5 %); ``f32`` keeps PyTorch's answers.
    """

    def __init__(self, graph: Path, threads: int | None = None, precision: str = "f32"):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or default_threads(), "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]

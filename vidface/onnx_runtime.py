"""ONNX Runtime and OpenVINO inference on the CPU for the detector and the embedder.

Our safetensors weights stay the source of truth: the ONNX graph is
exported from them at first use and cached under the cache folder, keyed by
the weights' fingerprint (new weights, new graph; nothing stale). The
exported graph takes any batch size and, for the detector, any canvas size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .files import write_atomically

#: bump when the export itself changes (opset, wrapper), so old cached graphs are not reused
EXPORT_VERSION = "1"
BACKENDS = ("torch", "onnx", "openvino")


def engine_available(name: str) -> bool:
    """Whether the package behind an engine (``onnx``: onnxruntime, ``openvino``) is installed."""
    import importlib.util

    if name == "torch":
        return True
    return importlib.util.find_spec("onnxruntime" if name == "onnx" else name) is not None


def runner_for(engine: str, graph: Path):
    """The CPU runner of ``graph`` for ``engine`` (``onnx`` or ``openvino``)."""
    return OpenVinoRunner(graph) if engine == "openvino" else OnnxRunner(graph)


def cached_graph(net: torch.nn.Module, example: torch.Tensor, key: str, dynamic: dict[int, str]) -> Path:
    """The ONNX file of ``net`` (exported once per ``key``): input ``input``, output ``output``."""
    from .gallery import default_cache_dir

    digest = hashlib.sha256(f"{EXPORT_VERSION}:{key}:{torch.__version__}".encode()).hexdigest()[:20]
    path = default_cache_dir() / "onnx" / f"{digest}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

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


class OnnxRunner:
    """An ONNX Runtime session on the CPU: ``runner(array) -> array``."""

    def __init__(self, graph: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


class FirstOutput(torch.nn.Module):
    """ultralytics' network returns ``(predictions, extras)`` in eval mode; the graph keeps the predictions."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        return output[0] if isinstance(output, (list, tuple)) else output


class OpenVinoRunner:
    """An OpenVINO CPU model with :class:`OnnxRunner`'s interface (it reads the same ONNX graph)."""

    def __init__(self, graph: Path, threads: int | None = None):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]

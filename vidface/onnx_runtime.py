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
#: near the score threshold come out differently, see ``OpenVinoRunner``; ``--backend auto`` takes it on such CPUs).
#: ``openvino-int8`` runs the detector's int8 network shipped beside its weights (about 1.2 times the f32
#: network's speed on a CPU with VNNI; :func:`vidface.detect.quantised_graph_for`) and the embedder in f32
BACKENDS = ("torch", "onnx", "openvino", "openvino-bf16", "openvino-int8")
#: the Python package each engine needs
ENGINE_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino",
                   "openvino-int8": "openvino"}


def engine_available(name: str) -> bool:
    """Whether the package behind an engine is installed."""
    import importlib.util

    return importlib.util.find_spec(ENGINE_PACKAGES[name]) is not None


def engine_precision(engine: str, detector: bool = False) -> str:
    """The arithmetic an engine computes in: ``bf16``, ``int8`` (``openvino-int8``'s detector; its
    embedder computes in f32) or ``f32`` (the f32 engines give the same answers)."""
    if engine == "openvino-bf16":
        return "bf16"
    return "int8" if detector and engine == "openvino-int8" else "f32"


def cpu_computes_bf16() -> bool:
    """Whether OpenVINO can compute in bfloat16 on this CPU (AVX-512 BF16 or AMX); False without OpenVINO."""
    global _CPU_BF16
    if _CPU_BF16 is None:
        try:
            import openvino as ov

            _CPU_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        except (ImportError, RuntimeError):
            _CPU_BF16 = False
    return _CPU_BF16


_CPU_BF16: bool | None = None


def runner_for(engine: str, graph: Path, networks: int = 1):
    """The CPU runner of ``graph`` for ``engine`` (any of :data:`BACKENDS` but ``torch``); ``networks``: see
    :class:`OpenVinoRunner` (ONNX Runtime has no such cost)."""
    if engine.startswith("openvino"):
        return OpenVinoRunner(graph, precision=engine_precision(engine), networks=networks)
    return OnnxRunner(graph)


def available_cpus() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """Threads for a CPU engine: PyTorch's setting when it is loaded (``--threads`` sets it), else the CPUs we may use."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    return available_cpus()


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


def require_cpu(engine: str, device) -> None:
    """The engines but ``torch`` run on the CPU only: a model error on any other device."""
    if str(device) != "cpu":
        raise ModelError(f"--backend {engine} runs on the CPU; use --device cpu (or --backend torch on a GPU)")


def graph_runner(engine: str, device, key: str, network: Callable[[], tuple], dynamic: dict[int, str],
                 networks: int = 1) -> tuple:
    """``(runner, graph path)`` for a network run on ``engine``: the graph cached for ``key`` (exported by
    ``network()`` at first use, see :func:`cached_graph`). These engines run on the CPU only."""
    require_cpu(engine, device)
    graph = cached_graph(key, network, dynamic)
    return runner_for(engine, graph, networks), graph


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

    precision: OpenVINO's inference precision, always set: on CPUs with AVX-512 BF16 or AMX
    OpenVINO would pick bfloat16 by itself. ``f32`` keeps PyTorch's answers; ``bf16`` moves
    scores by up to about 0.005 and boxes by a pixel or two (``--backend auto`` asks for it
    where the CPU has it; the tracker's weak detections keep the faces near the threshold).

    networks: how many compiled copies of the network to keep: the first ``networks - 1`` input
    shapes seen get one each, every other shape shares the last. A compiled network takes any
    shape but plans its memory for the shape it last ran: the detector feeds it two in turn (the
    main and the close-up canvas), and a copy for each took the int8 detector's time for both
    passes of two 720p frames from 27.9 to 24.5 ms a frame (2 cores) for 13 MB; same answers.
    (A network compiled for one static shape was faster still, 22 ms, but cost 150 MB more.)
    """

    def __init__(self, graph: Path, threads: int | None = None, precision: str = "f32", networks: int = 1):
        import openvino as ov

        from .gallery import default_cache_dir

        self.graph = Path(graph)
        self._core = ov.Core()
        # compiled networks are kept beside the graphs (OpenVINO's own blobs, keyed by graph, settings and
        # OpenVINO's version): later runs load them instead of compiling, which was most of their start-up
        self._config = {"INFERENCE_NUM_THREADS": threads or default_threads(), "INFERENCE_PRECISION_HINT": precision,
                        "CACHE_DIR": str(default_cache_dir() / "openvino")}
        self._networks = [self._compile()]
        self._max_networks = max(1, networks)
        self._network_of_shape: dict[tuple, int] = {}

    def _compile(self):
        try:
            return self._core.compile_model(str(self.graph), "CPU", self._config)
        except RuntimeError as error:  # a damaged or truncated model file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"OpenVINO cannot load {self.graph} ({reason}); use another --backend") from None

    def _network_for(self, shape: tuple):
        """The compiled copy that runs inputs of ``shape`` (see ``networks``), compiled when first needed."""
        index = self._network_of_shape.get(shape)
        if index is None:
            index = min(len(self._network_of_shape), self._max_networks - 1)
            if index < self._max_networks - 1:
                self._network_of_shape[shape] = index
        while len(self._networks) <= index:
            self._networks.append(self._compile())
        return self._networks[index]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._network_for(batch.shape)(batch)[0]

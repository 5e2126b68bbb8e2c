"""Train vidface's face detector: YOLOv8n-pose with one class and 5 keypoints.

The network is built from ultralytics' own ``yolov8-pose.yaml`` (scale n) and
trained from scratch (no COCO checkpoint can be fetched here) with
ultralytics' trainer on the data set made by :mod:`vidface.train.widerface_data`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ...offline import load_ultralytics
from ...onnx_runtime import available_cpus


@dataclass
class DetectorRecipe:
    """Training settings; the defaults are the recipe of the shipped weights."""

    epochs: int = 300
    imgsz: int = 640
    batch: int = 32
    #: "auto": ultralytics picks the optimizer and its rate from the schedule's length (AdamW at 0.002 here)
    #: and ignores ``lr0``; a named optimizer takes ``lr0``
    optimizer: str = "auto"
    lr0: float = 0.01
    warmup_epochs: float = 3.0
    close_mosaic: int = 15
    mosaic: float = 1.0
    mixup: float = 0.0
    scale: float = 0.5
    translate: float = 0.1
    degrees: float = 0.0
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    pose: float = 12.0
    kobj: float = 1.0
    patience: int = 0
    seed: int = 0


def use_cpu_threads(threads: int) -> None:
    """Make ultralytics' trainer compute with ``threads`` CPU threads. It sets PyTorch's to its
    ``NUM_THREADS`` when it picks the CPU, which is one fewer than the CPUs (for its data-loading
    processes, which it then turns off on the CPU): on 2 cores, one thread. Profiled there, data
    loading was 3 % of a step, the rest forward and backward passes."""
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = max(1, int(threads))


def train_detector(
    data_yaml: Path,
    run_dir: Path,
    recipe: DetectorRecipe,
    device: str = "cpu",
    workers: int = 2,
    resume: bool = False,
    time_hours: float | None = None,
    init: Path | None = None,
    threads: int | None = None,
) -> Path:
    """Train (or resume, or start a new schedule from ``init``'s weights); return the best checkpoint.

    threads: PyTorch's threads on the CPU (``None``: every CPU this process may use).
    """
    ultralytics = load_ultralytics()
    use_cpu_threads(threads or available_cpus())
    last = run_dir / "weights" / "last.pt"
    if resume and last.exists():
        model = ultralytics.YOLO(str(last))
        # the path, not True: ultralytics then takes the data set from the checkpoint and accepts one kept
        # without its optimizer state (moments start afresh; weights, EMA and schedule position are kept)
        model.train(resume=str(last), device=device, workers=workers)
    else:
        model = ultralytics.YOLO(str(init) if init else "yolov8n-pose.yaml")
        settings = asdict(recipe)
        if time_hours:
            settings["time"] = time_hours
        model.train(
            data=str(data_yaml),
            project=str(run_dir.parent.resolve()),
            name=run_dir.name,
            exist_ok=True,
            device=device,
            workers=workers,
            pretrained=init is not None,
            plots=False,
            amp=device != "cpu",
            cos_lr=True,
            **settings,
        )
    return run_dir / "weights" / "best.pt"


def export_detector(checkpoint: Path, destination: Path) -> Path:
    """Copy a trained checkpoint (optimizer already stripped by ultralytics) into ``weights/``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_suffix(".tmp")
    shutil.copyfile(checkpoint, temporary)
    temporary.replace(destination)
    return destination

"""Equal work against insightface on the same machine, in the same run (``vidface eval peers``).

insightface's usual CPU pipeline — SCRFD-500M detection at 640 and a
MobileFaceNet embedding of every face, on every 5th frame — against
``vidface annotate --frame-skip 4 --no-video`` (detection on every 5th frame,
tracks carried between, the log written). Each runs as its own process,
one after the other, and is measured from outside: wall time, CPU time
(user + system) and peak resident memory.

insightface comes from its own virtual environment (``--peer-python``): its
dependencies differ from ours. Its detector is the SCRFD-500M file of
``../shared/data/models``. Its MobileFaceNet (``w600k_mbf``) cannot be
fetched here, so the peer runs the same architecture (insightface's
``arcface_torch`` MBF: blocks 1-4-6-2, width scale 2, 512-d) exported from
random weights: the same computation, hence the same time, though its
answers mean nothing. Timing only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PEER_SCRIPT = r'''
import json, sys, time
import cv2, numpy as np
from insightface.model_zoo.scrfd import SCRFD
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils import face_align

video, detector_file, recogniser_file, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
detector = SCRFD(detector_file)
detector.prepare(-1, input_size=(640, 640), det_thresh=0.5)
recogniser = ArcFaceONNX(recogniser_file)
recogniser.prepare(-1)
startup = time.perf_counter() - started
capture = cv2.VideoCapture(video)
frames = faces = 0
while True:
    ok, image = capture.read()
    if not ok:
        break
    if frames % every == 0:
        boxes, points = detector.detect(image, input_size=(640, 640))
        for landmarks in points if points is not None else []:
            crop = face_align.norm_crop(image, landmark=landmarks, image_size=112)
            recogniser.get_feat(crop)
            faces += 1
    frames += 1
print(json.dumps({"frames": frames, "faces": faces, "startup_s": startup}))
'''


@dataclass
class ProcessCost:
    """What one process took: wall seconds, CPU seconds (user + system), peak resident MiB."""

    name: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    detail: dict


def _high_water_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (``VmHWM``, MiB), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(name: str, command: list[str], **kwargs) -> ProcessCost:
    """Run ``command`` to the end: wall and CPU time from the kernel (``wait4``), peak memory from
    ``/proc/PID/status`` while it runs (``ru_maxrss`` of a forked child would also count its parent's
    pages from before ``exec``)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, **kwargs)
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _high_water_mb(process.pid) or 0.0)
            time.sleep(0.02)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {err.strip().splitlines()[-1:] or out[-200:]}")
    try:
        detail = json.loads(out)
    except ValueError:
        lines = [line for line in out.splitlines() if line.startswith("{")]
        detail = json.loads(lines[-1]) if lines else {}
    return ProcessCost(name, round(wall, 2), round(usage.ru_utime + usage.ru_stime, 2), round(peak, 1), detail)


def mobilefacenet_graph(path: Path) -> Path:
    """insightface's MBF architecture (random weights) as ONNX, for timing the peer's recogniser."""
    if path.is_file():
        return path
    import torch
    from torch import nn

    def conv(c_in, c_out, kernel=1, stride=1, padding=0, groups=1, act=True):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        return nn.Sequential(*layers, nn.PReLU(c_out)) if act else nn.Sequential(*layers)

    class DepthWise(nn.Module):
        def __init__(self, c_in, c_out, groups, stride, residual):
            super().__init__()
            self.residual = residual
            self.layers = nn.Sequential(conv(c_in, groups), conv(groups, groups, 3, stride, 1, groups=groups),
                                        conv(groups, c_out, act=False))

        def forward(self, x):
            return x + self.layers(x) if self.residual else self.layers(x)

    def residual(channels, blocks, groups):
        return nn.Sequential(*[DepthWise(channels, channels, groups, 1, True) for _ in range(blocks)])

    scale, blocks = 2, (1, 4, 6, 2)
    net = nn.Sequential(
        conv(3, 64 * scale, 3, 2, 1),
        conv(64 * scale, 64 * scale, 3, 1, 1, groups=64),
        DepthWise(64 * scale, 64 * scale, 128, 2, False), residual(64 * scale, blocks[1], 128),
        DepthWise(64 * scale, 128 * scale, 256, 2, False), residual(128 * scale, blocks[2], 256),
        DepthWise(128 * scale, 128 * scale, 512, 2, False), residual(128 * scale, blocks[3], 256),
        conv(128 * scale, 512), conv(512, 512, 7, 1, 0, groups=512, act=False),
        nn.Flatten(), nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512),
    ).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["data"], output_names=["fc1"],
                      dynamic_axes={"data": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def median_ratios(pairs: list[list["ProcessCost"]]) -> dict[str, float]:
    """vidface over insightface for wall time, CPU time and peak memory: the median over ``[peer, ours]``
    pairs of runs (one machine's load moves both by a lot from run to run; the median of pairs taken
    one after the other is what a claim can rest on)."""
    import statistics

    return {measure: statistics.median(getattr(ours, measure) / getattr(peer, measure) for peer, ours in pairs)
            for measure in ("wall_s", "cpu_s", "peak_mb")}


def compare_with_insightface(video: Path, gallery: Path, peer_python: str, scrfd: Path, work: Path,
                             every: int = 5, backend: str = "auto", extra_args: tuple[str, ...] = ()
                             ) -> list[ProcessCost]:
    """insightface, then vidface, each on every ``every``-th frame of ``video`` (see the module docstring)."""
    recogniser = mobilefacenet_graph(work / "mbf-architecture.onnx")
    script = work / "insightface_run.py"
    script.write_text(PEER_SCRIPT)
    peer = measure("insightface (SCRFD-500M + MobileFaceNet, onnxruntime)",
                   [peer_python, str(script), str(video), str(scrfd), str(recogniser), str(every)])
    # both sides start from ready models: the gallery is cached, for the engine the run uses (its cache is
    # per precision; built for another, the measured run would embed the gallery again)
    subprocess.run([sys.executable, "-m", "vidface", "gallery", "build", str(gallery), "--backend", backend],
                   check=True, capture_output=True)
    log = work / "vidface-run.json"
    ours = measure("vidface annotate --no-video", [sys.executable, "-m", "vidface", "annotate", str(video), "--gallery",
                                                   str(gallery), "--frame-skip", str(every - 1), "--no-video", "--log",
                                                   str(log), "--overwrite", "--quiet", "--json", "--backend", backend,
                                                   *extra_args])
    return [peer, ours]

"""Choosing the compute device from a user's ``--device`` string."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import DeviceError, UsageError


def _cuda_may_exist() -> bool:
    """False when this machine plainly has no NVIDIA GPU, so ``auto`` need not load PyTorch to find out."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    return True


def resolve_device(name: str = "auto") -> str:
    """``"cpu"`` or ``"cuda:N"``: ``auto`` picks the first CUDA GPU when there is one, else the CPU.

    ``cuda`` / ``cuda:N`` raise :class:`DeviceError` when that GPU is absent.
    PyTorch is imported only to look for a GPU that may be there.
    """
    name = (name or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not _cuda_may_exist()):
        return "cpu"
    if name == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:") or name.isdigit():
        suffix = name.split(":", 1)[1] if ":" in name else name if name.isdigit() else "0"
        if not suffix.isdigit():
            raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
        index = int(suffix)
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return f"cuda:{index}"
    raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")

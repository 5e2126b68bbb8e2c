"""Choosing the compute device from a user's ``--device`` string."""

from __future__ import annotations

import torch

from .errors import DeviceError, UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU.

    ``cuda`` / ``cuda:N`` raise :class:`DeviceError` when that GPU is absent.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:") or name.isdigit():
        suffix = name.split(":", 1)[1] if ":" in name else name if name.isdigit() else "0"
        if not suffix.isdigit():
            raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
        index = int(suffix)
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(f"cuda:{index}")
    raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")

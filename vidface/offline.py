"""Keep ultralytics from reaching the network.

vidface never downloads anything at run time. ultralytics would otherwise
try to: fonts for its plots, a checkpoint for its AMP self-test, pip update
checks and usage analytics. :func:`ultralytics_offline` must run before any
other ultralytics import; every module of vidface that uses ultralytics
imports it through :func:`load_ultralytics`.
"""

from __future__ import annotations

import os
from types import ModuleType

_configured = False


def ultralytics_offline() -> None:
    global _configured
    if _configured:
        return
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.model as engine_model
    import ultralytics.engine.trainer as trainer
    import ultralytics.utils.checks as checks

    def no_font(font: str = "Arial.ttf"):
        return None

    def no_update_check() -> bool:
        return False

    def amp_without_download(model) -> bool:
        # ultralytics' AMP self-test loads a downloaded checkpoint; trust AMP on CUDA instead.
        return next(model.parameters()).device.type == "cuda"

    checks.check_font = no_font
    data_utils.check_font = no_font
    checks.check_pip_update_available = no_update_check
    engine_model.checks.check_pip_update_available = no_update_check
    trainer.check_amp = amp_without_download
    try:
        import ultralytics.utils.plotting as plotting

        plotting.check_font = no_font
    except ImportError:  # pragma: no cover - plotting needs matplotlib
        pass
    _configured = True


def load_ultralytics() -> ModuleType:
    """Import ``ultralytics`` with the network switched off."""
    ultralytics_offline()
    import ultralytics

    return ultralytics

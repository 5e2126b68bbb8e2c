"""Atomic file output: write under a hidden temporary name beside the target, then rename.

A reader (or a cron job's next run) never sees a half-written file under the
final name, and a failure leaves the previous file, if any, untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomically(path: Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, then rename the result to ``path``; clean up on any failure.

    The temporary name keeps ``path``'s suffix, so writers that pick a format
    by extension (``cv2.imwrite``, ``np.save``) behave as they would on ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(document: Any, path: Path) -> Path:
    """Write ``document`` as indented JSON, atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w") as stream:
            json.dump(document, stream, indent=1)
            stream.write("\n")

    return write_atomically(path, write)

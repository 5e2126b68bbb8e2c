"""Atomic file output: write under a hidden temporary name beside the target, then rename.

A reader (or a cron job's next run) never sees a half-written file under the
final name, and a failure leaves the previous file, if any, untouched.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


@functools.lru_cache(maxsize=1)
def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask.

    ``mkstemp`` creates its file as 0o600; without this, logs and images
    written atomically would be unreadable to anyone else sharing the folder.
    The umask is read from /proc where possible, because setting it to read it
    back would race with other threads creating files.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


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
        os.chmod(temporary, _new_file_mode())
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


def write_text_atomic(text: str, path: Path) -> Path:
    """Write ``text`` (UTF-8), atomically."""
    return write_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def staging_path(path: Path, tag: str = "staged") -> Path:
    """A hidden name beside ``path`` to write one output of a group under, before :func:`publish_together`."""
    path = Path(path)
    return path.with_name(f".{path.stem}.vidface-{tag}-{os.getpid()}{path.suffix}")


def publish_together(staged: list[tuple[Path, Path]]) -> None:
    """Rename each fully written ``(staged, final)`` pair into place, one right after the other.

    The outputs of one input (video, log, manifest) are all written first
    under staged names, so a failure while producing any of them leaves every
    old output untouched; only renames, which do not fail for want of space,
    remain for the end.
    """
    for temporary, final in staged:
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, final)

"""Errors a user can cause, each with its own process exit code.

The CLI turns any :class:`VidfaceError` into one line on stderr and
``sys.exit(error.exit_code)``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VidfaceError(Exception):
    """Base class: a problem with the user's input or environment."""

    exit_code = 1


class UsageError(VidfaceError):
    """A command-line value that cannot work (an unknown device or codec name, ...)."""

    exit_code = 2


class InputError(VidfaceError):
    """The input video or photo is missing, unreadable or not a video."""

    exit_code = 3


class GalleryError(VidfaceError):
    """The gallery folder is missing, empty, or a person has no usable photo."""

    exit_code = 4


class ModelError(VidfaceError):
    """Model weights are missing, unreadable or of the wrong kind."""

    exit_code = 5


class OutputError(VidfaceError):
    """An output path exists (without --overwrite) or cannot be written."""

    exit_code = 6


class DeviceError(VidfaceError):
    """The requested compute device (e.g. CUDA) is not available."""

    exit_code = 7


class BusyError(VidfaceError):
    """Another run holds the lock on the same output folder."""

    exit_code = 8


class DataError(VidfaceError):
    """A training or evaluation data set is missing or malformed."""

    exit_code = 9

"""The ``vidface`` command's entry point: Ctrl-C while the program is still loading is an
interruption like any other (one line, exit 130), not a traceback from the middle of an import."""

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("vidface: interrupted\n")
        sys.exit(130)
    run()

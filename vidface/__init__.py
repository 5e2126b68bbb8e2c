"""vidface: find, track and name faces in videos.

The pipeline stages live one per module: :mod:`vidface.io` (decode/encode),
:mod:`vidface.detect`, :mod:`vidface.align`, :mod:`vidface.embed`,
:mod:`vidface.gallery`, :mod:`vidface.track`, :mod:`vidface.draw`,
:mod:`vidface.tracklog` and :mod:`vidface.pipeline`, which joins them.
"""

__version__ = "0.1.0"

"""Who appears when, for people: subtitles and a one-file HTML report made from the track log.

The report is self-contained (no script, no font or image fetched): a
timeline drawn as inline SVG with one row per person and a bar wherever they
are on screen, their first and last appearance and screen time, and a
thumbnail of each person's best-seen face (kept while the video streams by
:class:`ThumbnailSink`, since the frames are gone by the end).
"""

from __future__ import annotations

import base64
import html
import shlex
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .draw import identity_colour
from .structures import FrameResult
from .tracklog import appearances, frame_duration_of, summarize

THUMBNAIL_SIZE = 96


class ThumbnailSink:
    """Keeps, per track, a JPEG of its best-seen face: the largest box, weighted by detector score."""

    def __init__(self, size: int = THUMBNAIL_SIZE):
        self.size = size
        self.best: dict[int, tuple[float, bytes]] = {}

    def write(self, result: FrameResult) -> None:
        if not result.detected:
            return
        image = result.frame.image
        for face in result.faces:
            detection = face.detection
            quality = detection.area * detection.score
            if face.track_id in self.best and self.best[face.track_id][0] >= quality:
                continue
            crop = _square_crop(image, detection.box)
            if crop is None:
                continue
            ok, encoded = cv2.imencode(".jpg", cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA),
                                       [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                self.best[face.track_id] = (quality, encoded.tobytes())

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def jpegs(self) -> dict[int, tuple[float, bytes]]:
        """``{track_id: (quality, jpeg bytes)}``."""
        return dict(self.best)


def _square_crop(image: np.ndarray, box: np.ndarray, margin: float = 0.2) -> np.ndarray | None:
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = image.shape[:2]
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    right, bottom = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    if right - left < 2 or bottom - top < 2:
        return None
    return image[top:bottom, left:right]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:05.2f}"


def _timeline_svg(rows: list[dict], spans: dict[str, list[tuple[float, float]]], duration: float) -> str:
    """One row per person, a bar wherever they are on screen, a time axis below."""
    label_width, width, row_height = 170, 900, 30
    plot = width - label_width - 20
    duration = max(duration, max((end for intervals in spans.values() for _, end in intervals), default=0.0), 1e-3)
    height = row_height * len(rows) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="who appears when">']
    for index, row in enumerate(rows):
        y = index * row_height + 5
        name = row["identity"]
        red, green, blue = identity_colour(name if row["known"] else None)[::-1]
        parts.append(f'<text x="{label_width - 8}" y="{y + 18}" text-anchor="end" font-size="13">'
                     f'{html.escape(name)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 4}" width="{plot}" height="{row_height - 10}" fill="#f1f1f1"/>')
        for start, end in spans.get(name, []):
            x = label_width + plot * start / duration
            bar = max(1.5, plot * (end - start) / duration)
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 4}" width="{bar:.1f}" height="{row_height - 10}" '
                         f'fill="rgb({red},{green},{blue})"><title>{html.escape(name)}: {_clock(start)} – '
                         f'{_clock(end)}</title></rect>')
    axis = len(rows) * row_height + 10
    parts.append(f'<line x1="{label_width}" y1="{axis}" x2="{label_width + plot}" y2="{axis}" stroke="#888"/>')
    ticks = 10
    for tick in range(ticks + 1):
        x = label_width + plot * tick / ticks
        parts.append(f'<line x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{axis + 5}" stroke="#888"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis + 18}" text-anchor="middle" font-size="11">'
                     f'{_clock(duration * tick / ticks)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_html(document: dict[str, Any], thumbnails: dict[int, tuple[float, bytes]], title: str,
                log_path: Path | None = None) -> str:
    """The self-contained HTML report of one track log (``thumbnails`` from :class:`ThumbnailSink`);
    with ``log_path``, it says how to name a stranger (``vidface gallery enroll``)."""
    info = document["input"]
    frame_duration = frame_duration_of(document)
    rows = summarize(document, frame_duration)
    spans = appearances(document, frame_duration)
    best: dict[str, tuple[float, bytes]] = {}
    for track in document["tracks"]:
        thumb = thumbnails.get(track["track_id"])
        if thumb is not None and (track["display_id"] not in best or thumb[0] > best[track["display_id"]][0]):
            best[track["display_id"]] = thumb
    duration = info.get("duration_s") or 0.0
    body = []
    for row in rows:
        name = row["identity"]
        image = (f'<img alt="{html.escape(name)}" src="data:image/jpeg;base64,'
                 f'{base64.b64encode(best[name][1]).decode()}">' if name in best else "")
        score = "–" if row["score"] is None else f"{row['score']:.2f}"
        body.append(f"<tr><td>{image}</td><td class='name'>{html.escape(name)}</td>"
                    f"<td>{'in the gallery' if row['known'] else 'not in the gallery'}</td>"
                    f"<td>{_clock(row['from_s'])}</td><td>{_clock(row['to_s'])}</td>"
                    f"<td>{row['seconds']:.1f} s</td><td>{row['tracks']}</td><td>{score}</td></tr>")
    people = "\n".join(body) or "<tr><td colspan='8'>nobody was seen</td></tr>"
    gallery = document.get("gallery") or {}
    strangers = [row["identity"] for row in rows if not row["known"]]
    enroll = ""
    if strangers and log_path is not None:
        command = (f"vidface gallery enroll {shlex.quote(str(log_path))} -t {shlex.quote(strangers[0])} "
                   f"--as 'Their Name' -g {shlex.quote(str(gallery.get('path') or 'faces/'))}")
        enroll = (f"<p class='meta'>Know someone who is not in the gallery? Add them from this video, and "
                  f"later runs name them: <code>{html.escape(command)}</code></p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ padding: 6px 12px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }}
td img {{ width: {THUMBNAIL_SIZE}px; height: {THUMBNAIL_SIZE}px; border-radius: 6px; }}
.name {{ font-weight: 600; }}
.meta {{ color: #666; }}
</style></head>
<body>
<h1>Who appears when: {html.escape(Path(str(info.get("path", title))).name)}</h1>
<p class="meta">{info.get("width")}×{info.get("height")}, {_clock(duration)} ({info.get("frames_decoded") or
    info.get("frames")} frames); gallery {html.escape(str(gallery.get("path")))} with
{len(gallery.get("identities") or [])} people; vidface {html.escape(str(document.get("vidface_version")))}</p>
<h2>Timeline</h2>
{_timeline_svg(rows, spans, duration)}
<h2>People</h2>
<table id="people"><thead><tr><th>best face</th><th>who</th><th></th><th>first seen</th><th>last seen</th>
<th>on screen</th><th>tracks</th><th>track score</th></tr></thead>
<tbody>
{people}
</tbody></table>
{enroll}
</body></html>
"""

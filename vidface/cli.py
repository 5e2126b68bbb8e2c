"""The ``vidface`` command line: a thin typer layer over the library.

Every user error becomes one line on stderr and a distinct exit code (see
:mod:`vidface.errors`); Ctrl-C exits with 130.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .cli_options import (CloseupsOption, DetConfOption, DetectorOption, DeviceOption, EmbedderOption,
                          FlipOption)
from .research.cli import data_app, eval_app, train_app
from .errors import InputError, VidfaceError

# OpenCV and its FFmpeg print their own lines for files and cameras they cannot open; the
# command line reports each of those as one error line, so theirs is noise (set to re-enable).
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, track and name faces in videos.")
gallery_app = typer.Typer(no_args_is_help=True, help="Build and inspect galleries (one folder of photos per person).")
app.add_typer(gallery_app, name="gallery")

app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
out = Console()
err = Console(stderr=True)


def _settings(**values):
    from .pipeline import AnnotateSettings

    values = {k: v for k, v in values.items() if v is not None}
    return AnnotateSettings(**values)


def _load_gallery(folder: Optional[Path], models, quiet: bool = False):
    if folder is None:
        return None
    from .gallery import build_gallery

    gallery = build_gallery(folder, models.detector, models.embedder)
    if not quiet:
        for photo in gallery.problems:
            err.print(f"gallery: skipped {photo.path} ({photo.status})", style="yellow", markup=False)
    return gallery


def print_summary(summary: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in ("who", "tracks", "from", "to", "on screen", "mean similarity"):
        table.add_column(column, justify="left" if column == "who" else "right")
    for row in summary:
        similarity = "-" if row["mean_similarity"] is None else f"{row['mean_similarity']:.2f}"
        table.add_row(row["identity"], str(row["tracks"]), f"{row['from_s']:.2f}s", f"{row['to_s']:.2f}s",
                      f"{row['seconds']:.2f}s", similarity)
    if not summary:
        table.add_row("(nobody)", "0", "-", "-", "-", "-")
    out.print(table)


@app.command()
def annotate(
    input: Path = typer.Argument(..., help="video file"),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="gallery folder (one sub-folder per person)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="annotated video (default INPUT.vidface.mp4)"),
    log: Optional[Path] = typer.Option(None, "--log", help="JSON track log (default INPUT.vidface.json)"),
    device: str = DeviceOption,
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="frames per detector batch"),
    imgsz: int = typer.Option(640, "--imgsz", min=32, help="detector input size (long side, px)"),
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    det_conf: Optional[float] = DetConfOption,
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold", min=-1.0, max=1.0,
                                                    help="cosine similarity to name a face (default: the embedder's)"),
    frame_skip: int = typer.Option(0, "--frame-skip", min=0, help="detect every N+1-th frame, carry tracks between"),
    no_video: bool = typer.Option(False, "--no-video", help="write only the JSON log"),
    landmarks: bool = typer.Option(False, "--landmarks", help="also draw the five landmarks"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing outputs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or summary"),
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Annotate a video: boxes, names and similarity drawn on it, plus a JSON track log."""
    from tqdm import tqdm

    from .gallery import list_gallery
    from .io import probe_video
    from .pipeline import Models, annotate as run_annotate, resolve_outputs

    settings = _settings(device=device, batch_size=batch_size, imgsz=imgsz, det_conf=det_conf,
                         closeups=closeups, flip_embed=flip_embed,
                         match_threshold=match_threshold, frame_skip=frame_skip, write_video=not no_video,
                         draw_landmarks=landmarks, detector=detector, embedder=embedder)
    info = probe_video(input)
    resolve_outputs(input, output, log, settings.write_video, overwrite)  # fail before loading any model
    if gallery is not None:
        list_gallery(gallery)
    models = Models.load(settings)
    known = _load_gallery(gallery, models, quiet)
    bar = tqdm(total=info.frames or None, unit="frame", desc=input.name, disable=quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        result = run_annotate(input, known, output, log, settings, models, overwrite, progress, gallery)
    finally:
        bar.close()
    if result.truncated:
        err.print(f"warning: {input} is truncated or damaged; annotated the {result.frames} frames "
                  f"that could be decoded ({result.warning})", style="yellow", markup=False)
    if not quiet:
        print_summary(result.summary, f"{input.name}: {result.frames} frames in {result.seconds:.1f}s "
                                      f"({result.frames / max(result.seconds, 1e-9):.1f} frames/s)")
        if result.video_path:
            out.print(f"video: {result.video_path}")
        out.print(f"log:   {result.log_path}")


@gallery_app.command("build")
def gallery_build(
    folder: Path = typer.Argument(..., help="gallery folder"),
    device: str = DeviceOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Embed every gallery photo now (cached; later runs reuse it)."""
    from .pipeline import Models

    models = Models.load(_settings(device=device, detector=detector, embedder=embedder))
    gallery = _load_gallery(folder, models)
    out.print(f"gallery {folder}: {len(gallery.names)} people, {len(gallery.embeddings)} usable photos, "
              f"{len(gallery.problems)} skipped")


@gallery_app.command("show")
def gallery_show(
    folder: Path = typer.Argument(..., help="gallery folder"),
    device: str = DeviceOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """List people, photo counts and problem photos."""
    from .gallery import scan_gallery
    from .pipeline import Models

    models = Models.load(_settings(device=device, detector=detector, embedder=embedder))
    photos, _ = scan_gallery(folder, models.detector, models.embedder)
    table = Table(title=f"gallery {folder}")
    for column in ("person", "photos", "usable", "problems"):
        table.add_column(column)
    by_person: dict[str, list] = {}
    for photo in photos:
        by_person.setdefault(photo.person, []).append(photo)
    for person, person_photos in by_person.items():
        problems = ", ".join(f"{p.path.name} ({p.status})" for p in person_photos if p.status != "ok")
        usable = sum(p.status == "ok" for p in person_photos)
        table.add_row(person, str(len(person_photos)), str(usable) if usable else "[red]0[/red]", problems or "-")
    out.print(table)


def _read_image(path: Path):
    import cv2

    if not path.is_file():
        raise InputError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"not a readable image: {path}")
    return image


@app.command()
def detect(
    photo: Path = typer.Argument(..., help="photo"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="annotated photo (default PHOTO.vidface.jpg)"),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="name the faces from this gallery"),
    device: str = DeviceOption,
    det_conf: Optional[float] = DetConfOption,
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Detect faces in a photo: draws boxes, landmarks and names, prints them as JSON."""
    from .photo import annotate_photo, write_image_atomic
    from .pipeline import Models, check_output

    image = _read_image(photo)
    output = output or photo.with_name(photo.stem + ".vidface" + (photo.suffix or ".jpg"))
    check_output(output, photo, overwrite)
    settings = _settings(device=device, det_conf=det_conf, match_threshold=match_threshold,
                         detector=detector, embedder=embedder)
    models = Models.load(settings)
    known = _load_gallery(gallery, models)
    faces, drawn = annotate_photo(image, models, known, models.threshold(settings))
    write_image_atomic(drawn, output)
    out.print_json(json.dumps({"photo": str(photo), "output": str(output), "faces": faces}))


@app.command()
def embed(
    image: Path = typer.Argument(..., help="aligned 112x112 crop, or a photo (its largest face is used)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="save the vector (.npy or .json)"),
    device: str = DeviceOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Print (or save) the face embedding of a crop or of a photo's largest face."""
    from .photo import embed_image, save_vector
    from .pipeline import Models

    picture = _read_image(image)
    models = Models.load(_settings(device=device, detector=detector, embedder=embedder))
    vector = embed_image(picture, models)
    if output is None:
        out.print(json.dumps([round(float(v), 6) for v in vector]))
        return
    save_vector(vector, output)
    out.print(f"saved {len(vector)}-d embedding to {output}")


@app.command()
def bench(
    input: Path = typer.Argument(..., help="video file"),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g"),
    device: str = DeviceOption,
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    imgsz: int = typer.Option(640, "--imgsz", min=32),
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    frame_skip: int = typer.Option(0, "--frame-skip", min=0),
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Per-stage throughput (decode, detect, align+embed, track+draw, encode) and end-to-end frames/s."""
    from .bench import run_bench

    settings = _settings(device=device, batch_size=batch_size, imgsz=imgsz, frame_skip=frame_skip,
                         closeups=closeups, flip_embed=flip_embed,
                         detector=detector, embedder=embedder)
    report = run_bench(input, gallery, settings)
    table = Table(title=f"vidface bench: {input.name} ({report['frames']} frames, device {report['device']})")
    for column in ("stage", "seconds", "frames/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, seconds, fps in report["rows"]:
        table.add_row(stage, f"{seconds:.2f}", f"{fps:.1f}")
    out.print(table)


@app.command()
def webcam(
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="gallery folder"),
    camera: int = typer.Option(0, "--camera", help="camera index"),
    source: Optional[str] = typer.Option(None, "--source", help="a file or stream URL instead of a camera"),
    frame_skip: int = typer.Option(0, "--frame-skip", min=0, help="detect every N+1-th frame, carry tracks between"),
    det_conf: Optional[float] = DetConfOption,
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold"),
    imgsz: int = typer.Option(640, "--imgsz", min=32),
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    device: str = DeviceOption,
    record: Optional[Path] = typer.Option(None, "--record", help="save the annotated stream to this video"),
    log: Optional[Path] = typer.Option(None, "--log", help="save a JSON track log"),
    no_display: bool = typer.Option(False, "--no-display", help="headless: record and/or log only"),
    seconds: Optional[float] = typer.Option(None, "--seconds", min=0.0, help="stop after this long"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Live recognition from a camera (q or Esc quits; Ctrl-C too)."""
    from .pipeline import Models
    from .webcam import parse_source, run_webcam

    origin = parse_source(camera, source)
    settings = _settings(device=device, frame_skip=frame_skip, det_conf=det_conf, match_threshold=match_threshold,
                         imgsz=imgsz, closeups=closeups, flip_embed=flip_embed, detector=detector, embedder=embedder)
    models = Models.load(settings)
    known = _load_gallery(gallery, models)
    result = run_webcam(origin, known, settings, models, record, log, display=not no_display,
                        max_seconds=seconds, overwrite=overwrite)
    print_summary(result.summary, f"live: {result.frames_shown} frames shown, {result.frames_dropped} stale frames "
                                  f"dropped, {result.frames_shown / max(result.seconds, 1e-9):.1f} frames/s")


@app.command()
def batch(
    inputs: list[str] = typer.Argument(..., help="video files, folders or globs"),
    out_dir: Path = typer.Option(..., "--out-dir", "-O", help="results folder (mirrors the input layout)"),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", help="gallery folder"),
    pattern: str = typer.Option("*", "--pattern", help="file pattern inside folders, e.g. '*.mp4'"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="descend into sub-folders"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="files decoded in parallel (models are shared)"),
    no_video: bool = typer.Option(False, "--no-video", help="write only the JSON logs"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="retry files that failed in an earlier run"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    device: str = DeviceOption,
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    imgsz: int = typer.Option(640, "--imgsz", min=32),
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    det_conf: Optional[float] = DetConfOption,
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold"),
    frame_skip: int = typer.Option(0, "--frame-skip", min=0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Annotate many videos into --out-dir; safe to repeat (finished files are skipped).

    Exit code: 0 all done, 10 some files failed, other codes: nothing could start.
    """
    from .batch import run_batch

    settings = _settings(device=device, batch_size=batch_size, imgsz=imgsz, det_conf=det_conf,
                         closeups=closeups, flip_embed=flip_embed,
                         match_threshold=match_threshold, frame_skip=frame_skip, write_video=not no_video,
                         detector=detector, embedder=embedder)

    def report(item) -> None:
        if not quiet and not as_json:
            colour = {"ok": "green", "failed": "red", "skipped": "dim"}.get(item.status, "white")
            extra = f" ({item.error})" if item.error else ""
            err.print(f"{item.status:>7} {item.source}{extra}", style=colour, markup=False, highlight=False)

    result = run_batch(inputs, out_dir, gallery, settings, pattern, recursive, jobs, retry_failed, on_item=report)
    if as_json:
        out.print_json(result.summary_path.read_text())
    elif not quiet:
        counts = result.counts()
        table = Table(title=f"batch into {out_dir}")
        for column in ("status", "input", "frames", "seconds", "people", "error"):
            table.add_column(column)
        for item in result.items:
            table.add_row(item.status, str(item.source), str(item.frames), f"{item.seconds:.1f}",
                          ", ".join(item.people) or "-", item.error or "")
        out.print(table)
        out.print(f"{counts['ok']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
                  f"summary: {result.summary_path}")
    if result.exit_code:
        sys.exit(result.exit_code)


def main() -> None:
    """Entry point: runs the typer app, turning user errors into one line and an exit code."""
    try:
        code = app(standalone_mode=False)
    except VidfaceError as error:
        err.print(f"vidface: error: {error}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("vidface: interrupted", highlight=False)
        sys.exit(130)
    except Exception as error:
        # typer's usage errors (bad option values and the like) know how to show themselves
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        out.print(f"vidface {__version__}")
        raise typer.Exit()

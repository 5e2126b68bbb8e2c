"""The ``vidface`` command line: a thin typer layer over the library.

Every user error becomes one line on stderr and a documented exit code (see
:mod:`vidface.errors` and :data:`EXIT_CODES`); Ctrl-C prints one line and
exits 130. Output that goes to a file or a pipe is never wrapped or cut to
a terminal's width.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from . import __version__
from .cli_options import (BackendOption, BatchSizeOption, CloseupEveryOption, CloseupsOption, CodecOption,
                          DetConfOption, DetectorOption, DeviceOption, EmbedEveryOption, EmbedderOption, FlipOption,
                          FrameSkipOption, GalleryOption, ImgszOption, JsonOption,
                          MatchThresholdOption, OverwriteOption, QuietOption, RedactOption, RedactStyleOption,
                          ReportOption, SubtitlesOption, TrackConfOption, check_redaction)
from .errors import InputError, UsageError, VidfaceError
from .research.cli import data_app, eval_app, train_app

# OpenCV and its FFmpeg print their own lines for files and cameras they cannot open; the
# command line reports each of those as one error line, so theirs is noise (set to re-enable).
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

#: exit code -> meaning, for every command (also printed by ``vidface --help``)
EXIT_CODES = {
    0: "success",
    1: "unexpected error (a bug: please report it; VIDFACE_DEBUG=1 shows the traceback)",
    2: "bad usage (unknown option, value out of range, unknown device name)",
    3: "bad input video or photo",
    4: "gallery problem",
    5: "missing or wrong model weights",
    6: "an output exists (without --overwrite) or cannot be written",
    7: "the requested CUDA device is absent",
    8: "another batch holds the out-dir",
    9: "a data set is missing (research commands)",
    10: "batch: some inputs failed (also inputs that failed before, unless --accept-known-failures)",
    130: "interrupted (Ctrl-C)",
}
_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())


def _plain_usage_name(self) -> str:
    """``VIDEO`` / ``[VIDEO]`` in the usage line, as man pages write them (typer writes ``{VIDEO}``)."""
    name = self.display_name_raw
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_argument_type = typer.core.TyperArgument.display_type_rich


def _argument_type_unless_named(self, ctx) -> str | None:
    """An argument with a metavar (``VIDEO``) says what it is; ``<path>`` after it is noise."""
    return None if self.metavar else _argument_type(self, ctx)


typer.core.TyperArgument._usage_display_name = _plain_usage_name
typer.core.TyperArgument.display_type_rich = _argument_type_unless_named

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Find, track and name faces in videos.", epilog=_EPILOG)
gallery_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Build and inspect galleries (one folder of photos per person).")
app.add_typer(gallery_app, name="gallery")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


def _console(stderr: bool) -> Console:
    """A console that wraps and fits to a terminal, but never cuts lines or table cells going to a file or pipe."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(stderr=stderr, soft_wrap=not tty, width=None if tty else 10_000, highlight=False)


out = _console(stderr=False)
err = _console(stderr=True)


def say(message: str, style: str | None = None) -> None:
    """One line for a person, on stderr (stdout stays for results)."""
    err.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _settings(**values):
    from .pipeline import AnnotateSettings

    values = {k: v for k, v in values.items() if v is not None}
    return AnnotateSettings(**values)


def _load_gallery(folder: Optional[Path], models, quiet: bool = False):
    if folder is None:
        return None
    from .gallery import build_gallery, unlike_their_person

    gallery = build_gallery(folder, models.detector, models.embedder)
    if not quiet:
        for photo in gallery.problems:
            say(f"gallery: skipped {photo.path} ({photo.status})", style="yellow")
        for photo, best in unlike_their_person(gallery.photos, gallery.vectors_by_person(), _photo_check_threshold(models)):
            say(f"gallery: {photo.path} looks unlike {photo.person}'s other photos (best similarity {best:.2f}): "
                f"someone else's photo, or a face of little use", style="yellow")
    return gallery


def print_summary(summary: list[dict], title: str, console: Console = out) -> None:
    table = Table(title=title)
    for column in ("who", "tracks", "from", "to", "on screen", "track score"):
        table.add_column(column, justify="left" if column == "who" else "right")
    for row in summary:
        score = "-" if row["score"] is None else f"{row['score']:.2f}"
        table.add_row(row["identity"], str(row["tracks"]), f"{row['from_s']:.2f}s", f"{row['to_s']:.2f}s",
                      f"{row['seconds']:.2f}s", score)
    if not summary:
        table.add_row("(nobody)", "0", "-", "-", "-", "-")
    console.print(table)


@app.command()
def annotate(
    input: Path = typer.Argument(..., metavar="VIDEO", help="video file"),
    gallery: Optional[Path] = GalleryOption,
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="VIDEO",
                                          help="annotated video  [default: VIDEO.vidface.mp4 beside the input]"),
    log: Optional[Path] = typer.Option(None, "--log", metavar="JSON",
                                       help="JSON track log  [default: VIDEO.vidface.json beside the input]"),
    device: str = DeviceOption,
    backend: str = BackendOption,
    batch_size: Optional[int] = BatchSizeOption,
    imgsz: int = ImgszOption,
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    det_conf: Optional[float] = DetConfOption,
    track_conf: Optional[float] = TrackConfOption,
    match_threshold: Optional[float] = MatchThresholdOption,
    frame_skip: int = FrameSkipOption,
    embed_every: Optional[int] = EmbedEveryOption,
    closeup_every: Optional[int] = CloseupEveryOption,
    no_video: bool = typer.Option(False, "--no-video", help="write only the JSON log"),
    landmarks: bool = typer.Option(False, "--landmarks", help="also draw the five landmarks"),
    codec: str = CodecOption,
    redact: Optional[str] = RedactOption,
    redact_style: str = RedactStyleOption,
    subtitles: bool = SubtitlesOption,
    report: bool = ReportOption,
    overwrite: bool = OverwriteOption,
    quiet: bool = QuietOption,
    as_json: bool = JsonOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Annotate a video: boxes, names and similarity drawn on it, plus a JSON track log."""
    from tqdm import tqdm

    from .gallery import list_gallery
    from .io import CODECS, probe_video
    from .pipeline import Models, annotate as run_annotate, resolve_outputs

    if codec not in CODECS:
        raise UsageError(f"--codec {codec!r}: choose from {', '.join(CODECS)}")
    check_redaction(redact, redact_style)
    settings = _settings(device=device, backend=backend, batch_size=batch_size, imgsz=imgsz, det_conf=det_conf,
                         track_conf=track_conf, closeups=closeups, flip_embed=flip_embed, codec=codec, redact=redact,
                         redact_style=redact_style, subtitles=subtitles, report=report,
                         match_threshold=match_threshold, frame_skip=frame_skip, embed_every=embed_every,
                         closeup_every=closeup_every, write_video=not no_video,
                         draw_landmarks=landmarks, detector=detector, embedder=embedder)
    info = probe_video(input)
    paths = resolve_outputs(input, output, log, settings.write_video, overwrite, subtitles, report)  # before models
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
        say(f"warning: {input} is truncated or damaged; annotated the {result.frames} frames that could be "
            f"decoded ({result.warning})", style="yellow")
    extras = [str(p) for p in (*(paths.subtitles or ()), paths.report) if p is not None]
    if as_json:
        out.print_json(json.dumps({
            "input": str(input), "video": str(result.video_path) if result.video_path else None,
            "log": str(result.log_path), "also": extras, "frames": result.frames,
            "seconds": round(result.seconds, 3), "truncated": result.truncated, "people": result.summary}))
    if not quiet:
        print_summary(result.summary, f"{input.name}: {result.frames} frames in {result.seconds:.1f}s "
                                      f"({result.frames / max(result.seconds, 1e-9):.1f} frames/s)",
                      console=err if as_json else out)
        where = err if as_json else out
        if result.video_path:
            where.print(f"video: {result.video_path}", markup=False, highlight=False)
        where.print(f"log:   {result.log_path}", markup=False, highlight=False)
        for extra in extras:
            where.print(f"also:  {extra}", markup=False, highlight=False)


@gallery_app.command("build")
def gallery_build(
    folder: Path = typer.Argument(..., metavar="DIR", help="gallery folder"),
    device: str = DeviceOption,
    backend: str = BackendOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Embed every gallery photo now (cached; later runs on the same engine reuse it), and name photos unlike
    their person's others."""
    from .gallery import list_gallery
    from .pipeline import Models

    list_gallery(folder)
    models = Models.load(_settings(device=device, backend=backend, detector=detector, embedder=embedder))
    gallery = _load_gallery(folder, models)
    out.print(f"gallery {folder}: {len(gallery.names)} people, {len(gallery.embeddings)} usable photos, "
              f"{len(gallery.problems)} skipped", markup=False, highlight=False)


@gallery_app.command("show")
def gallery_show(
    folder: Path = typer.Argument(..., metavar="DIR", help="gallery folder"),
    device: str = DeviceOption,
    backend: str = BackendOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """List people, photo counts, problem photos, photos unlike their person's others, and which face was
    taken from photos of several people or found in a dark photo."""
    from .gallery import list_gallery, scan_gallery, unlike_their_person
    from .pipeline import Models

    list_gallery(folder)
    models = Models.load(_settings(device=device, backend=backend, detector=detector, embedder=embedder))
    photos, vectors = scan_gallery(folder, models.detector, models.embedder)
    unlike = {photo.path: best for photo, best in unlike_their_person(photos, vectors, _photo_check_threshold(models))}
    table = Table(title=f"gallery {folder}")
    for column in ("person", "photos", "usable", "problems", "unlike the person's other photos (best similarity)",
                   "photos of several faces: the face taken; dark photos whose face was found equalised"):
        table.add_column(column)
    by_person: dict[str, list] = {}
    for photo in photos:
        by_person.setdefault(photo.person, []).append(photo)
    for person, person_photos in by_person.items():
        problems = ", ".join(f"{p.path.name} ({p.status})" for p in person_photos if p.status != "ok")
        usable = sum(p.status == "ok" for p in person_photos)
        several = ", ".join([f"{p.path.name} ({p.faces} faces: {p.chosen_by})"
                             for p in person_photos if p.status == "ok" and p.faces > 1]
                            + [f"{p.path.name} (dark, equalised)" for p in person_photos if p.equalised])
        unlike_photos = ", ".join(f"{p.path.name} ({unlike[p.path]:.2f})" for p in person_photos if p.path in unlike)
        table.add_row(person, str(len(person_photos)), str(usable) if usable else "[red]0[/red]", problems or "-",
                      unlike_photos or "-", several or "-")
    out.print(table)


@gallery_app.command("enroll")
def gallery_enroll(
    log: Path = typer.Argument(..., metavar="LOG", help="track log of an annotated video (VIDEO.vidface.json), "
                               "or a batch's people.json"),
    track: list[str] = typer.Option(..., "--track", "-t", metavar="ID",
                                    help="the track: its display id (unknown-3), name or number; from a people.json, "
                                         "a recurring stranger (stranger-2); repeat for several"),
    gallery: Path = typer.Option(..., "--gallery", "-g", metavar="DIR", help="gallery folder to add the photos to"),
    person: Optional[str] = typer.Option(None, "--as", metavar="NAME",
                                         help="who it is: the person's folder in the gallery  [default: the "
                                              "track's gallery name]"),
    video: Optional[Path] = typer.Option(None, "--video", metavar="VIDEO",
                                         help="the video the log was made from  [default: the log's input path]"),
    photos: int = typer.Option(5, "--photos", min=1, max=50, metavar="N",
                               help="photos to cut, spread over the track (from a people.json: over the stranger's videos)"),
) -> None:
    """Add a person from a video: cut a logged track's best faces into the gallery, so later runs name them."""
    from .enroll import enroll

    for result in enroll(log, track, gallery, person=person, video=video, photos=photos):
        frames = ", ".join(str(index) for index in result.frames)
        out.print(f"{result.folder}: {len(result.written)} new photos of {result.person} from {result.video} "
                  f"(frames {frames}; {len(result.existing)} there already)", markup=False, highlight=False)


def _photo_check_threshold(models) -> float | None:
    """The embedder's stored ``photo_check_threshold`` (``None`` for weights calibrated without one)."""
    return getattr(getattr(models.embedder, "config", None), "photo_check_threshold", None)


def _read_image(path: Path):
    import cv2

    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"not a readable image: {path}")
    return image


@app.command()
def detect(
    photo: Path = typer.Argument(..., metavar="PHOTO", help="photo"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="IMAGE",
                                          help="annotated photo  [default: PHOTO.vidface.jpg beside it]"),
    gallery: Optional[Path] = GalleryOption,
    device: str = DeviceOption,
    imgsz: int = ImgszOption,
    det_conf: Optional[float] = DetConfOption,
    match_threshold: Optional[float] = MatchThresholdOption,
    overwrite: bool = OverwriteOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Detect faces in a photo: draws boxes, landmarks and names, prints them as JSON."""
    from .photo import annotate_photo, write_image_atomic
    from .pipeline import Models, check_output

    image = _read_image(photo)
    output = output or photo.with_name(photo.stem + ".vidface" + (photo.suffix or ".jpg"))
    check_output(output, photo, overwrite)
    settings = _settings(device=device, imgsz=imgsz, det_conf=det_conf, match_threshold=match_threshold,
                         detector=detector, embedder=embedder)
    models = Models.load(settings)
    known = _load_gallery(gallery, models)
    faces, drawn = annotate_photo(image, models, known, settings.resolved(models).match_threshold)
    write_image_atomic(drawn, output)
    out.print_json(json.dumps({"photo": str(photo), "output": str(output), "faces": faces}))


@app.command()
def embed(
    image: Path = typer.Argument(..., metavar="IMAGE", help="aligned 112x112 crop, or a photo (its largest face)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="save the vector (.npy or .json)"),
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
    out.print(f"saved {len(vector)}-d embedding to {output}", markup=False, highlight=False)


@app.command()
def search(
    photos: list[Path] = typer.Argument(..., metavar="PHOTO", help="photo(s) of one person: the largest face "
                                        "of each, averaged (several photos give a surer answer)"),
    gallery: Optional[Path] = typer.Option(None, "--gallery", "-g", metavar="DIR", help="gallery folder to search"),
    archive: Optional[Path] = typer.Option(None, "--archive", "-a", metavar="OUT_DIR",
                                           help="a batch's --out-dir: every person of every video annotated into it"),
    top: int = typer.Option(8, "--top", min=1, metavar="N", help="how many people (and appearances) to list"),
    as_json: bool = JsonOption,
    device: str = DeviceOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Who in the gallery, and where in an archive of annotated videos, looks most like the face in photos of one person."""
    from .batch import archive_manifests, search_archive
    from .gallery import list_gallery
    from .photo import embed_person, search_gallery
    from .pipeline import Models

    if gallery is None and archive is None:
        raise UsageError("search what? give --gallery DIR, --archive OUT_DIR, or both")
    pictures = [_read_image(photo) for photo in photos]
    if gallery is not None:
        list_gallery(gallery)
    if archive is not None:
        archive_manifests(archive)
    settings = _settings(device=device, detector=detector, embedder=embedder)
    models = Models.load(settings)
    threshold = settings.resolved(models).match_threshold
    vector = embed_person(pictures, models)
    what = photos[0].name if len(photos) == 1 else f"{len(photos)} photos"
    document: dict = {"photos": [str(photo) for photo in photos], "match_threshold": threshold}
    if gallery is not None:
        rows = search_gallery(vector, models, _load_gallery(gallery, models, quiet=as_json), top)
        document.update(gallery=str(gallery), people=rows)
    if archive is not None:
        found, unsearched = search_archive(archive, vector, models.embedder.fingerprint, top)
        document.update(archive=str(archive), appearances=found, videos_not_searched=unsearched)
    if as_json:
        out.print_json(json.dumps(document))
        return
    if gallery is not None:
        table = Table(title=f"{what} in gallery {gallery} (named at {threshold:.3f} and above)")
        for column in ("rank", "person", "similarity", "best photo", "would be named"):
            table.add_column(column, justify="right" if column in ("rank", "similarity") else "left")
        for rank, row in enumerate(document["people"], start=1):
            table.add_row(str(rank), row["person"], f"{row['similarity']:.3f}", Path(row["best_photo"]).name,
                          "yes" if row["similarity"] >= threshold else "no")
        out.print(table)
    if archive is not None:
        table = Table(title=f"{what} in the videos of {archive} (the same person at {threshold:.3f} and above)")
        for column in ("rank", "video", "who there", "similarity", "on screen", "same person"):
            table.add_column(column, justify="right" if column in ("rank", "similarity") else "left")
        for rank, row in enumerate(document["appearances"], start=1):
            who = row["name"] + (f" ({row['recurring']})" if row["recurring"] else "")
            spans = " ".join(f"{start:.1f}-{end:.1f}s" for start, end in row["spans"] or [])
            table.add_row(str(rank), str(row["video"]), who, f"{row['similarity']:.3f}", spans,
                          "yes" if row["similarity"] >= threshold else "no")
        out.print(table)
        if unsearched:
            say(f"{unsearched} videos not searched: annotated with another embedder, or before vidface kept "
                "embeddings (delete their .vidface.done.json and run the batch again to include them)", style="yellow")


@app.command()
def bench(
    input: Path = typer.Argument(..., metavar="VIDEO", help="video file"),
    gallery: Optional[Path] = GalleryOption,
    device: str = DeviceOption,
    backend: str = BackendOption,
    batch_size: Optional[int] = BatchSizeOption,
    imgsz: int = ImgszOption,
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    frame_skip: int = FrameSkipOption,
    embed_every: Optional[int] = EmbedEveryOption,
    closeup_every: Optional[int] = CloseupEveryOption,
    codec: str = CodecOption,
    as_json: bool = JsonOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Throughput: decode alone, each stage, and end to end (frames/s), with start-up time and peak memory."""
    from .bench import run_bench
    from .io import probe_video

    probe_video(input)
    settings = _settings(device=device, backend=backend, batch_size=batch_size, imgsz=imgsz, frame_skip=frame_skip,
                         embed_every=embed_every, closeup_every=closeup_every, closeups=closeups,
                         flip_embed=flip_embed, codec=codec, detector=detector, embedder=embedder)
    report = run_bench(input, gallery, settings)
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"vidface bench: {input.name}, {report['width']}x{report['height']}, {report['frames']} frames, "
                        f"{report['faces_per_frame']:.2f} faces/frame, device {report['device']}, "
                        f"engine {report['settings']['backend']}, {report['threads']} threads")
    for column in ("stage", "seconds", "frames/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in report["stages"]:
        table.add_row(row["stage"], f"{row['seconds']:.2f}", "-" if row["fps"] is None else f"{row['fps']:.1f}")
    out.print(table)
    out.print(f"faces: {report['faces_detected']} detected, {report['faces_embedded']} embedded (--embed-every)",
              markup=False, highlight=False)
    out.print(f"start-up {report['startup_s']:.2f}s, peak memory {report['peak_memory_mb']:.0f} MB, end to end "
              f"{report['end_to_end_fps']:.1f} frames/s = {report['slowdown_vs_decode']:.1f}x decode-only time",
              markup=False, highlight=False)


@app.command()
def webcam(
    gallery: Optional[Path] = GalleryOption,
    camera: int = typer.Option(0, "--camera", min=0, metavar="INDEX", help="camera index"),
    source: Optional[str] = typer.Option(None, "--source", metavar="FILE_OR_URL",
                                         help="a video file or stream URL instead of a camera"),
    frame_skip: int = FrameSkipOption,
    embed_every: Optional[int] = EmbedEveryOption,
    closeup_every: Optional[int] = CloseupEveryOption,
    det_conf: Optional[float] = DetConfOption,
    track_conf: Optional[float] = TrackConfOption,
    match_threshold: Optional[float] = MatchThresholdOption,
    imgsz: int = ImgszOption,
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    device: str = DeviceOption,
    backend: str = BackendOption,
    record: Optional[Path] = typer.Option(None, "--record", metavar="VIDEO",
                                          help="save the annotated session (real timestamps: it lasts as long as "
                                               "the session)"),
    log: Optional[Path] = typer.Option(None, "--log", metavar="JSON", help="save a JSON track log"),
    no_display: bool = typer.Option(False, "--no-display", help="headless: record and/or log only"),
    seconds: Optional[float] = typer.Option(None, "--seconds", min=0.0, metavar="S", help="stop after this long"),
    redact: Optional[str] = RedactOption,
    redact_style: str = RedactStyleOption,
    codec: str = CodecOption,
    overwrite: bool = OverwriteOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Live recognition from a camera (q or Esc quits; Ctrl-C too)."""
    from .pipeline import Models
    from .webcam import parse_source, run_webcam

    check_redaction(redact, redact_style)
    origin = parse_source(camera, source)
    settings = _settings(device=device, backend=backend, frame_skip=frame_skip, embed_every=embed_every,
                         closeup_every=closeup_every, det_conf=det_conf, track_conf=track_conf,
                         match_threshold=match_threshold,
                         imgsz=imgsz, closeups=closeups, flip_embed=flip_embed, codec=codec, detector=detector,
                         embedder=embedder, redact=redact, redact_style=redact_style)
    models = Models.load(settings)
    known = _load_gallery(gallery, models)
    result = run_webcam(origin, known, settings, models, record, log, display=not no_display,
                        max_seconds=seconds, overwrite=overwrite)
    print_summary(result.summary, f"live: {result.frames_shown} frames shown in {result.seconds:.1f}s "
                                  f"({result.frames_shown / max(result.seconds, 1e-9):.1f} frames/s), "
                                  f"{result.frames_dropped} stale frames dropped")


@app.command()
def batch(
    inputs: list[str] = typer.Argument(..., metavar="INPUT", help="video files, folders or globs"),
    out_dir: Path = typer.Option(..., "--out-dir", "-O", metavar="DIR", help="results folder (mirrors the input layout)"),
    gallery: Optional[Path] = GalleryOption,
    pattern: str = typer.Option("*", "--pattern", metavar="GLOB",
                                help="file pattern inside folders, any case ('*.mp4' takes y.MP4)"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="descend into sub-folders"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="N", help="files decoded in parallel (models are shared)"),
    no_video: bool = typer.Option(False, "--no-video", help="write only the JSON logs"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="retry files that failed in an earlier run"),
    accept_known_failures: bool = typer.Option(
        False, "--accept-known-failures",
        help="exit 0 when the only failures are files that failed before and did not change"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="run the files as Ray tasks: 'local' starts Ray here, 'auto' or "
                                           "ray://HOST:PORT joins a cluster (pip install 'vidface[ray]')"),
    as_json: bool = JsonOption,
    device: str = DeviceOption,
    backend: str = BackendOption,
    batch_size: Optional[int] = BatchSizeOption,
    imgsz: int = ImgszOption,
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    det_conf: Optional[float] = DetConfOption,
    track_conf: Optional[float] = TrackConfOption,
    match_threshold: Optional[float] = MatchThresholdOption,
    frame_skip: int = FrameSkipOption,
    embed_every: Optional[int] = EmbedEveryOption,
    closeup_every: Optional[int] = CloseupEveryOption,
    codec: str = CodecOption,
    redact: Optional[str] = RedactOption,
    redact_style: str = RedactStyleOption,
    subtitles: bool = SubtitlesOption,
    report: bool = ReportOption,
    quiet: bool = QuietOption,
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
) -> None:
    """Annotate many videos into --out-dir; safe to repeat (finished files are skipped).

    Every failure is printed, one line each, even with --quiet. Exit code: 0
    all done, 10 some inputs failing, other codes: nothing could start.
    """
    from .batch import INDEX_CSV_NAME, INDEX_NAME, run_batch

    check_redaction(redact, redact_style)
    settings = _settings(device=device, backend=backend, batch_size=batch_size, imgsz=imgsz, det_conf=det_conf,
                         track_conf=track_conf, closeups=closeups, flip_embed=flip_embed, codec=codec, redact=redact,
                         redact_style=redact_style, subtitles=subtitles, report=report,
                         match_threshold=match_threshold, frame_skip=frame_skip, embed_every=embed_every,
                         closeup_every=closeup_every, write_video=not no_video,
                         detector=detector, embedder=embedder)
    display = _BatchDisplay(quiet=quiet or as_json)
    try:
        result = run_batch(inputs, out_dir, gallery, settings, pattern, recursive, jobs, retry_failed,
                           on_item=display.item, on_start=display.start, on_frames=display.frames,
                           accept_known_failures=accept_known_failures, ray_address=ray)
    finally:
        display.stop()
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
                  f"summary: {result.summary_path}; who is in which video: {out_dir / INDEX_NAME} "
                  f"(and {INDEX_CSV_NAME})", markup=False, highlight=False)
    if result.exit_code:
        sys.exit(result.exit_code)


class _BatchDisplay:
    """Batch progress for a person: rich bars (files and frames, ETA) on a terminal, plain lines otherwise.

    Failures are always printed, one line each, whatever ``quiet`` says: cron mails what a job prints.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.files_task = None
        self.tasks: dict = {}

    def start(self, items) -> None:
        if self.quiet or not sys.stderr.isatty():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=err, transient=True)
        self.progress.start()
        self.files_task = self.progress.add_task("files", total=len(items))

    def frames(self, item, done: int, total: int) -> None:
        if self.progress is None:
            return
        if item.source not in self.tasks:
            self.tasks[item.source] = self.progress.add_task(f"  {item.source.name}", total=total or None)
        self.progress.update(self.tasks[item.source], completed=done)

    def item(self, item) -> None:
        if self.progress is not None:
            self.progress.advance(self.files_task)
            task = self.tasks.pop(item.source, None)
            if task is not None:
                self.progress.remove_task(task)
        if item.status == "failed":
            say(f"failed {item.source}: {item.error}", style="red")
        elif not self.quiet:
            extra = f" ({item.error})" if item.error else ""
            line = f"{item.status:>7} {item.source}{extra}"
            if self.progress is not None:
                self.progress.console.print(line, markup=False, highlight=False, style="dim")
            else:
                say(line)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _version_callback(value: bool) -> None:
    if value:
        from .device import resolve_device
        from .pipeline import resolve_backend

        device = resolve_device("auto")
        # what a bug report needs besides the version: the engine --backend auto takes on this machine
        engine = resolve_backend("auto", device)
        out.print(f"vidface {__version__} (--backend auto runs {engine} on {device})", markup=False, highlight=False)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version_callback, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Find, track and name faces in videos."""


def main() -> None:
    """Entry point: runs the typer app, turning every error into one stderr line and an exit code."""
    try:
        code = app(standalone_mode=False)
    except VidfaceError as error:
        say(f"vidface: error: {error}")
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        say("vidface: interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the CLI's promise: one line, never a traceback
        # typer's usage errors (bad option values and the like) carry their own exit code (2)
        if callable(getattr(error, "format_message", None)) and isinstance(getattr(error, "exit_code", None), int):
            context = getattr(error, "ctx", None)
            where = f" (see '{context.command_path} --help')" if context is not None else ""
            say(f"vidface: error: {error.format_message()}{where}")
            sys.exit(error.exit_code)
        if os.environ.get("VIDFACE_DEBUG"):
            raise
        say(f"vidface: error: unexpected {type(error).__name__}: {error} (a bug: please report it; "
            f"VIDFACE_DEBUG=1 shows where)")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C into this exit code and returns it
        say("vidface: interrupted")
    if isinstance(code, int) and code:
        sys.exit(code)

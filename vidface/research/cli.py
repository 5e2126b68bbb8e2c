"""``vidface data | train | eval``: rebuilding and measuring vidface's own models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..cli_options import (BackendOption, CloseupEveryOption, CloseupsOption, DetConfOption, DetectorOption,
                           DeviceOption, EmbedEveryOption, EmbedderOption, FlipOption, FrameSkipOption, ImgszOption,
                           MatchThresholdOption, TrackConfOption)
from ..errors import DataError, GalleryError
from ..files import write_json_atomic

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Prepare training data sets.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Train vidface's own models.")
eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Measure models on public benchmarks.")
out = Console()
err = Console(stderr=True)


TEACHERS = ("yunet", "scrfd", "centerface")
#: the teacher, and its score, whose faces count as real besides WIDER's human boxes (faces WIDER left
#: unlabelled): for mining hard negatives and for judging face-quality cues
REAL_FACE_TEACHER, REAL_FACE_TEACHER_CONF = "scrfd", 0.3


def _f32_settings(**values):
    """Pipeline settings for commands that build training data or calibrate a stored value: f32 on the
    CPU whatever the CPU (``auto`` would take bf16 on some), so the same weights mine the same
    hard negatives and fit the same heads on every machine: the first f32 engine ``auto`` would try."""
    from ..onnx_runtime import engine_available, engine_precision
    from ..pipeline import AUTO_ENGINES, AnnotateSettings

    engine = next((engine for engine in AUTO_ENGINES if engine_precision(engine, detector=True) == "f32"
                   and engine_available(engine)), "torch")
    return AnnotateSettings(device="cpu", write_video=False, backend=engine, **values)


def _teacher(name: str, threshold: float, yunet_upscale: float = 2.0, scrfd_size: int = 640):
    """A third-party detector by name. YuNet misses small faces at 1x: labelling runs it at 2x,
    while the benchmark runs it as published (1x)."""
    from .evaluation.teachers import CenterFaceTeacher, ScrfdTeacher, YuNetTeacher

    if name == "yunet":
        return YuNetTeacher(score_threshold=threshold, upscale=yunet_upscale)
    if name == "scrfd":
        return ScrfdTeacher(score_threshold=threshold, size=scrfd_size)
    if name == "centerface":
        return CenterFaceTeacher(score_threshold=threshold)
    raise typer.BadParameter(f"unknown teacher {name!r} ({', '.join(TEACHERS)})")


@data_app.command("widerface")
def data_widerface(
    out_dir: Path = typer.Option(Path("cache/widerface-pose"), "--out", help="where the YOLO-pose data set goes"),
    teacher: str = typer.Option("yunet", "--teacher", help="landmark teacher: yunet, scrfd or centerface"),
    teacher_conf: float = typer.Option(0.6, "--teacher-conf"),
    holdout: int = typer.Option(50, "--holdout", help="val-train images kept aside for the trainer's validation"),
    teacher_positives: Optional[float] = typer.Option(
        None, "--teacher-positives", min=0.0, max=1.0,
        help="also train on the teacher's faces scored at least this (and --teacher-conf) that no human box "
             "overlaps"),
    preview: Optional[Path] = typer.Option(None, "--preview", help="also draw a few labelled images into this PNG"),
) -> None:
    """WIDER FACE training splits -> YOLO-pose data set, five landmarks from a teacher."""
    from .train.widerface_data import build_pose_dataset, draw_label_preview

    yaml_path = build_pose_dataset(out_dir, _teacher(teacher, teacher_conf), holdout=holdout,
                                   extra_score=teacher_positives)
    out.print(f"data set: {yaml_path}  {json.loads((out_dir / 'stats.json').read_text())}")
    if preview:
        out.print(f"preview: {draw_label_preview(out_dir, preview)}")


@data_app.command("hard-negatives")
def data_hard_negatives(
    dataset: Path = typer.Option(Path("cache/widerface-pose"), "--dataset", help="pose data set from 'vidface data widerface'"),
    detector: Optional[Path] = DetectorOption,
    det_conf: Optional[float] = DetConfOption,
    teacher: str = typer.Option(REAL_FACE_TEACHER, "--teacher", help="what counts as a real face besides the human boxes"),
    teacher_conf: float = typer.Option(REAL_FACE_TEACHER_CONF, "--teacher-conf"),
    context: float = typer.Option(3.0, "--context", help="crop side over the false face's long side"),
    preview: Optional[Path] = typer.Option(None, "--preview", help="also draw the mined crops into this PNG"),
) -> None:
    """Background crops around the detector's false faces (hands, ears, textures) on the training images."""
    from ..pipeline import Models
    from .train.widerface_data import draw_negatives_preview, mine_hard_negatives

    values = {k: v for k, v in dict(detector=detector, det_conf=det_conf).items() if v is not None}
    models = Models.load(_f32_settings(closeups=False, **values))
    stats = mine_hard_negatives(dataset, models.detector, _teacher(teacher, teacher_conf), context=context)
    out.print(f"{stats['false_faces']} false faces on {stats['source_images']} of {stats['training_images']} "
              f"training images ({stats['detections']} detections): {stats['crops']} background crops in "
              f"{dataset}/images/train-negatives")
    if preview:
        out.print(f"preview: {draw_negatives_preview(dataset, preview)}")


@data_app.command("balance-events")
def data_balance_events(
    dataset: Path = typer.Option(Path("cache/widerface-pose"), "--dataset", help="pose data set from 'vidface data widerface'"),
    repeat: int = typer.Option(2, "--repeat", min=1, help="times each val-train image (all 61 events) is listed"),
) -> None:
    """data-balanced.yaml: the training split with the images of WIDER's 58 less-covered events listed --repeat times."""
    from .train.widerface_data import BALANCED_LIST, write_event_balanced_split

    balanced = write_event_balanced_split(dataset, repeat)
    listed = (balanced.parent / BALANCED_LIST).read_text().splitlines()
    out.print(f"{balanced}: {len(listed)} training images listed ({len(set(listed))} distinct)")


@data_app.command("wider-crops")
def data_wider_crops(
    dataset: Path = typer.Option(Path("cache/widerface-pose"), "--from", help="pose data set from 'vidface data widerface'"),
    out_dir: Path = typer.Option(Path("cache/faces-wider"), "--out"),
    min_size: float = typer.Option(40.0, "--min-size", help="shortest face side kept (px)"),
) -> None:
    """Aligned 112x112 crops of the WIDER training faces, for embedder distillation."""
    from .train.widerface_data import build_face_crops

    stats = build_face_crops(dataset, out_dir, min_size=min_size)
    out.print(f"{stats['faces']} crops from {stats['images']} images in {out_dir}")


#: what one device-machine call carries: the working tree (tracked files) and the carried paths together
DEVICE_CALL_MIB = 64.0


def tracked_tree_mib(repo: Path = Path(".")) -> float | None:
    """Size of the files git tracks in ``repo`` (what travels with every device call), or ``None``."""
    import subprocess

    try:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = [repo / name for name in listed.decode().split("\0") if name]
    return sum(path.stat().st_size for path in paths if path.is_file()) / 2**20


@data_app.command("pack-faces")
def data_pack_faces(
    config: Path = typer.Option(Path("configs/embedder-gpu.json"), "--config",
                                help="the embedder config whose training faces (and teacher cache) to pack"),
    out_dir: Path = typer.Option(Path("device_carry/faces"), "--out", help="folder for the archive parts"),
    max_mib: Optional[float] = typer.Option(None, "--max-mib",
                                            help="largest part  [default: what a device call carries (64 MiB) "
                                                 "less the tracked working tree, less 2 MiB]"),
) -> None:
    """The embedder's training faces and teacher cache as zip parts, to carry to a GPU machine, one a call.

    Unpack every part into one folder there (``python3 -m zipfile -e PART DEST``)
    and point VIDFACE_DATA at it; the crops keep their paths relative to the data
    root, and our own sets (for example cache/faces-wider) keep theirs.
    """
    from .train.embedder import EmbedderTrainConfig, pack_training_faces

    if max_mib is None:
        tree = tracked_tree_mib()
        if tree is None:
            raise DataError("cannot size the working tree (not a git checkout?); give --max-mib")
        max_mib = DEVICE_CALL_MIB - tree - 2.0
        if max_mib < 4:
            raise DataError(f"the tracked working tree ({tree:.0f} MiB) leaves no room in a device call")
    parts = pack_training_faces(EmbedderTrainConfig.load(config), out_dir, int(max_mib * 2**20))
    for part in parts:
        out.print(f"{part}  {part.stat().st_size / 2**20:.1f} MiB", markup=False, highlight=False)


@train_app.command("detector")
def train_detector_command(
    data: Path = typer.Option(Path("cache/widerface-pose/data.yaml"), "--data"),
    run_dir: Path = typer.Option(Path("runs/detector"), "--run"),
    epochs: int = typer.Option(300, "--epochs"),
    imgsz: int = typer.Option(640, "--imgsz"),
    batch: int = typer.Option(32, "--batch"),
    hours: Optional[float] = typer.Option(None, "--hours", help="fit the schedule into this much time"),
    close_mosaic: int = typer.Option(15, "--close-mosaic", help="train the last N epochs without mosaic"),
    mosaic: float = typer.Option(1.0, "--mosaic", help="share of batches built as 4-image mosaics (smaller faces)"),
    scale: float = typer.Option(0.5, "--scale", help="random zoom range, +-"),
    lr0: Optional[float] = typer.Option(None, "--lr0", help="AdamW's starting rate [default: ultralytics' "
                                        "automatic choice, AdamW at 0.002 for this data set's size]"),
    warmup_epochs: float = typer.Option(3.0, "--warmup-epochs"),
    device: str = typer.Option("cpu", "--device", help="cpu, 0, 0,1 ..."),
    workers: int = typer.Option(4, "--workers"),
    resume: bool = typer.Option(False, "--resume", help="continue from RUN/weights/last.pt"),
    init: Optional[Path] = typer.Option(None, "--init", help="start a new schedule from this checkpoint's weights"),
    export: Optional[Path] = typer.Option(None, "--export", help="also write vidface's safetensors here"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="CPU threads (default: every CPU; ultralytics alone takes one fewer)"),
) -> None:
    """Train YOLOv8n-pose (1 class, 5 landmarks) with ultralytics' trainer, from scratch or --init."""
    from ..detect import export_checkpoint
    from .train.detector import DetectorRecipe, train_detector

    recipe = DetectorRecipe(epochs=epochs, imgsz=imgsz, batch=batch, close_mosaic=close_mosaic, mosaic=mosaic,
                            scale=scale, warmup_epochs=warmup_epochs)
    if lr0 is not None:
        recipe.optimizer, recipe.lr0 = "AdamW", lr0
    best = train_detector(data, run_dir, recipe, device=device, workers=workers, resume=resume, time_hours=hours,
                          init=init, threads=threads)
    out.print(f"best checkpoint: {best}")
    if export:
        out.print(f"exported: {export_checkpoint(best, export)}")


@train_app.command("export-detector")
def export_detector_command(
    checkpoint: Path = typer.Argument(..., help="ultralytics checkpoint written by 'vidface train detector'"),
    destination: Path = typer.Option(Path("weights/yolov8n-face.safetensors"), "--to"),
    pt_copy: Optional[Path] = typer.Option(None, "--pt", help="also copy the ultralytics .pt here"),
) -> None:
    """Convert our own training checkpoint to vidface's safetensors (and optionally keep the .pt)."""
    from ..detect import export_checkpoint
    from .train.detector import export_detector

    out.print(f"exported: {export_checkpoint(checkpoint, destination)}")
    if pt_copy:
        out.print(f"copied: {export_detector(checkpoint, pt_copy)}")


@train_app.command("calibrate-detector")
def calibrate_detector_command(
    weights: Path = typer.Argument(..., help="detector .safetensors (its metadata is rewritten)"),
    data: Path = typer.Option(Path("cache/widerface-pose/data.yaml"), "--data", help="data set whose hold-out is used"),
    imgsz: int = typer.Option(640, "--imgsz"),
    min_face: float = typer.Option(12.0, "--min-face", help="faces smaller than this (px) are ignored"),
) -> None:
    """Choose the detector's default --det-conf: best F1 on the training hold-out (never on val-eval)."""
    from ..detect import FaceDetector, update_detector_metadata
    from .evaluation.calibration import calibrate_detector, holdout_images

    detector = FaceDetector(weights, "cpu", imgsz=imgsz, conf=0.02, max_det=1000)
    result = calibrate_detector(detector, holdout_images(data), min_face=min_face)
    update_detector_metadata(weights, det_conf=round(result.threshold, 3))
    out.print(f"det_conf {result.threshold:.3f} stored in {weights}: F1 {result.f1:.3f}, precision "
              f"{result.precision:.3f}, recall {result.recall:.3f} ({result.faces} faces in {result.images} images)")


@train_app.command("quantise-detector")
def quantise_detector_command(
    weights: Path = typer.Argument(Path("weights/yolov8n-face.safetensors"), help="detector .safetensors"),
    images: int = typer.Option(200, "--images", min=1, help="WIDER training images to calibrate on"),
    destination: Optional[Path] = typer.Option(None, "--to", help="the int8 network's .xml (its .bin and .json beside "
                                               "it) [default: WEIGHTS-int8.xml beside the weights]"),
    imgsz: int = typer.Option(640, "--imgsz"),
) -> None:
    """The detector's int8 network for ``--backend openvino-int8``,
    calibrated on WIDER training images (a seeded sample of train-subset, never val-eval). Run it last,
    after calibrate-detector: the graph is used only with the exact weights it was made from."""
    from .datasets import data_root, require
    from .train.quantise import quantise_detector

    pool = sorted(require(data_root() / "widerface" / "train-subset" / "images", "WIDER train-subset").glob("*.jpg"))
    chosen = np.random.default_rng(0).choice(len(pool), min(images, len(pool)), replace=False)
    graph, record = quantise_detector(weights, [pool[i] for i in sorted(chosen)], destination, imgsz=imgsz)
    out.print(f"int8 network: {graph} ({graph.with_suffix('.bin').stat().st_size / 1e6:.1f} MB), calibrated on "
              f"{record['calibration']['images']} WIDER training images in {record['minutes']:.1f} min")


@train_app.command("embedder")
def train_embedder_command(
    config: Path = typer.Option(Path("configs/embedder-cpu.json"), "--config"),
    run_dir: Path = typer.Option(Path("runs/embedder"), "--run"),
    device: str = typer.Option("cpu", "--device"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN/last.ckpt (optimizer, schedule, epoch)"),
    init: Optional[str] = typer.Option(None, "--init", help="start a new schedule from 'imagenet' (EfficientNet-Lite0) "
                                       "or from this last.ckpt's weights, or from a shipped .safetensors (network only); "
                                       "default: the config's 'init'"),
    export: Optional[Path] = typer.Option(None, "--export", help="copy the trained weights (+ .json) here"),
) -> None:
    """Train EfficientNet-B0 + ArcFace with distillation from dlib (config in JSON)."""
    import shutil
    from dataclasses import replace

    from .train.embedder import EmbedderTrainConfig, train_embedder

    recipe = EmbedderTrainConfig.load(config)
    checkpoint = None
    if init in ("imagenet", "random"):
        recipe = replace(recipe, init=init)
    elif init is not None:
        checkpoint = Path(init)
        if not checkpoint.is_file():
            raise typer.BadParameter(f"--init takes 'imagenet', 'random' or a checkpoint file; {init} is none")
    weights = train_embedder(recipe, run_dir, device=device, resume=resume, init=checkpoint)
    if export:
        export.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, export)
        shutil.copyfile(weights.with_suffix(".json"), export.with_suffix(".json"))
        out.print(f"exported: {export}")


@train_app.command("embedder-speed")
def embedder_speed_command(
    config: Path = typer.Option(Path("configs/embedder-cpu.json"), "--config"),
    crops: int = typer.Option(1024, "--crops", help="training crops to draw the batches from"),
    steps: int = typer.Option(12, "--steps", help="timed optimizer steps per variant (after 2 untimed)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the table here"),
) -> None:
    """Training throughput on this CPU: fp32 vs bf16 autocast, with and without channels-last."""
    from dataclasses import asdict

    from .train.embedder import EmbedderTrainConfig, gather_training_data, load_crops, measure_step_speed

    recipe = EmbedderTrainConfig.load(config)
    if recipe.threads:
        import torch

        torch.set_num_threads(recipe.threads)
    paths, _, teacher, _ = gather_training_data(recipe)
    chosen = np.random.default_rng(recipe.seed).choice(len(paths), min(crops, len(paths)), replace=False)
    images = load_crops([paths[i] for i in chosen], 112)
    results = measure_step_speed(recipe, images, teacher[chosen], steps=steps)
    table = Table("variant", "images/s", "loss at start", "loss after")
    for row in results:
        table.add_row(row.variant, f"{row.images_per_s:.1f}", f"{row.first_loss:.4f}", f"{row.last_loss:.4f}")
    out.print(table)
    if json_out:
        write_json_atomic({"config": str(config), "batch_size": recipe.batch_size, "steps": steps,
                           "results": [asdict(row) for row in results]}, json_out)


@train_app.command("embedder-soup")
def embedder_soup_command(
    out_weights: Path = typer.Argument(..., help="the soup's .safetensors (and .json) to write"),
    sources: list[Path] = typer.Argument(..., help="two or more fine-tunes of one start (.safetensors)"),
) -> None:
    """Average several fine-tuned embedders' weights (a uniform model soup); recentre and recalibrate it after."""
    from .train.embedder import average_embedders

    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise typer.BadParameter(f"no such embedder: {', '.join(missing)}")
    try:
        average_embedders(sources, out_weights)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    out.print(f"soup of {len(sources)} embedders written: {out_weights}")


@train_app.command("embedder-centre")
def embedder_centre_command(
    weights: Path = typer.Argument(..., help="embedder .safetensors (its .json is rewritten)"),
    config: Path = typer.Option(Path("configs/embedder-cpu.json"), "--config", help="the training config (for its crops)"),
    crops: Optional[Path] = typer.Option(None, "--crops", help="average these aligned crops instead (for example "
                                         "cache/faces-wider: faces aligned the way the pipeline aligns them)"),
    limit: int = typer.Option(4000, "--limit", help="crops to average"),
) -> None:
    """Measure the mean embedding of aligned crops and store it in the weights' config (subtracted before use)."""
    from .train.embedder import EmbedderTrainConfig, store_embedding_centre, training_crops

    if crops is not None:
        from .train.embedder import crop_files

        paths = crop_files(crops)
        if not paths:
            raise typer.BadParameter(f"no aligned crops in {crops}")
    else:
        paths, *_ = training_crops(EmbedderTrainConfig.load(config))
    centre = store_embedding_centre(weights, paths, limit=limit)
    out.print(f"centre stored in {weights.with_suffix('.json')}: norm {float(np.linalg.norm(centre)):.3f}")


def _detector_fn(model: str, imgsz: int, conf: float, backend: str = "torch", judge: Path | None = None,
                 closeups: bool = False):
    """``image -> (P, 5)`` for our weights (a path) or a teacher name; ``judge``: an embedder whose
    face/non-face head drops the faces it judges (each detection on its own: a photo has no tracks);
    ``closeups``: our detector with its close-up pass, as the pipeline runs it on video frames."""
    if model in TEACHERS:
        teacher = _teacher(model, conf, yunet_upscale=1.0, scrfd_size=imgsz)

        def run_teacher(image):
            found = teacher(image)
            return np.concatenate([found.boxes, found.scores[:, None]], axis=1)

        return run_teacher
    from ..detect import FaceDetector
    from ..pipeline import resolve_backend

    backend = resolve_backend(backend, "cpu")
    detector = FaceDetector(Path(model), "cpu", imgsz=imgsz, conf=conf, max_det=1000, backend=backend,
                            closeups=closeups)
    embedder = None
    if judge is not None:
        from ..embed import FaceEmbedder

        embedder = FaceEmbedder(judge, "cpu", flip=True, backend=backend)
        if not embedder.judges_faces:
            raise typer.BadParameter(f"{judge} has no face/non-face head (vidface eval face-quality --store)")

    def run_ours(image):
        faces = detector([image])[0]
        if embedder is not None:
            from ..align import align_face

            least = embedder.config.non_face_min_height
            judged = [i for i, f in enumerate(faces) if f.height >= least]
            if judged:
                _, logits = embedder.embed_and_judge([align_face(image, faces[i].landmarks, faces[i].box)
                                                      for i in judged])
                dropped = {i for i, logit in zip(judged, logits) if logit > 0}
                faces = [f for i, f in enumerate(faces) if i not in dropped]
        return np.array([[*f.box, f.score] for f in faces]).reshape(-1, 5)

    return run_ours


@eval_app.command("widerface")
def eval_widerface(
    model: str = typer.Option(..., "--model", help="detector .safetensors, or a teacher: yunet, scrfd, centerface"),
    imgsz: int = typer.Option(640, "--imgsz"),
    conf: float = typer.Option(0.01, "--conf", help="lowest score kept (the PR curve needs low scores)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N val-eval images"),
    landmark_teacher: Optional[str] = typer.Option(None, "--landmarks-vs",
                                                   help="also measure our landmarks against a teacher: yunet, scrfd, centerface"),
    backend: str = BackendOption,
    judge: Optional[Path] = typer.Option(None, "--non-face-filter", metavar="EMBEDDER",
                                         help="drop the faces this embedder's face/non-face head judges not a face"),
    operating_score: Optional[float] = typer.Option(
        None, "--operating-score", metavar="SCORE", help="report false positives per image and recall at this score  "
        "[default: our detector's calibrated det_conf; none for a teacher or uncalibrated weights]"),
    closeups: bool = typer.Option(False, "--closeups/--no-closeups",
                                  help="our detector with its close-up pass, as annotate runs it (default: one pass)"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Official WIDER FACE protocol on val-eval: AP for easy, medium and hard."""
    from tqdm import tqdm

    from .evaluation.widerface import evaluate_detector

    if operating_score is None and model not in TEACHERS:
        from ..detect import read_detector_metadata

        stored = read_detector_metadata(Path(model)).get("det_conf")  # uncalibrated weights (a checkpoint): none
        operating_score = None if stored is None else float(stored)
    bar = tqdm(unit="img", desc=f"WIDER val-eval {Path(model).name}")
    report = evaluate_detector(_detector_fn(model, imgsz, conf, backend, judge, closeups), limit=limit,
                               operating_score=operating_score,
                               progress=lambda done, total: (setattr(bar, "total", total), bar.update(1)))
    bar.close()
    table = Table(title=f"WIDER FACE val-eval ({report.images} images, imgsz {imgsz}): {model}")
    for subset in report.ap:
        table.add_column(subset)
    table.add_row(*[f"{ap:.3f}" for ap in report.ap.values()])
    out.print(table)
    result = {"model": model, "imgsz": imgsz, "backend": backend, "images": report.images, "ap": report.ap,
              "non_face_filter": None if judge is None else str(judge), "closeups": closeups}
    if report.operating is not None:
        from dataclasses import asdict

        point = report.operating
        out.print(f"at score {point.score:.3f}: {point.false_positives_per_image:.3f} boxes on no face per image, "
                  f"{point.hard_recall:.3f} of the counted faces found")
        result["operating"] = asdict(point)
    if landmark_teacher:
        from ..detect import FaceDetector
        from .evaluation.widerface import landmark_nme

        ours = FaceDetector(Path(model), "cpu", imgsz=imgsz, conf=None)  # the calibrated threshold, as the pipeline runs it
        teacher = _teacher(landmark_teacher, 0.6)

        def our_points(image):
            faces = ours([image])[0]
            return np.array([f.box for f in faces]).reshape(-1, 4), [f.landmarks for f in faces]

        def their_points(image):
            found = teacher(image)
            return found.boxes, list(found.landmarks)

        nme, faces = landmark_nme(our_points, their_points, limit=limit)
        out.print(f"landmark NME vs {landmark_teacher} (mean point error / sqrt(box area)): {nme:.4f} over {faces} faces")
        result["landmarks"] = {"teacher": landmark_teacher, "nme": nme, "faces": faces}
    if json_out:
        write_json_atomic(result, json_out)


@eval_app.command("lfw")
def eval_lfw(
    model: str = typer.Option(..., "--model", help="embedder .safetensors, or 'dlib' for the teacher"),
    flip: bool = typer.Option(False, "--flip", help="also report flip-augmented embeddings"),
    device: str = typer.Option("cpu", "--device"),
    backend: str = BackendOption,
    json_out: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """LFW 10-fold verification: accuracy, threshold, AUC, TAR@FAR."""
    from .evaluation.lfw import evaluate_lfw, load_lfw_bin

    images, same = load_lfw_bin()
    if model == "dlib":
        from .train.dlib_teacher import DlibTeacher

        embed = DlibTeacher().embed_aligned
        reports = {"plain": evaluate_lfw(embed, images, same)}
        if flip:  # dlib has no mirrored pass of its own: add the mirrored crops' vectors here
            reports["flip"] = evaluate_lfw(embed, images, same, flip=True)
    else:
        from ..embed import FaceEmbedder

        reports = {"plain": evaluate_lfw(FaceEmbedder(Path(model), device, backend=backend), images, same)}
        if flip:  # exactly as the pipeline embeds with --flip-embed
            reports["flip"] = evaluate_lfw(FaceEmbedder(Path(model), device, flip=True, backend=backend), images, same)
    table = Table(title=f"LFW (6,000 pairs, 10 folds): {model}")
    for column in ("variant", "accuracy", "best threshold", "F1", "ROC AUC", "TAR@FAR=1e-2", "TAR@FAR=1e-3"):
        table.add_column(column)
    for variant, report in reports.items():
        table.add_row(variant, f"{report.accuracy_mean:.4f} ± {report.accuracy_std:.4f}", f"{report.best_threshold:.3f}",
                      f"{report.best_f1:.4f}", f"{report.roc_auc:.4f}", f"{report.tar_at_far_1e2:.4f}",
                      f"{report.tar_at_far_1e3:.4f}")
    out.print(table)
    if json_out:
        write_json_atomic({"model": model, **{k: v.as_dict() for k, v in reports.items()}}, json_out)


@eval_app.command("videofaceid")
def eval_videofaceid(
    detector: Optional[Path] = DetectorOption,
    embedder: Optional[Path] = EmbedderOption,
    device: str = DeviceOption,
    det_conf: Optional[float] = DetConfOption,
    track_conf: Optional[float] = TrackConfOption,
    match_threshold: Optional[float] = MatchThresholdOption,
    frame_skip: int = FrameSkipOption,
    embed_every: Optional[int] = EmbedEveryOption,
    closeup_every: Optional[int] = CloseupEveryOption,
    imgsz: int = ImgszOption,
    closeups: bool = CloseupsOption,
    flip_embed: bool = FlipOption,
    backend: str = BackendOption,
    json_out: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """End-to-end: every real clip against its truth (found, named right, unknowns rejected)."""
    from .evaluation.videofaceid import evaluate_clips
    from ..pipeline import AnnotateSettings

    values = {k: v for k, v in dict(detector=detector, embedder=embedder, embed_every=embed_every,
                                    closeup_every=closeup_every, track_conf=track_conf).items() if v is not None}
    settings = AnnotateSettings(device=device, det_conf=det_conf, match_threshold=match_threshold,
                                frame_skip=frame_skip, imgsz=imgsz, closeups=closeups, flip_embed=flip_embed,
                                backend=backend, write_video=False, **values)
    report = evaluate_clips(settings)
    table = Table(title="videofaceid: truth boxes found (IoU >= 0.3), named right or wrong, unknowns rejected")
    for column in ("clip", "truth boxes", "found", "named right", "named wrong", "unknown rejected",
                   "names without truth", "boxes without truth"):
        table.add_column(column)
    for row in report["clips"] + [report["total"]]:
        table.add_row(row["clip"], str(row["truth_boxes"]), f"{row['found']:.3f}", f"{row['named_right']:.3f}",
                      f"{row['named_wrong']:.3f}",
                      "-" if row["unknown_rejected"] is None else f"{row['unknown_rejected']:.3f}",
                      str(row["false_names"]), str(row["boxes_without_truth"]))
    out.print(table)
    if json_out:
        write_json_atomic(report, json_out)


@eval_app.command("threshold")
def eval_threshold(
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="a gallery folder; default: videofaceid's"),
    embedder: Optional[Path] = EmbedderOption,
    detector: Optional[Path] = DetectorOption,
    max_unknown_named: Optional[float] = typer.Option(
        None, "--max-unknown-named", min=0.0, max=1.0,
        help="cap on the share of strangers named; default: best mean of named-right and strangers-rejected"),
    histogram: Optional[Path] = typer.Option(None, "--histogram", help="PNG of the leave-one-out top similarities"),
    store: bool = typer.Option(False, "--store", help="make it the embedder's default --match-threshold"),
) -> None:
    """Open-set threshold from a gallery alone: each photo plays a known face, then a stranger (leave-one-out)."""
    from ..embed import update_embedder_config
    from .evaluation.open_set import choose_threshold, open_set_histogram
    from .evaluation.videofaceid import gallery_open_set_scores

    values = {k: v for k, v in dict(detector=detector, embedder=embedder).items() if v is not None}
    settings = _f32_settings(**values)
    scores, known = gallery_open_set_scores(settings, gallery)
    try:
        threshold = round(choose_threshold(scores, max_unknown_named), 3)
    except ValueError as error:
        raise GalleryError(f"gallery {known.folder}: {error}") from None
    out.print(f"{len(known.embeddings)} usable photos of {len(known.names)} people; own person on top for "
              f"{scores.known_right.mean():.1%} of {len(scores.known_top)} known queries")
    out.print(f"threshold {threshold:.3f}: names {scores.named_right(threshold):.1%} of known queries right, "
              f"rejects {scores.unknown_rejected(threshold):.1%} of {len(scores.unknown_top)} strangers")
    stored = float(json.loads(Path(settings.embedder).with_suffix(".json").read_text())["match_threshold"])
    out.print(f"at the embedder's stored threshold {stored:.3f}: names {scores.named_right(stored):.1%} right, "
              f"rejects {scores.unknown_rejected(stored):.1%} of strangers")
    if histogram:  # with the threshold the pipeline will use
        open_set_histogram(scores, threshold if store else stored, histogram,
                           title=f"{known.folder.name}: leave-one-out top similarity")
        out.print(f"histogram: {histogram}")
    if store:
        out.print(f"stored in {update_embedder_config(settings.embedder, match_threshold=threshold)}")


@eval_app.command("open-set")
def eval_open_set(
    config: Path = typer.Option(Path("configs/embedder-cpu-imagenet.json"), "--config",
                                help="the embedder's training config: which people it held out for calibration"),
    embedder: Optional[Path] = EmbedderOption,
    cohort_size: int = typer.Option(1000, "--cohort", help="unlabelled training faces in the stranger cohort"),
    track_size: int = typer.Option(4, "--track-size", help="crops averaged into one pseudo-track"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report here"),
    store: bool = typer.Option(False, "--store", help="store the pseudo-track threshold as the embedder's default "
                               "--match-threshold, with its link and photo check thresholds"),
) -> None:
    """Track-level open-set rules on pseudo-tracks of the people held out of training (never evaluation data)."""
    from dataclasses import asdict

    from ..embed import FaceEmbedder, update_embedder_config
    from .evaluation.open_set import compare_rules, impostor_photo_scores, link_threshold, photo_check_threshold
    from ..pipeline import default_embedder
    from .train.embedder import EmbedderTrainConfig, calibration_people, crop_files, load_crops

    recipe = EmbedderTrainConfig.load(config)
    people = calibration_people(recipe)
    if not people:
        raise typer.BadParameter(f"{config} holds nobody out for calibration (calibration_every is 0)")
    weights = embedder or default_embedder()
    model = FaceEmbedder(weights, "cpu", flip=True)
    paths, owners = [], []
    for index, person in enumerate(people):
        crops = crop_files(person)
        paths += crops
        owners += [index] * len(crops)
    embeddings, owners = model(list(load_crops(paths, model.config.input_size))), np.array(owners)
    from .datasets import data_root

    pool = [p for name in recipe.unlabelled_sets if (data_root() / name).is_dir() for p in crop_files(data_root() / name)]
    chosen = np.random.default_rng(recipe.seed).choice(len(pool), min(cohort_size, len(pool)), replace=False)
    cohort = model(list(load_crops([pool[i] for i in chosen], model.config.input_size)))
    reports = compare_rules(embeddings, owners, cohort, track_size=track_size)
    table = Table("rule", "threshold", "cross-half balanced", "named right", "strangers rejected", "own on top")
    for row in reports:
        table.add_row(row.rule, f"{row.threshold:.3f}", f"{row.cross_balanced:.3f}", f"{row.named_right:.3f}",
                      f"{row.unknown_rejected:.3f}", f"{row.own_on_top:.3f}")
    out.print(f"{len(paths)} crops of {len(people)} held-out people, cohort of {len(cohort)} faces, "
              f"tracks of {track_size} crops")
    out.print(table)
    link = link_threshold(embeddings, owners, track_size=track_size)
    out.print(f"link threshold (the most alike pair of different people's {track_size}-crop tracks): {link:.3f}")
    photo_check = photo_check_threshold(embeddings, owners)
    impostors_reported = float((impostor_photo_scores(embeddings, owners) < photo_check).mean())
    out.print(f"photo check threshold (0.5 % of genuine photos in 10-photo galleries score below it): "
              f"{photo_check:.3f}; a photo of someone else filed under a person is reported "
              f"{impostors_reported:.1%} of the time")
    if json_out:
        write_json_atomic({"embedder": str(weights), "people": len(people), "crops": len(paths),
                           "cohort": len(cohort), "track_size": track_size, "link_threshold": round(link, 4),
                           "photo_check_threshold": round(photo_check, 4),
                           "impostor_photos_reported": round(impostors_reported, 4),
                           "rules": [asdict(r) for r in reports]}, json_out)
    if store:
        cosine = next(r for r in reports if r.rule == "cosine")
        stored = update_embedder_config(weights, match_threshold=round(cosine.threshold, 3),
                                        link_threshold=round(link, 3),
                                        photo_check_threshold=round(photo_check, 3))
        out.print(f"stored in {stored}")


@eval_app.command("face-quality")
def eval_face_quality(
    detector: Optional[Path] = DetectorOption,
    det_conf: Optional[float] = DetConfOption,
    embedder: Optional[Path] = EmbedderOption,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N training images"),
    also_detectors: list[Path] = typer.Option([], "--also-detector", metavar="WEIGHTS",
                                              help="other detector weights whose detections of the same images "
                                              "(each at its own calibrated score) join the report and the fit: "
                                              "more false faces to learn from; repeatable"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report here"),
    store: bool = typer.Option(False, "--store", help="fit the face/non-face head on the embedder's stage features "
                               "of every detection and store it in the embedder's config, calibrated to cost "
                               "the smaller share of the real faces it judges (0.5 %)"),
) -> None:
    """Face-quality cues against the detector's false faces on the WIDER training images (never val-eval):
    the share of false faces each rejects at a cost of 1 % and 0.5 % of the real ones."""
    import cv2

    from ..embed_net import load_embedder_net
    from ..pipeline import Models
    from ..embed import update_embedder_config
    from ..detect import FaceDetector
    from .evaluation.face_quality import (TRUE_LOSSES, calibrated_non_face_head, gather_detections, pooled_samples,
                                          quality_report, stage_features)
    from .train.widerface_data import training_images

    values = {k: v for k, v in dict(detector=detector, det_conf=det_conf, embedder=embedder).items() if v is not None}
    models = Models.load(_f32_settings(**values))
    network, network_config = load_embedder_net(models.embedder.weights_path)
    network.eval()
    for path in also_detectors:
        if not path.is_file():
            raise typer.BadParameter(f"detector weights not found: {path}", param_hint="--also-detector")
    detectors = [models.detector] + [FaceDetector(path, models.device, imgsz=models.detector.imgsz,
                                                  closeups=models.detector.closeups, backend=models.detector.backend)
                                     for path in also_detectors]
    records = training_images()[:limit]
    teacher = _teacher(REAL_FACE_TEACHER, REAL_FACE_TEACHER_CONF)
    sample = pooled_samples([gather_detections(records, detector, models.embedder, teacher,
                                               lambda path: cv2.imread(str(path)),
                                               mid_features=lambda crops: stage_features(network, network_config, crops))
                             for detector in detectors])
    rows = quality_report(sample, models.embedder.config.centre)
    table = Table("cue", "faces from (px)", "real", "false",
                  *(f"false rejected at {loss:.1%} of real lost" for loss in TRUE_LOSSES))
    for row in rows:
        table.add_row(row["cue"], f"{row['min_height']:.0f}", str(row["real"]), str(row["false"]),
                      *(f"{row[f'rejected_at_{loss:.3f}']:.1%}" for loss in TRUE_LOSSES))
    out.print(f"{len(sample.false)} detections on {len(records)} training images, {int(sample.false.sum())} false")
    out.print(table)
    if json_out:
        write_json_atomic({"detector": str(models.detector.weights_path),
                           "also_detectors": [str(path) for path in also_detectors], "images": len(records),
                           "detections": int(len(sample.false)), "rows": rows}, json_out)
    if store:
        least = models.embedder.config.non_face_min_height
        head = calibrated_non_face_head(sample, least, TRUE_LOSSES[-1])
        stored = update_embedder_config(models.embedder.weights_path, non_face_head=[round(v, 6) for v in head])
        out.print(f"face/non-face head ({len(head) - 1} stage features) for faces of at least {least:g} px, "
                  f"costing {TRUE_LOSSES[-1]:.1%} of the real ones here: stored in {stored}")


@eval_app.command("peers")
def eval_peers(
    video: Path = typer.Argument(..., help="a clip (the same one for both)"),
    gallery: Path = typer.Option(..., "--gallery", help="vidface's gallery for the run"),
    peer_python: str = typer.Option(..., "--peer-python", help="the Python of a virtual environment with insightface"),
    every: int = typer.Option(5, "--every", min=1, help="detect on every N-th frame (vidface: --frame-skip N-1)"),
    backend: str = BackendOption,
    embed_every: Optional[int] = EmbedEveryOption,
    repeat: int = typer.Option(1, "--repeat", min=1,
                               help="run the pair this many times, one after the other; the ratios are medians"),
    json_out: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Equal work against insightface, each in its own process: wall time, CPU time, peak memory
    (``--embed-every 1``: vidface embeds every face too, as insightface does)."""
    import tempfile
    from dataclasses import asdict

    from .datasets import data_root, require
    from .evaluation.peers import compare_with_insightface, median_ratios

    scrfd = require(data_root() / "models" / "scrfd_500m_bnkps.onnx", "SCRFD-500M model")
    extra = () if embed_every is None else ("--embed-every", str(embed_every))
    with tempfile.TemporaryDirectory() as scratch:
        pairs = [compare_with_insightface(video, gallery, peer_python, scrfd, Path(scratch), every, backend=backend,
                                          extra_args=extra)
                 for _ in range(repeat)]
    embedded = "every face" if embed_every == 1 else f"tracked faces every {embed_every or 'default'} passes"
    table = Table(title=f"{video.name}: detection on every {every}th frame; insightface embeds every face, "
                        f"vidface {embedded}")
    for column in ("run", "wall s", "CPU s", "peak MiB", "frames", "faces"):
        table.add_column(column)
    for number, rows in enumerate(pairs, start=1):
        for row in rows:
            table.add_row(row.name if repeat == 1 else f"{row.name} #{number}", f"{row.wall_s:.2f}", f"{row.cpu_s:.2f}",
                          f"{row.peak_mb:.0f}", str(row.detail.get("frames", "")), str(row.detail.get("faces", "")))
    out.print(table)
    ratios = median_ratios(pairs)
    walls = [ours.wall_s / peer.wall_s for peer, ours in pairs]
    spread = "" if repeat == 1 else f" (median of {repeat}; wall {min(walls):.2f}-{max(walls):.2f}x)"
    out.print(f"vidface / insightface: wall {ratios['wall_s']:.2f}x, CPU {ratios['cpu_s']:.2f}x, "
              f"memory {ratios['peak_mb']:.2f}x{spread}")
    if json_out:
        write_json_atomic({"video": str(video), "every": every, "embed_every": embed_every,
                           "rows": [asdict(r) for rows in pairs for r in rows],
                           "median_ratios": {k: round(v, 4) for k, v in ratios.items()}}, json_out)


@eval_app.command("backends")
def eval_backends(
    video: Path = typer.Argument(..., metavar="VIDEO", help="a clip with faces (for example a 720p one)"),
    frames: int = typer.Option(96, "--frames", min=8, help="frames of the clip to run"),
    calibration: int = typer.Option(32, "--calibration", min=0,
                                    help="WIDER training images (and 8x as many training crops) to calibrate int8 on"),
    config: Path = typer.Option(Path("configs/embedder-cpu-imagenet.json"), "--config",
                                help="the embedder's training config (where its training crops are)"),
    repeat: int = typer.Option(3, "--repeat", min=1, help="rounds over every engine; speeds are their medians"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the table here"),
) -> None:
    """Inference engines side by side on this CPU: PyTorch, ONNX Runtime fp32 and int8, OpenVINO."""
    from dataclasses import asdict

    from ..pipeline import AnnotateSettings
    from .datasets import data_root
    from .evaluation.backends import compare_engines
    from .train.embedder import EmbedderTrainConfig, load_crops, training_crops

    settings = AnnotateSettings(device="cpu")
    images, crops = [], None
    if calibration:
        wider = data_root() / "widerface" / "train-subset" / "images"
        images = sorted(wider.glob("*.jpg"))[:calibration]
        paths, *_ = training_crops(EmbedderTrainConfig.load(config))
        chosen = np.random.default_rng(0).choice(len(paths), min(8 * calibration, len(paths)), replace=False)
        crops = load_crops([paths[i] for i in chosen], 112)
    rows = compare_engines(video, settings, frames, images, crops, log=lambda line: err.print(line, markup=False),
                           repeat=repeat)
    table = Table("engine", "detect frames/s", "embed crops/s", "faces agree", "embedding cosine (min)", "note",
                  title=f"inference engines, {frames} frames of {video.name}, 2 threads, medians of {repeat} rounds")
    for row in rows:
        def cell(value, digits):
            return "-" if value is None else f"{value:.{digits}f}"

        table.add_row(row.engine, cell(row.detect_fps, 1), cell(row.embed_crops_per_s, 1), cell(row.faces_agree, 3),
                      cell(row.embedding_cosine_min, 4), row.note)
    out.print(table)
    if json_out:
        write_json_atomic({"video": str(video), "frames": frames, "repeat": repeat, "rows": [asdict(r) for r in rows]},
                          json_out)

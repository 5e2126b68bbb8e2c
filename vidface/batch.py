"""``vidface batch``: annotate folders of video, safe to run again and again from cron.

- Each output gets a small manifest (``<name>.vidface.done.json``), written
  last, that records what produced it: the input's identity, the gallery,
  the models and the settings. A file whose manifest matches is skipped.
- Outputs are renamed into place only when complete; temporaries left by a
  killed run are removed at the next start, so an interrupted run is redone
  for exactly the files it did not finish.
- A lock file stops two runs from using one output folder; the lock of a
  process that no longer exists is taken over.
- A file that fails is recorded (``<name>.vidface.failed.json``) and the rest go
  on; it is retried when its input changes, or with ``retry_failed``. Until it
  succeeds it keeps the batch's exit code non-zero (cron's monitoring stays
  red), unless ``accept_known_failures`` is set and it failed before.
- ``batch-summary.json`` holds the last run; ``batch-history.jsonl`` gets a
  line per run; ``people.json`` and ``people.csv`` say who is in which video
  over everything annotated into the out-dir (from the manifests); a stranger
  seen in several videos is one ``stranger-N`` there, linked through the mean
  embeddings each run keeps beside its log (``<name>.vidface.faces.npz``).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BusyError, InputError, OutputError, VidfaceError
from .files import write_json_atomic, write_text_atomic

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts"}
LOCK_NAME = ".vidface-batch.lock"
SUMMARY_NAME = "batch-summary.json"
HISTORY_NAME = "batch-history.jsonl"
#: who appears in which video, over the whole out-dir (JSON, and CSV for spreadsheets)
INDEX_NAME = "people.json"
INDEX_CSV_NAME = "people.csv"
#: the manifest beside each finished output
DONE_SUFFIX = ".vidface.done.json"
#: each person's mean embedding beside each log (not an output a rerun waits for: older runs lack it)
EMBEDDINGS_SUFFIX = ".vidface.faces.npz"
#: exit code of a batch in which some files failed (others may have succeeded)
EXIT_SOME_FAILED = 10


@dataclass
class BatchItem:
    """One input file and where its outputs go (``relative`` mirrors the input layout)."""

    source: Path
    relative: Path
    status: str = "pending"
    error: str | None = None
    #: failed in an earlier run and not retried (its input and the recipe are unchanged)
    known_failure: bool = False
    frames: int = 0
    seconds: float = 0.0
    people: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"input": str(self.source), "output": str(self.relative), "status": self.status, "error": self.error,
                "known_failure": self.known_failure, "frames": self.frames, "seconds": round(self.seconds, 3),
                "people": self.people}


def collect_inputs(inputs: list[str], pattern: str = "*", recursive: bool = False) -> tuple[list[BatchItem], list[BatchItem]]:
    """Expand files, folders and globs; returns ``(items, missing)``."""
    items, missing, seen = [], [], set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(BatchItem(path, relative))

    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.glob("*")
            for file in sorted(found):
                # patterns match whatever the case: '*.mp4' takes y.MP4 too
                if not fnmatch.fnmatchcase(file.name.lower(), pattern.lower()):
                    continue
                if file.is_file() and file.suffix.lower() in VIDEO_SUFFIXES | _pattern_suffixes(pattern):
                    add(file, file.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif glob.has_magic(entry):
            base = Path(entry.split("*")[0].split("?")[0].split("[")[0] or ".")
            base = base if base.is_dir() else base.parent
            for match in sorted(glob.glob(entry, recursive=True)):
                file = Path(match)
                if file.is_file():
                    add(file, file.relative_to(base) if file.is_relative_to(base) else Path(file.name))
        else:
            missing.append(BatchItem(path, Path(path.name), "failed", "input not found"))
    return items, missing


def _pattern_suffixes(pattern: str) -> set[str]:
    suffix = Path(pattern).suffix.lower()
    return {suffix} if suffix and not glob.has_magic(suffix) else set()


class OutDirLock:
    """Exclusive lock on an output folder; a stale lock (dead process on this host) is taken over."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> "OutDirLock":
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"--out-dir is a file, not a folder: {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create --out-dir {folder}: {error.strerror or error}") from None
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner and self._alive(owner):
                    raise BusyError(f"another vidface batch (pid {owner.get('pid')}) is using {self.path.parent}") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as error:
                raise OutputError(f"cannot write in --out-dir {folder}: {error.strerror or error}") from None
            with os.fdopen(handle, "w") as stream:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, stream)
            self.held = True
            return self
        raise BusyError(f"could not lock {self.path.parent}")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            # being written this instant, or garbage: treat as held unless it is old
            try:
                return None if time.time() - self.path.stat().st_mtime > 60 else {"pid": -1, "host": socket.gethostname()}
            except OSError:
                return None

    @staticmethod
    def _alive(owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return True  # cannot tell for another machine: respect the lock
        pid = int(owner.get("pid", 0))
        if pid == -1:
            return True
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "OutDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def input_identity(path: Path) -> str:
    """Cheap identity of a video: size, modification time and hashes of its first and last MiB."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if stat.st_size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()[:24]


def gallery_identity(gallery) -> str:
    if gallery is None:
        return "none"
    digest = hashlib.sha256("\n".join(gallery.names).encode())
    digest.update(gallery.embeddings.tobytes())
    return digest.hexdigest()[:24]


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete hidden temporaries a killed run left behind; returns how many."""
    removed = 0
    for path in out_dir.rglob(".*"):
        if path.is_file() and _is_temporary(path.name) and path.name != LOCK_NAME:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _is_temporary(name: str) -> bool:
    """Names made by :func:`vidface.io.temporary_sibling` and :func:`vidface.files.write_atomically`."""
    return ".vidface-" in name or name.endswith(".tmp") or ".tmp." in name


class _Serialised:
    """Lets several decoding threads share one model: calls take turns."""

    def __init__(self, model, lock: threading.Lock):
        self._model, self._lock = model, lock

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


@dataclass
class BatchResult:
    items: list[BatchItem]
    summary_path: Path
    exit_code: int

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "skipped": 0}
        for item in self.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        return counts


@dataclass
class Job:
    """One file to annotate and where everything goes: plain data, so a Ray worker can take it."""

    source: Path
    video_out: Path | None
    log_out: Path
    done_file: Path
    identity: dict
    outputs: list[Path]


def annotate_job(job: Job, gallery, gallery_folder: Path | None, settings, models, on_frames=None) -> dict:
    """Annotate ``job``'s file into its outputs, the manifest published with them; raises :class:`VidfaceError`."""
    from .pipeline import annotate
    from .tracklog import video_appearances

    def manifest(result) -> dict:
        people = [row["identity"] for row in result.summary]
        return {"identity": job.identity, "frames": result.frames, "people": people,
                "outputs": [str(p) for p in job.outputs], "finished": time.time(),
                "video": os.path.abspath(job.source), "appearances": video_appearances(result.document)}

    job.log_out.parent.mkdir(parents=True, exist_ok=True)
    result = annotate(job.source, gallery, job.video_out, job.log_out, settings, models, overwrite=True,
                      gallery_path=gallery_folder, progress=on_frames, manifest=(job.done_file, manifest),
                      embeddings_out=embeddings_file(job.done_file))
    return {"frames": result.frames, "people": [row["identity"] for row in result.summary],
            "truncated": result.truncated, "warning": result.warning}


def run_batch(inputs: list[str], out_dir: Path, gallery_folder: Path | None, settings, pattern: str = "*",
              recursive: bool = False, jobs: int = 1, retry_failed: bool = False, models=None,
              on_item=None, on_start=None, on_frames=None, accept_known_failures: bool = False,
              ray_address: str | None = None) -> BatchResult:
    """Annotate every input into ``out_dir``; see the module docstring for the guarantees.

    on_start(items): called once with every item, before the first file;
    on_frames(item, done, total): frame progress of a file; on_item(item):
    each file's outcome as it is known. ray_address: run the files as Ray
    tasks (``"local"`` starts Ray on this machine; else a cluster address,
    or ``"auto"``); manifests, lock and reruns work as without it.
    """
    from .embed import file_fingerprint
    from .gallery import build_gallery
    from .pipeline import Models

    out_dir = Path(out_dir)
    items, missing = collect_inputs(inputs, pattern, recursive)
    if not items and not missing:
        raise InputError("no input videos found" + (f" matching {pattern!r}" if pattern != "*" else ""))
    if not items:
        raise InputError(f"no input found: {', '.join(str(m.source) for m in missing)}")
    if ray_address is not None:
        from .ray_batch import require_ray

        require_ray()
    if on_start:
        on_start(items)
    with OutDirLock(out_dir):
        remove_stale_temporaries(out_dir)
        models = models or Models.load(settings)
        gallery = build_gallery(gallery_folder, models.detector, models.embedder) if gallery_folder else None
        recipe = {
            "gallery": gallery_identity(gallery),
            "detector": file_fingerprint(models.detector.weights_path),
            "embedder": models.embedder.fingerprint,
            # the engine as asked, not as ``auto`` resolved it on this machine: like the device, moving the
            # folder to a machine with another CPU does not make finished work stale
            "settings": {**{k: v for k, v in settings.resolved(models).for_log().items()
                            if k not in ("detector", "embedder", "device")}, "backend": settings.backend},
        }

        def plan(item: BatchItem) -> Job | None:
            """The job for ``item``, or ``None`` when it is done already or failed before (status set)."""
            video_out = (out_dir / item.relative).with_suffix("")
            video_out = video_out.with_name(video_out.name + ".vidface.mp4")
            log_out = video_out.with_suffix(".json")
            done_file = video_out.with_name(video_out.name.replace(".vidface.mp4", DONE_SUFFIX))
            try:
                identity = {"input": input_identity(item.source), **recipe}
            except OSError as error:
                item.status, item.error = "failed", f"cannot read input: {error}"
                return None
            outputs = [log_out] + ([video_out] if settings.write_video else [])
            outputs += [log_out.with_suffix(".vtt"), log_out.with_suffix(".srt")] if settings.subtitles else []
            outputs += [log_out.with_suffix(".html")] if settings.report else []
            previous = _read_json(done_file)
            if previous and previous.get("identity") == identity and all(p.exists() for p in outputs):
                item.status, item.frames = "skipped", previous.get("frames", 0)
                item.people = previous.get("people", [])
                return None
            failed_before = _read_json(_failed_file(done_file))
            if failed_before and failed_before.get("identity") == identity and not retry_failed:
                item.status, item.known_failure = "failed", True
                item.error = f"failed in an earlier run, input unchanged: {failed_before.get('error')}"
                return None
            return Job(item.source, video_out if settings.write_video else None, log_out, done_file, identity,
                       outputs)

        def record(item: BatchItem, job: Job, outcome: dict) -> BatchItem:
            """Note what became of ``job``: a file's own failure is remembered, a lost worker's is not."""
            if "error" in outcome:
                item.status, item.error = "failed", outcome["error"]
                if not outcome.get("infrastructure"):
                    write_json_atomic({"identity": job.identity, "error": outcome["error"]}, _failed_file(job.done_file))
            else:
                item.status, item.frames, item.people = "ok", outcome["frames"], outcome["people"]
                if outcome["truncated"]:
                    item.error = f"truncated: {outcome['warning']}"
                _failed_file(job.done_file).unlink(missing_ok=True)
            if on_item:
                on_item(item)
            return item

        planned = [(item, plan(item)) for item in items]
        for item, job in planned:
            if job is None and on_item:
                on_item(item)
        pending = [(item, job) for item, job in planned if job is not None]
        if ray_address is not None and pending:
            from .ray_batch import run_on_ray

            run_on_ray(pending, gallery, gallery_folder, settings, ray_address, jobs, record)
        else:
            local_models = models
            if jobs > 1:
                lock = threading.Lock()
                local_models = Models(_Serialised(models.detector, lock), _Serialised(models.embedder, lock),
                                      models.device)

            def run_locally(pair: tuple[BatchItem, Job]) -> BatchItem:
                item, job = pair
                started = time.perf_counter()
                frames = (lambda done, total: on_frames(item, done, total)) if on_frames else None
                try:
                    outcome = annotate_job(job, gallery, gallery_folder, settings, local_models, frames)
                except VidfaceError as error:
                    outcome = {"error": str(error)}
                item.seconds = time.perf_counter() - started
                return record(item, job, outcome)

            if jobs > 1:
                with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vidface-batch") as pool:
                    list(pool.map(run_locally, pending))
            else:
                for pair in pending:
                    run_locally(pair)
        for item in missing:
            if on_item:
                on_item(item)
        all_items = items + missing
        summary = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "out_dir": str(out_dir),
            "counts": {},
            "files": [item.record() for item in all_items],
        }
        result = BatchResult(all_items, out_dir / SUMMARY_NAME, 0)
        summary["counts"] = result.counts()
        failing = [item for item in all_items if item.status == "failed"
                   and not (accept_known_failures and item.known_failure)]
        result.exit_code = EXIT_SOME_FAILED if failing else 0
        summary["exit_code"] = result.exit_code
        write_json_atomic(summary, result.summary_path)
        write_people_index(out_dir)
        history = {key: summary[key] for key in ("finished", "counts", "exit_code")}
        history["failed"] = [item.record()["input"] for item in all_items if item.status == "failed"]
        with open(out_dir / HISTORY_NAME, "a") as stream:
            stream.write(json.dumps(history) + "\n")
        return result


def write_people_index(out_dir: Path) -> Path:
    """``people.json`` and ``people.csv`` in ``out_dir``: who appears in which video, over every file
    annotated into it (this run's and earlier ones', whatever inputs they came from), read from the
    manifests (a manifest of an older version without ``appearances``: from its log), with the
    strangers seen in several videos linked (:func:`recurring_strangers`)."""
    from .tracklog import people_csv, people_index, video_appearances

    videos, manifests = [], []
    for done_file in sorted(out_dir.rglob("*" + DONE_SUFFIX)):
        manifest = _read_json(done_file)
        log = log_file(done_file)
        if not manifest or not log.is_file():
            continue
        rows, video = manifest.get("appearances"), manifest.get("video")
        if rows is None:
            document = _read_json(log)
            if not document or document.get("schema") != 1:
                continue
            rows, video = video_appearances(document), (document.get("input") or {}).get("path")
        relative = str(log.relative_to(out_dir))
        videos.append((relative, video, rows))
        manifests.append((relative, manifest, done_file))
    index = people_index(videos, recurring_strangers(manifests))
    write_text_atomic(people_csv(index), out_dir / INDEX_CSV_NAME)
    return write_json_atomic(index, out_dir / INDEX_NAME)


def recurring_strangers(manifests: list[tuple[str, dict, Path]]) -> dict[tuple[str, str], str]:
    """``{(log path, unknown-N): stranger-K}`` for the strangers one person is in several videos as.

    ``manifests``: ``(log path, manifest, done-file)`` per video. A stranger seen in
    fewer than :data:`~vidface.gallery.MIN_FACES_TO_LINK` faces is left alone. Only embeddings of
    one embedder are comparable, so each embedder's videos are linked apart, at the
    strictest match threshold its runs used (:func:`vidface.gallery.link_strangers`).
    Videos are taken in the order they were annotated, so a stranger keeps their
    number when later videos join the out-dir.
    """
    from .gallery import MIN_FACES_TO_LINK, link_strangers
    from .pipeline import read_people_embeddings

    by_embedder: dict[str, list[tuple[float, str, float, dict]]] = {}
    for log_path, manifest, done_file in manifests:
        identity = manifest.get("identity") or {}
        threshold = (identity.get("settings") or {}).get("match_threshold")
        strangers = {name: person.embedding for name, person in read_people_embeddings(embeddings_file(done_file)).items()
                     if not person.known and person.faces >= MIN_FACES_TO_LINK}
        if strangers and identity.get("embedder") and threshold is not None:
            by_embedder.setdefault(identity["embedder"], []).append(
                (float(manifest.get("finished", 0.0)), log_path, float(threshold), strangers))
    linked: dict[tuple[str, str], str] = {}
    for embedder in sorted(by_embedder):
        runs = sorted(by_embedder[embedder], key=lambda run: run[:2])
        keys = [(log_path, unknown) for _, log_path, _, strangers in runs for unknown in strangers]
        vectors = [vector for *_, strangers in runs for vector in strangers.values()]
        if len({vector.shape for vector in vectors}) != 1:
            continue
        groups = link_strangers(np.stack(vectors), np.array([log for log, _ in keys]), max(run[2] for run in runs))
        shared = [group for group in dict.fromkeys(groups) if np.count_nonzero(groups == group) > 1]
        for group in shared:
            name = f"stranger-{len(set(linked.values())) + 1}"
            for key, member in zip(keys, groups):
                if member == group:
                    linked[key] = name
    return linked


def archive_manifests(out_dir: Path) -> list[Path]:
    """The manifests of the videos annotated into a batch's ``out_dir``; :class:`InputError` if it has none."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"archive not found: {out_dir} (a vidface batch --out-dir)")
    done_files = sorted(out_dir.rglob("*" + DONE_SUFFIX))
    if not done_files:
        raise InputError(f"no annotated video in {out_dir} (a vidface batch --out-dir)")
    return done_files


def search_archive(out_dir: Path, vector, embedder_fingerprint: str, top: int = 8) -> tuple[list[dict], int]:
    """The ``top`` people of every video annotated into ``out_dir`` most like the face ``vector``
    (``(D,)`` unit embedding, from the embedder whose fingerprint is given), and how many videos
    could not be searched (another embedder made them, or a version that kept no embeddings).

    A row per (video, person): ``video``, ``log``, ``name`` (a gallery name or that video's
    ``unknown-N``), ``known``, ``recurring`` (``stranger-K``), ``similarity`` of the face to the
    person's mean embedding in that video, ``faces`` it averages, and when they are on screen.
    """
    out_dir = Path(out_dir)
    done_files = archive_manifests(out_dir)
    from .pipeline import read_people_embeddings

    index = _read_json(out_dir / INDEX_NAME) or {}
    recurring = {(entry.get("log"), entry.get("display_id")): entry.get("recurring")
                 for entry in index.get("unknown") or []}
    rows, unsearched = [], 0
    for done_file in done_files:
        manifest = _read_json(done_file) or {}
        kept = embeddings_file(done_file)
        if (manifest.get("identity") or {}).get("embedder") != embedder_fingerprint or not kept.is_file():
            unsearched += 1
            continue
        people = read_people_embeddings(kept)  # empty for a video where nobody was seen
        log = str(log_file(done_file).relative_to(out_dir))
        shown = {row.get("name"): row for row in manifest.get("appearances") or []}
        for name, person in people.items():
            if person.embedding.shape != vector.shape:
                continue
            on_screen = shown.get(name, {})
            rows.append({"video": manifest.get("video"), "log": log, "name": name, "known": person.known,
                         "recurring": recurring.get((log, name)),
                         "similarity": round(float(person.embedding @ vector), 4), "faces": person.faces,
                         **{key: on_screen.get(key) for key in ("from_s", "to_s", "seconds", "spans")}})
    rows.sort(key=lambda row: -row["similarity"])
    return rows[:top], unsearched


def log_file(done_file: Path) -> Path:
    """The track log a manifest was published with."""
    return done_file.with_name(done_file.name[: -len(DONE_SUFFIX)] + ".vidface.json")


def embeddings_file(done_file: Path) -> Path:
    """Where the people's embeddings of a manifest's video are kept."""
    return done_file.with_name(done_file.name[: -len(DONE_SUFFIX)] + EMBEDDINGS_SUFFIX)


def _failed_file(done_file: Path) -> Path:
    return done_file.with_name(done_file.name.replace(".done.json", ".failed.json"))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

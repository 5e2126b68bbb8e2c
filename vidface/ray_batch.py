"""``vidface batch --ray``: the files of a batch as Ray tasks, on this machine or a cluster.

The driver (the ``vidface batch`` process) keeps everything that makes a
batch safe to repeat: the out-dir lock, the plan (what is done, what failed
before) and the records. Workers are Ray actors that load the models and the
gallery once and annotate one file at a time straight into the out-dir
(a folder every node can reach), publishing each file's outputs and manifest
together, as a local run does. A worker that dies mid-file (killed, out of
memory, node lost) is replaced by a new one; its file is reported failed for
this run but not remembered as a bad input, so the next run redoes exactly it.
Ray is optional: ``pip install 'vidface[ray]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import UsageError, VidfaceError


def require_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'vidface[ray]' (or pip install ray)") from None
    return ray


class Annotator:
    """A Ray worker: the models and gallery, loaded once; annotates the jobs it is given, one at a time."""

    def __init__(self, settings, gallery):
        from .pipeline import Models

        self.settings, self.gallery = settings, gallery
        self.models = Models.load(settings)

    def pid(self) -> int:
        return os.getpid()

    def run(self, job, gallery_folder: Path | None) -> dict:
        from .batch import annotate_job

        try:
            return annotate_job(job, self.gallery, gallery_folder, self.settings, self.models)
        except VidfaceError as error:
            return {"error": str(error)}


def connect(address: str):
    """Join the cluster at ``address`` (``"auto"``, ``ray://host:port``), or start Ray here for ``"local"``."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    return ray


def worker_shape(ray, settings, jobs: int) -> tuple[int, dict, object]:
    """How many workers, the resources of each, and the settings they run with (GPU-aware)."""
    from dataclasses import replace

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and settings.device in ("auto", "cuda"):
        return (jobs if jobs > 1 else gpus), {"num_gpus": 1, "num_cpus": 1}, replace(settings, device="cuda")
    cpus = int(resources.get("CPU", 1))
    per_worker = 2 if cpus >= 2 else 1  # decode, detect and embed overlap a little within a worker
    count = jobs if jobs > 1 else max(1, cpus // per_worker)
    return count, {"num_cpus": per_worker}, replace(settings, device="cpu" if settings.device == "auto" else
                                                    settings.device)


def run_on_ray(pending: list, gallery, gallery_folder: Path | None, settings, address: str, jobs: int,
               record: Callable) -> None:
    """Run ``pending`` ``(item, job)`` pairs on Ray workers; ``record(item, job, outcome)`` each as it ends."""
    import time

    ray = connect(address)
    count, resources, worker_settings = worker_shape(ray, settings, jobs)
    actor = ray.remote(max_restarts=0, max_task_retries=0, **resources)(Annotator)
    workers = [actor.remote(worker_settings, gallery) for _ in range(min(count, len(pending)))]
    queue = list(pending)
    running: dict = {}

    def give(worker) -> None:
        item, job = queue.pop(0)
        running[worker.run.remote(job, gallery_folder)] = (worker, item, job, time.perf_counter())

    try:
        for worker in workers:
            if queue:
                give(worker)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            worker, item, job, started = running.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as error:  # the worker died or its node was lost: replace it
                outcome = {"error": f"Ray worker lost while annotating ({type(error).__name__}); "
                                    "the next run redoes this file", "infrastructure": True}
                ray.kill(worker)
                workers[workers.index(worker)] = worker = actor.remote(worker_settings, gallery)
            item.seconds = time.perf_counter() - started
            record(item, job, outcome)
            if queue:
                give(worker)
    finally:
        for worker in workers:
            ray.kill(worker)

"""vidface batch --ray on a local Ray: the same outputs, manifests and reruns; a killed worker's file is redone."""

import json
import os
import re
import signal
import threading
import time

import pytest

from conftest import make_video
from vidface.batch import run_batch
from vidface.pipeline import AnnotateSettings

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'vidface[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def settings_for(random_models, **extra):
    detector, embedder = random_models
    return AnnotateSettings(device="cpu", detector=detector, embedder=embedder, **extra)


def test_a_ray_batch_writes_what_a_local_one_writes(tmp_path, random_models, local_ray):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, frames in (("a.mp4", 6), ("b.mp4", 4)):
        make_video(inputs / name, frames=frames)
    (inputs / "bad.mp4").write_text("not a video")
    settings = settings_for(random_models, imgsz=64)
    first = run_batch([str(inputs)], tmp_path / "out", None, settings, ray_address="auto")
    statuses = {item.source.name: item.status for item in first.items}
    assert statuses == {"a.mp4": "ok", "b.mp4": "ok", "bad.mp4": "failed"}
    assert json.loads((tmp_path / "out" / "a.vidface.done.json").read_text())["frames"] == 6
    assert (tmp_path / "out" / "bad.vidface.failed.json").exists(), "a bad input is remembered"
    second = run_batch([str(inputs)], tmp_path / "out", None, settings, ray_address="auto")
    assert {item.source.name: item.status for item in second.items} == {"a.mp4": "skipped", "b.mp4": "skipped",
                                                                       "bad.mp4": "failed"}


def test_a_worker_killed_mid_file_is_redone_by_the_next_run_alone(tmp_path, random_models, local_ray):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    make_video(inputs / "long.mp4", frames=240, size=(640, 360), fps=30)
    make_video(inputs / "short.mp4", frames=5)
    settings = settings_for(random_models, imgsz=1280)  # slow enough to be caught in the middle
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_batch(
        [str(inputs / "long.mp4"), str(inputs / "short.mp4")], out, None, settings, ray_address="auto", jobs=1)))
    runner.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and runner.is_alive():
        for path in out.glob(".*long.vidface*"):  # a worker's hidden file names carry its pid
            match = re.search(r"-(\d+)\.", path.name)
            if match:
                killed = int(match.group(1))
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.2)
    runner.join(timeout=300)
    assert killed is not None, "the long file was never seen in progress"
    first = {item.source.name: item for item in outcome["result"].items}
    assert first["long.mp4"].status == "failed" and "worker lost" in first["long.mp4"].error
    assert first["short.mp4"].status == "ok", first["short.mp4"].error
    assert not (out / "long.vidface.failed.json").exists(), "a lost worker is not the input's fault"
    assert not (out / "long.vidface.json").exists()
    rerun = run_batch([str(inputs / "long.mp4"), str(inputs / "short.mp4")], out, None, settings_for(
        random_models, imgsz=64), ray_address="auto")
    statuses = {item.source.name: item.status for item in rerun.items}
    assert statuses["long.mp4"] == "ok"
    assert not list(out.glob(".*long.vidface*")), "the killed worker's hidden files were cleared"

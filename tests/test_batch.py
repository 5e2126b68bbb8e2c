"""vidface batch: layout, summary, exit codes, reruns, a killed run, concurrent runs, stale locks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import av
import pytest

from conftest import make_video
from vidface.batch import EXIT_SOME_FAILED, LOCK_NAME, OutDirLock, collect_inputs
from vidface.errors import BusyError


@pytest.fixture
def tree(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_video(inputs / "a.mp4", frames=8)
    make_video(inputs / "b.mp4", frames=6, audio=False)
    (inputs / "nested").mkdir()
    make_video(inputs / "nested" / "c.mp4", frames=5)
    (inputs / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (inputs / "notes.mp4").write_text("a text file with a video name")
    return inputs


def batch_command(random_models, *args):
    detector, embedder = random_models
    return [sys.executable, "-m", "vidface", "batch", *map(str, args), "--detector", str(detector),
            "--embedder", str(embedder), "--device", "cpu", "--imgsz", "64", "--batch-size", "4"]


def run(random_models, *args, timeout=300):
    return subprocess.run(batch_command(random_models, *args), capture_output=True, text=True, timeout=timeout)


def test_collect_inputs_files_folders_and_globs(tree):
    items, missing = collect_inputs([str(tree)], "*.mp4", recursive=True)
    assert sorted(str(i.relative) for i in items) == ["a.mp4", "b.mp4", "corrupt.mp4", "nested/c.mp4", "notes.mp4"]
    items, _ = collect_inputs([str(tree)], "*.mp4", recursive=False)
    assert "nested/c.mp4" not in [str(i.relative) for i in items]
    items, missing = collect_inputs([str(tree / "*.mp4"), str(tree / "a.mp4"), str(tree / "gone.mp4")])
    assert len(items) == 4 and [str(m.source.name) for m in missing] == ["gone.mp4"]


def test_first_run_second_run_and_retry(tree, tmp_path, random_models):
    out = tmp_path / "out"
    first = run(random_models, tree, "--recursive", "--pattern", "*.mp4", "--out-dir", out, "--json")
    assert first.returncode == EXIT_SOME_FAILED, first.stderr
    summary = json.loads(first.stdout)
    statuses = {f["output"]: f["status"] for f in summary["files"]}
    assert statuses == {"a.mp4": "ok", "b.mp4": "ok", "nested/c.mp4": "ok", "corrupt.mp4": "failed", "notes.mp4": "failed"}
    assert all(f["error"] for f in summary["files"] if f["status"] == "failed")
    assert summary == json.loads((out / "batch-summary.json").read_text())
    for relative, frames in (("a", 8), ("b", 6), ("nested/c", 5)):
        video = av.open(str(out / f"{relative}.vidface.mp4"))
        assert video.streams.video[0].frames == frames
        assert json.loads((out / f"{relative}.vidface.json").read_text())["input"]["frames"] == frames
    assert {f["frames"] for f in summary["files"] if f["status"] == "ok"} == {8, 6, 5}

    second = run(random_models, tree, "--recursive", "--pattern", "*.mp4", "--out-dir", out, "--json")
    assert second.returncode == EXIT_SOME_FAILED, "inputs still failing keep cron's monitoring red"
    statuses = {f["output"]: (f["status"], f["known_failure"]) for f in json.loads(second.stdout)["files"]}
    assert statuses["a.mp4"] == ("skipped", False) and statuses["corrupt.mp4"] == ("failed", True)
    accepted = run(random_models, tree, "--recursive", "--pattern", "*.mp4", "--out-dir", out, "--json",
                   "--accept-known-failures")
    assert accepted.returncode == 0, accepted.stderr
    history = [json.loads(line) for line in (out / "batch-history.jsonl").read_text().splitlines()]
    assert [h["exit_code"] for h in history] == [EXIT_SOME_FAILED, EXIT_SOME_FAILED, 0]
    assert json.loads((out / "batch-summary.json").read_text())["exit_code"] == 0, "the summary is the last run's"

    third = run(random_models, tree, "--recursive", "--pattern", "*.mp4", "--out-dir", out, "--json", "--retry-failed")
    assert third.returncode == EXIT_SOME_FAILED
    statuses = {f["output"]: f["status"] for f in json.loads(third.stdout)["files"]}
    assert statuses["corrupt.mp4"] == "failed" and statuses["a.mp4"] == "skipped"

    make_video(tree / "a.mp4", frames=9)  # the input changed: redo it
    fourth = run(random_models, tree, "--recursive", "--pattern", "*.mp4", "--out-dir", out, "--json")
    statuses = {f["output"]: f["status"] for f in json.loads(fourth.stdout)["files"]}
    assert statuses["a.mp4"] == "ok" and statuses["b.mp4"] == "skipped"


def test_nothing_to_do_is_its_own_exit_code(tmp_path, random_models):
    (tmp_path / "empty").mkdir()
    result = run(random_models, tmp_path / "empty", "--out-dir", tmp_path / "out")
    assert result.returncode not in (0, EXIT_SOME_FAILED)
    assert "no input videos" in result.stderr and "Traceback" not in result.stderr


def test_killed_run_leaves_no_partial_output_and_rerun_completes(tmp_path, random_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):
        make_video(inputs / f"v{index}.mp4", frames=60, fps=30)
    out = tmp_path / "out"
    process = subprocess.Popen(batch_command(random_models, inputs, "--out-dir", out, "--quiet"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("*.done.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.name for p in out.glob("*.done.json")}
    assert 0 < len(done_before) < 6, "the kill should land mid-way"
    for video in out.glob("v*.vidface.mp4"):  # whatever has a final name is complete
        assert av.open(str(video)).streams.video[0].frames == 60
    for log in out.glob("v*.vidface.json"):
        assert json.loads(log.read_text())["input"]["frames_decoded"] == 60

    rerun = run(random_models, inputs, "--out-dir", out, "--json")
    assert rerun.returncode == 0, rerun.stderr
    statuses = {f["output"]: f["status"] for f in json.loads(rerun.stdout)["files"]}
    assert sum(s == "skipped" for s in statuses.values()) == len(done_before)
    assert sum(s == "ok" for s in statuses.values()) == 6 - len(done_before)
    leftovers = [p.name for p in out.rglob(".*")]
    assert leftovers == [], f"temporaries left behind: {leftovers}"


def test_two_concurrent_runs_one_refuses(tmp_path, random_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(3):
        make_video(inputs / f"v{index}.mp4", frames=60)
    out = tmp_path / "out"
    first = subprocess.Popen(batch_command(random_models, inputs, "--out-dir", out, "--quiet"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / LOCK_NAME).exists():
        time.sleep(0.02)
    second = run(random_models, inputs, "--out-dir", out)
    first_code = first.wait(timeout=300)
    assert first_code == 0, first.stderr.read()
    assert second.returncode == BusyError.exit_code
    assert "another vidface batch" in second.stderr and "Traceback" not in second.stderr
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    with OutDirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    live = OutDirLock(tmp_path).acquire()
    with pytest.raises(BusyError):
        OutDirLock(tmp_path).acquire()
    live.release()


def test_ray_flag_without_ray_says_how_to_install(monkeypatch, tmp_path):
    from vidface.errors import UsageError
    from vidface.ray_batch import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UsageError, match=r"pip install 'vidface\[ray\]'"):
        require_ray()


def test_patterns_match_whatever_the_case(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.MP4", "c.Mp4", "d.mov"):
        (tmp_path / "in" / name).write_bytes(b"x")
    items, _ = collect_inputs([str(tmp_path / "in")], "*.mp4")
    assert sorted(item.source.name for item in items) == ["a.mp4", "b.MP4", "c.Mp4"]


def test_people_index_lists_who_is_in_which_video_over_every_run(tmp_path, fake_stages):
    """people.json / people.csv cover every file annotated into the out-dir, this run's and earlier runs'."""
    import csv

    import cv2

    from vidface.batch import INDEX_CSV_NAME, INDEX_NAME, run_batch
    from vidface.io import VideoReader
    from vidface.pipeline import AnnotateSettings, Models

    detector, embedder = fake_stages
    first_in, later_in = tmp_path / "monday", tmp_path / "tuesday"
    (first_in / "nested").mkdir(parents=True)
    later_in.mkdir()
    make_video(first_in / "a.mp4", frames=10, fps=10)
    make_video(first_in / "nested" / "b.mp4", frames=6, fps=10)
    make_video(later_in / "c.mp4", frames=8, fps=10)
    with VideoReader(first_in / "a.mp4") as reader:
        still = next(iter(reader)).image
    (tmp_path / "gallery" / "Square").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "gallery" / "Square" / "still.png"), still)
    out = tmp_path / "out"
    settings = AnnotateSettings(match_threshold=0.99, write_video=False)
    models = Models(detector, embedder, "cpu")
    run_batch([str(first_in)], out, tmp_path / "gallery", settings, recursive=True, models=models)
    first = json.loads((out / INDEX_NAME).read_text())
    assert first["videos"] == 2
    assert [p["name"] for p in first["people"]] == ["Square"] and first["unknown"] == []
    square = first["people"][0]
    assert [a["log"] for a in square["appearances"]] == ["a.vidface.json", "nested/b.vidface.json"]
    assert square["appearances"][0]["video"] == str(first_in / "a.mp4")
    assert square["appearances"][0]["spans"] == [[0.0, pytest.approx(1.0)]]
    assert square["seconds"] == pytest.approx(1.0 + 0.6)

    manifest_file = out / "a.vidface.done.json"  # a manifest from before the index: read from its log
    manifest = json.loads(manifest_file.read_text())
    del manifest["appearances"]
    manifest_file.write_text(json.dumps(manifest))
    run_batch([str(later_in)], out, tmp_path / "gallery", settings, models=models)
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["videos"] == 3
    assert [a["log"] for a in index["people"][0]["appearances"]] == ["a.vidface.json", "c.vidface.json",
                                                                     "nested/b.vidface.json"]
    assert index["people"][0]["appearances"][0] == square["appearances"][0]
    rows = list(csv.DictReader((out / INDEX_CSV_NAME).read_text().splitlines()))
    assert [(r["name"], r["known"], r["log"]) for r in rows] == [
        ("Square", "yes", "a.vidface.json"), ("Square", "yes", "c.vidface.json"), ("Square", "yes", "nested/b.vidface.json")]
    assert rows[1]["spans"] == "0.00-0.80" and rows[1]["seconds"] == "0.80"


def test_people_index_keeps_strangers_per_video():
    from vidface.tracklog import people_csv, people_index

    stranger = {"name": "unknown-1", "known": False, "from_s": 2.0, "to_s": 3.0, "seconds": 1.0, "score": 0.41,
                "spans": [[2.0, 3.0]]}
    ann = {"name": "Ann", "known": True, "from_s": 0.0, "to_s": 9.0, "seconds": 4.0, "score": 0.8,
           "spans": [[0.0, 2.0], [7.0, 9.0]]}
    index = people_index([("y.vidface.json", "/v/y.mp4", [stranger]), ("x.vidface.json", "/v/x.mp4", [ann, stranger])])
    assert [u["log"] for u in index["unknown"]] == ["x.vidface.json", "y.vidface.json"], "one stranger per video"
    assert index["people"] == [{"name": "Ann", "videos": 1, "seconds": 4.0, "appearances": [
        {"video": "/v/x.mp4", "log": "x.vidface.json", "from_s": 0.0, "to_s": 9.0, "seconds": 4.0, "score": 0.8,
         "spans": [[0.0, 2.0], [7.0, 9.0]]}]}]
    lines = people_csv(index).splitlines()
    assert lines[0] == "name,known,video,log,from_s,to_s,seconds,score,spans,recurring"
    assert lines[1] == "Ann,yes,/v/x.mp4,x.vidface.json,0.00,9.00,4.00,0.8000,0.00-2.00 7.00-9.00,"
    assert lines[2].startswith("unknown-1,no,/v/x.mp4,")
    assert [u["recurring"] for u in index["unknown"]] == [None, None] and index["recurring_strangers"] == []


def test_a_stranger_seen_in_several_videos_is_one_recurring_stranger(tmp_path, fake_stages):
    """The same unknown face in two videos becomes one stranger-N in people.json, linked through the
    embeddings kept beside each log; a video from before those files existed stays unlinked."""
    import csv

    import numpy as np

    from vidface.batch import INDEX_CSV_NAME, INDEX_NAME, run_batch
    from vidface.pipeline import AnnotateSettings, Models, read_people_embeddings

    detector, embedder = fake_stages
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(inputs / name, frames=24, fps=10)
    for name in ("d.mp4", "e.mp4"):  # seen in too few faces to be linked, however alike
        make_video(inputs / name, frames=3, fps=10)
    out = tmp_path / "out"
    settings = AnnotateSettings(match_threshold=0.99, write_video=False)
    run_batch([str(inputs)], out, None, settings, models=Models(detector, embedder, "cpu"))

    kept = out / "a.vidface.faces.npz"
    with np.load(kept, allow_pickle=False) as data:  # no pickled objects in it
        assert list(data["ids"]) == ["unknown-1"] and data["embeddings"].shape == (1, embedder.dim)
    person = read_people_embeddings(kept)["unknown-1"]
    assert not person.known and person.faces >= 4
    assert np.linalg.norm(person.embedding) == pytest.approx(1.0, abs=1e-5)

    (out / "c.vidface.faces.npz").unlink()  # as if annotated by an older version
    (out / "c.vidface.json").touch()
    run_batch([str(inputs)], out, None, settings, models=Models(detector, embedder, "cpu"))  # all skipped
    index = json.loads((out / INDEX_NAME).read_text())
    assert [(u["log"], u["display_id"], u["recurring"]) for u in index["unknown"]] == [
        ("a.vidface.json", "unknown-1", "stranger-1"), ("b.vidface.json", "unknown-1", "stranger-1"),
        ("c.vidface.json", "unknown-1", None), ("d.vidface.json", "unknown-1", None),
        ("e.vidface.json", "unknown-1", None)]
    assert read_people_embeddings(out / "d.vidface.faces.npz")["unknown-1"].faces < 4
    [recurring] = index["recurring_strangers"]
    assert recurring["name"] == "stranger-1" and recurring["videos"] == 2
    assert [a["log"] for a in recurring["appearances"]] == ["a.vidface.json", "b.vidface.json"]
    assert recurring["seconds"] == pytest.approx(2 * 2.4)
    rows = list(csv.DictReader((out / INDEX_CSV_NAME).read_text().splitlines()))
    assert [(r["log"], r["recurring"]) for r in rows][:3] == [("a.vidface.json", "stranger-1"),
                                                             ("b.vidface.json", "stranger-1"), ("c.vidface.json", "")]


def test_a_face_is_found_in_the_videos_of_an_archive(tmp_path, fake_stages):
    """search_archive: every person of every video annotated into an out-dir, most alike first, and
    the videos another embedder made are counted, not compared."""
    import numpy as np

    from vidface.batch import run_batch, search_archive
    from vidface.io import VideoReader
    from vidface.pipeline import AnnotateSettings, Models, write_people_embeddings

    detector, embedder = fake_stages
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.mp4"):
        make_video(inputs / name, frames=24, fps=10)
    out = tmp_path / "out"
    run_batch([str(inputs)], out, None, AnnotateSettings(match_threshold=0.99, write_video=False),
              models=Models(detector, embedder, "cpu"))
    with VideoReader(inputs / "a.mp4") as reader:
        still = next(iter(reader)).image
    height, width = still.shape[:2]
    face = embedder([still[height // 4: 3 * height // 4, width // 4: 3 * width // 4]])[0]

    rows, unsearched = search_archive(out, face, embedder.fingerprint, top=5)
    assert unsearched == 0 and [(r["log"], r["name"]) for r in rows] == [("a.vidface.json", "unknown-1"),
                                                                         ("b.vidface.json", "unknown-1")]
    assert rows[0]["similarity"] > 0.99 and rows[0]["recurring"] == "stranger-1" and rows[0]["faces"] >= 4
    assert rows[0]["video"] == str(inputs / "a.mp4") and rows[0]["spans"] == [[0.0, pytest.approx(2.4)]]
    far = np.array([0.0, 0.0, 1.0, 0.0], np.float32)
    assert search_archive(out, far, embedder.fingerprint)[0][0]["similarity"] < rows[0]["similarity"]
    assert search_archive(out, face, "another embedder") == ([], 2)
    assert len(search_archive(out, face, embedder.fingerprint, top=1)[0]) == 1
    write_people_embeddings({"tracks": []}, None, out / "b.vidface.faces.npz")  # as for a video of nobody
    rows, unsearched = search_archive(out, face, embedder.fingerprint)
    assert unsearched == 0 and [r["log"] for r in rows] == ["a.vidface.json"]
    (out / "b.vidface.faces.npz").unlink()  # as if annotated before the embeddings were kept
    assert search_archive(out, face, embedder.fingerprint)[1] == 1

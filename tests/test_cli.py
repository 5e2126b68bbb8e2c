"""The command line on good and bad input: one clear line, a distinct exit code, nothing lost."""

import json
import os
import subprocess
import sys

import av
import pytest
import torch

from conftest import make_video
from vidface.cli import main
from vidface.errors import DeviceError, GalleryError, InputError, ModelError, OutputError


def run_cli(capsys, *args):
    sys.argv = ["vidface", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def models_args(random_models):
    detector, embedder = random_models
    return ["--detector", detector, "--embedder", embedder, "--device", "cpu", "--imgsz", "64", "--quiet"]


def one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_annotate_writes_video_and_log_beside_input(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=12, fps=10)
    before = video.read_bytes()
    code, out, err = run_cli(capsys, "annotate", video, *models_args)
    assert code == 0, err
    log = json.loads((tmp_path / "clip.vidface.json").read_text())
    assert log["schema"] == 1
    assert log["input"]["frames"] == 12 and log["input"]["width"] == 160
    assert set(log) >= {"vidface_version", "input", "gallery", "settings", "tracks"}
    assert log["settings"]["imgsz"] == 64 and log["settings"]["track_conf"] == 0.1
    output = av.open(str(tmp_path / "clip.vidface.mp4"))
    assert output.streams.video[0].frames == 12 and output.streams.audio
    assert float(output.streams.video[0].average_rate) == pytest.approx(10)
    assert video.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.vidface.json", "clip.vidface.mp4"]
    code, _, err = run_cli(capsys, "annotate", video, *models_args, "--no-video", "--track-conf", "0.3",
                           "--log", tmp_path / "strict.json")
    assert code == 0, err
    assert json.loads((tmp_path / "strict.json").read_text())["settings"]["track_conf"] == 0.3


def test_no_video_writes_only_the_log(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=5)
    code, _, err = run_cli(capsys, "annotate", video, "--no-video", "--log", tmp_path / "out.json", *models_args)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out.json"]


def test_existing_output_needs_overwrite(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=4)
    (tmp_path / "clip.vidface.json").write_text("keep me")
    code, _, err = run_cli(capsys, "annotate", video, *models_args)
    assert code == OutputError.exit_code and "--overwrite" in one_error_line(err)
    assert (tmp_path / "clip.vidface.json").read_text() == "keep me"
    code, _, err = run_cli(capsys, "annotate", video, "--overwrite", *models_args)
    assert code == 0, err
    assert json.loads((tmp_path / "clip.vidface.json").read_text())["schema"] == 1


def test_output_may_not_be_the_input(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=4)
    before = video.read_bytes()
    code, _, err = run_cli(capsys, "annotate", video, "-o", video, "--overwrite", *models_args)
    assert code == OutputError.exit_code and "input" in one_error_line(err)
    assert video.read_bytes() == before


def test_output_folder_missing(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=4)
    code, _, err = run_cli(capsys, "annotate", video, "-o", tmp_path / "nowhere" / "x.mp4", *models_args)
    assert code == OutputError.exit_code and "does not exist" in one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_folder_not_writable(tmp_path, capsys, models_args):
    video = make_video(tmp_path / "clip.mp4", frames=4)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "annotate", video, "-o", locked / "x.mp4", *models_args)
    assert code == OutputError.exit_code and "not writable" in one_error_line(err)


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "text", "zero-frames"])
def test_bad_inputs(tmp_path, capsys, models_args, kind):
    path = tmp_path / "in.mp4"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "zero-frames":
        make_video(path, frames=0, audio=False)
    code, _, err = run_cli(capsys, "annotate", path, *models_args)
    assert code == InputError.exit_code
    assert str(path) in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else ["in.mp4"])


def test_truncated_input_is_processed_as_far_as_it_decodes(tmp_path, capsys, models_args):
    full = make_video(tmp_path / "full.mp4", frames=40, audio=False, faststart=True)
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    code, _, err = run_cli(capsys, "annotate", broken, *models_args)
    assert code == 0
    assert "truncated" in err
    log = json.loads((tmp_path / "cut.vidface.json").read_text())
    assert log["input"]["truncated"] is True
    assert 0 < log["input"]["frames_decoded"] < 40
    assert av.open(str(tmp_path / "cut.vidface.mp4")).streams.video[0].frames == log["input"]["frames_decoded"]


@pytest.mark.parametrize("layout", ["missing", "empty", "no-usable-photo"])
def test_bad_gallery(tmp_path, capsys, models_args, layout):
    video = make_video(tmp_path / "clip.mp4", frames=4)
    gallery = tmp_path / "faces"
    if layout == "empty":
        gallery.mkdir()
    elif layout == "no-usable-photo":
        (gallery / "Ann").mkdir(parents=True)
        (gallery / "Ann" / "a.jpg").write_bytes(b"broken jpeg")
    code, _, err = run_cli(capsys, "annotate", video, "--gallery", gallery, *models_args)
    assert code == GalleryError.exit_code
    line = one_error_line(err)
    assert "gallery" in line and (layout != "no-usable-photo" or "Ann" in line)
    assert not (tmp_path / "clip.vidface.json").exists()


@pytest.mark.parametrize("problem", ["missing", "garbage", "wrong-kind"])
def test_bad_weights(tmp_path, capsys, random_models, problem):
    detector, embedder = random_models
    video = make_video(tmp_path / "clip.mp4", frames=4)
    bad = tmp_path / "det.safetensors"
    if problem == "garbage":
        bad.write_bytes(os.urandom(2000))
    elif problem == "wrong-kind":
        bad = embedder
    code, _, err = run_cli(capsys, "annotate", video, "--detector", bad, "--embedder", embedder, "--device", "cpu")
    assert code == ModelError.exit_code
    assert "detector" in one_error_line(err)
    code, _, err = run_cli(capsys, "annotate", video, "--detector", detector, "--embedder", tmp_path / "x.safetensors",
                           "--device", "cpu")
    assert code == ModelError.exit_code and "embedder" in one_error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_but_absent(tmp_path, capsys, random_models):
    detector, embedder = random_models
    video = make_video(tmp_path / "clip.mp4", frames=4)
    code, _, err = run_cli(capsys, "annotate", video, "--device", "cuda", "--detector", detector, "--embedder", embedder)
    assert code == DeviceError.exit_code and "CUDA" in one_error_line(err)


def test_failure_mid_run_leaves_no_partial_output(tmp_path, random_models, monkeypatch):
    from vidface import pipeline

    detector, embedder = random_models
    video = make_video(tmp_path / "clip.mp4", frames=30)
    settings = pipeline.AnnotateSettings(device="cpu", imgsz=64, batch_size=4, detector=detector, embedder=embedder)
    models = pipeline.Models.load(settings)
    calls = {"n": 0}
    original = pipeline.FrameProcessor.process

    def failing(self, frames):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, frames)

    monkeypatch.setattr(pipeline.FrameProcessor, "process", failing)
    with pytest.raises(KeyboardInterrupt):
        pipeline.annotate(video, None, settings=settings, models=models)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_real_process_prints_one_line_and_exit_code(tmp_path, kind):
    """In a real process, so that what OpenCV and FFmpeg print themselves is seen too."""
    path = tmp_path / "in.mp4"
    if kind == "corrupt":
        path.write_bytes(b"hi\n")
    result = subprocess.run([sys.executable, "-m", "vidface", "annotate", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == InputError.exit_code
    reason = "input not found" if kind == "missing" else "not a readable video"
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"vidface: error: {reason}: {path}")


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys, "annotate", "x.mp4", "--frame-skip", "-1")
    assert code == 2 and "Traceback" not in err


def test_ctrl_c_says_so_and_exits_130_leaving_nothing(tmp_path, random_models):
    import signal
    import time

    detector, embedder = random_models
    video = make_video(tmp_path / "long.mp4", frames=900, size=(640, 360), fps=30)
    process = subprocess.Popen(
        [sys.executable, "-m", "vidface", "annotate", str(video), "--detector", str(detector), "--embedder",
         str(embedder), "--device", "cpu", "--imgsz", "1280", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        # as in a terminal: a test run started in the background (nohup, '&') ignores SIGINT, and its children would too
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list(tmp_path.iterdir())) < 2:
        time.sleep(0.2)  # until the run writes its hidden output: models loaded, frames under way
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running 120 s after Ctrl-C; its stderr: {err[-2000:]}")
    assert process.returncode == 130
    assert err.strip().splitlines() == ["vidface: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"], "no partial output"


def test_errors_and_tables_are_not_cut_to_80_columns_when_not_a_terminal(tmp_path, random_models):
    detector, embedder = random_models
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "and-an-even-longer-file-name-for-a-corrupt-video.mp4"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    result = subprocess.run([sys.executable, "-m", "vidface", "batch", str(deep), "--out-dir", str(tmp_path / "out"),
                             "--detector", str(detector), "--embedder", str(embedder), "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 10
    failure = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    assert len(failure) == 1 and str(deep) in failure[0] and "readable video" in failure[0]
    assert any(str(deep) in line for line in result.stdout.splitlines()), "the table shows the whole path"
    quiet = subprocess.run([sys.executable, "-m", "vidface", "batch", str(deep), "--out-dir", str(tmp_path / "out"),
                            "--detector", str(detector), "--embedder", str(embedder), "--device", "cpu", "--quiet"],
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 10 and quiet.stdout == ""
    assert [line.split(":")[0] for line in quiet.stderr.splitlines()] == [f"failed {deep}"], "failures print with --quiet"


def test_help_reads_well():
    result = subprocess.run([sys.executable, "-m", "vidface", "--help"], capture_output=True, text=True, timeout=60)
    assert "Exit codes:" in result.stdout and "130" in result.stdout
    annotate = subprocess.run([sys.executable, "-m", "vidface", "annotate", "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    assert "<bool>" not in annotate and "{" not in annotate.splitlines()[0]
    assert "Usage: vidface annotate [OPTIONS] VIDEO" in " ".join(annotate.split()) or "VIDEO" in annotate.splitlines()[0]
    import re

    assert re.search(r"--match-threshold COSINE.*default: \d\.\d{3}", " ".join(annotate.split()))
    assert re.search(r"--det-conf SCORE.*default: \d\.\d{3}", " ".join(annotate.split()))
    assert re.search(r"--track-conf SCORE.*default: 0\.1", " ".join(annotate.split()))
    import typer

    from vidface.cli import app

    group = typer.main.get_command(app)
    for name in ("annotate", "webcam", "batch", "bench", "detect", "embed"):
        command = group.commands[name]
        silent = [param.name for param in command.params if not (param.help or "").strip()]
        assert not silent, f"{name}: options without help text: {silent}"
    version = subprocess.run([sys.executable, "-m", "vidface", "-V"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("vidface ")
    from vidface.pipeline import AUTO_ENGINES

    assert any(f"--backend auto runs {engine} on " in version.stdout for engine in (*AUTO_ENGINES, "torch")), \
        "the version names the engine auto takes here (for bug reports)"


def test_annotate_and_bench_print_json_on_stdout_and_people_text_on_stderr(tmp_path, random_models):
    detector, embedder = random_models
    video = make_video(tmp_path / "clip.mp4", frames=8, fps=10)
    common = ["--detector", str(detector), "--embedder", str(embedder), "--device", "cpu", "--imgsz", "64"]
    annotate = subprocess.run([sys.executable, "-m", "vidface", "annotate", str(video), "--json", *common],
                              capture_output=True, text=True, timeout=120)
    assert annotate.returncode == 0, annotate.stderr
    result = json.loads(annotate.stdout)
    assert result["frames"] == 8 and result["log"].endswith("clip.vidface.json") and result["people"] == []
    assert "(nobody)" in annotate.stderr, "the summary table goes to stderr"
    bench = subprocess.run([sys.executable, "-m", "vidface", "bench", str(video), "--json", *common],
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert (report["width"], report["height"], report["frames"]) == (160, 120, 8)
    assert {row["stage"] for row in report["stages"]} >= {"decode (alone)", "detect", "align+embed", "end to end"}
    assert report["threads"] >= 1 and report["peak_memory_mb"] > 0 and report["startup_s"] > 0
    assert report["end_to_end_fps"] > 0 and report["slowdown_vs_decode"] > 0
    assert 0 <= report["faces_embedded"] <= report["faces_detected"]

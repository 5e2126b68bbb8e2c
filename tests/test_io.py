import numpy as np
import pytest

from conftest import make_video, set_display_rotation_clockwise_90
from vidface.errors import InputError, OutputError
from vidface.io import AnnotatedVideoWriter, VideoReader, probe_video


def test_probe_and_read_real_timestamps(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=15, fps=10)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.has_audio) == (160, 120, 15, True)
    assert info.fps == pytest.approx(10)
    with VideoReader(path, queue_size=2) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(15))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(15) / 10, atol=1e-6)
    assert not reader.truncated


def test_rotation_metadata_is_applied(tmp_path):
    path = set_display_rotation_clockwise_90(make_video(tmp_path / "r.mp4", frames=3, size=(160, 96)))
    info = probe_video(path)
    assert info.rotation == 270 and (info.width, info.height) == (96, 160)
    with VideoReader(path) as reader:
        upright = next(iter(reader)).image
    assert upright.shape == (160, 96, 3)
    # the stored frame's bright square sits near its left edge, rows 40-80: turned clockwise,
    # it lands near the top, columns 96-80 .. 96-40
    rows, cols = np.nonzero(upright.min(axis=2) > 200)
    assert rows.mean() < 50 and 16 < cols.mean() < 56


def test_writer_keeps_frame_count_fps_and_audio(tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=20, fps=10)
    target = tmp_path / "out.mp4"
    writer = AnnotatedVideoWriter(target, 10, 160, 120)
    with VideoReader(source) as reader:
        for frame in reader:
            writer.write(frame.image)
    writer.finish(source)
    info = probe_video(target)
    assert (info.frames, info.fps, info.has_audio) == (20, 10, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temporary left


@pytest.mark.parametrize("background", [True, False])
def test_encoder_frames_keep_their_order_in_the_encoder_thread_or_not(tmp_path, background):
    target = tmp_path / "out.mp4"
    writer = AnnotatedVideoWriter(target, 10, 64, 48, background=background)
    for index in range(30):  # more frames than the queue holds
        writer.write(np.full((48, 64, 3), index * 8, np.uint8))
    writer.finish()
    with VideoReader(target) as reader:
        levels = [float(frame.image.mean()) for frame in reader]
    assert len(levels) == 30
    assert np.all(np.diff(levels) > 0), "in the order written"
    assert np.allclose(levels, [index * 8 for index in range(30)], atol=6)


def test_an_encoder_error_in_its_thread_reaches_the_caller_and_leaves_nothing(tmp_path, monkeypatch):
    writer = AnnotatedVideoWriter(tmp_path / "out.mp4", 10, 32, 32)

    def disk_full(image, time_s):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_encode", disk_full)
    writer.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(OutputError, match="No space left"):
        for _ in range(100):  # the error surfaces at a later write, or at the latest when finishing
            writer.write(np.zeros((32, 32, 3), np.uint8))
        writer.finish()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_aborted_writer_leaves_nothing(tmp_path):
    writer = AnnotatedVideoWriter(tmp_path / "out.mp4", 10, 32, 32)
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_decodes_what_it_can(tmp_path):
    source = make_video(tmp_path / "full.mp4", frames=40, audio=False, faststart=True)
    data = source.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])  # index at the front survives, frames are cut
    assert probe_video(broken).frames == 40
    with VideoReader(broken) as reader:
        frames = list(reader)
    assert 0 < len(frames) < 40
    assert reader.truncated and "40" in reader.error


def test_file_cut_before_its_index_is_a_clean_error(tmp_path):
    source = make_video(tmp_path / "full.mp4", frames=40, audio=False)
    data = source.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])  # mp4 index (moov) at the end is lost
    with pytest.raises(InputError):
        probe_video(broken)


@pytest.mark.parametrize("content", [b"", b"hello, not a video", bytes(range(256)) * 40])
def test_not_a_video_is_a_clean_error(tmp_path, content):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError):
        probe_video(path)


def test_missing_and_folder_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="folder"):
        probe_video(tmp_path)


def test_latest_only_reader_drops_stale_frames(tmp_path):
    import time

    path = make_video(tmp_path / "v.mp4", frames=30, fps=30, audio=False)
    with VideoReader(path, latest_only=True) as reader:
        seen = []
        for frame in reader:
            seen.append(frame.index)
            time.sleep(0.12)  # a slow consumer
    assert seen[-1] >= 25 and len(seen) < 30
    assert reader.frames_dropped > 0


def test_cv2_fallback_when_pyav_cannot_open(tmp_path, monkeypatch):
    from vidface import io

    path = make_video(tmp_path / "v.mp4", frames=6, fps=10)

    def refuse(_path):
        raise InputError("pyav refuses this file")

    monkeypatch.setattr(io, "_probe_pyav", refuse)
    info = probe_video(path)
    assert info.backend == "cv2" and (info.width, info.height, info.frames) == (160, 120, 6)
    with VideoReader(path) as reader:
        frames = list(reader)
    assert reader.backend == "cv2" and len(frames) == 6
    assert frames[-1].time_s == pytest.approx(0.5, abs=0.02)
    with pytest.raises(InputError, match="pyav refuses"):
        (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
        probe_video(tmp_path / "junk.mp4")


def test_a_file_is_probed_once_until_it_changes(tmp_path, monkeypatch):
    import os

    from vidface import io

    path = make_video(tmp_path / "v.mp4", frames=6, fps=10)
    opened = []
    real = io._probe_pyav
    monkeypatch.setattr(io, "_probe_pyav", lambda p: opened.append(p) or real(p))
    first, again = probe_video(path), probe_video(path)
    assert again == first and len(opened) == 1
    make_video(tmp_path / "other.mp4", frames=9, fps=10).replace(path)  # the same name, another video
    os.utime(path, ns=(1, 1))
    assert probe_video(path).frames == 9 and len(opened) == 2

"""End to end with the shipped weights on real clips (skipped without ../shared/data or weights/).

The figures are printed (run with ``-s`` to see them); the bars asserted are
what the shipped weights must keep achieving — a regression guard. The
README and the model cards give the full table from ``vidface eval videofaceid``.
"""

import json

import av
import pytest

from conftest import shared
from vidface.research.evaluation.videofaceid import clip_truth, score_clip
from vidface.gallery import build_gallery
from vidface.pipeline import AnnotateSettings, Models, annotate

#: Clips checked here (the full set is `vidface eval videofaceid`): a known person,
#: two known people, and only strangers.
CLIPS = ["christian_bale1_fin_s", "jackie_chan2_fin_m", "other2_fin_s"]
#: Bars the shipped weights reach on these clips, with a small margin (measured: see the README).
MIN_FOUND = 0.97
MIN_NAMED_RIGHT = 0.90
MAX_NAMED_WRONG = 0.01
MIN_UNKNOWN_REJECTED = 0.95


@pytest.fixture(scope="module")
def setup(shipped_weights):
    base = shared("videofaceid")
    detector, embedder = shipped_weights
    settings = AnnotateSettings(device="cpu", detector=detector, embedder=embedder)
    models = Models.load(settings)
    gallery = build_gallery(base / "gallery", models.detector, models.embedder)
    return base, settings, models, gallery


def test_real_clips_are_found_named_and_strangers_rejected(setup, tmp_path):
    base, settings, models, gallery = setup
    total = None
    for name in CLIPS:
        clip = base / "clips" / f"{name}.mp4"
        video_out = tmp_path / f"{name}.mp4" if name == CLIPS[0] else None
        settings.write_video = video_out is not None
        result = annotate(clip, gallery, video_out, tmp_path / f"{name}.json", settings, models)
        counts = score_clip(clip_truth(base / "truth" / f"{name}.json"), result.document)
        print(f"{name}: {counts}")
        total = counts if total is None else {k: total[k] + counts[k] for k in counts}
        if video_out is not None:
            source, output = av.open(str(clip)), av.open(str(video_out))
            assert output.streams.video[0].frames == source.streams.video[0].frames
            assert float(output.streams.video[0].average_rate) == pytest.approx(float(source.streams.video[0].average_rate))
            assert output.streams.audio, "the original audio must be kept"
    found = total["found"] / total["truth_boxes"]
    named = total["named_right"] / total["truth_boxes"]
    wrong = total["named_wrong"] / total["truth_boxes"]
    rejected = total["unknown_rejected"] / max(total["unknown_found"], 1)
    print(f"found {found:.3f}  named right {named:.3f}  named wrong {wrong:.3f}  unknown rejected {rejected:.3f}  "
          f"totals {total}")
    assert found >= MIN_FOUND
    assert named >= MIN_NAMED_RIGHT
    assert wrong <= MAX_NAMED_WRONG
    assert rejected >= MIN_UNKNOWN_REJECTED


def test_demo_sample_tells_the_two_people_apart(shipped_weights, tmp_path):
    """The README's first example: two tracks, both portraits named, each as the right person."""
    from pathlib import Path

    samples = Path(__file__).resolve().parent.parent / "samples"
    detector, embedder = shipped_weights
    settings = AnnotateSettings(device="cpu", detector=detector, embedder=embedder)
    models = Models.load(settings)
    gallery = build_gallery(samples / "gallery", models.detector, models.embedder)
    result = annotate(samples / "demo.mp4", gallery, tmp_path / "demo.mp4", tmp_path / "demo.json", settings, models)
    print(json.dumps(result.summary, indent=1))
    portraits = [t for t in result.document["tracks"] if len(t["detections"]) >= 30]
    width = result.document["input"]["width"]

    def truth(track):  # samples/make_demo.py: Eileen Collins drifts in the left half, Grace Hopper in the right
        x1, _, x2, _ = track["detections"][0]["box"]
        return "Eileen Collins" if (x1 + x2) / 2 < width / 2 else "Grace Hopper"

    assert sorted(truth(t) for t in portraits) == ["Eileen Collins", "Grace Hopper"]
    assert len(result.document["tracks"]) == 2, "one track per portrait: no extra box inside a face"
    for track in portraits:
        assert track["closest"] == truth(track)
        assert track["identity"] == truth(track)

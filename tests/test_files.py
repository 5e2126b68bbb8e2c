import json

import numpy as np
import pytest

from vidface.batch import remove_stale_temporaries
from vidface.files import write_atomically, write_json_atomic
from vidface.photo import save_vector


def test_json_lands_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "log.json"
    write_json_atomic({"a": [1, 2]}, target)
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["log.json"]


def test_failed_write_keeps_the_previous_file_and_cleans_up(tmp_path):
    target = tmp_path / "log.json"
    target.write_text("previous")

    def broken(temporary):
        open(temporary, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, broken)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["log.json"]


def test_temporary_keeps_the_suffix_so_format_by_extension_works(tmp_path):
    saved = save_vector(np.arange(3, dtype=np.float32), tmp_path / "v.npy")
    assert np.load(saved, allow_pickle=False).tolist() == [0.0, 1.0, 2.0]


def test_batch_cleanup_recognises_the_temporaries(tmp_path):
    seen = []
    write_atomically(tmp_path / "clip.vidface.json", lambda t: (seen.append(t), open(t, "w").write("{}")))
    (tmp_path / seen[0].rsplit("/", 1)[1]).write_text("left by a killed run")
    (tmp_path / ".keep-me").write_text("user file")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep-me", "clip.vidface.json"]


def test_outputs_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    written = write_json_atomic({}, tmp_path / "log.json")
    assert written.stat().st_mode & 0o777 == 0o666 & ~mask

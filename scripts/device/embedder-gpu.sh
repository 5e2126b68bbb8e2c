#!/usr/bin/env bash
# The embedder's GPU recipe on a lent device machine (issue 13), in back-to-back calls of the device tool.
#
# Here, once:   vidface data pack-faces          # device_carry/faces/part-N.zip, each fits one call
# Then, one call per part, each carrying that part (carry: ["device_carry/faces/part-N.zip"]):
#     bash scripts/device/embedder-gpu.sh unpack device_carry/faces/part-N.zip
# and last (carry the last part too, to save a call):
#     bash scripts/device/embedder-gpu.sh unpack device_carry/faces/part-4.zip train [SECONDS]
# The machine must stay warm between the calls (it keeps /tmp for about 30 s after each).
# `train` runs configs/embedder-gpu.json for at most SECONDS (default 480), resuming a run
# left in /tmp/vidface-run, and puts under $OUT: the log, history.jsonl, and either the
# finished embedder (split in 15 MiB pieces: a file coming back is at most 16 MiB) or,
# when the schedule did not finish, last.ckpt in pieces to resume it on the next lease
# (join with `cat last.ckpt.part-* > runs/embedder-gpu/last.ckpt`).
# `check DIR` (here, no GPU): unpack every part into DIR and check the training data
# gathers from it as it will there, every teacher vector found.
set -euo pipefail
DATA=/tmp/vidface-data
RUN=/tmp/vidface-run
REPO=$(cd "$(dirname "$0")/../.." && pwd)

link_data() {  # the data where the config's relative paths and VIDFACE_DATA=. find it
    local repo=$1 data=$2
    mkdir -p "$repo/cache"
    ln -sfn "$data/faces" "$repo/faces"
    ln -sfn "$data/models" "$repo/models"
    ln -sfn "$data/cache/teacher" "$repo/cache/teacher"
    ln -sfn "$data/cache/faces-wider" "$repo/cache/faces-wider"
}

while [ $# -gt 0 ]; do
    case $1 in
    unpack)
        mkdir -p "$DATA"
        python3 -m zipfile -e "$2" "$DATA"
        echo "unpacked $2: $(find "$DATA" -type f | wc -l) files in $DATA"
        shift 2 ;;
    train)
        seconds=480
        if [[ ${2:-} =~ ^[0-9]+$ ]]; then seconds=$2; shift; fi
        shift
        cd "$REPO"
        link_data "$REPO" "$DATA"
        nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
        resume=(); [ -f "$RUN/last.ckpt" ] && resume=(--resume)
        set +e
        VIDFACE_DATA=. PYTHONUNBUFFERED=1 timeout "$seconds" python3 -m vidface train embedder \
            --config configs/embedder-gpu.json --device cuda --run "$RUN" "${resume[@]}" 2>&1 \
            | tee "${OUT:-/tmp}/train.log"
        set -e
        cp "$RUN/history.jsonl" "${OUT:-/tmp}/" 2>/dev/null || true
        epochs=$(python3 -c "import json;print(json.load(open('configs/embedder-gpu.json'))['epochs'])")
        done_epochs=$(wc -l < "$RUN/history.jsonl" 2>/dev/null || echo 0)
        if [ "$done_epochs" -ge "$epochs" ]; then
            split -b 15M "$RUN/embedder.safetensors" "${OUT:-/tmp}/embedder.safetensors.part-"
            cp "$RUN/embedder.json" "${OUT:-/tmp}/" 2>/dev/null || true
        elif [ -f "$RUN/last.ckpt" ]; then
            split -b 15M "$RUN/last.ckpt" "${OUT:-/tmp}/last.ckpt.part-"
        fi
        echo "epochs done: $done_epochs of $epochs"
        ls -la "${OUT:-/tmp}" ;;
    check)
        target=$2; shift 2
        for part in "$REPO"/device_carry/faces/part-*.zip; do python3 -m zipfile -e "$part" "$target/data"; done
        mkdir -p "$target/repo" && cp -r "$REPO/configs" "$target/repo/"
        link_data "$target/repo" "$target/data"
        cd "$target/repo"
        python=python3; [ -x "$REPO/.venv/bin/python" ] && python=$REPO/.venv/bin/python
        VIDFACE_DATA=. PYTHONPATH="$REPO" "$python" - <<'PY'
from pathlib import Path
import vidface.research.train.dlib_teacher as dlib_teacher
from vidface.research.train.embedder import EmbedderTrainConfig, gather_training_data
from vidface.research.train.imagenet_init import LITE0_FILE

def no_teacher(*args, **kwargs):
    raise SystemExit("a crop has no cached teacher vector: the device machine has no dlib")

dlib_teacher.DlibTeacher = no_teacher
config = EmbedderTrainConfig.load(Path("configs/embedder-gpu.json"))
paths, labels, teacher, classes = gather_training_data(config)
lite0 = Path("models") / LITE0_FILE
assert lite0.is_file(), "the Lite0 start weights are not in the parts"
print(f"{len(paths)} crops, {classes} labelled people, teacher {teacher.shape}; Lite0 start weights: {lite0}")
PY
        ;;
    *) echo "unknown step $1" >&2; exit 2 ;;
    esac
done

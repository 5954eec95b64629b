#!/usr/bin/env bash
# One short session on a lent CUDA machine (about 9.5 minutes): the CUDA tests, then photo operating
# points (recipes/photo-*.json) trained on the one GPU, each followed by its autoregressive prior and,
# side by side with the prior, a decoder fine-tune (`vqkit train --init-from RUN --decoder-only`) that
# gets the prior with `vqkit prior carry` once both are done. Their Kodak rate-distortion is measured
# afterwards on the CPU with benchmarks/rate_distortion.py.
#
#   PY=.venv/bin/python bash benchmarks/gpu_photo.sh pack CIFAR_TRAIN_DIR [PACK]   # before the session
#   PACK=dir [OUT=dir] [RECIPES="photo-f4-k4096"] [TRAIN_MIN=4.5] [TUNE_MIN=2.0] [PRIOR_MIN=1.5] \
#       [TRAIN_SETS="train.batch_size=1024 train.lr=0.003"] [CROPS=30000] bash benchmarks/gpu_photo.sh
#
# PACK holds train.zip (CIFAR-10 training images, <class>/<name>.webp under train/: the first 3,000 of
# each class, what fits the 64 MiB a lent machine is sent; .gpu/ is git-ignored, so name it in the
# device tool's carry) and photos/ (the five colour photos bundled
# with scikit-image, whose crops are mixed in, see benchmarks/photo_mix.py) and whl/ (constriction's
# wheel for the lent machine's Python, which lacks it); `pack` writes all three. The
# runs come back as one tar (weights, configs, metrics, static table, prior and logs; no optimizer
# state, no cached codes) cut into OUT/runs.tar.part-* of 15 MB, the lent machine's limit on a returned
# file; rejoin with `cat OUT/runs.tar.part-* | tar x`. Each recipe RECIPE gives RECIPE and, with
# TUNE_MIN > 0, RECIPE-dec.
#
# History: the first run (2026-11-27, two recipes side by side, TRAIN_MIN 4.0, PRIOR_MIN 2.0,
# DEADLINE 530) cut both priors off at the deadline: a prior spends about 30 s encoding its training
# images and 30 s calibrating and evaluating beside its budget. At batch 256 one run used the H100
# at about 10,000 images/s, bound by kernel launches (README, "On a GPU": the step time hardly moves
# with the work in it), so the defaults now train one recipe alone at batch 1024 (learning rate x1.5,
# not yet measured against batch 256 on a GPU: compare its eval.json with the 2026-11-27 run's) on
# more photo crops, since a few million images would otherwise pass over 42,000 a hundred times.
# DEVICE=cpu with small budgets is a dry run here (2026-11-28: every step ran; on 2 cores the prior,
# which first encodes 4 shifted copies of every image, ran out of time, as expected there).
# Second run (2026-11-28, H200, the defaults, DEADLINE 550): batch 1024 trained at about 71,000 images/s
# (18,706 steps in 270 s, holdout 30.05 dB; 7x the H100's batch-256 rate) and the fine-tune ran 6,048
# steps (30.08 dB), but the prior was killed after 13 s of fitting: it encoded its 4 x 60,000 images on
# the CPU, beside the fine-tune. Prior training now encodes on its own device (vqkit/priors/train.py).
# The prior used for the figures came from a second call (2.6 min of fitting, 7,000 steps, 7.28
# bits/code on held-out grids, calibrated here afterwards with `vqkit prior calibrate`).
set -u
PY=${PY:-python3}  # with torch, Pillow and scikit-image (here: PY=.venv/bin/python)
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")";; esac  # absolute: steps cd
if [ "${1:-}" = pack ]; then
    SRC=${2:?usage: gpu_photo.sh pack CIFAR_TRAIN_DIR [PACK]} DEST=${3:-.gpu/pack}
    PER_CLASS=${PER_CLASS:-3000}
    mkdir -p "$DEST/photos" && DEST=$(cd "$DEST" && pwd) && SRC=$(cd "$SRC" && pwd)
    rm -f "$DEST/train.zip"
    (cd "$SRC/.." && for c in "$(basename "$SRC")"/*/; do ls "$c"*.webp | sort | head -n "$PER_CLASS"; done \
        | $PY -c "import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:
    for line in sys.stdin:
        name = line.strip()
        z.write(name, 'train/' + name.split('/', 1)[1])" "$DEST/train.zip") || exit 1
    $PY - "$DEST/photos" <<'EOF' || exit 1
import sys
from pathlib import Path
from PIL import Image
from skimage import data
photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
          "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0]}
for name, pixels in photos.items():
    Image.fromarray(pixels).save(Path(sys.argv[1]) / f"{name}.png")
EOF
    # The lent machine's image lacks the range coder that `vqkit prior carry` checks files with, and
    # cannot download: bring the wheel of the version installed here, for its Python 3.12.
    rm -rf "$DEST/whl" && $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d "$DEST/whl" \
        "constriction==$($PY -c "import importlib.metadata as m; print(m.version('constriction'))")" || exit 1
    du -sh "$DEST" && ls -la "$DEST" "$DEST/photos" "$DEST/whl"
    exit 0
fi
PACK=${PACK:-.gpu/pack}
OUT=${OUT:-benchmarks/runs/gpu-photo}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
TRAIN_MIN=${TRAIN_MIN:-4.5}
TUNE_MIN=${TUNE_MIN:-2.0}  # 0: no decoder fine-tune
PRIOR_MIN=${PRIOR_MIN:-1.5}
# Extra --set KEY=VALUE for the trainings (the fine-tunes take the train.* ones). Batch 1024: see above.
TRAIN_SETS=${TRAIN_SETS-train.batch_size=1024 train.lr=0.003}
CROPS=${CROPS:-30000}
RECIPES=${RECIPES:-photo-f4-k4096}
WORK=${WORK:-/tmp/gp}
DEADLINE=${DEADLINE:-570}  # seconds from the start: every step is cut short so the runs are packed by then
START=$(date +%s)
left() {  # seconds left, keeping $1 in reserve; at least 1 (timeout 0 would mean no limit)
    local s=$(( START + DEADLINE - $(date +%s) - ${1:-0} )); echo $(( s > 0 ? s : 1 ))
}
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd) PACK=$(cd "$PACK" && pwd)  # absolute: the steps below change folders
if ! $PY -c "import constriction" 2>/dev/null; then  # the lent machine: the pack's wheel (see pack)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$PACK"/whl/*.whl || exit 1
    export PYTHONPATH=$PYTHONPATH:$WORK/site
fi
log() { echo "== $(date -u +%H:%M:%S) $*"; }
sets() { for s in $TRAIN_SETS; do printf -- '--set %s ' "$s"; done; }

log "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

log "data"
rm -rf "$WORK/cifar" && mkdir -p "$WORK/cifar" && $PY -m zipfile -e "$PACK/train.zip" "$WORK/cifar"  # no unzip on the lent machine
$PY benchmarks/photo_mix.py --data "$WORK/cifar/train" --photos "$PACK/photos" --crops "$CROPS" \
    --out "$WORK/mix.npz" || exit 1

if [ "$DEVICE" = cuda ]; then
    log "CUDA tests (beside the training)"
    ($PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 > "$OUT/test_cuda.log") &
fi

# The decoder fine-tune keeps the model section and takes train.* only; model.* sets stay with training.
tune_sets() { for s in $TRAIN_SETS; do case $s in train.*) printf -- '--set %s ' "$s";; esac; done; }
point() {  # recipe: train; then its prior and the decoder fine-tune side by side; then the carry
    local r=$1 run="$WORK/$1" dec="$WORK/$1-dec" tune=""
    rm -rf "$run" "$dec" && mkdir -p "$run"
    # The training keeps 170 s for what follows: the prior (PRIOR_MIN plus about 60 s of encoding,
    # calibrating and evaluating) beside the fine-tune (TUNE_MIN plus its start and evaluation), then
    # the carry and the packing. With the defaults: about 60 s of data, 270 + 40 s of training.
    # shellcheck disable=SC2046  # sets expands to separate words on purpose
    timeout "$(left 170)" $PY -m vqkit train --config "recipes/$r.json" $(sets) \
        --data "$WORK/mix.npz" --out "$run" --no-progress --time-budget "$TRAIN_MIN" --device "$DEVICE" \
        > "$run/train.log" 2>&1
    echo "train exit $?" >> "$run/train.log"
    if [ "$TUNE_MIN" != 0 ]; then
        mkdir -p "$dec"
        # shellcheck disable=SC2046
        timeout "$(left 30)" $PY -m vqkit train --init-from "$run" --decoder-only $(tune_sets) \
            --set train.lr=5e-4 --set data.holdout=0.02 --data "$WORK/mix.npz" --out "$dec" --no-progress \
            --time-budget "$TUNE_MIN" --device "$DEVICE" > "$dec/train.log" 2>&1 &
        tune=$!
    fi
    timeout "$(left 30)" $PY -m vqkit prior train "$run" --data "$WORK/mix.npz" \
        --no-progress --time-budget "$PRIOR_MIN" --set "train.device=$DEVICE" --set train.batch_size=256 \
        --set model.dropout=0.1 --set train.augment=3 > "$run/prior.log" 2>&1
    echo "prior exit $?" >> "$run/prior.log"
    if [ -n "$tune" ]; then
        wait "$tune"
        echo "fine-tune exit $?" >> "$dec/train.log"
        # The fine-tune inherits the prior when it finishes, if the prior is there by then.
        [ -f "$dec/prior.safetensors" ] || $PY -m vqkit prior carry "$run" "$dec" >> "$dec/train.log" 2>&1
    fi
}
log "train + prior (+ decoder fine-tune): $RECIPES ($TRAIN_MIN + $PRIOR_MIN min, fine-tune $TUNE_MIN min)"
for r in $RECIPES; do point "$r" & done
wait
cat "$OUT/test_cuda.log" 2>/dev/null
names=""
for r in $RECIPES; do
    for d in "$r" "$r-dec"; do
        [ -d "$WORK/$d" ] || continue
        names="$names $d"
        log "$d"
        tail -4 "$WORK/$d/train.log"; tail -4 "$WORK/$d/prior.log" 2>/dev/null
        cat "$WORK/$d/eval.json" 2>/dev/null; echo
    done
done
# shellcheck disable=SC2086  # names: one word per run folder
(cd "$WORK" && tar cf - --exclude='*train_state.pt' --exclude='codes_*.npz' $names) \
    | split -b 15M - "$OUT/runs.tar.part-"
ls -la "$OUT"
log "done"

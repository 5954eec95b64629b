#!/usr/bin/env bash
# One short session on a lent CUDA machine (about 9 minutes on an H100): the CUDA tests, then two
# photo operating points (recipes/photo-*.json) trained side by side on the one GPU, each followed by
# its autoregressive prior. Their Kodak rate-distortion is measured afterwards on the CPU with
# benchmarks/rate_distortion.py.
#
#   PACK=dir [OUT=dir] [TRAIN_MIN=4.0] [PRIOR_MIN=1.2] bash benchmarks/gpu_photo.sh
#
# PACK holds train.zip (CIFAR-10 training images, <class>/<name>.webp under train/) and photos/ (the
# photographs whose crops are mixed in, see benchmarks/photo_mix.py). The runs come back as one tar
# (weights, configs, metrics, static table, prior and logs; no optimizer state, no cached codes) cut
# into OUT/runs.tar.part-* of 15 MB, the lent machine's limit on a returned file; rejoin with
# `cat OUT/runs.tar.part-* | tar x`.
#
# As first run (2026-11-27, TRAIN_MIN 4.0, PRIOR_MIN 2.0, DEADLINE 530) both trainings finished but
# both priors were cut off by the deadline: a prior spends about 30 s encoding its training images
# and 30 s calibrating and evaluating beside its budget. The defaults below leave that room; the
# prior of photo-f4-k4096 was trained in a second call from codes cached here (1.2 min on the GPU).
set -u
PACK=${PACK:-.gpu/pack3}
OUT=${OUT:-benchmarks/runs/gpu-photo}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
TRAIN_MIN=${TRAIN_MIN:-4.0}
PRIOR_MIN=${PRIOR_MIN:-1.2}
CROPS=${CROPS:-12000}
RECIPES=${RECIPES:-photo-f4-k4096 photo-f4-k1024}
PY=${PY:-python3}
WORK=${WORK:-/tmp/gp}
DEADLINE=${DEADLINE:-570}  # seconds from the start: every step is cut short so the runs are packed by then
START=$(date +%s)
left() {  # seconds left, keeping $1 in reserve; at least 1 (timeout 0 would mean no limit)
    local s=$(( START + DEADLINE - $(date +%s) - ${1:-0} )); echo $(( s > 0 ? s : 1 ))
}
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd) PACK=$(cd "$PACK" && pwd)  # absolute: the steps below change folders
log() { echo "== $(date -u +%H:%M:%S) $*"; }

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

point() {  # recipe: train, then its prior; each step logs into the run folder (packed with it)
    local r=$1 run="$WORK/$1"
    rm -rf "$run" && mkdir -p "$run"
    timeout "$(left 200)" $PY -m vqkit train --config "recipes/$r.json" \
        --data "$WORK/mix.npz" --out "$run" --no-progress --time-budget "$TRAIN_MIN" --device "$DEVICE" \
        > "$run/train.log" 2>&1
    echo "train exit $?" >> "$run/train.log"
    timeout "$(left 10)" $PY -m vqkit prior train "$run" --data "$WORK/mix.npz" \
        --no-progress --time-budget "$PRIOR_MIN" --set "train.device=$DEVICE" --set train.batch_size=256 \
        --set model.dropout=0.1 --set train.augment=3 > "$run/prior.log" 2>&1
    echo "prior exit $?" >> "$run/prior.log"
}
log "train + prior: $RECIPES ($TRAIN_MIN + $PRIOR_MIN min each, side by side)"
for r in $RECIPES; do point "$r" & done
wait
cat "$OUT/test_cuda.log" 2>/dev/null
for r in $RECIPES; do
    log "$r"
    tail -3 "$WORK/$r/train.log"; tail -4 "$WORK/$r/prior.log"; cat "$WORK/$r/eval.json" 2>/dev/null
done
(cd "$WORK" && tar cf - --exclude='*train_state.pt' --exclude='codes_*.npz' $RECIPES) \
    | split -b 15M - "$OUT/runs.tar.part-"
ls -la "$OUT"
log "done"

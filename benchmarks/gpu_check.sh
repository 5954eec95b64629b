#!/usr/bin/env bash
# The GPU checks of one short session on a lent CUDA machine (about 5 minutes on an H100):
#   1. the CUDA tests (tests/test_cuda.py: bf16 autocast with an fp32 quantizer, GPU/CPU code parity,
#      train on the GPU then encode/compress there and decompress on the CPU);
#   2. benchmarks/throughput.py on the GPU, vqkit against the vector-quantize-pytorch stack;
#   3. the prior of a trained run, trained on the GPU in two settings (ablation: dropout and length).
# Everything it writes lands in $OUT (default benchmarks/runs/gpu).
#
#   TRAIN=images VAL=images RUN=run-folder [CODES_SPEC=spec] [OUT=dir] bash benchmarks/gpu_check.sh
#
# RUN is a VQ-VAE run folder holding its cached training codes; CODES_SPEC is the data spec those
# codes were cached under (vqkit prior train --data), so the prior trains without the images.
set -u
OUT=${OUT:-benchmarks/runs/gpu}
TP_BUDGET=${TP_BUDGET:-0.5}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())" | tee -a "$OUT/gpu.txt"

log "CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT/test_cuda.log"

log "throughput on the GPU (budget $TP_BUDGET min per stack)"
$PY benchmarks/throughput.py --device "$DEVICE" ${TP_FLAGS:-} --budget "$TP_BUDGET" --train "$TRAIN" --val "$VAL" \
    --out /tmp/throughput 2>&1 | tail -40 | tee "$OUT/throughput.log"
mv benchmarks/results/throughput-"$DEVICE"-*.json "$OUT/" 2>/dev/null

# The prior: two settings, each in its own copy of the run (the run's weights and cached codes).
prior() {  # name, minutes, epochs, overrides...
    local name=$1 minutes=$2 epochs=$3
    shift 3
    log "prior $name ($minutes min or $epochs epochs): $*"
    rm -rf "/tmp/$name" && cp -r "$RUN" "/tmp/$name"
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    $PY -m vqkit prior train "/tmp/$name" --data "$CODES_SPEC" --overwrite --no-progress \
        --time-budget "$minutes" --epochs "$epochs" --set "train.device=$DEVICE" "${sets[@]}" 2>&1 | tail -5
    tail -2 "/tmp/$name/prior_metrics.jsonl"
    cat "/tmp/$name/prior_eval.json" 2>/dev/null | grep -E "nll_bits_per_code|percent_below"
    (cd "/tmp/$name" && tar cf "$OUT/$name.tar" prior.safetensors prior_config.json prior_eval.json \
        prior_metrics.jsonl)
}
if [ -n "${RUN:-}" ]; then
    prior prior-d1 "${PRIOR1_MIN:-0.7}" 20 train.batch_size=256 model.dropout=0.1
    prior prior-d2 "${PRIOR2_MIN:-1.0}" 40 train.batch_size=256 model.dropout=0.25
fi
log "done"

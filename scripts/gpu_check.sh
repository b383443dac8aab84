#!/usr/bin/env bash
# One-GPU throughput check (issues 16 and 22), sized for a short loan of one H100/H200: the step limits add up
# to 8 minutes (7 1/3 with SHARDS). It runs on a bare GPU machine: no `make`, no package registry, no Ray.
#
#   scripts/gpu_check.sh                                  # on a machine with one CUDA GPU
#   SHARDS=/data/shards scripts/gpu_check.sh              # reuse a build (a directory holding procedural/)
#   GPU_CHECK_SMALL=1 PY=.venv/bin/python scripts/gpu_check.sh    # CPU dry run of the same steps, tiny sizes
#
# Needs: Python with torch (2.11 or newer), torchvision, timm, numpy, pyarrow, pyyaml, tqdm, pillow,
# matplotlib (the trainer's figures) and scipy (Hungarian box matching). Small pure-Python packages, from wheels
# copied over when there is no registry: webdataset and braceexpand for the build step only (pipeline's shard
# writer; not needed with SHARDS), pytest, pluggy and iniconfig for the gpu_tests step (skipped, and marked so,
# without pytest). Not needed: Ray (the build runs serially, --workers 0), tensorboard (--no-tensorboard),
# ffmpeg-python, imageio-ffmpeg and pycocotools (real-video and EHOI adapters only). The project itself is put
# on PYTHONPATH (model/ for pvit, the root for pipeline and train); nothing is installed.
#
# Steps (limit, seconds): build (40: 96 procedural 16x224^2 clips, jpeg, serial; skipped with SHARDS),
# gpu_tests (90: `pytest -m gpu tests/model`: flex gradients, the flash kernel, the compiled sdpa path in
# bf16, cuDNN pooling, the bench on CUDA), bench_eager (85: `python -m pvit.bench` plain with the default
# formulations, explicit and sdpa attention, conv and shifts pooling, activation checkpointing, pvit
# backbone and full, torchvision mvit_v2_s and flex attention (which compiles its kernels on first use);
# peak memory per case; then --profile: the top 15 CUDA kernels of plain), bench_compiled (165:
# torch.compile of plain, pvit, full, flex, shifts and sdpa), train (100: 200 steps of the mvit_v2_s pvit
# model, bf16, compiled, 16 loader workers, stopped after the last step without the final evaluation, whose
# eval-mode recompilation would cost a minute). The benches warm their cases up in the order listed, each
# within --budget (the step's limit less the time the timing needs): a compilation that would run past it is
# interrupted and the case reported as such, so the cases before it are still timed. Each step has its own
# time limit; a failed or timed-out step is marked in the final table and the rest still run. Logs and JSON
# go to $OUT (default runs/gpu_check).
#
# Environment: PY (default python3), SHARDS, OUT, PEAK_TFLOPS (dense bf16 peak for MFU; default 989 for
# H100/H200 SXM, 756 for H100 PCIe, else none), WORKERS (loader workers, default 16), CODEC (jpeg), TRAIN_BENCH
# (1: also `python -m train.bench --device`, 60 s more), GPU_CHECK_SMALL, GPU_CHECK_COMPILE (1: the dry run
# compiles too; inductor's C++ build takes minutes on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONPATH="$ROOT/model:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
CODEC=${CODEC:-jpeg}
mkdir -p "$OUT"

if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
    DEVICE=cpu PRESET=tiny FRAMES=4 SIZE=32 SAMPLES=24 BATCH=2 STEPS=4 BENCH_STEPS=2 WARMUP=1 LOG_EVERY=2
    WORKERS=${WORKERS:-2} LIMIT=4  # limits x4: a small CPU is slow
    COMPILE=${GPU_CHECK_COMPILE:-0}
else
    DEVICE=cuda PRESET=mvit_v2_s FRAMES=16 SIZE=224 SAMPLES=96 BATCH=16 STEPS=200 BENCH_STEPS=30 WARMUP=5
    LOG_EVERY=20 WORKERS=${WORKERS:-16} LIMIT=1 COMPILE=1
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "no CUDA device visible to torch; GPU_CHECK_SMALL=1 runs the CPU dry run" >&2; exit 2; }
fi
if [ -z "${PEAK_TFLOPS:-}" ]; then
    PEAK_TFLOPS=$("$PY" -c 'import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
print(756 if "H100" in name and "PCIe" in name else 989 if ("H100" in name or "H200" in name) else 0)')
fi
declare -A STATUS
STEPS_RUN=(build gpu_tests bench_eager bench_compiled train_bench train)

step() {  # step NAME SECONDS CMD...: run with a time limit (scaled up by LIMIT on CPU), log, record status
    local name=$1 seconds=$(($2 * LIMIT)); shift 2
    echo "== $name (limit ${seconds}s): $*"
    local started=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    STATUS[$name]="rc $rc, $((SECONDS - started)) s"
    [ "$rc" = 124 ] && STATUS[$name]="timed out after ${seconds} s"
}

if [ -n "${SHARDS:-}" ]; then
    STATUS[build]="skipped: SHARDS=$SHARDS"
else
    SHARDS="$OUT/shards"
    step build 40 "$PY" -m pipeline.cli build --source procedural --out "$SHARDS" --frames "$FRAMES" \
        --size "$SIZE" --crop centre --label-stride 4 --codec "$CODEC" --num-samples "$SAMPLES" --workers 0 --quiet
fi

if "$PY" -c 'import pytest' 2>/dev/null; then
    step gpu_tests 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/model
else
    STATUS[gpu_tests]="skipped: no pytest for $PY"
fi

BENCH=(-m pvit.bench --device "$DEVICE" --preset "$PRESET" --frames "$FRAMES" --size "$SIZE" --batch "$BATCH"
       --peak-tflops "$PEAK_TFLOPS" --no-params --repeats 7)
step bench_eager 85 "$PY" "${BENCH[@]}" --cases plain,explicit,sdpa,conv,shifts,ckpt,pvit,full,tv,flex \
    --budget $((30 * LIMIT)) --profile --json "$OUT/bench_eager.json"
if [ "$COMPILE" = 1 ]; then
    step bench_compiled 165 "$PY" "${BENCH[@]}" --compile --cases plain,pvit,full,flex,shifts,sdpa \
        --budget $((125 * LIMIT)) --json "$OUT/bench_compiled.json"
else
    STATUS[bench_compiled]="skipped: GPU_CHECK_COMPILE=1 compiles on the CPU (minutes)"
fi
COMPILE_FLAG=$([ "$COMPILE" = 1 ] && echo --compile || echo --no-compile)
if [ "${TRAIN_BENCH:-0}" = 1 ]; then
    step train_bench 60 "$PY" -m train.bench --shards "$SHARDS" --source procedural --device "$DEVICE" \
        --preset "$PRESET" --workers "$WORKERS" --batch-size "$BATCH" --steps "$BENCH_STEPS" --warmup "$WARMUP" \
        "$COMPILE_FLAG"
fi
step train 100 "$PY" -m train.main --shards "$SHARDS" --real procedural --synthetic procedural \
    --preset "$PRESET" --mode pvit --device "$DEVICE" --amp auto --batch-size "$BATCH" \
    --synthetic-batch-size "$BATCH" --steps $((STEPS + 1)) --stop-after "$STEPS" --warmup-steps 20 --lr 1e-4 \
    --workers "$WORKERS" --log-every "$LOG_EVERY" --no-tensorboard "$COMPILE_FLAG" --out "$OUT/train"

echo
echo "== summary ($(date -u +%FT%TZ), $DEVICE, preset $PRESET, ${FRAMES}x${SIZE}^2, peak ${PEAK_TFLOPS} TFLOP/s)"
for name in "${STEPS_RUN[@]}"; do
    printf '  %-15s %s\n' "$name" "${STATUS[$name]:-not run}"
done
"$PY" scripts/gpu_check_summary.py "$OUT" "$((BATCH * 2))"

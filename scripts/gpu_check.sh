#!/usr/bin/env bash
# One-GPU throughput check (issue 16), sized for a short loan of one H100/H200: the step limits add up
# to 8 minutes (expected about 6).
#
#   scripts/gpu_check.sh                      # on a machine with one CUDA GPU
#   GPU_CHECK_SMALL=1 scripts/gpu_check.sh    # CPU dry run of the same steps at a tiny size (minutes)
#
# Steps: the project's .venv (`make`, nothing else installed; or PY=/path/to/python that already has the
# project and its dependencies), 16x224^2 procedural shards, `python -m pvit.bench` eager (plain, explicit
# attention, pvit backbone, pvit full) and compiled (plain, pvit backbone), `python -m train.bench --device`
# (the real loader into the real training step, 16 workers), then a 200-step bf16 training run of the
# mvit_v2_s preset. Each step has its own time limit; a failed or timed-out step is marked in the final table
# and the rest still run. Logs and JSON go to $OUT (default runs/gpu_check).
#
# Environment: PEAK_TFLOPS (dense bf16 peak for MFU; default 989 for H100/H200 SXM, 756 for H100 PCIe,
# else none), OUT, PY, WORKERS (loader workers, default 16), GPU_CHECK_SMALL, GPU_CHECK_COMPILE (1: the
# dry run compiles too).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
if [ -z "${PY:-}" ]; then
    make .venv/.installed >"$OUT/make.log" 2>&1 || { echo "make failed; see $OUT/make.log" >&2; exit 1; }
    PY=.venv/bin/python
fi

if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
    DEVICE=cpu PRESET=tiny FRAMES=4 SIZE=32 SAMPLES=24 BATCH=2 STEPS=4 BENCH_STEPS=2 WARMUP=1
    WORKERS=${WORKERS:-2} BUILD_WORKERS=0 LIMIT=4  # limits x4: a small CPU is slow
else
    DEVICE=cuda PRESET=mvit_v2_s FRAMES=16 SIZE=224 SAMPLES=256 BATCH=16 STEPS=200 BENCH_STEPS=30 WARMUP=5
    WORKERS=${WORKERS:-16} BUILD_WORKERS=$(nproc) LIMIT=1
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "no CUDA device visible to torch; GPU_CHECK_SMALL=1 runs the CPU dry run" >&2; exit 2; }
fi
if [ -z "${PEAK_TFLOPS:-}" ]; then
    PEAK_TFLOPS=$("$PY" -c 'import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
print(756 if "H100" in name and "PCIe" in name else 989 if ("H100" in name or "H200" in name) else 0)')
fi
SHARDS="$OUT/shards"
declare -A STATUS

step() {  # step NAME SECONDS CMD...: run with a time limit (scaled up by LIMIT on CPU), log, record status
    local name=$1 seconds=$(($2 * LIMIT)); shift 2
    echo "== $name (limit ${seconds}s): $*"
    local started=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    STATUS[$name]="rc $rc, $((SECONDS - started)) s"
    [ "$rc" = 124 ] && STATUS[$name]="timed out after ${seconds} s"
}

step build 90 "$PY" -m pipeline.cli build --source procedural --out "$SHARDS" --frames "$FRAMES" \
    --size "$SIZE" --crop centre --label-stride 4 --num-samples "$SAMPLES" --workers "$BUILD_WORKERS" --quiet
BENCH=(-m pvit.bench --device "$DEVICE" --preset "$PRESET" --frames "$FRAMES" --size "$SIZE" --batch "$BATCH"
       --peak-tflops "$PEAK_TFLOPS" --no-params)
step bench_eager 60 "$PY" "${BENCH[@]}" --repeats 7 --json "$OUT/bench_eager.json"
if [ "$DEVICE" = cuda ] || [ "${GPU_CHECK_COMPILE:-0}" = 1 ]; then  # inductor's C++ build takes minutes on CPU
    step bench_compiled 150 "$PY" "${BENCH[@]}" --repeats 7 --compile --cases plain,pvit \
        --json "$OUT/bench_compiled.json"
fi
step train_bench 60 "$PY" -m train.bench --shards "$SHARDS" --source procedural --device "$DEVICE" \
    --preset "$PRESET" --workers "$WORKERS" --batch-size "$BATCH" --steps "$BENCH_STEPS" --warmup "$WARMUP"
step train 120 "$PY" -m train.main --shards "$SHARDS" --real procedural --synthetic procedural \
    --preset "$PRESET" --mode pvit --device "$DEVICE" --amp auto --batch-size "$BATCH" \
    --synthetic-batch-size "$BATCH" --steps "$STEPS" --warmup-steps 20 --lr 1e-4 --workers "$WORKERS" \
    --log-every 20 --no-tensorboard --out "$OUT/train"

echo
echo "== summary ($(date -u +%FT%TZ), $DEVICE, preset $PRESET, ${FRAMES}x${SIZE}^2, peak ${PEAK_TFLOPS} TFLOP/s)"
for name in build bench_eager bench_compiled train_bench train; do
    printf '  %-15s %s\n' "$name" "${STATUS[$name]:-not run}"
done
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"  {'case':<52} {'clips/s':>8} {'TFLOP/s':>8} {'MFU':>6} {'vs plain':>8}")
for tag in ("eager", "compiled"):
    path = out / f"bench_{tag}.json"
    if not path.exists():
        continue
    for row in json.loads(path.read_text())["rows"]:
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] else "-"
        print(f"  {tag + ': ' + row['name']:<52} {row['clips_per_s']:8.1f} {row['tflops']:8.1f} {mfu:>6} "
              f"{row['ratio_to_plain']:8.3f}")
lines = (out / "train_bench.log").read_text().splitlines() if (out / "train_bench.log").exists() else []
for line in lines:
    if line.startswith("training step"):
        print("  train.bench: " + line.split(": ", 1)[-1])
metrics = out / "train" / "metrics.jsonl"
if metrics.exists():
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    summary = next((r for r in rows if r["kind"] == "summary"), {})
    if train:
        steady = train[1:] or train
        clips = sum(r["clips_per_s"] for r in steady) / len(steady)
        print(f"  training run: {train[-1]['step']} steps, loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}, "
              f"{clips:.1f} clips/s after the first interval, data-wait share "
              f"{100 * summary.get('data_wait_share', float('nan')):.1f}%")
EOF

#!/bin/sh
# One run of at most 10 minutes on a GPU machine without network access (see BENCHMARKS.md,
# docs/training.md):
#  1. install the wheels carried in .whl/ (packages that machine lacks), where there are any;
#  2. continue the demo model on the carried phantoms on the GPU for a fixed wall-clock budget:
#     the preprocessed task and the starting checkpoint travel in .devcarry/train_data.tar.xz,
#     made by `python -m bench.gpu_carry pack` (docs/training.md); the folds are fine-tuned from
#     the result afterwards on a CPU;
#  3. the GPU benchmark (bench/gpu.sh) in the time left, stock nnU-Net last and capped.
# What is worth keeping lands in $OUT (default bench/out/gpu_session), in a few files.
set -u
T0=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu_session}
BUDGET=${BUDGET:-560}          # seconds for the whole script
TRAIN_MIN=${TRAIN_MIN:-3.5}    # training wall-clock budget, minutes
CARRY=${CARRY:-.devcarry/train_data.tar.xz}
# WARM_LR: the starting checkpoint's initial learning rate (default: the trainer's 0.01).
# BATCH (8) and ITERATIONS (150 a epoch) size the training; DEST is where the carry is unpacked.
# BASE_FEATURES: the network's width, where the carried model was widened (app.training.widen).
# ORDER_Z: the export along z written into the carried plans (1: linear; plans made before the
# demo planner wrote it carry none, which means v1's nearest slice).
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
fi
PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1
nproc >> "$OUT/nvidia-smi.txt"

D=${DEST:-/tmp/demo}
rm -rf "$D"
TASK=$(python3 -m bench.gpu_carry unpack --carry "$CARRY" --dest "$D" --print-task) || exit 1
echo "unpacked $TASK after $(( $(date +%s) - T0 )) s"
WORKERS=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
timeout $(( 60 * ${TRAIN_MIN%.*} + 90 )) python3 -m app train --task-dir "$D/$TASK" --work-dir "$D/work" \
    --planner small --folds --warm-start-epochs 1000 --warm-start-init "$D/init.model" \
    ${WARM_LR:+--warm-start-lr "$WARM_LR"} --iterations "${ITERATIONS:-150}" --val-iterations 4 \
    --time-budget-min "$TRAIN_MIN" --batch-size "${BATCH:-8}" ${BASE_FEATURES:+--base-features "$BASE_FEATURES"} \
    ${ORDER_Z:+--export-interpolation-order-z "$ORDER_Z"} \
    --da-workers "$WORKERS" --processes 8 --seed 11 > "$OUT/train.log" 2>&1
echo "train exit $? after $(( $(date +%s) - T0 )) s"
M=$D/work/nnUNet_results/nnUNet/3d_fullres/$TASK/ScaledCEToDiceTrainer__nnUNetPlans_small/all
(cd $M && tar -czf "$OUT/all_model.tar.gz" model_final_checkpoint.model model_final_checkpoint.model.pkl \
    progress.png training_log_*.txt) || echo "no trained model"
grep -E "time budget|Average global|This epoch took" "$OUT/train.log" | tail -4

LEFT=$(( BUDGET - ($(date +%s) - T0) ))
if [ "$LEFT" -lt 200 ]; then  # a long TRAIN_MIN leaves too little for the benchmark: raise BUDGET
  echo "only $LEFT s left: benchmark skipped"
  exit 0
fi
echo "bench with $LEFT s left"
# shellcheck disable=SC2086  # BENCH_ARGS: extra words (--tiny for a CPU check of this script)
timeout $LEFT sh bench/gpu.sh --out "$OUT" --stock-timeout $(( LEFT - 170 )) ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench exit $? after $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/bench_logs.tar.gz" bench/out/*.log 2>/dev/null
tail -c 2500 "$OUT/bench.log"

#!/bin/bash
# Segment a folder of CTs with a SLURM job array, one shard per array task:
#
#   apptainer build flare21.sif docker-archive://flare21-seg.tar   # once: `docker save` output
#   sbatch --array=0-7 docs/slurm-array.sh /data/cts /data/masks
#
# Task k of an array of N tasks runs `sh predict.sh` inside the image with SHARD=k/N, so it
# segments cases k, k+N, k+2N, ... of the sorted list; the N tasks cover the folder exactly
# once. Masks already written are skipped, so resubmitting the same array after a failure,
# a timeout or a preemption only does what is left. Use a plain range starting anywhere
# (0-7, 1-8, 0-7%2 to run two at a time); not a step (0-14:2) nor a list (1,4,9).
#
# Environment (all optional):
#   IMAGE      the Apptainer/Singularity image (default: flare21.sif in the folder you submit from)
#   RUNTIME    apptainer | singularity | none (default: whichever of the first two is installed);
#              none runs predict.sh from a checkout (APP_DIR) with the python on PATH
#   APP_DIR    checkout for RUNTIME=none (default: the folder you submit from)
#   DRY_RUN=1  print the command instead of running it
# Arguments after the input and output folders go to `python -m app predict` (e.g. --mode fast).
#SBATCH --job-name=flare21-predict
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=flare21-%A_%a.log
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: sbatch --array=0-N docs/slurm-array.sh INPUT_DIR OUTPUT_DIR [predict options]" >&2
    exit 2
fi
INPUT=$(cd "$1" && pwd)
mkdir -p "$2"
OUTPUT=$(cd "$2" && pwd)
shift 2

: "${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch --array=0-N}"
: "${SLURM_ARRAY_TASK_COUNT:?not an array task: submit with sbatch --array=0-N}"
# The shard index counts from 0 whatever the first task id of the range is.
INDEX=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
COUNT=$SLURM_ARRAY_TASK_COUNT
if [ "$INDEX" -lt 0 ] || [ "$INDEX" -ge "$COUNT" ]; then
    echo "array task $SLURM_ARRAY_TASK_ID gives shard $INDEX/$COUNT: use a plain range, e.g. --array=0-7" >&2
    exit 2
fi
SHARD="$INDEX/$COUNT"

if [ -z "${RUNTIME:-}" ]; then
    RUNTIME=$(command -v apptainer >/dev/null && echo apptainer \
              || { command -v singularity >/dev/null && echo singularity; } || echo apptainer)
fi
case "$RUNTIME" in
    apptainer | singularity)
        # --nv brings the host's NVIDIA driver in; --cleanenv keeps the host's Python
        # variables out, so the GPU SLURM picked is passed on by hand; the image's /workspace
        # layout is kept, with the folders bound on it.
        ENVS=(--env "SHARD=$SHARD")
        if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
            ENVS+=(--env "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES")
        fi
        CMD=("$RUNTIME" exec --nv --cleanenv "${ENVS[@]}" --pwd /workspace
             --bind "$INPUT:/workspace/inputs:ro" --bind "$OUTPUT:/workspace/outputs"
             "${IMAGE:-flare21.sif}" sh predict.sh "$@")
        ;;
    none)
        APP_DIR=${APP_DIR:-$PWD}  # a job starts where it was submitted (sbatch runs a copy of this file)
        CMD=(env "SHARD=$SHARD" "INPUT_DIR=$INPUT" "OUTPUT_DIR=$OUTPUT" sh "$APP_DIR/predict.sh" "$@")
        ;;
    *)
        echo "RUNTIME=$RUNTIME: use apptainer, singularity or none" >&2
        exit 2
        ;;
esac

echo "array task $SLURM_ARRAY_TASK_ID: shard $SHARD of $INPUT -> $OUTPUT on $(hostname)"
if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
exec "${CMD[@]}"

#!/bin/sh
# The GPU benchmark, in one run of at most 10 minutes (see bench/gpu.py and BENCHMARKS.md).
# Python packages missing on the GPU machine come as wheels in .whl/ (see BENCHMARKS.md).
# `sh bench/gpu.sh --tiny` checks the script on a CPU; PYTHON picks the interpreter (python3).
set -eu
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    # installed once per machine; bench/gpu_session.sh may have done it already
    [ -d /tmp/site/nnunet ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"${PYTHON:-python3}" -m bench.gpu --out "${OUT:-bench/out/gpu}" "$@"

#!/bin/sh
# FLARE21 entrypoint. The organisers run `sh predict.sh` (dash): POSIX sh only.
# INPUT_DIR, OUTPUT_DIR and WEIGHTS_DIR may be overridden; SHARD=I/N picks a slice of the cases.
# Extra arguments are passed on to `python -m app predict`; PYTHON picks the interpreter (python3).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
INPUT_DIR=${INPUT_DIR:-/workspace/inputs}
OUTPUT_DIR=${OUTPUT_DIR:-/workspace/outputs}
WEIGHTS_DIR=${WEIGHTS_DIR:-$HERE/weights}
if [ -n "${SHARD:-}" ]; then
    set -- --shard "$SHARD" "$@"
fi
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
exec "${PYTHON:-python3}" -m app predict -i "$INPUT_DIR" -o "$OUTPUT_DIR" --weights "$WEIGHTS_DIR" "$@"

#!/usr/bin/env bash
# `make test-container`: build the Docker image and run it as the FLARE21 organisers do,
# without a Docker engine: podman builds (chroot isolation), buildah runs.
#
# The base image is a Debian bookworm root file system (python3 3.11) made with debootstrap;
# the build installs from a local wheelhouse (pip download of requirements.txt, the CPU torch
# wheel), so it needs no network. Both, and the image store with its layer cache, are kept
# outside the clone and reused by later runs (tests/container/lib.sh: FLARE_CONTAINER_CACHE,
# FLARE_STORAGE_DRIVER, DEBIAN_MIRROR). Also:
#   FLARE_TEST_IMAGE       image name (default localhost/flare21-test:latest)
#   KEEP_WORK=1            keep the scratch folder with the inputs and outputs
#
# Checks: hadolint; the image builds; `sh predict.sh` from the image's WORKDIR, without
# network, with read-only inputs (the real example CT and a synthetic oblique case) writes one
# correctly named mask per input on the input's exact grid, writes nothing into inputs and
# nothing in the image outside /tmp; two one-case runs into one outputs folder leave both
# masks; a non-root --user run of the synthetic cases.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/container"
IMAGE=${FLARE_TEST_IMAGE:-localhost/flare21-test:latest}
# shellcheck source=lib.sh
. "$ROOT/tests/container/lib.sh"

cleanup() {
    if [ -n "${WORK:-}" ] && [ "${KEEP_WORK:-0}" != 1 ]; then
        rm -rf "$WORK"
    elif [ -n "${WORK:-}" ]; then
        echo "scratch folder kept: $WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- tools
step "tools"
container_tools
container_store

# ---------------------------------------------------------------- hadolint
step "hadolint"
"$ROOT/.venv/bin/hadolint" "$ROOT/Dockerfile" || fail "hadolint Dockerfile"
ok "hadolint Dockerfile"

# ---------------------------------------------------------------- wheelhouse
# Keyed by requirements.txt and the default CUDA line's constraints, so a new pin makes a new
# one. Source-only packages are turned into wheels here, so the offline build needs no build
# back-end.
step "wheelhouse"
CONSTRAINTS="$ROOT/requirements-cuda13.txt"
REQ_KEY=$(cat "$ROOT/requirements.txt" "$CONSTRAINTS" | sha256sum | cut -c1-16)
WHEELHOUSE="$CACHE/wheelhouse-$REQ_KEY"
if [ -f "$WHEELHOUSE/.complete" ]; then
    echo "reusing $WHEELHOUSE"
else
    rm -rf "$WHEELHOUSE.part"
    "$PY" -m pip download --quiet --dest "$WHEELHOUSE.part" -c "$CONSTRAINTS" -r "$ROOT/requirements.txt" \
        > "$CACHE/wheelhouse.log" 2>&1 || { tail -n 20 "$CACHE/wheelhouse.log"; fail "pip download"; }
    shopt -s nullglob
    sdists=("$WHEELHOUSE.part"/*.tar.gz "$WHEELHOUSE.part"/*.zip)
    shopt -u nullglob
    if [ "${#sdists[@]}" -gt 0 ]; then
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELHOUSE.part" "${sdists[@]}" \
            >> "$CACHE/wheelhouse.log" 2>&1 || { tail -n 20 "$CACHE/wheelhouse.log"; fail "pip wheel"; }
        rm -f "${sdists[@]}"
    fi
    touch "$WHEELHOUSE.part/.complete"
    find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -name '*.part' -exec rm -rf {} +  # older pins
    mv "$WHEELHOUSE.part" "$WHEELHOUSE"
fi
echo "$(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"

# ---------------------------------------------------------------- base image
base_image

# ---------------------------------------------------------------- build
step "build $IMAGE"
build_image "$IMAGE" "$CACHE/build.log" --build-arg BASE_IMAGE="$LOCAL_BASE_IMAGE" \
    --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse -v "$WHEELHOUSE:/wheelhouse:ro"
size=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}')
workdir=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Config.WorkingDir}}')
env_list=$("${PODMAN[@]}" image inspect "$IMAGE" --format '{{range .Config.Env}}{{println .}}{{end}}')
echo "image size $((size / 1000000)) MB (CPU torch), WORKDIR $workdir"
[ "$workdir" = /workspace ] || fail "WORKDIR is $workdir, not /workspace"
if grep -q '^CUDA_VISIBLE_DEVICES=' <<<"$env_list"; then fail "the image sets CUDA_VISIBLE_DEVICES"; fi
ok "image builds (WORKDIR /workspace, no CUDA_VISIBLE_DEVICES)"

# ---------------------------------------------------------------- inputs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flare21-ctest.XXXXXX")
chmod 755 "$WORK"
IN="$WORK/inputs"
mkdir -p "$IN"
cp "$ROOT/tests/data/example_ct.nii.gz" "$IN/example_0000.nii.gz"
"$PY" "$HERE/make_inputs.py" "$IN/synth_0000.nii.gz" --seed 1
"$PY" "$HERE/make_inputs.py" "$WORK/synth2_0000.nii.gz" --seed 2 --flip
chmod -R a+rX,a-w "$IN"
chmod a+r "$WORK/synth2_0000.nii.gz"

fingerprint() { (cd "$1" && find . -printf '%p %s %T@ %m\n' | sort && find . -type f -exec sha256sum {} + | sort); }

# run_case NAME INPUTS OUTPUTS [buildah run options...]: tests/container/lib.sh's run_predict, which
# sets CONTAINER_CHANGED; a failed run fails the test.
run_case() {
    local name=$1 in=$2 out=$3
    shift 3
    run_predict "$IMAGE" "ctest-$name" "$in" "$out" "$WORK/$name.log" "$@" \
        || { tail -n 40 "$WORK/$name.log"; fail "run $name: sh predict.sh failed"; }
    CHANGED=$CONTAINER_CHANGED
    echo "  run $name: $RUN_SECONDS s (container create, predict, remove)"
    sed 's/^/    | /' "$WORK/$name.log" | tail -n 8
}

# ---------------------------------------------------------------- run: the organisers' way
step "run as root: two cases, read-only inputs, no network"
OUT="$WORK/outputs-root"
mkdir -p "$OUT"
before=$(fingerprint "$IN")
run_case root "$IN" "$OUT"
[ "$before" = "$(fingerprint "$IN")" ] || fail "the run changed the inputs folder"
ok "nothing written into inputs"
[ -z "$CHANGED" ] || { echo "$CHANGED"; fail "the run wrote into the image outside /tmp and the outputs"; }
ok "nothing written in the container outside /tmp and outputs"
"$PY" "$HERE/check_outputs.py" "$IN" "$OUT" || fail "masks of the two-case run"
ok "masks example.nii.gz and synth.nii.gz: names and exact input geometry"

# ---------------------------------------------------------------- run: one container per case
step "one container per case: two one-case runs into one outputs folder"
ONE="$WORK/inputs-one"
OUT="$WORK/outputs-per-case"
mkdir -p "$ONE" "$OUT"
cp "$IN/synth_0000.nii.gz" "$ONE/"
run_case case1 "$ONE" "$OUT"
rm -f "$ONE"/*
cp "$WORK/synth2_0000.nii.gz" "$ONE/"
run_case case2 "$ONE" "$OUT"
cp "$IN/synth_0000.nii.gz" "$ONE/"
"$PY" "$HERE/check_outputs.py" "$ONE" "$OUT" || fail "masks of the one-case runs"
ok "both masks present after two one-case runs, on their inputs' grids"

# ---------------------------------------------------------------- run: non-root
# The two synthetic cases: the root run above already covered the real CT's code path; this
# one is about permissions (image readable, HOME and caches in /tmp, outputs of the caller's uid).
step "run as --user 1000:1000: the two synthetic cases"
OUT="$WORK/outputs-user"
mkdir -p "$OUT"
chown 1000:1000 "$OUT"
chmod -R a+rX,a-w "$ONE"
before=$(fingerprint "$ONE")
run_case user "$ONE" "$OUT" --user 1000:1000
[ "$before" = "$(fingerprint "$ONE")" ] || fail "the non-root run changed the inputs folder"
[ -z "$CHANGED" ] || { echo "$CHANGED"; fail "the non-root run wrote outside /tmp and the outputs"; }
"$PY" "$HERE/check_outputs.py" "$ONE" "$OUT" --uid 1000 || fail "masks of the non-root run"
ok "non-root run: masks owned by 1000, exact geometry, inputs untouched"

step "done in $((SECONDS - T0)) s"
printf '\ncontainer: %d passed, 0 failed\n' "$PASSED"

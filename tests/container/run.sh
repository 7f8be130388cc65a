#!/usr/bin/env bash
# `make test-container`: build the Docker image and run it as the FLARE21 organisers do,
# without a Docker engine: podman builds (chroot isolation), buildah runs.
#
# The base image is a Debian bookworm root file system (python3 3.11) made with debootstrap;
# the build installs from a local wheelhouse (pip download of requirements.txt), so it needs no
# network. Both, and the image store with its layer cache, are kept outside the clone and
# reused by later runs:
#   FLARE_CONTAINER_CACHE  cache folder (default /var/tmp/flare21-container)
#   FLARE_STORAGE_DRIVER   overlay or vfs (default: overlay where the kernel mounts it here,
#                          else vfs; vfs copies every layer in full and is many times slower)
#   FLARE_TEST_IMAGE       image name (default localhost/flare21-test:latest)
#   DEBIAN_MIRROR          debootstrap mirror (default: the Debian mirror apt is configured with)
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
CACHE=${FLARE_CONTAINER_CACHE:-/var/tmp/flare21-container}
IMAGE=${FLARE_TEST_IMAGE:-localhost/flare21-test:latest}
BASE_IMAGE=localhost/flare21-base:bookworm
T0=$SECONDS
PASSED=0
CONTAINERS=()

step() { printf '\n== [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
ok() { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; printf '\ncontainer: %d passed, 1 failed\n' "$PASSED"; exit 1; }

cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do
        "${BUILDAH[@]}" umount "$c" >/dev/null 2>&1 || true
        "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true
    done
    if [ -n "${WORK:-}" ] && [ "${KEEP_WORK:-0}" != 1 ]; then
        rm -rf "$WORK"
    elif [ -n "${WORK:-}" ]; then
        echo "scratch folder kept: $WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- tools
step "tools"
if [ "$(id -u)" != 0 ]; then
    echo "this test needs root (debootstrap, podman and buildah with vfs storage)" >&2
    exit 2
fi
missing=()
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap >/dev/null
fi
podman --version
buildah --version
# The host side (wheelhouse, synthetic input, checks, hadolint) uses the project's venv.
PY="$ROOT/.venv/bin/python"
if ! { [ -x "$ROOT/.venv/bin/hadolint" ] && "$PY" -c 'import SimpleITK' 2>/dev/null; }; then
    make -C "$ROOT" --no-print-directory venv
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the wheelhouse needs a Python 3.11 host venv"'

# A store of our own, so that pruning and a driver choice touch nothing else on the machine.
overlay_works() {
    local probe
    probe=$(mktemp -d "$CACHE/overlay-probe.XXXXXX") || return 1
    mkdir -p "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
            "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}
mkdir -p "$CACHE"
DRIVER=${FLARE_STORAGE_DRIVER:-auto}
if [ "$DRIVER" = auto ]; then
    if overlay_works; then DRIVER=overlay; else DRIVER=vfs; fi
fi
STORAGE=(--storage-driver="$DRIVER" --root "$CACHE/storage-$DRIVER" --runroot "/run/flare21-containers-$DRIVER")
PODMAN=(podman "${STORAGE[@]}")
BUILDAH=(buildah "${STORAGE[@]}")
echo "image store: $DRIVER driver in $CACHE/storage-$DRIVER"

# ---------------------------------------------------------------- hadolint
step "hadolint"
"$ROOT/.venv/bin/hadolint" "$ROOT/Dockerfile" || fail "hadolint Dockerfile"
ok "hadolint Dockerfile"

# ---------------------------------------------------------------- wheelhouse
# Keyed by requirements.txt, so a new pin makes a new one. Source-only packages are turned into
# wheels here, so the offline build needs no build back-end.
step "wheelhouse"
REQ_KEY=$(sha256sum "$ROOT/requirements.txt" | cut -c1-16)
WHEELHOUSE="$CACHE/wheelhouse-$REQ_KEY"
if [ -f "$WHEELHOUSE/.complete" ]; then
    echo "reusing $WHEELHOUSE"
else
    mkdir -p "$CACHE"
    rm -rf "$WHEELHOUSE.part"
    "$PY" -m pip download --quiet --dest "$WHEELHOUSE.part" -r "$ROOT/requirements.txt" \
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
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+/debian/?' | grep -v security | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
step "base image $BASE_IMAGE"
if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    echo "reusing $BASE_IMAGE"
else
    mkdir -p "$CACHE"
    ROOTFS="$CACHE/rootfs.part"
    rm -rf "$ROOTFS"
    mirror=$(debian_mirror)
    echo "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" "$mirror" \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log"; fail "debootstrap"; }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null 2>&1 || fail "podman import"
    rm -rf "$ROOTFS"
fi

# ---------------------------------------------------------------- build
step "build $IMAGE"
[ -n "$(find "$ROOT/weights" -type f 2>/dev/null | head -n1)" ] || fail "weights/ is empty: nothing to bake in"
build_log="$CACHE/build.log"
if ! "${PODMAN[@]}" build --isolation=chroot --format docker --layers \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse \
        -v "$WHEELHOUSE:/wheelhouse:ro" \
        -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" > "$build_log" 2>&1; then
    tail -n 40 "$build_log"
    fail "podman build (log: $build_log)"
fi
grep -E '^(STEP|--> Using cache)' "$build_log" | sed 's/^/  /' | cut -c1-110
# Earlier builds of the image are dangling now; their layers are full copies under vfs.
"${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true
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

# run_case NAME INPUTS OUTPUTS [buildah run options...]: a fresh container from the image,
# `sh predict.sh` from its WORKDIR as the organisers run it, in a network namespace without
# network (chroot isolation shares the caller's), then the container is removed.
# Sets CHANGED to what the run changed in the container outside the mounts.
run_case() {
    local name=$1 in=$2 out=$3
    shift 3
    local ctr mnt marker t=$SECONDS
    ctr=$("${BUILDAH[@]}" from --pull=never --name "flare21-ctest-$name-$$" "$IMAGE")
    CONTAINERS+=("$ctr")
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    marker="$WORK/.marker-$name"
    touch "$marker"
    sleep 1
    if ! unshare --net "${BUILDAH[@]}" run --isolation=chroot "$@" \
            -v "$in:/workspace/inputs:ro" -v "$out:/workspace/outputs" \
            "$ctr" -- /bin/bash -c "sh predict.sh" > "$WORK/$name.log" 2>&1; then
        tail -n 40 "$WORK/$name.log"
        fail "run $name: sh predict.sh failed"
    fi
    # Allowed: /tmp, and what buildah itself puts in /run and the mount points.
    CHANGED=$(cd "$mnt" && find . -xdev -newer "$marker" \
        ! -path ./tmp ! -path './tmp/*' ! -path ./run ! -path ./run/.containerenv ! -path './run/secrets*' \
        ! -path ./workspace/inputs ! -path ./workspace/outputs \
        ! -path ./etc/hosts ! -path ./etc/resolv.conf ! -path ./etc/hostname ! -path . \
        ! -path ./dev ! -path ./proc ! -path ./sys | head -n 20)
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    echo "  run $name: $((SECONDS - t)) s (container create, predict, remove)"
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

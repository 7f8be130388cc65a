# Shared by `make image` (tests/container/image.sh) and `make test-container` (tests/container/run.sh):
# building and running the Dockerfile without a Docker engine, with podman (build, chroot
# isolation) and buildah (run), in an image store of the project's own. Source it after setting
# ROOT; bash only.
#   FLARE_CONTAINER_CACHE  cache folder (default /var/tmp/flare21-container): the wheelhouse, the
#                          image store and its layer cache, reused by later runs and clones
#   FLARE_STORAGE_DRIVER   overlay or vfs (default: overlay where the kernel mounts it here,
#                          else vfs; vfs copies every layer in full and is many times slower)
#   DEBIAN_MIRROR          debootstrap mirror (default: the Debian mirror apt is configured with)

CACHE=${FLARE_CONTAINER_CACHE:-/var/tmp/flare21-container}
# A Debian bookworm root file system (python3 3.11) from debootstrap: the base of every image
# built here, since these machines reach no container registry (the Dockerfile's default base
# comes from Docker Hub).
LOCAL_BASE_IMAGE=localhost/flare21-base:bookworm
T0=${T0:-$SECONDS}
PASSED=${PASSED:-0}

step() { printf '\n== [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
ok() { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; printf '\ncontainer: %d passed, 1 failed\n' "$PASSED"; exit 1; }

# podman, buildah and debootstrap (apt, as root), and the project's venv for the host side.
container_tools() {
    if [ "$(id -u)" != 0 ]; then
        echo "this needs root (debootstrap, podman and buildah with a store of its own)" >&2
        exit 2
    fi
    local missing=() tool
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
    PY="$ROOT/.venv/bin/python"
    if ! { [ -x "$ROOT/.venv/bin/hadolint" ] && "$PY" -c 'import SimpleITK' 2>/dev/null; }; then
        make -C "$ROOT" --no-print-directory venv
    fi
    "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the wheelhouse needs a Python 3.11 host venv"'
}

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

# A store of our own, so that pruning and a driver choice touch nothing else on the machine.
# Sets DRIVER, PODMAN and BUILDAH (commands as arrays).
container_store() {
    mkdir -p "$CACHE"
    DRIVER=${FLARE_STORAGE_DRIVER:-auto}
    if [ "$DRIVER" = auto ]; then
        if overlay_works; then DRIVER=overlay; else DRIVER=vfs; fi
    fi
    local storage=(--storage-driver="$DRIVER" --root "$CACHE/storage-$DRIVER" --runroot "/run/flare21-containers-$DRIVER")
    PODMAN=(podman "${storage[@]}")
    BUILDAH=(buildah "${storage[@]}")
    echo "image store: $DRIVER driver in $CACHE/storage-$DRIVER"
}

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+/debian/?' | grep -v security | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# LOCAL_BASE_IMAGE from debootstrap, unless the store has it already.
base_image() {
    step "base image $LOCAL_BASE_IMAGE"
    if "${PODMAN[@]}" image exists "$LOCAL_BASE_IMAGE"; then
        echo "reusing $LOCAL_BASE_IMAGE"
        return
    fi
    local rootfs="$CACHE/rootfs.part" mirror
    rm -rf "$rootfs"
    mirror=$(debian_mirror)
    echo "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log"; fail "debootstrap"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$LOCAL_BASE_IMAGE" >/dev/null 2>&1 || fail "podman import"
    rm -rf "$rootfs"
}

# build_image IMAGE LOG [podman build options...]: the Dockerfile, chroot isolation, layer cache;
# then the dangling images of earlier builds go (their layers are full copies under vfs).
build_image() {
    local image=$1 log=$2
    shift 2
    [ -n "$(find "$ROOT/weights" -type f 2>/dev/null | head -n1)" ] || fail "weights/ is empty: nothing to bake in"
    if ! "${PODMAN[@]}" build --isolation=chroot --format docker --layers "$@" \
            -t "$image" -f "$ROOT/Dockerfile" "$ROOT" > "$log" 2>&1; then
        tail -n 40 "$log"
        fail "podman build (log: $log)"
    fi
    grep -E '^(STEP|--> Using cache)' "$log" | sed 's/^/  /' | cut -c1-110
    "${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true
}

# run_predict IMAGE NAME INPUTS OUTPUTS LOG [buildah run options...]: a fresh container from the
# image, `sh predict.sh` from its WORKDIR as the organisers run it, in a network namespace without
# network (chroot isolation shares the caller's); RUN_SECONDS is the wall time from container
# creation to its removal. CONTAINER_CHANGED lists what the run changed in the container outside
# /tmp, the mounts and what buildah itself writes.
run_predict() {
    local image=$1 name=$2 in=$3 out=$4 log=$5
    shift 5
    local ctr mnt marker start rc=0
    start=$(date +%s.%N)
    ctr=$("${BUILDAH[@]}" from --pull=never --name "flare21-$name-$$" "$image")
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    marker="$(dirname "$log")/.marker-$name"
    touch "$marker"
    sleep 1
    unshare --net "${BUILDAH[@]}" run --isolation=chroot "$@" \
        -v "$in:/workspace/inputs:ro" -v "$out:/workspace/outputs" \
        "$ctr" -- /bin/bash -c "sh predict.sh" > "$log" 2>&1 || rc=$?
    CONTAINER_CHANGED=$(cd "$mnt" && find . -xdev -newer "$marker" \
        ! -path ./tmp ! -path './tmp/*' ! -path ./run ! -path ./run/.containerenv ! -path './run/secrets*' \
        ! -path ./workspace/inputs ! -path ./workspace/outputs \
        ! -path ./etc/hosts ! -path ./etc/resolv.conf ! -path ./etc/hostname ! -path . \
        ! -path ./dev ! -path ./proc ! -path ./sys | head -n 20)
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    # the second of settling before the run is not the run's
    RUN_SECONDS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a - 1 }')
    return "$rc"
}

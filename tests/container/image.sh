#!/usr/bin/env bash
# `make image`: the release image, from the Dockerfile with the CUDA torch wheels from the
# package index, as the organisers' contract has it:
#   docker build -t team:latest .
# where a Docker engine answers; else the same Dockerfile through podman (chroot isolation) in
# tests/container/lib.sh's image store, on its debootstrap Debian bookworm base (these machines reach
# no container registry, so the Dockerfile's default base cannot be pulled here).
#   IMAGE       image name (default team:latest; podman stores it as localhost/team:latest)
#   CUDA        the CUDA line: 13 (default) or 12 (requirements-cuda<line>.txt)
#   BASE_IMAGE  podman only: the base (default: the local debootstrap base; set it to the
#               Dockerfile's default where a registry is reachable)
#   ENGINE      docker or podman (default: docker where `docker info` answers, else podman)
#   BUILD_CA    podman only: a CA bundle for pip inside the build, for networks whose TLS is
#               inspected by a proxy (default: the host pip's PIP_CERT or `cert` setting, if any)
# `--report` adds what docs/container.md records: the size as `save | gzip` (minutes) and the
# installed size of the largest packages in the venv.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
. "$ROOT/tests/container/lib.sh"
IMAGE=${IMAGE:-team:latest}
CUDA=${CUDA:-13}
REPORT=0
[ "${1:-}" = --report ] && REPORT=1
[ -f "$ROOT/requirements-cuda$CUDA.txt" ] || fail "CUDA=$CUDA: no requirements-cuda$CUDA.txt (use 13 or 12)"

# The installed size of the largest packages in the image's venv. podman run fails on some
# machines (setrlimit): with podman, buildah mounts the image instead.
venv_sizes() {
    # $1: where the image's root lies (/ inside a container, the mount point outside)
    local list='cd "$1"/opt/venv/lib/python3*/site-packages && du -sm -- * | sort -rn | head -n 25'
    if [ "$ENGINE" = docker ]; then
        docker run --rm --entrypoint /bin/sh "$IMAGE" -c "$list" sh /
        return
    fi
    local ctr mnt
    ctr=$("${BUILDAH[@]}" from --pull=never "$IMAGE")
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    sh -c "$list" sh "$mnt"
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
step "build $IMAGE (CUDA $CUDA) with $ENGINE"
if [ "$ENGINE" = docker ]; then
    ENGINE_CMD=(docker)
    docker build --build-arg CUDA="$CUDA" -t "$IMAGE" "$ROOT"
else
    container_tools
    container_store
    ENGINE_CMD=("${PODMAN[@]}")
    BASE=${BASE_IMAGE:-$LOCAL_BASE_IMAGE}
    if [ "$BASE" = "$LOCAL_BASE_IMAGE" ]; then base_image; fi
    ca=${BUILD_CA:-${PIP_CERT:-$("$PY" -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'\$/\1/p")}}
    ca_args=()
    if [ -n "$ca" ] && [ -f "$ca" ]; then
        echo "pip inside the build trusts $ca"
        ca_args=(-v "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
    fi
    step "podman build $IMAGE on $BASE"
    build_image "$IMAGE" "$CACHE/build-$CUDA.log" --build-arg BASE_IMAGE="$BASE" --build-arg CUDA="$CUDA" "${ca_args[@]}"
fi
ok "image $IMAGE built (CUDA $CUDA)"

step "size and layers"
size=$("${ENGINE_CMD[@]}" image inspect "$IMAGE" --format '{{.Size}}')
echo "uncompressed: $size bytes ($((size / 1000000)) MB)"
"${ENGINE_CMD[@]}" history --no-trunc --format '{{.Size}}|{{.CreatedBy}}' "$IMAGE" \
    | awk -F'|' '{ by = $2; gsub(/[[:space:]]+/, " ", by); printf "  %10s  %s\n", $1, substr(by, 1, 110) }'

if [ "$REPORT" = 1 ]; then
    step "save | gzip"
    gz=$("${ENGINE_CMD[@]}" save "$IMAGE" | gzip | wc -c)
    echo "save | gzip: $gz bytes ($((gz / 1000000)) MB)"
    step "largest installed packages in /opt/venv (MB)"
    venv_sizes
fi
step "done in $((SECONDS - T0)) s"


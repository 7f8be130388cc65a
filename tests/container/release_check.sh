#!/usr/bin/env bash
# `make image-check`: the organisers' command on the bundled real CT with the release image
# (`make image`) and with the test image (`make test-container`), both on this machine's CPU,
# each in a fresh container without network with the inputs read-only. Checks that the two masks
# are equal voxel for voxel, on the input's grid, and reports for each image the wall time of
# the whole run (container create, `sh predict.sh`, remove), the process start-up inside it
# from predict_log.jsonl (interpreter and imports, CUDA init, weight load), and `import torch`
# alone in a fresh interpreter (the median of 3, after one to warm the page cache).
#   IMAGE             the release image (default team:latest)
#   FLARE_TEST_IMAGE  the test image (default localhost/flare21-test:latest, as the last
#                     `make test-container` on this machine left it: the store is shared by
#                     every clone here, so run that first from this clone)
#   ROUNDS            runs of each image, alternated (default 1)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/container"
# shellcheck source=lib.sh
. "$ROOT/tests/container/lib.sh"
RELEASE=${IMAGE:-team:latest}
TEST_IMAGE=${FLARE_TEST_IMAGE:-localhost/flare21-test:latest}
ROUNDS=${ROUNDS:-1}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flare21-release.XXXXXX")
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

step "tools"
container_tools
container_store
for image in "$RELEASE" "$TEST_IMAGE"; do
    "${PODMAN[@]}" image exists "$image" || fail "no image $image here: run make image / make test-container first"
done
IN="$WORK/inputs"
mkdir -p "$IN"
cp "$ROOT/tests/data/example_ct.nii.gz" "$IN/example_0000.nii.gz"
chmod -R a+rX,a-w "$IN"

# import_torch IMAGE: seconds of `python3 -c 'import torch'`, 1 warm-up then the median of 3.
import_torch() {
    local ctr
    ctr=$("${BUILDAH[@]}" from --pull=never "$1")
    unshare --net "${BUILDAH[@]}" run --isolation=chroot "$ctr" -- python3 -c '
import statistics, subprocess, sys, time
def once():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start
once()
print(f"{statistics.median(once() for _ in range(3)):.2f}")'
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

for round in $(seq "$ROUNDS"); do
    for pair in "release:$RELEASE" "test:$TEST_IMAGE"; do
        tag=${pair%%:*} image=${pair#*:}
        step "round $round: $tag image $image, sh predict.sh on the bundled CT"
        out="$WORK/out-$tag-$round"
        mkdir -p "$out"
        run_predict "$image" "release-check-$tag" "$IN" "$out" "$WORK/$tag-$round.log" \
            || { tail -n 40 "$WORK/$tag-$round.log"; fail "$tag image: sh predict.sh failed"; }
        sed 's/^/    | /' "$WORK/$tag-$round.log" | grep -v '^    | *$' | head -n 4
        "$PY" - "$out/predict_log.jsonl" "$RUN_SECONDS" <<'EOF'
import json, sys
record = json.loads(open(sys.argv[1]).read().splitlines()[-1])
p = record["process_stages"]
print(f"  run {sys.argv[2]} s (container create, predict, remove); predict's case {record['seconds']} s; "
      f"start-up: interpreter and imports {p['interpreter_and_imports']:.2f} s, CUDA init "
      f"{p.get('cuda_init', 0):.2f} s, weight load {p['weight_load']:.2f} s; device {record['device']}")
EOF
    done
done

step "import torch alone, in a fresh interpreter in each image"
echo "  release image: $(import_torch "$RELEASE") s; test image: $(import_torch "$TEST_IMAGE") s"

step "masks"
"$PY" "$HERE/check_outputs.py" "$IN" "$WORK/out-release-1" || fail "release image's mask: name or geometry"
"$PY" - "$WORK/out-release-1/example.nii.gz" "$WORK/out-test-1/example.nii.gz" <<'EOF' || fail "the masks differ"
import sys
import numpy as np
import SimpleITK as sitk
a, b = (sitk.ReadImage(p) for p in sys.argv[1:3])
x, y = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
same_grid = (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
             and a.GetDirection() == b.GetDirection())
print(f"  {x.size} voxels, {int((x != y).sum())} differ; labels {np.bincount(x.ravel(), minlength=5).tolist()}; "
      f"same grid: {same_grid}")
sys.exit(0 if same_grid and np.array_equal(x, y) else 1)
EOF
ok "release and test images: the same mask voxel for voxel"
printf '\ncontainer: %d passed, 0 failed\n' "$PASSED"

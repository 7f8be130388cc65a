"""Where a distractor's false positives lie: the distance of each of its voxels that a mask
labels as an organ to the nearest reference organ voxel. False positives within a voxel of the
network's grid from the organ are a matter of resolution; far ones, of telling the tissue apart.

    python -m bench.distractor_margin --pred build/eval/new_sick31 --set build/eval2031sick [--kind ascites]

`--set` is a phantom set written with `app synth --structures` (labels/, structures/ and
structures.json).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

EDGES_MM = (0.0, 2.5, 5.0, 10.0, 20.0, np.inf)


def margin_counts(structures_img: sitk.Image, reference: np.ndarray, pred: np.ndarray, kind_id: int) -> np.ndarray:
    """Counts of the kind's voxels labelled as an organ, per distance band to the reference organs."""
    kind = sitk.GetArrayViewFromImage(structures_img) == kind_id
    false_positive = kind & (pred > 0)
    if not false_positive.any():
        return np.zeros(len(EDGES_MM) - 1, int)
    distance = ndimage.distance_transform_edt(reference == 0, sampling=structures_img.GetSpacing()[::-1])
    return np.histogram(distance[false_positive], bins=EDGES_MM)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pred", type=Path, required=True)
    ap.add_argument("--set", type=Path, required=True)
    ap.add_argument("--kind", default="ascites")
    args = ap.parse_args(argv)
    ids = {name: int(i) for i, name in json.loads((args.set / "structures.json").read_text()).items()}
    if args.kind not in ids:
        ap.error(f"--kind {args.kind!r} is no structure of {args.set} (see its structures.json)")
    kind_id = ids[args.kind]
    total = np.zeros(len(EDGES_MM) - 1, int)
    for path in sorted((args.set / "structures").glob("*.nii.gz")):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(args.pred / path.name)))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(args.set / "labels" / path.name)))
        total += margin_counts(sitk.ReadImage(str(path)), reference, pred, kind_id)
    bands = [f"{lo:g}-{hi:g} mm" for lo, hi in zip(EDGES_MM[:-1], EDGES_MM[1:])]
    share = total / max(int(total.sum()), 1)
    print(f"{args.kind} voxels labelled as an organ, by distance to the nearest reference organ voxel:")
    for band, n, f in zip(bands, total, share):
        print(f"  {band:>12s}  {n:9d}  {f:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

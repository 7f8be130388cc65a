"""Check a FLARE outputs folder against its inputs, for the container test.

usage: python check_outputs.py INPUTS_DIR OUTPUTS_DIR [--expect NAME ...] [--uid UID]

Every input `<name>_0000.nii.gz` must have exactly one mask `<name>.nii.gz` (with --expect,
exactly the masks named, whatever the inputs folder holds now) on the input's exact voxel grid:
same size, spacing, origin and direction, integer labels in 0..4. Prints one line per mask and
exits non-zero on the first kind of failure it finds, after reporting all of them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SUFFIX = "_0000.nii.gz"
LABELS = {0, 1, 2, 3, 4}
NAMES = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path, help="folder with the <name>_0000.nii.gz images")
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--expect", nargs="*", default=None,
                        help="mask names (without .nii.gz) that must be present; default: one per input")
    parser.add_argument("--images", type=Path, default=None,
                        help="where the images of --expect lie (default: INPUTS)")
    parser.add_argument("--uid", type=int, default=None, help="every mask must be owned by this uid")
    args = parser.parse_args()

    images = {p.name[: -len(SUFFIX)]: p for p in sorted((args.images or args.inputs).glob("*" + SUFFIX))}
    expected = sorted(args.expect) if args.expect is not None else sorted(images)
    found = sorted(p.name[: -len(".nii.gz")] for p in args.outputs.glob("*.nii.gz"))
    errors: list[str] = []
    if found != expected:
        errors.append(f"masks {found} != expected {expected}")

    for name in expected:
        mask_path = args.outputs / f"{name}.nii.gz"
        if not mask_path.is_file() or name not in images:
            errors.append(f"{name}: mask or image missing")
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(images[name]))
        reader.ReadImageInformation()
        mask = sitk.ReadImage(str(mask_path))
        geometry = {
            "size": (reader.GetSize(), mask.GetSize()),
            "spacing": (reader.GetSpacing(), mask.GetSpacing()),
            "origin": (reader.GetOrigin(), mask.GetOrigin()),
            "direction": (reader.GetDirection(), mask.GetDirection()),
        }
        for key, (want, got) in geometry.items():
            # exact up to the float32 precision that the NIfTI header itself stores
            if len(want) != len(got) or not np.allclose(want, got, rtol=0, atol=1e-4):
                errors.append(f"{name}: {key} {got} != input {want}")
        array = sitk.GetArrayViewFromImage(mask)
        if not np.issubdtype(array.dtype, np.integer):
            errors.append(f"{name}: mask voxel type {mask.GetPixelIDTypeAsString()} is not an integer type")
        labels = set(np.unique(array).tolist())
        if not labels <= LABELS:
            errors.append(f"{name}: labels {sorted(labels)} outside 0..4")
        if args.uid is not None and os.stat(mask_path).st_uid != args.uid:
            errors.append(f"{name}: owned by uid {os.stat(mask_path).st_uid}, not {args.uid}")
        counts = ", ".join(f"{NAMES[k]} {int((array == k).sum())}" for k in sorted(NAMES))
        print(f"  {name}.nii.gz: {mask.GetSize()} {mask.GetPixelIDTypeAsString()}; voxels: {counts}")

    for error in errors:
        print(f"  FAIL {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

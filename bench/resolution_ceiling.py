"""How much DSC a plan's target spacing alone costs: ground-truth labels turned into ideal
class probabilities at the target spacing (Gaussian-smoothed one-hot, resampled linearly),
brought back to the label grid by the product's own export (app.inference.resample: linear, or
with `--export-order-z 0` nearest along the low-resolution axis of an anisotropic case, as v1's
default export does), arg-maxed, and scored against themselves. A network that is perfect at
that spacing can do no better (docs/training.md quotes it for 5 mm).

    python -m bench.resolution_ceiling --labels build/data/eval2024/labels --spacing 5 --cases 4
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from app.inference.resample import resample_argmax, separate_z_axis
from app.labels import ORGANS

ANISOTROPY_THRESHOLD = 3.0  # plans.json's separate_z_anisotropy_threshold, v1's default


def ceiling_dice(labels: np.ndarray, spacing_zyx: np.ndarray, target_mm: float,
                 export_order_z: int = 1) -> dict[int, float]:
    zoom = spacing_zyx / target_mm
    low = np.stack([ndimage.zoom(ndimage.gaussian_filter((labels == c).astype(np.float32),
                                                         sigma=(target_mm / spacing_zyx) / 2.5), zoom, order=1,
                                 grid_mode=True, mode="nearest")  # voxel centres as v1's resampling places them
                    for c in range(len(ORGANS) + 1)])
    axis = None if export_order_z == 1 else separate_z_axis(spacing_zyx, [target_mm] * 3, ANISOTROPY_THRESHOLD)
    pred = resample_argmax(torch.from_numpy(low), labels.shape, axis)
    return {organ.label: 2 * float(((pred == organ.label) & (labels == organ.label)).sum())
            / max(1.0, float((pred == organ.label).sum() + (labels == organ.label).sum())) for organ in ORGANS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, help="folder of label .nii.gz files")
    parser.add_argument("--spacing", type=float, default=5.0, help="isotropic target spacing, mm")
    parser.add_argument("--cases", type=int, default=4, help="first N label files, sorted by name")
    parser.add_argument("--export-order-z", type=int, choices=(0, 1), default=1,
                        help="the export along the low-resolution axis: 1 linear, 0 nearest (v1's default)")
    args = parser.parse_args()
    rows = []
    for path in sorted(args.labels.glob("*.nii.gz"))[:args.cases]:
        image = sitk.ReadImage(str(path))
        scores = ceiling_dice(sitk.GetArrayFromImage(image), np.array(image.GetSpacing()[::-1]), args.spacing,
                              args.export_order_z)
        rows.append([scores[o.label] for o in ORGANS])
        print(path.name, " ".join(f"{o.name} {scores[o.label]:.3f}" for o in ORGANS), flush=True)
    mean = np.mean(rows, 0)
    print("mean", " ".join(f"{o.name} {m:.3f}" for o, m in zip(ORGANS, mean)), f"all {mean.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much DSC a plan's target spacing alone costs: ground-truth labels turned into ideal
class probabilities at the target spacing (Gaussian-smoothed one-hot, resampled linearly),
brought back to the label grid linearly, arg-maxed, and scored against themselves. A network
that is perfect at that spacing can do no better (docs/training.md quotes it for 5 mm).

    python -m bench.resolution_ceiling --labels build/data/eval2024/labels --spacing 5 --cases 4
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from app.labels import ORGANS


def ceiling_dice(labels: np.ndarray, spacing_zyx: np.ndarray, target_mm: float) -> dict[int, float]:
    zoom = spacing_zyx / target_mm
    probabilities = []
    for c in range(len(ORGANS) + 1):
        one_hot = (labels == c).astype(np.float32)
        low = ndimage.zoom(ndimage.gaussian_filter(one_hot, sigma=(target_mm / spacing_zyx) / 2.5), zoom, order=1)
        back = ndimage.zoom(low, np.array(labels.shape) / np.array(low.shape), order=1)
        probabilities.append(back[:labels.shape[0], :labels.shape[1], :labels.shape[2]])
    pred = np.argmax(np.stack(probabilities), 0)
    return {organ.label: 2 * float(((pred == organ.label) & (labels == organ.label)).sum())
            / float((pred == organ.label).sum() + (labels == organ.label).sum()) for organ in ORGANS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, help="folder of label .nii.gz files")
    parser.add_argument("--spacing", type=float, default=5.0, help="isotropic target spacing, mm")
    parser.add_argument("--cases", type=int, default=4, help="first N label files, sorted by name")
    args = parser.parse_args()
    rows = []
    for path in sorted(args.labels.glob("*.nii.gz"))[:args.cases]:
        image = sitk.ReadImage(str(path))
        scores = ceiling_dice(sitk.GetArrayFromImage(image), np.array(image.GetSpacing()[::-1]), args.spacing)
        rows.append([scores[o.label] for o in ORGANS])
        print(path.name, " ".join(f"{o.name} {scores[o.label]:.3f}" for o in ORGANS), flush=True)
    mean = np.mean(rows, 0)
    print("mean", " ".join(f"{o.name} {m:.3f}" for o, m in zip(ORGANS, mean)), f"all {mean.mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

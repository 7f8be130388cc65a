"""Benchmark inputs, made reproducibly from the repository's own data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
REAL_CT = ROOT / "tests" / "data" / "example_ct.nii.gz"


def resample_to(image: sitk.Image, spacing, size=None) -> sitk.Image:
    """Linear resampling onto a grid with the same origin and direction (air outside)."""
    if size is None:
        extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
        size = [int(round(e / s)) for e, s in zip(extent, spacing)]
    return sitk.Resample(image, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         [float(v) for v in spacing], image.GetDirection(), -1024.0, sitk.sitkInt16)


def real_ct_flare_grid() -> sitk.Image:
    """The real example CT on a FLARE-like grid: 0.8 x 0.8 x 2.5 mm, about 458 x 379 x 134."""
    return resample_to(sitk.ReadImage(str(REAL_CT)), (0.8, 0.8, 2.5))


def phantom(size=(512, 512, 200), seed: int = 4242) -> sitk.Image:
    """A synthetic phantom (a seed never used in training) resampled to exactly `size` voxels."""
    from app.synth.phantom import make_case
    image, _, grid, _ = make_case(seed, 0, "full")
    itk = grid.image(image)
    extent = np.array(itk.GetSize()) * np.array(itk.GetSpacing())
    return resample_to(itk, extent / np.array(size), size)


def write_case(image: sitk.Image, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_0000.nii.gz"
    sitk.WriteImage(image, str(path), True)
    return path

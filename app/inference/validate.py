"""Checks that turn odd inputs into one clear error for that case, before any work is done."""
from __future__ import annotations

import math

import SimpleITK as sitk

from app.inference.io import CaseError


def check_image(image: sitk.Image, name: str) -> None:
    if image.GetDimension() != 3:
        raise CaseError(f"{name}: a {image.GetDimension()}D image; a 3D CT volume is expected")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{name}: {image.GetNumberOfComponentsPerPixel()} components per voxel "
                        "(vector or RGB image); a single-channel CT is expected")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(f"{name}: invalid voxel spacing {tuple(spacing)}; every spacing must be a positive number")
    if min(image.GetSize()) < 1:
        raise CaseError(f"{name}: empty image of size {image.GetSize()}")

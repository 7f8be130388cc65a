"""Orientation round trip: reorient a CT to the training data's axis order and directions
(axis permutations and flips only, no resampling), and bring the mask back onto the input's
exact grid. Stock nnU-Net ignores direction; a CT stored sagittal-first would confuse it."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def orientation_code(image: sitk.Image) -> str:
    """DICOM-convention code of the closest axis-aligned orientation, e.g. 'LPS' or 'RAS'."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, target: str | None) -> sitk.Image:
    if target is None or orientation_code(image) == target:
        return image
    return sitk.DICOMOrient(image, target)


def mask_to_input_grid(mask: np.ndarray, oriented: sitk.Image, original: sitk.Image) -> np.ndarray:
    """Undo `reorient` on a (z, y, x) mask predicted on `oriented`'s grid."""
    if oriented is original:
        return mask
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(oriented)
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(mask_image, orientation_code(original)))
    if back.shape != tuple(reversed(original.GetSize())):
        raise RuntimeError(f"orientation round trip gave shape {back.shape}, expected {tuple(reversed(original.GetSize()))}")
    return back

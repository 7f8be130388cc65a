"""The shipped weights give the same mask, in physical space, for the real example CT however it is
stored: flipped or with its axes permuted (the same physical image). plans.json's training
orientation is what makes this hold: without it, a CT stored with x and y swapped gets another mask."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REAL_CT, ROOT, dice_per_label

WEIGHTS = ROOT / "weights"


@pytest.fixture(scope="module")
def predictor():
    from app.inference.predictor import Predictor
    # one fold without flips: the property under test is the orientation round trip, not the ensemble
    return Predictor.from_weights(WEIGHTS, device="cpu", mode="accurate", folds=(0,), tta=False,
                                  progress=False)


@pytest.fixture(scope="module")
def reference(predictor):
    image = sitk.ReadImage(str(REAL_CT))
    return image, predictor.predict_image(image)


def _on_reference_grid(mask: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """A mask on a flipped or permuted grid, read back on the reference grid (exact: same points)."""
    back = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    return sitk.GetArrayFromImage(back)


def test_shipped_plan_records_the_training_orientation():
    plans = json.loads((WEIGHTS / "plans.json").read_text())
    assert plans["training_orientation"] is not None


@pytest.mark.parametrize("change", ["flip_x", "flip_z", "permute_xy", "permute_xyz"])
def test_same_mask_in_physical_space(predictor, reference, change):
    image, expected = reference
    moved = {
        "flip_x": lambda im: sitk.Flip(im, [True, False, False]),
        "flip_z": lambda im: sitk.Flip(im, [False, False, True]),
        "permute_xy": lambda im: sitk.PermuteAxes(im, [1, 0, 2]),
        "permute_xyz": lambda im: sitk.PermuteAxes(im, [2, 0, 1]),
    }[change](image)
    assert moved.GetDirection() != image.GetDirection()   # a real change of storage
    mask = _on_reference_grid(predictor.predict_image(moved), image)
    ref = sitk.GetArrayFromImage(expected)
    present = [lab for lab in (1, 2, 3, 4) if (ref == lab).any()]
    assert present, "the reference mask is empty"
    dice = dice_per_label(mask, ref, present)
    assert all(d >= 0.98 for d in dice.values()), dice

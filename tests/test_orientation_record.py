"""The training orientation recorded in plans.json: the most common axis order (signs ignored),
then the most common orientation code among the training images that have it."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from app.inference.orientation import orientation_code
from app.training.orientation import axis_order, dominant_orientation, training_orientation


def _direction(columns, signs):
    """Row-major 3x3 direction whose image axis j runs along patient axis columns[j] with signs[j]."""
    matrix = np.zeros((3, 3))
    for axis, (patient_axis, sign) in enumerate(zip(columns, signs)):
        matrix[patient_axis, axis] = sign
    return tuple(matrix.ravel())


AXIAL = (0, 1, 2)           # x, y, z: the usual axial stack
SAGITTAL_FIRST = (1, 2, 0)  # image axes along y, z, x


def test_axis_order_ignores_signs_and_small_rotations():
    assert axis_order(_direction(AXIAL, (1, 1, 1))) == AXIAL
    assert axis_order(_direction(AXIAL, (-1, -1, 1))) == AXIAL
    assert axis_order(_direction(SAGITTAL_FIRST, (1, -1, 1))) == SAGITTAL_FIRST
    angle = np.radians(8)   # an in-plane rotation keeps the axis order
    rotated = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    assert axis_order(rotated) == AXIAL


def test_the_most_common_axis_order_wins_over_the_most_common_code():
    axial = [_direction(AXIAL, s) for s in ((1, 1, 1), (1, 1, 1), (-1, -1, 1), (-1, -1, -1))]
    sagittal = [_direction(SAGITTAL_FIRST, (1, 1, 1))] * 3
    # the sagittal code is the single most common one (3 of 7), but 4 of 7 images are axial
    assert dominant_orientation(sagittal + axial) == "LPS"
    assert dominant_orientation(axial[2:] + [axial[2]] + sagittal[:1]) == "RAS"
    assert dominant_orientation(sagittal + axial[:2]) == orientation_code(_image(sagittal[0]))


def test_no_images_no_orientation():
    assert dominant_orientation([]) is None


def _image(direction):
    image = sitk.Image([4, 3, 2], sitk.sitkInt16)
    image.SetDirection(direction)
    return image


def test_reads_the_orientation_from_image_headers(tmp_path):
    files = []
    for i, signs in enumerate(((-1, -1, 1), (-1, -1, 1), (1, 1, 1))):
        path = tmp_path / f"case_{i}_0000.nii.gz"
        sitk.WriteImage(_image(_direction(AXIAL, signs)), str(path))
        files.append(path)
    assert training_orientation(files) == orientation_code(sitk.ReadImage(str(files[0])))
    assert training_orientation(files) == "RAS"

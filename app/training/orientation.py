"""The orientation the network was trained in, for plans.json's `training_orientation`.

nnU-Net ignores direction matrices: it learns from the voxel arrays as stored. Mirroring
augmentation covers flips, so what a network depends on is the order of the axes. The recorded
orientation is therefore chosen in two steps: the axis order (permutation, signs ignored) most
training images share, then the most common orientation code among the images with that order.
Inference reorients every input to it (app.inference.orientation).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from app.inference.orientation import orientation_code


def axis_order(direction: Sequence[float]) -> tuple[int, ...]:
    """For each image axis, the patient axis it runs along most (sitk's row-major 3x3 direction)."""
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    return tuple(int(i) for i in matrix.argmax(axis=0))


def direction_code(direction: Sequence[float]) -> str:
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    probe.SetDirection([float(v) for v in direction])
    return orientation_code(probe)


def dominant_orientation(directions: Iterable[Sequence[float]]) -> str | None:
    """The most common axis order, then the most common code within it (ties: first seen)."""
    directions = list(directions)
    if not directions:
        return None
    orders = [axis_order(d) for d in directions]
    common_order = Counter(orders).most_common(1)[0][0]
    codes = [direction_code(d) for d, order in zip(directions, orders) if order == common_order]
    return Counter(codes).most_common(1)[0][0]


def read_direction(image_file: Path) -> tuple[float, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image_file))
    reader.ReadImageInformation()   # the header only
    return reader.GetDirection()


def training_orientation(image_files: Iterable[Path]) -> str | None:
    return dominant_orientation(read_direction(f) for f in image_files)

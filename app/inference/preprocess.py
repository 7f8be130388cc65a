"""CT -> network input, as nnU-Net v1's GenericPreprocessor.preprocess_test_case does:
crop to nonzero, transpose, resample to the plan's spacing, clip and z-score."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from app.inference.resample import resample_image, resampled_shape, separate_z_axis
from app.inference.stages import StageTimer
from app.inference.weights import Plan

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocessed:
    data: Union[np.ndarray, "torch.Tensor"]  # float32, network axis order, target spacing
    bbox: tuple[slice, slice, slice]       # crop inside the original (z, y, x) grid
    original_shape: tuple[int, int, int]   # before cropping, (z, y, x)
    original_spacing: tuple[float, float, float]  # (z, y, x)
    spacing_after_resampling: tuple[float, ...]   # (z, y, x), i.e. transposed back

    @property
    def cropped_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.bbox)


def nonzero_bbox(volume: np.ndarray) -> tuple[slice, slice, slice]:
    """v1 crops to the bounding box of the nonzero voxels (after filling holes, which never
    changes a bounding box). NaN counts as nonzero, as in v1. All zero: the whole volume."""
    mask = volume != 0
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bbox.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, volume.shape[axis]))
    return tuple(bbox)


def normalise_ct(data: np.ndarray, plan: Plan) -> np.ndarray:
    np.clip(data, plan.intensity_lower, plan.intensity_upper, out=data)
    data -= plan.intensity_mean
    data /= plan.intensity_sd
    return data


def crop_to_float32(volume: np.ndarray, plan: Plan) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Crop to the nonzero box, transpose to the network's axis order, float32, NaN to 0."""
    bbox = nonzero_bbox(volume)
    data = np.ascontiguousarray(volume[bbox].transpose(plan.transpose_forward), dtype=np.float32)
    if np.shares_memory(data, volume):  # float32, uncropped, untransposed: never write into the input
        data = data.copy()
    if volume.dtype.kind == "f":  # only floating-point pixels can be NaN
        data[np.isnan(data)] = 0
    return data, bbox


def preprocess(volume: np.ndarray, spacing_zyx: tuple[float, ...], plan: Plan,
               timer: StageTimer | None = None) -> Preprocessed:
    """`volume` may be a read-only view in any pixel type: the one float32 copy is made after
    cropping and transposing, so a 512 x 512 x 1000 CT costs about 4 bytes per voxel here."""
    timer = timer or StageTimer()
    with timer.stage("crop"):
        data, bbox = crop_to_float32(volume, plan)
    spacing_t = tuple(spacing_zyx[a] for a in plan.transpose_forward)
    with timer.stage("resample"):
        axis = separate_z_axis(spacing_t, plan.target_spacing, plan.separate_z_anisotropy_threshold)
        data = resample_image(data, resampled_shape(data.shape, spacing_t, plan.target_spacing), axis)
    with timer.stage("normalise"):
        data = normalise_ct(data, plan)
    spacing_back = tuple(plan.target_spacing[a] for a in plan.transpose_backward)
    return Preprocessed(data, bbox, tuple(volume.shape), tuple(spacing_zyx), spacing_back)

"""CT -> network input on the device the network runs on, equal to nnU-Net v1's
GenericPreprocessor.preprocess_test_case: crop to nonzero, transpose, NaN to 0, resample to the
plan's spacing (resample_matrix.py), clip and z-score.

Only the raw CT, in its own pixel type, crosses to the device; the result stays there for the
network. The numpy path (preprocess.py) computes the same thing on the host."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from app.inference.preprocess import Preprocessed, crop_to_float32
from app.inference.resample import resampled_shape, separate_z_axis
from app.inference.resample_matrix import resample_image_torch
from app.inference.stages import StageTimer
from app.inference.weights import Plan

# Pixel types torch can hold and compare on every device; others are widened on the host first.
_DEVICE_TYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64)}


def raw_to_device(volume: np.ndarray, device: torch.device) -> torch.Tensor:
    array = np.asarray(volume)
    if array.dtype not in _DEVICE_TYPES:
        array = array.astype(np.float32)
    with warnings.catch_warnings():  # a read-only view of the image: it is never written to
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    return tensor.to(device)


def nonzero_bbox_torch(volume: torch.Tensor) -> tuple[slice, slice, slice]:
    """v1's crop box: the bounding box of voxels != 0 (NaN counts as nonzero, as in v1); the
    whole volume when every voxel is 0. One small transfer to the host for the bounds."""
    nonzero = volume != 0
    zy = nonzero.any(dim=2)  # two passes over the volume instead of three
    flags = torch.cat([zy.any(dim=1), zy.any(dim=0), nonzero.any(dim=(0, 1))]).cpu().numpy()
    bbox, first = [], 0
    for size in volume.shape:
        where = np.flatnonzero(flags[first:first + size])
        bbox.append(slice(int(where[0]), int(where[-1]) + 1) if where.size else slice(0, size))
        first += size
    return tuple(bbox)


def crop_on_device(volume: np.ndarray, plan: Plan, device: torch.device) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """preprocess.crop_to_float32 where the network runs: the raw CT goes over in its own pixel
    type (int16: half the bytes of float32), and is cropped, transposed and converted there."""
    raw = raw_to_device(volume, device)
    bbox = nonzero_bbox_torch(raw)
    data = raw[bbox].permute(*plan.transpose_forward).to(torch.float32, copy=True).contiguous()
    if raw.is_floating_point():  # only floating-point pixels can be NaN
        data.masked_fill_(torch.isnan(data), 0.0)
    return data, bbox


def normalise_ct_torch(data: torch.Tensor, plan: Plan) -> torch.Tensor:
    return data.clamp_(plan.intensity_lower, plan.intensity_upper).sub_(plan.intensity_mean).div_(plan.intensity_sd)


def preprocess_on_device(volume: np.ndarray, spacing_zyx: tuple[float, ...], plan: Plan, device: torch.device,
                         timer: StageTimer | None = None) -> Preprocessed:
    timer = timer or StageTimer()
    with timer.stage("crop"):
        if device.type == "cpu":  # numpy's compare and convert measured 3-7x faster than torch's here
            cropped, bbox = crop_to_float32(volume, plan)
            data = torch.from_numpy(cropped)
        else:
            data, bbox = crop_on_device(volume, plan, device)
    spacing_t = tuple(spacing_zyx[a] for a in plan.transpose_forward)
    with timer.stage("resample"):
        axis = separate_z_axis(spacing_t, plan.target_spacing, plan.separate_z_anisotropy_threshold)
        data = resample_image_torch(data, resampled_shape(data.shape, spacing_t, plan.target_spacing), axis)
    with timer.stage("normalise"):
        data = normalise_ct_torch(data, plan)
    spacing_back = tuple(plan.target_spacing[a] for a in plan.transpose_backward)
    return Preprocessed(data, bbox, tuple(volume.shape), tuple(spacing_zyx), spacing_back)

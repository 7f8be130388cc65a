"""Class probabilities on the network grid -> label mask on the input's full grid (v1's
save_segmentation_nifti_from_softmax, without temporary files or worker processes)."""
from __future__ import annotations

import numpy as np
import torch

from app.inference.preprocess import Preprocessed
from app.inference.resample import first_argmax, resample_argmax, separate_z_axis
from app.inference.resample_window import resample_window_argmax
from app.inference.stages import StageTimer
from app.inference.weights import Plan


def export_nearest_axis(case: Preprocessed, plan: Plan) -> int | None:
    """The axis that v1's export resamples by nearest neighbour, or None where it is linear along
    every axis: isotropic enough inputs, or plans that ask for linear along the separate axis
    (v1 then resamples in-plane and along that axis linearly, which is the 3-D linear resampling)."""
    if plan.export_interpolation_order_z == 1:
        return None
    return separate_z_axis(case.original_spacing, case.spacing_after_resampling,
                           plan.separate_z_anisotropy_threshold)


def probabilities_to_mask(probs: torch.Tensor, case: Preprocessed, plan: Plan,
                          timer: StageTimer | None = None) -> np.ndarray:
    """Transpose back, resample to the cropped original shape (linear; nearest along the
    low-resolution axis when anisotropic, unless the plan asks for linear), argmax, and paste into
    the uncropped grid. Only the uint8 labels leave the probabilities' device."""
    timer = timer or StageTimer()
    probs = probs.permute(0, *[a + 1 for a in plan.transpose_backward])
    target = case.cropped_shape
    if tuple(probs.shape[1:]) == tuple(target):
        with timer.stage("argmax"):
            cropped = first_argmax(probs).cpu().numpy()
    else:
        cropped = resample_argmax(probs, target, export_nearest_axis(case, plan), timer=timer)
    with timer.stage("argmax"):
        mask = np.zeros(case.original_shape, dtype=np.uint8)
        mask[case.bbox] = cropped
    return mask


def region_probabilities_to_mask(probs: torch.Tensor, window: tuple[slice, ...], inside: tuple[slice, ...],
                                 grid_shape: tuple[int, ...], case: Preprocessed, plan: Plan,
                                 timer: StageTimer | None = None) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The same export for probabilities known only inside `window` of the network grid (two-stage
    prediction), for the output voxels whose interpolation stays inside `inside` (part of the
    window, network axis order): each gets the label the whole-volume export would give it from
    the same probabilities; all others are background. Returns the mask and the crop-voxel box
    (z, y, x) that was computed."""
    timer = timer or StageTimer()
    back = plan.transpose_backward
    probs = probs.permute(0, *[a + 1 for a in back])
    axis = export_nearest_axis(case, plan)
    labels, rows = resample_window_argmax(probs, [window[a] for a in back], [grid_shape[a] for a in back],
                                          case.cropped_shape, [inside[a] for a in back], axis, timer=timer)
    with timer.stage("argmax"):
        mask = np.zeros(case.original_shape, dtype=np.uint8)
        mask[case.bbox][rows] = labels
    return mask, rows

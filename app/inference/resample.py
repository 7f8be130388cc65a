"""Resampling, as nnU-Net v1 does it, so that our masks match stock nnU-Net's.

- Images: cubic spline in-plane (order 3, edge mode, no anti-aliasing, clipped to the input range
  as skimage.transform.resize does), and nearest along a low-resolution axis when the spacing is
  anisotropic ("separate z").
- Probabilities: linear, nearest along the low-resolution axis unless the plans ask for linear
  there too (app.inference.export.export_nearest_axis), computed in torch in chunks along the
  first axis so that memory stays bounded on large volumes, with the argmax taken per chunk.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from app.inference.stages import StageTimer


def separate_z_axis(original_spacing: Sequence[float], target_spacing: Sequence[float],
                    threshold: float = 3.0) -> int | None:
    """v1's rule: the axis resampled on its own, or None. Decided on the original spacing first,
    then the target; a tie of two coarse axes (e.g. 0.24, 1.25, 1.25) means no separate axis."""
    for spacing in (original_spacing, target_spacing):
        spacing = np.asarray(spacing, dtype=float)
        if spacing.max() / spacing.min() > threshold:
            coarse = np.where(spacing.max() / spacing == 1)[0]
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    ratio = np.asarray(spacing, dtype=float) / np.asarray(target, dtype=float)
    # at least one voxel: v1 would make an empty axis of a 2-row scan and fail
    return tuple(max(1, int(v)) for v in np.round(ratio * np.asarray(shape)).astype(int))


def _spline_resize(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """skimage.transform.resize(image, shape, order=3, mode='edge', anti_aliasing=False).
    scipy filters in float64 whatever the input; the output keeps the input's float32."""
    from scipy import ndimage
    zoom = [new / old for new, old in zip(shape, image.shape)]
    out = ndimage.zoom(image, zoom, order=3, mode="nearest", grid_mode=True)
    return np.clip(out, image.min(), image.max(), out=out)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output index for order-0 map_coordinates with v1's half-voxel mapping."""
    source = (n_in / n_out) * (np.arange(n_out) + 0.5) - 0.5
    return np.clip(np.floor(source + 0.5), 0, n_in - 1).astype(np.int64)


def resample_image(volume: np.ndarray, new_shape: Sequence[int], separate_axis: int | None) -> np.ndarray:
    """Resample a 3D image (float32 in, float32 out) as v1's resample_data_or_seg does for data."""
    new_shape = tuple(int(v) for v in new_shape)
    if tuple(volume.shape) == new_shape:
        return volume
    data = volume.astype(np.float32, copy=False)
    if separate_axis is None:
        return _spline_resize(data, new_shape)
    plane_shape = tuple(s for a, s in enumerate(new_shape) if a != separate_axis)
    moved = np.moveaxis(data, separate_axis, 0)
    n_in, n_out = moved.shape[0], new_shape[separate_axis]
    picks = None if n_in == n_out else _nearest_indices(n_in, n_out)
    if picks is not None and n_out <= n_in:  # per-slice work commutes with picking slices: pick first
        moved, picks = moved[picks], None
    slices = np.stack([_spline_resize(s, plane_shape) for s in moved])
    if picks is not None:
        slices = slices[picks]
    return np.ascontiguousarray(np.moveaxis(slices, 0, separate_axis))


def _linear_taps(n_in: int, n_out: int, rows: np.ndarray | None = None):
    """Linear interpolation taps, align_corners=False with clamped edges (= scipy order 1 with
    grid_mode and 'nearest' mode): (lower, upper, weight of upper) for the given output rows."""
    rows = np.arange(n_out) if rows is None else rows
    source = np.maximum((rows + 0.5) * (n_in / n_out) - 0.5, 0)
    lower = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    return lower, np.minimum(lower + 1, n_in - 1), source - lower


def axis_taps(n_in: int, n_out: int, nearest: bool, rows: np.ndarray | None = None):
    """(lower, upper, weight of upper) of the given output rows of one axis, as v1's export
    resamples it: none at equal sizes, nearest along a separate axis, linear otherwise."""
    rows = np.arange(n_out) if rows is None else rows
    if n_in == n_out:
        return rows, rows, np.zeros(len(rows))
    if nearest:
        picks = _nearest_indices(n_in, n_out)[rows]
        return picks, picks, np.zeros(len(rows))
    return _linear_taps(n_in, n_out, rows)


def _blend(x: torch.Tensor, dim: int, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> torch.Tensor:
    if not weight.any():  # nearest neighbour or same size: a gather, no arithmetic
        return x.index_select(dim, torch.from_numpy(lower).to(x.device))
    view = [1] * x.dim()
    view[dim] = len(weight)
    w = torch.from_numpy(weight).to(device=x.device, dtype=x.dtype).view(view)
    lo = torch.from_numpy(lower).to(x.device)
    hi = torch.from_numpy(upper).to(x.device)
    return x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w


def _resample_dim(x: torch.Tensor, dim: int, n_out: int, nearest: bool) -> torch.Tensor:
    n_in = x.shape[dim]
    if n_in == n_out:
        return x
    if nearest:
        return x.index_select(dim, torch.from_numpy(_nearest_indices(n_in, n_out)).to(x.device))
    return _blend(x, dim, *_linear_taps(n_in, n_out))


def _resample_plane(slab: torch.Tensor, shape_yx: tuple[int, int], separate_axis: int | None) -> torch.Tensor:
    """The in-plane axes of a (C, rows, Y, X) slab: nearest along a separate axis, linear along
    the others through torch's bilinear interpolation (align_corners=False clamps at the edges
    as v1's order-1 zoom does; an axis kept at its size is an exact identity there). Index
    gathers along inner axes are about 50x slower than this on the CPU."""
    for dim in (1, 2):
        if separate_axis == dim:
            slab = _resample_dim(slab, dim + 1, shape_yx[dim - 1], nearest=True)
    if tuple(slab.shape[2:]) == tuple(shape_yx):
        return slab
    classes, rows = slab.shape[:2]
    flat = slab.reshape(1, classes * rows, *slab.shape[2:])
    return torch.nn.functional.interpolate(flat, size=shape_yx, mode="bilinear",
                                           align_corners=False).reshape(classes, rows, *shape_yx)


def first_argmax(probs: torch.Tensor) -> torch.Tensor:
    """argmax over axis 0 as uint8, the first class winning ties as in numpy; one elementwise pass
    per class, several times faster on the CPU than torch's reduction over the outer axis."""
    best = probs[0].clone()
    labels = torch.zeros(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    for label in range(1, probs.shape[0]):
        better = probs[label] > best
        best = torch.where(better, probs[label], best)
        labels.masked_fill_(better, label)
    return labels


def resample_argmax(probs: torch.Tensor, new_shape: Sequence[int], separate_axis: int | None,
                    max_chunk_bytes: int = 256 << 20, timer: "StageTimer | None" = None) -> np.ndarray:
    """Resample class probabilities (C, Z, Y, X) to new_shape and take the argmax, in chunks of
    output rows along axis 0, so memory stays bounded. Returns uint8 labels on the CPU: only
    they leave the device. `timer` gets the two stages, export_resampling and argmax."""
    from app.inference.stages import StageTimer
    timer = timer or StageTimer()
    new_shape = tuple(int(v) for v in new_shape)
    n_in = probs.shape[1]
    out = np.empty(new_shape, dtype=np.uint8)
    bytes_per_row = probs.shape[0] * new_shape[1] * new_shape[2] * 4
    rows_per_chunk = max(1, min(new_shape[0], max_chunk_bytes // max(bytes_per_row, 1)))
    for start in range(0, new_shape[0], rows_per_chunk):
        rows = np.arange(start, min(start + rows_per_chunk, new_shape[0]))
        lower, upper, weight = axis_taps(n_in, new_shape[0], separate_axis == 0, rows)
        first, last = int(lower.min()), int(upper.max()) + 1
        with timer.stage("export_resampling"):
            slab = _resample_plane(probs[:, first:last].float(), new_shape[1:], separate_axis)
            slab = _blend(slab, 1, lower - first, upper - first, weight)
        with timer.stage("argmax"):
            out[rows[0]:rows[-1] + 1] = first_argmax(slab).cpu().numpy()
    return out

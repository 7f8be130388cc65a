"""nnU-Net v1's image resampling as matrix products, so that it can run where the network runs.

v1 resizes images with skimage's `resize(order=3, mode='edge', anti_aliasing=False)`, which is
scipy's order-3 spline zoom followed by a clip to the input's range. Without the clip the zoom is
linear and separable: each axis applies one (n_out x n_in) operator. Each operator is built once
per (n_in, n_out) by running that same 1-D zoom on an identity matrix, then applied with torch
matrix products in float32 (TF32 off). The clip is applied afterwards, to the whole volume, or to
each slice when v1 resamples slice by slice (a separate low-resolution axis, which is then
resampled with nearest neighbour and v1's floor(x + 0.5) index).
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from app.inference.resample import _nearest_indices


@lru_cache(maxsize=64)
def spline_operator(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: column i is the order-3 resize of the unit vector e_i, computed as
    skimage.transform.resize computes it (zoom factor 1 / (n_in / n_out), 'edge' = scipy's
    'nearest', grid mode), along one axis of an identity (the other axis has zoom 1)."""
    from scipy import ndimage
    zoom = (1 / (n_in / n_out), 1.0)
    operator = ndimage.zoom(np.eye(n_in), zoom, order=3, mode="nearest", grid_mode=True)
    if operator.shape != (n_out, n_in):  # scipy rounds the output size from the zoom factor
        raise RuntimeError(f"spline operator for {n_in} -> {n_out} came out {operator.shape}")
    operator.setflags(write=False)
    return operator


_on_device: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def operator_on(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    key = (n_in, n_out, torch.device(device))
    if key not in _on_device:
        if len(_on_device) > 64:  # many different case sizes: do not hold them all
            _on_device.clear()
        _on_device[key] = torch.tensor(spline_operator(n_in, n_out), dtype=torch.float32, device=device)
    return _on_device[key]


@contextmanager
def full_float32_matmul():
    """TF32 (CUDA) and reduced-precision CPU matmuls would cost equality with v1's float64 zoom."""
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    previous_precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
        torch.set_float32_matmul_precision(previous_precision)


def _apply_along(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """Resize one axis of a 3-D tensor with its spline operator (no clip)."""
    n_in = x.shape[dim]
    if n_in == n_out:
        return x
    operator = operator_on(n_in, n_out, x.device)
    if dim == 2:
        return x @ operator.T
    if dim == 1:
        return operator @ x                          # broadcast over axis 0
    return (operator @ x.reshape(n_in, -1)).reshape(n_out, *x.shape[1:])


def resample_image_torch(volume: torch.Tensor, new_shape: Sequence[int], separate_axis: int | None) -> torch.Tensor:
    """v1's resample_data_or_seg for one image channel (float32 3-D tensor), on its device."""
    new_shape = tuple(int(v) for v in new_shape)
    if tuple(volume.shape) == new_shape:
        return volume
    with full_float32_matmul():
        if separate_axis is None:
            low, high = volume.amin(), volume.amax()
            out = volume
            for dim in (2, 1, 0):
                out = _apply_along(out, dim, new_shape[dim])
            return out.clamp_(low, high)
        return _resample_slices(volume, new_shape, separate_axis)


def _resample_slices(volume: torch.Tensor, new_shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """In-plane spline per slice, clipped to each slice's own range as skimage does per call,
    then nearest neighbour along `axis`. Selecting slices commutes with per-slice work, so when
    there are fewer output slices they are selected first (same result, less work)."""
    slices = volume.movedim(axis, 0)
    n_in, n_out = slices.shape[0], new_shape[axis]
    plane = [s for a, s in enumerate(new_shape) if a != axis]
    picks = None if n_in == n_out else torch.from_numpy(_nearest_indices(n_in, n_out)).to(volume.device)
    if picks is not None and n_out <= n_in:
        slices, picks = slices.index_select(0, picks), None
    low = slices.amin(dim=(1, 2), keepdim=True)
    high = slices.amax(dim=(1, 2), keepdim=True)
    out = _apply_along(_apply_along(slices, 2, plane[1]), 1, plane[0])
    out = torch.minimum(torch.maximum(out, low), high)
    if picks is not None:
        out = out.index_select(0, picks)
    return out.movedim(0, axis).contiguous()

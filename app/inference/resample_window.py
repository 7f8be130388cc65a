"""The export of a window: class probabilities known only inside a box of the network grid ->
labels on the part of the output grid that box determines, each output voxel computed exactly as
the whole-volume export (resample.resample_argmax) computes it, from the same input voxels and
weights. Output voxels whose interpolation would reach outside the box are left out.

Per axis the taps are v1's (linear with clamped edges, nearest along a separate low-resolution
axis, or none at equal sizes), expressed relative to the box's start. The first axis is
interpolated with index gathers in chunks of output rows, the in-plane axes by grid_sample at
the taps' exact source coordinates (bilinear between the same two voxels, with the same weight)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TYPE_CHECKING

import numpy as np
import torch

from app.inference.resample import _blend, _linear_taps, _nearest_indices, first_argmax

if TYPE_CHECKING:
    from app.inference.stages import StageTimer


@dataclass(frozen=True)
class AxisTaps:
    rows: slice            # output rows computed, on the whole output axis
    lower: np.ndarray      # per output row: the lower input voxel, relative to the box start
    upper: np.ndarray
    weight: np.ndarray     # of the upper voxel

    @property
    def source(self) -> np.ndarray:
        """Each row's source coordinate relative to the box (lower + weight; clamped edges give
        lower == upper and any weight, which border sampling clamps to the same voxel)."""
        return self.lower + self.weight


def axis_taps(n_in: int, n_out: int, box: slice, nearest: bool) -> AxisTaps:
    """The output rows of one axis whose input voxels all lie in `box`, with their taps."""
    rows = np.arange(n_out)
    if n_in == n_out:
        lower = upper = rows
        weight = np.zeros(n_out)
    elif nearest:
        lower = upper = _nearest_indices(n_in, n_out)
        weight = np.zeros(n_out)
    else:
        lower, upper, weight = _linear_taps(n_in, n_out)
    inside = np.flatnonzero((lower >= box.start) & (upper < box.stop))
    if inside.size == 0:
        raise ValueError(f"no output row of a {n_in} -> {n_out} axis lies inside {box}")
    first, last = int(inside[0]), int(inside[-1]) + 1   # taps are monotone: one run of rows
    pick = slice(first, last)
    return AxisTaps(pick, lower[pick] - box.start, upper[pick] - box.start, weight[pick].astype(np.float64))


def _plane(slab: torch.Tensor, taps_y: AxisTaps, taps_x: AxisTaps) -> torch.Tensor:
    """(C, R, Y, X) -> (C, R, len(taps_y), len(taps_x)), bilinear at the taps' source points."""
    classes, rows, height, width = slab.shape
    if _identity(taps_y, height) and _identity(taps_x, width):
        return slab
    y = torch.as_tensor((2 * taps_y.source + 1) / height - 1, dtype=torch.float32, device=slab.device)
    x = torch.as_tensor((2 * taps_x.source + 1) / width - 1, dtype=torch.float32, device=slab.device)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None]   # (1, Yout, Xout, (x, y))
    flat = slab.reshape(1, classes * rows, height, width)
    out = torch.nn.functional.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(classes, rows, len(taps_y.lower), len(taps_x.lower))


def _identity(taps: AxisTaps, n: int) -> bool:
    return len(taps.lower) == n and not taps.weight.any() and np.array_equal(taps.lower, np.arange(n))


def resample_window_argmax(probs: torch.Tensor, taps: Sequence[AxisTaps], max_chunk_bytes: int = 256 << 20,
                           timer: "StageTimer | None" = None) -> np.ndarray:
    """Labels (uint8, on the host) of the output rows `taps` select, from probabilities (C, Z, Y, X)
    of the box the taps are relative to."""
    from app.inference.stages import StageTimer
    timer = timer or StageTimer()
    taps_z, taps_y, taps_x = taps
    out = np.empty((len(taps_z.lower), len(taps_y.lower), len(taps_x.lower)), dtype=np.uint8)
    bytes_per_row = probs.shape[0] * out.shape[1] * out.shape[2] * 4
    rows_per_chunk = max(1, min(out.shape[0], max_chunk_bytes // max(bytes_per_row, 1)))
    for start in range(0, out.shape[0], rows_per_chunk):
        chunk = slice(start, min(start + rows_per_chunk, out.shape[0]))
        lower, upper, weight = taps_z.lower[chunk], taps_z.upper[chunk], taps_z.weight[chunk]
        first, last = int(lower.min()), int(upper.max()) + 1
        with timer.stage("export_resampling"):
            slab = _plane(probs[:, first:last].float(), taps_y, taps_x)
            slab = _blend(slab, 1, lower - first, upper - first, weight)
        with timer.stage("argmax"):
            out[chunk] = first_argmax(slab).cpu().numpy()
    return out

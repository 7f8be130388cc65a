"""The export of a window: class probabilities known only inside a window of the network grid ->
labels on the output rows whose interpolation stays inside a given part of it, each computed
exactly as the whole-volume export (resample.resample_argmax) computes it.

Chunk by chunk of output rows along the first axis, the window's probabilities are placed into a
zero plane of the whole grid's in-plane size and go through the same in-plane resampling, first-axis
blend and argmax as the whole-volume export; rows and columns that would reach outside the given
part are never kept, so the zeros never reach a kept voxel and every kept label is bit for bit the
whole-volume export's, given the same probabilities."""
from __future__ import annotations

from typing import Sequence, TYPE_CHECKING

import numpy as np
import torch

from app.inference.resample import _blend, _resample_plane, axis_taps, first_argmax

if TYPE_CHECKING:
    from app.inference.stages import StageTimer


def rows_inside(n_in: int, n_out: int, inside: slice, nearest: bool) -> slice:
    """The output rows of one axis whose input voxels all lie in `inside` (taps are monotone, so
    they form one run)."""
    lower, upper, _ = axis_taps(n_in, n_out, nearest)
    hits = np.flatnonzero((lower >= inside.start) & (upper < inside.stop))
    if hits.size == 0:
        raise ValueError(f"no output row of a {n_in} -> {n_out} axis lies inside {inside}")
    return slice(int(hits[0]), int(hits[-1]) + 1)


def resample_window_argmax(probs: torch.Tensor, window: Sequence[slice], grid_shape: Sequence[int],
                           out_shape: Sequence[int], inside: Sequence[slice], separate_axis: int | None,
                           max_chunk_bytes: int = 256 << 20, timer: "StageTimer | None" = None
                           ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Labels (uint8, on the host) of the output rows whose taps lie in `inside`, and those rows.
    `probs` (C, Z, Y, X) covers `window` of a network grid of `grid_shape`, all in (z, y, x) order;
    `inside` lies within `window`."""
    from app.inference.stages import StageTimer
    timer = timer or StageTimer()
    rows = tuple(rows_inside(n, m, b, separate_axis == a)
                 for a, (n, m, b) in enumerate(zip(grid_shape, out_shape, inside)))
    out = np.empty(tuple(r.stop - r.start for r in rows), dtype=np.uint8)
    classes = probs.shape[0]
    bytes_per_row = classes * max(out_shape[1] * out_shape[2], grid_shape[1] * grid_shape[2]) * 4
    rows_per_chunk = max(1, min(out.shape[0], max_chunk_bytes // max(bytes_per_row, 1)))
    for start in range(rows[0].start, rows[0].stop, rows_per_chunk):
        chunk = np.arange(start, min(start + rows_per_chunk, rows[0].stop))
        lower, upper, weight = axis_taps(grid_shape[0], out_shape[0], separate_axis == 0, chunk)
        first, last = int(lower.min()), int(upper.max()) + 1
        with timer.stage("export_resampling"):
            slab = probs.new_zeros((classes, last - first, *grid_shape[1:]))
            slab[(slice(None), slice(None), window[1], window[2])] = \
                probs[:, first - window[0].start:last - window[0].start].float()
            slab = _resample_plane(slab, tuple(out_shape[1:]), separate_axis)
            slab = _blend(slab, 1, lower - first, upper - first, weight)
        with timer.stage("argmax"):
            labels = first_argmax(slab[:, :, rows[1], rows[2]])
            out[chunk[0] - rows[0].start:chunk[-1] + 1 - rows[0].start] = labels.cpu().numpy()
    return out, rows

"""Two-stage prediction's region: the localiser's organ voxels, plus a margin, as one box on the
full-resolution network's grid. Pure maths on shapes and spacings (no torch, no images).

Frames: the localiser and the folds see the same CT cropped to its nonzero box (the "crop"), each
resampled to its own plan's spacing. A voxel k of an axis resampled from n_crop to n voxels spans
[k, k + 1) * n_crop / n in crop voxels, as v1's resampling maps them (voxel centres, no corner
alignment), so boxes are converted through crop-voxel coordinates, axis by axis."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Region:
    """What the full-resolution sliding window covers, on its own grid (network axis order)."""
    box: tuple[slice, ...]
    fraction: float                  # of the network grid's voxels
    fallback: str | None = None      # why the whole volume (or a whole axis) is used, or None
    crop_box: tuple[slice, ...] = ()  # the organs plus margin in crop voxels, (z, y, x): what must hold them
    starts: tuple[tuple[int, ...], ...] | None = None   # tile starts per axis, relative to the box
    inside: tuple[slice, ...] = ()   # the part of the box whose voxels the export may use

    @property
    def whole(self) -> bool:
        return self.fraction >= 1.0


def organ_bounds(organs: np.ndarray) -> list[tuple[int, int]] | None:
    """Per axis, the first and last index holding an organ voxel; None when there is none."""
    if not organs.any():
        return None
    bounds = []
    for axis in range(organs.ndim):
        hits = np.flatnonzero(organs.any(axis=tuple(a for a in range(organs.ndim) if a != axis)))
        bounds.append((int(hits[0]), int(hits[-1])))
    return bounds


def crop_box_of_organs(bounds: Sequence[tuple[int, int]], localiser_shape: Sequence[int],
                       crop_shape: Sequence[int], crop_spacing: Sequence[float],
                       margin_mm: float) -> tuple[tuple[slice, ...], list[int]]:
    """The organs' extent plus `margin_mm` on each side, in crop voxels (z, y, x), clipped to the
    crop; and the axes along which the organs touch the field's edge. Along those axes the box
    spans the whole axis: organs cut off by the field are where a localiser errs most."""
    box, touching = [], []
    for axis, ((first, last), n_loc, n_crop, spacing) in enumerate(
            zip(bounds, localiser_shape, crop_shape, crop_spacing)):
        if first == 0 or last == n_loc - 1:
            touching.append(axis)
            box.append(slice(0, n_crop))
            continue
        scale, margin = n_crop / n_loc, margin_mm / spacing
        start = max(0, math.floor(first * scale - margin))
        stop = min(n_crop, math.ceil((last + 1) * scale + margin))
        box.append(slice(start, stop))
    return tuple(box), touching


def network_window(crop_box: Sequence[slice], crop_shape: Sequence[int], grid_shape: Sequence[int],
                   transpose_forward: Sequence[int], patch: Sequence[int], step_size: float, exact: bool = False
                   ) -> tuple[tuple[slice, ...], tuple[tuple[int, ...], ...], tuple[slice, ...]]:
    """A crop-voxel box (z, y, x) on the network grid (its axis order): per axis the window the
    sliding window covers, its tile starts (relative to the window), and the part of the window
    whose voxels every tile covering them in this layout covers (what the export may use).

    Per axis, the fewer tiles of two layouts: the whole volume's own tiles that reach into the box
    (so the box's voxels see exactly the tiles, and get exactly the probabilities, that
    whole-volume prediction gives them), or new tiles laid over the box alone, grown to at least
    one patch. An axis on which the box saves no tile thus keeps the whole volume's layout.
    `exact`: always the whole volume's tiles, so that the region's masks equal whole-volume ones."""
    window, starts, inside = [], [], []
    for axis, (n_grid, p) in enumerate(zip(grid_shape, patch)):
        source = transpose_forward[axis]
        scale = n_grid / crop_shape[source]
        # one grid voxel more on each side: an edge row of the box interpolates from its neighbour
        start = max(0, math.floor(crop_box[source].start * scale) - 1)
        stop = min(n_grid, math.ceil(crop_box[source].stop * scale) + 1)
        layout = _axis_layout(start, stop, n_grid, p, step_size, exact)
        for collected, value in zip((window, starts, inside), layout):
            collected.append(value)
    return tuple(window), tuple(starts), tuple(inside)


def _axis_layout(start: int, stop: int, n: int, patch: int, step_size: float,
                 exact: bool = False) -> tuple[slice, tuple[int, ...], slice]:
    from app.inference.sliding_window import tile_starts
    if n <= patch:   # one tile, padded by the sliding window as for the whole volume
        return slice(0, n), (0,), slice(0, n)
    whole = tile_starts([patch], [n], step_size)[0]
    reaching = [i for i, s in enumerate(whole) if s < stop and s + patch > start]
    box = _at_least(start, stop, patch, n)
    own = [box.start + s for s in tile_starts([patch], [box.stop - box.start], step_size)[0]]
    if exact or len(reaching) <= len(own):
        first_tile, last_tile = reaching[0], reaching[-1]
        chosen = whole[first_tile:last_tile + 1]
        # voxels that a left-out whole-volume tile also covers get other sums: not exported
        inside = slice(whole[first_tile - 1] + patch if first_tile > 0 else 0,
                       whole[last_tile + 1] if last_tile + 1 < len(whole) else n)
    else:
        chosen = own
        inside = slice(own[0], own[-1] + patch)
    first, last = chosen[0], chosen[-1] + patch
    return slice(first, last), tuple(s - first for s in chosen), inside


def _at_least(start: int, stop: int, size: int, n: int) -> slice:
    """[start, stop) grown around its centre to `size` (n > size), shifted to stay inside [0, n)."""
    missing = size - (stop - start)
    if missing > 0:
        start = min(max(0, start - missing // 2), n - size)
        stop = start + size
    return slice(start, stop)


def whole(grid_shape: Sequence[int], why: str) -> Region:
    return Region(tuple(slice(0, n) for n in grid_shape), 1.0, why)


def region_from_organs(organs: np.ndarray, crop_shape: Sequence[int], crop_spacing: Sequence[float],
                       grid_shape: Sequence[int], transpose_forward: Sequence[int], patch: Sequence[int],
                       margin_mm: float, step_size: float, exact: bool = False) -> Region:
    """`organs`: the localiser's organ voxels, (z, y, x) on its own grid of the same crop."""
    bounds = organ_bounds(organs)
    if bounds is None:
        return whole(grid_shape, "the localiser found no organ")
    crop_box, touching = crop_box_of_organs(bounds, organs.shape, crop_shape, crop_spacing, margin_mm)
    box, starts, inside = network_window(crop_box, crop_shape, grid_shape, transpose_forward, patch, step_size,
                                         exact)
    fraction = float(np.prod([s.stop - s.start for s in box]) / np.prod(grid_shape))
    fallback = None
    if touching:
        fallback = "the organs touch the field's edge along axes " + ", ".join("zyx"[a] for a in touching) + \
                   ": the whole field along " + ("them" if len(touching) > 1 else "it")
    return Region(box, fraction, fallback, crop_box, starts, inside)

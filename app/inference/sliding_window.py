"""Small pure helpers for the Gaussian-weighted sliding window, as nnU-Net v1 computes them."""
from __future__ import annotations

from itertools import product
from typing import Sequence

import numpy as np


def tile_starts(patch: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
    """Tile start positions per axis (v1's _compute_steps_for_sliding_window): the fewest tiles
    with at most `step_size * patch` between starts, spread evenly from 0 to shape - patch."""
    starts = []
    for p, s in zip(patch, shape):
        if s < p:
            raise ValueError(f"image axis {s} is smaller than the patch {p}; pad it first")
        n = int(np.ceil((s - p) / (p * step_size))) + 1
        step = (s - p) / (n - 1) if n > 1 else 0.0
        starts.append([int(np.round(step * i)) for i in range(n)])
    return starts


def tiles(patch: Sequence[int], shape: Sequence[int], step_size: float) -> list[tuple[slice, ...]]:
    return [tuple(slice(o, o + p) for o, p in zip(origin, patch))
            for origin in product(*tile_starts(patch, shape, step_size))]


def tile_count(shape: Sequence[int], patch: Sequence[int], step_size: float) -> int:
    """Tiles of v1's sliding window over `shape`, after its padding to the patch."""
    padded = [s + before + after for s, (before, after) in zip(shape, padding_to_patch(shape, patch))]
    return int(np.prod([len(axis) for axis in tile_starts(patch, padded, step_size)]))


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """v1's _get_gaussian: a delta at patch // 2 blurred with sigma = patch * sigma_scale (truncated
    at 4 sigma, as scipy does), scaled to a maximum of 1, zeros replaced by the smallest value."""
    axes = []
    for p in patch:
        sigma = p * sigma_scale
        radius = int(4.0 * sigma + 0.5)
        offset = np.arange(p) - p // 2
        axes.append(np.where(np.abs(offset) <= radius, np.exp(-0.5 * (offset / sigma) ** 2), 0.0))
    gaussian = np.einsum("i,j,k->ijk", *axes).astype(np.float32)
    gaussian[gaussian == 0] = gaussian[gaussian != 0].min()
    return gaussian


def padding_to_patch(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) per axis so that every axis is at least the patch (v1's pad_nd_image)."""
    pads = []
    for s, p in zip(shape, patch):
        missing = max(p - s, 0)
        pads.append((missing // 2, missing - missing // 2))
    return pads


def flip_sets(mirror_axes: Sequence[int], tta: bool) -> list[tuple[int, ...]]:
    """Every subset of the mirror axes (8 in 3D), as spatial axes; just () without TTA."""
    if not tta:
        return [()]
    axes = sorted(mirror_axes)
    return [tuple(a for a, on in zip(axes, mask) if on) for mask in product((False, True), repeat=len(axes))]

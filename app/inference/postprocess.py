"""Keep the largest connected component of each label that postprocessing.json names.

One multi-label cc3d pass labels the components of every organ at once, then one bincount and
one lookup: O(voxels), however fragmented the mask (nnU-Net v1 makes one full-volume pass per
component). Face connectivity (6), as v1's scipy.ndimage.label default; components tied for the
largest size are all kept, as in v1."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def keep_largest_components(mask: np.ndarray, labels: Iterable[int]) -> np.ndarray:
    import cc3d

    labels = [int(label) for label in labels]
    selected = np.isin(mask, labels)
    if not labels or not selected.any():
        return mask
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in
                (np.flatnonzero(selected.any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]]
                 for axis in range(3)))
    region = np.where(selected[box], mask[box], 0)
    components = cc3d.connected_components(region, connectivity=6)
    sizes = np.asarray(cc3d.statistics(components)["voxel_counts"])  # faster than a bincount on uint32
    label_of = np.zeros(len(sizes), dtype=np.int64)
    label_of[components.ravel()] = region.ravel()
    keep = np.ones(len(sizes), dtype=bool)
    for label in labels:
        ids = np.flatnonzero(label_of == label)
        ids = ids[ids > 0]
        if ids.size:
            keep[ids] = sizes[ids] == sizes[ids].max()
    mask[box][~keep[components]] = 0
    return mask

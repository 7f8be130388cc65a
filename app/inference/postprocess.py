"""Keep the largest connected component of each label that postprocessing.json names, and the
two largest of a paired organ's label (the kidneys), which nnU-Net's one-component rule cannot
serve: it would delete one kidney, so cross-validation never chooses it for them.

One multi-label cc3d pass labels the components of every organ at once, then one bincount and
one lookup: O(voxels), however fragmented the mask (nnU-Net v1 makes one full-volume pass per
component). Face connectivity (6), as v1's scipy.ndimage.label default; components tied for the
largest size are all kept, as in v1."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from app.labels import PAIRED


def component_rules(single_labels: Iterable[int], paired_organs: bool = True) -> tuple[tuple[int, ...], dict[int, int]]:
    """(labels, components to keep per label) for `keep_largest_components`: the labels that
    postprocessing.json keeps one component of, and each paired organ that it leaves out, with as
    many components as a patient has of that organ. `paired_organs=False`: nnU-Net's rule alone."""
    single = tuple(int(label) for label in single_labels)
    paired = {label: n for label, n in PAIRED.items() if label not in single} if paired_organs else {}
    return single + tuple(paired), paired


def keep_largest_components(mask: np.ndarray, labels: Iterable[int],
                            counts: Mapping[int, int] | None = None) -> np.ndarray:
    """Keep, for each label, its largest component, or its `counts[label]` largest ones."""
    import cc3d

    labels = [int(label) for label in labels]
    counts = {int(label): int(n) for label, n in (counts or {}).items()}
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
            kept = min(counts.get(label, 1), ids.size)
            keep[ids] = sizes[ids] >= np.sort(sizes[ids])[-kept]
    mask[box][~keep[components]] = 0
    return mask

"""Two-stage prediction, stage one: the localiser (a coarse model shipped beside the folds) finds
the organs on a low-resolution copy of the case, made where the network runs with the folds' own
v1-exact preprocessing, and their voxels plus a margin become the region that the folds' sliding
window covers (app.inference.region)."""
from __future__ import annotations

import numpy as np
import torch

from app.inference.device_preprocess import preprocess_on_device
from app.inference.ensemble import SlidingWindow
from app.inference.network import load_network
from app.inference.preprocess import Preprocessed
from app.inference.region import Region, region_from_organs, whole
from app.inference.resample import first_argmax
from app.inference.sliding_window import tiles, padding_to_patch
from app.inference.weights import Localiser, Plan

STEP_SIZE = 0.5   # v1's default step: the localiser's tiles are cheap, its misses are not
# A piece of an organ under this share of that organ's largest piece is taken for a stray
# detection (one at the field's edge would otherwise widen the region to the whole axis).
STRAY_SHARE = 0.1


class LocaliserStage:
    """Loaded once with the predictor; `region` is called per case."""

    def __init__(self, localiser: Localiser, device: torch.device, autocast: torch.dtype | None):
        self.plan = localiser.plan
        self.network = load_network(self.plan.network, localiser.state, device)
        self.window = SlidingWindow(self.plan.patch_size, self.plan.mirror_axes)
        self.device = device
        self.autocast = autocast

    def organs(self, volume: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[np.ndarray, Preprocessed]:
        """The localiser's organ voxels, (z, y, x) on its own grid of the cropped CT."""
        case = preprocess_on_device(volume, spacing_zyx, self.plan, self.device)
        probs = self.window.probabilities(case.data, [self.network], self.plan.network.num_classes, tta=False,
                                          step_size=STEP_SIZE, network_batch=4, accumulate_on=self.device,
                                          autocast=self.autocast)
        labels = first_argmax(probs).permute(*self.plan.transpose_backward).contiguous()
        return without_strays(labels.cpu().numpy()), case

    def region(self, volume: np.ndarray, spacing_zyx: tuple[float, ...], case: Preprocessed, plan: Plan,
               margin_mm: float, step_size: float, exact: bool = False) -> Region:
        """The folds' region for `case` (the folds' preprocessed copy of the same CT)."""
        grid_shape = tuple(case.data.shape)
        organs, coarse = self.organs(volume, spacing_zyx)
        if coarse.bbox != case.bbox:   # the same CT, the same nonzero crop: a mismatch is a bug, never a region
            return whole(grid_shape, "the localiser's crop differs from the folds' crop")
        crop_spacing = case.original_spacing
        return region_from_organs(organs, case.cropped_shape, crop_spacing, grid_shape, plan.transpose_forward,
                                  plan.patch_size, margin_mm, step_size, exact)


def without_strays(labels: np.ndarray, share: float = STRAY_SHARE) -> np.ndarray:
    """Organ voxels (bool) of a label map, without the pieces of each organ smaller than `share` of
    its largest piece."""
    import cc3d
    components = cc3d.connected_components(labels, connectivity=26)
    stats = cc3d.statistics(components)
    sizes = np.asarray(stats["voxel_counts"])
    label_of = np.zeros(len(sizes), dtype=np.int64)
    label_of[components.ravel()] = labels.ravel()
    keep = np.zeros(len(sizes), dtype=bool)
    for label in np.unique(label_of[1:]):
        ids = np.flatnonzero(label_of == label)
        ids = ids[ids > 0]
        keep[ids] = sizes[ids] >= share * sizes[ids].max()
    return keep[components]


def tile_count(shape: tuple[int, ...], patch: tuple[int, ...], step_size: float) -> int:
    """Tiles of v1's sliding window over `shape` (after its padding to the patch)."""
    padded = [s + before + after for s, (before, after) in zip(shape, padding_to_patch(shape, patch))]
    return len(tiles(patch, padded, step_size))

"""Two-stage prediction, stage one: the localiser (a coarse model shipped beside the folds) finds
the organs on a low-resolution copy of the case, made where the network runs with the folds' own
v1-exact preprocessing, and their voxels plus a margin become the region that the folds' sliding
window covers (app.inference.region)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.inference.device_preprocess import preprocess_on_device
from app.inference.ensemble import SlidingWindow
from app.inference.network import load_network
from app.inference.preprocess import Preprocessed, preprocess
from app.inference.region import Region, region_from_organs, whole
from app.inference.resample import first_argmax
from app.inference.weights import Localiser, Plan
from app.labels import PAIRED

STEP_SIZE = 0.5   # v1's default step: the localiser's tiles are cheap, its misses are not
# A piece of an organ under this share of that organ's largest piece is taken for a stray
# detection (one at the field's edge would otherwise widen the region to the whole axis).
STRAY_SHARE = 0.1


@dataclass(frozen=True)
class Found:
    """What the localiser found on its coarse copy of a case."""
    organs: np.ndarray                 # bool, (z, y, x) on the localiser's grid of the cropped CT
    bbox: tuple[slice, ...]            # the nonzero crop it was made from


class LocaliserStage:
    """Loaded once with the predictor; `find` runs per case, before the folds' preprocessing, so
    that its memory is released before theirs is taken."""

    def __init__(self, localiser: Localiser, device: torch.device, autocast: torch.dtype | None,
                 preprocess_on: str = "device"):
        self.plan = localiser.plan
        self.network = load_network(self.plan.network, localiser.state, device)
        self.window = SlidingWindow(self.plan.patch_size, self.plan.mirror_axes)
        self.device = device
        self.autocast = autocast
        self.preprocess_on = preprocess_on

    def find(self, volume: np.ndarray, spacing_zyx: tuple[float, ...]) -> Found:
        """The localiser's organ voxels, without stray pieces."""
        if self.preprocess_on == "host":
            case = preprocess(volume, spacing_zyx, self.plan)
        else:
            case = preprocess_on_device(volume, spacing_zyx, self.plan, self.device)
        probs = self.window.probabilities(case.data, [self.network], self.plan.network.num_classes, tta=False,
                                          step_size=STEP_SIZE, network_batch=4, accumulate_on=self.device,
                                          autocast=self.autocast)
        labels = first_argmax(probs).permute(*self.plan.transpose_backward).contiguous()
        return Found(without_strays(labels.cpu().numpy()), case.bbox)


def region_for(found: Found, case: Preprocessed, plan: Plan, margin_mm: float, step_size: float,
               exact: bool) -> Region:
    """The folds' region for `case` (the folds' preprocessed copy of the same CT)."""
    grid_shape = tuple(case.data.shape)
    if found.bbox != case.bbox:   # the same CT, the same nonzero crop: a mismatch is a bug, never a region
        return whole(grid_shape, "the localiser's crop differs from the folds' crop")
    return region_from_organs(found.organs, case.cropped_shape, case.original_spacing, grid_shape,
                              plan.transpose_forward, plan.patch_size, margin_mm, step_size, exact)


def without_strays(labels: np.ndarray, share: float = STRAY_SHARE) -> np.ndarray:
    """Organ voxels (bool) of a label map, without the pieces of each organ smaller than `share` of
    its largest piece. A paired organ's largest pieces, as many as a patient has, are always kept:
    one kidney may be far smaller than the other."""
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
        keep[ids[np.argsort(-sizes[ids])][:PAIRED.get(int(label), 1)]] = True
    return keep[components]

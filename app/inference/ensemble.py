"""Sliding window + mirroring TTA + fold ensemble: network input -> class probabilities."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from app.inference.network import predict_tiles
from app.inference.sliding_window import flip_sets, gaussian_importance, padding_to_patch, tiles


class SlidingWindow:
    """Holds what does not change from case to case: the Gaussian map on the device."""

    def __init__(self, patch: Sequence[int], mirror_axes: Sequence[int], device: torch.device):
        self.patch = tuple(patch)
        self.mirror_axes = tuple(mirror_axes)
        self.device = device
        self.gaussian = torch.from_numpy(gaussian_importance(self.patch)).to(device)

    def probabilities(self, data: np.ndarray, networks: Sequence[nn.Module], n_classes: int, *,
                      tta: bool, step_size: float, tile_batch: int, autocast: bool,
                      progress: bool = False) -> torch.Tensor:
        """Fold-averaged, flip-averaged, Gaussian-weighted softmax (C, *data.shape), on the device."""
        pads = padding_to_patch(data.shape, self.patch)
        image = torch.from_numpy(np.pad(data, pads, mode="constant")).to(self.device)
        windows = tiles(self.patch, image.shape, step_size)
        flips = flip_sets(self.mirror_axes, tta)
        summed = torch.zeros((n_classes, *image.shape), dtype=torch.float32, device=self.device)
        weight = torch.zeros(image.shape, dtype=torch.float32, device=self.device)
        bar = _progress(len(windows), progress)
        for first in range(0, len(windows), tile_batch):
            group = windows[first:first + tile_batch]
            batch = torch.stack([image[w] for w in group])[:, None]
            probs = predict_tiles(networks, batch, flips, autocast)
            for w, p in zip(group, probs):
                summed[(slice(None), *w)] += p * self.gaussian
                weight[w] += self.gaussian
            bar.update(len(group))
        bar.close()
        inner = tuple(slice(b, s - a) for (b, a), s in zip(pads, image.shape))
        summed = summed[(slice(None), *inner)]
        summed /= weight[inner] * len(networks)
        return summed


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="tiles", unit="tile", disable=not enabled, leave=False, mininterval=1.0)

"""Sliding window + mirroring TTA + fold ensemble: network input -> class probabilities."""
from __future__ import annotations

from itertools import product
from typing import Sequence

import numpy as np
import torch
from torch import nn

from app.inference.network import predict_tiles
from app.inference.sliding_window import flip_sets, gaussian_importance, padding_to_patch, tiles


def network_device(networks: Sequence[nn.Module]) -> torch.device:
    return next(networks[0].parameters()).device


class SlidingWindow:
    """Holds what does not change from case to case: the patch, the flips' axes, the Gaussian."""

    def __init__(self, patch: Sequence[int], mirror_axes: Sequence[int]):
        self.patch = tuple(patch)
        self.mirror_axes = tuple(mirror_axes)
        self._gaussian = torch.from_numpy(gaussian_importance(self.patch))
        self._gaussian_on: dict[torch.device, torch.Tensor] = {}
        self.last_network_passes = 0  # tiles x flips x folds of the latest case, for the log

    def gaussian(self, device: torch.device) -> torch.Tensor:
        if device not in self._gaussian_on:
            self._gaussian_on[device] = self._gaussian.to(device)
        return self._gaussian_on[device]

    def probabilities(self, data: np.ndarray | torch.Tensor, networks: Sequence[nn.Module], n_classes: int, *,
                      tta: bool, step_size: float, network_batch: int, accumulate_on: torch.device,
                      autocast: torch.dtype | None, progress: bool = False,
                      starts: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """Fold-averaged, flip-averaged, Gaussian-weighted softmax (C, *data.shape).
        `starts`: tile starts per axis (two-stage prediction's layout); None: v1's own.

        The networks run where their weights are; the sums live on `accumulate_on`, which may
        be the CPU when GPU memory is short."""
        compute_on = network_device(networks)
        pads = padding_to_patch(data.shape, self.patch)
        image = _padded_on(data, pads, compute_on)
        windows = tiles(self.patch, image.shape, step_size) if starts is None else \
            [tuple(slice(o, o + p) for o, p in zip(origin, self.patch)) for origin in product(*starts)]
        flips = flip_sets(self.mirror_axes, tta)
        gaussian = self.gaussian(accumulate_on)
        summed = torch.zeros((n_classes, *image.shape), dtype=torch.float32, device=accumulate_on)
        weight = torch.zeros(image.shape, dtype=torch.float32, device=accumulate_on)
        bar = _progress(len(windows), progress)
        tiles_per_group = max(1, network_batch // len(flips))
        for first in range(0, len(windows), tiles_per_group):
            group = windows[first:first + tiles_per_group]
            batch = torch.stack([image[w] for w in group])[:, None]
            probs = predict_tiles(networks, batch, flips, autocast, network_batch).to(accumulate_on)
            for w, p in zip(group, probs):
                summed[(slice(None), *w)] += p * gaussian
                weight[w] += gaussian
            bar.update(len(group))
        bar.close()
        self.last_network_passes = len(windows) * len(flips) * len(networks)
        inner = tuple(slice(b, s - a) for (b, a), s in zip(pads, image.shape))
        summed = summed[(slice(None), *inner)]
        summed /= weight[inner] * len(networks)
        return summed


def _padded_on(data: np.ndarray | torch.Tensor, pads: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Zero padding up to the patch (v1's pad_nd_image), where the network runs."""
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.pad(data, pads, mode="constant")).to(device)
    data = data.to(device)
    if not any(before or after for before, after in pads):
        return data
    flat = [side for before_after in reversed(pads) for side in before_after]
    return torch.nn.functional.pad(data, flat, mode="constant", value=0.0)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="tiles", unit="tile", disable=not enabled, leave=False, mininterval=1.0)

"""nnU-Net v1's Generic_UNet, built from plans.json exactly as nnUNetTrainerV2 builds it,
loaded from a safetensors state dict, and run over batches of tiles with mirroring TTA."""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Sequence

import torch
from torch import nn

from app.inference.weights import NetworkSpec


_HEAVY_HELPERS = "batchgenerators.augmentations.utils"


def _nnunet_package_without_banner() -> None:
    """nnunet/__init__.py only prints a citation request (into every FLARE case's log) and
    imports nothing its subpackages need: the package is registered without running it."""
    if "nnunet" not in sys.modules:
        sys.modules["nnunet"] = importlib.util.module_from_spec(importlib.util.find_spec("nnunet"))


def _generic_unet_class():
    """Import nnU-Net's Generic_UNet without its package's banner and without its base class's
    augmentation helpers.

    nnunet's SegmentationNetwork imports batchgenerators.augmentations.utils (which pulls in
    skimage and pandas, about 0.8 s of start-up, paid on every FLARE case) only for a padding
    helper of its own predict_3D, which this app never calls. A placeholder stands in during the
    import; the real module stays importable afterwards for anyone else."""
    _nnunet_package_without_banner()
    if _HEAVY_HELPERS in sys.modules:
        from nnunet.network_architecture.generic_UNet import Generic_UNet
        return Generic_UNet
    placeholder = types.ModuleType(_HEAVY_HELPERS)
    placeholder.pad_nd_image = _not_used_here
    sys.modules[_HEAVY_HELPERS] = placeholder
    try:
        from nnunet.network_architecture.generic_UNet import Generic_UNet
    finally:
        if sys.modules.get(_HEAVY_HELPERS) is placeholder:
            del sys.modules[_HEAVY_HELPERS]
    return Generic_UNet


def _not_used_here(*_args, **_kwargs):
    raise RuntimeError("nnU-Net's own predict_3D is not used by this app; see app.inference.ensemble")


def build_network(spec: NetworkSpec) -> nn.Module:
    Generic_UNet = _generic_unet_class()
    network = Generic_UNet(
        spec.input_channels, spec.base_num_features, spec.num_classes,
        len(spec.pool_op_kernel_sizes), spec.conv_per_stage, 2,
        nn.Conv3d, nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
        nn.Dropout3d, {"p": 0, "inplace": True},
        nn.LeakyReLU, {"negative_slope": 1e-2, "inplace": True},
        True, False, lambda x: x, None,  # deep supervision heads exist in the weights; no init: we load
        [list(k) for k in spec.pool_op_kernel_sizes], [list(k) for k in spec.conv_kernel_sizes],
        False, True, True,
    )
    network.do_ds = False  # inference uses the full-resolution head only
    return network


def load_network(spec: NetworkSpec, state: dict, device: torch.device) -> nn.Module:
    """Built on the meta device, so no random initialisation is computed only to be overwritten
    (about 0.1 s per million parameters on the CPU); the weights' own tensors then become the
    parameters, without a copy when they were loaded onto `device` already."""
    _generic_unet_class()  # imported outside the meta context: import-time tensors stay real
    with torch.device("meta"):
        network = build_network(spec)
    tensors = {k: v.to(device=device, dtype=torch.float32) for k, v in state.items()}
    missing, unexpected = network.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"weights do not fit the plan's network: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return network.to(device, memory_format=memory_format(device)).eval()


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last runs 3D convolutions about 2.8x faster on the CPU (bench/network_cpu.py) but
    1.6-1.9x slower through cuDNN on an H200 (bench/gpu_network.py, BENCHMARKS.md)."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


@torch.inference_mode()
def predict_tiles(networks: Sequence[nn.Module], tiles: torch.Tensor, flips: Sequence[tuple[int, ...]],
                  autocast: torch.dtype | None, max_batch: int) -> torch.Tensor:
    """Softmax summed over folds and averaged over flips, for a batch of tiles (B, C, *patch).
    `autocast` is the reduced precision to compute in, or None for float32.

    The flipped copies of all tiles go through each network in calls of at most `max_batch`
    samples (activation memory grows with it); every flip is undone before averaging, so this
    equals v1's one-tile-one-flip-at-a-time loop."""
    samples = [(f, t) for f in flips for t in range(tiles.shape[0])]
    fmt, step = memory_format(tiles.device), max(1, max_batch)
    total = None
    for first in range(0, len(samples), step):
        chunk = samples[first:first + step]
        batch = torch.stack([_flip(tiles[t], f) for f, t in chunk]).contiguous(memory_format=fmt)
        for network in networks:
            with torch.autocast(batch.device.type, dtype=autocast, enabled=autocast is not None):
                probs = torch.softmax(network(batch).float(), dim=1)
            if total is None:
                total = probs.new_zeros((tiles.shape[0], *probs.shape[1:]))
            for (f, t), p in zip(chunk, probs):
                total[t] += _flip(p, f)
    return total / len(flips)


def _flip(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Flip a (C, *spatial) tensor along spatial axes (0-based)."""
    return torch.flip(x, [a + 1 for a in axes]) if axes else x

"""A wider Generic_UNet that computes exactly what a trained one computes, as a starting point.

The demo plan's network (8 base features, 0.35 M parameters) scores no better on the phantoms it
trained on than on unseen ones (docs/training.md, the fit probe): it underfits, and more phantoms
of the same kind do not lift it. Training a wider one from scratch costs far more samples than a
CPU session gives. Widening the trained one keeps what it learned (Net2WiderNet, Chen et al., 2016):

- every output channel of a layer is repeated `factor` times (filter, bias and instance-norm
  parameters copied), so each copy carries the same activation: instance norm normalises each
  channel by its own statistics, and LeakyReLU acts voxel by voxel;
- a layer that reads repeated channels splits each old weight over the copies in random shares
  that sum to 1, so its output is unchanged; the unequal shares give the copies different
  gradients, so that training pulls them apart;
- the first decoder convolution of each level reads [upsampled, skip] concatenated: each half is
  split on its own; the image input and the class outputs keep their widths.

    python -m app.training.widen IN.model OUT.model [--factor 2] [--seed 0]

then train with `--base-features` = factor x the plan's (8 for the demo plan).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

_CONCAT_INPUT = re.compile(r"^conv_blocks_localization\.\d+\.0\.blocks\.0\.conv\.weight$")
_IMAGE_INPUT = "conv_blocks_context.0.blocks.0.conv.weight"


def _repeat(tensor: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """Channel n of the result is channel n mod c of the input (c: the input's width)."""
    return torch.cat([tensor] * factor, dim=axis)


def _split(tensor: torch.Tensor, axis: int, factor: int, generator: torch.Generator) -> torch.Tensor:
    """Repeat along `axis` and scale copy r of channel i by share[r, i]; the shares of a channel sum to 1."""
    width = tensor.shape[axis]
    shares = torch.rand((factor, width), generator=generator, dtype=torch.float64) + 0.5
    shares = (shares / shares.sum(0, keepdim=True)).to(tensor.dtype)
    shape = [width if i == axis else 1 for i in range(tensor.dim())]
    return torch.cat([tensor * shares[r].reshape(shape) for r in range(factor)], dim=axis)


def _widen_inputs(name: str, tensor: torch.Tensor, axis: int, factor: int, generator) -> torch.Tensor:
    if name == _IMAGE_INPUT:
        return tensor
    if _CONCAT_INPUT.match(name):
        upsampled, skip = torch.chunk(tensor, 2, dim=axis)
        return torch.cat([_split(upsampled, axis, factor, generator), _split(skip, axis, factor, generator)], dim=axis)
    return _split(tensor, axis, factor, generator)


def widen_state_dict(state: dict, factor: int = 2, seed: int = 0) -> dict:
    """The state dict of Generic_UNet with `factor` x the base features of `state`'s network."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    generator = torch.Generator().manual_seed(seed)
    wider = {}
    for name, tensor in state.items():
        if tensor.dim() == 1:                       # conv bias, instance-norm weight and bias
            wider[name] = _repeat(tensor, 0, factor)
        elif name.startswith("tu."):                # ConvTranspose3d: (in, out, k, k, k)
            wider[name] = _repeat(_widen_inputs(name, tensor, 0, factor, generator), 1, factor)
        elif name.startswith("seg_outputs."):       # 1x1 convolution to the classes
            wider[name] = _widen_inputs(name, tensor, 1, factor, generator)
        elif tensor.dim() == 5:                     # Conv3d: (out, in, k, k, k)
            wider[name] = _repeat(_widen_inputs(name, tensor, 1, factor, generator), 0, factor)
        else:
            raise ValueError(f"{name}: a tensor of shape {tuple(tensor.shape)} is not part of Generic_UNet")
    return wider


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkpoint (.model) with a state_dict")
    parser.add_argument("target", type=Path)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="for the shares that split each weight")
    args = parser.parse_args(argv)
    # our own checkpoints (app.training.from_weights or a training run): numpy scalars inside
    checkpoint = torch.load(args.source, map_location="cpu", weights_only=False)
    state = widen_state_dict(checkpoint["state_dict"], args.factor, args.seed)
    tmp = args.target.with_name(args.target.name + ".partial")
    torch.save({"state_dict": state, "epoch": 0}, tmp)
    tmp.replace(args.target)
    before = sum(t.numel() for t in checkpoint["state_dict"].values())
    print(f"wrote {args.target}: {len(state)} tensors, {before:,} -> {sum(t.numel() for t in state.values()):,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

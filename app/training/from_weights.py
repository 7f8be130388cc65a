"""A training checkpoint from an exported weights folder: the mean of its folds' tensors.

The folds of one run share their start and differ little, so their mean is a sound starting
point (`--warm-start-init`, `--fold-init`) for training on new data, e.g. new phantoms.

    python -m app.training.from_weights WEIGHTS_DIR OUT.model
"""
from __future__ import annotations

import sys
from pathlib import Path


def mean_state_dict(weights_dir: Path) -> dict:
    from safetensors.torch import load_file

    folds = sorted(Path(weights_dir).glob("fold_*.safetensors"))
    if not folds:
        raise SystemExit(f"no fold_*.safetensors in {weights_dir}")
    states = [load_file(str(f)) for f in folds]
    return {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}


def main(argv: list[str]) -> int:
    import torch

    if len(argv) != 2:
        raise SystemExit(__doc__)
    state = mean_state_dict(Path(argv[0]))
    # the layout of nnunet's checkpoints, which --warm-start-init / --fold-init read
    torch.save({"state_dict": state, "epoch": 0}, argv[1])
    print(f"wrote {argv[1]}: mean of the folds in {argv[0]} ({len(state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

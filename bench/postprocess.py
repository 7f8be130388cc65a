"""Largest-component postprocessing on a fragmented mask: ours (cc3d, one pass) against stock v1.

    python -m bench.postprocess [--components 10000]

The full-size mask is 134 x 379 x 458 (the real CT on a FLARE-like grid) with about N components
per label. Stock v1 makes one full-volume pass per component, so it is timed on a slab of the
mask with N/16 components and its time per component is reported beside ours."""
from __future__ import annotations

import argparse
import time

import numpy as np

SHAPE = (134, 379, 458)


def fragmented_mask(components_per_label: int, shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Isolated 2x2x2 blocks of each label on a grid (so each is its own component), plus one
    large block per label that must survive."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=np.uint8)
    cells = [(z, y, x) for z in range(2, shape[0] - 3, 4) for y in range(2, shape[1] - 3, 4) for x in range(2, shape[2] - 3, 4)]
    chosen = rng.choice(len(cells), size=min(len(cells), 4 * components_per_label), replace=False)
    for i, cell in enumerate(chosen):
        z, y, x = cells[cell]
        mask[z:z + 2, y:y + 2, x:x + 2] = 1 + i % 4
    for label in range(1, 5):
        z0 = 10 + 28 * (label - 1)
        mask[z0:z0 + 20, 20:80, 20:80] = label
    return mask


def main() -> None:
    from app.inference.postprocess import keep_largest_components
    parser = argparse.ArgumentParser()
    parser.add_argument("--components", type=int, default=10000)
    args = parser.parse_args()
    mask = fragmented_mask(args.components)
    start = time.perf_counter()
    ours = keep_largest_components(mask.copy(), [1, 2, 3, 4])
    ours_s = time.perf_counter() - start
    import cc3d
    for label in range(1, 5):  # one component left per label, the large block
        assert cc3d.connected_components(ours == label, connectivity=6).max() == 1
        assert (ours == label).sum() >= 20 * 60 * 60
    print(f"ours: {ours_s:.2f} s for {mask.shape} with ~{args.components} components per label")

    from nnunet.postprocessing.connected_components import remove_all_but_the_largest_connected_component
    slab = fragmented_mask(args.components // 16)
    start = time.perf_counter()
    remove_all_but_the_largest_connected_component(slab.copy(), [1, 2, 3, 4], (1.0, 1.0, 1.0))
    stock_s = time.perf_counter() - start
    per_component = stock_s / (4 * (args.components // 16))
    projected = per_component * 4 * args.components
    print(f"stock v1: {stock_s:.1f} s for ~{args.components // 16} components per label; "
          f"projected {projected:.0f} s for ~{args.components}  ->  ratio {projected / ours_s:.0f}x")


if __name__ == "__main__":
    main()

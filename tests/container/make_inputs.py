"""Write a small synthetic abdominal CT with awkward geometry, for the container test.

usage: python make_inputs.py OUT.nii.gz [--seed N] [--flip]

Anisotropic spacing, a non-zero origin and an oblique direction that is not the identity:
a mask that comes back on another grid or orientation fails the geometry check.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import SimpleITK as sitk


def synthetic_ct(seed: int, flip: bool) -> sitk.Image:
    rng = np.random.default_rng(seed)
    nz, ny, nx = 24, 60, 72                    # numpy order (z, y, x)
    spacing = (1.3, 1.1, 4.0) if not flip else (0.9, 1.4, 3.5)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (nz, ny, nx)), indexing="ij")
    # millimetres from the volume centre
    zm = (z - nz / 2) * spacing[2]
    ym = (y - ny / 2) * spacing[1]
    xm = (x - nx / 2) * spacing[0]

    ct = np.full((nz, ny, nx), -1000.0, dtype=np.float32)           # air
    body = (xm / 44) ** 2 + (ym / 32) ** 2 <= 1.0
    ct[body] = -100.0                                                # fat
    ct[body & ((xm / 40) ** 2 + (ym / 28) ** 2 <= 1.0)] = 45.0       # muscle and soft tissue
    liver = ((xm + 14) / 18) ** 2 + ((ym + 4) / 14) ** 2 + (zm / 30) ** 2 <= 1.0
    spleen = ((xm - 22) / 8) ** 2 + ((ym + 8) / 8) ** 2 + (zm / 18) ** 2 <= 1.0
    kidney_r = ((xm + 12) / 5) ** 2 + ((ym - 14) / 6) ** 2 + (zm / 14) ** 2 <= 1.0
    kidney_l = ((xm - 12) / 5) ** 2 + ((ym - 14) / 6) ** 2 + (zm / 14) ** 2 <= 1.0
    pancreas = (xm / 12) ** 2 + ((ym - 2) / 3) ** 2 + (zm / 6) ** 2 <= 1.0
    spine = (xm / 5) ** 2 + ((ym - 22) / 5) ** 2 <= 1.0
    ct[liver] = 110.0
    ct[spleen] = 120.0
    ct[kidney_r | kidney_l] = 170.0
    ct[pancreas] = 95.0
    ct[spine] = 600.0
    ct += rng.normal(0.0, 12.0, ct.shape).astype(np.float32)
    if flip:
        ct = ct[:, ::-1, :].copy()

    image = sitk.GetImageFromArray(np.round(ct).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-123.4, 56.7, -89.0) if not flip else (12.5, -210.25, 301.0))
    a = math.radians(17.0 if not flip else -23.0)
    c, s = math.cos(a), math.sin(a)
    # a rotation about z, with the x axis mirrored: orthonormal, neither identity nor diagonal
    image.SetDirection((-c, -s, 0.0,
                        -s, c, 0.0,
                        0.0, 0.0, 1.0))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", action="store_true", help="a second, different geometry")
    args = parser.parse_args()
    sitk.WriteImage(synthetic_ct(args.seed, args.flip), args.out, useCompression=True)


if __name__ == "__main__":
    main()

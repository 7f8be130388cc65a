"""The scanner side of a phantom: a random grid (spacing, size, direction, origin) and the
rendering of an anatomy onto it, with partial-volume blur, texture and noise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from app.synth.shapes import TEXTURED, TISSUE_LABEL, rotation

if TYPE_CHECKING:
    from app.synth.phantom import Anatomy


# ----------------------------------------------------------------------------- scanner
SIZES = {
    # name: (in-plane spacing range mm, slice spacing range mm, max in-plane matrix)
    "full": ((0.6, 1.0), (1.0, 5.0), 512),
    "moderate": ((1.2, 2.0), (2.0, 5.0), 512),
    "small": ((2.6, 3.6), (3.0, 5.0), 256),
}


@dataclass
class Grid:
    shape: tuple[int, int, int]      # (nx, ny, nz): ITK index order
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray            # 3x3, columns = index axes in LPS


def random_grid(rng, anat: Anatomy, size: str = "full") -> Grid:
    (s_lo, s_hi), (z_lo, z_hi), nmax = SIZES[size]
    sp = float(rng.uniform(s_lo, s_hi))
    sz = float(rng.uniform(z_lo, z_hi))
    fov = max(2 * anat.a, 2 * anat.b + 40) * rng.uniform(1.05, 1.3)
    n = int(min(nmax, np.ceil(fov / sp)))
    nz = int(np.ceil((anat.z_hi - anat.z_lo) / sz)) + 1
    # direction: axial slices; common storage flips, sometimes head-first/feet-first, small tilt
    flips = [(1, 1), (-1, -1), (-1, 1), (1, -1)][int(rng.choice(4, p=[0.4, 0.4, 0.1, 0.1]))]
    fz = 1 if rng.random() < 0.8 else -1
    ang = np.deg2rad(rng.uniform(-8, 8)) if rng.random() < 0.3 else 0.0
    D = rotation(0, 0, ang) @ np.diag([flips[0], flips[1], fz]).astype(float)
    centre = np.array([rng.uniform(-10, 10), rng.uniform(-10, 25), 0.5 * (anat.z_lo + anat.z_hi)])
    half = np.array([(n - 1) * sp, (n - 1) * sp, (nz - 1) * sz]) / 2
    origin = centre - D @ half
    return Grid((n, n, nz), (sp, sp, sz), origin, D)


def render(anat: Anatomy, grid: Grid, rng, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Image (int16 HU) and label (uint8), numpy order (z, y, x)."""
    nx, ny, nz = grid.shape
    sx, sy, sz = grid.spacing
    D, o = grid.direction, grid.origin
    ii = np.arange(nx, dtype=np.float32) * sx
    jj = np.arange(ny, dtype=np.float32) * sy
    J, I = np.meshgrid(jj, ii, indexing="ij")  # (ny, nx)
    tissue = np.zeros((nz, ny, nx), np.uint8)
    for k0 in range(0, nz, chunk):
        ks = np.arange(k0, min(nz, k0 + chunk), dtype=np.float32) * sz
        K = ks[:, None, None]
        p = [o[r] + D[r, 0] * I[None] + D[r, 1] * J[None] + D[r, 2] * K for r in range(3)]
        p = [np.broadcast_to(c, (len(ks), ny, nx)).astype(np.float32) for c in p]
        tissue[k0:k0 + len(ks)] = anat.paint(*p)
    label = TISSUE_LABEL[tissue]
    hu = anat.hu[tissue]
    # smooth texture on soft tissue, evaluated on a coarse grid and upsampled
    tex = _coarse_texture(anat, grid, tissue.shape)
    hu = hu + np.where(TEXTURED[tissue], tex * anat.texture_amp, 0).astype(np.float32)
    # point-spread function + slice profile (partial volume)
    psf_mm = rng.uniform(0.5, 1.0)
    sig = (rng.uniform(0.3, 0.45), psf_mm / sy, psf_mm / sx)  # (z, y, x) in voxels
    hu = ndimage.gaussian_filter(hu, sig, truncate=2.5)
    # noise, slightly correlated in-plane
    sigma_n = rng.uniform(5, 25)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    corr = rng.uniform(0.0, 0.8)
    if corr > 0.05:
        noise = ndimage.gaussian_filter(noise, (0, corr, corr), truncate=2.0)
        noise /= max(float(noise.std()), 1e-6)
    hu += noise * sigma_n
    if rng.random() < 0.15:  # outside the reconstruction circle, as some scanners store it
        c = (np.array([ny, nx]) - 1) / 2
        yy, xx = np.ogrid[:ny, :nx]
        outside = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2) > (min(nx, ny) / 2) ** 2
        hu[:, outside] = -2048
    img = np.clip(np.round(hu), -2048, 3071).astype(np.int16)
    return img, label


def _coarse_texture(anat: Anatomy, grid: Grid, shape) -> np.ndarray:
    nz, ny, nx = shape
    step = max(1, int(round(6.0 / grid.spacing[0])))
    cj = np.arange(0, ny, step)
    ci = np.arange(0, nx, step)
    sx, sy, sz = grid.spacing
    J, I = np.meshgrid(cj * sy, ci * sx, indexing="ij")
    K = np.arange(nz, dtype=np.float32)[:, None, None] * sz
    p = [grid.origin[r] + grid.direction[r, 0] * I[None] + grid.direction[r, 1] * J[None]
         + grid.direction[r, 2] * K for r in range(3)]
    t = anat.texture(*[np.asarray(c, np.float32) for c in p]).astype(np.float32)
    zoom = (1, ny / t.shape[1], nx / t.shape[2])
    out = ndimage.zoom(t, zoom, order=1)
    return out[:, :ny, :nx]



"""The scanner side of a phantom: a random field of view and grid (spacing, size, direction,
origin), and the rendering of an anatomy onto it with its appearance: partial-volume blur,
texture, bias field and noise."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from app.synth.anatomy import Anatomy
from app.synth.appearance import Appearance
from app.synth.painting import paint
from app.synth.shapes import rotation

SIZES = {
    # name: (in-plane spacing range mm, slice spacing range mm, max in-plane matrix)
    "full": ((0.6, 1.0), (1.0, 5.0), 512),
    "moderate": ((1.2, 2.0), (2.0, 5.0), 512),
    "small": ((2.6, 3.6), (3.0, 5.0), 256),
}
FIELDS = ("liver", "abdomen", "abdomen_pelvis", "chest_abdomen_pelvis")
FIELD_P = (0.18, 0.4, 0.28, 0.14)
SLICE_SUBSAMPLES = np.array([-1 / 3, 0.0, 1 / 3], np.float32)   # of the slice spacing


@dataclass
class Grid:
    shape: tuple[int, int, int]      # (nx, ny, nz): ITK index order
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray            # 3x3, columns = index axes in LPS
    field: str = "abdomen"

    def image(self, array: np.ndarray) -> sitk.Image:
        """`array` ((z, y, x), as the generator draws it) as an image placed on this grid."""
        image = sitk.GetImageFromArray(array)
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction.flatten()])
        return image


def field_of_view(rng, anat: Anatomy) -> tuple[str, float, float]:
    """(kind, z_lo, z_hi): cropped around the liver, the abdomen, abdomen and pelvis, or chest to pelvis."""
    u, s = rng.uniform, anat.s
    kind = str(rng.choice(FIELDS, p=FIELD_P))
    z_hi = anat.zdR + (u(120, 220) if kind == "chest_abdomen_pelvis" else u(10, 60))
    if kind == "liver":
        return kind, anat.zdR - u(120, 160) * s, anat.zdR + u(10, 40)
    if kind == "abdomen":
        return kind, min(anat.zk) - u(60, 130) * s, z_hi
    return kind, anat.z_pelvis - u(170, 230) * s, z_hi   # down to the bladder and the hips


def random_grid(rng, anat: Anatomy, size: str = "full") -> Grid:
    (s_lo, s_hi), (z_lo, z_hi), nmax = SIZES[size]
    sp = float(rng.uniform(s_lo, s_hi))
    sz = float(rng.uniform(z_lo, z_hi))
    kind, zf_lo, zf_hi = field_of_view(rng, anat)
    half_w, half_d = anat.body_half_size
    body = max(2 * half_w, 2 * half_d + 40)
    # some scanners crop to the body, most leave air around it
    fov = body * (rng.uniform(0.85, 1.0) if rng.random() < 0.25 else rng.uniform(1.05, 1.3))
    n = int(min(nmax, np.ceil(fov / sp)))
    nz = int(np.ceil((zf_hi - zf_lo) / sz)) + 1
    # direction: axial slices; common storage flips, sometimes feet-first, a small tilt
    flips = [(1, 1), (-1, -1), (-1, 1), (1, -1)][int(rng.choice(4, p=[0.4, 0.4, 0.1, 0.1]))]
    fz = 1 if rng.random() < 0.8 else -1
    ang = np.deg2rad(rng.uniform(-8, 8)) if rng.random() < 0.3 else 0.0
    D = rotation(0, 0, ang) @ np.diag([flips[0], flips[1], fz]).astype(float)
    # patient position: off-centre in the bore
    centre = np.array([rng.uniform(-20, 20), rng.uniform(-10, 30), 0.5 * (zf_lo + zf_hi)])
    half = np.array([(n - 1) * sp, (n - 1) * sp, (nz - 1) * sz]) / 2
    origin = centre - D @ half
    return Grid((n, n, nz), (sp, sp, sz), origin, D, kind)


def _points(grid: Grid, i_mm, j_mm, k_mm) -> list[np.ndarray]:
    """Patient (x, y, z) of the grid points with index offsets (mm along each index axis)."""
    D, o = grid.direction, grid.origin
    return [np.asarray(o[r] + D[r, 0] * i_mm + D[r, 1] * j_mm + D[r, 2] * k_mm, np.float32) for r in range(3)]


def render(anat: Anatomy, look: Appearance, grid: Grid, rng, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Image (int16 HU) and full structure map (uint8), numpy order (z, y, x)."""
    nx, ny, nz = grid.shape
    sx, sy, sz = grid.spacing
    J, I = np.meshgrid(np.arange(ny, dtype=np.float32) * sy, np.arange(nx, dtype=np.float32) * sx, indexing="ij")
    structures = np.zeros((nz, ny, nx), np.uint8)
    hu = np.zeros((nz, ny, nx), np.float32)
    # a slice integrates the patient over its thickness (partial volume: an organ's oblique
    # surface fades over several voxels), while the label is the structure at the slice's centre,
    # where annotators trace it; thin slices need no sub-samples
    offsets = SLICE_SUBSAMPLES * sz if sz >= 1.5 else np.zeros(1, np.float32)
    for k0 in range(0, nz, chunk):
        K = (np.arange(k0, min(nz, k0 + chunk), dtype=np.float32) * sz)[:, None, None]
        for dz in offsets:
            p = [np.broadcast_to(c, (len(K), ny, nx)) for c in _points(grid, I[None], J[None], K + dz)]
            painted = paint(anat, *p)
            hu[k0:k0 + len(K)] += look.structure_hu[painted] / len(offsets)
            if dz == 0:
                structures[k0:k0 + len(K)] = painted
    tex, bias = _coarse_fields(look, grid, structures.shape)
    hu += np.where(look.textured[structures], tex * look.texture_amp, 0).astype(np.float32)
    hu += np.where(structures > 0, bias * look.bias_amp, 0).astype(np.float32)
    sig = (look.slice_sigma, look.psf_mm / sy, look.psf_mm / sx)  # (z, y, x) in voxels
    hu = ndimage.gaussian_filter(hu, sig, truncate=2.5)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    if look.noise_corr > 0.05:
        noise = ndimage.gaussian_filter(noise, (0, look.noise_corr, look.noise_corr), truncate=2.0)
        noise /= max(float(noise.std()), 1e-6)
    hu += noise * look.noise_hu
    if rng.random() < 0.15:  # outside the reconstruction circle, as some scanners store it
        c = (np.array([ny, nx]) - 1) / 2
        yy, xx = np.ogrid[:ny, :nx]
        hu[:, ((yy - c[0]) ** 2 + (xx - c[1]) ** 2) > (min(nx, ny) / 2) ** 2] = -2048
    return np.clip(np.round(hu), -2048, 3071).astype(np.int16), structures


def _coarse_fields(look: Appearance, grid: Grid, shape) -> tuple[np.ndarray, np.ndarray]:
    """Texture and bias field, evaluated on a 6 mm in-plane grid and upsampled (both are smooth)."""
    nz, ny, nx = shape
    step = max(1, int(round(6.0 / grid.spacing[0])))
    sx, sy, sz = grid.spacing
    J, I = np.meshgrid(np.arange(0, ny, step) * sy, np.arange(0, nx, step) * sx, indexing="ij")
    K = np.arange(nz, dtype=np.float32)[:, None, None] * sz
    p = _points(grid, I[None], J[None], K)
    out = []
    for field in (look.texture, look.bias):
        t = np.asarray(field(*p), np.float32)
        t = ndimage.zoom(t, (1, ny / t.shape[1], nx / t.shape[2]), order=1)[:, :ny, :nx]
        out.append(t)
    return out[0], out[1]

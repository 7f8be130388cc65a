"""Building blocks of the phantoms: tissue classes with their HU ranges, and the smooth
shapes (ellipsoids, tubes, low-frequency surface waves) the anatomy is made of."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- tissues
AIR, SUBFAT, MUSCLE, VFAT, CORTEX, MARROW, DISC, CSF, LUNG, ARTERY, VEIN, BOWEL, GAS, ORAL, \
    STOMACH_WALL, FLUID, GALL, HEART, LIVER, SPLEEN, KCORTEX, KMEDULLA, PANCREAS, TABLE, \
    ADRENAL, FAECES, URINE, CYST, METASTASIS, HCC, CALCIFIED, RENAL_TUMOUR, NECROSIS, \
    PANCREAS_MASS, INFARCT, MASS, NODE, ASCITES = range(38)
N_TISSUES = 38

# Textured soft tissues (low-frequency intensity variation).
TEXTURED = np.zeros(N_TISSUES, bool)
TEXTURED[[MUSCLE, BOWEL, STOMACH_WALL, HEART, LIVER, SPLEEN, KCORTEX, KMEDULLA, PANCREAS, ADRENAL,
          FAECES, METASTASIS, HCC, RENAL_TUMOUR, PANCREAS_MASS, MASS]] = True

# HU ranges per contrast phase: (low, high) for the per-case mean. Sources: FLARE21 notes
# (literature values, portal venous / native), plus common late-arterial values.
HU_RANGES = {
    "native": {
        SUBFAT: (-120, -85), VFAT: (-115, -80), MUSCLE: (35, 58), LIVER: (45, 68),
        SPLEEN: (35, 55), PANCREAS: (20, 50), KCORTEX: (20, 42), KMEDULLA: (16, 36),
        ARTERY: (30, 50), VEIN: (30, 50), BOWEL: (10, 45), STOMACH_WALL: (25, 50),
        HEART: (30, 50), ADRENAL: (5, 35), URINE: (0, 20),
        METASTASIS: (20, 45), HCC: (25, 48), RENAL_TUMOUR: (25, 45), PANCREAS_MASS: (25, 45),
        INFARCT: (20, 40), MASS: (25, 50), NODE: (30, 50),
    },
    "arterial": {
        SUBFAT: (-120, -85), VFAT: (-115, -80), MUSCLE: (45, 62), LIVER: (65, 90),
        SPLEEN: (100, 150), PANCREAS: (95, 130), KCORTEX: (170, 240), KMEDULLA: (60, 100),
        ARTERY: (230, 350), VEIN: (80, 130), BOWEL: (40, 90), STOMACH_WALL: (70, 110),
        HEART: (180, 300), ADRENAL: (50, 90), URINE: (0, 20),
        METASTASIS: (35, 70), HCC: (100, 160), RENAL_TUMOUR: (90, 200), PANCREAS_MASS: (40, 75),
        INFARCT: (25, 50), MASS: (35, 75), NODE: (50, 80),
    },
    "portal": {
        SUBFAT: (-120, -85), VFAT: (-115, -80), MUSCLE: (50, 68), LIVER: (95, 125),
        SPLEEN: (105, 135), PANCREAS: (85, 112), KCORTEX: (150, 230), KMEDULLA: (120, 200),
        ARTERY: (140, 200), VEIN: (140, 200), BOWEL: (55, 105), STOMACH_WALL: (70, 110),
        HEART: (130, 180), ADRENAL: (50, 80), URINE: (0, 25),
        METASTASIS: (40, 80), HCC: (70, 100), RENAL_TUMOUR: (80, 140), PANCREAS_MASS: (45, 80),
        INFARCT: (25, 50), MASS: (40, 90), NODE: (60, 95),
    },
    # late/excretory phase: nephrogram homogeneous, contrast in the collecting system
    "delayed": {
        SUBFAT: (-120, -85), VFAT: (-115, -80), MUSCLE: (45, 62), LIVER: (70, 100),
        SPLEEN: (70, 100), PANCREAS: (60, 90), KCORTEX: (120, 180), KMEDULLA: (120, 190),
        ARTERY: (90, 140), VEIN: (90, 140), BOWEL: (40, 80), STOMACH_WALL: (50, 90),
        HEART: (90, 140), ADRENAL: (40, 70), URINE: (150, 700),
        METASTASIS: (45, 80), HCC: (55, 85), RENAL_TUMOUR: (60, 100), PANCREAS_MASS: (45, 80),
        INFARCT: (30, 55), MASS: (40, 80), NODE: (55, 85),
    },
}
HU_FIXED = {
    AIR: (-1010, -990), CORTEX: (600, 950), MARROW: (140, 300), DISC: (70, 110), CSF: (0, 20),
    LUNG: (-880, -800), GAS: (-1000, -900), ORAL: (180, 400), FLUID: (0, 20), GALL: (0, 25),
    TABLE: (-400, -150), FAECES: (-60, 60),
    # lesions and collections whose attenuation does not follow the contrast phase: simple cysts
    # 0-20 HU, calcification, necrosis, ascites (simple fluid, slightly denser than a cyst)
    CYST: (-5, 20), CALCIFIED: (250, 900), NECROSIS: (10, 30), ASCITES: (0, 30),
}


# ----------------------------------------------------------------------------- geometry
def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, y, z (applied x, then y, then z)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Wave:
    """Sum of random plane waves: a cheap smooth random field."""
    k: np.ndarray      # (n, 3) wave vectors, rad/mm
    phase: np.ndarray  # (n,)
    amp: np.ndarray    # (n,) or (n, 3)

    @classmethod
    def random(cls, rng, n, wavelength, amp, vector=False):
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength, size=n)
        k = dirs * (2 * np.pi / lam)[:, None]
        a = rng.normal(size=(n, 3)) if vector else rng.uniform(0.5, 1.0, size=n)
        a = a * amp / (np.sqrt(n) if vector else n)
        return cls(k.astype(np.float32), rng.uniform(0, 2 * np.pi, n).astype(np.float32),
                   np.asarray(a, np.float32))

    def __call__(self, x, y, z):
        out = None
        for i in range(len(self.phase)):
            s = np.sin(self.k[i, 0] * x + self.k[i, 1] * y + self.k[i, 2] * z + self.phase[i])
            if self.amp.ndim == 2:
                term = [s * self.amp[i, j] for j in range(3)]
                out = term if out is None else [o + t for o, t in zip(out, term)]
            else:
                out = s * self.amp[i] if out is None else out + s * self.amp[i]
        return out


@dataclass
class Ellipsoid:
    """Implicit ellipsoid with a rotation and a smooth surface perturbation.

    value(p) < 0 inside; about (distance / mean radius) near the surface.
    """
    c: np.ndarray
    r: np.ndarray
    R: np.ndarray
    wave: Wave | None = None

    def value(self, x, y, z):
        dx, dy, dz = x - self.c[0], y - self.c[1], z - self.c[2]
        Rt = self.R.T.astype(np.float32)
        lx = (Rt[0, 0] * dx + Rt[0, 1] * dy + Rt[0, 2] * dz) / self.r[0]
        ly = (Rt[1, 0] * dx + Rt[1, 1] * dy + Rt[1, 2] * dz) / self.r[1]
        lz = (Rt[2, 0] * dx + Rt[2, 1] * dy + Rt[2, 2] * dz) / self.r[2]
        v = np.sqrt(lx * lx + ly * ly + lz * lz) - 1.0
        if self.wave is not None:
            v = v + self.wave(dx, dy, dz)
        return v

    def bbox(self, margin=0.0):
        ext = np.abs(self.R) @ self.r * 1.25 + margin
        return self.c - ext, self.c + ext


@dataclass
class Trimmed:
    """A shape cut by a plane: inside only where it is inside and below the plane's kept side.

    value = max(shape value, signed distance to the plane / scale), so the cut face is as sharp
    as the shape's own surface and keeps the shape's value scale (distance / radius).
    """
    shape: Ellipsoid
    point: np.ndarray    # a point on the plane
    normal: np.ndarray   # unit vector pointing away from the kept side
    scale: float

    @property
    def c(self):
        return self.shape.c

    def value(self, x, y, z):
        n, p = self.normal, self.point
        side = ((x - p[0]) * n[0] + (y - p[1]) * n[1] + (z - p[2]) * n[2]) / self.scale
        return np.maximum(self.shape.value(x, y, z), side)

    def bbox(self, margin=0.0):
        return self.shape.bbox(margin)


@dataclass
class Tube:
    """Capsule chain along a polyline with radii varying linearly along each segment.

    `height` > 1 makes a ribbon: the cross-section reaches `height` times the radius up and
    down (patient z) and the radius across, as the pancreas is taller than it is thick.
    """
    pts: np.ndarray    # (n, 3)
    radii: np.ndarray  # (n,) across (in the axial plane)
    wave: Wave | None = None
    height: float = 1.0

    def value(self, x, y, z):
        best = None
        for a, b, ra, rb in zip(self.pts[:-1], self.pts[1:], self.radii[:-1], self.radii[1:]):
            ab = (b - a).astype(np.float32)
            L2 = float(ab @ ab)
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / L2
            t = np.clip(t, 0.0, 1.0)
            px, py, pz = x - (a[0] + t * ab[0]), y - (a[1] + t * ab[1]), z - (a[2] + t * ab[2])
            if self.height != 1.0:
                pz = pz / self.height
            d = np.sqrt(px * px + py * py + pz * pz) / (ra + t * (rb - ra)) - 1.0
            best = d if best is None else np.minimum(best, d)
        if self.wave is not None:
            best = best + self.wave(x, y, z)
        return best

    def bbox(self, margin=0.0):
        r = self.radii.max() * 1.3 * np.array([1.0, 1.0, max(1.0, self.height)]) + margin
        return self.pts.min(0) - r, self.pts.max(0) + r


def smooth_curve(ctrl: np.ndarray, rad: np.ndarray, n: int = 16):
    """Catmull-Rom-like densification of control points (keeps ends)."""
    t = np.linspace(0, len(ctrl) - 1, n)
    idx = np.arange(len(ctrl))
    from scipy.interpolate import CubicSpline  # light, local import
    cs = CubicSpline(idx, ctrl, axis=0, bc_type="natural")
    cr = np.interp(t, idx, rad)
    return cs(t), cr


# ----------------------------------------------------------------------------- painting canvas
FULL_CHUNK = (slice(None),) * 3


class Canvas:
    """Tissue ids being painted at one chunk of (deformed) patient points."""

    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z
        self.T = np.zeros(x.shape, np.uint8)
        self.xs, self.ys, self.zs = x[:, ::4, ::4], y[:, ::4, ::4], z[:, ::4, ::4]

    def box(self, struct):
        """Index sub-box of this chunk that can hold the structure (None: nowhere)."""
        xs, ys, zs = self.xs, self.ys, self.zs
        nzc, nyc, nxc = self.x.shape
        lo, hi = struct.bbox(margin=8.0)
        m = (xs > lo[0]) & (xs < hi[0]) & (ys > lo[1]) & (ys < hi[1]) & (zs > lo[2]) & (zs < hi[2])
        if not m.any():
            return None
        kz = np.flatnonzero(m.any((1, 2)))
        jy = np.flatnonzero(m.any((0, 2)))
        ix = np.flatnonzero(m.any((0, 1)))
        return (slice(kz[0], kz[-1] + 1), slice(max(0, 4 * jy[0] - 4), min(nyc, 4 * jy[-1] + 5)),
                slice(max(0, 4 * ix[0] - 4), min(nxc, 4 * ix[-1] + 5)))

    def val(self, struct):
        """(sub-box, structure's implicit value there), or (None, None) if it misses this chunk."""
        sl = self.box(struct)
        if sl is None:
            return None, None
        return sl, struct.value(self.x[sl], self.y[sl], self.z[sl])

    def put(self, sl, mask, tissue, where=None):
        """Write tissue where mask (given on sub-box sl) holds, optionally only inside where."""
        if sl is None:
            return
        m = mask if where is None else (mask & where[sl])
        self.T[sl][m] = tissue

    def putf(self, mask, tissue, where=None):
        """put() on the whole chunk."""
        self.put(FULL_CHUNK, mask, tissue, where)

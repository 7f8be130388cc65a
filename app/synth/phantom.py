"""Synthetic abdominal CT phantoms with FLARE21 labels.

Every phantom is an analytic anatomy in patient coordinates (ITK/DICOM LPS, millimetres:
+x patient's left, +y posterior, +z superior), evaluated on a randomly chosen scanner grid:

- body outline with subcutaneous fat, an abdominal muscle wall and paraspinal muscles;
- spine (cortical and cancellous bone, discs, canal, posterior elements), lower ribs;
- lung bases above both hemidiaphragm domes, heart above the midline;
- liver under the right dome, spleen left and posterior, two kidneys beside the spine (right
  lower than left) with medulla and sinus fat, an elongated pancreas from the duodenal C-loop
  to the splenic hilum, stomach, gallbladder, bowel loops, aorta, IVC, portal/splenic veins,
  psoas muscles and a scanner table.

Every organ gets its own random pose, scale and low-frequency surface perturbation, and the
whole body a smooth random displacement field. Attenuation is drawn per case for a contrast
phase (native, late arterial, portal venous) from literature ranges, so organs overlap in HU as
real soft tissue does; a segmenter has to use shape and position. The image then gets a slice
profile / point-spread blur (partial volume), smooth texture and noise.

Labels: 0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas (app.labels).
"""
from __future__ import annotations


import numpy as np

from app.synth.scanner import random_grid, render
from app.synth.shapes import (  # noqa: F401  (tissue names are part of this module's interface)
    Canvas,
    HU_FIXED, HU_RANGES,
    AIR, ARTERY, BOWEL, CORTEX, CSF, DISC,
    Ellipsoid, FLUID, GALL, GAS, HEART, KCORTEX,
    KMEDULLA, LIVER, LUNG, MARROW, MUSCLE, N_TISSUES,
    ORAL, PANCREAS, SPLEEN, STOMACH_WALL, SUBFAT, TABLE,
    Tube, VEIN, VFAT, Wave, rotation,
    smooth_curve,
)


# ----------------------------------------------------------------------------- anatomy
class Anatomy:
    """One random patient: all structures and tissue attenuations."""

    def __init__(self, rng: np.random.Generator):
        u = rng.uniform
        self.rng = rng
        s = u(0.88, 1.12)                      # overall size
        self.s = s
        self.a = 150 * s * u(0.9, 1.15)        # body half-width (LR)
        self.b = 110 * s * u(0.85, 1.12)       # body half-depth (AP)
        self.fat = u(8, 35) * s                # subcutaneous fat thickness
        self.wall = u(6, 13)                   # muscle wall thickness
        self.yv = 0.42 * self.b                # vertebral body centre (posterior)
        self.vr = np.array([21, 17]) * s * u(0.9, 1.1)
        # global smooth deformation
        self.deform = Wave.random(rng, 4, (160, 320), u(4, 9), vector=True)
        self.body_wave = Wave.random(rng, 3, (150, 300), 0.04)

        # diaphragm domes (z of the top of each dome), organs hang below
        self.zdR = u(130, 170) * s
        self.zdL = self.zdR - u(5, 25)
        self.domeR_c = np.array([-0.45 * self.a, -0.05 * self.b])
        self.domeL_c = np.array([0.45 * self.a, 0.0])
        self.dome_k = u(140, 220)              # curvature: z drop = r^2 / dome_k

        # kidneys
        zkL = u(-15, 20) * s
        zkR = zkL - u(8, 30)
        self.zk = (zkR, zkL)
        self.z_lo = min(zkR, zkL) - u(60, 160) * s   # lower end of the abdomen shown
        self.z_hi = self.zdR + u(15, 70)

        self.phase = rng.choice(["native", "arterial", "portal"], p=[0.35, 0.15, 0.5])
        offset = u(-8, 8)
        self.hu = np.zeros(N_TISSUES, np.float32)
        for t, (lo, hi) in {**HU_FIXED, **HU_RANGES[self.phase]}.items():
            self.hu[t] = u(lo, hi) + (offset if t not in (AIR, GAS) else 0.0)
        self.texture_amp = u(3, 9)
        self.texture = Wave.random(rng, 6, (15, 60), 1.0)
        self._build(rng)

    # -------------------------------------------------------------- helpers
    def _ell(self, rng, c, r, jitter_c=6.0, jitter_r=0.12, rot=(0, 0, 0), rot_jit=0.15,
             wave_amp=0.08, wave_len=(50, 110)):
        c = np.asarray(c, float) + rng.normal(0, jitter_c, 3)
        r = np.asarray(r, float) * rng.uniform(1 - jitter_r, 1 + jitter_r, 3)
        R = rotation(*(np.asarray(rot) + rng.normal(0, rot_jit, 3)))
        wave = Wave.random(rng, 3, wave_len, wave_amp) if wave_amp else None
        return Ellipsoid(c.astype(np.float32), r.astype(np.float32), R, wave)

    def _build(self, rng):
        """Draw every structure; the order of the random draws defines the data set."""
        self._build_solid_organs(rng)
        self._build_kidneys(rng)
        ctrl = self._build_pancreas_and_duodenum(rng)
        self._build_vessels(ctrl)
        self._build_gut(rng)
        self._build_chest_wall(rng)

    def _build_solid_organs(self, rng):
        """Liver (two lobes, sometimes a Riedel lobe), gallbladder and spleen under the domes."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        # --- liver: right lobe under the right dome, left lobe across the midline anteriorly
        ztop = self.zdR + 8
        rl = np.array([78, 72, 68]) * s * u(0.9, 1.08)
        self.liver = [
            self._ell(rng, (-0.42 * a, -0.02 * b, ztop - rl[2] * 0.95), rl, rot=(0, 0.12, 0.2)),
            self._ell(rng, (-0.05 * a, -0.42 * b, ztop - 55 * s), np.array([62, 32, 38]) * s,
                      rot=(0, 0, 0.25)),
        ]
        if rng.random() < 0.5:  # Riedel-like inferior extension
            self.liver.append(self._ell(rng, (-0.55 * a, -0.1 * b, ztop - rl[2] * 1.6),
                                        np.array([38, 35, 50]) * s))
        lc = self.liver[0].c
        self.gall = (self._ell(rng, (lc[0] + 28 * s, -0.45 * b, lc[2] - 45 * s),
                               np.array([14, 14, 34]) * s, rot=(0.5, 0, 0), wave_amp=0.05)
                     if rng.random() < 0.7 else None)
        # --- spleen: left, posterior, under the left dome; long axis along the ribs
        zsp = self.zdL - u(45, 65) * s
        self.spleen = [self._ell(rng, (0.62 * a, 0.40 * b, zsp), np.array([22, 55, 46]) * s * u(0.85, 1.15),
                                 rot=(0.25, 0, -0.55), wave_amp=0.1)]

    def _build_kidneys(self, rng):
        """Kidneys beside the spine (right lower), upper poles medial and posterior; medulla, sinus fat."""
        s, yv = self.s, self.yv
        u = rng.uniform
        self.kidneys, self.medulla, self.sinus = [], [], []
        for sgn, zk in ((-1, self.zk[0]), (1, self.zk[1])):
            c = (sgn * (55 + 12 * s) * s, yv + 4, zk)
            r = np.array([24, 29, 54]) * s * u(0.88, 1.1)
            rot = (-0.25, sgn * 0.22, sgn * -0.45)
            k = self._ell(rng, c, r, jitter_c=5, rot=rot, rot_jit=0.1, wave_amp=0.04)
            self.kidneys.append(k)
            self.medulla.append(Ellipsoid(k.c, k.r * np.array([0.58, 0.6, 0.75], np.float32), k.R, None))
            # sinus fat on the medial-anterior side
            med = k.R @ np.array([-sgn * 1.0, -0.6, 0.0])
            med /= np.linalg.norm(med)
            sc = k.c + (med * k.r[0] * 0.85).astype(np.float32)
            self.sinus.append(Ellipsoid(sc.astype(np.float32), (k.r * np.array([0.45, 0.4, 0.38])).astype(np.float32),
                                        k.R, None))

    def _build_pancreas_and_duodenum(self, rng):
        """Pancreas from the duodenal C-loop to the splenic hilum, and the C-loop itself.

        Returns the pancreas control points (head to tail), which place the portal and splenic veins.
        """
        s, a, yv = self.s, self.a, self.yv
        u = rng.uniform
        # --- pancreas: head in the duodenal C-loop, body anterior to aorta, tail at splenic hilum
        zp = max(self.zk) + u(5, 35) * s
        ctrl = np.array([
            [-0.26 * a, yv - 62 * s, zp - 22 * s],
            [-0.12 * a, yv - 75 * s, zp - 6 * s],
            [0.05 * a, yv - 80 * s, zp + 2 * s],
            [0.25 * a, yv - 62 * s, zp + 12 * s],
            [0.45 * a, yv - 28 * s, zp + 24 * s],
        ]) + rng.normal(0, 5, (5, 3))
        rad = np.array([17, 13, 11, 10.5, 9]) * s * u(0.85, 1.15)
        pts, prad = smooth_curve(ctrl, rad, 12)
        self.pancreas = Tube(pts.astype(np.float32), prad.astype(np.float32), Wave.random(rng, 3, (30, 70), 0.08))
        # duodenum: C-loop lateral to the head
        head = ctrl[0]
        dctrl = np.array([[head[0] + 10, head[1] - 25, head[2] + 35], [head[0] - 28, head[1] - 5, head[2] + 15],
                          [head[0] - 30, head[1] + 5, head[2] - 15], [head[0] + 5, head[1] - 8, head[2] - 40],
                          [head[0] + 45, head[1] - 10, head[2] - 42]])
        dp, dr = smooth_curve(dctrl, np.full(5, 11.0 * s), 10)
        self.duodenum = Tube(dp.astype(np.float32), dr.astype(np.float32), None)
        return ctrl

    def _build_vessels(self, ctrl):
        """Aorta, IVC, portal vein (from the SMV behind the pancreas neck) and splenic vein; no random draws."""
        s, a, yv = self.s, self.a, self.yv
        lc = self.liver[0].c
        self.aorta = Tube(np.array([[0.08 * a, yv - 30 * s, self.z_lo - 20], [0.07 * a, yv - 32 * s, self.z_hi + 20]],
                                   np.float32), np.array([11, 11.5], np.float32) * s)
        self.ivc = Tube(np.array([[-0.13 * a, yv - 28 * s, self.z_lo - 20], [-0.16 * a, yv - 40 * s, self.zdR - 20]],
                                 np.float32), np.array([11, 12], np.float32) * s)
        smv_top = ctrl[1] + np.array([8, 14, 0])
        self.portal = Tube(np.array([[smv_top[0], smv_top[1], self.z_lo], smv_top,
                                     [lc[0] + 30, lc[1] + 20, lc[2] - 15]], np.float32),
                           np.array([5, 7, 7], np.float32) * s)
        spl_c = self.spleen[0].c
        self.splenic_v = Tube(np.stack([smv_top, ctrl[3] + np.array([0, 12, 0]), spl_c - np.array([15, 0, 5])]).astype(np.float32),
                              np.array([5, 4.5, 4.5], np.float32) * s)

    def _build_gut(self, rng):
        """Stomach (content, optional gas) and bowel loops with their contents."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        # --- stomach: left upper quadrant, anterior to the pancreas tail
        self.stomach = self._ell(rng, (0.3 * a, -0.3 * b, self.zdL - 70 * s), np.array([45, 34, 58]) * s,
                                 rot=(0.4, 0.2, 0.5), wave_amp=0.1)
        self.stomach_content = rng.choice([FLUID, ORAL, BOWEL], p=[0.6, 0.2, 0.2])
        self.stomach_gas = rng.random() < 0.7
        # --- bowel loops (mostly below the kidneys and anterior)
        self.bowel = []
        for _ in range(int(rng.integers(14, 26))):
            c = (u(-0.7, 0.7) * a, u(-0.75, 0.2) * b, u(self.z_lo - 20, max(self.zk) + 30))
            rr = u(12, 26) * s
            self.bowel.append((self._ell(rng, c, (rr, rr * u(0.6, 1.0), rr * u(1, 2.5)), jitter_c=0,
                                         rot=(u(0, 3), u(0, 3), u(0, 3)), wave_amp=0.1, wave_len=(30, 60)),
                               rng.choice([BOWEL, GAS, ORAL, FLUID], p=[0.55, 0.2, 0.1, 0.15])))

    def _build_chest_wall(self, rng):
        """Lower ribs, the heart above the domes and the gap to the scanner table."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        # --- ribs
        self.rib_z0 = self.zdR - u(130, 170) * s
        self.n_ribs = 7
        self.rib_pitch = u(24, 32) * s
        self.rib_slope = u(35, 60)
        self.heart = self._ell(rng, (0.05 * a, -0.35 * b, self.zdR + 65 * s), np.array([70, 55, 60]) * s)
        self.tbl_gap = u(2, 25)

    # -------------------------------------------------------------- rendering
    def dome(self, x, y, left: bool):
        c = self.domeL_c if left else self.domeR_c
        zd = self.zdL if left else self.zdR
        return zd - ((x - c[0]) ** 2 + (y - c[1]) ** 2) / self.dome_k

    def paint(self, x, y, z):
        """Tissue ids at patient points (arrays of one shape). Returns uint8 array."""
        d = self.deform(x, y, z)
        cv = Canvas(x + d[0], y + d[1], z + d[2])
        # later writes overwrite earlier ones: keep this order
        rho, mean_r, inner, cavity = self._paint_body(cv)
        self._paint_back_muscles(cv, inner, cavity)
        self._paint_hollow_organs(cv, cavity)
        self._paint_vessels_and_pancreas(cv, cavity)
        self._paint_solid_organs(cv, cavity)
        rv = self._paint_spine(cv)
        ring = self._paint_ribs(cv, rho, mean_r)
        self._paint_chest(cv, rho, ring, mean_r, rv)
        return cv.T

    def _paint_body(self, cv):
        """Body outline (subcutaneous fat, muscle wall, visceral-fat cavity) and the table under it.

        Returns (rho, mean_r, inner, cavity): normalised body radius, mean body radius in mm, and the
        masks inside the subcutaneous fat and inside the muscle wall.
        """
        x, y, z, T = cv.x, cv.y, cv.z, cv.T
        a, b = self.a, self.b
        # body ellipse, flatter at the back
        bb = np.where(y > 0, b * 0.92, b)
        rho = np.sqrt((x / a) ** 2 + (y / bb) ** 2) + self.body_wave(x, y, z)
        mean_r = 0.5 * (a + b)
        body = rho < 1.0
        T[body] = SUBFAT
        inner = rho < 1.0 - self.fat / mean_r
        T[inner] = MUSCLE
        cavity = rho < 1.0 - (self.fat + self.wall) / mean_r
        T[cavity] = VFAT
        # table under the patient
        ty = b + self.tbl_gap
        T[(y > ty) & (y < ty + 12) & (np.abs(x) < 230)] = TABLE
        return rho, mean_r, inner, cavity

    def _paint_back_muscles(self, cv, inner, cavity):
        """Paraspinal muscles (behind the spine) and psoas (beside it, growing downwards)."""
        x, y, z, T = cv.x, cv.y, cv.z, cv.T
        yv, s = self.yv, self.s
        para = ((np.abs(x) - 38 * s) / (32 * s)) ** 2 + ((y - (yv + 45 * s)) / (28 * s)) ** 2 < 1
        T[para & inner] = MUSCLE
        pr = np.clip(6 + 0.18 * (max(self.zk) + 40 - z), 0, 28) * s
        psoas = ((np.abs(x) - (32 * s + 0.6 * pr)) ** 2 + (y - yv) ** 2) < pr ** 2
        T[psoas & cavity] = MUSCLE

    def _paint_hollow_organs(self, cv, cavity):
        """Bowel loops, duodenum and stomach with their contents (and stomach gas anteriorly)."""
        val, put = cv.val, cv.put
        for ell, content in self.bowel:
            sl, v = val(ell)
            if sl is not None:
                put(sl, v < 0, BOWEL, cavity)
                if content != BOWEL:
                    put(sl, v < -0.25, content, cavity)
        sl, v = val(self.duodenum)
        if sl is not None:
            put(sl, v < 0, BOWEL, cavity)
            put(sl, v < -0.45, FLUID if self.stomach_content != ORAL else ORAL, cavity)
        sl, v = val(self.stomach)
        if sl is not None:
            put(sl, v < 0, STOMACH_WALL, cavity)
            put(sl, v < -0.12, self.stomach_content, cavity)
            if self.stomach_gas:
                put(sl, (v < -0.12) & (cv.y[sl] < self.stomach.c[1] - 0.35 * self.stomach.r[1]), GAS, cavity)

    def _paint_vessels_and_pancreas(self, cv, cavity):
        """Aorta and IVC (also outside the cavity), pancreas, portal and splenic veins."""
        for struct, tissue, where in ((self.aorta, ARTERY, None), (self.ivc, VEIN, None),
                                      (self.pancreas, PANCREAS, cavity), (self.portal, VEIN, cavity),
                                      (self.splenic_v, VEIN, cavity)):
            sl, v = cv.val(struct)
            if sl is not None:
                cv.put(sl, v < 0, tissue, where)

    def _paint_solid_organs(self, cv, cavity):
        """Kidneys (cortex, medulla, sinus fat), spleen, liver and gallbladder."""
        val, put = cv.val, cv.put
        for k, m, sn in zip(self.kidneys, self.medulla, self.sinus):
            for struct, tissue in ((k, KCORTEX), (m, KMEDULLA), (sn, VFAT)):
                sl, v = val(struct)
                if sl is not None:
                    put(sl, v < 0, tissue, cavity)
        for e in self.spleen:
            sl, v = val(e)
            if sl is not None:
                put(sl, v < 0, SPLEEN, cavity)
        for e in self.liver:
            sl, v = val(e)
            if sl is not None:
                put(sl, v < 0, LIVER, cavity)
        if self.gall is not None:
            sl, v = val(self.gall)
            if sl is not None:
                put(sl, v < 0, GALL, cavity)

    def _paint_spine(self, cv):
        """Vertebral bodies with discs, canal, posterior elements. Returns the vertebral-body radius rv."""
        x, y, z, putf = cv.x, cv.y, cv.z, cv.putf
        yv, s = self.yv, self.s
        vx, vy = self.vr
        rv = np.sqrt((x / vx) ** 2 + ((y - yv) / vy) ** 2)
        level = np.mod(z, 34 * s)
        putf(rv < 1.0, CORTEX)
        putf(rv < 0.86, MARROW)
        putf((rv < 1.0) & (level < 7 * s), DISC)
        cy = yv + vy + 11 * s
        rc = np.sqrt(x ** 2 + (y - cy) ** 2)
        putf((rc < 16 * s) & (rc > 9 * s) & (level > 9 * s), CORTEX)
        putf((np.abs(x) < 4 * s) & (y > cy) & (y < cy + 40 * s) & (level > 12 * s), CORTEX)
        putf(rc < 9 * s, CSF)
        return rv

    def _paint_ribs(self, cv, rho, mean_r):
        """Ribs: bands just inside the muscle wall, descending anteriorly. Returns the rib ring radius."""
        x, y, z, s = cv.x, cv.y, cv.z, self.s
        ring = 1.0 - (self.fat + self.wall * 0.5) / mean_r
        phi_back = np.abs(np.arctan2(x, y))         # 0 at the back, pi at the front
        zr = z - self.rib_z0 + self.rib_slope * phi_back / np.pi
        kk = np.round(zr / self.rib_pitch)
        near = (np.abs(zr - kk * self.rib_pitch) < 5.5 * s) & (kk >= 0) & (kk < self.n_ribs)
        near &= (np.abs(rho - ring) * mean_r < 5.5 * s) & (phi_back > 0.25) & (phi_back < 2.3 - 0.08 * kk)
        cv.putf(near, CORTEX)
        return ring

    def _paint_chest(self, cv, rho, ring, mean_r, rv):
        """Lungs above the domes (inside the rib cage, outside the mediastinum), heart."""
        x, y, z, s = cv.x, cv.y, cv.z, self.s
        chest = rho < ring - 4 / mean_r
        lungR = chest & (z > self.dome(x, y, False)) & (x < -22 * s)
        lungL = chest & (z > self.dome(x, y, True)) & (x > 22 * s)
        media = (np.abs(x) < 45 * s) & (y > self.yv - 5)
        cv.putf((lungR | lungL) & ~media & (rv > 1.05), LUNG)
        cv.putf((self.heart.value(x, y, z) < 0) & (z > self.dome(x, y, True) + 5), HEART, chest)


def make_case(seed: int, index: int, size: str = "full"):
    """Build one phantom. Returns (image int16 zyx, label uint8 zyx, Grid, info dict)."""
    rng = np.random.default_rng([int(seed), int(index)])
    anat = Anatomy(rng)
    grid = random_grid(rng, anat, size)
    img, lab = render(anat, grid, rng)
    info = {"phase": str(anat.phase), "shape_xyz": list(grid.shape), "spacing": list(grid.spacing),
            "direction": [float(v) for v in grid.direction.flatten()]}
    return img, lab, grid, info

"""One random patient's anatomy: where every structure lies, in patient coordinates.

ITK/DICOM LPS millimetres: +x patient's left, +y posterior, +z superior. z = 0 lies near the
renal hila (L1-L2), so the organs keep their true levels relative to each other:
- kidneys at about T12-L3, about 11 x 6 x 3 cm, the right one lower, upper poles medial and
  posterior, hila facing anteromedially, with adrenals above them;
- liver dome under the right hemidiaphragm, its left lobe across the midline, the right lobe a
  wedge whose inferior surface rises from the lateral tip to the porta;
- spleen posterolateral on the left under the lower ribs;
- pancreas head in the duodenal C-loop, body across the aorta and SMA, tail to the splenic hilum;
- body habitus (lean to obese) sets the subcutaneous fat, how many bowel loops share the
  visceral fat, and the fat planes around the pancreas and kidneys; mesenteric vessels run
  through that fat;
- stomach, duodenum, a colon frame with faeces and gas, small-bowel loops, vessels, spine with
  discs at fixed levels and the back's muscle behind it, ribs, lung bases, and the pelvis (iliac
  wings, sacrum, femoral heads, gluteal muscles, bladder, rectum) when the field reaches them.

Every structure gets a random pose, size and smooth surface perturbation; the order of the random
draws defines the data set. Last, app.synth.pathology draws the patient's variants, the organs'
own vessels, lesions and distractors.
"""
from __future__ import annotations

import numpy as np

from app.synth.pathology import draw_pathology
from app.synth.shapes import Ellipsoid, Trimmed, Tube, Wave, rotation, smooth_curve

CAVITY_BACK = 0.92   # the cavity's half-depth behind the centre, relative to in front: flatter at the back


class Anatomy:
    """Geometry of one random patient (no attenuation: see app.synth.appearance)."""

    def __init__(self, rng: np.random.Generator, sick: bool = False):
        u = rng.uniform
        self.sick = sick                       # lesions in every organ, distractors often (measuring)
        self.rng = rng
        s = u(0.88, 1.12)                      # overall size
        self.s = s
        # the abdominal cavity (inside the muscle wall) sets the organ layout; fat and wall go outside it
        # body habitus, lean (0) to obese (1): it sets the subcutaneous fat, the visceral fat
        # between the loops and around the organs, and so how tightly the viscera are packed;
        # visceral fat widens the cavity itself
        self.habitus = u(0, 1)
        self.cav_a = 123 * s * u(0.93, 1.12) * (1 + 0.1 * self.habitus)   # cavity half-width (LR)
        self.cav_b = 90 * s * u(0.9, 1.12) * (1 + 0.12 * self.habitus)    # cavity half-depth (AP)
        self.a, self.b = 1.22 * self.cav_a, 1.22 * self.cav_b   # layout scale of the organ positions
        self.fat = (6 + 39 * float(np.clip(self.habitus + rng.normal(0, 0.15), 0, 1))) * s
        # fat planes around the pancreas and the kidneys (peripancreatic, perirenal), in the
        # organ's value units (about distance / radius): thin in lean patients, wide in obese ones
        self.peripancreatic_fat = 0.1 + 0.35 * self.habitus
        self.perirenal_fat = 0.05 + 0.25 * self.habitus
        self.wall = u(6, 13)                   # muscle wall thickness
        self.yv = 0.42 * self.b                # vertebral body centre (posterior)
        self.vr = np.array([21, 17]) * s * u(0.9, 1.1)
        self.vert_pitch = u(30, 36) * s        # one vertebra and its disc
        self.disc_z = u(-8, 8)                 # the L1/L2 disc lies near the hila
        self.deform = Wave.random(rng, 4, (160, 320), u(4, 9), vector=True)
        self.body_wave = Wave.random(rng, 3, (150, 300), 0.04)
        # kidneys: centres near z = 0, the right one lower
        zkL = u(-5, 18) * s
        self.zk = (zkL - u(5, 25), zkL)
        # diaphragm domes (z of the top of each dome): the liver dome about 9-13 cm above the hila
        self.zdR = u(85, 125) * s
        self.zdL = self.zdR - u(5, 25)
        self.domeR_c = np.array([-0.45 * self.a, -0.05 * self.b])
        self.domeL_c = np.array([0.45 * self.a, 0.0])
        self.dome_k = u(140, 220)              # curvature: z drop = r^2 / dome_k
        self.z_pelvis = min(self.zk) - u(85, 110) * s   # iliac crest, about L4
        self._build(rng)

    @property
    def body_half_size(self) -> tuple[float, float]:
        """Half-width and half-depth of the body outline, mm."""
        rim = self.wall + self.fat
        return self.cav_a + rim, max(self.cav_b + rim, self.yv + self.back_depth + self.fat)

    def dome(self, x, y, left: bool):
        """z of the hemidiaphragm's upper surface above (x, y)."""
        c = self.domeL_c if left else self.domeR_c
        zd = self.zdL if left else self.zdR
        return zd - ((x - c[0]) ** 2 + (y - c[1]) ** 2) / self.dome_k

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _ell(rng, c, r, jitter_c=6.0, jitter_r=0.12, rot=(0, 0, 0), rot_jit=0.15,
             wave_amp=0.08, wave_len=(50, 110)):
        c = np.asarray(c, float) + rng.normal(0, jitter_c, 3)
        r = np.asarray(r, float) * rng.uniform(1 - jitter_r, 1 + jitter_r, 3)
        R = rotation(*(np.asarray(rot) + rng.normal(0, rot_jit, 3)))
        wave = Wave.random(rng, 3, wave_len, wave_amp) if wave_amp else None
        return Ellipsoid(c.astype(np.float32), r.astype(np.float32), R, wave)

    @staticmethod
    def _tube(pts, radii, wave=None, height=1.0):
        return Tube(np.asarray(pts, np.float32), np.asarray(radii, np.float32), wave, height)

    def _build(self, rng):
        self._build_solid_organs(rng)
        self._build_kidneys(rng)
        ctrl = self._build_pancreas_and_duodenum(rng)
        self._build_vessels(rng, ctrl)
        self._build_stomach_and_small_bowel(rng)
        self._build_colon(rng)
        self._build_mesentery(rng)
        self._build_chest_and_pelvis(rng)
        self.pathology = draw_pathology(self, rng, self.sick)

    def _build_solid_organs(self, rng):
        """Liver (two lobes, sometimes a Riedel lobe), gallbladder and spleen under the domes."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        ztop = self.zdR + 8
        rl = np.array([84, 76, 70]) * s * u(0.96, 1.16)
        self.liver = [
            self._ell(rng, (-0.42 * a, -0.02 * b, ztop - rl[2] * 0.95), rl, rot=(0, 0.12, 0.2)),
            self._ell(rng, (-0.05 * a, -0.42 * b, ztop - 50 * s), np.array([62, 30, 36]) * s,
                      rot=(0, 0, 0.25)),
        ]
        if rng.random() < 0.4:  # Riedel-like inferior extension of the right lobe
            self.liver.append(self._ell(rng, (-0.55 * a, -0.1 * b, ztop - rl[2] * 1.6),
                                        np.array([36, 33, 48]) * s))
        right = self.liver[0]   # its dome touches the right hemidiaphragm, whatever the jitter drew
        right.c[2] = ztop - float(np.sqrt(np.sum((right.R[2] * right.r) ** 2)))
        self.liver[0] = self._liver_inferior_surface(rng, right)
        self.liver.append(self._liver_dome(rng, right))
        lc = right.c
        gx = lc[0] + 30 * s     # the gallbladder lies in its fossa on the inferior surface
        self.gall = (self._ell(rng, (gx, -0.45 * b, self.liver_floor(gx, -0.45 * b) - 4 * s),
                               np.array([14, 14, 34]) * s, rot=(0.5, 0, 0), wave_amp=0.05)
                     if rng.random() < 0.75 else None)
        self.spleen = [self._spleen(rng)]

    def _liver_inferior_surface(self, rng, right: Ellipsoid) -> Trimmed:
        """The right lobe is a wedge, not an egg: its inferior surface rises from the low lateral
        tip towards the porta, so the pancreas head, duodenum and hepatic flexure lie below it."""
        u = rng.uniform
        tip = np.array([right.c[0] - 0.55 * right.r[0], right.c[1], right.c[2] - u(0.7, 0.95) * right.r[2]])
        slope, tilt = u(0.45, 0.85), u(-0.3, 0.1)   # rise per mm to the left; posterior part lower
        self._floor = (tip, slope, tilt)
        normal = np.array([slope, tilt, -1.0])
        return Trimmed(right, tip.astype(np.float32), (normal / np.linalg.norm(normal)).astype(np.float32),
                       float(right.r.mean()))

    def _liver_dome(self, rng, right: Ellipsoid) -> Ellipsoid:
        """The top of the right lobe fills the hemidiaphragm's dome out to the ribs, with no fat
        between liver and diaphragm; the chest painted later trims it to the dome's surface."""
        r = (right.r * np.array([0.95, 0.95, 0.0]) + np.array([0.0, 0.0, 45.0]) * self.s).astype(np.float32)
        c = np.array([right.c[0], right.c[1], self.zdR - rng.uniform(15, 25) * self.s], np.float32)
        return Ellipsoid(c, r, right.R, Wave.random(rng, 3, (50, 110), 0.05))

    def behind_pancreas(self, x, y, z, grow: float = 0.0):
        """Points behind 3 mm in front of the pancreas's front surface, near its height (the
        lesser sac's back wall): the stomach lies in front of the gland, never around or behind it.
        `grow` mm widens the region on every face, so that the stomach's contents, cut by the
        grown region, keep a wall on every face of the cut."""
        order = np.argsort(self.pancreas.pts[:, 0])
        px, py, pz = (self.pancreas.pts[order, i] for i in range(3))
        pr = self.pancreas.radii[order]
        front = np.interp(x, px, py - pr - 3.0 - grow)
        height = np.interp(x, px, pz)
        return ((y > front) & (np.abs(z - height) < 35 * self.s + grow)
                & (x > px[0] - 10 - grow) & (x < px[-1] + 10 + grow))

    def liver_floor(self, x, y):
        """z of the right lobe's inferior surface above (x, y)."""
        tip, slope, tilt = self._floor
        return tip[2] + slope * (x - tip[0]) + tilt * (y - tip[1])

    def _spleen(self, rng) -> Ellipsoid:
        """Posterolateral on the left under the lower ribs: thin side against the wall, long axis along it."""
        s, u = self.s, rng.uniform
        phi = u(0.25, 0.65)         # around the cavity from +x towards +y: lateral to the kidney, not on it
        bb = CAVITY_BACK * self.cav_b
        wall_pt = np.array([self.cav_a * np.cos(phi), bb * np.sin(phi)])
        normal = np.array([np.cos(phi) / self.cav_a, np.sin(phi) / bb])
        normal /= np.linalg.norm(normal)
        r = np.array([22, 58, 50]) * s * u(0.85, 1.2)
        xy = wall_pt - normal * (r[0] + u(0, 6))   # against the wall, as under the ribs in patients
        # its upper pole just under the left dome where it lies, not cut off by the lung above
        # and its centre above the left kidney's, beside that kidney's upper pole
        z_top = self.dome(xy[0], xy[1], True) - u(4, 12)
        zc = max(z_top - 0.92 * r[2], self.zk[1] + u(20, 35) * s)
        return self._ell(rng, (xy[0], xy[1], zc), r, jitter_c=3,
                         rot=(0.25, 0, np.arctan2(normal[1], normal[0])), wave_amp=0.1)

    def _build_kidneys(self, rng):
        """Kidneys 11 x 6 x 3 cm beside the spine; cortex, medullary pyramids, sinus, pelvis, adrenal."""
        s, yv = self.s, self.yv
        u = rng.uniform
        self.kidneys, self.medulla, self.sinus, self.pelvis, self.adrenals = [], [], [], [], []
        self.kidney_sides = [0, 1]   # 0 right, 1 left: which kidneys this patient has
        for sgn, zk in ((-1, self.zk[0]), (1, self.zk[1])):
            cx = sgn * u(58, 72) * s
            r = np.array([29, 21, 55]) * s * u(0.88, 1.12)   # width, thickness, length (half)
            # in front of the quadratus lumborum: a narrow cavity moves the kidney forward
            back = CAVITY_BACK * self.cav_b * np.sqrt(max(0.0, 1 - (cx / self.cav_a) ** 2)) - r[1] - 4
            c = (cx, min(yv + u(-4, 8), back), zk)
            # hilum turned anteromedially; upper pole medial and posterior
            rot = (-0.3, sgn * 0.2, sgn * -0.6)
            k = self._ell(rng, c, r, jitter_c=5, rot=rot, rot_jit=0.1, wave_amp=0.04)
            self.kidneys.append(k)
            self.medulla.append(Ellipsoid(k.c, k.r * np.array([0.7, 0.62, 0.8], np.float32), k.R,
                                          Wave.random(rng, 4, (14, 24), 0.12)))
            hilum = k.R @ np.array([-sgn * 1.0, 0.0, 0.0])      # medial side of the kidney's own frame
            sc = k.c + (hilum * k.r[0] * 0.55).astype(np.float32)
            self.sinus.append(Ellipsoid(sc.astype(np.float32), (k.r * np.array([0.35, 0.35, 0.38])).astype(np.float32),
                                        k.R, None))
            self.pelvis.append(Ellipsoid((k.c + hilum * k.r[0] * 0.75).astype(np.float32),
                                         (k.r * np.array([0.3, 0.3, 0.22]) * u(0.5, 1.2)).astype(np.float32), k.R, None))
            top = k.c + k.R @ np.array([0, 0, k.r[2]])
            ac = top + np.array([-sgn * 12 * s, -8 * s, 10 * s])
            self.adrenals.append(self._ell(rng, ac, np.array([4, 14, 20]) * s, jitter_c=3,
                                           rot=(0.2, 0, sgn * 0.5), wave_amp=0.1, wave_len=(15, 30)))
        self.hila = [k.c + (k.R @ np.array([-sgn * 1.0, -0.4, 0.0])) * k.r[0] * 1.1
                     for sgn, k in zip((-1, 1), self.kidneys)]

    def _build_pancreas_and_duodenum(self, rng):
        """Pancreas from the duodenal C-loop to the splenic hilum, lobulated; the C-loop itself.

        Returns the pancreas control points (head to tail), which place the portal and splenic veins.
        """
        s, a, yv = self.s, self.a, self.yv
        u = rng.uniform
        zp = 0.5 * sum(self.zk) + u(5, 30) * s
        spl = self.spleen[0].c
        ctrl = np.array([
            [-0.26 * a, yv - 58 * s, zp - 22 * s],
            [-0.12 * a, yv - 72 * s, zp - 6 * s],
            [0.05 * a, yv - 78 * s, zp + 2 * s],
            [0.25 * a, yv - 60 * s, zp + 12 * s],
            [0.5 * (0.45 * a + spl[0] - 20 * s), 0.5 * (yv - 28 * s + spl[1] - 25 * s), zp + 24 * s],
        ]) + rng.normal(0, 5, (5, 3))
        # the gland thins with age (atrophy, often with fat between its lobules): about a third
        # of adults past 60 have a body under 1.5 cm thick, and in some it is under 1 cm
        atrophic = rng.random() < 0.3
        rad = np.array([17, 12.5, 11.5, 11, 10]) * s * (u(0.55, 0.8) if atrophic else u(0.8, 1.12))
        # a ribbon, taller than thick (the body's cross-section is a triangle with anterior,
        # posterior and inferior faces); the same cross-sectional area as a round gland
        height = u(1.0, 1.7)
        pts, prad = smooth_curve(ctrl, rad / np.sqrt(height), 14)
        self.pancreas = self._tube(pts, prad, Wave.random(rng, 5, (12, 30), 0.14), height)
        self.pancreas_fat_share = u(0.15, 0.45) if (atrophic or rng.random() < 0.15) else 0.0
        self.pancreas_lobules = Wave.random(rng, 8, (8, 18), 1.0)
        head = ctrl[0]
        dctrl = np.array([[head[0] + 10, head[1] - 25, head[2] + 35], [head[0] - 28, head[1] - 5, head[2] + 15],
                          [head[0] - 30, head[1] + 5, head[2] - 15], [head[0] + 5, head[1] - 8, head[2] - 40],
                          [head[0] + 45, head[1] - 10, head[2] - 42]])
        dp, dr = smooth_curve(dctrl, np.full(5, u(9, 13) * s), 10)
        self.duodenum = self._tube(dp, dr)
        return ctrl

    def _build_vessels(self, rng, ctrl):
        """Aorta, SMA, IVC, portal, splenic and renal vessels."""
        s, a, yv = self.s, self.a, self.yv
        lc = self.liver[0].c
        ax, ay = 0.08 * a, yv - 30 * s
        self.aorta = self._tube([[ax, ay, -400], [ax - 0.01 * a, ay - 2 * s, 400]], np.array([11, 11.5]) * s)
        self.ivc = self._tube([[-0.13 * a, yv - 28 * s, -400], [-0.16 * a, yv - 40 * s, self.zdR - 20]],
                              np.array([11, 12]) * s * rng.uniform(0.8, 1.2))
        z_sma = ctrl[2][2] + 12 * s
        self.sma = self._tube([[ax, ay - 8 * s, z_sma], [ax - 4, ctrl[2][1] - 4, ctrl[2][2] - 15],
                               [ax - 10, ctrl[2][1] - 20, z_sma - 150]], np.array([4.5, 4, 3.5]) * s)
        smv_top = ctrl[1] + np.array([8, 14, 0])
        self.portal = self._tube([[smv_top[0] - 6, smv_top[1] - 10, smv_top[2] - 150], smv_top,
                                  [lc[0] + 30, lc[1] + 20, lc[2] - 15]], np.array([5, 7, 7]) * s)
        spl_c = self.spleen[0].c
        self.splenic_v = self._tube(np.stack([smv_top, ctrl[3] + np.array([0, 12, 0]),
                                              spl_c - np.array([15, 0, 5])]), np.array([5, 4.5, 4.5]) * s)
        ivc_x = -0.14 * a
        self.renal_veins = [self._tube([h, [ivc_x if sgn < 0 else ax, ay - 14 * s, h[2] + 4]], [5 * s, 5.5 * s])
                            for sgn, h in zip((-1, 1), self.hila)]
        self.renal_arteries = [self._tube([[ax, ay, h[2] + 8], h + np.array([0, 6, 0])], [3.2 * s, 3 * s])
                               for h in self.hila]

    def _build_stomach_and_small_bowel(self, rng):
        """Stomach (content, optional gas) and small-bowel loops filling the mid and lower abdomen."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        self.stomach = self._ell(rng, (0.3 * a, -0.3 * b, self.zdL - 70 * s), np.array([45, 34, 58]) * s * u(0.7, 1.15),
                                 rot=(0.4, 0.2, 0.5), wave_amp=0.1)
        self.stomach_content = str(rng.choice(["fluid", "oral_contrast", "food"], p=[0.55, 0.2, 0.25]))
        self.stomach_gas = rng.random() < 0.7
        # a habitus with much visceral fat has fewer loops packed in the same space
        self.small_bowel = []
        z_top, z_bot = min(self.zk) + 25, self.z_pelvis - 90 * s
        n_loops = int(np.clip(round(44 - 26 * self.habitus + rng.normal(0, 3)), 16, 48))
        for _ in range(n_loops):
            p0 = np.array([u(-0.55, 0.55) * a, u(-0.75, 0.15) * b, u(z_bot, z_top)])
            steps = rng.normal(0, 1, (3, 3)) * np.array([25, 15, 25]) * s
            pts = np.vstack([p0, p0 + np.cumsum(steps, 0)])
            content = str(rng.choice(["fluid", "wall", "oral_contrast", "gas"], p=[0.45, 0.35, 0.12, 0.08]))
            self.small_bowel.append((self._tube(pts, np.full(4, u(9, 16) * s)), content))

    def _build_colon(self, rng):
        """Colon frame: caecum and ascending (right), transverse (anterior, sagging), descending (left), sigmoid."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        kR, kL = self.kidneys
        ctrl = np.array([
            [-0.58 * a, -0.15 * b, self.z_pelvis - 30 * s],                 # caecum
            [-0.62 * a, -0.05 * b, kR.c[2] - 20 * s],                       # ascending
            [-0.45 * a, -0.35 * b, kR.c[2] + 25 * s],                       # hepatic flexure
            [0.0, -0.72 * b, kR.c[2] - u(0, 60) * s],                       # transverse, sagging
            [0.55 * a, -0.15 * b, kL.c[2] + u(30, 60) * s],                 # splenic flexure
            [0.66 * a, 0.1 * b, kL.c[2] - 40 * s],                          # descending
            [0.55 * a, 0.0, self.z_pelvis - 40 * s],
            [0.1 * a, -0.3 * b, self.z_pelvis - 90 * s],                    # sigmoid
            [0.0, 0.3 * b, self.z_pelvis - 125 * s],                         # rectum, before the sacrum
            [0.0, 0.25 * b, self.z_pelvis - 190 * s],
        ]) + rng.normal(0, 8, (10, 3))
        rad = np.array([30, 24, 22, 22, 22, 19, 18, 17, 18, 16]) * s * u(0.8, 1.2)
        pts, prad = smooth_curve(ctrl, rad, 40)
        self.colon = self._tube(pts, prad, Wave.random(rng, 4, (20, 40), 0.1))
        self.colon_sma_end = int(len(pts) * 3 / (len(ctrl) - 1)) + 1   # caecum to the transverse (ctrl 0-3)
        self.faeces_pattern = Wave.random(rng, 8, (6, 14), 1.0)
        self.colon_gas_share = u(0.05, 0.6)

    def _build_mesentery(self, rng):
        """Mesenteric vessels: branches from the SMA's trunk that fan out through the visceral fat
        to the small bowel and the colon, the small round and branching densities that fill the
        fat between the loops on a real CT. Painted over fat only."""
        s, u = self.s, rng.uniform
        trunk = self.sma.pts[1:]                 # below the pancreas: where the branches leave
        loops = [t for t, _ in self.small_bowel]
        self.mesenteric = []
        for _ in range(int(rng.integers(12, 22))):
            t = u(0.05, 1.0)
            start = trunk[0] + t * (trunk[1] - trunk[0])
            if rng.random() < 0.8:
                target = loops[int(rng.integers(len(loops)))].pts[int(rng.integers(4))]
            else:   # the SMA supplies the colon from the caecum to the transverse colon only
                target = self.colon.pts[int(rng.integers(self.colon_sma_end))]
            mid = 0.5 * (start + target) + rng.normal(0, 12, 3)
            self.mesenteric.append(self._tube([start, mid, target], np.array([u(2.2, 3.5), u(1.6, 2.6), 1.4]) * s))

    def _build_chest_and_pelvis(self, rng):
        """Lower ribs, the heart above the domes, the pelvis (bones, bladder, muscles) and the table gap."""
        s, a, b = self.s, self.a, self.b
        u = rng.uniform
        # ribs run steeply down towards the front, so an axial slice cuts each one into a short
        # segment; the lowest (12th) leaves the spine at about T12
        self.rib_z0 = self.zdR - u(60, 95) * s
        self.n_ribs = 10
        self.rib_pitch = u(24, 32) * s
        self.rib_slope = u(70, 110)
        self.heart = self._ell(rng, (0.05 * a, -0.35 * b, self.zdR + 65 * s), np.array([70, 55, 60]) * s)
        self.iliac = [self._iliac_wing(rng, sgn) for sgn in (-1, 1)]
        self._build_lower_pelvis(rng)
        self.tbl_gap = u(2, 25)
        self._build_back(rng)

    def _build_back(self, rng):
        """Erector spinae and quadratus lumborum behind and beside the spine: in patients the
        vertebral body lies about 8-12 cm in front of the skin of the back, not at its edge."""
        s, u = self.s, rng.uniform
        self.back_half_w = u(0.72, 0.92) * self.cav_a
        self.back_depth = float(self.vr[1]) + u(45, 70) * s   # vertebral body centre to the fascia

    def _build_lower_pelvis(self, rng):
        """Bladder (filled to a random degree), sacrum, femoral heads and gluteal muscles."""
        s, a, b, zp = self.s, self.a, self.b, self.z_pelvis
        u = rng.uniform
        self.bladder = self._ell(rng, (0, -0.3 * b, zp - 135 * s), np.array([42, 32, 36]) * s * u(0.6, 1.35),
                                 wave_amp=0.06)
        self.sacrum = self._ell(rng, (0, self.yv + 22 * s, zp - 75 * s), np.array([48, 14, 62]) * s,
                                jitter_c=3, rot=(-0.55, 0, 0), rot_jit=0.08, wave_amp=0.05)
        z_hip = zp - u(165, 185) * s
        self.femoral_heads = [self._ell(rng, (sgn * 0.62 * a, -0.02 * b, z_hip), np.full(3, 23.0) * s, jitter_c=3,
                                        jitter_r=0.08, wave_amp=0) for sgn in (-1, 1)]
        self.gluteals = [self._ell(rng, (sgn * 0.5 * a, 0.62 * b, zp - 120 * s), np.array([55, 42, 85]) * s,
                                   rot=(0.2, sgn * 0.2, 0), wave_amp=0.08) for sgn in (-1, 1)]

    def _iliac_wing(self, rng, sgn: int) -> Ellipsoid:
        """A thin curved plate from the iliac crest (lateral, about L4) down to the sacroiliac joint."""
        s, a, b = self.s, self.a, self.b
        crest = np.array([sgn * 0.78 * a, 0.05 * b, self.z_pelvis])
        joint = np.array([sgn * 0.22 * a, 0.45 * b, self.z_pelvis - 95 * s])
        along = (joint - crest) / np.linalg.norm(joint - crest)
        ap = np.array([0.0, 1.0, 0.0]) - along[1] * along
        ap /= np.linalg.norm(ap)
        R = np.stack([np.cross(ap, along), ap, along], axis=1)
        half = np.array([5, 48, 0.5 * np.linalg.norm(joint - crest) + 12]) * rng.uniform(0.9, 1.1, 3)
        half[0] = 5 * s
        wave = Wave.random(rng, 3, (60, 120), 0.15)
        return Ellipsoid((0.5 * (crest + joint) - ap * 10).astype(np.float32), half.astype(np.float32), R, wave)

"""Patients as FLARE21's are: its cases come from tumour collections (LiTS, KiTS, MSD pancreas).

Drawn per anatomy, after it is built (app.synth.anatomy calls `draw_pathology` last):
- variants of the organs: cirrhosis (nodular surface, small right lobe, large caudate lobe),
  hepatomegaly, a resected liver segment, splenectomy, splenomegaly, nephrectomy, an atrophic,
  a duplex or a polycystic kidney;
- the organs' own vessels (hepatic veins, portal branches, splenic hilar branches, renal hilar
  vessels), labelled as their organ;
- lesions inside the organs, labelled as their organ, some exophytic (bulging out of the organ);
- distractors, labelled background: adrenal, retroperitoneal and mesenteric masses, lymph nodes,
  cysts outside the organs, ascites around the liver and spleen, pleural effusion, a distended
  gallbladder or stomach pressed against the organs. A mass against an organ presses into it:
  the organ gives way (a concave dent, sometimes behind a fat plane), where an exophytic lesion
  bulges out of an outline that stays its own;
app.synth.lesions places the lesions; app.synth.pathology_paint paints all of it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from app.synth.shapes import Ellipsoid, Trimmed, Tube, Wave, rotation

LESION_CASE_P = 0.5        # share of patients with lesions in their organs
DISTRACTOR_P = {"adrenal_mass": 0.12, "retroperitoneal_mass": 0.14, "mesenteric_mass": 0.08,
                "lymph_node": 0.2, "abdominal_cyst": 0.08}
ASCITES_P, EFFUSION_P = 0.12, 0.1
# `sick` phantoms (app synth --sick): lesions in every organ, distractors often; the masses that
# press into an organ most often, since they are the ones hardest to tell from it
PRESSING_MASSES = ("adrenal_mass", "retroperitoneal_mass")
SICK_DISTRACTOR_P = {kind: 0.7 if kind in PRESSING_MASSES else 0.5 for kind in DISTRACTOR_P}
SICK_FLUID_P = 0.4


@dataclass
class Lesion:
    kind: str                      # structure name (app.synth.structures)
    organ: int                     # the FLARE label it belongs to
    shape: Ellipsoid | Trimmed
    exophytic: bool = False        # may reach outside the organ's outline


# How far a mass presses into the organ it lies against, as a share of the mass's radius
PRESS_SHARE = {"adrenal_mass": (0.2, 0.7), "retroperitoneal_mass": (0.3, 0.8),
               "mesenteric_mass": (0.2, 0.6), "abdominal_cyst": (0.2, 0.7)}
PRESS_MAX_MM = 15.0       # deeper, a real organ is pushed aside rather than dented
DENTED_ORGANS = {"liver": 1, "kidney": 2, "spleen": 3}   # FLARE labels; the thin pancreas is left whole
FAT_PLANE_P, FAT_PLANE_MM = 0.5, (1.5, 4.0)


@dataclass
class Distractor:
    shape: Ellipsoid
    name: str                      # structure name (app.synth.structures), background in FLARE
    press_mm: float = 0.0          # organ tissue this close to its surface gives way to the mass
    fat_plane_mm: float = 0.0      # fat kept between the mass and the organ it dents


@dataclass
class Pathology:
    variants: list[str] = field(default_factory=list)
    lesions: list[Lesion] = field(default_factory=list)
    organ_vessels: list[tuple[Tube, str]] = field(default_factory=list)   # painted inside their organ
    distractors: list[Distractor] = field(default_factory=list)  # outside the organs, or pressed into them
    extra_sinuses: list[tuple[int, Ellipsoid, Ellipsoid]] = field(default_factory=list)  # duplex kidney
    ascites_mm: float = 0.0
    effusion_mm: float = 0.0

    @property
    def dents_organs(self) -> bool:
        """A mass presses into the liver, a kidney or the spleen (they may be smaller for it)."""
        return any(mass.press_mm > 0 for mass in self.distractors)

    def describe(self) -> dict:
        return {"variants": list(self.variants),
                "lesions": dict(Counter(les.kind for les in self.lesions)),
                "distractors": dict(Counter(d.name for d in self.distractors)),
                "ascites_mm": round(self.ascites_mm, 1), "effusion_mm": round(self.effusion_mm, 1)}


def draw_pathology(anat, rng, sick: bool = False) -> Pathology:
    """Variants first (they change the organs), then vessels, lesions and distractors. `sick`
    only raises the chances (the same draws in the same order)."""
    from app.synth.lesions import draw_lesions

    path = Pathology()
    _draw_variants(anat, rng, path)
    _draw_organ_vessels(anat, rng, path)
    if rng.random() < (1.0 if sick else LESION_CASE_P) or "polycystic_kidneys" in path.variants:
        path.lesions = draw_lesions(anat, rng, path.variants, sick)
    _draw_distractors(anat, rng, path, sick)
    return path


# ------------------------------------------------------------------------------- variants
def base_of(shape) -> Ellipsoid:
    """The ellipsoid under any number of plane cuts."""
    while isinstance(shape, Trimmed):
        shape = shape.shape
    return shape


def scale_shape(shape, f: float, about=None) -> None:
    """Grow or shrink a shape by f about `about` (default: its own centre), in place."""
    base = base_of(shape)
    about = base.c.copy() if about is None else np.asarray(about, np.float32)
    cut = shape
    while isinstance(cut, Trimmed):
        cut.point[:] = about + f * (cut.point - about)
        cut = cut.shape
    base.c[:] = about + f * (base.c - about)
    base.r[:] = base.r * f


def add_wave(shape, wave: Wave) -> None:
    """Add a surface perturbation to a shape's own (nodular surfaces, lobulation)."""
    base = base_of(shape)
    if base.wave is None:
        base.wave = wave
        return
    w = base.wave
    base.wave = Wave(np.concatenate([w.k, wave.k]), np.concatenate([w.phase, wave.phase]),
                     np.concatenate([w.amp, wave.amp]))


def _draw_variants(anat, rng, path: Pathology) -> None:
    r, u, v = rng.random, rng.uniform, path.variants
    if r() < 0.08:
        _cirrhotic_liver(anat, rng)
        v.append("cirrhosis")
    elif r() < 0.08:
        for shape in anat.liver:
            scale_shape(shape, u(1.1, 1.25))
        v.append("hepatomegaly")
    if r() < 0.05:
        _resect_liver_segment(anat, rng)
        v.append("liver_resection")
    if r() < 0.04:
        anat.spleen = []
        v.append("splenectomy")
    elif r() < (0.5 if "cirrhosis" in v else 0.08):
        scale_shape(anat.spleen[0], u(1.25, 1.7))
        v.append("splenomegaly")
    side = int(rng.integers(2))          # 0 right, 1 left
    if r() < 0.05:
        _remove_kidney(anat, side)
        v.append(f"nephrectomy_{('right', 'left')[side]}")
    elif r() < 0.06:
        _scale_kidney(anat, side, u(0.6, 0.8))
        v.append(f"atrophic_kidney_{('right', 'left')[side]}")
    elif r() < 0.04:
        _duplex_kidney(anat, side, path)
        v.append(f"duplex_kidney_{('right', 'left')[side]}")
    if len(anat.kidneys) == 2 and r() < 0.03:
        for i in (0, 1):
            _scale_kidney(anat, i, u(1.3, 1.55))
        v.append("polycystic_kidneys")
    if anat.gall is not None and r() < 0.15:
        scale_shape(anat.gall, u(1.3, 1.6))
        v.append("distended_gallbladder")
    if r() < 0.15:
        scale_shape(anat.stomach, u(1.15, 1.3))
        v.append("distended_stomach")


def _cirrhotic_liver(anat, rng) -> None:
    """Nodular surface, a small right lobe and a large caudate lobe."""
    u, s = rng.uniform, anat.s
    right = anat.liver[0]
    scale_shape(right, u(0.75, 0.88), about=right.c + np.array([0, 0, base_of(right).r[2] * 0.5], np.float32))
    for shape in anat.liver:
        add_wave(shape, Wave.random(rng, 6, (10, 24), u(0.1, 0.18)))
    top = anat.ivc.pts[-1]
    caudate = Ellipsoid(np.array([top[0] + 18 * s, top[1] - 22 * s, top[2] - 40 * s], np.float32),
                        (np.array([24, 20, 34]) * s * u(1.1, 1.45)).astype(np.float32),
                        rotation(0, 0, u(-0.3, 0.3)), Wave.random(rng, 5, (10, 24), 0.12))
    anat.liver.append(caudate)


def _resect_liver_segment(anat, rng) -> None:
    """A resected segment: a plane takes off the left lateral segment or a lateral part of the
    right lobe; the bed fills with fat, as after surgery."""
    u = rng.uniform
    i = 1 if rng.random() < 0.5 else 0
    shape = anat.liver[i]
    base = base_of(shape)
    sgn = 1.0 if i == 1 else -1.0                 # the left lobe's lateral end, or the right lobe's
    normal = rotation(0, 0, u(-0.4, 0.4)) @ np.array([sgn, 0.0, 0.0])
    point = base.c + normal * base.r[0] * u(0.15, 0.5)
    anat.liver[i] = Trimmed(shape, point.astype(np.float32), normal.astype(np.float32), float(base.r.mean()))


def _kidney_parts(anat) -> tuple[list, ...]:
    return anat.kidneys, anat.medulla, anat.sinus, anat.pelvis


def _remove_kidney(anat, side: int) -> None:
    """Nephrectomy: the kidney, its internals and its renal vessels are gone."""
    for parts in (*_kidney_parts(anat), anat.hila, anat.renal_veins, anat.renal_arteries):
        parts.pop(side)
    anat.kidney_sides = [s for s in anat.kidney_sides if s != side]


def _scale_kidney(anat, i: int, f: float) -> None:
    """An atrophic (f < 1) or polycystic (f > 1) kidney, internals scaled about its centre."""
    centre = anat.kidneys[i].c.copy()
    for parts in _kidney_parts(anat):
        scale_shape(parts[i], f, about=centre)


def _duplex_kidney(anat, side: int, path: Pathology) -> None:
    """A longer kidney with two sinuses and pelves, one towards each pole."""
    k, sn, pv = anat.kidneys[side], anat.sinus[side], anat.pelvis[side]
    axis = (k.R[:, 2] * k.r[2]).astype(np.float32)
    k.r[2] *= 1.2
    anat.medulla[side].r[2] *= 1.2
    for shift, keep in ((0.4, True), (-0.4, False)):
        s2 = Ellipsoid((sn.c + shift * axis).astype(np.float32), sn.r * np.float32(0.8), sn.R, None)
        p2 = Ellipsoid((pv.c + shift * axis).astype(np.float32), pv.r * np.float32(0.8), pv.R, None)
        if keep:
            anat.sinus[side], anat.pelvis[side] = s2, p2
        else:
            path.extra_sinuses.append((side, s2, p2))


# ------------------------------------------------------------------------------- vessels
def _branch(start, end, r0: float, rng, bend: float = 10.0) -> Tube:
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    mid = 0.5 * (start + end) + rng.normal(0, bend, 3)
    return Tube(np.stack([start, mid, end]).astype(np.float32), np.array([r0, 0.6 * r0, 1.4], np.float32))


def inside_point(shape, rng, depth=(0.0, 0.7), tries: int = 40) -> np.ndarray:
    """A random point inside a shape, at a relative depth from its centre (1 = the surface).
    Near the surface (depth up to 1 and beyond) of a shape cut by a plane, the point must lie on
    the kept side, near the surface, not on the part the plane took away."""
    base = base_of(shape)
    p = base.c
    for _ in range(tries):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        p = base.c + base.R @ (base.r * d * rng.uniform(*depth))
        value = shape.value(*(np.float32(v) for v in p))
        if depth[1] > 0.95 and (shape is base or value < 0.06):
            return p.astype(np.float32)
        if depth[1] <= 0.95 and value < -0.05:
            return p.astype(np.float32)
    return np.asarray(p, np.float32)


def _draw_organ_vessels(anat, rng, path: Pathology) -> None:
    """Hepatic veins from the IVC and portal branches from the porta into the liver, splenic
    hilar branches, renal hilar vessels into the sinus: inside their organ, labelled as it."""
    s, out = anat.s, path.organ_vessels
    lobes = [shape for shape in anat.liver[:2]]
    top = anat.ivc.pts[-1]
    for lobe in (lobes[0], lobes[0], lobes[1]):
        out.append((_branch(top, inside_point(lobe, rng, (0.5, 0.8)), 6.0 * s, rng), "liver_vessel"))
    porta = anat.portal.pts[-1]
    for lobe in (lobes[0], lobes[0], lobes[1]):
        out.append((_branch(porta, inside_point(lobe, rng, (0.4, 0.8)), 5.5 * s, rng), "liver_vessel"))
    if anat.spleen:
        hilum = anat.splenic_v.pts[-1]
        for _ in range(3):
            out.append((_branch(hilum, inside_point(anat.spleen[0], rng, (0.2, 0.6)), 3.5 * s, rng, 4.0),
                        "spleen_vessel"))
    for h, k in zip(anat.hila, anat.kidneys):
        for pole in (-0.45, 0.45):
            end = k.c + k.R @ np.array([0.0, 0.0, pole * k.r[2]], np.float32)
            out.append((_branch(h, end, 3.5 * s, rng, 3.0), "kidney_vessel"))


# ------------------------------------------------------------------------------- distractors
def _mass(anat, rng, name: str, c, radius: float, lobulated: float = 0.1) -> Distractor:
    """A distractor blob; the kinds in PRESS_SHARE press into an organ they meet. The draws are
    the same for every kind, so that `sick` keeps the anatomy's draws in order."""
    shape = _blob(rng, c, radius, lobulated)
    share, fat_p, fat_mm = rng.uniform(*PRESS_SHARE.get(name, (0.0, 0.0))), rng.random(), rng.uniform(*FAT_PLANE_MM)
    press = min(share * radius, PRESS_MAX_MM)
    if press > 0 and not _push_out_of_organs(anat, shape, radius - press):
        press = 0.0
    return Distractor(shape, name, press, fat_mm if press > 0 and fat_p < FAT_PLANE_P else 0.0)


def organ_depth_mm(anat, x, y, z):
    """About how deep (mm) a point lies inside the liver, a kidney or the spleen, negative
    outside: near a surface an implicit value is about distance / mean radius."""
    depth = None
    for shape in (*anat.liver, *anat.kidneys, *anat.spleen):
        d = -shape.value(x, y, z) * float(np.mean(base_of(shape).r))
        depth = d if depth is None else np.maximum(depth, d)
    return depth


def _push_out_of_organs(anat, shape: Ellipsoid, clearance: float, steps: int = 8) -> bool:
    """Move a mass's centre out of the organs until it lies `clearance` mm outside them, so that
    it dents an organ by about its radius less that, as a mass from outside does, instead of
    sitting inside it like the organ's own lesion. False if it does not get there."""
    if not (anat.liver or anat.kidneys or anat.spleen):
        return True
    def depth(p):
        return float(organ_depth_mm(anat, *(np.float32(v) for v in p)))
    c, h = shape.c.astype(np.float64), 2.0
    for _ in range(steps):
        d = depth(c)
        if d <= -clearance + 0.5:
            shape.c[:] = c
            return True
        grad = np.array([depth(c + h * e) - depth(c - h * e) for e in np.eye(3)]) / (2 * h)
        norm = float(np.linalg.norm(grad))
        if norm < 1e-6:
            return False
        c = c - grad / norm * (d + clearance)
    return False


def _blob(rng, c, radius: float, lobulated: float = 0.1) -> Ellipsoid:
    r = radius * rng.uniform(0.8, 1.2, 3)
    wave = Wave.random(rng, 5, (radius, 3 * radius + 10), lobulated) if lobulated else None
    return Ellipsoid(np.array(c, np.float32), r.astype(np.float32), rotation(*rng.uniform(-np.pi, np.pi, 3)), wave)


def _draw_distractors(anat, rng, path: Pathology, sick: bool) -> None:
    u, s, out = rng.uniform, anat.s, path.distractors
    p = SICK_DISTRACTOR_P if sick else DISTRACTOR_P
    if rng.random() < p["adrenal_mass"]:
        adrenal = anat.adrenals[int(rng.integers(2))]
        out.append(_mass(anat, rng, "adrenal_mass", adrenal.c, u(10, 35) * s))
        adrenal.c[:] = out[-1].shape.c     # the gland goes where its mass is pushed: it grows from it
    if rng.random() < p["retroperitoneal_mass"]:
        _retroperitoneal_mass(anat, rng, out)
    if rng.random() < p["mesenteric_mass"]:
        loop = anat.small_bowel[int(rng.integers(len(anat.small_bowel)))][0]
        out.append(_mass(anat, rng, "mesenteric_mass", loop.pts[1], u(20, 50) * s, 0.15))
        loop.pts[1] = out[-1].shape.c      # and the loop's middle where its mesentery's mass is
    if rng.random() < p["lymph_node"]:
        for _ in range(int(rng.integers(2, 11))):
            out.append(_mass(anat, rng, "lymph_node", _node_site(anat, rng), u(5, 15) * s, 0.05))
    if rng.random() < p["abdominal_cyst"]:
        site = anat.kidneys[0].c if anat.kidneys and rng.random() < 0.5 else anat.small_bowel[0][0].pts[0]
        out.append(_mass(anat, rng, "abdominal_cyst", site + rng.normal(0, 30, 3), u(15, 50) * s, 0.04))
    cirrhosis = "cirrhosis" in path.variants
    if rng.random() < (0.6 if cirrhosis else SICK_FLUID_P if sick else ASCITES_P):
        path.ascites_mm = u(3, 15)
    if rng.random() < (SICK_FLUID_P if sick else EFFUSION_P):
        path.effusion_mm = u(10, 60)


def _retroperitoneal_mass(anat, rng, out) -> None:
    """A large mass behind the liver or beside a kidney (sarcoma, adrenal carcinoma): about
    100-900 ml, heterogeneous, sometimes necrotic."""
    u, s = rng.uniform, anat.s
    ref = anat.kidneys[int(rng.integers(len(anat.kidneys)))] if anat.kidneys else anat.adrenals[0]
    top = ref.c + ref.R @ np.array([0, 0, ref.r[2]], np.float32)
    c = top + np.array([rng.normal(0, 20), u(0, 25), u(10, 45)]) * s
    radius = u(30, 58) * s
    mass = _mass(anat, rng, "retroperitoneal_mass", c, radius, 0.15)
    out.append(mass)
    if rng.random() < 0.5:       # the necrotic core presses no further than its mass
        core = _blob(rng, mass.shape.c + rng.normal(0, 5, 3), radius * u(0.3, 0.55), 0.2)
        out.append(Distractor(core, "mass_necrosis", mass.press_mm))


def _node_site(anat, rng) -> np.ndarray:
    """Para-aortic, aortocaval, portal or mesenteric nodes."""
    site = rng.random()
    if site < 0.5:
        a = anat.aorta.pts[0] + (anat.aorta.pts[1] - anat.aorta.pts[0]) * 0.5
        z = rng.uniform(min(anat.zk) - 60, max(anat.zk) + 30)
        return np.array([a[0] + rng.choice([-1, 1]) * rng.uniform(18, 30), a[1] + rng.uniform(-10, 10), z])
    if site < 0.75:
        return anat.portal.pts[1] + rng.normal(0, 12, 3)
    return anat.sma.pts[2] + rng.normal(0, 25, 3)

"""Lesions inside the four organs, each labelled as its organ (a lesion counts as its organ in
FLARE21's labels): from 0 to about 10 per organ, 5 mm to 12 cm across, round, lobulated or
confluent, some exophytic (bulging out of the organ's outline).

- liver: hypodense metastases (often several, some confluent), simple cysts, arterially enhancing
  HCC that washes out later (more often in a cirrhotic liver), small calcified lesions;
- kidney: simple cysts, enhancing heterogeneous tumours, some exophytic, some with a necrotic core;
  polycystic kidneys;
- pancreas: a hypodense mass with a dilated duct upstream (towards the tail), cystic lesions;
- spleen: cysts and wedge-shaped infarcts against the capsule.
"""
from __future__ import annotations

import numpy as np

from app.synth.pathology import Lesion, inside_point
from app.synth.shapes import Ellipsoid, Tube, Wave, rotation

LIVER_KINDS = {"liver_metastasis": 0.45, "liver_cyst": 0.25, "liver_hcc": 0.2, "liver_calcification": 0.1}
ORGAN_P = {"liver": 0.7, "kidney": 0.45, "pancreas": 0.3, "spleen": 0.25}


def _radius(rng, lo: float, hi: float) -> float:
    """Log-uniform: small lesions are common, large ones rare."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _count(rng, most: int) -> int:
    return int(min(most, rng.geometric(0.35)))


def lesion_shape(rng, c, radius: float, lobulated: bool) -> Ellipsoid:
    r = radius * rng.uniform(0.8, 1.2, 3)
    wave = Wave.random(rng, 5, (1.5 * radius, 4 * radius + 8), rng.uniform(0.12, 0.25)) if lobulated else None
    return Ellipsoid(np.asarray(c, np.float32), r.astype(np.float32),
                     rotation(*rng.uniform(-np.pi, np.pi, 3)), wave)


def draw_lesions(anat, rng, variants: list[str], sick: bool = False) -> list[Lesion]:
    """Lesions of one patient; `sick` puts lesions in every organ (for measuring)."""
    out: list[Lesion] = []
    p = {organ: 1.0 for organ in ORGAN_P} if sick else ORGAN_P
    polycystic = "polycystic_kidneys" in variants
    if rng.random() < p["liver"]:
        out += _liver(anat, rng, "cirrhosis" in variants)
    if polycystic or rng.random() < p["kidney"]:
        for k in anat.kidneys:
            out += _polycystic(rng, k) if polycystic else _kidney(rng, k, anat.s)
    if rng.random() < p["pancreas"]:
        out += _pancreas(anat, rng)
    if anat.spleen and rng.random() < p["spleen"]:
        out += _spleen(anat, rng)
    return out


def _liver(anat, rng, cirrhosis: bool) -> list[Lesion]:
    kinds, p = list(LIVER_KINDS), np.array(list(LIVER_KINDS.values()))
    if cirrhosis:
        p[kinds.index("liver_hcc")] *= 3
    kind = str(rng.choice(kinds, p=p / p.sum()))
    lobes = anat.liver[:2]
    out = []
    n = _count(rng, 10) if kind != "liver_hcc" else 1 + int(rng.random() < 0.3)
    for _ in range(n):
        lobe = lobes[0] if rng.random() < 0.7 else lobes[1]
        exo = kind != "liver_calcification" and rng.random() < 0.15
        c = inside_point(lobe, rng, (0.85, 1.0) if exo else (0.0, 0.8))
        if kind == "liver_calcification":
            radius = _radius(rng, 2.5, 8)
        elif kind == "liver_hcc":
            radius = _radius(rng, 10, 60)
        else:
            radius = _radius(rng, 2.5, 45 if kind == "liver_metastasis" else 40)
        out.append(Lesion(kind, 1, lesion_shape(rng, c, radius, rng.random() < 0.4), exo))
        if kind == "liver_metastasis" and radius > 8 and rng.random() < 0.3:   # confluent deposits
            for _ in range(int(rng.integers(1, 4))):
                d = rng.normal(size=3)
                c2 = c + d / np.linalg.norm(d) * radius * rng.uniform(0.6, 1.1)
                out.append(Lesion(kind, 1, lesion_shape(rng, c2, radius * rng.uniform(0.5, 0.9), True), exo))
    return out


def _kidney(rng, k, s: float) -> list[Lesion]:
    out = []
    if rng.random() < 0.55:
        for _ in range(_count(rng, 5)):
            exo = rng.random() < 0.4
            c = inside_point(k, rng, (0.8, 1.05) if exo else (0.0, 0.8))
            out.append(Lesion("kidney_cyst", 2, lesion_shape(rng, c, _radius(rng, 3, 30), False), exo))
        return out
    exo = rng.random() < 0.5
    radius = _radius(rng, 8, 50) * s
    c = inside_point(k, rng, (0.75, 1.0) if exo else (0.0, 0.6))
    out.append(Lesion("kidney_tumour", 2, lesion_shape(rng, c, radius, rng.random() < 0.5), exo))
    if radius > 18 and rng.random() < 0.5:
        out.append(Lesion("kidney_tumour_necrosis", 2,
                          lesion_shape(rng, c + rng.normal(0, 3, 3), radius * rng.uniform(0.3, 0.55), True), exo))
    return out


def _polycystic(rng, k) -> list[Lesion]:
    out = []
    for _ in range(int(rng.integers(12, 31))):
        exo = rng.random() < 0.3
        c = inside_point(k, rng, (0.8, 1.05) if exo else (0.0, 0.85))
        out.append(Lesion("kidney_cyst", 2, lesion_shape(rng, c, _radius(rng, 3, 25), False), exo))
    return out


def _pancreas(anat, rng) -> list[Lesion]:
    tube, out = anat.pancreas, []
    n = len(tube.pts)
    if rng.random() < 0.6:
        j = int(rng.integers(0, n - 3))
        radius = _radius(rng, 8, 25) * anat.s
        c = tube.pts[j] + rng.normal(0, 3, 3)
        out.append(Lesion("pancreas_mass", 4, lesion_shape(rng, c, radius, rng.random() < 0.5), rng.random() < 0.3))
        if rng.random() < 0.7:   # the duct dilates upstream of the mass, towards the tail
            pts = tube.pts[j:]
            duct = Tube(pts.astype(np.float32), np.full(len(pts), rng.uniform(1.5, 4.0), np.float32))
            out.append(Lesion("pancreatic_duct_dilated", 4, duct))
        return out
    for _ in range(_count(rng, 3)):
        j = int(rng.integers(0, n))
        exo = rng.random() < 0.3
        c = tube.pts[j] + rng.normal(0, 4, 3)
        out.append(Lesion("pancreas_cyst", 4, lesion_shape(rng, c, _radius(rng, 4, 20), False), exo))
    return out


def _spleen(anat, rng) -> list[Lesion]:
    spleen, out = anat.spleen[0], []
    if rng.random() < 0.5:
        for _ in range(_count(rng, 4)):
            c = inside_point(spleen, rng, (0.0, 0.8))
            out.append(Lesion("spleen_cyst", 3, lesion_shape(rng, c, _radius(rng, 3, 30), False)))
        return out
    for _ in range(int(rng.integers(1, 3))):
        # centred on the capsule and painted inside the spleen only: a wedge with its base outwards
        c = inside_point(spleen, rng, (0.98, 1.0))
        out.append(Lesion("spleen_infarct", 3, lesion_shape(rng, c, _radius(rng, 12, 30), False)))
    return out

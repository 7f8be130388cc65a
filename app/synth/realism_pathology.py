"""Realism checks of the phantoms' pathology (app.synth.pathology, app.synth.lesions):
- sizes: lesions 5 mm to 12 cm across, distractor masses and nodes in their ranges;
- place: a lesion lies inside its organ or, where exophytic, touches it;
- HU by phase on rendered phantoms (less the case's calibration offset): each lesion kind and
  distractor in its literature range, and conspicuous as in patients: hypodense metastases and
  pancreatic masses in the portal phase, HCC brighter than the liver in the arterial phase and
  darker in the portal or delayed phase (washout), cysts at water density.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from app.synth.pathology import base_of
from app.synth.structures import ID, STRUCTURES

LESION_ACROSS_MM = (5.0, 120.0)
# Median HU per phase (literature ranges, widened for partial volume at the lesion's rim)
LESION_HU = {
    "liver_cyst": (-10, 30), "kidney_cyst": (-10, 30), "spleen_cyst": (-10, 30), "pancreas_cyst": (-10, 30),
    "abdominal_cyst": (-10, 30), "ascites": (-10, 40), "pleural_effusion": (-10, 40),
    "liver_metastasis": {"native": (10, 55), "arterial": (25, 80), "portal": (30, 90), "delayed": (35, 90)},
    "liver_hcc": {"native": (15, 58), "arterial": (85, 175), "portal": (60, 110), "delayed": (45, 95)},
    "kidney_tumour": {"native": (15, 55), "arterial": (75, 215), "portal": (65, 155), "delayed": (50, 110)},
    "pancreas_mass": {"native": (15, 55), "arterial": (30, 85), "portal": (35, 90), "delayed": (35, 90)},
    "spleen_infarct": {"native": (10, 50), "arterial": (15, 65), "portal": (15, 65), "delayed": (20, 70)},
    "retroperitoneal_mass": {"native": (15, 60), "arterial": (25, 85), "portal": (30, 100), "delayed": (30, 90)},
    "lymph_node": {"native": (20, 60), "arterial": (40, 95), "portal": (45, 110), "delayed": (45, 100)},
}
MIN_VOXELS = 60   # smaller cores say more about blur than tissue


def lesion_problems(anat) -> list[str]:
    """Sizes and places of one anatomy's lesions (no rendering)."""
    problems = []
    organs = {1: anat.liver, 2: anat.kidneys, 3: anat.spleen, 4: [anat.pancreas]}
    for les in anat.pathology.lesions:
        if les.kind == "pancreatic_duct_dilated":
            continue
        base = base_of(les.shape)
        across = 2 * float(np.max(base.r))
        if not LESION_ACROSS_MM[0] * 0.8 <= across <= LESION_ACROSS_MM[1] * 1.2:
            problems.append(f"{les.kind} {across:.0f} mm across, outside {LESION_ACROSS_MM}")
        c = [np.float32(v) for v in base.c]
        value = min(float(shape.value(*c)) for shape in organs[les.organ]) if organs[les.organ] else np.inf
        # a lesion is centred inside its organ or on its surface (an infarct's base lies on the
        # capsule); an exophytic one up to a little beyond it, so that it bulges out
        limit = 0.25 if les.exophytic else 0.1
        if value > limit:
            where = "touch" if les.exophytic else "lie inside"
            problems.append(f"{les.kind} does not {where} its organ (centre at organ value {value:.2f})")
    return problems


def lesion_hu_problems(phase: str, image: np.ndarray, structures: np.ndarray, calibration_hu: float,
                       fatty: tuple[str, ...] = ()) -> list[str]:
    """Lesion and distractor medians against their phase's range, and their contrast with the
    organ around them where it defines them (not in a fatty liver, darker itself)."""
    problems, medians = [], {}
    for name, ranges in LESION_HU.items():
        # the core, one voxel in from the rim: less of the blur that mixes in the surroundings
        where = ndimage.binary_erosion(structures == ID[name])
        if where.sum() < MIN_VOXELS:
            continue
        medians[name] = hu = float(np.median(image[where])) - calibration_hu
        lo, hi = ranges if isinstance(ranges, tuple) else ranges[phase]
        if not lo <= hu <= hi:
            problems.append(f"{phase} {name} median {hu:.0f} HU outside {lo}-{hi}")
    liver = structures == ID["liver"]
    liver_hu = float(np.median(image[liver])) - calibration_hu if liver.any() else np.nan
    rules = [
        ("liver_metastasis", phase == "portal", lambda hu: hu < liver_hu - 15, "not hypodense to the liver"),
        ("liver_hcc", phase == "arterial", lambda hu: hu > liver_hu + 5, "not brighter than the liver"),
        ("liver_hcc", phase in ("portal", "delayed"), lambda hu: hu < liver_hu, "does not wash out"),
    ]
    for name, applies, ok, what in rules:
        if applies and name in medians and "liver" not in fatty and np.isfinite(liver_hu) and not ok(medians[name]):
            problems.append(f"{phase} {name} {medians[name]:.0f} HU {what} ({liver_hu:.0f} HU)")
    return problems


PATHOLOGY_IDS = np.array([i for i, s in enumerate(STRUCTURES) if s.role != "anatomy"])


def parenchyma(structures: np.ndarray) -> np.ndarray:
    """Voxels that are no lesion, organ vessel or distractor: the organs' own tissue."""
    return ~np.isin(structures, PATHOLOGY_IDS)

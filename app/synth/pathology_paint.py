"""Paint an anatomy's pathology (app.synth.pathology) on the canvas, in three steps that
app.synth.painting calls in its order of precedence:
- `paint_ascites`, before the solid organs: fluid around the liver and the spleen, displacing
  fat and bowel, which the organs then cover;
- `paint_organ_insides`, right after the solid organs: the organs' own vessels and lesions
  inside their organ (exophytic lesions also outside it, over anything but another organ), then
  the distractor masses outside every organ, or pressed into the liver, a kidney or the spleen
  they meet (that organ's tissue near its surface gives way, sometimes to a fat plane first);
- `paint_effusion`, after the chest: pleural fluid in the dependent lung above the domes.
"""
from __future__ import annotations

import numpy as np

from app.synth.pathology import DENTED_ORGANS, base_of, organ_depth_mm
from app.synth.shapes import Canvas
from app.synth.structures import FLARE_OF, ID

# what fluid, an exophytic lesion or a distractor mass may not paint over: the great vessels, bone
KEEP = np.zeros(256, bool)
KEEP[[ID[n] for n in ("aorta", "ivc", "portal_vein", "splenic_vein", "sma", "vertebral_cortex",
                       "vertebral_marrow", "rib", "psoas")]] = True


def paint_ascites(anat, cv: Canvas, cavity, diaphragm) -> None:
    """Perihepatic and perisplenic fluid, `ascites_mm` thick, inside the cavity under the
    diaphragm."""
    mm = anat.pathology.ascites_mm
    if mm <= 0:
        return
    cavity = cavity & (cv.z < diaphragm - 3.5)
    for shape in (*anat.liver, *anat.spleen):
        base = base_of(shape)
        sl, v = cv.val(shape)
        if sl is not None:
            near = v < mm / float(np.mean(base.r))
            cv.put(sl, near & ~KEEP[cv.T[sl]], ID["ascites"], cavity)


def paint_organ_insides(anat, cv: Canvas, cavity, diaphragm) -> None:
    path = anat.pathology
    flare = FLARE_OF[cv.T]
    cavity = cavity & (cv.z < diaphragm - 3.5)   # what bulges or grows outside an organ stays under the diaphragm
    for tube, name in path.organ_vessels:
        organ = flare == FLARE_OF[ID[name]]
        sl, v = cv.val(tube)
        if sl is not None:
            cv.put(sl, v < 0, ID[name], organ)
    for side, sinus, pelvis in path.extra_sinuses:
        _paint_sinus(anat, cv, side, sinus, pelvis, cavity)
    for lesion in path.lesions:
        own = flare == lesion.organ
        where = (own | ((flare == 0) & cavity & ~KEEP[cv.T])) if lesion.exophytic else own
        sl, v = cv.val(lesion.shape)
        if sl is not None:
            cv.put(sl, v < 0, ID[lesion.kind], where)
    if path.distractors:
        free = (FLARE_OF[cv.T] == 0) & cavity & ~KEEP[cv.T]
        for mass in path.distractors:
            sl, v = cv.val(mass.shape)
            if sl is None:
                continue
            where = free[sl]
            if mass.press_mm > 0:
                flare_here = FLARE_OF[cv.T[sl]]
                dented = np.isin(flare_here, list(DENTED_ORGANS.values())) & cavity[sl] & (organ_depth_mm(anat, cv.x[sl], cv.y[sl], cv.z[sl]) < mass.press_mm)
                if mass.fat_plane_mm > 0:
                    plane = dented & (v >= 0) & (v < mass.fat_plane_mm / float(np.mean(base_of(mass.shape).r)))
                    cv.put(sl, plane, ID["visceral_fat"])
                where = where | dented
            cv.put(sl, (v < 0) & where, ID[mass.name])


def _paint_sinus(anat, cv, side, sinus, pelvis, cavity) -> None:
    """A duplex kidney's second sinus and pelvis, inside the cortex's rim as the first's."""
    if side >= len(anat.kidneys):
        return
    kidney = anat.kidneys[side]
    for struct, name in ((sinus, "renal_sinus"), (pelvis, "renal_pelvis")):
        sl, v = cv.val(struct)
        if sl is not None:
            rim = kidney.value(cv.x[sl], cv.y[sl], cv.z[sl]) < -0.12
            cv.put(sl, (v < 0) & rim, ID[name], cavity)


def paint_effusion(anat, cv: Canvas, diaphragm) -> None:
    """Pleural fluid layering posteriorly (the patient lies supine) above the domes."""
    mm = anat.pathology.effusion_mm
    if mm <= 0:
        return
    lung = cv.T == ID["lung"]
    layer = (cv.z < diaphragm + mm) & (cv.y > anat.yv - 0.6 * anat.b)
    cv.putf(lung & layer, ID["pleural_effusion"])

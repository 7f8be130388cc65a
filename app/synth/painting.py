"""Paint an anatomy's structures (app.synth.structures ids) at patient points.

Later writes overwrite earlier ones, so the order of the steps in `paint` is the order of
precedence: body, muscles, hollow organs, vessels, ascites, solid organs, their vessels and
lesions, masses outside them, pelvis, bone, chest, pleural effusion.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from app.synth.anatomy import CAVITY_BACK, Anatomy
from app.synth.pathology_paint import paint_ascites, paint_effusion, paint_organ_insides
from app.synth.shapes import Canvas
from app.synth.structures import ID

SOLID = (ID["liver"], ID["spleen"])
GUT = tuple(i for name, i in ID.items() if name.startswith(("stomach_", "small_bowel_", "colon_")))
NEAR_KIDNEY = GUT + (ID["duodenum_wall"], ID["duodenum_content"])
PANCREAS = (ID["pancreas"], ID["pancreas_fat"])
# a gut content cut by a fat plane gets its own wall back (value units, about 2-4 mm)
WALL_BAND = 0.3
WALL_OF = np.arange(256, dtype=np.uint8)   # structure id -> its gut wall's id (others: itself)
for _gut in ("stomach", "small_bowel", "colon", "duodenum"):
    for _name, _i in ID.items():
        if _name.startswith(_gut + "_") and _name != _gut + "_wall":
            WALL_OF[_i] = ID[_gut + "_wall"]


def paint(anat: Anatomy, x, y, z) -> np.ndarray:
    """Structure ids (uint8) at patient points (arrays of one shape)."""
    d = anat.deform(x, y, z)
    cv = Canvas(x + d[0], y + d[1], z + d[2])
    rho, mean_r, inner, cavity = _body(anat, cv)
    _back_muscles(anat, cv, inner, cavity)
    _mesentery(anat, cv)
    _hollow_organs(anat, cv, cavity)
    _vessels(anat, cv, cavity)
    dome_l = anat.dome(cv.x, cv.y, True)
    diaphragm = np.where(cv.x < 0, anat.dome(cv.x, cv.y, False), dome_l)   # its z above each point
    paint_ascites(anat, cv, cavity, diaphragm)
    _solid_organs(anat, cv, cavity, diaphragm)
    paint_organ_insides(anat, cv, cavity, diaphragm)
    _pelvis(anat, cv, cavity)
    rv = _spine(anat, cv)
    ring = _ribs(anat, cv, rho, mean_r)
    _chest(anat, cv, rho, ring, mean_r, rv, diaphragm, dome_l)
    paint_effusion(anat, cv, diaphragm)
    return cv.T


def _fill(cv: Canvas, struct, name: str, where=None, below: float = 0.0) -> tuple:
    """Paint `name` where the structure's implicit value is under `below`. Returns (sub-box, value)."""
    sl, v = cv.val(struct)
    if sl is not None:
        cv.put(sl, v < below, ID[name], where)
    return sl, v


def _body(anat, cv):
    """Abdominal cavity, muscle wall and the back's muscle, subcutaneous fat around them, and the
    table under the body.

    Returns (rho, mean_r, inner, cavity): the radius normalised to the cavity, its mean in mm, and
    the masks inside the muscle wall's outer surface and inside the cavity.
    """
    x, y, z, T = cv.x, cv.y, cv.z, cv.T
    a, b = anat.cav_a, anat.cav_b
    bb = np.where(y > 0, b * CAVITY_BACK, b)
    rho = np.sqrt((x / a) ** 2 + (y / bb) ** 2) + anat.body_wave(x, y, z)
    mean_r = 0.5 * (a + b)
    back = back_muscle_block(anat, x, y)
    inner = (rho < 1.0 + anat.wall / mean_r) | back
    T[(rho < 1.0 + (anat.wall + anat.fat) / mean_r) | back_muscle_block(anat, x, y, anat.fat)] = ID["subcutaneous_fat"]
    T[inner] = ID["abdominal_wall_muscle"]
    cavity = rho < 1.0
    T[back & ~cavity] = ID["paraspinal_muscle"]
    T[cavity] = ID["visceral_fat"]
    ty = max(b + anat.wall, anat.yv + anat.back_depth) + anat.fat + anat.tbl_gap
    T[(y > ty) & (y < ty + 12) & (np.abs(x) < 230)] = ID["table"]
    return rho, mean_r, inner, cavity


def back_muscle_block(anat, x, y, grow: float = 0.0) -> np.ndarray:
    """The muscle behind and beside the spine (erector spinae, quadratus lumborum), grown by
    `grow` mm (the subcutaneous fat over it). A rounded rectangle: the back is broad and flat."""
    half_w, depth = anat.back_half_w + grow, anat.back_depth + grow
    return (y > anat.yv) & ((x / half_w) ** 4 + ((y - anat.yv) / depth) ** 2 < 1.0)


def _back_muscles(anat, cv, inner, cavity):
    """Paraspinal muscles behind the spine, psoas beside it, growing downwards."""
    x, y, z = cv.x, cv.y, cv.z
    yv, s = anat.yv, anat.s
    para = ((np.abs(x) - 38 * s) / (32 * s)) ** 2 + ((y - (yv + 45 * s)) / (28 * s)) ** 2 < 1
    cv.putf(para, ID["paraspinal_muscle"], inner)
    pr = np.clip(6 + 0.18 * (max(anat.zk) + 40 - z), 0, 28) * s
    psoas = ((np.abs(x) - (32 * s + 0.6 * pr)) ** 2 + (y - yv) ** 2) < pr ** 2
    cv.putf(psoas, ID["psoas"], cavity)
    for gluteal in anat.gluteals:   # the pelvis behind and beside the iliac wings is muscle, not fat
        _fill(cv, gluteal, "gluteal_muscle", inner)


def _mesentery(anat, cv):
    """Mesenteric vessels, over the visceral fat only (bowel and organs painted later cover them)."""
    fat = cv.T == ID["visceral_fat"]
    for vessel in anat.mesenteric:
        _fill(cv, vessel, "mesenteric_vessel", fat)


def _hollow_organs(anat, cv, cavity):
    """Small bowel, colon (faeces mottled with gas), duodenum and stomach with their contents."""
    for tube, content in anat.small_bowel:
        sl, v = _fill(cv, tube, "small_bowel_wall", cavity)
        if sl is not None and content != "wall":
            cv.put(sl, v < -0.3, ID[f"small_bowel_{content}"], cavity)
    sl, v = _fill(cv, anat.colon, "colon_wall", cavity)
    if sl is not None:
        gas = anat.faeces_pattern(cv.x[sl], cv.y[sl], cv.z[sl]) > 0.3 * (1 - 2 * anat.colon_gas_share)
        cv.put(sl, v < -0.18, ID["colon_faeces"], cavity)
        cv.put(sl, (v < -0.18) & gas, ID["colon_gas"], cavity)
    sl, v = _fill(cv, anat.duodenum, "duodenum_wall", cavity)
    if sl is not None:
        cv.put(sl, v < -0.45, ID["duodenum_content"], cavity)
    _stomach(anat, cv, cavity)


def _stomach(anat, cv, cavity):
    """The stomach in front of the pancreas (the lesser sac): where the gland cuts it, its wall
    closes every face of the cut, since the contents are cut 4 mm wider than the wall."""
    sl, v = cv.val(anat.stomach)
    if sl is None:
        return
    xs, ys, zs = cv.x[sl], cv.y[sl], cv.z[sl]
    inside = (v < 0) & cavity[sl]
    cv.put(sl, inside & ~anat.behind_pancreas(xs, ys, zs), ID["stomach_wall"])
    content = (v < -0.12) & inside & ~anat.behind_pancreas(xs, ys, zs, grow=4.0)
    cv.put(sl, content, ID[f"stomach_{anat.stomach_content}"])
    if anat.stomach_gas:
        top = ys < anat.stomach.c[1] - 0.35 * anat.stomach.r[1]  # gas rises anteriorly (supine)
        cv.put(sl, content & top, ID["stomach_gas"])


def _vessels(anat, cv, cavity):
    """Aorta and IVC (also outside the cavity), SMA, renal vessels and the portal vein."""
    _fill(cv, anat.aorta, "aorta")
    _fill(cv, anat.ivc, "ivc")
    for struct, name in ((anat.sma, "sma"), *((t, "renal_vein") for t in anat.renal_veins),
                         *((t, "renal_artery") for t in anat.renal_arteries),
                         (anat.portal, "portal_vein")):
        _fill(cv, struct, name, cavity)


def _solid_organs(anat, cv, cavity, diaphragm):
    """Spleen, liver, gallbladder, pancreas with the splenic vein along it, adrenals, kidneys.

    The pancreas and the kidneys come after the liver and the spleen: they indent them, as the
    renal impression does, instead of disappearing inside them.
    """
    for e in anat.spleen:
        _fill(cv, e, "spleen", cavity)
    # the liver fills the domes up to the diaphragm, never above it
    under_diaphragm = cavity & (cv.z < diaphragm - 3.5)
    for e in anat.liver:
        _fill(cv, e, "liver", under_diaphragm)
    if anat.gall is not None:
        _fill(cv, anat.gall, "gallbladder", cavity)
    planes = ((0.3, SOLID), (anat.peripancreatic_fat, GUT))
    sl, v = _fill_with_fat_plane(cv, anat.pancreas, "pancreas", planes, cavity)
    if sl is not None and anat.pancreas_fat_share > 0:
        _lobulate(anat, cv, sl, v, cavity)
    _fill(cv, anat.splenic_v, "splenic_vein", cavity)
    for adrenal in anat.adrenals:
        _fill(cv, adrenal, "adrenal", cavity)
    # perirenal fat against the bowel; only a thin plane against the pancreas's tail, which
    # lies on the left kidney in patients
    planes = ((0.12, SOLID), (anat.perirenal_fat, NEAR_KIDNEY), (0.05, PANCREAS))
    for k, m, sn, pv in zip(anat.kidneys, anat.medulla, anat.sinus, anat.pelvis):
        if _fill_with_fat_plane(cv, k, "kidney_cortex", planes, cavity)[0] is None:
            continue
        for struct, name in ((m, "kidney_medulla"), (sn, "renal_sinus"), (pv, "renal_pelvis")):
            sl, v = cv.val(struct)
            if sl is not None:
                rim = k.value(cv.x[sl], cv.y[sl], cv.z[sl]) < -0.12   # the cortex keeps a rim
                cv.put(sl, (v < 0) & rim, ID[name], cavity)


def _fill_with_fat_plane(cv, struct, name: str, planes, where=None) -> tuple:
    """`_fill`, after putting fat where the structures of each (margin, ids) in `planes` come
    within that margin of it: organs that indent each other keep a fat plane between them, as in
    patients, instead of one organ lying inside another or merging with the bowel beside it.
    Returns (sub-box, value) as `_fill` does."""
    sl, v = cv.val(struct)
    if sl is not None:
        tissue = cv.T[sl]   # a view: writes go to the canvas
        for margin, ids in planes:
            tissue[(v < margin) & np.isin(tissue, ids)] = ID["visceral_fat"]
            if np.any(WALL_OF[list(ids)] != ids):   # a plane against the gut: its contents
                band = v < margin + WALL_BAND       # next to the plane become its wall
                tissue[band] = WALL_OF[tissue[band]]
        cv.put(sl, v < 0, ID[name], where)
    return sl, v


def _lobulate(anat, cv, sl, v, cavity):
    """Fat between the pancreas's lobules (lipomatosis): inside its outline, so still labelled
    pancreas, as annotators trace the gland's contour. The cut gives the drawn share of fat."""
    wave = anat.pancreas_lobules
    spread = float(np.sqrt(np.sum(wave.amp.astype(np.float64) ** 2) / 2))   # std of the field
    cut = NormalDist().inv_cdf(1.0 - anat.pancreas_fat_share) * spread
    clefts = (v < -0.05) & (wave(cv.x[sl], cv.y[sl], cv.z[sl]) > cut)
    cv.put(sl, clefts, ID["pancreas_fat"], cavity)


def _pelvis(anat, cv, cavity):
    """Iliac wings (a thin cortical plate with marrow), bladder, sacrum and femoral heads."""
    for wing in anat.iliac:
        sl, v = cv.val(wing)
        if sl is not None:
            cv.put(sl, v < 0, ID["iliac_cortex"])
            cv.put(sl, v < -0.45, ID["iliac_marrow"])
    _fill(cv, anat.bladder, "bladder", cavity)
    for bone, name in ((anat.sacrum, "sacrum"), *((head, "femoral_head") for head in anat.femoral_heads)):
        sl, v = cv.val(bone)
        if sl is not None:
            cv.put(sl, v < 0, ID[f"{name}_cortex"])
            cv.put(sl, v < -0.2, ID[f"{name}_marrow"])


def _spine(anat, cv):
    """Vertebral bodies with discs at fixed levels, canal, posterior elements. Returns the body radius."""
    x, y, z = cv.x, cv.y, cv.z
    yv, s = anat.yv, anat.s
    vx, vy = anat.vr
    rv = np.sqrt((x / vx) ** 2 + ((y - yv) / vy) ** 2)
    level = np.mod(z - anat.disc_z, anat.vert_pitch)
    cv.putf(rv < 1.0, ID["vertebral_cortex"])
    cv.putf(rv < 0.86, ID["vertebral_marrow"])
    cv.putf((rv < 1.0) & (level < 7 * s), ID["intervertebral_disc"])
    cy = yv + vy + 11 * s
    rc = np.sqrt(x ** 2 + (y - cy) ** 2)
    cv.putf((rc < 16 * s) & (rc > 9 * s) & (level > 9 * s), ID["vertebral_cortex"])
    cv.putf((np.abs(x) < 4 * s) & (y > cy) & (y < cy + 40 * s) & (level > 12 * s), ID["vertebral_cortex"])
    cv.putf(rc < 9 * s, ID["spinal_canal"])
    return rv


def _ribs(anat, cv, rho, mean_r):
    """Ribs: bands just inside the muscle wall, descending anteriorly. Returns the rib ring radius."""
    x, y, z, s = cv.x, cv.y, cv.z, anat.s
    ring = 1.0 + 0.5 * anat.wall / mean_r
    phi_back = np.abs(np.arctan2(x, y))         # 0 at the back, pi at the front
    zr = z - anat.rib_z0 + anat.rib_slope * phi_back / np.pi
    kk = np.round(zr / anat.rib_pitch)
    # a rib is about 10 mm tall and 7 mm thick; the floating 11th and 12th end laterally, the
    # upper ones reach the costal margin in front
    near = (np.abs(zr - kk * anat.rib_pitch) < 5.0 * s) & (kk >= 0) & (kk < anat.n_ribs)
    near &= (np.abs(rho - ring) * mean_r < 3.5 * s) & (phi_back > 0.25) & (phi_back < 1.5 + 0.12 * np.minimum(kk, 8))
    cv.putf(near, ID["rib"])
    return ring


def _chest(anat, cv, rho, ring, mean_r, rv, diaphragm, dome_l):
    """Diaphragm over both domes, lungs above them (outside the mediastinum), heart."""
    x, y, z, s = cv.x, cv.y, cv.z, anat.s
    chest = rho < ring - 4 / mean_r
    cv.putf(chest & (np.abs(z - diaphragm) < 3.5) & (rv > 1.05), ID["diaphragm"])
    lungR = chest & (z > diaphragm + 3.5) & (x < -22 * s)
    lungL = chest & (z > diaphragm + 3.5) & (x > 22 * s)
    media = (np.abs(x) < 45 * s) & (y > anat.yv - 5)
    cv.putf((lungR | lungL) & ~media & (rv > 1.05), ID["lung"])
    cv.putf((anat.heart.value(x, y, z) < 0) & (z > dome_l + 5), ID["heart"], chest)

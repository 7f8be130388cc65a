"""Realism checks of the phantoms against patient anatomy (ranges from the FLARE21 notes).

    python -m app.synth.realism --cases 12 --seed 5 [--preview OUT.png --real-ct CT --real-labels LAB]

- organ volumes, measured on the whole anatomy (a 4 mm grid over the body, so no field-of-view
  crop), against typical adult volumes;
- median organ HU per contrast phase, on rendered phantoms, against literature ranges;
- positions: liver right, spleen left and posterior, kidneys beside the spine at about T12-L3 with
  the right one lower, pancreas anterior to the aorta with its tail near the splenic hilum;
- the back: the vertebral body 6-15 cm in front of the skin of the back (muscle behind the spine).
With --preview, the phantom and the real CT are drawn side by side, one above the other.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from app.synth.anatomy import Anatomy
from app.synth.appearance import FATTY_DROP_HU
from app.synth.painting import paint
from app.synth.pathology import DENTED_ORGANS
from app.synth.realism_pathology import lesion_hu_problems, lesion_problems, parenchyma
from app.synth.structures import FLARE_OF, ID

# Typical adult volumes, ml (FLARE21 notes), and the wider range every single phantom must keep
# (atrophic glands of the elderly down to about 20 ml).
TYPICAL_ML = {"liver": (1200, 1800), "kidney": (250, 350), "spleen": (150, 250), "pancreas": (60, 100)}
ALLOWED_ML = {"liver": (700, 2600), "kidney": (160, 480), "spleen": (70, 450), "pancreas": (20, 170)}
# Median organ HU per phase (literature values with room for partial volume and calibration).
HU_RANGE = {
    "native": {"liver": (0, 80), "spleen": (20, 65), "kidney": (5, 50), "pancreas": (-40, 60)},
    "portal": {"liver": (75, 140), "spleen": (85, 150), "kidney": (100, 215), "pancreas": (15, 125)},
    "arterial": {"liver": (40, 120), "spleen": (70, 180), "kidney": (60, 260), "pancreas": (20, 150)},
    "delayed": {"liver": (45, 125), "spleen": (45, 125), "kidney": (80, 220), "pancreas": (10, 115)},
}
# Variants change what an organ may measure: absent, enlarged, atrophic, cystic.
VARIANT_ML = {
    "splenectomy": {"spleen": (0, 0)}, "splenomegaly": {"spleen": (200, 1600)},
    "nephrectomy": {"kidney": (70, 260)}, "atrophic_kidney": {"kidney": (110, 420)},
    "duplex_kidney": {"kidney": (180, 560)}, "polycystic_kidneys": {"kidney": (450, 1800)},
    "hepatomegaly": {"liver": (1300, 3900)}, "cirrhosis": {"liver": (600, 2600)},
    "liver_resection": {"liver": (450, 2600)},
}
ORGAN_LABEL = {"liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}
STEP_MM = 4.0


@dataclass
class AnatomyFacts:
    volumes_ml: dict[str, float]
    centroids: dict[str, np.ndarray]   # LPS mm
    kidney_centres_z: tuple[float, float]
    kidney_levels: tuple[float, float]  # vertebrae below (-) or above (+) the L1/L2 disc, per kidney centre
    pancreas_tail_to_spleen_mm: float
    liver_top_below_dome_mm: float
    vertebra_to_back_skin_mm: float     # in the midline, at the kidneys' level


def anatomy_facts(anat: Anatomy) -> AnatomyFacts:
    """Volumes and positions of the organs of one anatomy, on a 4 mm grid over the whole body."""
    half_w, half_d = anat.body_half_size
    xs = np.arange(-half_w - 8, half_w + 8, STEP_MM, dtype=np.float32)
    ys = np.arange(-half_d - 8, half_d + 8, STEP_MM, dtype=np.float32)
    zs = np.arange(anat.z_pelvis - 120, anat.zdR + 40, STEP_MM, dtype=np.float32)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    structures = paint(anat, x, y, z)
    flare = FLARE_OF[structures]
    vox_ml = STEP_MM ** 3 / 1000
    volumes = {name: float((flare == lab).sum() * vox_ml) for name, lab in ORGAN_LABEL.items()}
    cents = {name: _centroid(flare == lab, x, y, z) for name, lab in ORGAN_LABEL.items()}
    cents["aorta"] = _centroid(structures == ID["aorta"], x, y, z)
    kz = tuple(float(k.c[2]) for k in anat.kidneys)
    levels = tuple((zk - anat.disc_z) / anat.vert_pitch for zk in kz)
    tail = anat.pancreas.pts[-1]
    spleen_pts = np.stack([x[flare == 3], y[flare == 3], z[flare == 3]], 1)
    tail_gap = float(np.min(np.linalg.norm(spleen_pts - tail, axis=1))) if len(spleen_pts) else np.inf
    liver_top = float(z[flare == 1].max()) if (flare == 1).any() else -np.inf
    return AnatomyFacts(volumes, cents, kz, levels, tail_gap, anat.zdR - liver_top,
                        _back_skin_y(structures, ys, zs, xs, float(np.mean(kz))) - anat.yv)


def _back_skin_y(structures, ys, zs, xs, z_mm: float) -> float:
    """y (mm) of the back's skin in the midline at height z_mm: the last body voxel behind the spine."""
    column = structures[int(np.argmin(np.abs(zs - z_mm))), :, int(np.argmin(np.abs(xs)))]
    body = (column != ID["outside"]) & (column != ID["table"])
    return float(ys[np.flatnonzero(body)[-1]]) if body.any() else np.nan


def _centroid(mask, x, y, z) -> np.ndarray:
    if not mask.any():
        return np.full(3, np.nan)
    return np.array([x[mask].mean(), y[mask].mean(), z[mask].mean()])


def position_problems(f: AnatomyFacts) -> list[str]:
    """What is anatomically out of place in one phantom (empty: nothing). An organ the patient
    lacks (nephrectomy, splenectomy) is not placed, so the rules about it are skipped."""
    c = f.centroids
    has = {name: bool(np.all(np.isfinite(c[name]))) for name in c}
    two_kidneys = len(f.kidney_centres_z) == 2
    rules = [
        (c["liver"][0] < -20, "liver centroid is not on the patient's right", ("liver",)),
        (c["spleen"][0] > 40, "spleen is not on the left", ("spleen",)),
        (c["spleen"][1] > c["pancreas"][1], "spleen is not posterior to the pancreas", ("spleen", "pancreas")),
        (c["kidney"][1] > c["pancreas"][1] + 20, "kidneys are not posterior to the pancreas", ("kidney", "pancreas")),
        (c["pancreas"][1] < c["aorta"][1], "pancreas is not anterior to the aorta", ("pancreas",)),
        (not two_kidneys or f.kidney_centres_z[0] < f.kidney_centres_z[1] + 10, "right kidney is well above the left",
         ("kidney",)),
        (all(-2.5 < lv < 1.5 for lv in f.kidney_levels), "kidney centres are not at about L1-L2 (T12-L3 span)",
         ("kidney",)),
        (f.pancreas_tail_to_spleen_mm < 50, "pancreas tail is far from the splenic hilum", ("spleen",)),
        (-15 < f.liver_top_below_dome_mm < 25, "liver dome is not under the right hemidiaphragm", ("liver",)),
        (c["spleen"][2] > c["kidney"][2], "spleen is not above the kidneys' centre", ("spleen", "kidney")),
        (60 < f.vertebra_to_back_skin_mm < 150, "vertebral body is not 6-15 cm in front of the skin of the back", ()),
    ]
    return [msg for ok, msg, needs in rules if not ok and all(has[n] for n in needs)]


DENT_SHARE = 0.15   # how much smaller an organ that a mass presses into may be


def allowed_ml(variants: list[str], bulging: set[str] = frozenset(), dented: bool = False) -> dict[str, tuple[float, float]]:
    """Each organ's allowed volume for this patient: the adult range, or the variant's own; an
    organ with exophytic lesions (labelled as it) may be half as large again; where a mass
    presses into the organs (`dented`), they may be DENT_SHARE smaller."""
    allowed = dict(ALLOWED_ML)
    for variant in variants:
        for organ, lo_hi in VARIANT_ML.get(variant.replace("_right", "").replace("_left", ""), {}).items():
            allowed[organ] = lo_hi
    return {organ: (lo * (1 - DENT_SHARE) if dented and organ in DENTED_ORGANS else lo, hi * 1.5 if organ in bulging else hi)
            for organ, (lo, hi) in allowed.items()}


def volume_problems(f: AnatomyFacts, variants: list[str] = (), bulging: set[str] = frozenset(),
                    dented: bool = False) -> list[str]:
    return [f"{organ} {f.volumes_ml[organ]:.0f} ml outside {lo:g}-{hi:g}"
            for organ, (lo, hi) in allowed_ml(list(variants), bulging, dented).items() if not lo <= f.volumes_ml[organ] <= hi]


def organ_median_hu(image: np.ndarray, labels: np.ndarray, structures: np.ndarray | None = None) -> dict[str, float]:
    """Median HU of each organ; with the structure map, of its own tissue only (no lesion,
    vessel or distractor inside its label)."""
    own = np.ones(labels.shape, bool) if structures is None else parenchyma(structures)
    return {name: float(np.median(image[(labels == lab) & own])) for name, lab in ORGAN_LABEL.items()
            if ((labels == lab) & own).sum() > 50}


def hu_problems(phase: str, medians: dict[str, float], calibration_hu: float = 0.0,
                fatty: tuple[str, ...] = ()) -> list[str]:
    """Organ medians outside the literature range of the phase, once the scanner's calibration
    offset is taken off (the generator draws it wider than a well-kept scanner's few HU, to
    cover scanners and kernels); an organ drawn fatty (steatosis, fatty pancreas) may lie up to
    FATTY_DROP_HU lower."""
    ranges = HU_RANGE.get(phase, {})
    problems = []
    for organ, hu in medians.items():
        if organ not in ranges:
            continue
        lo, hi = ranges[organ]
        lo -= FATTY_DROP_HU if organ in fatty else 0.0
        if not lo <= hu - calibration_hu <= hi:
            problems.append(f"{phase} {organ} median {hu - calibration_hu:.0f} HU without the calibration "
                            f"offset ({calibration_hu:+.0f}) outside {lo:.0f}-{hi:.0f}")
    return problems


def case_problems(seed: int, index: int, size: str, sick: bool = False) -> list[str]:
    """Every realism problem of one phantom: anatomy, volumes, lesions, HU."""
    from app.synth.phantom import make_phantom

    anat = Anatomy(np.random.default_rng([seed, index]), sick)
    facts = anatomy_facts(anat)
    ph = make_phantom(seed, index, size, sick)
    names = {lab: name for name, lab in ORGAN_LABEL.items()}
    bulging = {names[les.organ] for les in anat.pathology.lesions if les.exophytic}
    issues = (position_problems(facts) + volume_problems(facts, ph.info["variants"], bulging, anat.pathology.dents_organs)
              + lesion_problems(anat))
    if not ph.info["random_contrast"]:
        calibration, fatty = ph.info["calibration_hu"], tuple(ph.info["fatty"])
        issues += hu_problems(ph.info["phase"], organ_median_hu(ph.image, ph.labels, ph.structures), calibration, fatty)
        issues += lesion_hu_problems(ph.info["phase"], ph.image, ph.structures, calibration, fatty)
    vols = " ".join(f"{k} {v:.0f}" for k, v in facts.volumes_ml.items())
    print(f"  {index}: {ph.info['phase']:8s} {ph.info['field']:21s} ml: {vols}  variants {ph.info['variants']} "
          f"lesions {ph.info['lesions']} distractors {ph.info['distractors']}")
    return issues


def main(argv=None) -> int:
    from app.synth.phantom import make_phantom

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--size", default="small")
    ap.add_argument("--preview", default=None, help="PNG: the first phantom above the real CT")
    ap.add_argument("--real-ct", default="tests/data/example_ct.nii.gz")
    ap.add_argument("--real-labels", default="tests/data/example_flare_labels.nii.gz")
    ap.add_argument("--sick", action="store_true", help="lesions in every organ (app synth --sick)")
    args = ap.parse_args(argv)
    problems = 0
    for i in range(args.cases):
        issues = case_problems(args.seed, i, args.size, args.sick)
        problems += len(issues)
        print(f"case {i}: {'; '.join(issues) or 'ok'}")
    if args.preview:
        from app.synth.compare import side_by_side
        side_by_side(make_phantom(args.seed, 0, "moderate", args.sick), args.real_ct, args.real_labels, args.preview)
        print(f"preview: {args.preview}")
    print(f"problems={problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

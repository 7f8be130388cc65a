"""Which change of the image trims or swells the weights' masks: the same phantom anatomies
rendered as drawn and with one property of the scanner shifted, each predicted and scored.

    python -m bench.shift_bias [--weights weights] [--cases 6] [--seed 2050] [--variants ...]

The maintainers' real CTs show livers trimmed at their edges (docs/training.md, the measured real
CTs). A mask that shrinks when the image is blurrier, noisier or calibrated differently than the
training phantoms says which difference to the real CT can trim it; one that holds rules it out.
Per organ the table gives the mean DSC and the volume ratio (the predicted millilitres of all
cases over their reference millilitres, so a case weighs by its organ's volume, not by how finely
it is sampled: below 1, the masks are smaller than the organs; each case's own ratio is in the
lines above the table). Every variant renders the
same anatomy, field of view and noise draw; only the named property changes. Cases drawn with
random contrast are skipped, as in `bench.edge_profile`. Phantoms, not patients.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from app.evaluation.report import pooled_volume_ratio
from app.evaluation.scoring import CaseScore, mask_volumes_ml
from app.evaluation.surface import dice
from app.labels import ORGANS
from app.synth.anatomy import Anatomy
from app.synth.appearance import KEEP_UNDER_RANDOM, Appearance, draw_appearance
from app.synth.scanner import random_grid, render
from app.synth.structures import FLARE_OF, TISSUE_OF

SOFT = ~np.isin(TISSUE_OF, KEEP_UNDER_RANDOM)   # structures whose HU a calibration offset moves


def _soft_tissue_offset(hu: float):
    return lambda look: replace(look, structure_hu=(look.structure_hu + np.where(SOFT, hu, 0)).astype(np.float32))


# name: (change of the appearance, grid size)
VARIANTS = {
    "as drawn": (lambda look: look, "moderate"),
    "blur +1.5 mm": (lambda look: replace(look, psf_mm=look.psf_mm + 1.5, slice_sigma=look.slice_sigma + 0.3),
                     "moderate"),
    "noise +20 HU": (lambda look: replace(look, noise_hu=look.noise_hu + 20.0), "moderate"),
    "soft tissue -25 HU": (_soft_tissue_offset(-25.0), "moderate"),
    "soft tissue +25 HU": (_soft_tissue_offset(25.0), "moderate"),
    "fine grid (0.6-1.0 mm)": (lambda look: look, "full"),
}


def render_variant(seed: int, index: int, change, size: str) -> tuple[sitk.Image, np.ndarray, Appearance]:
    """The phantom (seed, index) as `make_phantom` draws it, with `change` applied to its appearance
    and its grid drawn at `size`. Returns the CT, its FLARE labels and the appearance used."""
    rng = np.random.default_rng([int(seed), int(index)])
    anat = Anatomy(rng, False)
    look = change(draw_appearance(rng))
    grid = random_grid(rng, anat, size)
    image, structures = render(anat, look, grid, rng)
    return grid.image(image), FLARE_OF[structures], look


def score(pred: np.ndarray, ref: np.ndarray, spacing=(10.0, 10.0, 10.0)) -> CaseScore:
    """Per organ the DSC and (predicted ml, reference ml), as `app evaluate` scores a case."""
    volumes = mask_volumes_ml(ref, pred, spacing)
    dsc = {organ.label: dice(ref == organ.label, pred == organ.label) for organ in ORGANS}
    return CaseScore("", dsc, volume_ml=volumes)


def summary_row(name: str, scores: list[CaseScore]) -> str:
    cells = [f"{np.mean([s.dsc[organ.label] for s in scores]):.3f} ({pooled_volume_ratio(scores, organ.label):.2f})"
             for organ in ORGANS]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--cases", type=int, default=6, help="phantoms drawn (random-contrast ones are skipped)")
    ap.add_argument("--seed", type=int, default=2050)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    from app.inference.predictor import Predictor

    predictor = Predictor.from_weights(args.weights, device="cpu", progress=False)
    rows = {}
    for name in args.variants:
        change, size = VARIANTS[name]
        rows[name] = []
        for i in range(args.cases):
            image, ref, look = render_variant(args.seed, i, change, size)
            if look.random_contrast:
                continue
            pred = sitk.GetArrayFromImage(predictor.predict_image(image))
            s = score(pred, ref, image.GetSpacing())
            rows[name].append(s)
            print(name, i, " ".join(f"{o.name} {s.dsc[o.label]:.3f} {pooled_volume_ratio([s], o.label):.2f}"
                                    for o in ORGANS), flush=True)
    print(f"mean DSC (volume ratio predicted/reference), weights {args.weights}, seed {args.seed}")
    print("| variant | " + " | ".join(o.name for o in ORGANS) + " |")
    print("|---|" + "---|" * len(ORGANS))
    for name, scores in rows.items():
        print(summary_row(name, scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

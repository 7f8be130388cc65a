"""What an organ's edge looks like: the real CT against phantoms, as HU profiles across the
label's surface.

    python -m bench.edge_profile [--phantoms 6] [--seed 2040] [--size moderate]

For each organ, every voxel within 10 mm of the label's surface gets its signed distance to it
(mm, negative inside the label), and the profile is the median HU per 1 mm bin, scaled so that 0
is the median of the tissue just outside (6-10 mm out) and 1 the organ's median deep inside
(6-10 mm in). Two numbers sum it up:
- `half_mm`: where the profile crosses 0.5. 0 means the label's edge lies where the image is half
  way between organ and surroundings; negative, that the label reaches past the visible edge
  (a generous label), positive, that it stops short of it;
- `width_mm`: from 0.1 to 0.9, how gradual the edge is (blur and partial volume).
The phantoms are measured as the generator now renders them and with each slice sampled at its
centre only (the rendering before version 10), so the table shows what slice integration changes.
The real CT's labels were made by a segmentation tool, not by hand: their edge convention is the
tool's.
"""
from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

ORGANS = {"liver": 1, "kidney": 2, "spleen": 3}
BINS = np.arange(-10.0, 10.5, 1.0)


def signed_distance(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_zyx)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    return np.where(mask, -inside, outside)


def edge_profile(image: np.ndarray, mask: np.ndarray, spacing_zyx) -> dict | None:
    if mask.sum() < 200:
        return None
    dist = signed_distance(mask, spacing_zyx)
    deep, out = image[(dist < -6) & (dist > -10)], image[(dist > 6) & (dist < 10)]
    if deep.size < 50 or out.size < 50:
        return None
    lo, hi = float(np.median(out)), float(np.median(deep))
    centres, values = [], []
    for a, b in zip(BINS[:-1], BINS[1:]):
        sel = (dist >= a) & (dist < b)
        if sel.sum() >= 20:
            centres.append(0.5 * (a + b))
            values.append((float(np.median(image[sel])) - lo) / (hi - lo))
    centres, values = np.array(centres), np.array(values)
    return {"half_mm": _crossing(centres, values, 0.5), "width_mm": _crossing(centres, values, 0.1)
            - _crossing(centres, values, 0.9), "contrast_hu": hi - lo}


def _crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """Distance where the profile (falling from inside to outside) first drops through `level`."""
    for i in range(len(x) - 1):
        if y[i] >= level > y[i + 1]:
            return float(x[i] + (y[i] - level) / (y[i] - y[i + 1]) * (x[i + 1] - x[i]))
    return float("nan")


def measure(image: np.ndarray, labels: np.ndarray, spacing_zyx) -> dict[str, dict]:
    return {name: edge_profile(image.astype(np.float32), labels == lab, spacing_zyx)
            for name, lab in ORGANS.items()}


def _row(title: str, results: list[dict]) -> str:
    cells = []
    for name in ORGANS:
        got = [r[name] for r in results if r.get(name)]
        if not got:
            cells.append("-")
            continue
        half = np.nanmedian([g["half_mm"] for g in got])
        width = np.nanmedian([g["width_mm"] for g in got])
        cells.append(f"{half:+.1f} / {width:.1f}")
    return f"| {title} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=6)
    ap.add_argument("--seed", type=int, default=2040)
    ap.add_argument("--size", default="moderate")
    ap.add_argument("--real-ct", default="tests/data/example_ct.nii.gz")
    ap.add_argument("--real-labels", default="tests/data/example_flare_labels.nii.gz")
    args = ap.parse_args(argv)
    from app.synth import scanner
    from app.synth.phantom import make_phantom

    ct = sitk.ReadImage(args.real_ct)
    real = measure(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(sitk.ReadImage(args.real_labels)),
                   ct.GetSpacing()[::-1])
    rows = {"real CT (labels from a segmentation tool)": [real]}
    for title, offsets in (("phantoms, slices integrated (now)", scanner.SLICE_SUBSAMPLES),
                           ("phantoms, slice centres only (before)", np.zeros(1, np.float32))):
        scanner.SLICE_SUBSAMPLES = offsets
        results = []
        for i in range(args.phantoms):
            ph = make_phantom(args.seed, i, args.size)
            if not ph.info["random_contrast"]:
                results.append(measure(ph.image, ph.labels, ph.grid.spacing[::-1]))
        rows[title] = results
    print("median half_mm / width_mm per organ (half_mm < 0: the label reaches past the half-way HU)")
    print("| set | " + " | ".join(ORGANS) + " |")
    print("|---|" + "---|" * len(ORGANS))
    for title, results in rows.items():
        print(_row(title, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two-stage prediction against whole-volume prediction, side by side in one run, on the CPU.

    python -m bench.roi [--work build/roi] [--features 8] [--tiles fewest|exact] [--margin-mm MM]
    python -m bench.roi --agreement-mode accurate --no-timing     # accurate mode with --roi

Cases: the bundled real CT resampled to a FLARE-like grid (0.8 x 0.8 x 2.5 mm), and one full-size
lesion-bearing phantom (unseen seed) of each field of view: cropped around the liver, abdomen,
abdomen and pelvis, chest to pelvis. Networks, all in fast mode:
- the localiser of the demo weights (stage one of every two-stage run);
- the FLARE21 plan's geometry (patch 80 x 192 x 160 at 2.5 x 0.8 x 0.8 mm, 5 poolings) with random
  weights, for time and network passes only, without postprocessing (the components of a random
  network's masks are noise, which would time nothing a real case costs). `--features 32` is the FLARE21 network itself
  (about 7 s per pass here); the default 8 base features keeps the bench near a quarter of an hour,
  and understates the time ratio, since the network is then a smaller share of each run;
- the demo folds, for agreement: Dice per organ of two-stage against whole-volume masks, and of
  each against the reference labels (where the two differ, which one is closer to the truth).
Per case: the region's share of the network grid, network passes and seconds of each stage with
and without the region, and the region recall (the share of reference organ voxels that lie in
the part of the mask the two-stage run computes; each must, so it must be 1).

Last line: `passes_ratio=<x> time_ratio=<y> region_recall=<r> min_dice_vs_full=<d>`, passes and
seconds summed over the cases (whole over two-stage), recall and Dice the smallest."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.inference.orientation import reorient
from app.oracle import random_v1_model
from bench import inputs
from bench.run import dice_of_arrays

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("liver", "abdomen", "abdomen_pelvis", "chest_abdomen_pelvis")
SEED = 3030   # unseen: the demo weights trained on seed 1010, their evaluations use 2024 and 2030


def find_case(seed: int, field: str, sick: bool, tries: int = 200) -> int:
    """The first case index of `seed` whose field of view is `field`, drawn without rendering."""
    from app.synth.anatomy import Anatomy
    from app.synth.appearance import draw_appearance
    from app.synth.scanner import random_grid
    for index in range(tries):
        rng = np.random.default_rng([seed, index])
        anat = Anatomy(rng, sick)
        draw_appearance(rng)
        if random_grid(rng, anat, "full").field == field:
            return index
    raise RuntimeError(f"no {field} case in the first {tries} of seed {seed}")


def make_cases(folder: Path, seed: int) -> list[str]:
    """CT and reference labels of every case, made once and kept in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["real_ct_flare_grid"]
    if not (folder / "real_ct_flare_grid_ct.nii.gz").exists():
        ct = inputs.real_ct_flare_grid()
        labels = sitk.Resample(sitk.ReadImage(str(ROOT / "tests" / "data" / "example_flare_labels.nii.gz")), ct,
                               sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        sitk.WriteImage(ct, str(folder / "real_ct_flare_grid_ct.nii.gz"), True)
        sitk.WriteImage(labels, str(folder / "real_ct_flare_grid_labels.nii.gz"), True)
    from app.synth.phantom import make_phantom
    for field in FIELDS:
        name = f"phantom_{field}"
        names.append(name)
        if (folder / f"{name}_ct.nii.gz").exists():
            continue
        index = find_case(seed, field, sick=True)
        phantom = make_phantom(seed, index, "full", sick=True)
        sitk.WriteImage(phantom.grid.image(phantom.image), str(folder / f"{name}_ct.nii.gz"), True)
        sitk.WriteImage(phantom.grid.image(phantom.labels), str(folder / f"{name}_labels.nii.gz"), True)
        print(f"made {name}: seed {seed} case {index}, {phantom.info['shape_xyz']} voxels", flush=True)
    return names


def flare_plans_with(features: int) -> dict:
    from bench.gpu import flare_plans
    plans = flare_plans(tiny=False)
    plans["base_num_features"] = features
    return plans


def flare_weights(folder: Path, demo: Path, features: int) -> Path:
    """The FLARE21 plan's geometry with random weights, and the demo weights' localiser beside it."""
    from app.weights_export import copy_localiser, export_model_folder

    out = folder / f"flare_plan_{features}_features"
    if not (out / "MANIFEST.json").exists():
        with tempfile.TemporaryDirectory() as tmp:
            # no component rule: random weights' masks are noise, whose components time nothing real
            model = random_v1_model(Path(tmp) / "model", flare_plans_with(features), folds=(0, 1),
                                    largest_component_labels=())
            orientation = json.loads((demo / "plans.json").read_text()).get("training_orientation")
            export_model_folder(model, out, training_orientation=orientation)
    return copy_localiser(demo, out)   # every run: the demo weights' localiser as it is now


def run_case(predictor, image: sitk.Image) -> dict:
    from app.inference.stages import StageTimer
    timer = StageTimer()
    mask = predictor.predict_array(image, timer)
    return {"mask": mask, "seconds": timer.total, "stages": timer.rounded(),
            "passes": predictor.window.last_network_passes, "roi": dict(predictor.last_roi)}


def region_recall(labels: sitk.Image, roi: dict, orientation: str | None) -> float:
    """Reference organ voxels inside the two-stage run's output box (on the reoriented grid)."""
    reference = sitk.GetArrayFromImage(reorient(labels, orientation)) > 0
    if not roi.get("output_box"):
        return 1.0   # whole volume: every voxel is computed
    inside = reference[tuple(slice(a, b) for a, b in roi["output_box"])].sum()
    return float(inside / max(1, reference.sum()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "roi")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="demo weights with a localiser")
    parser.add_argument("--features", type=int, default=8, help="base features of the FLARE21-plan network")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cases", nargs="*", help="only these cases (names as printed)")
    parser.add_argument("--tiles", choices=("fewest", "exact"), default=None,
                        help="two-stage tiling (README; default: the mode's)")
    parser.add_argument("--margin-mm", type=float, default=None, help="region margin (default: predict's)")
    parser.add_argument("--agreement-mode", choices=("fast", "accurate"), default="fast",
                        help="mode of the demo folds' runs (accurate: --roi against accurate mode's whole volume)")
    parser.add_argument("--no-timing", action="store_true",
                        help="no FLARE21-plan runs: passes and seconds are the demo folds' own")
    args = parser.parse_args(argv)
    from app.inference.predictor import Predictor
    import torch
    torch.manual_seed(0)

    names = make_cases(args.work / "cases", args.seed)
    names = [n for n in names if not args.cases or n in args.cases]
    options = {"roi_tiles": args.tiles, **({} if args.margin_mm is None else {"roi_margin_mm": args.margin_mm})}
    if args.tiles is None:
        args.tiles = "mode"
    networks = [("demo", args.weights, args.agreement_mode, True)]
    if not args.no_timing:
        networks.append(("flare", flare_weights(args.work, args.weights, args.features), "fast", False))
    predictors = {(net, roi): Predictor.from_weights(weights, device="cpu", mode=mode, roi=roi, progress=False,
                                                     paired_organs=paired, **options)
                  for net, weights, mode, paired in networks for roi in (False, True)}
    timed = "demo" if args.no_timing else "flare"
    orientation = predictors["demo", True].plan.training_orientation
    rows = []
    for name in names:
        rows.append(_case_row(args.work / "cases", name, predictors, [net for net, *_ in networks], timed, orientation))
        print(json.dumps(rows[-1]), flush=True)
    _print_table(rows)
    (args.work / f"roi_results_{args.tiles}_{args.agreement_mode}.json").write_text(
        json.dumps({"rows": rows, "features": None if args.no_timing else args.features,
                    "agreement_mode": args.agreement_mode, **options}, indent=1))
    _print_summary(rows)
    return 0


def _case_row(folder: Path, name: str, predictors: dict, nets: list[str], timed: str, orientation) -> dict:
    """One case through every predictor: the timed network's passes and seconds, whole volume against
    two-stage, and the demo folds' masks against each other and against the reference labels."""
    image = sitk.ReadImage(str(folder / f"{name}_ct.nii.gz"))
    labels = sitk.ReadImage(str(folder / f"{name}_labels.nii.gz"))
    runs = {key: run_case(p, image) for key, p in predictors.items()}
    whole, two = runs[timed, False], runs[timed, True]
    recall = min(region_recall(labels, runs[net, True]["roi"], orientation) for net in nets)
    dice = dice_of_arrays(runs["demo", True]["mask"], runs["demo", False]["mask"])
    # against the reference labels too: a mask that moved with the tiles may have moved either way
    reference = sitk.GetArrayFromImage(labels)
    accuracy = {"whole": dice_of_arrays(runs["demo", False]["mask"], reference),
                "two_stage": dice_of_arrays(runs["demo", True]["mask"], reference)}
    return {"case": name, "shape_xyz": list(image.GetSize()), "region_fraction": two["roi"].get("region_fraction"),
            "fallback": two["roi"].get("fallback"), "passes_whole": whole["passes"], "passes_two": two["passes"],
            "s_whole": round(whole["seconds"], 2), "s_two": round(two["seconds"], 2),
            "localiser_s": two["stages"].get("localiser"), "stages_whole": whole["stages"],
            "stages_two": two["stages"], "region_recall": round(recall, 5), "dice_vs_full": dice,
            "voxels_differing": int((runs["demo", True]["mask"] != runs["demo", False]["mask"]).sum()),
            "dice_vs_reference": accuracy}


def _print_summary(rows: list[dict]) -> None:
    passes_ratio = sum(r["passes_whole"] for r in rows) / max(1, sum(r["passes_two"] for r in rows))
    time_ratio = sum(r["s_whole"] for r in rows) / max(1e-9, sum(r["s_two"] for r in rows))
    recall = min(r["region_recall"] for r in rows)
    min_dice = min(min(r["dice_vs_full"].values()) for r in rows)
    gain = min(r["dice_vs_reference"]["two_stage"][k] - r["dice_vs_reference"]["whole"][k]
               for r in rows for k in r["dice_vs_reference"]["whole"])
    print(f"against the reference labels, two-stage minus whole-volume Dice, the least over cases and organs: "
          f"{gain:+.4f}")
    print(f"passes_ratio={passes_ratio:.2f} time_ratio={time_ratio:.2f} region_recall={recall:.4f} "
          f"min_dice_vs_full={min_dice:.4f}")


def _print_table(rows: list[dict]) -> None:
    print(f"\n{'case':<30}{'size (x y z)':>16}{'region':>8}{'passes':>12}{'seconds':>15}{'localiser':>10}"
          f"{'recall':>8}  dice vs whole (liver kidney spleen pancreas)")
    for r in rows:
        size = "x".join(str(v) for v in r["shape_xyz"])
        print(f"{r['case']:<30}{size:>16}{r['region_fraction'] or 1.0:>8.2f}"
              f"{r['passes_whole']:>6}/{r['passes_two']:<5}{r['s_whole']:>7.1f}/{r['s_two']:<7.1f}"
              f"{r['localiser_s'] or 0:>10.2f}{r['region_recall']:>8.4f}  "
              + " ".join(f"{v:.4f}" for v in r["dice_vs_full"].values()) + f"  ({r['voxels_differing']} voxels differ)")
    print("\ndice vs reference labels, whole / two-stage (liver kidney spleen pancreas)")
    for r in rows:
        whole, two = r["dice_vs_reference"]["whole"], r["dice_vs_reference"]["two_stage"]
        print(f"{r['case']:<30}" + " ".join(f"{whole[k]:.4f}/{two[k]:.4f}" for k in whole))


if __name__ == "__main__":
    raise SystemExit(main())

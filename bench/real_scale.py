"""The real recipe at real scale, on a CPU: full-size phantoms -> `app train --planner default`
(nnU-Net's own plan, one fold, 2 epochs x 2 iterations) -> weights -> `python -m app predict`
against stock nnU-Net v1 predicting from the trained model folder.

    python -m bench.real_scale [--work build/real_scale] [--cases 5] [--batch-size 1]

It proves that the parts the tests never run at this size work (the default planner, the
preprocessing of 512 x 512 x N CTs, the export of a ~30 M-parameter network, prediction with it),
not accuracy: 4 iterations learn nothing. It prints the plan, the seconds and peak RAM of each
stage, checks plans.json's training orientation, and ends with
`plan=<patch> params=<M> dice_vs_stock=<d>` (exit 1 when d < 0.99 or a check fails).

What it trims to fit about a quarter of an hour of a 2-core CPU (each is an option; measured:
22 minutes on a 2-core machine shared with other jobs, see docs/training.md):
- 5 phantoms: nnU-Net's 5-fold split needs 5 cases;
- a batch of 1 instead of the plan's 2 (one forward and backward pass of the default network
  takes about a minute here);
- no full-resolution validation (`--validation-cases 0`): one full-size case is 75-200 tiles;
- prediction without mirroring, on one case cropped around its organs to about 1.25 patches
  in-plane, and written in the training orientation, so that stock (which ignores orientation)
  and ours (which reorients) see the same voxels.
Ours runs with `--stock-postprocessing` (app.oracle.OURS_AS_STOCK): stock v1 applies no two-kidney
rule, so both sides postprocess alike.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.oracle import OURS_AS_STOCK, stock_predict_command

REPO = Path(__file__).resolve().parents[1]
TASK = "Task502_RealScale"
CROP_IN_PLANE_PATCHES = 1.25


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue   # the process ended meanwhile
        pid = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_stage(name: str, cmd: list[str], work: Path, env: dict | None = None) -> dict:
    """Run one stage, sampling the RAM of its whole process tree twice a second; stop on failure."""
    print(f"== {name}", flush=True)
    log = work / f"{name.split()[0]}{'_stock' if 'stock' in name else ''}.log"
    start, peak = time.time(), 0
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            peak = max(peak, _tree_rss_bytes(proc.pid))
            time.sleep(0.5)
    seconds = time.time() - start
    output = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log}:\n{output[-3000:]}")
    print(f"   {seconds:.0f} s, peak RAM {peak / 2**30:.2f} GB", flush=True)
    return {"name": name, "seconds": seconds, "peak_rss_gb": peak / 2**30, "output": output}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "build" / "real_scale")
    parser.add_argument("--cases", type=int, default=5, help="full-size phantoms to train on (5-fold split: >= 5)")
    parser.add_argument("--seed", type=int, default=4200)
    parser.add_argument("--batch-size", type=int, default=1, help="0: the plan's own batch size")
    parser.add_argument("--validation-cases", type=int, default=0,
                        help="held-out cases validated at full resolution (0: none)")
    parser.add_argument("--keep", action="store_true", help="reuse the phantoms of an earlier run")
    return parser.parse_args(argv)


def make_phantoms(args, task: Path, stages: list) -> None:
    if args.keep and len(list((task / "imagesTr").glob("*.nii.gz"))) == args.cases:
        print(f"phantoms: kept from an earlier run in {task}")
        return
    shutil.rmtree(task, ignore_errors=True)
    shutil.rmtree(args.work / "phantoms", ignore_errors=True)
    stages.append(run_stage("synth", [sys.executable, "-m", "app", "synth", "--out", str(args.work / "phantoms"),
                                      "--cases", str(args.cases), "--seed", str(args.seed), "--size", "full",
                                      "--workers", "2", "--nnunet-task", str(task)], args.work))


def train(args, task: Path, weights: Path, stages: list) -> dict:
    shutil.rmtree(args.work / "train", ignore_errors=True)
    cmd = [sys.executable, "-m", "app", "train", "--task-dir", str(task), "--planner", "default", "--folds", "0",
           "--epochs", "2", "--iterations", "2", "--val-iterations", "1", "--work-dir", str(args.work / "train"),
           "--processes", "2", "--da-workers", "1", "--seed", "0", "--no-validation-tta",
           "--validation-cases", str(args.validation_cases), "--out", str(weights)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    stage = run_stage("train", cmd, args.work)
    stages.append(stage)
    for line in stage["output"].splitlines():
        if "planned and preprocessed in" in line or "trained in" in line or "exported to" in line:
            print("   " + line.strip())
    return json.loads((weights / "MANIFEST.json").read_text())


def case_for_prediction(task: Path, plan: dict, folder: Path) -> str:
    """The first phantom, cropped around its labelled organs and put in the training orientation."""
    name = sorted(p.name[:-len("_0000.nii.gz")] for p in (task / "imagesTr").glob("*_0000.nii.gz"))[0]
    image = sitk.ReadImage(str(task / "imagesTr" / f"{name}_0000.nii.gz"))
    labels = sitk.ReadImage(str(task / "labelsTr" / f"{name}.nii.gz"))
    if plan.get("training_orientation"):
        image = sitk.DICOMOrient(image, plan["training_orientation"])
        labels = sitk.DICOMOrient(labels, plan["training_orientation"])
    # plans.json is in nnunet's (z, y, x) order, sitk sizes in (x, y, z)
    extent_mm = np.array(plan["patch_size"][::-1], float) * np.array(plan["target_spacing"][::-1])
    extent_mm[:2] *= CROP_IN_PLANE_PATCHES
    size = np.minimum(np.round(extent_mm / np.array(image.GetSpacing())).astype(int), image.GetSize())
    organs = np.argwhere(sitk.GetArrayFromImage(labels) > 0)[:, ::-1]   # (x, y, z) indices
    centre = (organs.min(0) + organs.max(0)) // 2
    start = np.clip(centre - size // 2, 0, np.array(image.GetSize()) - size)
    crop = sitk.RegionOfInterest(image, [int(v) for v in size], [int(v) for v in start])
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(crop, str(folder / f"{name}_0000.nii.gz"))
    print(f"prediction case: {name} cropped to {list(crop.GetSize())} voxels "
          f"({[round(s * v) for s, v in zip(crop.GetSize(), crop.GetSpacing())]} mm), orientation "
          f"{sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(crop.GetDirection())}")
    return name


def ours_command(weights: Path, inputs: Path, output: Path) -> list[str]:
    """Our predict as stock runs here (one fold, no mirroring), postprocessing as stock does."""
    return [sys.executable, "-m", "app", "predict", "-i", str(inputs), "-o", str(output), "--weights", str(weights),
            "--folds", "0", "--no-tta", "--device", "cpu", "--quiet", *OURS_AS_STOCK]


def predict_both(args, weights: Path, model_dir: Path, inputs: Path, stages: list) -> tuple[Path, Path]:
    ours, stock = args.work / "pred_ours", args.work / "pred_stock"
    for folder in (ours, stock):
        shutil.rmtree(folder, ignore_errors=True)
    stages.append(run_stage("predict (ours)", ours_command(weights, inputs, ours), args.work))
    argv, env = stock_predict_command(model_dir, inputs, stock, folds=(0,), tta=False)
    stages.append(run_stage("predict (stock nnU-Net v1)", argv, args.work, env=env))
    return ours, stock


def dice_vs_stock(ours: Path, stock: Path, name: str) -> float:
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(ours / f"{name}.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(stock / f"{name}.nii.gz")))
    dice = {}
    for label in (1, 2, 3, 4):
        x, y = a == label, b == label
        total = int(x.sum() + y.sum())
        dice[label] = 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total
    counts = {label: (int((a == label).sum()), int((b == label).sum())) for label in range(5)}
    print(f"voxels per label (ours, stock): {counts}")
    print(f"Dice ours vs stock per label: { {k: round(v, 4) for k, v in dice.items()} }")
    if all(ours_n == 0 and stock_n == 0 for label, (ours_n, stock_n) in counts.items() if label):
        print("note: both masks are background only; the comparison then says little")
    return min(dice.values())


def dominant_code(task: Path) -> tuple[Counter, set[str]]:
    """Orientation codes of the training images, and those of the most common axis order."""
    codes, orders = [], []
    for path in sorted((task / "imagesTr").glob("*.nii.gz")):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        direction = np.abs(np.array(reader.GetDirection()).reshape(3, 3))
        orders.append(tuple(direction.argmax(0)))
        codes.append(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reader.GetDirection()))
    top_order = Counter(orders).most_common(1)[0][0]
    within = Counter(c for c, o in zip(codes, orders) if o == top_order)
    best = max(within.values())
    return Counter(codes), {c for c, n in within.items() if n == best}


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    task, weights, stages = args.work / TASK, args.work / "weights", []
    t0 = time.time()
    make_phantoms(args, task, stages)
    manifest = train(args, task, weights, stages)
    plan = json.loads((weights / "plans.json").read_text())
    params_m = manifest["plan"]["parameters"] / 1e6
    print(f"plan (nnU-Net default, {manifest['plan']['num_stages']} stage(s), 3d_fullres = the last): "
          f"patch {plan['patch_size']}, spacing {plan['target_spacing']} mm, "
          f"batch {manifest['plan']['batch_size']} (trained with {manifest['batch_size']}), "
          f"pools {manifest['plan']['pool_op_kernel_sizes']}, {params_m:.1f} M parameters")
    codes, expected = dominant_code(task)
    orientation_ok = plan.get("training_orientation") in expected
    print(f"training orientation in plans.json: {plan.get('training_orientation')} (training images: "
          f"{dict(codes)}; expected one of {sorted(expected)}): {'ok' if orientation_ok else 'WRONG'}")
    name = case_for_prediction(task, plan, args.work / "pred_in")
    model_dir = _model_dir(args)
    ours, stock = predict_both(args, weights, model_dir, args.work / "pred_in", stages)
    d = dice_vs_stock(ours, stock, name)
    print("\nstage                         seconds   peak RAM (GB, all processes)")
    for stage in stages:
        print(f"{stage['name']:<30}{stage['seconds']:>7.0f}   {stage['peak_rss_gb']:.2f}")
    print(f"total {time.time() - t0:.0f} s")
    print(f"plan={'x'.join(str(v) for v in plan['patch_size'])} params={params_m:.1f} dice_vs_stock={d:.4f}")
    return 0 if d >= 0.99 and orientation_ok else 1


def _model_dir(args) -> Path:
    found = sorted((args.work / "train").glob(f"nnUNet_results/nnUNet/3d_fullres/{TASK}/*__nnUNetPlansv2.1"))
    if len(found) != 1:
        raise RuntimeError(f"expected one trained model folder, found {found}")
    return found[0]


if __name__ == "__main__":
    sys.exit(main())

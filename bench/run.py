"""Stock nnU-Net v1 against `python -m app predict`, side by side, on the same weights and inputs.

    python -m bench.run --quick    # the real example CT on its own grid (make bench-quick)
    python -m bench.run --full     # + FLARE-like grid, a 512x512x200 phantom, 3 sizes (make bench)

Per case: wall time of each run and the speed-up (stock over ours), our per-stage times, peak RSS
of each (/usr/bin/time -v), per-label Dice between the two masks, and fast mode against accurate.
The last line is `speedup=<x> min_dice=<y>` (the smallest speed-up and Dice over the cases). Ours
runs with `--stock-postprocessing` (app.oracle.OURS_AS_STOCK): stock v1 applies no two-kidney
rule, so both sides postprocess alike; the rule's own effect is measured elsewhere (docs/training.md)."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

from bench import inputs
from app.oracle import OURS_AS_STOCK, stock_predict_command, v1_folder_from_weights

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict, log: Path) -> dict:
    """Run under /usr/bin/time -v: wall seconds, peak RSS in MB, exit code."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    wall = time.perf_counter() - start
    text = log.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"seconds": round(wall, 2), "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "exit_code": proc.returncode}


def ours_command(extra: list[str]) -> list[str]:
    """`sh predict.sh` as the organisers run it, postprocessing as stock does (OURS_AS_STOCK)."""
    return ["sh", str(ROOT / "predict.sh"), "--overwrite", "--quiet", *OURS_AS_STOCK, *extra]


def ours(input_dir: Path, output_dir: Path, weights: Path, extra: list[str], log: Path) -> dict:
    env = dict(os.environ, INPUT_DIR=str(input_dir), OUTPUT_DIR=str(output_dir), WEIGHTS_DIR=str(weights),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    result = timed(ours_command(extra), env, log)
    lines = (output_dir / "predict_log.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    result.update(stages=record["stages"], startup_s=record["startup_s"], weights_load_s=record["weights_load_s"])
    return result


def dice(a: Path, b: Path) -> dict[int, float]:
    return dice_of_arrays(*(sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (a, b)))


def dice_of_arrays(x, y) -> dict[int, float]:
    """Dice per organ label between two masks; 1.0 where both lack the label."""
    out = {}
    for label in (1, 2, 3, 4):
        p, q = x == label, y == label
        total = int(p.sum() + q.sum())
        out[label] = 1.0 if total == 0 else round(2 * float((p & q).sum()) / total, 4)
    return out


def bench_case(name: str, image: sitk.Image, weights: Path, v1_model: Path, work: Path, args) -> dict:
    case_dir = work / name
    shutil.rmtree(case_dir, ignore_errors=True)
    inputs.write_case(image, case_dir / "in", name)
    folds = args.folds or [int(p.stem.split("_")[1]) for p in sorted(weights.glob("fold_*.safetensors"))]
    fold_args = ["--folds", *map(str, folds)]
    device = ["--device", args.device]
    argv, env = stock_predict_command(v1_model, case_dir / "in", case_dir / "stock", folds, True, 0.5)
    stock = timed(argv, env, case_dir / "stock.log")
    accurate = ours(case_dir / "in", case_dir / "ours", weights, [*fold_args, *device], case_dir / "ours.log")
    fast = ours(case_dir / "in", case_dir / "fast", weights, ["--mode", "fast", *device], case_dir / "fast.log")
    mask = f"{name}.nii.gz"
    row = {"case": name, "size_xyz": list(image.GetSize()), "spacing": [round(s, 3) for s in image.GetSpacing()],
           "folds": folds, "stock": stock, "ours": accurate, "fast": fast,
           "speedup": round(stock["seconds"] / accurate["seconds"], 2),
           "fast_speedup_vs_stock": round(stock["seconds"] / fast["seconds"], 2),
           "dice_ours_vs_stock": dice(case_dir / "stock" / mask, case_dir / "ours" / mask),
           "dice_fast_vs_accurate": dice(case_dir / "ours" / mask, case_dir / "fast" / mask)}
    print(json.dumps(row), flush=True)
    return row


def cases(full: bool):
    yield "realct_3mm", sitk.ReadImage(str(inputs.REAL_CT))
    if full:
        yield "realct_flare_grid", inputs.real_ct_flare_grid()
        yield "phantom_512x512x200", inputs.phantom((512, 512, 200))
        for side, slices in ((256, 100), (384, 150)):  # with the 512 case: time against voxel count
            yield f"phantom_{side}x{side}x{slices}", inputs.phantom((side, side, slices))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--quick", action="store_true")
    group.add_argument("--full", action="store_true")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights")
    parser.add_argument("--folds", type=int, nargs="+", help="default: every fold in the weights")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    v1_model = v1_folder_from_weights(args.weights, args.work / "v1_model")
    rows = [bench_case(name, image, args.weights, v1_model, args.work, args) for name, image in cases(args.full)]
    summary = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
               "rows": rows}
    (args.work / "results.json").write_text(json.dumps(summary, indent=1))
    speedup = min(r["speedup"] for r in rows)
    min_dice = min(min(r["dice_ours_vs_stock"].values()) for r in rows)
    print(f"speedup={speedup} min_dice={min_dice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One GPU benchmark call (bench/gpu.sh): ours against stock nnU-Net v1 on a synthetic
512 x 512 x 200 phantom with the FLARE21 nnU-Net plan (30.8 M parameters, patch 80 x 192 x 160,
random weights: fine for timing).

Runs, each a fresh process timed from outside with the whole GPU's memory sampled by NVML:
ours accurate (5 folds x 8 flips) and fast, each with its stage table from predict_log.jsonl;
ours and stock at 1 fold x 8 flips, which both finish, with the Dice between their masks; stock
at 5 folds only with --stock-all-folds. Then the FLOP floor: FLOPs per tile x passes over the
matrix-product rate measured after a warm-up. `--tiny` runs the same steps with a small plan and
phantom on the CPU, to check the script; GPU figures are then "na"."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from app.gpumem import GpuMemorySampler
from app.oracle import random_v1_model, stock_predict_command, tiny_v1_plans
from app.weights_export import copy_localiser, export_model_folder
from bench import inputs
from bench.run import dice, ours_command
from bench.stage_table import last_records, memory_line, stage_seconds, stage_table

ROOT = Path(__file__).resolve().parent.parent
FLARE_POOLS = [[1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
FLARE_CONVS = [[1, 3, 3]] + [[3, 3, 3]] * 5


def flare_plans(tiny: bool) -> dict:
    if tiny:
        return tiny_v1_plans((5.0, 5.0, 5.0), (32, 48, 48), 4, 3)
    plans = tiny_v1_plans((2.5, 0.8, 0.8), (80, 192, 160), 32, 5)
    stage = plans["plans_per_stage"][0]
    stage["pool_op_kernel_sizes"], stage["conv_kernel_sizes"] = FLARE_POOLS, FLARE_CONVS
    return plans


def sampled_run(argv: list[str], env: dict, log: Path, timeout: float | None = None) -> dict:
    """Run, sampling GPU memory from outside. A run stopped at `timeout` reports its time as a
    lower bound (`timed_out`)."""
    with GpuMemorySampler() as sampler, open(log, "w") as out:
        start = time.perf_counter()
        try:
            code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  timeout=timeout).returncode
            timed_out = False
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
        seconds = time.perf_counter() - start
    summary = sampler.summary()
    return {"seconds": round(seconds, 2), "exit_code": code, "timed_out": timed_out, **{k: summary.get(k) for k in
            ("gpu_mem_stable_mb", "gpu_mem_peak_mb", "gpu_mem_auc_mb_s", "gpu_note")}}


def ours(work: Path, weights: Path, name: str, extra: list[str], device: str) -> dict:
    out = work / name
    env = dict(os.environ, INPUT_DIR=str(work / "in"), OUTPUT_DIR=str(out), WEIGHTS_DIR=str(weights))
    result = sampled_run(ours_command(["--device", device, *extra]), env, work / f"{name}.log")
    records = last_records(out / "predict_log.jsonl")
    record = records[-1]
    network_s = record["stages"].get("network", 0.0) or 1e-9
    result.update(stages=stage_seconds(records), network_passes=record["network_passes"],
                  passes_per_s=round(record["network_passes"] / network_s, 2),
                  stage_table=stage_table(records, result["seconds"]),
                  **{k: record.get(k) for k in ("torch_max_allocated_mb", "torch_max_reserved_mb",
                                                "gpu_used_after_cuda_init_mb", "preprocess_on", "roi")})
    return result


def matmul_rate(device: str, warmup: int = 3, repeats: int = 10) -> float:
    """FLOP/s of square matrix products after `warmup` untimed ones (clocks up, kernels chosen):
    fp16 on CUDA, as the network runs there; float32 on the CPU, as accurate mode runs there."""
    import torch
    n, dtype = (8192, torch.float16) if device == "cuda" else (1024, torch.float32)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        a @ a
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    sync()
    return repeats * 2 * n ** 3 / (time.perf_counter() - start)


def flop_floor(weights: Path, passes: int, device: str) -> dict:
    """FLOPs of one tile (counted on the meta device) x passes, over the measured rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from app.inference.network import build_network
    from app.inference.weights import Plan
    plan = Plan.from_json(json.loads((weights / "plans.json").read_text()))
    with torch.device("meta"):
        network = build_network(plan.network).eval()
    with FlopCounterMode(display=False) as counter:
        network(torch.empty(1, 1, *plan.patch_size, device="meta"))
    tile_flops = counter.get_total_flops()
    rate = matmul_rate(device)
    return {"tflop_per_tile": round(tile_flops / 1e12, 4), "rate_tflops": round(rate / 1e12, 3),
            "rate_dtype": "fp16" if device == "cuda" else "fp32", "floor_s": round(tile_flops * passes / rate, 2)}


def stock_against_ours(model: Path, work: Path, report: dict, save, folds, timeout, ours_key: str, ours_dir: str):
    """Stock v1 at the given folds x 8 flips, against our run of the same folds."""
    tag = f"{len(folds)}fold"
    argv, env = stock_predict_command(model, work / "in", work / f"stock_{tag}", folds, True, 0.5)
    save(f"stock_{tag}_8flips", sampled_run(argv, env, work / f"stock_{tag}.log", timeout))
    stock = report[f"stock_{tag}_8flips"]
    ratio = round(stock["seconds"] / report[ours_key]["seconds"], 2)
    save(f"speedup_{tag}_8flips", f">= {ratio}" if stock["timed_out"] else ratio)
    stock_mask = work / f"stock_{tag}" / "phantom.nii.gz"
    if stock_mask.is_file():
        save(f"dice_ours_vs_stock_{tag}", dice(work / ours_dir / "phantom.nii.gz", stock_mask))


def print_summary(report: dict) -> None:
    for name in ("ours_accurate", "ours_fast", "ours_fast_two_stage", "ours_accurate_roi", "ours_1fold_8flips"):
        if name in report:
            run = report[name]
            print(f"\n## {name}: {run['seconds']} s wall, {run['network_passes']} network passes, "
                  f"preprocessing on {run['preprocess_on']}, two stages: {run.get('roi') or 'no'}\n"
                  + "\n".join(run["stage_table"]))
            print("memory: " + memory_line(run))
    for key in ("stock_1fold_8flips", "stock_5fold_8flips"):
        if key in report:
            tag = key.split("_")[1]
            print(f"\n{key}: {report[key]['seconds']} s (timed out: {report[key]['timed_out']}), "
                  f"memory: {memory_line(report[key])}; speed-up of ours: {report.get(f'speedup_{tag}_8flips')}; "
                  f"Dice ours vs stock: {report.get(f'dice_ours_vs_stock_{tag}', 'no stock mask')}")
    floor = report["flop_floor"]
    network_s = report["ours_accurate"]["stages"].get("network")
    print(f"\nFLOP floor: {floor['tflop_per_tile']} TFLOP per tile, {floor['rate_tflops']} TFLOP/s "
          f"({floor['rate_dtype']}, after a warm-up): {floor['floor_s']} s for accurate mode's passes, "
          f"against {network_s} s of network time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu")
    parser.add_argument("--tiny", action="store_true", help="small plan and phantom: a CPU check of the script")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--stock-all-folds", action="store_true", help="also stock at 5 folds x 8 flips (slow)")
    parser.add_argument("--stock-timeout", type=float, default=None,
                        help="seconds per stock run; a run stopped there gives a lower bound of the speed-up")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    work = ROOT / "bench" / "out"
    args.out.mkdir(parents=True, exist_ok=True)
    model = random_v1_model(work / "gpu_v1", flare_plans(args.tiny), folds=(0, 1, 2, 3, 4), logit_gain=1.0)
    weights = export_model_folder(model, work / "gpu_weights")
    size = (96, 96, 40) if args.tiny else (512, 512, 200)
    inputs.write_case(inputs.phantom(size), work / "in", "phantom")
    report = {"device": device, "size_xyz": size}

    def save(key, value):  # after every step, so that a call cut short keeps what it measured
        report[key] = value
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=1))

    save("ours_accurate", ours(work, weights, "ours", [], device))
    save("ours_fast", ours(work, weights, "fast", ["--mode", "fast"], device))
    # two stages: the same folds with the demo weights' localiser beside them (issue: <= 5 s per
    # case in fast mode, and accurate mode with --roi at least 2x faster than without)
    orientation = json.loads((ROOT / "weights" / "plans.json").read_text()).get("training_orientation")
    roi_weights = copy_localiser(ROOT / "weights", export_model_folder(model, work / "gpu_weights_roi",
                                                                        training_orientation=orientation))
    save("ours_fast_two_stage", ours(work, roi_weights, "fast_roi", ["--mode", "fast"], device))
    save("ours_accurate_roi", ours(work, roi_weights, "ours_roi", ["--roi"], device))
    save("flop_floor", flop_floor(weights, report["ours_accurate"]["network_passes"], device))
    save("ours_1fold_8flips", ours(work, weights, "ours_1fold", ["--folds", "0"], device))
    if not args.skip_stock:
        stock_against_ours(model, work, report, save, (0,), args.stock_timeout, "ours_1fold_8flips", "ours_1fold")
        if args.stock_all_folds:
            stock_against_ours(model, work, report, save, (0, 1, 2, 3, 4), args.stock_timeout, "ours_accurate", "ours")
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("ours")}, indent=1))
    print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

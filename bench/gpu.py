"""One GPU benchmark call (bench/gpu.sh): stock nnU-Net v1 against ours on a synthetic
512 x 512 x 200 phantom with the FLARE21 nnU-Net plan (30.8 M parameters, patch 80 x 192 x 160,
random weights: fine for timing), 5 folds x 8 flips, then fast mode.

Reports per run: wall time, FLARE stable-peak GPU memory (NVML, whole GPU, sampled from outside),
tiles per second, and our distance to the FLOP floor (FLOPs per tile x passes / measured fp16
rate). `--tiny` runs the same steps with a small plan and phantom, to check the script on a CPU."""
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
from app.weights_export import export_model_folder
from bench import inputs
from bench.run import dice

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
    result = sampled_run(["sh", str(ROOT / "predict.sh"), "--quiet", "--overwrite", "--device", device, *extra],
                         env, work / f"{name}.log")
    record = json.loads((out / "predict_log.jsonl").read_text().splitlines()[-1])
    network_s = record["stages"].get("network", 0.0) or 1e-9
    result.update(stages=record["stages"], network_passes=record["network_passes"],
                  passes_per_s=round(record["network_passes"] / network_s, 2),
                  torch_max_allocated_mb=record.get("torch_max_allocated_mb"))
    return result


def flop_floor(weights: Path, passes: int) -> dict:
    """FLOPs of one tile (counted on the meta device) and the card's measured fp16 matmul rate."""
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
    if not torch.cuda.is_available():
        return {"tflop_per_tile": round(tile_flops / 1e12, 3), "fp16_tflops": None, "floor_s": None}
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    rate = 20 * 2 * 8192 ** 3 / (time.perf_counter() - start)
    return {"tflop_per_tile": round(tile_flops / 1e12, 3), "fp16_tflops": round(rate / 1e12, 1),
            "floor_s": round(tile_flops * passes / rate, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu")
    parser.add_argument("--tiny", action="store_true", help="small plan and phantom: a CPU check of the script")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--stock-timeout", type=float, default=None,
                        help="seconds; a stock run stopped there gives a lower bound of the speed-up")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    work = ROOT / "bench" / "out"
    args.out.mkdir(parents=True, exist_ok=True)
    plans = flare_plans(args.tiny)
    model = random_v1_model(work / "gpu_v1", plans, folds=(0, 1, 2, 3, 4), logit_gain=1.0)
    weights = export_model_folder(model, work / "gpu_weights")
    size = (96, 96, 40) if args.tiny else (512, 512, 200)
    inputs.write_case(inputs.phantom(size), work / "in", "phantom")
    report = {"device": device, "size_xyz": size}

    def save(key, value):  # after every step, so that a call cut short keeps what it measured
        report[key] = value
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=1))

    save("ours_accurate", ours(work, weights, "ours", [], device))
    save("ours_fast", ours(work, weights, "fast", ["--mode", "fast"], device))
    save("flop_floor", flop_floor(weights, report["ours_accurate"]["network_passes"]))
    if not args.skip_stock:
        argv, env = stock_predict_command(model, work / "in", work / "stock", (0, 1, 2, 3, 4), True, 0.5)
        save("stock", sampled_run(argv, env, work / "stock.log", args.stock_timeout))
        ratio = round(report["stock"]["seconds"] / report["ours_accurate"]["seconds"], 2)
        save("speedup_accurate", f">= {ratio}" if report["stock"]["timed_out"] else ratio)
        stock_mask = work / "stock" / "phantom.nii.gz"
        if stock_mask.is_file():
            save("dice_ours_vs_stock", dice(work / "ours" / "phantom.nii.gz", stock_mask))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

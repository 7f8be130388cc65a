"""Network throughput and memory on a GPU, per configuration of one network call: samples per
call (tiles x flips), memory format and cuDNN autotuning. FLARE21 nnU-Net plan (30.8 M
parameters, patch 80 x 192 x 160), random weights, fp16 autocast as the predictor runs it.

Prints one row per configuration: passes/s and torch's peak allocated memory. It chooses the
predictor's GPU defaults (samples per call), see BENCHMARKS.md. `--tiny`: a small plan on the CPU,
to check the script."""
from __future__ import annotations

import argparse
import json
import time

import torch

from app.inference.network import build_network
from app.inference.weights import Plan
from app.weights_export import plans_to_json
from bench.gpu import flare_plans


def time_config(network, patch, batch: int, channels_last: bool, device, seconds: float) -> dict:
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = network.to(memory_format=fmt)
    x = torch.randn(batch, 1, *patch, device=device).contiguous(memory_format=fmt)
    dtype = torch.float16 if device.type == "cuda" else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return torch.softmax(network(x).float(), 1)

    call(), call()  # warm-up (cuDNN autotuning when enabled)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        call()
        sync()
        calls += 1
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"batch": batch, "channels_last": channels_last, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "passes_per_s": round(calls * batch / elapsed, 2), "peak_alloc_mb": None if peak is None else round(peak)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per configuration")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    plan = Plan.from_json(plans_to_json(flare_plans(args.tiny)))
    network = build_network(plan.network).to(device).eval()
    rows = []
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        for channels_last in (True, False):
            for batch in (1, 2, 4, 8):
                if benchmark and batch == 8:
                    continue
                rows.append(time_config(network, plan.patch_size, batch, channels_last, device, args.seconds))
                print(json.dumps(rows[-1]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{'bench':>5} {'cl':>5} {'batch':>5} {'passes/s':>9} {'peak MB':>8}")
    for r in rows:
        print(f"{r['cudnn_benchmark']!s:>5} {r['channels_last']!s:>5} {r['batch']:>5} {r['passes_per_s']:>9} "
              f"{r['peak_alloc_mb']!s:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Which CPU execution path runs the network fastest? Variants side by side in one process on a
demo-sized Generic_UNet (8 base features, 4 poolings, patch 64^3), 8 flips of one tile per step.

    python -m bench.network_cpu [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from app.inference.network import build_network
from app.inference.weights import NetworkSpec

SPEC = NetworkSpec(1, 8, 5, ((2, 2, 2),) * 4, ((3, 3, 3),) * 5)
PATCH = (64, 64, 64)


def seconds_per_step(step, repeats: int) -> float:
    step()  # warm-up: oneDNN primitives, compilation
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def variants(network, x8):
    def batched():
        network(x8)

    def one_by_one():
        for i in range(8):
            network(x8[i:i + 1])

    yield "eager, 8 flips batched", batched
    yield "eager, 8 flips one by one (stock v1)", one_by_one
    cl_net = build_network(SPEC).eval().to(memory_format=torch.channels_last_3d)
    cl_net.load_state_dict(network.state_dict())
    x8_cl = x8.contiguous(memory_format=torch.channels_last_3d)
    yield "channels_last_3d, batched", lambda: cl_net(x8_cl)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            network(x8)
    yield "bf16 autocast, batched", bf16

    def cl_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cl_net(x8_cl)
    yield "channels_last_3d + bf16 autocast, batched", cl_bf16
    traced = torch.jit.freeze(torch.jit.trace(network, x8[:1]))
    yield "torch.jit.trace + freeze, batched", lambda: traced(x8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    network = build_network(SPEC).eval()
    x8 = torch.randn(8, 1, *PATCH)
    print(f"threads={torch.get_num_threads()}  patch={PATCH}")
    with torch.inference_mode():
        results = {name: seconds_per_step(step, args.repeats) for name, step in variants(network, x8)}
    base = results["eager, 8 flips one by one (stock v1)"]
    for name, sec in results.items():
        print(f"{name:<42}{sec:8.2f} s per tile x 8 flips   {base / sec:5.2f}x")


if __name__ == "__main__":
    main()

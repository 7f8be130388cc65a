"""`python -m app efficiency --inputs DIR --outputs DIR (--image TAG | --command CMD)`.

The organisers' timing harness, reproduced: for each case, a fresh inputs folder holding only
that case, one fresh run of the container or command, wall time around the whole run, and the
whole GPU's used memory sampled from outside every 0.1 s. Writes a CSV, and per case a PNG of
memory over time and a JSON with the raw samples.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from app.gpumem import SAMPLE_INTERVAL_S, GpuMemorySampler

INPUT_SUFFIX = ".nii.gz"
CHANNEL_SUFFIX = "_0000"
CSV_COLUMNS = ["case", "seconds", "exit_code", "mask_written", "gpu_mem_stable_mb",
               "gpu_mem_peak_mb", "gpu_mem_auc_mb_s", "gpu_samples", "gpu_name", "gpu_note"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", required=True, type=Path,
                        help="folder of test images, <name>_0000.nii.gz")
    parser.add_argument("--outputs", required=True, type=Path,
                        help="folder the runs write their masks into (kept across cases)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--image", help="container image to run with buildah, one container per case")
    how.add_argument("--command", help='shell command run per case with INPUT_DIR/OUTPUT_DIR set, '
                                       'e.g. "sh predict.sh"')
    parser.add_argument("--report", type=Path, default=None,
                        help="where the CSV, plots and samples go (default: OUTPUTS/efficiency)")
    parser.add_argument("--gpu", default=None,
                        help="NVML index or UUID of the GPU to sample (default: first of "
                             "CUDA_VISIBLE_DEVICES, else 0)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="kill a run after this many seconds (exit code 124)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")


def case_name(image_file: Path) -> str:
    """`validation_001_0000.nii.gz` -> `validation_001`, the name the mask must have."""
    stem = image_file.name[: -len(INPUT_SUFFIX)]
    return stem[: -len(CHANNEL_SUFFIX)] if stem.endswith(CHANNEL_SUFFIX) else stem


def find_cases(inputs: Path) -> list[Path]:
    if not inputs.is_dir():
        raise FileNotFoundError(f"inputs folder not found: {inputs}")
    cases = sorted(p for p in inputs.iterdir() if p.is_file() and p.name.endswith(INPUT_SUFFIX))
    if not cases:
        raise FileNotFoundError(f"no {INPUT_SUFFIX} images in {inputs}")
    return cases


def _mask_written(outputs: Path, name: str, since: float) -> bool:
    mask = outputs / f"{name}{INPUT_SUFFIX}"
    # Written by this run, not left over from an earlier one (1 s slack for coarse mtimes).
    return mask.is_file() and mask.stat().st_mtime >= since - 1.0


def measure_case(image_file: Path, outputs: Path, runner: Callable[[Path, Path], int],
                 make_sampler: Callable[[], GpuMemorySampler]) -> dict[str, Any]:
    """One fresh run for one case: its own inputs folder, wall time and GPU trace around it."""
    name = case_name(image_file)
    with tempfile.TemporaryDirectory(prefix="flare_inputs_") as temp_inputs:
        shutil.copy2(image_file, Path(temp_inputs) / image_file.name)
        sampler = make_sampler()
        sampler.start()
        started_wall, started = time.time(), time.perf_counter()
        try:
            exit_code = runner(Path(temp_inputs), outputs)
        finally:
            seconds = time.perf_counter() - started
            sampler.stop()
    return {"case": name, "seconds": seconds, "exit_code": exit_code,
            "mask_written": _mask_written(outputs, name, started_wall),
            **sampler.summary(), "samples_mb": sampler.samples_mb,
            "interval_s": sampler.interval}


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            writer.writerow({key: ("" if result.get(key) is None else result.get(key))
                             for key in CSV_COLUMNS})


def write_memory_plot(result: dict[str, Any], path: Path) -> None:
    """Memory over time for one case; an empty frame with the reason when there is no trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, interval = result["samples_mb"], result.get("interval_s", SAMPLE_INTERVAL_S)
    figure, axis = plt.subplots(figsize=(8, 4))
    if samples:
        axis.plot([i * interval for i in range(len(samples))], samples, "b-", lw=1.2, label="used")
        if result["gpu_mem_stable_mb"] is not None:
            axis.axhline(result["gpu_mem_stable_mb"], color="r", ls="--", lw=1,
                         label=f"FLARE stable peak {result['gpu_mem_stable_mb']} MB")
        axis.legend(loc="lower right")
    else:
        axis.text(0.5, 0.5, f"no GPU samples\n{result.get('gpu_note') or ''}", ha="center",
                  va="center", wrap=True, transform=axis.transAxes, color="gray")
        axis.set_xlim(0, max(result["seconds"], interval))
        axis.set_yticks([])  # no scale to show
    axis.set_xlabel("time (s)")
    axis.set_ylabel("GPU memory used (MB)")
    axis.set_title(f"{result['case']}: {result['seconds']:.1f} s, exit {result['exit_code']}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _case_line(result: dict[str, Any]) -> str:
    memory = ("GPU n/a" if result["gpu_mem_peak_mb"] is None else
              f"GPU stable {result['gpu_mem_stable_mb']} MB, peak {result['gpu_mem_peak_mb']} MB")
    mask = "" if result["mask_written"] else ", NO MASK WRITTEN"
    return f"{result['case']}: {result['seconds']:.2f} s, exit {result['exit_code']}, {memory}{mask}"


def _make_runner(args: argparse.Namespace):
    from app.evaluation.runners import BuildahRunner, CommandRunner

    if args.image is not None:
        return BuildahRunner(args.image, timeout=args.timeout)
    return CommandRunner(args.command, timeout=args.timeout)


def _gpu_device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def run(args: argparse.Namespace,
        make_sampler: Callable[[], GpuMemorySampler] | None = None) -> int:
    try:
        cases = find_cases(args.inputs)[: args.limit]
        runner = _make_runner(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.outputs = args.outputs.resolve()  # container mounts and `cd`-ing scripts need it absolute
    device = _gpu_device(args.gpu)
    make_sampler = make_sampler or (lambda: GpuMemorySampler(device=device))
    report = args.report or args.outputs / "efficiency"
    args.outputs.mkdir(parents=True, exist_ok=True)
    report.mkdir(parents=True, exist_ok=True)
    print(f"{len(cases)} case(s), one fresh run each; {runner.describe()}", flush=True)
    results = []
    for image_file in cases:
        result = measure_case(image_file, args.outputs, runner, make_sampler)
        results.append(result)
        print(_case_line(result), flush=True)
        (report / f"{result['case']}_gpu_memory.json").write_text(json.dumps(result, indent=1))
        write_memory_plot(result, report / f"{result['case']}_gpu_memory.png")
        write_csv(results, report / "efficiency.csv")  # rewritten each case: survives a Ctrl-C
    return _print_summary(results, report)


def _print_summary(results: list[dict[str, Any]], report: Path) -> int:
    seconds = [r["seconds"] for r in results]
    stable = [r["gpu_mem_stable_mb"] for r in results if r["gpu_mem_stable_mb"] is not None]
    print(f"\nmean {sum(seconds) / len(seconds):.2f} s per case, max {max(seconds):.2f} s"
          + (f"; FLARE GPU memory (stable peak) max {max(stable)} MB" if stable else
             f"; no GPU figures ({results[0].get('gpu_note')})"))
    print(f"report: {report / 'efficiency.csv'} and per-case plots in {report}")
    failed = [r["case"] for r in results if r["exit_code"] != 0 or not r["mask_written"]]
    if failed:
        print(f"WARNING: {len(failed)} case(s) failed or wrote no mask: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0

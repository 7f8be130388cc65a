"""Tables of where a predict process's wall time went, from its predict_log.jsonl, for the
benchmarks' reports."""
from __future__ import annotations

import json
from pathlib import Path


def last_records(log: Path) -> list[dict]:
    """The lines of the latest process in a predict_log.jsonl (same ready_at_unix)."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    latest = records[-1]["ready_at_unix"]
    return [r for r in records if r["ready_at_unix"] == latest]


def stage_seconds(records: list[dict]) -> dict[str, float]:
    """Process stages, then every case's stages summed over the cases, in order of first use."""
    seconds = dict(records[-1].get("process_stages", {}))
    for record in records:
        for name, value in record["stages"].items():
            seconds[name] = seconds.get(name, 0.0) + value
    return seconds


def stage_table(records: list[dict], wall_s: float | None = None) -> list[str]:
    """Markdown rows: seconds and share of the wall time per stage, and what the log leaves
    unaccounted (against the wall time measured outside the process when given)."""
    seconds = stage_seconds(records)
    wall = wall_s if wall_s is not None else records[-1].get("process_seconds") or sum(seconds.values())
    lines = ["| stage | s | share |", "|---|---:|---:|"]
    for name, value in seconds.items():
        lines.append(f"| {name} | {value:.3f} | {100 * value / wall:.1f} % |")
    rest = wall - sum(seconds.values())
    lines.append(f"| unaccounted | {rest:.3f} | {100 * rest / wall:.1f} % |")
    lines.append(f"| **wall** | **{wall:.3f}** | |")
    return lines


def memory_line(run: dict) -> str:
    def mb(value):
        return "na" if value is None else f"{value:,.0f} MB"
    return (f"NVML stable {mb(run.get('gpu_mem_stable_mb'))}, NVML peak {mb(run.get('gpu_mem_peak_mb'))}, "
            f"after CUDA init {mb(run.get('gpu_used_after_cuda_init_mb'))}, "
            f"torch allocated {mb(run.get('torch_max_allocated_mb'))}, torch reserved {mb(run.get('torch_max_reserved_mb'))}")

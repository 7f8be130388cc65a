"""Where a predict process's wall time goes: named stages, from process start to exit.

FLARE times the whole container run, so the log must account for the interpreter's own start as
well as each case. The process start comes from the kernel (/proc/self/stat), not from the first
line of Python, so interpreter start-up and imports are counted too.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

def seconds_since_process_start() -> float | None:
    """Seconds since the kernel started this process, or None where /proc is not available.
    Field 22 of /proc/self/stat is the start in clock ticks after boot (CLOCK_BOOTTIME)."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read().decode()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # after "pid (comm) ": field 22
        started = ticks / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def process_start_perf(fallback: float) -> float:
    """The process start on the perf_counter clock; `fallback` (a perf_counter reading taken
    early in the process) where the kernel's figure is not available."""
    elapsed = seconds_since_process_start()
    if elapsed is None:
        return fallback
    return min(fallback, time.perf_counter() - elapsed)


def cuda_sync_for(device) -> Callable[[], None] | None:
    """Stage times on CUDA mean nothing unless queued kernels are finished at each boundary."""
    import torch
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return None


@dataclass
class StageTimer:
    """Wall seconds per named stage; time spent in a stage entered twice adds up."""
    seconds: dict[str, float] = field(default_factory=dict)
    sync: Callable[[], None] | None = None

    @contextmanager
    def stage(self, name: str):
        if self.sync is not None:
            self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

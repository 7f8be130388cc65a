"""Whole-GPU memory, sampled the way the FLARE21 organisers measure it.

A daemon thread reads NVML's `total - free` for one GPU every 0.1 s (the CUDA context and every
other process on that GPU count, exactly as in the organisers' harness). From the trace come:

- the FLARE "stable" peak: the largest value among those that occur in more than 2 % of the
  samples, so short spikes do not count;
- the absolute peak;
- the area under the memory-time curve, `sum(samples) * 0.1 s`, in MB*s.

"MB" here is MiB (bytes // 2**20), as nvidia-smi reports it. Used by `predict` (so it stays
light: pynvml is imported lazily, inside the sampling thread) and by the efficiency harness.
Without a GPU or driver nothing raises: the summary's numbers are None and `gpu_note` says why.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any, Sequence

SAMPLE_INTERVAL_S = 0.1
STABLE_FRACTION = 0.02  # FLARE: a value must occur in more than 2 % of the samples
_MIB = 1024 * 1024


def stable_peak_mb(samples: Sequence[float]) -> float | None:
    """FLARE's reported memory: max over the values occurring in more than 2 % of samples.

    None when there are no samples, or when no value repeats often enough (the organisers'
    script would fail there; we report "unknown" instead of inventing a number).
    """
    if len(samples) == 0:
        return None
    threshold = STABLE_FRACTION * len(samples)
    frequent = [value for value, count in Counter(samples).items() if count > threshold]
    return max(frequent) if frequent else None


def absolute_peak_mb(samples: Sequence[float]) -> float | None:
    return max(samples) if len(samples) else None


def area_mb_s(samples: Sequence[float], interval: float = SAMPLE_INTERVAL_S) -> float | None:
    """Area under the memory-time curve as the organisers compute it: sum * interval."""
    return float(sum(samples)) * interval if len(samples) else None


def summarize(samples: Sequence[float], note: str | None = None,
              interval: float = SAMPLE_INTERVAL_S, gpu_name: str | None = None) -> dict[str, Any]:
    """The summary dict shared by predict's log and the efficiency harness."""
    return {
        "gpu_mem_stable_mb": stable_peak_mb(samples),
        "gpu_mem_peak_mb": absolute_peak_mb(samples),
        "gpu_mem_auc_mb_s": area_mb_s(samples, interval),
        "gpu_note": note,
        "gpu_samples": len(samples),
        "gpu_name": gpu_name,
    }


def default_device() -> int | str:
    """The GPU a CUDA program here would use first: CUDA_VISIBLE_DEVICES' first entry, else 0.

    NVML numbers GPUs in PCI bus order; CUDA does too only with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    A UUID entry ("GPU-...") is unambiguous and is passed through as is.
    """
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    if first.startswith(("GPU-", "MIG-")):
        return first
    return 0


class GpuMemorySampler:
    """Sample one GPU's used memory (MiB) in a background thread; never raises for lack of a GPU.

    Use as a context manager, or call `start()` / `stop()`. `nvml` may be any object with the
    pynvml functions used below (tests pass a fake); by default pynvml is imported in the thread.
    """

    def __init__(self, device: int | str | None = None, interval: float = SAMPLE_INTERVAL_S,
                 nvml: Any = None, join_timeout: float = 2.0) -> None:
        if interval <= 0:
            raise ValueError(f"sampling interval must be positive, got {interval}")
        self.device = default_device() if device is None else device
        self.interval = interval
        self.join_timeout = join_timeout
        self._nvml = nvml
        self._samples: list[int] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.note: str | None = None
        self.gpu_name: str | None = None

    # -- public API -------------------------------------------------------------------------
    def start(self) -> "GpuMemorySampler":
        if self._thread is not None:
            raise RuntimeError("GpuMemorySampler.start() called twice; use a new sampler per run")
        self._thread = threading.Thread(target=self._run, name="gpu-mem-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "GpuMemorySampler":
        """Stop sampling and wait (bounded) for the thread; safe to call more than once."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            if self._thread.is_alive():  # NVML call hung: the daemon thread dies with the process
                self._set_note(f"sampler thread did not stop within {self.join_timeout} s")
        return self

    @property
    def samples_mb(self) -> list[int]:
        with self._lock:
            return list(self._samples)

    def summary(self) -> dict[str, Any]:
        samples = self.samples_mb
        note = self.note
        if note is None and not samples:
            note = "no samples taken (run shorter than the first NVML read)"
        return summarize(samples, note, self.interval, self.gpu_name)

    def __enter__(self) -> "GpuMemorySampler":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- sampling thread ----------------------------------------------------------------------
    def _set_note(self, note: str) -> None:
        if self.note is None:  # keep the first, root cause
            self.note = note

    def _run(self) -> None:
        nvml = self._load_nvml()
        if nvml is None:
            return
        try:
            nvml.nvmlInit()
        except Exception as error:  # no driver, no GPU, container without --gpus, ...
            self._set_note(f"NVML unavailable: {_describe(error)}")
            return
        try:
            handle = self._device_handle(nvml)
            self._sample_until_stopped(nvml, handle)
        except Exception as error:
            self._set_note(f"NVML error on GPU {self.device!r}: {_describe(error)}")
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass

    def _load_nvml(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        try:
            import pynvml  # nvidia-ml-py; imported here so importing this module stays free
        except ImportError as error:
            self._set_note(f"nvidia-ml-py (pynvml) not installed: {error}")
            return None
        return pynvml

    def _device_handle(self, nvml: Any) -> Any:
        if isinstance(self.device, str):
            handle = nvml.nvmlDeviceGetHandleByUUID(self.device)
        else:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(self.device))
        try:
            name = nvml.nvmlDeviceGetName(handle)
            self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            pass  # the name is a nicety; memory is what matters
        return handle

    def _sample_until_stopped(self, nvml: Any, handle: Any) -> None:
        next_time = time.monotonic()
        while True:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            used_mib = int(info.total) // _MIB - int(info.free) // _MIB  # as nvidia-smi does
            with self._lock:
                self._samples.append(used_mib)
            # A fixed schedule, so slow NVML reads do not stretch the interval; if a read
            # overran, restart the schedule from now instead of bursting to catch up.
            next_time = max(next_time + self.interval, time.monotonic())
            if self._stop_event.wait(max(0.0, next_time - time.monotonic())):
                return


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

"""GPU memory as FLARE measures it (whole-GPU NVML samples every 0.1 s, app.gpumem), plus
torch's own peak counters, for predict's per-case log."""
from __future__ import annotations

from app.gpumem import GpuMemorySampler


class GpuTracker:
    def __init__(self, sampler: GpuMemorySampler | None, use_torch: bool, note: str | None):
        self.sampler = sampler
        self.use_torch = use_torch
        self.note = note

    @classmethod
    def start(cls, device: str) -> "GpuTracker":
        if device == "cpu":
            return cls(None, False, "running on the CPU (--device cpu)")
        sampler = GpuMemorySampler()
        sampler.start()
        return cls(sampler, True, None)

    def case_summary(self) -> dict:
        """Figures from process start up to now: organisers measure the whole container run."""
        if self.sampler is None:
            summary = {"gpu_mem_stable_mb": None, "gpu_mem_peak_mb": None, "gpu_mem_auc_mb_s": None,
                       "gpu_note": self.note}
        else:
            summary = {k: v for k, v in self.sampler.summary().items() if k != "gpu_samples"}
        summary.update(self._torch_peaks())
        return summary

    def _torch_peaks(self) -> dict:
        import torch
        if not (self.use_torch and torch.cuda.is_available() and torch.cuda.is_initialized()):
            return {"torch_max_allocated_mb": None, "torch_max_reserved_mb": None}
        return {"torch_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "torch_max_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

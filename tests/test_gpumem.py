"""GPU memory statistics on hand-made traces, and the sampler against a fake NVML."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from app import gpumem
from app.gpumem import GpuMemorySampler, absolute_peak_mb, area_mb_s, stable_peak_mb

MIB = 1024 * 1024


# -- statistics ----------------------------------------------------------------------------------
def test_stable_peak_ignores_short_spikes():
    # 100 samples: a 5000 MB spike seen twice (2 %, not more than 2 %) does not count.
    trace = [300] * 20 + [1200] * 50 + [5000] * 2 + [900] * 28
    assert stable_peak_mb(trace) == 1200
    assert absolute_peak_mb(trace) == 5000


def test_stable_peak_counts_values_seen_in_more_than_two_percent():
    trace = [300] * 20 + [1200] * 50 + [5000] * 3 + [900] * 27  # 3 % > 2 %
    assert stable_peak_mb(trace) == 5000


def test_stable_peak_short_trace_keeps_every_value():
    # Under 50 samples a single occurrence is already more than 2 %.
    assert stable_peak_mb([10, 20, 15]) == 20


def test_stable_peak_none_when_nothing_repeats_enough():
    assert stable_peak_mb(list(range(200))) is None


def test_empty_trace_gives_none_everywhere():
    assert stable_peak_mb([]) is None
    assert absolute_peak_mb([]) is None
    assert area_mb_s([]) is None


def test_area_is_sum_times_interval():
    assert area_mb_s([100, 200, 300]) == pytest.approx(60.0)
    assert area_mb_s([100, 200, 300], interval=0.5) == pytest.approx(300.0)


def test_summarize_keys_and_values():
    summary = gpumem.summarize([500] * 10 + [800] * 10, gpu_name="Fake GPU")
    assert summary == {
        "gpu_mem_stable_mb": 800, "gpu_mem_peak_mb": 800, "gpu_mem_auc_mb_s": pytest.approx(1300.0),
        "gpu_note": None, "gpu_samples": 20, "gpu_name": "Fake GPU",
    }


# -- fake NVML -----------------------------------------------------------------------------------
class FakeNVMLError(Exception):
    pass


class FakeNVML:
    """Replays a memory trace (MiB used); the last value repeats once the trace runs out."""

    def __init__(self, used_mib, total_mib=80_000, fail_init=False, fail_read_after=None,
                 read_delay=0.0, free_shortfall_bytes=0):
        self.used_mib = list(used_mib)
        self.total_mib = total_mib
        self.fail_init = fail_init
        self.fail_read_after = fail_read_after
        self.read_delay = read_delay
        self.free_shortfall_bytes = free_shortfall_bytes
        self.reads = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.handle_requests: list[object] = []

    def nvmlInit(self):
        self.init_calls += 1
        if self.fail_init:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handle_requests.append(index)
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.handle_requests.append(uuid)
        return ("handle", uuid)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetMemoryInfo(self, handle):
        if self.fail_read_after is not None and self.reads >= self.fail_read_after:
            raise FakeNVMLError("GPU is lost")
        time.sleep(self.read_delay)
        used = self.used_mib[min(self.reads, len(self.used_mib) - 1)]
        self.reads += 1
        total = self.total_mib * MIB
        return SimpleNamespace(total=total, free=total - used * MIB - self.free_shortfall_bytes, used=used * MIB)


def _wait_for_reads(fake, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while fake.reads < count and time.monotonic() < deadline:
        time.sleep(0.005)


# -- sampler ---------------------------------------------------------------------------------------
def test_sampler_records_trace_and_summarizes():
    fake = FakeNVML([100, 100, 700, 700, 700, 300])
    with GpuMemorySampler(device=0, interval=0.01, nvml=fake) as sampler:
        _wait_for_reads(fake, 6)
    samples = sampler.samples_mb
    assert samples[:6] == [100, 100, 700, 700, 700, 300]
    summary = sampler.summary()
    assert summary["gpu_note"] is None
    assert summary["gpu_mem_peak_mb"] == 700
    assert summary["gpu_samples"] == len(samples)
    assert summary["gpu_mem_auc_mb_s"] == pytest.approx(sum(samples) * 0.01)
    assert summary["gpu_name"] == "Fake H100"
    assert fake.init_calls == 1 and fake.shutdown_calls == 1


def test_mib_rounding_matches_nvidia_smi():
    fake = FakeNVML([2048], free_shortfall_bytes=123)
    sampler = GpuMemorySampler(interval=0.01, nvml=fake).start()
    _wait_for_reads(fake, 2)
    sampler.stop()
    # free = total - 2048 MiB - 123 bytes: free//MiB is one MiB lower, so used reads 2049.
    assert set(sampler.samples_mb) == {2049}


def test_device_index_and_uuid_are_passed_to_nvml():
    fake = FakeNVML([1])
    with GpuMemorySampler(device=3, interval=0.01, nvml=fake):
        _wait_for_reads(fake, 1)
    fake_uuid = FakeNVML([1])
    with GpuMemorySampler(device="GPU-1234", interval=0.01, nvml=fake_uuid):
        _wait_for_reads(fake_uuid, 1)
    assert fake.handle_requests == [3]
    assert fake_uuid.handle_requests == ["GPU-1234"]


def test_default_device_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpumem.default_device() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def")
    assert gpumem.default_device() == "GPU-abc"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpumem.default_device() == 0


def test_no_driver_gives_null_fields_and_a_note():
    fake = FakeNVML([1], fail_init=True)
    with GpuMemorySampler(interval=0.01, nvml=fake) as sampler:
        time.sleep(0.05)
    summary = sampler.summary()
    assert summary["gpu_mem_stable_mb"] is None
    assert summary["gpu_mem_peak_mb"] is None
    assert summary["gpu_mem_auc_mb_s"] is None
    assert summary["gpu_samples"] == 0
    assert "Driver Not Loaded" in summary["gpu_note"]


def test_read_error_midway_keeps_samples_and_notes_it():
    fake = FakeNVML([400], fail_read_after=3)
    with GpuMemorySampler(interval=0.01, nvml=fake) as sampler:
        deadline = time.monotonic() + 5.0
        while sampler.note is None and time.monotonic() < deadline:
            time.sleep(0.005)
    summary = sampler.summary()
    assert sampler.samples_mb == [400, 400, 400]
    assert summary["gpu_mem_peak_mb"] == 400
    assert "GPU is lost" in summary["gpu_note"]
    assert fake.shutdown_calls == 1


def test_real_pynvml_without_gpu_never_raises():
    # On a machine with no NVIDIA driver this must quietly report why; with a GPU it samples.
    with GpuMemorySampler(interval=0.01) as sampler:
        time.sleep(0.05)
    summary = sampler.summary()
    if summary["gpu_samples"] == 0:
        assert summary["gpu_note"]
        assert summary["gpu_mem_stable_mb"] is None
    else:
        assert summary["gpu_mem_peak_mb"] > 0


def test_thread_stops_and_does_not_outlive_the_run():
    fake = FakeNVML([5])
    sampler = GpuMemorySampler(interval=0.01, nvml=fake).start()
    _wait_for_reads(fake, 2)
    sampler.stop()
    assert not sampler._thread.is_alive()
    assert sampler._thread.daemon
    reads_after_stop = fake.reads
    time.sleep(0.05)
    assert fake.reads == reads_after_stop
    sampler.stop()  # idempotent
    assert not any(t.name == "gpu-mem-sampler" for t in threading.enumerate())


def test_hung_nvml_read_does_not_block_stop():
    fake = FakeNVML([5], read_delay=2.0)
    sampler = GpuMemorySampler(interval=0.01, nvml=fake, join_timeout=0.05).start()
    time.sleep(0.02)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.0
    assert "did not stop" in sampler.summary()["gpu_note"]
    assert sampler._thread.daemon  # so it cannot keep the process alive


def test_start_twice_is_an_error():
    sampler = GpuMemorySampler(interval=0.01, nvml=FakeNVML([1])).start()
    try:
        with pytest.raises(RuntimeError, match="twice"):
            sampler.start()
    finally:
        sampler.stop()


def test_bad_interval_is_a_clear_error():
    with pytest.raises(ValueError, match="interval"):
        GpuMemorySampler(interval=0)


def test_importing_the_module_does_not_import_pynvml():
    code = "import sys, app.gpumem; print('pynvml' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]

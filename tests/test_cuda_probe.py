"""The one-line cause predict gives when a GPU is present but unusable, with the GPU probe faked:
NVML answers from a fake, and torch's CUDA check returns False with torch's own warning."""
from __future__ import annotations

import warnings

import pytest
import torch

from app.inference import cuda_probe, predictor
from app.inference.cuda_probe import DriverFacts, driver_facts, why_no_cuda

TORCH_TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 12040). "
                 "Please update your GPU driver by downloading and installing a new version from the URL: "
                 "http://www.nvidia.com/Download/index.aspx\nAlternatively, go to: https://pytorch.org to "
                 "install a PyTorch version that has been compiled with your version of the CUDA driver.")


class FakeNVML:
    """pynvml's system calls, answering as a host with the given driver would."""

    def __init__(self, driver="550.54.15", cuda=12040, gpus=1, init_error: Exception | None = None):
        self.driver, self.cuda, self.gpus, self.init_error = driver, cuda, gpus, init_error
        self.shutdown_calls = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return self.gpus


def test_driver_too_old_for_cuda13_names_found_and_needed():
    fake = FakeNVML("550.54.15", 12040)
    facts = driver_facts(fake)
    assert facts == DriverFacts(driver="550.54.15", cuda=12040, gpus=1) and fake.shutdown_calls == 1
    line = why_no_cuda("13.0", facts, [TORCH_TOO_OLD])
    assert "\n" not in line
    assert "NVIDIA driver 550.54.15 (serves CUDA up to 12.4)" in line
    assert "CUDA 13.0, which needs driver >= 580" in line
    assert "--build-arg CUDA=12" in line


def test_driver_too_old_for_cuda12_by_branch():
    line = why_no_cuda("12.8", DriverFacts(driver="470.256.02", cuda=11040, gpus=2))
    assert "470.256.02" in line and "needs driver >= 525" in line and "--build-arg" not in line


def test_driver_version_from_torch_when_nvml_cannot_tell():
    line = why_no_cuda("13.0", DriverFacts(error="Driver Not Loaded"), [TORCH_TOO_OLD])
    assert "(serves CUDA up to 12.4)" in line and "needs driver >= 580" in line


def test_no_gpus_flag_no_driver_library():
    facts = driver_facts(FakeNVML(init_error=RuntimeError("NVML Shared Library Not Found")))
    assert facts.driver is None and facts.error == "NVML Shared Library Not Found"
    line = why_no_cuda("13.0", facts)
    assert "no NVIDIA driver visible" in line and "--gpus" in line and "NVML Shared Library Not Found" in line


def test_driver_new_enough_but_no_gpu_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    line = why_no_cuda("13.0", driver_facts(FakeNVML("580.65.06", 13000, gpus=0)))
    assert line == "NVIDIA driver 580.65.06 is loaded but no GPU is visible (CUDA_VISIBLE_DEVICES='')"


def test_cpu_only_torch_with_a_gpu_present():
    line = why_no_cuda(None, DriverFacts(driver="580.65.06", cuda=13000, gpus=1), torch_version="2.13.0+cpu")
    assert line == "this torch (2.13.0+cpu) is a CPU-only build; NVIDIA driver 580.65.06 sees 1 GPU(s)"


def test_otherwise_torch_says_why():
    line = why_no_cuda("13.0", DriverFacts(driver="580.65.06", cuda=13000, gpus=1),
                       ["CUDA initialization: CUDA unknown error\nmore"])
    assert line == "torch: CUDA initialization: CUDA unknown error"


@pytest.fixture
def gpu_with_old_driver(monkeypatch):
    """torch as it behaves on a host whose driver serves CUDA 12.4 only, with a CUDA 13 build."""
    def is_available():
        warnings.warn(TORCH_TOO_OLD, UserWarning)
        return False
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(cuda_probe, "driver_facts", lambda: driver_facts(FakeNVML("550.54.15", 12040)))


def test_auto_falls_back_with_one_line_naming_the_cause(gpu_with_old_driver, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own multi-line warning must not escape
        assert predictor.choose_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("warning: no usable CUDA device, running on the CPU (much slower): ")
    assert "driver 550.54.15" in err and "driver >= 580" in err


def test_device_cuda_refuses_with_the_cause(gpu_with_old_driver):
    with pytest.raises(RuntimeError, match=r"not usable: NVIDIA driver 550\.54\.15 .* >= 580"):
        predictor.choose_device("cuda")

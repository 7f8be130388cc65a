"""Why CUDA is not usable here, in one line, for predict to say before it falls back to the CPU.

torch.cuda.is_available() answers yes or no; a FLARE run that falls back to the CPU takes minutes
instead of seconds, so the log should say why. The cause comes from NVML (nvidia-ml-py: the
driver's version, the newest CUDA it serves, how many GPUs this process sees) and from torch's own
CUDA-initialisation warning ("found version 12040"). Called only when CUDA is not usable, so a
normal GPU run pays nothing for it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

# The oldest driver branch each CUDA major release runs on (NVIDIA's CUDA minor-version
# compatibility table: CUDA 13.x >= 580, CUDA 12.x >= 525). docs/container.md has the details.
DRIVER_FLOOR = {13: 580, 12: 525}
CUDA12_HINT = "or build the image for CUDA 12 (--build-arg CUDA=12, driver >= 525)"


@dataclass(frozen=True)
class DriverFacts:
    """What NVML says about the NVIDIA driver; `error` when it could not say."""
    driver: str | None = None   # e.g. "550.54.15"
    cuda: int | None = None     # the newest CUDA the driver serves, coded as 1000 * major + 10 * minor
    gpus: int | None = None
    error: str | None = None


def driver_facts(nvml: Any = None) -> DriverFacts:
    """Ask NVML; never raises. `nvml` may be any object with the pynvml functions used here."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as err:
            return DriverFacts(error=f"nvidia-ml-py not installed ({err})")
    try:
        nvml.nvmlInit()
    except Exception as err:  # no driver library (no --gpus), driver not loaded, ...
        return DriverFacts(error=str(err).strip() or type(err).__name__)
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        return DriverFacts(driver=driver.decode() if isinstance(driver, bytes) else str(driver),
                           cuda=int(nvml.nvmlSystemGetCudaDriverVersion()), gpus=int(nvml.nvmlDeviceGetCount()))
    except Exception as err:
        return DriverFacts(error=str(err).strip() or type(err).__name__)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def cuda_text(code: int) -> str:
    """12040 -> "12.4", as nvidia-smi prints it."""
    return f"{code // 1000}.{code % 1000 // 10}"


def torch_found_version(messages: Iterable[str]) -> int | None:
    """The driver's CUDA version from torch's warning "... driver ... too old (found version 12040)"."""
    for message in messages:
        found = re.search(r"found version (\d+)", message)
        if found:
            return int(found.group(1))
    return None


def why_no_cuda(torch_cuda: str | None, facts: DriverFacts, torch_messages: Iterable[str] = (),
                torch_version: str = "") -> str:
    """The cause, in one line: torch without CUDA, no driver in sight, a driver too old for this
    torch's CUDA (found and needed), no GPU visible, or else torch's own first words."""
    messages = [m.strip() for m in torch_messages if m.strip()]
    if torch_cuda is None:
        seen = f"; NVIDIA driver {facts.driver} sees {facts.gpus} GPU(s)" if facts.gpus else ""
        return f"this torch ({torch_version or 'installed'}) is a CPU-only build{seen}"
    build_major = int(torch_cuda.split(".")[0])
    floor = DRIVER_FLOOR.get(build_major)
    driver_cuda = facts.cuda or torch_found_version(messages)
    if too_old(facts.driver, driver_cuda, build_major, floor):
        found = f"NVIDIA driver {facts.driver}" if facts.driver else "the NVIDIA driver"
        serves = f" (serves CUDA up to {cuda_text(driver_cuda)})" if driver_cuda else ""
        needs = f"driver >= {floor}" if floor else f"a driver for CUDA {torch_cuda}"
        hint = f"; update the driver {CUDA12_HINT}" if build_major > 12 else "; update the driver"
        return f"{found}{serves} is too old for this torch's CUDA {torch_cuda}, which needs {needs}{hint}"
    if facts.error:
        return (f"no NVIDIA driver visible to this process (NVML: {facts.error}); "
                "a container needs --gpus (the NVIDIA container toolkit) to see the GPU")
    if facts.gpus == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return f"NVIDIA driver {facts.driver} is loaded but no GPU is visible{where}"
    if messages:
        return "torch: " + messages[0].splitlines()[0]
    return f"torch finds no usable CUDA device (driver {facts.driver}, {facts.gpus} GPU(s) seen by NVML)"


def too_old(driver: str | None, driver_cuda: int | None, build_major: int, floor: int | None) -> bool:
    """Older than the floor of this CUDA major, by driver branch or by the CUDA it serves."""
    if driver_cuda is not None and driver_cuda // 1000 < build_major:
        return True
    branch = driver.split(".")[0] if driver else ""
    return bool(floor and branch.isdigit() and int(branch) < floor)

"""The predictor: loads the weights once, then turns many CT images into masks.

    predictor = Predictor.from_weights("weights", device="auto", mode="accurate")
    mask_image = predictor.predict_image(ct_image)        # SimpleITK in, SimpleITK out
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from app.config import PredictConfig
from app.inference import io
from app.inference.ensemble import SlidingWindow, network_device
from app.inference.export import probabilities_to_mask
from app.inference.network import load_network
from app.inference.orientation import mask_to_input_grid, reorient
from app.inference.postprocess import keep_largest_components
from app.inference.preprocess import preprocess
from app.inference.weights import load_weights


def default_network_batch(device: torch.device, tta: bool) -> int:
    """Samples per network call. On CUDA 2: on an H200 the FLARE plan ran 70 passes/s with 2.4 GB
    of activations, 82 with 4.8 GB at 4 and 88 with 9.4 GB at 8 (bench/gpu_network.py), and FLARE
    scores GPU memory as well as time. On the CPU one tile with all its flips, as measured there."""
    if device.type == "cuda":
        return 2
    return 8 if tta else 1


def choose_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        print("warning: no CUDA device found, running on the CPU (much slower)", file=sys.stderr)
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    if requested not in ("cuda", "cpu"):
        raise ValueError(f"unknown device {requested!r}: use auto, cuda or cpu")
    return torch.device(requested)


@dataclass
class StageTimer:
    """Wall seconds per stage of one case."""
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Predictor:
    def __init__(self, config: PredictConfig):
        self.config = config
        self.mode = config.resolved_mode()
        self.device = choose_device(config.device)
        self.weights = load_weights(config.weights_dir, config.folds, self.mode.max_folds)
        self.plan = self.weights.plan
        self.networks = [load_network(self.plan.network, state, self.device) for state in self.weights.fold_states]
        self.window = SlidingWindow(self.plan.patch_size, self.plan.mirror_axes)
        self.network_batch = config.network_batch or default_network_batch(self.device, self.mode.tta)

    @classmethod
    def from_weights(cls, weights_dir: str | Path, device: str = "auto", mode: str = "accurate", **options) -> "Predictor":
        return cls(PredictConfig(weights_dir=Path(weights_dir), device=device, mode=mode, **options))

    @property
    def folds(self) -> tuple[int, ...]:
        return self.weights.folds

    def predict_file(self, path: str | Path) -> sitk.Image:
        """The mask as a SimpleITK image on the file's grid (for a sheared NIfTI grid, on its
        nearest orthonormal grid; `python -m app predict` writes those with the file's affine)."""
        return self.predict_image(io.read_image(Path(path)).image)

    def predict_image(self, image: sitk.Image, timer: StageTimer | None = None) -> sitk.Image:
        mask = self.predict_array(image, timer or StageTimer())
        out = sitk.GetImageFromArray(mask)
        out.CopyInformation(image)
        return out

    def predict_array(self, image: sitk.Image, timer: StageTimer) -> np.ndarray:
        """uint8 mask in numpy (z, y, x) order on the image's own grid."""
        with timer.stage("preprocess"):
            oriented = reorient(image, self.plan.training_orientation)
            case = preprocess(io.image_array(oriented), io.spacing_zyx(oriented), self.plan)
        with timer.stage("network"):
            probs = self._probabilities_with_fallback(case.data)
        with timer.stage("export"):
            mask = probabilities_to_mask(probs, case, self.plan)
            del probs
        with timer.stage("postprocess"):
            mask = keep_largest_components(mask, self.weights.postprocessing.largest_component_labels)
            mask = mask_to_input_grid(mask, oriented, image)
        return mask

    def _probabilities(self, data: np.ndarray, networks, network_batch: int, accumulate_on: torch.device):
        return self.window.probabilities(
            data, networks, self.plan.network.num_classes, tta=self.mode.tta, step_size=self.mode.step_size,
            network_batch=network_batch, accumulate_on=accumulate_on,
            autocast=self._autocast_dtype(networks), progress=self.config.progress)

    def _autocast_dtype(self, networks) -> torch.dtype | None:
        """fp16 on CUDA (stock v1's mixed precision); on the CPU float32 unless the mode asks for bf16."""
        if network_device(networks).type == "cuda":
            return torch.float16 if self.config.fp16 else None
        return torch.bfloat16 if self.mode.cpu_bf16 else None

    def _probabilities_with_fallback(self, data: np.ndarray) -> torch.Tensor:
        """Out of GPU memory, a case is retried with one sample per network call and the probabilities
        kept in CPU memory, then entirely on the CPU. The run never dies from it."""
        try:
            return self._probabilities(data, self.networks, self.network_batch, self.device)
        except torch.OutOfMemoryError:
            _release_gpu_memory()
            print("warning: out of GPU memory; retrying one sample per network call, probabilities on the CPU",
                  file=sys.stderr)
        cpu = torch.device("cpu")
        try:
            return self._probabilities(data, self.networks, 1, cpu)
        except torch.OutOfMemoryError:
            _release_gpu_memory()
            print("warning: still out of GPU memory; this case runs on the CPU", file=sys.stderr)
        return self._probabilities(data, self._cpu_networks(), 1, cpu)

    def _cpu_networks(self):
        if self.device.type == "cpu":
            return self.networks
        return [load_network(self.plan.network, state, torch.device("cpu")) for state in self.weights.fold_states]


def _release_gpu_memory() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


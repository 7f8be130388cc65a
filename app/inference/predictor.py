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
from app.inference.ensemble import SlidingWindow
from app.inference.export import probabilities_to_mask
from app.inference.network import load_network
from app.inference.postprocess import keep_largest_components
from app.inference.preprocess import preprocess
from app.inference.weights import load_weights


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
        self.window = SlidingWindow(self.plan.patch_size, self.plan.mirror_axes, self.device)
        self.tile_batch = config.tile_batch or (4 if self.device.type == "cuda" else 1)

    @classmethod
    def from_weights(cls, weights_dir: str | Path, device: str = "auto", mode: str = "accurate", **options) -> "Predictor":
        return cls(PredictConfig(weights_dir=Path(weights_dir), device=device, mode=mode, **options))

    @property
    def folds(self) -> tuple[int, ...]:
        return self.weights.folds

    def predict_file(self, path: str | Path) -> sitk.Image:
        return self.predict_image(io.read_image(Path(path)))

    def predict_image(self, image: sitk.Image, timer: StageTimer | None = None) -> sitk.Image:
        mask = self.predict_array(image, timer or StageTimer())
        out = sitk.GetImageFromArray(mask)
        out.CopyInformation(image)
        return out

    def predict_array(self, image: sitk.Image, timer: StageTimer) -> np.ndarray:
        """uint8 mask in numpy (z, y, x) order on the image's own grid."""
        with timer.stage("preprocess"):
            case = preprocess(io.image_array(image), io.spacing_zyx(image), self.plan)
        with timer.stage("network"):
            probs = self.window.probabilities(
                case.data, self.networks, self.plan.network.num_classes,
                tta=self.mode.tta, step_size=self.mode.step_size, tile_batch=self.tile_batch,
                autocast=self.config.fp16 and self.device.type == "cuda", progress=self.config.progress)
        with timer.stage("export"):
            mask = probabilities_to_mask(probs, case, self.plan)
            del probs
        with timer.stage("postprocess"):
            mask = keep_largest_components(mask, self.weights.postprocessing.largest_component_labels)
        return mask


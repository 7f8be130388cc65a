"""The predictor: loads the weights once, then turns many CT images into masks.

    predictor = Predictor.from_weights("weights", device="auto", mode="accurate")
    mask_image = predictor.predict_image(ct_image)        # SimpleITK in, SimpleITK out
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from app.config import PredictConfig
from app.inference import cuda_probe, io
from app.inference.device_preprocess import preprocess_on_device
from app.inference.ensemble import SlidingWindow, network_device
from app.inference.export import probabilities_to_mask, region_probabilities_to_mask
from app.inference.network import load_network
from app.inference.orientation import mask_to_input_grid, reorient
from app.inference.postprocess import component_rules, keep_largest_components
from app.inference.preprocess import Preprocessed, preprocess
from app.inference.stages import StageTimer, cuda_sync_for
from app.inference.weights import load_weights

__all__ = ["Predictor", "StageTimer", "choose_device", "default_network_batch", "preprocess_where"]


def default_network_batch(device: torch.device, tta: bool) -> int:
    """Samples per network call. On CUDA 2: on an H200 the FLARE plan ran 70 passes/s with 2.4 GB
    of activations, 82 with 4.8 GB at 4 and 88 with 9.4 GB at 8 (bench/gpu_network.py), and FLARE
    scores GPU memory as well as time. On the CPU one tile with all its flips, as measured there."""
    if device.type == "cuda":
        return 2
    return 8 if tta else 1


def choose_device(requested: str) -> torch.device:
    if requested not in ("auto", "cuda", "cpu"):
        raise ValueError(f"unknown device {requested!r}: use auto, cuda or cpu")
    if requested == "cpu":
        return torch.device("cpu")
    usable, cause = cuda_usable()
    if usable:
        return torch.device("cuda")
    if requested == "cuda":
        raise RuntimeError(f"--device cuda was asked for, but CUDA is not usable: {cause}")
    print(f"warning: no usable CUDA device, running on the CPU (much slower): {cause}", file=sys.stderr)
    return torch.device("cpu")


def cuda_usable() -> tuple[bool, str | None]:
    """torch's answer, and when it is no, the cause in one line (app.inference.cuda_probe). torch's
    own multi-line CUDA-initialisation warning is caught here and its gist goes into that line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return True, None
    messages = [str(w.message) for w in caught]
    return False, cuda_probe.why_no_cuda(torch.version.cuda, cuda_probe.driver_facts(), messages, torch.__version__)


def preprocess_where(device: torch.device, requested: str = "auto") -> str:
    """"device": torch on the network's device (resample_matrix.py); "host": numpy and scipy.
    On CUDA always the device (not yet timed on a GPU). On the CPU both compute the same thing,
    and torch's matrix products measured faster than scipy's spline zoom on bench/stages.py's
    512 x 512 x 200 case with a separate z axis (BENCHMARKS.md)."""
    if requested in ("device", "host"):
        return requested
    if requested != "auto":
        raise ValueError(f"unknown preprocessing place {requested!r}: use auto, device or host")
    return "device"


def _start_cuda(device: torch.device) -> dict:
    """CUDA context and allocator up before the weights arrive, timed on its own; the whole
    GPU's used memory right after it is mostly the context (FLARE counts it)."""
    if device.type != "cuda":
        return {}
    torch.backends.cudnn.benchmark = False  # autotuning measured no gain on this network (BENCHMARKS.md)
    torch.cuda.init()
    torch.empty(1, device=device)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu_used_after_cuda_init_mb": round((total - free) / 2**20, 1)}


class Predictor:
    def __init__(self, config: PredictConfig):
        self.config = config
        self.mode = config.resolved_mode()
        self.device = choose_device(config.device)
        self.startup = StageTimer()
        with self.startup.stage("cuda_init"):
            self.cuda_facts = _start_cuda(self.device)
        with self.startup.stage("weight_load"):
            self.weights = load_weights(config.weights_dir, config.folds, self.mode.max_folds, device=str(self.device),
                                        with_localiser=self.mode.roi)
            self.plan = self.weights.plan
            self.networks = [load_network(self.plan.network, state, self.device) for state in self.weights.fold_states]
            self.localiser = self._localiser_stage()
        self.window = SlidingWindow(self.plan.patch_size, self.plan.mirror_axes)
        self.network_batch = config.network_batch or default_network_batch(self.device, self.mode.tta)
        self.preprocess_on = preprocess_where(self.device, config.preprocess_on)
        self.last_roi: dict = {}  # the latest case's two-stage facts, for the log

    def _localiser_stage(self):
        """Two stages when the mode asks for them and the weights have a localiser. Weights without
        one predict on the whole volume, as before; only an explicit --roi makes that an error."""
        if not self.mode.roi:
            return None
        if self.weights.localiser is None:
            if self.config.roi:
                raise ValueError(f"--roi needs weights with a localiser; {self.config.weights_dir} has none "
                                 "(python -m app train --localiser-epochs N adds one)")
            return None
        from app.inference.localiser import LocaliserStage
        return LocaliserStage(self.weights.localiser, self.device, self._autocast_dtype(self.networks),
                              preprocess_where(self.device, self.config.preprocess_on))
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
        timer.sync = cuda_sync_for(self.device)
        with timer.stage("reorient"):
            oriented = reorient(image, self.plan.training_orientation)
        volume, spacing = io.image_array(oriented), io.spacing_zyx(oriented)
        found = self._find_organs(volume, spacing, timer)
        case = self.preprocess(volume, spacing, timer)
        self._release_cached_memory()
        region = self._region(found, case, timer)
        grid_shape = tuple(case.data.shape)
        with timer.stage("network"):
            probs = self._probabilities_with_fallback(case.data if region is None else case.data[region.box],
                                                      None if region is None else region.starts)
            case = replace(case, data=None)  # the network input is no longer needed
            self._release_cached_memory()
        if region is None:
            mask = probabilities_to_mask(probs, case, self.plan, timer)
        else:
            mask, rows = region_probabilities_to_mask(probs, region.box, region.inside, grid_shape, case,
                                                      self.plan, timer)
            # where masks can be non-zero, on the reoriented CT's (z, y, x) grid
            self.last_roi["output_box"] = [[int(b.start + r.start), int(b.start + r.stop)]
                                           for b, r in zip(case.bbox, rows)]
        if self.localiser is not None:
            self.last_roi["network_passes_whole_volume"] = self._whole_volume_passes(grid_shape)
            self.last_roi["network_passes_saved"] = (self.last_roi["network_passes_whole_volume"]
                                                     - self.window.last_network_passes)
        del probs
        self._release_cached_memory()
        with timer.stage("postprocess"):
            mask = keep_largest_components(mask, *component_rules(
                self.weights.postprocessing.largest_component_labels, self.config.paired_organs))
        with timer.stage("reorient"):
            mask = mask_to_input_grid(mask, oriented, image)
        return mask

    def _find_organs(self, volume: np.ndarray, spacing, timer: StageTimer):
        """Stage one of two, on its own coarse copy of the CT. Out of GPU memory, the case goes on
        with the whole volume: the localiser only ever saves work."""
        self.last_roi = {}
        if self.localiser is None:
            return None
        try:
            with timer.stage("localiser"):
                found = self.localiser.find(volume, spacing)
        except torch.OutOfMemoryError:
            found = None
        if found is None:
            _release_gpu_memory()
            self.last_roi["fallback"] = "out of GPU memory in the localiser: the whole volume"
            print(f"warning: two-stage prediction: {self.last_roi['fallback']}", file=sys.stderr)
        self._release_cached_memory()
        self.last_roi["localiser_s"] = round(timer.seconds.get("localiser", 0.0), 4)
        return found

    def _region(self, found, case: Preprocessed, timer: StageTimer):
        """The region the folds cover, or None for the whole volume (one stage, a fallback, or a
        region that is the whole volume anyway)."""
        if found is None:
            return None
        from app.inference.localiser import region_for
        with timer.stage("localiser"):
            region = region_for(found, case, self.plan, self.config.roi_margin_mm, self.mode.step_size,
                                self.mode.roi_tiles == "exact")
        self.last_roi.update(localiser_s=round(timer.seconds["localiser"], 4),
                             region_fraction=round(region.fraction, 4), fallback=region.fallback,
                             region_box=[[int(s.start), int(s.stop)] for s in region.box])
        if region.fallback is not None:
            print(f"note: two-stage prediction: {region.fallback}", file=sys.stderr)
        return None if region.whole else region

    def _whole_volume_passes(self, grid_shape: tuple[int, ...]) -> int:
        from app.inference.sliding_window import tile_count
        flips = 2 ** len(self.plan.mirror_axes) if self.mode.tta else 1
        return tile_count(grid_shape, self.plan.patch_size, self.mode.step_size) * flips * len(self.networks)

    def preprocess(self, volume: np.ndarray, spacing, timer: StageTimer) -> Preprocessed:
        if self.preprocess_on == "device":
            try:
                return preprocess_on_device(volume, spacing, self.plan, self.device, timer)
            except torch.OutOfMemoryError:
                print("warning: out of GPU memory in preprocessing; this case is preprocessed on the CPU",
                      file=sys.stderr)
            _release_gpu_memory()  # outside the except block: its traceback no longer holds the tensors
        return preprocess(volume, spacing, self.plan, timer)

    def _release_cached_memory(self) -> None:
        """Cached blocks freed between stages, so the next stage's peak is not stacked on the last
        one's in the whole-GPU figure FLARE measures (unmeasured on a GPU so far)."""
        if self.device.type == "cuda" and self.config.release_cached_memory:
            torch.cuda.empty_cache()

    def _probabilities(self, data, networks, network_batch: int, accumulate_on: torch.device, starts=None):
        return self.window.probabilities(
            data, networks, self.plan.network.num_classes, tta=self.mode.tta, step_size=self.mode.step_size,
            network_batch=network_batch, accumulate_on=accumulate_on,
            autocast=self._autocast_dtype(networks), progress=self.config.progress, starts=starts)

    def _autocast_dtype(self, networks) -> torch.dtype | None:
        """fp16 on CUDA (stock v1's mixed precision); on the CPU float32 unless the mode asks for bf16."""
        if network_device(networks).type == "cuda":
            return torch.float16 if self.config.fp16 else None
        return torch.bfloat16 if self.mode.cpu_bf16 else None

    def _probabilities_with_fallback(self, data, starts=None) -> torch.Tensor:
        """Out of GPU memory, a case is retried with one sample per network call and the probabilities
        kept in CPU memory, then entirely on the CPU. The run never dies from it."""
        try:
            return self._probabilities(data, self.networks, self.network_batch, self.device, starts)
        except torch.OutOfMemoryError:
            print("warning: out of GPU memory; retrying one sample per network call, probabilities on the CPU",
                  file=sys.stderr)
        _release_gpu_memory()  # after the except block, whose traceback would keep the tensors alive
        cpu = torch.device("cpu")
        try:
            return self._probabilities(data, self.networks, 1, cpu, starts)
        except torch.OutOfMemoryError:
            print("warning: still out of GPU memory; this case runs on the CPU", file=sys.stderr)
        _release_gpu_memory()
        return self._probabilities(data, self._cpu_networks(), 1, cpu, starts)

    def _cpu_networks(self):
        if self.device.type == "cpu":
            return self.networks
        return [load_network(self.plan.network, state, torch.device("cpu")) for state in self.weights.fold_states]


def _release_gpu_memory() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


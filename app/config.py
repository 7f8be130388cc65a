"""One typed configuration for prediction, built by the CLI or the Python API."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Mode:
    """How much test-time work is spent per case."""
    name: str
    tta: bool          # 8-flip mirroring over the plan's mirror axes
    step_size: float   # sliding-window step, as a fraction of the patch
    max_folds: int | None  # None: every fold in the weights folder
    cpu_bf16: bool = False  # bfloat16 autocast on the CPU (about 2x faster there, not bit-faithful)
    roi: bool = False       # two stages where the weights have a localiser: the folds run on the organs' region
    # two-stage tiles: "exact" keeps nnU-Net's own tiles that reach the region, so masks there equal
    # whole-volume ones; "fewest" takes new tiles over the region where they are fewer (app.inference.region)
    roi_tiles: str = "exact"


MODES: dict[str, Mode] = {
    # nnU-Net's own inference: every fold, every flip, half-patch step.
    "accurate": Mode("accurate", tta=True, step_size=0.5, max_folds=None),
    # Measured in bench/: see BENCHMARKS.md for its agreement with accurate.
    "fast": Mode("fast", tta=False, step_size=0.7, max_folds=2, cpu_bf16=True, roi=True, roi_tiles="fewest"),
}

# The localiser's organ box grows by this much on every side before the folds run in it: it covers
# what a coarse localiser misses at an organ's edge and gives the tiles at the region's edge context
# (bench/roi.py measures region recall and agreement with whole-volume prediction; BENCHMARKS.md).
ROI_MARGIN_MM = 30.0


# nifti: <case>.nii.gz for every case; dicom-seg: <case>.seg.dcm for every DICOM series (a NIfTI
# input fails its case: a DICOM-SEG must reference a source series); both: the two side by side.
OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")


@dataclass(frozen=True)
class PredictConfig:
    weights_dir: Path = DEFAULT_WEIGHTS
    mode: str = "accurate"
    folds: tuple[int, ...] | None = None   # explicit folds override the mode's choice
    tta: bool | None = None                # None: the mode decides
    step_size: float | None = None         # None: the mode decides
    device: str = "auto"                   # auto | cuda | cpu
    network_batch: int = 0                 # samples (tiles x flips) per network call; 0 picks by device
    fp16: bool = True                      # fp16 autocast on CUDA, as stock v1's mixed precision
    overwrite: bool = False                # an existing mask is kept: restarted runs resume
    progress: bool = True
    preview_dir: Path | None = None
    shard: tuple[int, int] | None = None   # (index, count), index from 0
    preprocess_on: str = "auto"            # auto | device (torch, where the network runs) | host (numpy)
    release_cached_memory: bool = True     # CUDA: free cached blocks between stages
    # keep the two largest kidney components (one per kidney) where postprocessing.json keeps
    # no kidney component rule; False: nnU-Net's postprocessing alone
    paired_organs: bool = True
    output_format: str = "nifti"           # one of OUTPUT_FORMATS
    roi: bool | None = None                # two-stage prediction; None: the mode decides (fast: on)
    roi_margin_mm: float = ROI_MARGIN_MM
    roi_tiles: str | None = None           # fewest | exact; None: the mode decides (Mode.roi_tiles)

    def writes_nifti(self) -> bool:
        return self.output_format in ("nifti", "both")

    def writes_seg(self) -> bool:
        return self.output_format in ("dicom-seg", "both")

    def resolved_mode(self) -> Mode:
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {self.output_format!r}; choose from {list(OUTPUT_FORMATS)}")
        try:
            mode = MODES[self.mode]
        except KeyError:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {sorted(MODES)}") from None
        if self.tta is not None:
            mode = replace(mode, tta=self.tta)
        if self.roi is not None:
            mode = replace(mode, roi=self.roi)
        if self.roi_tiles is not None:
            if self.roi_tiles not in ("fewest", "exact"):
                raise ValueError(f"unknown region tiling {self.roi_tiles!r}; choose fewest or exact")
            mode = replace(mode, roi_tiles=self.roi_tiles)
        if self.roi_margin_mm < 0:
            raise ValueError(f"the region's margin must be >= 0 mm, got {self.roi_margin_mm}")
        if self.step_size is not None:
            if not 0.0 < self.step_size <= 1.0:
                raise ValueError(f"step size must be in (0, 1], got {self.step_size}")
            mode = replace(mode, step_size=self.step_size)
        return mode

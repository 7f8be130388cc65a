"""`python -m app predict`: argument parsing only; the work is in runner.py and predictor.py."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.config import DEFAULT_WEIGHTS, MODES, OUTPUT_FORMATS, ROI_MARGIN_MM, PredictConfig


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, e.g. 0/4, not {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return index, count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", type=Path, required=True,
                        help="folder of CT images (*.nii.gz, *.nii), DICOM series (files, folders, .zip)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the masks (created)")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default="nifti",
                        help="nifti: <case>.nii.gz (default); dicom-seg: <case>.seg.dcm for each DICOM series; "
                             "both")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights folder (default: %(default)s)")
    parser.add_argument("--mode", choices=sorted(MODES), default="accurate",
                        help="accurate: every fold, 8 flips, step 0.5 (default); fast: see README")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to ensemble (default: as the mode says)")
    parser.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    parser.add_argument("--step-size", type=float, help="sliding-window step as a fraction of the patch")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--network-batch", type=int, default=0,
                        help="samples (tiles x flips) per network call; GPU memory grows with it "
                             "(0: 2 on CUDA, one tile's flips on the CPU)")
    parser.add_argument("--no-fp16", action="store_true", help="full precision on CUDA")
    parser.add_argument("--overwrite", action="store_true", help="redo cases whose mask already exists")
    parser.add_argument("--shard", type=_shard, help="I/N: only cases I, I+N, I+2N, ... of the sorted list")
    parser.add_argument("--preview", type=Path, help="folder for one PNG preview per case")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--stock-postprocessing", action="store_true",
                        help="nnU-Net's postprocessing only: no two-kidney component rule")
    roi = parser.add_mutually_exclusive_group()
    roi.add_argument("--roi", dest="roi", action="store_true", default=None,
                     help="two stages: the weights' localiser finds the organs, the folds run only on their "
                          "region (default in fast mode; in accurate mode masks inside it equal whole-volume ones, "
                          "outside it they are background)")
    roi.add_argument("--no-roi", dest="roi", action="store_false", help="the folds run on the whole volume")
    parser.add_argument("--roi-margin-mm", type=float, default=ROI_MARGIN_MM,
                        help="margin around the localiser's organs, in mm (default %(default)s)")
    parser.add_argument("--roi-tiles", choices=("fewest", "exact"), default=None,
                        help="two-stage tiles per axis: exact, nnU-Net's own that reach the region (its masks equal "
                             "whole-volume ones; accurate mode's default), or fewest, new ones over the region where "
                             "they are fewer (fast mode's default)")
    parser.add_argument("--preprocess", choices=("auto", "device", "host"), default="auto",
                        help="where resampling and normalisation run: device (torch, where the network "
                             "runs), host (numpy); auto: the device (faster on the CPU in bench/stages.py's "
                             "512x512x200 case; on a GPU it keeps the CT off the host, not yet timed there)")


def config_from_args(args: argparse.Namespace) -> PredictConfig:
    return PredictConfig(
        weights_dir=args.weights, mode=args.mode,
        folds=tuple(args.folds) if args.folds else None,
        tta=False if args.no_tta else None, step_size=args.step_size,
        device=args.device, network_batch=args.network_batch, fp16=not args.no_fp16,
        overwrite=args.overwrite, progress=not args.quiet,
        preview_dir=args.preview, shard=args.shard, preprocess_on=args.preprocess,
        paired_organs=not args.stock_postprocessing, output_format=args.output_format,
        roi=args.roi, roi_margin_mm=args.roi_margin_mm, roi_tiles=args.roi_tiles,
    )


# Set before torch initialises CUDA (its allocator reads them once): growable segments instead of
# fixed-size blocks fragment less, and CUDA modules load when first used. A value already in the
# environment wins. Neither is measured on a GPU yet (BENCHMARKS.md).
CUDA_ENVIRONMENT = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUDA_MODULE_LOADING": "LAZY"}


def set_cuda_environment(environ=os.environ) -> None:
    for name, value in CUDA_ENVIRONMENT.items():
        environ.setdefault(name, value)


def run(args: argparse.Namespace) -> int:
    set_cuda_environment()
    from app.inference.runner import run_predict
    try:
        config = config_from_args(args)
        config.resolved_mode()
    except ValueError as err:
        print(f"error: {err}")
        return 2
    code = run_predict(config, args.input, args.output)
    if _is_the_app_process():
        _exit_now(code)
    return code


def _is_the_app_process() -> bool:
    """True under `python -m app`, not when called from another program (tests, the API)."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) == "app.__main__"


def _exit_now(code: int) -> None:
    """Every mask and log line is on disk (atomic renames, single appends): skip interpreter and
    CUDA teardown, which FLARE's per-case timing would count and the log could not."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

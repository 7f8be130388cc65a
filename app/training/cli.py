"""`python -m app train`: nnU-Net v1 plan + preprocess, per-fold training with the CE-to-Dice
trainer, postprocessing from the cross-validation, export to a weights folder.

Real recipe (GPU): python -m app train --task-dir .../Task500_FLARE21 --planner default --epochs 1000
Demo recipe (CPU): see docs/training.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-dir", type=Path, required=True,
                        help="nnU-Net v1 raw task folder (imagesTr/, labelsTr/, dataset.json)")
    parser.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                        help="none (with --warm-start-epochs): train only the model on all cases")
    parser.add_argument("--epochs", type=int, default=1000,
                        help="1000 uses nnunet's nnUNetTrainerV2_graduallyTransitionFromCEToDice as is; "
                             "other lengths scale its breakpoints to 50 %% / 75 %%")
    parser.add_argument("--iterations", type=int, default=250, help="training batches per epoch")
    parser.add_argument("--val-iterations", type=int, default=50, help="validation batches per epoch")
    parser.add_argument("--planner", choices=["small", "default"], default="default",
                        help="default: nnU-Net v1's ExperimentPlanner3D_v21; small: CPU demo plan "
                             "(5 mm, 40^3 patch, 8 base features)")
    parser.add_argument("--out", type=Path, default=None, help="weights folder to export to (omit: no export)")
    parser.add_argument("--work-dir", type=Path, default=Path("build/train"),
                        help="nnU-Net folders (raw links, preprocessed, results)")
    parser.add_argument("--processes", type=int, default=2, help="preprocessing processes")
    parser.add_argument("--da-workers", type=int, default=2, help="augmentation worker processes")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="intra-op threads of the training process (default: 1 on a CPU, where more threads "
                             "contend with the augmentation workers)")
    parser.add_argument("--no-validation-tta", action="store_true",
                        help="validate folds without mirroring (8x cheaper on a CPU)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                        help="storage precision of the exported tensors")
    parser.add_argument("--seed", type=int, default=None, help="torch/numpy seed, recorded in the manifest")
    parser.add_argument("--data-description", type=Path, default=None,
                        help="JSON file describing the data (recorded in MANIFEST.json)")
    parser.add_argument("--localiser-epochs", type=int, default=0,
                        help="also train the localiser of two-stage prediction (8 mm, one model on all cases) for "
                             "this many epochs and export it beside the folds (default 0: none)")
    parser.add_argument("--localiser-iterations", type=int, default=0,
                        help="batches per epoch of the localiser (0: as --iterations)")
    parser.add_argument("--localiser-init", type=Path, default=None,
                        help="checkpoint (.model) the localiser starts from, e.g. the mean of a small plan's folds "
                             "(python -m app.training.from_weights): the same network at a coarser spacing")
    parser.add_argument("--localiser-lr", type=float, default=None,
                        help="initial learning rate of the localiser (default: nnunet's 1e-2)")
    _add_starting_point_arguments(parser)
    _add_hardware_fit_arguments(parser)
    _add_resume_arguments(parser)


def _add_starting_point_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the folds start from (the CPU demo's shortcuts; the real recipe starts from scratch)."""
    parser.add_argument("--warm-start-epochs", type=int, default=0,
                        help="CPU demo shortcut: first train one model on all cases for this many epochs and "
                             "start every fold from it (default 0: every fold from scratch)")
    parser.add_argument("--warm-start-iterations", type=int, default=0,
                        help="batches per epoch of that model (0: as --iterations)")
    parser.add_argument("--warm-start-init", type=Path, default=None,
                        help="checkpoint (.model) the warm-start model starts from (continuing an earlier one)")
    parser.add_argument("--warm-start-lr", type=float, default=None,
                        help="initial learning rate of the model on all cases (default: nnunet's 1e-2); when it "
                             "continues a trained model with a smaller batch, scale it down with the batch")
    parser.add_argument("--fold-initial-lr", type=float, default=None,
                        help="initial learning rate of the folds (default: nnunet's 1e-2)")
    parser.add_argument("--fold-init", type=Path, default=None,
                        help="start every fold from this checkpoint (.model) instead of from scratch")


def _add_hardware_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """Fitting a run to the machine at hand."""
    parser.add_argument("--time-budget-min", type=float, default=None,
                        help="wall-clock minutes per fold: after 3 epochs the epoch count is fitted to it, and the "
                             "CE-to-Dice schedule and learning rate run their full course within it (--epochs caps "
                             "the first epochs' schedule only)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples per training batch instead of the plan's (a GPU runs a small plan's batch "
                             "of 2 hardly faster than a batch of 8)")
    parser.add_argument("--fold-schedule-start", type=float, default=0.0,
                        help="the folds' runs cover the CE-to-Dice loss schedule from this fraction on (default 0: "
                             "all of it; 0.75: Dice only, for fold fine-tunes of a model that ended in Dice)")
    parser.add_argument("--base-features", type=int, default=None,
                        help="the network's base feature count instead of the plan's (a wider network; start it "
                             "from a trained one widened by `python -m app.training.widen`)")
    parser.add_argument("--export-interpolation-order-z", type=int, choices=(0, 1), default=None,
                        help="write v1's segmentation_export_params into the plans: 1 exports linearly along the "
                             "low-resolution axis of an anisotropic CT, 0 takes the nearest slice (default: the "
                             "plans' own; the small planner writes 1). Folds already trained keep theirs: "
                             "set exported weights with app.weights_export.set_interpolation_order_z")
    parser.add_argument("--parallel-folds", action="store_true",
                        help="train the folds at the same time, one process each (logs in WORK_DIR/parallel)")
    parser.add_argument("--measure-predict-on", type=Path, default=None,
                        help="after export, time `python -m app predict` on this CT and record it")
    parser.add_argument("--validation-cases", type=int, default=None,
                        help="validate each fold on its first K held-out cases only (checks on small machines; "
                             "0: no validation and no postprocessing choice). Default: nnU-Net's full validation")


def _add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """Runs in pieces: interrupted, continued, or one fold per cluster job."""
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="resume every unfinished fold from its latest checkpoint (epoch, optimiser, learning "
                             "rate, CE-to-Dice weights, fitted epoch count), as nnU-Net v1's -c; give the first "
                             "run's options too")
    parser.add_argument("--stop-after-epochs", type=int, default=None,
                        help="end this invocation after N epochs of each fold, with a checkpoint (e.g. to fit a "
                             "cluster job's time limit); --continue goes on from there")
    parser.add_argument("--prepare-only", action="store_true",
                        help="plan, preprocess, unpack and write the 5-fold split, then stop: run once before "
                             "one job per fold (SLURM array, Kubernetes indexed job) on the same --work-dir")


def run(args: argparse.Namespace) -> int:
    import json

    from app.training.pipeline import TrainConfig, train

    if args.seed is not None:
        import random

        import numpy as np
        import torch
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
    if not 0.0 <= args.fold_schedule_start < 1.0:
        raise SystemExit(f"--fold-schedule-start must be in [0, 1), got {args.fold_schedule_start}")
    desc = json.loads(args.data_description.read_text()) if args.data_description else {}
    cfg = TrainConfig(task_dir=args.task_dir, work_dir=args.work_dir, out=args.out, folds=tuple(args.folds),
                      epochs=args.epochs, iterations=args.iterations, val_iterations=args.val_iterations,
                      planner=args.planner, processes=args.processes, da_workers=args.da_workers,
                      torch_threads=args.torch_threads, validation_tta=not args.no_validation_tta,
                      export_dtype=args.dtype, seed=args.seed, data_description=desc,
                      measure_predict_on=args.measure_predict_on,
                      warm_start_epochs=args.warm_start_epochs, warm_start_iterations=args.warm_start_iterations,
                      warm_start_init=args.warm_start_init, warm_start_lr=args.warm_start_lr,
                      fold_initial_lr=args.fold_initial_lr,
                      fold_init=args.fold_init, fold_schedule_start=args.fold_schedule_start,
                      batch_size=args.batch_size, base_features=args.base_features,
                      export_interpolation_order_z=args.export_interpolation_order_z,
                      parallel_folds=args.parallel_folds,
                      resume=args.resume, stop_after_epochs=args.stop_after_epochs,
                      validation_cases=args.validation_cases, prepare_only=args.prepare_only,
                      localiser_epochs=args.localiser_epochs, localiser_iterations=args.localiser_iterations,
                      localiser_init=args.localiser_init, localiser_lr=args.localiser_lr,
                      time_budget_s=None if args.time_budget_min is None else 60.0 * args.time_budget_min)
    if not cfg.folds and cfg.warm_start_epochs <= 0 and cfg.localiser_epochs <= 0 and not cfg.prepare_only:
        raise SystemExit("--folds is empty: give --warm-start-epochs to train the model on all cases, "
                         "or --localiser-epochs to train the localiser alone")
    if (args.validation_cases or 0) < 0 or (args.stop_after_epochs is not None and args.stop_after_epochs < 1):
        raise SystemExit("--validation-cases must be >= 0 and --stop-after-epochs >= 1")
    manifest = train(cfg, log=lambda m: print(f"[train] {m}", flush=True))
    if not cfg.folds or cfg.prepare_only or manifest.get("unfinished"):
        return 0
    print(json.dumps({k: manifest[k] for k in ("trainer", "epochs", "planner", "plan", "cross_validation",
                                               "training_orientation", "training_wall_seconds")}, indent=1))
    return 0

"""One function from an nnU-Net v1 raw task folder to a weights folder.

Steps (all nnU-Net v1 1.7.1 code, run in this process):
 1. crop + dataset analysis + plan (default ExperimentPlanner3D_v21, or the small demo planner)
    + preprocess;
 2. each fold trained with nnUNetTrainerV2_graduallyTransitionFromCEToDice (its own class at
    1000 epochs, the breakpoint-scaled subclass for shorter runs), then validated;
 3. postprocessing (largest connected component per label) chosen from the pooled
    cross-validation exactly as nnunet's consolidate_folds does (only when all 5 folds ran);
 4. export to the weights format (app.weights_export) with a MANIFEST describing the run.

nnunet reads its folders from environment variables at import time, so they are set before
the first nnunet import, inside `train()`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.training.manifest import build_manifest, measure_predict

TASK_RE = re.compile(r"^Task(\d{3})_(.+)$")


@dataclass
class TrainConfig:
    task_dir: Path
    work_dir: Path
    out: Path | None
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 1000
    iterations: int = 250          # training batches per epoch (nnunet: 250)
    val_iterations: int = 50       # validation batches per epoch (nnunet: 50)
    planner: str = "default"
    processes: int = 2             # preprocessing processes
    da_workers: int = 2            # augmentation workers (nnUNet_n_proc_DA)
    torch_threads: int | None = None  # None: 1 on a CPU, torch's default on CUDA
    validation_tta: bool = True    # mirroring during the post-training validation
    export_dtype: str = "float32"
    seed: int | None = None
    data_description: dict = field(default_factory=dict)
    measure_predict_on: Path | None = None   # a CT to time `python -m app predict` on after export
    fp16: bool | None = None       # None: on CUDA only
    # CPU demo only: first train one model on all cases ("fold all") for this many epochs, then
    # start every fold from its weights. 0 (default, the real recipe): every fold from scratch.
    warm_start_epochs: int = 0
    warm_start_iterations: int = 0
    warm_start_init: Path | None = None     # checkpoint the warm-start model itself starts from
    warm_start_lr: float | None = None      # None: nnunet's 1e-2
    fold_initial_lr: float | None = None    # None: nnunet's 1e-2
    fold_init: Path | None = None           # start every fold from this checkpoint (no warm-start run)
    # Wall-clock budget per fold: the epoch count is fitted to it after a few epochs (see trainer).
    time_budget_s: float | None = None
    batch_size: int | None = None           # None: the plan's
    parallel_folds: bool = False            # one process per fold (a GPU with room for several)

    @property
    def scaled_trainer(self) -> bool:
        return self.time_budget_s is not None or self.batch_size is not None


def _task_name(task_dir: Path) -> str:
    if TASK_RE.match(task_dir.name):
        return task_dir.name
    return f"Task500_{task_dir.name}"


def _setup_env(cfg: TrainConfig) -> dict[str, Path]:
    work = cfg.work_dir.resolve()
    paths = {"raw": work / "nnUNet_raw_data_base", "pre": work / "nnUNet_preprocessed",
             "results": work / "nnUNet_results"}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_raw_data_base"] = str(paths["raw"])
    os.environ["nnUNet_preprocessed"] = str(paths["pre"])
    os.environ["RESULTS_FOLDER"] = str(paths["results"])
    os.environ["nnUNet_n_proc_DA"] = str(cfg.da_workers)
    os.environ["nnUNet_def_n_proc"] = str(cfg.processes)
    # torch >= 2.6 loads weights-only by default; v1 checkpoints hold numpy scalars (training only)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    if "nnunet.paths" in sys.modules and sys.modules["nnunet.paths"].base != str(paths["raw"]):
        raise RuntimeError("nnunet was imported with other folders; run training in a fresh process")
    return paths


def _link_task(cfg: TrainConfig, paths: dict[str, Path]) -> str:
    task = _task_name(cfg.task_dir)
    raw_dir = paths["raw"] / "nnUNet_raw_data"
    raw_dir.mkdir(parents=True, exist_ok=True)
    link = raw_dir / task
    src = cfg.task_dir.resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() != src:
            raise RuntimeError(f"{link} already points to {link.resolve()}, not {src}")
    else:
        link.symlink_to(src, target_is_directory=True)
    for sub in ("imagesTr", "labelsTr"):
        if not (src / sub).is_dir():
            raise FileNotFoundError(f"{src / sub} missing: not an nnU-Net v1 raw task folder")
    if not (src / "dataset.json").is_file():
        raise FileNotFoundError(f"{src / 'dataset.json'} missing")
    return task


def plan_and_preprocess(cfg: TrainConfig, paths: dict[str, Path], task: str, log) -> Path:
    from nnunet.experiment_planning.DatasetAnalyzer import DatasetAnalyzer
    from nnunet.experiment_planning.utils import crop

    from app.training.planner import PLANNERS

    planner_cls, plans_id = PLANNERS[cfg.planner]
    cropped = paths["raw"] / "nnUNet_cropped_data" / task
    pre = paths["pre"] / task
    plans_file = pre / f"{plans_id}_plans_3D.pkl"
    if plans_file.is_file() and (pre / "splits_final.pkl").exists():
        log(f"plans exist: {plans_file}")
        return plans_file
    t0 = time.time()
    crop(task, override=False, num_threads=cfg.processes)
    log(f"cropped in {time.time() - t0:.0f} s")
    DatasetAnalyzer(str(cropped), overwrite=False, num_processes=cfg.processes).analyze_dataset(True)
    pre.mkdir(parents=True, exist_ok=True)
    shutil.copy(cropped / "dataset_properties.pkl", pre)
    shutil.copy(paths["raw"] / "nnUNet_raw_data" / task / "dataset.json", pre)
    planner = planner_cls(str(cropped), str(pre))
    planner.plan_experiment()
    planner.run_preprocessing(cfg.processes)
    log(f"planned and preprocessed in {time.time() - t0:.0f} s: {plans_file}")
    return plans_file


def train_fold(cfg: TrainConfig, plans_file: Path, task: str, fold, log, epochs: int | None = None,
               iterations: int | None = None, init_from: Path | None = None, validate: bool = True,
               initial_lr: float | None = None) -> dict:
    """Train and validate one fold (or "all"). Everything lives inside this function
    (batchgenerators' workers must not outlive it)."""
    import torch

    from app.training.trainer import trainer_class_for

    epochs = cfg.epochs if epochs is None else epochs
    iterations = cfg.iterations if iterations is None else iterations
    cls = trainer_class_for(cfg.epochs, cfg.scaled_trainer)
    out_base = Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / "3d_fullres" / task / \
        f"{cls.__name__}__{plans_file.name[:-len('_plans_3D.pkl')]}"
    fold_dir = out_base / (f"fold_{fold}" if fold != "all" else "all")
    done = fold_dir / "model_final_checkpoint.model"
    if done.is_file() and (not validate or (fold_dir / "validation_raw" / "summary.json").is_file()):
        log(f"fold {fold}: already trained, skipping")
        result = {"fold": fold, "skipped": True, "out_base": str(out_base), "checkpoint": str(done)}
        if validate:
            result["validation_dice"] = _validation_dice(fold_dir)
        return result
    trainer = _make_trainer(cfg, cls, plans_file, out_base, fold, epochs, iterations, initial_lr)
    t0 = time.time()
    t_train = 0.0
    try:
        trainer.initialize(True)
        if init_from is not None:
            state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
            trainer.network.load_state_dict(state)
            log(f"fold {fold}: starting from {init_from.parent.name}/{init_from.name}")
        trainer.run_training()
        t_train = time.time() - t0
        if validate:
            trainer.network.eval()
            trainer.validate(save_softmax=False, do_mirroring=cfg.validation_tta,
                             validation_folder_name="validation_raw", run_postprocessing_on_folds=False)
    finally:
        for gen in (getattr(trainer, "tr_gen", None), getattr(trainer, "val_gen", None)):
            if gen is not None and hasattr(gen, "_finish"):
                gen._finish()
    _name_stock_class(fold_dir)
    n_params = sum(p.numel() for p in trainer.network.parameters())
    result = {"fold": fold, "train_seconds": round(t_train, 1), "parameters": int(n_params),
              "out_base": str(out_base), "checkpoint": str(done), "epochs": int(trainer.max_num_epochs),
              "iterations": iterations}
    if validate:
        result["validation_dice"] = _validation_dice(fold_dir)
        log(f"fold {fold}: trained in {t_train:.0f} s, validated in {time.time() - t0 - t_train:.0f} s, "
            f"validation Dice {result['validation_dice']}")
    else:
        log(f"fold {fold}: trained in {t_train:.0f} s")
    return result


def _make_trainer(cfg: TrainConfig, cls, plans_file: Path, out_base: Path, fold, epochs: int, iterations: int,
                  initial_lr: float | None):
    """The trainer for one fold, with this run's lengths, budget and batch size set (not yet initialised)."""
    import torch
    fp16 = torch.cuda.is_available() if cfg.fp16 is None else cfg.fp16
    trainer = cls(str(plans_file), fold, output_folder=str(out_base), dataset_directory=str(plans_file.parent),
                  batch_dice=True, stage=0, unpack_data=True, deterministic=False, fp16=fp16)
    trainer.max_num_epochs = epochs
    trainer.num_batches_per_epoch = iterations
    trainer.num_val_batches_per_epoch = cfg.val_iterations
    trainer.time_budget_s = cfg.time_budget_s
    trainer.batch_size_override = cfg.batch_size
    if initial_lr is not None:
        trainer.initial_lr = initial_lr
    if epochs < 50:
        trainer.save_every = max(1, epochs)  # short runs: a checkpoint at the end only
    return trainer


def _validation_dice(fold_dir: Path) -> dict[str, float]:
    summary = json.loads((fold_dir / "validation_raw" / "summary.json").read_text())["results"]["mean"]
    return {k: round(float(v["Dice"]), 4) for k, v in summary.items()}


def _name_stock_class(fold_dir: Path) -> None:
    """Let stock nnU-Net v1 (nnUNet_predict / restore_model) load the fold: restore_model looks
    trainer classes up by name inside nnunet.training.network_training only. The scaled subclass
    differs from nnunet's CE-to-Dice class in its loss schedule alone, so inference is identical."""
    import pickle

    from app.training.trainer import STOCK_TRAINER

    for pkl in fold_dir.glob("*.model.pkl"):
        with open(pkl, "rb") as f:
            info = pickle.load(f)
        if info.get("name") != STOCK_TRAINER.__name__:
            info["trained_with"] = info.get("name")
            info["name"] = STOCK_TRAINER.__name__
            with open(pkl, "wb") as f:
                pickle.dump(info, f)


def train(cfg: TrainConfig, log=print) -> dict:
    t_start = time.time()
    paths = _setup_env(cfg)
    task = _link_task(cfg, paths)
    _set_torch_threads(cfg)
    plans_file = plan_and_preprocess(cfg, paths, task, log)
    warm = None
    if cfg.warm_start_epochs > 0:
        warm = train_fold(cfg, plans_file, task, "all", log, epochs=cfg.warm_start_epochs,
                          iterations=cfg.warm_start_iterations or cfg.iterations, validate=False,
                          init_from=cfg.warm_start_init, initial_lr=cfg.warm_start_lr)
    init_from = Path(warm["checkpoint"]) if warm else cfg.fold_init
    if not cfg.folds:
        # only the model on all cases: a starting point for later fold runs (--fold-init)
        log(f"no folds asked for; the model on all cases is {init_from}")
        return {"warm_start": warm, "training_wall_seconds": round(time.time() - t_start, 1)}
    if cfg.parallel_folds and len(cfg.folds) > 1:
        from app.training.parallel import train_folds_in_parallel
        results = train_folds_in_parallel(cfg, plans_file, init_from, log)
    else:
        results = [train_fold(cfg, plans_file, task, f, log, init_from=init_from, initial_lr=cfg.fold_initial_lr)
                   for f in cfg.folds]
    out_base = Path(results[0]["out_base"])
    postprocessing = choose_postprocessing(cfg, out_base, log)
    manifest = build_manifest(cfg, plans_file, task, results, warm, postprocessing, time.time() - t_start)
    if cfg.out is not None:
        export_with_manifest(cfg, out_base, manifest, log)
    return manifest


def _set_torch_threads(cfg: TrainConfig) -> None:
    import torch
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif not torch.cuda.is_available():
        # Measured on a busy 2-core machine: one intra-op thread ran a training step 10x faster
        # than two (OpenMP threads spin while they wait for a core).
        torch.set_num_threads(1)


def choose_postprocessing(cfg: TrainConfig, out_base: Path, log) -> dict | None:
    """nnunet's consolidate_folds over the pooled cross-validation (it needs all 5 folds); with
    fewer folds, the first fold's own decision."""
    postprocessing = None
    if sorted(cfg.folds) == [0, 1, 2, 3, 4]:
        from nnunet.postprocessing.consolidate_postprocessing import consolidate_folds
        consolidate_folds(str(out_base), validation_folder_name="validation_raw", folds=tuple(cfg.folds))
        postprocessing = json.loads((out_base / "postprocessing.json").read_text())
        log(f"postprocessing from the cross-validation: {postprocessing.get('for_which_classes')}")
    else:
        # consolidate_folds needs every fold; with fewer, take the first fold's own decision
        pp = out_base / f"fold_{cfg.folds[0]}" / "postprocessing.json"
        if pp.is_file():
            shutil.copy(pp, out_base / "postprocessing.json")
            postprocessing = json.loads(pp.read_text())
    return postprocessing


def export_with_manifest(cfg: TrainConfig, out_base: Path, manifest: dict, log) -> None:
    from app.weights_export import export_model_folder, update_manifest
    export_model_folder(out_base, cfg.out, manifest_extra=manifest, dtype=cfg.export_dtype)
    log(f"exported to {cfg.out}")
    if cfg.measure_predict_on is not None:
        cost = measure_predict(cfg.out, cfg.measure_predict_on, cfg.work_dir, log)
        if cost is not None:
            manifest["predict_cost_per_case"] = cost
            update_manifest(cfg.out, {"predict_cost_per_case": cost})

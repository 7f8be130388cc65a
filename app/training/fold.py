"""Train and validate one fold (or "all") with nnunet's trainer: from scratch, from a given
checkpoint, or resumed from its own latest checkpoint (--continue)."""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path

from app.training.config import TrainConfig
from app.training.resume import FINAL, LATEST, StoppedForNow, add_epoch_hooks, resumable_checkpoint, resume, \
    start_trace


def fold_folder(cfg: TrainConfig, plans_file: Path, task: str, fold) -> tuple[type, Path, Path]:
    """The trainer class, the model folder (nnunet's output_folder_base) and the fold's folder."""
    from app.training.trainer import trainer_class_for

    cls = trainer_class_for(cfg.epochs, cfg.scaled_trainer)
    out_base = Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / "3d_fullres" / task / \
        f"{cls.__name__}__{plans_file.name[:-len('_plans_3D.pkl')]}"
    return cls, out_base, out_base / (f"fold_{fold}" if fold != "all" else "all")


def train_fold(cfg: TrainConfig, plans_file: Path, task: str, fold, log, epochs: int | None = None,
               iterations: int | None = None, init_from: Path | None = None, validate: bool = True,
               initial_lr: float | None = None) -> dict:
    """Train and validate one fold (or "all"). Everything lives inside this function
    (batchgenerators' workers must not outlive it)."""
    epochs = cfg.epochs if epochs is None else epochs
    iterations = cfg.iterations if iterations is None else iterations
    validate = validate and cfg.validation_cases != 0
    cls, out_base, fold_dir = fold_folder(cfg, plans_file, task, fold)
    done = fold_dir / FINAL
    base = {"fold": fold, "out_base": str(out_base), "checkpoint": str(done)}
    if done.is_file() and (not validate or (fold_dir / "validation_raw" / "summary.json").is_file()):
        log(f"fold {fold}: already trained, skipping")
        return {**base, "skipped": True, **({"validation_dice": _validation_dice(fold_dir)} if validate else {})}
    trainer = _make_trainer(cfg, cls, plans_file, out_base, fold, epochs, iterations, initial_lr)
    t0 = time.time()
    try:
        trainer.initialize(True)
        first_epoch = _starting_point(cfg, trainer, fold, fold_dir, init_from, log)
        add_epoch_hooks(trainer, fold_dir, cfg.stop_after_epochs, first_epoch)
        if trainer.epoch < trainer.max_num_epochs:
            trainer.run_training()
        t_train = time.time() - t0
        if validate:
            _validate(cfg, trainer)
    except StoppedForNow as stop:
        log(f"fold {fold}: stopped after epoch {stop.epochs_done} of {trainer.max_num_epochs}; "
            "--continue resumes it")
        return {**base, "unfinished": True, "epochs_done": stop.epochs_done}
    finally:
        for gen in (getattr(trainer, "tr_gen", None), getattr(trainer, "val_gen", None)):
            if gen is not None and hasattr(gen, "_finish"):
                gen._finish()
    for leftover in fold_dir.glob(LATEST + ".*"):   # nnunet removes model_latest itself, not our state file
        leftover.unlink()
    _name_stock_class(fold_dir)
    n_params = sum(p.numel() for p in trainer.network.parameters())
    result = {**base, "train_seconds": round(t_train, 1), "parameters": int(n_params),
              "epochs": int(trainer.max_num_epochs), "iterations": iterations}
    if validate:
        result["validation_dice"] = _validation_dice(fold_dir)
        log(f"fold {fold}: trained in {t_train:.0f} s, validated in {time.time() - t0 - t_train:.0f} s, "
            f"validation Dice {result['validation_dice']}")
    else:
        log(f"fold {fold}: trained in {t_train:.0f} s")
    return result


def _starting_point(cfg: TrainConfig, trainer, fold, fold_dir: Path, init_from: Path | None, log) -> int:
    """Resume from the fold's own checkpoint (--continue), else start from `init_from` or scratch."""
    import torch

    checkpoint = resumable_checkpoint(fold_dir)
    # a finished training is never redone: without --continue it is only validated again
    if checkpoint is not None and (cfg.resume or checkpoint.name == FINAL):
        epoch = resume(trainer)
        log(f"fold {fold}: resuming from {checkpoint.name} at epoch {epoch} of {trainer.max_num_epochs}")
        start_trace(fold_dir, epoch)
        return epoch
    if checkpoint is not None:
        log(f"fold {fold}: {checkpoint.name} exists; starting again from epoch 0 (--continue resumes instead)")
    if init_from is not None:
        state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
        trainer.network.load_state_dict(state)
        log(f"fold {fold}: starting from {init_from.parent.name}/{init_from.name}")
    start_trace(fold_dir, 0)
    return 0


def _make_trainer(cfg: TrainConfig, cls, plans_file: Path, out_base: Path, fold, epochs: int, iterations: int,
                  initial_lr: float | None):
    """The trainer for one fold, with this run's lengths, budget and batch size set (not yet initialised)."""
    import torch
    fp16 = torch.cuda.is_available() if cfg.fp16 is None else cfg.fp16
    trainer = cls(str(plans_file), fold, output_folder=str(out_base), dataset_directory=str(plans_file.parent),
                  batch_dice=True, stage=fullres_stage(plans_file), unpack_data=True, deterministic=False, fp16=fp16)
    trainer.max_num_epochs = epochs
    trainer.num_batches_per_epoch = iterations
    trainer.num_val_batches_per_epoch = cfg.val_iterations
    trainer.time_budget_s = cfg.time_budget_s
    trainer.batch_size_override = cfg.batch_size
    trainer.base_features_override = cfg.base_features
    trainer.export_order_z_override = cfg.export_interpolation_order_z
    if fold != "all":
        trainer.schedule_start = cfg.fold_schedule_start
    if initial_lr is not None:
        trainer.initial_lr = initial_lr
    if epochs < 50:
        trainer.save_every = max(1, epochs)  # short runs: a checkpoint at the end only
    return trainer


def fullres_stage(plans_file: Path) -> int:
    """3d_fullres trains the plan's last stage, as nnunet's get_default_configuration chooses it: the
    default planner adds a low-resolution stage 0 for large CTs (the export takes the last one too)."""
    import pickle

    with open(plans_file, "rb") as f:
        return int(max(pickle.load(f)["plans_per_stage"]))


def _validate(cfg: TrainConfig, trainer) -> None:
    """nnunet's full-resolution validation of the held-out cases; with `validation_cases`, of
    the first K of them (sorted by name) only. The postprocessing is chosen afterwards from all
    folds together (the pipeline's choose_postprocessing), not per fold."""
    if cfg.validation_cases is not None:
        keys = sorted(trainer.dataset_val)[:cfg.validation_cases]
        trainer.dataset_val = OrderedDict((k, trainer.dataset_val[k]) for k in keys)
    trainer.network.eval()
    trainer.validate(save_softmax=False, do_mirroring=cfg.validation_tta, validation_folder_name="validation_raw",
                     run_postprocessing_on_folds=False)


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
            tmp = pkl.with_name(pkl.name + ".partial")
            with open(tmp, "wb") as f:
                pickle.dump(info, f)
            os.replace(tmp, pkl)

"""The localiser of two-stage prediction, trained beside the folds: the same task, nnU-Net's own
preprocessing and trainer, the coarse localiser plan (app.training.planner.LocaliserPlanner3D),
one model on all cases (nnunet's fold "all"), exported into the weights folder as
localiser.safetensors and localiser_plans.json (app.weights_export.add_localiser)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from app.training.config import TrainConfig


def train_localiser(cfg: TrainConfig, paths: dict[str, Path], task: str, log) -> dict:
    """Plan and preprocess with the localiser plan, train on every case, export beside the folds
    when `cfg.out` is set. Returns what MANIFEST.json records of it."""
    from app.training.fold import train_fold
    from app.training.workdir import plan_and_preprocess

    loc_cfg = dataclasses.replace(cfg, planner="localiser", epochs=cfg.localiser_epochs, time_budget_s=None,
                                  batch_size=None)
    plans_file = plan_and_preprocess(loc_cfg, paths, task, log)
    result = train_fold(loc_cfg, plans_file, task, "all", log, epochs=cfg.localiser_epochs,
                        iterations=cfg.localiser_iterations or cfg.iterations, validate=False,
                        init_from=cfg.localiser_init, initial_lr=cfg.localiser_lr)
    if result.get("unfinished"):
        return {"unfinished": True, **result}
    record = {"planner": "localiser", "epochs": cfg.localiser_epochs,
              "iterations_per_epoch": cfg.localiser_iterations or cfg.iterations,
              "train_seconds": result.get("train_seconds"), "parameters": result.get("parameters"),
              "started_from": None if cfg.localiser_init is None else cfg.localiser_init.name,
              "initial_lr": cfg.localiser_lr,
              "trained_on": "every training case (nnunet's fold 'all')"}
    if cfg.out is not None:
        from app.weights_export import add_localiser
        add_localiser(Path(result["out_base"]), cfg.out, record)
        log(f"localiser exported to {cfg.out}")
    return record

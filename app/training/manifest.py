"""What a training run records: the MANIFEST entries, the plan summary, the git commit and the
measured prediction cost of the exported weights."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app.training.config import REPO, TrainConfig


def plan_summary(plans_file: Path) -> dict:
    """The plan as exported to plans.json (one reading of nnunet's plans), plus the batch size."""
    import pickle

    from app.weights_export import plans_to_json

    with open(plans_file, "rb") as f:
        plans = pickle.load(f)
    exported = plans_to_json(plans)
    return {
        "patch_size": exported["patch_size"],
        "target_spacing_mm": exported["target_spacing"],
        "batch_size": int(plans["plans_per_stage"][max(plans["plans_per_stage"])]["batch_size"]),
        "base_num_features": exported["network"]["base_num_features"],
        "pool_op_kernel_sizes": exported["network"]["pool_op_kernel_sizes"],
        "num_stages": int(plans["num_stages"]),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def measure_predict(weights: Path, ct: Path, work: Path, log) -> dict | None:
    """Wall time of `python -m app predict` (all folds, TTA) on one CT, in a fresh process."""
    inp, outp = work / "predict_in", work / "predict_out"
    shutil.rmtree(inp, ignore_errors=True)
    shutil.rmtree(outp, ignore_errors=True)
    inp.mkdir(parents=True)
    name = ct.name if ct.name.endswith("_0000.nii.gz") else ct.name.replace(".nii.gz", "_0000.nii.gz")
    shutil.copy(ct, inp / name)
    cmd = [sys.executable, "-m", "app", "predict", "-i", str(inp), "-o", str(outp), "--weights", str(weights)]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True)
    dt = time.time() - t0
    if res.returncode != 0:
        log(f"predict timing failed (rc {res.returncode}): {res.stderr[-2000:]}")
        return None
    log(f"predict on {ct.name}: {dt:.1f} s")
    return {"case": ct.name, "seconds": round(dt, 1), "command": "python -m app predict (all folds, 8-flip TTA)",
            "cpu_threads": os.cpu_count()}


def _epochs_run(cfg: TrainConfig, results: list[dict]):
    """The epoch count; under a time budget, what the folds fitted (one number, or one per fold)."""
    fitted = sorted({r["epochs"] for r in results if "epochs" in r})
    if cfg.time_budget_s is None or not fitted:
        return cfg.epochs
    return fitted[0] if len(fitted) == 1 else [r.get("epochs") for r in results]


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def build_manifest(cfg: TrainConfig, plans_file: Path, task: str, results: list[dict], warm: dict | None,
                   postprocessing: dict | None, wall: float) -> dict:
    from app.training.trainer import trainer_class_for

    cls = trainer_class_for(cfg.epochs, cfg.scaled_trainer)
    summary = plan_summary(plans_file)
    summary["parameters"] = next((r["parameters"] for r in results if "parameters" in r), None)
    manifest = {
        "trainer": f"{cls.__module__}.{cls.__name__}",
        "trainer_schedule": "CE only to 50 % of epochs, linear CE->Dice to 75 %, Dice only after "
                            "(nnunet's 500/750 of 1000)",
        "epochs": _epochs_run(cfg, results),
        "iterations_per_epoch": cfg.iterations,
        "validation_iterations_per_epoch": cfg.val_iterations,
        "folds": list(cfg.folds),
        "planner": cfg.planner,
        "plan": summary,
        "data": {"task": task, **cfg.data_description},
        "seed": cfg.seed,
        "cross_validation": [{k: r[k] for k in ("fold", "validation_dice", "train_seconds", "epochs") if k in r}
                             for r in results],
        "time_budget_per_fold_s": cfg.time_budget_s,
        "batch_size": cfg.batch_size or summary["batch_size"],
        "parallel_folds": cfg.parallel_folds,
        "validation_tta": cfg.validation_tta,
        "validation_cases": "all held-out cases" if cfg.validation_cases is None else cfg.validation_cases,
        "fold_init": None if cfg.fold_init is None else cfg.fold_init.name,
        "fold_initial_lr": cfg.fold_initial_lr,
        "fold_schedule_start": cfg.fold_schedule_start,
        "warm_start": None if warm is None else {
            "what": "every fold started from one model first trained on all cases (fold 'all') with the "
                    "same trainer; a CPU-budget shortcut of the demo, so the cross-validation numbers are "
                    "optimistic. The real recipe trains each fold from scratch.",
            "epochs": cfg.warm_start_epochs, "iterations_per_epoch": cfg.warm_start_iterations or cfg.iterations,
            "train_seconds": warm.get("train_seconds"),
            "started_from": None if cfg.warm_start_init is None else str(cfg.warm_start_init.name),
            "initial_lr": cfg.warm_start_lr},
        "postprocessing": postprocessing,
        "training_wall_seconds": round(wall, 1),
        "training_hardware": f"{os.cpu_count()} CPU threads" if not _cuda() else "CUDA",
        "git_commit": _git_commit(),
    }
    return manifest

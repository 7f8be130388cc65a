"""Train the folds side by side, one process per fold (a GPU with room for several small
trainings, or several GPUs: fold i gets GPU i mod count), then hand the results back to the pipeline.

Each worker is `python -m app.training.parallel CONFIG.json FOLD RESULT.json`: it rebuilds the
TrainConfig, sets nnunet's folders before importing it, and runs the same `train_fold` as the
sequential path. Plans and preprocessed data must exist already (the parent makes them).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from app.training.config import REPO, TrainConfig, config_from_json, config_to_json
from app.training.fold import fullres_stage, train_fold
from app.training.workdir import link_task, plan_and_preprocess, setup_env

__all__ = ["config_from_json", "config_to_json", "train_folds_in_parallel"]


def unpack_once(plans_file: Path) -> None:
    """nnunet unpacks .npz to .npy when a trainer initialises; done by one process first, so that
    the fold processes do not write the same files at once."""
    from nnunet.training.dataloading.dataset_loading import unpack_dataset

    for folder in sorted(plans_file.parent.glob("*_stage*")):
        if folder.is_dir():
            unpack_dataset(str(folder))


def split_once(plans_file: Path, work: Path) -> None:
    """nnunet writes splits_final.pkl when a trainer first needs it; written here first, by
    nnunet's own do_split, so that the fold processes only read it."""
    if (plans_file.parent / "splits_final.pkl").is_file():
        return
    from app.training.trainer import ScaledCEToDiceTrainer

    stage = fullres_stage(plans_file)
    trainer = ScaledCEToDiceTrainer(str(plans_file), 0, output_folder=str(work / "split"),
                                    dataset_directory=str(plans_file.parent), stage=stage)
    trainer.load_plans_file()
    trainer.process_plans(trainer.plans)
    trainer.folder_with_preprocessed_data = str(plans_file.parent / f"{trainer.plans['data_identifier']}_stage{stage}")
    trainer.load_dataset()
    trainer.do_split()


def train_folds_in_parallel(cfg: TrainConfig, plans_file: Path, init_from: Path | None, log) -> list[dict]:
    import torch

    work = cfg.work_dir.resolve() / "parallel"
    work.mkdir(parents=True, exist_ok=True)
    unpack_once(plans_file)
    split_once(plans_file, work)
    gpus = torch.cuda.device_count()
    config_file = work / "config.json"
    config_file.write_text(config_to_json(dataclasses.replace(cfg, fold_init=init_from, parallel_folds=False)))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    running = []
    for i, fold in enumerate(cfg.folds):
        result, fold_log = work / f"fold_{fold}.json", work / f"fold_{fold}.log"
        result.unlink(missing_ok=True)
        fold_env = dict(env, CUDA_VISIBLE_DEVICES=str(i % gpus)) if gpus > 1 else env
        with open(fold_log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "app.training.parallel", str(config_file), str(fold),
                                     str(result)], cwd=str(REPO), env=fold_env, stdout=out, stderr=subprocess.STDOUT)
        running.append((fold, proc, result, fold_log))
    log(f"training folds {list(cfg.folds)} in parallel; logs in {work}")
    results, failed = [], []
    for fold, proc, result, fold_log in running:
        if proc.wait() != 0 or not result.is_file():
            failed.append(f"fold {fold} (exit {proc.returncode}, see {fold_log})")
            continue
        results.append(json.loads(result.read_text()))
        log(f"fold {fold}: " + ("stopped for now" if results[-1].get("unfinished") else
                                f"done, validation Dice {results[-1].get('validation_dice')}"))
    if failed:
        raise RuntimeError("parallel training failed: " + "; ".join(failed))
    return results


def _worker(config_file: Path, fold: int, result_file: Path) -> int:
    cfg = config_from_json(config_file.read_text())
    paths = setup_env(cfg)
    task = link_task(cfg, paths)
    import numpy as np
    import torch
    if cfg.seed is not None:
        np.random.seed(cfg.seed + fold)
        torch.manual_seed(cfg.seed + fold)
    # several trainings share the CPU cores with their augmentation workers
    torch.set_num_threads(cfg.torch_threads or 2)
    plans_file = plan_and_preprocess(cfg, paths, task, lambda m: print(f"[fold {fold}] {m}", flush=True))
    result = train_fold(cfg, plans_file, task, fold, lambda m: print(f"[fold {fold}] {m}", flush=True),
                        init_from=cfg.fold_init, initial_lr=cfg.fold_initial_lr)
    result_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))

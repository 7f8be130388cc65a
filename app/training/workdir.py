"""nnU-Net v1's folders for one run, the raw task linked into them, and planning + preprocessing.

nnunet reads its folders from environment variables at import time, so `setup_env` runs before
the first nnunet import of the process.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from app.training.config import TrainConfig

TASK_RE = re.compile(r"^Task(\d{3})_(.+)$")


def task_name(task_dir: Path) -> str:
    if TASK_RE.match(task_dir.name):
        return task_dir.name
    return f"Task500_{task_dir.name}"


def setup_env(cfg: TrainConfig) -> dict[str, Path]:
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


def link_task(cfg: TrainConfig, paths: dict[str, Path]) -> str:
    task = task_name(cfg.task_dir)
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
    # the marker is written once preprocessing has finished; older work folders only have the split,
    # which the trainer writes after it (fold "all", the localiser's, writes none)
    done = pre / f"{plans_id}.preprocessed"
    if plans_file.is_file() and (done.is_file() or (pre / "splits_final.pkl").exists()):
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
    done.write_text(f"{plans_file.name}\n")
    log(f"planned and preprocessed in {time.time() - t0:.0f} s: {plans_file}")
    return plans_file


def set_torch_threads(cfg: TrainConfig) -> None:
    import torch
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif not torch.cuda.is_available():
        # Measured on a busy 2-core machine: one intra-op thread ran a training step 10x faster
        # than two (OpenMP threads spin while they wait for a core).
        torch.set_num_threads(1)

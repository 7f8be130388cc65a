"""One function from an nnU-Net v1 raw task folder to a weights folder.

Steps (all nnU-Net v1 1.7.1 code, run in this process):
 1. crop + dataset analysis + plan (default ExperimentPlanner3D_v21, or the small demo planner)
    + preprocess;
 2. each fold trained with nnUNetTrainerV2_graduallyTransitionFromCEToDice (its own class at
    1000 epochs, the breakpoint-scaled subclass for shorter runs), then validated;
 3. postprocessing (largest connected component per label) chosen from the pooled
    cross-validation exactly as nnunet's consolidate_folds does (only when all 5 folds ran);
 4. export to the weights format (app.weights_export) with a MANIFEST describing the run and
    plans.json's training orientation (app.training.orientation).

An interrupted fold goes on from its latest checkpoint with --continue (app.training.resume).

nnunet reads its folders from environment variables at import time, so they are set before
the first nnunet import, inside `train()`.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from app.training.config import TrainConfig
from app.training.fold import train_fold
from app.training.manifest import build_manifest, measure_predict
from app.training.orientation import training_orientation
from app.training.workdir import link_task, plan_and_preprocess, set_torch_threads, setup_env

__all__ = ["TrainConfig", "train", "choose_postprocessing", "export_with_manifest"]


def train(cfg: TrainConfig, log=print) -> dict:
    t_start = time.time()
    paths = setup_env(cfg)
    task = link_task(cfg, paths)
    set_torch_threads(cfg)
    if not cfg.folds and cfg.warm_start_epochs <= 0 and not cfg.prepare_only:
        # the localiser alone, added to an existing weights folder (--out): checked before training
        if cfg.out is not None and not (cfg.out / "MANIFEST.json").is_file():
            raise SystemExit(f"--out {cfg.out} holds no exported folds (MANIFEST.json) to add the localiser to")
        return {"localiser": _localiser(cfg, paths, task, log), "training_wall_seconds": round(time.time() - t_start, 1)}
    plans_file = plan_and_preprocess(cfg, paths, task, log)
    if cfg.prepare_only:
        from app.training.parallel import split_once, unpack_once
        unpack_once(plans_file)
        split_once(plans_file, cfg.work_dir.resolve() / "parallel")
        log(f"prepared {plans_file.parent}: plans, preprocessed data and the 5-fold split; fold jobs can start")
        return {"prepared": str(plans_file)}
    warm = None
    if cfg.warm_start_epochs > 0:
        warm = train_fold(cfg, plans_file, task, "all", log, epochs=cfg.warm_start_epochs,
                          iterations=cfg.warm_start_iterations or cfg.iterations, validate=False,
                          init_from=cfg.warm_start_init, initial_lr=cfg.warm_start_lr)
        if warm.get("unfinished"):
            return {"warm_start": warm, "unfinished": ["all"]}
    init_from = Path(warm["checkpoint"]) if warm else cfg.fold_init
    if not cfg.folds:
        # only the model on all cases (a starting point for later fold runs, --fold-init), or the localiser
        localiser = _localiser(cfg, paths, task, log)
        if warm is not None:
            log(f"no folds asked for; the model on all cases is {init_from}")
        return {"warm_start": warm, "localiser": localiser, "training_wall_seconds": round(time.time() - t_start, 1)}
    if cfg.parallel_folds and len(cfg.folds) > 1:
        from app.training.parallel import train_folds_in_parallel
        results = train_folds_in_parallel(cfg, plans_file, init_from, log)
    else:
        results = [train_fold(cfg, plans_file, task, f, log, init_from=init_from, initial_lr=cfg.fold_initial_lr)
                   for f in cfg.folds]
    unfinished = [r["fold"] for r in results if r.get("unfinished")]
    if unfinished:
        log(f"folds {unfinished} unfinished: run the same command with --continue to go on")
        return {"unfinished": unfinished, "cross_validation": results}
    out_base = Path(results[0]["out_base"])
    postprocessing = choose_postprocessing(cfg, out_base, log)
    manifest = build_manifest(cfg, plans_file, task, results, warm, postprocessing, time.time() - t_start)
    manifest["training_orientation"] = training_orientation(sorted((cfg.task_dir / "imagesTr").glob("*.nii*")))
    if cfg.out is not None:
        export_with_manifest(cfg, out_base, manifest, log)
    manifest["localiser"] = _localiser(cfg, paths, task, log)
    return manifest


def _localiser(cfg: TrainConfig, paths: dict, task: str, log) -> dict | None:
    """Trained after the folds, so that an export of the folds never waits for it."""
    if cfg.localiser_epochs <= 0:
        return None
    from app.training.localiser import train_localiser
    return train_localiser(cfg, paths, task, log)


def choose_postprocessing(cfg: TrainConfig, out_base: Path, log) -> dict | None:
    """nnunet's consolidate_folds over the pooled cross-validation (it needs all 5 folds); with
    fewer folds, the first fold's own decision. Without validation, none."""
    postprocessing = None
    if cfg.validation_cases == 0:
        log("no validation (--validation-cases 0): no postprocessing chosen")
    elif sorted(cfg.folds) == [0, 1, 2, 3, 4]:
        from nnunet.postprocessing.consolidate_postprocessing import consolidate_folds
        if cfg.validation_cases is not None:
            _keep_reference_of_validated_cases(out_base, cfg.folds)
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


def _keep_reference_of_validated_cases(out_base: Path, folds) -> None:
    """consolidate_folds pools every reference mask in gt_niftis/ (nnunet copies all training
    cases there); a capped validation predicted only some, so the others' copies go."""
    validated = {p.name for f in folds for p in (out_base / f"fold_{f}" / "validation_raw").glob("*.nii.gz")}
    for reference in (out_base / "gt_niftis").glob("*.nii.gz"):
        if reference.name not in validated:
            reference.unlink()


def export_with_manifest(cfg: TrainConfig, out_base: Path, manifest: dict, log) -> None:
    from app.weights_export import export_model_folder, update_manifest
    export_model_folder(out_base, cfg.out, manifest_extra=manifest, dtype=cfg.export_dtype,
                        training_orientation=manifest.get("training_orientation"))
    log(f"exported to {cfg.out} (training orientation {manifest.get('training_orientation')})")
    if cfg.measure_predict_on is not None:
        cost = measure_predict(cfg.out, cfg.measure_predict_on, cfg.work_dir, log)
        if cost is not None:
            manifest["predict_cost_per_case"] = cost
            update_manifest(cfg.out, {"predict_cost_per_case": cost})

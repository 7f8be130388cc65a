"""A tiny end-to-end training run: phantoms -> plan/preprocess -> one fold, two very short
epochs -> validation -> export -> `python -m app predict` accepts the weights.

It checks the pipeline, not accuracy (a few iterations learn nothing useful)."""
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, tmp, timeout):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    log = tmp / f"{cmd[3]}.log"
    log.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    assert res.returncode == 0, f"{' '.join(cmd)} failed, see {log}:\n{res.stderr[-3000:]}"
    return res


def test_tiny_training_run_exports_weights_that_predict_accepts(tmp_path):
    py = sys.executable
    task = tmp_path / "Task598_Tiny"
    _run([py, "-m", "app", "synth", "--out", str(tmp_path / "data"), "--cases", "5", "--seed", "99",
          "--size", "small", "--nnunet-task", str(task)], tmp_path, 300)
    weights = tmp_path / "weights"
    case = sorted((tmp_path / "data" / "images").glob("*_0000.nii.gz"))[0]
    res = _run([py, "-m", "app", "train", "--task-dir", str(task), "--planner", "small", "--folds", "0",
                "--epochs", "2", "--iterations", "2", "--val-iterations", "1", "--work-dir", str(tmp_path / "work"),
                "--da-workers", "1", "--processes", "1", "--no-validation-tta", "--seed", "0",
                "--out", str(weights), "--measure-predict-on", str(case), "--fold-schedule-start", "0.75",
                "--localiser-epochs", "1", "--localiser-iterations", "2"], tmp_path, 600)
    assert "[train] exported to" in res.stdout
    assert "[train] localiser exported to" in res.stdout

    for name in ("plans.json", "postprocessing.json", "MANIFEST.json", "fold_0.safetensors"):
        assert (weights / name).is_file(), name
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    assert manifest["trainer"].endswith("ScaledCEToDiceTrainer")
    assert manifest["epochs"] == 2 and manifest["iterations_per_epoch"] == 2
    assert manifest["planner"] == "small"
    # the fold's run covered the schedule's Dice-only part: no epoch on cross-entropy
    assert manifest["fold_schedule_start"] == 0.75
    fold_log = next((tmp_path / "work").glob("nnUNet_results/nnUNet/3d_fullres/Task598_Tiny/*/fold_0/training_log_*"))
    weights_logged = re.findall(r"weight ce (\S+) weight dice (\S+)", fold_log.read_text())
    assert weights_logged and all(float(ce) == 0.0 and float(dice) == 2.0 for ce, dice in weights_logged)
    assert manifest["plan"]["base_num_features"] == 8
    assert manifest["plan"]["parameters"] > 100_000
    assert "training_wall_seconds" in manifest and "git_commit" in manifest
    assert set(manifest["files"]) >= {"plans.json", "fold_0.safetensors"}
    assert manifest["predict_cost_per_case"]["case"] == case.name
    assert manifest["predict_cost_per_case"]["seconds"] > 0
    plans = json.loads((weights / "plans.json").read_text())
    assert plans["network"]["base_num_features"] == 8
    assert len(plans["network"]["pool_op_kernel_sizes"]) == 3
    assert plans["patch_size"] == [40, 40, 40]
    assert plans["target_spacing"] == [5.0, 5.0, 5.0]
    # the demo plan exports linearly along z, from the plans that stock nnU-Net reads too
    assert plans["segmentation_export_params"]["interpolation_order_z"] == 1
    model_plans = next((tmp_path / "work").glob("nnUNet_results/nnUNet/3d_fullres/Task598_Tiny/*/plans.pkl"))
    assert pickle.loads(model_plans.read_bytes())["segmentation_export_params"]["interpolation_order_z"] == 1
    # the export records the training data's dominant orientation, which predict reorients to
    from app.training.orientation import training_orientation
    assert plans["training_orientation"] is not None
    assert plans["training_orientation"] == training_orientation(sorted((task / "imagesTr").glob("*.nii.gz")))
    assert manifest["training_orientation"] == plans["training_orientation"]
    assert manifest["validation_cases"] == "all held-out cases"
    # the localiser beside the folds: its coarse plan, its hash, and what trained it
    localiser_plans = json.loads((weights / "localiser_plans.json").read_text())
    assert localiser_plans["target_spacing"] == [8.0, 8.0, 8.0] and localiser_plans["patch_size"] == [32, 32, 32]
    assert localiser_plans["training_orientation"] == plans["training_orientation"]
    assert set(manifest["files"]) >= {"localiser_plans.json", "localiser.safetensors"}
    assert manifest["localiser"]["epochs"] == 1 and manifest["localiser"]["planner"] == "localiser"

    # predict accepts the exported model (one fold, no TTA, to keep the test short)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / case.name).symlink_to(case)
    out = tmp_path / "out"
    _run([py, "-m", "app", "predict", "-i", str(inp), "-o", str(out), "--weights", str(weights),
          "--no-tta", "--quiet", "--roi"], tmp_path, 300)
    record = json.loads((out / "predict_log.jsonl").read_text().splitlines()[-1])
    assert record["two_stage"] is True and record["roi"]["localiser_s"] > 0
    import SimpleITK as sitk
    pred = sitk.ReadImage(str(out / case.name.replace("_0000", "")))
    src = sitk.ReadImage(str(case))
    assert pred.GetSize() == src.GetSize()
    assert np.allclose(pred.GetDirection(), src.GetDirection())
    arr = sitk.GetArrayFromImage(pred)
    assert set(np.unique(arr)) <= {0, 1, 2, 3, 4}


def test_parallel_folds_fit_their_time_budget(tmp_path):
    """Two folds trained side by side in their own processes (the parent unpacks the data once),
    each fitting its epochs to a wall-clock budget, with a batch size, a network width and an export
    setting other than the plan's;
    the manifest records what each fold did."""
    py = sys.executable
    task = tmp_path / "Task597_Par"
    _run([py, "-m", "app", "synth", "--out", str(tmp_path / "data"), "--cases", "5", "--seed", "98",
          "--size", "small", "--nnunet-task", str(task)], tmp_path, 300)
    work = tmp_path / "work"
    res = _run([py, "-m", "app", "train", "--task-dir", str(task), "--planner", "small", "--folds", "0", "1",
                "--parallel-folds", "--epochs", "50", "--time-budget-min", "0.01", "--batch-size", "3",
                "--base-features", "12", "--export-interpolation-order-z", "0",
                "--iterations", "2", "--val-iterations", "1", "--work-dir", str(work), "--da-workers", "1",
                "--processes", "1", "--no-validation-tta", "--seed", "0"], tmp_path, 600)
    assert "training folds [0, 1] in parallel" in res.stdout
    summary = json.loads(res.stdout[res.stdout.rindex("\n{\n") + 1:])
    folds = {cv["fold"]: cv for cv in summary["cross_validation"]}
    assert set(folds) == {0, 1}
    for fold in (0, 1):
        # a 0.6 s budget is spent by the 3 calibration epochs: each fold stops right there
        assert folds[fold]["epochs"] == 3, folds[fold]
        assert set(folds[fold]["validation_dice"]) >= {"1", "2", "3", "4"}
        log = (work / "parallel" / f"fold_{fold}.log").read_text()
        assert "max_num_epochs set to 3" in log
    trained = sorted(work.glob("nnUNet_results/nnUNet/3d_fullres/Task597_Par/ScaledCEToDiceTrainer__*/fold_*/"
                               "model_final_checkpoint.model"))
    assert len(trained) == 2
    # the overrides reached the trainers (nnunet's debug.json holds their attributes), and the
    # checkpoints hold the wider network and record it in their plans, which the export reads
    for checkpoint in trained:
        debug = json.loads((checkpoint.parent / "debug.json").read_text())
        assert debug["batch_size"] == "3" and debug["base_num_features"] == "12"
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        assert saved["state_dict"]["conv_blocks_context.0.blocks.0.conv.weight"].shape[0] == 12
        with open(str(checkpoint) + ".pkl", "rb") as f:
            plans = pickle.load(f)["plans"]
        assert plans["base_num_features"] == 12
        assert plans["segmentation_export_params"]["interpolation_order_z"] == 0   # the small plan says 1
    with open(trained[0].parents[1] / "plans.pkl", "rb") as f:
        plans = pickle.load(f)
    assert plans["base_num_features"] == 12 and plans["segmentation_export_params"]["interpolation_order_z"] == 0


def test_localiser_alone_needs_exported_folds_before_it_trains(tmp_path):
    task = tmp_path / "Task597_Empty"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    (task / "dataset.json").write_text("{}")
    res = subprocess.run([sys.executable, "-m", "app", "train", "--task-dir", str(task), "--folds",
                          "--localiser-epochs", "1", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "w")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "holds no exported folds" in res.stderr
    assert not (tmp_path / "work" / "nnUNet_preprocessed" / task.name).exists()   # stopped before planning

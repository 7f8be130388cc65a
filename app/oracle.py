"""Stock nnU-Net v1 as the oracle, for tests and benchmarks (never imported by inference).

- `write_v1_model_folder`: an nnU-Net v1 model folder (plans.pkl, fold_N/*.model(.pkl),
  postprocessing.json) from a plans dict and state dicts, as nnU-Net's own training writes it.
- `tiny_v1_plans` / `random_v1_model`: a small random-init model for tests.
- `v1_folder_from_weights`: the inverse of export-weights, so anyone can run stock nnU-Net on
  the shipped weights/.
- `run_stock_predict`: stock `predict_from_folder`, in a subprocess with the one environment
  variable stock v1 needs under torch >= 2.6 to read its own checkpoints.
- `OURS_AS_STOCK`: the predict options that every comparison with stock adds to our side.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

# Stock v1 applies postprocessing.json's rules alone; predict also keeps the two largest kidney
# components where that file keeps no kidney rule (app.inference.postprocess). Compared with
# stock, ours runs with nnU-Net's rules alone, so that both sides postprocess alike.
OURS_AS_STOCK = ("--stock-postprocessing",)
STOCK_TRAINER = "nnUNetTrainerV2_graduallyTransitionFromCEToDice"
CHECKPOINT = "model_final_checkpoint"


def tiny_v1_plans(target_spacing=(3.5, 3.5, 3.5), patch=(32, 48, 48), base_features=4, num_pool=3,
                  intensity=(40.0, 180.0, -200.0, 300.0), transpose_forward=(0, 1, 2)) -> dict:
    """A v1 3d_fullres plans dict with one stage; intensity = (mean, sd, p0.5, p99.5)."""
    mean, sd, low, high = intensity
    pool = [[2, 2, 2]] * num_pool
    conv = [[3, 3, 3]] * (num_pool + 1)
    transpose_backward = [int(i) for i in np.argsort(transpose_forward)]
    stage = {"batch_size": 2, "num_pool_per_axis": [num_pool] * 3, "patch_size": np.array(patch),
             "median_patient_size_in_voxels": np.array(patch), "current_spacing": np.array(target_spacing),
             "original_spacing": np.array(target_spacing), "do_dummy_2D_data_aug": False,
             "pool_op_kernel_sizes": pool, "conv_kernel_sizes": conv}
    return {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: "CT"},
        "normalization_schemes": OrderedDict([(0, "CT")]), "use_mask_for_norm": OrderedDict([(0, False)]),
        "dataset_properties": {"intensityproperties": OrderedDict([(0, {
            "mean": mean, "sd": sd, "percentile_00_5": low, "percentile_99_5": high,
            "median": mean, "min": low, "max": high})])},
        "keep_only_largest_region": None, "min_region_size_per_class": None, "min_size_per_class": None,
        "all_classes": [1, 2, 3, 4], "num_classes": 4, "base_num_features": base_features,
        "conv_per_stage": 2, "transpose_forward": list(transpose_forward),
        "transpose_backward": transpose_backward, "data_identifier": "nnUNetData_plans_v2.1",
        "plans_per_stage": {0: stage}, "preprocessor_name": "GenericPreprocessor",
    }


def _trainer_network(plans: dict):
    """The network nnU-Net's own trainer builds from these plans (the oracle's side)."""
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2
    import tempfile
    trainer = nnUNetTrainerV2("unused.pkl", 0, output_folder=tempfile.gettempdir(), dataset_directory=None,
                              unpack_data=False, deterministic=False, fp16=False)
    trainer.process_plans(plans)
    trainer.initialize_network()
    return trainer.network


def random_v1_model(out_dir: Path, plans: dict, folds=(0,), seed: int = 0,
                    largest_component_labels=(1, 2, 3, 4), logit_gain: float = 20.0) -> Path:
    import torch
    states = {}
    for fold in folds:
        torch.manual_seed(seed + fold)
        network = _trainer_network(plans)
        states[fold] = {k: _spread_head(v, logit_gain) if k.startswith("seg_outputs") else v.clone()
                        for k, v in network.state_dict().items()}
    return write_v1_model_folder(out_dir, plans, states, largest_component_labels)


def _spread_head(weight, gain: float):
    """A random net's features are mostly positive with similar means, so the class whose head
    weights sum highest wins almost everywhere. Zero-sum heads with a gain make every class win
    somewhere, which makes a comparison of masks meaningful."""
    return (weight - weight.mean(dim=1, keepdim=True)) * gain


def write_v1_model_folder(out_dir: Path, plans: dict, states: dict[int, dict],
                          largest_component_labels=(1, 2, 3, 4)) -> Path:
    import torch
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "plans.pkl", "wb") as handle:
        pickle.dump(plans, handle)
    for fold, state in states.items():
        fold_dir = out_dir / f"fold_{fold}"
        fold_dir.mkdir(exist_ok=True)
        checkpoint = {"epoch": 1, "state_dict": OrderedDict((k, v.float()) for k, v in state.items()),
                      "optimizer_state_dict": None, "lr_scheduler_state_dict": None,
                      "plot_stuff": ([0.0], [0.0], [0.0], [0.0]), "best_stuff": (0, 0.0, 0.0)}
        torch.save(checkpoint, fold_dir / f"{CHECKPOINT}.model")
        info = {"init": ("plans.pkl", fold, str(fold_dir), "unused", True, 0, True, False, True),
                "name": STOCK_TRAINER, "class": STOCK_TRAINER, "plans": plans}
        with open(fold_dir / f"{CHECKPOINT}.model.pkl", "wb") as handle:
            pickle.dump(info, handle)
    postprocessing = {"for_which_classes": [int(c) for c in largest_component_labels],
                      "min_valid_object_sizes": "None", "dc_per_class_raw": {}, "dc_per_class_pp_all": {},
                      "dc_per_class_pp_per_class": {}, "num_samples": 0}
    (out_dir / "postprocessing.json").write_text(json.dumps(postprocessing))
    return out_dir


def v1_folder_from_weights(weights_dir: Path, out_dir: Path, folds=None) -> Path:
    """Rebuild a stock v1 model folder from our weights/ (plans.json + safetensors)."""
    from safetensors.torch import load_file

    weights_dir = Path(weights_dir)
    plan = json.loads((weights_dir / "plans.json").read_text())
    net, norm = plan["network"], plan["normalization"]
    plans = tiny_v1_plans(plan["target_spacing"], plan["patch_size"], net["base_num_features"],
                          len(net["pool_op_kernel_sizes"]),
                          (norm["mean"], norm["sd"], norm["lower"], norm["upper"]), plan["transpose_forward"])
    stage = plans["plans_per_stage"][0]
    stage["pool_op_kernel_sizes"] = net["pool_op_kernel_sizes"]
    stage["conv_kernel_sizes"] = net["conv_kernel_sizes"]
    plans["conv_per_stage"] = net.get("conv_per_stage", 2)
    if "segmentation_export_params" in plan:
        plans["segmentation_export_params"] = plan["segmentation_export_params"]
    available = sorted(int(p.stem.split("_")[1]) for p in weights_dir.glob("fold_*.safetensors"))
    states = {f: load_file(str(weights_dir / f"fold_{f}.safetensors")) for f in (folds or available)}
    pp = json.loads((weights_dir / "postprocessing.json").read_text())
    return write_v1_model_folder(out_dir, plans, states, pp.get("for_which_classes", []))


STOCK_SCRIPT = """
import sys
from nnunet.inference.predict import predict_from_folder
model, inp, out, folds, tta, step = sys.argv[1:7]
predict_from_folder(model, inp, out, [int(f) for f in folds.split(',')], False, 1, 1, None, 0, 1,
                    tta == '1', mixed_precision=False, overwrite_existing=True, mode='normal',
                    overwrite_all_in_gpu=None, step_size=float(step))
"""


def stock_predict_command(model_dir: Path, input_dir: Path, output_dir: Path, folds=(0,), tta: bool = True,
                          step_size: float = 0.5) -> tuple[list[str], dict]:
    """argv and environment of one stock predict_from_folder run."""
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", nnUNet_raw_data_base="/tmp",
               nnUNet_preprocessed="/tmp", RESULTS_FOLDER="/tmp")
    args = [sys.executable, "-c", STOCK_SCRIPT, str(model_dir), str(input_dir), str(output_dir),
            ",".join(str(f) for f in folds), "1" if tta else "0", str(step_size)]
    return args, env


def run_stock_predict(model_dir: Path, input_dir: Path, output_dir: Path, folds=(0,), tta: bool = True,
                      step_size: float = 0.5, timeout: float | None = None) -> subprocess.CompletedProcess:
    args, env = stock_predict_command(model_dir, input_dir, output_dir, folds, tta, step_size)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)

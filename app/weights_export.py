"""`python -m app export-weights MODEL_DIR --out DIR`: nnU-Net v1 model folder -> weights/.

This is the one place that reads nnU-Net's pickles (plans.pkl and .model checkpoints), so that
inference never has to. It writes plans.json, fold_N.safetensors, postprocessing.json and
MANIFEST.json, each file first to a temporary name and then renamed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import re
from pathlib import Path

from app.inference.weights import FORMAT_VERSION, export_params, sha256_of, verify_manifest
from app.labels import LABELS

CHECKPOINT = "model_final_checkpoint.model"
LOCALISER_FILES = ("localiser_plans.json", "localiser.safetensors")
FOLD_DIR = re.compile(r"^fold_(\d+)$")


def plans_to_json(plans: dict, mirror_axes=(0, 1, 2), training_orientation: str | None = None) -> dict:
    """The subset of a v1 3d_fullres plans.pkl that inference needs (highest stage, as v1 does)."""
    stage = max(plans["plans_per_stage"].keys())
    stage_plans = plans["plans_per_stage"][stage]
    schemes = plans["normalization_schemes"]
    if len(schemes) != 1:
        raise ValueError(f"expected one input channel (CT), plans have {len(schemes)}")
    intensity = plans["dataset_properties"]["intensityproperties"][0]
    export = export_params(plans.get("segmentation_export_params"))  # refused here, not at the first prediction
    return {
        "format_version": FORMAT_VERSION,
        "network": {
            "class": "Generic_UNet",
            "input_channels": int(plans["num_modalities"]),
            "base_num_features": int(plans["base_num_features"]),
            "num_classes": int(plans["num_classes"]) + 1,
            "conv_per_stage": int(plans.get("conv_per_stage", 2)),
            "pool_op_kernel_sizes": [[int(v) for v in k] for k in stage_plans["pool_op_kernel_sizes"]],
            "conv_kernel_sizes": [[int(v) for v in k] for k in stage_plans["conv_kernel_sizes"]],
        },
        "patch_size": [int(v) for v in stage_plans["patch_size"]],
        "target_spacing": [float(v) for v in stage_plans["current_spacing"]],
        "transpose_forward": [int(v) for v in plans["transpose_forward"]],
        "transpose_backward": [int(v) for v in plans["transpose_backward"]],
        "normalization": {
            "scheme": schemes[0],
            "mean": float(intensity["mean"]),
            "sd": float(intensity["sd"]),
            "lower": float(intensity["percentile_00_5"]),
            "upper": float(intensity["percentile_99_5"]),
        },
        "mirror_axes": [int(a) for a in mirror_axes],
        "separate_z_anisotropy_threshold": 3.0,
        "segmentation_export_params": export,
        "labels": {str(k): v for k, v in {0: "background", **LABELS}.items()},
        "training_orientation": training_orientation,
        "data_identifier": plans.get("data_identifier"),
    }


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    _atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def _fold_state_dict(checkpoint_path: Path, dtype) -> dict:
    import torch  # export is not the inference path; it may read nnU-Net's pickled checkpoints
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    return {k.removeprefix("module."): v.detach().to(dtype).contiguous() for k, v in state.items()}


def export_model_folder(model_dir: Path, out_dir: Path, manifest_extra: dict | None = None,
                        dtype: str = "float32", training_orientation: str | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    plans_pkl = model_dir / "plans.pkl"
    if not plans_pkl.is_file():
        raise FileNotFoundError(f"{plans_pkl} not found: not an nnU-Net v1 model folder")
    folds = sorted((int(m.group(1)), p) for p in model_dir.iterdir() if (m := FOLD_DIR.match(p.name)))
    folds = [(f, p / CHECKPOINT) for f, p in folds if (p / CHECKPOINT).is_file()]
    if not folds:
        raise FileNotFoundError(f"no fold_N/{CHECKPOINT} in {model_dir}")
    with open(plans_pkl, "rb") as handle:
        plans = pickle.load(handle)
    out_dir.mkdir(parents=True, exist_ok=True)

    for stale in LOCALISER_FILES:   # a localiser belongs to the folds it was exported with
        (out_dir / stale).unlink(missing_ok=True)
    _write_json(out_dir / "plans.json", plans_to_json(plans, training_orientation=training_orientation))
    pp_file = model_dir / "postprocessing.json"
    postprocessing = json.loads(pp_file.read_text()) if pp_file.is_file() else {"for_which_classes": []}
    _write_json(out_dir / "postprocessing.json", postprocessing)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    for fold, checkpoint in folds:
        target = out_dir / f"fold_{fold}.safetensors"
        tmp = target.with_name(f".{target.name}.tmp")
        save_file(_fold_state_dict(checkpoint, torch_dtype), str(tmp), metadata={"fold": str(fold)})
        os.chmod(tmp, 0o644)  # readable by the non-root user a container may run as
        os.replace(tmp, target)

    names = ["plans.json", "postprocessing.json"] + [f"fold_{f}.safetensors" for f, _ in folds]
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source_model": model_dir.name,
        "storage_dtype": dtype,
        "postprocessing_present_in_source": pp_file.is_file(),
        **(manifest_extra or {}),
        "files": {name: sha256_of(out_dir / name) for name in names},
    }
    _write_json(out_dir / "MANIFEST.json", manifest)
    return out_dir


def update_manifest(out_dir: Path, extra: dict) -> None:
    """Merge `extra` into an exported MANIFEST.json; the weights and their hashes stay as written."""
    path = Path(out_dir) / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    files = manifest.pop("files")
    _write_json(path, {**manifest, **extra, "files": files})


def set_interpolation_order_z(out_dir: Path, order_z: int) -> None:
    """Set the export's interpolation along the low-resolution axis (v1's segmentation_export_params
    interpolation_order_z: 0 nearest, 1 linear) in an exported folder's plans.json and its hash.
    Stock nnU-Net honours the same setting from plans.pkl (app.oracle.v1_folder_from_weights)."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "MANIFEST.json").read_text())
    verify_manifest(out_dir, manifest)  # a plans.json altered since export must not be re-hashed into shape
    plan = json.loads((out_dir / "plans.json").read_text())
    params = export_params(plan.get("segmentation_export_params"), order_z)
    _write_json(out_dir / "plans.json", {**plan, "segmentation_export_params": params})
    files = {**manifest.pop("files"), "plans.json": sha256_of(out_dir / "plans.json")}
    record = {**manifest.get("segmentation_export", {}), "interpolation_order_z": order_z, "set_after_export": True}
    _write_json(out_dir / "MANIFEST.json", {**manifest, "segmentation_export": record, "files": files})


def add_localiser(model_dir: Path, out_dir: Path, record: dict | None = None) -> Path:
    """Add a localiser (an nnU-Net v1 model folder trained as fold "all" on the localiser plan) to
    an exported weights folder: localiser_plans.json, localiser.safetensors, and their hashes and
    `record` in MANIFEST.json. The folds and their files stay as they are."""
    from safetensors.torch import save_file
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    checkpoint = model_dir / "all" / CHECKPOINT
    if not (model_dir / "plans.pkl").is_file() or not checkpoint.is_file():
        raise FileNotFoundError(f"{model_dir} has no plans.pkl and all/{CHECKPOINT}: not a localiser model folder")
    manifest_path = out_dir / "MANIFEST.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} is missing: export the folds first")
    with open(model_dir / "plans.pkl", "rb") as handle:
        plans = pickle.load(handle)
    folds_plan = json.loads((out_dir / "plans.json").read_text())
    _write_json(out_dir / LOCALISER_FILES[0],
                plans_to_json(plans, training_orientation=folds_plan.get("training_orientation")))
    tmp = out_dir / f".{LOCALISER_FILES[1]}.tmp"
    save_file(_fold_state_dict(checkpoint, torch.float32), str(tmp), metadata={"fold": "all"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_dir / LOCALISER_FILES[1])
    manifest = json.loads(manifest_path.read_text())
    files = {**manifest.pop("files"), **{name: sha256_of(out_dir / name) for name in LOCALISER_FILES}}
    manifest["localiser"] = {"source_model": model_dir.name, **(record or {})}
    _write_json(manifest_path, {**manifest, "files": files})
    return out_dir


def copy_localiser(source: Path, out_dir: Path) -> Path:
    """The localiser of one exported weights folder added to another (benches pair the demo
    weights' localiser with other folds); MANIFEST.json lists it with its hashes."""
    import shutil

    source, out_dir = Path(source), Path(out_dir)
    for name in LOCALISER_FILES:
        shutil.copy(source / name, out_dir / name)
    manifest = json.loads((out_dir / "MANIFEST.json").read_text())
    files = {**manifest.pop("files"), **{name: sha256_of(out_dir / name) for name in LOCALISER_FILES}}
    manifest["localiser"] = {"copied_from": str(source)}
    _write_json(out_dir / "MANIFEST.json", {**manifest, "files": files})
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="nnU-Net v1 model folder (plans.pkl, fold_N/, postprocessing.json)")
    parser.add_argument("--out", type=Path, required=True, help="weights folder to write")
    parser.add_argument("--manifest-extra", type=Path, help="JSON file merged into MANIFEST.json")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="storage precision of the tensors (float16 halves the size)")
    parser.add_argument("--training-orientation", default=None,
                        help="orientation code of the training data, e.g. LPS; inputs are reoriented to it")
    parser.add_argument("--localiser", type=Path, default=None,
                        help="also add this localiser model folder (plans.pkl, all/) for two-stage prediction")


def run(args: argparse.Namespace) -> int:
    extra = json.loads(args.manifest_extra.read_text()) if args.manifest_extra else None
    out = export_model_folder(args.model_dir, args.out, extra, args.dtype, args.training_orientation)
    if args.localiser is not None:
        add_localiser(args.localiser, out)
    print(f"wrote weights to {out}")
    return 0

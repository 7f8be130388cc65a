"""Pack a preprocessed nnU-Net v1 task and a starting checkpoint small enough to travel to a GPU
machine with the repository (its carry holds 64 MiB in all, the wheels included), and unpack it
there into a work folder that `python -m app train --work-dir` uses as it is.

    python -m bench.gpu_carry pack --work build/train_s33 --task Task516_Phantoms15 \\
        --init build/stage33/init_mean_folds.model --out .devcarry/train_data.tar.xz
    python -m bench.gpu_carry unpack --carry .devcarry/train_data.tar.xz --dest /tmp/demo

Each case's image is stored as 8 bits over its own range (nnU-Net's preprocessed CT spans about
5.5 standard deviations, 352 HU for the demo plan: a step of 1.4 HU, far below the phantoms'
noise of 4-55 HU) and its label map as int8; the case's .pkl and the plans travel byte for byte.
Unpacking writes float32 .npz files as nnU-Net's preprocessing does. Training data only: nothing
here is read at inference.
"""
from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np

LEVELS = 255
SPLITS = "splits_final.pkl"
PLAN_FILES = ("dataset.json", "dataset_properties.pkl", SPLITS)
MANIFEST = "carry.json"


def quantise(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = float(image.min()), float(image.max())
    scale = (high - low) / LEVELS or 1.0
    return np.round((image - low) / scale).astype(np.uint8), low, scale


def dequantise(codes: np.ndarray, low: float, scale: float) -> np.ndarray:
    return codes.astype(np.float32) * np.float32(scale) + np.float32(low)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _packed_case(npz: Path) -> bytes:
    data = np.load(npz)["data"]
    codes, low, scale = quantise(data[0])
    buffer = io.BytesIO()
    np.savez(buffer, image=codes, seg=data[1].astype(np.int8), low=low, scale=scale)  # the tar is xz-compressed
    return buffer.getvalue()


def _evenly_spaced(items: list, count: int | None) -> list:
    if count is None or count >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def pack(work: Path, task: str, init: Path, out: Path, raw_dataset_json: Path | None = None,
         max_cases: int | None = None) -> dict:
    pre = work / "nnUNet_preprocessed" / task
    stage_dirs = sorted(p for p in pre.iterdir() if p.is_dir() and p.name.startswith("nnUNetData_"))
    if not stage_dirs:
        raise SystemExit(f"{pre} holds no preprocessed data (nnUNetData_* folder)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    cases = 0
    subset = max_cases is not None and any(len(list(d.glob("*.npz"))) > max_cases for d in stage_dirs)
    # a subset's folds would name cases left behind: without the split, nnU-Net draws one from what came
    plan_files = tuple(name for name in PLAN_FILES if not (subset and name == SPLITS))
    with tarfile.open(tmp, "w:xz") as tar:  # the .pkl files hold voxel coordinates: they shrink ~5x
        for path in sorted(pre.iterdir()):
            if path.is_file() and (path.name in plan_files or path.name.endswith((".preprocessed", "_plans_3D.pkl"))):
                tar.add(path, f"pre/{path.name}")
        for stage_dir in stage_dirs:
            for npz in _evenly_spaced(sorted(stage_dir.glob("*.npz")), max_cases):
                _add_bytes(tar, f"pre/{stage_dir.name}/{npz.stem}.u8.npz", _packed_case(npz))
                tar.add(npz.with_suffix(".pkl"), f"pre/{stage_dir.name}/{npz.stem}.pkl")
                cases += 1
        tar.add(raw_dataset_json or pre / "dataset.json", "raw_dataset.json")
        tar.add(init, "init.model")
        if init.with_name(init.name + ".pkl").is_file():
            tar.add(init.with_name(init.name + ".pkl"), "init.model.pkl")
        _add_bytes(tar, MANIFEST, json.dumps({"task": task, "cases": cases, "init": init.name}).encode())
    tmp.replace(out)
    return {"task": task, "cases": cases, "bytes": out.stat().st_size}


def unpack(carry: Path, dest: Path) -> dict:
    """dest/<task>/ (the raw task: dataset.json and empty image folders), dest/work/nnUNet_preprocessed
    /<task>/ with float32 .npz cases, and dest/init.model."""
    with tarfile.open(carry) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        task = manifest["task"]
        pre = dest / "work" / "nnUNet_preprocessed" / task
        raw = dest / task
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(parents=True, exist_ok=True)
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name.endswith(".u8.npz"):
                packed = np.load(io.BytesIO(data))
                image = dequantise(packed["image"], float(packed["low"]), float(packed["scale"]))
                target = pre / member.name[len("pre/"):].replace(".u8.npz", ".npz")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(target, data=np.stack([image, packed["seg"].astype(np.float32)]))
                continue
            if member.name.startswith("pre/"):
                target = pre / member.name[len("pre/"):]
            elif member.name == "raw_dataset.json":
                target = raw / "dataset.json"
            elif member.name.startswith("init.model"):
                target = dest / member.name
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--work", type=Path, required=True, help="a training work folder (app train --work-dir)")
    p.add_argument("--task", required=True, help="e.g. Task516_Phantoms15")
    p.add_argument("--init", type=Path, required=True, help="starting checkpoint (.model, its .pkl beside it)")
    p.add_argument("--raw-dataset-json", type=Path, help="the raw task's dataset.json (default: the preprocessed copy)")
    p.add_argument("--out", type=Path, default=Path(".devcarry/train_data.tar.xz"))
    p.add_argument("--cases", type=int, help="an evenly spaced subset of this many cases, to fit the carry")
    u = sub.add_parser("unpack")
    u.add_argument("--carry", type=Path, default=Path(".devcarry/train_data.tar.xz"))
    u.add_argument("--dest", type=Path, required=True)
    u.add_argument("--print-task", action="store_true", help="print only the task's name (for scripts)")
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(pack(args.work, args.task, args.init, args.out, args.raw_dataset_json, args.cases))
    else:
        manifest = unpack(args.carry, args.dest)
        print(manifest["task"] if args.print_task else manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

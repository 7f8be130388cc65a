"""`python -m app synth`: write synthetic abdominal CT phantoms with FLARE21 labels.

Output layout:
    OUT/images/<name>_0000.nii.gz   CT in HU (int16)
    OUT/labels/<name>.nii.gz        0 bg, 1 liver, 2 kidney, 3 spleen, 4 pancreas (uint8)
    OUT/structures/<name>.nii.gz    with --structures: the full label map (every structure,
                                    legend in OUT/structures.json); the FLARE labels are its projection
    OUT/cases.json                  per-case facts (phase, field of view, spacing, direction)
With --nnunet-task DIR the same cases also go to an nnU-Net v1 raw task folder
(DIR/imagesTr, DIR/labelsTr, DIR/dataset.json).

These are synthetic phantoms for testing and demonstration, not patient data.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (images/, labels/)")
    parser.add_argument("--cases", type=int, default=10, help="number of phantoms")
    parser.add_argument("--seed", type=int, default=0, help="random seed; case i uses (seed, i)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--size", choices=["full", "moderate", "small"], default="full",
                        help="full: in-plane 0.6-1.0 mm, slices 1-5 mm, up to 512x512xN (default); "
                             "moderate: in-plane 1.2-2.0 mm, slices 2-5 mm (cheap training data); "
                             "small: about 3 mm voxels (tests)")
    parser.add_argument("--prefix", default="phantom", help="case name prefix")
    parser.add_argument("--nnunet-task", default=None,
                        help="also write an nnU-Net v1 raw task folder here (e.g. .../Task501_Phantoms)")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--structures", action="store_true",
                        help="also write the full label map of every structure (OUT/structures/)")
    parser.add_argument("--sick", action="store_true",
                        help="lesions in every organ and distractors in half the cases or more (adrenal and "
                             "retroperitoneal masses in 70 %%): a set for measuring lesion recall and "
                             "distractor false positives, or sick training cases")


def case_name(prefix: str, seed: int, index: int) -> str:
    return f"{prefix}_s{seed}_{index:03d}"


def _write_one(job):
    out, seed, index, size, prefix, task, structures, sick = job
    from pathlib import Path

    import SimpleITK as sitk

    from app.synth.phantom import make_phantom

    ph = make_phantom(seed, index, size, sick)
    img, lab, grid, info = ph.image, ph.labels, ph.grid, ph.info
    name = case_name(prefix, seed, index)
    writes = [(img, Path(out) / "images" / f"{name}_0000.nii.gz"), (lab, Path(out) / "labels" / f"{name}.nii.gz")]
    if task:
        writes += [(img, Path(task) / "imagesTr" / f"{name}_0000.nii.gz"), (lab, Path(task) / "labelsTr" / f"{name}.nii.gz")]
    if structures:
        writes.append((ph.structures, Path(out) / "structures" / f"{name}.nii.gz"))
    for arr, path in writes:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(grid.image(arr), str(path), True)
    info["name"] = name
    info["seed"] = seed
    info["index"] = index
    info["size"] = size
    info["sick"] = sick
    return info


def write_dataset_json(task_dir, names, description: str) -> None:
    import json
    from pathlib import Path

    from app.labels import LABELS

    task_dir = Path(task_dir)
    ds = {
        "name": task_dir.name,
        "description": description,
        "tensorImageSize": "3D",
        "reference": "synthetic phantoms (app.synth)",
        "licence": "generated",
        "release": "1.0",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(k): v for k, v in LABELS.items()}},
        "numTraining": len(names),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names],
        "test": [],
    }
    (task_dir / "dataset.json").write_text(json.dumps(ds, indent=2))


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), args.seed, i, args.size, args.prefix, args.nnunet_task, args.structures, args.sick)
            for i in range(args.start, args.start + args.cases)]
    t0 = time.time()
    infos = []
    if args.workers > 1:
        from multiprocessing import get_context
        with get_context("spawn").Pool(args.workers) as pool:
            for info in pool.imap(_write_one, jobs):
                infos.append(info)
                print(f"{info['name']}: {info['shape_xyz']} spacing {[round(v, 2) for v in info['spacing']]} "
                      f"{info['phase']}", flush=True)
    else:
        for job in jobs:
            info = _write_one(job)
            infos.append(info)
            print(f"{info['name']}: {info['shape_xyz']} spacing {[round(v, 2) for v in info['spacing']]} "
                  f"{info['phase']}", flush=True)
    if args.structures:
        from app.synth.structures import legend, roles
        (out / "structures.json").write_text(json.dumps(legend(), indent=1))
        # what `app evaluate --structures` scores: lesions, organ vessels and distractors
        (out / "structures" / "roles.json").write_text(json.dumps(roles(), indent=1))
    meta_path = out / "cases.json"
    old = json.loads(meta_path.read_text()) if meta_path.exists() else []
    keep = {c["name"]: c for c in old}
    keep.update({c["name"]: c for c in infos})
    meta_path.write_text(json.dumps(sorted(keep.values(), key=lambda c: c["name"]), indent=1))
    if args.nnunet_task:
        task = Path(args.nnunet_task)
        names = sorted(p.name[:-len(".nii.gz")] for p in (task / "labelsTr").glob("*.nii.gz"))
        write_dataset_json(task, names, "Synthetic abdominal CT phantoms (not patient data; "
                                        "not for clinical or challenge use)")
    print(f"wrote {len(infos)} phantoms to {out} in {time.time() - t0:.1f} s")
    return 0

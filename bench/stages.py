"""Everything but the network, stock nnU-Net v1 against ours, side by side in one process.

    python -m bench.stages [--size 512 512 200] [--out bench/out/stages] [--export-order-z 1]

The case: a synthetic 512 x 512 x 200 CT at 0.7 x 0.7 x 1.5 mm with the FLARE21 plan's
0.8 x 0.8 x 2.5 mm target, so the z axis is resampled on its own. Random, spatially smooth class
probabilities of the network grid's size stand in for the network (smooth, so the mask has
organ-like components rather than one per voxel). Timed:

- v1's GenericPreprocessor.preprocess_test_case (reads the file) against our read + preprocess,
  on the torch path the predictor uses here and on the numpy path;
- v1's save_segmentation_nifti_from_softmax (resample, argmax, write) and its largest-component
  postprocessing (load_remove_save: read, postprocess, write) against our export, postprocess
  and write.

Last line: `stages_speedup=<v1 total / ours> image_max_abs=<largest difference of the two
preprocessed images, normalised units> mask_agreement=<fraction of equal voxels in the masks>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parent.parent
SPACING_XYZ = (0.7, 0.7, 1.5)
LABELS = [1, 2, 3, 4]


def synthetic_ct(size_xyz, seed: int = 7) -> sitk.Image:
    """CT-like int16: air, a body ellipse of fat and muscle, organ-like ellipsoids, noise."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size_xyz
    z, y, x = np.ogrid[:nz, :ny, :nx]
    volume = np.full((nz, ny, nx), -1024, dtype=np.int16)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.35 * ny)) ** 2 < 1
    volume[np.broadcast_to(body, volume.shape)] = -90
    for cx, cy, cz, r, hu in ((0.35, 0.45, 0.5, 0.16, 110), (0.68, 0.5, 0.45, 0.08, 170),
                              (0.7, 0.35, 0.6, 0.07, 120), (0.5, 0.55, 0.4, 0.05, 100), (0.5, 0.7, 0.5, 0.04, 700)):
        blob = (((x - cx * nx) / (r * nx)) ** 2 + ((y - cy * ny) / (r * ny)) ** 2
                + ((z - cz * nz) / (2.5 * r * nz)) ** 2) < 1
        volume[blob] = hu
    volume += rng.normal(0, 15, volume.shape).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(SPACING_XYZ)
    return image


def smooth_probabilities(shape, n_classes: int, seed: int = 11) -> np.ndarray:
    """Softmax of low-resolution random logits, upsampled: blobs, not salt and pepper."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, n_classes, 5, 9, 9, generator=generator) * 4
    logits = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=False)
    return torch.softmax(logits[0], 0).numpy()


@contextmanager
def timed(times: dict, key: str):
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


@contextmanager
def quiet():
    """v1 prints per slice and per call; the report should stay readable."""
    with open(os.devnull, "w") as devnull:
        saved, sys.stdout = sys.stdout, devnull
        try:
            yield
        finally:
            sys.stdout = saved


def run_v1(ct_path: Path, plans: dict) -> tuple[dict, np.ndarray, dict]:
    from nnunet.preprocessing.preprocessing import GenericPreprocessor
    intensity = plans["dataset_properties"]["intensityproperties"]
    preprocessor = GenericPreprocessor({0: "CT"}, {0: False}, list(plans["transpose_forward"]), intensity)
    target = plans["plans_per_stage"][0]["current_spacing"]
    times: dict[str, float] = {}
    with quiet(), timed(times, "read_preprocess"):
        data, _, properties = preprocessor.preprocess_test_case([str(ct_path)], target)
    return times, data[0], properties


def export_v1(probs: np.ndarray, properties: dict, work: Path, times: dict, order_z: int = 0) -> np.ndarray:
    from nnunet.inference.segmentation_export import save_segmentation_nifti_from_softmax
    from nnunet.postprocessing.connected_components import load_remove_save
    exported, final = work / "v1_export.nii.gz", work / "v1_final.nii.gz"
    with quiet(), timed(times, "export"):
        save_segmentation_nifti_from_softmax(probs, str(exported), copy.deepcopy(properties), 1, None, None, None,
                                             None, None, None, order_z)
    with quiet(), timed(times, "postprocess"):
        load_remove_save(str(exported), str(final), LABELS, None)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(final)))
    image = sitk.ReadImage(str(final))
    with timed(times, "write_alone"):  # what its two writes cost: one of them, measured alone
        sitk.WriteImage(image, str(work / "v1_write_probe.nii.gz"))
    return mask


def run_ours(ct_path: Path, plan, where: str) -> tuple[dict, object, object]:
    from app.inference import io
    from app.inference.device_preprocess import preprocess_on_device
    from app.inference.orientation import reorient
    from app.inference.preprocess import preprocess
    from app.inference.stages import StageTimer
    timer = StageTimer()
    with timer.stage("read"):
        loaded = io.read_image(ct_path)
    with timer.stage("reorient"):
        oriented = reorient(loaded.image, plan.training_orientation)
    volume, spacing = io.image_array(oriented), io.spacing_zyx(oriented)
    if where == "device":
        case = preprocess_on_device(volume, spacing, plan, torch.device("cpu"), timer)
    else:
        case = preprocess(volume, spacing, plan, timer)
    return timer.seconds, case, loaded


def export_ours(probs: np.ndarray, case, loaded, plan, work: Path, times: dict) -> np.ndarray:
    from app.inference import io
    from app.inference.export import probabilities_to_mask
    from app.inference.postprocess import keep_largest_components
    from app.inference.stages import StageTimer
    timer = StageTimer()
    mask = probabilities_to_mask(torch.from_numpy(probs), case, plan, timer)
    with timer.stage("postprocess"):
        mask = keep_largest_components(mask, LABELS)
    with timer.stage("write"):
        io.write_mask(mask, loaded, work / "ours.nii.gz")
    times.update(timer.seconds)
    return mask


def table(v1: dict, ours: dict, host: dict) -> list[str]:
    ours_pre = sum(ours[k] for k in ("read", "reorient", "crop", "resample", "normalise"))
    host_pre = sum(host[k] for k in ("read", "reorient", "crop", "resample", "normalise"))
    ours_export = ours.get("export_resampling", 0.0) + ours["argmax"]
    rows = [
        ("read + preprocess", v1["read_preprocess"], ours_pre,
         f"ours: read {ours['read']:.2f}, crop {ours['crop']:.2f}, resample {ours['resample']:.2f}, "
         f"normalise {ours['normalise']:.2f} (device path); all-numpy path {host_pre:.2f} s"),
        ("export: resample + argmax", v1["export"], ours_export,
         f"v1 includes its write; ours: resampling {ours.get('export_resampling', 0.0):.2f}, argmax {ours['argmax']:.2f}"),
        ("postprocess", v1["postprocess"], ours["postprocess"], "v1: load_remove_save reads and writes the mask again"),
        ("write", None, ours["write"], f"v1's writes are inside the two rows above; one alone: {v1['write_alone']:.2f} s"),
    ]
    lines = ["| stage | v1 s | ours s | notes |", "|---|---:|---:|---|"]
    for name, a, b, note in rows:
        lines.append(f"| {name} | {'' if a is None else f'{a:.2f}'} | {b:.2f} | {note} |")
    v1_total = v1["read_preprocess"] + v1["export"] + v1["postprocess"]
    ours_total = ours_pre + ours_export + ours["postprocess"] + ours["write"]
    lines.append(f"| **total** | **{v1_total:.2f}** | **{ours_total:.2f}** | **{v1_total / ours_total:.2f}x** |")
    return lines, v1_total, ours_total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 200), metavar=("X", "Y", "Z"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "stages")
    parser.add_argument("--export-order-z", type=int, choices=(0, 1), default=0,
                        help="the plans' segmentation_export_params interpolation_order_z, on both sides "
                             "(0: v1's default, nearest along the separate axis; 1: linear)")
    args = parser.parse_args(argv)
    from app.inference.weights import Plan
    from app.weights_export import plans_to_json
    from bench.gpu import flare_plans

    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    plans = flare_plans(tiny=False)
    plans["segmentation_export_params"] = {"force_separate_z": None, "interpolation_order": 1,
                                           "interpolation_order_z": args.export_order_z}
    plan = Plan.from_json(plans_to_json(plans))
    ct_path = work / "ct_0000.nii.gz"
    sitk.WriteImage(synthetic_ct(args.size), str(ct_path), True)

    v1_times, v1_image, properties = run_v1(ct_path, plans)
    host_times, host_case, _ = run_ours(ct_path, plan, "host")
    del host_case
    ours_times, case, loaded = run_ours(ct_path, plan, "device")
    ours_image = case.data.numpy()
    image_max_abs = float(np.abs(ours_image - v1_image).max()) if ours_image.shape == v1_image.shape else float("inf")
    probs = smooth_probabilities(v1_image.shape, plan.network.num_classes)
    del v1_image, ours_image
    v1_mask = export_v1(probs, properties, work, v1_times, args.export_order_z)
    our_mask = export_ours(probs, case, loaded, plan, work, ours_times)
    agreement = float((v1_mask == our_mask).mean())

    lines, v1_total, ours_total = table(v1_times, ours_times, host_times)
    print(f"case: {args.size[0]} x {args.size[1]} x {args.size[2]} at {SPACING_XYZ} mm -> network grid "
          f"{tuple(case.data.shape)} at {plan.target_spacing} mm (z, y, x); "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n".join(lines))
    counts = {label: int((our_mask == label).sum()) for label in LABELS}
    report = {"size_xyz": list(args.size), "v1": v1_times, "ours": ours_times, "ours_numpy_path": host_times,
              "v1_total_s": v1_total, "ours_total_s": ours_total, "image_max_abs": image_max_abs,
              "mask_agreement": agreement, "voxels_per_label": counts}
    (work / "stages.json").write_text(json.dumps(report, indent=1))
    print(f"stages_speedup={v1_total / ours_total:.2f} image_max_abs={image_max_abs:.2e} mask_agreement={agreement:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

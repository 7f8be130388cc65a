"""Hardening: every bad input gets one clear error line naming the file, or a correct mask on the
input's grid; faults (kills, out of memory, missing weights) never leave a partial mask or stop
the other cases. Exit codes: 0 all written, 1 some case failed, 2 cannot start, 3 no cases.

Most runs are in-process (`run_predict` with a PredictConfig: same code and exit codes as the
CLI, without a second interpreter start); the organisers' path (`sh predict.sh`) is used where
the shell, signals, other users or mounts matter. Tiny volumes, fold 0, no TTA, CPU.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, dice_per_label, synthetic_ct

FAST = dict(folds=(0,), tta=False, device="cpu", progress=False)
FAST_ARGS = ("--folds", "0", "--no-tta")
SMALL = dict(size=(48, 40, 12), spacing=(0.9, 0.9, 4.0))
LABELS = set(range(5))  # background + 4 organs
NIFTI_HEADER_BYTES = 352  # 348-byte header + 4-byte extension flag, before the voxels


# ---------------------------------------------------------------------------------------------
# helpers

@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("ERROR ")]

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


def predict(input_dir: Path, output_dir: Path, weights: Path, **options) -> Result:
    """The predict command in this process: the same runner and exit codes as the CLI."""
    from app.config import PredictConfig
    from app.inference.runner import run_predict
    config = PredictConfig(weights_dir=Path(weights), **{**FAST, **options})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_predict(config, Path(input_dir), Path(output_dir))
    return Result(code, out.getvalue(), err.getvalue())


def predict_env(input_dir: Path, output_dir: Path, weights: Path, **extra) -> dict:
    env = dict(os.environ, INPUT_DIR=str(input_dir), OUTPUT_DIR=str(output_dir), WEIGHTS_DIR=str(weights),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **extra)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    return env


def predict_sh_command(*extra: str) -> list[str]:
    return ["sh", str(ROOT / "predict.sh"), "--device", "cpu", "--quiet", *FAST_ARGS, *extra]


def write_case(folder: Path, filename: str, image: sitk.Image | None = None, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    sitk.WriteImage(synthetic_ct(**SMALL, seed=seed) if image is None else image, str(path), True)
    return path


def assert_mask(output_dir: Path, name: str, input_path: Path) -> sitk.Image:
    """A complete uint8 mask on the input's grid, with organ labels only."""
    path = output_dir / f"{name}.nii.gz"
    assert path.is_file(), f"no mask {path.name}; output folder has {sorted(p.name for p in output_dir.iterdir())}"
    assert_complete_gzip_nifti(path)
    mask = sitk.ReadImage(str(path))
    reference = sitk.ReadImage(str(input_path))
    assert same_grid(mask, reference), (
        f"{path.name}: size {mask.GetSize()} spacing {mask.GetSpacing()} origin {mask.GetOrigin()} "
        f"direction {mask.GetDirection()} != input's {reference.GetSize()} {reference.GetSpacing()} "
        f"{reference.GetOrigin()} {reference.GetDirection()}")
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist()) <= LABELS
    return mask


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Same size and, up to NIfTI's float32 storage (quaternion round trip), the same spacing,
    origin and direction."""
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-4)
            and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-5))


def assert_complete_gzip_nifti(path: Path) -> None:
    """SimpleITK reads a truncated .nii.gz without complaint (zero-filled), so 'readable' is not
    enough: the gzip stream must end properly (CRC and length) and hold every voxel."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()  # raises EOFError / BadGzipFile on a partial file
    size = np.array(struct.unpack_from("<8h", raw, 40)[1:4], dtype=np.int64)  # dim[1..3]
    bitpix = struct.unpack_from("<h", raw, 72)[0]
    offset = int(struct.unpack_from("<f", raw, 108)[0])
    assert len(raw) >= offset + int(size.prod()) * bitpix // 8, f"{path.name}: voxel data incomplete"


def masks_in(output_dir: Path) -> list[str]:
    return sorted(p.name for p in output_dir.iterdir() if p.name.lower().endswith((".nii.gz", ".nii")))


def assert_one_error(result: Result, filename: str, *words: str) -> str:
    """Exactly one `ERROR <case>: <reason>` line for this file, naming it, with the given words."""
    mine = [line for line in result.errors if filename in line]
    assert len(mine) == 1, f"want one ERROR line naming {filename!r}; stderr was:\n{result.err}"
    for word in words:
        assert word.lower() in mine[0].lower(), f"{word!r} not in {mine[0]!r}"
    assert "Traceback" not in result.text, result.text
    return mine[0]


def copy_weights(weights: Path, dest: Path, orientation: str | None = None) -> Path:
    from app.inference.weights import sha256_of
    shutil.copytree(weights, dest)
    if orientation is not None:
        plans = json.loads((dest / "plans.json").read_text())
        plans["training_orientation"] = orientation
        (dest / "plans.json").write_text(json.dumps(plans, indent=2))
        manifest = json.loads((dest / "MANIFEST.json").read_text())
        manifest["files"]["plans.json"] = sha256_of(dest / "plans.json")
        (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    return dest


def tree_snapshot(folder: Path) -> dict:
    """Every entry below the folder, hidden ones included, with size and mtime."""
    snap = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st = path.lstat()
            snap[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return snap


def nifti_with_bad_pixdim(image: sitk.Image, path: Path, axis: int, value: float) -> None:
    """SimpleITK refuses to set such a spacing, so patch the header bytes: pixdim[axis + 1] =
    value, sform_code = 0 so that the qform (pixdim) is the file's only geometry."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.nii"
        sitk.WriteImage(image, str(plain), False)
        buf = bytearray(plain.read_bytes())
    assert struct.unpack_from("<i", buf, 0)[0] == 348
    struct.pack_into("<f", buf, 76 + 4 * (axis + 1), value)
    struct.pack_into("<h", buf, 254, 0)
    path.write_bytes(gzip.compress(bytes(buf)))
    stored = struct.unpack_from("<f", gzip.decompress(path.read_bytes()), 76 + 4 * (axis + 1))[0]
    assert (math.isnan(stored) and math.isnan(value)) or stored == np.float32(value)


def reordered_copy(image: sitk.Image, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> sitk.Image:
    """The same physical image with its axes stored in another order and/or direction:
    new axis k is old axis perm[k], reversed where flips[k]."""
    itk_order = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # indexed [x, y, z]
    data = itk_order.transpose(perm)
    data = data[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    old_dir = np.array(image.GetDirection()).reshape(3, 3)
    new_dir = np.stack([old_dir[:, perm[k]] * (-1 if flips[k] else 1) for k in range(3)], axis=1)
    out.SetSpacing(tuple(image.GetSpacing()[p] for p in perm))
    out.SetDirection(tuple(new_dir.ravel()))
    first = [0, 0, 0]
    for k in range(3):
        if flips[k]:
            first[perm[k]] = image.GetSize()[perm[k]] - 1
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out


def on_grid(moving: sitk.Image, reference: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def rotation(ax: float, az: float) -> tuple[float, ...]:
    ax, az = math.radians(ax), math.radians(az)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return tuple((rz @ rx).ravel())


@pytest.fixture(scope="module")
def lps_weights(tiny_weights, tmp_path_factory) -> Path:
    """tiny_weights whose plans.json declares the training data's orientation (MANIFEST updated)."""
    return copy_weights(tiny_weights, tmp_path_factory.mktemp("lps") / "w", orientation="LPS")


# ---------------------------------------------------------------------------------------------
# not an image, or not a case

def test_non_image_files_are_skipped_with_a_note(tiny_weights, tmp_path):
    inputs = tmp_path / "in"
    image = write_case(inputs, "a_0000.nii.gz")
    (inputs / "dataset.json").write_text("{}")
    (inputs / ".DS_Store").write_bytes(b"\0Bud1" * 10)
    (inputs / "sub").mkdir()
    write_case(inputs / "sub", "nested_0000.nii.gz")
    result = predict(inputs, tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    for name in ("dataset.json", ".DS_Store", "sub"):
        notes = [line for line in result.text.splitlines() if name in line and "skip" in line.lower()]
        assert len(notes) == 1, f"no single skip note for {name!r}:\n{result.text}"
    assert not result.errors
    assert masks_in(tmp_path / "out") == ["a.nii.gz"]
    assert_mask(tmp_path / "out", "a", image)


# ---------------------------------------------------------------------------------------------
# broken files: one error line naming the file, the other case still written, exit code 1

def _truncated_gz(path: Path) -> None:
    write_case(path.parent, path.name)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _truncated_nii(path: Path) -> None:
    sitk.WriteImage(synthetic_ct(**SMALL), str(path), False)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])


def _header_only(path: Path) -> None:
    write_case(path.parent, path.name)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:NIFTI_HEADER_BYTES]))


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def _gzip_of_garbage(path: Path) -> None:
    path.write_bytes(gzip.compress(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()))


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _image_2d(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.full((40, 48), -100, np.int16)), str(path))


def _image_4d(path: Path) -> None:
    image = synthetic_ct(**SMALL)
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))


def _vector_image(path: Path) -> None:
    image = synthetic_ct(**SMALL)
    sitk.WriteImage(sitk.Compose([image, image, image]), str(path))


BROKEN = {
    # name: (writer, file name, words the error line must hold besides the file name)
    "truncated_gz": (_truncated_gz, "bad_0000.nii.gz", ()),
    "truncated_nii": (_truncated_nii, "bad_0000.nii", ()),
    "header_only": (_header_only, "bad_0000.nii.gz", ()),
    "random_bytes": (_random_bytes, "bad_0000.nii.gz", ()),
    "gzip_of_garbage": (_gzip_of_garbage, "bad_0000.nii.gz", ()),
    "empty_file": (_empty_file, "bad_0000.nii.gz", ()),
    "image_2d": (_image_2d, "bad_0000.nii.gz", ("2D", "3D")),
    "image_4d": (_image_4d, "bad_0000.nii.gz", ("4D",)),
    "vector_image": (_vector_image, "bad_0000.nii.gz", ("component",)),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_file_is_one_error_line_and_the_rest_is_written(kind, tiny_weights, tmp_path):
    writer, filename, words = BROKEN[kind]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good = write_case(inputs, "good_0000.nii.gz")
    writer(inputs / filename)
    result = predict(inputs, outputs, tiny_weights)
    assert result.code == 1, result.text
    assert_one_error(result, filename, *words)
    assert len(result.errors) == 1, result.err
    assert_mask(outputs, "good", good)
    assert masks_in(outputs) == ["good.nii.gz"], "a broken input must not leave a mask"


# ---------------------------------------------------------------------------------------------
# odd pixel data

def test_nan_and_inf_voxels_give_a_mask(tiny_weights, tmp_path):
    volume = sitk.GetArrayFromImage(synthetic_ct(**SMALL, pixel_type=np.float32))
    volume[2:4, 10:20, 10:20] = np.nan
    volume[6, 15:25, 20:30] = np.inf
    volume[8, 5:9, 5:9] = -np.inf
    image = sitk.GetImageFromArray(volume)
    image.CopyInformation(synthetic_ct(**SMALL))
    path = write_case(tmp_path / "in", "nan_0000.nii.gz", image)
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "nan", path)


PIXEL_TYPES = {
    "int8": (np.int8, sitk.sitkInt8, 0),
    "int16": (np.int16, sitk.sitkInt16, 0),
    "int32": (np.int32, sitk.sitkInt32, 0),
    "uint16": (np.uint16, sitk.sitkUInt16, 1024),  # stored as HU + 1024, as scanners often do
    "float32": (np.float32, sitk.sitkFloat32, 0),
    "float64": (np.float64, sitk.sitkFloat64, 0),
}


@pytest.fixture(scope="module")
def pixel_type_run(tiny_weights, tmp_path_factory):
    """One run over one case per pixel type (same HU values where the type can hold them)."""
    base = synthetic_ct(**SMALL, pixel_type=np.float64)
    hu = np.round(sitk.GetArrayFromImage(base))
    inputs, outputs = tmp_path_factory.mktemp("types") / "in", tmp_path_factory.mktemp("types") / "out"
    paths = {}
    for name, (dtype, _, shift) in PIXEL_TYPES.items():
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
        image = sitk.GetImageFromArray(np.clip(hu + shift, info.min, info.max).astype(dtype))
        image.CopyInformation(base)
        paths[name] = write_case(inputs, f"{name}_0000.nii.gz", image)
    return predict(inputs, outputs, tiny_weights), outputs, paths


@pytest.mark.parametrize("name", list(PIXEL_TYPES))
def test_pixel_type_gives_a_mask_on_the_input_grid(name, pixel_type_run):
    result, outputs, paths = pixel_type_run
    assert sitk.ReadImage(str(paths[name])).GetPixelID() == PIXEL_TYPES[name][1]
    assert not [line for line in result.errors if name in line], result.err
    assert result.code == 0, result.text
    assert_mask(outputs, name, paths[name])


def test_pixel_types_holding_the_same_values_give_the_same_mask(pixel_type_run):
    result, outputs, _ = pixel_type_run
    assert result.code == 0, result.text
    masks = {n: sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{n}.nii.gz")))
             for n in ("int16", "int32", "float32", "float64")}
    for name, mask in masks.items():
        assert np.array_equal(mask, masks["int16"]), f"{name} mask differs from int16's"


@pytest.mark.parametrize("axis,value", [(0, 0.0), (0, -0.9), (2, float("nan")), (1, 0.0)],
                         ids=["zero_x", "negative_x", "nan_z", "zero_y"])
def test_invalid_spacing_is_a_clear_error(axis, value, tiny_weights, tmp_path):
    """SimpleITK silently reads pixdim 0 or NaN as 1.0 and a negative one as its absolute value
    (flipping the direction): the header itself must be checked."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good = write_case(inputs, "good_0000.nii.gz")
    nifti_with_bad_pixdim(synthetic_ct(**SMALL), inputs / "spacing_0000.nii.gz", axis, value)
    result = predict(inputs, outputs, tiny_weights)
    assert result.code == 1, result.text
    assert_one_error(result, "spacing_0000.nii.gz", "spacing")
    assert_mask(outputs, "good", good)
    assert masks_in(outputs) == ["good.nii.gz"]


# ---------------------------------------------------------------------------------------------
# odd geometry

@pytest.mark.parametrize("direction", [rotation(0, 20), rotation(12, -25), rotation(90, 35)],
                         ids=["oblique_axial", "oblique_double", "coronal_oblique"])
def test_oblique_direction_gives_a_mask_on_the_input_grid(direction, tiny_weights, tmp_path):
    path = write_case(tmp_path / "in", "oblique_0000.nii.gz", synthetic_ct(**SMALL, direction=direction))
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "oblique", path)


def test_non_orthogonal_direction_gives_a_mask_on_the_input_grid(tiny_weights, tmp_path):
    """A sheared sform (qform unset): SimpleITK refuses to read it, but it is a valid NIfTI
    and its grid is well defined: the mask must have the input's shape and affine."""
    import nibabel as nib
    shear = math.radians(10)
    columns = np.array([[1, 0, 0], [math.sin(shear), math.cos(shear), 0], [0, 0, 1.0]]).T
    affine = np.eye(4)
    affine[:3, :3] = columns * np.array([0.9, 0.9, 4.0])
    affine[:3, 3] = (-40.0, 25.5, 100.25)
    volume = sitk.GetArrayFromImage(synthetic_ct(**SMALL)).transpose(2, 1, 0)  # nibabel: [x, y, z]
    image = nib.Nifti1Image(volume, affine)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(image, str(inputs / "sheared_0000.nii.gz"))
    result = predict(inputs, tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    mask = nib.load(str(tmp_path / "out" / "sheared.nii.gz"))
    assert mask.shape == volume.shape
    np.testing.assert_allclose(mask.affine, affine, atol=1e-3)


SAGITTAL_FIRST = (1, 2, 0)  # stored axes: y (A-P), z (S-I), x (L-R): sagittal slices last


def test_axes_stored_in_another_order_give_a_mask_on_the_input_grid(lps_weights, tmp_path):
    original = synthetic_ct(**SMALL, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = write_case(tmp_path / "in", "sagittal_0000.nii.gz", reordered_copy(original, SAGITTAL_FIRST, (False, True, False)))
    result = predict(tmp_path / "in", tmp_path / "out", lps_weights)
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "sagittal", path)


@pytest.mark.parametrize("perm,flips", [
    ((0, 1, 2), (True, False, True)),
    (SAGITTAL_FIRST, (False, False, False)),
    ((2, 0, 1), (True, True, False)),
], ids=["flipped_x_z", "sagittal_first", "permuted_and_flipped"])
def test_reordered_copy_gives_the_same_mask_in_physical_space(perm, flips, lps_weights, tmp_path):
    """8-flip TTA with weights declaring LPS: a flipped or axis-permuted copy of the same physical
    image gives the same mask after resampling back onto the original grid (Dice >= 0.98)."""
    original = synthetic_ct(size=(64, 56, 16), spacing=(1.2, 1.1, 4.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), seed=5)
    copy = reordered_copy(original, perm, flips)
    assert np.array_equal(on_grid(copy, original), sitk.GetArrayFromImage(original)), "fixture: not the same physical image"
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "original_0000.nii.gz", original)
    copy_path = write_case(inputs, "copy_0000.nii.gz", copy)
    result = predict(inputs, outputs, lps_weights, tta=True)
    assert result.code == 0, result.text
    reference = sitk.ReadImage(str(outputs / "original.nii.gz"))
    moved = assert_mask(outputs, "copy", copy_path)
    ref = sitk.GetArrayFromImage(reference)
    present = [label for label in (1, 2, 3, 4) if (ref == label).sum() > 20]
    assert len(present) >= 2, f"fixture: the tiny net labels too little to compare ({np.bincount(ref.ravel())})"
    dice = dice_per_label(ref, on_grid(moved, reference), labels=present)
    assert min(dice.values()) >= 0.98, f"per-label Dice {dice}"


# ---------------------------------------------------------------------------------------------
# size extremes (the 512 x 512 x 1000 volume is in test_large_volume.py)

@pytest.mark.parametrize("size", [(96, 80, 3), (6, 5, 3), (70, 2, 20)], ids=["three_slices", "tiny_every_axis", "two_rows"])
def test_volume_smaller_than_the_patch_gives_a_mask(size, tiny_weights, tmp_path):
    path = write_case(tmp_path / "in", "small_0000.nii.gz", synthetic_ct(size=size, spacing=(0.9, 0.9, 4.0)))
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "small", path)


# ---------------------------------------------------------------------------------------------
# file names and folders

def test_names_with_spaces_upper_case_extensions_and_uncompressed_nii(tiny_weights, run_predict_sh, tmp_path):
    inputs, outputs = tmp_path / "in put", tmp_path / "out put"
    cases = {"case with spaces": write_case(inputs, "case with spaces_0000.nii.gz", seed=1),
             "UPPER": write_case(inputs, "UPPER_0000.nii.gz", seed=2).rename(inputs / "UPPER_0000.NII.GZ"),
             "plain": inputs / "plain_0000.nii"}
    sitk.WriteImage(synthetic_ct(**SMALL, seed=3), str(cases["plain"]), False)
    result = run_predict_sh(inputs, outputs, tiny_weights, *FAST_ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert masks_in(outputs) == sorted(f"{name}.nii.gz" for name in cases)
    for name, path in cases.items():
        assert_mask(outputs, name, path)


def test_same_case_twice_is_reported_as_a_collision(tiny_weights, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "a_0000.nii.gz", seed=1)
    write_case(inputs, "a.nii.gz", seed=2)
    other = write_case(inputs, "b_0000.nii.gz")
    result = predict(inputs, outputs, tiny_weights)
    assert result.code == 1, result.text
    assert len(result.errors) == 1, result.err
    line = result.errors[0]
    assert "a_0000.nii.gz" in line and "a.nii.gz" in line.replace("a_0000.nii.gz", ""), line
    assert "collision" in line.lower() or "same case" in line.lower(), line
    assert set(masks_in(outputs)) <= {"a.nii.gz", "b.nii.gz"}
    assert_mask(outputs, "b", other)
    if (outputs / "a.nii.gz").exists():  # one of the two may be written; never a mix
        assert_complete_gzip_nifti(outputs / "a.nii.gz")


def test_read_only_input_folder_is_left_untouched(tiny_weights, tmp_path):
    """chmod 555 does not stop root: check that nothing in the input folder changes."""
    inputs = tmp_path / "in"
    path = write_case(inputs, "ro_0000.nii.gz")
    (inputs / "notes.txt").write_text("x")
    inputs.chmod(0o555)
    try:
        before = tree_snapshot(inputs)
        result = predict(inputs, tmp_path / "out", tiny_weights)
        after = tree_snapshot(inputs)
    finally:
        inputs.chmod(0o755)
    assert result.code == 0, result.text
    assert after == before
    assert_mask(tmp_path / "out", "ro", path)


NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def _permissions_enforceable() -> bool:
    """Root ignores chmod; root without CAP_DAC_OVERRIDE (setpriv) does not."""
    if shutil.which("setpriv") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "locked"
        locked.mkdir(mode=0o555)
        probe = subprocess.run([*NO_DAC, "touch", str(locked / "x")], capture_output=True, check=False)
        return probe.returncode != 0 and not (locked / "x").exists()


def test_read_only_input_folder_with_permissions_enforced(tiny_weights, tmp_path):
    """The real thing: chmod 555 input folder for a process that cannot override it."""
    if not _permissions_enforceable():
        pytest.skip("needs setpriv to drop CAP_DAC_OVERRIDE")
    inputs = tmp_path / "in"
    path = write_case(inputs, "ro_0000.nii.gz")
    inputs.chmod(0o555)
    try:
        before = tree_snapshot(inputs)
        result = subprocess.run([*NO_DAC, *predict_sh_command()], env=predict_env(inputs, tmp_path / "out", tiny_weights),
                                capture_output=True, text=True, timeout=300, check=False)
        after = tree_snapshot(inputs)
    finally:
        inputs.chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    assert after == before
    assert_mask(tmp_path / "out", "ro", path)


def test_missing_output_folder_is_created(tiny_weights, tmp_path):
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    outputs = tmp_path / "not" / "yet" / "there"
    result = predict(tmp_path / "in", outputs, tiny_weights)
    assert result.code == 0, result.text
    assert_mask(outputs, "a", path)


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file", "read_only_folder"])
def test_unwritable_output_folder_is_a_clear_error_before_any_work(where, tiny_weights, run_predict_sh, tmp_path):
    write_case(tmp_path / "in", "a_0000.nii.gz")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    if where == "read_only_folder":
        if not _permissions_enforceable():
            pytest.skip("needs setpriv to drop CAP_DAC_OVERRIDE")
        outputs = tmp_path / "locked"
        outputs.mkdir(mode=0o555)
        result = subprocess.run([*NO_DAC, *predict_sh_command()], env=predict_env(tmp_path / "in", outputs, tiny_weights),
                                capture_output=True, text=True, timeout=300, check=False)
        assert list(outputs.iterdir()) == []
    else:
        outputs = blocker / "sub" if where == "under_a_file" else blocker
        result = run_predict_sh(tmp_path / "in", outputs, tiny_weights, *FAST_ARGS)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(outputs) in result.stderr and "writ" in result.stderr.lower(), result.stderr
    assert "loaded folds" not in result.stdout and "done" not in result.stdout, "work started"
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "a regular file"


def test_unwritable_output_folder_stops_before_weights_or_cases(tiny_weights, tmp_path, monkeypatch):
    from app.inference import io as app_io
    from app.inference import predictor as predictor_module
    write_case(tmp_path / "in", "a_0000.nii.gz")
    (tmp_path / "blocker").write_text("")
    touched = []
    monkeypatch.setattr(app_io, "read_image", lambda *a, **k: touched.append("read_image"))
    monkeypatch.setattr(predictor_module.Predictor, "__init__", lambda *a, **k: touched.append("Predictor"))
    result = predict(tmp_path / "in", tmp_path / "blocker" / "sub", tiny_weights)
    assert result.code == 2, result.text
    assert "blocker" in result.err
    assert touched == []


def _read_only_mount_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / / && mount -o remount,bind,ro / /"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def _under_read_only_mount(folder: Path, command: list[str]) -> list[str]:
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *command]


def test_read_only_mounted_input_and_output_folders(tiny_weights, tmp_path):
    """Read-only even for root (a read-only bind mount): inputs are read, never written; an
    output folder on it is a clear error, exit 2."""
    if not _read_only_mount_available():
        pytest.skip("needs root and a private mount namespace (unshare -m)")
    inputs = tmp_path / "in"
    path = write_case(inputs, "a_0000.nii.gz")
    env = predict_env(inputs, tmp_path / "out", tiny_weights)
    result = subprocess.run(_under_read_only_mount(inputs, predict_sh_command()), env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_mask(tmp_path / "out", "a", path)

    locked = tmp_path / "locked"
    locked.mkdir()
    env = predict_env(inputs, locked, tiny_weights)
    result = subprocess.run(_under_read_only_mount(locked, predict_sh_command()), env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(locked) in result.stderr and "loaded folds" not in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# atomic writes

def assert_only_complete_masks(outputs: Path, inputs: dict[str, Path]) -> None:
    """Top level: complete masks on their input's grid, the log, hidden entries; nothing else."""
    for entry in outputs.iterdir():
        if entry.name.startswith(".") or entry.name == "predict_log.jsonl":
            continue
        case = entry.name[: -len(".nii.gz")] if entry.name.endswith(".nii.gz") else None
        assert case in inputs, f"unexpected file at the top of the output folder: {entry.name}"
        assert_mask(outputs, case, inputs[case])


def test_sigkill_at_random_moments_leaves_no_partial_mask(tiny_weights, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {f"k{i}": write_case(inputs, f"k{i}_0000.nii.gz", synthetic_ct(size=(96, 80, 24), seed=i))
             for i in range(3)}
    env = predict_env(inputs, outputs, tiny_weights)
    start = time.perf_counter()
    full = subprocess.run(predict_sh_command("--overwrite"), env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    duration = time.perf_counter() - start
    assert full.returncode == 0, full.stdout + full.stderr
    assert_only_complete_masks(outputs, cases)
    seed = int(os.environ.get("HARDENING_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)
    rng = random.Random(seed)
    for run in range(3):
        delay = rng.uniform(0.2 * duration, duration)
        proc = subprocess.Popen(predict_sh_command("--overwrite"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        try:
            assert_only_complete_masks(outputs, cases)
        except AssertionError as err:
            raise AssertionError(f"after SIGKILL at {delay:.2f} s (run {run}, HARDENING_SEED={seed}): {err}") from None
    assert masks_in(outputs) == sorted(f"{name}.nii.gz" for name in cases)  # --overwrite never removes one


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import SimpleITK as sitk
    real_write = sitk.WriteImage
    def dying_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        with open(path, "r+b") as handle:   # half of the file on disk, then the process dies
            handle.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    sitk.WriteImage = dying_write
    from app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_in_the_middle_of_a_mask_write(tiny_weights, tmp_path):
    """Deterministic: the process dies with half a mask on disk, replacing an existing mask."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {"a": write_case(inputs, "a_0000.nii.gz"), "b": write_case(inputs, "b_0000.nii.gz", seed=1)}
    outputs.mkdir()
    previous = sitk.Image(sitk.ReadImage(str(cases["a"])).GetSize(), sitk.sitkUInt8)
    previous.CopyInformation(sitk.ReadImage(str(cases["a"])))
    sitk.WriteImage(previous, str(outputs / "a.nii.gz"), True)
    old_bytes = (outputs / "a.nii.gz").read_bytes()
    script = tmp_path / "kill_during_write.py"
    script.write_text(KILL_DURING_WRITE)
    env = predict_env(inputs, outputs, tiny_weights, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script), "predict", "-i", str(inputs), "-o", str(outputs),
                           "--weights", str(tiny_weights), "--device", "cpu", "--quiet", *FAST_ARGS, "--overwrite"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert (outputs / "a.nii.gz").read_bytes() == old_bytes, "the earlier complete mask was replaced by a partial one"
    assert masks_in(outputs) == ["a.nii.gz"]
    assert_only_complete_masks(outputs, cases)
    result = predict(inputs, outputs, tiny_weights, overwrite=True)  # the next run cleans up and completes
    assert result.code == 0, result.text
    assert masks_in(outputs) == ["a.nii.gz", "b.nii.gz"]
    assert_only_complete_masks(outputs, cases)


# ---------------------------------------------------------------------------------------------
# GPU out of memory (injected at app.inference.network.predict_tiles, wherever it is called from)

def inject_oom(monkeypatch, fail_calls: int | None) -> list:
    """predict_tiles raises torch.cuda.OutOfMemoryError on its first `fail_calls` calls
    (None: always). Returns the list of (tile batch size, device) per call."""
    import torch
    from app.inference import ensemble, network
    real = network.predict_tiles
    calls = []

    def flaky(networks, tiles, *args, **kwargs):
        calls.append((int(tiles.shape[0]), str(tiles.device)))
        if fail_calls is None or len(calls) <= fail_calls:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(networks, tiles, *args, **kwargs)

    monkeypatch.setattr(network, "predict_tiles", flaky)
    if hasattr(ensemble, "predict_tiles"):
        monkeypatch.setattr(ensemble, "predict_tiles", flaky)
    return calls


def test_gpu_out_of_memory_once_is_retried_and_the_run_completes(tiny_weights, tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {"a": write_case(inputs, "a_0000.nii.gz"), "b": write_case(inputs, "b_0000.nii.gz", seed=1)}
    calls = inject_oom(monkeypatch, fail_calls=1)
    result = predict(inputs, outputs, tiny_weights, tile_batch=2)
    assert len(calls) >= 2, "the injected OOM was never hit: has the network call moved?"
    assert result.code == 0, result.text
    assert not result.errors, result.err
    for name, path in cases.items():
        assert_mask(outputs, name, path)
    reference = predict(inputs, tmp_path / "ref", tiny_weights, tile_batch=2)
    assert reference.code == 0
    for name in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ref" / f"{name}.nii.gz")))
        assert np.array_equal(a, b), f"{name}: the retried case's mask differs from an undisturbed run's"


def test_gpu_out_of_memory_every_time_fails_the_case_not_the_run(tiny_weights, tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "a_0000.nii.gz")
    write_case(inputs, "b_0000.nii.gz", seed=1)
    inject_oom(monkeypatch, fail_calls=None)
    result = predict(inputs, outputs, tiny_weights)
    assert result.code == 1, result.text
    assert len(result.errors) == 2, result.err
    assert_one_error(result, "a_0000.nii.gz", "out of memory")
    assert_one_error(result, "b_0000.nii.gz", "out of memory")
    assert masks_in(outputs) == []


# ---------------------------------------------------------------------------------------------
# /dev/shm, network, pickle, hangs

@pytest.fixture
def no_child_processes(monkeypatch):
    """Any attempt to start a process or a multiprocessing pool raises (and is recorded)."""
    import multiprocessing.process
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"predict started a child: {what}")
        return raiser

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("multiprocessing Process"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess.Popen"))
    monkeypatch.setattr(os, "fork", refuse("os.fork"))
    monkeypatch.setattr(os, "posix_spawn", refuse("os.posix_spawn"))
    return attempts


def test_one_process_no_workers_no_multiprocessing(tiny_weights, tmp_path, no_child_processes):
    import multiprocessing
    import torch.utils.data
    loaders = []
    real_init = torch.utils.data.DataLoader.__init__

    def watched_init(self, *args, **kwargs):
        loaders.append(kwargs.get("num_workers", 0))
        real_init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.utils.data.DataLoader, "__init__", watched_init)
        path = write_case(tmp_path / "in", "a_0000.nii.gz")
        result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    assert no_child_processes == []
    assert all(workers == 0 for workers in loaders), f"DataLoader workers {loaders}"
    assert multiprocessing.active_children() == []
    assert_mask(tmp_path / "out", "a", path)


def test_predict_runs_with_a_64_mb_dev_shm(tiny_weights, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small /dev/shm")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64m tmpfs /dev/shm"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /dev/shm here: {probe.stderr.decode().strip()}")
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    script = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *predict_sh_command()],
                            env=predict_env(tmp_path / "in", tmp_path / "out", tiny_weights),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_mask(tmp_path / "out", "a", path)


def test_no_network_at_run_time(tiny_weights, tmp_path, monkeypatch):
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append((what, args[1:] if what.startswith("socket.connect") else args))
            raise OSError(f"network access during predict: {what}")
        return raiser

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert attempts == []
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "a", path)


def test_no_pickle_is_loaded(tiny_weights, tmp_path, monkeypatch):
    import torch
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"predict loaded a pickle: {what}")
        return raiser

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse("pickle.Unpickler")()

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse(f"pickle.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", refuse("torch.serialization.load"))
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: refuse("numpy.load(allow_pickle=True)")() if k.get("allow_pickle")
                        else real_np_load(*a, **k))
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert attempts == []
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "a", path)


def test_no_thread_or_child_outlives_an_in_process_run(tiny_weights, tmp_path):
    import multiprocessing
    before = set(threading.enumerate())
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    write_case(tmp_path / "in", "bad_0000.nii.gz", sitk.GetImageFromArray(np.zeros((4, 4), np.int16)))
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights, progress=True)
    assert result.code == 1, result.text
    assert_mask(tmp_path / "out", "a", path)
    deadline = time.monotonic() + 5
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], f"non-daemon threads left after the run: {left}"
    assert multiprocessing.active_children() == []


def _processes_in_session(session_id: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":  # fields: state ppid pgrp session
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name} {command}")
    return found


def test_predict_sh_exits_and_leaves_no_process_behind(tiny_weights, tmp_path):
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    proc = subprocess.Popen(predict_sh_command(), env=predict_env(tmp_path / "in", tmp_path / "out", tiny_weights),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError("predict.sh did not finish within 300 s (a hang?)") from None
    assert proc.returncode == 0, out + err
    assert _processes_in_session(proc.pid) == [], "processes outlived predict.sh"
    assert_mask(tmp_path / "out", "a", path)


# ---------------------------------------------------------------------------------------------
# weights

@pytest.mark.parametrize("fault,name", [
    ("missing", "fold_0.safetensors"),
    ("altered", "fold_0.safetensors"),
    ("altered", "plans.json"),
    ("altered", "postprocessing.json"),
    ("missing", "MANIFEST.json"),
])
def test_missing_or_altered_weights_file_is_an_error_before_any_case(fault, name, tiny_weights, tmp_path, monkeypatch):
    from app.inference import io as app_io
    weights = copy_weights(tiny_weights, tmp_path / "weights")
    target = weights / name
    if fault == "missing":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit in the middle
        target.write_bytes(bytes(data))
    write_case(tmp_path / "in", "a_0000.nii.gz")
    reads = []
    real_read = app_io.read_image
    monkeypatch.setattr(app_io, "read_image", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    result = predict(tmp_path / "in", tmp_path / "out", weights)
    assert result.code == 2, result.text
    assert name in result.err, result.err
    assert reads == [], "a case was read before the weights were checked"
    assert "Traceback" not in result.text
    assert not (tmp_path / "out").exists() or masks_in(tmp_path / "out") == []


def test_missing_fold_file_via_predict_sh(tiny_weights, run_predict_sh, tmp_path):
    weights = copy_weights(tiny_weights, tmp_path / "weights")
    (weights / "fold_1.safetensors").unlink()
    write_case(tmp_path / "in", "a_0000.nii.gz")
    result = run_predict_sh(tmp_path / "in", tmp_path / "out", weights)  # every fold: accurate mode
    assert result.returncode == 2, result.stdout + result.stderr
    assert "fold_1.safetensors" in result.stderr, result.stderr
    assert "done" not in result.stdout and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# empty and mixed folders

@pytest.mark.parametrize("content", ["empty", "only_non_images"])
def test_no_cases_is_a_clear_message_and_exit_code_3(content, tiny_weights, run_predict_sh, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    if content == "only_non_images":
        (inputs / "README.txt").write_text("nothing here")
        (inputs / "sub").mkdir()
    result = run_predict_sh(inputs, tmp_path / "out", tiny_weights, *FAST_ARGS)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no cases" in result.stderr.lower() and str(inputs) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_mixed_folder_good_cases_written_one_error_line_per_bad_one(tiny_weights, run_predict_sh, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good = {"good1": write_case(inputs, "good1_0000.nii.gz", seed=1),
            "good two": write_case(inputs, "good two_0000.nii.gz", seed=2),
            "good3": inputs / "good3_0000.nii"}
    sitk.WriteImage(synthetic_ct(**SMALL, seed=3), str(good["good3"]), False)
    bad = {"truncated_0000.nii.gz": _truncated_gz, "flat_0000.nii.gz": _image_2d,
           "series_0000.nii.gz": _image_4d, "rgb_0000.nii.gz": _vector_image,
           "junk_0000.nii.gz": _random_bytes}
    for filename, writer in bad.items():
        writer(inputs / filename)
    nifti_with_bad_pixdim(synthetic_ct(**SMALL), inputs / "nospacing_0000.nii.gz", 2, 0.0)
    bad["nospacing_0000.nii.gz"] = None
    write_case(inputs, "good1.nii.gz", seed=4)  # collides with good1_0000.nii.gz
    (inputs / "notes.json").write_text("{}")
    result = run_predict_sh(inputs, outputs, tiny_weights, *FAST_ARGS)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR ")]
    for filename in bad:
        assert len([line for line in errors if filename in line]) == 1, f"{filename}:\n{result.stderr}"
    assert len([line for line in errors if "good1" in line]) == 1, f"collision:\n{result.stderr}"
    assert len(errors) == len(bad) + 1, result.stderr
    assert "Traceback" not in text
    for name, path in good.items():
        if name == "good1":
            assert_complete_gzip_nifti(outputs / "good1.nii.gz")
        else:
            assert_mask(outputs, name, path)
    assert masks_in(outputs) == sorted(f"{name}.nii.gz" for name in good)

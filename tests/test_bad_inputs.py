"""Hardening, inputs: every bad input gets one clear error line naming the file, or a correct mask
on the input's grid. Exit codes: 0 all written, 1 some case failed, 2 cannot start, 3 no cases.
Most runs are in-process (run_predict with a PredictConfig); `sh predict.sh` where the shell,
users or mounts matter. Tiny volumes, fold 0, no TTA, CPU."""

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

from hardening_helpers import *  # noqa: F401,F403  (helpers, imports and constants)
from hardening_helpers import (  # noqa: F401  (underscored: not taken by the star import)
    _truncated_gz, _truncated_nii, _header_only, _random_bytes, _gzip_of_garbage, _empty_file, _image_2d, _image_4d, _vector_image)

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



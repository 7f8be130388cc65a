"""Shared helpers of the hardening tests (test_bad_inputs.py, test_faults.py)."""

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


# broken files, as the tests make them

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

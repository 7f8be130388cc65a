"""Shared fixtures: a tiny random-init nnU-Net v1 model (and its exported weights), the real
example CT, a synthetic anisotropic case, and a runner for predict.sh. No GPU, no network."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
REAL_CT = DATA / "example_ct.nii.gz"
REAL_LABELS = DATA / "example_flare_labels.nii.gz"

# Coarse spacing and few features: the oracle test with 8-flip TTA stays near a minute here.
TINY_PLAN = dict(target_spacing=(5.0, 5.0, 5.0), patch=(64, 64, 64), base_features=4, num_pool=3)


@pytest.fixture(scope="session")
def tiny_v1_model(tmp_path_factory) -> Path:
    from app.oracle import random_v1_model, tiny_v1_plans
    return random_v1_model(tmp_path_factory.mktemp("v1") / "model", tiny_v1_plans(**TINY_PLAN), folds=(0, 1))


@pytest.fixture(scope="session")
def tiny_weights(tiny_v1_model, tmp_path_factory) -> Path:
    from app.weights_export import export_model_folder
    return export_model_folder(tiny_v1_model, tmp_path_factory.mktemp("weights") / "w")


def synthetic_ct(size=(96, 80, 24), spacing=(0.9, 0.9, 4.0), direction=None, seed=0,
                 pixel_type=np.int16) -> sitk.Image:
    """A small CT-like volume (x, y, z size): air, a body ellipse of soft tissue, a few brighter
    blobs. Anisotropic by default, with an oblique-free but non-identity direction."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    volume = np.full((nz, ny, nx), -1000.0)
    body = ((x - nx / 2) / (nx * 0.45)) ** 2 + ((y - ny / 2) / (ny * 0.4)) ** 2 < 1
    volume[body] = -100 + 20 * rng.standard_normal(body.sum())
    for cx, cy, r, hu in ((0.35, 0.45, 0.15, 60), (0.65, 0.55, 0.1, 45), (0.5, 0.7, 0.06, 300)):
        blob = ((x - cx * nx) ** 2 + (y - cy * ny) ** 2) < (r * nx) ** 2
        volume[blob] = hu + 10 * rng.standard_normal(blob.sum())
    image = sitk.GetImageFromArray(volume.astype(pixel_type))
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, 25.5, 100.25))
    image.SetDirection(direction or (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


@pytest.fixture
def run_predict_sh():
    """Run `sh predict.sh` as the organisers do, with INPUT_DIR/OUTPUT_DIR/WEIGHTS_DIR set."""
    def run(input_dir: Path, output_dir: Path, weights: Path, *extra: str, timeout: float = 600):
        env = dict(os.environ, INPUT_DIR=str(input_dir), OUTPUT_DIR=str(output_dir), WEIGHTS_DIR=str(weights),
                   PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        return subprocess.run(["sh", str(ROOT / "predict.sh"), "--device", "cpu", "--quiet", *extra],
                              env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return run


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dciodvfy (Debian's dicom3tools), installed by tests/install_tools.sh where it is missing;
    the tests that need it skip, saying why, only where apt cannot provide it."""
    found = shutil.which("dciodvfy")
    if found is None:
        install = subprocess.run(["bash", str(ROOT / "tests" / "install_tools.sh")],
                                 capture_output=True, text=True, check=False)
        found = shutil.which("dciodvfy")
        if found is None:
            pytest.skip(f"dciodvfy could not be installed: {(install.stdout + install.stderr).strip()[-400:]}")
    return found


def dice_per_label(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3, 4)) -> dict[int, float]:
    out = {}
    for label in labels:
        x, y = a == label, b == label
        total = x.sum() + y.sum()
        out[label] = 1.0 if total == 0 else 2.0 * (x & y).sum() / total
    return out


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-9))

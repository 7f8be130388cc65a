"""Our predict against stock nnU-Net v1 (predict_from_folder) on the same model folder, TTA on:
per-label Dice >= 0.99 and identical output geometry, on the real CT and on a synthetic case
with anisotropic spacing and a non-identity direction."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from app.oracle import OURS_AS_STOCK, run_stock_predict
from conftest import REAL_CT, TINY_PLAN, dice_per_label, same_geometry, synthetic_ct


def _write_synthetic(folder):
    folder.mkdir()
    image = synthetic_ct(size=(150, 130, 30), spacing=(0.8, 0.85, 4.5), seed=3)
    sitk.WriteImage(image, str(folder / "synthetic_001_0000.nii.gz"))
    return "synthetic_001"


def _write_real(folder):
    folder.mkdir()
    shutil.copy(REAL_CT, folder / "example_0000.nii.gz")
    return "example"


@pytest.mark.parametrize("make_input", [_write_real, _write_synthetic], ids=["real_ct", "synthetic_anisotropic"])
def test_same_masks_as_stock_nnunet(make_input, tiny_v1_model, tiny_weights, run_predict_sh, tmp_path):
    name = make_input(tmp_path / "in")
    stock = run_stock_predict(tiny_v1_model, tmp_path / "in", tmp_path / "stock", folds=(0,), tta=True, timeout=900)
    assert stock.returncode == 0, stock.stderr[-3000:]
    ours = run_predict_sh(tmp_path / "in", tmp_path / "ours", tiny_weights, "--folds", "0", *OURS_AS_STOCK)
    assert ours.returncode == 0, ours.stderr[-3000:]

    source = sitk.ReadImage(str(next((tmp_path / "in").iterdir())))
    stock_mask = sitk.ReadImage(str(tmp_path / "stock" / f"{name}.nii.gz"))
    our_mask = sitk.ReadImage(str(tmp_path / "ours" / f"{name}.nii.gz"))
    assert same_geometry(our_mask, source)
    assert same_geometry(our_mask, stock_mask)
    assert our_mask.GetPixelID() == sitk.sitkUInt8
    a, b = sitk.GetArrayFromImage(stock_mask), sitk.GetArrayFromImage(our_mask)
    # The random model must predict several organs, or the comparison would say little.
    assert len([label for label in (1, 2, 3, 4) if (a == label).sum() > 100]) >= 2, np.bincount(a.ravel())
    dice = dice_per_label(a, b)
    assert min(dice.values()) >= 0.99, dice


def test_plans_that_ask_for_linear_along_z_give_stocks_masks_too(run_predict_sh, tmp_path):
    """v1 reads segmentation_export_params from the plans; with interpolation_order_z 1 the
    export of an anisotropic case is linear along z, on both sides."""
    from app.oracle import random_v1_model, tiny_v1_plans
    from app.weights_export import export_model_folder, set_interpolation_order_z

    plans = tiny_v1_plans(**TINY_PLAN)
    plans["segmentation_export_params"] = {"force_separate_z": None, "interpolation_order": 1, "interpolation_order_z": 1}
    model = random_v1_model(tmp_path / "model", plans, folds=(0,))
    linear = export_model_folder(model, tmp_path / "linear")
    nearest = shutil.copytree(linear, tmp_path / "nearest")
    set_interpolation_order_z(nearest, 0)
    name = _write_synthetic(tmp_path / "in")
    stock = run_stock_predict(model, tmp_path / "in", tmp_path / "stock", folds=(0,), tta=False, timeout=900)
    assert stock.returncode == 0, stock.stderr[-3000:]
    for weights in (linear, nearest):
        run = run_predict_sh(tmp_path / "in", tmp_path / f"out_{weights.name}", weights, "--no-tta", *OURS_AS_STOCK)
        assert run.returncode == 0, run.stderr[-3000:]
    stock_mask, ours, ours_nearest = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"{name}.nii.gz")))
                                      for d in ("stock", "out_linear", "out_nearest"))
    assert len([label for label in (1, 2, 3, 4) if (stock_mask == label).sum() > 100]) >= 2
    assert min(dice_per_label(stock_mask, ours).values()) >= 0.99
    assert (ours != ours_nearest).sum() > 1000, "linear and nearest along z should differ on this case"

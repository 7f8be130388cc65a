"""Export of an nnU-Net v1 model folder to weights/, and later additions to its MANIFEST."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest

from app.inference.weights import Plan, WeightsError, load_weights, sha256_of
from app.oracle import v1_folder_from_weights
from app.weights_export import export_model_folder, set_interpolation_order_z, update_manifest


def test_update_manifest_adds_keys_and_keeps_the_weights_verifiable(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    before = {p.name: sha256_of(p) for p in weights.glob("fold_*.safetensors")}
    update_manifest(weights, {"predict_cost_per_case": {"seconds": 1.5}})
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    assert manifest["predict_cost_per_case"] == {"seconds": 1.5}
    assert manifest["format_version"] == json.loads((tiny_weights / "MANIFEST.json").read_text())["format_version"]
    assert {name: manifest["files"][name] for name in before} == before
    assert list(manifest)[-1] == "files"
    assert sorted(load_weights(weights).folds) == [0, 1]
    assert not list(weights.glob(".*.tmp"))


def test_update_manifest_cannot_replace_the_file_hashes(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    listed = json.loads((weights / "MANIFEST.json").read_text())["files"]
    update_manifest(weights, {"files": {"fold_0.safetensors": "0" * 64}})
    assert json.loads((weights / "MANIFEST.json").read_text())["files"] == listed
    assert sorted(load_weights(weights).folds) == [0, 1]


def test_v1s_export_params_travel_from_plans_pkl_to_the_plan_and_back(tiny_v1_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_v1_model, model)
    plans = pickle.loads((model / "plans.pkl").read_bytes())
    plans["segmentation_export_params"] = {"force_separate_z": None, "interpolation_order": 1,
                                           "interpolation_order_z": 1}
    (model / "plans.pkl").write_bytes(pickle.dumps(plans))
    weights = export_model_folder(model, tmp_path / "w")
    assert load_weights(weights).plan.export_interpolation_order_z == 1
    stock = v1_folder_from_weights(weights, tmp_path / "stock")
    assert pickle.loads((stock / "plans.pkl").read_bytes())["segmentation_export_params"] == \
        plans["segmentation_export_params"]


def test_stock_export_params_when_the_plans_carry_none(tiny_weights):
    assert json.loads((tiny_weights / "plans.json").read_text())["segmentation_export_params"] == \
        {"force_separate_z": None, "interpolation_order": 1, "interpolation_order_z": 0}
    plan = json.loads((tiny_weights / "plans.json").read_text())
    del plan["segmentation_export_params"]   # weights exported before the setting existed
    assert Plan.from_json(plan).export_interpolation_order_z == 0


@pytest.mark.parametrize("params", [{"interpolation_order_z": 3}, {"force_separate_z": True},
                                    {"interpolation_order": 3}])
def test_export_params_that_inference_does_not_implement_are_refused(tiny_weights, params):
    plan = json.loads((tiny_weights / "plans.json").read_text())
    plan["segmentation_export_params"] = {**plan["segmentation_export_params"], **params}
    with pytest.raises(WeightsError, match="segmentation_export_params"):
        Plan.from_json(plan)


def test_setting_the_order_on_exported_weights_keeps_them_verifiable(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    set_interpolation_order_z(weights, 1)
    assert load_weights(weights).plan.export_interpolation_order_z == 1
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    assert manifest["files"]["plans.json"] == sha256_of(weights / "plans.json")
    assert manifest["segmentation_export"] == {"interpolation_order_z": 1, "set_after_export": True}
    with pytest.raises(WeightsError):
        set_interpolation_order_z(weights, 2)
    assert load_weights(weights).plan.export_interpolation_order_z == 1   # a refused value writes nothing


def test_the_export_follows_the_plans_order_on_an_anisotropic_case(tiny_weights):
    """probabilities_to_mask: nearest along the thick-slice axis under v1's default, linear when
    the plan asks for it (the masks then differ), and no separate axis on isotropic voxels."""
    import dataclasses
    import numpy as np
    import torch
    from app.inference.export import export_nearest_axis, probabilities_to_mask
    from app.inference.preprocess import Preprocessed

    nearest_plan = load_weights(tiny_weights).plan
    linear_plan = dataclasses.replace(nearest_plan, export_interpolation_order_z=1)
    shape = (30, 64, 64)
    case = Preprocessed(data=np.zeros(1), bbox=tuple(slice(0, n) for n in shape), original_shape=shape,
                        original_spacing=(4.0, 0.8, 0.8), spacing_after_resampling=(5.0, 5.0, 5.0))
    assert export_nearest_axis(case, nearest_plan) == 0 and export_nearest_axis(case, linear_plan) is None
    isotropic = dataclasses.replace(case, original_spacing=(1.0, 1.0, 1.0))
    assert export_nearest_axis(isotropic, nearest_plan) is None
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((1, 5, 4, 3, 3), generator=generator)
    probs = torch.softmax(8 * torch.nn.functional.interpolate(coarse, size=(24, 10, 10), mode="trilinear")[0], 0)
    nearest, linear = (probabilities_to_mask(probs, case, plan) for plan in (nearest_plan, linear_plan))
    assert nearest.shape == linear.shape == shape
    assert (nearest != linear).mean() > 0.01


def test_unsupported_export_params_in_plans_pkl_are_refused_at_export(tiny_v1_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_v1_model, model)
    plans = pickle.loads((model / "plans.pkl").read_bytes())
    plans["segmentation_export_params"] = {"force_separate_z": None, "interpolation_order": 3, "interpolation_order_z": 0}
    (model / "plans.pkl").write_bytes(pickle.dumps(plans))
    with pytest.raises(WeightsError, match="segmentation_export_params"):
        export_model_folder(model, tmp_path / "w")
    assert not (tmp_path / "w" / "plans.json").exists()


def test_an_altered_plans_json_is_not_rehashed_into_shape(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    (weights / "plans.json").write_text((weights / "plans.json").read_text().replace('"sd"', '"sd" ', 1))
    with pytest.raises(WeightsError, match="altered or corrupt"):
        set_interpolation_order_z(weights, 1)

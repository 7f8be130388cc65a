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
    assert json.loads((weights / "MANIFEST.json").read_text())["files"]["plans.json"] == sha256_of(weights / "plans.json")
    with pytest.raises(WeightsError):
        set_interpolation_order_z(weights, 2)
    assert load_weights(weights).plan.export_interpolation_order_z == 1   # a refused value writes nothing
